//! The report's model: [`ReplayReport`] and its parts, built from a run's [`Stats`].

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tapedeck_captures::files::DocumentError;

use tapedeck_compare::noise::NoiseModel;
use tapedeck_compare::tally::RouteDiffs;
use tapedeck_compare::CompareConfig;

use crate::gate::{Gate, GateResult};
use crate::stats::Stats;

/// Version of the JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;

/// The `pacing` of a live shadow's report (`proxy --shadow`): its "replay" is production's
/// own traffic, mirrored as it comes.
pub const LIVE_SHADOW: &str = "live shadow";

/// Upper bounds of the latency chart's buckets, ms (the last one is open).
const BUCKETS_MS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// Latency percentiles, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

pub(crate) fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    })
}

/// Recorded and replayed message times, judged like a route's p99.
fn timing((a, b): &(Histogram<u64>, Histogram<u64>), config: &CompareConfig) -> Option<MessageTiming> {
    let (recorded_ms, replayed_ms) = (latency(a)?, latency(b)?);
    let count = b.len();
    let (p99_ratio, p99_flagged) = p99_verdict(Some(recorded_ms), Some(replayed_ms), count, config);
    Some(MessageTiming { count, recorded_ms, replayed_ms, p99_ratio, p99_flagged })
}

fn owned(m: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Latency distributions for charts: requests per bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// Upper bound of each bucket, ms; the last bucket (one more count) is open.
    pub upper_ms: Vec<f64>,
    /// Recorded requests per bucket.
    pub recorded: Vec<u64>,
    /// Replayed requests per bucket.
    pub replayed: Vec<u64>,
}

fn buckets(recorded: &Histogram<u64>, replayed: &Histogram<u64>) -> Buckets {
    let count = |h: &Histogram<u64>| {
        let mut out = vec![0u64; BUCKETS_MS.len() + 1];
        for v in h.iter_recorded() {
            let ms = v.value_iterated_to() as f64 / 1000.0;
            let i = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
            out[i] += v.count_at_value();
        }
        out
    };
    Buckets { upper_ms: BUCKETS_MS.to_vec(), recorded: count(recorded), replayed: count(replayed) }
}

/// One route.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteReport {
    /// `METHOD /template`.
    pub route: String,
    /// Requests replayed.
    pub count: u64,
    /// Recorded status classes.
    pub recorded_status: BTreeMap<String, u64>,
    /// Replayed status classes.
    pub replayed_status: BTreeMap<String, u64>,
    /// Recorded latency (time to last byte).
    pub recorded_ms: Option<Latency>,
    /// Replayed latency; requests that timed out count at the time they gave up.
    pub replayed_ms: Option<Latency>,
    /// Requests that timed out (inside `replayed_ms`, at no less than `--timeout`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timed_out: u64,
    /// Replayed p99 over recorded p99.
    pub p99_ratio: Option<f64>,
    /// Replay errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// True when the p99 ratio is over the flag threshold (by enough ms, over enough
    /// requests).
    #[serde(default)]
    pub p99_flagged: bool,
    /// Response differences, when compared.
    #[serde(default)]
    pub diffs: Option<RouteDiffs>,
    /// Latency distributions.
    #[serde(default)]
    pub latency_buckets: Option<Buckets>,
    /// Latency and statuses are compared with a baseline run (`report --baseline`), not
    /// with the recording; response differences stay against the recording.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub against_baseline: bool,
    /// A live shadow's route: its "recording" is production's answer of the moment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub against_production: bool,
    /// Streams (gRPC answers of several messages, WebSocket sessions): time to the
    /// server's first message (the route's latency is the whole stream's, or a session's
    /// handshake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_message: Option<MessageTiming>,
    /// WebSocket sessions: how long the server took to answer a client's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<MessageTiming>,
}

/// Message timing of a route's streams, recorded and replayed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MessageTiming {
    /// Times measured in the replay.
    pub count: u64,
    /// Recorded.
    pub recorded_ms: Latency,
    /// Replayed.
    pub replayed_ms: Latency,
    /// Replayed p99 over recorded p99.
    pub p99_ratio: Option<f64>,
    /// Over the flag threshold, as the route's own p99.
    #[serde(default)]
    pub p99_flagged: bool,
}

impl RouteReport {
    /// Replayed 5xx beyond the recorded ones.
    pub fn new_5xx(&self) -> u64 {
        let n = |m: &BTreeMap<String, u64>| m.get("5xx").copied().unwrap_or(0);
        n(&self.replayed_status).saturating_sub(n(&self.recorded_status))
    }

