//! The blocking client: one TCP connection to one server on the stores' one blocking driver
//! (`stores::blocking`), a request and its tagged reply at a time, within one deadline.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use crate::stores::blocking::{self, CallError, Connection};
use crate::stores::Endpoint;
use crate::wire::{Dialect, Reply};

/// One connection to one server.
pub(super) struct MetaConnection(Connection<TcpStream>);

impl MetaConnection {
    pub(super) fn connect(
        endpoint: &Endpoint, connect_timeout: Duration, timeout: Duration,
    ) -> io::Result<Self> {
        let stream = blocking::connect_tcp(&endpoint.host, endpoint.port, connect_timeout)?;
        Ok(Self(Connection::new(stream, Dialect::Meta, timeout)))
    }

    /// Whether the server hung up (or sent bytes nobody asked for) while it sat in the pool:
    /// one non-blocking peek, no round trip.
    pub(super) fn unusable(&self) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut byte = [0u8; 1];
        !matches!(
            recv(
                self.0.stream(),
                &mut byte,
                RecvFlags::PEEK | RecvFlags::DONTWAIT
            ),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    /// Writes `request` (one meta command), tagged, and reads its one reply. Any failure leaves
    /// the connection broken, to be dropped by the pool.
    pub(super) fn call(&mut self, request: &[u8], max_value: usize) -> Result<Reply, CallError> {
        let mut replies = self.0.call(request, 1, max_value)?;
        replies
            .pop()
            .ok_or_else(|| CallError::OutOfStep("no reply to the request".to_owned()))
    }

    pub(super) fn is_broken(&self) -> bool {
        self.0.is_broken()
    }
}
