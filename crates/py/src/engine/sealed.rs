//! The engine's steps for sessions kept in their cookies (`CookieStore`): opening the cookie a
//! request carries, refusing a save whose cookie would not fit, and sealing the one to send.
//! The seal itself is `tornsession_core::sealed_cookie`.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use super::Engine;
use crate::log::{log, Level};
use tornsession_core::lifecycle::{CookieCheck, SavePlan, SessionState, Verified};
use tornsession_core::sealed_cookie::{self, CookieSealer, OpenError, SealError, SealedSession};
use tornsession_core::time;

/// What a new owner's generation adds to a record at most: `,"g":` and 20 digits.
const GENERATION_ROOM: usize = 32;

impl Engine {
    /// What a sealed cookie holds, checked against the manager's limits: the session's id and
    /// record, or (for anything that does not open, or has expired) no session, said in the log.
    pub(super) fn open_sealed(
        &self, py: Python<'_>, sealer: &CookieSealer, value: Option<&str>, now: u64,
    ) -> CookieCheck {
        let Some(value) = value else {
            return CookieCheck::Absent;
        };
        let opened = sealer
            .unseal(
                self.cookies.id_name.bind(py).to_str().unwrap_or_default(),
                value,
            )
            .and_then(|unsealed| unsealed.check_policy(&self.policy, now));
        match opened {
            Ok(opened) => CookieCheck::Verified(Verified {
                id: opened.session.id,
                cookies_due: opened.reseal_due,
                sealed: Some(opened.session.record),
            }),
            // Said by the caller, as for any cookie that is not genuine.
            Err(OpenError::Malformed(_) | OpenError::Forged) => CookieCheck::Invalid,
            Err(why) => {
                let level = match why {
                    OpenError::Expired { .. } => Level::Info,
                    _ => Level::Warning,
                };
                log(py, level, &format!("{why}, starting a new session"));
                CookieCheck::Absent
            }
        }
    }

    /// Refuses, before anything is written or sent, a record whose sealed cookie would not fit
    /// in the `Set-Cookie` line a browser keeps: the same `ValueError` as a save over
    /// `max_size`, and the visitor's cookie stays as it was.
    pub(super) fn check_sealed_size(
        &self, handler: &Bound<'_, PyAny>, plan: &SavePlan,
    ) -> PyResult<()> {
        // A new owner's generation is added to the record when it is saved.
        let generation_room = if plan.user.is_some() && plan.generation.is_none() {
            GENERATION_ROOM
        } else {
            0
        };
        sealed_cookie::check_size(
            self.cookies.id_name.bind(handler.py()).to_str()?,
            plan.blob.len() + generation_room,
            self.cookies.attributes_len(handler)?,
        )
        .map(|_| ())
        .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Seals the session's record as it now stands (saved, or loaded and due for a reseal) and
    /// sets it as the id cookie.
    pub(super) fn send_sealed(
        &self, handler: &Bound<'_, PyAny>, sealer: &CookieSealer, id: String, state: &SessionState,
    ) -> PyResult<()> {
        let py = handler.py();
        let now = time::now();
        let sealed = SealedSession {
            id,
            created: state.created.unwrap_or(now),
            issued: now,
            record: state.stored.clone().unwrap_or_default(),
        };
        let sealed = sealer.seal(
            self.cookies.id_name.bind(py).to_str()?,
            &sealed,
            self.cookies.attributes_len(handler)?,
        );
        let value = match sealed {
            Ok(value) => value,
            // A write was checked against this request's attributes before it was made, so
            // only a reseal of what the cookie already holds gets here (a `Secure` over HTTPS
            // that the cookie was saved without): the visitor keeps the cookie it has.
            Err(e @ SealError::TooLarge { .. }) => {
                log(
                    py,
                    Level::Warning,
                    &format!("the session's cookie was not resealed: {e}"),
                );
                return Ok(());
            }
            Err(SealError::Random(e)) => {
                return Err(PyOSError::new_err(format!(
                    "the OS random source failed: {e}"
                )))
            }
            Err(e) => return Err(PyValueError::new_err(e.to_string())),
        };
        self.cookies
            .send_id_cookie(handler, &value, state.extras.expiry.persistent)
    }
}
