//! # tapedeck-replayer
//!
//! Re-issues captured traffic against a target (staging) so it feels production's load
//! shape — the same mix, timing and concurrency — and records what comes back.
//!
//! What it does, as pure logic:
//!
//! - [`source`]: recorded exchanges from tapes, merged in start order, filtered, sampled;
//!   [`SessionKey`]: what keeps requests in order.
//! - [`schedule`]: the open-loop schedule (`--speed`, `--rate`, `max`) and a precise timer;
//!   lag against the schedule is measured, never hidden.
//! - [`rewrite`]: the request for the target (URL, `Host`, headers, path rules) and the
//!   guard against replaying at production.
//! - [`websocket`]: a recorded WebSocket session as a plan to play; [`paced`]: a gRPC
//!   stream's messages at their recorded pace.
//! - [`shadow`]: the live shadow — what a proxy just answered, re-sent to a canary and
//!   compared as it comes (a capture tap the binary hands the proxy).
//!
//! At run time:
//!
//! - [`client`]: per-worker connection pools (HTTP/1.1, h2, TLS) recording each outcome.
//! - `engine`: the replay's threads — the dispatcher keeping the schedule; workers (each
//!   keeping its sessions' order and correlating their values), comparer threads and the
//!   results tape; [`Progress`]: their live counters.
//!
//! Each answer is compared with the recorded one by [`tapedeck_compare`] (structural diff,
//! learned noise, correlation); what the run measured and its report (per-route latency,
//! status and differences, recorded against replayed; gates; terminal, JSON, HTML and JUnit)
//! are [`tapedeck_report`]'s.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use tapedeck_replayer::{replay, ReplayConfig};
//! let config = ReplayConfig::new(vec!["captures/".into()], "http://staging:8080".parse().unwrap()).unwrap();
//! let report = replay(&config, &AtomicBool::new(false), Default::default()).unwrap();
//! println!("{}", report.render(20));
//! ```
#![deny(missing_docs)]

pub mod client;
mod config;
mod engine;
mod error;
mod guard;
mod os;
pub mod paced;
pub mod progress;
pub mod rewrite;
pub mod schedule;
mod session;
pub mod shadow;
pub mod source;
pub mod websocket;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use config::ReplayConfig;
pub use error::ReplayError;
pub use progress::Progress;
pub use session::{session_key, SessionKey};
pub use tapedeck_report::ReplayReport;

/// Replays `config` until done or `stop` is set; `progress` is updated live.
pub fn replay(config: &ReplayConfig, stop: &AtomicBool, progress: Arc<Progress>) -> Result<ReplayReport, ReplayError> {
    // With `--start-at`, the agreed instant: every shard's report starts at the same time.
    let started_at = config
        .start_at
        .and_then(|at| jiff::Timestamp::from_nanosecond(i128::from(at)).ok())
        .unwrap_or_else(jiff::Timestamp::now)
        .to_string();
    let outcome = engine::run(config, stop, progress.clone())?;
    let mut noise = config.noise_model.clone();
    noise.merge(outcome.stats.noise.clone());
    let compare = config.compare.as_ref().map(|c| (c, &noise));
    let mut report =
        ReplayReport::new(&outcome.stats, config.rewrite.origin(), config.pacing_label(), started_at, compare);
    // The run's counts, for `report --merge` of shards.
    report.stats = Some(Box::new(outcome.stats.to_doc(outcome.start_unix_ns, &noise)));
    report.noise = noise;
    if let Some(s) = &config.scrub {
        report.scrub_examples(s);
    }
    report.shard = config.selection.shard.map(|s| s.to_string());
    // Only a run that read its selection to the end has the selection's digest.
    if !outcome.interrupted && config.duration.is_none() && config.loops.is_none_or(|l| l == 1) {
        report.input_digest = Some(format!("{:016x}", outcome.input_digest));
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
