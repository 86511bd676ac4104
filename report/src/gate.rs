//! `--gate` expressions: `[ROUTE:]METRIC OP NUMBER[%]`, e.g. `diff_rate<=0.5%`,
//! `p99_ratio<=1.25`, `errors==0`, `GET /search:p99_ratio<=2`. A gate that cannot be
//! evaluated (no such route, no data) fails: CI should hear about it.

use serde::{Deserialize, Serialize};

use crate::{ReplayReport, RouteReport};

/// Metrics a gate can test.
pub const METRICS: &[(&str, &str)] = &[
    ("diff_rate", "share of compared responses that differ (noise excluded)"),
    ("diffs", "responses that differ (noise excluded)"),
    ("errors", "requests without a response (connect, timeout, reset…)"),
    ("error_rate", "errors / requests sent"),
    ("new_5xx", "replayed 5xx responses beyond the recorded ones"),
    ("new_grpc_faults", "replayed gRPC server faults (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) beyond the recorded ones"),
    ("p50_ratio", "replayed / recorded median latency (globally: the worst route)"),
    ("p95_ratio", "replayed / recorded p95 latency (globally: the worst route)"),
    ("p99_ratio", "replayed / recorded p99 latency (globally: the worst route)"),
    ("lag_p99_ms", "p99 lag of sends behind the schedule, ms (global only)"),
    ("not_compared", "complete answers not compared because the comparer fell behind (global only)"),
    ("mock_unmatched", "calls the target made to a `--mock` that nothing recorded answers: a changed outbound call pattern (global only)"),
    ("tape_damaged_exchanges", "recorded exchanges lost to tape damage, not replayed (global only; at least this many when not exact)"),
];

/// A parsed gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// As written.
    pub text: String,
    /// The route it is scoped to, if any.
    pub route: Option<String>,
    metric: String,
    op: Op,
    value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Eq => (a - b).abs() < 1e-12,
            Op::Ne => (a - b).abs() >= 1e-12,
        }
    }
}

/// How a gate came out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// The gate as written.
    pub gate: String,
    /// True when it holds.
    pub passed: bool,
    /// The measured value, when there is one.
    pub actual: Option<f64>,
    /// A sentence for humans.
    pub detail: String,
}

/// A `--gate` expression that does not parse: what is wrong, the grammar and the metrics.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateError(String);

impl std::str::FromStr for Gate {
    type Err = GateError;

    fn from_str(text: &str) -> Result<Self, GateError> {
        let t = text.trim();
        let (route, expr) = match t.rsplit_once(':') {
            Some((route, expr)) if route.trim().contains(' ') => (Some(route.trim().to_string()), expr.trim()),
            _ => (None, t),
        };
        let at = expr.find(['<', '>', '=', '!']).ok_or_else(|| usage(text, "no comparison (<=, <, >=, >, ==, !=)"))?;
        let (metric, rest) = expr.split_at(at);
        let metric = metric.trim().to_string();
        let (op, number) =
            [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("!=", Op::Ne), ("<", Op::Lt), (">", Op::Gt)]
                .iter()
                .find_map(|(s, op)| rest.strip_prefix(s).map(|n| (*op, n.trim())))
                .ok_or_else(|| usage(text, "unknown comparison"))?;
        if !METRICS.iter().any(|(m, _)| *m == metric) {
            return Err(usage(text, &format!("unknown metric `{metric}`")));
        }
        if route.is_some()
            && matches!(metric.as_str(), "lag_p99_ms" | "tape_damaged_exchanges" | "not_compared" | "mock_unmatched")
        {
            return Err(usage(text, &format!("{metric} is global")));
        }
        let (number, scale) = match number.strip_suffix('%') {
            Some(n) => (n.trim(), 0.01),
            None => (number, 1.0),
        };
        let value: f64 = number.parse().map_err(|_| usage(text, &format!("`{number}` is not a number")))?;
        Ok(Gate { text: t.to_string(), route, metric, op, value: value * scale })
    }
}

fn usage(text: &str, why: &str) -> GateError {
    let metrics: Vec<&str> = METRICS.iter().map(|(m, _)| *m).collect();
    GateError(format!(
        "gate `{text}`: {why}. A gate is `[ROUTE:]METRIC OP NUMBER[%]`, e.g. `diff_rate<=0.5%`, `GET /search:p99_ratio<=1.5`; metrics: {}",
        metrics.join(", ")
    ))
}

fn ratio_of(r: &RouteReport, q: &str) -> Option<f64> {
    let (a, b) = (r.recorded_ms?, r.replayed_ms?);
    let (a, b) = match q {
        "p50_ratio" => (a.p50, b.p50),
        "p95_ratio" => (a.p95, b.p95),
        _ => (a.p99, b.p99),
    };
    (a > 0.0).then(|| b / a)
}

