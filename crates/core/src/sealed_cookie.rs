//! The cookie store's cookie (`CookieStore`): the whole session sealed into the cookie value,
//! so nothing is kept on the server. Sealed means encrypted and authenticated: the visitor can
//! neither read nor change it, and one that was changed, cut, pasted under another cookie name
//! or sealed under a retired secret opens as nothing (a fresh session), never as a panic.
//!
//! **The AEAD is XChaCha20-Poly1305** (RustCrypto's `chacha20poly1305`). Its 24-byte nonce is
//! drawn at random for every seal: at that size random nonces never collide in practice (after
//! 2^80 seals, the chance of one repeat is still 2^-33), so several processes and hosts sharing
//! a secret need no nonce counter and no coordination. AES-256-GCM's 12-byte nonce allows 2^32
//! random-nonce seals per key for the same odds (NIST SP 800-38D), and one repeat under GCM
//! gives away its authentication key, so forgeries: a busy site resealing on every write would
//! have to count seals and rotate keys for it. ChaCha20 is also fast without AES hardware and
//! constant-time in plain software.
//!
//! **Keys** come from the manager's secrets with HKDF-SHA256 (no salt, info [`KEY_LABEL`]), one
//! key per secret, newest first: the first seals, every one opens, and a value opened under an
//! older one is reported so it is sealed again under the newest. The secret itself, which keys
//! the digest and compact cookies' HMACs, is never the key.
//!
//! **The value** is `v1.` + base64url without padding of `nonce (24) || ciphertext || tag (16)`:
//! cookie-safe, no quoting needed. The associated data is [`AAD_LABEL`] (which names the format
//! version) followed by the cookie's name, so a value pasted under another cookie name, or read
//! as another version, does not open.
//!
//! **The plaintext** is a 32-byte header and the record, as the codec writes it:
//!
//! | bytes | what |
//! | --- | --- |
//! | 0..16 | the session id (its 32 hex digits as 16 bytes) |
//! | 16..24 | created at: seconds since the epoch, u64 big-endian (absolute expiry) |
//! | 24..32 | issued at: when this value was sealed, likewise (idle expiry) |
//! | 32.. | the record (`codec::encode_with`'s JSON) |
//!
//! So a value is 72 bytes longer than its record before base64 ([`sealed_len`]).
//!
//! **Expiry** is judged from the sealed times only, with the caller's limits ([`ExpiryLimits`],
//! from the manager's policy): a visitor cannot extend a session. Without an idle timeout a
//! value lives [`MAX_AGE`] from its sealing, as the other cookie formats do. A sliding idle
//! timeout does not reseal on every read: [`Opened::reseal_due`] says when it is time.
//!
//! **Size:** browsers keep a cookie of at most 4,096 bytes of name, value and attributes; a
//! seal that would make a longer `Set-Cookie` line ([`MAX_SET_COOKIE_LINE`]) fails before
//! anything is encrypted, naming the size and the limit.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::TryRngCore;
use sha2::Sha256;

use crate::codec::{self, Expiry};
use crate::digest::Secrets;
use crate::ids;
use crate::lifecycle::COOKIE_REFRESH_AGE;
use crate::policy::{Policy, SEEN_GRANULARITY};
use crate::time::whole_seconds;

/// HKDF's info: the cookie store's keys are derived under this label and no other.
pub const KEY_LABEL: &[u8] = b"tornsession cookie-store v1";
/// The associated data before the cookie's name: domain, format version, a NUL, the name.
pub const AAD_LABEL: &[u8] = b"tornsession cookie-store v1\0";
/// What every value of this format begins with.
pub const PREFIX: &str = "v1.";
/// The longest `Set-Cookie` line a browser is sure to keep (RFC 6265 §6.1: 4,096 bytes of name,
/// value and attributes). [`set_cookie_line_len`] counts the header's `Set-Cookie: ` too, so the
/// check holds whichever way a browser counts.
pub const MAX_SET_COOKIE_LINE: usize = 4096;
/// How old a sealed value may be when the policy sets no idle timeout: the 31 days of the other
/// cookie formats (`compact_cookie::MAX_AGE`), so every format ends alike for a session nobody
/// visits. An active one is resealed daily and never reaches it.
pub const MAX_AGE: u64 = crate::compact_cookie::MAX_AGE;
/// How far in the future a sealed time may lie (hosts whose clocks disagree, a clock stepped
/// back): Kerberos's customary five minutes. Further is refused.
pub const CLOCK_SKEW: u64 = 300;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const ID_LEN: usize = ids::SESSION_ID_LEN / 2;
const HEADER_LEN: usize = ID_LEN + 8 + 8;
/// Bytes a sealed value adds to its record, before base64.
const OVERHEAD: usize = NONCE_LEN + HEADER_LEN + TAG_LEN;
/// What [`set_cookie_line_len`] counts before the name.
const HEADER_NAME: &str = "Set-Cookie: ";

/// What a cookie carries: the session's id, times and record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSession {
    /// The session id, 32 lowercase hex digits.
    pub id: String,
    /// When the session was created, seconds since the epoch.
    pub created: u64,
    /// When the value was sealed (normally now), seconds since the epoch.
    pub issued: u64,
    /// The record, as `codec::encode_with` makes it (opaque here).
    pub record: Vec<u8>,
}

