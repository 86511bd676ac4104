//! `inspect`, `cat`, `import` and `export` driven through the real binary on real files:
//! what a new user runs from the README. (`demo` has its own test in compare_cli.rs.)

mod common;

use std::fs;

use common::*;
use serde_json::Value;
use tapedeck_captures::{ErrorKind, Exchange};

#[test]
fn inspect_and_cat_read_a_realistic_capture() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    write_tape(&capture, &synth(1500));
    let text = ok(&["inspect", s(&capture)]);
    assert!(text.contains("GET /api/users/{id}"), "the summary lists templated routes:\n{text}");

    let json: Value = serde_json::from_str(&ok(&["inspect", s(&capture), "--json"])).unwrap();
    let total = &json["total"];
    assert_eq!(total["exchanges"], 1500);
    assert!(total["compression_ratio"].as_f64().unwrap() >= 5.0, "JSON API traffic compresses ≥5×: {total}");
    assert!(total["requests_per_sec"].as_f64().unwrap() > 100.0);
    assert_eq!(total["bytes_skipped"], 0);

    let lines = ok(&["cat", s(&capture)]);
    assert_eq!(lines.lines().count(), 1500);
    let first: Exchange = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first.request.target.starts_with("/api") || first.request.target == "/healthz");

    let http = ok(&["cat", s(&capture), "--format", "http", "--limit", "3"]);
    assert_eq!(http.matches("### ").count(), 3);
    assert!(http.contains(" HTTP/1.1\r\nHost: api.shop.example\r\n"));

    let curl = ok(&["cat", s(&capture), "--format", "curl", "--limit", "2"]);
    assert_eq!(curl.lines().filter(|l| l.starts_with("curl ")).count(), 2);

    let har: Value =
        serde_json::from_str(&ok(&["cat", s(&capture), "--format", "har", "--filter", "status >= 400"])).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["response"]["status"].as_u64().unwrap() >= 400));
}

#[test]
fn inspect_reports_per_segment_and_total() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(800);
    write_tape(&dir.path().join("a"), &input[..300]);
    write_tape(&dir.path().join("b"), &input[300..]);
    let json: Value = serde_json::from_str(&ok(&["inspect", s(dir.path()), "--json", "--top", "3"])).unwrap();
    let segments = json["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0]["summary"]["exchanges"], 300);
    assert_eq!(segments[1]["summary"]["exchanges"], 500);
    assert_eq!(json["total"]["exchanges"], 800);
    assert_eq!(json["total"]["top_routes"].as_array().unwrap().len(), 3);
    let methods = json["total"]["methods"].as_object().unwrap();
    let expected_posts = input.iter().filter(|e| e.request.method == "POST").count() as u64;
    assert_eq!(methods["POST"], expected_posts);

    let text = ok(&["inspect", s(dir.path())]);
    assert!(text.contains("2 segments") && text.contains("total") && text.contains("800"), "{text}");
}

#[test]
fn jsonl_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(300);
    write_tape(&dir.path().join("orig"), &input);
    let jsonl = dir.path().join("x.jsonl");
    ok(&["export", "--to", "jsonl", s(&dir.path().join("orig")), "-o", s(&jsonl)]);
    let imported = dir.path().join("imported");
    let msg = ok(&["import", "--from", "jsonl", s(&jsonl), "-o", s(&imported)]);
    assert!(msg.contains("imported 300 exchanges"), "{msg}");
    assert_eq!(read_all(&[&imported]), input);
}

