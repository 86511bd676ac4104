//! The live shadow: requests production just answered, re-sent to a canary (or staging)
//! and its answers compared with production's as they come.
//!
//! The proxy offers each sampled exchange once production's answer has gone to the
//! client ([`LiveTap`]); nothing here can hold a request: an offer is a counter check and a
//! `try_send`, and a full shadow drops the exchange and counts it. Re-sending runs on a
//! thread of its own that gets only CPU time production leaves idle, with its own
//! connections, an in-flight cap and a byte budget; comparing runs on another (also idle
//! time). Only safe methods are mirrored unless named. What the shadow keeps or shows
//! (report examples) is scrubbed like a capture; the exchanges themselves are never
//! written.

mod live;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::Uri;
use tapedeck_captures::exchange::Response;
use tapedeck_captures::scrub::Scrubber;
use tapedeck_captures::sink::{AdminPage, LiveTap};
use tapedeck_captures::{ErrorKind, Exchange};
use tapedeck_compare::generated::Window;
use tapedeck_compare::noise::NoiseModel;
use tapedeck_compare::CompareConfig;
use tapedeck_report::gate::Gate;
use tapedeck_report::stats::Sample;

use crate::client::{ClientConfig, Outcome, Pool};
use crate::rewrite::Rewrite;
use crate::ReplayError;
use live::{head, label, Live, Reporting, Snapshot, RATIO_BOUNDS};

/// Routes the shadow tells apart (in its report and its metrics' labels); more are
/// counted together. Each costs two latency histograms per window bucket: a sidecar's
/// memory stays bounded whatever the URLs.
const MAX_ROUTES: usize = 200;

/// How often the results directory's `report.json` is rewritten.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// How long a stopping shadow waits for answers under way.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long after the last offer the shadow keeps looking for offers by itself.
const BUSY_FOR: Duration = Duration::from_millis(50);

/// Methods mirrored unless `--shadow-methods` says otherwise: the ones that change nothing.
pub const SAFE_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

/// How the shadow runs.
pub struct ShadowConfig {
    /// Where to, with the request rewrites (headers set or removed, credentials withheld
    /// unless kept).
    pub rewrite: Rewrite,
    /// Share of the proxy's requests mirrored, 0–1.
    pub rate: f64,
    /// Methods mirrored (upper case).
    pub methods: Vec<String>,
    /// Requests sent to the shadow and not yet answered, at most.
    pub max_in_flight: usize,
    /// Bytes of exchanges waiting or in flight, at most.
    pub max_bytes: usize,
    /// Timeouts, TLS trust, connections.
    pub client: ClientConfig,
    /// What to compare and ignore.
    pub compare: CompareConfig,
    /// Noise known before (a saved model).
    pub noise_model: NoiseModel,
    /// Judged over `window`, live.
    pub gates: Vec<Gate>,
    /// The gates' sliding window.
    pub window: Duration,
    /// Scrubs the report's examples and the results (production's answers are in them).
    pub scrub: Option<Arc<Scrubber>>,
    /// Where to keep the evidence: `report.json` (rewritten every few seconds and at the
    /// end; `tapedeck report DIR` renders it) and a results tape of the exchanges that
    /// differed — production's and the shadow's answer to each, scrubbed.
    pub results: Option<std::path::PathBuf>,
    /// Accept a shared results directory.
    pub allow_shared_dir: bool,
}

