//! The stores' wire protocols, sans I/O: replies parsed from whatever bytes have arrived, and
//! the tags that keep requests and replies in step. No sockets and no knowledge of stores here:
//! the request model (`stores::pipelined`) builds on these, the asyncio connections (the
//! binding crate's `wire_link`) and the blocking clients drive them from their own I/O, and
//! `cargo test` drives them from buffers.
//!
//! Redis speaks RESP (parsed by the `redis-protocol` crate, packed by the `redis` crate);
//! memcached speaks its meta protocol (`mg`/`ms`/`md`/`ma`, memcached 1.6+), small enough to
//! parse here (see `meta`).
//!
//! Every request a connection sends carries a tag, the connection's sequence number for it,
//! that the server echoes back ([`write_tagged`], [`check_tag`]): memcached's opaque flag
//! (`O<tag>`) on the command itself, and for Redis (RESP2 has no opaque) an `ECHO <tag>` after
//! the request's own commands. A reply dropped, duplicated or added anywhere (a faulty proxy, a
//! cancelled caller) then shows as a wrong tag at the next request, before any of its replies
//! is used, rather than as one visitor's record given to another.

pub mod meta;
pub mod resp;

/// One reply, in either protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// RESP bulk string (`None`: the nil bulk string).
    Bulk(Option<Vec<u8>>),
    /// RESP integer.
    Int(i64),
    /// RESP simple string (`+OK`).
    Status(String),
    /// An error reply: RESP `-ERR ...`; memcached `SERVER_ERROR ...`, `CLIENT_ERROR ...`,
    /// `ERROR`.
    Error(String),
    /// RESP array (`None`: the nil array).
    Array(Option<Vec<Reply>>),
    /// A memcached meta reply: its two-letter code (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`, `MN`),
    /// its flags as sent (`t30 c12`, without the leading space), and for `VA` the value.
    Meta {
        code: [u8; 2],
        flags: String,
        value: Option<Vec<u8>>,
    },
}

/// Bytes that are not a reply of the protocol: the connection cannot be trusted any more and
/// is replaced; every request waiting on it fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server's reply does not parse: {0}")]
pub struct ProtocolError(pub String);

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Resp,
    Meta,
}

/// Reads replies off the front of a connection's buffer: `Ok(None)` when the buffer holds no
/// complete reply yet (nothing is consumed then), `Ok(Some(reply))` with that reply's bytes
/// drained from `buf`, `Err` when the bytes can never become a reply.
pub fn decode(
    dialect: Dialect,
    buf: &mut Vec<u8>,
    max_value: usize,
) -> Result<Option<Reply>, ProtocolError> {
    match dialect {
        Dialect::Resp => resp::decode(buf, max_value),
        Dialect::Meta => meta::decode(buf, max_value),
    }
}

/// What the replies of one tagged request say about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCheck {
    /// They carry the request's tag: they are its own (the tag is taken off).
    InStep,
    /// An error reply without a tag (memcached's `SERVER_ERROR ...`): no data to misplace, so
    /// the request fails with it, but the connection cannot be vouched for any more and takes
    /// no new requests.
    Unchecked,
    /// The tag is missing or another's: a reply was lost, duplicated or added. Nothing in them
    /// may be used; every request waiting on the connection fails and it is closed.
    OutOfStep(String),
}

/// Appends `bytes`, a request of `dialect`, to `out`, tagged with `tag`. A meta request is one
/// command (its first line gets the opaque flag); a RESP request any number of commands.
pub fn write_tagged(dialect: Dialect, bytes: &[u8], tag: u64, out: &mut Vec<u8>) {
    match dialect {
        Dialect::Resp => {
            out.extend_from_slice(bytes);
            resp::write_tag(tag, out);
        }
        Dialect::Meta => meta::write_tagged(bytes, tag, out),
    }
}

/// How many replies a tagged request of `replies` own replies gets.
pub fn tagged_replies(dialect: Dialect, replies: usize) -> usize {
    match dialect {
        Dialect::Resp => replies + 1,
        Dialect::Meta => replies,
    }
}

/// Checks that `replies` are the answer to the request tagged `tag`, and takes the tag off
/// (Redis's trailing `ECHO` reply): only after [`TagCheck::InStep`] or
/// [`TagCheck::Unchecked`] may the caller read them.
pub fn check_tag(dialect: Dialect, tag: u64, replies: &mut Vec<Reply>) -> TagCheck {
    match dialect {
        Dialect::Resp => resp::check_tag(tag, replies),
        Dialect::Meta => meta::check_tag(tag, replies),
    }
}

/// `tag` in decimal, without allocating: the bytes are `buf`'s tail.
pub fn decimal(tag: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = tag;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return &buf[at..];
        }
    }
}
