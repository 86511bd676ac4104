//! The report as JUnit XML for CI systems: one test case per route (it fails when the route
//! differs from the recording, is flagged slower, or lost answers) and one per gate.

use std::fmt::Write;

use super::ReplayReport;

/// Escapes text for XML attributes and content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Renders `report` as a JUnit `<testsuites>` document.
pub fn render(report: &ReplayReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let route_failures = report.routes.iter().filter(|r| !r.problems().is_empty()).count();
    let gate_failures = report.gates.iter().filter(|g| !g.passed).count();
    let mock_failures = report.mocks.iter().filter(|m| m.unmatched() > 0).count();
    let _ = writeln!(
        out,
        "<testsuites name=\"tapedeck replay\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        report.routes.len() + report.gates.len() + report.mocks.len(),
        route_failures + gate_failures + mock_failures,
        report.duration_secs
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"routes against {}\" tests=\"{}\" failures=\"{route_failures}\" timestamp=\"{}\">",
        escape(&report.target),
        report.routes.len(),
        escape(&report.started_at)
    );
    for r in &report.routes {
        let time = r.replayed_ms.map_or(0.0, |l| l.p50 / 1000.0);
        let _ =
            write!(out, "    <testcase classname=\"tapedeck.routes\" name=\"{}\" time=\"{time:.6}\"", escape(&r.route));
        let problems = r.problems();
        if problems.is_empty() {
            let _ = writeln!(out, "/>");
            continue;
        }
        let mut detail = String::new();
        for f in r.diffs.iter().flat_map(|d| d.findings.iter()).take(20) {
            let e = &f.example;
            let _ = writeln!(
                detail,
                "{} {} in {} response(s), e.g. {} at {}: recorded `{}` → replayed `{}`{}",
                f.kind.as_str(),
                f.key,
                f.count,
                e.request,
                e.at,
                e.recorded,
                e.replayed,
                e.answer.as_ref().map(|a| format!(" ({a})")).unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            ">\n      <failure message=\"{}\" type=\"difference\">{}</failure>\n    </testcase>",
            escape(&problems.join("; ")),
            escape(&detail)
        );
    }
    let _ = writeln!(out, "  </testsuite>");
    crate::mocks::junit(&mut out, &report.mocks);
    if !report.gates.is_empty() {
        let _ =
            writeln!(out, "  <testsuite name=\"gates\" tests=\"{}\" failures=\"{gate_failures}\">", report.gates.len());
        for g in &report.gates {
            let _ = write!(out, "    <testcase classname=\"tapedeck.gates\" name=\"{}\"", escape(&g.gate));
            if g.passed {
                let _ = writeln!(out, "/>");
            } else {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"gate\"/>\n    </testcase>",
                    escape(&g.detail)
                );
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
