//! Listing memcached's records, for the operating commands (see `stores::listing`).
//!
//! memcached has no command to list keys, but since 1.4.31 its LRU crawler can dump every
//! item's metadata (`lru_crawler metadump all`: a line `key=<URI-encoded key> exp=<Unix time,
//! -1 for none> ...` per item, then `END`). No client crate speaks it, so the few lines of the
//! dump are read here, over a connection of their own (the dump is no meta reply).

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use super::keys::server_index;
use super::MemcachedStore;
use crate::ids;
use crate::stores::blocking::connect_tcp;
use crate::stores::{
    Endpoint, ListedRecord, Listing, StoreError, StoreErrorKind, StoreResult, TimeLeft,
};
use crate::wire::{meta, Reply};

/// The longest line of a dump: a 250-byte key URI-encoded and the other fields, with room.
const MAX_DUMP_LINE: usize = 4096;
/// How long one read of a dump may wait: the crawler walks a large cache in seconds.
const DUMP_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole dump may take, and how many items it may name: a server that trickles
/// bytes, or streams lines without end, fails the listing rather than hold it (or fill memory)
/// for ever. Far above any real cache: a dump runs at a million items a second or so.
const DUMP_DEADLINE: Duration = Duration::from_secs(600);
const MAX_DUMP_ITEMS: usize = 50_000_000;
/// How often a dump is retried while another one runs (`BUSY`), 100 ms apart.
const BUSY_RETRIES: u32 = 100;
/// How long before a second dump of each server. The crawler misses items written or read in
/// the last fraction of a second, as the LRU maintainer moves them between its segments (seen
/// on 1.6.18: for about 100 ms), so a listing is the union of two dumps this far apart. One
/// read again and again meanwhile may still be missed: `copy` run again after the switch
/// (nothing reads the old store then) finds it.
const SECOND_DUMP_AFTER: Duration = Duration::from_millis(300);

/// What one dump line says: the key and its expiry (`None`: never).
fn dump_line(line: &str) -> Option<(String, Option<u64>)> {
    let mut key = None;
    let mut exp = None;
    for field in line.split(' ') {
        if let Some(encoded) = field.strip_prefix("key=") {
            key = Some(
                percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .ok()?
                    .into_owned(),
            );
        } else if let Some(value) = field.strip_prefix("exp=") {
            exp = Some(value.parse::<i64>().ok()?);
        }
    }
    Some((key?, u64::try_from(exp?).ok()))
}

/// The outcome of one dump: the session ids it named (live, under the store's prefix), or
/// "busy" (another dump runs: try again).
enum Dump {
    Ids(Vec<String>),
    Busy,
}

impl MemcachedStore {
    fn dump_error(&self, endpoint: &Endpoint, cause: impl std::fmt::Display) -> StoreError {
        StoreError::new(
            self,
            format!(
                "cannot list the keys of {}:{}: {cause}",
                endpoint.host, endpoint.port
            ),
        )
    }

    fn dump(&self, endpoint: &Endpoint) -> StoreResult<Dump> {
        let fail = |e: std::io::Error| self.dump_error(endpoint, e);
        let mut stream = connect_tcp(&endpoint.host, endpoint.port, self.options.connect_timeout)
            .map_err(fail)?;
        stream
            .set_read_timeout(Some(DUMP_READ_TIMEOUT.max(self.options.timeout)))
            .map_err(fail)?;
        stream
            .set_write_timeout(Some(self.options.timeout))
            .map_err(fail)?;
        stream
            .write_all(b"lru_crawler metadump all\r\n")
            .map_err(fail)?;
        let mut reader = BufReader::new(stream);
        let mut ids = Vec::new();
        let mut line = Vec::new();
        let (started, now) = (std::time::Instant::now(), crate::time::now());
        let mut items = 0usize;
        loop {
            items += 1;
            if items > MAX_DUMP_ITEMS || started.elapsed() > DUMP_DEADLINE {
                return Err(self.dump_error(endpoint, "the dump did not end (too long, too many)"));
            }
            line.clear();
            let read = (&mut reader)
                .take(MAX_DUMP_LINE as u64)
                .read_until(b'\n', &mut line)
                .map_err(fail)?;
            if read == 0 {
                return Err(self.dump_error(endpoint, "the server closed the connection mid-dump"));
            }
            if line.last() != Some(&b'\n') {
                return Err(self.dump_error(endpoint, "a dump line too long"));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            match text {
                "END" => return Ok(Dump::Ids(ids)),
                _ if text.starts_with("BUSY") => return Ok(Dump::Busy),
                _ if text.starts_with("key=") => ids.extend(self.session_id_of(text, now)),
                // ERROR (before 1.4.31), CLIENT_ERROR (the crawler disabled), anything else.
                other => {
                    return Err(self.dump_error(
                        endpoint,
                        format!(
                            "`lru_crawler metadump` answered {:?}: listing needs memcached \
                             1.4.31 or later with its LRU crawler enabled (the default)",
                            &other[..other.len().min(80)]
                        ),
                    ))
                }
            }
        }
    }
}

impl MemcachedStore {
    /// The session id a dump line names: a live item under the store's prefix with a valid
    /// id after it (the crawler may name an item past its expiry that nobody has reaped yet).
    fn session_id_of(&self, line: &str, now: u64) -> Option<String> {
        let (key, expires) = dump_line(line)?;
        if expires.is_some_and(|at| at <= now) {
            return None;
        }
        let id = key.strip_prefix(self.options.prefix.as_str())?;
        ids::is_valid_session_id(id).then(|| id.to_owned())
    }

