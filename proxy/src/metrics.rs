//! The proxy's counters and histograms, exported by the admin listener at `/metrics` in
//! the Prometheus text format.
//!
//! Labelled counters on the request path are resolved once at start-up into plain handles
//! (`requests_2xx` …), so counting a request is an atomic add, not a map lookup.

use crate::failure::ClientFailure;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tapedeck_captures::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromLabel {
    from: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

/// Why a request was not captured although capture is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Outside the sampled percentage (or its session is).
    Sampled,
    /// Excluded by `--include`/`--exclude` rules.
    Filtered,
    /// Over `--max-capture-rps`.
    RateCap,
}

/// Why a capture was dropped after it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue to the writer was full (by count or bytes).
    QueueFull,
    /// The disk is full.
    DiskFull,
    /// Another write error.
    WriteError,
    /// The exchange could not be encoded.
    EncodeError,
    /// The exchange completed after the capture was closed at shutdown.
    Shutdown,
}

/// Why a sink (a stream) dropped captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkDrop {
    /// Its queue was full: the destination was slow or down for longer than it holds.
    QueueFull,
    /// The exchange could not be encoded.
    Encode,
    /// The destination refused the block for good, or it was still queued at shutdown.
    Refused,
}

/// Why a client connection ended badly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// Malformed HTTP, oversized headers, bogus h2 frames.
    Protocol,
    /// The request head did not arrive in time (slowloris).
    HeaderTimeout,
    /// The TLS handshake failed.
    Tls,
    /// Refused: too many connections.
    Overload,
    /// Other I/O errors.
    Io,
}

