//! Times on a tape: a monotonic start and its wall-clock time. Exchanges are timed with the
//! monotonic clock (immune to wall-clock steps) and placed on the wall clock once.

use std::time::Instant;

/// A monotonic start and its wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic start.
    pub start: Instant,
    /// Wall-clock time of `start`, ns since the epoch.
    pub start_unix_ns: i64,
}

impl Clock {
    /// A clock starting now.
    pub fn now() -> Self {
        Clock { start: Instant::now(), start_unix_ns: tapedeck_captures::tape::writer::now_unix_ns() }
    }

    /// A clock starting at a wall-clock time (ns since the epoch), past or future: the
    /// monotonic instant that corresponds to it now (the earliest instant the process can
    /// name, for a time before it).
    pub fn at_unix_ns(unix_ns: i64) -> Self {
        let (now, wall) = (Instant::now(), tapedeck_captures::tape::writer::now_unix_ns());
        let gap = std::time::Duration::from_nanos(unix_ns.abs_diff(wall));
        let start = if unix_ns >= wall { now + gap } else { now.checked_sub(gap).unwrap_or(now) };
        Clock { start, start_unix_ns: unix_ns }
    }

    /// Ns from the start to `at` (0 for an instant before it).
    pub fn offset_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn offsets_count_from_the_start_and_never_go_negative() {
        let clock = Clock::now();
        assert_eq!(clock.offset_ns(clock.start + Duration::from_micros(1500)), 1_500_000);
        assert_eq!(clock.offset_ns(clock.start.checked_sub(Duration::from_millis(1)).unwrap_or(clock.start)), 0);
        assert!(clock.start_unix_ns > 1_600_000_000_000_000_000, "wall clock in ns since the epoch");
    }

    #[test]
    fn a_clock_at_a_wall_time_starts_that_far_from_now() {
        let now = Clock::now();
        let ahead = Clock::at_unix_ns(now.start_unix_ns + 2_000_000_000);
        let gap = ahead.start.duration_since(now.start);
        assert!(gap >= Duration::from_millis(1990) && gap <= Duration::from_secs(3), "{gap:?}");
        let behind = Clock::at_unix_ns(now.start_unix_ns - 1_000_000_000);
        assert!(behind.start <= now.start);
        assert_eq!(behind.start_unix_ns, now.start_unix_ns - 1_000_000_000);
    }
}
