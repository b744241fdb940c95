//! The idle connections a blocking store keeps for reuse: no threads of its own (a pool that
//! connects on background threads cannot connect after a `fork()`, which keeps only the forking
//! thread), and never handing a connection to a process other than the one that made it.

use parking_lot::Mutex;

/// Up to `size` idle connections, all made by the process `pid`.
pub(crate) struct IdleConnections<C> {
    idle: Mutex<Idle<C>>,
    size: usize,
}

struct Idle<C> {
    pid: u32,
    connections: Vec<C>,
}

impl<C> IdleConnections<C> {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            idle: Mutex::new(Idle {
                pid: std::process::id(),
                connections: Vec::new(),
            }),
            size,
        }
    }

    /// An idle connection made by this process, if there is one. After a fork the idle ones are
    /// the parent's sockets, shared with it: both processes would read each other's replies, so
    /// they are dropped unused (closing the child's copy leaves the parent's open).
    pub(crate) fn take(&self) -> Option<C> {
        let mut idle = self.idle.lock();
        let pid = std::process::id();
        if idle.pid != pid {
            idle.connections.clear();
            idle.pid = pid;
            return None;
        }
        idle.connections.pop()
    }

    /// Keeps `connection` (made by this process) for reuse, unless `size` are already kept.
    pub(crate) fn give_back(&self, connection: C) {
        let mut idle = self.idle.lock();
        let pid = std::process::id();
        if idle.pid != pid {
            idle.connections.clear();
            idle.pid = pid;
        }
        if idle.connections.len() < self.size {
            idle.connections.push(connection);
        }
    }

    /// Drops every idle connection (the server restarted, or moved).
    pub(crate) fn clear(&self) {
        self.idle.lock().connections.clear();
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_size_and_hands_back_the_newest() {
        let pool = IdleConnections::new(2);
        assert_eq!(pool.take(), None::<u8>);
        for connection in 1..=3 {
            pool.give_back(connection);
        }
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(pool.take(), Some(2));
        assert_eq!(pool.take(), Some(1));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn connections_of_another_process_are_dropped_unused() {
        let pool = IdleConnections::new(4);
        pool.give_back(1u8);
        pool.give_back(2);
        // As the child of a fork sees the parent's pool.
        pool.idle.lock().pid = std::process::id().wrapping_add(1);
        assert_eq!(pool.take(), None);
        assert_eq!(pool.idle_count(), 0);
        pool.give_back(3);
        assert_eq!(pool.take(), Some(3));

        pool.give_back(4);
        pool.idle.lock().pid = std::process::id().wrapping_add(1);
        pool.give_back(5);
        assert_eq!(pool.take(), Some(5));
        assert_eq!(pool.take(), None);
    }
}