    /// Replayed gRPC server faults (UNAVAILABLE, INTERNAL … : gRPC's 5xx) beyond the
    /// recorded ones.
    pub fn new_grpc_faults(&self) -> u64 {
        let n = |m: &BTreeMap<String, u64>| {
            m.iter().filter(|(k, _)| tapedeck_captures::proto::grpc_server_fault(k)).map(|(_, v)| v).sum::<u64>()
        };
        n(&self.replayed_status).saturating_sub(n(&self.recorded_status))
    }

    /// Requests without a (complete) response.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// What is wrong with this route, in words; empty when nothing is.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (base, rate_base) = if self.against_baseline {
            ("the baseline run", "in the baseline run")
        } else if self.against_production {
            ("production", "in production")
        } else {
            ("the recording", "recorded")
        };
        if let Some(d) = self.diffs.as_ref().filter(|d| d.differing > 0) {
            out.push(format!(
                "{} of {} responses differ from {} ({:.1}%)",
                d.differing,
                d.compared,
                if self.against_production { "production's" } else { "the recording" },
                100.0 * d.diff_rate
            ));
        }
        if self.p99_flagged {
            if let (Some(a), Some(b), Some(x)) = (self.recorded_ms, self.replayed_ms, self.p99_ratio) {
                out.push(format!("p99 {x:.2}× {base} ({:.1} → {:.1} ms)", a.p99, b.p99));
            }
        }
        for (timing, what) in
            [(self.first_message, "first message of a stream"), (self.answers, "answers to client messages")]
        {
            if let Some(f) = timing.filter(|f| f.p99_flagged) {
                out.push(format!(
                    "{what} p99 {:.2}× {base} ({:.1} → {:.1} ms)",
                    f.p99_ratio.unwrap_or_default(),
                    f.recorded_ms.p99,
                    f.replayed_ms.p99
                ));
            }
        }
        if self.new_5xx() > 0 {
            out.push(format!("{} more 5xx than {rate_base}", self.new_5xx()));
        }
        if self.new_grpc_faults() > 0 {
            out.push(format!(
                "{} more gRPC server faults (UNAVAILABLE, INTERNAL …) than {rate_base}",
                self.new_grpc_faults()
            ));
        }
        if self.error_count() > 0 {
            out.push(format!("{} requests without an answer ({})", self.error_count(), mix(&self.errors)));
        }
        if self.timed_out > 0 {
            out.push(format!(
                "{} of {} timed out ({:.1}%), counted in the latency at the time they gave up",
                self.timed_out,
                self.count,
                100.0 * self.timed_out as f64 / self.count.max(1) as f64,
            ));
        }
        out
    }

    fn severity(&self) -> (bool, u64, u64) {
        let differing = self.diffs.as_ref().map_or(0, |d| d.differing);
        (
            !self.problems().is_empty(),
            differing + self.new_5xx() + self.new_grpc_faults() + self.error_count(),
            self.count,
        )
    }
}

/// Damage to the tapes replayed: exchanges that could not be read were not replayed, so
/// the run covers less than the recording.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TapeDamage {
    /// Segments (files) damaged or unreadable.
    pub segments: u64,
    /// Damaged regions skipped.
    pub regions: u64,
    /// File bytes that could not be read.
    pub bytes_skipped: u64,
    /// Exchanges lost: exact when `exact` (closed segments, whole tapes read), else at
    /// least this many.
    pub exchanges_lost: u64,
    /// Whether `exchanges_lost` is exact.
    pub exact: bool,
    /// The first problems, each naming its file.
    pub problems: Vec<String>,
}

impl TapeDamage {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{} damaged region(s) in {} tape segment(s), {} skipped: {}{} exchange(s) not replayed; see `tapedeck inspect`",
            self.regions,
            self.segments,
            bytes(self.bytes_skipped),
            if self.exact { "" } else { "at least " },
            self.exchanges_lost
        )
    }
}

/// Lag of sends against the schedule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LagReport {
    /// Percentiles, ms.
    pub ms: Option<Latency>,
    /// Sends more than 1 ms late.
    pub late_over_1ms: u64,
    /// Sends more than 10 ms late.
    pub late_over_10ms: u64,
}

/// Requests over time, since the replay's start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// Width of a bucket, seconds.
    pub bucket_secs: f64,
    /// Requests due per bucket: the recording's shape at the replay's tempo.
    pub recorded: Vec<u64>,
    /// Requests sent per bucket.
    pub replayed: Vec<u64>,
}

