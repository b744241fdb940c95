//! Tornado's signed cookies, read in Rust: the request's `Cookie` header parsed as
//! `tornado.httputil.parse_cookie` does, and version-2 signed values checked as
//! `tornado.web.decode_signed_value` does (tornado/web.py). Anything outside the plain shapes
//! Tornado itself produces (version 1, quoting escapes, non-ASCII, unusual digits) is left to
//! Tornado: [`Decoded::AskTornado`].
//!
//! - version 2: `2|1:0|10:1300000000|3:key|8:dmFsdWU=|<hex HMAC-SHA256>`: length-prefixed fields;
//! - version 1: `dmFsdWU=|1300000000|<hex>`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What reading one signed cookie came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Genuine: the value, and when it was signed.
    Value(Vec<u8>, u64),
    /// What Tornado answers with None: missing, forged, expired, another cookie's value.
    Rejected,
    /// A shape this reader does not handle: ask Tornado.
    AskTornado,
}

/// The cookie secret: one key, or Tornado's `{key_version: key}` for rotation.
pub enum CookieSecret {
    Single(Vec<u8>),
    Versioned(Vec<(i64, Vec<u8>)>),
}

/// A cookie looked up in a `Cookie` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// Its value, as `parse_cookie` leaves it.
    Value(&'a str),
    Missing,
    /// Unquoting it would need Tornado's escape handling (or the header is not ASCII).
    AskTornado,
}

/// Cookie `name` in a `Cookie` header, as `parse_cookie` finds it (the last one of that name
/// wins, surrounding quotes removed).
pub fn find_cookie<'a>(header: &'a str, name: &str) -> Found<'a> {
    if !header.is_ascii() {
        return Found::AskTornado;
    }
    let mut found = None;
    for chunk in header.split(';') {
        let (key, value) = chunk.split_once('=').unwrap_or(("", chunk));
        if key.trim_matches(is_python_space) != name {
            continue;
        }
        let value = value.trim_matches(is_python_space);
        let unquoted = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) if value.len() >= 2 => inner,
            _ => value,
        };
        if unquoted.contains(['\\', '"']) {
            return Found::AskTornado;
        }
        found = Some(unquoted);
    }
    found.map_or(Found::Missing, Found::Value)
}

/// ASCII whitespace as Python's `str.strip()` sees it (the header is ASCII here).
fn is_python_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f'
    )
}

