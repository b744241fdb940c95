//! Session ids: 128 bits from the operating system's CSPRNG, as 32 lowercase hex digits.
//!
//! 32 lowercase hex is also the shape of the original module's md5 ids, so ids issued before the
//! upgrade pass the same validation.

use rand::rngs::OsRng;
use rand::TryRngCore;

/// Length of a session id in characters.
pub const SESSION_ID_LEN: usize = 32;

/// A fresh session id read straight from the OS CSPRNG.
pub fn new_session_id() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; SESSION_ID_LEN / 2];
    OsRng.try_fill_bytes(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether `candidate` is shaped like a session id: exactly 32 lowercase hex digits.
///
/// Checked before any store sees an id, so no cookie can name a path, a glob or another key space.
pub fn is_valid_session_id(candidate: &str) -> bool {
    candidate.len() == SESSION_ID_LEN
        && candidate
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A stand-in for `session_id` in logs: a salted hash, so logs never hold a usable id.
pub fn log_token(session_id: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::sync::OnceLock;
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let mut salt = [0u8; 16];
        // Should the OS refuse, a zero salt still never reveals an id, it only makes tokens
        // checkable against a known id.
        let _ = OsRng.try_fill_bytes(&mut salt);
        salt
    });
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(session_id.as_bytes());
    hex::encode(&hasher.finalize()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let ids: HashSet<String> = (0..1000).map(|_| new_session_id().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_valid_session_id(id)));
    }

    #[test]
    fn original_md5_ids_are_valid() {
        assert!(is_valid_session_id("9e107d9d372bb6826bd81d3542a419d6"));
    }

    #[test]
    fn rejects_wrong_length_alphabet_and_case() {
        for bad in [
            "",
            "abc",
            "9e107d9d372bb6826bd81d3542a419d",
            "9e107d9d372bb6826bd81d3542a419d66",
            "9E107D9D372BB6826BD81D3542A419D6",
            "../../../../etc/passwd/aaaaaaaaa",
            "9e107d9d372bb6826bd81d3542a419\0x",
            "9e107d9d372bb6826bd81d3542a419g6",
        ] {
            assert!(!is_valid_session_id(bad), "{bad:?} must be rejected");
        }
    }
}
