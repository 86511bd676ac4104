//! `tapedeck replay` as a user runs it: capture through the proxy, check the scrub, replay
//! against a staging upstream with sessions in order, the production guard, a dead target,
//! bad flags and Ctrl-C.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::{KillOnDrop, ProxyProcess};
use common::upstream::Upstream;
use common::*;

/// A GET with extra headers over a fresh connection; returns the status.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: shop.example\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Each of the six users' five steps arrived in order.
fn assert_sessions_in_order(seen: &[common::upstream::Seen]) {
    for u in 0..6 {
        let steps: Vec<&str> =
            seen.iter().filter(|r| r.path.starts_with(&format!("/api/users/{u}/"))).map(|r| r.path.as_str()).collect();
        let expected: Vec<String> = (0..5).map(|k| format!("/api/users/{u}/step/{k}")).collect();
        assert_eq!(steps, expected, "user {u}'s session out of order");
    }
}

#[test]
fn captured_sessions_replay_in_order_against_staging_and_never_production() {
    let production = Upstream::start();
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = ProxyProcess::capturing(&production, &caps, &["--sample-key", "header:x-user"], None);

    // Six users, five requests each, concurrently; each user's requests one after another.
    let users: Vec<_> = (0..6)
        .map(|u| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                for k in 0..5 {
                    let user = format!("user{u}@mail.example");
                    let token = format!("Bearer tok_live_{u}abcdef0123456789");
                    let path = format!("/api/users/{u}/step/{k}");
                    assert_eq!(get(addr, &path, &[("x-user", &user), ("authorization", &token)]), 200);
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        })
        .collect();
    users.into_iter().for_each(|t| t.join().unwrap());
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait(Duration::from_secs(10)).0, 0);
    let before = production.seen().len();
    assert_eq!(before, 30);

    // A security reviewer's check: nothing personal on disk.
    let check = run(&["scrub", "--check", s(&caps)]);
    assert_eq!(check.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&check.stdout), stderr(&check));

    let report = dir.path().join("replay.json");
    let results = dir.path().join("results");
    let out = tapedeck()
        .args(["replay", s(&caps), "--target", &staging.url(), "--speed", "2x"])
        .args([
            "--set-header",
            "Authorization: Bearer ${STAGING_TOKEN}",
            "--results",
            s(&results),
            "--report",
            s(&report),
        ])
        .env("STAGING_TOKEN", "staging-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("replayed 30 requests against"), "{stdout}");
    assert!(stdout.contains("answered      30 of 30"), "{stdout}");
    assert!(stdout.contains("GET /api/users/{id}/step/{id}"), "{stdout}");

    let seen = staging.seen();
    assert_eq!(seen.len(), 30);
    assert_sessions_in_order(&seen);
    assert!(seen.iter().all(|r| r.header("authorization") == Some("Bearer staging-secret")));
    assert!(
        seen.iter().all(|r| !r.header("x-user").unwrap_or("").contains("@mail.example")),
        "scrubbed tapes replay scrubbed"
    );

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        (json["schema_version"].as_u64(), json["sent"].as_u64(), json["completed"].as_u64()),
        (Some(2), Some(30), Some(30))
    );
    assert!(json["lag"]["ms"]["p99"].as_f64().is_some(), "{json}");
    let inspect = ok(&["inspect", s(&results)]);
    assert!(inspect.contains("30"), "{inspect}");

    // Flat out every request is due at once: only the session keeps the order.
    let flat_out = Upstream::start();
    ok(&["replay", s(&caps), "--target", &flat_out.url(), "--speed", "max", "--workers", "2"]);
    assert_sessions_in_order(&flat_out.seen());

    // The tapes remember their upstream: replaying there is refused, and nothing is sent.
    let out = run(&["replay", s(&caps), "--target", &production.url(), "--speed", "max"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--allow-production-target"), "{}", stderr(&out));
    assert_eq!(production.seen().len(), before, "a request reached production");
}

#[test]
fn a_dead_target_fails_the_run_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    write_tape(dir.path(), &synth(10));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("http://127.0.0.1:{port}");
    let out = run(&["replay", s(dir.path()), "--target", &target, "--speed", "max"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("connect_refused 10"), "{stdout}");
    assert!(stderr(&out).contains("answered none of 10 requests completely"), "{}", stderr(&out));

    // A long schedule (20,000 requests over 2 minutes, paced) is given up after the first
    // refusals, not played out; the message names the address.
    let long = tempfile::tempdir().unwrap();
    write_tape(long.path(), &synth(20_000));
    let started = std::time::Instant::now();
    let out = run(&["replay", s(long.path()), "--target", &target]);
    assert!(started.elapsed() < Duration::from_secs(30), "gave up after {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("the target {target}")) && err.contains("unreachable"), "{err}");
}

#[test]
fn bad_flags_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    write_tape(dir.path(), &synth(3));
    let d = s(dir.path());
    for (args, says) in [
        (vec!["--target", "http://127.0.0.1:9", "--speed", "fast"], "--speed"),
        (vec!["--target", "ftp://127.0.0.1:9"], "http"),
        (vec!["--target", "http://127.0.0.1:9", "--concurrency", "8"], "--speed max"),
        (vec!["--target", "http://127.0.0.1:9", "--set-header", "X-Token: ${TAPEDECK_SURELY_UNSET}"], "not set"),
        (vec!["--target", "http://127.0.0.1:9", "--rewrite-path", "([=x"], "--rewrite-path"),
        (vec!["--target", "http://127.0.0.1:9", "--status", "teapot"], "--status"),
        (vec!["--target", "http://127.0.0.1:9", "--from", "soon"], "--from"),
        (vec!["--target", "http://127.0.0.1:9", "--shard", "3/3"], "K/N"),
        (vec!["--target", "http://127.0.0.1:9", "--shard", "0/0"], "K/N"),
        (vec!["--target", "http://127.0.0.1:9", "--start-at", "2020-01-01T00:00:00Z"], "--late-ok"),
        (vec!["--target", "http://127.0.0.1:9", "--start-at", "tomorrow"], "RFC 3339"),
        (vec!["--target", "http://127.0.0.1:9", "--late-ok"], "--start-at"),
    ] {
        let out = tapedeck().arg("replay").arg(d).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = run(&["replay", "/nonexistent/tapes", "--target", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/tapes"), "{}", stderr(&out));
}

#[test]
fn start_at_from_a_config_file_quoted_or_not_and_late_ok_from_a_flag() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(3));
    for (n, value) in ["2020-01-01T00:00:00Z", "\"2020-01-01T00:00:00Z\""].into_iter().enumerate() {
        let config = dir.path().join(format!("replay-{n}.toml"));
        std::fs::write(&config, format!("target = \"{}\"\nstart-at = {value}\nspeed = \"max\"\n", staging.url()))
            .unwrap();
        // Long past: refused, naming the way out…
        let out = run(&["replay", s(&caps), "--config", s(&config)]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        assert!(stderr(&out).contains("--late-ok"), "{value}: {}", stderr(&out));
        // …which a flag gives, with the time from the file.
        let out = run(&["replay", s(&caps), "--config", s(&config), "--late-ok"]);
        assert_eq!(out.status.code(), Some(0), "{value}: {}", stderr(&out));
        assert!(stderr(&out).contains("late"), "{value}: the late join is said: {}", stderr(&out));
    }
    assert_eq!(staging.seen().len(), 6);
    // A date-time without its offset is ambiguous between hosts: refused.
    let config = dir.path().join("local.toml");
    std::fs::write(&config, format!("target = \"{}\"\nstart-at = 2020-01-01T00:00:00\n", staging.url())).unwrap();
    let out = run(&["replay", s(&caps), "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--start-at") && stderr(&out).contains("offset"), "{}", stderr(&out));
}

#[test]
fn ctrl_c_while_waiting_for_start_at_says_nothing_was_sent() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(3));
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3 * 3600 + 120);
    let child = tapedeck()
        .args(["replay", s(&caps), "--target", &staging.url(), "--start-at", &at.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Stderr read on a thread of its own: a wait never announced fails, never hangs.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut err = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = err.read(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    // The wait is announced (once the tapes are checked), in hours and minutes.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("waiting") {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(bytes) => seen.extend(bytes),
            Err(_) => panic!("no wait announced: {}", String::from_utf8_lossy(&seen)),
        }
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "replay did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(bytes) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.extend(bytes);
    }
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("3h 1m") || text.contains("3h 2m"), "{text}");
    assert!(text.contains("stopped before the first request was sent") && !text.contains("()"), "{text}");
    assert!(staging.seen().is_empty());
}

