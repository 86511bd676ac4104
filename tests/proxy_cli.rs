//! `tapedeck proxy` as a process: start-up, the config file, SIGTERM drain with no
//! `.partial` left behind, bad settings, and a real disk write failure that drops captures
//! (counted) but no requests, then recovers.

mod common;

use std::time::Duration;

use common::proxy::{metric, ProxyProcess};
use common::upstream::{http, Upstream};
use common::*;

#[test]
fn sigterm_drains_in_flight_requests_and_closes_the_tape() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = ProxyProcess::capturing(&upstream, &caps, &[], None);
    for _ in 0..5 {
        assert_eq!(http(proxy.addr, "GET", "/hello", b"").unwrap().0, 200);
    }
    let m = proxy.metrics();
    assert_eq!(metric(&m, "tapedeck_requests_total{class=\"2xx\"}"), 5.0, "{m}");

    let addr = proxy.addr;
    let slow = std::thread::spawn(move || http(addr, "GET", "/delay/800", b""));
    std::thread::sleep(Duration::from_millis(200));
    proxy.signal(libc::SIGTERM);
    let (status, body) = slow.join().unwrap().expect("the in-flight request completes");
    assert_eq!((status, body), (200, b"slept".to_vec()));
    std::thread::sleep(Duration::from_millis(100));
    assert!(std::net::TcpStream::connect(addr).is_err(), "no new connections while draining");
    let (code, stderr) = proxy.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("wrote 6 exchanges")), "{stderr:?}");

    let files: Vec<_> = std::fs::read_dir(&caps).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().all(|f| s(f).ends_with(".tape")), "no .partial after a clean stop: {files:?}");
    let captured = read_all(&[&caps]);
    assert_eq!(captured.len(), 6);
    let slow = captured.iter().find(|e| e.request.target == "/delay/800").unwrap();
    assert!(slow.timing.head_ns.unwrap() >= 800_000_000);
}

#[test]
fn config_file_sets_flags_and_flags_override_it() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("from-file");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\ncapture-dir = \"{}\"\nsample = \"100%\"\nexclude = [\"^/private\"]\nadmin = \"off\"\n",
            upstream.url(),
            s(&caps)
        ),
    )
    .unwrap();
    let proxy = ProxyProcess::spawn(&["--config", s(&config), "--max-body", "4"], None);
    assert!(proxy.admin.is_none(), "admin = off");
    http(proxy.addr, "POST", "/public", b"0123456789").unwrap();
    http(proxy.addr, "GET", "/private/x", b"").unwrap();
    proxy.signal(libc::SIGINT);
    assert_eq!(proxy.wait(Duration::from_secs(10)).0, 0);
    let captured = read_all(&[&caps]);
    assert_eq!(captured.len(), 1, "the file's exclude rule applies");
    let body = &captured[0].request.body;
    // At most the first 4 bytes are kept; the scrubber then drops the word the cut fell in
    // (half a card number or e-mail address must not reach the disk), here all of it.
    assert!(b"0123".starts_with(&body.data[..]), "--max-body from the command line: {:?}", body.data);
    assert_eq!((body.len, body.truncated), (10, true), "--max-body from the command line");
}

#[test]
fn bad_settings_fail_at_start_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "listen = \":0\"\nsample-rate = \"10%\"\n").unwrap();
    let bad_policy = dir.path().join("policy.toml");
    std::fs::write(&bad_policy, "[json-keys]\npassword = \"obliterate\"\n").unwrap();
    let policy_error = format!("{}, line 2: unknown variant `obliterate`", s(&bad_policy));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--listen", &busy, "--upstream", "http://127.0.0.1:1"], "cannot open the proxy listener (--listen) on"),
        (
            vec!["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1", "--admin", &busy],
            "cannot open the admin listener (--admin) on",
        ),
        (vec!["--listen", "127.0.0.1:0", "--upstream", "ftp://x"], "only http and https"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:1",
                "--body-timeout",
                "18446744073709551615s",
            ],
            "--body-timeout \"18446744073709551615s\": at most 30 days",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:1",
                "--capture-dir",
                "/proc/no-such/dir",
                "--admin",
                "off",
            ],
            "capture",
        ),
        (vec!["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1", "--sample", "10%"], "need --capture-dir"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:1",
                "--capture-dir",
                "x",
                "--sample",
                "150%",
            ],
            "between 0% and 100%",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:1",
                "--tls-cert",
                "/no.pem",
                "--tls-key",
                "/no.key",
            ],
            "--tls-cert: /no.pem",
        ),
        (vec!["--config", s(&bad_toml)], "unknown key `sample-rate`"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:1",
                "--capture-dir",
                s(dir.path()),
                "--scrub-policy",
                s(&bad_policy),
            ],
            &policy_error,
        ),
    ];
    for (args, expected) in cases {
        let out = tapedeck().arg("proxy").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected {expected:?} in {err}");
        assert_eq!(err.matches("(os error").count().min(1), err.matches("(os error").count(), "said once: {err}");
    }

    // A second proxy on the port of a running one (both would set SO_REUSEPORT and the
    // kernel would split the connections between them) is refused.
    let upstream = Upstream::start();
    let first =
        ProxyProcess::spawn(&["--listen", "127.0.0.1:0", "--upstream", &upstream.url(), "--admin", "none"], None);
    let second = first.addr.to_string();
    let out = tapedeck()
        .args(["proxy", "--listen", &second, "--upstream", &upstream.url(), "--admin", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("another process listens there"), "{err}");
    drop(first);
}

