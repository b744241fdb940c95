//! The stored form of a session: one JSON object, `{"k":"<binding>","v":1,"c":<created>,"d":{...}}`,
//! plus, only for sessions that use them, `"u"` (the owner's user id), `"i"` (the small info
//! of `set_info`), `"s"` (last seen, to the minute), `"x"` (the session's own expiry:
//! `{"i":idle,"l":lifetime,"p":persistent}`) and `"g"` (the owner's generation, for stores
//! that revoke by generation). Records without them are the version-1 records of before, and
//! sessions without them encode exactly as before.
//!
//! JSON, never pickle: whoever can write the store can plant data, but not code. The envelope
//! carries a format version and the creation time (seconds since the epoch) so absolute
//! lifetimes survive a restart.
//!
//! `"k"`, always first, binds the record to the session id it was saved under: 12 base64url
//! characters of a domain-separated SHA-256 of the id ([`binding`]). Every load checks it
//! ([`check_binding`]) before anything in the record is used, so a store or connection that
//! answers with another key's value (a lost or duplicated reply, a faulty proxy) fails the
//! request instead of serving one visitor another's session. Records without it (written by
//! tornsession 0.1.0) still load, and carry it from their next save.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

const FORMAT_VERSION: u32 = 1;

/// What is hashed before the id, so the binding is no other hash of it.
const BINDING_DOMAIN: &[u8] = b"tornsession record binding v1\0";
/// 9 bytes of the hash, 12 base64url characters: 72 bits, so records of two ids never bind alike
/// by chance.
const BINDING_BYTES: usize = 9;
const BINDING_LEN: usize = BINDING_BYTES / 3 * 4;
/// How every record this version writes begins, up to the binding.
const BINDING_PREFIX: &[u8] = br#"{"k":""#;

/// The binding of a record to `session_id`: 12 base64url characters of SHA-256 over a domain
/// tag and the id.
///
/// Unkeyed on purpose: it detects a store or connection answering with another key's value (a
/// desync), which needs no secret, and keeps records readable and writable by tools without the
/// secret (`python -m tornsession migrate`, Python stores). It is no defence against someone who
/// can write the store, who can plant any record anyway.
pub fn binding(session_id: &str) -> Binding {
    let hash = Sha256::new()
        .chain_update(BINDING_DOMAIN)
        .chain_update(session_id.as_bytes())
        .finalize();
    let mut text = [0u8; BINDING_LEN];
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(&hash[..BINDING_BYTES], &mut text)
        .expect("9 bytes are 12 base64 characters");
    Binding(text)
}

/// A record's binding to its session id, as [`binding`] makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding([u8; BINDING_LEN]);

impl Binding {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

impl Serialize for Binding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A record bound to another session id than the one it was loaded for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the record is bound to another session id: the store answered with another key's value")]
pub struct Crossed;

/// Checks that `blob`, loaded for `session_id`, was saved under it: `Err(Crossed)` when it carries
/// a binding to another id. Records without one (0.1.0) pass; so does what is not a JSON object
/// (decoding reports it). A record as this version writes it is checked on its first 19 bytes;
/// any other that names `"k"` is parsed down to its top-level fields to find it.
pub fn check_binding(blob: &[u8], session_id: &str) -> Result<(), Crossed> {
    if let Some(rest) = blob.strip_prefix(BINDING_PREFIX) {
        return match rest.get(..=BINDING_LEN) {
            Some(bound)
                if bound[..BINDING_LEN] == binding(session_id).0 && bound[BINDING_LEN] == b'"' =>
            {
                Ok(())
            }
            _ => Err(Crossed),
        };
    }
    // Any other spelling of "k" (escaped, spaced, not first) needs a parse to be found; a record
    // with neither `"k"` nor an escape in it has none.
    let has = |needle: &[u8]| blob.windows(needle.len()).any(|w| w == needle);
    if !has(br#""k""#) && !has(br"\u") {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct OnlyBinding {
        #[serde(default)]
        k: Option<Value>,
    }
    match serde_json::from_slice::<OnlyBinding>(blob) {
        // Not a record at all: decoding says what it is.
        Err(_) | Ok(OnlyBinding { k: None }) => Ok(()),
        Ok(OnlyBinding {
            k: Some(Value::String(k)),
        }) if k.as_bytes() == binding(session_id).0 => Ok(()),
        Ok(_) => Err(Crossed),
    }
}

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
    /// What converts it depends on where it was found (see `SessionStore::pickle_advice`).
    #[error("a pickle from the original session.py, which tornsession never loads")]
    Pickle,
}

