//! memcached's meta protocol (memcached 1.6+), sans I/O: the commands a session store sends
//! (`mg`, `ms`, `md`, `ma`),
//! as bytes, and the replies, parsed off the front of a buffer.
//!
//! A reply is one line, `<code>[ <flags>]\r\n`, and for `VA` a data block after it:
//! `VA <size>[ <flags>]\r\n<size bytes>\r\n`. Errors are the classic protocol's lines
//! (`ERROR`, `CLIENT_ERROR <msg>`, `SERVER_ERROR <msg>`).

use super::{ProtocolError, Reply, TagCheck};

/// The longest reply line taken (without its data block): replies are a code, a size and a
/// few short flags, so a line this long without its end is not memcached talking.
pub const MAX_LINE: usize = 8 * 1024;

/// The reply codes without a data block.
const CODES: [&[u8; 2]; 6] = [b"HD", b"EN", b"NS", b"EX", b"NF", b"MN"];

/// Reads one reply off the front of `buf`, as [`super::decode`] documents: `Ok(None)` with
/// nothing consumed while it is incomplete; a `VA` claiming more than `max_value` bytes is an
/// error before any of them arrive.
pub fn decode(buf: &mut Vec<u8>, max_value: usize) -> Result<Option<Reply>, ProtocolError> {
    let Some(line_end) = line_end(buf)? else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..line_end]).expect("checked printable ASCII");
    if line == "ERROR" || line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") {
        let reply = Reply::Error(line.to_owned());
        buf.drain(..line_end + 2);
        return Ok(Some(reply));
    }
    let (code, rest) = split_code(line)?;
    if &code != b"VA" {
        let flags = rest.to_owned();
        buf.drain(..line_end + 2);
        return Ok(Some(Reply::Meta {
            code,
            flags,
            value: None,
        }));
    }
    let (size, flags) = rest.split_once(' ').unwrap_or((rest, ""));
    let size = parse_size(size)?;
    if size > max_value {
        return Err(ProtocolError(format!(
            "a value of {size} bytes, more than the {max_value} taken"
        )));
    }
    let data_start = line_end + 2;
    let Some(total) = data_start
        .checked_add(size)
        .and_then(|end| end.checked_add(2))
    else {
        return Err(ProtocolError(format!("a value of {size} bytes")));
    };
    if buf.len() < total {
        return Ok(None);
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(ProtocolError(
            "a value's data block does not end with \\r\\n".to_owned(),
        ));
    }
    let reply = Reply::Meta {
        code,
        flags: flags.to_owned(),
        value: Some(buf[data_start..data_start + size].to_vec()),
    };
    buf.drain(..total);
    Ok(Some(reply))
}

/// The size a `VA` line at the front of `buf` claims, when it claims more than `max_value`:
/// what tells a record too large to load (the caller's limit) from a broken stream after
/// [`decode`] refused it.
pub fn oversized_value(buf: &[u8], max_value: usize) -> Option<usize> {
    let end = buf
        .windows(2)
        .take(MAX_LINE + 1)
        .position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..end]).ok()?;
    let rest = line.strip_prefix("VA ")?;
    let size = parse_size(rest.split(' ').next()?).ok()?;
    (size > max_value).then_some(size)
}

/// Where the first line of `buf` ends (the index of its `\r`), once it has arrived whole.
fn line_end(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let scanned = &buf[..buf.len().min(MAX_LINE + 2)];
    let newline = scanned.iter().position(|&b| b == b'\n');
    let line = match newline {
        Some(at) => &scanned[..at],
        None => scanned,
    };
    // A `\r` may only end the line, and may have arrived without its `\n` yet.
    let body = match (newline, line.split_last()) {
        (Some(_), Some((b'\r', body))) => body,
        (Some(_), _) => return Err(ProtocolError("a line ends without \\r\\n".to_owned())),
        (None, Some((b'\r', body))) => body,
        (None, _) => line,
    };
    if let Some(bad) = body.iter().find(|&&b| !(b' '..=b'~').contains(&b)) {
        return Err(ProtocolError(format!(
            "byte 0x{bad:02x} where a reply line was expected"
        )));
    }
    match newline {
        Some(_) if body.is_empty() => Err(ProtocolError("an empty line".to_owned())),
        Some(_) => Ok(Some(body.len())),
        None if buf.len() > MAX_LINE => Err(ProtocolError(format!(
            "a line longer than {MAX_LINE} bytes"
        ))),
        None => Ok(None),
    }
}

