//! The report as text for a terminal: the load shape, a route table (problems first), the
//! differences with one example each, slower routes, noise set apart, and the gates.

use std::fmt::Write;

use crate::{mix, ReplayReport};

/// Findings shown per route.
const FINDINGS_SHOWN: usize = 6;

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| if v < 10.0 { format!("{v:.2}") } else { format!("{v:.1}") })
}

/// Renders `report` with at most `top` routes in the table.
pub fn render(report: &ReplayReport, top: usize) -> String {
    let mut out = String::new();
    header(&mut out, report);
    table(&mut out, report, top);
    differences(&mut out, report);
    crate::mocks::terminal(&mut out, &report.mocks);
    results(&mut out, report);
    gates(&mut out, report);
    out
}

fn header(out: &mut String, r: &ReplayReport) {
    let shadow = r.pacing == crate::LIVE_SHADOW;
    let _ = writeln!(
        out,
        "{} {} requests {} {} ({}{}){}",
        if shadow { "mirrored" } else { "replayed" },
        r.sent,
        if shadow { "from production to" } else { "against" },
        r.target,
        r.pacing,
        match (&r.shard, r.merged_from.len()) {
            (Some(s), 0) => format!(", shard {s}"),
            (Some(s), n) => format!(", {n} shard(s) merged: {s}"),
            (None, 0) => String::new(),
            (None, n) => format!(", {n} shard(s) merged"),
        },
        if r.interrupted { ", stopped early" } else { "" }
    );
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            out,
            "  baseline      {} ({}): {} requests, {:.1} requests/s, {} without an answer",
            b.path, b.started_at, b.sent, b.achieved_rps, b.errors
        );
    }
    let failed: u64 = r.errors.values().sum();
    let errors = if r.errors.is_empty() { "none".to_string() } else { mix(&r.errors) };
    let _ =
        writeln!(out, "  answered      {} of {} ({} without a complete answer: {errors})", r.completed, r.sent, failed);
    for (kind, cause) in &r.error_causes {
        let _ = writeln!(out, "    {kind}: {cause}");
    }
    if let Some(d) = &r.tape_damage {
        let _ = writeln!(out, "  tape damage   {}", d.summary());
        for p in &d.problems {
            let _ = writeln!(out, "    {p}");
        }
    }
    // Unpaced (`--speed max`): nothing was due at a time, so there is no schedule to
    // keep; the "lag" is how long requests waited for a free slot.
    let paced = !r.pacing.starts_with("max") && !shadow;
    if shadow {
        let _ = writeln!(
            out,
            "  throughput    {:.1} requests/s mirrored (production's own pace) over {:.1} s",
            r.achieved_rps, r.duration_secs
        );
    } else if let Some(b) = &r.baseline {
        let _ = writeln!(
            out,
            "  throughput    {:.1} requests/s, baseline {:.1} ({:+.1}%) over {:.1} s",
            r.achieved_rps,
            b.achieved_rps,
            if b.achieved_rps > 0.0 { 100.0 * (r.achieved_rps / b.achieved_rps - 1.0) } else { 0.0 },
            r.duration_secs
        );
    } else if paced {
        // A share of the schedule means something only over a run long enough to have
        // one (two requests a millisecond apart "ran at 115,018%").
        let share = r.achieved_rps / r.intended_rps;
        let comparable = r.sent >= 20 && r.duration_secs >= 1.0 && share.is_finite();
        let of_schedule = if comparable {
            format!("{:.1} intended ({:.0}% of the schedule)", r.intended_rps, 100.0 * share.min(9.99))
        } else {
            "too short a run to compare with the schedule".to_string()
        };
        let _ = writeln!(
            out,
            "  throughput    {:.1} requests/s sent, {of_schedule} over {:.1} s",
            r.achieved_rps, r.duration_secs
        );
        if comparable && share < 0.8 {
            let _ = writeln!(
                out,
                "    behind the schedule: a session's requests wait for its previous answer, so few \
                 sessions or a slow target hold the pace down (the lag below says by how much)"
            );
        }
    } else {
        let _ = writeln!(
            out,
            "  throughput    {:.1} requests/s sent, as fast as the target answered, over {:.1} s",
            r.achieved_rps, r.duration_secs
        );
    }
    if let Some(l) = r.lag.ms.filter(|_| paced) {
        let _ = writeln!(
            out,
            "  schedule lag  p50 {} ms  p99 {} ms  max {} ms; late: {} over 1 ms, {} over 10 ms",
            ms(Some(l.p50)),
            ms(Some(l.p99)),
            ms(Some(l.max)),
            r.lag.late_over_1ms,
            r.lag.late_over_10ms
        );
    }
    // A live shadow has no schedule: its "lag" is its thread's wait for a CPU.
    if let Some(l) = r.lag.ms.filter(|l| shadow && l.p99 > 0.0) {
        let _ = writeln!(
            out,
            "  CPU wait      p50 {} ms  p99 {} ms  max {} ms: the shadow's thread runs only on CPU time production \
             leaves, and its latencies include this wait",
            ms(Some(l.p50)),
            ms(Some(l.p99)),
            ms(Some(l.max)),
        );
    }
    if let Some(l) = r.lag.ms.filter(|_| !paced && r.baseline.is_none() && !shadow) {
        // Flat out there is no schedule: the wait is for a free slot.
        let _ = writeln!(
            out,
            "  queueing      p50 {} ms  p99 {} ms  max {} ms: time requests waited for a free slot ({}), not lag behind a schedule",
            ms(Some(l.p50)),
            ms(Some(l.p99)),
            ms(Some(l.max)),
            r.pacing.trim_start_matches("max, ")
        );
    }
    let timed_out: u64 = r.routes.iter().map(|x| x.timed_out).sum();
    if timed_out > 0 && timed_out * 20 >= r.sent {
        let _ = writeln!(
            out,
            "  timeouts      {timed_out} request(s) timed out ({:.1}%): each held its slot, and its session's next requests, for the whole --timeout — a stalling target sets this run's length; a lower --timeout ends it sooner",
            100.0 * timed_out as f64 / r.sent.max(1) as f64
        );
    }
    if let Some(c) = &r.compare {
        let _ = writeln!(
            out,
            "  responses     {} of {} compared differ ({:.2}%), noise excluded; {} slower route(s); {} correlated value(s) substituted{}",
            c.differing,
            c.compared,
            100.0 * c.diff_rate,
            c.slower_routes,
            c.substitutions,
            match (c.probes, c.probes_failed) {
                (0, _) => String::new(),
                (n, 0) => format!("; {n} noise probe(s)"),
                (n, f) => format!("; {n} noise probe(s), {f} not answered completely (reset, cut or timed out)"),
            }
        );
        if c.shed > 0 {
            let _ = writeln!(
                out,
                "  not compared  {} complete answer(s): the comparer fell behind (bodies too large or deep to compare at the pace they came); the rate above is over the {} compared",
                c.shed, c.compared
            );
        }
    }
    let _ = writeln!(out);
}

