//! Worker threads: each runs its own event loop and connection pool and owns a share of
//! the sessions, so keeping a session's order needs no round trip to the dispatcher.
//!
//! A worker accepts jobs into its *lane*. A job whose session has a request in flight is
//! held until that response arrives; the rest are ready and start while the worker is
//! under its share of `--max-in-flight`. Every job counts as outstanding in the lane from
//! hand-over to completion; the dispatcher bounds that count (the read-ahead) and is woken,
//! once per batch, when a full lane has drained to its low-water mark.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck_captures::exchange::{Body, Request as Recorded, Response as RecordedResponse};
use tapedeck_captures::websocket::WebSocket;
use tapedeck_captures::{ConnectionId, ErrorKind, Exchange, ExchangeId, HttpVersion, IdGenerator, Timing};
use tokio::sync::mpsc::UnboundedReceiver;

use tapedeck_compare::correlate::Vars;
use tapedeck_compare::noise;
use tapedeck_net::clock::Clock;
use tapedeck_net::convert;
use tapedeck_report::stats::{Sample, Stats};

use super::comparer::{self, Comparing};
use super::dispatch::{Job, LaneState};
use super::results::ResultsSink;
use crate::client::{OnWire, Outcome, Pool};
use crate::paced::MessagePace;
use crate::progress::Progress;
use crate::rewrite::Rewrite;
use crate::session::SessionKey;
use crate::websocket::WsPlan;

/// What every request of a worker needs.
pub(crate) struct WorkerContext {
    pub rewrite: Arc<Rewrite>,
    pub results: Option<ResultsSink>,
    pub progress: Arc<Progress>,
    pub ids: Arc<IdGenerator>,
    /// The replay's clock: an instant and the wall time then (ns).
    pub clock: Clock,
    pub lane: Arc<LaneState>,
    /// Requests in flight at most in this worker.
    pub limit: usize,
    /// Set when responses are compared with the recording.
    pub compare: Option<Arc<Comparing>>,
    /// This worker's comparer, when comparing.
    pub comparer: Option<comparer::Sink>,
    /// The tempo gRPC streams keep their recorded message pacing at (`--speed`); none
    /// when flat out or at a fixed rate (messages then go at once).
    pub message_speed: Option<f64>,
}

/// Probes per route at most.
const PROBES_PER_ROUTE: u32 = 5;
/// Sessions whose correlation values are kept at most per worker.
const SESSIONS_WITH_VARS: usize = 100_000;

#[derive(Default)]
struct Queues {
    /// Sessions with a request in flight, and what they hold back.
    busy: HashMap<SessionKey, VecDeque<Job>>,
    ready: VecDeque<Job>,
    in_flight: usize,
    stats: Stats,
    /// Correlation values per session (shared with the comparer; copied on write).
    vars: HashMap<SessionKey, Arc<Vars>>,
    /// Probes sent per route.
    probed: HashMap<String, u32>,
}

impl Queues {
    fn accept(&mut self, job: Job) {
        if let SessionKey::Single(_) = job.key {
            return self.ready.push_back(job);
        }
        match self.busy.get_mut(&job.key) {
            Some(held) => held.push_back(job),
            None => {
                self.busy.insert(job.key.clone(), VecDeque::new());
                self.ready.push_back(job);
            }
        }
    }

    /// `key`'s request finished: its next one, if held, is ready.
    fn release(&mut self, key: &SessionKey) {
        self.in_flight -= 1;
        if let SessionKey::Single(_) = key {
            return;
        }
        if let Some(held) = self.busy.get_mut(key) {
            match held.pop_front() {
                Some(next) => self.ready.push_back(next),
                None => {
                    self.busy.remove(key);
                }
            }
        }
    }

    /// Drops everything not started; returns how many.
    fn drain(&mut self) -> usize {
        let n = self.ready.len() + self.busy.values().map(VecDeque::len).sum::<usize>();
        self.ready.clear();
        for held in self.busy.values_mut() {
            held.clear();
        }
        n
    }
}

