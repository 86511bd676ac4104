//! The results tape: every response, as an [`Exchange`] linked to the recorded one, written
//! by its own thread so that compression and disk never sit on a request's path.
//!
//! Memory is bounded by bytes (a [`budget`](crate::budget) channel): when the writer falls
//! behind, a finished request waits for room (and with it the sends behind it, which then
//! show as lag): results are the product of a replay, so they are not dropped to keep pace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tapedeck_captures::scrub::Scrubber;
use tapedeck_captures::tape::TapeWriter;
use tapedeck_captures::{Exchange, TapeError};

use super::budget;

/// Bytes of results queued for the writer at most, in KiB.
const BUDGET_KIB: u32 = 64 * 1024;

/// Where workers put results (cheap to clone).
#[derive(Clone)]
pub(crate) struct ResultsSink {
    tx: budget::Sender<Exchange>,
    counters: Arc<Counters>,
}

/// What the writer did.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Results on disk (set when the writer is done).
    pub written: AtomicU64,
    /// Results that could not be written: disk full, … (set when the writer is done).
    pub failed: AtomicU64,
    /// Results that waited for the writer.
    pub waited: Arc<AtomicU64>,
}

impl ResultsSink {
    /// Hands `ex` to the writer, first waiting for room in the budget.
    pub async fn send(&self, ex: Exchange) {
        let kib = budget::kib(ex.approx_bytes());
        if !self.tx.send(ex, kib).await {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ResultsSink {
    /// Hands `ex` to the writer if its budget has room now; else counts it as failed and
    /// returns false (a live shadow never waits on its disk).
    pub fn try_send(&self, ex: Exchange) -> bool {
        let kib = budget::kib(ex.approx_bytes());
        let taken = self.tx.try_send(ex, kib).is_ok();
        if !taken {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Hands `ex` to the writer at once, without waiting for room (a stopped run's last
    /// results).
    pub fn send_now(&self, ex: Exchange) {
        if !self.tx.send_now(ex) {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the writer thread; it runs until every sink is dropped. With `scrubber`, every
/// result is scrubbed on that thread before it is encoded (staging's answers hold
/// personal data too, and the requests as sent hold staging's credentials).
pub(crate) fn start(
    writer: TapeWriter,
    scrubber: Option<Arc<Scrubber>>,
) -> std::io::Result<(ResultsSink, Arc<Counters>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = budget::channel::<Exchange>(BUDGET_KIB);
    let counters = Arc::new(Counters { waited: tx.waited.clone(), ..Default::default() });
    let sink = ResultsSink { tx, counters: counters.clone() };
    let c = counters.clone();
    let handle = std::thread::Builder::new()
        .name("tapedeck-results".into())
        .spawn(move || write(writer, rx, &c, scrubber.as_deref()))?;
    Ok((sink, counters, handle))
}

fn write(mut writer: TapeWriter, rx: budget::Receiver<Exchange>, counters: &Counters, scrubber: Option<&Scrubber>) {
    crate::os::background_priority();
    let mut errors = 0u64;
    let mut unencodable = 0u64;
    let mut warn = |e: &TapeError| {
        errors += 1;
        if errors % 10_000 == 1 {
            tracing::warn!(error = %e, errors, "cannot write replay results; the replay goes on");
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok((mut ex, kib)) => {
                if let Some(s) = scrubber {
                    s.scrub(&mut ex);
                }
                if let Err(e) = writer.append(&ex) {
                    // A block that cannot be written counts its records as lost.
                    unencodable += u64::from(matches!(e, TapeError::Encode(_)));
                    warn(&e);
                }
                rx.done(kib);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = writer.tick() {
                    warn(&e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Write the last block and close the segment, then count what reached the disk.
    if let Err(e) = writer.rotate() {
        warn(&e);
    }
    let stats = writer.stats();
    counters.written.store(stats.records, Ordering::Relaxed);
    counters.failed.store(stats.records_lost + unencodable, Ordering::Relaxed);
    if let Err(e) = writer.finish() {
        warn(&e);
    }
}
