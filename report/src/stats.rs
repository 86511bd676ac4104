//! What a replay measured: per route (templated), the recorded and replayed latency and
//! status mix; overall, the lag of every send against its schedule, errors by kind, and
//! the throughput intended and achieved. Kept per worker and merged at the end.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tapedeck_captures::{ErrorKind, Exchange};

use tapedeck_compare::noise::NoiseModel;
use tapedeck_compare::tally::RouteTally;

/// Distinct routes tracked; more are counted under [`OTHER_ROUTES`].
pub use tapedeck_compare::MAX_ROUTES;
/// Where routes beyond the limit are counted.
pub const OTHER_ROUTES: &str = "(other routes)";

/// The key `route` is counted under in `map`: itself, or [`OTHER_ROUTES`] once the map
/// holds [`MAX_ROUTES`] others.
pub fn capped<'a, V>(map: &HashMap<String, V>, route: &'a str) -> &'a str {
    capped_at(map, route, MAX_ROUTES)
}

/// As [`capped`], at `max` routes (a live shadow keeps fewer).
pub fn capped_at<'a, V>(map: &HashMap<String, V>, route: &'a str, max: usize) -> &'a str {
    if map.len() < max || map.contains_key(route) {
        route
    } else {
        OTHER_ROUTES
    }
}

/// Latencies longer than this (µs: 1 h) are kept as this, not lost.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Lag longer than this (µs: 30 days) is kept as this: a host joining a `--start-at`
/// schedule hours late (`--late-ok`) shows how late.
pub(crate) const MAX_LAG_US: u64 = 30 * 24 * 3_600_000_000;

/// A latency histogram: from 1 µs at 3 significant digits, sized to what it holds — an
/// empty one costs a few KiB and one of 100 ms latencies 64 KiB, where one sized for an
/// hour up front cost 200 KiB per route and side whatever it held (a live shadow keeps
/// many).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are valid")
}

/// Records `us` into `h`, at least 1 and at most `max`.
pub(crate) fn record(h: &mut Histogram<u64>, us: u64, max: u64) {
    // A growing histogram only fails on values it could never hold; `max` is far below.
    let _ = h.record(us.clamp(1, max));
}

/// One route's numbers.
#[derive(Clone, Debug)]
pub struct RouteStats {
    /// Requests replayed.
    pub count: u64,
    /// Recorded time to last byte, µs.
    pub recorded: Histogram<u64>,
    /// Replayed time to last byte, µs (a timed-out request at the time it gave up).
    pub replayed: Histogram<u64>,
    /// Requests that timed out (inside `replayed`).
    pub timeouts: u64,
    /// Recorded status classes (`2xx` … or `none`).
    pub recorded_status: BTreeMap<&'static str, u64>,
    /// Replayed status classes.
    pub replayed_status: BTreeMap<&'static str, u64>,
    /// Replay errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Response differences, when comparing.
    pub diffs: RouteTally,
    /// Streams (a gRPC answer of several messages, a WebSocket session): time to the
    /// server's first message, recorded and replayed, µs. Made at the first stream.
    pub first_message: Option<Box<(Histogram<u64>, Histogram<u64>)>>,
    /// WebSocket sessions: how long the server took to answer a client's message,
    /// recorded and replayed, µs. Made at the first session.
    pub answers: Option<Box<(Histogram<u64>, Histogram<u64>)>>,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            count: 0,
            recorded: histogram(),
            replayed: histogram(),
            timeouts: 0,
            recorded_status: BTreeMap::new(),
            replayed_status: BTreeMap::new(),
            errors: BTreeMap::new(),
            diffs: RouteTally::default(),
            first_message: None,
            answers: None,
        }
    }
}

/// When a recorded stream's first message from the server was complete, ns after the
/// request started: a gRPC answer of more than one message, a WebSocket session.
fn stream_first_ns(ex: &Exchange) -> Option<u64> {
    if let Some(ws) = &ex.websocket {
        return ws.first_data(tapedeck_captures::websocket::Side::Server);
    }
    let r = ex.response.as_ref()?;
    (r.message_ns.len() > 1).then(|| r.message_ns[0])
}

/// Buckets of the timeline kept at most; beyond, buckets double in width.
const TIMELINE_BUCKETS: usize = 600;

/// Requests per time bucket since the replay's start: as scheduled and as sent.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Width of a bucket, ms.
    pub bucket_ms: u64,
    /// Requests due per bucket (the recording's shape at the replay's tempo).
    pub due: Vec<u64>,
    /// Requests sent per bucket.
    pub sent: Vec<u64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline { bucket_ms: 100, due: Vec::new(), sent: Vec::new() }
    }
}

