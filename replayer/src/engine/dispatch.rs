//! The dispatcher (the replay's calling thread): reads recorded exchanges in start order,
//! waits (precisely) until each is due and hands it to a worker's lane: a session always to
//! the same worker, which keeps its order; independent requests to the least busy one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use tapedeck_captures::Exchange;
use tokio::sync::mpsc::UnboundedSender;

use crate::progress::{Progress, DEAD_TARGET_AFTER};
use crate::schedule::{precise_timers, wait_until, Schedule};
use crate::session::{session_key, SessionKey};
use crate::source::Source;
use crate::ReplayConfig;

/// A recorded exchange to send at `due`.
pub(crate) struct Job {
    pub exchange: Exchange,
    pub due: Instant,
    pub key: SessionKey,
    /// Headers of `exchange` that correlation filled with the target's own values, and
    /// those values.
    pub own_headers: Vec<(usize, Vec<String>)>,
}

/// Wakes the dispatcher when it waits for room in a lane.
pub(crate) struct DispatcherWake {
    pub waiting: AtomicBool,
    pub thread: Thread,
}

/// The dispatcher's side of a worker.
pub(crate) struct Lane {
    pub tx: UnboundedSender<Job>,
    pub state: Arc<LaneState>,
}

/// Shared between the dispatcher and one worker.
pub(crate) struct LaneState {
    /// Jobs handed over and not yet finished: held, ready or in flight.
    pub outstanding: AtomicUsize,
    /// The dispatcher waits when `outstanding` reaches this…
    pub cap: usize,
    /// …until it drains to this.
    pub low_water: usize,
    pub wake: Arc<DispatcherWake>,
    /// Set on Ctrl-C: drop what has not started.
    pub draining: Arc<AtomicBool>,
}

impl LaneState {
    pub(crate) fn finished(&self, n: usize) {
        let left = self.outstanding.fetch_sub(n, Ordering::AcqRel) - n;
        if left <= self.low_water && self.wake.waiting.swap(false, Ordering::AcqRel) {
            self.wake.thread.unpark();
        }
    }
}

pub(crate) struct Dispatcher {
    pub lanes: Vec<Lane>,
    pub wake: Arc<DispatcherWake>,
    /// Set when a recorded request addresses the target itself.
    pub refused: Option<String>,
    pub progress: Arc<Progress>,
    /// Damaged segments of earlier passes (`--loop`, `--duration`), read to their end:
    /// each pass lost their damaged exchanges again.
    pub earlier_damage: Vec<tapedeck_captures::tape::SegmentReport>,
}

