//! RESP2 replies, parsed by the `redis-protocol` crate (what a fresh connection speaks: the
//! stores never send `HELLO 3`). Commands are packed by the `redis` crate
//! (`redis::Cmd::get_packed_command`), so only the reading side lives here.
//!
//! Before the crate sees a byte, [`frame_end`] walks the reply's headers: a server (or whatever
//! answers on its port) that claims a bulk string larger than the caller would accept is refused
//! at its header, rather than waited for while the buffer grows to the claimed size, and a
//! reply nested deep enough to exhaust the crate's recursion is refused before it recurses.

use redis_protocol::resp2::decode::decode as decode_frame;
use redis_protocol::resp2::types::OwnedFrame;

use super::{ProtocolError, Reply, TagCheck};

/// What a tag's echo starts with: no record does (they are JSON objects), so an own reply that
/// looks like a tag is another request's (see [`check_tag`]).
const TAG_MARKER: &[u8] = b"~ts:";

/// Appends `ECHO <tag>`, the command whose reply closes a tagged request's replies.
pub fn write_tag(tag: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let digits = super::decimal(tag, &mut buf);
    let mut len_buf = [0u8; 20];
    let len = super::decimal((TAG_MARKER.len() + digits.len()) as u64, &mut len_buf);
    out.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n$");
    out.extend_from_slice(len);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(TAG_MARKER);
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// A tagged request's replies are its own followed by the echo of its tag: the last must be
/// exactly this tag, and none before it a tag at all (else a reply of another request slid into
/// the request's place while a tag was lost or doubled next to it).
pub fn check_tag(tag: u64, replies: &mut Vec<Reply>) -> TagCheck {
    let mut buf = [0u8; 20];
    let digits = super::decimal(tag, &mut buf);
    match replies.pop() {
        Some(Reply::Bulk(Some(echoed))) if is_tag(&echoed, Some(digits)) => {}
        Some(Reply::Error(message)) => {
            // A server refusing every command (NOAUTH after a wrong password) says why first.
            let first = replies.iter().find_map(|reply| match reply {
                Reply::Error(own) => Some(own.as_str()),
                _ => None,
            });
            return TagCheck::OutOfStep(format!(
                "the server answered an error where the request's tag belongs: {}",
                first.unwrap_or(&message)
            ));
        }
        _ => {
            return TagCheck::OutOfStep(
                "replies out of step with requests (a reply was lost, duplicated or added): \
                 the request's tag is not where its replies end"
                    .to_owned(),
            )
        }
    }
    if replies
        .iter()
        .any(|reply| matches!(reply, Reply::Bulk(Some(bytes)) if is_tag(bytes, None)))
    {
        return TagCheck::OutOfStep(
            "replies out of step with requests: another request's tag among its replies".to_owned(),
        );
    }
    TagCheck::InStep
}

/// Whether `bytes` is a tag's echo: this one (`digits`), or any (`None`).
fn is_tag(bytes: &[u8], digits: Option<&[u8]>) -> bool {
    let Some(number) = bytes.strip_prefix(TAG_MARKER) else {
        return false;
    };
    match digits {
        Some(digits) => number == digits,
        None => !number.is_empty() && number.iter().all(u8::is_ascii_digit),
    }
}

/// How deeply arrays may nest. The stores' commands answer with no array at all; a few levels
/// cover any command, and the bound keeps the crate's recursion shallow.
const MAX_DEPTH: usize = 8;

/// The longest line (`+status`, `-error`, a header) waited for without its CRLF, unless the
/// caller's value limit is larger: an error text is never near this, and a line that never ends
/// would otherwise grow the buffer forever.
const MIN_LINE_LIMIT: usize = 64 * 1024;

/// Reads one reply off the front of `buf` (see [`super::decode`]); a bulk string or array that
/// claims more than `max_value` bytes or elements is a [`ProtocolError`] as soon as its header
/// arrives.
pub fn decode(buf: &mut Vec<u8>, max_value: usize) -> Result<Option<Reply>, ProtocolError> {
    let Some(frame) = frame_end(buf, max_value)? else {
        return Ok(None);
    };
    let reply = match decode_frame(&buf[..frame.end]) {
        Ok(Some((decoded, used))) if used == frame.end => {
            let mut nulls = frame.nulls.into_iter();
            to_reply(decoded, &mut nulls)?
        }
        Ok(_) => {
            return Err(ProtocolError(
                "a reply's length is not what its headers say".to_owned(),
            ))
        }
        Err(e) => return Err(ProtocolError(e.to_string())),
    };
    buf.drain(..frame.end);
    Ok(Some(reply))
}

/// Where the first reply ends, and for each nil in it (in the order they appear) whether it is
/// the nil array (`*-1`) rather than the nil bulk string (`$-1`): the crate parses both into
/// one `Null`.
struct Frame {
    end: usize,
    nulls: Vec<NullKind>,
}

#[derive(Debug, Clone, Copy)]
enum NullKind {
    Bulk,
    Array,
}

/// Walks the headers of the reply at the front of `buf`: `None` while some of it has not
/// arrived, an error for a header that no reply has (or one past the limits).
fn frame_end(buf: &[u8], max_value: usize) -> Result<Option<Frame>, ProtocolError> {
    let line_limit = max_value.max(MIN_LINE_LIMIT);
    let mut pos = 0;
    let mut nulls = Vec::new();
    // Elements still to come in each array opened and not yet finished, innermost last.
    let mut open: Vec<usize> = Vec::new();
    loop {
        let Some(line_end) = find_crlf(buf, pos + 1, line_limit)? else {
            return Ok(None);
        };
        let kind = buf[pos];
        let line = &buf[pos + 1..line_end];
        pos = line_end + 2;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => match length(line, "bulk string", max_value)? {
                None => nulls.push(NullKind::Bulk),
                Some(len) => {
                    pos += len + 2;
                    if buf.len() < pos {
                        return Ok(None);
                    }
                    // The crate skips the two bytes after the data without looking at them.
                    if &buf[pos - 2..pos] != b"\r\n" {
                        return Err(ProtocolError(
                            "a bulk string longer than its header says".to_owned(),
                        ));
                    }
                }
            },
            b'*' => match length(line, "array", max_value)? {
                None => nulls.push(NullKind::Array),
                Some(0) => {}
                Some(len) => {
                    if open.len() == MAX_DEPTH {
                        return Err(ProtocolError(format!(
                            "arrays nested more than {MAX_DEPTH} deep"
                        )));
                    }
                    open.push(len);
                    continue;
                }
            },
            other => {
                return Err(ProtocolError(format!(
                    "a reply cannot start with {:?}",
                    char::from(other)
                )))
            }
        }
        // One element is complete: it may complete the arrays around it.
        loop {
            match open.last_mut() {
                None => return Ok(Some(Frame { end: pos, nulls })),
                Some(remaining) if *remaining > 1 => {
                    *remaining -= 1;
                    break;
                }
                Some(_) => {
                    open.pop();
                }
            }
        }
    }
}