/// Runs a worker until the dispatcher closes its lane; returns what it measured.
pub(crate) fn run(mut rx: UnboundedReceiver<Job>, pool: Pool, ctx: WorkerContext) -> Stats {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        tracing::error!("cannot start a worker's event loop");
        return Stats::default();
    };
    let queues = Rc::new(RefCell::new(Queues::default()));
    let shared = Rc::new((pool, ctx));
    let local = tokio::task::LocalSet::new();
    let q = queues.clone();
    // The dispatcher closes the lane once every job is done (or, on Ctrl-C, when it stops
    // waiting); requests still running then are dropped with the runtime.
    local.block_on(&runtime, async move {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            let mut queues = q.borrow_mut();
            for job in batch.drain(..) {
                queues.accept(job);
            }
            drop(queues);
            start_ready(&q, &shared);
        }
    });
    drop(local);
    let stats = std::mem::take(&mut queues.borrow_mut().stats);
    stats
}

fn start_ready(queues: &Rc<RefCell<Queues>>, shared: &Rc<(Pool, WorkerContext)>) {
    let ctx = &shared.1;
    loop {
        let job = {
            let mut q = queues.borrow_mut();
            if ctx.lane.draining.load(Ordering::Relaxed) {
                let dropped = q.drain();
                drop(q);
                if dropped > 0 {
                    ctx.lane.finished(dropped);
                }
                return;
            }
            if q.in_flight >= ctx.limit {
                return;
            }
            let Some(job) = q.ready.pop_front() else { return };
            q.in_flight += 1;
            job
        };
        ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
        ctx.progress.in_flight.fetch_add(1, Ordering::Relaxed);
        let (queues, shared) = (queues.clone(), shared.clone());
        // Boxed: the task then moves a pointer, not the whole request state machine.
        tokio::task::spawn_local(Box::pin(async move {
            let mut job = job;
            let (pool, ctx) = (&shared.0, &shared.1);
            let route = route_key(&job.exchange);
            let substituted = match &ctx.compare {
                Some(_) => correlate(&queues, &mut job),
                None => 0,
            };
            let on_wire = OnWire::default();
            let flight = Flight {
                queues: &queues,
                job: &job,
                route: &route,
                ctx,
                started: Instant::now(),
                on_wire: &on_wire,
                landed: false,
            };
            let mut sample = send(&job, pool, ctx, &on_wire).await;
            flight.land();
            let (vars, probe) = match &ctx.compare {
                Some(c) => learn(&queues, &job, &route, &sample, c),
                None => (None, false),
            };
            // Counted before any probe: a run stopped during one must not lose this request.
            let probe_of = if probe { sample.complete().cloned() } else { None };
            {
                let mut q = queues.borrow_mut();
                q.stats.substitutions += substituted as u64;
                q.stats.record(&sample.as_sample(&job, &route, ctx.clock.start));
                q.release(&job.key);
            }
            if let Some(mut ex) = sample.result.take() {
                ex.response = if ctx.comparer.is_some() { sample.response.clone() } else { sample.response.take() };
                ex.websocket = if ctx.comparer.is_some() { sample.websocket.clone() } else { sample.websocket.take() };
                if let Some(sink) = &ctx.results {
                    sink.send(ex).await;
                }
            }
            // The probe (after the comparison is handed over: a stop during it must not
            // leave this answer uncompared) re-sends a copy of the request.
            let probe_copy = probe_of.map(|first| (first, job.exchange.clone(), job.own_headers.clone()));
            let route_for_probe = probe_copy.as_ref().map(|_| route.clone());
            if let Some(sink) = &ctx.comparer {
                let replayed = if sample.error.is_none() { sample.response.take() } else { None };
                let replayed_websocket = sample.websocket.take();
                let job = comparer::Job { route, recorded: job.exchange, replayed, replayed_websocket, vars };
                let kib = comparer::kib(&job);
                // A comparer that fell behind is not waited for: waiting would hold this
                // request's slot and delay the sends behind it. The answer goes uncompared,
                // counted (an answer without a recording to compare has nothing to shed).
                let comparable = job.replayed.is_some();
                if sink.try_send(job, kib).is_err() && comparable {
                    queues.borrow_mut().stats.compare_shed += 1;
                }
            }
            if let (Some((first, exchange, own_headers)), Some(route), Some(c)) =
                (probe_copy, route_for_probe, &ctx.compare)
            {
                // The same request once more: values that move between two answers are
                // the target's noise.
                let second = send_again(&exchange, &own_headers, pool, ctx).await;
                let mut q = queues.borrow_mut();
                q.stats.probes += 1;
                match second {
                    Ok(second) => noise::probe(&first, &second, &route, &c.config, &mut q.stats.noise),
                    Err(()) => q.stats.probes_failed += 1,
                }
            }
            ctx.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
            ctx.progress.done.fetch_add(1, Ordering::Relaxed);
            // Last: once nothing is outstanding, everything is recorded.
            ctx.lane.finished(1);
            start_ready(&queues, &shared);
        }));
    }
}

