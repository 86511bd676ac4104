//! The replay's summary: how faithfully the load shape was reproduced (throughput intended
//! and achieved, lag against the schedule) and how the target compares with the recording
//! per route (status mix, latency percentiles). Serialisable as JSON (with a schema
//! version) and rendered as a terminal table.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::Stats;

/// Version of the JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

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

fn latency(h: &Histogram<u64>) -> Option<Latency> {
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

fn owned(m: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
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
    /// Replayed latency.
    pub replayed_ms: Option<Latency>,
    /// Replayed p99 over recorded p99.
    pub p99_ratio: Option<f64>,
    /// Replay errors by kind.
    pub errors: BTreeMap<String, u64>,
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

/// The whole replay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The target's origin.
    pub target: String,
    /// How it was paced (`1x`, `rate 500/s`, `max`).
    pub pacing: String,
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
    /// Requests per second the schedule asked for.
    pub intended_rps: f64,
    /// Requests per second actually sent.
    pub achieved_rps: f64,
    /// Lag against the schedule.
    pub lag: LagReport,
    /// Per route, busiest first.
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
}

impl ReplayReport {
    /// Builds the report from merged stats.
    pub fn new(stats: &Stats, target: String, pacing: String, started_at: String) -> Self {
        let secs =
            |span: Option<(std::time::Instant, std::time::Instant)>| span.map_or(0.0, |(a, b)| (b - a).as_secs_f64());
        let rate = |n: u64, s: f64| if s > 0.0 { n.saturating_sub(1) as f64 / s } else { 0.0 };
        let mut routes: Vec<RouteReport> = stats
            .routes
            .iter()
            .map(|(route, r)| {
                let recorded_ms = latency(&r.recorded);
                let replayed_ms = latency(&r.replayed);
                let p99_ratio = match (recorded_ms, replayed_ms) {
                    (Some(a), Some(b)) if a.p99 > 0.0 => Some(b.p99 / a.p99),
                    _ => None,
                };
                RouteReport {
                    route: route.clone(),
                    count: r.count,
                    recorded_status: owned(&r.recorded_status),
                    replayed_status: owned(&r.replayed_status),
                    recorded_ms,
                    replayed_ms,
                    p99_ratio,
                    errors: owned(&r.errors),
                }
            })
            .collect();
        routes.sort_by(|a, b| b.count.cmp(&a.count).then(a.route.cmp(&b.route)));
        let sent_secs = secs(stats.sends);
        ReplayReport {
            schema_version: SCHEMA_VERSION,
            target,
            pacing,
            started_at,
            duration_secs: sent_secs,
            sent: stats.sent,
            completed: stats.completed,
            errors: owned(&stats.errors),
            intended_rps: rate(stats.sent, secs(stats.dues)),
            achieved_rps: rate(stats.sent, sent_secs),
            lag: LagReport { ms: latency(&stats.lag), late_over_1ms: stats.late_1ms, late_over_10ms: stats.late_10ms },
            routes,
            results: None,
            results_written: 0,
            results_failed: 0,
            results_waited: 0,
            interrupted: false,
        }
    }

    /// The terminal summary.
    pub fn render(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let ms = |v: Option<f64>| {
            v.map_or("-".to_string(), |v| if v < 10.0 { format!("{v:.2}") } else { format!("{v:.1}") })
        };
        let _ = writeln!(
            out,
            "replayed {} requests against {} ({}){}",
            self.sent,
            self.target,
            self.pacing,
            if self.interrupted { ", stopped early" } else { "" }
        );
        let failed: u64 = self.errors.values().sum();
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            out,
            "  answered      {} of {} ({} without a complete answer: {errors})",
            self.completed, self.sent, failed
        );
        // Unpaced (`--speed max`): nothing was due at a time, so there is no schedule to
        // keep; the "lag" is how long requests waited for a free slot.
        let paced = !self.pacing.starts_with("max");
        if paced {
            let _ = writeln!(
                out,
                "  throughput    {:.1} requests/s sent, {:.1} intended ({:.0}% of the schedule) over {:.1} s",
                self.achieved_rps,
                self.intended_rps,
                if self.intended_rps > 0.0 { 100.0 * self.achieved_rps / self.intended_rps } else { 100.0 },
                self.duration_secs
            );
        } else {
            let _ = writeln!(
                out,
                "  throughput    {:.1} requests/s sent, as fast as the target answered, over {:.1} s",
                self.achieved_rps, self.duration_secs
            );
        }
        if let Some(l) = self.lag.ms.filter(|_| paced) {
            let _ = writeln!(
                out,
                "  schedule lag  p50 {} ms  p99 {} ms  max {} ms; late: {} over 1 ms, {} over 10 ms",
                ms(Some(l.p50)),
                ms(Some(l.p99)),
                ms(Some(l.max)),
                self.lag.late_over_1ms,
                self.lag.late_over_10ms
            );
        }
        let _ = writeln!(out);
        let shown = &self.routes[..top.min(self.routes.len())];
        let width = shown.iter().map(|r| r.route.chars().count()).max().unwrap_or(5).clamp(5, 48);
        let _ = writeln!(
            out,
            "  {:>7}  {:>19}  {:>19}  {:>6}  {:<width$}  status rec → replay",
            "count", "p50 ms rec → replay", "p99 ms rec → replay", "p99 ×", "route"
        );
        let mix = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        for r in shown {
            let (rp, pp) = (r.recorded_ms, r.replayed_ms);
            let status = if r.recorded_status == r.replayed_status {
                format!("same ({})", mix(&r.replayed_status))
            } else {
                format!("{} → {}", mix(&r.recorded_status), mix(&r.replayed_status))
            };
            let _ = writeln!(
                out,
                "  {:>7}  {:>8} → {:>8}  {:>8} → {:>8}  {:>6}  {:<width$}  {status}",
                r.count,
                ms(rp.map(|l| l.p50)),
                ms(pp.map(|l| l.p50)),
                ms(rp.map(|l| l.p99)),
                ms(pp.map(|l| l.p99)),
                r.p99_ratio.map_or("-".to_string(), |x| format!("{x:.2}")),
                r.route
            );
        }
        if self.routes.len() > top {
            let _ = writeln!(out, "  … {} more routes", self.routes.len() - top);
        }
        if let Some(dir) = &self.results {
            let _ = writeln!(out, "\n  responses written to {dir} ({} exchanges)", self.results_written);
            if self.results_failed > 0 {
                let _ = writeln!(
                    out,
                    "  {} responses could NOT be written (see the warnings above: disk full?)",
                    self.results_failed
                );
            }
            if self.results_waited > 0 {
                let _ = writeln!(
                    out,
                    "  the results writer fell behind {} times; sends waited for it (counted in the lag)",
                    self.results_waited
                );
            }
        }
        out
    }
}
