//! What a replay measured: per route (templated), the recorded and replayed latency and
//! status mix; overall, the lag of every send against its schedule, errors by kind, and
//! the throughput intended and achieved. Kept per worker and merged at the end.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tapedeck_captures::{route, ErrorKind, Exchange};

/// Distinct routes tracked; more are counted under `(other routes)`.
const MAX_ROUTES: usize = 2_000;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// One route's numbers.
#[derive(Clone, Debug)]
pub struct RouteStats {
    /// Requests replayed.
    pub count: u64,
    /// Recorded time to last byte, µs.
    pub recorded: Histogram<u64>,
    /// Replayed time to last byte, µs.
    pub replayed: Histogram<u64>,
    /// Recorded status classes (`2xx` … or `none`).
    pub recorded_status: BTreeMap<&'static str, u64>,
    /// Replayed status classes.
    pub replayed_status: BTreeMap<&'static str, u64>,
    /// Replay errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            count: 0,
            recorded: histogram(),
            replayed: histogram(),
            recorded_status: BTreeMap::new(),
            replayed_status: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
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
    /// First and last send.
    pub sends: Option<(Instant, Instant)>,
    /// First and last due time.
    pub dues: Option<(Instant, Instant)>,
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
        }
    }
}

fn widen(span: &mut Option<(Instant, Instant)>, at: Instant) {
    *span = Some(match *span {
        Some((a, b)) => (a.min(at), b.max(at)),
        None => (at, at),
    });
}

/// One replayed request, as the stats see it.
pub struct Sample<'a> {
    /// The recorded exchange.
    pub recorded: &'a Exchange,
    /// When it was due.
    pub due: Instant,
    /// When it was sent.
    pub sent_at: Instant,
    /// Replayed status, if any.
    pub status: Option<u16>,
    /// Replayed time to last byte.
    pub end: Option<Duration>,
    /// Replay error, if any.
    pub error: Option<ErrorKind>,
    /// Body bytes received.
    pub bytes: u64,
}

impl Stats {
    /// Adds one replayed request.
    pub fn record(&mut self, s: &Sample<'_>) {
        self.sent += 1;
        self.bytes += s.bytes;
        widen(&mut self.sends, s.sent_at);
        widen(&mut self.dues, s.due);
        let lag = s.sent_at.saturating_duration_since(s.due);
        let _ = self.lag.record((lag.as_micros() as u64).max(1));
        self.late_1ms += u64::from(lag > Duration::from_millis(1));
        self.late_10ms += u64::from(lag > Duration::from_millis(10));
        match s.error {
            Some(e) => *self.errors.entry(e.as_str()).or_default() += 1,
            None => self.completed += 1,
        }
        let mut key = route::route_key(&s.recorded.request.method, &s.recorded.request.target);
        if !self.routes.contains_key(&key) && self.routes.len() >= MAX_ROUTES {
            key = "(other routes)".to_string();
        }
        let r = self.routes.entry(key).or_default();
        r.count += 1;
        if let Some(ns) = s.recorded.timing.end_ns {
            let _ = r.recorded.record((ns / 1000).max(1));
        }
        if let (Some(end), None) = (s.end, s.error) {
            let _ = r.replayed.record((end.as_micros() as u64).max(1));
        }
        *r.recorded_status.entry(class(s.recorded.status())).or_default() += 1;
        *r.replayed_status.entry(class(s.status)).or_default() += 1;
        if let Some(e) = s.error {
            *r.errors.entry(e.as_str()).or_default() += 1;
        }
    }

    /// Folds another worker's stats in.
    pub fn merge(&mut self, other: Stats) {
        self.sent += other.sent;
        self.completed += other.completed;
        self.bytes += other.bytes;
        self.late_1ms += other.late_1ms;
        self.late_10ms += other.late_10ms;
        let _ = self.lag.add(&other.lag);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for at in other.sends.iter().flat_map(|(a, b)| [*a, *b]) {
            widen(&mut self.sends, at);
        }
        for at in other.dues.iter().flat_map(|(a, b)| [*a, *b]) {
            widen(&mut self.dues, at);
        }
        for (k, theirs) in other.routes {
            let mine = self.routes.entry(k).or_default();
            mine.count += theirs.count;
            let _ = mine.recorded.add(&theirs.recorded);
            let _ = mine.replayed.add(&theirs.replayed);
            for (a, b) in [
                (&mut mine.recorded_status, theirs.recorded_status),
                (&mut mine.replayed_status, theirs.replayed_status),
                (&mut mine.errors, theirs.errors),
            ] {
                for (k, v) in b {
                    *a.entry(k).or_default() += v;
                }
            }
        }
    }
}