impl ShadowConfig {
    /// Mirrors every safe request to `target`, with defaults for the rest.
    pub fn new(target: &Uri) -> Result<ShadowConfig, String> {
        let mut rewrite = Rewrite::new(target).map_err(|e| e.replace("--target", "--shadow"))?;
        // The client's credentials for a proxy in front of production: never the shadow's,
        // even with --shadow-keep-credentials (production itself never gets them either).
        rewrite.remove.push(http::header::PROXY_AUTHORIZATION);
        Ok(ShadowConfig {
            rewrite,
            rate: 1.0,
            methods: SAFE_METHODS.iter().map(|m| m.to_string()).collect(),
            max_in_flight: 64,
            max_bytes: 64 << 20,
            client: ClientConfig {
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(2),
                connections: 64,
                max_body: 1 << 20,
                insecure: false,
                ca: None,
                as_recorded: false,
            },
            compare: CompareConfig::default(),
            noise_model: NoiseModel::default(),
            gates: Vec::new(),
            window: Duration::from_secs(300),
            scrub: None,
            results: None,
            allow_shared_dir: false,
        })
    }
}

/// Why an exchange was not mirrored (beyond not being sampled).
#[derive(Clone, Copy)]
enum Shed {
    /// The byte budget or the queue was full.
    QueueFull,
    /// Its request body was not recorded whole (larger than `--max-body`, or cut off).
    BodyTruncated,
    /// Production did not answer it completely: nothing to compare with.
    NoAnswer,
    /// Offered while the shadow was stopping.
    Closing,
    /// A connection upgrade (WebSocket), a gRPC call (a session or a stream, not one
    /// answer to compare) or `OPTIONS *`: not mirrored.
    Unsupported,
}

const DROPS: [(Shed, &str); 5] = [
    (Shed::QueueFull, "queue_full"),
    (Shed::BodyTruncated, "body_truncated"),
    (Shed::NoAnswer, "no_production_answer"),
    (Shed::Closing, "closing"),
    (Shed::Unsupported, "upgrade_or_grpc"),
];

/// One answer on its way to the comparer.
struct Answered {
    exchange: Exchange,
    route: String,
    sent_at: Instant,
    outcome: Outcome,
    /// How long the shadow's thread was waiting for a CPU lately (its latencies include it).
    cpu_wait: Duration,
}