/// The comparison over all routes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Responses compared (both sides answered).
    pub compared: u64,
    /// Responses with a difference that is not noise.
    pub differing: u64,
    /// `differing / compared`.
    pub diff_rate: f64,
    /// Keys set apart as noise (all routes).
    pub noise_keys: u64,
    /// Recorded values replaced by the target's own in later requests (correlation).
    pub substitutions: u64,
    /// Requests sent twice to learn the target's noise (`--noise-probe`).
    pub probes: u64,
    /// Routes whose p99 is flagged.
    pub slower_routes: u64,
    /// Complete answers not compared because the comparer had fallen behind (waiting for
    /// it would have delayed the sends): `differing` is over `compared` only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shed: u64,
    /// Noise probes (in `probes`) the target did not answer completely: reset, cut, timed
    /// out. They teach nothing, but a target failing them is failing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub probes_failed: u64,
}

/// Where a baseline comparison's "recorded" side came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineInfo {
    /// The baseline report.
    pub path: String,
    /// Its start.
    pub started_at: String,
    /// Its throughput.
    pub achieved_rps: f64,
    /// Its requests.
    pub sent: u64,
    /// Its requests without an answer.
    pub errors: u64,
}

/// The whole replay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The target's origin.
    pub target: String,
    /// How it was paced (`1x`, `rate 500/s`, `max`).
    pub pacing: String,
    /// The shard this run replayed (`K/N`, with `--shard`); absent for a whole replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// A digest (hex) of the exchanges the run read, every shard's, when it read them to
    /// the end: shards of one run agree on it (`report --merge` says when they do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    /// Seconds from the first to the last send.
    pub duration_secs: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered completely.
    pub completed: u64,
    /// Requests without a complete answer, by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first cause seen for error kinds that have one worth reading (`tls`:
    /// `invalid peer certificate: UnknownIssuer`), and what to do about it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_causes: BTreeMap<String, String>,
    /// Requests per second the schedule asked for.
    pub intended_rps: f64,
    /// Requests per second actually sent.
    pub achieved_rps: f64,
    /// Lag against the schedule.
    pub lag: LagReport,
    /// Per route, the ones with problems first.
    pub routes: Vec<RouteReport>,
    /// Where the responses were written, if anywhere.
    pub results: Option<String>,
    /// Responses recorded in the results tape (fewer than completed only if the writer
    /// fell behind or failed).
    pub results_written: u64,
    /// Responses that could not be written (disk full, …).
    #[serde(default)]
    pub results_failed: u64,
    /// Responses that waited for the results writer (the sends behind them were delayed).
    #[serde(default)]
    pub results_waited: u64,
    /// True when the replay was stopped early (Ctrl-C, --duration).
    pub interrupted: bool,
    /// What of the tapes could not be read (absent when they were whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tape_damage: Option<TapeDamage>,
    /// Routes with fewer requests are not judged by latency (flags, global ratio gates).
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// The comparison, when responses were compared.
    #[serde(default)]
    pub compare: Option<CompareSummary>,
    /// Requests over time.
    #[serde(default)]
    pub timeline: Option<TimelineReport>,
    /// Gates and how they came out.
    #[serde(default)]
    pub gates: Vec<GateResult>,
    /// Set when this report compares a run with an earlier one (`report --baseline`): the
    /// "recorded" side is the baseline run.
    #[serde(default)]
    pub baseline: Option<BaselineInfo>,
    /// When this report merges shards' reports (`report --merge`): each shard and its
    /// file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// The dependency mocks the replay ran (`--mock NAME=ADDR`): the calls the target
    /// made to each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mocks: Vec<crate::mocks::MockReport>,
    /// The run's raw counts (HDR histograms in base64, difference tallies, the timeline),
    /// for `tapedeck report --merge`; not meant to be read otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Box<crate::merge::StatsDoc>>,
    /// The noise model the run ended with (what was known plus what was learned), for
    /// `--noise-model FILE`; not part of the JSON report.
    #[serde(skip)]
    pub noise: NoiseModel,
}

/// `n` bytes for people (`12.0 KiB`).
pub fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_min_count() -> u64 {
    CompareConfig::default().min_count
}