/// A request in flight. If the run stops before its answer (Ctrl-C: the worker's tasks
/// are dropped), it is still counted: as sent and as an `interrupted` error, in the stats
/// and the results tape — a stopped run must not look cleaner than it was.
struct Flight<'a> {
    queues: &'a Rc<RefCell<Queues>>,
    job: &'a Job,
    route: &'a str,
    ctx: &'a WorkerContext,
    started: Instant,
    /// Set once the request was handed to a connection.
    on_wire: &'a OnWire,
    landed: bool,
}

impl Flight<'_> {
    /// The answer came (or the request failed by itself): counted the usual way.
    fn land(mut self) {
        self.landed = true;
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Still waiting for a connection: never sent, so not counted (as what was queued).
        if self.landed || !self.on_wire.0.load(Ordering::Relaxed) {
            return;
        }
        let sample = Sample {
            recorded: &self.job.exchange,
            route: self.route,
            origin: self.ctx.clock.start,
            due: self.job.due,
            sent_at: self.started,
            status: None,
            grpc_status: None,
            end: None,
            error: Some(ErrorKind::Interrupted),
            failed_after: Some(self.started.elapsed()),
            bytes: 0,
            first_message: None,
            websocket: None,
        };
        if let Ok(mut q) = self.queues.try_borrow_mut() {
            q.stats.record(&sample);
        }
        if let Some(sink) = &self.ctx.results {
            let recorded = &self.job.exchange;
            let outcome = Outcome::failed(self.started, ErrorKind::Interrupted);
            // The request as recorded (the results writer scrubs it): it was being sent.
            let request = Recorded {
                body: Body { len: recorded.request.body.len, ..Default::default() },
                ..recorded.request.clone()
            };
            sink.send_now(result_exchange(self.ctx, recorded, request, &outcome));
        }
    }
}

fn route_key(ex: &Exchange) -> String {
    tapedeck_captures::route::route_key(&ex.request.method, &ex.request.target)
}

/// Puts the target's values for this session into the job's request.
fn correlate(queues: &Rc<RefCell<Queues>>, job: &mut Job) -> usize {
    if let SessionKey::Single(_) = job.key {
        return 0;
    }
    let q = queues.borrow();
    q.vars.get(&job.key).map_or(0, |vars| vars.apply(&mut job.exchange.request, &mut job.own_headers))
}

