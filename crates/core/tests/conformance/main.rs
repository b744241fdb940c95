//! The store conformance suite: one set of behaviour tests, written once against the
//! `SessionStore` trait, run against every Rust store: MemoryStore, SqliteStore, FileStore,
//! RedisStore and MemcachedStore (each case on a store and servers of its own, as tests named
//! `<store>::<case>`), and RedisClusterStore (every case in turn on one three-node cluster, as
//! Redis holds a new cluster down for two seconds).
//!
//! The trait leaves stores a few choices, which `subjects::Subject` names: how a record's time
//! to live is kept (by the store, or by a file's age), whether it lists a user's sessions or
//! ends them by generation. Each case asserts what a store promises under its choice; none is
//! skipped for a store. What only one store does (eviction, SQL, files, sharding) is tested
//! beside that store.
//!
//! Network stores need redis-server and memcached: without them those tests are skipped with a
//! note, and fail under CI=true.

use std::sync::{Arc, Mutex};

#[path = "../support/mod.rs"]
mod support;

mod binding;
mod expiry;
mod limits;
mod network;
mod records;
mod subjects;
mod users;

use subjects::Subject;

/// One behaviour, checked on one store.
type Case = fn(&Subject);

/// Calls `$then!` with `$args` followed by every case every store runs, by group. The list is
/// written once: the per-store test modules and the cluster's run both come from it.
macro_rules! with_every_case {
    ($then:ident ! ($($args:tt)*)) => {
        $then!($($args)* ;
            records::save_load_delete,
            records::blobs_come_back_byte_for_byte,
            records::ids_are_kept_apart,
            records::save_if_exists_writes_only_over_a_record,
            records::save_if_unchanged_compares_and_sets,
            records::conditional_saves_race_to_one_winner,
            records::touching_keeps_a_record_and_leaves_a_missing_one_missing,
            records::malformed_ids_are_answered_without_panicking_or_naming_them,
            expiry::records_live_as_long_as_their_ttl_says,
            limits::oversized_records_are_refused_without_naming_the_session,
            limits::records_up_to_the_largest_a_load_reads_round_trip,
            binding::records_never_cross_under_concurrent_use,
            binding::a_record_keeps_its_binding_through_the_store,
            users::the_user_index_lists_what_was_filed,
            users::index_entries_of_expired_sessions_are_not_listed,
            users::generations_revoke_only_where_the_store_cannot_list,
        );
    };
}

/// Calls `$then!` with `$args` followed by the cases only network stores run (they stop the
/// servers: the cluster runs them last).
macro_rules! with_network_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then!($($args)* ;
            network::a_dead_server_fails_without_naming_the_session,
        );
    };
}

/// A module of tests named after the store, one per case, each on a fresh `$open()`.
macro_rules! store_tests {
    ($store:ident, $open:path ; $($group:ident :: $case:ident),* $(,)?) => {
        mod $store {
            $(
                #[test]
                fn $case() {
                    if let Some(subject) = $open() {
                        crate::$group::$case(&subject);
                    }
                }
            )*
        }
    };
}

/// The list of cases as (name, function) pairs, in the order given.
macro_rules! case_list {
    ($name:ident ; $($group:ident :: $case:ident),* $(,)?) => {
        const $name: &[(&str, Case)] = &[$((stringify!($case), $group::$case)),*];
    };
}

with_every_case!(store_tests!(memory, crate::subjects::memory));
with_every_case!(store_tests!(sqlite, crate::subjects::sqlite));
with_every_case!(store_tests!(file, crate::subjects::file));
with_every_case!(store_tests!(redis, crate::subjects::redis));
with_every_case!(store_tests!(memcached, crate::subjects::memcached));
with_network_cases!(store_tests!(redis_network, crate::subjects::redis));
with_network_cases!(store_tests!(memcached_network, crate::subjects::memcached));

with_every_case!(case_list!(EVERY_CASE));
with_network_cases!(case_list!(NETWORK_CASES));

/// Every case on RedisClusterStore: one cluster of three masters, a store with a key prefix of
/// its own per case, the cases that stop the servers last.
#[test]
fn redis_cluster_passes_every_case() {
    let Some(cluster) = support::redis_cluster(3) else {
        return;
    };
    let cluster = Arc::new(Mutex::new(cluster));
    for (n, (name, case)) in EVERY_CASE.iter().chain(NETWORK_CASES).enumerate() {
        eprintln!("redis_cluster::{name}");
        case(&subjects::redis_cluster(&cluster, &format!("case{n}:")));
    }
}

#[test]
fn servers_started_in_parallel_never_answer_for_each_other() {
    // Several servers at once, as parallel tests start them: each store sees only its server.
    use tornsession_core::stores::{RedisOptions, RedisStore, SessionStore};
    const A: &str = "0000000000000000000000000000000a";
    let servers: Vec<support::Server> = (0..4).filter_map(|_| support::redis()).collect();
    let store = |server: &support::Server| {
        RedisStore::new(&server.redis_url(), RedisOptions::default()).unwrap()
    };
    for (n, server) in servers.iter().enumerate() {
        assert_eq!(
            support::redis_pid(server.port, None),
            Some(server.child.id())
        );
        store(server)
            .save(A, n.to_string().as_bytes(), None)
            .unwrap();
    }
    for (n, server) in servers.iter().enumerate() {
        let found = store(server).load(A, usize::MAX).unwrap();
        assert_eq!(found.as_deref(), Some(n.to_string().as_bytes()));
    }
}