impl ReplayReport {
    /// Scrubs the request targets the examples name, so no report prints a value a rule
    /// would have scrubbed (recordings made with `--no-scrub`). The example values were
    /// scrubbed when the difference was found, before they were shortened
    /// ([`CompareConfig::scrub`](tapedeck_compare::CompareConfig)).
    pub fn scrub_examples(&mut self, scrubber: &tapedeck_captures::scrub::Scrubber) {
        for finding in self.routes.iter_mut().filter_map(|r| r.diffs.as_mut()).flat_map(|d| d.findings.iter_mut()) {
            let e = &mut finding.example;
            if let Some((method, target)) = e.request.split_once(' ') {
                e.request = format!("{method} {}", scrubber.scrub_target(target));
            }
        }
    }

    /// Scrubs the examples' requests and both values (a live shadow's: production's own
    /// answers and a canary's, neither scrubbed before), each value by where it was.
    pub fn scrub_examples_and_values(&mut self, scrubber: &tapedeck_captures::scrub::Scrubber) {
        self.scrub_examples(scrubber);
        for finding in self.routes.iter_mut().filter_map(|r| r.diffs.as_mut()).flat_map(|d| d.findings.iter_mut()) {
            let e = &mut finding.example;
            e.recorded = scrubber.scrub_value(&e.at, &e.recorded);
            e.replayed = scrubber.scrub_value(&e.at, &e.replayed);
            if let Some(answer) = &mut e.answer {
                *answer = scrubber.scrub_value("body", answer);
            }
        }
    }

    /// Builds the report from merged stats; `compare` and `noise` (what was known plus
    /// what was learned) when responses were compared.
    pub fn new(
        stats: &Stats,
        target: String,
        pacing: String,
        started_at: String,
        compare: Option<(&CompareConfig, &NoiseModel)>,
    ) -> Self {
        let secs = |span: Option<(u64, u64)>| span.map_or(0.0, |(a, b)| b.saturating_sub(a) as f64 / 1e9);
        let rate = |n: u64, s: f64| if s > 0.0 { n.saturating_sub(1) as f64 / s } else { 0.0 };
        let defaults = CompareConfig::default();
        let config = compare.map_or(&defaults, |(c, _)| c);
        let mut routes: Vec<RouteReport> = stats
            .routes
            .iter()
            .map(|(route, r)| {
                let recorded_ms = latency(&r.recorded);
                let replayed_ms = latency(&r.replayed);
                // A route with timeouts is judged whatever its size: a timeout is no noise.
                let judged = if r.timeouts > 0 { r.count.max(config.min_count) } else { r.count };
                let (p99_ratio, p99_flagged) = p99_verdict(recorded_ms, replayed_ms, judged, config);
                RouteReport {
                    route: route.clone(),
                    count: r.count,
                    recorded_status: owned(&r.recorded_status),
                    replayed_status: owned(&r.replayed_status),
                    recorded_ms,
                    replayed_ms,
                    timed_out: r.timeouts,
                    p99_ratio,
                    errors: owned(&r.errors),
                    p99_flagged,
                    diffs: compare.map(|(_, noise)| r.diffs.finish(route, noise)),
                    latency_buckets: Some(buckets(&r.recorded, &r.replayed)),
                    against_baseline: false,
                    against_production: pacing == crate::LIVE_SHADOW,
                    first_message: r.first_message.as_deref().and_then(|pair| timing(pair, config)),
                    answers: r.answers.as_deref().and_then(|pair| timing(pair, config)),
                }
            })
            .collect();
        sort_by_severity(&mut routes);
        let summary = compare.map(|_| {
            let diffs = || routes.iter().filter_map(|r| r.diffs.as_ref());
            let (compared, differing) =
                (diffs().map(|d| d.compared).sum::<u64>(), diffs().map(|d| d.differing).sum::<u64>());
            CompareSummary {
                compared,
                differing,
                diff_rate: if compared > 0 { differing as f64 / compared as f64 } else { 0.0 },
                noise_keys: diffs().map(|d| d.noise.len() as u64).sum(),
                substitutions: stats.substitutions,
                probes: stats.probes,
                slower_routes: routes.iter().filter(|r| r.p99_flagged).count() as u64,
                shed: stats.compare_shed,
                probes_failed: stats.probes_failed,
            }
        });
        let sent_secs = secs(stats.sends);
        let t = &stats.timeline;
        ReplayReport {
            schema_version: SCHEMA_VERSION,
            target,
            pacing,
            started_at,
            shard: None,
            input_digest: None,
            duration_secs: sent_secs,
            sent: stats.sent,
            completed: stats.completed,
            errors: owned(&stats.errors),
            error_causes: BTreeMap::new(),
            intended_rps: rate(stats.sent, secs(stats.dues)),
            achieved_rps: rate(stats.sent, sent_secs),
            lag: LagReport { ms: latency(&stats.lag), late_over_1ms: stats.late_1ms, late_over_10ms: stats.late_10ms },
            routes,
            results: None,
            results_written: 0,
            results_failed: 0,
            results_waited: 0,
            interrupted: false,
            tape_damage: None,
            min_count: config.min_count,
            compare: summary,
            timeline: Some(TimelineReport {
                bucket_secs: t.bucket_ms as f64 / 1000.0,
                recorded: t.due.clone(),
                replayed: t.sent.clone(),
            }),
            gates: Vec::new(),
            baseline: None,
            merged_from: Vec::new(),
            mocks: Vec::new(),
            stats: None,
            noise: NoiseModel::default(),
        }
    }

