//! The stored form of a session: one JSON object, `{"v":1,"c":<created>,"d":{...data...}}`,
//! plus, only for sessions that use them, `"u"` (the owner's user id), `"i"` (the small info
//! of `set_info`), `"s"` (last seen, to the minute), `"x"` (the session's own expiry:
//! `{"i":idle,"l":lifetime,"p":persistent}`) and `"g"` (the owner's generation, for stores
//! that revoke by generation). Records without them are the version-1 records of before, and
//! sessions without them encode exactly as before.
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
    /// Who owns it, what it shows in a list, and its own expiry.
    pub extras: Extras,
}

/// A session's own expiry, overriding the manager's (`None`: the manager's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// Idle timeout, in whole seconds.
    #[serde(rename = "i", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Lifetime, in whole seconds.
    #[serde(rename = "l", skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
    /// Whether the cookies outlive the browser.
    #[serde(rename = "p", skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

impl Expiry {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The optional parts of a record: none of them is written unless used.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Extras {
    /// The owner's user id (`set_user`).
    #[serde(rename = "u", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Small metadata shown in the owner's session list (`set_info`).
    #[serde(rename = "i", skip_serializing_if = "Map::is_empty")]
    pub info: Map<String, Value>,
    /// When the session was last saved, in seconds since the epoch, rounded down.
    #[serde(rename = "s", skip_serializing_if = "Option::is_none")]
    pub seen: Option<u64>,
    /// The session's own limits.
    #[serde(rename = "x", skip_serializing_if = "Expiry::is_empty")]
    pub expiry: Expiry,
    /// The owner's generation when the session was saved (stores that cannot list).
    #[serde(rename = "g", skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
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
    #[serde(flatten)]
    extras: &'a Extras,
}

/// The extras are read leniently, one by one: a field of the wrong shape is ignored as any
/// unknown field always was, so records another writer added fields to still load.
#[derive(Deserialize)]
struct Envelope {
    v: u32,
    c: u64,
    d: Map<String, Value>,
    #[serde(default)]
    u: Option<Value>,
    #[serde(default)]
    i: Option<Value>,
    #[serde(default)]
    s: Option<Value>,
    #[serde(default)]
    x: Option<Value>,
    #[serde(default)]
    g: Option<Value>,
}

impl Envelope {
    fn extras(&mut self) -> Extras {
        let expiry = match self.x.take() {
            Some(Value::Object(x)) => Expiry {
                idle_timeout: x.get("i").and_then(Value::as_u64),
                lifetime: x.get("l").and_then(Value::as_u64),
                persistent: x.get("p").and_then(Value::as_bool),
            },
            _ => Expiry::default(),
        };
        Extras {
            user: match self.u.take() {
                Some(Value::String(user)) => Some(user),
                _ => None,
            },
            info: match self.i.take() {
                Some(Value::Object(info)) => info,
                _ => Map::new(),
            },
            seen: self.s.as_ref().and_then(Value::as_u64),
            expiry,
            generation: self.g.as_ref().and_then(Value::as_u64),
        }
    }
}

/// Serializes a session's items and creation time into the stored form.
pub fn encode(created: u64, data: &Map<String, Value>) -> Vec<u8> {
    encode_with(created, data, &Extras::default())
}

/// Serializes a session's items, creation time and extras into the stored form.
pub fn encode_with(created: u64, data: &Map<String, Value>, extras: &Extras) -> Vec<u8> {
    let envelope = EnvelopeRef {
        v: FORMAT_VERSION,
        c: created,
        d: data,
        extras,
    };
    serde_json::to_vec(&envelope).expect("a JSON map with string keys always serializes")
}

/// `blob` (a record of ours) with its owner's generation set to `generation`.
pub fn with_generation(blob: &[u8], generation: u64) -> Result<Vec<u8>, CodecError> {
    let record = decode(blob)?;
    let extras = Extras {
        generation: Some(generation),
        ..record.extras
    };
    Ok(encode_with(record.created, &record.data, &extras))
}

/// Reads a stored blob back; anything that is not a record of a known version is an error.
pub fn decode(blob: &[u8]) -> Result<SessionRecord, CodecError> {
    if looks_like_pickle(blob) {
        return Err(CodecError::Pickle);
    }
    let mut envelope: Envelope = serde_json::from_slice(blob)?;
    if envelope.v != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(envelope.v));
    }
    let extras = envelope.extras();
    Ok(SessionRecord {
        created: envelope.c,
        data: envelope.d,
        extras,
    })
}

/// The extras of a stored blob, decoded only when it may have any (most records have none,
/// and this runs on every load).
pub fn peek_extras(blob: &[u8]) -> Option<Extras> {
    let may_have = |marker: &[u8]| blob.windows(marker.len()).any(|w| w == marker);
    if !(may_have(br#""u":"#) || may_have(br#""x":"#)) {
        return None;
    }
    decode(blob).ok().map(|record| record.extras)
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
    fn extras_round_trip_and_old_records_still_load() {
        let data = json!({"a": 1}).as_object().unwrap().clone();
        let extras = Extras {
            user: Some("ann".into()),
            info: json!({"ua": "x"}).as_object().unwrap().clone(),
            seen: Some(60),
            expiry: Expiry {
                idle_timeout: Some(10),
                lifetime: None,
                persistent: Some(false),
            },
            generation: Some(3),
        };
        let blob = encode_with(5, &data, &extras);
        assert_eq!(
            blob,
            br#"{"v":1,"c":5,"d":{"a":1},"u":"ann","i":{"ua":"x"},"s":60,"x":{"i":10,"p":false},"g":3}"#
        );
        assert_eq!(decode(&blob).unwrap().extras, extras);
        // A record written before extras existed loads with none.
        let old = decode(br#"{"v":1,"c":5,"d":{"a":1}}"#).unwrap();
        assert_eq!(old.extras, Extras::default());
        assert_eq!(encode_with(5, &data, &Extras::default()), encode(5, &data));
        // Extras of the wrong shape are ignored, as unknown fields always were.
        let odd = decode(br#"{"v":1,"c":5,"d":{},"u":5,"x":9,"i":[],"s":"x","g":-1}"#).unwrap();
        assert_eq!(odd.extras, Extras::default());
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
