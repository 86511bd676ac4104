//! What the shadow has measured, live: the whole run's stats and a sliding window of
//! them (for the gates), noise learned from production's own answers, and a snapshot
//! (the report as JSON and HTML, the per-route rates for `/metrics`) rebuilt a few times
//! a second at most, so a scrape never waits on the comparing.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck_captures::scrub::Scrubber;
use tapedeck_compare::noise::{Learner, NoiseModel};
use tapedeck_compare::CompareConfig;
use tapedeck_report::gate::Gate;
use tapedeck_report::stats::Stats;
use tapedeck_report::ReplayReport;

/// Buckets a gate window is cut into: the window slides a fifth at a time.
const BUCKETS: u32 = 5;

/// Upper bounds of the latency-ratio histogram (shadow time / production time).
pub(crate) const RATIO_BOUNDS: [f64; 11] = [0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// What the report snapshot needs besides the stats.
pub(crate) struct Reporting {
    pub target: String,
    pub compare: CompareConfig,
    pub noise_model: NoiseModel,
    pub gates: Vec<Gate>,
    pub window: Duration,
    pub scrub: Option<Arc<Scrubber>>,
    pub started_at: String,
    pub started_unix_ns: i64,
    pub results: Option<std::path::PathBuf>,
}

/// The live state, behind one lock (taken by the comparer per answer and by the
/// snapshot; never by a request).
pub(crate) struct Live {
    pub whole: Stats,
    buckets: VecDeque<(Instant, Stats)>,
    pub learner: Learner,
    /// Shadow/production latency ratios, by [`RATIO_BOUNDS`] (the last is +Inf).
    pub ratios: [u64; RATIO_BOUNDS.len() + 1],
    pub ratio_sum: f64,
    /// Each gate's state over the window: failing or not (None until first judged).
    pub failing: Vec<Option<bool>>,
    /// When a failing shadow was last said so in the log.
    pub failure_said: Option<Instant>,
    /// Whether latency gates were last left unjudged for the shadow's wait for a CPU.
    latency_unjudged: bool,
    changed: bool,
}

/// The last snapshot: what pages and metrics show.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub json: Vec<u8>,
    /// The report itself: its HTML page is made when someone asks for it.
    pub report: Option<ReplayReport>,
    /// Per route: (compared, differing, diff rate) over the whole run.
    pub routes: BTreeMap<String, (u64, u64, f64)>,
    /// Each gate as written, and whether it fails over the window.
    pub gates: Vec<(String, bool)>,
    /// The latency-ratio histogram: counts by [`RATIO_BOUNDS`] (the last is +Inf), sum.
    pub ratios: Option<([u64; RATIO_BOUNDS.len() + 1], f64)>,
}

impl Snapshot {
    /// The HTML page of a snapshot's report, refreshing itself.
    pub fn html(&self) -> Vec<u8> {
        let Some(report) = &self.report else { return Vec::new() };
        let mut html = tapedeck_report::html::render(report);
        if let Some(at) = html.find("<meta charset=\"utf-8\">") {
            html.insert_str(at, "<meta http-equiv=\"refresh\" content=\"5\">");
        }
        html.into_bytes()
    }
}

impl Live {
    pub fn new(gates: usize) -> Live {
        Live {
            whole: Stats::default(),
            buckets: VecDeque::new(),
            learner: Learner::default(),
            ratios: [0; RATIO_BOUNDS.len() + 1],
            ratio_sum: 0.0,
            failing: vec![None; gates],
            failure_said: None,
            latency_unjudged: false,
            changed: true,
        }
    }

    /// The window's newest bucket, started if the last one is a fifth of the window old;
    /// buckets older than the window are let go.
    pub fn bucket(&mut self, now: Instant, window: Duration) -> &mut Stats {
        self.changed = true;
        let step = window / BUCKETS;
        if self.buckets.back().is_none_or(|(start, _)| now.duration_since(*start) >= step) {
            self.buckets.push_back((now, Stats::default()));
        }
        while self.buckets.front().is_some_and(|(start, _)| now.duration_since(*start) > window) {
            self.buckets.pop_front();
        }
        &mut self.buckets.back_mut().expect("pushed above").1
    }

    pub fn ratio(&mut self, ratio: f64) {
        let i = RATIO_BOUNDS.iter().position(|b| ratio <= *b).unwrap_or(RATIO_BOUNDS.len());
        self.ratios[i] += 1;
        self.ratio_sum += ratio;
    }