impl Timeline {
    fn add(&mut self, due_ms: u64, sent_ms: u64) {
        while due_ms.max(sent_ms) / self.bucket_ms >= TIMELINE_BUCKETS as u64 {
            self.coarsen();
        }
        for (series, at) in [(&mut self.due, due_ms), (&mut self.sent, sent_ms)] {
            let i = (at / self.bucket_ms) as usize;
            if series.len() <= i {
                series.resize(i + 1, 0);
            }
            series[i] += 1;
        }
    }

    /// A timeline read back (`bucket_ms` wide buckets), moved `shift_ns` later: buckets as
    /// wide as needed (100 ms × 2^k, as a run makes them) to hold it in
    /// [`TIMELINE_BUCKETS`], whatever the file says.
    pub(crate) fn from_parts(bucket_ms: u64, due: Vec<u64>, sent: Vec<u64>, shift_ns: u64) -> Timeline {
        let (width, shift_ms) = (u128::from(bucket_ms.max(1)), u128::from(shift_ns / 1_000_000));
        let end_ms = shift_ms + width * due.len().max(sent.len()) as u128;
        let mut bucket_ms = Timeline::default().bucket_ms;
        while end_ms / u128::from(bucket_ms) >= TIMELINE_BUCKETS as u128 && bucket_ms < u64::MAX / 2 {
            bucket_ms *= 2;
        }
        let place = |series: Vec<u64>| {
            let mut out: Vec<u64> = Vec::new();
            for (i, n) in series.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                let at = ((shift_ms + width * i as u128) / u128::from(bucket_ms)).min(TIMELINE_BUCKETS as u128 - 1);
                let at = at as usize;
                if out.len() <= at {
                    out.resize(at + 1, 0);
                }
                out[at] = out[at].saturating_add(n);
            }
            out
        };
        Timeline { bucket_ms, due: place(due), sent: place(sent) }
    }

    fn coarsen(&mut self) {
        self.bucket_ms *= 2;
        for series in [&mut self.due, &mut self.sent] {
            *series = series.chunks(2).map(|c| c.iter().fold(0u64, |a, b| a.saturating_add(*b))).collect();
        }
    }

    fn merge(&mut self, mut other: Timeline) {
        while self.bucket_ms < other.bucket_ms {
            self.coarsen();
        }
        while other.bucket_ms < self.bucket_ms {
            other.coarsen();
        }
        for (mine, theirs) in [(&mut self.due, other.due), (&mut self.sent, other.sent)] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = m.saturating_add(t);
            }
        }
    }
}

/// A gRPC call that carried a deadline (`grpc-timeout`).
fn is_grpc_with_deadline(r: &tapedeck_captures::Request) -> bool {
    r.headers.get_str("grpc-timeout").is_some()
        && r.headers
            .get_str("content-type")
            .is_some_and(|t| tapedeck_captures::wire::is_grpc_content_type(t.trim().as_bytes()))
}

fn class(status: Option<u16>) -> &'static str {
    match status.map(|s| s / 100) {
        None => "none",
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        Some(_) => "other",
    }
}

/// Everything measured.
#[derive(Clone, Debug)]
pub struct Stats {
    /// By route (`METHOD /template`).
    pub routes: HashMap<String, RouteStats>,
    /// Send time minus due time, µs.
    pub lag: Histogram<u64>,
    /// Sends more than 1 ms late.
    pub late_1ms: u64,
    /// Sends more than 10 ms late.
    pub late_10ms: u64,
    /// Requests sent.
    pub sent: u64,
    /// Requests that got a complete response.
    pub completed: u64,
    /// Requests without a (complete) response, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Response body bytes received.
    pub bytes: u64,
    /// First and last send, ns after the run's start.
    pub sends: Option<(u64, u64)>,
    /// First and last due time, ns after the run's start.
    pub dues: Option<(u64, u64)>,
    /// Requests over time.
    pub timeline: Timeline,
    /// Noise learned in this run (from the recording and probes).
    pub noise: NoiseModel,
    /// Recorded values replaced by the target's own in later requests (correlation).
    pub substitutions: u64,
    /// Requests sent twice to learn the target's own noise.
    pub probes: u64,
    /// Complete answers not compared: the comparer had fallen behind (bodies too deep or
    /// too large to compare at the pace they came), and waiting for it would have delayed
    /// the sends.
    pub compare_shed: u64,
    /// Noise probes that got no complete answer.
    pub probes_failed: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            routes: HashMap::new(),
            lag: histogram(),
            late_1ms: 0,
            late_10ms: 0,
            sent: 0,
            completed: 0,
            errors: BTreeMap::new(),
            bytes: 0,
            sends: None,
            dues: None,
            timeline: Timeline::default(),
            noise: NoiseModel::default(),
            substitutions: 0,
            probes: 0,
            compare_shed: 0,
            probes_failed: 0,
        }
    }
}