    /// Evaluates `gates` and keeps their results; true when all pass.
    pub fn apply_gates(&mut self, gates: &[Gate]) -> bool {
        self.gates = gates.iter().map(|g| g.evaluate(self)).collect();
        self.gates.iter().all(|g| g.passed)
    }

    /// True when every gate passed (or there are none).
    pub fn gates_passed(&self) -> bool {
        self.gates.iter().all(|g| g.passed)
    }

    /// Reads a report written by `--report` (or a results directory's `report.json`).
    pub fn load(path: &std::path::Path) -> Result<Self, DocumentError> {
        const WHAT: &str = "replay report";
        let file = if path.is_dir() { path.join(REPORT_FILE) } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|source| DocumentError::Read {
            what: WHAT,
            path: file.clone(),
            source,
        })?;
        Self::parse(text.as_bytes(), &file)
    }

    /// Reads a report from its JSON; `from` names where it came from in errors.
    pub fn parse(json: &[u8], from: &std::path::Path) -> Result<Self, DocumentError> {
        const WHAT: &str = "replay report";
        let invalid = |source| DocumentError::Invalid { what: WHAT, path: from.to_path_buf(), source };
        let value: serde_json::Value = serde_json::from_slice(json).map_err(invalid)?;
        let found = value.get("schema_version").and_then(|v| v.as_u64()).unwrap_or(0);
        if found != u64::from(SCHEMA_VERSION) {
            return Err(DocumentError::Version {
                what: WHAT,
                path: from.to_path_buf(),
                found,
                reads: SCHEMA_VERSION.into(),
            });
        }
        serde_json::from_value(value).map_err(invalid)
    }

    /// Writes the report as pretty JSON: a new file (mode 0600) renamed into place, over an
    /// existing one only when `replace` is true.
    pub fn save(&self, path: &std::path::Path, replace: bool) -> Result<(), DocumentError> {
        let text = serde_json::to_string_pretty(self).expect("a report is plain data") + "\n";
        tapedeck_captures::files::write_output_bytes(path, replace, text.as_bytes())
            .map_err(|source| DocumentError::Write { what: "replay report", source })
    }

    /// The terminal summary, with at most `top` routes in the table.
    pub fn render(&self, top: usize) -> String {
        crate::terminal::render(self, top)
    }
}

/// The p99 ratio (replayed over recorded) and whether it flags the route as slower: over
/// the ratio threshold, by at least the minimum ms, over at least the minimum count.
pub(crate) fn p99_verdict(
    recorded: Option<Latency>,
    replayed: Option<Latency>,
    count: u64,
    config: &CompareConfig,
) -> (Option<f64>, bool) {
    let (Some(a), Some(b)) = (recorded, replayed) else { return (None, false) };
    if a.p99 <= 0.0 {
        return (None, false);
    }
    let ratio = b.p99 / a.p99;
    let flagged =
        count >= config.min_count && ratio > config.p99_ratio_flag && b.p99 - a.p99 >= config.p99_min_delta_ms;
    (Some(ratio), flagged)
}

/// A status or error mix as text: `2xx 10, 5xx 2`.
pub fn mix(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// The report's name inside a results directory.
pub const REPORT_FILE: &str = "report.json";

/// Routes with problems first (most differing first), then the busiest.
pub fn sort_by_severity(routes: &mut [RouteReport]) {
    routes.sort_by(|a, b| b.severity().cmp(&a.severity()).then_with(|| a.route.cmp(&b.route)));
}
