//! The digest cookie: HMAC-SHA256 keyed with the session secret over the session id.
//!
//! Verification also accepts the original module's digest (HMAC-SHA1 keyed with the *id* over the
//! secret, 40 hex) so visitors logged in before the upgrade stay logged in, and any older secret of
//! a rotation list; both are reported as [`DigestCheck::Outdated`] so the caller re-signs.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

const SHA256_HEX_LEN: usize = 64;
const ORIGINAL_SHA1_HEX_LEN: usize = 40;

/// Why a list of secrets cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("no secret given: pass a non-empty str or bytes (or a list of them, newest first)")]
    NoSecrets,
    #[error("secret number {0} is empty: every secret must be a non-empty str or bytes")]
    EmptySecret(usize),
}

/// The outcome of checking a digest against an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestCheck {
    /// Signed with the newest secret in the current format.
    Current,
    /// Genuine, but signed with an older secret or in the original module's format: re-sign it.
    Outdated,
    /// Not made with any of our secrets.
    Invalid,
}

/// The session secrets, newest first: the first signs, every one verifies.
#[derive(Clone)]
pub struct Secrets {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Secrets({} keys)", self.keys.len())
    }
}

impl Secrets {
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Self, SecretError> {
        if keys.is_empty() {
            return Err(SecretError::NoSecrets);
        }
        if let Some(index) = keys.iter().position(|k| k.is_empty()) {
            return Err(SecretError::EmptySecret(index));
        }
        Ok(Self { keys })
    }

    /// The digest of `session_id` under the newest secret, as 64 lowercase hex digits.
    pub fn sign(&self, session_id: &str) -> String {
        hex::encode(
            sha256_mac(&self.keys[0], session_id)
                .finalize()
                .into_bytes(),
        )
    }

    /// HMAC-SHA256 of `message` under every secret, newest first (for other derived values than
    /// the digest cookie, each with its own prefix in `message`).
    pub fn macs<'a>(&'a self, message: &'a str) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.keys
            .iter()
            .map(move |key| sha256_mac(key, message).finalize().into_bytes().into())
    }

    /// The secrets themselves, newest first, for keys derived from them under labels of their
    /// own (the cookie store's HKDF); never outside this crate.
    pub(crate) fn raw_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(Vec::as_slice)
    }

    /// Checks `tag`, an HMAC-SHA256 of `message` cut to its first `tag.len()` bytes (at least
    /// 16), in constant time per candidate secret: `Current` under the newest secret,
    /// `Outdated` under an older one.
    pub fn verify_mac(&self, message: &str, tag: &[u8]) -> DigestCheck {
        if tag.len() < 16 {
            return DigestCheck::Invalid;
        }
        for (index, key) in self.keys.iter().enumerate() {
            if sha256_mac(key, message).verify_truncated_left(tag).is_ok() {
                return if index == 0 {
                    DigestCheck::Current
                } else {
                    DigestCheck::Outdated
                };
            }
        }
        DigestCheck::Invalid
    }

    /// Checks `digest` against `session_id` in constant time per candidate secret.
    pub fn verify(&self, session_id: &str, digest: &[u8]) -> DigestCheck {
        let Ok(raw) = hex::decode(digest) else {
            return DigestCheck::Invalid;
        };
        match digest.len() {
            SHA256_HEX_LEN => {
                for (index, key) in self.keys.iter().enumerate() {
                    if sha256_mac(key, session_id).verify_slice(&raw).is_ok() {
                        return if index == 0 {
                            DigestCheck::Current
                        } else {
                            DigestCheck::Outdated
                        };
                    }
                }
                DigestCheck::Invalid
            }
            ORIGINAL_SHA1_HEX_LEN => {
                let genuine = self.keys.iter().any(|key| {
                    let mut mac = HmacSha1::new_from_slice(session_id.as_bytes())
                        .expect("HMAC takes keys of any length");
                    mac.update(key);
                    mac.verify_slice(&raw).is_ok()
                });
                if genuine {
                    DigestCheck::Outdated
                } else {
                    DigestCheck::Invalid
                }
            }
            _ => DigestCheck::Invalid,
        }
    }
}

fn sha256_mac(key: &[u8], session_id: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(session_id.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9e107d9d372bb6826bd81d3542a419d6";

    fn secrets(keys: &[&str]) -> Secrets {
        Secrets::new(keys.iter().map(|k| k.as_bytes().to_vec()).collect()).unwrap()
    }

    #[test]
    fn sign_is_hmac_sha256_of_the_id() {
        // Python: hmac.new(b"s3cret", ID.encode(), hashlib.sha256).hexdigest()
        assert_eq!(
            secrets(&["s3cret"]).sign(ID),
            "22028056bffd5ae7f18fc0697e15561393c7faac238b6e31d9459e4173eceeef"
        );
        let digest = secrets(&["s3cret"]).sign(ID);
        assert_eq!(digest.len(), 64);
        assert_eq!(
            secrets(&["s3cret"]).verify(ID, digest.as_bytes()),
            DigestCheck::Current
        );
    }

    #[test]
    fn original_sha1_digest_is_accepted_as_outdated() {
        // Python 2 original: hmac.new(session_id, secret, sha1).hexdigest()
        let mut mac = HmacSha1::new_from_slice(ID.as_bytes()).unwrap();
        mac.update(b"ttesttt");
        let original = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            secrets(&["ttesttt"]).verify(ID, original.as_bytes()),
            DigestCheck::Outdated
        );
        assert_eq!(
            secrets(&["other"]).verify(ID, original.as_bytes()),
            DigestCheck::Invalid
        );
    }

    #[test]
    fn older_secret_verifies_as_outdated() {
        let old = secrets(&["old"]).sign(ID);
        let rotated = secrets(&["new", "old"]);
        assert_eq!(rotated.verify(ID, old.as_bytes()), DigestCheck::Outdated);
        assert_eq!(
            rotated.verify(ID, rotated.sign(ID).as_bytes()),
            DigestCheck::Current
        );
        assert_eq!(
            secrets(&["new"]).verify(ID, old.as_bytes()),
            DigestCheck::Invalid
        );
    }

    #[test]
    fn tampered_or_malformed_digests_are_invalid() {
        let s = secrets(&["k"]);
        let mut digest = s.sign(ID).into_bytes();
        digest[10] = if digest[10] == b'0' { b'1' } else { b'0' };
        assert_eq!(s.verify(ID, &digest), DigestCheck::Invalid);
        assert_eq!(s.verify(ID, b""), DigestCheck::Invalid);
        assert_eq!(s.verify(ID, b"zz"), DigestCheck::Invalid);
        assert_eq!(s.verify(ID, &[0xff; 64]), DigestCheck::Invalid);
        let other_id = "0e107d9d372bb6826bd81d3542a419d6";
        assert_eq!(
            s.verify(other_id, s.sign(ID).as_bytes()),
            DigestCheck::Invalid
        );
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert_eq!(Secrets::new(vec![]).unwrap_err(), SecretError::NoSecrets);
        assert_eq!(
            Secrets::new(vec![b"a".to_vec(), vec![]]).unwrap_err(),
            SecretError::EmptySecret(1)
        );
    }
}
