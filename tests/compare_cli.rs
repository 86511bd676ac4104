//! Comparison and gates as a CI job runs them: `tapedeck replay … --gate` exits 0 when
//! staging answers as recorded, 1 when a gate fails (naming it), 2 on a bad gate;
//! `tapedeck report` re-renders saved results and compares two runs; and `tapedeck demo`
//! finds every drift planted in its staging and nothing else.

mod common;

use common::upstream::Upstream;
use common::*;
use tapedeck_captures::exchange::{Body, Headers, Request, Response, Timing};
use tapedeck_captures::{ConnectionId, Exchange, ExchangeId};

/// `GET /size/N` recorded with `body` as its answer.
fn exchange(id: u64, n: usize, body: &[u8]) -> Exchange {
    const EPOCH: i64 = 1_764_000_000_000_000_000;
    let mut timing = Timing::at(EPOCH, EPOCH + id as i64 * 2_000_000);
    timing.end_ns = Some(300_000);
    let mut headers = Headers::new();
    headers.push("content-type", "text/plain");
    Exchange {
        id: ExchangeId(id),
        connection: ConnectionId(0),
        timing,
        request: Request {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "shop.example".into(),
            target: format!("/size/{n}"),
            ..Default::default()
        },
        response: Some(Response { status: 200, headers, body: Body::full(body.to_vec()), ..Default::default() }),
        ..Default::default()
    }
}

/// 30 answers as the upstream gives them, and `drifted` of another route that differ.
fn tape(dir: &std::path::Path, drifted: u64) -> String {
    let mut exchanges: Vec<Exchange> = (0..30).map(|i| exchange(i, 16, &[b'z'; 16])).collect();
    exchanges.extend((0..drifted).map(|i| exchange(100 + i, 8, b"zzzzzzzy")));
    exchanges.sort_by_key(|e| e.id.0);
    write_tape(dir, &exchanges);
    dir.to_str().unwrap().to_string()
}

fn replay(tapes: &str, target: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["replay", tapes, "--target", target, "--speed", "max", "--no-progress"];
    args.extend_from_slice(extra);
    run(&args)
}