/// Whether a blob starts as the original module's pickles do: a protocol 0 dict (`(dp0`), a
/// protocol 1 empty dict (`}`), or a protocol 2+ header (`\x80` and the version).
fn looks_like_pickle(blob: &[u8]) -> bool {
    matches!(blob, [b'(', b'd', ..] | [b'}', ..] | [0x80, 2..=5, ..])
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    /// First, so a load checks it on the record's first bytes.
    k: Binding,
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
    /// The binding, checked apart before a record is decoded ([`check_binding`]); named here so
    /// a record that carries it twice is refused.
    #[serde(default)]
    #[allow(dead_code)]
    k: Option<serde::de::IgnoredAny>,
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

/// Serializes a session's items and creation time into the stored form, bound to `session_id`.
pub fn encode(session_id: &str, created: u64, data: &Map<String, Value>) -> Vec<u8> {
    encode_with(session_id, created, data, &Extras::default())
}

/// Serializes a session's items, creation time and extras into the stored form, bound to
/// `session_id`.
pub fn encode_with(
    session_id: &str, created: u64, data: &Map<String, Value>, extras: &Extras,
) -> Vec<u8> {
    let envelope = EnvelopeRef {
        k: binding(session_id),
        v: FORMAT_VERSION,
        c: created,
        d: data,
        extras,
    };
    serde_json::to_vec(&envelope).expect("a JSON map with string keys always serializes")
}

/// Whether `stored`, a record without a binding (as 0.1.0 wrote them), holds what `bound` (a
/// record as [`encode_with`] makes it) holds: the same bytes but the binding.
pub fn same_but_unbound(bound: &[u8], stored: &[u8]) -> bool {
    // `{"k":"` + the binding + `",`, then the fields 0.1.0 wrote after its `{`.
    let skip = BINDING_PREFIX.len() + BINDING_LEN + 2;
    bound.len() > skip
        && bound.starts_with(BINDING_PREFIX)
        && stored.first() == Some(&b'{')
        && stored[1..] == bound[skip..]
}

/// `blob` (a record of ours for `session_id`) with its owner's generation set to `generation`.
pub fn with_generation(
    session_id: &str, blob: &[u8], generation: u64,
) -> Result<Vec<u8>, CodecError> {
    let record = decode(blob)?;
    let extras = Extras {
        generation: Some(generation),
        ..record.extras
    };
    Ok(encode_with(
        session_id,
        record.created,
        &record.data,
        &extras,
    ))
}

/// Reads a stored blob back; anything that is not a record of a known version is an error. The
/// binding is not looked at: loads check it first, with [`check_binding`].
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
/// and this runs on every load). Only for a blob whose binding was checked.
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

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    /// What a record of `ID` begins with.
    fn head() -> String {
        format!(r#"{{"k":"{}","#, binding(ID).as_str())
    }

    #[test]
    fn round_trips_nested_data() {
        let data = json!({"user": "ann", "cart": [1, 2, {"sku": "x"}], "n": 1.5, "ok": null})
            .as_object()
            .unwrap()
            .clone();
        let blob = encode(ID, 1_700_000_000, &data);
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
        let blob = encode(ID, 1, &data);
        assert_eq!(
            blob,
            format!(
                r#"{}"v":1,"c":1,"d":{{"b":{{"y":1,"x":2}},"a":{{"y":1,"x":2}},"z":{{"y":1,"x":2}},"m":{{"y":1,"x":2}}}}}}"#,
                head()
            )
            .as_bytes()
        );
        let record = decode(&blob).unwrap();
        assert_eq!(record.data.keys().collect::<Vec<_>>(), ["b", "a", "z", "m"]);
        let nested = record.data["b"].as_object().unwrap();
        assert_eq!(nested.keys().collect::<Vec<_>>(), ["y", "x"]);
    }

    #[test]
    fn stored_form_is_the_documented_envelope() {
        let data = json!({"a": 1}).as_object().unwrap().clone();
        assert_eq!(
            encode(ID, 5, &data),
            format!(r#"{}"v":1,"c":5,"d":{{"a":1}}}}"#, head()).as_bytes()
        );
        // The binding: SHA-256 of the domain tag and the id, 9 bytes as base64url (what
        // migrate.py computes too).
        assert_eq!(binding(ID).as_str(), "I9sO2qKGnlKs");
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
        let blob = encode_with(ID, 5, &data, &extras);
        assert_eq!(
            blob,
            format!(
                r#"{}"v":1,"c":5,"d":{{"a":1}},"u":"ann","i":{{"ua":"x"}},"s":60,"x":{{"i":10,"p":false}},"g":3}}"#,
                head()
            )
            .as_bytes()
        );
        assert_eq!(decode(&blob).unwrap().extras, extras);
        // A record written before extras existed loads with none.
        let old = decode(br#"{"v":1,"c":5,"d":{"a":1}}"#).unwrap();
        assert_eq!(old.extras, Extras::default());
        assert_eq!(
            encode_with(ID, 5, &data, &Extras::default()),
            encode(ID, 5, &data)
        );
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
            // The way to convert it depends on where it was found: the store's to say.
            assert!(e
                .to_string()
                .contains("a pickle from the original session.py"));
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

    #[test]
    fn a_record_is_bound_to_the_id_it_was_saved_under() {
        let data = json!({"a": 1}).as_object().unwrap().clone();
        let blob = encode(ID, 5, &data);
        assert_eq!(check_binding(&blob, ID), Ok(()));
        assert_eq!(check_binding(&blob, OTHER), Err(Crossed));
        assert_ne!(binding(ID), binding(OTHER));
        // A generation rewrite keeps the binding.
        let rewritten = with_generation(ID, &blob, 4).unwrap();
        assert_eq!(check_binding(&rewritten, ID), Ok(()));
        assert_eq!(check_binding(&rewritten, OTHER), Err(Crossed));
    }

    #[test]
    fn a_record_of_0_1_0_is_the_same_record_but_its_binding() {
        let data = serde_json::json!({"a": 1}).as_object().unwrap().clone();
        let bound = encode("0123456789abcdef0123456789abcdef", 5, &data);
        assert!(same_but_unbound(&bound, br#"{"v":1,"c":5,"d":{"a":1}}"#));
        assert!(!same_but_unbound(&bound, br#"{"v":1,"c":5,"d":{"a":2}}"#));
        assert!(!same_but_unbound(&bound, &bound));
        assert!(!same_but_unbound(&bound, b""));
    }

    #[test]
    fn records_of_0_1_0_have_no_binding_and_still_load() {
        for old in [
            &br#"{"v":1,"c":5,"d":{"a":1}}"#[..],
            // "k" inside the data is no binding.
            br#"{"v":1,"c":5,"d":{"k":"I9sO2qKGnlKX"}}"#,
            br#"{"v":1,"c":5,"d":{"x":{"k":1}},"u":"ann"}"#,
        ] {
            assert_eq!(check_binding(old, ID), Ok(()));
            assert_eq!(check_binding(old, OTHER), Ok(()));
            assert!(decode(old).is_ok());
        }
    }

    #[test]
    fn a_binding_anywhere_in_the_record_is_checked() {
        let mine = binding(ID);
        let theirs = binding(OTHER);
        for (record, bound_to_id) in [
            // Another writer's order and spacing (Python's json.dumps).
            (
                format!(r#"{{"v": 1, "c": 5, "d": {{}}, "k": "{}"}}"#, mine.as_str()),
                true,
            ),
            (
                format!(
                    r#"{{"v": 1, "c": 5, "d": {{}}, "k": "{}"}}"#,
                    theirs.as_str()
                ),
                false,
            ),
            (
                format!(r#"{{ "k" : "{}", "v":1,"c":5,"d":{{}}}}"#, theirs.as_str()),
                false,
            ),
            // The key spelled with an escape.
            (
                format!(r#"{{"v":1,"c":5,"d":{{}},"\u006b":"{}"}}"#, theirs.as_str()),
                false,
            ),
            (
                format!(r#"{{"v":1,"c":5,"d":{{}},"\u006b":"{}"}}"#, mine.as_str()),
                true,
            ),
            // Not a string, truncated, or empty: not this id's binding.
            (r#"{"v":1,"c":5,"d":{},"k":7}"#.to_owned(), false),
            (r#"{"k":"I9sO2q","v":1,"c":5,"d":{}}"#.to_owned(), false),
            (r#"{"k":"","v":1,"c":5,"d":{}}"#.to_owned(), false),
        ] {
            let expected = if bound_to_id { Ok(()) } else { Err(Crossed) };
            assert_eq!(check_binding(record.as_bytes(), ID), expected, "{record}");
        }
        // Carried twice: refused by decoding.
        let twice = format!(
            r#"{{"v":1,"c":5,"d":{{}},"k":"{}","k":"{}"}}"#,
            mine.as_str(),
            mine.as_str()
        );
        assert!(matches!(
            decode(twice.as_bytes()),
            Err(CodecError::Malformed(_))
        ));
        // What is not a record is left to decoding to report (a pickle stays a pickle).
        assert_eq!(check_binding(b"\x80\x02}q\x00.", ID), Ok(()));
        assert_eq!(check_binding(b"(dp0\nS'k'\np1\nI1\ns.", ID), Ok(()));
    }
}
