//! [`Summary`]: what a set of exchanges holds, as `tapedeck inspect` reports it — counts,
//! time span and rate, methods, status classes, top routes, latency percentiles, body
//! sizes, truncation, upstream errors and scrub hits. Built incrementally, so it can be
//! fed from a stream of any length with memory bounded by the number of distinct routes.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::exchange::Exchange;
use crate::route;

/// Distinct routes tracked; further routes are counted under [`OTHER_ROUTES`].
const MAX_ROUTES: usize = 10_000;
/// Route key for requests beyond `MAX_ROUTES` distinct routes.
pub const OTHER_ROUTES: &str = "(other routes)";

/// Per-route counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteStats {
    /// Requests.
    pub count: u64,
    /// Responses with status 5xx or no response at all.
    pub errors: u64,
    /// Sum of complete durations, ms (for the mean).
    #[serde(skip)]
    pub duration_sum_ms: f64,
    /// Exchanges with a known duration.
    #[serde(skip)]
    pub timed: u64,
    /// Mean duration, ms.
    pub mean_ms: f64,
    /// Longest duration, ms.
    pub max_ms: f64,
}

/// Aggregate facts about exchanges.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Exchanges seen.
    pub exchanges: u64,
    /// Earliest request start, ns since the epoch.
    pub first_start_ns: Option<i64>,
    /// Latest request start, ns since the epoch.
    pub last_start_ns: Option<i64>,
    /// Requests by method.
    pub methods: BTreeMap<String, u64>,
    /// Responses by status class (`2xx` …) plus `none` for exchanges without a response.
    pub status_classes: BTreeMap<String, u64>,
    /// Exchanges by upstream error kind.
    pub errors: BTreeMap<String, u64>,
    /// Requests whose captured body is shorter than the original.
    pub truncated_requests: u64,
    /// Responses whose captured body is shorter than the original.
    pub truncated_responses: u64,
    /// Original request body bytes.
    pub request_body_bytes: u64,
    /// Original response body bytes.
    pub response_body_bytes: u64,
    /// Size of the exchanges written as HTTP/1.1 text (start lines, headers, captured
    /// bodies): what the traffic weighs before the tape format compresses it.
    pub http_bytes: u64,
    /// WebSocket sessions recorded.
    pub websocket_sessions: u64,
    /// Their messages (both sides), and those counted but not kept.
    pub websocket_messages: u64,
    /// Their payload bytes (as long as they were).
    pub websocket_bytes: u64,
    /// Scrub rule hits by rule name.
    pub scrub_hits: BTreeMap<String, u64>,
    /// Exchanges per route (`METHOD /template`).
    pub routes: HashMap<String, RouteStats>,
    #[serde(skip)]
    latency: hdrhistogram::Histogram<u64>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            exchanges: 0,
            first_start_ns: None,
            last_start_ns: None,
            methods: BTreeMap::new(),
            status_classes: BTreeMap::new(),
            errors: BTreeMap::new(),
            truncated_requests: 0,
            truncated_responses: 0,
            request_body_bytes: 0,
            response_body_bytes: 0,
            http_bytes: 0,
            websocket_sessions: 0,
            websocket_messages: 0,
            websocket_bytes: 0,
            scrub_hits: BTreeMap::new(),
            routes: HashMap::new(),
            // 1 µs .. 1 h at 3 significant digits.
            latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }
}

