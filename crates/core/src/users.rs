//! Per-user sessions, with no PyO3: the key a store indexes a user's sessions under, the id a
//! session is shown by (safe to show, to pass back, and useless as a cookie), the rules of a
//! session's own expiry, and the "last seen" stamp.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::codec::Expiry;
use crate::digest::Secrets;
use crate::policy::Policy;

/// The longest user id `set_user` takes, in bytes: ids are database keys, not documents.
pub const MAX_USER_ID_LEN: usize = 1024;

/// The most `set_info` keeps, serialized: a session list shows a line per session.
pub const MAX_INFO_BYTES: usize = 2048;

/// Hex digits of a user key, and of the session part of a public id.
const KEY_HEX_LEN: usize = 32;

/// The key a store files `user_id`'s sessions under: 32 hex digits of a SHA-256. Unkeyed on
/// purpose, so rotating the secret keeps every user's index where it is; stores see the user
/// id in the record anyway.
pub fn user_key(user_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tornsession user\0");
    hash.update(user_id.as_bytes());
    hex::encode(&hash.finalize()[..KEY_HEX_LEN / 2])
}

/// Why a user id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user_id must not be empty")]
    Empty,
    #[error("user_id must be at most {MAX_USER_ID_LEN} bytes, not {0}")]
    TooLong(usize),
}

pub fn check_user_id(user_id: &str) -> Result<(), UserIdError> {
    match user_id.len() {
        0 => Err(UserIdError::Empty),
        n if n > MAX_USER_ID_LEN => Err(UserIdError::TooLong(n)),
        _ => Ok(()),
    }
}

/// The id a session is listed by: its owner's key, then an HMAC of the session id truncated
/// to 128 bits. The first half lets `destroy_session` find the owner's index without a global
/// map; the second names the session there and, being keyed by the secret, reveals nothing of
/// the id (and is no cookie: a cookie needs the id itself).
pub fn public_id(secrets: &Secrets, user_key: &str, session_id: &str) -> String {
    let tag = secrets
        .macs(&public_message(session_id))
        .next()
        .expect("at least one secret");
    format!("{user_key}{}", hex::encode(&tag[..KEY_HEX_LEN / 2]))
}

fn public_message(session_id: &str) -> String {
    format!("tornsession public id\0{session_id}")
}

/// The owner's key in a public id, when it is shaped like one (anything else names nothing).
pub fn owner_of_public_id(public: &str) -> Option<&str> {
    let well_formed = public.len() == 2 * KEY_HEX_LEN
        && public
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then(|| &public[..KEY_HEX_LEN])
}

/// Whether `public` is the public id of `session_id` under any of the secrets (so ids shown
/// before a secret rotation still work).
pub fn is_public_id_of(secrets: &Secrets, public: &str, session_id: &str) -> bool {
    if owner_of_public_id(public).is_none() {
        return false;
    }
    let Ok(tag) = hex::decode(&public[KEY_HEX_LEN..]) else {
        return false;
    };
    secrets
        .macs(&public_message(session_id))
        .any(|mac| constant_time_eq(&mac[..KEY_HEX_LEN / 2], &tag))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an owned record is ended by its owner's generation counter (stores that cannot
/// list a user's sessions, memcached): it was written under an older generation than the
/// counter's. A record without a generation, and a user without a counter, count as 0.
pub fn is_revoked(record: Option<u64>, counter: Option<u64>) -> bool {
    record.unwrap_or(0) < counter.unwrap_or(0)
}

/// The value a missing counter is created with by a bump: microseconds since the epoch, not 0,
/// so a counter that was lost (evicted, or its server restarted while the sessions' server
/// kept them) comes back above every generation written under the one it replaces, and "log
/// out everywhere" still ends them.
pub fn first_generation(now_micros: u64) -> u64 {
    now_micros.max(1)
}

/// What a bump of a user's counter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bump {
    /// The generation the counter stood for before (0: there was none).
    pub before: u64,
    /// The generation now.
    pub after: u64,
}

