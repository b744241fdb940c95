use super::commands::*;
use super::sentinel::sentinel_addr;
use super::*;
use crate::stores::SessionStore;
use crate::stores::StoreErrorKind;
use crate::stores::{Endpoint, Request, SaveMode};
use crate::wire::{Dialect, Reply};
use redis::{Cmd, ConnectionAddr};

const A: &str = "0000000000000000000000000000000a";

#[test]
fn a_user_index_key_is_one_cluster_slot_under_the_prefix() {
    let key = user_index_key("app:", "ffffffffffffffffffffffffffffffff");
    assert_eq!(key, "app:user:{ffffffffffffffffffffffffffffffff}");
    assert_eq!(deadline_score(None), "inf");
}

#[test]
fn keys_are_prefix_and_id() {
    assert_eq!(key(DEFAULT_PREFIX, A), format!("tornsession:{A}"));
    assert_eq!(key("", A), A);
    assert_eq!(key("app1/", A), format!("app1/{A}"));
}

#[test]
fn ttl_rounds_up_to_whole_seconds_and_never_to_zero() {
    assert_eq!(ex_seconds(Duration::from_secs(30)), 30);
    assert_eq!(ex_seconds(Duration::from_millis(1500)), 2);
    assert_eq!(ex_seconds(Duration::from_millis(1)), 1);
    assert_eq!(ex_seconds(Duration::ZERO), 1);
}

#[test]
fn passwords_never_reach_messages() {
    assert_eq!(
        redact_url("redis://user:hunter2@127.0.0.1:6379/0"),
        "redis://user:***@127.0.0.1:6379/0"
    );
    assert_eq!(
        redact_url("redis://:hunter2@127.0.0.1/"),
        "redis://:***@127.0.0.1/"
    );
    assert_eq!(
        redact_url("redis://127.0.0.1:6390/0"),
        "redis://127.0.0.1:6390/0"
    );
    assert_eq!(
        redact_url("unix:///run/redis.sock"),
        "unix:///run/redis.sock"
    );
}

#[test]
fn accepts_redis_and_unix_urls_without_connecting() {
    for url in ["redis://127.0.0.1:1/0", "unix:///nonexistent/redis.sock"] {
        let store = RedisStore::new(url, RedisOptions::default()).unwrap();
        assert_eq!(store.describe(), format!("RedisStore('{url}')"));
    }
}

#[test]
fn rejects_bad_urls_and_options() {
    let e = RedisStore::new("http://127.0.0.1/", RedisOptions::default())
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .starts_with("RedisStore('http://127.0.0.1/'): bad URL"),
        "{e}"
    );
    let zero = RedisOptions {
        timeout: Duration::ZERO,
        ..RedisOptions::default()
    };
    assert!(RedisStore::new("redis://127.0.0.1/", zero).is_err());
    let no_pool = RedisOptions {
        pool_size: 0,
        ..RedisOptions::default()
    };
    assert!(RedisStore::new("redis://127.0.0.1/", no_pool).is_err());
    assert!(RedisClusterStore::new(&[], RedisOptions::default()).is_err());
}

#[test]
fn a_refused_connection_is_unavailable_and_names_store_and_cause() {
    // Port 1 on loopback: nothing listens there, the kernel refuses at once.
    let store = RedisStore::new("redis://127.0.0.1:1/0", RedisOptions::default()).unwrap();
    for e in [
        store.load(A, usize::MAX).err().unwrap(),
        store.save(A, b"x", None).err().unwrap(),
        store.delete(A).err().unwrap(),
    ] {
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        let message = e.to_string();
        assert!(
            message.starts_with("RedisStore('redis://127.0.0.1:1/0'): cannot connect: "),
            "{message}"
        );
    }
}

#[test]
fn tls_files_need_a_tls_url_and_go_in_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, b"not checked until connecting").unwrap();
    let with = |tls: TlsFiles| RedisOptions {
        tls,
        ..RedisOptions::default()
    };
    let ca = TlsFiles {
        ca_certs: Some(pem.clone()),
        ..TlsFiles::default()
    };
    let e = RedisStore::new("redis://127.0.0.1:1/0", with(ca.clone()))
        .err()
        .unwrap();
    assert!(
        e.to_string().ends_with("ssl_* files need a rediss:// URL"),
        "{e}"
    );
    let urls = vec!["redis://127.0.0.1:1".to_owned()];
    assert!(RedisClusterStore::new(&urls, with(ca.clone())).is_err());
    let half = TlsFiles {
        certfile: Some(pem.clone()),
        ..TlsFiles::default()
    };
    let e = RedisStore::new("rediss://127.0.0.1:1/0", with(half))
        .err()
        .unwrap();
    assert!(e.to_string().ends_with("go together"), "{e}");
    let missing = TlsFiles {
        ca_certs: Some(dir.path().join("nope.pem")),
        ..TlsFiles::default()
    };
    let e = RedisStore::new("rediss://127.0.0.1:1/0", with(missing))
        .err()
        .unwrap();
    assert!(e.to_string().contains("cannot read ssl_ca_certs"), "{e}");
    // Without files, rediss:// uses the system's roots; the URL scheme is case-insensitive.
    assert!(RedisStore::new("REDISS://127.0.0.1:1/0", RedisOptions::default()).is_ok());
}

