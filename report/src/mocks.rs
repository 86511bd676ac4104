//! The dependency mocks a replay ran beside it (`replay --mock NAME=ADDR`): what the
//! service under test asked of each dependency, against what production's service asked of
//! it in the recorded window. A call production never made (nothing recorded answers it) is
//! a changed outbound call pattern: a finding.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::junit::{self, escape};
use crate::model::{latency, Latency};

/// One mock.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MockReport {
    /// The service it stood in for (`--mock NAME=…`, the tapes' `service` label).
    pub service: String,
    /// Where it answered.
    pub address: String,
    /// How its answers were timed (`recorded`, `3x`, `+200ms`, `p99`).
    pub latency: String,
    /// Failures injected on purpose (`--mock-fault`), as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// Recorded answers it served from.
    pub answers: u64,
    /// The recorded window they were taken from (RFC 3339 times), when the replay had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Per route, the ones with calls nothing recorded answers first.
    pub routes: Vec<MockRoute>,
    /// Calls refused unread (a body over 16 MiB, broken off or slower than 60 s), not in
    /// `routes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: u64,
}

/// One route of a mock.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MockRoute {
    /// `METHOD /template`.
    pub route: String,
    /// The route's recorded answers the mock served from: the calls production's service
    /// made in the mock's window (the replayed window and 30 s more, the whole recording
    /// without one), whatever `--route`, `--limit`, `--sample` or `--shard` kept of the
    /// service's own requests.
    pub recorded: u64,
    /// Calls answered by a recorded exchange of the same request.
    pub exact: u64,
    /// Calls answered by the recorded exchange most like them.
    pub similar: u64,
    /// Calls nothing was recorded for (answered "not recorded", or passed through).
    pub unmatched: u64,
    /// Of those, answered by the mock's passthrough service.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub passed_through: u64,
    /// Recorded failures reproduced (a reset or a timeout production's dependency gave).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recorded_failures: u64,
    /// Failures injected, by kind (`503`, `reset`, `timeout`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub injected: BTreeMap<String, u64>,
    /// Calls whose caller went away before the answer was out: its timeout fired, most
    /// likely.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub abandoned: u64,
    /// The recorded answers' latency (request to last byte).
    pub recorded_ms: Option<Latency>,
    /// How long the mock's answers took (request to last byte handed to the connection).
    pub served_ms: Option<Latency>,
    /// `served_ms`'s raw counts (HDR V2, base64), for `report --merge`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub served_counts: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MockRoute {
    /// A route's counts, its recorded latencies (sorted, any unit convertible to µs) and
    /// the histogram (µs) of the answers served.
    pub fn new(route: String, recorded_us: &[u64], served_us: Option<&Histogram<u64>>) -> MockRoute {
        let mut recorded = Histogram::<u64>::new_with_bounds(1, crate::stats::MAX_LAG_US, 3).expect("valid bounds");
        for us in recorded_us {
            let _ = recorded.record((*us).clamp(1, crate::stats::MAX_LAG_US));
        }
        MockRoute {
            route,
            recorded: recorded_us.len() as u64,
            recorded_ms: latency(&recorded),
            served_ms: served_us.and_then(latency),
            served_counts: served_us.map(crate::merge::encode).unwrap_or_default(),
            ..MockRoute::default()
        }
    }

    /// Calls made to this route, however they were answered.
    pub fn calls(&self) -> u64 {
        self.exact + self.similar + self.unmatched
    }

    /// Injected failures, all kinds.
    pub fn injected_total(&self) -> u64 {
        self.injected.values().sum()
    }
}

impl MockReport {
    /// Calls nothing recorded answers, all routes.
    pub fn unmatched(&self) -> u64 {
        self.routes.iter().map(|r| r.unmatched).sum()
    }

    /// Calls made, all routes.
    pub fn calls(&self) -> u64 {
        self.routes.iter().map(MockRoute::calls).sum()
    }

    /// Puts the routes with unmatched calls first, then by calls.
    pub fn sort(&mut self) {
        self.routes.sort_by(|a, b| {
            (b.unmatched > 0).cmp(&(a.unmatched > 0)).then(b.calls().cmp(&a.calls())).then(a.route.cmp(&b.route))
        });
    }

