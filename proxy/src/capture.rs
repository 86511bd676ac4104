//! The capture queue and its writer thread: finished exchanges go through a bounded queue
//! (bounded by count and by bytes) to one thread that runs the scrub hook, encodes,
//! compresses and writes tapes, off the request path.
//!
//! Nothing here can slow a request down: a full queue drops the capture and counts it;
//! write errors (a full disk) cost the captures of the failed block, are counted, logged
//! once per episode, and writing resumes by itself when the disk accepts data again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tapedeck_captures::sink::{CaptureSink, SinkStats};
use tapedeck_captures::tape::{TapeWriter, WriterConfig, WriterStats};
use tapedeck_captures::{Exchange, TapeError};

use crate::metrics::{DropReason, Metrics, SinkDrop};

/// How long the writer sleeps when the queue is empty.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Edits an exchange before it is encoded (the scrubber, issue C).
pub type ScrubHook = Box<dyn FnMut(&mut Exchange) + Send>;

/// Capture settings.
pub struct CaptureConfig {
    /// Where and how tapes are written.
    pub writer: WriterConfig,
    /// Body bytes kept per message; the rest is counted and marked truncated.
    pub max_body: usize,
    /// Exchanges the queue holds at most.
    pub queue_max_exchanges: usize,
    /// Bytes (captured bodies and headers) the queue holds at most.
    pub queue_max_bytes: usize,
    /// Runs on every exchange before it is encoded.
    pub scrub: Option<ScrubHook>,
    /// Write tapes into `writer.dir` (else only the sinks get the captures).
    pub write_tapes: bool,
    /// Other destinations (a stream), fed the same scrubbed exchanges.
    pub sinks: Vec<Box<dyn CaptureSink>>,
}

impl CaptureConfig {
    /// Defaults for capturing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaptureConfig {
            writer: WriterConfig::new(dir),
            max_body: 1 << 20,
            queue_max_exchanges: 10_000,
            queue_max_bytes: 256 << 20,
            scrub: None,
            write_tapes: true,
            sinks: Vec::new(),
        }
    }
}

/// The producer side, shared by all request handlers.
pub struct CaptureQueue {
    tx: SyncSender<Exchange>,
    closed: Arc<AtomicBool>,
    depth: Arc<AtomicI64>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

impl CaptureQueue {
    /// Offers an exchange to the writer; drops it (counted) if the queue is full.
    pub fn push(&self, exchange: Exchange) {
        if self.closed.load(Ordering::Relaxed) {
            self.metrics.dropped(DropReason::Shutdown, 1);
            return;
        }
        let size = approx_size(&exchange);
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.metrics.dropped(DropReason::QueueFull, 1);
            return;
        }
        match self.tx.try_send(exchange) {
            Ok(()) => {
                let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
                self.metrics.queue_depth.set(depth);
                self.metrics.queue_bytes.set((before + size) as i64);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                self.metrics.dropped(DropReason::QueueFull, 1);
            }
        }
    }
}

