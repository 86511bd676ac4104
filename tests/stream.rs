//! The fleet path on a real NATS JetStream server (Debian's `nats-server`, started here
//! on a free port with its store in a temp dir): sidecars publish scrubbed captures to a
//! stream, `tapedeck archive` writes the stream into tapes. Skipped, saying why, when
//! `nats-server` is not installed (`.ci/run` installs it).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::ProxyProcess;
use common::upstream::{http, Upstream};
use common::*;

/// A `nats-server -js` child on 127.0.0.1, killed when dropped.
struct Nats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nats {
    /// Starts a server, or `None` (with the reason printed) when there is none to start.
    fn start(store: &Path) -> Option<Nats> {
        Nats::start_with(store, &[])
    }

    /// With more server flags (`--auth TOKEN`).
    fn start_with(store: &Path, extra: &[&str]) -> Option<Nats> {
        if Command::new("nats-server").arg("--version").output().is_err() {
            eprintln!("skipped: nats-server is not installed (apt-get install nats-server; .ci/run does)");
            return None;
        }
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut n = Nats { child: None, port: free_port(), store: store.to_path_buf(), extra };
        n.restart();
        Some(n)
    }

    fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT: a server that hangs with its connections open.
    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    fn url(&self, stream: &str) -> String {
        format!("nats://127.0.0.1:{}/{stream}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of a `Transfer-Encoding: chunked` answer (the NATS monitor sends them).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

fn get(addr: std::net::SocketAddr, path: &str) -> u16 {
    http(addr, "GET", path, b"").map(|(status, _)| status).unwrap_or(0)
}

fn stop(proxy: ProxyProcess) -> Vec<String> {
    proxy.signal(libc::SIGTERM);
    let (code, lines) = proxy.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:#?}");
    lines
}

fn archive(url: &str, out: &Path) -> String {
    let out = run(&["archive", url, "-o", s(out), "--once"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    err
}

#[test]
fn captures_published_to_the_stream_archive_into_the_tapes_the_sidecar_writes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(&dir.path().join("js")) else { return };
    let upstream = Upstream::start();
    let (local, archived) = (dir.path().join("local"), dir.path().join("archived"));
    let url = nats.url("CAPTURES");
    // Two sidecars of one service, as a fleet would run them, each also writing locally.
    for instance in ["pod-a", "pod-b"] {
        let caps = local.join(instance);
        let proxy = ProxyProcess::capturing(
            &upstream,
            &caps,
            &["--sink", &url, "--create-stream", "--service", "shop", "--instance", instance],
            None,
        );
        for i in 0..120 {
            // Personal data in the query and a header: scrubbed before either copy.
            let path = format!("/orders/{i}?email=jane.doe{i}@example.com&who={instance}");
            assert_eq!(get(proxy.addr, &path), 200);
        }
        let lines = stop(proxy);
        assert!(lines.iter().any(|l| l.contains("published 120 exchanges") && l.contains("0 dropped")), "{lines:#?}");
    }
    // An output directory others can write: refused before anything is taken, so the
    // next archiver gets every block at once (none waits out an ack wait).
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = run(&["archive", &url, "-o", s(&shared), "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let said = archive(&url, &archived);
    assert!(said.contains("240 exchanges") && !said.contains("not acknowledged"), "{said}");
    // The same exchanges, byte for byte, as the sidecars' own tapes.
    let by_id = |paths: &[&Path]| {
        let mut v = read_all(paths);
        v.sort_by(|a, b| (a.request.target.as_str(), a.id.0).cmp(&(b.request.target.as_str(), b.id.0)));
        v
    };
    let mine = by_id(&[&local.join("pod-a"), &local.join("pod-b")]);
    let theirs = by_id(&[&archived]);
    assert_eq!(mine.len(), 240);
    assert!(mine == theirs, "the archive differs from the local tapes");
    assert!(theirs.iter().all(|e| !e.request.target.contains("jane.doe")), "scrubbed before publishing");
    // In start order across producers, as any tape is read.
    let starts: Vec<i64> = read_all(&[&archived]).iter().map(|e| e.wall_start_ns()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    // A block on disk twice — what an archiver that crashed between its fsync and its
    // acknowledgement leaves once the stream hands the block again; here a second durable
    // archiving into the same directory — is read once, and said.
    let said = run(&["archive", &url, "-o", s(&archived), "--once", "--durable", "second"]);
    assert_eq!(said.status.code(), Some(0), "{}", String::from_utf8_lossy(&said.stderr));
    assert_eq!(read_all(&[&archived]).len(), 240, "each exchange read once");
    let inspected = ok(&["inspect", s(&archived)]);
    assert!(inspected.contains("stored twice") && inspected.contains("240 exchanges, read once"), "{inspected}");
    let exchanges = inspected.lines().find(|l| l.trim_start().starts_with("exchanges")).unwrap_or_default();
    assert!(exchanges.ends_with(" 240"), "{inspected}");
    // Another service on the same stream: its subjects are not the stream's until
    // --create-stream adds them (said, not published into the void).
    for (create, published) in [(false, "published 0 exchanges"), (true, "published 5 exchanges")] {
        let mut extra = vec!["--sink", url.as_str(), "--service", "pay"];
        if create {
            extra.push("--create-stream");
        }
        let proxy = ProxyProcess::capturing(&upstream, &dir.path().join(format!("pay-{create}")), &extra, None);
        for i in 0..5 {
            assert_eq!(get(proxy.addr, &format!("/pay/{i}")), 200);
        }
        std::thread::sleep(Duration::from_millis(1500));
        let text = stop(proxy).join("\n");
        assert!(text.contains(published), "{text}");
        if !create {
            assert!(text.contains("--create-stream") && text.contains("tapedeck.capture.shop.>"), "{text}");
        }
    }
    // Archiving again takes nothing twice: the consumer is durable.
    let again = dir.path().join("again");
    let said = archive(&url, &again);
    assert!(said.contains("5 exchanges"), "only the pay service's, added since: {said}");
    // …and nothing of the last run is left unacknowledged (its last batch's acks are sent
    // before it exits; else they would come again after the ack wait, written twice).
    assert!(!said.contains("not acknowledged"), "{said}");
    // Replayed straight from the stream (a copy of its own: the archive's consumer is
    // not touched), whole or a window of it; never at production, which the sidecars'
    // labels name through the stream.
    let out = run(&["replay", &url, "--target", &upstream.url(), "--speed", "max", "--no-progress"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recorded from"), "{}", String::from_utf8_lossy(&out.stderr));
    let staging = Upstream::start();
    let out = run(&["replay", &url, "--target", &staging.url(), "--speed", "max", "--no-progress"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The shop's 240 and the pay service's 5.
    assert!(stderr.contains("copied 245 exchanges"), "{stderr}");
    assert!(stdout.contains("replayed 245 requests"), "{stdout}");
    let first = jiff::Timestamp::from_nanosecond(i128::from(starts[0])).unwrap();
    let middle = jiff::Timestamp::from_nanosecond(i128::from(starts[120])).unwrap();
    let window = format!("{url}?from={first}&to={middle}");
    let out = run(&["replay", &window, "--target", &staging.url(), "--speed", "max", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("replayed 120 requests"), "{stdout}");
    let out = run(&["replay", &format!("{url}?since=5m"), "--target", &staging.url()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("from= and to="));
}

#[test]
fn a_server_that_dies_and_comes_back_fails_no_request_and_capture_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = Nats::start(&dir.path().join("js")) else { return };
    let upstream = Upstream::start();
    let url = nats.url("CAPTURES");
    // The stream only: no local tapes.
    let proxy = ProxyProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url(),
            "--sink",
            &url,
            "--create-stream",
            "--admin",
            "127.0.0.1:0",
        ],
        None,
    );
    let (sent, failed, running) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
    let load = {
        let (sent, failed, running, addr) = (sent.clone(), failed.clone(), running.clone(), proxy.addr);
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                if get(addr, &format!("/load/{i}")) != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    nats.kill();
    let down_at = sent.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(2000));
    nats.restart();
    let up_at = sent.load(Ordering::Relaxed);
    // Published again once reconnected: the blocks queued while it was down, and new ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let published = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("tapedeck_sink_records_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let before = published(&proxy.metrics()).unwrap_or(0);
    while published(&proxy.metrics()).unwrap_or(0) <= before {
        assert!(Instant::now() < deadline, "capture did not resume: {}", proxy.metrics());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A server that hangs with the connection open (frozen, out of disk): the sink says
    // it is not connected (nothing is acknowledged), requests go on, and it recovers.
    let gauge =
        |m: &str| m.lines().find_map(|l| l.strip_prefix("tapedeck_sink_connected ")).map(str::trim).map(String::from);
    assert_eq!(gauge(&proxy.metrics()).as_deref(), Some("1"));
    nats.signal(libc::SIGSTOP);
    let frozen_at = sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&proxy.metrics()).as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "a frozen server still looks connected: {}", proxy.metrics());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(sent.load(Ordering::Relaxed) > frozen_at, "requests went on while the server was frozen");
    nats.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&proxy.metrics()).as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "the sink did not recover from the freeze: {}", proxy.metrics());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1000));
    running.store(false, Ordering::Relaxed);
    load.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed ({total} sent)");
    assert!(up_at > down_at, "requests went on while the server was down");
    let lines = stop(proxy);
    let summary = lines.iter().find(|l| l.contains("published")).cloned().unwrap_or_default();
    // Everything is either in the stream or counted as dropped.
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit() && c != ',')
        .filter_map(|w| w.replace(',', "").parse().ok())
        .collect();
    let archived = dir.path().join("archived");
    let said = archive(&url, &archived);
    let in_stream = read_all(&[&archived]).len() as u64;
    assert!(numbers.first() == Some(&in_stream), "{summary} / archive: {said}");
    let dropped = summary
        .split("; ")
        .nth(1)
        .and_then(|d| d.split(' ').next())
        .and_then(|n| n.replace(',', "").parse::<u64>().ok());
    assert_eq!(in_stream + dropped.unwrap_or(u64::MAX), total, "{summary}");
    // Requests sent after the restart are in the stream.
    let last = read_all(&[&archived])
        .iter()
        .filter_map(|e| e.request.target.strip_prefix("/load/")?.parse::<u64>().ok())
        .max();
    assert!(last.is_some_and(|l| l > up_at), "{last:?} after {up_at}");
}

#[test]
fn an_unreachable_stream_drops_captures_counted_and_never_a_request() {
    let dir = tempfile::tempdir().unwrap();
    if Command::new("nats-server").arg("--version").output().is_err() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let upstream = Upstream::start();
    // Nothing listens there; the queue holds little.
    let url = format!("nats://127.0.0.1:{}/CAPTURES", free_port());
    let proxy = ProxyProcess::capturing(
        &upstream,
        &dir.path().join("caps"),
        &["--sink", &url, "--queue-max-bytes", "4KiB"],
        None,
    );
    for i in 0..300 {
        assert_eq!(get(proxy.addr, &format!("/item/{i}?pad={}", "x".repeat(200))), 200);
        if i % 100 == 99 {
            // Blocks are cut every second.
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    std::thread::sleep(Duration::from_millis(1200));
    let metrics = proxy.metrics();
    assert!(metrics.contains("tapedeck_sink_connected 0"), "{metrics}");
    // The small queue bound is the capture queue's too: on a busy machine a few captures
    // are dropped (counted) before either destination sees them.
    let before_both = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tapedeck_capture_dropped_total{reason=\"queue_full\"} "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("a capture drop counter");
    let lines = stop(proxy);
    let summary = lines.iter().find(|l| l.contains("published")).cloned().unwrap_or_default();
    let reached = 300 - before_both;
    assert!(summary.contains("published 0 exchanges") && summary.contains(&format!("{reached} dropped")), "{summary}");
    // The local tapes have every capture the writer got: a sink's trouble is its own.
    assert_eq!(read_all(&[&dir.path().join("caps")]).len(), reached);
}

#[test]
fn bad_streams_and_credentials_get_one_line_and_never_echo_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = free_port();
    let Some(nats) =
        Nats::start_with(&dir.path().join("js"), &["--auth", "s3cret-token-for-tests", "-m", &monitor.to_string()])
    else {
        return;
    };
    let url = nats.url("CAPTURES");
    let (wrong, right) = (dir.path().join("wrong.token"), dir.path().join("right.token"));
    std::fs::write(&wrong, "not-the-token-XYZZY\n").unwrap();
    std::fs::write(&right, "s3cret-token-for-tests\n").unwrap();
    // A secret others can read is said (as for the TLS and scrub keys); these are private.
    let open = dir.path().join("open.token");
    std::fs::write(&open, "s3cret-token-for-tests\n").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for f in [&wrong, &right] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let out_dir = dir.path().join("out");
    let one_line = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.contains(" INFO ")).collect();
        (out.status.code(), lines.len(), err)
    };
    // Wrong credentials: exit 2, one line, the token nowhere.
    let out = run(&["archive", &url, "-o", s(&out_dir), "--once", "--nats-token-file", s(&wrong)]);
    let (code, lines, err) = one_line(&out);
    assert_eq!((code, lines), (Some(2), 1), "{err}");
    assert!(!err.contains("XYZZY") && !err.contains("s3cret"), "{err}");
    // No stream yet: one line naming the flag that creates it…
    let out = run(&["archive", &url, "-o", s(&out_dir), "--once", "--nats-token-file", s(&right)]);
    let (code, lines, err) = one_line(&out);
    assert_eq!((code, lines), (Some(2), 1), "{err}");
    assert!(err.contains("--create-stream"), "{err}");
    // Three copies need three servers: said, with the flag; the stream settings without
    // --create-stream are refused, not ignored.
    let create = ["archive", &url, "-o", s(&out_dir), "--once", "--create-stream", "--nats-token-file", s(&right)];
    let out = run(&[&create[..], &["--stream-replicas", "3"]].concat());
    let (code, lines, err) = one_line(&out);
    assert_eq!((code, lines), (Some(2), 1), "{err}");
    assert!(err.contains("--stream-replicas 3 needs a JetStream cluster"), "{err}");
    let out = run(&["archive", &url, "-o", s(&out_dir), "--once", "--stream-max-age", "6h"]);
    let (code, lines, err) = one_line(&out);
    assert_eq!((code, lines), (Some(2), 1), "{err}");
    assert!(err.contains("add --create-stream"), "{err}");
    // …which makes it, with a retention (a day unless said: a stream without one would
    // fill the server's disk and then refuse every capture).
    let out = run(&[&create[..], &["--stream-max-age", "6h", "--stream-max-bytes", "1GiB"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, body) = http(([127, 0, 0, 1], monitor).into(), "GET", "/jsz?streams=true&config=true", b"").unwrap();
    let jsz: serde_json::Value =
        serde_json::from_slice(&dechunk(&body)).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    let config = &jsz["account_details"][0]["stream_detail"][0]["config"];
    assert_eq!(config["name"], "CAPTURES", "{jsz}");
    assert_eq!(config["max_age"], 6 * 3600 * 1_000_000_000_u64, "{config}");
    assert_eq!(config["max_bytes"], 1_u64 << 30, "{config}");
    assert_eq!(config["num_replicas"], 1, "{config}");
    // A filter outside the stream's subjects, and a filter the existing durable was not
    // made with (it would archive other services than asked): one line each, saying why.
    let token = ["--nats-token-file", s(&right)];
    for (filter, durable, expect) in [
        ("other.>", "fresh", "not among the stream's subjects (tapedeck.capture.>)"),
        ("tapedeck.capture.shop.>", "tapedeck-archive", "was made with no --filter"),
    ] {
        let refused = dir.path().join(format!("refused-{durable}"));
        let out = run(&[
            &["archive", &url, "-o", s(&refused), "--once", "--filter", filter, "--durable", durable][..],
            &token,
        ]
        .concat());
        let (code, lines, err) = one_line(&out);
        assert_eq!((code, lines), (Some(2), 1), "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(!refused.exists(), "a refused archive leaves no directory behind");
    }
    // Settings that could only lose captures, and a sharded copy of an open window (each
    // shard would copy different captures): refused before anything is done.
    for (args, expect) in [
        (vec!["archive", url.as_str(), "-o", s(&out_dir), "--create-stream", "--stream-max-age", "30s"], "at least 1m"),
        (vec!["archive", url.as_str(), "-o", s(&out_dir), "--create-stream", "--stream-max-bytes", "1KiB"], "16MiB"),
        (vec!["replay", url.as_str(), "--target", "http://127.0.0.1:9", "--shard", "0/2"], "needs its window's end"),
    ] {
        let out = run(&args);
        let (code, lines, err) = one_line(&out);
        assert_eq!((code, lines), (Some(2), 1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let out = run(&["archive", &url, "-o", s(&out_dir), "--once", "--nats-token-file", s(&open)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("can be read by everyone") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // Nothing listening: one line, at once.
    let started = Instant::now();
    let nowhere = format!("nats://127.0.0.1:{}/CAPTURES", free_port());
    let out = run(&["archive", &nowhere, "-o", s(&out_dir), "--once"]);
    let (code, lines, err) = one_line(&out);
    assert_eq!((code, lines), (Some(2), 1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // Credentials in the address: refused without echoing them.
    let out = run(&["archive", "nats://me:hunter2@127.0.0.1:4222/CAPTURES", "-o", s(&out_dir)]);
    let (code, _, err) = one_line(&out);
    assert_eq!(code, Some(2));
    assert!(!err.contains("hunter2") && err.contains("--nats-creds"), "{err}");
    // A sidecar with the wrong token serves every request; its captures are dropped,
    // counted, and the log says why without the token.
    let upstream = Upstream::start();
    let proxy = ProxyProcess::spawn(
        &[
            "--admin",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url(),
            "--sink",
            &url,
            "--nats-token-file",
            s(&wrong),
        ],
        None,
    );
    for i in 0..20 {
        assert_eq!(get(proxy.addr, &format!("/a/{i}")), 200);
    }
    let lines = stop(proxy);
    let text = lines.join("\n");
    assert!(text.contains("published 0 exchanges") && text.contains("20 dropped"), "{text}");
    assert!(!text.contains("XYZZY"), "{text}");
}

#[test]
fn shards_publish_their_reports_and_report_merges_the_run_from_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(&dir.path().join("js")) else { return };
    let upstream = Upstream::start();
    let url = nats.url("FLEET");
    // Captures go to the stream, and are archived into tapes to replay.
    let proxy = ProxyProcess::capturing(
        &upstream,
        &dir.path().join("local"),
        &["--sink", &url, "--create-stream", "--service", "shop"],
        None,
    );
    for i in 0..90 {
        assert_eq!(get(proxy.addr, &format!("/orders/{}", i % 7)), 200);
    }
    stop(proxy);
    let tapes = dir.path().join("tapes");
    assert!(archive(&url, &tapes).contains("90 exchanges"));
    let staging = Upstream::start();
    let target = staging.url();
    let replay = |shard: &str, run_id: &str, extra: &[&str]| {
        let mut args = vec![
            "replay",
            s(&tapes),
            "--target",
            &target,
            "--speed",
            "max",
            "--no-progress",
            "--shard",
            shard,
            "--publish-results",
            &url,
            "--run-id",
            run_id,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    // The stream takes captures only: publishing is refused before anything is sent,
    // naming the flag that adds the results' subjects.
    let out = replay("0/3", "rel-1", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--create-stream") && err.contains("tapedeck.results.>"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("replayed"), "refused before replaying");
    // Three shards publish; the report of the run is built from the stream and counts
    // what the three sent, every one of the 90.
    let mut sent = 0;
    for k in 0..3 {
        let out = replay(&format!("{k}/3"), "rel-1", &["--create-stream"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("tapedeck.results.rel-1.{k}-of-3")), "{stdout}");
        sent += stdout
            .split("replayed ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("a count in {stdout}"));
    }
    assert_eq!(sent, 90);
    let json = dir.path().join("merged.json");
    let out = run(&["report", &format!("{url}?run=rel-1"), "--report", s(&json), "--gate", "errors==0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(merged["sent"], 90, "{merged}");
    assert!(merged["shard"].is_null(), "every shard is in: {}", merged["shard"]);
    // A shard stopped before its end publishes nothing: its part keeps the complete
    // report published before, and the run still counts all 90.
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)).to_string();
    let mut stopped = tapedeck()
        .args(["replay", s(&tapes), "--target", &target, "--no-progress", "--shard", "0/3", "--start-at", &at])
        .args(["--publish-results", &url, "--run-id", "rel-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(stopped.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting") {
        assert!(std::io::BufRead::read_line(&mut lines, &mut said).unwrap() > 0, "{said}");
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(stopped.id() as i32, libc::SIGINT) }, 0);
    std::io::Read::read_to_string(&mut lines, &mut said).unwrap();
    assert_eq!(stopped.wait().unwrap().code(), Some(130), "{said}");
    assert!(said.contains("not published") && said.contains("stopped early"), "{said}");
    let out = run(&["report", &format!("{url}?run=rel-1"), "--gate", "errors==0"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 90 requests"));
    // The same id used again for another split: the newest split is the run, the older
    // reports are named and left out.
    assert_eq!(replay("0/1", "rel-1", &[]).status.code(), Some(0));
    let out = run(&["report", &format!("{url}?run=rel-1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("3 older report(s)") && err.contains("0-of-3"), "{err}");
    // A run with a shard missing is part of a run: never a pass.
    for k in 0..2 {
        assert_eq!(replay(&format!("{k}/3"), "rel-2", &[]).status.code(), Some(0));
    }
    let out = run(&["report", &format!("{url}?run=rel-2")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("covers shards 0,1/3 only"), "{err}");
    // A run that published nothing, and an address without its run: one line each.
    for (address, says) in [
        (format!("{url}?run=rel-9"), "holds no reports of run \"rel-9\""),
        (url.clone(), "add ?run=ID"),
        (format!("{url}?run=a.b"), "one NATS subject token"),
    ] {
        let out = run(&["report", &address]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{address}: {err}");
        assert!(err.contains(says), "{address}: {err}");
    }
    // The reports share the captures' stream: an archiver passes over them quietly.
    let said = archive(&url, &dir.path().join("again"));
    assert!(!said.contains("not a readable block"), "{said}");
}