    /// What is wrong, in words: calls production's service never made.
    pub fn problems(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.unmatched > 0)
            .map(|r| {
                let what = if r.recorded == 0 {
                    "a call production's service never made (nothing recorded for the route)"
                } else {
                    "calls unlike any recorded one"
                };
                format!("{}: {} × {what}", r.route, r.unmatched)
            })
            .collect()
    }

    /// Routes whose callers gave up before the answer came, in words: the target's own
    /// timeouts firing (at a `--mock-latency` that slows the dependency, on purpose).
    pub fn given_up(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.abandoned > 0)
            .map(|r| {
                let answers = r.recorded_ms.map(|l| format!(", recorded p50 {:.1} ms", l.p50)).unwrap_or_default();
                format!(
                    "{}: the target went away before the whole answer on {} of {} calls (its timeout? latency {}{answers})",
                    r.route,
                    r.abandoned,
                    r.calls(),
                    self.latency
                )
            })
            .collect()
    }
}

fn ms(l: Option<Latency>, f: fn(&Latency) -> f64) -> String {
    l.map_or("-".to_string(), |l| {
        let v = f(&l);
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    })
}

fn failures(r: &MockRoute) -> String {
    let mut out: Vec<String> = r.injected.iter().map(|(k, n)| format!("{n} × {k} injected")).collect();
    if r.recorded_failures > 0 {
        out.push(format!("{} as recorded", r.recorded_failures));
    }
    if r.passed_through > 0 {
        out.push(format!("{} passed through", r.passed_through));
    }
    out.join(", ")
}

fn heading(m: &MockReport) -> String {
    let faults = if m.faults.is_empty() { String::new() } else { format!(", faults {}", m.faults.join("; ")) };
    let window = m.window.as_ref().map(|w| format!(", recorded {w}")).unwrap_or_default();
    let refused = if m.refused > 0 {
        format!(", {} refused unread (a body over 16 MiB, broken off or too slow)", m.refused)
    } else {
        String::new()
    };
    format!(
        "{} at {}: {} calls ({} not recorded{refused}), {} recorded answers{window}, latency {}{faults}",
        m.service,
        m.address,
        m.calls() + m.refused,
        m.unmatched(),
        m.answers,
        m.latency
    )
}

/// Routes, and findings, shown per mock in a terminal (the JSON and HTML have them all).
const SHOWN: usize = 20;

/// The mocks as text for a terminal.
pub fn terminal(out: &mut String, mocks: &[MockReport]) {
    if mocks.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ndependency mocks:");
    for m in mocks {
        let _ = writeln!(out, "  {}", heading(m));
        let _ = writeln!(
            out,
            "    {:>8} {:>7} {:>7} {:>9}  {:>8} → {:>8}  {:>8} → {:>8}  route (p50, p99 ms recorded → served)",
            "recorded", "exact", "similar", "unmatched", "p50", "p50", "p99", "p99"
        );
        for r in m.routes.iter().take(SHOWN) {
            let f = failures(r);
            let _ = writeln!(
                out,
                "    {:>8} {:>7} {:>7} {:>9}  {:>8} → {:>8}  {:>8} → {:>8}  {}{}",
                r.recorded,
                r.exact,
                r.similar,
                r.unmatched,
                ms(r.recorded_ms, |l| l.p50),
                ms(r.served_ms, |l| l.p50),
                ms(r.recorded_ms, |l| l.p99),
                ms(r.served_ms, |l| l.p99),
                r.route,
                if f.is_empty() { String::new() } else { format!("  ({f})") }
            );
        }
        if m.routes.len() > SHOWN {
            let _ = writeln!(out, "    … {} more routes (see the JSON or HTML report)", m.routes.len() - SHOWN);
        }
        let problems = m.problems();
        for p in problems.iter().take(SHOWN) {
            let _ = writeln!(out, "    changed call pattern: {p}");
        }
        if problems.len() > SHOWN {
            let _ = writeln!(out, "    … {} more routes with calls nothing recorded answers", problems.len() - SHOWN);
        }
        for g in m.given_up().iter().take(SHOWN) {
            let _ = writeln!(out, "    {g}");
        }
    }
}

