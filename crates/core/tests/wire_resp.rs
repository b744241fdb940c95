//! RedisStore's pipelined protocol (`WireStore`, `wire::resp`) against a real redis-server,
//! driven here from a blocking socket: every operation must come out as the blocking
//! `SessionStore` methods of the same store see it, and the other way round. Skipped with a
//! note when redis-server is missing, failed under CI=true.
//!
//! Servers come from `support`: each on a free port, counted as started only when the process
//! answering there reports the pid of the child spawned.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tornsession_core::stores::{self as wire_model, Request, SaveMode};
use tornsession_core::stores::{
    RedisOptions, RedisStore, SessionStore, StoreError, StoreErrorKind,
};
use tornsession_core::wire::{self, Dialect, Reply};

mod support;

use support::redis_command;

/// The trait by its path only: in scope, its `load`/`save`/`delete` would make the blocking
/// `SessionStore` methods called on the same `RedisStore` ambiguous.
type WireStore<'a> = dyn wire_model::WireStore + 'a;

const A: &str = "0000000000000000000000000000000a";
const B: &str = "0000000000000000000000000000000b";
const C: &str = "0000000000000000000000000000000c";
const LIMIT: usize = 1 << 20;
const PASSWORD: &str = "s3cret-pw";

fn store(url: &str) -> RedisStore {
    RedisStore::new(url, RedisOptions::default()).unwrap()
}