fn table(out: &mut String, r: &ReplayReport, top: usize) {
    let shown = &r.routes[..top.min(r.routes.len())];
    let width = shown.iter().map(|r| r.route.chars().count()).max().unwrap_or(5).clamp(5, 48);
    let (a, b) = if r.baseline.is_some() { ("base", "new") } else { ("rec", "replay") };
    let diff_col = r.compare.is_some();
    let _ = writeln!(
        out,
        "  {:>7}  {:>19}  {:>19}  {:>6}  {}{:<width$}  status {a} → {b}",
        "count",
        format!("p50 ms {a} → {b}"),
        format!("p99 ms {a} → {b}"),
        "p99 ×",
        if diff_col { format!("{:>7}  ", "differ") } else { String::new() },
        "route"
    );
    for route in shown {
        let (rp, pp) = (route.recorded_ms, route.replayed_ms);
        let status = if route.recorded_status == route.replayed_status {
            format!("same ({})", mix(&route.replayed_status))
        } else {
            format!("{} → {}", mix(&route.recorded_status), mix(&route.replayed_status))
        };
        let ratio =
            route.p99_ratio.map_or("-".to_string(), |x| format!("{x:.2}{}", if route.p99_flagged { "!" } else { "" }));
        let differ = match (&route.diffs, diff_col) {
            (Some(d), true) if d.compared > 0 => format!("{:>6.1}%  ", 100.0 * d.diff_rate),
            (_, true) => format!("{:>7}  ", "-"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:>7}  {:>8} → {:>8}  {:>8} → {:>8}  {:>6}  {differ}{:<width$}  {status}",
            route.count,
            ms(rp.map(|l| l.p50)),
            ms(pp.map(|l| l.p50)),
            ms(rp.map(|l| l.p99)),
            ms(pp.map(|l| l.p99)),
            ratio,
            route.route
        );
    }
    if r.routes.len() > top {
        let _ = writeln!(out, "  … {} more routes", r.routes.len() - top);
    }
    // Streams: the route's latency is the whole stream (a WebSocket's: its handshake);
    // when the first message came, and how long the server took to answer, are what a
    // user waits for.
    for route in shown {
        let timings =
            [(route.first_message, "first message of the stream"), (route.answers, "answers to client messages")];
        for (timing, what) in timings {
            let Some(f) = timing else { continue };
            let ratio =
                f.p99_ratio.map_or("-".to_string(), |x| format!("{x:.2}{}", if f.p99_flagged { "!" } else { "" }));
            let _ = writeln!(
                out,
                "  {:>7}  {:>8} → {:>8}  {:>8} → {:>8}  {:>6}  {}{:<width$}  {what}",
                f.count,
                ms(Some(f.recorded_ms.p50)),
                ms(Some(f.replayed_ms.p50)),
                ms(Some(f.recorded_ms.p99)),
                ms(Some(f.replayed_ms.p99)),
                ratio,
                if diff_col { format!("{:>7}  ", "") } else { String::new() },
                route.route,
            );
        }
    }
}

