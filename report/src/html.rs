//! The report as one self-contained HTML file: no scripts, fonts or images from anywhere —
//! charts are inline SVG drawn here — so it opens offline and can be archived by CI.

use std::fmt::Write;

use super::junit::escape;
use crate::{mix, Buckets, ReplayReport, RouteReport, TimelineReport};

/// Routes with a latency chart at most.
const CHARTS: usize = 12;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6570}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}.bad{color:#b42318}.ok{color:#12733b}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e6}
th,td{padding:5px 8px;border-bottom:1px solid #eceff2;text-align:right;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.l,th.l{text-align:left}tr.problem td{background:#fff6f5}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{margin:0;white-space:pre-wrap;word-break:break-all}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px;margin:4px 0 12px}
.pair div{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:6px 8px}
.pair .rec{border-left:4px solid #4e79a7}.pair .rep{border-left:4px solid #e15759}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:8px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
svg text{font:10px system-ui,sans-serif;fill:#5b6570}
.wide{overflow-x:auto}.wide table{min-width:960px}td code{white-space:nowrap}td.problems{min-width:220px}
";

const REC: &str = "#4e79a7";
const REP: &str = "#e15759";

/// Renders `report` as a complete HTML document.
pub fn render(report: &ReplayReport) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let title = if report.pacing == crate::LIVE_SHADOW {
        format!("tapedeck live shadow: {}", report.target)
    } else {
        format!("tapedeck replay against {}", report.target)
    };
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><main>",
        escape(&title)
    );
    let shadow = report.pacing == crate::LIVE_SHADOW;
    let (a, b) = match (report.baseline.is_some(), shadow) {
        (true, _) => ("baseline", "new run"),
        (false, true) => ("production", "shadow"),
        (false, false) => ("recorded", "replayed"),
    };
    // `2026-12-02T11:00:00.123456789Z` → `2026-12-02 11:00:00 UTC`.
    let started = report
        .started_at
        .parse::<jiff::Timestamp>()
        .map_or_else(|_| report.started_at.clone(), |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string());
    let _ = write!(
        o,
        "<h1>{}</h1><div class=\"sub\">{} requests · {}{} · started {} · lasted {:.1} s{}</div>",
        escape(&title),
        report.sent,
        if shadow {
            "mirrored from production as they came".to_string()
        } else {
            format!("paced {}", escape(&report.pacing))
        },
        match (&report.shard, report.merged_from.len()) {
            (Some(s), 0) => format!(" · shard {}", escape(s)),
            (Some(s), n) => format!(" · {n} shard(s) merged: {}", escape(s)),
            (None, 0) => String::new(),
            (None, n) => format!(" · {n} shard(s) merged"),
        },
        escape(&started),
        report.duration_secs,
        if report.interrupted { " · stopped early" } else { "" }
    );
    cards(&mut o, report);
    if let Some(t) = &report.timeline {
        let _ = write!(o, "<h2>Request rate over time</h2><div class=\"chart\">{}{}</div>", legend(a, b), timeline(t));
    }
    routes_table(&mut o, report, a, b);
    let charted: Vec<&RouteReport> =
        report.routes.iter().filter(|r| r.latency_buckets.is_some()).take(CHARTS).collect();
    if !charted.is_empty() {
        let _ = write!(
            o,
            "<h2>Latency by route ({a} vs {b}: share of each side's requests per latency bucket)</h2>{}<div class=\"charts\">",
            legend(a, b)
        );
        for r in charted {
            let _ = write!(
                o,
                "<div class=\"chart\"><h3>{}</h3>{}</div>",
                escape(&r.route),
                histogram(r.latency_buckets.as_ref().expect("filtered"))
            );
        }
        o.push_str("</div>");
    }
    differences(&mut o, report, a, b);
    crate::mocks::html(&mut o, &report.mocks);
    gates(&mut o, report);
    o.push_str("</main></body></html>\n");
    o
}

fn cards(o: &mut String, r: &ReplayReport) {
    let mut cards = String::new();
    let mut card = |label: &str, value: String, bad: bool| {
        let class = if bad { "bad" } else { "ok" };
        let _ = write!(
            cards,
            "<div class=\"card\"><span class=\"sub\">{label}</span><b class=\"{class}\">{}</b></div>",
            escape(&value)
        );
    };
    let failed: u64 = r.errors.values().sum();
    card("requests answered", format!("{} / {}", r.completed, r.sent), failed > 0);
    card("throughput", format!("{:.1} req/s", r.achieved_rps), false);
    if let Some(d) = &r.tape_damage {
        let lost = format!("{}{}", if d.exact { "" } else { "≥ " }, d.exchanges_lost);
        card("exchanges lost to tape damage", lost, true);
    }
    if let Some(c) = &r.compare {
        if c.compared == 0 {
            card("responses differ", "nothing compared".into(), true);
        } else {
            card("responses differ", format!("{:.2}% ({})", 100.0 * c.diff_rate, c.differing), c.differing > 0);
        }
        if c.shed > 0 {
            card("not compared (comparer behind)", c.shed.to_string(), true);
        }
        card("slower routes", c.slower_routes.to_string(), c.slower_routes > 0);
        if r.pacing != crate::LIVE_SHADOW {
            card("values correlated", c.substitutions.to_string(), false);
        }
    }
    // A shadow has no schedule to lag behind: its lag is its thread's wait for a CPU.
    if let Some(l) = r.lag.ms.filter(|_| !r.pacing.starts_with("max") && r.pacing != crate::LIVE_SHADOW) {
        card("schedule lag p99", format!("{:.2} ms", l.p99), l.p99 > 10.0);
    }
    if let Some(l) = r.lag.ms.filter(|l| r.pacing == crate::LIVE_SHADOW && l.p99 > 0.0) {
        card("shadow CPU wait p99", format!("{:.2} ms", l.p99), l.p99 > 1.0);
    }
    if !r.gates.is_empty() {
        let failed = r.gates.iter().filter(|g| !g.passed).count();
        card("gates", if failed == 0 { "all passed".into() } else { format!("{failed} failed") }, failed > 0);
    }
    let _ = write!(o, "<div class=\"cards\">{cards}</div>");
}

fn legend(a: &str, b: &str) -> String {
    format!(
        "<div class=\"legend sub\"><span style=\"background:{REC}\"></span>{} <span style=\"background:{REP}\"></span>{}</div>",
        escape(a),
        escape(b)
    )
}

fn routes_table(o: &mut String, r: &ReplayReport, a: &str, b: &str) {
    let _ = write!(
        o,
        "<h2>Routes</h2><div class=\"wide\"><table><tr><th class=\"l\">route</th><th>count</th><th>differ</th><th>p50 ms {a}</th><th>p50 ms {b}</th><th>p99 ms {a}</th><th>p99 ms {b}</th><th>p99 ×</th><th class=\"l\">status {a} → {b}</th><th class=\"l\">problems</th></tr>"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for route in &r.routes {
        let problems = route.problems();
        let _ = write!(
            o,
            "<tr{}><td class=\"l\"><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{} → {}</td><td class=\"l problems\">{}</td></tr>",
            if problems.is_empty() { "" } else { " class=\"problem\"" },
            escape(&route.route),
            route.count,
            route.diffs.as_ref().filter(|d| d.compared > 0).map_or("-".into(), |d| format!("{:.1}%", 100.0 * d.diff_rate)),
            f(route.recorded_ms.map(|l| l.p50)),
            f(route.replayed_ms.map(|l| l.p50)),
            f(route.recorded_ms.map(|l| l.p99)),
            f(route.replayed_ms.map(|l| l.p99)),
            route.p99_ratio.map_or("-".into(), |x| format!("{x:.2}")),
            escape(&mix(&route.recorded_status)),
            escape(&mix(&route.replayed_status)),
            escape(&problems.join("; "))
        );
    }
    o.push_str("</table></div>");
}

fn differences(o: &mut String, r: &ReplayReport, a: &str, b: &str) {
    let slower: Vec<&RouteReport> = r.routes.iter().filter(|x| x.p99_flagged).collect();
    if !slower.is_empty() {
        o.push_str("<h2>Slower routes</h2><ul>");
        for route in slower {
            if let (Some(x), Some(y), Some(ratio)) = (route.recorded_ms, route.replayed_ms, route.p99_ratio) {
                let _ = write!(
                    o,
                    "<li><code>{}</code>: p99 {:.1} ms {a} → {:.1} ms {b} ({ratio:.2}×), p50 {:.1} → {:.1} ms, over {} requests</li>",
                    escape(&route.route),
                    x.p99,
                    y.p99,
                    x.p50,
                    y.p50,
                    route.count
                );
            }
        }
        o.push_str("</ul>");
    }
    let with: Vec<&RouteReport> =
        r.routes.iter().filter(|x| x.diffs.as_ref().is_some_and(|d| !d.findings.is_empty())).collect();
    match &r.compare {
        Some(c) if with.is_empty() && c.compared == 0 => {
            o.push_str(
                "<h2>Differences</h2><p class=\"bad\">Nothing compared: no request was answered completely.</p>",
            );
        }
        Some(c) if with.is_empty() => {
            let _ = write!(
                o,
                "<h2>Differences</h2><p class=\"ok\">None: every compared response ({} of {} sent) matched the recording (noise excluded).</p>",
                c.compared, r.sent
            );
        }
        _ => {}
    }
    if !with.is_empty() {
        o.push_str("<h2>Differences</h2>");
    }
    for route in with {
        let d = route.diffs.as_ref().expect("filtered");
        let _ = write!(
            o,
            "<h3><code>{}</code> — {} of {} responses differ</h3>",
            escape(&route.route),
            d.differing,
            d.compared
        );
        for f in &d.findings {
            let e = &f.example;
            let _ = write!(
                o,
                "<div><b>{}</b> in {} response(s) · e.g. <code>{}</code> at <code>{}</code></div><div class=\"pair\"><div class=\"rec\"><span class=\"sub\">{a}</span><pre>{}</pre></div><div class=\"rep\"><span class=\"sub\">{b}</span><pre>{}</pre></div></div>",
                escape(&finding_name(f.kind.as_str(), &f.key)),
                f.count,
                escape(&e.request),
                escape(&e.at),
                escape(if e.recorded.is_empty() { "(absent)" } else { &e.recorded }),
                escape(if e.replayed.is_empty() { "(absent)" } else { &e.replayed })
            );
            if let Some(answer) = &e.answer {
                let _ = write!(o, "<div class=\"sub\">{b} answer: <code>{}</code></div>", escape(answer));
            }
        }
        if !d.noise.is_empty() {
            let noise: Vec<String> =
                d.noise.iter().map(|n| format!("{} ({}, {}×)", n.key, n.reason, n.count)).collect();
            let _ = write!(o, "<div class=\"sub\">noise set apart: {}</div>", escape(&noise.join("; ")));
        }
    }
}

/// `status` for a status difference (not `status status`), `header x-version` for a
/// header's, `json $.total` for a body member's.
pub(crate) fn finding_name(kind: &str, key: &str) -> String {
    if key.is_empty() || key.eq_ignore_ascii_case(kind) {
        kind.to_string()
    } else {
        format!("{kind} {key}")
    }
}

fn gates(o: &mut String, r: &ReplayReport) {
    if r.gates.is_empty() {
        return;
    }
    o.push_str("<h2>Gates</h2><table><tr><th class=\"l\">gate</th><th class=\"l\">result</th><th class=\"l\">measured</th></tr>");
    for g in &r.gates {
        let _ = write!(
            o,
            "<tr><td class=\"l\"><code>{}</code></td><td class=\"l {}\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&g.gate),
            if g.passed { "ok" } else { "bad" },
            if g.passed { "pass" } else { "FAIL" },
            escape(&g.detail)
        );
    }
    o.push_str("</table>");
}

/// Two lines, requests per second over time.
fn timeline(t: &TimelineReport) -> String {
    let (w, h, pad) = (1100.0, 220.0, 36.0);
    let n = t.recorded.len().max(t.replayed.len()).max(2);
    let rate = |c: u64| c as f64 / t.bucket_secs.max(1e-9);
    let peak = t.recorded.iter().chain(&t.replayed).map(|c| rate(*c)).fold(1.0, f64::max);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64;
    let y = |v: f64| h - pad + 6.0 - (h - pad) * v / peak;
    let line = |series: &[u64], color: &str| {
        let mut pts = String::new();
        for i in 0..n {
            let _ = write!(pts, "{:.1},{:.1} ", x(i), y(rate(series.get(i).copied().unwrap_or(0))));
        }
        format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{pts}\"/>")
    };
    let total = t.bucket_secs * n as f64;
    format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\"><line x1=\"{pad}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"#ccd\"/>{}{}<text x=\"2\" y=\"14\">{peak:.0} req/s</text><text x=\"{pad}\" y=\"{h}\">0 s</text><text x=\"{r:.1}\" y=\"{h}\" text-anchor=\"end\">{total:.1} s</text></svg>",
        line(&t.recorded, REC),
        line(&t.replayed, REP),
        b = y(0.0),
        r = w - pad
    )
}

/// Grouped bars per latency bucket: the share of each side's requests, on a log scale
/// (0.1% to 100%) so a tail of a few requests stays visible beside the bulk; every bucket
/// labelled, both axes titled; a bar's tooltip gives its count.
fn histogram(b: &Buckets) -> String {
    let (w, h) = (380.0, 190.0);
    let (left, right, top, bottom) = (46.0, 8.0, 14.0, 46.0);
    let n = b.recorded.len().max(b.replayed.len()).max(1);
    let total = |s: &[u64]| s.iter().sum::<u64>().max(1) as f64;
    let (ta, tb) = (total(&b.recorded), total(&b.replayed));
    let plot_h = h - top - bottom;
    // log10 of a percentage, from -1 (0.1%) to 2 (100%).
    let y = |pct: f64| top + plot_h * (1.0 - (pct.max(0.1).log10() + 1.0) / 3.0);
    let slot = (w - left - right) / n as f64;
    let mut o = format!("<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\">");
    for (pct, label) in [(0.1, "0.1%"), (1.0, "1%"), (10.0, "10%"), (100.0, "100%")] {
        let _ = write!(
            o,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{x2:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e6ea\"/><text x=\"{lx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            yy = y(pct),
            x2 = w - right,
            lx = left - 3.0,
            ty = y(pct) + 3.0
        );
    }
    for i in 0..n {
        for (k, (series, t, color)) in [(&b.recorded, ta, REC), (&b.replayed, tb, REP)].into_iter().enumerate() {
            let count = series.get(i).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            let pct = 100.0 * count as f64 / t;
            // Under 0.1% still shows as a sliver: one request of a million is a tail too.
            let top_y = y(pct).min(top + plot_h - 1.5);
            let _ = write!(
                o,
                "<rect x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{count} requests ({pct:.2}%)</title></rect>",
                left + slot * i as f64 + slot * 0.1 + k as f64 * slot * 0.4,
                slot * 0.4,
                top + plot_h - top_y
            );
        }
        let label = match b.upper_ms.get(i) {
            Some(v) if *v < 1.0 => format!("≤{v}"),
            Some(v) => format!("≤{v:.0}"),
            None => format!(">{:.0}", b.upper_ms.last().copied().unwrap_or(0.0)),
        };
        // Slanted, anchored at their end, so every label fits and none is cut.
        let (lx, ly) = (left + slot * (i as f64 + 0.5), top + plot_h + 10.0);
        let _ = write!(
            o,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-40 {lx:.1} {ly:.1})\">{label}</text>"
        );
    }
    let _ = write!(
        o,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">latency, ms (bucket upper bounds)</text><text x=\"9\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 9 {:.1})\">share of requests (log)</text></svg>",
        left + (w - left - right) / 2.0,
        h - 2.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    o
}