#[test]
fn har_round_trip_keeps_ids_timing_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = synth(200);
    // Binary bodies, failures and truncation must survive too.
    input[3].response.as_mut().unwrap().body.data = vec![0u8, 159, 146, 150, 255].into();
    input[3].response.as_mut().unwrap().body.len = 5;
    input[4].request.body.data = vec![0xff, 0x00].into();
    input[4].request.body.len = 9;
    input[4].request.body.truncated = true;
    input[5].response = None;
    input[5].error = Some(ErrorKind::ResponseTimeout);
    input[5].timing.head_ns = None;
    input[5].timing.end_ns = None;
    // A WebSocket session: text, bytes that are not UTF-8, a close.
    use tapedeck_captures::websocket::{Kind, Message, Side, WebSocket};
    let message = |from, at_ns, kind, data: &[u8], code| Message {
        from,
        at_ns,
        kind,
        code,
        data: data.to_vec().into(),
        len: data.len() as u64,
        truncated: false,
    };
    input[6].websocket = Some(WebSocket {
        messages: vec![
            message(Side::Client, 10, Kind::Text, b"{\"op\":\"subscribe\"}", None),
            message(Side::Server, 20, Kind::Binary, &[0xff, 0, 1], None),
            message(Side::Server, 30, Kind::Close, b"bye", Some(1001)),
        ],
        dropped: 2,
        end_ns: Some(40),
        ..Default::default()
    });
    write_tape(&dir.path().join("orig"), &input);
    let har = dir.path().join("x.har");
    ok(&["export", "--to", "har", s(&dir.path().join("orig")), "-o", s(&har)]);
    // Chrome's field for a WebSocket's messages is there for other HAR readers.
    let text = fs::read_to_string(&har).unwrap();
    assert!(text.contains(r#""_webSocketMessages":[{"data":"{\"op\":\"subscribe\"}","opcode":1"#), "{text}");
    let imported = dir.path().join("imported");
    ok(&["import", "--from", "har", s(&har), "-o", s(&imported)]);
    let back = read_all(&[&imported]);
    assert_eq!(back.len(), input.len());
    for (a, b) in input.iter().zip(&back) {
        assert_eq!(a, b, "exchange {} changed in a HAR round trip", a.id);
    }
}

#[test]
fn gor_round_trip_keeps_requests_responses_and_timing() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(200);
    write_tape(&dir.path().join("orig"), &input);
    let gor = dir.path().join("x.gor");
    ok(&["export", "--to", "gor", s(&dir.path().join("orig")), "-o", s(&gor)]);
    let text = fs::read_to_string(&gor).unwrap();
    assert_eq!(text.matches("\n🐵🙈🙉\n").count(), 400, "a request and a response per exchange");
    let imported = dir.path().join("imported");
    ok(&["import", "--from", "gor", s(&gor), "-o", s(&imported)]);
    let back = read_all(&[&imported]);
    assert_eq!(back.len(), input.len());
    for (a, b) in input.iter().zip(&back) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.wall_start_ns(), b.wall_start_ns(), "start time is kept to the nanosecond");
        assert_eq!(a.timing.head_ns, b.timing.head_ns);
        assert_eq!(a.timing.end_ns, b.timing.end_ns);
        assert_eq!(a.request.method, b.request.method);
        assert_eq!(a.request.target, b.request.target);
        assert_eq!(a.request.headers, b.request.headers);
        assert_eq!(a.request.body.data, b.request.body.data);
        let (ra, rb) = (a.response.as_ref().unwrap(), b.response.as_ref().unwrap());
        assert_eq!((ra.status, &ra.headers, &ra.body.data), (rb.status, &rb.headers, &rb.body.data));
    }
}

