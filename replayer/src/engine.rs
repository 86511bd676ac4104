//! The replay engine: one dispatcher (this thread) that keeps the schedule, worker threads
//! that send ([`crate::worker`]), and a writer thread for the results tape.
//!
//! The dispatcher reads recorded exchanges in start order, waits (precisely) until each is
//! due and hands it to a worker: a session always to the same worker, which keeps its
//! order; independent requests to the least busy one. Workers bound what is in flight;
//! the dispatcher bounds what is handed over and not finished (the read-ahead), so memory
//! stays flat however long the tapes and however slow the target. A request that cannot
//! start on time starts late, and its lag is measured.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck_captures::tape::{TapeKind, TapeWriter, WriterConfig};
use tapedeck_captures::{Exchange, IdGenerator};

use crate::client::Pool;
use crate::compare::generated::Window;
use crate::schedule::{precise_timers, wait_until, Pacing, Schedule};
use crate::source::{Selection, Source};
use crate::stats::Stats;
use crate::worker::{DispatcherWake, Job, Lane, LaneState, WorkerContext};
use crate::{session_key, ReplayConfig, ReplayError, SessionKey};

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests started.
    pub sent: AtomicU64,
    /// Requests finished (answered or failed).
    pub done: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicI64,
    /// Sends more than 10 ms late.
    pub late: AtomicU64,
    /// Largest lag so far, µs.
    pub max_lag_us: AtomicU64,
    /// Exchanges the tapes hold, when known from their footers (0 if not).
    pub total_hint: AtomicU64,
    /// Requests the target answered (any status).
    pub answered: AtomicU64,
    /// Requests whose connection the target refused (or whose address did not resolve).
    pub unreachable: AtomicU64,
    /// The first cause of each error kind that has one ([`Progress::note_cause`]).
    pub causes: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Progress {
    /// Keeps the first cause of an error of `kind` (later ones are mostly the same).
    pub fn note_cause(&self, kind: tapedeck_captures::ErrorKind, cause: impl FnOnce() -> String) {
        let mut causes = self.causes.lock().unwrap_or_else(|p| p.into_inner());
        if causes.len() < 16 && !causes.contains_key(kind.as_str()) {
            causes.insert(kind.as_str().to_string(), cause());
        }
    }
}

/// What a TLS handshake failure means and what to do about it, from rustls' error text.
pub fn explain_tls(error: &str, host: &str) -> String {
    let advice = if error.contains("UnknownIssuer") {
        "the target's certificate is signed by a CA this machine does not trust: give that CA with --ca FILE (PEM), or --insecure for a test target".to_string()
    } else if error.contains("CaUsedAsEndEntity") {
        "the target presents a CA certificate (CA:TRUE) as its own: it needs a server certificate signed by that CA; --ca with the CA then trusts it".to_string()
    } else if error.contains("NotValidForName") {
        format!("the certificate is not issued for {host}: target a name it covers (--target), give a matching certificate, or --insecure for a test target")
    } else if error.contains("Expired") {
        "the target's certificate has expired (or this machine's clock is wrong)".to_string()
    } else if error.contains("NotValidYet") {
        "the target's certificate is not valid yet (or this machine's clock is wrong)".to_string()
    } else if error.contains("InvalidContentType") || error.contains("CorruptMessage") {
        "the target does not speak TLS on that port: use http:// in --target".to_string()
    } else {
        "check the target's certificate; --ca FILE trusts a private CA, --insecure skips verification for a test target"
            .to_string()
    };
    format!("{error} — {advice}")
}

/// A target that refused this many connections and answered nothing is not there: the
/// run stops instead of playing the whole schedule into it.
pub const DEAD_TARGET_AFTER: u64 = 20;

/// Requests handed over and not finished, at most, across workers, when paced: room for
/// sessions held behind a slow response without reading the tapes without bound.
const MAX_OUTSTANDING: usize = 100_000;

/// What [`run`] returns.
pub(crate) struct Outcomes {
    pub stats: Stats,
    pub interrupted: bool,
    pub results_written: u64,
    pub results_failed: u64,
    pub results_waited: u64,
    pub damage: Option<crate::report::TapeDamage>,
}

