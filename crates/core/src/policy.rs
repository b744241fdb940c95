//! A session's limits in time and size (the manager's, or a session's own), and the "last seen"
//! stamp: what both the lifecycle and the per-user index read, so neither imports the other.

use std::time::Duration;

use crate::codec::Expiry;

/// "Last seen" is kept to the minute: an active session's record then changes (and is
/// written) at most once a minute for it, not on every request.
pub const SEEN_GRANULARITY: u64 = 60;

/// The manager's limits, as the lifecycle needs them.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// How long a session may go unused.
    pub idle_timeout: Option<Duration>,
    /// How long a session may live from its creation, however active.
    pub lifetime: Option<Duration>,
    /// The largest record a save may write, in bytes.
    pub max_size: Option<usize>,
    /// Whether saves check that nobody else saved the session since it was loaded.
    pub detect_conflicts: bool,
}

impl Policy {
    /// How long a record may live from now: the idle timeout, cut short by what is left of the
    /// lifetime (at least a second, so a store never gets a zero or past expiry).
    pub fn ttl(&self, created: u64, now: u64) -> Option<Duration> {
        let remaining = self.lifetime.map(|lifetime| {
            let age = Duration::from_secs(now.saturating_sub(created));
            lifetime.saturating_sub(age).max(Duration::from_secs(1))
        });
        match (self.idle_timeout, remaining) {
            (Some(idle), Some(remaining)) => Some(idle.min(remaining)),
            (idle, remaining) => idle.or(remaining),
        }
    }

    /// The limits of one session: its own where it has them, else the manager's.
    pub fn for_session(&self, expiry: &Expiry) -> Policy {
        Policy {
            idle_timeout: expiry
                .idle_timeout
                .map(Duration::from_secs)
                .or(self.idle_timeout),
            lifetime: expiry.lifetime.map(Duration::from_secs).or(self.lifetime),
            ..self.clone()
        }
    }

    /// Whether a session created at `created` has outlived its lifetime at `now`.
    pub fn lifetime_over(&self, created: u64, now: u64) -> bool {
        self.lifetime
            .is_some_and(|lifetime| now >= created.saturating_add(lifetime.as_secs()))
    }
}

/// The "last seen" stamp for a save at `now`.
pub fn seen_stamp(now: u64) -> u64 {
    now - now % SEEN_GRANULARITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_seen_stamp_is_kept_to_the_minute() {
        assert_eq!(seen_stamp(119), 60);
        assert_eq!(seen_stamp(120), 120);
    }
}
