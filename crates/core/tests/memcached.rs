//! MemcachedStore against real memcached servers, for what only it does: keys spread over
//! several servers, the meta protocol pipelined, a restarted server's connections replaced.
//! What every store does is in the conformance suite. Skipped with a note when memcached is
//! missing, failed under CI=true.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tornsession_core::stores::memcached::server_index;
use tornsession_core::stores::{MemcachedOptions, MemcachedStore, SessionStore, StoreErrorKind};
use tornsession_core::wire::meta::{self, SetMode};
use tornsession_core::wire::Reply;

mod support;

use support::{memcached, memcached_restarted, Server};

const A: &str = "0000000000000000000000000000000a";

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
    let addresses: Vec<String> = servers.iter().map(|server| server.address()).collect();
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

/// A store whose memcached was stopped after it had several pooled connections, all idle;
/// and the port it was on.
fn stopped_with_idle_connections() -> Option<(MemcachedStore, u16)> {
    let mut server = memcached()?;
    let store = memcached_store(&server);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| store.save(A, b"before", None).unwrap());
        }
    });
    server.stop();
    Some((store, server.port))
}

#[test]
fn memcached_killed_mid_run_fails_then_the_pool_reconnects() {
    let Some((store, port)) = stopped_with_idle_connections() else {
        return;
    };
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
    let Some((store, port)) = stopped_with_idle_connections() else {
        return;
    };
    let _server = memcached_restarted(port);
    // The idle connections the old server closed are noticed without a round trip and dropped.
    for _ in 0..8 {
        assert_eq!(store.load(A, usize::MAX).unwrap(), None);
    }
}
