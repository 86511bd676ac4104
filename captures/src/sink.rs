//! Where captured exchanges go besides (or instead of) local tapes: a [`CaptureSink`],
//! such as a stream of blocks on NATS JetStream (`tapedeck-stream`). A sink is fed by the
//! capture writer's thread, after scrubbing, and must never make that thread wait on the
//! network: it queues what it cannot send yet (bounded) and drops beyond, counting.

use crate::tape::WriterConfig;
use crate::Exchange;

/// What a sink has done so far: counters only grow, except `queue_bytes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Blocks the destination has acknowledged.
    pub blocks: u64,
    /// Exchanges in those blocks.
    pub records: u64,
    /// Bytes in those blocks (compressed, as sent).
    pub bytes: u64,
    /// Exchanges dropped because the queue to the destination was full (it was slow or
    /// down for longer than the queue holds).
    pub dropped_queue_full: u64,
    /// Exchanges dropped because they could not be encoded.
    pub dropped_encode: u64,
    /// Exchanges dropped because the destination refused their block for good (too
    /// large for it, no stream), or still queued when the sink was closed.
    pub dropped_refused: u64,
    /// Bytes queued, not yet acknowledged.
    pub queue_bytes: u64,
    /// True while the sink is connected to its destination and the destination takes what
    /// it sends (false while publishing fails, even over a live connection).
    pub connected: bool,
}

/// A destination for captured exchanges.
pub trait CaptureSink: Send {
    /// Called once before the first exchange, with the capture's writer settings (who
    /// writes: instance, producer, scrub fingerprint, labels; how blocks are cut).
    fn open(&mut self, writer: &WriterConfig);
    /// Takes one exchange (already scrubbed). Never waits on the network.
    fn append(&mut self, exchange: &Exchange);
    /// Called a few times a second: cuts a block that has aged.
    fn tick(&mut self);
    /// What it has done so far.
    fn stats(&self) -> SinkStats;
    /// Sends what is gathered and stops, waiting a bounded time for the destination to
    /// acknowledge what is queued; what is not acknowledged then is counted as dropped.
    fn close(&mut self) -> SinkStats;
    /// What it sends to, for people (no credentials).
    fn describe(&self) -> String;
}

/// A page an admin listener serves for a [`LiveTap`].
#[derive(Clone, Debug)]
pub struct AdminPage {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its body.
    pub body: Vec<u8>,
}

/// Takes finished exchanges live, as production saw them (not scrubbed: they stay in
/// memory, and what it keeps or shows it scrubs itself) — the shadow that re-sends them
/// to a canary and compares. The proxy asks at each request's head whether the tap wants
/// it, and offers the exchange once production's answer has gone to the client.
pub trait LiveTap: Send + Sync {
    /// Whether to record this request for the tap (its sampling and method rules).
    /// Called on the request path: cheap, never waits.
    fn wants(&self, method: &str, path: &str) -> bool;
    /// A finished exchange the tap wanted. Never waits: when the tap is full, the exchange
    /// is dropped and counted.
    fn offer(&self, exchange: Exchange);
    /// Its metrics, in the Prometheus text format, appended to the proxy's `/metrics`.
    fn metrics(&self, out: &mut String);
    /// The admin page at `path` (`/shadow`, `/shadow.html`), if it serves one.
    fn page(&self, path: &str) -> Option<AdminPage>;
    /// Stops taking exchanges, finishes (bounded) what is under way, and says what it did
    /// in one line.
    fn close(&self) -> String;
}
