//! # tapedeck-replayer
//!
//! Re-issues captured traffic against a target (staging) so it feels production's load
//! shape — the same mix, timing and concurrency — and records what comes back.
//!
//! - [`source`]: recorded exchanges from tapes, merged in start order, filtered, sampled.
//! - [`schedule`]: the open-loop schedule (`--speed`, `--rate`, `max`) and a precise timer;
//!   lag against the schedule is measured, never hidden.
//! - [`rewrite`]: the request for the target (URL, `Host`, headers, path rules) and the
//!   guard against replaying at production.
//! - [`client`]: per-worker connection pools (HTTP/1.1, h2, TLS) recording each outcome.
//! - [`engine`]: the dispatcher keeping the schedule; workers (each keeping its sessions'
//!   order and correlating their values), comparer threads and the results tape.
//! - [`compare`]: each answer against the recorded one — structural diff, learned noise,
//!   correlation, gates.
//! - [`stats`] and [`report`]: per-route latency, status and differences, recorded
//!   against replayed; rendered for terminals, JSON, HTML and JUnit.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use tapedeck_replayer::{replay, ReplayConfig};
//! let config = ReplayConfig::new(vec!["captures/".into()], "http://staging:8080".parse().unwrap()).unwrap();
//! let report = replay(&config, &AtomicBool::new(false), Default::default()).unwrap();
//! println!("{}", report.render(20));
//! ```
#![deny(missing_docs)]

mod budget;
pub mod client;
pub mod compare;
mod comparer;
pub mod engine;
mod os;
pub mod paced;
pub mod report;
mod results;
pub mod rewrite;
pub mod schedule;
pub mod source;
pub mod stats;
pub mod websocket;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tapedeck_captures::scrub::Scrubber;
use tapedeck_captures::{Exchange, HttpVersion};

pub use engine::Progress;
pub use report::ReplayReport;
use rewrite::Rewrite;
use schedule::Pacing;
use source::Selection;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The tapes cannot be read.
    #[error("{0}")]
    Source(String),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The target is the service the tapes were recorded from.
    #[error(
        "the target is the service these tapes were recorded from ({0}); replaying there would send \
         recorded traffic to production. Point --target at staging, or pass --allow-production-target"
    )]
    ProductionTarget(String),
    /// The results tape cannot be written.
    #[error("results: {0}")]
    Results(#[source] tapedeck_captures::TapeError),
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread of the replay stopped unexpectedly (a bug): its numbers are missing, so no
    /// report is made rather than one that looks cleaner than the run.
    #[error(
        "the replay's {thread} thread stopped unexpectedly ({why}); the numbers it held are \
         missing, so no report is made. This is a bug in tapedeck: please report it with the \
         command line"
    )]
    Crashed {
        /// The thread's name.
        thread: String,
        /// Its panic message.
        why: String,
    },
}

/// Everything a replay needs.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Tapes or directories.
    pub paths: Vec<PathBuf>,
    /// Where requests go and how they are rewritten.
    pub rewrite: Rewrite,
    /// Which recorded exchanges to replay.
    pub selection: Selection,
    /// How fast.
    pub pacing: Pacing,
    /// Requests in flight at most (with `--speed max`: the concurrency).
    pub max_in_flight: usize,
    /// Repeat the tapes this many times (with a shifted clock).
    pub loops: Option<u64>,
    /// Stop sending after this long (looping the tapes if needed).
    pub duration: Option<Duration>,
    /// The HTTP client.
    pub client: client::ClientConfig,
    /// Worker threads sending requests.
    pub workers: usize,
    /// Directory for the results tape (responses, linked to the recorded exchanges).
    pub results: Option<PathBuf>,
    /// Replay even at the authority the tapes were recorded from.
    pub allow_production_target: bool,
    /// Replay tapes that were never scrubbed, with a warning (the default here); else they
    /// are refused (the command line's default, unless --allow-unscrubbed).
    pub allow_unscrubbed: bool,
    /// Accept a results directory shared with others (see
    /// [`tapedeck_captures::files::check_private_dir`]).
    pub allow_shared_dir: bool,
    /// Compare responses with the recording (and correlate sessions); `None` only replays.
    pub compare: Option<compare::CompareConfig>,
    /// Send a few safe requests per route twice to learn the target's own noise.
    pub noise_probe: bool,
    /// Noise known before the run (`--noise-model FILE`).
    pub noise_model: compare::noise::NoiseModel,
    /// Scrubs the results tape and every value the reports show (`None`:
    /// `--no-scrub-results`). Defaults to the built-in policy without a key.
    pub scrub: Option<Arc<Scrubber>>,
}