/// Latency percentiles, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Summary {
    /// An empty summary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one exchange.
    pub fn add(&mut self, ex: &Exchange) {
        self.exchanges += 1;
        let start = ex.wall_start_ns();
        self.first_start_ns = Some(self.first_start_ns.map_or(start, |f| f.min(start)));
        self.last_start_ns = Some(self.last_start_ns.map_or(start, |l| l.max(start)));
        *self.methods.entry(ex.request.method.clone()).or_default() += 1;
        let class = ex.status().map_or_else(|| "none".to_string(), |s| format!("{}xx", s / 100));
        *self.status_classes.entry(class).or_default() += 1;
        if let Some(e) = ex.error {
            *self.errors.entry(e.as_str().to_string()).or_default() += 1;
        }
        self.truncated_requests += u64::from(ex.request.body.truncated);
        self.request_body_bytes += ex.request.body.len;
        if let Some(r) = &ex.response {
            self.truncated_responses += u64::from(r.body.truncated);
            self.response_body_bytes += r.body.len;
        }
        self.http_bytes += crate::convert::http::wire_size(ex);
        if let Some(ws) = &ex.websocket {
            self.websocket_sessions += 1;
            self.websocket_messages += ws.messages.len() as u64 + ws.dropped;
            self.websocket_bytes += ws.messages.iter().map(|m| m.len).sum::<u64>();
        }
        for hit in &ex.scrub {
            *self.scrub_hits.entry(hit.rule.clone()).or_default() += u64::from(hit.count);
        }
        let duration_ms = ex.timing.end_ns.map(|ns| ns as f64 / 1e6);
        if let Some(ns) = ex.timing.end_ns {
            let _ = self.latency.record((ns / 1_000).clamp(1, 3_600_000_000));
        }
        let mut key = route::route_key(&ex.request.method, &ex.request.target);
        if !self.routes.contains_key(&key) && self.routes.len() >= MAX_ROUTES {
            key = OTHER_ROUTES.to_string();
        }
        let r = self.routes.entry(key).or_default();
        r.count += 1;
        r.errors += u64::from(ex.response.is_none() || ex.status().is_some_and(|s| s >= 500));
        if let Some(d) = duration_ms {
            r.timed += 1;
            r.duration_sum_ms += d;
            r.mean_ms = r.duration_sum_ms / r.timed as f64;
            r.max_ms = r.max_ms.max(d);
        }
    }

    /// Folds `other` into this summary.
    pub fn merge(&mut self, other: &Summary) {
        self.exchanges += other.exchanges;
        self.first_start_ns = match (self.first_start_ns, other.first_start_ns) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.last_start_ns = match (self.last_start_ns, other.last_start_ns) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        merge_counts(&mut self.methods, &other.methods);
        merge_counts(&mut self.status_classes, &other.status_classes);
        merge_counts(&mut self.errors, &other.errors);
        merge_counts(&mut self.scrub_hits, &other.scrub_hits);
        self.truncated_requests += other.truncated_requests;
        self.truncated_responses += other.truncated_responses;
        self.request_body_bytes += other.request_body_bytes;
        self.response_body_bytes += other.response_body_bytes;
        self.http_bytes += other.http_bytes;
        self.websocket_sessions += other.websocket_sessions;
        self.websocket_messages += other.websocket_messages;
        self.websocket_bytes += other.websocket_bytes;
        let _ = self.latency.add(&other.latency);
        for (key, theirs) in &other.routes {
            let key =
                if !self.routes.contains_key(key) && self.routes.len() >= MAX_ROUTES { OTHER_ROUTES } else { key };
            let r = self.routes.entry(key.to_string()).or_default();
            r.count += theirs.count;
            r.errors += theirs.errors;
            r.timed += theirs.timed;
            r.duration_sum_ms += theirs.duration_sum_ms;
            r.mean_ms = if r.timed > 0 { r.duration_sum_ms / r.timed as f64 } else { 0.0 };
            r.max_ms = r.max_ms.max(theirs.max_ms);
        }
    }

    /// Seconds between the first and the last request start.
    pub fn span_secs(&self) -> f64 {
        match (self.first_start_ns, self.last_start_ns) {
            (Some(f), Some(l)) => (l - f) as f64 / 1e9,
            _ => 0.0,
        }
    }

    /// Mean request rate over the span (0 when the span is empty).
    pub fn requests_per_sec(&self) -> f64 {
        let span = self.span_secs();
        if span > 0.0 {
            (self.exchanges.saturating_sub(1)) as f64 / span
        } else {
            0.0
        }
    }

    /// Latency percentiles over exchanges with a complete response, if any.
    pub fn latency(&self) -> Option<Percentiles> {
        if self.latency.is_empty() {
            return None;
        }
        let ms = |v: u64| v as f64 / 1_000.0;
        Some(Percentiles {
            p50: ms(self.latency.value_at_quantile(0.50)),
            p95: ms(self.latency.value_at_quantile(0.95)),
            p99: ms(self.latency.value_at_quantile(0.99)),
            max: ms(self.latency.max()),
        })
    }

    /// The `n` busiest routes, busiest first (ties by name).
    pub fn top_routes(&self, n: usize) -> Vec<(&str, &RouteStats)> {
        let mut routes: Vec<_> = self.routes.iter().map(|(k, v)| (k.as_str(), v)).collect();
        routes.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        routes.truncate(n);
        routes
    }
}

fn merge_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}