/// Why a session could not be sealed. Nothing was produced: the visitor's cookie stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the session's cookie would make a Set-Cookie line of {size} bytes, over the {limit} \
         bytes browsers keep; the cookie was not changed"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("a sealed cookie carries a session id of 32 lowercase hex digits; this is not one")]
    NotASessionId,
    #[error("the operating system's random number generator failed: {0}")]
    Random(rand::rand_core::OsError),
}

/// Why a cookie's value gives no session. Every one means a fresh session for the request; the
/// message is for the log and names nothing of the cookie's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not shaped like a sealed value of this format.
    #[error("not a sealed session cookie ({0})")]
    Malformed(&'static str),
    /// Shaped like one, but opens under none of the secrets: changed, sealed under another
    /// cookie name, or under a secret that was retired.
    #[error(
        "a sealed session cookie that opens under none of the secrets (tampered with, another \
         cookie's value, or sealed under a retired secret)"
    )]
    Forged,
    /// Genuine, but past one of its limits.
    #[error("a sealed session that expired at {at} (its {by})")]
    Expired { by: Lapse, at: u64 },
    /// Genuine, but sealed or created further in the future than [`CLOCK_SKEW`] allows.
    #[error(
        "a sealed session stamped {stamped}, more than {CLOCK_SKEW} s after now ({now}): \
         the servers' clocks disagree"
    )]
    FromTheFuture { stamped: u64, now: u64 },
}

/// Which limit a sealed session outlived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// Unused for longer than the idle timeout.
    Idle,
    /// Older than its lifetime.
    Lifetime,
    /// No idle timeout, and unused for longer than [`MAX_AGE`].
    MaxAge,
}

impl std::fmt::Display for Lapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lapse::Idle => "idle timeout",
            Lapse::Lifetime => "lifetime",
            Lapse::MaxAge => "31-day limit on an unused cookie",
        })
    }
}

/// The limits a sealed session is held to, in whole seconds (`None`: no such limit). They come
/// from the server's policy, never from the cookie.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryLimits {
    pub idle_timeout: Option<u64>,
    pub lifetime: Option<u64>,
}

impl ExpiryLimits {
    /// The manager's limits, rounded up to whole seconds.
    pub fn from_policy(policy: &Policy) -> Self {
        Self {
            idle_timeout: policy.idle_timeout.map(whole_seconds),
            lifetime: policy.lifetime.map(whole_seconds),
        }
    }

    /// One session's limits: its own (the record's `x`, set by the server) where it has them,
    /// else the manager's.
    pub fn for_session(policy: &Policy, expiry: &Expiry) -> Self {
        Self::from_policy(&policy.for_session(expiry))
    }

    /// How long a value may go unresealed: the idle timeout, else [`MAX_AGE`].
    fn max_idle(&self) -> (u64, Lapse) {
        match self.idle_timeout {
            Some(idle) => (idle, Lapse::Idle),
            None => (MAX_AGE, Lapse::MaxAge),
        }
    }

    /// When a value sealed at `issued` for a session created at `created` stops opening: the
    /// cookie's own expiry, for a persistent cookie's `Expires`.
    pub fn deadline(&self, created: u64, issued: u64) -> u64 {
        let idle_end = issued.saturating_add(self.max_idle().0);
        match self.lifetime {
            Some(lifetime) => idle_end.min(created.saturating_add(lifetime)),
            None => idle_end,
        }
    }

    /// Checks the sealed times at `now`: `Ok(reseal_due)` for a live session, whether its value
    /// must be sealed again for the idle timeout to slide (it is due once older than half the
    /// idle timeout or a minute, whichever is less, so the timeout holds to the minute while a
    /// busy visitor gets a new cookie at most once a minute; without an idle timeout, daily).
    pub fn check(&self, created: u64, issued: u64, now: u64) -> Result<bool, OpenError> {
        let horizon = now.saturating_add(CLOCK_SKEW);
        for stamped in [issued, created] {
            if stamped > horizon {
                return Err(OpenError::FromTheFuture { stamped, now });
            }
        }
        if let Some(lifetime) = self.lifetime {
            let at = created.saturating_add(lifetime);
            if now >= at {
                return Err(OpenError::Expired {
                    by: Lapse::Lifetime,
                    at,
                });
            }
        }
        let (max_idle, by) = self.max_idle();
        let at = issued.saturating_add(max_idle);
        if now >= at {
            return Err(OpenError::Expired { by, at });
        }
        let reseal_after = match self.idle_timeout {
            Some(idle) => (idle / 2).min(SEEN_GRANULARITY),
            None => COOKIE_REFRESH_AGE,
        };
        Ok(now.saturating_sub(issued) > reseal_after)
    }
}

/// A value that opened: authentic, not yet checked against any limit ([`Unsealed::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsealed {
    pub session: SealedSession,
    /// Opened under an older secret than the newest.
    pub sealed_with_older_key: bool,
}

impl Unsealed {
    /// The session if it is within its limits at `now`: its own where its record has them (the
    /// record's `x`, set by the server: sealed, so no visitor can change them), else `policy`'s.
    pub fn check_policy(self, policy: &Policy, now: u64) -> Result<Opened, OpenError> {
        let own = codec::peek_extras(&self.session.record).map(|extras| extras.expiry);
        let limits = ExpiryLimits::for_session(policy, &own.unwrap_or_default());
        self.check(&limits, now)
    }