#[test]
fn sentinel_addresses_are_host_and_port() {
    assert_eq!(
        sentinel_addr("127.0.0.1:26379").unwrap(),
        ConnectionAddr::Tcp("127.0.0.1".to_owned(), 26379)
    );
    assert_eq!(
        sentinel_addr("[::1]:26379").unwrap(),
        ConnectionAddr::Tcp("::1".to_owned(), 26379)
    );
    for bad in [
        "127.0.0.1",
        ":26379",
        "host:0",
        "host:http",
        "host:70000",
        "",
    ] {
        assert!(sentinel_addr(bad).is_err(), "{bad}");
    }
}

#[test]
fn sentinel_store_checks_its_arguments_and_fails_without_sentinels() {
    let sentinels = vec!["127.0.0.1:1".to_owned()];
    let new = |sentinels: &[String], name: &str| {
        RedisSentinelStore::new(
            sentinels,
            name,
            SentinelMasterOptions::default(),
            RedisOptions::default(),
        )
    };
    assert!(new(&[], "mymaster").is_err());
    assert!(new(&sentinels, "").is_err());
    assert!(new(&["nohost".to_owned()], "mymaster").is_err());
    let store = new(&sentinels, "mymaster").unwrap();
    assert_eq!(
        store.describe(),
        "RedisSentinelStore(['127.0.0.1:1'], 'mymaster')"
    );
    let e = store.load(A, usize::MAX).err().unwrap();
    assert_eq!(e.kind, StoreErrorKind::Unavailable);
    assert!(
        e.to_string().contains("no master from the sentinels"),
        "{e}"
    );
}

#[test]
fn cluster_store_describes_its_nodes() {
    let urls = vec![
        "redis://127.0.0.1:1".to_owned(),
        "redis://:pw@127.0.0.1:2".to_owned(),
    ];
    let store = RedisClusterStore::new(&urls, RedisOptions::default()).unwrap();
    assert_eq!(
        store.describe(),
        "RedisClusterStore(['redis://127.0.0.1:1', 'redis://:***@127.0.0.1:2'])"
    );
    let e = store.load(A, usize::MAX).err().unwrap();
    assert_eq!(e.kind, StoreErrorKind::Unavailable);
}

fn wire_of(store: &RedisStore) -> &dyn crate::stores::WireStore {
    store
        .wire()
        .expect("a plain redis:// URL has a pipelined path")
}

#[test]
fn only_plain_tcp_resp2_urls_have_a_pipelined_path() {
    let store = RedisStore::new("redis://127.0.0.1:6390/2", RedisOptions::default()).unwrap();
    let wire = wire_of(&store);
    assert_eq!(wire.dialect(), Dialect::Resp);
    assert_eq!(
        wire.endpoints(),
        [Endpoint {
            host: "127.0.0.1".to_owned(),
            port: 6390
        }]
    );
    let default_port = RedisStore::new("redis://[::1]", RedisOptions::default()).unwrap();
    assert_eq!(
        wire_of(&default_port).endpoints(),
        [Endpoint {
            host: "::1".to_owned(),
            port: 6379
        }]
    );
    for url in [
        "rediss://127.0.0.1:6390/0",
        "unix:///run/redis.sock",
        "redis://127.0.0.1:6390/?protocol=3",
    ] {
        let store = RedisStore::new(url, RedisOptions::default()).unwrap();
        assert!(store.wire().is_none(), "{url}");
    }
    let urls = vec!["redis://127.0.0.1:1".to_owned()];
    let cluster = RedisClusterStore::new(&urls, RedisOptions::default()).unwrap();
    assert!(cluster.wire().is_none());
    let sentinel = RedisSentinelStore::new(
        &["127.0.0.1:1".to_owned()],
        "mymaster",
        SentinelMasterOptions::default(),
        RedisOptions::default(),
    )
    .unwrap();
    assert!(sentinel.wire().is_none());
}