/// Checks a signed value as `decode_signed_value(secret, name, value, max_age_days)` does.
pub fn decode(
    secret: &CookieSecret,
    name: &str,
    value: &str,
    now: f64,
    max_age_days: f64,
) -> Decoded {
    let Some(rest) = value.strip_prefix("2|") else {
        // Version 1 (or garbage): Tornado's rules, Tornado's code.
        return Decoded::AskTornado;
    };
    let Some((key_version, rest)) = length_prefixed(rest) else {
        return Decoded::AskTornado;
    };
    let Some((timestamp, rest)) = length_prefixed(rest) else {
        return Decoded::AskTornado;
    };
    let Some((name_field, rest)) = length_prefixed(rest) else {
        return Decoded::AskTornado;
    };
    let Some((value_field, signature)) = length_prefixed(rest) else {
        return Decoded::AskTornado;
    };
    let (Some(key_version), Some(timestamp)) = (plain_int(key_version), plain_int(timestamp))
    else {
        return Decoded::AskTornado;
    };
    let key = match secret {
        CookieSecret::Single(key) => key.as_slice(),
        CookieSecret::Versioned(keys) => match keys
            .iter()
            .find(|(v, _)| i64::try_from(key_version) == Ok(*v))
        {
            Some((_, key)) => key.as_slice(),
            None => return Decoded::Rejected,
        },
    };
    let signed = &value[..value.len() - signature.len()];
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(signed.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    // Tornado compares the hex strings in constant time; so do we, over bytes of equal length.
    if signature.len() != expected.len() || !subtle_eq(signature.as_bytes(), expected.as_bytes()) {
        return Decoded::Rejected;
    }
    if name_field != name {
        return Decoded::Rejected;
    }
    if (timestamp as f64) < now - max_age_days * 86400.0 {
        return Decoded::Rejected;
    }
    match base64::engine::general_purpose::STANDARD.decode(value_field) {
        Ok(decoded) => Decoded::Value(decoded, timestamp),
        // Tornado's b64decode is lenient (it drops stray characters): let it decide.
        Err(_) => Decoded::AskTornado,
    }
}

/// Constant-time equality of two byte strings of the same length.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Digits only, as Tornado writes them (Python's int() accepts more: those go to Tornado).
fn plain_int(field: &str) -> Option<u64> {
    if field.is_empty() || field.len() > 18 || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

/// When the cookie was signed, in seconds since the epoch, or `None` if it is not a signed value.
pub fn signed_at(raw: &str) -> Option<u64> {
    let raw = raw.trim_matches('"');
    if let Some(rest) = raw.strip_prefix("2|") {
        let (_key_version, rest) = length_prefixed(rest)?;
        let (timestamp, _) = length_prefixed(rest)?;
        return timestamp.parse().ok();
    }
    let mut parts = raw.split('|');
    let (_value, timestamp, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    timestamp.parse().ok()
}

/// Splits `N:<N bytes>|rest` into the field and the rest.
fn length_prefixed(input: &str) -> Option<(&str, &str)> {
    let (length, rest) = input.split_once(':')?;
    let length = usize::try_from(plain_int(length)?).ok()?;
    let field = rest.get(..length)?;
    let rest = rest.get(length..)?.strip_prefix('|')?;
    Some((field, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tornado's own test vectors (tornado/test/web_test.py, SignedValueTest).
    const V1: &str = "dmFsdWU=|1300000000|31c934969f53e48164c50768b40cbd7e2daaaa4f";
    const V2: &str = "2|1:0|10:1300000000|3:key|8:dmFsdWU=|3d4e60b996ff9c5d5788e333a0cba6f238a22c6c0f94788870e1a9ecd482e152";

    #[test]
    fn reads_the_timestamp_of_both_versions() {
        assert_eq!(signed_at(V1), Some(1_300_000_000));
        assert_eq!(signed_at(V2), Some(1_300_000_000));
        assert_eq!(signed_at(&format!("\"{V2}\"")), Some(1_300_000_000));
    }

    fn key() -> CookieSecret {
        CookieSecret::Single(b"It's a secret to everybody".to_vec())
    }

    #[test]
    fn decodes_tornados_v2_test_vector() {
        let decoded = decode(&key(), "key", V2, 1_300_000_000.0, 31.0);
        assert_eq!(decoded, Decoded::Value(b"value".to_vec(), 1_300_000_000));
    }

    #[test]
    fn rejects_what_tornado_rejects() {
        // Expired: older than max_age_days.
        assert_eq!(
            decode(&key(), "key", V2, 1_300_000_000.0 + 32.0 * 86400.0, 31.0),
            Decoded::Rejected
        );
        // Another cookie's value.
        assert_eq!(
            decode(&key(), "other", V2, 1_300_000_000.0, 31.0),
            Decoded::Rejected
        );
        // Another secret.
        let other = CookieSecret::Single(b"nope".to_vec());
        assert_eq!(
            decode(&other, "key", V2, 1_300_000_000.0, 31.0),
            Decoded::Rejected
        );
        // A tampered signature.
        let tampered = V2.replace("3d4e", "3d4f");
        assert_eq!(
            decode(&key(), "key", &tampered, 1_300_000_000.0, 31.0),
            Decoded::Rejected
        );
        // A dict secret without that key version.
        let versioned = CookieSecret::Versioned(vec![(1, b"x".to_vec())]);
        assert_eq!(
            decode(&versioned, "key", V2, 1_300_000_000.0, 31.0),
            Decoded::Rejected
        );
    }

    #[test]
    fn leaves_version_1_and_odd_shapes_to_tornado() {
        assert_eq!(
            decode(&key(), "key", V1, 1_300_000_000.0, 31.0),
            Decoded::AskTornado
        );
        assert_eq!(
            decode(&key(), "key", "2|+1:0|", 0.0, 31.0),
            Decoded::AskTornado
        );
        assert_eq!(decode(&key(), "key", "", 0.0, 31.0), Decoded::AskTornado);
    }

    #[test]
    fn finds_cookies_as_parse_cookie_does() {
        let header = format!("a=1; session_id=\"{V2}\";b = 2 ; session_id=last");
        assert_eq!(find_cookie(&header, "session_id"), Found::Value("last"));
        assert_eq!(find_cookie(&header, "b"), Found::Value("2"));
        assert_eq!(find_cookie(&header, "missing"), Found::Missing);
        assert_eq!(find_cookie(&format!("k=\"{V2}\""), "k"), Found::Value(V2));
        assert_eq!(find_cookie("k=\"a\\\"b\"", "k"), Found::AskTornado);
        assert_eq!(find_cookie("k=é", "k"), Found::AskTornado);
    }

    #[test]
    fn garbage_is_none_never_a_panic() {
        for bad in [
            "",
            "2|",
            "2|1:0|",
            "2|9:0|10:1",
            "2|1:0|3:abc|",
            "a|b",
            "a|b|c|d",
            "2|1:0|99999999999999999999:x",
            "2|1:é|",
        ] {
            assert_eq!(signed_at(bad), None, "{bad:?}");
        }
    }
}