/// Runs the replay to the end (or until `stop`); returns merged stats and counters.
pub(crate) fn run(config: &ReplayConfig, stop: &AtomicBool, progress: Arc<Progress>) -> Result<Outcomes, ReplayError> {
    let mut source = Source::open(&config.paths, config.selection.clone()).map_err(ReplayError::Source)?;
    if source.reader().readable_segments() == 0 {
        let why = source
            .reader()
            .reports()
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_else(|| "no readable tapes".into());
        return Err(ReplayError::Source(why));
    }
    // Known when every segment was closed (its footer counts its records) and nothing but
    // a limit narrows the selection.
    let reports = source.reader().reports();
    let only_limited = Selection { limit: None, ..config.selection.clone() }.is_everything();
    if only_limited && config.loops.is_none() && config.duration.is_none() {
        if let Some(total) = reports.iter().map(|r| r.footer_records).sum::<Option<u64>>() {
            progress.total_hint.store(config.selection.limit.map_or(total, |l| l.min(total)), Ordering::Relaxed);
        }
    }
    guard_production(config, &source)?;
    guard_unscrubbed(config, &source)?;
    warn_missing_schema(config, &source);
    let rewrite = Arc::new(config.rewrite.clone());
    let tls = if rewrite.is_https() {
        Some(Arc::new(crate::client::tls_config(&config.client).map_err(ReplayError::Config)?))
    } else {
        None
    };

    let clock = (Instant::now(), tapedeck_captures::tape::writer::now_unix_ns());
    let results = match &config.results {
        Some(dir) => {
            let mut wc = WriterConfig::new(dir);
            wc.prefix = "replay".into();
            wc.kind = TapeKind::Replay;
            wc.allow_shared_dir = config.allow_shared_dir;
            wc.tape_start_unix_ns = clock.1;
            wc.labels.push(("target".into(), rewrite.origin()));
            wc.scrub_fingerprint = config.scrub.as_ref().map(|s| s.fingerprint());
            let writer = TapeWriter::new(wc).map_err(ReplayError::Results)?;
            Some(
                crate::results::start(writer, config.scrub.clone())
                    .map_err(|source| ReplayError::Thread { name: "tapedeck-results".into(), source })?,
            )
        }
        None => None,
    };

    // Workers: no more than requests may be in flight, each with its share of the limit.
    let max_in_flight = config.max_in_flight.max(1);
    let workers = config.workers.clamp(1, max_in_flight);
    let share = |total: usize, i: usize| total / workers + usize::from(i < total % workers);
    let wake = Arc::new(DispatcherWake { waiting: AtomicBool::new(false), thread: std::thread::current() });
    let draining = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(IdGenerator::new());
    let comparing = config.compare.as_ref().map(|c| {
        let mut c = c.clone();
        c.scrub = config.scrub.clone();
        Arc::new(crate::worker::Comparing {
            config: c,
            window: Window::since(clock.1 / 1_000_000_000),
            probe: config.noise_probe,
        })
    });
    let mut comparers = Vec::new();
    let mut lanes = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for i in 0..workers {
        let limit = share(max_in_flight, i);
        // Paced, hand each request over when due; flat out, keep a few batches queued.
        let cap = if config.pacing == Pacing::Max { (4 * limit).max(1024) } else { MAX_OUTSTANDING / workers };
        let lane = Arc::new(LaneState {
            outstanding: AtomicUsize::new(0),
            cap,
            low_water: cap * 3 / 4,
            wake: wake.clone(),
            draining: draining.clone(),
        });
        let mut client = config.client.clone();
        client.connections = share(config.client.connections.max(workers), i);
        let pool = Pool::new(rewrite.host(), rewrite.port(), tls.clone(), client, progress.clone())
            .map_err(ReplayError::Config)?;
        let ctx = WorkerContext {
            rewrite: rewrite.clone(),
            results: results.as_ref().map(|(sink, _, _)| sink.clone()),
            progress: progress.clone(),
            ids: ids.clone(),
            clock,
            lane: lane.clone(),
            limit,
            compare: comparing.clone(),
            message_speed: match config.pacing {
                crate::schedule::Pacing::Recorded { speed } => Some(speed),
                _ => None,
            },
            comparer: match &comparing {
                Some(c) => {
                    let name = format!("tapedeck-compare-{i}");
                    let (sink, handle) = crate::comparer::start(&name, c.clone())
                        .map_err(|source| ReplayError::Thread { name, source })?;
                    comparers.push(handle);
                    Some(sink)
                }
                None => None,
            },
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        lanes.push(Lane { tx, state: lane });
        handles.push(spawn(&format!("tapedeck-replay-{i}"), move || crate::worker::run(rx, pool, ctx))?);
    }
    let results = results.map(|(sink, counters, handle)| {
        drop(sink);
        (counters, handle)
    });

    let mut d = Dispatcher { lanes, wake, refused: None, progress: progress.clone(), earlier_damage: Vec::new() };
    let interrupted = d.run(config, &mut source, stop, &draining);
    let refused = d.refused.take();
    let earlier_damage = std::mem::take(&mut d.earlier_damage);
    drop(d);
    // Every thread is joined before any failure is reported (none is left running).
    let mut merged = Stats::default();
    let mut crashed = None;
    for h in handles {
        match joined(h) {
            Ok(stats) => merged.merge(stats),
            Err(e) => crashed = crashed.or(Some(e)),
        }
    }
    // The workers are gone, and with them the comparers' sinks: they finish their queues.
    for h in comparers {
        match joined(h) {
            Ok(compared) => {
                merged.noise.merge(compared.noise);
                for (route, tally) in compared.routes {
                    merged.route(&route).diffs.merge(tally);
                }
            }
            Err(e) => crashed = crashed.or(Some(e)),
        }
    }
    let (results_written, results_failed, results_waited) = match results {
        Some((counters, handle)) => {
            if let Err(e) = joined(handle) {
                crashed = crashed.or(Some(e));
            }
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            (get(&counters.written), get(&counters.failed), get(&counters.waited))
        }
        None => (0, 0, 0),
    };
    if let Some(e) = crashed {
        return Err(e);
    }
    if let Some(authority) = refused {
        return Err(ReplayError::ProductionTarget(authority));
    }
    // Exchanges lost are known exactly for closed segments (their footers count their
    // records) read to the end; otherwise each damaged region lost one at least.
    // (Filters read every record; a limit, a time bound or a stop leave some unread. Each
    // earlier pass of a loop was read to its end.)
    let sel = &config.selection;
    let read_whole =
        !interrupted && !source.limit_reached() && sel.limit.is_none() && sel.from.is_none() && sel.to.is_none();
    let passes = earlier_damage.iter().map(|r| (r, true));
    let damage = damage(passes.chain(source.reader().reports().iter().map(|r| (r, read_whole))));
    Ok(Outcomes { stats: merged, interrupted, results_written, results_failed, results_waited, damage })
}

/// What of the tapes could not be read; `None` when they were whole.
fn damage<'a>(
    reports: impl Iterator<Item = (&'a tapedeck_captures::tape::SegmentReport, bool)>,
) -> Option<crate::report::TapeDamage> {
    let mut d = crate::report::TapeDamage { exact: true, ..Default::default() };
    for (r, read_whole) in reports.filter(|(r, _)| r.error.is_some() || !r.stats.is_clean()) {
        d.segments += 1;
        let regions = r.stats.corrupt_regions.max(u64::from(r.error.is_some()));
        d.regions += regions;
        d.bytes_skipped += r.stats.bytes_skipped;
        let known = r.footer_records.filter(|_| read_whole).map(|f| f.saturating_sub(r.stats.records));
        d.exact &= known.is_some();
        d.exchanges_lost += known.unwrap_or(r.stats.corrupt_records.max(regions));
        let file =
            r.path.file_name().map_or_else(|| r.path.display().to_string(), |n| n.to_string_lossy().into_owned());
        for problem in r.error.iter().chain(&r.stats.problems) {
            let problem = format!("{file}: {problem}");
            if d.problems.len() < 5 && !d.problems.contains(&problem) {
                d.problems.push(problem);
            }
        }
    }
    (d.segments > 0).then_some(d)
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, ReplayError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| ReplayError::Thread { name: name.into(), source })
}