#[test]
fn ctrl_c_stops_sending_and_still_reports() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(3000));
    let results = dir.path().join("results");
    let child = tapedeck()
        .args(["replay", s(&caps), "--target", &staging.url(), "--results", s(&results)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "replay did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("stopped early"), "{stdout}");
    let sent: usize = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(sent > 50 && sent < 3000, "{stdout}");
    assert_eq!(staging.seen().len(), sent);
    // The results tape is closed and holds every answer.
    let inspect = ok(&["inspect", s(&results), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(json["total"]["exchanges"].as_u64(), Some(sent as u64), "{inspect}");
}

#[test]
fn a_full_disk_for_results_is_reported_and_the_replay_goes_on() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(2000));
    let results = dir.path().join("results");
    let mut cmd = tapedeck();
    cmd.args(["replay", s(&caps), "--target", &staging.url(), "--speed", "max", "--results", s(&results)]);
    // Room for the first blocks only.
    limit_file_size(&mut cmd, 64 * 1024);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("answered      2000 of 2000"), "every request was still sent: {stdout}");
    assert!(stdout.contains("could NOT be written"), "{stdout}");
    assert!(stderr(&out).contains("is the disk full?"), "{}", stderr(&out));
    assert_eq!(staging.seen().len(), 2000);
}