/// The two-letter code of a meta reply line, and what follows it after one space.
fn split_code(line: &str) -> Result<([u8; 2], &str), ProtocolError> {
    let (code, rest) = line.split_once(' ').unwrap_or((line, ""));
    let code: [u8; 2] = code
        .as_bytes()
        .try_into()
        .ok()
        .filter(|code| code == b"VA" || CODES.contains(&code))
        .ok_or_else(|| ProtocolError(format!("unknown reply {:?}", truncated(line))))?;
    if &code == b"VA" && rest.is_empty() {
        return Err(ProtocolError("VA without a size".to_owned()));
    }
    Ok((code, rest))
}

fn parse_size(text: &str) -> Result<usize, ProtocolError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError(format!(
            "{:?} is not a value size",
            truncated(text)
        )));
    }
    // Digits only, so the one failure left is a number beyond usize: never a real value.
    text.parse()
        .map_err(|_| ProtocolError(format!("a value of {} bytes", truncated(text))))
}

/// Enough of a line to say what it was, without quoting kilobytes into a message.
fn truncated(text: &str) -> &str {
    &text[..text.len().min(40)]
}

// --- Commands -------------------------------------------------------------------------------
//
// Keys are the store's: a validated prefix and session id, no spaces or control characters,
// at most 250 bytes (what memcached takes without base64).

/// `mg <key> v [T<exptime>]`: the value, its expiry moved to `exptime` when given (one round
/// trip for a touching load). Answers `VA` or `EN`.
pub fn get(key: &str, touch: Option<u32>) -> Vec<u8> {
    match touch {
        Some(exptime) => format!("mg {key} v T{exptime}\r\n").into_bytes(),
        None => format!("mg {key} v\r\n").into_bytes(),
    }
}

/// `mg <key> v c`: the value and its CAS token (in the reply's flags as `c<token>`), for a
/// compare-and-set. Answers `VA` or `EN`.
pub fn get_with_cas(key: &str) -> Vec<u8> {
    format!("mg {key} v c\r\n").into_bytes()
}

/// Which records a set writes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Whatever is there: `HD`.
    Always,
    /// Only over an existing record (`MR`): `HD`, or `NS` when there is none.
    Replace,
    /// Only where there is none (`ME`): `HD`, or `NS` when there is one.
    Add,
    /// Only over the record with this CAS token (`C<token>`): `HD`, `EX` when it changed,
    /// `NF` when it is gone.
    Cas(u64),
}