#[test]
fn the_handshake_logs_in_as_the_url_says() {
    let packed = |args: &[&str]| {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.get_packed_command()
    };
    let handshake = |url: &str| {
        let store = RedisStore::new(url, RedisOptions::default()).unwrap();
        wire_of(&store).handshake()
    };
    assert_eq!(handshake("redis://127.0.0.1/0"), None);
    assert_eq!(handshake("redis://127.0.0.1"), None);
    let both = handshake("redis://al%40ice:p%3Ass@127.0.0.1/3").unwrap();
    assert_eq!(both.replies, 2);
    assert_eq!(
        both.bytes,
        [
            packed(&["AUTH", "al@ice", "p:ss"]),
            packed(&["SELECT", "3"])
        ]
        .concat()
    );
    let password_only = handshake("redis://:secret@127.0.0.1").unwrap();
    assert_eq!(password_only.replies, 1);
    assert_eq!(password_only.bytes, packed(&["AUTH", "secret"]));
    let db_only = handshake("redis://127.0.0.1/5").unwrap();
    assert_eq!(db_only.replies, 1);
    assert_eq!(db_only.bytes, packed(&["SELECT", "5"]));
}

#[test]
fn a_refused_handshake_never_shows_the_password() {
    let store = RedisStore::new("redis://:hunter2@127.0.0.1/1", RedisOptions::default()).unwrap();
    let wire = wire_of(&store);
    let ok = || Reply::Status("OK".to_owned());
    assert!(wire.handshake_reply(vec![ok(), ok()]).is_ok());
    for replies in [
        vec![Reply::Error("WRONGPASS hunter2 is wrong".to_owned()), ok()],
        vec![
            ok(),
            Reply::Error("ERR DB index is out of range".to_owned()),
        ],
        vec![ok()],
        vec![ok(), Reply::Int(1)],
    ] {
        let e = wire.handshake_reply(replies).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        let message = e.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.starts_with("RedisStore('redis://:***@127.0.0.1/1'): cannot connect: "),
            "{message}"
        );
    }
}

#[test]
fn operations_are_the_blocking_paths_commands() {
    let store = RedisStore::new("redis://127.0.0.1/0", RedisOptions::default()).unwrap();
    let wire = wire_of(&store);
    let prefix = DEFAULT_PREFIX;
    let ttl = Duration::from_millis(1500);
    let one = |command: Cmd| Request {
        server: 0,
        bytes: command.get_packed_command(),
        replies: 1,
    };
    assert_eq!(wire.load(A, None), one(get_command(prefix, A)));
    let touching = wire.load(A, Some(ttl));
    assert_eq!(touching, one(get_touching_command(prefix, A, ttl)));
    // Rounded up as `ex_seconds` does: GETEX key EX 2.
    assert!(touching.bytes.ends_with(b"$2\r\nEX\r\n$1\r\n2\r\n"));
    assert_eq!(
        wire.save(A, b"blob", Some(ttl), SaveMode::Always),
        one(set_command(prefix, A, b"blob", Some(ttl), false))
    );
    assert_eq!(
        wire.save(A, b"blob", None, SaveMode::IfExists),
        one(set_command(prefix, A, b"blob", None, true))
    );
    assert_eq!(wire.delete(A), one(del_command(prefix, A)));
    assert_eq!(wire.timeouts(), (DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT));
}

#[test]
fn replies_read_as_the_blocking_methods_return() {
    let store = RedisStore::new("redis://127.0.0.1/0", RedisOptions::default()).unwrap();
    let wire = wire_of(&store);
    let value = || vec![Reply::Bulk(Some(b"abc".to_vec()))];
    assert_eq!(
        wire.load_reply(A, value(), 3).unwrap(),
        Some(b"abc".to_vec())
    );
    assert_eq!(
        wire.load_reply(A, vec![Reply::Bulk(None)], 3).unwrap(),
        None
    );
    let e = wire.load_reply(A, value(), 2).unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::OversizedRecord);
    for replies in [
        vec![Reply::Error(format!("WRONGTYPE key tornsession:{A}"))],
        vec![Reply::Int(3)],
        vec![],
        [value(), value()].concat(),
    ] {
        let e = wire.load_reply(A, replies, 3).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(!e.to_string().contains(A), "{e}");
    }
    let ok = || vec![Reply::Status("OK".to_owned())];
    assert!(wire.save_reply(A, ok()).unwrap());
    assert!(!wire.save_reply(A, vec![Reply::Bulk(None)]).unwrap());
    let e = wire
        .save_reply(A, vec![Reply::Error(format!("ERR {A}"))])
        .unwrap_err();
    assert!(!e.to_string().contains(A), "{e}");
    assert!(wire.save_reply(A, vec![Reply::Int(1)]).is_err());
    assert!(wire.delete_reply(A, vec![Reply::Int(1)]).unwrap());
    assert!(!wire.delete_reply(A, vec![Reply::Int(0)]).unwrap());
    assert!(wire.delete_reply(A, ok()).is_err());
}
