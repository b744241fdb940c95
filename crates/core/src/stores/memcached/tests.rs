use super::keys::fnv1a;
use super::*;
use crate::stores::{Endpoint, SaveMode, SessionStore, StoreErrorKind, WireStore};
use crate::wire::meta;
use crate::wire::{Dialect, Reply};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Instant;

const A: &str = "0000000000000000000000000000000a";

#[test]
fn servers_take_host_port_or_memcache_urls() {
    let at = |host: &str, port| Endpoint {
        host: host.to_owned(),
        port,
    };
    assert_eq!(endpoint("127.0.0.1:11211"), Ok(at("127.0.0.1", 11211)));
    assert_eq!(endpoint(" localhost:11211 "), Ok(at("localhost", 11211)));
    assert_eq!(
        endpoint("memcache://127.0.0.1:11212"),
        Ok(at("127.0.0.1", 11212))
    );
    assert_eq!(
        endpoint("memcache://127.0.0.1:11212/"),
        Ok(at("127.0.0.1", 11212))
    );
    assert_eq!(endpoint("[::1]:11211"), Ok(at("::1", 11211)));
    assert_eq!(endpoint("memcache://[::1]:11211"), Ok(at("::1", 11211)));
    for bad in [
        "127.0.0.1",
        "redis://127.0.0.1:6379",
        "",
        "memcache://:11211",
        "::1:11211",
        "[::1]11211",
        "[::1",
        "host:0",
        "host:99999",
        "host:+1",
        "host:",
        "user@host:1",
        "host/x:1",
        "memcache://host:1/path",
        "ho st:1",
    ] {
        assert!(endpoint(bad).is_err(), "{bad}");
    }
    assert_eq!(
        endpoint("redis://h:1").unwrap_err(),
        "bad server \"redis://h:1\": expected host:port or memcache://host:port"
    );
    assert_eq!(
        endpoint("h").unwrap_err(),
        "bad server \"h\": expected host:port"
    );
}

#[test]
fn exptime_is_zero_for_none_relative_up_to_30_days_absolute_beyond() {
    let now = 1_800_000_000;
    assert_eq!(exptime(None, now), 0);
    assert_eq!(exptime(Some(Duration::from_secs(60)), now), 60);
    assert_eq!(exptime(Some(Duration::from_millis(100)), now), 1);
    assert_eq!(exptime(Some(Duration::ZERO), now), 1);
    let thirty_days = RELATIVE_EXPTIME_LIMIT;
    assert_eq!(
        exptime(Some(Duration::from_secs(thirty_days)), now),
        2_592_000
    );
    assert_eq!(
        exptime(Some(Duration::from_secs(thirty_days + 1)), now),
        (now + thirty_days + 1) as u32
    );
}

#[test]
fn keys_spread_over_servers_stably() {
    // Fixed values: a change here would send every session to another server.
    assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    let mut per_server = [0usize; 2];
    for i in 0..1000u32 {
        per_server[server_index(&format!("tornsession:{i:032x}"), 2)] += 1;
    }
    assert!(per_server.iter().all(|&n| n > 350), "{per_server:?}");
}

#[test]
fn rejects_bad_prefixes_servers_and_options() {
    let bad_prefix = MemcachedOptions {
        prefix: "with space".to_owned(),
        ..MemcachedOptions::default()
    };
    assert!(MemcachedStore::new(&["127.0.0.1:1".to_owned()], bad_prefix).is_err());
    assert!(MemcachedStore::new(&[], MemcachedOptions::default()).is_err());
    assert!(MemcachedStore::new(&["nope".to_owned()], MemcachedOptions::default()).is_err());
}

fn two_servers() -> MemcachedStore {
    let servers = ["127.0.0.1:1".to_owned(), "memcache://[::1]:2".to_owned()];
    MemcachedStore::new(&servers, MemcachedOptions::default()).unwrap()
}

#[test]
fn wire_requests_go_to_the_keys_server_as_one_buffer() {
    let store = two_servers();
    assert_eq!(store.dialect(), Dialect::Meta);
    assert_eq!(store.endpoints()[1].host, "::1");
    assert!(store.handshake().is_none());
    assert!(SessionStore::wire(&store).is_some());
    let key = format!("tornsession:{A}");
    let server = server_index(&key, 2);
    let load = WireStore::load(&store, A, Some(Duration::from_millis(1500)));
    assert_eq!(load.server, server);
    assert_eq!(load.replies, 1);
    assert_eq!(load.bytes, format!("mg {key} v T2\r\n").into_bytes());
    let plain = WireStore::load(&store, A, None);
    assert_eq!(plain.bytes, format!("mg {key} v\r\n").into_bytes());
    let save = WireStore::save(&store, A, b"{}", None, SaveMode::IfExists);
    assert_eq!(
        save.bytes,
        format!("ms {key} 2 MR\r\n{{}}\r\n").into_bytes()
    );
    assert_eq!(save.server, server);
    let save = WireStore::save(
        &store,
        A,
        b"{}",
        Some(Duration::from_secs(9)),
        SaveMode::Always,
    );
    assert_eq!(
        save.bytes,
        format!("ms {key} 2 T9\r\n{{}}\r\n").into_bytes()
    );
    assert_eq!(
        WireStore::delete(&store, A).bytes,
        format!("md {key}\r\n").into_bytes()
    );
    assert_eq!(store.timeouts(), (DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT));
}