impl CaptureQueue {
    /// Stops taking captures; the writer writes what is queued and closes its segment.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

fn approx_size(ex: &Exchange) -> usize {
    let headers = |h: &tapedeck_captures::Headers| h.iter().map(|h| h.name.len() + h.value.len() + 16).sum::<usize>();
    let mut n = 256 + ex.request.target.len() + headers(&ex.request.headers) + ex.request.body.data.len();
    if let Some(r) = &ex.response {
        n += headers(&r.headers) + r.body.data.len();
    }
    n
}

/// What the writer thread did, returned when it stops.
#[derive(Clone, Debug, Default)]
pub struct CaptureReport {
    /// The writer's counters.
    pub stats: WriterStats,
    /// Segments closed.
    pub segments: Vec<PathBuf>,
    /// The error that stopped the final close, if any.
    pub close_error: Option<String>,
    /// Each sink: what it sends to, and what it did.
    pub sinks: Vec<(String, SinkStats)>,
}

/// The writer thread.
pub struct CaptureWriter {
    handle: JoinHandle<CaptureReport>,
}

impl CaptureWriter {
    /// Waits for the writer to drain the queue (all senders must be dropped) and close the
    /// current segment.
    pub fn join(self) -> CaptureReport {
        self.handle.join().unwrap_or_else(|_| CaptureReport {
            close_error: Some("the tape writer thread panicked".into()),
            ..Default::default()
        })
    }
}

/// Creates the tape directory, checks it is writable, and starts the writer thread.
pub fn start(mut config: CaptureConfig, metrics: Arc<Metrics>) -> Result<(CaptureQueue, CaptureWriter), TapeError> {
    let writer = if config.write_tapes {
        let mut writer = TapeWriter::new(config.writer.clone())?;
        check_writable(&config.writer.dir)?;
        let renamed = writer.recover_closed_partials();
        if !renamed.is_empty() {
            let names: Vec<String> = renamed.iter().map(|p| p.display().to_string()).collect();
            tracing::warn!(segments = %names.join(", "), "renamed segments an earlier run closed but could not rename");
        }
        Some(writer)
    } else {
        None
    };
    let mut sinks = std::mem::take(&mut config.sinks);
    for sink in &mut sinks {
        sink.open(&config.writer);
    }
    let (tx, rx) = mpsc::sync_channel::<Exchange>(config.queue_max_exchanges.max(1));
    let depth = Arc::new(AtomicI64::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let queue = CaptureQueue {
        tx,
        closed: closed.clone(),
        depth: depth.clone(),
        bytes: bytes.clone(),
        max_bytes: config.queue_max_bytes,
        metrics: metrics.clone(),
    };
    let scrub = config.scrub.take();
    let tick = config.writer.block_max_age.min(Duration::from_millis(250)).max(Duration::from_millis(10));
    let handle = std::thread::Builder::new()
        .name("tapedeck-writer".into())
        .spawn(move || {
            let mut state = WriterLoop {
                writer,
                sinks: sinks.into_iter().map(|s| (s, SinkStats::default())).collect(),
                scrub,
                metrics,
                depth,
                bytes,
                closed,
                reported: WriterStats::default(),
                failing_since: None,
            };
            state.run(rx, tick)
        })
        .map_err(|e| TapeError::Io {
            path: PathBuf::from("tapedeck-writer"),
            action: "starting the writer thread",
            source: e,
        })?;
    Ok((queue, CaptureWriter { handle }))
}

fn check_writable(dir: &std::path::Path) -> Result<(), TapeError> {
    tapedeck_captures::files::write_probe(dir).map_err(|e| TapeError::Io {
        path: dir.to_path_buf(),
        action: "checking that the capture directory is writable",
        source: e,
    })
}

struct WriterLoop {
    writer: Option<TapeWriter>,
    /// Each sink, and its counters as last reported to the metrics.
    sinks: Vec<(Box<dyn CaptureSink>, SinkStats)>,
    scrub: Option<ScrubHook>,
    metrics: Arc<Metrics>,
    depth: Arc<AtomicI64>,
    bytes: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    reported: WriterStats,
    /// Since when writing fails, and how many blocks had reached the disk then: writing
    /// has resumed only when a block reaches the disk again (an append that only
    /// buffered proves nothing).
    failing_since: Option<(Instant, u64)>,
}

impl WriterLoop {
    fn run(&mut self, rx: mpsc::Receiver<Exchange>, tick: Duration) -> CaptureReport {
        // The writer polls instead of blocking on the queue: a blocked receiver would make
        // every request that finishes a capture pay for waking this thread (a futex call
        // and a context switch). Captures may wait a few milliseconds; requests never do.
        let mut last_tick = Instant::now();
        loop {
            let mut drained = 0;
            let mut disconnected = false;
            while drained < 4096 {
                match rx.try_recv() {
                    Ok(exchange) => {
                        self.write(exchange);
                        drained += 1;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            // Closed and drained: everything queued before the close is written.
            if disconnected || (drained == 0 && self.closed.load(Ordering::Acquire)) {
                break;
            }
            if last_tick.elapsed() >= tick {
                if let Some(writer) = self.writer.as_mut() {
                    let result = writer.tick();
                    self.settle(result);
                }
                for (sink, _) in &mut self.sinks {
                    sink.tick();
                }
                self.account_sinks();
                last_tick = Instant::now();
            }
            if drained == 0 {
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        let mut report = CaptureReport::default();
        if let Some(writer) = self.writer.as_mut() {
            let close = writer.rotate();
            if let Some(e) = writer.take_lost() {
                tracing::error!(error = %e, "capture segment lost");
            }
            let stats = writer.stats().clone();
            report.segments = writer.finished_segments().to_vec();
            self.account(&stats, close.as_ref().err());
            if let Err(e) = &close {
                tracing::error!(error = %e, "could not close the last capture segment; it stays as .partial and is still readable");
            }
            report.stats = stats;
            report.close_error = close.err().map(|e| e.to_string());
        }
        for (sink, _) in &mut self.sinks {
            let stats = sink.close();
            report.sinks.push((sink.describe(), stats));
        }
        self.account_sinks();
        report
    }

    /// Brings the sink metrics up to the sinks' counters.
    fn account_sinks(&mut self) {
        for (sink, reported) in &mut self.sinks {
            let now = sink.stats();
            let m = &self.metrics;
            m.sink_blocks.inc_by(now.blocks - reported.blocks);
            m.sink_records.inc_by(now.records - reported.records);
            m.sink_bytes.inc_by(now.bytes - reported.bytes);
            m.sink_dropped(SinkDrop::QueueFull, now.dropped_queue_full - reported.dropped_queue_full);
            m.sink_dropped(SinkDrop::Encode, now.dropped_encode - reported.dropped_encode);
            m.sink_dropped(SinkDrop::Refused, now.dropped_refused - reported.dropped_refused);
            m.sink_queue_bytes.set(now.queue_bytes as i64);
            m.sink_connected.set(i64::from(now.connected));
            *reported = now;
        }
    }

    fn write(&mut self, mut exchange: Exchange) {
        let size = approx_size(&exchange);
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        let depth = self.depth.fetch_sub(1, Ordering::Relaxed) - 1;
        self.metrics.queue_depth.set(depth);
        self.metrics.queue_bytes.set(self.bytes.load(Ordering::Relaxed) as i64);
        if let Some(scrub) = self.scrub.as_mut() {
            scrub(&mut exchange);
            for hit in &exchange.scrub {
                self.metrics.scrub_hit(&hit.rule, u64::from(hit.count));
            }
        }
        for (sink, _) in &mut self.sinks {
            sink.append(&exchange);
        }
        if let Some(writer) = self.writer.as_mut() {
            let result = writer.append(&exchange);
            self.settle(result);
        }
    }

    /// Updates metrics from the writer's counters and logs write-error episodes.
    fn settle(&mut self, result: Result<(), TapeError>) {
        let Some(stats) = self.writer.as_ref().map(|w| w.stats().clone()) else { return };
        self.account(&stats, result.as_ref().err());
        match result {
            Ok(()) => {
                if let Some((since, blocks)) = self.failing_since {
                    if stats.blocks > blocks {
                        self.failing_since = None;
                        tracing::warn!(after_secs = since.elapsed().as_secs(), "capture writing resumed");
                    }
                }
            }
            Err(TapeError::Encode(e)) => {
                self.metrics.dropped(DropReason::EncodeError, 1);
                tracing::debug!(error = %e, "exchange could not be encoded; capture dropped");
            }
            Err(e) => {
                if self.failing_since.is_none() {
                    self.failing_since = Some((Instant::now(), stats.blocks));
                    tracing::error!(error = %e, "cannot write captures; dropping them (requests are unaffected) until writing works again");
                }
            }
        }
    }

    fn account(&mut self, stats: &WriterStats, error: Option<&TapeError>) {
        let lost = stats.records_lost - self.reported.records_lost;
        if lost > 0 {
            let reason =
                if error.is_some_and(TapeError::is_disk_full) { DropReason::DiskFull } else { DropReason::WriteError };
            self.metrics.dropped(reason, lost);
        }
        self.metrics.written.inc_by(stats.records - self.reported.records);
        self.metrics.deleted.inc_by(stats.records_deleted - self.reported.records_deleted);
        self.metrics.bytes_written.inc_by(stats.bytes_on_disk - self.reported.bytes_on_disk);
        self.reported = stats.clone();
    }
}