/// The mocks as an HTML section.
pub fn html(o: &mut String, mocks: &[MockReport]) {
    if mocks.is_empty() {
        return;
    }
    o.push_str("<h2>Dependency mocks</h2>");
    for m in mocks {
        let _ = write!(o, "<p>{}</p>", escape(&heading(m)));
        o.push_str(
            "<div class=\"wide\"><table><tr><th class=\"l\">route</th><th>recorded</th><th>exact</th><th>similar</th>\
             <th>unmatched</th><th>p50 ms recorded</th><th>p50 ms served</th><th>p99 ms recorded</th>\
             <th>p99 ms served</th><th class=\"l\">failures</th></tr>",
        );
        for r in &m.routes {
            let _ = write!(
                o,
                "<tr><td class=\"l\"><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                escape(&r.route),
                r.recorded,
                r.exact,
                r.similar,
                if r.unmatched > 0 { "bad" } else { "" },
                r.unmatched,
                ms(r.recorded_ms, |l| l.p50),
                ms(r.served_ms, |l| l.p50),
                ms(r.recorded_ms, |l| l.p99),
                ms(r.served_ms, |l| l.p99),
                escape(&failures(r))
            );
        }
        o.push_str("</table></div>");
        let (problems, given_up) = (m.problems(), m.given_up());
        if !problems.is_empty() || !given_up.is_empty() {
            o.push_str("<ul>");
            for p in problems {
                let _ = write!(o, "<li class=\"bad\">changed call pattern: {}</li>", escape(&p));
            }
            for g in given_up {
                let _ = write!(o, "<li>{}</li>", escape(&g));
            }
            o.push_str("</ul>");
        }
    }
}

/// The mocks as a JUnit test suite: one case per mock, failing on calls nothing recorded
/// answers.
pub fn junit(out: &mut String, mocks: &[MockReport]) {
    if mocks.is_empty() {
        return;
    }
    let failures = mocks.iter().filter(|m| m.unmatched() > 0).count();
    let _ = writeln!(out, "  <testsuite name=\"dependency mocks\" tests=\"{}\" failures=\"{failures}\">", mocks.len());
    for m in mocks {
        let _ = write!(out, "    <testcase classname=\"tapedeck.mocks\" name=\"{}\"", junit::escape(&m.service));
        let problems = m.problems();
        if problems.is_empty() {
            let _ = writeln!(out, "/>");
        } else {
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\" type=\"call pattern\">{}</failure>\n    </testcase>",
                junit::escape(&format!("{} calls nothing recorded answers", m.unmatched())),
                junit::escape(&problems.join("\n"))
            );
        }
    }
    let _ = writeln!(out, "  </testsuite>");
}

