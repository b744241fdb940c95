//! Clock and durations, in one place: whole seconds since the epoch, and durations from the
//! numbers users pass, without the panics `Duration::from_secs_f64` has for huge or odd values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest duration any option takes: 100 years. Past that, deadlines would overflow the
/// stores' own clocks (memcached's 32-bit exptime, Redis's millisecond expiry).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Now, in whole seconds since the Unix epoch (0 on a clock before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now, in whole microseconds since the Unix epoch (0 on a clock before 1970).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in fractional seconds since the Unix epoch.
pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Why a number is not a usable duration; the caller names the option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("must be a finite number of seconds, not {0}")]
    NotFinite(f64),
    #[error("must be a positive number of seconds, not {0}")]
    NotPositive(f64),
    #[error("must be at most 100 years (3153600000 seconds), not {0}")]
    TooLong(f64),
}

/// A positive, finite duration of at most [`MAX_DURATION`] from a number of seconds.
pub fn positive_duration(seconds: f64) -> Result<Duration, DurationError> {
    if !seconds.is_finite() {
        return Err(DurationError::NotFinite(seconds));
    }
    if seconds <= 0.0 {
        return Err(DurationError::NotPositive(seconds));
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(DurationError::TooLong(seconds));
    }
    // In range, so this cannot fail; a sub-nanosecond value rounds down to zero, which is not
    // positive.
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(DurationError::NotPositive(seconds)),
    }
}

/// Whole seconds, rounded up and at least 1: what Redis, memcached and Python stores take.
pub fn whole_seconds(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_would_panic_or_make_no_sense() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                positive_duration(bad),
                Err(DurationError::NotFinite(_))
            ));
        }
        for bad in [0.0, -0.0, -1.0, -1e300, 1e-12] {
            assert!(matches!(
                positive_duration(bad),
                Err(DurationError::NotPositive(_))
            ));
        }
        for bad in [1e300, 1e20, MAX_DURATION.as_secs_f64() * 2.0] {
            assert!(matches!(
                positive_duration(bad),
                Err(DurationError::TooLong(_))
            ));
        }
        assert_eq!(positive_duration(1.5), Ok(Duration::from_millis(1500)));
        assert_eq!(
            positive_duration(MAX_DURATION.as_secs_f64()),
            Ok(MAX_DURATION)
        );
    }

    #[test]
    fn whole_seconds_round_up_to_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }

    proptest! {
        #[test]
        fn any_float_is_a_duration_or_an_error(seconds in proptest::num::f64::ANY) {
            if let Ok(d) = positive_duration(seconds) {
                prop_assert!(!d.is_zero() && d <= MAX_DURATION);
            }
        }
    }
}
