//! Reading the signing time out of a Tornado signed cookie, to know when to re-send it.
//!
//! Only the timestamp is read; the signature is Tornado's to check (`get_secure_cookie` already
//! did before this is asked). Formats, from tornado/web.py:
//! - version 2: `2|1:0|10:1300000000|3:key|8:dmFsdWU=|<hex>`: length-prefixed fields;
//! - version 1: `dmFsdWU=|1300000000|<hex>`.

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
    let length: usize = length.parse().ok()?;
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