impl ReplayConfig {
    /// Defaults: real-time pacing, 1,024 in flight, 30 s request timeout.
    pub fn new(paths: Vec<PathBuf>, target: http::Uri) -> Result<Self, ReplayError> {
        Ok(ReplayConfig {
            paths,
            rewrite: Rewrite::new(&target).map_err(ReplayError::Config)?,
            selection: Selection::default(),
            pacing: Pacing::Recorded { speed: 1.0 },
            max_in_flight: 1024,
            loops: None,
            duration: None,
            client: client::ClientConfig {
                timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
                connections: 1024,
                max_body: 1 << 20,
                insecure: false,
                ca: None,
                as_recorded: false,
            },
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            results: None,
            allow_production_target: false,
            allow_shared_dir: false,
            allow_unscrubbed: true,
            compare: Some(compare::CompareConfig::default()),
            noise_probe: false,
            noise_model: Default::default(),
            scrub: Some(Arc::new(Scrubber::with_defaults(None))),
        })
    }

    /// How the pacing reads in reports.
    pub fn pacing_label(&self) -> String {
        match self.pacing {
            Pacing::Recorded { speed } => format!("{speed}x"),
            Pacing::Rate { per_sec } => format!("rate {per_sec}/s"),
            Pacing::Max => format!("max, {} in flight", self.max_in_flight),
        }
    }
}

/// What keeps requests in order: a recorded session, else a recorded HTTP/1 connection.
/// HTTP/2 requests without a session, and requests whose connection is unknown (imports),
/// are independent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionKey {
    /// The sampling key's (pseudonymised) value.
    Session(String),
    /// A recorded client connection.
    Connection(u64),
    /// No ordering constraint.
    Single(u64),
}

impl SessionKey {
    /// A hash of the key that is the same in every run (for `--sample` and for spreading
    /// sessions over workers).
    pub fn stable_hash(&self) -> u64 {
        fn mix(mut x: u64) -> u64 {
            // splitmix64's finaliser.
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        }
        match self {
            SessionKey::Session(s) => mix(tapedeck_captures::convert::stable_hash(s.as_bytes())),
            SessionKey::Connection(c) => mix(c ^ 0x5555_5555_5555_5555),
            SessionKey::Single(id) => mix(*id),
        }
    }
}

/// The session `ex` belongs to.
pub fn session_key(ex: &Exchange) -> SessionKey {
    match &ex.session {
        Some(s) => SessionKey::Session(s.clone()),
        None if ex.connection.0 == 0 || ex.request.version == HttpVersion::H2 => SessionKey::Single(ex.id.0),
        None => SessionKey::Connection(ex.connection.0),
    }
}

/// Replays `config` until done or `stop` is set; `progress` is updated live.
pub fn replay(config: &ReplayConfig, stop: &AtomicBool, progress: Arc<Progress>) -> Result<ReplayReport, ReplayError> {
    let started_at = jiff::Timestamp::now().to_string();
    let outcome = engine::run(config, stop, progress.clone())?;
    let mut noise = config.noise_model.clone();
    noise.merge(outcome.stats.noise.clone());
    let compare = config.compare.as_ref().map(|c| (c, &noise));
    let mut report =
        ReplayReport::new(&outcome.stats, config.rewrite.origin(), config.pacing_label(), started_at, compare);
    report.noise = noise;
    if let Some(s) = &config.scrub {
        report.scrub_examples(s);
    }
    report.interrupted = outcome.interrupted;
    report.error_causes = progress.causes.lock().map(|c| c.clone()).unwrap_or_default();
    report.results = config.results.as_ref().map(|p| p.display().to_string());
    report.results_written = outcome.results_written;
    report.results_failed = outcome.results_failed;
    report.results_waited = outcome.results_waited;
    if let Some(d) = &outcome.damage {
        tracing::warn!("{}", d.summary());
    }
    report.tape_damage = outcome.damage;
    Ok(report)
}