/// Shards' mocks as one: the same service's calls summed route by route (each shard ran
/// its own mock from the same recording), their served latency merged.
pub fn merge(parts: impl IntoIterator<Item = Vec<MockReport>>) -> Vec<MockReport> {
    // Each route with its served histogram, merged.
    type Routes = BTreeMap<String, (MockRoute, Histogram<u64>)>;
    let mut by_service: BTreeMap<String, (MockReport, Routes)> = BTreeMap::new();
    for mocks in parts {
        for m in mocks {
            let (into, routes) = by_service
                .entry(m.service.clone())
                .or_insert_with(|| (MockReport { routes: Vec::new(), refused: 0, ..m.clone() }, BTreeMap::new()));
            into.refused += m.refused;
            if !into.address.split(", ").any(|a| a == m.address) {
                into.address = format!("{}, {}", into.address, m.address);
            }
            for r in m.routes {
                let (route, served) = routes.entry(r.route.clone()).or_insert_with(|| {
                    let h = Histogram::new_with_bounds(1, crate::stats::MAX_LAG_US, 3).expect("valid bounds");
                    (
                        MockRoute {
                            route: r.route.clone(),
                            recorded: r.recorded,
                            recorded_ms: r.recorded_ms,
                            ..MockRoute::default()
                        },
                        h,
                    )
                });
                route.exact += r.exact;
                route.similar += r.similar;
                route.unmatched += r.unmatched;
                route.passed_through += r.passed_through;
                route.recorded_failures += r.recorded_failures;
                route.abandoned += r.abandoned;
                for (k, n) in r.injected {
                    *route.injected.entry(k).or_default() += n;
                }
                // Counts that do not read back are left out (the merge says nothing of
                // them; the calls are still counted).
                let _ = crate::merge::decode_into(&r.served_counts, served);
            }
        }
    }
    by_service
        .into_values()
        .map(|(mut m, routes)| {
            m.routes = routes
                .into_values()
                .map(|(mut r, served)| {
                    r.served_ms = latency(&served);
                    r.served_counts = if served.is_empty() { String::new() } else { crate::merge::encode(&served) };
                    r
                })
                .collect();
            m.sort();
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(values_ms: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 2 * 3600 * 1_000_000, 3).unwrap();
        for v in values_ms {
            h.record(v * 1000).unwrap();
        }
        h
    }

    fn shard(address: &str, exact: u64, unmatched: u64, served_ms: &[u64]) -> MockReport {
        let charge = MockRoute {
            exact,
            abandoned: 1,
            ..MockRoute::new("POST /charge".into(), &[180_000, 200_000], Some(&served(served_ms)))
        };
        let mut routes = vec![charge];
        if unmatched > 0 {
            routes.push(MockRoute { unmatched, ..MockRoute::new("GET /loyalty/{id}".into(), &[], None) });
        }
        MockReport {
            service: "payments".into(),
            address: address.into(),
            latency: "recorded".into(),
            answers: 2,
            routes,
            ..MockReport::default()
        }
    }

    #[test]
    fn shards_mocks_add_up_and_calls_nothing_recorded_are_findings() {
        let a = shard("10.0.0.1:7001", 3, 0, &[180, 181, 182]);
        let b = shard("10.0.0.2:7001", 2, 4, &[400, 410]);
        assert!(a.problems().is_empty());
        assert_eq!(
            b.problems(),
            ["GET /loyalty/{id}: 4 × a call production's service never made (nothing recorded for the route)"]
        );
        let merged = merge([vec![a], vec![b]]);
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        assert_eq!(m.address, "10.0.0.1:7001, 10.0.0.2:7001");
        assert_eq!((m.calls(), m.unmatched()), (9, 4));
        // Routes with unmatched calls first.
        assert_eq!(m.routes[0].route, "GET /loyalty/{id}");
        let charge = &m.routes[1];
        // The recording is the same for every shard: not summed.
        assert_eq!((charge.recorded, charge.exact, charge.abandoned), (2, 5, 2));
        // Served latency from both shards' counts: 5 answers, the slowest from shard b.
        let served = charge.served_ms.unwrap();
        assert!((409.0..=411.0).contains(&served.max), "{served:?}");
        assert!((181.0..=183.0).contains(&served.p50), "{served:?}");
        assert_eq!(m.given_up().len(), 1);
        let mut text = String::new();
        terminal(&mut text, &merged);
        assert!(text.contains("changed call pattern: GET /loyalty/{id}: 4 ×"), "{text}");
        let mut xml = String::new();
        junit(&mut xml, &merged);
        assert!(xml.contains("failures=\"1\"") && xml.contains("4 calls nothing recorded answers"), "{xml}");
    }

    #[test]
    fn the_mock_gate_needs_a_mock() {
        use crate::gate::Gate;
        let report = |mocks: Vec<MockReport>| {
            let mut r = crate::ReplayReport::new(
                &crate::stats::Stats::default(),
                "http://staging".into(),
                "max".into(),
                String::new(),
                None,
            );
            r.mocks = mocks;
            r
        };
        let gate: Gate = "mock_unmatched==0".parse().unwrap();
        assert!(!gate.evaluate(&report(Vec::new())).passed, "no mock, nothing to judge: fails");
        assert!(gate.evaluate(&report(vec![shard("a:1", 1, 0, &[5])])).passed);
        let failed = gate.evaluate(&report(vec![shard("a:1", 1, 3, &[5])]));
        assert_eq!((failed.passed, failed.actual), (false, Some(3.0)));
        assert!("GET /a: mock_unmatched==0".parse::<Gate>().is_err(), "global only");
    }
}