/// Learns the session's correlation values from the answer; returns them (for the
/// comparer) and whether to probe the request (send it once more).
fn learn(
    queues: &Rc<RefCell<Queues>>,
    job: &Job,
    route: &str,
    sent: &Sent,
    c: &Comparing,
) -> (Option<Arc<Vars>>, bool) {
    let recorded = &job.exchange;
    let (Some(a), Some(b)) = (&recorded.response, sent.complete()) else { return (None, false) };
    let mut q = queues.borrow_mut();
    let q = &mut *q;
    let correlating = c.config.auto_correlate || !c.config.correlate.is_empty();
    let mut snapshot = None;
    if correlating && !matches!(job.key, SessionKey::Single(_)) {
        if !q.vars.contains_key(&job.key) && q.vars.len() >= SESSIONS_WITH_VARS {
            // Crude but bounded: forget every session's values rather than grow.
            q.vars.clear();
        }
        let vars = q.vars.entry(job.key.clone()).or_default();
        let creates = !matches!(recorded.request.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        // Copies the values only when the comparer still holds them and there is
        // something to learn.
        if (c.config.auto_correlate && Vars::would_learn(a, b, creates)) || !c.config.correlate.is_empty() {
            Arc::make_mut(vars).learn(a, b, route, creates, &c.config.correlate, c.config.auto_correlate);
        }
        if vars.is_empty() {
            q.vars.remove(&job.key);
        } else {
            snapshot = Some(vars.clone());
        }
    }
    let safe = matches!(recorded.request.method.as_str(), "GET" | "HEAD");
    if !(c.probe && safe && (200..300).contains(&b.status)) {
        return (snapshot, false);
    }
    let n = q.probed.entry(route.to_string()).or_default();
    *n += 1;
    (snapshot, *n <= PROBES_PER_ROUTE)
}

/// A finished request.
struct Sent {
    sent_at: Instant,
    status: Option<u16>,
    grpc_status: Option<u32>,
    end: Option<Duration>,
    error: Option<ErrorKind>,
    /// For a request that failed: how long after it was sent.
    failed_after: Option<Duration>,
    bytes: u64,
    /// The response (as much of it as arrived), when comparing or writing results.
    response: Option<RecordedResponse>,
    /// For the results tape (its response is `response`, moved in at the end).
    result: Option<Exchange>,
    /// A WebSocket upgrade's session.
    websocket: Option<WebSocket>,
    /// A stream's first message from the server, after the request was sent.
    first_message: Option<Duration>,
}

impl Sent {
    /// The answer, if it arrived complete: only those are compared and learnt from (one
    /// that broke off is an error, counted once).
    fn complete(&self) -> Option<&RecordedResponse> {
        self.response.as_ref().filter(|_| self.error.is_none())
    }

    fn as_sample<'a>(&'a self, job: &'a Job, route: &'a str, origin: Instant) -> Sample<'a> {
        Sample {
            recorded: &job.exchange,
            route,
            origin,
            due: job.due,
            sent_at: self.sent_at,
            // An answer that broke off is an error, not a status.
            status: self.status.filter(|_| self.error.is_none()),
            grpc_status: self.grpc_status,
            end: self.end,
            error: self.error,
            failed_after: self.failed_after,
            bytes: self.bytes,
            first_message: self.first_message,
            websocket: self.websocket.as_ref(),
        }
    }
}

async fn send(job: &Job, pool: &Pool, ctx: &WorkerContext, on_wire: &OnWire) -> Sent {
    let recorded = &job.exchange;
    let (mut outcome, request) = match ctx.rewrite.request_keeping(recorded, &job.own_headers) {
        Ok(mut req) => {
            pace_messages(&mut req, recorded, ctx.message_speed, ctx.rewrite.keep_credentials);
            if let Some(plan) = WsPlan::of(recorded, ctx.message_speed) {
                req.extensions_mut().insert(Arc::new(plan));
            }
            req.extensions_mut().insert(on_wire.clone());
            let request = ctx.results.is_some().then(|| sent_request(&req));
            (pool.send(req, recorded.connection.0).await, request)
        }
        Err(e) => {
            tracing::debug!(error = %e, id = %recorded.id, "cannot build the request");
            (Outcome::failed(Instant::now(), ErrorKind::Other), None)
        }
    };
    let lag = outcome.sent_at.saturating_duration_since(job.due);
    let p = &ctx.progress;
    p.max_lag_us.fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
    if lag > Duration::from_millis(10) {
        p.late.fetch_add(1, Ordering::Relaxed);
    }
    if outcome.error.is_some() {
        p.errors.fetch_add(1, Ordering::Relaxed);
    }
    if outcome.status.is_some() {
        p.answered.fetch_add(1, Ordering::Relaxed);
    } else if matches!(outcome.error, Some(ErrorKind::ConnectRefused | ErrorKind::Dns)) {
        p.unreachable.fetch_add(1, Ordering::Relaxed);
    }
    let response = (ctx.compare.is_some() || request.is_some()).then(|| response_of(&outcome)).flatten();
    Sent {
        sent_at: outcome.sent_at,
        status: outcome.status.map(|s| s.as_u16()),
        grpc_status: outcome.grpc_status(),
        end: outcome.end,
        error: outcome.error,
        failed_after: outcome.error.map(|_| outcome.sent_at.elapsed()),
        bytes: outcome.body_len,
        response,
        result: request.map(|r| result_exchange(ctx, recorded, r, &outcome)),
        first_message: match &outcome.websocket {
            Some(ws) => ws.first_data(tapedeck_captures::websocket::Side::Server),
            None => outcome.message_ns.first().copied(),
        }
        .map(Duration::from_nanos),
        websocket: outcome.websocket.take(),
    }
}

