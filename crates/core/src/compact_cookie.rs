//! The compact cookie (`cookie_format="compact"`): one cookie carrying the session id, when it
//! was issued and a MAC made with the manager's own secrets, instead of the original's two
//! Tornado-signed cookies (`"pair"`).
//!
//! Its value is `<32-hex id>.<issued-at, base36 seconds>.<base64url HMAC-SHA256, 192 bits>`,
//! about 72 bytes. The MAC covers a label of its own, the id and the issued-at, so it never equals
//! the pair's digest cookie (a MAC of the bare id) and cannot be pasted from it. It has no `|`,
//! which every Tornado signed value has: that is how a request's cookie is told apart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::digest::{DigestCheck, Secrets};
use crate::ids;
use crate::lifecycle::{cookie_aging, CookieCheck, Verified};

/// The MAC's length in bytes: 192 bits, above the 128 that make forging hopeless.
const MAC_BYTES: usize = 24;
/// Its base64url length without padding.
const MAC_CHARS: usize = MAC_BYTES / 3 * 4;
/// Domain separation: the MAC is over this label, the id and the issued-at, never the bare id.
const LABEL: &str = "tornsession compact cookie v1\0";
/// How old a compact cookie may be: the 31 days `get_secure_cookie` allows a pair, so both
/// formats end alike for a session nobody visits.
pub const MAX_AGE: u64 = 31 * 86_400;
/// Base36 digits of an issued-at: 12 cover every u64 worth of seconds that matters.
const MAX_ISSUED_DIGITS: usize = 12;

/// Which cookies a manager sends. Both are always read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieFormat {
    /// The original's two Tornado-signed cookies: the id and its digest.
    #[default]
    Pair,
    /// One cookie: id, issued-at and MAC.
    Compact,
}

impl CookieFormat {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "pair" => Ok(Self::Pair),
            "compact" => Ok(Self::Compact),
            other => Err(format!(
                "cookie_format must be 'pair' or 'compact', not {other:?}"
            )),
        }
    }
}

/// Whether a cookie value is meant as a compact one (no `|`, which every Tornado signed value
/// has, and a `.`): such a value is checked as compact and never handed to Tornado.
pub fn is_compact_shaped(value: &str) -> bool {
    !value.contains('|') && value.contains('.')
}

/// The compact cookie for `id`, issued at `now` (seconds), MAC'd under the newest secret.
pub fn encode(secrets: &Secrets, id: &str, now: u64) -> String {
    let issued = base36(now);
    let mac = secrets
        .macs(&message(id, &issued))
        .next()
        .expect("Secrets holds at least one key");
    format!(
        "{id}.{issued}.{}",
        URL_SAFE_NO_PAD.encode(&mac[..MAC_BYTES])
    )
}

/// A compact cookie checked: the id it names (and whether it must be sent again: an older
/// secret, or issued more than a day ago), or `Invalid` for anything not made by us (malformed,
/// wrong MAC, too old).
pub fn verify(secrets: &Secrets, value: &str, now: u64) -> CookieCheck {
    let mut parts = value.split('.');
    let (Some(id), Some(issued), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return CookieCheck::Invalid;
    };
    if !ids::is_valid_session_id(id) || mac.len() != MAC_CHARS {
        return CookieCheck::Invalid;
    }
    let (Some(issued_at), Ok(tag)) = (parse_base36(issued), URL_SAFE_NO_PAD.decode(mac)) else {
        return CookieCheck::Invalid;
    };
    let outdated = match secrets.verify_mac(&message(id, issued), &tag) {
        DigestCheck::Invalid => return CookieCheck::Invalid,
        DigestCheck::Current => false,
        DigestCheck::Outdated => true,
    };
    if now.saturating_sub(issued_at) > MAX_AGE {
        return CookieCheck::Invalid;
    }
    CookieCheck::Verified(Verified {
        id: id.to_owned(),
        cookies_due: outdated || cookie_aging(Some(issued_at), now),
        sealed: None,
    })
}