#[test]
fn duration_bounds_a_flat_out_run() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    // 3,000 requests of 100 ms each on 4 connections: 75 s of work.
    let mut exchanges = synth(3000);
    for ex in &mut exchanges {
        ex.request.target = "/delay/100".into();
        ex.request.method = "GET".into();
    }
    write_tape(&caps, &exchanges);
    let started = Instant::now();
    let out = run(&[
        "replay",
        s(&caps),
        "--target",
        &staging.url(),
        "--speed",
        "max",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--no-compare",
    ]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "ran {took:?}: {}", stderr(&out));
    let seen = staging.seen().len();
    assert!(seen > 0 && seen < 1000, "sent {seen}");
    assert_ne!(out.status.code(), Some(130), "ending at --duration is not an interruption: {}", stderr(&out));
}

#[test]
fn results_written_beside_a_capture_are_never_read_as_traffic() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(200));
    let results = caps.join("results");
    ok(&["replay", s(&caps), "--target", &staging.url(), "--speed", "max", "--results", s(&results)]);
    assert_eq!(staging.seen().len(), 200);

    let out = run(&["inspect", s(&caps), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["total"]["exchanges"], 200, "the results are not counted as traffic");
    assert!(stderr(&out).contains("skipping 1 segment(s) of replay results"), "{}", stderr(&out));
    let out = run(&["replay", s(&caps), "--target", &staging.url(), "--speed", "max", "--no-compare"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipping 1 segment(s) of replay results"), "{}", stderr(&out));
    assert_eq!(staging.seen().len(), 400, "only the recording is replayed again");
    // Named, the results are read.
    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", s(&results), "--json"])).unwrap();
    assert_eq!(json["total"]["exchanges"], 200);
    assert_eq!(ok(&["cat", s(&caps)]).lines().count(), 200);
}

#[test]
fn tls_failures_say_why_and_what_to_do() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("staging.crt"), dir.path().join("staging.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    // An https staging: a TLS-terminating proxy in front of the plain one.
    let tls = common::proxy::ProxyProcess::spawn(
        &["--listen", "127.0.0.1:0", "--upstream", &staging.url(), "--admin", "none", "--tls-cert", s(&cert)]
            .into_iter()
            .chain(["--tls-key", s(&key)])
            .collect::<Vec<_>>(),
        None,
    );
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(10));
    let target = format!("https://{}", tls.addr);
    let out = run(&["replay", s(&caps), "--target", &target, "--speed", "max"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("tls: invalid peer certificate: UnknownIssuer") && err.contains("--ca FILE"), "{err}");
    // With its CA trusted, the same target answers.
    let out = run(&["replay", s(&caps), "--target", &target, "--speed", "max", "--ca", s(&cert)]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn short_runs_and_tiny_tapes_are_described_sensibly() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(200));
    let out = ok(&["replay", s(&caps), "--target", &staging.url(), "--limit", "2", "--no-compare"]);
    assert!(out.contains("too short a run to compare with the schedule"), "{out}");
    let tiny = dir.path().join("tiny");
    let mut one = synth(1);
    one[0].request.headers = Default::default();
    one[0].request.body = Default::default();
    one[0].response = None;
    write_tape(&tiny, &one);
    let out = ok(&["inspect", s(&tiny)]);
    assert!(out.contains("larger") && !out.contains("× smaller"), "{out}");
}

#[test]
fn ctrl_c_against_a_staging_that_never_answers_counts_what_was_in_flight() {
    // A staging that reads every request and answers none.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(mut conn) = conn else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Each read is a request (or a part of one); the replay's exit closes it.
                if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(40));
    let results = dir.path().join("results");
    let report = dir.path().join("report.json");
    let child = tapedeck()
        .args(["replay", s(&caps), "--target", &format!("http://{addr}"), "--speed", "max", "--concurrency", "8"])
        .args(["--results", s(&results), "--report", s(&report)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let started = Instant::now();
    while received.load(std::sync::atomic::Ordering::Relaxed) < 8 {
        assert!(started.elapsed() < Duration::from_secs(20), "the requests never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "replay did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.0.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}\n{stderr}");
    let arrived = received.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(arrived, 8, "--concurrency 8");
    // What the staging received was sent, and is an error: never a clean run.
    assert!(stdout.contains("answered      0 of 8"), "{stdout}");
    assert!(stdout.contains("interrupted 8"), "{stdout}");
    assert!(!stdout.contains("no differences"), "{stdout}");
    assert!(stderr.contains("stopped before any answer"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((json["sent"].as_u64(), json["completed"].as_u64()), (Some(8), Some(0)), "{json}");
    assert_eq!(json["errors"]["interrupted"].as_u64(), Some(8), "{json}");
    let inspect = ok(&["inspect", s(&results), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(json["total"]["exchanges"].as_u64(), Some(8), "{inspect}");
}