/// All proxy metrics.
pub struct Metrics {
    registry: Registry,
    requests: [Counter; 5],
    /// Requests captured and handed to the writer.
    pub captured: Counter,
    sampled_out: [Counter; 3],
    dropped: [Counter; 5],
    /// Exchanges written to disk.
    pub written: Counter,
    /// Bytes written to tape files.
    pub bytes_written: Counter,
    /// Exchanges written to a segment someone else deleted afterwards.
    pub deleted: Counter,
    /// Exchanges waiting for the writer.
    pub queue_depth: Gauge,
    /// Bytes waiting for the writer.
    pub queue_bytes: Gauge,
    upstream_errors: Vec<Counter>,
    /// Time from request to upstream response head, seconds.
    pub upstream_latency: Histogram,
    /// Time the proxy itself adds on the request and response head path, seconds.
    pub added_latency: Histogram,
    /// Open client connections.
    pub connections: Gauge,
    /// Client connections accepted.
    pub connections_total: Counter,
    /// Upgraded connections (WebSocket and others) being tunnelled.
    pub upgraded: Gauge,
    /// WebSocket messages recorded, by who sent them ([client, server]).
    pub websocket_messages: [Counter; 2],
    /// WebSocket sessions whose bytes stopped being readable frames (forwarded all the same).
    pub websocket_unreadable: Counter,
    conn_errors: [Counter; 5],
    client_errors: [Counter; 3],
    scrub_hits: Family<RuleLabel, Counter>,
    /// Blocks a sink's destination acknowledged.
    pub sink_blocks: Counter,
    /// Exchanges in them.
    pub sink_records: Counter,
    /// Bytes in them.
    pub sink_bytes: Counter,
    sink_drops: [Counter; 3],
    /// Bytes a sink holds, not yet acknowledged.
    pub sink_queue_bytes: Gauge,
    /// 1 while the sink is connected.
    pub sink_connected: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tapedeck");
        let requests_family = Family::<ClassLabel, Counter>::default();
        let requests = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|c| requests_family.get_or_create(&ClassLabel { class: c }).clone());
        registry.register("requests", "Requests answered, by the status class the client got", requests_family);

        let captured = Counter::default();
        registry.register("captured", "Requests selected for capture", captured.clone());
        let sampled_family = Family::<ReasonLabel, Counter>::default();
        let sampled_out = ["sampled", "filtered", "rate_cap"]
            .map(|r| sampled_family.get_or_create(&ReasonLabel { reason: r }).clone());
        registry.register("sampled_out", "Requests not captured, by reason", sampled_family);
        let dropped_family = Family::<ReasonLabel, Counter>::default();
        let dropped = ["queue_full", "disk_full", "write_error", "encode_error", "shutdown"]
            .map(|r| dropped_family.get_or_create(&ReasonLabel { reason: r }).clone());
        registry.register("capture_dropped", "Captures dropped (the requests were served), by reason", dropped_family);
        let written = Counter::default();
        registry.register("capture_written", "Exchanges written to tape", written.clone());
        let deleted = Counter::default();
        registry.register(
            "capture_deleted",
            "Exchanges written to tape whose open segment someone else then deleted (counted in capture_written too)",
            deleted.clone(),
        );
        let bytes_written = Counter::default();
        registry.register("capture_written_bytes", "Bytes written to tape files", bytes_written.clone());
        let queue_depth = Gauge::default();
        registry.register("capture_queue_depth", "Exchanges waiting for the tape writer", queue_depth.clone());
        let queue_bytes = Gauge::default();
        registry.register("capture_queue_bytes", "Bytes waiting for the tape writer", queue_bytes.clone());

        let errors_family = Family::<KindLabel, Counter>::default();
        let upstream_errors = ErrorKind::ALL
            .iter()
            .map(|k| errors_family.get_or_create(&KindLabel { kind: k.as_str() }).clone())
            .collect();
        registry.register("upstream_errors", "Upstream failures, by kind", errors_family);

        let upstream_latency = Histogram::exponential(0.0005, 17);
        registry.register(
            "upstream_latency_seconds",
            "Time from request to upstream response head",
            upstream_latency.clone(),
        );
        let added_latency = Histogram::exponential(0.000_01, 16);
        registry.register(
            "added_latency_seconds",
            "Time the proxy adds on the request and response head path",
            added_latency.clone(),
        );

        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let connections_total = Counter::default();
        registry.register("connections_accepted", "Client connections accepted", connections_total.clone());
        let upgraded = Gauge::default();
        registry.register(
            "upgraded_connections",
            "Upgraded connections (WebSocket and others) being tunnelled; counted in tapedeck_connections too",
            upgraded.clone(),
        );
        let ws_family = Family::<FromLabel, Counter>::default();
        let websocket_messages = ["client", "server"].map(|f| ws_family.get_or_create(&FromLabel { from: f }).clone());
        registry.register("websocket_messages", "WebSocket messages recorded, by who sent them", ws_family);
        let websocket_unreadable = Counter::default();
        registry.register(
            "websocket_unreadable",
            "Captured WebSocket sessions whose bytes stopped being frames tapedeck reads (forwarded all the same)",
            websocket_unreadable.clone(),
        );
        let conn_family = Family::<ReasonLabel, Counter>::default();
        let conn_errors = ["protocol", "header_timeout", "tls", "overload", "io"]
            .map(|r| conn_family.get_or_create(&ReasonLabel { reason: r }).clone());
        registry.register("connection_errors", "Client connections that ended in an error, by reason", conn_family);
        let client_family = Family::<KindLabel, Counter>::default();
        let client_errors =
            ClientFailure::ALL.map(|f| client_family.get_or_create(&KindLabel { kind: f.as_str() }).clone());
        registry.register(
            "client_errors",
            "Requests that failed because of the client's body (not the upstream), by kind",
            client_family,
        );
        let scrub_hits = Family::<RuleLabel, Counter>::default();
        registry.register("scrub_hits", "Values changed by the scrubber, by rule", scrub_hits.clone());

        let sink_blocks = Counter::default();
        registry.register(
            "sink_blocks",
            "Capture blocks the sink's destination (NATS JetStream) acknowledged",
            sink_blocks.clone(),
        );
        let sink_records = Counter::default();
        registry.register(
            "sink_records",
            "Exchanges in the blocks the sink's destination acknowledged",
            sink_records.clone(),
        );
        let sink_bytes = Counter::default();
        registry.register("sink_bytes", "Bytes (compressed) the sink's destination acknowledged", sink_bytes.clone());
        let sink_family = Family::<ReasonLabel, Counter>::default();
        let sink_drops = ["queue_full", "encode_error", "refused"]
            .map(|r| sink_family.get_or_create(&ReasonLabel { reason: r }).clone());
        registry.register(
            "sink_dropped",
            "Captures the sink dropped (the requests were served), by reason",
            sink_family,
        );
        let sink_queue_bytes = Gauge::default();
        registry.register("sink_queue_bytes", "Bytes the sink holds, not yet acknowledged", sink_queue_bytes.clone());
        let sink_connected = Gauge::default();
        registry.register(
            "sink_connected",
            "1 while the sink is connected and its destination acknowledges what it publishes",
            sink_connected.clone(),
        );

        Metrics {
            sink_blocks,
            sink_records,
            sink_bytes,
            sink_drops,
            sink_queue_bytes,
            sink_connected,
            registry,
            requests,
            captured,
            sampled_out,
            dropped,
            written,
            bytes_written,
            deleted,
            queue_depth,
            queue_bytes,
            upstream_errors,
            upstream_latency,
            added_latency,
            connections,
            connections_total,
            upgraded,
            websocket_messages,
            websocket_unreadable,
            conn_errors,
            client_errors,
            scrub_hits,
        }
    }

    /// Counts an answered request by the status the client got.
    pub fn request(&self, status: u16) {
        let i = usize::from(status.clamp(100, 599) / 100) - 1;
        self.requests[i].inc();
    }

    /// Counts a request that was not captured.
    pub fn skipped(&self, reason: SkipReason) {
        self.sampled_out[reason as usize].inc();
    }

    /// Counts dropped captures.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].inc_by(n);
    }

    /// Total dropped captures for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    /// Counts captures a sink dropped.
    pub fn sink_dropped(&self, reason: SinkDrop, n: u64) {
        self.sink_drops[reason as usize].inc_by(n);
    }

    /// Total captures a sink dropped for `reason`.
    pub fn sink_dropped_count(&self, reason: SinkDrop) -> u64 {
        self.sink_drops[reason as usize].get()
    }

    /// Counts a request that failed because of its client's body.
    pub fn client_error(&self, failure: ClientFailure) {
        if let Some(i) = ClientFailure::ALL.iter().position(|f| *f == failure) {
            self.client_errors[i].inc();
        }
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.upstream_errors[i].inc();
        }
    }

    /// Counts a failed client connection.
    pub fn conn_error(&self, reason: ConnError) {
        self.conn_errors[reason as usize].inc();
    }

    /// Counts scrub rule hits.
    pub fn scrub_hit(&self, rule: &str, n: u64) {
        self.scrub_hits.get_or_create(&RuleLabel { rule: rule.to_string() }).inc_by(n);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram with fixed buckets and lock-free observation: one atomic add per bucket
/// hit plus sum and count, so workers on different cores never wait on a lock.
#[derive(Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

struct HistogramInner {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// Sum of observations in nanoseconds (seconds × 1e9), so it stays an integer.
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Buckets `start, 2·start, 4·start, …` (`n` of them), plus +Inf.
    pub fn exponential(start: f64, n: usize) -> Self {
        let bounds: Vec<f64> = (0..n).map(|i| start * 2f64.powi(i as i32)).collect();
        let counts = (0..=n).map(|_| AtomicU64::new(0)).collect();
        Histogram { inner: Arc::new(HistogramInner { bounds, counts, sum_ns: AtomicU64::new(0) }) }
    }

    /// Records one value, in seconds.
    pub fn observe(&self, seconds: f64) {
        let i = self.inner.bounds.partition_point(|b| *b < seconds);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let buckets: Vec<(f64, u64)> = self
            .inner
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (self.inner.bounds.get(i).copied().unwrap_or(f64::MAX), c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("count", &self.count()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels() {
        let m = Metrics::new();
        m.request(204);
        m.request(503);
        m.request(502);
        m.skipped(SkipReason::RateCap);
        m.dropped(DropReason::QueueFull, 3);
        m.upstream_error(ErrorKind::ConnectRefused);
        m.upstream_latency.observe(0.05);
        m.upstream_latency.observe(100.0);
        let text = m.render();
        for line in [
            "tapedeck_requests_total{class=\"2xx\"} 1",
            "tapedeck_requests_total{class=\"5xx\"} 2",
            "tapedeck_sampled_out_total{reason=\"rate_cap\"} 1",
            "tapedeck_capture_dropped_total{reason=\"queue_full\"} 3",
            "tapedeck_upstream_errors_total{kind=\"connect_refused\"} 1",
            "tapedeck_upstream_latency_seconds_count 2",
            "tapedeck_upstream_latency_seconds_bucket{le=\"0.064\"} 1",
            "tapedeck_upstream_latency_seconds_bucket{le=\"+Inf\"} 2",
            "tapedeck_upstream_latency_seconds_sum 100.05",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(m.dropped_count(DropReason::QueueFull), 3);
    }
}