/// The session a request names when it may carry either format (a jar mid-switch): the
/// configured format's cookie first; one of the other format is as good, but its cookies are
/// due, so the next response re-sends them in the configured format. Neither genuine: `Invalid`
/// if either was a forgery, else `Absent`.
pub fn pick(format: CookieFormat, compact: CookieCheck, pair: CookieCheck) -> CookieCheck {
    let (preferred, other) = match format {
        CookieFormat::Compact => (compact, pair),
        CookieFormat::Pair => (pair, compact),
    };
    match (preferred, other) {
        (CookieCheck::Verified(verified), _) => CookieCheck::Verified(verified),
        (_, CookieCheck::Verified(verified)) => CookieCheck::Verified(Verified {
            cookies_due: true,
            ..verified
        }),
        (CookieCheck::Invalid, _) | (_, CookieCheck::Invalid) => CookieCheck::Invalid,
        (CookieCheck::Absent, CookieCheck::Absent) => CookieCheck::Absent,
    }
}

fn message(id: &str, issued: &str) -> String {
    format!("{LABEL}{id}.{issued}")
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(MAX_ISSUED_DIGITS + 1);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

/// Lowercase base36 as `base36` writes it; anything else (empty, too long, other characters)
/// is `None`.
fn parse_base36(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > MAX_ISSUED_DIGITS {
        return None;
    }
    text.bytes().try_fold(0u64, |n, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            _ => return None,
        };
        n.checked_mul(36)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::COOKIE_REFRESH_AGE;

    const ID: &str = "9e107d9d372bb6826bd81d3542a419d6";
    const NOW: u64 = 1_780_000_000;

    fn secrets(keys: &[&str]) -> Secrets {
        Secrets::new(keys.iter().map(|k| k.as_bytes().to_vec()).collect()).unwrap()
    }

    fn verified(id: &str, cookies_due: bool) -> CookieCheck {
        CookieCheck::Verified(Verified {
            id: id.to_owned(),
            cookies_due,
            sealed: None,
        })
    }

    #[test]
    fn round_trip_is_about_70_bytes_and_current() {
        let s = secrets(&["k"]);
        let value = encode(&s, ID, NOW);
        assert!(value.len() <= 75, "{value} is {} bytes", value.len());
        assert!(value.starts_with(&format!("{ID}.")));
        assert!(is_compact_shaped(&value));
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        assert_eq!(verify(&s, &value, NOW), verified(ID, false));
        assert_eq!(verify(&s, &value, NOW + 3600), verified(ID, false));
    }

    #[test]
    fn mac_is_hmac_sha256_of_label_id_and_issued_at() {
        // Python: ID + ".tfrksg." + base64.urlsafe_b64encode(hmac.new(b"k", b"tornsession
        //   compact cookie v1\0" + ID.encode() + b".tfrksg", hashlib.sha256).digest()[:24])
        //   .rstrip(b"=") (1780000000 is "tfrksg" in base36)
        assert_eq!(
            encode(&secrets(&["k"]), ID, NOW),
            "9e107d9d372bb6826bd81d3542a419d6.tfrksg.UgypYy1O3i8i7S_pojN6p8dyYEmDP8Zu"
        );
    }

    #[test]
    fn never_equal_to_the_pair_digest() {
        let s = secrets(&["k"]);
        let value = encode(&s, ID, NOW);
        let mac = URL_SAFE_NO_PAD
            .decode(value.split('.').nth(2).unwrap())
            .unwrap();
        let digest = hex::decode(s.sign(ID)).unwrap();
        assert_ne!(&digest[..MAC_BYTES], mac.as_slice());
        // The pair's digest pasted as a compact MAC is refused.
        let pasted = format!(
            "{ID}.{}.{}",
            base36(NOW),
            URL_SAFE_NO_PAD.encode(&digest[..MAC_BYTES])
        );
        assert_eq!(verify(&s, &pasted, NOW), CookieCheck::Invalid);
    }

    #[test]
    fn older_secret_verifies_and_is_due() {
        let old = encode(&secrets(&["old"]), ID, NOW);
        assert_eq!(
            verify(&secrets(&["new", "old"]), &old, NOW),
            verified(ID, true)
        );
        assert_eq!(verify(&secrets(&["new"]), &old, NOW), CookieCheck::Invalid);
    }

    #[test]
    fn refresh_rule_is_the_pairs() {
        let s = secrets(&["k"]);
        let value = encode(&s, ID, NOW);
        assert_eq!(
            verify(&s, &value, NOW + COOKIE_REFRESH_AGE),
            verified(ID, false)
        );
        assert_eq!(
            verify(&s, &value, NOW + COOKIE_REFRESH_AGE + 1),
            verified(ID, true)
        );
        assert_eq!(verify(&s, &value, NOW + MAX_AGE), verified(ID, true));
        assert_eq!(verify(&s, &value, NOW + MAX_AGE + 1), CookieCheck::Invalid);
        // Issued "in the future" (a clock step back): genuine, not aging.
        assert_eq!(verify(&s, &value, NOW - 60), verified(ID, false));
    }

    #[test]
    fn malformed_or_tampered_values_are_invalid() {
        let s = secrets(&["k"]);
        let value = encode(&s, ID, NOW);
        let mac = value.split('.').nth(2).unwrap();
        let bad = [
            String::new(),
            ".".to_owned(),
            "..".to_owned(),
            format!("{ID}.{}", base36(NOW)),
            format!("{value}."),
            format!("{value}.x"),
            format!("{}.{}.{mac}", &ID[1..], base36(NOW)),
            format!("{}.{}.{mac}", ID.to_uppercase(), base36(NOW)),
            format!("{ID}.{}.{mac}", base36(NOW + 1)),
            format!("{ID}.{}.{mac}", base36(NOW).to_uppercase()),
            format!("{ID}..{mac}"),
            format!("{ID}.{}.{}", base36(NOW), &mac[1..]),
            format!("{ID}.{}.{mac}A", base36(NOW)),
            format!("{ID}.{}.{}", base36(NOW), mac.replace(|_| true, "=")),
            format!("{ID}.zzzzzzzzzzzzz.{mac}"),
            format!("{ID}.{}.{}", base36(NOW), "é".repeat(16)),
        ];
        for value in &bad {
            assert_eq!(verify(&s, value, NOW), CookieCheck::Invalid, "{value:?}");
        }
        let mut bytes = value.clone().into_bytes();
        for i in 0..bytes.len() {
            let saved = bytes[i];
            for replacement in [b'0', b'a', b'-', b'.', b'|', b'Z'] {
                if replacement == saved {
                    continue;
                }
                bytes[i] = replacement;
                let mutated = String::from_utf8(bytes.clone()).unwrap();
                assert_eq!(verify(&s, &mutated, NOW), CookieCheck::Invalid, "{mutated}");
            }
            bytes[i] = saved;
        }
    }

    #[test]
    fn tornado_values_are_not_compact_shaped() {
        assert!(!is_compact_shaped(
            "2|1:0|10:1780000000|10:session_id|44:OWUxMDdkOWQzNzJiYjY4MjZiZDgxZDM1NDJhNDE5ZDY=|ab"
        ));
        assert!(!is_compact_shaped("OWUx.MDdk|1780000000|ab"));
        assert!(!is_compact_shaped("plain"));
        assert!(is_compact_shaped("a.b"));
    }

    #[test]
    fn base36_round_trips() {
        for n in [0, 1, 35, 36, NOW, u64::from(u32::MAX), 36u64.pow(12) - 1] {
            assert_eq!(parse_base36(&base36(n)), Some(n), "{n}");
        }
        assert_eq!(parse_base36(""), None);
        assert_eq!(parse_base36("-1"), None);
        assert_eq!(parse_base36(&"z".repeat(13)), None);
    }

    #[test]
    fn pick_prefers_the_configured_format_and_marks_the_other_due() {
        use CookieFormat::{Compact, Pair};
        let a = || verified(ID, false);
        let b = || verified("0e107d9d372bb6826bd81d3542a419d6", false);
        assert_eq!(pick(Compact, a(), b()), a());
        assert_eq!(pick(Pair, a(), b()), b());
        assert_eq!(pick(Compact, CookieCheck::Absent, b()), {
            let mut due = b();
            if let CookieCheck::Verified(v) = &mut due {
                v.cookies_due = true;
            }
            due
        });
        assert_eq!(pick(Pair, a(), CookieCheck::Invalid), verified(ID, true));
        assert_eq!(
            pick(Compact, CookieCheck::Invalid, CookieCheck::Absent),
            CookieCheck::Invalid
        );
        assert_eq!(
            pick(Pair, CookieCheck::Invalid, CookieCheck::Absent),
            CookieCheck::Invalid
        );
        assert_eq!(
            pick(Pair, CookieCheck::Absent, CookieCheck::Absent),
            CookieCheck::Absent
        );
    }

    #[test]
    fn format_names() {
        assert_eq!(CookieFormat::parse("pair"), Ok(CookieFormat::Pair));
        assert_eq!(CookieFormat::parse("compact"), Ok(CookieFormat::Compact));
        let error = CookieFormat::parse("Compact").unwrap_err();
        assert!(error.contains("cookie_format") && error.contains("'pair' or 'compact'"));
        assert_eq!(CookieFormat::default(), CookieFormat::Pair);
    }
}
