//! The comparer threads: each worker hands its answered exchanges to one, so that parsing
//! and diffing bodies never delays the worker's event loop — which would show up as
//! latency the target did not cause, and as lag. A comparer learns noise from the recorded
//! responses it sees and counts differences per route; the engine merges them at the end.

use std::collections::HashMap;
use std::sync::Arc;

use tapedeck_captures::exchange::Response;
use tapedeck_captures::websocket::WebSocket;
use tapedeck_captures::Exchange;

use tapedeck_compare::correlate::Vars;
use tapedeck_compare::diff;
use tapedeck_compare::generated::Window;
use tapedeck_compare::noise::{Learner, NoiseModel};
use tapedeck_compare::tally::RouteTally;
use tapedeck_compare::CompareConfig;

use super::budget;

/// How responses are compared.
pub(crate) struct Comparing {
    pub config: CompareConfig,
    pub window: Window,
    /// Send safe requests twice (a few per route) to learn the target's own noise.
    pub probe: bool,
}

/// Bytes of exchanges queued for a comparer at most, in KiB: enough to ride out bursts;
/// past it, answers go uncompared (counted as shed) rather than slow the sends.
const BUDGET_KIB: u32 = 32 * 1024;

/// One answered exchange to compare.
pub(crate) struct Job {
    pub route: String,
    pub recorded: Exchange,
    /// The target's answer, if any.
    pub replayed: Option<Response>,
    /// A WebSocket upgrade's session with the target.
    pub replayed_websocket: Option<WebSocket>,
    /// The session's correlation values when the answer came: differences they explain
    /// are expected.
    pub vars: Option<Arc<Vars>>,
}

/// What a comparer found.
#[derive(Default)]
pub(crate) struct Compared {
    pub routes: HashMap<String, RouteTally>,
    pub noise: NoiseModel,
}

/// Where a worker puts jobs.
pub(crate) type Sink = budget::Sender<Job>;

/// Starts a comparer; it runs until its sink is dropped.
pub(crate) fn start(
    name: &str,
    comparing: Arc<Comparing>,
) -> std::io::Result<(Sink, std::thread::JoinHandle<Compared>)> {
    let (tx, rx) = budget::channel::<Job>(BUDGET_KIB);
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || run(&rx, &comparing))?;
    Ok((tx, handle))
}

/// About how many KiB a job holds.
pub(crate) fn kib(job: &Job) -> u32 {
    let replayed = job.replayed.as_ref().map_or(0, |r| r.body.data.len() + 64 * r.headers.len())
        + job.replayed_websocket.as_ref().map_or(0, |ws| ws.messages.iter().map(|m| m.data.len() + 32).sum::<usize>());
    budget::kib(job.recorded.approx_bytes() + replayed)
}

fn run(rx: &budget::Receiver<Job>, c: &Comparing) -> Compared {
    crate::os::background_priority();
    let mut learner = Learner::default();
    let mut out = Compared::default();
    while let Some((job, kib)) = rx.recv() {
        learner.observe(&job.recorded, &job.route, &c.config);
        // A recording without a complete answer (the client left, the upstream broke off)
        // has nothing to compare a replay's answer with.
        let recorded = job.recorded.response.as_ref().filter(|_| job.recorded.error.is_none());
        if let (Some(a), Some(b)) = (recorded, &job.replayed) {
            let path = Some(job.recorded.request.path());
            let mut diffs = diff::compare_call(a, b, &job.route, path, &c.config, &c.window);
            // A session's messages, when both upgrades were accepted alike.
            if let (Some(wa), Some(wb)) = (&job.recorded.websocket, &job.replayed_websocket) {
                if diffs.iter().all(|d| d.kind != diff::DiffKind::Status) {
                    diffs.extend(diff::compare_websocket(wa, wb, &job.route, &c.config, &c.window));
                }
            }
            if let Some(vars) = &job.vars {
                // The target's own ids in place of the recorded ones are expected, not
                // differences (generated values stay: they are reported as noise).
                diffs.retain(|d| d.generated.is_some() || !vars.maps(&d.recorded, &d.replayed));
            }
            let r = &job.recorded.request;
            let request = || format!("{} {}", r.method, r.target);
            // As many routes as the stats keep; the rest together, as there.
            let route = tapedeck_report::stats::capped(&out.routes, &job.route);
            if !out.routes.contains_key(route) {
                out.routes.insert(route.to_string(), RouteTally::default());
            }
            out.routes.get_mut(route).expect("inserted above").add(request, diffs);
        }
        rx.done(kib);
    }
    out.noise = learner.model;
    out
}
