//! Everything a replay needs, with the command line's defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tapedeck_captures::scrub::Scrubber;

use crate::client;
use crate::rewrite::Rewrite;
use crate::schedule::Pacing;
use crate::source::Selection;
use crate::ReplayError;

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
    /// Begin the schedule at this wall-clock time (ns since the epoch) instead of at once:
    /// N hosts replaying N shards start the same schedule at the same instant.
    pub start_at: Option<i64>,
    /// Join a `start_at` that has passed (requests already due go at once) instead of
    /// refusing to start.
    pub late_ok: bool,
    /// Replay even at the authority the tapes were recorded from.
    pub allow_production_target: bool,
    /// Replay tapes that were never scrubbed, with a warning (the default here); else they
    /// are refused (the command line's default, unless --allow-unscrubbed).
    pub allow_unscrubbed: bool,
    /// Accept a results directory shared with others (see
    /// [`tapedeck_captures::files::check_private_dir`]).
    pub allow_shared_dir: bool,
    /// Compare responses with the recording (and correlate sessions); `None` only replays.
    pub compare: Option<tapedeck_compare::CompareConfig>,
    /// Send a few safe requests per route twice to learn the target's own noise.
    pub noise_probe: bool,
    /// Noise known before the run (`--noise-model FILE`).
    pub noise_model: tapedeck_compare::noise::NoiseModel,
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
            start_at: None,
            late_ok: false,
            allow_production_target: false,
            allow_shared_dir: false,
            allow_unscrubbed: true,
            compare: Some(tapedeck_compare::CompareConfig::default()),
            noise_probe: false,
            noise_model: Default::default(),
            scrub: Some(Arc::new(Scrubber::with_defaults(None))),
        })
    }

    /// Refuses a run whose `start_at` has passed (by more than setting up takes) unless
    /// `late_ok`: the shards would not be in step.
    pub fn check_on_time(&self) -> Result<(), ReplayError> {
        let Some(start_ns) = self.start_at.filter(|_| !self.late_ok) else { return Ok(()) };
        let late = tapedeck_captures::tape::writer::now_unix_ns().saturating_sub(start_ns);
        if late <= crate::engine::LATE_AFTER.as_nanos() as i64 {
            return Ok(());
        }
        let at = jiff::Timestamp::from_nanosecond(i128::from(start_ns))
            .map_or_else(|_| start_ns.to_string(), |t| t.to_string());
        Err(ReplayError::Late { at, late: Duration::from_nanos(late as u64) })
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