fn reply(code: &[u8; 2], value: Option<&[u8]>) -> Vec<Reply> {
    vec![Reply::Meta {
        code: *code,
        flags: String::new(),
        value: value.map(<[u8]>::to_vec),
    }]
}

#[test]
fn wire_replies_read_as_the_blocking_methods_do() {
    let store = two_servers();
    assert_eq!(
        store.load_reply(A, reply(b"VA", Some(b"x")), 10).unwrap(),
        Some(b"x".to_vec())
    );
    assert_eq!(store.load_reply(A, reply(b"EN", None), 10).unwrap(), None);
    let e = store
        .load_reply(A, reply(b"VA", Some(b"xx")), 1)
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::OversizedRecord);
    assert!(store.save_reply(A, reply(b"HD", None)).unwrap());
    assert!(!store.save_reply(A, reply(b"NS", None)).unwrap());
    assert!(store.delete_reply(A, reply(b"HD", None)).unwrap());
    assert!(!store.delete_reply(A, reply(b"NF", None)).unwrap());
    let error = |text: &str| vec![Reply::Error(text.to_owned())];
    for e in [
        store
            .load_reply(A, error(&format!("SERVER_ERROR no {A}")), 10)
            .unwrap_err(),
        store.load_reply(A, reply(b"HD", None), 10).unwrap_err(),
        store.load_reply(A, vec![], 10).unwrap_err(),
        store.save_reply(A, error("CLIENT_ERROR bad")).unwrap_err(),
        store.delete_reply(A, reply(b"EX", None)).unwrap_err(),
    ] {
        assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
        assert!(!e.to_string().contains(A), "{e}");
    }
    let e = store
        .load_reply(A, error("SERVER_ERROR out of memory"), 10)
        .unwrap_err();
    assert!(
        e.to_string().ends_with("mg: SERVER_ERROR out of memory"),
        "{e}"
    );
}

#[test]
fn a_refused_connect_fails_at_once_not_after_the_connect_timeout() {
    let options = MemcachedOptions {
        connect_timeout: Duration::from_secs(5),
        ..MemcachedOptions::default()
    };
    let store = MemcachedStore::new(&["127.0.0.1:1".to_owned()], options).unwrap();
    let started = Instant::now();
    let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "waited");
    assert_eq!(e.kind, StoreErrorKind::Unavailable);
    assert!(
        e.to_string()
            .starts_with("MemcachedStore(['127.0.0.1:1']): mg: cannot connect: "),
        "{e}"
    );
}

#[test]
fn a_reply_dripping_in_fails_once_the_command_timeout_has_passed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut request = [0u8; 256];
        let _ = client.read(&mut request);
        // Each byte well within the timeout; the whole reply far beyond it.
        for byte in b"VA 40\r\n".iter().chain(&[b'x'; 40]) {
            if client.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let options = MemcachedOptions {
        timeout: Duration::from_millis(300),
        ..MemcachedOptions::default()
    };
    let store = MemcachedStore::new(std::slice::from_ref(&server), options).unwrap();
    let started = Instant::now();
    let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(e.kind, StoreErrorKind::Unavailable);
    assert!(e.to_string().ends_with("mg: no reply within 300ms"), "{e}");
}

#[test]
fn a_reply_left_from_another_request_is_never_taken_and_drops_the_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let requests = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        // Every connection: the first request gets a stale reply (another opaque, another
        // record), the next its own.
        for client in listener.incoming() {
            let mut client = client.unwrap();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut stale = true;
                let mut buf = [0u8; 512];
                while let Ok(read @ 1..) = client.read(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..read]).into_owned();
                    let opaque = meta::flag(line.trim_end(), 'O').unwrap().to_owned();
                    seen.lock().unwrap().push(line);
                    let reply = if stale {
                        "VA 9 O999\r\n{\"x\":\"y\"}\r\n".to_owned()
                    } else {
                        format!("EN O{opaque}\r\n")
                    };
                    stale = false;
                    if client.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let store = MemcachedStore::new(&[server], MemcachedOptions::default()).unwrap();
    let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
    assert_eq!(e.kind, StoreErrorKind::Crossed);
    assert!(!e.to_string().contains(A), "{e}");
    // The connection was dropped: the next load makes a new one, whose first reply is
    // stale again; never is the other record returned.
    let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
    assert_eq!(e.kind, StoreErrorKind::Crossed);
    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent
        .iter()
        .all(|line| line.starts_with("mg ") && line.ends_with(" O0\r\n")));
}
