//! The blocking connections of one store: idle ones reused, a stale one retried once.

use redis::{ConnectionLike, RedisError, RedisResult};

use crate::stores::pool::IdleConnections;

/// Whether a failed connection's error says the connection itself is gone (so a pooled one may
/// merely be stale, and a fresh one worth one more try) rather than a timeout or a server answer.
pub(super) fn is_stale_connection(error: &RedisError) -> bool {
    !error.is_timeout() && (error.is_connection_dropped() || error.is_io_error())
}

/// The blocking connections of one store: idle ones kept for reuse, new ones made on the
/// caller's thread.
pub(super) struct Pool<C> {
    pub(super) idle: IdleConnections<C>,
}

impl<C: ConnectionLike> Pool<C> {
    pub(super) fn new(size: usize) -> Self {
        Self {
            idle: IdleConnections::new(size),
        }
    }

    /// Runs `command` on a pooled connection, or a new one from `connect`. A connection that
    /// fails is dropped; when a reused one fails as if stale (the server restarted since), the
    /// other idle ones are dropped too and the command is tried once more on a new connection.
    pub(super) fn run<T>(
        &self, connect: impl Fn() -> RedisResult<C>, command: impl Fn(&mut C) -> RedisResult<T>,
    ) -> Result<T, String> {
        let pooled = self.idle.take();
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(c) => c,
            None => connect().map_err(|e| format!("cannot connect: {e}"))?,
        };
        match command(&mut connection) {
            Ok(value) => {
                self.give_back(connection);
                return Ok(value);
            }
            Err(e) if reused && is_stale_connection(&e) => {
                drop(connection);
                self.idle.clear();
            }
            Err(e) => return Err(e.to_string()),
        }
        let mut connection = connect().map_err(|e| format!("cannot connect: {e}"))?;
        let value = command(&mut connection).map_err(|e| e.to_string())?;
        self.give_back(connection);
        Ok(value)
    }

    pub(super) fn give_back(&self, connection: C) {
        if connection.is_open() {
            self.idle.give_back(connection);
        }
    }
}