fn differences(out: &mut String, r: &ReplayReport) {
    let shadow = r.pacing == crate::LIVE_SHADOW;
    let (a, b) = if shadow { ("production", "shadow") } else { ("recorded", "replayed") };
    let troubled: Vec<_> = r.routes.iter().filter(|route| !route.problems().is_empty()).collect();
    if r.compare.is_none() && troubled.is_empty() {
        return;
    }
    let _ = writeln!(out);
    if troubled.is_empty() && r.compare.as_ref().is_some_and(|c| c.compared == 0) {
        let why = if r.completed > 0 {
            "the run stopped before the answers were compared"
        } else {
            "no request was answered completely"
        };
        let _ = writeln!(out, "nothing compared: {why}");
    } else if troubled.is_empty() {
        let same = if shadow { "as production did" } else { "as recorded" };
        let _ = writeln!(out, "no differences: every route answered {same} (noise excluded)");
    } else {
        let what = if r.baseline.is_some() {
            "with problems (latency and statuses against the baseline run, responses against the recording)"
        } else if shadow {
            "differ from production"
        } else {
            "differ from the recording"
        };
        let _ = writeln!(out, "{} route(s) {what}:", troubled.len());
    }
    for route in troubled {
        let _ = writeln!(out, "\n  {}: {}", route.route, route.problems().join("; "));
        let Some(d) = &route.diffs else { continue };
        for f in d.findings.iter().take(FINDINGS_SHOWN) {
            let e = &f.example;
            let name = crate::html::finding_name(f.kind.as_str(), &f.key);
            let _ = writeln!(out, "    {name} in {} response(s), e.g. {}", f.count, e.request);
            let _ = writeln!(out, "        at {}: {a} {} → {b} {}", e.at, quoted(&e.recorded), quoted(&e.replayed));
            if let Some(answer) = &e.answer {
                let _ = writeln!(out, "        {b} answer: {answer}");
            }
        }
        if d.findings.len() > FINDINGS_SHOWN {
            let _ = writeln!(
                out,
                "    … {} more kinds of difference (see the JSON or HTML report)",
                d.findings.len() - FINDINGS_SHOWN
            );
        }
    }
    let noise: Vec<String> = r
        .routes
        .iter()
        .filter_map(|route| route.diffs.as_ref().map(|d| (route, d)))
        .flat_map(|(route, d)| d.noise.iter().map(move |n| format!("{} {} ({})", route.route, n.key, n.reason)))
        .collect();
    if !noise.is_empty() {
        let shown: Vec<&str> = noise.iter().take(8).map(String::as_str).collect();
        let more = if noise.len() > 8 { format!(", … {} more", noise.len() - 8) } else { String::new() };
        let _ = writeln!(out, "\n  noise set apart (not counted): {}{more}", shown.join("; "));
    }
}

fn quoted(v: &str) -> String {
    if v.is_empty() {
        "(absent)".into()
    } else {
        format!("`{v}`")
    }
}

fn results(out: &mut String, r: &ReplayReport) {
    if let Some(dir) = &r.results {
        let _ = writeln!(out, "\n  responses written to {dir} ({} exchanges)", r.results_written);
        if r.results_failed > 0 {
            let _ = writeln!(
                out,
                "  {} responses could NOT be written (see the warnings above: disk full?)",
                r.results_failed
            );
        }
        if r.results_waited > 0 {
            let _ = writeln!(
                out,
                "  the results writer fell behind {} times; sends waited for it (counted in the lag)",
                r.results_waited
            );
        }
    }
}

fn gates(out: &mut String, r: &ReplayReport) {
    if r.gates.is_empty() {
        return;
    }
    let failed = r.gates.iter().filter(|g| !g.passed).count();
    let _ =
        writeln!(out, "\ngates: {}", if failed == 0 { "all passed".to_string() } else { format!("{failed} FAILED") });
    for g in &r.gates {
        let _ = writeln!(out, "  {} {}  ({})", if g.passed { "pass" } else { "FAIL" }, g.gate, g.detail);
    }
}