/// Where the line starting at `from` ends (the index of its `\r`), `None` while it has not, an
/// error once it is longer than `limit` without ending.
fn find_crlf(buf: &[u8], from: usize, limit: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    let searched = &rest[..rest.len().min(limit.saturating_add(2))];
    match searched.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some(from + at)),
        None if rest.len() > limit.saturating_add(1) => Err(too_long(limit)),
        None => Ok(None),
    }
}

fn too_long(limit: usize) -> ProtocolError {
    ProtocolError(format!("a line longer than {limit} bytes"))
}

/// A bulk string's or array's length header: `None` for the nil one (`-1`).
fn length(line: &[u8], what: &str, max_value: usize) -> Result<Option<usize>, ProtocolError> {
    let bad = || {
        ProtocolError(format!(
            "{what} length {:?} is not a length",
            String::from_utf8_lossy(line)
        ))
    };
    let claimed: i64 = std::str::from_utf8(line)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(bad)?;
    match claimed {
        -1 => Ok(None),
        claimed if claimed < 0 => Err(bad()),
        claimed => match usize::try_from(claimed) {
            Ok(len) if len <= max_value => Ok(Some(len)),
            _ => Err(ProtocolError(format!(
                "{what} length {claimed} is more than the {max_value} accepted"
            ))),
        },
    }
}

