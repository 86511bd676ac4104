//! The replay engine — the replay's threads, apart from the pure logic around them:
//!
//! - [`dispatch`]: the dispatcher (the calling thread) keeps the schedule and hands each
//!   recorded exchange to a worker's *lane*;
//! - [`worker`]: worker threads, each with its own event loop and connection pool, send
//!   requests and keep their sessions' order;
//! - [`comparer`]: one comparer thread per worker diffs answers off the send path;
//! - [`results`]: one writer thread for the results tape;
//! - [`budget`]: the byte-bounded channels between them (drop, never block, when full).
//!
//! The dispatcher reads recorded exchanges in start order, waits (precisely) until each is
//! due and hands it to a worker: a session always to the same worker, which keeps its
//! order; independent requests to the least busy one. Workers bound what is in flight;
//! the dispatcher bounds what is handed over and not finished (the read-ahead), so memory
//! stays flat however long the tapes and however slow the target. A request that cannot
//! start on time starts late, and its lag is measured.

mod budget;
mod comparer;
mod dispatch;
pub(crate) mod results;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck_captures::tape::{TapeKind, TapeWriter, WriterConfig};
use tapedeck_captures::IdGenerator;
use tapedeck_compare::generated::Window;
use tapedeck_net::clock::Clock;
use tapedeck_report::stats::Stats;

use crate::client::Pool;
use crate::progress::Progress;
use crate::schedule::Pacing;
use crate::source::{Selection, Source, SourceError};
use crate::{ReplayConfig, ReplayError};
use comparer::Comparing;
use dispatch::{Dispatcher, DispatcherWake, Job, Lane, LaneState};
use worker::WorkerContext;

/// Requests handed over and not finished, at most, across workers, when paced: room for
/// sessions held behind a slow response without reading the tapes without bound.
const MAX_OUTSTANDING: usize = 100_000;

/// A `--start-at` this far in the past still counts as on time (setting up takes a moment).
pub(crate) const LATE_AFTER: Duration = Duration::from_secs(1);

/// What [`run`] returns.
pub(crate) struct Outcomes {
    pub stats: Stats,
    /// The run's start (what its times count from), ns since the epoch.
    pub start_unix_ns: i64,
    /// The source's digest of what it read ([`crate::source::Source::input_digest`]).
    pub input_digest: u64,
    pub interrupted: bool,
    pub results_written: u64,
    pub results_failed: u64,
    pub results_waited: u64,
    pub damage: Option<tapedeck_report::TapeDamage>,
}

/// Runs the replay to the end (or until `stop`); returns merged stats and counters.
pub(crate) fn run(config: &ReplayConfig, stop: &AtomicBool, progress: Arc<Progress>) -> Result<Outcomes, ReplayError> {
    config.check_on_time()?;
    let mut source = Source::open(&config.paths, config.selection.clone())?;
    if source.reader().readable_segments() == 0 {
        let why = source
            .reader()
            .reports()
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_else(|| "no readable tapes".into());
        return Err(SourceError::Unreadable(why).into());
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
    crate::guard::production(config, &source)?;
    crate::guard::unscrubbed(config, &source)?;
    crate::guard::warn_missing_schema(config, &source);
    let rewrite = Arc::new(config.rewrite.clone());
    let tls = if rewrite.is_https() {
        Some(Arc::new(
            crate::client::tls_config(&config.client).map_err(|source| ReplayError::Tls { what: "--ca", source })?,
        ))
    } else {
        None
    };

    // With `--start-at`, the run (its timeline, its results tape) counts from the agreed
    // instant, as every shard's does; else from now, the schedule starting shortly after.
    let (clock, start) = match config.start_at {
        Some(at) => {
            let clock = Clock::at_unix_ns(at);
            (clock, clock.start)
        }
        None => {
            let clock = Clock::now();
            // A short lead lets the workers start before the first request is due.
            (clock, clock.start + Duration::from_millis(20))
        }
    };
    let results = match &config.results {
        Some(dir) => {
            let mut wc = WriterConfig::new(dir);
            wc.prefix = "replay".into();
            wc.kind = TapeKind::Replay;
            wc.allow_shared_dir = config.allow_shared_dir;
            wc.tape_start_unix_ns = clock.start_unix_ns;
            wc.labels.push(("target".into(), rewrite.origin()));
            wc.scrub_fingerprint = config.scrub.as_ref().map(|s| s.fingerprint());
            let writer = TapeWriter::new(wc).map_err(ReplayError::Results)?;
            Some(
                results::start(writer, config.scrub.clone())
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
        Arc::new(Comparing {
            config: c,
            window: Window::since(clock.start_unix_ns / 1_000_000_000),
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
            .map_err(|source| ReplayError::Tls { what: "--target", source })?;
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
                Pacing::Recorded { speed } => Some(speed),
                _ => None,
            },
            comparer: match &comparing {
                Some(c) => {
                    let name = format!("tapedeck-compare-{i}");
                    let (sink, handle) =
                        comparer::start(&name, c.clone()).map_err(|source| ReplayError::Thread { name, source })?;
                    comparers.push(handle);
                    Some(sink)
                }
                None => None,
            },
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        lanes.push(Lane { tx, state: lane });
        handles.push(spawn(&format!("tapedeck-replay-{i}"), move || worker::run(rx, pool, ctx))?);
    }
    let results = results.map(|(sink, counters, handle)| {
        drop(sink);
        (counters, handle)
    });

    if config.start_at.is_some() {
        // Whole seconds: the wait is a schedule, not a measurement.
        let secs = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs().max(1)));
        let now = Instant::now();
        if start > now + Duration::from_secs(1) {
            progress.starts_at_unix_ns.store(clock.start_unix_ns, Ordering::Relaxed);
        } else if now > start + LATE_AFTER {
            tracing::warn!(
                "joining the schedule {} late (--late-ok): requests due before now are sent at once and count as late",
                secs(now - start)
            );
        }
    }
    let mut d = Dispatcher { lanes, wake, refused: None, progress: progress.clone(), earlier_damage: Vec::new() };
    let interrupted = d.run(config, &mut source, start, stop, &draining);
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
    Ok(Outcomes {
        stats: merged,
        start_unix_ns: clock.start_unix_ns,
        input_digest: source.input_digest(),
        interrupted,
        results_written,
        results_failed,
        results_waited,
        damage,
    })
}

/// What of the tapes could not be read; `None` when they were whole.
fn damage<'a>(
    reports: impl Iterator<Item = (&'a tapedeck_captures::tape::SegmentReport, bool)>,
) -> Option<tapedeck_report::TapeDamage> {
    let mut d = tapedeck_report::TapeDamage { exact: true, ..Default::default() };
    for (r, read_whole) in reports.filter(|(r, _)| r.error.is_some() || !r.stats.is_clean()) {
        d.segments += 1;
        let regions = r.stats.corrupt_regions.max(u64::from(r.error.is_some()));
        d.regions += regions;
        d.bytes_skipped += r.stats.bytes_skipped;
        // Records skipped as a second copy of a block are read, not lost.
        let read = r.stats.records + r.stats.duplicate_records;
        let known = r.footer_records.filter(|_| read_whole).map(|f| f.saturating_sub(read));
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