    /// Rebuilds the snapshot if anything changed; returns the gates whose state changed
    /// (as written, now failing or not) for the log.
    pub fn snapshot(&mut self, r: &Reporting, now: Instant) -> Option<(Snapshot, Vec<(String, bool)>)> {
        if !self.changed {
            return None;
        }
        self.changed = false;
        while self.buckets.front().is_some_and(|(start, _)| now.duration_since(*start) > r.window) {
            self.buckets.pop_front();
        }
        let mut noise = r.noise_model.clone();
        noise.merge(self.learner.model.clone());
        let report = |stats: &Stats| {
            let mut report = ReplayReport::new(
                stats,
                r.target.clone(),
                tapedeck_report::LIVE_SHADOW.into(),
                r.started_at.clone(),
                Some((&r.compare, &noise)),
            );
            if let Some(s) = &r.scrub {
                report.scrub_examples_and_values(s);
            }
            report
        };
        let mut whole = report(&self.whole);
        whole.noise = noise.clone();
        whole.results = r.results.as_ref().map(|d| d.display().to_string());
        // The gates judge the window: what the canary does now, not since it started.
        let mut window = Stats::default();
        for (_, b) in &self.buckets {
            window.merge(b.clone());
        }
        let windowed = report(&window);
        let mut transitions = Vec::new();
        let mut gates = Vec::new();
        let mut unjudged = None;
        for (i, gate) in r.gates.iter().enumerate() {
            let result = gate.evaluate(&windowed);
            // An empty window (or no traffic on the gate's route in it) proves nothing
            // either way: the state stays. Nor do the shadow's latencies while its thread
            // waits for a CPU about as long as production takes to answer.
            let spoiled = cpu_wait_spoils(&windowed, gate);
            if spoiled.is_some() {
                unjudged = spoiled.clone();
            }
            let no_data = window.sent == 0
                || gate.route.as_ref().is_some_and(|r| !window.routes.contains_key(r))
                || spoiled.is_some();
            let failing = if no_data { self.failing[i].unwrap_or(false) } else { !result.passed };
            if self.failing[i] != Some(failing) && (self.failing[i].is_some() || failing) {
                transitions.push((gate.text.clone(), failing));
            }
            self.failing[i] = Some(failing);
            gates.push((gate.text.clone(), failing));
        }
        if unjudged.is_some() != self.latency_unjudged {
            self.latency_unjudged = unjudged.is_some();
            match &unjudged {
                Some(why) => tracing::warn!("shadow: latency gates not judged for now: {why}"),
                None => tracing::warn!("shadow: latency gates judged again (the shadow's thread gets a CPU in time)"),
            }
        }
        whole.apply_gates(&r.gates);
        let spoiled: Vec<_> = r.gates.iter().map(|gate| cpu_wait_spoils(&whole, gate)).collect();
        for (result, why) in whole.gates.iter_mut().zip(spoiled) {
            if let Some(why) = why {
                result.detail = format!("{}; not to be trusted: {why}", result.detail);
            }
        }
        let routes = whole
            .routes
            .iter()
            .filter_map(|route| {
                route.diffs.as_ref().map(|d| (route.route.clone(), (d.compared, d.differing, d.diff_rate)))
            })
            .collect();
        let json = serde_json::to_vec_pretty(&whole).unwrap_or_default();
        Some((Snapshot { json, report: Some(whole), routes, gates, ratios: None }, transitions))
    }
}

/// Why the shadow's latencies in `report` cannot judge `gate`, if they cannot: its
/// thread runs only on idle CPU time, so on a busy host each latency it takes includes
/// its wait for a CPU (the report's lag). Judged again once that wait (p99) is under
/// 1 ms and under a tenth of production's median in the gate's scope.
pub(crate) fn cpu_wait_spoils(report: &ReplayReport, gate: &Gate) -> Option<String> {
    if !gate.is_latency() {
        return None;
    }
    let wait = report.lag.ms?.p99;
    let production = report
        .routes
        .iter()
        .filter(|route| gate.route.as_ref().is_none_or(|g| *g == route.route))
        .filter(|route| gate.route.is_some() || route.count >= report.min_count)
        .filter_map(|route| route.recorded_ms.map(|l| l.p50))
        .fold(f64::INFINITY, f64::min);
    (wait > 1.0 || wait > production / 10.0).then(|| {
        let median =
            if production.is_finite() { format!(", production's median {production:.2} ms") } else { String::new() };
        format!(
            "the shadow's thread waited up to {wait:.2} ms (p99) for a CPU, which its latencies include{median}; \
             it runs only on CPU time production leaves"
        )
    })
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub(crate) fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The `# HELP` and `# TYPE` lines of a metric.
pub(crate) fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