/// Joins a thread; its panic is a [`ReplayError::Crashed`].
fn joined<T>(handle: std::thread::JoinHandle<T>) -> Result<T, ReplayError> {
    let thread = handle.thread().name().unwrap_or("replay").to_string();
    handle.join().map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        ReplayError::Crashed { thread, why }
    })
}

/// Refuses to replay at the service a tape was recorded from.
fn guard_production(config: &ReplayConfig, source: &Source) -> Result<(), ReplayError> {
    if config.allow_production_target {
        return Ok(());
    }
    for report in source.reader().reports() {
        let Some(header) = &report.header else { continue };
        for (k, v) in &header.labels {
            if k != "upstream" {
                continue;
            }
            if let Ok(uri) = v.parse::<http::Uri>() {
                if let Some(a) = uri.authority() {
                    if config.rewrite.is_target(a.as_str(), uri.scheme_str().unwrap_or("http")) {
                        return Err(ReplayError::ProductionTarget(v.clone()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Tapes without a scrub fingerprint hold production's data as it was: refused unless
/// allowed (then a warning), and their credentials are never sent as recorded.
/// Tapes scrubbed with a descriptor set lost protobuf fields a rule took (numbers,
/// messages): compared without the same descriptor set, by field number, those come back
/// as differences on every answer. Said before the run, not found out from the report.
fn warn_missing_schema(config: &ReplayConfig, source: &Source) {
    let Some(compare) = &config.compare else { return };
    if compare.proto.is_some() {
        return;
    }
    let with_schema = source.reader().reports().iter().find_map(|r| {
        let fingerprint = r.header.as_ref()?.scrub_fingerprint.as_deref()?;
        let proto = fingerprint.split(' ').find_map(|part| part.strip_prefix("proto:"))?;
        Some((r.path.display().to_string(), proto.to_string()))
    });
    if let Some((path, proto)) = with_schema {
        tracing::warn!(
            "{path} was scrubbed with a protobuf descriptor set (proto:{proto}); pass the same --proto-descriptor to              compare gRPC messages by field name (without it, fields the scrubber removed count as differences)"
        );
    }
}

fn guard_unscrubbed(config: &ReplayConfig, source: &Source) -> Result<(), ReplayError> {
    let reports = source.reader().reports();
    let unscrubbed: Vec<_> =
        reports.iter().filter(|r| r.header.as_ref().is_some_and(|h| h.scrub_fingerprint.is_none())).collect();
    let Some(first) = unscrubbed.first() else { return Ok(()) };
    let which = format!("{} of {} tape segments (first: {})", unscrubbed.len(), reports.len(), first.path.display());
    if config.rewrite.keep_credentials {
        return Err(ReplayError::Config(format!(
            "{which} were not scrubbed: --keep-credentials would send production's own credentials to the target; \
             scrub them first (`tapedeck scrub TAPES -o DIR`) or drop --keep-credentials"
        )));
    }
    if !config.allow_unscrubbed {
        return Err(ReplayError::Config(format!(
            "{which} were not scrubbed (imported, or captured with --no-scrub): their paths, queries, bodies and \
             headers are production's data as it was, and would go to the target; scrub them first (`tapedeck scrub \
             TAPES -o DIR`), or pass --allow-unscrubbed to send them as they are"
        )));
    }
    tracing::warn!(
        "{which} were not scrubbed: their paths, queries, bodies and headers go to the target as production recorded \
         them (credential headers and client addresses are withheld); scrub them first with `tapedeck scrub TAPES -o DIR`"
    );
    Ok(())
}

struct Dispatcher {
    lanes: Vec<Lane>,
    wake: Arc<DispatcherWake>,
    /// Set when a recorded request addresses the target itself.
    refused: Option<String>,
    progress: Arc<Progress>,
    /// Damaged segments of earlier passes (`--loop`, `--duration`), read to their end:
    /// each pass lost their damaged exchanges again.
    earlier_damage: Vec<tapedeck_captures::tape::SegmentReport>,
}

impl Dispatcher {
    /// Runs the schedule; returns true if it was stopped early.
    fn run(&mut self, config: &ReplayConfig, source: &mut Source, stop: &AtomicBool, draining: &AtomicBool) -> bool {
        precise_timers();
        // A short lead lets the workers start before the first request is due.
        let start = Instant::now() + Duration::from_millis(20);
        let mut schedule = Schedule::new(config.pacing, start);
        let deadline = config.duration.map(|d| start + d);
        let mut passes = 0u64;
        let mut interrupted = false;
        'passes: loop {
            passes += 1;
            for ex in source.by_ref() {
                if !config.allow_production_target
                    && config.rewrite.is_target(&ex.request.authority, &ex.request.scheme)
                {
                    self.refused = Some(format!("{}://{}", ex.request.scheme, ex.request.authority));
                    interrupted = true;
                    break 'passes;
                }
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
            if !more || source.limit_reached() {
                break;
            }
            let damaged = source.reader().reports().iter().filter(|r| r.error.is_some() || !r.stats.is_clean());
            self.earlier_damage.extend(damaged.cloned());
            match source.restart() {
                Ok(Some((span, gap))) => schedule.next_loop(span, gap.max(1_000_000)),
                _ => break,
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
