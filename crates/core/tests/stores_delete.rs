//! The network stores against real servers: delete, save_if_exists, the read limit, memcached's
//! per-user generation counters, and errors that never name a session id. Skipped with a note
//! when the server binaries are missing, failed under CI=true.
//!
//! Every server is made unconfusable: tests run in parallel and may pick the same free port, so
//! a server counts as started only when the process answering on the port reports the pid of
//! the child we spawned; a child that exits (its port was taken) is retried on another port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tornsession_core::stores::memcached::server_index;
use tornsession_core::stores::{
    MemcachedOptions, MemcachedStore, RedisOptions, RedisStore, SessionStore, StoreErrorKind,
};
use tornsession_core::wire::meta::{self, SetMode};
use tornsession_core::wire::Reply;

const A: &str = "0000000000000000000000000000000a";
const B: &str = "0000000000000000000000000000000b";
const PORT_ATTEMPTS: usize = 5;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `binary` with `args(port)` on a free port and waits until the process answering there
/// (as `pid_at` asks it) is the one started; `None` when the binary is not installed.
fn start(
    binary: &str,
    args: impl Fn(u16) -> Vec<String>,
    pid_at: fn(u16) -> Option<u32>,
) -> Option<Server> {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let child = match Command::new(binary)
            .args(args(port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{binary} missing under CI: {e}"
                );
                eprintln!("skipped: {binary} is not installed");
                return None;
            }
        };
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.child.try_wait().unwrap().is_some() {
                break; // exited: most likely the port was taken meanwhile; try another
            }
            if pid_at(port) == Some(server.child.id()) {
                return Some(server);
            }
            assert!(Instant::now() < deadline, "{binary} did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
    }
    panic!("{binary} could not start on {PORT_ATTEMPTS} free ports");
}