impl Gate {
    /// True for a gate on latency (replayed over recorded).
    pub fn is_latency(&self) -> bool {
        self.metric.ends_with("_ratio")
    }

    /// Evaluates the gate on `report`.
    pub fn evaluate(&self, report: &ReplayReport) -> GateResult {
        let actual = match &self.route {
            Some(route) => match report.routes.iter().find(|r| &r.route == route) {
                Some(r) => self.route_metric(r),
                None => return self.result(None, format!("no route `{route}` in this replay")),
            },
            None => self.global_metric(report),
        };
        match actual {
            Some(v) => {
                let passed = self.op.holds(v, self.value);
                let detail = format!("{} = {}", self.metric, shown(v, &self.metric));
                GateResult { gate: self.text.clone(), passed, actual: Some(v), detail }
            }
            None => self.result(None, format!("{}: no data to judge by", self.metric)),
        }
    }

    fn result(&self, actual: Option<f64>, detail: String) -> GateResult {
        GateResult { gate: self.text.clone(), passed: false, actual, detail }
    }

    fn route_metric(&self, r: &RouteReport) -> Option<f64> {
        let diffs = r.diffs.as_ref();
        match self.metric.as_str() {
            "diff_rate" => diffs.map(|d| d.diff_rate),
            "diffs" => diffs.map(|d| d.differing as f64),
            "errors" => Some(r.error_count() as f64),
            "error_rate" => (r.count > 0).then(|| r.error_count() as f64 / r.count as f64),
            "new_5xx" => Some(r.new_5xx() as f64),
            "new_grpc_faults" => Some(r.new_grpc_faults() as f64),
            q => ratio_of(r, q),
        }
    }

    fn global_metric(&self, report: &ReplayReport) -> Option<f64> {
        let compared: u64 = report.routes.iter().filter_map(|r| r.diffs.as_ref()).map(|d| d.compared).sum();
        let differing: u64 = report.routes.iter().filter_map(|r| r.diffs.as_ref()).map(|d| d.differing).sum();
        let errors = report.errors.values().sum::<u64>() as f64;
        match self.metric.as_str() {
            "diff_rate" => (compared > 0).then(|| differing as f64 / compared as f64),
            "diffs" => (compared > 0).then_some(differing as f64),
            "errors" => Some(errors),
            "error_rate" => (report.sent > 0).then(|| errors / report.sent as f64),
            "new_5xx" => Some(report.routes.iter().map(RouteReport::new_5xx).sum::<u64>() as f64),
            "new_grpc_faults" => Some(report.routes.iter().map(RouteReport::new_grpc_faults).sum::<u64>() as f64),
            "lag_p99_ms" => report.lag.ms.map(|l| l.p99),
            "tape_damaged_exchanges" => Some(report.tape_damage.as_ref().map_or(0, |d| d.exchanges_lost) as f64),
            "not_compared" => report.compare.as_ref().map(|c| c.shed as f64),
            // No mock, no data: a gate on mocks without one fails rather than passes.
            "mock_unmatched" => {
                (!report.mocks.is_empty()).then(|| report.mocks.iter().map(|m| m.unmatched()).sum::<u64>() as f64)
            }
            q => report
                .routes
                .iter()
                // A route with timeouts is judged whatever its size: a timeout is no noise.
                .filter(|r| r.count >= report.min_count || r.timed_out > 0)
                .filter_map(|r| ratio_of(r, q))
                .fold(None, |worst: Option<f64>, v| Some(worst.map_or(v, |w| w.max(v)))),
        }
    }
}

fn shown(v: f64, metric: &str) -> String {
    match metric {
        "diff_rate" | "error_rate" => format!("{:.2}%", v * 100.0),
        "diffs"
        | "errors"
        | "new_5xx"
        | "new_grpc_faults"
        | "tape_damaged_exchanges"
        | "not_compared"
        | "mock_unmatched" => {
            format!("{v:.0}")
        }
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse() {
        let g: Gate = "diff_rate<=0.5%".parse().unwrap();
        assert_eq!((g.route.as_deref(), g.metric.as_str(), g.op, g.value), (None, "diff_rate", Op::Le, 0.005));
        let g: Gate = "GET /search/{id}: p99_ratio < 1.5".parse().unwrap();
        assert_eq!(
            (g.route.as_deref(), g.metric.as_str(), g.op, g.value),
            (Some("GET /search/{id}"), "p99_ratio", Op::Lt, 1.5)
        );
        let g: Gate = "errors==0".parse().unwrap();
        assert!(g.op.holds(0.0, g.value) && !g.op.holds(1.0, g.value));
        for bad in ["diff_rate", "latency<=1", "errors<=x", "GET /a:lag_p99_ms<1", "errors=<1"] {
            assert!(bad.parse::<Gate>().is_err(), "{bad}");
        }
    }
}
