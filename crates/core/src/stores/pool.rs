//! The idle connections a blocking store keeps for reuse: no threads of its own (a pool that
//! connects on background threads cannot connect after a `fork()`, which keeps only the forking
//! thread), never handing a connection to a process other than the one that made it, and never
//! waiting in a child on a lock its parent held when it forked.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

/// How many processes of one line of forks (a process, its child, that child's child ...) get a
/// slot of their own; a process deeper than that uses no pool (a new connection per call).
const PROCESS_SLOTS: usize = 4;

/// A value of each process: `fork()` copies every lock as it is, so a lock another thread of
/// the parent held at that moment stays held forever in the child. A process therefore only
/// ever locks the slot it claimed itself (by pid, without a lock); a child claims a slot no
/// ancestor ever locked and starts from `T::default()` there.
pub(crate) struct PerProcess<T> {
    slots: [Slot<T>; PROCESS_SLOTS],
}

struct Slot<T> {
    /// The process that claimed the slot; 0 while unclaimed.
    pid: AtomicU32,
    value: Mutex<T>,
}

impl<T: Default> PerProcess<T> {
    pub(crate) fn new() -> Self {
        let slots = std::array::from_fn(|_| Slot {
            pid: AtomicU32::new(0),
            value: Mutex::new(T::default()),
        });
        slots[0].pid.store(std::process::id(), Ordering::Relaxed);
        Self { slots }
    }

    /// Runs `f` on this process's value; `None` when the line of forks is deeper than the slots.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let slot = self.own_slot()?;
        let mut value = slot.value.lock().unwrap_or_else(PoisonError::into_inner);
        Some(f(&mut value))
    }

    fn own_slot(&self) -> Option<&Slot<T>> {
        let pid = std::process::id();
        if let Some(slot) = self
            .slots
            .iter()
            .find(|slot| slot.pid.load(Ordering::Acquire) == pid)
        {
            return Some(slot);
        }
        // A child after a fork: the first slot no ancestor claimed (another thread of this
        // process may claim it first, which is as good).
        let claimed = self.slots.iter().find(|slot| {
            match slot
                .pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(owner) => owner == pid,
            }
        })?;
        // The ancestors' values are theirs (sockets shared with them): dropped here, which
        // closes only this process's copies, unless a lock held at the fork keeps them out of
        // reach (then they stay, unused, for the life of this process).
        for slot in &self.slots {
            let owner = slot.pid.load(Ordering::Acquire);
            if owner != pid && owner != 0 {
                if let Ok(mut value) = slot.value.try_lock() {
                    *value = T::default();
                }
            }
        }
        Some(claimed)
    }
}

/// Up to `size` idle connections of this process.
pub(crate) struct IdleConnections<C> {
    idle: PerProcess<Vec<C>>,
    size: usize,
}

impl<C> IdleConnections<C> {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            idle: PerProcess::new(),
            size,
        }
    }

    /// An idle connection made by this process, if there is one. After a fork the parent's
    /// idle ones are sockets shared with it: both processes would read each other's replies, so
    /// they are never used here.
    pub(crate) fn take(&self) -> Option<C> {
        self.idle.with(Vec::pop).flatten()
    }

    /// Keeps `connection` (made by this process) for reuse, unless `size` are already kept.
    pub(crate) fn give_back(&self, connection: C) {
        let size = self.size;
        let rest = self.idle.with(|idle| {
            if idle.len() < size {
                idle.push(connection);
                None
            } else {
                Some(connection)
            }
        });
        // Dropped (closed) outside the lock.
        drop(rest);
    }

    /// Drops every idle connection (the server restarted, or moved).
    pub(crate) fn clear(&self) {
        let idle = self.idle.with(std::mem::take);
        drop(idle);
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.with(|idle| idle.len()).unwrap_or(0)
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

    /// As a child of a fork sees the pool: slot 0 claimed by its parent (another pid).
    fn as_if_forked<C>(pool: &IdleConnections<C>) {
        pool.idle.slots[0]
            .pid
            .store(std::process::id().wrapping_add(1), Ordering::Release);
    }

    #[test]
    fn connections_of_another_process_are_dropped_unused() {
        let pool = IdleConnections::new(4);
        pool.give_back(1u8);
        pool.give_back(2);
        as_if_forked(&pool);
        assert_eq!(pool.take(), None);
        assert_eq!(pool.idle.slots[0].value.lock().unwrap().len(), 0);
        pool.give_back(3);
        assert_eq!(pool.take(), Some(3));
    }

    #[test]
    fn a_child_never_waits_on_a_lock_its_parent_held_at_the_fork() {
        let pool = IdleConnections::new(4);
        pool.give_back(1u8);
        // The parent's slot locked, as by another thread at the moment of the fork.
        let held = pool.idle.slots[0].value.lock().unwrap();
        as_if_forked(&pool);
        assert_eq!(pool.take(), None);
        pool.give_back(2);
        assert_eq!(pool.take(), Some(2));
        drop(held);
    }

    #[test]
    fn a_line_of_forks_deeper_than_the_slots_pools_nothing() {
        let pool = IdleConnections::new(4);
        for slot in &pool.idle.slots {
            slot.pid
                .store(std::process::id().wrapping_add(1), Ordering::Release);
        }
        pool.give_back(1u8);
        assert_eq!(pool.take(), None);
        assert_eq!(pool.idle_count(), 0);
    }
}