/// Sends `request` and reads until the answer ends with `end`, with short timeouts.
fn ask(port: u16, request: &[u8], end: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.ends_with(end) {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8(answer).ok()
}

fn redis_pid(port: u16) -> Option<u32> {
    // The inline `INFO server` answer is one bulk string; its last line ends with "\r\n\r\n".
    let info = ask(port, b"INFO server\r\n", b"\r\n\r\n")?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

fn memcached_pid(port: u16) -> Option<u32> {
    let stats = ask(port, b"stats\r\n", b"END\r\n")?;
    stats
        .lines()
        .find_map(|line| line.strip_prefix("STAT pid "))
        .and_then(|pid| pid.trim().parse().ok())
}

fn redis() -> Option<Server> {
    let args = |port: u16| {
        let port = port.to_string();
        [
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from)
        .to_vec()
    };
    start("redis-server", args, redis_pid)
}

fn memcached_args(port: u16) -> Vec<String> {
    let port = port.to_string();
    ["-l", "127.0.0.1", "-p", &port, "-U", "0", "-u", "root"]
        .map(String::from)
        .to_vec()
}

fn memcached() -> Option<Server> {
    start("memcached", memcached_args, memcached_pid)
}

/// memcached again on the port of one that was stopped (it binds with SO_REUSEADDR).
fn memcached_restarted(port: u16) -> Server {
    let child = Command::new("memcached")
        .args(memcached_args(port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while memcached_pid(port) != Some(server.child.id()) {
        assert!(
            Instant::now() < deadline,
            "memcached did not come back on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn redis_store(server: &Server) -> RedisStore {
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    RedisStore::new(&format!("redis://127.0.0.1:{}/0", server.port), options).unwrap()
}

fn memcached_store(server: &Server) -> MemcachedStore {
    memcached_store_over(&[server])
}

/// One store over all of `servers`, in that order.
fn memcached_store_over(servers: &[&Server]) -> MemcachedStore {
    let options = MemcachedOptions {
        connect_timeout: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        ..MemcachedOptions::default()
    };
    let addresses: Vec<String> = servers
        .iter()
        .map(|server| format!("127.0.0.1:{}", server.port))
        .collect();
    MemcachedStore::new(&addresses, options).unwrap()
}

/// Writes all of `requests` at once on one connection to `port` and reads `count` replies.
fn pipelined(port: u16, requests: &[Vec<u8>], count: usize) -> Vec<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(&requests.concat()).unwrap();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 7]; // small reads: replies arrive split anywhere
    while replies.len() < count {
        while let Some(reply) = meta::decode(&mut buf, 1 << 20).unwrap() {
            replies.push(reply);
        }
        if replies.len() < count {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed after {} replies", replies.len());
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    assert!(buf.is_empty());
    replies
}

fn save_load_delete(store: &dyn SessionStore) {
    assert_eq!(store.load(A, usize::MAX).unwrap(), None);
    store.save(A, b"blob", None).unwrap();
    assert_eq!(
        store.load(A, usize::MAX).unwrap().as_deref(),
        Some(&b"blob"[..])
    );
    assert!(store.delete(A).unwrap(), "the record was there");
    assert_eq!(store.load(A, usize::MAX).unwrap(), None);
    // Deleting a missing record is not an error, and says there was none.
    assert!(!store.delete(A).unwrap());
}

fn save_if_exists_writes_only_over_a_record(store: &dyn SessionStore) {
    assert!(!store.save_if_exists(B, b"one", None).unwrap());
    assert_eq!(store.load(B, usize::MAX).unwrap(), None, "nothing written");
    store.save(B, b"one", None).unwrap();
    let ttl = Some(Duration::from_secs(60));
    assert!(store.save_if_exists(B, b"two", ttl).unwrap());
    assert_eq!(
        store.load(B, usize::MAX).unwrap().as_deref(),
        Some(&b"two"[..])
    );
    store.delete(B).unwrap();
    assert!(!store.save_if_exists(B, b"three", None).unwrap());
    assert_eq!(store.load(B, usize::MAX).unwrap(), None);
}

fn oversized_records_are_refused(store: &dyn SessionStore) {
    store.save(A, &[b'x'; 100], None).unwrap();
    assert_eq!(store.load(A, 100).unwrap().unwrap().len(), 100);
    for e in [
        store.load(A, 99).unwrap_err(),
        store
            .load_touching(A, Duration::from_secs(60), 99)
            .unwrap_err(),
    ] {
        assert_eq!(e.kind, StoreErrorKind::OversizedRecord, "{e}");
        assert!(!e.to_string().contains(A), "{e}");
    }
    store.delete(A).unwrap();
}

/// With the server gone, every operation fails as Unavailable and no message names the id.
fn a_dead_server_fails_without_naming_the_session(store: &dyn SessionStore) {
    let errors = [
        store.load(A, usize::MAX).unwrap_err(),
        store
            .load_touching(A, Duration::from_secs(1), usize::MAX)
            .unwrap_err(),
        store.save(A, b"x", None).unwrap_err(),
        store.save_if_exists(A, b"x", None).unwrap_err(),
        store.save_if_unchanged(A, None, b"x", None).unwrap_err(),
        store.touch(A, Duration::from_secs(1)).unwrap_err(),
        store.delete(A).unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
        let message = e.to_string();
        assert!(!message.contains(A), "{message}");
    }
}

#[test]
fn redis_store_against_a_real_server() {
    let Some(mut server) = redis() else {
        return;
    };
    let store = redis_store(&server);
    save_load_delete(&store);
    save_if_exists_writes_only_over_a_record(&store);
    oversized_records_are_refused(&store);
    server.stop();
    a_dead_server_fails_without_naming_the_session(&store);
}

#[test]
fn memcached_store_against_a_real_server() {
    let Some(mut server) = memcached() else {
        return;
    };
    let store = memcached_store(&server);
    save_load_delete(&store);
    save_if_exists_writes_only_over_a_record(&store);
    oversized_records_are_refused(&store);
    server.stop();
    a_dead_server_fails_without_naming_the_session(&store);
}

#[test]
fn memcached_generation_counters_bump_atomically_from_missing() {
    let Some(server) = memcached() else {
        return;
    };
    let store: std::sync::Arc<dyn SessionStore> = std::sync::Arc::new(memcached_store(&server));
    let user = "00000000000000000000000000000abc";
    assert!(store.revokes_by_generation());
    assert_eq!(store.user_generation(user).unwrap(), None);
    // Eight first bumps racing: every one moves the counter past all before it.
    let bumps: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.bump_user_generation(user).unwrap())
        })
        .collect();
    let mut afters: Vec<u64> = bumps.into_iter().map(|b| b.join().unwrap().after).collect();
    afters.sort_unstable();
    afters.dedup();
    assert_eq!(afters.len(), 8, "{afters:?}");
    let now = store.user_generation(user).unwrap().unwrap();
    assert_eq!(now, *afters.last().unwrap());
    let next = store.bump_user_generation(user).unwrap();
    assert_eq!((next.before, next.after), (now, now + 1));
    // Listing is refused, naming the stores that list.
    let e = store.user_session_ids(user).unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Unsupported);
    assert!(e.to_string().contains("SqliteStore"), "{e}");
}

#[test]
fn servers_started_in_parallel_never_answer_for_each_other() {
    // Several servers at once, as parallel tests start them: each store sees only its server.
    let servers: Vec<Server> = (0..4).filter_map(|_| redis()).collect();
    for (n, server) in servers.iter().enumerate() {
        assert_eq!(redis_pid(server.port), Some(server.child.id()));
        redis_store(server)
            .save(A, n.to_string().as_bytes(), None)
            .unwrap();
    }
    for (n, server) in servers.iter().enumerate() {
        let found = redis_store(server).load(A, usize::MAX).unwrap();
        assert_eq!(found.as_deref(), Some(n.to_string().as_bytes()));
    }
}

#[test]
fn memcached_keys_spread_over_two_servers_each_where_server_index_says() {
    let (Some(first), Some(second)) = (memcached(), memcached()) else {
        return;
    };
    let servers = [&first, &second];
    let store = memcached_store_over(&servers);
    let alone = [memcached_store(&first), memcached_store(&second)];
    let ids: Vec<String> = (0..40u32).map(|i| format!("{i:032x}")).collect();
    let mut per_server = [0usize; 2];
    for id in &ids {
        store.save(id, id.as_bytes(), None).unwrap();
        let home = server_index(&format!("tornsession:{id}"), 2);
        per_server[home] += 1;
        // Found on its server only, through a store over that server alone.
        assert_eq!(
            alone[home].load(id, usize::MAX).unwrap().as_deref(),
            Some(id.as_bytes())
        );
        assert_eq!(alone[1 - home].load(id, usize::MAX).unwrap(), None);
        // The pipelined path picks the same server.
        let wire = store.wire().unwrap();
        assert_eq!(wire.load(id, None).server, home);
        assert_eq!(wire.endpoints()[home].port, servers[home].port);
    }
    assert!(per_server.iter().all(|&n| n > 5), "{per_server:?}");
    for id in &ids {
        assert!(store.delete(id).unwrap());
    }
}

#[test]
fn memcached_answers_pipelined_requests_in_order() {
    let Some(server) = memcached() else {
        return;
    };
    let key = "tornsession:pipelined";
    let replies = pipelined(
        server.port,
        &[
            meta::get(key, None),
            meta::set(key, b"one\r\ntwo", 0, SetMode::Replace),
            meta::set(key, b"one\r\ntwo", 60, SetMode::Add),
            meta::set(key, b"three", 60, SetMode::Add),
            meta::get(key, Some(30)),
            meta::get_with_cas(key),
            meta::touch(key, 90),
            meta::delete(key),
            meta::delete(key),
            meta::increment("tornsession:counter"),
            meta::set("tornsession:counter", b"41", 0, SetMode::Always),
            meta::increment("tornsession:counter"),
            b"mn\r\n".to_vec(),
        ],
        13,
    );
    let codes: Vec<String> = replies
        .iter()
        .map(|reply| match reply {
            Reply::Meta { code, .. } => String::from_utf8_lossy(code).into_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        ["EN", "NS", "HD", "NS", "VA", "VA", "HD", "HD", "NF", "NF", "HD", "VA", "MN"]
    );
    let value = |i: usize| match &replies[i] {
        Reply::Meta { value, .. } => value.clone(),
        _ => None,
    };
    assert_eq!(value(4).as_deref(), Some(&b"one\r\ntwo"[..]));
    assert_eq!(value(11).as_deref(), Some(&b"42"[..]));
    let Reply::Meta { flags, .. } = &replies[5] else {
        unreachable!()
    };
    assert!(meta::flag(flags, 'c').is_some(), "{flags}");
}

#[test]
fn memcached_save_if_unchanged_compares_and_sets() {
    let Some(server) = memcached() else {
        return;
    };
    let store = memcached_store(&server);
    assert!(store.save_if_unchanged(A, None, b"first", None).unwrap());
    // Add refuses where there is a record, even an identical one.
    assert!(!store.save_if_unchanged(A, None, b"first", None).unwrap());
    assert!(!store
        .save_if_unchanged(A, Some(b"other"), b"x", None)
        .unwrap());
    assert!(!store
        .save_if_unchanged(A, Some(b"firs"), b"x", None)
        .unwrap());
    assert!(store
        .save_if_unchanged(A, Some(b"first"), b"second", None)
        .unwrap());
    assert_eq!(
        store.load(A, usize::MAX).unwrap().as_deref(),
        Some(&b"second"[..])
    );
    store.delete(A).unwrap();
    assert!(!store
        .save_if_unchanged(A, Some(b"second"), b"x", None)
        .unwrap());
    // load_touching and touch keep a record alive and leave a missing one missing.
    store.touch(A, Duration::from_secs(5)).unwrap();
    assert_eq!(store.load(A, usize::MAX).unwrap(), None);
    store.save(A, b"v", Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        store
            .load_touching(A, Duration::from_secs(60), usize::MAX)
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
    // An oversized record leaves a working store behind (its connection is dropped).
    assert_eq!(
        store.load(A, 0).unwrap_err().kind,
        StoreErrorKind::OversizedRecord
    );
    assert_eq!(store.load(A, 1).unwrap().as_deref(), Some(&b"v"[..]));
    store.delete(A).unwrap();
}

#[test]
fn memcached_killed_mid_run_fails_then_the_pool_reconnects() {
    let Some(mut server) = memcached() else {
        return;
    };
    let store = memcached_store(&server);
    // Several pooled connections, all idle once the threads are done.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| store.save(A, b"before", None).unwrap());
        }
    });
    let port = server.port;
    server.stop();
    for e in [
        store.load(A, usize::MAX).unwrap_err(),
        store.save(A, b"x", None).unwrap_err(),
    ] {
        assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
        assert!(!e.to_string().contains(A), "{e}");
    }
    let e = store.delete(A).unwrap_err();
    assert!(e.to_string().contains("md: cannot connect: "), "{e}");
    let _server = memcached_restarted(port);
    // memcached lost everything; the store works at once, on new connections.
    assert_eq!(store.load(A, usize::MAX).unwrap(), None);
    store.save(A, b"after", None).unwrap();
    assert_eq!(
        store.load(A, usize::MAX).unwrap().as_deref(),
        Some(&b"after"[..])
    );
}

#[test]
fn memcached_restarted_between_requests_costs_no_failed_request() {
    let Some(mut server) = memcached() else {
        return;
    };
    let store = memcached_store(&server);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| store.save(A, b"before", None).unwrap());
        }
    });
    let port = server.port;
    server.stop();
    let _server = memcached_restarted(port);
    // The idle connections the old server closed are noticed without a round trip and dropped.
    for _ in 0..8 {
        assert_eq!(store.load(A, usize::MAX).unwrap(), None);
    }
}