impl Dispatcher {
    /// Runs the schedule from `start`; returns true if it was stopped early.
    pub fn run(
        &mut self,
        config: &ReplayConfig,
        source: &mut Source,
        start: Instant,
        stop: &AtomicBool,
        draining: &AtomicBool,
    ) -> bool {
        precise_timers();
        let mut schedule = Schedule::new(config.pacing, start);
        let deadline = config.duration.map(|d| start + d);
        let mut passes = 0u64;
        let mut interrupted = false;
        'passes: loop {
            passes += 1;
            let taken_before = source.taken();
            while let Some(ex) = source.next() {
                if !config.allow_production_target
                    && config.rewrite.is_target(&ex.request.authority, &ex.request.scheme)
                {
                    self.refused = Some(format!("{}://{}", ex.request.scheme, ex.request.authority));
                    interrupted = true;
                    break 'passes;
                }
                let (origin_ns, position) = source.schedule_position();
                schedule.align(origin_ns, position);
                let due = schedule.due(ex.wall_start_ns());
                // Paced, a request due after the deadline ends the run; flat out
                // (`--speed max`), everything is due at once and the clock decides.
                if deadline.is_some_and(|d| due >= d || Instant::now() >= d) {
                    interrupted = true;
                    break 'passes;
                }
                if self.target_is_dead() {
                    draining.store(true, Ordering::Relaxed);
                    interrupted = true;
                    break 'passes;
                }
                if !wait_until(due, stop) || !self.hand_over(ex, due, deadline, stop) {
                    interrupted = true;
                    break 'passes;
                }
            }
            let more = config.loops.is_none_or(|n| passes < n) && (config.loops.is_some() || deadline.is_some());
            // A pass that held none of this shard's exchanges: every pass is the same (the
            // next would only read the tapes again, at once, until the deadline).
            let nothing_of_ours = source.taken() == taken_before;
            if !more || source.limit_reached() || nothing_of_ours {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let damaged = source.reader().reports().iter().filter(|r| r.error.is_some() || !r.stats.is_clean());
            self.earlier_damage.extend(damaged.cloned());
            match source.restart() {
                Ok(Some((span, gap))) => schedule.next_loop(span, gap.max(1_000_000)),
                Ok(None) => break,
                Err(e) => {
                    // The tapes went away between passes: the run ends with what it sent.
                    tracing::warn!("cannot read the tapes again for pass {}: {e}; the run ends here", passes + 1);
                    interrupted = true;
                    break;
                }
            }
        }
        // Let what was handed over finish; on Ctrl-C drop what has not started and give
        // requests in flight a few seconds.
        let stopped = stop.load(Ordering::Relaxed);
        // Ctrl-C, or a dead target: what is queued is not sent.
        draining.store(stopped || self.target_is_dead(), Ordering::Relaxed);
        let grace = if stopped { Duration::from_secs(5) } else { Duration::MAX };
        let until = Instant::now().checked_add(grace);
        while self.lanes.iter().any(|l| l.state.outstanding.load(Ordering::Acquire) > 0) {
            if until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            // At `--duration`, what is queued but not sent is not sent (flat out, the
            // queues hold thousands); requests in flight finish.
            if deadline.is_some_and(|d| Instant::now() >= d) && !draining.load(Ordering::Relaxed) {
                draining.store(true, Ordering::Relaxed);
                interrupted = true;
            }
            if !stopped && stop.load(Ordering::Relaxed) {
                return self.run_out(draining);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        interrupted
    }

    /// True once the target refused [`DEAD_TARGET_AFTER`] connections and answered none.
    fn target_is_dead(&self) -> bool {
        let p = &self.progress;
        p.answered.load(Ordering::Relaxed) == 0 && p.unreachable.load(Ordering::Relaxed) >= DEAD_TARGET_AFTER
    }

    /// Ctrl-C while waiting for the last requests: drop what has not started, wait briefly.
    fn run_out(&mut self, draining: &AtomicBool) -> bool {
        draining.store(true, Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && self.lanes.iter().any(|l| l.state.outstanding.load(Ordering::Acquire) > 0) {
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Hands `ex` to its worker, first waiting for room in that worker's lane; false if
    /// stopped, or past `deadline`, while waiting.
    fn hand_over(&mut self, exchange: Exchange, due: Instant, deadline: Option<Instant>, stop: &AtomicBool) -> bool {
        let key = session_key(&exchange);
        let lane = match key {
            // Independent: the least busy worker.
            SessionKey::Single(_) => (0..self.lanes.len())
                .min_by_key(|&i| self.lanes[i].state.outstanding.load(Ordering::Relaxed))
                .unwrap_or(0),
            _ => (key.stable_hash() % self.lanes.len() as u64) as usize,
        };
        let lane = &self.lanes[lane];
        let state = &lane.state;
        if state.outstanding.load(Ordering::Acquire) >= state.cap {
            // Full: wait until it drains to its low-water mark, so refills come in batches.
            loop {
                self.wake.waiting.store(true, Ordering::Release);
                if state.outstanding.load(Ordering::Acquire) <= state.low_water {
                    self.wake.waiting.store(false, Ordering::Release);
                    break;
                }
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    self.wake.waiting.store(false, Ordering::Release);
                    return false;
                }
                std::thread::park_timeout(Duration::from_millis(5));
            }
        }
        state.outstanding.fetch_add(1, Ordering::AcqRel);
        if lane.tx.send(Job { exchange, due, key, own_headers: Vec::new() }).is_err() {
            state.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }
}
