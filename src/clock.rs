//! Time as a dependency.
//!
//! Every expiry decision in Sesame asks a [`Clock`] instead of the system
//! time, so tests can move time forward without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC. All stored times use this unit.
pub type UnixTime = i64;

/// RFC 3339 in UTC with `Z`, or an empty string for an unrepresentable time:
/// how the native API and the CLI show times.
pub fn rfc3339(t: UnixTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Midnight UTC of the day containing `t`.
pub fn day_start(t: UnixTime) -> UnixTime {
    t - t.rem_euclid(86_400)
}

/// Midnight UTC of the first day of the month containing `t`.
pub fn month_start(t: UnixTime) -> UnixTime {
    time::OffsetDateTime::from_unix_timestamp(day_start(t))
        .ok()
        .and_then(|day| day.replace_day(1).ok())
        .map_or(day_start(t), |first| first.unix_timestamp())
}

/// A source of the current time.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// The current time in whole seconds since the Unix epoch.
    fn now(&self) -> UnixTime;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests of expiry and rotation.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: UnixTime) -> Self {
        Self(AtomicI64::new(start))
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_start_at_midnight_utc() {
        // 2026-03-15T13:45:00Z
        let t = 1_773_582_300;
        assert_eq!(rfc3339(day_start(t)), "2026-03-15T00:00:00Z");
        assert_eq!(rfc3339(month_start(t)), "2026-03-01T00:00:00Z");
        assert_eq!(day_start(day_start(t)), day_start(t));
        assert_eq!(rfc3339(month_start(1_772_323_200)), "2026-03-01T00:00:00Z");
        assert_eq!(rfc3339(month_start(1_772_323_199)), "2026-02-01T00:00:00Z");
    }
}