fn widen(span: &mut Option<(u64, u64)>, at: u64) {
    *span = Some(match *span {
        Some((a, b)) => (a.min(at), b.max(at)),
        None => (at, at),
    });
}

/// One replayed request, as the stats see it.
pub struct Sample<'a> {
    /// The recorded exchange.
    pub recorded: &'a Exchange,
    /// Its route key.
    pub route: &'a str,
    /// The replay's start (what the run's times count from).
    pub origin: Instant,
    /// When it was due.
    pub due: Instant,
    /// When it was sent.
    pub sent_at: Instant,
    /// Replayed status, if any.
    pub status: Option<u16>,
    /// Replayed gRPC status, if it was a gRPC answer.
    pub grpc_status: Option<u32>,
    /// Replayed time to last byte.
    pub end: Option<Duration>,
    /// Replay error, if any.
    pub error: Option<ErrorKind>,
    /// For a request that failed: how long after it was sent.
    pub failed_after: Option<Duration>,
    /// Body bytes received.
    pub bytes: u64,
    /// A stream's first message from the server, after the request was sent.
    pub first_message: Option<Duration>,
    /// A WebSocket upgrade's session with the target.
    pub websocket: Option<&'a tapedeck_captures::websocket::WebSocket>,
}

/// Records `ns` (as µs) into a pair's histogram `side`, making the pair at first use.
fn record_pair(pair: &mut Option<Box<(Histogram<u64>, Histogram<u64>)>>, replayed: bool, ns: u64) {
    let (a, b) = &mut **pair.get_or_insert_with(|| Box::new((histogram(), histogram())));
    record(if replayed { b } else { a }, ns / 1000, MAX_LATENCY_US);
}

impl Stats {
    /// Adds one replayed request.
    pub fn record(&mut self, s: &Sample<'_>) {
        self.sent += 1;
        self.bytes += s.bytes;
        let ns = |at: Instant| at.saturating_duration_since(s.origin).as_nanos() as u64;
        widen(&mut self.sends, ns(s.sent_at));
        widen(&mut self.dues, ns(s.due));
        let lag = s.sent_at.saturating_duration_since(s.due);
        record(&mut self.lag, lag.as_micros() as u64, MAX_LAG_US);
        self.late_1ms += u64::from(lag > Duration::from_millis(1));
        self.late_10ms += u64::from(lag > Duration::from_millis(10));
        match s.error {
            Some(e) => *self.errors.entry(e.as_str()).or_default() += 1,
            None => self.completed += 1,
        }
        let ms = |at: Instant| at.saturating_duration_since(s.origin).as_millis() as u64;
        self.timeline.add(ms(s.due), ms(s.sent_at));
        let r = self.route(s.route);
        r.count += 1;
        if let Some(ns) = s.recorded.timing.end_ns {
            record(&mut r.recorded, ns / 1000, MAX_LATENCY_US);
        }
        match (s.end, s.error, s.failed_after) {
            (Some(end), None, _) => {
                record(&mut r.replayed, end.as_micros() as u64, MAX_LATENCY_US);
            }
            // A request that timed out took at least the timeout, as its user saw it: left
            // out, the percentiles would describe only the answers that came in time.
            (_, Some(ErrorKind::ResponseTimeout), Some(after)) => {
                record(&mut r.replayed, after.as_micros() as u64, MAX_LATENCY_US);
                r.timeouts += 1;
            }
            _ => {}
        }
        if let (Some(recorded), Some(replayed), None) = (stream_first_ns(s.recorded), s.first_message, s.error) {
            record_pair(&mut r.first_message, false, recorded);
            record_pair(&mut r.first_message, true, replayed.as_nanos() as u64);
        }
        if let (Some(recorded), Some(replayed), None) = (&s.recorded.websocket, s.websocket, s.error) {
            let (a, b) = (recorded.answer_times(), replayed.answer_times());
            if !a.is_empty() && !b.is_empty() {
                for ns in a {
                    record_pair(&mut r.answers, false, ns);
                }
                for ns in b {
                    record_pair(&mut r.answers, true, ns);
                }
            }
        }
        // A gRPC call's outcome is its gRPC status (its HTTP status is 200 whatever happened).
        let recorded_grpc =
            s.recorded.response.as_ref().and_then(|r| tapedeck_captures::proto::grpc_status(&r.headers, &r.trailers));
        let name = tapedeck_captures::proto::grpc_code_name;
        let recorded = match s.recorded.error {
            // A gRPC client that gave up at its deadline saw DEADLINE_EXCEEDED, as a
            // replay of the call with the same deadline will.
            Some(ErrorKind::ClientAborted) if is_grpc_with_deadline(&s.recorded.request) => "DEADLINE_EXCEEDED",
            // Production did not answer completely either: its error, not its head's status.
            Some(e) => e.as_str(),
            None => recorded_grpc.map_or_else(|| class(s.recorded.status()), name),
        };
        *r.recorded_status.entry(recorded).or_default() += 1;
        // A request without a (complete) answer counts under its error: a head whose body
        // broke off is not a `2xx`.
        let replayed = match s.error {
            Some(e) => e.as_str(),
            None => s.grpc_status.map_or_else(|| class(s.status), name),
        };
        *r.replayed_status.entry(replayed).or_default() += 1;
        if let Some(e) = s.error {
            *r.errors.entry(e.as_str()).or_default() += 1;
        }
    }