/// A write failure (here: the file-size limit, RLIMIT_FSIZE) makes the writer drop
/// captures — counted in /metrics — while every request succeeds; when writing works
/// again (the limit is raised) capture resumes on its own.
#[test]
fn write_failures_drop_captures_not_requests_and_capture_recovers() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    // Unscrubbed: the random bodies must reach the disk (scrubbing drops binary bodies).
    let proxy = ProxyProcess::capturing(&upstream, &caps, &["--no-scrub"], Some(48 << 10));
    // Incompressible bodies, so the tape grows past the limit.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut payload = move || {
        (0..16 << 10)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    let mut send_batch = |n: usize| {
        for _ in 0..n {
            let (status, _) = http(proxy.addr, "POST", "/upload", &payload()).unwrap();
            assert_eq!(status, 200, "requests never fail because of capture");
        }
        std::thread::sleep(Duration::from_millis(1600)); // blocks are cut after 1 s
    };
    send_batch(40);
    let m = proxy.metrics();
    let dropped = metric(&m, "tapedeck_capture_dropped_total{reason=\"write_error\"}");
    assert!(dropped > 0.0, "writes beyond the limit fail and are counted:\n{m}");
    let written_before = metric(&m, "tapedeck_capture_written_total");

    // Space returns.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: prlimit(2) on our own child with a valid struct.
    let rc = unsafe { libc::prlimit(proxy.child.0.id() as i32, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
    send_batch(10);
    let m = proxy.metrics();
    assert!(metric(&m, "tapedeck_capture_written_total") >= written_before + 10.0, "capture resumed:\n{m}");
    proxy.signal(libc::SIGTERM);
    let (code, stderr) = proxy.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr:?}");
    // One line when writing fails, one when data reaches the disk again (an append that
    // only buffered used to claim a recovery after every failure).
    let count = |what: &str| stderr.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("cannot write captures"), 1, "the failure is logged once: {stderr:?}");
    assert_eq!(count("capture writing resumed"), 1, "and the recovery once: {stderr:?}");
    let captured = read_all(&[&caps]);
    assert!(captured.len() as f64 >= written_before + 10.0);
}

#[test]
fn json_logs_are_json_on_every_line() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let child = tapedeck()
        .args(["--log-format", "json", "proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream.url()])
        .args(["--capture-dir", s(&caps), "--admin", "none"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.starts_with("listening on")), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("wrote ")), "{messages:?}");
    let started = lines.iter().find(|l| l["fields"]["message"] == "proxy started").expect("start event");
    assert_eq!(started["fields"]["admin"], "off");
}

#[test]
fn a_segment_deleted_just_before_shutdown_does_not_fail_the_shutdown() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = ProxyProcess::capturing(&upstream, &caps, &[], None);
    for _ in 0..5 {
        assert_eq!(http(proxy.addr, "GET", "/a", b"").unwrap().0, 200);
    }
    std::thread::sleep(Duration::from_millis(1600)); // a block is cut after 1 s
    for _ in 0..5 {
        assert_eq!(http(proxy.addr, "GET", "/b", b"").unwrap().0, 200);
    }
    let partial = std::fs::read_dir(&caps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".partial"))
        .unwrap();
    std::fs::remove_file(partial).unwrap();
    proxy.signal(libc::SIGTERM);
    let (code, stderr) = proxy.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("deleted by someone else")), "{stderr:?}");
    assert!(!stderr.iter().any(|l| l.contains("could not close")), "{stderr:?}");
    let kept = read_all(&[&caps]);
    assert_eq!(kept.len(), 5, "the captures after the deleted block are in a new segment");
    assert!(std::fs::read_dir(&caps).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with(".partial")));
}

/// A sidecar whose log collector dies (stderr a closed pipe) goes on serving, capturing
/// and draining: a log line it cannot write is lost, never the process. Before, the first
/// status line after the pipe closed panicked the main thread and the proxy died with its
/// tape left `.partial`.
#[test]
fn a_closed_stderr_neither_stops_the_proxy_nor_its_shutdown() {
    use std::io::{BufRead, BufReader};
    let upstream = Upstream::start();
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let caps = dir.path().join("caps");
        let mut child = proxy::KillOnDrop(
            tapedeck()
                .args(["--log-format", format, "-v", "proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream.url()])
                .args(["--capture-dir", s(&caps), "--admin", "none"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
        let addr: std::net::SocketAddr = loop {
            let line = lines.next().expect("the proxy reports its address").unwrap();
            if let Some(at) = line.split("listening on ").nth(1) {
                let at = at.split(|c: char| c.is_whitespace() || c == '"').next().unwrap();
                break at.parse().unwrap_or_else(|e| panic!("{e}: {line}"));
            }
        };
        drop(lines); // the collector goes away: every later write to stderr fails (EPIPE)
        for i in 0..20 {
            let (status, _) = http(addr, "GET", &format!("/after-{i}"), b"").expect("served with stderr closed");
            assert_eq!(status, 200, "{format}");
        }
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let code = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status.code();
            }
            assert!(std::time::Instant::now() < deadline, "{format}: the proxy did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, Some(0), "{format}: a clean stop despite the closed stderr");
        let files: Vec<_> = std::fs::read_dir(&caps).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.iter().all(|f| s(f).ends_with(".tape")), "{format}: tape closed: {files:?}");
        assert_eq!(read_all(&[&caps]).len(), 20, "{format}");
    }
}
