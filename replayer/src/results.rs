//! The results tape: every response, as an [`Exchange`] linked to the recorded one, written
//! by its own thread so that compression and disk never sit on a request's path.
//!
//! Memory is bounded by bytes, not count — responses may be large: results queued for the
//! writer hold a share of a fixed budget until written. When the writer falls behind, a
//! finished request waits for room (and with it the sends behind it, which then show as
//! lag): results are the product of a replay, so they are not dropped to keep pace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tapedeck_captures::tape::TapeWriter;
use tapedeck_captures::{Exchange, TapeError};
use tokio::sync::Semaphore;

/// Bytes of results queued for the writer at most, in KiB.
const BUDGET_KIB: u32 = 64 * 1024;

/// Where workers put results (cheap to clone).
#[derive(Clone)]
pub(crate) struct ResultsSink {
    tx: mpsc::Sender<(Exchange, u32)>,
    budget: Arc<Semaphore>,
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
    pub waited: AtomicU64,
}

fn kib(ex: &Exchange) -> u32 {
    let headers: usize = ex
        .request
        .headers
        .iter()
        .chain(ex.response.iter().flat_map(|r| r.headers.iter()))
        .map(|h| h.name.len() + h.value.len())
        .sum();
    let bytes = ex.request.body.data.len() + ex.response.as_ref().map_or(0, |r| r.body.data.len()) + headers + 256;
    (bytes.div_ceil(1024) as u32).clamp(1, BUDGET_KIB)
}

impl ResultsSink {
    /// Hands `ex` to the writer, first waiting for room in the budget.
    pub async fn send(&self, ex: Exchange) {
        let n = kib(&ex);
        let permit = match self.budget.try_acquire_many(n) {
            Ok(p) => p,
            Err(_) => {
                self.counters.waited.fetch_add(1, Ordering::Relaxed);
                match self.budget.acquire_many(n).await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        // The writer gives the budget back once the result is on disk.
        permit.forget();
        if self.tx.send((ex, n)).is_err() {
            self.budget.add_permits(n as usize);
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the writer thread; it runs until every sink is dropped.
pub(crate) fn start(writer: TapeWriter) -> std::io::Result<(ResultsSink, Arc<Counters>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<(Exchange, u32)>();
    let budget = Arc::new(Semaphore::new(BUDGET_KIB as usize));
    let counters = Arc::new(Counters::default());
    let sink = ResultsSink { tx, budget: budget.clone(), counters: counters.clone() };
    let c = counters.clone();
    let handle =
        std::thread::Builder::new().name("tapedeck-results".into()).spawn(move || write(writer, rx, &budget, &c))?;
    Ok((sink, counters, handle))
}

fn write(mut writer: TapeWriter, rx: mpsc::Receiver<(Exchange, u32)>, budget: &Semaphore, counters: &Counters) {
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
            Ok((ex, n)) => {
                if let Err(e) = writer.append(&ex) {
                    // A block that cannot be written counts its records as lost.
                    unencodable += u64::from(matches!(e, TapeError::Encode(_)));
                    warn(&e);
                }
                budget.add_permits(n as usize);
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