    /// The session if it is within `limits` at `now`.
    pub fn check(self, limits: &ExpiryLimits, now: u64) -> Result<Opened, OpenError> {
        let due = limits.check(self.session.created, self.session.issued, now)?;
        Ok(Opened {
            reseal_due: due || self.sealed_with_older_key,
            sealed_with_older_key: self.sealed_with_older_key,
            session: self.session,
        })
    }
}

/// A live session read from its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub session: SealedSession,
    /// Opened under an older secret than the newest.
    pub sealed_with_older_key: bool,
    /// The value must be sealed again and sent, even if the session did not change: it was
    /// sealed under an older secret, or its age makes it due (see [`ExpiryLimits::check`]).
    pub reseal_due: bool,
}

/// Seals and opens session cookies with keys derived from the manager's secrets.
#[derive(Clone)]
pub struct CookieSealer {
    /// One per secret, newest first.
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for CookieSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "CookieSealer({} keys)", self.ciphers.len())
    }
}

impl CookieSealer {
    /// The sealer of `secrets`: one key per secret, by HKDF-SHA256 under [`KEY_LABEL`].
    pub fn new(secrets: &Secrets) -> Self {
        let ciphers = secrets
            .raw_keys()
            .map(|secret| XChaCha20Poly1305::new(&derive_key(secret)))
            .collect();
        Self { ciphers }
    }

    /// `session` sealed under the newest key for cookie `cookie_name`, to be sent with
    /// attributes of `attributes_len` bytes (what follows the value on the `Set-Cookie` line:
    /// `; Path=/; HttpOnly`...).
    /// A line over [`MAX_SET_COOKIE_LINE`] is refused before anything is encrypted.
    pub fn seal(
        &self, cookie_name: &str, session: &SealedSession, attributes_len: usize,
    ) -> Result<String, SealError> {
        let value_len = check_size(cookie_name, session.record.len(), attributes_len)?;
        if !ids::is_valid_session_id(&session.id) {
            return Err(SealError::NotASessionId);
        }
        let mut raw = vec![0u8; NONCE_LEN + HEADER_LEN];
        raw.reserve_exact(session.record.len() + TAG_LEN);
        OsRng
            .try_fill_bytes(&mut raw[..NONCE_LEN])
            .map_err(SealError::Random)?;
        let header = &mut raw[NONCE_LEN..];
        hex::decode_to_slice(&session.id, &mut header[..ID_LEN])
            .expect("a valid session id is 32 hex digits");
        header[ID_LEN..ID_LEN + 8].copy_from_slice(&session.created.to_be_bytes());
        header[ID_LEN + 8..].copy_from_slice(&session.issued.to_be_bytes());
        raw.extend_from_slice(&session.record);
        let (nonce, plaintext) = raw.split_at_mut(NONCE_LEN);
        let nonce = XNonce::try_from(&*nonce).expect("the nonce is 24 bytes");
        let tag = self.ciphers[0]
            .encrypt_inout_detached(&nonce, &aad(cookie_name), plaintext.into())
            .expect("XChaCha20-Poly1305 seals anything under 256 GiB, and this is under 4 KiB");
        raw.extend_from_slice(&tag);
        let mut value = String::with_capacity(value_len);
        value.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut value);
        debug_assert_eq!(value.len(), value_len);
        Ok(value)
    }

    /// Opens `value`, read from cookie `cookie_name`, and checks it against `limits` at `now`.
    /// Where sessions may have limits of their own (`set_expiry`), `unseal` then
    /// [`Unsealed::check_policy`] instead: the manager's limits alone would end one whose own
    /// idle timeout is longer.
    pub fn open(
        &self, cookie_name: &str, value: &str, now: u64, limits: &ExpiryLimits,
    ) -> Result<Opened, OpenError> {
        self.unseal(cookie_name, value)?.check(limits, now)
    }

    /// Opens `value`, read from cookie `cookie_name`, without judging its age (for a caller
    /// that must decode the record to know the session's own limits).
    pub fn unseal(&self, cookie_name: &str, value: &str) -> Result<Unsealed, OpenError> {
        // No genuine value is longer than a whole line may be: refused before decoding.
        if value.len() > MAX_SET_COOKIE_LINE {
            return Err(OpenError::Malformed("too long"));
        }
        let Some(body) = value.strip_prefix(PREFIX) else {
            return Err(OpenError::Malformed("no v1. prefix"));
        };
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed("not base64url"))?;
        if raw.len() < OVERHEAD {
            return Err(OpenError::Malformed("too short"));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).expect("split at 24 bytes");
        let tag = Tag::try_from(tag).expect("split at 16 bytes");
        let aad = aad(cookie_name);
        let mut plaintext = Vec::with_capacity(ciphertext.len());
        for (index, cipher) in self.ciphers.iter().enumerate() {
            // A fresh copy for every key: a failed attempt leaves nothing behind.
            plaintext.clear();
            plaintext.extend_from_slice(ciphertext);
            let opened =
                cipher.decrypt_inout_detached(&nonce, &aad, plaintext.as_mut_slice().into(), &tag);
            if opened.is_ok() {
                return Ok(Unsealed {
                    session: parse_plaintext(plaintext),
                    sealed_with_older_key: index > 0,
                });
            }
        }
        Err(OpenError::Forged)
    }
}