/// Runs `test` against a redis-server of its own, without a password: given its port, a
/// store on it, the store's pipelined model and a connection of that model.
fn with_connection(test: impl FnOnce(u16, &RedisStore, &WireStore<'_>, &mut Connection)) {
    let Some(server) = support::redis() else {
        return;
    };
    let blocking = store(&server.redis_url());
    let wire = blocking.wire().expect("a plain redis:// URL");
    let mut connection = Connection::open(wire).unwrap();
    test(server.port, &blocking, wire, &mut connection);
}

/// A new connection of `blocking`'s pipelined model, whose handshake takes `replies` replies,
/// once `blob` saved over it under A is what the blocking client loads.
fn saved_over_a_handshake(blocking: &RedisStore, replies: usize, blob: &[u8]) -> Connection {
    let wire = blocking.wire().unwrap();
    assert_eq!(wire.handshake().unwrap().replies, replies);
    let mut connection = Connection::open(wire).unwrap();
    connection
        .save(wire, A, blob, None, SaveMode::Always)
        .unwrap();
    assert_eq!(blocking.load(A, LIMIT).unwrap().unwrap(), blob);
    connection
}

/// One pipelined connection, as the asyncio one will be, on a blocking socket.
struct Connection {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Connection {
    /// Connects to the store's server and sends its handshake, if any.
    fn open(store: &WireStore<'_>) -> Result<Self, StoreError> {
        assert_eq!(store.dialect(), Dialect::Resp);
        let endpoint = &store.endpoints()[0];
        let (timeout, _connect_timeout) = store.timeouts();
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).unwrap();
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut connection = Self {
            stream,
            received: Vec::new(),
        };
        if let Some(handshake) = store.handshake() {
            let replies = connection.exchange(&[&handshake]).remove(0);
            store.handshake_reply(replies)?;
        }
        Ok(connection)
    }

    /// Writes every request in one write, then reads each one's replies, in order.
    fn exchange(&mut self, requests: &[&Request]) -> Vec<Vec<Reply>> {
        let bytes: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
        self.stream.write_all(&bytes).unwrap();
        requests
            .iter()
            .map(|request| (0..request.replies).map(|_| self.reply()).collect())
            .collect()
    }

    fn reply(&mut self) -> Reply {
        loop {
            if let Some(reply) = wire::decode(Dialect::Resp, &mut self.received, LIMIT).unwrap() {
                return reply;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the server closed the connection");
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    fn one(&mut self, request: Request) -> Vec<Reply> {
        self.exchange(&[&request]).remove(0)
    }

    fn load(
        &mut self,
        store: &WireStore<'_>,
        id: &str,
        ttl: Option<Duration>,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let replies = self.one(store.load(id, ttl));
        store.load_reply(id, replies, max_bytes)
    }

    fn save(
        &mut self,
        store: &WireStore<'_>,
        id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
        mode: SaveMode,
    ) -> Result<bool, StoreError> {
        let replies = self.one(store.save(id, blob, ttl, mode));
        store.save_reply(id, replies)
    }

    fn delete(&mut self, store: &WireStore<'_>, id: &str) -> Result<bool, StoreError> {
        let replies = self.one(store.delete(id));
        store.delete_reply(id, replies)
    }
}

fn ttl_of(port: u16, id: &str) -> i64 {
    match redis_command(port, &["TTL", &format!("tornsession:{id}")]) {
        redis::Value::Int(seconds) => seconds,
        other => panic!("TTL answered {other:?}"),
    }
}

#[test]
fn each_operation_sees_what_the_blocking_methods_see() {
    with_connection(|port, blocking, wire, connection| {
        assert!(wire.handshake().is_none());

        // Saved through the wire, loaded by the blocking client, and the other way round.
        assert!(connection
            .save(wire, A, b"from wire", None, SaveMode::Always)
            .unwrap());
        assert_eq!(blocking.load(A, LIMIT).unwrap().unwrap(), b"from wire");
        blocking.save(B, b"from blocking", None).unwrap();
        assert_eq!(
            connection.load(wire, B, None, LIMIT).unwrap().unwrap(),
            b"from blocking"
        );
        assert_eq!(connection.load(wire, C, None, LIMIT).unwrap(), None);
        assert_eq!(blocking.load(C, LIMIT).unwrap(), None);

        // A save with a time to live sets it as the blocking save does (rounded up).
        connection
            .save(
                wire,
                A,
                b"v2",
                Some(Duration::from_millis(100_500)),
                SaveMode::Always,
            )
            .unwrap();
        assert_eq!(ttl_of(port, A), 101);

        // A load with a time to live moves the expiry (GETEX), as load_touching does.
        assert_eq!(ttl_of(port, B), -1);
        let touched = connection.load(wire, B, Some(Duration::from_secs(500)), LIMIT);
        assert_eq!(touched.unwrap().unwrap(), b"from blocking");
        assert_eq!(ttl_of(port, B), 500);
        assert_eq!(
            blocking
                .load_touching(B, Duration::from_secs(600), LIMIT)
                .unwrap()
                .unwrap(),
            b"from blocking"
        );
        assert_eq!(ttl_of(port, B), 600);

        // IfExists on a missing key writes nothing, like save_if_exists.
        let written = connection.save(
            wire,
            C,
            b"ghost",
            Some(Duration::from_secs(60)),
            SaveMode::IfExists,
        );
        assert!(!written.unwrap());
        assert_eq!(blocking.load(C, LIMIT).unwrap(), None);
        assert!(!blocking.save_if_exists(C, b"ghost", None).unwrap());
        assert_eq!(connection.load(wire, C, None, LIMIT).unwrap(), None);
        // ... and over an existing one writes, with the new expiry.
        let written = connection.save(
            wire,
            A,
            b"v3",
            Some(Duration::from_secs(70)),
            SaveMode::IfExists,
        );
        assert!(written.unwrap());
        assert_eq!(blocking.load(A, LIMIT).unwrap().unwrap(), b"v3");
        assert_eq!(ttl_of(port, A), 70);

        // Delete: true when there was a record, for either path.
        assert!(connection.delete(wire, A).unwrap());
        assert_eq!(blocking.load(A, LIMIT).unwrap(), None);
        assert!(!connection.delete(wire, A).unwrap());
        assert!(!blocking.delete(A).unwrap());
        blocking.save(A, b"again", None).unwrap();
        assert!(connection.delete(wire, A).unwrap());
        connection
            .save(wire, A, b"again", None, SaveMode::Always)
            .unwrap();
        assert!(blocking.delete(A).unwrap());
    });
}

#[test]
fn errors_are_the_blocking_methods_errors() {
    with_connection(|port, blocking, wire, connection| {
        // Too large for the load's limit: OversizedRecord, worded the same, without the id.
        blocking.save(A, b"0123456789", None).unwrap();
        let from_wire = connection.load(wire, A, None, 9).unwrap_err();
        let from_blocking = blocking.load(A, 9).unwrap_err();
        assert_eq!(from_wire.kind, StoreErrorKind::OversizedRecord);
        assert_eq!(from_wire.kind, from_blocking.kind);
        assert_eq!(from_wire.to_string(), from_blocking.to_string());
        assert!(!from_wire.to_string().contains(A));
        assert_eq!(
            connection.load(wire, A, None, 10).unwrap().unwrap(),
            b"0123456789"
        );

        // A key of another type (WRONGTYPE): the store failed, worded as the blocking client words it.
        redis_command(port, &["RPUSH", &format!("tornsession:{B}"), "x"]);
        for ttl in [None, Some(Duration::from_secs(5))] {
            let from_wire = connection.load(wire, B, ttl, LIMIT).unwrap_err();
            let from_blocking = match ttl {
                None => blocking.load(B, LIMIT),
                Some(ttl) => blocking.load_touching(B, ttl, LIMIT),
            }
            .unwrap_err();
            assert_eq!(from_wire.kind, StoreErrorKind::Unavailable);
            assert_eq!(from_wire.kind, from_blocking.kind);
            assert_eq!(from_wire.to_string(), from_blocking.to_string());
            assert!(from_wire.to_string().contains("WRONGTYPE"), "{from_wire}");
        }
        // SET overwrites any type; DEL removes any type.
        assert!(connection.delete(wire, B).unwrap());

        // The connection is still in step after the errors.
        assert_eq!(
            connection.load(wire, A, None, LIMIT).unwrap().unwrap(),
            b"0123456789"
        );
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    with_connection(|port, blocking, wire, connection| {
        let big = vec![b'x'; 100_000];

        let requests = [
            wire.save(A, b"a", None, SaveMode::Always),
            wire.save(B, &big, Some(Duration::from_secs(30)), SaveMode::Always),
            wire.save(C, b"c", None, SaveMode::IfExists),
            wire.load(A, None),
            wire.load(B, Some(Duration::from_secs(40))),
            wire.load(C, None),
            wire.delete(A),
            wire.delete(C),
            wire.load(A, None),
        ];
        let mut replies = connection
            .exchange(&requests.iter().collect::<Vec<_>>())
            .into_iter();
        let mut next = || replies.next().unwrap();
        assert!(wire.save_reply(A, next()).unwrap());
        assert!(wire.save_reply(B, next()).unwrap());
        assert!(!wire.save_reply(C, next()).unwrap());
        assert_eq!(wire.load_reply(A, next(), LIMIT).unwrap().unwrap(), b"a");
        assert_eq!(wire.load_reply(B, next(), LIMIT).unwrap().unwrap(), big);
        assert_eq!(wire.load_reply(C, next(), LIMIT).unwrap(), None);
        assert!(wire.delete_reply(A, next()).unwrap());
        assert!(!wire.delete_reply(C, next()).unwrap());
        assert_eq!(wire.load_reply(A, next(), LIMIT).unwrap(), None);
        assert!(replies.next().is_none());

        assert_eq!(blocking.load(B, LIMIT).unwrap().unwrap(), big);
        assert_eq!(ttl_of(port, B), 40);
        assert!(connection.received.is_empty());
    });
}

#[test]
fn the_handshake_logs_in_with_the_urls_password() {
    let Some(server) = support::redis_with_password(PASSWORD) else {
        return;
    };
    let port = server.port;
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:{port}/0"),
        format!("redis://default:{PASSWORD}@127.0.0.1:{port}"),
    ] {
        // AUTH: one reply.
        saved_over_a_handshake(&store(&url), 1, b"in");
    }

    for url in [
        format!("redis://:wrong-{PASSWORD}@127.0.0.1:{port}/0"),
        format!("redis://default:wrong-{PASSWORD}@127.0.0.1:{port}/0"),
    ] {
        let blocking = store(&url);
        let wire = blocking.wire().unwrap();
        let e = Connection::open(wire)
            .err()
            .expect("a wrong password is refused");
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        let message = e.to_string();
        assert!(!message.contains(PASSWORD), "{message}");
        assert!(message.contains("cannot connect: "), "{message}");
        assert!(message.contains("WRONGPASS"), "{message}");
        // The blocking client is refused too.
        let e = blocking.load(A, LIMIT).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(!e.to_string().contains(PASSWORD), "{e}");
    }

    // Without a password: no handshake, and every command is refused (NOAUTH), as an error
    // of the store.
    let blocking = store(&format!("redis://127.0.0.1:{port}/0"));
    let wire = blocking.wire().unwrap();
    assert!(wire.handshake().is_none());
    let mut connection = Connection::open(wire).unwrap();
    let e = connection.load(wire, A, None, LIMIT).unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Unavailable);
    assert!(e.to_string().contains("NOAUTH"), "{e}");
}

#[test]
fn select_puts_the_records_in_the_urls_db() {
    let Some(server) = support::redis_with_password(PASSWORD) else {
        return;
    };
    let port = server.port;
    let on = |db: u8| store(&format!("redis://:{PASSWORD}@127.0.0.1:{port}/{db}"));
    let db3 = on(3);
    // AUTH and SELECT, pipelined: two replies.
    let mut connection = saved_over_a_handshake(&db3, 2, b"in 3");
    let wire = db3.wire().unwrap();
    assert_eq!(on(0).load(A, LIMIT).unwrap(), None);
    on(0).save(B, b"in 0", None).unwrap();
    assert_eq!(connection.load(wire, B, None, LIMIT).unwrap(), None);

    // A db the server does not have: the handshake is refused.
    let db99 = on(99);
    let e = Connection::open(db99.wire().unwrap()).err().unwrap();
    assert_eq!(e.kind, StoreErrorKind::Unavailable);
    assert!(e.to_string().contains("DB index is out of range"), "{e}");
    assert!(!e.to_string().contains(PASSWORD), "{e}");
}