/// A gRPC request's messages at their recorded pace (at `speed`), and its recorded
/// trailers after them (sent on HTTP/2, the only way gRPC goes).
fn pace_messages(
    req: &mut http::Request<http_body_util::Full<bytes::Bytes>>,
    recorded: &Exchange,
    speed: Option<f64>,
    keep_credentials: bool,
) {
    let r = &recorded.request;
    let due = match speed {
        Some(speed) if r.message_ns.len() > 1 => MessagePace::recorded(&r.message_ns, speed),
        _ => Vec::new(),
    };
    let trailers: http::HeaderMap = r
        .trailers
        .iter()
        .filter_map(|h| {
            let name = http::HeaderName::from_bytes(&h.name).ok()?;
            // Credentials are withheld here as in the headers (`--keep-credentials`).
            if !keep_credentials && crate::rewrite::is_withheld(name.as_str()) {
                return None;
            }
            Some((name, http::HeaderValue::from_bytes(&h.value).ok()?))
        })
        .collect();
    if !due.is_empty() || !trailers.is_empty() {
        let trailers = (!trailers.is_empty()).then_some(trailers);
        req.extensions_mut().insert(MessagePace { due, trailers });
    }
}

/// The same request once more, for a noise probe: not counted, not scheduled.
/// `Err` when the probe got no complete answer (counted: a target failing probes is
/// failing).
async fn send_again(
    exchange: &Exchange,
    own_headers: &[(usize, Vec<String>)],
    pool: &Pool,
    ctx: &WorkerContext,
) -> Result<RecordedResponse, ()> {
    let req = ctx.rewrite.request_keeping(exchange, own_headers).map_err(|_| ())?;
    // Only a complete answer teaches anything: a cut one is an error, not noise.
    let outcome = pool.send(req, exchange.connection.0).await;
    response_of(&outcome).filter(|_| outcome.error.is_none()).ok_or(())
}

/// The request as sent, for the results tape.
fn sent_request(req: &http::Request<http_body_util::Full<bytes::Bytes>>) -> Recorded {
    let body = http_body::Body::size_hint(req.body()).exact().unwrap_or(0);
    Recorded {
        message_ns: Vec::new(),
        trailers: Default::default(),
        method: req.method().as_str().to_string(),
        scheme: req.uri().scheme_str().unwrap_or("http").to_string(),
        authority: req.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
        target: req.uri().path_and_query().map_or("/".to_string(), |pq| pq.to_string()),
        version: HttpVersion::Http11,
        headers: convert::headers(req.headers()),
        body: Body { len: body, ..Default::default() },
    }
}

pub(crate) fn response_of(outcome: &Outcome) -> Option<RecordedResponse> {
    outcome.status.map(|s| RecordedResponse {
        message_ns: outcome.message_ns.clone(),
        trailers: convert::headers(&outcome.trailers),
        status: s.as_u16(),
        version: convert::version(outcome.version),
        headers: convert::headers(&outcome.headers),
        body: Body {
            truncated: (outcome.body.len() as u64) < outcome.body_len,
            data: outcome.body.clone().into(),
            len: outcome.body_len,
            decoded_from: None,
        },
    })
}

/// The results tape's exchange, without its response (moved in once compared).
fn result_exchange(ctx: &WorkerContext, recorded: &Exchange, mut request: Recorded, outcome: &Outcome) -> Exchange {
    // The request body is the recorded one; keep a reference, not a second copy.
    request.body.data = recorded.request.body.data.clone();
    let start_ns = outcome.sent_at.saturating_duration_since(ctx.clock.start).as_nanos() as u64;
    Exchange {
        id: ExchangeId(ctx.ids.next()),
        connection: ConnectionId(recorded.connection.0),
        session: recorded.session.clone(),
        sequence: recorded.sequence,
        timing: Timing {
            tape_start_unix_ns: ctx.clock.start_unix_ns,
            start_ns,
            head_ns: outcome.head.map(|d| d.as_nanos() as u64),
            end_ns: outcome.end.map(|d| d.as_nanos() as u64),
        },
        request,
        response: None,
        error: outcome.error,
        scrub: Vec::new(),
        replay_of: Some(recorded.id),
        websocket: None,
    }
}