/// Whether a cookie's value is shaped like a sealed session (it may still not open): what a
/// `CookieStore` tries to open, and no other cookie format's value is.
pub fn is_sealed_shaped(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The length of the value [`CookieSealer::seal`] makes of a record of `record_len` bytes.
pub fn sealed_len(record_len: usize) -> usize {
    base64::encoded_len(record_len.saturating_add(OVERHEAD), false)
        .map_or(usize::MAX, |len| len.saturating_add(PREFIX.len()))
}

/// The length of `Set-Cookie: <name>=<value><attributes>` for a value of `value_len` bytes
/// and attributes of `attributes_len` bytes (as sent, from the `;` after the value).
pub fn set_cookie_line_len(name: &str, value_len: usize, attributes_len: usize) -> usize {
    HEADER_NAME
        .len()
        .saturating_add(name.len())
        .saturating_add(1)
        .saturating_add(value_len)
        .saturating_add(attributes_len)
}

/// The sealed value's length for a record of `record_len` bytes, if its `Set-Cookie` line fits
/// in [`MAX_SET_COOKIE_LINE`]; else the error that names the line's size and the limit.
pub fn check_size(
    name: &str, record_len: usize, attributes_len: usize,
) -> Result<usize, SealError> {
    let value_len = sealed_len(record_len);
    let size = set_cookie_line_len(name, value_len, attributes_len);
    if size > MAX_SET_COOKIE_LINE {
        return Err(SealError::TooLarge {
            size,
            limit: MAX_SET_COOKIE_LINE,
        });
    }
    Ok(value_len)
}

fn derive_key(secret: &[u8]) -> Key {
    let mut key = Key::default();
    Hkdf::<Sha256>::new(None, secret)
        .expand(KEY_LABEL, &mut key)
        .expect("HKDF-SHA256 gives up to 8160 bytes, and a key is 32");
    key
}

fn aad(cookie_name: &str) -> Vec<u8> {
    [AAD_LABEL, cookie_name.as_bytes()].concat()
}

/// The header and record of a plaintext that opened (so made by [`CookieSealer::seal`], whose
/// header is always whole).
fn parse_plaintext(mut plaintext: Vec<u8>) -> SealedSession {
    let stamp = |at: usize| {
        u64::from_be_bytes(
            plaintext[at..at + 8]
                .try_into()
                .expect("a stamp is 8 bytes"),
        )
    };
    let id = hex::encode(&plaintext[..ID_LEN]);
    let created = stamp(ID_LEN);
    let issued = stamp(ID_LEN + 8);
    plaintext.drain(..HEADER_LEN);
    SealedSession {
        id,
        created,
        issued,
        record: plaintext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    const ID: &str = "9e107d9d372bb6826bd81d3542a419d6";
    const OTHER_ID: &str = "0e107d9d372bb6826bd81d3542a419d6";
    const NAME: &str = "session";
    const NOW: u64 = 1_780_000_000;
    const ATTRS: &str = "; Path=/; HttpOnly; SameSite=Lax";
    const NO_LIMITS: ExpiryLimits = ExpiryLimits {
        idle_timeout: None,
        lifetime: None,
    };

    fn secrets(keys: &[&str]) -> Secrets {
        Secrets::new(keys.iter().map(|k| k.as_bytes().to_vec()).collect()).unwrap()
    }

    fn sealer(keys: &[&str]) -> CookieSealer {
        CookieSealer::new(&secrets(keys))
    }

    fn record(text: &str) -> Vec<u8> {
        let data = serde_json::json!({ "user": "ann", "note": text })
            .as_object()
            .unwrap()
            .clone();
        codec::encode(ID, NOW - 100, &data)
    }

    fn session(record: Vec<u8>) -> SealedSession {
        SealedSession {
            id: ID.to_owned(),
            created: NOW - 100,
            issued: NOW,
            record,
        }
    }

    fn sealed(s: &CookieSealer) -> String {
        s.seal(NAME, &session(record("hello")), ATTRS.len())
            .unwrap()
    }

    #[test]
    fn round_trip_is_cookie_safe_and_as_long_as_predicted() {
        let s = sealer(&["k"]);
        let original = session(record("hello"));
        let value = s.seal(NAME, &original, ATTRS.len()).unwrap();
        assert!(value.starts_with(PREFIX));
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        assert_eq!(value.len(), sealed_len(original.record.len()));
        let opened = s.open(NAME, &value, NOW, &NO_LIMITS).unwrap();
        assert_eq!(
            opened,
            Opened {
                session: original.clone(),
                sealed_with_older_key: false,
                reseal_due: false,
            }
        );
        // A fresh nonce every time: the same session never seals to the same value.
        assert_ne!(s.seal(NAME, &original, ATTRS.len()).unwrap(), value);
        // Empty records and extreme times round-trip too.
        let odd = SealedSession {
            id: OTHER_ID.to_owned(),
            created: 0,
            issued: u64::MAX,
            record: Vec::new(),
        };
        let value = s.seal(NAME, &odd, 0).unwrap();
        assert_eq!(s.unseal(NAME, &value).unwrap().session, odd);
    }

    #[test]
    fn the_value_is_the_documented_layout() {
        // An independent reading of the module doc: HKDF-SHA256(secret, info=KEY_LABEL), nonce
        // first, AAD = AAD_LABEL + name, header then record.
        let value = sealer(&["k"])
            .seal(NAME, &session(b"{}".to_vec()), 0)
            .unwrap();
        let raw = URL_SAFE_NO_PAD
            .decode(value.strip_prefix("v1.").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 24 + 32 + 2 + 16);
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, b"k")
            .expand(b"tornsession cookie-store v1", &mut key)
            .unwrap();
        let cipher = XChaCha20Poly1305::new(&key.into());
        let mut body = raw[24..raw.len() - 16].to_vec();
        cipher
            .decrypt_inout_detached(
                &XNonce::try_from(&raw[..24]).unwrap(),
                b"tornsession cookie-store v1\0session",
                body.as_mut_slice().into(),
                &Tag::try_from(&raw[raw.len() - 16..]).unwrap(),
            )
            .unwrap();
        assert_eq!(hex::encode(&body[..16]), ID);
        assert_eq!(body[16..24], (NOW - 100).to_be_bytes());
        assert_eq!(body[24..32], NOW.to_be_bytes());
        assert_eq!(&body[32..], b"{}");
    }

    #[test]
    fn keys_are_derived_per_secret_and_are_not_the_secret() {
        let secret = "a secret of exactly thirty-two b";
        assert_eq!(secret.len(), 32);
        let derived = derive_key(secret.as_bytes());
        assert_ne!(derived.as_slice(), secret.as_bytes());
        assert_ne!(derived, derive_key(b"another secret"));
        // A value sealed with the secret itself as the key does not open.
        let raw_key = XChaCha20Poly1305::new(&Key::try_from(secret.as_bytes()).unwrap());
        let impostor = CookieSealer {
            ciphers: vec![raw_key],
        };
        let value = impostor
            .seal(NAME, &session(record("x")), ATTRS.len())
            .unwrap();
        assert_eq!(
            sealer(&[secret]).unseal(NAME, &value),
            Err(OpenError::Forged)
        );
        assert_eq!(format!("{:?}", sealer(&["k", "j"])), "CookieSealer(2 keys)");
    }

    #[test]
    fn rotation_opens_older_values_until_their_secret_is_retired() {
        let old_value = sealed(&sealer(&["old"]));
        let rotated = sealer(&["new", "old"]);
        let opened = rotated.open(NAME, &old_value, NOW, &NO_LIMITS).unwrap();
        assert!(opened.sealed_with_older_key);
        assert!(opened.reseal_due);
        assert_eq!(opened.session, session(record("hello")));
        // Resealed under the newest: current, and opens after the old secret is gone.
        let resealed = rotated.seal(NAME, &opened.session, ATTRS.len()).unwrap();
        let again = rotated.open(NAME, &resealed, NOW, &NO_LIMITS).unwrap();
        assert!(!again.sealed_with_older_key && !again.reseal_due);
        let retired = sealer(&["new"]);
        assert!(retired.open(NAME, &resealed, NOW, &NO_LIMITS).is_ok());
        assert_eq!(
            retired.open(NAME, &old_value, NOW, &NO_LIMITS),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn a_value_opens_only_under_its_own_cookie_name() {
        let s = sealer(&["k"]);
        let value = sealed(&s);
        for other in ["session2", "Session", "sessio", "", "session\0"] {
            assert_eq!(s.unseal(other, &value), Err(OpenError::Forged), "{other:?}");
        }
        // Another cookie's genuine value pasted in.
        let theirs = s.seal("csrf", &session(record("x")), ATTRS.len()).unwrap();
        assert_eq!(s.unseal(NAME, &theirs), Err(OpenError::Forged));
    }

    #[test]
    fn idle_and_absolute_expiry_come_from_the_sealed_times() {
        let s = sealer(&["k"]);
        let value = sealed(&s); // created NOW - 100, issued NOW
        let idle = ExpiryLimits {
            idle_timeout: Some(600),
            lifetime: None,
        };
        assert!(s.open(NAME, &value, NOW + 599, &idle).is_ok());
        assert_eq!(
            s.open(NAME, &value, NOW + 600, &idle),
            Err(OpenError::Expired {
                by: Lapse::Idle,
                at: NOW + 600
            })
        );
        let lifetime = ExpiryLimits {
            idle_timeout: Some(600),
            lifetime: Some(300),
        };
        assert!(s.open(NAME, &value, NOW + 199, &lifetime).is_ok());
        assert_eq!(
            s.open(NAME, &value, NOW + 200, &lifetime),
            Err(OpenError::Expired {
                by: Lapse::Lifetime,
                at: NOW + 200
            })
        );
        assert_eq!(lifetime.deadline(NOW - 100, NOW), NOW + 200);
        assert_eq!(idle.deadline(NOW - 100, NOW), NOW + 600);
        // No idle timeout: the 31 days of the other cookie formats.
        assert!(s.open(NAME, &value, NOW + MAX_AGE - 1, &NO_LIMITS).is_ok());
        assert_eq!(
            s.open(NAME, &value, NOW + MAX_AGE, &NO_LIMITS),
            Err(OpenError::Expired {
                by: Lapse::MaxAge,
                at: NOW + MAX_AGE
            })
        );
        let message = s
            .open(NAME, &value, NOW + 600, &idle)
            .unwrap_err()
            .to_string();
        assert!(message.contains("idle timeout"), "{message}");
    }

    #[test]
    fn limits_come_from_the_policy_and_the_sessions_own_expiry() {
        let policy = Policy {
            idle_timeout: Some(Duration::from_millis(1500)),
            lifetime: Some(Duration::from_secs(3600)),
            ..Policy::default()
        };
        assert_eq!(
            ExpiryLimits::from_policy(&policy),
            ExpiryLimits {
                idle_timeout: Some(2),
                lifetime: Some(3600)
            }
        );
        let own = Expiry {
            idle_timeout: Some(86_400),
            lifetime: None,
            persistent: Some(true),
        };
        assert_eq!(
            ExpiryLimits::for_session(&policy, &own),
            ExpiryLimits {
                idle_timeout: Some(86_400),
                lifetime: Some(3600)
            }
        );
        // Two steps for such a session: unseal, decode the record, check with its limits.
        let s = sealer(&["k"]);
        let value = sealed(&s);
        let unsealed = s.unseal(NAME, &value).unwrap();
        assert!(unsealed
            .clone()
            .check(&ExpiryLimits::from_policy(&policy), NOW + 60)
            .is_err());
        assert!(unsealed
            .check(&ExpiryLimits::for_session(&policy, &own), NOW + 60)
            .is_ok());
        // check_policy reads them from the sealed record.
        let data = serde_json::json!({"a": 1}).as_object().unwrap().clone();
        let extras = codec::Extras {
            expiry: own,
            ..codec::Extras::default()
        };
        let long = SealedSession {
            record: codec::encode_with(ID, NOW - 100, &data, &extras),
            ..session(Vec::new())
        };
        let value = s.seal(NAME, &long, ATTRS.len()).unwrap();
        let opened = s
            .unseal(NAME, &value)
            .unwrap()
            .check_policy(&policy, NOW + 61)
            .unwrap();
        assert!(opened.reseal_due);
        assert_eq!(
            s.unseal(NAME, &value)
                .unwrap()
                .check_policy(&policy, NOW + 3500),
            Err(OpenError::Expired {
                by: Lapse::Lifetime,
                at: NOW + 3500
            })
        );
        // A record without its own limits is held to the policy's.
        assert_eq!(
            s.unseal(NAME, &sealed(&s))
                .unwrap()
                .check_policy(&policy, NOW + 2),
            Err(OpenError::Expired {
                by: Lapse::Idle,
                at: NOW + 2
            })
        );
    }

    #[test]
    fn a_sliding_idle_timeout_reseals_only_when_due() {
        let check = |limits: ExpiryLimits, age: u64| limits.check(NOW - 100, NOW, NOW + age);
        let idle = |seconds| ExpiryLimits {
            idle_timeout: Some(seconds),
            lifetime: None,
        };
        // Half an hour: due after a minute.
        assert_eq!(check(idle(1800), 0), Ok(false));
        assert_eq!(check(idle(1800), 60), Ok(false));
        assert_eq!(check(idle(1800), 61), Ok(true));
        // Short timeouts: after half of it.
        assert_eq!(check(idle(10), 5), Ok(false));
        assert_eq!(check(idle(10), 6), Ok(true));
        assert_eq!(check(idle(1), 0), Ok(false));
        // None: daily, as the other cookie formats.
        assert_eq!(check(NO_LIMITS, COOKIE_REFRESH_AGE), Ok(false));
        assert_eq!(check(NO_LIMITS, COOKIE_REFRESH_AGE + 1), Ok(true));
    }

    #[test]
    fn stamps_from_the_future_beyond_the_skew_are_refused() {
        let s = sealer(&["k"]);
        let value = sealed(&s); // issued NOW
        assert!(s.open(NAME, &value, NOW - CLOCK_SKEW, &NO_LIMITS).is_ok());
        assert_eq!(
            s.open(NAME, &value, NOW - CLOCK_SKEW - 1, &NO_LIMITS),
            Err(OpenError::FromTheFuture {
                stamped: NOW,
                now: NOW - CLOCK_SKEW - 1
            })
        );
        // Created in the future (not issued): likewise.
        assert!(matches!(
            NO_LIMITS.check(NOW + CLOCK_SKEW + 1, NOW, NOW),
            Err(OpenError::FromTheFuture { .. })
        ));
        // Created after issued, within the skew (created on a host whose clock runs ahead): fine.
        assert_eq!(NO_LIMITS.check(NOW + 10, NOW, NOW), Ok(false));
    }

    #[test]
    fn the_value_never_shows_what_the_record_holds() {
        let canary = "CANARY-zebra-7f3a-do-not-leak";
        let s = sealer(&["k"]);
        let rec = record(canary);
        assert!(String::from_utf8_lossy(&rec).contains(canary));
        for _ in 0..50 {
            let value = s.seal(NAME, &session(rec.clone()), ATTRS.len()).unwrap();
            let lower = value.to_lowercase();
            assert!(!lower.contains(&canary.to_lowercase()));
            assert!(!lower.contains(ID));
            // Nor as base64 of any alignment.
            for shift in 0..3 {
                let padded = [&b"xx"[..shift], canary.as_bytes()].concat();
                let encoded = URL_SAFE_NO_PAD.encode(padded);
                assert!(!value.contains(&encoded[4..encoded.len() - 4]));
            }
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        let s = sealer(&["k"]);
        let value = sealed(&s);
        let body = value.strip_prefix(PREFIX).unwrap();
        let cases: Vec<(String, OpenError)> = vec![
            (String::new(), OpenError::Malformed("no v1. prefix")),
            ("v1.".into(), OpenError::Malformed("too short")),
            (format!("v2.{body}"), OpenError::Malformed("no v1. prefix")),
            (format!("V1.{body}"), OpenError::Malformed("no v1. prefix")),
            (body.to_owned(), OpenError::Malformed("no v1. prefix")),
            (format!("{value}="), OpenError::Malformed("not base64url")),
            (format!("{value}.x"), OpenError::Malformed("not base64url")),
            (
                format!("{}+{}", &value[..10], &value[11..]),
                OpenError::Malformed("not base64url"),
            ),
            (format!(" {value}"), OpenError::Malformed("no v1. prefix")),
            (format!("{value} "), OpenError::Malformed("not base64url")),
            (
                format!("v1.{}", "A".repeat(4097)),
                OpenError::Malformed("too long"),
            ),
            (
                format!("v1.{}", URL_SAFE_NO_PAD.encode([0u8; OVERHEAD - 1])),
                OpenError::Malformed("too short"),
            ),
            (
                format!("v1.{}", URL_SAFE_NO_PAD.encode([0u8; OVERHEAD])),
                OpenError::Forged,
            ),
            // The pair and compact formats' values.
            (
                "9e107d9d372bb6826bd81d3542a419d6.tfrksg.UgypYy1O3i8i7S_pojN6p8dyYEmDP8Zu".into(),
                OpenError::Malformed("no v1. prefix"),
            ),
            (
                "2|1:0|10:1780000000|10:session_id|44:OWUx|ab".into(),
                OpenError::Malformed("no v1. prefix"),
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(s.unseal(NAME, &bad), Err(expected), "{bad:?}");
        }
        // Non-canonical trailing bits are not a second spelling of the same value.
        let last = value.as_bytes()[value.len() - 1];
        if let Some(twin) = b"AQgw".iter().find(|&&c| c != last) {
            let mut respelled = value.clone().into_bytes();
            *respelled.last_mut().unwrap() = *twin;
            let respelled = String::from_utf8(respelled).unwrap();
            assert!(s.unseal(NAME, &respelled).is_err());
        }
    }

    #[test]
    fn every_single_character_change_and_every_truncation_is_refused() {
        let s = sealer(&["k"]);
        let value = s.seal(NAME, &session(b"{}".to_vec()), 0).unwrap();
        let mut bytes = value.clone().into_bytes();
        for i in 0..bytes.len() {
            let saved = bytes[i];
            for replacement in [b'A', b'a', b'0', b'-', b'_', b'.', b'=', b'+', b' ', 0xff] {
                if replacement == saved {
                    continue;
                }
                bytes[i] = replacement;
                let mutated = String::from_utf8_lossy(&bytes).into_owned();
                assert!(s.unseal(NAME, &mutated).is_err(), "{mutated}");
            }
            bytes[i] = saved;
        }
        for len in 0..value.len() {
            assert!(s.unseal(NAME, &value[..len]).is_err(), "{len}");
        }
        for extra in ["A", "AA", "AAA", "AAAA", "_"] {
            assert!(s.unseal(NAME, &format!("{value}{extra}")).is_err());
        }
    }

    /// One random change of `value`: a byte replaced (any byte), bytes inserted, removed,
    /// swapped, truncated, extended, or a run spliced from another genuine value.
    fn mutate(rng: &mut impl Rng, value: &str, other: &str) -> String {
        let mut bytes = value.as_bytes().to_vec();
        let charset = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
        let pos = rng.random_range(0..bytes.len());
        match rng.random_range(0..7) {
            0 => bytes[pos] = charset[rng.random_range(0..charset.len())],
            1 => bytes[pos] = rng.random(),
            2 => bytes.insert(pos, charset[rng.random_range(0..charset.len())]),
            3 => {
                let end = (pos + rng.random_range(1..8)).min(bytes.len());
                bytes.drain(pos..end);
            }
            4 => {
                let other_pos = rng.random_range(0..bytes.len());
                bytes.swap(pos, other_pos);
            }
            5 => bytes.truncate(pos),
            _ => {
                let from = other.as_bytes();
                let start = rng.random_range(0..from.len());
                let end = (start + rng.random_range(1..40)).min(from.len());
                let at = pos.min(bytes.len());
                let until = (at + (end - start)).min(bytes.len());
                bytes.splice(at..until, from[start..end].iter().copied());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn ten_thousand_random_mutations_never_open() {
        let s = sealer(&["new", "old"]);
        let old = sealer(&["old"]);
        let values = [
            sealed(&s),
            sealed(&old),
            s.seal(NAME, &session(record(&"x".repeat(2000))), ATTRS.len())
                .unwrap(),
        ];
        let other = sealed(&s);
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let mut tried = 0;
        while tried < 10_000 {
            let value = &values[tried % values.len()];
            let mutated = mutate(&mut rng, value, &other);
            if &mutated == value {
                continue;
            }
            tried += 1;
            assert!(s.unseal(NAME, &mutated).is_err(), "{mutated}");
            assert!(s.open(NAME, &mutated, NOW, &NO_LIMITS).is_err());
        }
    }

    proptest! {
        #[test]
        fn mutated_values_never_open(
            seed in any::<u64>(), rounds in 1usize..6, record_len in 0usize..600
        ) {
            let s = sealer(&["new", "old"]);
            let value = s
                .seal(NAME, &session(vec![b'x'; record_len]), 0)
                .unwrap();
            let other = sealed(&s);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut mutated = value.clone();
            for _ in 0..rounds {
                if mutated.is_empty() {
                    break;
                }
                mutated = mutate(&mut rng, &mutated, &other);
            }
            prop_assume!(mutated != value);
            prop_assert!(s.unseal(NAME, &mutated).is_err());
        }

        #[test]
        fn flipping_any_bit_of_the_sealed_bytes_is_forged(bit in 0usize..(OVERHEAD + 40) * 8) {
            let s = sealer(&["k"]);
            let value = s.seal(NAME, &session(vec![b'y'; 40]), 0).unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(&value[PREFIX.len()..]).unwrap();
            raw[bit / 8] ^= 1 << (bit % 8);
            let flipped = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
            prop_assert_eq!(s.unseal(NAME, &flipped), Err(OpenError::Forged));
        }

        #[test]
        fn any_string_is_refused_without_a_panic(text in ".{0,200}", tail in "[A-Za-z0-9_-]{0,200}") {
            let s = sealer(&["k"]);
            prop_assert!(s.unseal(NAME, &text).is_err());
            let prefixed = format!("v1.{tail}");
            prop_assert!(s.unseal(NAME, &prefixed).is_err());
        }

        #[test]
        fn the_predicted_length_is_the_sealed_length(record_len in 0usize..3100, name in "[a-z_]{1,20}") {
            let s = sealer(&["k"]);
            let sealed = s.seal(&name, &session(vec![b'z'; record_len]), ATTRS.len());
            match check_size(&name, record_len, ATTRS.len()) {
                Ok(predicted) => {
                    let value = sealed.unwrap();
                    prop_assert_eq!(value.len(), predicted);
                    prop_assert_eq!(value.len(), sealed_len(record_len));
                    let line = format!("Set-Cookie: {name}={value}{ATTRS}");
                    prop_assert_eq!(line.len(), set_cookie_line_len(&name, value.len(), ATTRS.len()));
                    let opened = s.open(&name, &value, NOW, &NO_LIMITS).unwrap();
                    prop_assert_eq!(opened.session.record.len(), record_len);
                }
                Err(SealError::TooLarge { size, limit }) => {
                    prop_assert!(size > limit);
                    let refused = matches!(sealed, Err(SealError::TooLarge { size: s, .. }) if s == size);
                    prop_assert!(refused);
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }
    }

    #[test]
    fn the_size_guard_allows_exactly_the_limit_and_names_both_numbers_past_it() {
        let s = sealer(&["k"]);
        let rec = vec![b'r'; 2900];
        let value_len = sealed_len(rec.len());
        let bare = set_cookie_line_len(NAME, value_len, 0);
        assert_eq!(bare, "Set-Cookie: session=".len() + value_len);
        let fill = MAX_SET_COOKIE_LINE - bare;
        let attrs_at_limit = format!("; Path=/{}", "x".repeat(fill - "; Path=/".len()));
        assert_eq!(
            set_cookie_line_len(NAME, value_len, attrs_at_limit.len()),
            MAX_SET_COOKIE_LINE
        );
        let value = s
            .seal(NAME, &session(rec.clone()), attrs_at_limit.len())
            .unwrap();
        let line = format!("Set-Cookie: {NAME}={value}{attrs_at_limit}");
        assert_eq!(line.len(), MAX_SET_COOKIE_LINE);
        let over = format!("{attrs_at_limit}x");
        let error = s.seal(NAME, &session(rec.clone()), over.len()).unwrap_err();
        assert!(matches!(
            error,
            SealError::TooLarge {
                size: 4097,
                limit: 4096
            }
        ));
        let message = error.to_string();
        assert!(
            message.contains("4097") && message.contains("4096"),
            "{message}"
        );
        // A huge record is refused from its length alone, and an impossible one does not overflow.
        assert!(matches!(
            check_size(NAME, 1 << 20, 0),
            Err(SealError::TooLarge { .. })
        ));
        assert_eq!(sealed_len(usize::MAX), usize::MAX);
        assert_eq!(
            set_cookie_line_len(NAME, usize::MAX, ATTRS.len()),
            usize::MAX
        );
        // The largest record that fits with everyday attributes: about 2.9 KB of JSON.
        let largest = (0..4096)
            .rev()
            .find(|&len| check_size(NAME, len, ATTRS.len()).is_ok())
            .unwrap();
        assert!((2900..3000).contains(&largest), "{largest}");
    }

    #[test]
    fn only_session_ids_are_sealed() {
        let s = sealer(&["k"]);
        for id in ["", "xyz", &ID.to_uppercase(), &ID[1..], &format!("{ID}0")] {
            let bad = SealedSession {
                id: id.to_owned(),
                ..session(Vec::new())
            };
            assert!(matches!(
                s.seal(NAME, &bad, 0),
                Err(SealError::NotASessionId)
            ));
        }
    }
}
