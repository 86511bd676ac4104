//! `tapedeck export --to har` writes HAR 1.2 that browsers import: every field the spec
//! requires, typed as Chrome DevTools' importer reads it (it throws on a missing `time`,
//! `headersSize`, `bodySize`, `timings.send/wait/receive`, `content`, or an unparseable
//! `startedDateTime`). Dates are also checked with V8 (node) when it is installed, since
//! DevTools parses them with `new Date()`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;
use tapedeck_captures::ErrorKind;

fn need<'a>(v: &'a Value, path: &str, errors: &mut Vec<String>) -> &'a Value {
    let got = v.pointer(path).unwrap_or(&Value::Null);
    if got.is_null() {
        errors.push(format!("missing {path}"));
    }
    got
}

fn need_str(v: &Value, path: &str, errors: &mut Vec<String>) {
    if !need(v, path, errors).is_string() {
        errors.push(format!("{path} is not a string"));
    }
}

fn need_num(v: &Value, path: &str, errors: &mut Vec<String>) -> f64 {
    let n = need(v, path, errors).as_f64();
    if n.is_none() {
        errors.push(format!("{path} is not a number"));
    }
    n.unwrap_or(f64::NAN)
}

fn need_name_values(v: &Value, path: &str, errors: &mut Vec<String>) {
    match need(v, path, errors).as_array() {
        Some(list) => {
            for (i, nv) in list.iter().enumerate() {
                if !nv["name"].is_string() || !nv["value"].is_string() {
                    errors.push(format!("{path}/{i} needs string name and value"));
                }
            }
        }
        None => errors.push(format!("{path} is not an array")),
    }
}

/// Checks a HAR document against HAR 1.2's required fields and types; returns problems.
fn validate(har: &Value) -> Vec<String> {
    let mut e = Vec::new();
    let iso = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$").unwrap();
    need_str(har, "/log/version", &mut e);
    need_str(har, "/log/creator/name", &mut e);
    need_str(har, "/log/creator/version", &mut e);
    let Some(entries) = har.pointer("/log/entries").and_then(Value::as_array) else {
        e.push("log.entries is not an array".into());
        return e;
    };
    for (i, entry) in entries.iter().enumerate() {
        let mut errs = Vec::new();
        let started = entry["startedDateTime"].as_str().unwrap_or("");
        if !iso.is_match(started) || started.parse::<jiff::Timestamp>().is_err() {
            errs.push(format!("startedDateTime {started:?} is not ISO 8601"));
        }
        let time = need_num(entry, "/time", &mut errs);
        for f in ["/request/method", "/request/url", "/request/httpVersion"] {
            need_str(entry, f, &mut errs);
        }
        need_name_values(entry, "/request/headers", &mut errs);
        need_name_values(entry, "/request/queryString", &mut errs);
        need_name_values(entry, "/request/cookies", &mut errs);
        need_num(entry, "/request/headersSize", &mut errs);
        need_num(entry, "/request/bodySize", &mut errs);
        if let Some(post) = entry["request"].get("postData") {
            need_str(post, "/mimeType", &mut errs);
            need_str(post, "/text", &mut errs);
        }
        need_num(entry, "/response/status", &mut errs);
        for f in
            ["/response/statusText", "/response/httpVersion", "/response/redirectURL", "/response/content/mimeType"]
        {
            need_str(entry, f, &mut errs);
        }
        need_name_values(entry, "/response/headers", &mut errs);
        need_name_values(entry, "/response/cookies", &mut errs);
        need_num(entry, "/response/headersSize", &mut errs);
        need_num(entry, "/response/bodySize", &mut errs);
        need_num(entry, "/response/content/size", &mut errs);
        if !entry["cache"].is_object() {
            errs.push("cache is not an object".into());
        }
        let mut sum = 0.0;
        for f in ["send", "wait", "receive"] {
            let v = need_num(entry, &format!("/timings/{f}"), &mut errs);
            if v < 0.0 {
                errs.push(format!("timings.{f} is negative"));
            }
            sum += v.max(0.0);
        }
        for f in ["blocked", "dns", "connect"] {
            sum += entry["timings"][f].as_f64().unwrap_or(-1.0).max(0.0);
        }
        if (time - sum).abs() > 0.001 {
            errs.push(format!("time {time} is not the sum of the timings ({sum})"));
        }
        e.extend(errs.into_iter().map(|m| format!("entry {i}: {m}")));
    }
    e
}

#[test]
fn exported_har_is_valid_har_1_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = synth(300);
    input[7].response = None;
    input[7].error = Some(ErrorKind::ConnectRefused);
    input[8].response.as_mut().unwrap().body.data = vec![0xde, 0xad, 0xbe, 0xef].into();
    write_tape(dir.path(), &input);
    let text = ok(&["cat", s(dir.path()), "--format", "har"]);
    let har: Value = serde_json::from_str(&text).unwrap();
    let problems = validate(&har);
    assert!(problems.is_empty(), "HAR problems:\n{}", problems.join("\n"));
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 300);
    let failed = entries.iter().find(|e| e["response"]["status"] == 0).unwrap();
    assert_eq!(failed["response"]["_error"], "connect_refused");
    let binary = entries.iter().find(|e| e["response"]["content"]["encoding"] == "base64").unwrap();
    assert_eq!(binary["response"]["content"]["text"], "3q2+7w==");

    // The validator itself rejects what Chrome would reject.
    let mut broken = har.clone();
    broken["log"]["entries"][0]["timings"].as_object_mut().unwrap().remove("wait");
    broken["log"]["entries"][1]["startedDateTime"] = Value::from("last tuesday");
    let problems = validate(&broken);
    assert!(problems.iter().any(|p| p == "entry 0: missing /timings/wait"), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("entry 1: startedDateTime \"last tuesday\"")), "{problems:?}");

    // DevTools parses dates with V8's `new Date()`; check ours parse there too.
    let dates: Vec<&str> = entries.iter().map(|e| e["startedDateTime"].as_str().unwrap()).collect();
    let script = format!(
        "const d = {}; const bad = d.filter(s => Number.isNaN(new Date(s).getTime())); if (bad.length) {{ console.error(bad); process.exit(1) }}",
        serde_json::to_string(&dates).unwrap()
    );
    match Command::new("node").arg("-e").arg(&script).status() {
        Ok(status) => assert!(status.success(), "V8 rejects some startedDateTime values"),
        Err(_) => eprintln!("skipping the V8 date check: node is not installed"),
    }
}

#[test]
fn browser_har_fixture_passes_the_validator_where_chrome_wrote_it() {
    // The fixture's first three entries are what Chrome exports; the validator must accept
    // them, or it would be checking something other than HAR.
    let fixture: Value = serde_json::from_str(include_str!("fixtures/browser.har")).unwrap();
    let mut good = fixture.clone();
    good["log"]["entries"].as_array_mut().unwrap().truncate(3);
    let problems = validate(&good);
    assert!(problems.is_empty(), "{problems:?}");
}