/// The demo measures latency: it runs alone, not beside replays at full speed.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gates_decide_the_exit_code_and_name_what_failed() {
    let _serial = serial();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let same = tape(&dir.path().join("same"), 0);
    let drift = tape(&dir.path().join("drift"), 10);
    let gates = ["--gate", "diff_rate<=0.5%", "--gate", "errors==0", "--gate", "GET /size/{id}:new_5xx==0"];

    let out = replay(&same, &upstream.url(), &gates);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("gates: all passed"), "{}", stdout(&out));

    let out = replay(&drift, &upstream.url(), &gates);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("FAIL diff_rate<=0.5%"), "{text}");
    assert!(text.contains("pass errors==0"), "{text}");
    // The difference is shown with an example.
    assert!(text.contains("recorded `zzzzzzzy` → replayed `zzzzzzzz`"), "{text}");

    let out = replay(&same, &upstream.url(), &["--gate", "latency<1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown metric `latency`"), "{}", stderr(&out));

    // A target that answers nothing: a tool error, whatever the gates.
    let out = replay(&same, "http://127.0.0.1:9", &["--gate", "errors<=1000", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
}

#[test]
fn saved_results_are_reported_again_and_two_runs_compare() {
    let _serial = serial();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let drift = tape(&dir.path().join("drift"), 10);
    let (results, first) = (dir.path().join("results"), dir.path().join("first.json"));
    let out = replay(&drift, &upstream.url(), &["--results", s(&results), "--report", s(&first)]);
    assert_eq!(out.status.code(), Some(0), "no gates, no failure: {}", stderr(&out));

    // Re-rendered from the results directory, without the target.
    let (page, xml) = (dir.path().join("r.html"), dir.path().join("r.xml"));
    let out = run(&["report", s(&results), "--html", s(&page), "--junit", s(&xml), "--gate", "diff_rate<=1%"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("GET /size/{id}: 10 of 40 responses differ from the recording"), "{text}");
    assert!(text.contains("FAIL diff_rate<=1%"), "{text}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("share of requests (log)") && html.contains("latency, ms"));
    assert!(html.contains(" requests · paced ") && html.contains(" UTC · lasted "), "a readable header");
    assert!(std::fs::read_to_string(&xml).unwrap().contains("<failure"));

    // A second run against a slower target compares with the first.
    let second = dir.path().join("second.json");
    let out = replay(&drift, &upstream.url(), &["--report", s(&second)]);
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["report", "--baseline", s(&first), s(&second), "--gate", "errors==0"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("baseline") && text.contains("first.json"), "{text}");
    assert!(text.contains("p50 ms base → new"), "{text}");
    // Each comparison says what it compares with: differences against the recording,
    // latency and statuses against the baseline run; never "the recording" for the
    // baseline's figures.
    assert!(text.contains("responses against the recording"), "{text}");
    assert!(text.contains("responses differ from the recording"), "{text}");
    assert!(!text.contains("× the recording"), "{text}");

    let out = run(&["report", s(&dir.path().join("nothing-here"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn shards_results_merge_into_the_report_of_the_whole_run() {
    let _serial = serial();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let drift = tape(&dir.path().join("drift"), 10);
    // Three hosts' runs, as an Indexed Job would make them, each with its results.
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500)).to_string();
    let children: Vec<_> = (0..3)
        .map(|k| {
            let results = dir.path().join(format!("shard-{k}"));
            let shard = format!("{k}/3");
            let args = [
                "replay",
                &drift,
                "--target",
                &upstream.url(),
                "--shard",
                &shard,
                "--start-at",
                &at,
                "--no-progress",
                "--results",
                s(&results),
            ];
            let mut command = tapedeck();
            command.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            (results, command.spawn().unwrap())
        })
        .collect();
    let mut dirs = Vec::new();
    for (results, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        dirs.push(results);
    }
    let merged_json = dir.path().join("merged.json");
    let mut args = vec!["report", "--merge"];
    args.extend(dirs.iter().map(|d| s(d)));
    args.extend(["--report", s(&merged_json), "--gate", "diff_rate<=1%"]);
    let out = run(&args);
    let text = stdout(&out);
    // The gate judges the whole run: 10 of 40 differ, wherever they were replayed.
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("3 shard(s) merged"), "{text}");
    assert!(text.contains("GET /size/{id}: 10 of 40 responses differ from the recording"), "{text}");
    assert!(text.contains("FAIL diff_rate<=1%"), "{text}");
    let merged: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&merged_json).unwrap()).unwrap();
    assert_eq!(merged["sent"], 40);
    assert_eq!(merged["merged_from"].as_array().map(Vec::len), Some(3));
    // A shard left out is said; one given twice is refused.
    let out = run(&["report", "--merge", s(&dirs[0]), s(&dirs[2])]);
    assert_eq!(out.status.code(), Some(1), "a partial run never passes: {}", stderr(&out));
    assert!(stderr(&out).contains("shard 1/3 missing"), "{}", stderr(&out));
    let out = run(&["report", "--merge", s(&dirs[0]), s(&dirs[0])]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("given twice"), "{}", stderr(&out));
    // The merged report is a report: it compares with a later run.
    let out = run(&["report", "--baseline", s(&merged_json), s(&dirs[0])]);
    assert!(stderr(&out).contains("not comparable"), "{}", stderr(&out));
}

#[test]
fn the_demo_finds_every_planted_drift_and_nothing_else() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    let out = run(&["demo", "--out", s(&out_dir), "--seconds", "5", "--sessions", "10"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("no false positives"), "{text}");

    // Read the report the way a CI job would, not through the demo's own check.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    let routes = report["routes"].as_array().unwrap();
    let route = |name: &str| routes.iter().find(|r| r["route"] == name).unwrap_or_else(|| panic!("{name} replayed"));
    let findings = |name: &str| -> Vec<(String, String)> {
        route(name)["diffs"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["kind"].as_str().unwrap().to_string(), f["key"].as_str().unwrap().to_string()))
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    let mut users = findings("GET /users/{id}");
    users.sort();
    assert_eq!(users, [pair("key_added", "$.email_address"), pair("key_removed", "$.email")]);
    assert_eq!(findings("GET /products/{id}"), [pair("header_changed", "header:cache-control")]);
    assert_eq!(findings("GET /users/{id}/orders"), [pair("status", "status")]);
    assert_eq!(route("GET /users/{id}/orders")["diffs"]["findings"][0]["example"]["replayed"], "500");
    assert_eq!(route("GET /search")["p99_flagged"], true);
    for r in routes {
        let name = r["route"].as_str().unwrap();
        if name != "GET /search" {
            assert_eq!(r["p99_flagged"], false, "{name} is not slower in staging");
        }
        if !["GET /users/{id}", "GET /products/{id}", "GET /users/{id}/orders"].contains(&name) {
            assert_eq!(r["diffs"]["findings"].as_array().unwrap().len(), 0, "no drift was planted in {name}: {r:#}");
        }
        assert!(r["errors"].as_object().unwrap().is_empty(), "{name}: every request answered");
    }
    // Created orders were fetched by staging's own ids.
    assert!(report["compare"]["substitutions"].as_u64().unwrap() > 0);
    // Noise was seen and set apart, not reported.
    let noise: Vec<&str> = route("GET /users/{id}")["diffs"]["noise"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert!(noise.contains(&"$.request_id") && noise.contains(&"$.served_at"), "{noise:?}");
    let page = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(page.contains("<svg") && page.contains("email_address"));

    // What was replayed is what the proxy captured, and the capture holds nothing personal.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", s(&out_dir.join("capture")), "--json"])).unwrap();
    assert_eq!(inspect["total"]["exchanges"], report["sent"]);
    assert_eq!(run(&["scrub", "--check", s(&out_dir.join("capture"))]).status.code(), Some(0));
}