fn to_reply(
    frame: OwnedFrame,
    nulls: &mut impl Iterator<Item = NullKind>,
) -> Result<Reply, ProtocolError> {
    Ok(match frame {
        OwnedFrame::SimpleString(text) => Reply::Status(
            String::from_utf8(text)
                .map_err(|_| ProtocolError("a status reply that is not UTF-8".to_owned()))?,
        ),
        OwnedFrame::Error(text) => Reply::Error(text),
        OwnedFrame::Integer(n) => Reply::Int(n),
        OwnedFrame::BulkString(data) => Reply::Bulk(Some(data)),
        // The crate's frames come depth first, in the order of the bytes, as `frame_end` met
        // the nils.
        OwnedFrame::Null => match nulls.next() {
            Some(NullKind::Array) => Reply::Array(None),
            Some(NullKind::Bulk) => Reply::Bulk(None),
            None => return Err(ProtocolError("a nil the headers did not show".to_owned())),
        },
        OwnedFrame::Array(frames) => Reply::Array(Some(
            frames
                .into_iter()
                .map(|frame| to_reply(frame, nulls))
                .collect::<Result<_, _>>()?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Dialect};

    const LIMIT: usize = 1 << 20;

    fn one(bytes: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        let mut buf = bytes.to_vec();
        let reply = decode(&mut buf, LIMIT);
        if let Ok(Some(_)) = reply {
            assert!(buf.is_empty(), "left over: {buf:?}");
        }
        reply
    }

    fn bulk(data: &[u8]) -> Reply {
        Reply::Bulk(Some(data.to_vec()))
    }

    #[test]
    fn each_kind_of_reply() {
        assert_eq!(one(b"$5\r\nhe\r\no\r\n"), Ok(Some(bulk(b"he\r\no"))));
        assert_eq!(one(b"$0\r\n\r\n"), Ok(Some(bulk(b""))));
        assert_eq!(one(b"$-1\r\n"), Ok(Some(Reply::Bulk(None))));
        assert_eq!(one(b":42\r\n"), Ok(Some(Reply::Int(42))));
        assert_eq!(one(b":-7\r\n"), Ok(Some(Reply::Int(-7))));
        assert_eq!(one(b"+OK\r\n"), Ok(Some(Reply::Status("OK".to_owned()))));
        assert_eq!(
            one(b"-WRONGTYPE Operation against a key\r\n"),
            Ok(Some(Reply::Error(
                "WRONGTYPE Operation against a key".to_owned()
            )))
        );
        assert_eq!(one(b"*0\r\n"), Ok(Some(Reply::Array(Some(vec![])))));
        assert_eq!(one(b"*-1\r\n"), Ok(Some(Reply::Array(None))));
        assert_eq!(
            one(b"*4\r\n$1\r\na\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n$-1\r\n"),
            Ok(Some(Reply::Array(Some(vec![
                bulk(b"a"),
                Reply::Bulk(None),
                Reply::Array(None),
                Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(None)])),
            ]))))
        );
    }

    #[test]
    fn an_incomplete_reply_consumes_nothing() {
        for partial in [
            &b""[..],
            b"$",
            b"$5",
            b"$5\r",
            b"$5\r\nhel",
            b"$5\r\nhello",
            b"$5\r\nhello\r",
            b"+OK",
            b"*2\r\n:1\r\n",
            b"*2\r\n:1\r\n*1\r\n",
        ] {
            let mut buf = partial.to_vec();
            assert_eq!(decode(&mut buf, LIMIT), Ok(None), "{partial:?}");
            assert_eq!(buf, partial);
        }
    }

    #[test]
    fn a_pipelined_stream_fed_byte_by_byte_gives_the_same_replies() {
        let stream: &[u8] =
            b"+OK\r\n$3\r\nabc\r\n$-1\r\n:1\r\n-ERR no\r\n*2\r\n$1\r\nx\r\n*-1\r\n:0\r\n";
        let expected = vec![
            Reply::Status("OK".to_owned()),
            bulk(b"abc"),
            Reply::Bulk(None),
            Reply::Int(1),
            Reply::Error("ERR no".to_owned()),
            Reply::Array(Some(vec![bulk(b"x"), Reply::Array(None)])),
            Reply::Int(0),
        ];

        let mut buf = stream.to_vec();
        let mut whole = Vec::new();
        while let Some(reply) = decode(&mut buf, LIMIT).unwrap() {
            whole.push(reply);
        }
        assert_eq!(whole, expected);
        assert!(buf.is_empty());

        let mut buf = Vec::new();
        let mut trickled = Vec::new();
        for byte in stream {
            buf.push(*byte);
            while let Some(reply) = decode(&mut buf, LIMIT).unwrap() {
                trickled.push(reply);
            }
        }
        assert_eq!(trickled, expected);
        assert!(buf.is_empty());
    }

    #[test]
    fn bytes_that_are_no_reply_are_protocol_errors() {
        for bad in [
            &b"?what\r\n"[..],
            b"hello\r\n",
            b"$abc\r\n",
            b"$-2\r\n",
            b"$\r\n",
            b"*x\r\n",
            b"*-5\r\n",
            b":12a\r\n",
            b":\r\n",
            b"$3\r\nabcXY",
            b"*1\r\n!\r\n",
            b"-\xff\xfe\r\n",
            b"+\xff\r\n",
        ] {
            let mut buf = bad.to_vec();
            assert!(decode(&mut buf, LIMIT).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_huge_claimed_length_is_refused_at_its_header() {
        let mut buf = b"$1048577\r\n".to_vec();
        let e = decode(&mut buf, LIMIT).unwrap_err();
        assert!(e.0.contains("1048577"), "{e}");
        let mut buf = b"$9223372036854775807\r\n".to_vec();
        assert!(decode(&mut buf, LIMIT).is_err());
        let mut buf = b"*2\r\n$100\r\n".to_vec();
        assert!(decode(&mut buf, 99).is_err());
        // Exactly the limit is accepted.
        let mut buf = b"$3\r\nabc\r\n".to_vec();
        assert_eq!(decode(&mut buf, 3), Ok(Some(bulk(b"abc"))));
    }

    #[test]
    fn endless_lines_and_deep_nesting_are_refused() {
        let mut buf = b"+".to_vec();
        buf.resize(LIMIT + 10, b'a');
        assert!(decode(&mut buf, LIMIT).is_err());
        let mut buf = b"*1\r\n".repeat(10_000);
        buf.extend_from_slice(b":1\r\n");
        let e = decode(&mut buf, LIMIT).unwrap_err();
        assert!(e.0.contains("nested"), "{e}");
        let mut buf = b"*1\r\n".repeat(MAX_DEPTH);
        buf.extend_from_slice(b":1\r\n");
        assert!(decode(&mut buf, LIMIT).unwrap().is_some());
    }

    fn tag(n: u64) -> Reply {
        bulk(format!("~ts:{n}").as_bytes())
    }

    #[test]
    fn a_tag_is_an_echo_after_the_request() {
        let mut out = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec();
        write_tag(0, &mut out);
        write_tag(1234567, &mut out);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nECHO\r\n$5\r\n~ts:0\r\n\
              *2\r\n$4\r\nECHO\r\n$11\r\n~ts:1234567\r\n"
        );
        let mut tagged = Vec::new();
        wire::write_tagged(Dialect::Resp, b"+X", u64::MAX, &mut tagged);
        assert!(tagged.ends_with(format!("~ts:{}\r\n", u64::MAX).as_bytes()));
        assert_eq!(wire::tagged_replies(Dialect::Resp, 2), 3);
    }

    #[test]
    fn the_tag_is_checked_and_taken_off() {
        let mut replies = vec![bulk(b"{}"), tag(7)];
        assert_eq!(check_tag(7, &mut replies), TagCheck::InStep);
        assert_eq!(replies, vec![bulk(b"{}")]);
        // An error of the request's own command is in step when its tag follows.
        let mut replies = vec![Reply::Error("OOM".to_owned()), tag(8)];
        assert_eq!(check_tag(8, &mut replies), TagCheck::InStep);
        for (expected, replies) in [
            (7, vec![bulk(b"{}"), tag(6)]),
            (7, vec![bulk(b"{}"), tag(70)]),
            (7, vec![bulk(b"{}"), bulk(b"ts:7")]),
            (7, vec![bulk(b"{}"), Reply::Bulk(None)]),
            (7, vec![tag(6), tag(7)]),
            (7, vec![bulk(b"{}"), Reply::Error("NOAUTH".to_owned())]),
            (7, vec![]),
        ] {
            let mut replies = replies;
            assert!(
                matches!(check_tag(expected, &mut replies), TagCheck::OutOfStep(_)),
                "{replies:?}"
            );
        }
        let mut refused = vec![
            Reply::Error("WRONGPASS invalid password".to_owned()),
            Reply::Error("NOAUTH".to_owned()),
        ];
        match check_tag(1, &mut refused) {
            TagCheck::OutOfStep(why) => assert!(why.contains("WRONGPASS"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// The server's answer to requests 1..=n of one own reply each, as a proxy passes it on.
    fn stream(n: u64) -> Vec<Reply> {
        (1..=n)
            .flat_map(|i| [bulk(format!("record-{i}").as_bytes()), tag(i)])
            .collect()
    }

    /// Splits `stream` into requests 1..=n as a connection does: the own replies of those in
    /// step, and whether the step was seen broken (a wrong tag, a request left without all its
    /// replies, or a reply left over that nobody asked for).
    fn read(stream: &[Reply], n: u64) -> (Vec<Vec<Reply>>, bool) {
        let mut replies = stream.iter().cloned();
        let mut got = Vec::new();
        for i in 1..=n {
            let mut own: Vec<Reply> = replies.by_ref().take(2).collect();
            if own.len() < 2 || check_tag(i, &mut own) != TagCheck::InStep {
                return (got, true);
            }
            got.push(own);
        }
        (got, replies.next().is_some())
    }

    #[test]
    fn a_lost_doubled_or_added_reply_is_caught_before_a_reply_is_used() {
        let n = 5;
        let clean = stream(n);
        let own = |i: usize| vec![bulk(format!("record-{}", i + 1).as_bytes())];
        let (got, broken) = read(&clean, n);
        assert!(!broken);
        assert_eq!(got, (0..n as usize).map(own).collect::<Vec<_>>());
        for at in 0..clean.len() {
            let mut dropped = clean.clone();
            dropped.remove(at);
            let mut doubled = clean.clone();
            doubled.insert(at, clean[at].clone());
            let mut added = clean.clone();
            added.insert(at, bulk(b"stray"));
            for (case, faulty) in [("drop", dropped), ("double", doubled), ("add", added)] {
                // Every request read before the fault showed got its own replies; the fault
                // is always seen.
                let (got, broken) = read(&faulty, n);
                assert!(broken, "{case} at {at} went unnoticed");
                for (i, replies) in got.iter().enumerate() {
                    assert_eq!(replies, &own(i), "{case} at {at}");
                }
            }
        }
    }

    #[test]
    fn tagged_requests_decode_the_same_at_every_split_point() {
        let stream: &[u8] =
            b"$2\r\n{}\r\n$5\r\n~ts:1\r\n$-1\r\n$5\r\n~ts:2\r\n+OK\r\n:1\r\n$5\r\n~ts:3\r\n";
        let requests: [(u64, usize); 3] = [(1, 1), (2, 1), (3, 2)];
        for split in 0..=stream.len() {
            let mut buf = stream[..split].to_vec();
            let mut replies = Vec::new();
            while let Some(reply) = decode(&mut buf, LIMIT).unwrap() {
                replies.push(reply);
            }
            buf.extend_from_slice(&stream[split..]);
            while let Some(reply) = decode(&mut buf, LIMIT).unwrap() {
                replies.push(reply);
            }
            let mut replies = replies.into_iter();
            for (tag, own) in requests {
                let mut got: Vec<Reply> = replies.by_ref().take(own + 1).collect();
                assert_eq!(
                    check_tag(tag, &mut got),
                    TagCheck::InStep,
                    "split at {split}"
                );
                assert_eq!(got.len(), own);
            }
        }
    }
}
