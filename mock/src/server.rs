//! The mock's listener: each request gets its recorded answer at its recorded time (or as
//! `--latency` says), a fault when `--fault` draws one, and an explanation when nothing
//! was recorded for it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::SeedableRng;

use crate::index::{Answer, Index, Match, MatchKind};
use crate::timing::{Fault, FaultRule, Latency, HOLD};

/// Request bodies read for matching, at most.
const MAX_REQUEST_BODY: usize = 16 << 20;

/// How long a request's head, and its body, may take to arrive (a client that trickles
/// holds a connection and a task no longer).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections served at once, at most; more wait to be accepted.
const MAX_CONNECTIONS: usize = 10_000;

/// Routes counted apart, at most (the rest together): requests can name any path.
const MAX_ROUTES: usize = 1_000;

/// How the mock answers.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// When answers go out.
    pub latency: Latency,
    /// Failures injected on purpose (the first rule that covers a request decides).
    pub faults: Vec<FaultRule>,
    /// The status of the answer to a request nothing was recorded for.
    pub unmatched_status: u16,
    /// Seed for drawing faults (the same seed, the same draws for the same requests in
    /// the same order).
    pub seed: Option<u64>,
    /// Where requests nothing was recorded for go instead (`--passthrough URL`).
    pub passthrough: Option<crate::Passthrough>,
    /// Scrubs the routes of requests nothing was recorded for before they are counted
    /// (they name what the caller sent: `/cards/4111…/verify`), as a tape's would be.
    pub scrub: Option<Arc<tapedeck_captures::scrub::Scrubber>>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Latency::Recorded,
            faults: Vec::new(),
            unmatched_status: 404,
            seed: None,
            passthrough: None,
            scrub: Some(Arc::new(tapedeck_captures::scrub::Scrubber::with_defaults(None))),
        }
    }
}

/// What one route was answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteStats {
    /// Requests recorded exactly.
    pub exact: u64,
    /// Requests answered by a recorded request like them.
    pub similar: u64,
    /// Requests nothing was recorded for.
    pub unmatched: u64,
    /// Of those, answered by `--passthrough` (the rest got the "not recorded" answer, or a
    /// 502 when the passthrough failed).
    pub passed_through: u64,
    /// Recorded failures reproduced (a reset or timeout production's dependency gave).
    pub recorded_failures: u64,
    /// Faults injected, by kind (`503`, `reset`, `timeout`).
    pub injected: BTreeMap<String, u64>,
    /// Calls whose caller went away before the answer was out (its own timeout, most
    /// likely: with `--latency 3x`, the timeouts the slower dependency fires).
    pub abandoned: u64,
    /// How long the answers took, µs from the request's head to the answer's last byte
    /// handed to the connection (answers only: not resets, timeouts, unmatched).
    pub served_us: Option<hdrhistogram::Histogram<u64>>,
}

impl RouteStats {
    /// Requests of this route, however they were answered.
    pub fn calls(&self) -> u64 {
        self.exact + self.similar + self.unmatched
    }
}

/// The largest answer time kept apart in the histograms (longer ones count as this), µs:
/// answers are delayed an hour at most.
const MAX_SERVED_US: u64 = 2 * 3600 * 1_000_000;

fn served_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_SERVED_US, 3).expect("valid bounds")
}

/// One recorded route's counts (atomics; the injected kinds and the histogram behind
/// their own locks).
#[derive(Default)]
struct Counters {
    exact: AtomicU64,
    similar: AtomicU64,
    recorded_failures: AtomicU64,
    injected: Mutex<BTreeMap<String, u64>>,
    served: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    abandoned: AtomicU64,
}

/// An answer being prepared: counted as abandoned if its caller goes away first (hyper
/// drops the answer's future, or its body, when the connection closes).
struct Pending {
    /// Its route's counts.
    counters: Option<Arc<Counters>>,
    came: Instant,
    done: bool,
}