#[test]
fn imports_a_browser_har_and_skips_broken_entries() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/browser.har");
    let out = run(&["import", "--from", "har", fixture, "-o", s(dir.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("entry 4: no request; skipped"), "{err}");
    assert!(err.contains("entry 5: startedDateTime \"yesterday-ish\""), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 4 exchanges"));

    let back = read_all(&[dir.path()]);
    assert_eq!(back.len(), 4);
    let page = back.iter().find(|e| e.request.target == "/account?tab=orders").unwrap();
    assert_eq!(page.request.authority, "shop.example");
    assert_eq!(page.request.scheme, "https");
    assert!(page.request.headers.get(":authority").is_none(), "h2 pseudo-headers are not headers");
    assert_eq!(page.request.headers.get_str("cookie"), Some("sid=abc123; theme=dark"));
    assert_eq!(page.timing.end_ns, Some(123_456_000));
    assert_eq!(page.timing.head_ns, Some(112_100_000), "blocked+dns+connect+send+wait (ssl is part of connect)");
    let body = &page.response.as_ref().unwrap().body;
    assert_eq!(body.decoded_from.as_deref(), Some("br"), "browsers store decoded bodies");
    let post = back.iter().find(|e| e.request.method == "POST").unwrap();
    assert_eq!(&post.request.body.data[..], b"sku=SKU-1&qty=2&gift=no");
    // 10:15:02.350+01:00 is 09:15:02.350Z: after the page load.
    assert_eq!(post.wall_start_ns() - page.wall_start_ns(), 250_000_000);
    let logo = back.iter().find(|e| e.request.target == "/logo.png").unwrap();
    assert_eq!(&logo.response.as_ref().unwrap().body.data[..], b"\x89PNG\r\n\x1a\n");
    let down = back.iter().find(|e| e.request.authority == "down.shop.example").unwrap();
    assert!(down.response.is_none());
    assert_eq!(down.error, Some(ErrorKind::ConnectRefused));
    assert_eq!(page.connection.0, 31337);
    assert_eq!(post.sequence, 1, "second request on Chrome connection 31337");

    let text = ok(&["inspect", s(dir.path())]);
    assert!(text.contains("connect_refused 1"), "{text}");
}

#[test]
fn filters_and_limits_select_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(500);
    write_tape(dir.path(), &input);
    let posts = ok(&["cat", s(dir.path()), "--filter", "method == POST && route == /api/orders"]);
    let expected = input.iter().filter(|e| e.request.method == "POST").count();
    assert_eq!(posts.lines().count(), expected);
    let limited = ok(&["cat", s(dir.path()), "--filter", "status == 2xx", "--limit", "7"]);
    assert_eq!(limited.lines().count(), 7);
    let out = run(&["cat", s(dir.path()), "--filter", "status >>= 5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid --filter"), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["inspect".into(), "/definitely/not/here".into()], "/definitely/not/here: opening"),
        (vec!["inspect".into(), s(dir.path()).into()], "no .tape files found here"),
        (
            vec![
                "import".into(),
                "--from".into(),
                "har".into(),
                "/no/such.har".into(),
                "-o".into(),
                s(dir.path()).into(),
            ],
            "cannot open /no/such.har",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }

    let not_har = dir.path().join("x.har");
    fs::write(&not_har, "{\"hello\": 1}").unwrap();
    let out = run(&["import", "--from", "har", s(&not_har), "-o", s(&dir.path().join("o"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no log.entries array"), "{}", stderr(&out));

    let gor = dir.path().join("x.gor");
    fs::write(&gor, "this has no payload header at all\n🐵🙈🙉\n").unwrap();
    let out = run(&["import", "--from", "gor", s(&gor), "-o", s(&dir.path().join("o"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no GoReplay payloads could be read"), "{}", stderr(&out));

    let tapes = dir.path().join("tapes");
    write_tape(&tapes, &synth(10));
    let out = run(&["export", "--to", "har", s(&tapes), "-o", "/nonexistent-dir/out.har"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot write /nonexistent-dir/out.har") && err.contains("check that its directory exists"),
        "{err}"
    );

    let har_as_tape = run(&["inspect", s(&not_har)]);
    assert_eq!(har_as_tape.status.code(), Some(2));
    assert!(stderr(&har_as_tape).contains("tapedeck import --from har"), "{}", stderr(&har_as_tape));
}

#[test]
fn one_bad_segment_among_many_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write_tape(dir.path(), &synth(50));
    fs::write(dir.path().join("zz-broken.tape"), b"TAPEDECK\x07\x00garbage").unwrap();
    let out = run(&["cat", s(dir.path())]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 50);
    let err = stderr(&out);
    assert!(err.contains("warning:") && err.contains("zz-broken.tape") && err.contains("version 7"), "{err}");

    let out = run(&["inspect", s(dir.path())]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unreadable"));
}

#[test]
fn help_shows_examples_for_every_command() {
    for cmd in ["inspect", "cat", "import", "export", "demo"] {
        let help = ok(&[cmd, "--help"]);
        assert!(help.contains("Examples:"), "{cmd} --help has examples:\n{help}");
    }
}

#[test]
fn every_command_ends_quietly_with_0_when_its_output_pipe_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let mut exchanges = synth(300);
    // Something personal, so the audit has a verdict to keep.
    exchanges[7].request.target = "/api/users?email=ada.lovelace@example.com".into();
    write_tape(&capture, &exchanges);
    let runs: [&[&str]; 5] = [
        &["inspect", s(&capture)],
        &["inspect", s(&capture), "--json"],
        &["cat", s(&capture)],
        &["scrub", "--check", s(&capture)],
        &["scrub", "--print-default-policy"],
    ];
    for args in runs {
        // A pipe nobody reads any more: every write fails with EPIPE, as under `| head`.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = tapedeck().args(args).stdout(writer).stderr(std::process::Stdio::piped()).output().unwrap();
        let err = stderr(&out);
        // The audit's verdict is its exit code, pipe or no pipe.
        let expected = if args[0] == "scrub" && args[1] == "--check" { Some(1) } else { Some(0) };
        assert_eq!(out.status.code(), expected, "{args:?}\n{err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
    // A full disk under the output is an error, said in one line.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = tapedeck().args(["inspect", s(&capture)]).stdout(full).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.starts_with("error: writing output: No space left") && !err.contains("panicked"), "{err}");
    }
}