    /// The stats of `route` (or of `(other routes)` beyond the limit).
    pub fn route(&mut self, route: &str) -> &mut RouteStats {
        let key = capped(&self.routes, route);
        if !self.routes.contains_key(key) {
            self.routes.insert(key.to_string(), RouteStats::default());
        }
        self.routes.get_mut(key).expect("inserted above")
    }

    /// Folds another worker's stats in.
    pub fn merge(&mut self, other: Stats) {
        self.sent = self.sent.saturating_add(other.sent);
        self.completed = self.completed.saturating_add(other.completed);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.late_1ms = self.late_1ms.saturating_add(other.late_1ms);
        self.late_10ms = self.late_10ms.saturating_add(other.late_10ms);
        self.substitutions = self.substitutions.saturating_add(other.substitutions);
        self.probes = self.probes.saturating_add(other.probes);
        self.compare_shed = self.compare_shed.saturating_add(other.compare_shed);
        self.probes_failed = self.probes_failed.saturating_add(other.probes_failed);
        self.timeline.merge(other.timeline);
        self.noise.merge(other.noise);
        let _ = self.lag.add(&other.lag);
        for (k, v) in other.errors {
            let n = self.errors.entry(k).or_default();
            *n = n.saturating_add(v);
        }
        for at in other.sends.iter().flat_map(|(a, b)| [*a, *b]) {
            widen(&mut self.sends, at);
        }
        for at in other.dues.iter().flat_map(|(a, b)| [*a, *b]) {
            widen(&mut self.dues, at);
        }
        for (k, theirs) in other.routes {
            // Past MAX_ROUTES, as when recording: under `(other routes)`.
            let key = if self.routes.contains_key(&k) || self.routes.len() < MAX_ROUTES {
                k
            } else {
                OTHER_ROUTES.to_string()
            };
            let mine = self.routes.entry(key).or_default();
            mine.count = mine.count.saturating_add(theirs.count);
            mine.timeouts = mine.timeouts.saturating_add(theirs.timeouts);
            let _ = mine.recorded.add(&theirs.recorded);
            let _ = mine.replayed.add(&theirs.replayed);
            mine.diffs.merge(theirs.diffs);
            for (mine, theirs) in [(&mut mine.first_message, theirs.first_message), (&mut mine.answers, theirs.answers)]
            {
                match (mine, theirs) {
                    (Some(m), Some(t)) => {
                        let _ = m.0.add(&t.0);
                        let _ = m.1.add(&t.1);
                    }
                    (slot @ None, t) => *slot = t,
                    _ => {}
                }
            }
            for (a, b) in [
                (&mut mine.recorded_status, theirs.recorded_status),
                (&mut mine.replayed_status, theirs.replayed_status),
                (&mut mine.errors, theirs.errors),
            ] {
                for (k, v) in b {
                    let n = a.entry(k).or_default();
                    *n = n.saturating_add(v);
                }
            }
        }
    }
}
