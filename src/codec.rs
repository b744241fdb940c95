//! The stored form of a session: one JSON object, `{"v":1,"c":<created>,"d":{...data...}}`.
//!
//! JSON, never pickle: whoever can write the store can plant data, but not code. The envelope
//! carries a format version and the creation time (seconds since the epoch) so absolute
//! lifetimes survive a restart.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const FORMAT_VERSION: u32 = 1;

/// What a stored blob decodes to.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// When the session was first created, in seconds since the Unix epoch.
    pub created: u64,
    /// The session's items.
    pub data: Map<String, Value>,
}

/// Why a stored blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not a tornsession record: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(
        "record format version {0} is newer than this tornsession understands ({FORMAT_VERSION})"
    )]
    UnknownVersion(u32),
    #[error(
        "a pickle from the original session.py, which tornsession never loads: convert the \
         session folder once with `python -m tornsession.migrate SESSION_DIR`"
    )]
    Pickle,
}

/// Whether a blob starts as the original module's pickles do: a protocol 0 dict (`(dp0`), a
/// protocol 1 empty dict (`}`), or a protocol 2+ header (`\x80` and the version).
fn looks_like_pickle(blob: &[u8]) -> bool {
    matches!(blob, [b'(', b'd', ..] | [b'}', ..] | [0x80, 2..=5, ..])
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    c: u64,
    d: &'a Map<String, Value>,
}

#[derive(Deserialize)]
struct Envelope {
    v: u32,
    c: u64,
    d: Map<String, Value>,
}

/// Serializes a session's items and creation time into the stored form.
pub fn encode(created: u64, data: &Map<String, Value>) -> Vec<u8> {
    let envelope = EnvelopeRef {
        v: FORMAT_VERSION,
        c: created,
        d: data,
    };
    serde_json::to_vec(&envelope).expect("a JSON map with string keys always serializes")
}

/// Reads a stored blob back; anything that is not a record of a known version is an error.
pub fn decode(blob: &[u8]) -> Result<SessionRecord, CodecError> {
    if looks_like_pickle(blob) {
        return Err(CodecError::Pickle);
    }
    let envelope: Envelope = serde_json::from_slice(blob)?;
    if envelope.v != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(envelope.v));
    }
    Ok(SessionRecord {
        created: envelope.c,
        data: envelope.d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_nested_data() {
        let data = json!({"user": "ann", "cart": [1, 2, {"sku": "x"}], "n": 1.5, "ok": null})
            .as_object()
            .unwrap()
            .clone();
        let blob = encode(1_700_000_000, &data);
        let record = decode(&blob).unwrap();
        assert_eq!(record.created, 1_700_000_000);
        assert_eq!(record.data, data);
    }

    #[test]
    fn keys_keep_their_insertion_order_through_encode_and_decode() {
        // serde_json's preserve_order: a session iterates in the order its keys were set,
        // as a dict does, before and after a round trip through the store.
        let mut data = Map::new();
        for key in ["b", "a", "z", "m"] {
            data.insert(key.to_owned(), json!({"y": 1, "x": 2}));
        }
        let blob = encode(1, &data);
        assert_eq!(
            blob,
            br#"{"v":1,"c":1,"d":{"b":{"y":1,"x":2},"a":{"y":1,"x":2},"z":{"y":1,"x":2},"m":{"y":1,"x":2}}}"#
        );
        let record = decode(&blob).unwrap();
        assert_eq!(record.data.keys().collect::<Vec<_>>(), ["b", "a", "z", "m"]);
        let nested = record.data["b"].as_object().unwrap();
        assert_eq!(nested.keys().collect::<Vec<_>>(), ["y", "x"]);
    }

    #[test]
    fn stored_form_is_the_documented_envelope() {
        let data = json!({"a": 1}).as_object().unwrap().clone();
        assert_eq!(encode(5, &data), br#"{"v":1,"c":5,"d":{"a":1}}"#);
    }

    #[test]
    fn rejects_garbage_pickles_and_future_versions() {
        assert!(matches!(decode(b""), Err(CodecError::Malformed(_))));
        for pickle in [
            &b"(dp0\nS'a'\np1\nI1\ns."[..],
            b"}q\x00.",
            b"\x80\x02}q\x00.",
        ] {
            let e = decode(pickle).err().unwrap();
            assert!(matches!(e, CodecError::Pickle));
            assert!(e.to_string().contains("python -m tornsession.migrate"));
        }
        assert!(matches!(
            decode(br#"{"a":1}"#),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"v":1,"c":1,"d":[]}"#),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"v":9,"c":1,"d":{}}"#),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode(&[0xff, 0xfe, 0x00]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            r#"{{"v":1,"c":1,"d":{{"x":{}1{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            decode(deep.as_bytes()),
            Err(CodecError::Malformed(_))
        ));
    }
}