impl Pending {
    /// The answer is out.
    fn served(mut self) {
        self.done = true;
        if let Some(c) = &self.counters {
            c.served(self.came.elapsed());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(c) = self.counters.as_ref().filter(|_| !self.done) {
            c.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Counters {
    /// An answer of this route went out `took` after its request came.
    fn served(&self, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, MAX_SERVED_US);
        let mut h = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.get_or_insert_with(served_histogram).record(us);
    }
}

/// A dependency mock: its recorded answers and what it has served.
pub struct Mock {
    index: Index,
    config: MockConfig,
    rng: Mutex<rand::rngs::StdRng>,
    /// The recorded routes' counts.
    recorded: rustc_hash::FxHashMap<String, Arc<Counters>>,
    /// Requests of routes nothing was recorded for, by route: (all, passed through).
    unmatched: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Passthroughs that failed (logged: the first, then every thousandth).
    passthrough_failures: AtomicU64,
    /// Requests whose body could not be read (over 16 MiB, broken off, too slow).
    refused: AtomicU64,
}

type Body = BoxBody<Bytes, Infallible>;

/// A connection closed without an answer (a reset, or a timeout's end).
#[derive(Debug, thiserror::Error)]
#[error("closed without an answer")]
struct Closed;

impl Mock {
    /// A mock answering from `index`.
    pub fn new(index: Index, config: MockConfig) -> Arc<Mock> {
        let rng = match config.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let recorded = index.route_names().map(|r| (r.to_string(), Arc::default())).collect();
        Arc::new(Mock {
            index,
            config,
            rng: Mutex::new(rng),
            recorded,
            unmatched: Mutex::new(BTreeMap::new()),
            passthrough_failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Requests refused because their body could not be read (over 16 MiB, broken off,
    /// slower than 60 s): neither matched nor counted by route.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The recorded answers.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// What each route was answered so far.
    pub fn stats(&self) -> BTreeMap<String, RouteStats> {
        let mut stats = BTreeMap::new();
        for (route, c) in &self.recorded {
            let s = RouteStats {
                exact: c.exact.load(Ordering::Relaxed),
                similar: c.similar.load(Ordering::Relaxed),
                unmatched: 0,
                passed_through: 0,
                recorded_failures: c.recorded_failures.load(Ordering::Relaxed),
                injected: c.injected.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                served_us: c.served.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                abandoned: c.abandoned.load(Ordering::Relaxed),
            };
            if s.calls() > 0 {
                stats.insert(route.clone(), s);
            }
        }
        for (route, (n, passed)) in self.unmatched.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let s = stats.entry(route.clone()).or_insert_with(RouteStats::default);
            s.unmatched += n;
            s.passed_through += passed;
        }
        stats
    }

    /// Serves connections from `listener` until `stop` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let slot = tokio::select! {
                _ = &mut stop => return,
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            };
            let stream = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, never spin.
                        tracing::warn!("mock: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let mock = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| mock.clone().handle(req));
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                drop(slot);
            });
        }
    }

    async fn handle(self: Arc<Self>, req: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, Closed> {
        let came = Instant::now();
        let (parts, body) = req.into_parts();
        let method = parts.method.as_str().to_string();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_REQUEST_BODY).collect()).await;
        let body = match read {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) | Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let why = "the request body is over 16 MiB, broke off, or took over 60 s";
                return Ok(explain(413, "too-large", why, &method, &target));
            }
        };
        let (recorded, kind) = match self.index.answer(&method, &target, &body) {
            Match::Found(r, kind) => (r, kind),
            Match::Unmatched { route } => {
                // Counted (and shown in summaries, metrics, reports) by its scrubbed route.
                let route = match &self.config.scrub {
                    Some(s) => tapedeck_captures::route::route_key(&method, &s.scrub_target(&target)),
                    None => route,
                };
                let count = |passed: bool| {
                    let mut unmatched = self.unmatched.lock().unwrap_or_else(|p| p.into_inner());
                    let full = unmatched.len() >= MAX_ROUTES && !unmatched.contains_key(&route);
                    let n =
                        unmatched.entry(if full { "(other routes)".to_string() } else { route.clone() }).or_default();
                    n.0 += 1;
                    n.1 += u64::from(passed);
                };
                if let Some(p) = &self.config.passthrough {
                    return Ok(match p.forward(&parts, body).await {
                        Ok(answer) => {
                            count(true);
                            answer.map(BodyExt::boxed)
                        }
                        Err(why) => {
                            count(false);
                            let n = self.passthrough_failures.fetch_add(1, Ordering::Relaxed);
                            if n.is_multiple_of(1000) {
                                tracing::warn!("mock: --passthrough {} failed ({} so far): {why}", p.url(), n + 1);
                            }
                            explain(502, "passthrough-failed", &format!("tapedeck mock: nothing was recorded for this route, and --passthrough failed: {why}"), &method, &target)
                        }
                    });
                }
                count(false);
                return Ok(explain(
                    self.config.unmatched_status,
                    "not-recorded",
                    "tapedeck mock: nothing was recorded for this route",
                    &method,
                    &target,
                ));
            }
        };
        let route = recorded.route.as_str();
        let injected = self
            .config
            .faults
            .iter()
            .find(|rule| rule.covers(&method, &target))
            .and_then(|rule| rule.draw(&mut *self.rng.lock().unwrap_or_else(|p| p.into_inner())));
        let counters = self.recorded.get(route);
        if let Some(c) = counters {
            match kind {
                MatchKind::Exact => c.exact.fetch_add(1, Ordering::Relaxed),
                MatchKind::Similar => c.similar.fetch_add(1, Ordering::Relaxed),
            };
            if let Some(f) = injected {
                *c.injected.lock().unwrap_or_else(|p| p.into_inner()).entry(f.name()).or_default() += 1;
            } else if matches!(recorded.answer, Answer::Failed(_)) {
                c.recorded_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (head, end) = self.config.latency.apply(recorded.head, recorded.end, self.index.latencies(route));
        match injected {
            Some(Fault::Timeout) => {
                tokio::time::sleep(HOLD).await;
                return Err(Closed);
            }
            Some(Fault::Reset) => {
                wait_until(came + head).await;
                return Err(Closed);
            }
            Some(Fault::Status(status)) => {
                wait_until(came + head).await;
                return Ok(explain(status, "injected", "tapedeck mock: a fault injected by --fault", &method, &target));
            }
            None => {}
        }
        let mut pending = Pending { counters: counters.cloned(), came, done: false };
        let (status, headers, body) = match &recorded.answer {
            Answer::Response { status, headers, body, .. } => (*status, headers, body.clone()),
            // Production's dependency failed this one: so does the mock, when it did.
            Answer::Failed(_) => {
                wait_until(came + end).await;
                pending.done = true;
                return Err(Closed);
            }
        };
        wait_until(came + head).await;
        let mut response = hyper::Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        *response.headers_mut() = headers.clone();
        // A body goes with its own length (the recorded one may have been cut at
        // --max-body); a HEAD answer, or one that has no body, keeps the recorded header.
        let bodiless = method == "HEAD" || status < 200 || status == 204 || status == 304;
        if !bodiless {
            response.headers_mut().insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        // The body at its recorded end (its head went out at the recorded head).
        let rest = end.saturating_sub(head);
        let body: Body = if rest.is_zero() || body.is_empty() {
            pending.served();
            Full::new(body).boxed()
        } else {
            let frame = futures_util::stream::once(async move {
                tokio::time::sleep(rest).await;
                pending.served();
                Ok::<_, Infallible>(Frame::data(body))
            });
            StreamBody::new(frame).boxed()
        };
        *response.body_mut() = body;
        Ok(response)
    }

    /// Counts in Prometheus' text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let stats = self.stats();
        out.push_str("# HELP tapedeck_mock_requests_total Requests by route and how they were matched.\n");
        out.push_str("# TYPE tapedeck_mock_requests_total counter\n");
        for (route, s) in &stats {
            for (how, n) in [("exact", s.exact), ("similar", s.similar), ("unmatched", s.unmatched)] {
                let _ = writeln!(out, "tapedeck_mock_requests_total{{route=\"{}\",match=\"{how}\"}} {n}", label(route));
            }
        }
        out.push_str(
            "# HELP tapedeck_mock_abandoned_total Calls whose caller went away before the answer (its timeout?).\n",
        );
        out.push_str("# TYPE tapedeck_mock_abandoned_total counter\n");
        for (route, s) in stats.iter().filter(|(_, s)| s.abandoned > 0) {
            let _ = writeln!(out, "tapedeck_mock_abandoned_total{{route=\"{}\"}} {}", label(route), s.abandoned);
        }
        out.push_str("# HELP tapedeck_mock_faults_total Failures served: injected by --fault, or as recorded.\n");
        out.push_str("# TYPE tapedeck_mock_faults_total counter\n");
        for (route, s) in &stats {
            for (fault, n) in &s.injected {
                let _ = writeln!(
                    out,
                    "tapedeck_mock_faults_total{{route=\"{}\",fault=\"{fault}\",source=\"injected\"}} {n}",
                    label(route)
                );
            }
            if s.recorded_failures > 0 {
                let _ = writeln!(
                    out,
                    "tapedeck_mock_faults_total{{route=\"{}\",fault=\"recorded\",source=\"recorded\"}} {}",
                    label(route),
                    s.recorded_failures
                );
            }
        }
        out
    }
}

/// Waits until `at` (no timer at all when it has passed: `--latency 0`).
async fn wait_until(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// An answer of the mock's own: `status` with a JSON body saying why (none for a status
/// that has no body), marked `x-tapedeck-mock: <tag>`.
fn explain(status: u16, tag: &'static str, why: &str, method: &str, target: &str) -> hyper::Response<Body> {
    let path = target.split('?').next().unwrap_or_default();
    let body = serde_json::json!({
        "error": why,
        "method": method,
        "path": path,
        "route": tapedeck_captures::route::route_key(method, path),
    });
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::NOT_FOUND);
    let response = hyper::Response::builder().status(status).header("x-tapedeck-mock", tag);
    let response = if status == 204 || status == 304 {
        response.body(Full::new(Bytes::new()).boxed())
    } else {
        response
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())).boxed())
    };
    response.expect("a valid response")
}