/// `ms <key> <datalen> [T<exptime>] [MR|ME|C<cas>]` and the data, one buffer ready for one
/// write. `exptime` 0 is no expiry.
pub fn set(key: &str, data: &[u8], exptime: u32, mode: SetMode) -> Vec<u8> {
    let mut line = format!("ms {key} {}", data.len());
    if exptime != 0 {
        line += &format!(" T{exptime}");
    }
    match mode {
        SetMode::Always => {}
        SetMode::Replace => line += " MR",
        SetMode::Add => line += " ME",
        SetMode::Cas(token) => line += &format!(" C{token}"),
    }
    let mut bytes = Vec::with_capacity(line.len() + data.len() + 4);
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// `md <key>`: answers `HD`, or `NF` when there was no record.
pub fn delete(key: &str) -> Vec<u8> {
    format!("md {key}\r\n").into_bytes()
}

/// `mg <key> T<exptime>`: moves the expiry without fetching the value (memcached has no `mt`:
/// a meta get without `v` is its touch); answers `HD`, or `EN` when there is no record.
pub fn touch(key: &str, exptime: u32) -> Vec<u8> {
    format!("mg {key} T{exptime}\r\n").into_bytes()
}

/// `ma <key> v`: adds 1 to a decimal counter, answering `VA` with the new value, `NF` when
/// there is no counter.
pub fn increment(key: &str) -> Vec<u8> {
    format!("ma {key} v\r\n").into_bytes()
}

/// Appends the one command in `bytes` to `out` with the opaque flag `O<tag>` added to its
/// command line, which memcached copies into the reply's flags (every meta reply but an error).
pub fn write_tagged(bytes: &[u8], tag: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let digits = super::decimal(tag, &mut buf);
    let line_end = bytes
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .unwrap_or(bytes.len());
    out.reserve(bytes.len() + digits.len() + 2);
    out.extend_from_slice(&bytes[..line_end]);
    out.extend_from_slice(b" O");
    out.extend_from_slice(digits);
    out.extend_from_slice(&bytes[line_end..]);
}

/// Whether every reply carries the opaque `tag` (see [`super::check_tag`]): an error reply has
/// none, and leaves the connection unchecked.
pub fn check_tag(tag: u64, replies: &mut [Reply]) -> TagCheck {
    let mut buf = [0u8; 20];
    let digits = super::decimal(tag, &mut buf);
    let mut check = TagCheck::InStep;
    for reply in replies.iter() {
        match reply {
            Reply::Meta { flags, .. }
                if flag(flags, 'O').is_some_and(|echoed| echoed.as_bytes() == digits) => {}
            Reply::Error(_) => check = TagCheck::Unchecked,
            _ => {
                return TagCheck::OutOfStep(
                    "replies out of step with requests (a reply was lost, duplicated or added): \
                     the reply's opaque is not the request's"
                        .to_owned(),
                )
            }
        }
    }
    check
}

/// The token of flag `name` in a reply's flags (`c` in `c12 t30` gives `12`).
pub fn flag(flags: &str, name: char) -> Option<&str> {
    flags.split(' ').find_map(|f| f.strip_prefix(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(code: &[u8; 2], flags: &str, value: Option<&[u8]>) -> Reply {
        Reply::Meta {
            code: *code,
            flags: flags.to_owned(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    /// Every reply in `bytes`, decoded from one buffer.
    fn decode_all(bytes: &[u8], max_value: usize) -> Result<Vec<Reply>, ProtocolError> {
        let mut buf = bytes.to_vec();
        let mut replies = Vec::new();
        while let Some(reply) = decode(&mut buf, max_value)? {
            replies.push(reply);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(replies)
    }

    const STREAM: &[u8] = b"HD\r\nVA 5 c12 t-1\r\nhello\r\nEN\r\nNS\r\nEX\r\nNF\r\nMN\r\n\
        VA 0\r\n\r\nHD c7 k/foo\r\nSERVER_ERROR out of memory storing object\r\n\
        CLIENT_ERROR bad command line format\r\nERROR\r\nVA 4\r\n\r\n\r\n\r\n";

    fn stream_replies() -> Vec<Reply> {
        vec![
            meta(b"HD", "", None),
            meta(b"VA", "c12 t-1", Some(b"hello")),
            meta(b"EN", "", None),
            meta(b"NS", "", None),
            meta(b"EX", "", None),
            meta(b"NF", "", None),
            meta(b"MN", "", None),
            meta(b"VA", "", Some(b"")),
            meta(b"HD", "c7 k/foo", None),
            Reply::Error("SERVER_ERROR out of memory storing object".to_owned()),
            Reply::Error("CLIENT_ERROR bad command line format".to_owned()),
            Reply::Error("ERROR".to_owned()),
            // A value may hold \r\n itself: its size, not a scan, says where it ends.
            meta(b"VA", "", Some(b"\r\n\r\n")),
        ]
    }

    #[test]
    fn every_reply_kind_decodes() {
        assert_eq!(decode_all(STREAM, 1 << 20).unwrap(), stream_replies());
    }

    #[test]
    fn a_pipelined_stream_decodes_the_same_however_it_arrives() {
        // Byte by byte: nothing is consumed until a reply is whole.
        let mut buf = Vec::new();
        let mut replies = Vec::new();
        for &byte in STREAM {
            buf.push(byte);
            let before = buf.clone();
            match decode(&mut buf, 1 << 20).unwrap() {
                Some(reply) => replies.push(reply),
                None => assert_eq!(buf, before, "consumed while incomplete"),
            }
        }
        assert!(buf.is_empty());
        assert_eq!(replies, stream_replies());
        // Split in two at every point.
        for split in 0..=STREAM.len() {
            let mut buf = STREAM[..split].to_vec();
            let mut replies = Vec::new();
            while let Some(reply) = decode(&mut buf, 1 << 20).unwrap() {
                replies.push(reply);
            }
            buf.extend_from_slice(&STREAM[split..]);
            while let Some(reply) = decode(&mut buf, 1 << 20).unwrap() {
                replies.push(reply);
            }
            assert!(buf.is_empty(), "split at {split}");
            assert_eq!(replies, stream_replies(), "split at {split}");
        }
    }

    #[test]
    fn a_value_waits_for_its_whole_data_block() {
        let mut buf = b"VA 10\r\n01234".to_vec();
        assert_eq!(decode(&mut buf, 100).unwrap(), None);
        assert_eq!(buf, b"VA 10\r\n01234");
        buf.extend_from_slice(b"56789\r");
        assert_eq!(decode(&mut buf, 100).unwrap(), None);
        buf.extend_from_slice(b"\nHD");
        assert_eq!(
            decode(&mut buf, 100).unwrap(),
            Some(meta(b"VA", "", Some(b"0123456789")))
        );
        assert_eq!(buf, b"HD", "the next reply's bytes stay");
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        let long_line = [b"HD ".as_slice(), &[b'x'; MAX_LINE]].concat();
        for bad in [
            &b"XX\r\n"[..],
            b"hd\r\n",
            b"HDX\r\n",
            b"H\r\n",
            b"\r\n",
            b"OK\r\n",
            b"VALUE foo 0 1\r\n",
            b"VA\r\n",
            b"VA x\r\n",
            b"VA -1\r\n",
            b"VA 1x\r\n",
            b"VA 3\r\nabcXY",                     // no \r\n after the data block
            b"VA 3\r\nabc\n\r",                   // the wrong way round
            b"HD\n",                              // a bare \n
            b"HD\rX\r\n",                         // a \r inside a line
            b"H\xc3\xa9\r\n",                     // not ASCII
            b"HD\x00",                            // garbage, seen before the line ends
            b"VA 99999999999999999999999999\r\n", // beyond usize
            &long_line,                           // no end in sight
        ] {
            let mut buf = bad.to_vec();
            assert!(
                decode(&mut buf, 1 << 20).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_huge_claimed_size_is_refused_before_its_data_arrives() {
        let mut buf = format!("VA {}\r\n", usize::MAX).into_bytes();
        let e = decode(&mut buf, 1 << 20).unwrap_err();
        assert!(e.0.contains("more than the 1048576 taken"), "{e}");
        assert_eq!(oversized_value(&buf, 1 << 20), Some(usize::MAX));
        // Nothing was reserved for it.
        assert!(buf.capacity() < 1024);
        // Just above the limit is refused, at it is taken.
        let mut buf = b"VA 5\r\n".to_vec();
        assert!(decode(&mut buf, 4).is_err());
        assert_eq!(oversized_value(&buf, 4), Some(5));
        assert_eq!(oversized_value(&buf, 5), None);
        buf.extend_from_slice(b"12345\r\n");
        assert_eq!(
            decode(&mut buf, 5).unwrap(),
            Some(meta(b"VA", "", Some(b"12345")))
        );
        // Overflowing the buffer's arithmetic with an unbounded limit is an error too.
        let mut buf = format!("VA {}\r\n", usize::MAX).into_bytes();
        assert!(decode(&mut buf, usize::MAX).is_err());
    }

    #[test]
    fn commands_are_one_buffer_each() {
        assert_eq!(get("p:a", None), b"mg p:a v\r\n");
        assert_eq!(get("p:a", Some(60)), b"mg p:a v T60\r\n");
        assert_eq!(get_with_cas("p:a"), b"mg p:a v c\r\n");
        assert_eq!(
            set("p:a", b"x\r\ny", 0, SetMode::Always),
            b"ms p:a 4\r\nx\r\ny\r\n"
        );
        assert_eq!(
            set("p:a", b"v", 30, SetMode::Replace),
            b"ms p:a 1 T30 MR\r\nv\r\n"
        );
        assert_eq!(set("p:a", b"v", 0, SetMode::Add), b"ms p:a 1 ME\r\nv\r\n");
        assert_eq!(
            set("p:a", b"v", 5, SetMode::Cas(42)),
            b"ms p:a 1 T5 C42\r\nv\r\n"
        );
        assert_eq!(delete("p:a"), b"md p:a\r\n");
        assert_eq!(touch("p:a", 9), b"mg p:a T9\r\n");
        assert_eq!(increment("p:gen:u"), b"ma p:gen:u v\r\n");
        assert_eq!(flag("c12 t30", 'c'), Some("12"));
        assert_eq!(flag("c12 t30", 't'), Some("30"));
        assert_eq!(flag("", 'c'), None);
    }

    #[test]
    fn a_tag_is_the_opaque_flag_on_the_command_line() {
        let tagged = |bytes: &[u8], tag: u64| {
            let mut out = b"ms x 1\r\n1\r\n".to_vec(); // what earlier requests queued stays
            write_tagged(bytes, tag, &mut out);
            out.split_off(11)
        };
        assert_eq!(tagged(&get("p:a", Some(60)), 0), b"mg p:a v T60 O0\r\n");
        assert_eq!(
            tagged(&set("p:a", b"x\r\ny", 30, SetMode::Replace), 42),
            b"ms p:a 4 T30 MR O42\r\nx\r\ny\r\n"
        );
        assert_eq!(
            tagged(&delete("p:a"), u64::MAX),
            format!("md p:a O{}\r\n", u64::MAX).as_bytes()
        );
        assert_eq!(
            super::super::tagged_replies(super::super::Dialect::Meta, 1),
            1
        );
    }

    #[test]
    fn every_reply_must_carry_the_requests_opaque() {
        let check = |tag: u64, reply: Reply| check_tag(tag, &mut [reply]);
        assert_eq!(check(7, meta(b"EN", "O7", None)), TagCheck::InStep);
        assert_eq!(
            check(7, meta(b"VA", "c2 O7 t-1", Some(b"{}"))),
            TagCheck::InStep
        );
        assert_eq!(check(7, meta(b"HD", "O7", None)), TagCheck::InStep);
        assert_eq!(
            check(7, Reply::Error("SERVER_ERROR out of memory".to_owned())),
            TagCheck::Unchecked
        );
        for reply in [
            meta(b"VA", "O6", Some(b"{}")),
            meta(b"VA", "O70", Some(b"{}")),
            meta(b"VA", "", Some(b"{}")),
            meta(b"HD", "c7", None),
            meta(b"EN", "O", None),
        ] {
            assert!(
                matches!(check(7, reply.clone()), TagCheck::OutOfStep(_)),
                "{reply:?}"
            );
        }
    }

    /// Requests 1..=n split from a reply stream as a connection does (see the RESP tests):
    /// the replies of those in step, and whether the step was seen broken.
    fn read(stream: &[Reply], n: u64) -> (Vec<Reply>, bool) {
        let mut replies = stream.iter().cloned();
        let mut got = Vec::new();
        for i in 1..=n {
            let Some(reply) = replies.next() else {
                return (got, true);
            };
            let mut own = [reply];
            if check_tag(i, &mut own) != TagCheck::InStep {
                return (got, true);
            }
            got.extend(own);
        }
        (got, replies.next().is_some())
    }

    #[test]
    fn a_lost_doubled_or_added_reply_is_caught_before_a_reply_is_used() {
        let n = 5;
        let own = |i: u64| {
            meta(
                b"VA",
                &format!("O{i}"),
                Some(format!("record-{i}").as_bytes()),
            )
        };
        let clean: Vec<Reply> = (1..=n).map(own).collect();
        assert_eq!(read(&clean, n), (clean.clone(), false));
        for at in 0..clean.len() {
            let mut dropped = clean.clone();
            dropped.remove(at);
            let mut doubled = clean.clone();
            doubled.insert(at, clean[at].clone());
            let mut added = clean.clone();
            added.insert(at, meta(b"EN", "", None));
            for (case, faulty) in [("drop", dropped), ("double", doubled), ("add", added)] {
                let (got, broken) = read(&faulty, n);
                assert!(broken, "{case} at {at} went unnoticed");
                for (i, reply) in got.iter().enumerate() {
                    assert_eq!(reply, &own(i as u64 + 1), "{case} at {at}");
                }
            }
        }
    }

    #[test]
    fn tagged_requests_decode_the_same_at_every_split_point() {
        // The replies of tagged requests, as memcached sends them, split anywhere.
        let stream: &[u8] =
            b"VA 2 O1\r\n{}\r\nEN O2\r\nHD O3\r\nVA 4 c9 O4\r\n\r\n\r\n\r\nNF O5\r\n";
        let tags = [1u64, 2, 3, 4, 5];
        for split in 0..=stream.len() {
            let mut buf = stream[..split].to_vec();
            let mut replies = Vec::new();
            while let Some(reply) = decode(&mut buf, 1 << 20).unwrap() {
                replies.push(reply);
            }
            buf.extend_from_slice(&stream[split..]);
            while let Some(reply) = decode(&mut buf, 1 << 20).unwrap() {
                replies.push(reply);
            }
            assert_eq!(replies.len(), tags.len(), "split at {split}");
            for (reply, tag) in replies.into_iter().zip(tags) {
                assert_eq!(
                    check_tag(tag, &mut [reply]),
                    TagCheck::InStep,
                    "split at {split}"
                );
            }
        }
    }
}
