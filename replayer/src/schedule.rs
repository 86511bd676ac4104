//! The open-loop schedule: when each request is due, independent of how fast the target
//! answers, and a timer precise to well under a millisecond.
//!
//! Request *i* is due at `start + (tᵢ − t₀) / speed` (`--speed`), at `start + i / rate`
//! (`--rate`), or at once (`--speed max`, bounded only by the in-flight limit). A slow
//! target never moves these times; requests sent after their time are *late*, and the
//! lag (actual send − due) is measured for every request and reported, never hidden.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// The recorded gaps divided by `speed` (1.0 = real time, 2.0 = twice as fast).
    Recorded {
        /// Speed factor.
        speed: f64,
    },
    /// A flat rate, keeping the recorded order and mix.
    Rate {
        /// Requests per second.
        per_sec: f64,
    },
    /// As fast as the target takes it, within the in-flight limit.
    Max,
}

impl FromStr for Pacing {
    type Err = String;

    /// `1x`, `2x`, `0.5x`, `1.5`, `max`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Pacing::Max);
        }
        let speed: f64 = t
            .trim_end_matches('x')
            .parse()
            .map_err(|_| format!("{s:?}: expected a speed such as 1x, 2x, 0.5x or max"))?;
        if !(speed.is_finite() && speed > 0.0) {
            return Err(format!("{s:?}: the speed must be above 0"));
        }
        Ok(Pacing::Recorded { speed })
    }
}

/// Turns recorded start times into due instants.
#[derive(Debug)]
pub struct Schedule {
    pacing: Pacing,
    start: Instant,
    origin_ns: Option<i64>,
    /// Added to recorded times of later loops, so loop *k* follows loop *k−1*.
    loop_shift_ns: i64,
    index: u64,
}

impl Schedule {
    /// A schedule starting at `start`.
    pub fn new(pacing: Pacing, start: Instant) -> Self {
        Schedule { pacing, start, origin_ns: None, loop_shift_ns: 0, index: 0 }
    }

    /// The start instant.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Keeps in step with other hosts replaying other shards of the same selection: times
    /// count from `origin_ns` (the selection's first recorded start) and the next request is
    /// the selection's `position`-th, whatever this shard skipped.
    pub fn align(&mut self, origin_ns: i64, position: u64) {
        self.origin_ns.get_or_insert(origin_ns);
        self.index = position;
    }

    /// When the next request, recorded at `recorded_ns` (wall clock, ns), is due.
    pub fn due(&mut self, recorded_ns: i64) -> Instant {
        let i = self.index;
        self.index += 1;
        match self.pacing {
            Pacing::Max => self.start,
            Pacing::Rate { per_sec } => self.start + Duration::from_secs_f64(i as f64 / per_sec),
            Pacing::Recorded { speed } => {
                let origin = *self.origin_ns.get_or_insert(recorded_ns);
                let offset = (recorded_ns - origin + self.loop_shift_ns).max(0);
                self.start + Duration::from_nanos((offset as f64 / speed) as u64)
            }
        }
    }

    /// Starts another pass over the tapes: times continue after `span_ns` (the recorded
    /// length of a pass) plus `gap_ns`.
    pub fn next_loop(&mut self, span_ns: i64, gap_ns: i64) {
        self.loop_shift_ns += span_ns + gap_ns;
    }
}

pub use crate::os::precise_timers;

/// Below this much time left, spin instead of sleeping.
const SPIN: Duration = Duration::from_micros(150);

/// Waits until `due`: sleeps until just before it, then spins the last stretch. Returns
/// false, early, if `stop` is set.
pub fn wait_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        let now = Instant::now();
        if now >= due {
            return true;
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = due - now;
        if left > SPIN {
            // In slices, so a stop is noticed during a long recorded pause.
            std::thread::sleep((left - SPIN).min(Duration::from_millis(50)));
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_speeds() {
        assert_eq!("2x".parse::<Pacing>().unwrap(), Pacing::Recorded { speed: 2.0 });
        assert_eq!("0.5X".parse::<Pacing>().unwrap(), Pacing::Recorded { speed: 0.5 });
        assert_eq!("1.5".parse::<Pacing>().unwrap(), Pacing::Recorded { speed: 1.5 });
        assert_eq!("max".parse::<Pacing>().unwrap(), Pacing::Max);
        assert!("0x".parse::<Pacing>().is_err());
        assert!("fast".parse::<Pacing>().is_err());
    }

    #[test]
    fn recorded_gaps_scale_with_speed_and_loops_follow_each_other() {
        let start = Instant::now();
        let mut s = Schedule::new(Pacing::Recorded { speed: 2.0 }, start);
        assert_eq!(s.due(1_000_000_000), start);
        assert_eq!(s.due(1_100_000_000), start + Duration::from_millis(50));
        s.next_loop(100_000_000, 20_000_000);
        assert_eq!(s.due(1_000_000_000), start + Duration::from_millis(60));
        let mut r = Schedule::new(Pacing::Rate { per_sec: 100.0 }, start);
        let d: Vec<_> = (0..3).map(|i| r.due(i * 999)).collect();
        assert_eq!(d, [start, start + Duration::from_millis(10), start + Duration::from_millis(20)]);
    }

    #[test]
    fn waits_until_the_due_time_never_before() {
        precise_timers();
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            let due = Instant::now() + Duration::from_micros(300 + i * 97);
            assert!(wait_until(due, &AtomicBool::new(false)));
            let now = Instant::now();
            assert!(now >= due, "woke {:?} early", due - now);
            worst = worst.max(now - due);
        }
        // How late it wakes depends on the machine's load (a busy CI box can be
        // milliseconds late): the benchmark measures it; here only that it wakes at all.
        assert!(worst < Duration::from_secs(2), "{worst:?}");
    }
}
