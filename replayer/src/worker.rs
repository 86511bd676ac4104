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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use tapedeck_captures::exchange::{Body, Header, Headers, Request as Recorded, Response as RecordedResponse};
use tapedeck_captures::{ConnectionId, ErrorKind, Exchange, ExchangeId, HttpVersion, IdGenerator, Timing};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::client::{Outcome, Pool};
use crate::engine::Progress;
use crate::results::ResultsSink;
use crate::rewrite::Rewrite;
use crate::stats::{Sample, Stats};
use crate::SessionKey;

/// A recorded exchange to send at `due`.
pub(crate) struct Job {
    pub exchange: Exchange,
    pub due: Instant,
    pub key: SessionKey,
}

/// Wakes the dispatcher when it waits for room in a lane.
pub(crate) struct DispatcherWake {
    pub waiting: AtomicBool,
    pub thread: Thread,
}

/// The dispatcher's side of a worker.
pub(crate) struct Lane {
    pub tx: UnboundedSender<Job>,
    pub state: Arc<LaneState>,
}

/// Shared between the dispatcher and one worker.
pub(crate) struct LaneState {
    /// Jobs handed over and not yet finished: held, ready or in flight.
    pub outstanding: AtomicUsize,
    /// The dispatcher waits when `outstanding` reaches this…
    pub cap: usize,
    /// …until it drains to this.
    pub low_water: usize,
    pub wake: Arc<DispatcherWake>,
    /// Set on Ctrl-C: drop what has not started.
    pub draining: Arc<AtomicBool>,
}

impl LaneState {
    fn finished(&self, n: usize) {
        let left = self.outstanding.fetch_sub(n, Ordering::AcqRel) - n;
        if left <= self.low_water && self.wake.waiting.swap(false, Ordering::AcqRel) {
            self.wake.thread.unpark();
        }
    }
}

/// What every request of a worker needs.
pub(crate) struct WorkerContext {
    pub rewrite: Arc<Rewrite>,
    pub results: Option<ResultsSink>,
    pub progress: Arc<Progress>,
    pub ids: Arc<IdGenerator>,
    /// The replay's clock: an instant and the wall time then (ns).
    pub clock: (Instant, i64),
    pub lane: Arc<LaneState>,
    /// Requests in flight at most in this worker.
    pub limit: usize,
}

#[derive(Default)]
struct Queues {
    /// Sessions with a request in flight, and what they hold back.
    busy: HashMap<SessionKey, VecDeque<Job>>,
    ready: VecDeque<Job>,
    in_flight: usize,
    stats: Stats,
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
            let (pool, ctx) = (&shared.0, &shared.1);
            let sample = send(&job, pool, ctx).await;
            {
                let mut q = queues.borrow_mut();
                q.stats.record(&sample.as_sample(&job));
                q.release(&job.key);
            }
            if let (Some(ex), Some(sink)) = (sample.result, &ctx.results) {
                sink.send(ex).await;
            }
            ctx.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
            ctx.progress.done.fetch_add(1, Ordering::Relaxed);
            // Last: once nothing is outstanding, everything is recorded.
            ctx.lane.finished(1);
            start_ready(&queues, &shared);
        }));
    }
}

/// A finished request.
struct Sent {
    sent_at: Instant,
    status: Option<u16>,
    end: Option<Duration>,
    error: Option<ErrorKind>,
    bytes: u64,
    /// For the results tape.
    result: Option<Exchange>,
}

impl Sent {
    fn as_sample<'a>(&self, job: &'a Job) -> Sample<'a> {
        Sample {
            recorded: &job.exchange,
            due: job.due,
            sent_at: self.sent_at,
            status: self.status,
            end: self.end,
            error: self.error,
            bytes: self.bytes,
        }
    }
}

async fn send(job: &Job, pool: &Pool, ctx: &WorkerContext) -> Sent {
    let recorded = &job.exchange;
    let (outcome, request) = match ctx.rewrite.request(recorded) {
        Ok(req) => {
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
    Sent {
        sent_at: outcome.sent_at,
        status: outcome.status.map(|s| s.as_u16()),
        end: outcome.end,
        error: outcome.error,
        bytes: outcome.body_len,
        result: request.map(|r| result_exchange(ctx, recorded, r, outcome)),
    }
}

fn headers_of(map: &http::HeaderMap) -> Headers {
    Headers(map.iter().map(|(n, v)| Header { name: n.as_str().into(), value: v.as_bytes().into() }).collect())
}

fn version_of(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_10 => HttpVersion::Http10,
        http::Version::HTTP_2 => HttpVersion::H2,
        http::Version::HTTP_3 => HttpVersion::H3,
        _ => HttpVersion::Http11,
    }
}

/// The request as sent, for the results tape.
fn sent_request(req: &http::Request<http_body_util::Full<bytes::Bytes>>) -> Recorded {
    let body = http_body::Body::size_hint(req.body()).exact().unwrap_or(0);
    Recorded {
        method: req.method().as_str().to_string(),
        scheme: req.uri().scheme_str().unwrap_or("http").to_string(),
        authority: req.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
        target: req.uri().path_and_query().map_or("/".to_string(), |pq| pq.to_string()),
        version: HttpVersion::Http11,
        headers: headers_of(req.headers()),
        body: Body { len: body, ..Default::default() },
    }
}

fn result_exchange(ctx: &WorkerContext, recorded: &Exchange, mut request: Recorded, outcome: Outcome) -> Exchange {
    // The request body is the recorded one; keep a reference, not a second copy.
    request.body.data = recorded.request.body.data.clone();
    let start_ns = outcome.sent_at.saturating_duration_since(ctx.clock.0).as_nanos() as u64;
    let response = outcome.status.map(|s| RecordedResponse {
        status: s.as_u16(),
        version: version_of(outcome.version),
        headers: headers_of(&outcome.headers),
        body: Body {
            truncated: (outcome.body.len() as u64) < outcome.body_len,
            data: outcome.body.clone().into(),
            len: outcome.body_len,
            decoded_from: None,
        },
    });
    Exchange {
        id: ExchangeId(ctx.ids.next()),
        connection: ConnectionId(recorded.connection.0),
        session: recorded.session.clone(),
        sequence: recorded.sequence,
        timing: Timing {
            tape_start_unix_ns: ctx.clock.1,
            start_ns,
            head_ns: outcome.head.map(|d| d.as_nanos() as u64),
            end_ns: outcome.end.map(|d| d.as_nanos() as u64),
        },
        request,
        response,
        error: outcome.error,
        scrub: Vec::new(),
        replay_of: Some(recorded.id),
    }
}