struct Inner {
    rate_threshold: u64,
    methods: Vec<String>,
    max_bytes: usize,
    target: String,
    /// Route names are shown (metrics labels, the report): taken from the scrubbed target.
    scrub: Option<Arc<Scrubber>>,
    progress: Arc<crate::Progress>,
    queue: Mutex<Option<tokio::sync::mpsc::Sender<Exchange>>>,
    bytes: AtomicUsize,
    /// Set when an offer found no room, cleared when the sender takes the next one: while
    /// set, requests are not even recorded for the shadow (a saturated shadow costs the
    /// request path one load).
    full: AtomicBool,
    in_flight: AtomicUsize,
    /// The longest the sending thread waited for a CPU in the last second, µs.
    cpu_wait_us: AtomicU64,
    not_mirrored_method: AtomicU64,
    dropped: [AtomicU64; DROPS.len()],
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    compared: AtomicU64,
    differing: AtomicU64,
    not_compared: AtomicU64,
    /// Answers by status class (1xx … 5xx), production's and the shadow's.
    classes: [[AtomicU64; 5]; 2],
    snapshot: Mutex<Arc<Snapshot>>,
    closing: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The live shadow (see the module docs). Cheap to share: the proxy holds it as its tap.
pub struct Shadow {
    inner: Arc<Inner>,
}

impl Shadow {
    /// Starts the sending and comparing threads.
    pub fn start(config: ShadowConfig) -> Result<Shadow, ReplayError> {
        let tls = if config.rewrite.is_https() {
            let tls = crate::client::tls_config(&config.client)
                .map_err(|source| ReplayError::Tls { what: "--shadow", source })?;
            Some(Arc::new(tls))
        } else {
            None
        };
        // Where the client keeps the first cause of each kind of failure, for the log.
        let progress = Arc::new(crate::Progress::default());
        let pool =
            Pool::new(config.rewrite.host(), config.rewrite.port(), tls, config.client.clone(), progress.clone())
                .map_err(|source| ReplayError::Tls { what: "--shadow", source })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Exchange>((config.max_in_flight * 4).max(64));
        let inner = Arc::new(Inner {
            rate_threshold: (config.rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            methods: config.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            max_bytes: config.max_bytes,
            target: config.rewrite.origin(),
            scrub: config.scrub.clone(),
            progress,
            queue: Mutex::new(Some(tx)),
            bytes: AtomicUsize::new(0),
            full: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            cpu_wait_us: AtomicU64::new(0),
            not_mirrored_method: AtomicU64::new(0),
            dropped: Default::default(),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            differing: AtomicU64::new(0),
            not_compared: AtomicU64::new(0),
            classes: Default::default(),
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            closing: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let (answers, answered) = mpsc::sync_channel::<Answered>(config.max_in_flight.max(1) * 4);
        let results = match &config.results {
            Some(dir) => {
                let mut wc = tapedeck_captures::tape::WriterConfig::new(dir);
                wc.prefix = "shadow".into();
                wc.kind = tapedeck_captures::tape::TapeKind::Replay;
                wc.allow_shared_dir = config.allow_shared_dir;
                wc.labels.push(("target".into(), config.rewrite.origin()));
                wc.scrub_fingerprint = config.scrub.as_ref().map(|s| s.fingerprint());
                let writer = tapedeck_captures::tape::TapeWriter::new(wc).map_err(ReplayError::Results)?;
                let (sink, _, handle) = crate::engine::results::start(writer, config.scrub.clone())
                    .map_err(|source| ReplayError::Thread { name: "tapedeck-results".into(), source })?;
                Some((sink, handle))
            }
            None => None,
        };
        let (results_sink, results_thread) = match results {
            Some((sink, handle)) => (Some(sink), Some(handle)),
            None => (None, None),
        };
        let reporting = Reporting {
            target: config.rewrite.origin(),
            compare: config.compare,
            noise_model: config.noise_model,
            gates: config.gates,
            window: config.window,
            scrub: config.scrub,
            started_at: jiff::Timestamp::now().to_string(),
            started_unix_ns: jiff::Timestamp::now().as_nanosecond() as i64,
            results: config.results,
        };
        // /shadow answers a report from the start (an empty one until answers come).
        if let Some((snap, _)) = Live::new(reporting.gates.len()).snapshot(&reporting, Instant::now()) {
            *inner.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        }
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| ReplayError::Thread { name: name.into(), source })
        };
        let sender = {
            let (inner, rewrite, cap) = (inner.clone(), config.rewrite, config.max_in_flight.max(1));
            spawn("tapedeck-shadow", Box::new(move || send_loop(&inner, rx, pool, rewrite, cap, answers)))?
        };
        let comparer = {
            let inner = inner.clone();
            let results = results_sink;
            spawn("tapedeck-shadow-compare", Box::new(move || compare_loop(&inner, &answered, &reporting, results)))?
        };
        // Joined in this order at close: each finishes what the one before handed it.
        inner
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([sender, comparer].into_iter().chain(results_thread));
        Ok(Shadow { inner })
    }
}

impl Inner {
    fn drop_one(&self, why: Shed) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl LiveTap for Shadow {
    fn wants(&self, method: &str, _path: &str) -> bool {
        let i = &self.inner;
        if i.rate_threshold == 0 || i.closing.load(Ordering::Relaxed) {
            return false;
        }
        if !i.methods.iter().any(|m| m == method) {
            i.not_mirrored_method.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !(i.rate_threshold == u64::MAX || rand::random::<u64>() < i.rate_threshold) {
            return false;
        }
        if i.full.load(Ordering::Relaxed) {
            i.drop_one(Shed::QueueFull);
            return false;
        }
        true
    }

    fn offer(&self, exchange: Exchange) {
        let i = &self.inner;
        if i.closing.load(Ordering::Relaxed) {
            return i.drop_one(Shed::Closing);
        }
        let header = |name: &str| exchange.request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
        // `OPTIONS *` asks about the server, not a resource: the canary is not production.
        if exchange.websocket.is_some()
            || exchange.request.target == "*"
            || header("upgrade").is_some()
            || header("content-type").is_some_and(|h| h.value.as_ref().starts_with(b"application/grpc"))
        {
            return i.drop_one(Shed::Unsupported);
        }
        if exchange.request.body.truncated {
            return i.drop_one(Shed::BodyTruncated);
        }
        if exchange.error.is_some() || exchange.response.as_ref().is_none_or(|r| r.body.truncated) {
            return i.drop_one(Shed::NoAnswer);
        }
        let size = exchange.approx_bytes();
        let before = i.bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > i.max_bytes {
            i.bytes.fetch_sub(size, Ordering::Relaxed);
            // Full of others' bytes (which free it when done); one larger than the whole
            // budget is only dropped.
            if before > 0 {
                i.full.store(true, Ordering::Relaxed);
            }
            return i.drop_one(Shed::QueueFull);
        }
        let queue = i.queue.lock().unwrap_or_else(|p| p.into_inner());
        let taken = queue.as_ref().is_some_and(|q| q.try_send(exchange).is_ok());
        drop(queue);
        if !taken {
            i.bytes.fetch_sub(size, Ordering::Relaxed);
            i.full.store(true, Ordering::Relaxed);
            i.drop_one(Shed::QueueFull);
        }
    }

    fn metrics(&self, out: &mut String) {
        let i = &self.inner;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            head(out, name, "counter", help);
            let _ = writeln!(out, "{name}_total {value}");
        };
        counter(out, "tapedeck_shadow_requests", "Requests sent to the shadow target.", get(&i.sent));
        counter(out, "tapedeck_shadow_answered", "Shadow requests answered completely.", get(&i.answered));
        counter(out, "tapedeck_shadow_errors", "Shadow requests without a complete answer.", get(&i.errors));
        counter(out, "tapedeck_shadow_compared", "Shadow answers compared with production's.", get(&i.compared));
        counter(
            out,
            "tapedeck_shadow_differing",
            "Shadow answers with a difference (noise included; the report sets noise apart).",
            get(&i.differing),
        );
        counter(
            out,
            "tapedeck_shadow_not_compared",
            "Shadow answers not compared: the comparer had fallen behind.",
            get(&i.not_compared),
        );
        counter(
            out,
            "tapedeck_shadow_not_mirrored_method",
            "Requests not mirrored for their method (state-changing; see --shadow-methods).",
            get(&i.not_mirrored_method),
        );
        head(out, "tapedeck_shadow_dropped", "counter", "Sampled requests not mirrored, by reason.");
        for (d, name) in DROPS {
            let _ = writeln!(out, "tapedeck_shadow_dropped_total{{reason=\"{name}\"}} {}", get(&i.dropped[d as usize]));
        }
        head(
            out,
            "tapedeck_shadow_answers",
            "counter",
            "Answered shadow requests by status class, of production and of the shadow (a 5xx the shadow gives \
             and production did not is in the gap between the two).",
        );
        for (side, name) in [(0, "production"), (1, "shadow")] {
            for (c, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let n = get(&i.classes[side][c]);
                let _ = writeln!(out, "tapedeck_shadow_answers_total{{side=\"{name}\",class=\"{class}\"}} {n}");
            }
        }
        head(out, "tapedeck_shadow_in_flight", "gauge", "Shadow requests sent and not yet answered.");
        let _ = writeln!(out, "tapedeck_shadow_in_flight {}", i.in_flight.load(Ordering::Relaxed));
        head(
            out,
            "tapedeck_shadow_cpu_wait_seconds",
            "gauge",
            "The longest the shadow's thread waited for a CPU in the last second (it runs on idle CPU \
             time only; its latencies include this wait).",
        );
        let _ = writeln!(out, "tapedeck_shadow_cpu_wait_seconds {}", get(&i.cpu_wait_us) as f64 / 1e6);
        head(out, "tapedeck_shadow_queue_bytes", "gauge", "Bytes of exchanges waiting for or in the shadow.");
        let _ = writeln!(out, "tapedeck_shadow_queue_bytes {}", i.bytes.load(Ordering::Relaxed));
        let snap = i.snapshot();
        head(
            out,
            "tapedeck_shadow_diff_rate",
            "gauge",
            "Share of a route's compared answers that differ beyond noise, since the start.",
        );
        for (route, (_, _, rate)) in &snap.routes {
            let _ = writeln!(out, "tapedeck_shadow_diff_rate{{route=\"{}\"}} {rate}", label(route));
        }
        head(out, "tapedeck_shadow_gate_failing", "gauge", "1 while a --shadow-gate fails over its window.");
        for (gate, failing) in &snap.gates {
            let _ = writeln!(out, "tapedeck_shadow_gate_failing{{gate=\"{}\"}} {}", label(gate), u8::from(*failing));
        }
        if let Some(live) = snap.ratios {
            head(
                out,
                "tapedeck_shadow_latency_ratio",
                "histogram",
                "Shadow time to last byte over production's, per compared request.",
            );
            let mut cumulative = 0;
            for (n, bound) in live.0.iter().zip(RATIO_BOUNDS.iter().map(|b| b.to_string()).chain(["+Inf".into()])) {
                cumulative += n;
                let _ = writeln!(out, "tapedeck_shadow_latency_ratio_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "tapedeck_shadow_latency_ratio_sum {}", live.1);
            let _ = writeln!(out, "tapedeck_shadow_latency_ratio_count {cumulative}");
        }
    }

    fn page(&self, path: &str) -> Option<AdminPage> {
        let snap = self.inner.snapshot();
        match path {
            "/shadow" | "/shadow.json" => Some(AdminPage { content_type: "application/json", body: snap.json.clone() }),
            "/shadow.html" => Some(AdminPage { content_type: "text/html; charset=utf-8", body: snap.html() }),
            _ => None,
        }
    }

    fn close(&self) -> String {
        let i = &self.inner;
        i.closing.store(true, Ordering::Relaxed);
        // The sender finishes what it holds (each within the request timeout), then the
        // comparer what it was handed.
        i.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *i.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let dropped: u64 = i.dropped.iter().map(get).sum();
        let snap = i.snapshot();
        let differing: u64 = snap.routes.values().map(|(_, d, _)| d).sum();
        let compared: u64 = snap.routes.values().map(|(c, _, _)| c).sum();
        let behind = get(&i.not_compared);
        format!(
            "shadow: {} requests sent to {}, {} answered, {compared} compared, {differing} differing beyond noise; \
             {dropped} not mirrored (full or unanswerable){}",
            get(&i.sent),
            i.target,
            get(&i.answered),
            if behind > 0 {
                format!("; {behind} answers not compared (the comparer was behind)")
            } else {
                String::new()
            }
        )
    }
}

/// Sends what the proxy offers, at most `cap` at once, and hands the answers on.
fn send_loop(
    inner: &Arc<Inner>,
    mut rx: tokio::sync::mpsc::Receiver<Exchange>,
    pool: Pool,
    rewrite: Rewrite,
    cap: usize,
    answers: mpsc::SyncSender<Answered>,
) {
    crate::os::idle_priority();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        tracing::error!("shadow: cannot start its event loop; nothing is mirrored");
        return;
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let rewrite = Arc::new(rewrite);
    // Set once the grace at close has passed: requests still waiting end as timeouts (and
    // are counted as such), never as if they had not been sent.
    let (give_up, given_up) = tokio::sync::watch::channel(false);
    runtime.block_on(async {
        let probe = tokio::spawn(probe_cpu_wait(inner.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        let mut busy_at = Instant::now();
        loop {
            // While offers keep coming, the queue is looked at every millisecond instead of
            // the offering request's thread waking this one for each (a syscall on
            // production's time); once quiet, it waits to be woken.
            let exchange = match rx.try_recv() {
                Ok(exchange) => exchange,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) if busy_at.elapsed() < BUSY_FOR => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => match rx.recv().await {
                    Some(exchange) => exchange,
                    None => break,
                },
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
            };
            busy_at = Instant::now();
            // Stopping: what waits is not sent (counted), and a permit is not waited for.
            let permit = loop {
                if inner.closing.load(Ordering::Relaxed) {
                    break None;
                }
                match tokio::time::timeout(Duration::from_millis(100), permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => break Some(p),
                    Ok(Err(_)) => break None,
                    Err(_) => {}
                }
            };
            // Room again: requests are recorded for the shadow again.
            inner.full.store(false, Ordering::Relaxed);
            let Some(permit) = permit else {
                inner.bytes.fetch_sub(exchange.approx_bytes(), Ordering::Relaxed);
                inner.drop_one(Shed::Closing);
                continue;
            };
            let (inner, pool, rewrite, answers) = (inner.clone(), pool.clone(), rewrite.clone(), answers.clone());
            let mut given_up = given_up.clone();
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                inner.in_flight.fetch_add(1, Ordering::Relaxed);
                let size = exchange.approx_bytes();
                // Personal data in a path (a card number) must not become a route's name.
                let scrubbed = inner.scrub.as_ref().map(|s| s.scrub_target(&exchange.request.target));
                let target = scrubbed.as_deref().unwrap_or(&exchange.request.target);
                let route = tapedeck_captures::route::route_key(&exchange.request.method, target);
                // Credentials in the query string are withheld like credential headers.
                let request = match crate::rewrite::without_credential_params(&exchange.request.target) {
                    Some(target) if !rewrite.keep_credentials => {
                        rewrite.withheld.fetch_add(1, Ordering::Relaxed);
                        let mut without = exchange.clone();
                        without.request.target = target;
                        rewrite.request(&without)
                    }
                    _ => rewrite.request(&exchange),
                };
                let outcome = match request {
                    Ok(req) => {
                        inner.sent.fetch_add(1, Ordering::Relaxed);
                        let started = Instant::now();
                        tokio::select! {
                            outcome = pool.send(req, exchange.connection.0) => outcome,
                            _ = given_up.wait_for(|g| *g) => Outcome::failed(started, ErrorKind::ResponseTimeout),
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "shadow: cannot build the request");
                        Outcome::failed(Instant::now(), ErrorKind::Other)
                    }
                };
                inner.in_flight.fetch_sub(1, Ordering::Relaxed);
                if outcome.error.is_some() {
                    inner.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    inner.answered.fetch_add(1, Ordering::Relaxed);
                    let class = |status: u16| usize::from(status / 100).clamp(1, 5) - 1;
                    if let (Some(p), Some(s)) = (exchange.response.as_ref(), outcome.status) {
                        inner.classes[0][class(p.status)].fetch_add(1, Ordering::Relaxed);
                        inner.classes[1][class(s.as_u16())].fetch_add(1, Ordering::Relaxed);
                    }
                }
                let sent_at = outcome.sent_at;
                let cpu_wait = Duration::from_micros(inner.cpu_wait_us.load(Ordering::Relaxed));
                // The comparer may be behind: then this answer is not compared, never
                // waited for.
                if answers.try_send(Answered { exchange, route, sent_at, outcome, cpu_wait }).is_err() {
                    inner.not_compared.fetch_add(1, Ordering::Relaxed);
                }
                inner.bytes.fetch_sub(size, Ordering::Relaxed);
                inner.full.store(false, Ordering::Relaxed);
                drop(permit);
            });
        }
        // Stopping: answers under way get a short grace, then are abandoned (counted) —
        // a hung shadow never holds the proxy's shutdown.
        let finished = tokio::time::timeout(CLOSE_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            let _ = give_up.send(true);
            while tasks.join_next().await.is_some() {}
        }
        probe.abort();
    });
}

/// How often the sending thread checks how late it runs.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Measures how long the sending thread waits for a CPU: how much later than asked a short
/// sleep ends. It runs only on idle CPU time, so on a busy host that wait is in every
/// shadow latency it takes; the report shows it and latency gates are not judged by it.
async fn probe_cpu_wait(inner: Arc<Inner>) {
    // The last second's probes; the longest wait among them is what an answer is told.
    let mut recent = [0u64; (1000 / PROBE_EVERY.as_millis()) as usize];
    for i in (0..recent.len()).cycle() {
        let asked = Instant::now();
        tokio::time::sleep(PROBE_EVERY).await;
        // The timer's own granularity (1 ms) is not a wait for the CPU.
        let late = asked.elapsed().saturating_sub(PROBE_EVERY + Duration::from_millis(1));
        recent[i] = late.as_micros() as u64;
        inner.cpu_wait_us.store(recent.iter().copied().max().unwrap_or(0), Ordering::Relaxed);
    }
}

/// Compares each answer with production's, keeps the live stats, and snapshots them.
fn compare_loop(
    inner: &Inner,
    rx: &mpsc::Receiver<Answered>,
    reporting: &Reporting,
    results: Option<crate::engine::results::ResultsSink>,
) {
    crate::os::idle_priority();
    let origin = Instant::now();
    let window = Window::since(jiff::Timestamp::now().as_second());
    let mut live = Live::new(reporting.gates.len());
    let mut last_snapshot = Instant::now();
    let mut snapshot_every = Duration::from_millis(500);
    let mut last_save: Option<Instant> = None;
    // A snapshot not yet on disk (saves are every few seconds at most).
    let mut unsaved = false;
    loop {
        let got = rx.recv_timeout(Duration::from_millis(500));
        let done = matches!(got, Err(mpsc::RecvTimeoutError::Disconnected));
        if let Ok(a) = got {
            compare_one(inner, &mut live, a, origin, &window, reporting, results.as_ref());
        }
        let now = Instant::now();
        let closing = inner.closing.load(Ordering::Relaxed);
        if done || (!closing && now.duration_since(last_snapshot) >= snapshot_every) {
            last_snapshot = now;
            let snapshot = live.snapshot(reporting, now);
            // Twice a second, or less often when a snapshot is costly (many routes): at
            // most a twentieth of this thread's time goes to them.
            snapshot_every = Duration::from_millis(500).max(now.elapsed() * 20);
            if let Some((mut snap, transitions)) = snapshot {
                snap.ratios = Some((live.ratios, live.ratio_sum));
                for (gate, failing) in transitions {
                    if failing {
                        tracing::warn!(gate = %gate, "shadow gate failing over the last {}", humantime::format_duration(reporting.window));
                    } else {
                        tracing::warn!(gate = %gate, "shadow gate passing again");
                    }
                }
                *inner.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
                unsaved = true;
            }
            // The evidence on disk: every few seconds, and last at the end.
            if let Some(dir) = reporting.results.as_ref().filter(|_| unsaved) {
                if done || last_save.is_none_or(|t| now.duration_since(t) >= SAVE_EVERY) {
                    last_save = Some(now);
                    unsaved = false;
                    let path = dir.join(tapedeck_report::REPORT_FILE);
                    let json = inner.snapshot().json.clone();
                    if let Err(e) = tapedeck_captures::files::write_output_bytes(&path, true, &json) {
                        tracing::warn!("shadow: cannot write {}: {e}", path.display());
                    }
                }
            }
        }
        if done {
            break;
        }
    }
}

fn compare_one(
    inner: &Inner,
    live: &mut Live,
    a: Answered,
    origin: Instant,
    window: &Window,
    reporting: &Reporting,
    results: Option<&crate::engine::results::ResultsSink>,
) {
    let (config, gate_window) = (&reporting.compare, reporting.window);
    let Answered { exchange, route, sent_at, outcome, cpu_wait } = a;
    // A shadow that fails is said, with the first cause of its kind, once a minute.
    if let Some(kind) = outcome.error {
        if live.failure_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            live.failure_said = Some(Instant::now());
            let cause = inner.progress.causes.lock().map(|c| c.get(kind.as_str()).cloned()).unwrap_or_default();
            tracing::warn!(
                "shadow: requests to {} fail ({}{}); production is unaffected",
                inner.target,
                kind.as_str(),
                cause.map(|c| format!(": {c}")).unwrap_or_default()
            );
        }
    }
    // Production's own answers teach what is noise (identical requests answered
    // differently by production itself).
    live.learner.observe(&exchange, &route, config);
    let replayed: Option<Response> = crate::engine::worker::response_of(&outcome).filter(|_| outcome.error.is_none());
    let diffs = match (exchange.response.as_ref(), replayed.as_ref()) {
        (Some(production), Some(shadow)) => {
            let path = Some(exchange.request.path());
            Some(tapedeck_compare::diff::compare_call(production, shadow, &route, path, config, window))
        }
        _ => None,
    };
    // As many routes as the shadow keeps apart; the rest together.
    let route_key = tapedeck_report::stats::capped_at(&live.whole.routes, &route, MAX_ROUTES).to_string();
    let sample = Sample {
        recorded: &exchange,
        route: &route_key,
        origin,
        // The shadow has no schedule; its "lag" is how long its thread was waiting for a
        // CPU, which its latencies include.
        due: sent_at.checked_sub(cpu_wait).unwrap_or(sent_at),
        sent_at,
        status: outcome.status.map(|s| s.as_u16()).filter(|_| outcome.error.is_none()),
        grpc_status: outcome.grpc_status(),
        end: outcome.end,
        error: outcome.error,
        failed_after: outcome.error.map(|_| sent_at.elapsed()),
        bytes: outcome.body_len,
        first_message: None,
        websocket: None,
    };
    let r = &exchange.request;
    let request = || format!("{} {}", r.method, r.target);
    live.whole.record(&sample);
    if let Some(d) = &diffs {
        live.whole.route(&route_key).diffs.add(request, d.clone());
    }
    // The evidence: both answers of an exchange that differs beyond what is known to be
    // noise so far.
    if let (Some(sink), Some(d)) = (results, &diffs) {
        let noise = |key: &str| {
            live.learner.model.source(&route, key).is_some() || reporting.noise_model.source(&route, key).is_some()
        };
        if d.iter().any(|d| d.generated.is_none() && !noise(&d.key)) {
            let mut answer = exchange.clone();
            answer.id = tapedeck_captures::ExchangeId(exchange.id.0 ^ (1 << 63));
            answer.replay_of = Some(exchange.id);
            answer.response = replayed.clone();
            answer.error = outcome.error;
            answer.timing.start_ns = sent_at.saturating_duration_since(origin).as_nanos() as u64;
            answer.timing.tape_start_unix_ns = reporting.started_unix_ns;
            answer.timing.head_ns = outcome.head.map(|h| h.as_nanos() as u64);
            answer.timing.end_ns = outcome.end.map(|e| e.as_nanos() as u64);
            if sink.try_send(exchange.clone()) {
                sink.try_send(answer);
            }
        }
    }
    let bucket = live.bucket(Instant::now(), gate_window);
    bucket.record(&sample);
    if let Some(diffs) = diffs {
        inner.compared.fetch_add(1, Ordering::Relaxed);
        if !diffs.is_empty() {
            inner.differing.fetch_add(1, Ordering::Relaxed);
        }
        bucket.route(&route_key).diffs.add(request, diffs);
        if let (Some(p), Some(s)) = (exchange.timing.end_ns, outcome.end) {
            if p > 0 {
                live.ratio(s.as_nanos() as f64 / p as f64);
            }
        }
    }
}