/// Whether the `keep` session of a "log out everywhere" is carried over to the new generation:
/// its record, owned by `user_id`, was live before the bump. One revoked already (by an older
/// bump, or a concurrent one that got in first) stays ended.
pub fn survives_bump(record: &crate::codec::Extras, user_id: &str, bump: Bump) -> bool {
    record.user.as_deref() == Some(user_id) && !is_revoked(record.generation, Some(bump.before))
}

/// How far a session's own limits may go: up to these when set, else up to the manager's own
/// (`None` there: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryCaps {
    pub max_idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
}

/// Why `set_expiry` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(
        "{name}={asked} is beyond the manager's {limit_name}={limit}; raise the manager's \
         max_{name} to allow longer sessions"
    )]
    BeyondLimit {
        name: &'static str,
        asked: u64,
        limit_name: &'static str,
        limit: u64,
    },
}

/// The expiry a session gets from `set_expiry`: each given value replaces the current one,
/// within the caps (`max_*` when set, else the manager's own value).
pub fn change_expiry(
    policy: &Policy,
    caps: &ExpiryCaps,
    current: Expiry,
    idle_timeout: Option<Duration>,
    lifetime: Option<Duration>,
    persistent: Option<bool>,
) -> Result<Expiry, ExpiryError> {
    let check = |name: &'static str,
                 asked: Option<Duration>,
                 max: Option<Duration>,
                 own: Option<Duration>|
     -> Result<Option<u64>, ExpiryError> {
        let Some(asked) = asked else { return Ok(None) };
        let asked = crate::time::whole_seconds(asked);
        let (limit_name, limit) = match (max, own) {
            (Some(max), _) => (
                if name == "idle_timeout" {
                    "max_idle_timeout"
                } else {
                    "max_lifetime"
                },
                Some(max),
            ),
            (None, own) => (name, own),
        };
        match limit {
            Some(limit) if asked > crate::time::whole_seconds(limit) => {
                Err(ExpiryError::BeyondLimit {
                    name,
                    asked,
                    limit_name,
                    limit: crate::time::whole_seconds(limit),
                })
            }
            _ => Ok(Some(asked)),
        }
    };
    let idle = check(
        "idle_timeout",
        idle_timeout,
        caps.max_idle_timeout,
        policy.idle_timeout,
    )?;
    let life = check("lifetime", lifetime, caps.max_lifetime, policy.lifetime)?;
    Ok(Expiry {
        idle_timeout: idle.or(current.idle_timeout),
        lifetime: life.or(current.lifetime),
        persistent: persistent.or(current.persistent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9e107d9d372bb6826bd81d3542a419d6";

    fn secrets(keys: &[&str]) -> Secrets {
        Secrets::new(keys.iter().map(|k| k.as_bytes().to_vec()).collect()).unwrap()
    }

    #[test]
    fn user_keys_are_stable_hex_and_distinct() {
        assert_eq!(user_key("ann"), user_key("ann"));
        assert_ne!(user_key("ann"), user_key("bob"));
        assert_eq!(user_key("ann").len(), 32);
        assert!(user_key("ann").bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn user_ids_must_be_short_and_non_empty() {
        assert_eq!(check_user_id(""), Err(UserIdError::Empty));
        assert!(check_user_id(&"x".repeat(MAX_USER_ID_LEN)).is_ok());
        assert!(check_user_id(&"x".repeat(MAX_USER_ID_LEN + 1)).is_err());
    }

    #[test]
    fn public_ids_name_the_owner_and_the_session_without_revealing_the_id() {
        let s = secrets(&["new secret"]);
        let key = user_key("ann");
        let public = public_id(&s, &key, ID);
        assert_eq!(public.len(), 64);
        assert!(!public.contains(ID));
        assert_eq!(owner_of_public_id(&public), Some(key.as_str()));
        assert!(is_public_id_of(&s, &public, ID));
        assert!(!is_public_id_of(
            &s,
            &public,
            "0123456789abcdef0123456789abcdef"
        ));
        // Shown before a rotation, still recognised after it.
        let rotated = secrets(&["newer secret", "new secret"]);
        assert!(is_public_id_of(&rotated, &public, ID));
        assert!(!is_public_id_of(&secrets(&["other"]), &public, ID));
        for bad in [
            "",
            "zz",
            &public.to_uppercase(),
            &format!("{public}0"),
            &public[1..],
        ] {
            assert_eq!(owner_of_public_id(bad), None, "{bad}");
            assert!(!is_public_id_of(&s, bad, ID));
        }
    }

    #[test]
    fn a_session_expiry_stays_within_the_caps() {
        let policy = Policy {
            idle_timeout: Some(Duration::from_secs(600)),
            lifetime: None,
            ..Policy::default()
        };
        let secs = |n| Some(Duration::from_secs(n));
        let none = ExpiryCaps::default();
        // Shorter than the manager's: fine; longer without a max: refused, naming the option.
        let short = change_expiry(
            &policy,
            &none,
            Expiry::default(),
            secs(60),
            None,
            Some(false),
        )
        .unwrap();
        assert_eq!(
            short,
            Expiry {
                idle_timeout: Some(60),
                lifetime: None,
                persistent: Some(false)
            }
        );
        let e =
            change_expiry(&policy, &none, Expiry::default(), secs(601), None, None).unwrap_err();
        assert!(e.to_string().contains("max_idle_timeout"), "{e}");
        // A manager without a lifetime has no limit on one.
        assert!(
            change_expiry(&policy, &none, Expiry::default(), None, secs(1 << 30), None).is_ok()
        );
        // With a max: up to it.
        let caps = ExpiryCaps {
            max_idle_timeout: secs(30 * 86_400),
            max_lifetime: secs(86_400),
        };
        let long =
            change_expiry(&policy, &caps, short, secs(30 * 86_400), None, Some(true)).unwrap();
        assert_eq!(
            long,
            Expiry {
                idle_timeout: Some(30 * 86_400),
                lifetime: None,
                persistent: Some(true)
            }
        );
        assert!(change_expiry(&policy, &caps, short, None, secs(86_401), None).is_err());
        // Nothing given: nothing changes.
        assert_eq!(
            change_expiry(&policy, &caps, long, None, None, None).unwrap(),
            long
        );
    }

    #[test]
    fn a_record_is_revoked_only_by_a_newer_counter() {
        assert!(!is_revoked(None, None));
        assert!(!is_revoked(Some(5), None), "a lost counter ends nothing");
        assert!(!is_revoked(Some(5), Some(5)));
        assert!(!is_revoked(Some(6), Some(5)));
        assert!(is_revoked(Some(4), Some(5)));
        assert!(is_revoked(None, Some(1)), "no generation counts as 0");
        assert!(!is_revoked(None, Some(0)));
    }

    #[test]
    fn a_recreated_counter_starts_above_what_its_predecessor_handed_out() {
        // A counter created at t and bumped a few times, then lost: the next one starts at a
        // later clock reading, so it revokes every record of the first.
        let t = 1_800_000_000_000_000;
        let old = first_generation(t) + 3;
        assert!(is_revoked(Some(old), Some(first_generation(t + 1_000_000))));
        assert_eq!(first_generation(0), 1);
    }

    #[test]
    fn only_a_live_record_of_the_user_survives_a_bump() {
        let owned = |user: &str, generation| crate::codec::Extras {
            user: Some(user.to_owned()),
            generation,
            ..crate::codec::Extras::default()
        };
        let bump = Bump {
            before: 7,
            after: 8,
        };
        assert!(survives_bump(&owned("ann", Some(7)), "ann", bump));
        assert!(!survives_bump(&owned("ann", Some(6)), "ann", bump));
        assert!(!survives_bump(&owned("bob", Some(7)), "ann", bump));
        assert!(!survives_bump(
            &crate::codec::Extras::default(),
            "ann",
            bump
        ));
        // The first bump of a user: records without a generation were live.
        let first = Bump {
            before: 0,
            after: 42,
        };
        assert!(survives_bump(&owned("ann", None), "ann", first));
    }
}