    /// A dump of one server, waiting while another runs.
    fn dump_when_free(&self, endpoint: &Endpoint) -> StoreResult<Vec<String>> {
        for _ in 0..BUSY_RETRIES {
            match self.dump(endpoint)? {
                Dump::Ids(ids) => return Ok(ids),
                Dump::Busy => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Err(self.dump_error(endpoint, "the LRU crawler stayed busy"))
    }
}

impl Listing for MemcachedStore {
    fn session_ids(&self) -> StoreResult<Vec<String>> {
        let mut found = Vec::new();
        let mut listed_on = std::collections::HashMap::new();
        let mut dumps = Vec::new();
        for round in 0..2 {
            if round == 1 {
                std::thread::sleep(SECOND_DUMP_AFTER);
            }
            for (server, endpoint) in self.endpoints.iter().enumerate() {
                dumps.push((server, self.dump_when_free(endpoint)?));
            }
        }
        for (server, ids) in dumps {
            for id in ids {
                listed_on.insert(id.clone(), server);
                found.push(id);
            }
        }
        found.sort_unstable();
        found.dedup();
        *self.listed_on.lock() = listed_on;
        Ok(found)
    }

    /// `mg <key> v c`, then `md <key> C<cas>` when the value is `expected`: the delete fails
    /// (`EX`, `NF`) when another client wrote or deleted the key in between.
    fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool> {
        let key = self.key(session_id);
        let listed_on = self.listed_on.lock().get(session_id).copied();
        let server = listed_on.unwrap_or_else(|| server_index(&key, self.pools.len()));
        let found = self.call_on(
            server,
            session_id,
            &meta::get_with_cas(&key),
            expected.len(),
        );
        let cas = match found {
            Err(e) if e.kind == StoreErrorKind::OversizedRecord => return Ok(false),
            Err(e) => return Err(e),
            Ok(Reply::Meta {
                code: [b'V', b'A'],
                value: Some(current),
                flags,
            }) if current == expected => meta::flag(&flags, 'c')
                .and_then(|token| token.parse::<u64>().ok())
                .ok_or_else(|| StoreError::new(self, "mg: the reply carries no CAS token"))?,
            Ok(Reply::Meta { code, .. }) if &code == b"VA" || &code == b"EN" => return Ok(false),
            Ok(reply) => return Err(self.unexpected(session_id, "mg", &reply)),
        };
        let request = format!("md {key} C{cas}\r\n").into_bytes();
        match self.call_on(server, session_id, &request, 0)? {
            Reply::Meta {
                code: [b'H', b'D'], ..
            } => Ok(true),
            Reply::Meta { code, .. } if &code == b"EX" || &code == b"NF" => Ok(false),
            reply => Err(self.unexpected(session_id, "md", &reply)),
        }
    }

    /// `mg <key> v t`: the value and its remaining time to live in seconds (`-1`: none), from
    /// the server the listing found it on: another client's keys (the original module's, by
    /// python-memcached's hash) need not be where this store's hash would look.
    fn load_listed(&self, session_id: &str, max_bytes: usize) -> StoreResult<Option<ListedRecord>> {
        let key = self.key(session_id);
        let request = format!("mg {key} v t\r\n").into_bytes();
        let listed_on = self.listed_on.lock().get(session_id).copied();
        let server = listed_on.unwrap_or_else(|| server_index(&key, self.pools.len()));
        match self.call_on(server, session_id, &request, max_bytes)? {
            Reply::Meta {
                code: [b'V', b'A'],
                value: Some(blob),
                flags,
            } => {
                let time_left = match meta::flag(&flags, 't').map(str::parse::<i64>) {
                    Some(Ok(-1)) => TimeLeft::Unlimited,
                    Some(Ok(seconds)) if seconds > 0 => {
                        TimeLeft::Within(Duration::from_secs(seconds.unsigned_abs()))
                    }
                    Some(Ok(_)) => return Ok(None),
                    _ => {
                        return Err(StoreError::new(
                            self,
                            "mg: the reply carries no time to live",
                        ))
                    }
                };
                Ok(Some(ListedRecord { blob, time_left }))
            }
            Reply::Meta {
                code: [b'E', b'N'], ..
            } => Ok(None),
            reply => Err(self.unexpected(session_id, "mg", &reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_line_gives_its_key_and_expiry() {
        let line = "key=app%3A0123 exp=1700000000 la=1699990000 cas=4 fetch=no cls=1 size=70";
        assert_eq!(
            dump_line(line),
            Some(("app:0123".to_owned(), Some(1_700_000_000)))
        );
        assert_eq!(dump_line("key=k exp=-1 la=1"), Some(("k".to_owned(), None)));
        assert_eq!(dump_line("exp=-1"), None);
        assert_eq!(dump_line("key=k exp=soon"), None);
    }
}
