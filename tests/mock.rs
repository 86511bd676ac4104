//! `tapedeck mock` end to end: a dependency recorded through the sidecar on real sockets,
//! served back from its tapes with its recorded answers and timing, slower or failing on
//! purpose, and bad input refused with one line.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::{KillOnDrop, ProxyProcess};
use common::upstream::{http, Upstream};
use common::*;
use tapedeck_captures::{Body, Exchange, Request, Response};

/// A running `tapedeck mock` child and the address it answers on.
struct MockProcess {
    child: KillOnDrop,
    addr: SocketAddr,
    /// What it said before answering.
    said: String,
}

impl MockProcess {
    fn start(tapes: &Path, extra: &[&str]) -> MockProcess {
        let mut child = KillOnDrop(
            tapedeck()
                .arg("mock")
                .arg(tapes)
                .args(["--listen", "127.0.0.1:0"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tapedeck mock starts"),
        );
        let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the mock exited before answering: {said}");
            if let Some(rest) = line.trim().strip_prefix("tapedeck mock: answering on http://") {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                // Drained, so the child never blocks on a full pipe.
                std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
                return MockProcess { child, addr, said };
            }
            said.push_str(&line);
        }
    }

    /// Stops it (SIGTERM); its exit code and summary.
    fn stop(mut self) -> (i32, String) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) }, 0);
        let mut out = String::new();
        self.child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.0.wait().unwrap();
        (status.code().unwrap_or(-1), out)
    }
}

/// The request's time and answer.
fn timed(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (Duration, u16, String) {
    let at = Instant::now();
    let (status, body) = http(addr, method, path, body).unwrap_or((0, Vec::new()));
    (at.elapsed(), status, String::from_utf8_lossy(&body).into_owned())
}

/// Recorded through a real sidecar in front of the test upstream (which sleeps on
/// `/delay/MS` and echoes `/echo`).
fn record(dir: &Path) -> std::path::PathBuf {
    let upstream = Upstream::start();
    let tapes = dir.join("payments");
    let proxy = ProxyProcess::capturing(&upstream, &tapes, &["--service", "payments"], None);
    for _ in 0..3 {
        assert_eq!(http(proxy.addr, "GET", "/delay/250", b"").unwrap().0, 200);
    }
    for _ in 0..5 {
        assert_eq!(http(proxy.addr, "GET", "/delay/20", b"").unwrap().0, 200);
    }
    let charge = br#"{"amount":500,"currency":"EUR","card":"tok_1"}"#;
    assert_eq!(http(proxy.addr, "POST", "/echo?kind=charge&v=2", charge).unwrap().0, 200);
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait(Duration::from_secs(30)).0, 0);
    tapes
}

/// Each route's recorded request-to-last-byte times, slowest last.
fn recorded_times(tapes: &Path, path: &str) -> Vec<Duration> {
    let mut times: Vec<Duration> = read_all(&[tapes])
        .iter()
        .filter(|e| e.request.target == path)
        .map(|e| Duration::from_nanos(e.timing.end_ns.unwrap()))
        .collect();
    times.sort();
    times
}

#[test]
fn a_recorded_dependency_answers_as_it_did_and_when_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let tapes = record(dir.path());
    let slow = recorded_times(&tapes, "/delay/250");
    assert_eq!(slow.len(), 3);
    let mock = MockProcess::start(&tapes, &["--service", "payments"]);
    // The recorded answer, never before its recorded time; a busy machine may add to it.
    for _ in 0..3 {
        let (took, status, body) = timed(mock.addr, "GET", "/delay/250", b"");
        assert_eq!((status, body.as_str()), (200, "slept"));
        assert!(took >= slow[0], "{took:?} < recorded {:?}", slow[0]);
        assert!(took < slow[2] + Duration::from_secs(2), "{took:?} against recorded {slow:?}");
    }
    // A fast route stays fast: each answer at its own recorded time.
    let fast = recorded_times(&tapes, "/delay/20");
    let (took, _, _) = timed(mock.addr, "GET", "/delay/20", b"");
    assert!(took >= fast[0] && took < slow[0], "{took:?}: fast {fast:?}, slow {slow:?}");
    // The same request with its query and JSON keys in another order is the one recorded.
    let reordered = br#"{"card":"tok_1","currency":"EUR","amount":500}"#;
    let (_, status, body) = timed(mock.addr, "POST", "/echo?v=2&kind=charge", reordered);
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"amount":500,"currency":"EUR","card":"tok_1"}"#, "the recorded answer, as recorded");
    // Like a recorded request (another amount): the closest one answers.
    let (_, status, body) = timed(mock.addr, "POST", "/echo?kind=charge&v=2", br#"{"amount":9,"currency":"EUR"}"#);
    assert_eq!((status, body.contains("\"amount\":500")), (200, true), "{body}");
    // Nothing recorded for the route: the configured answer, explained.
    let (_, status, body) = timed(mock.addr, "DELETE", "/cards/42", b"");
    assert_eq!(status, 404);
    assert!(body.contains("nothing was recorded") && body.contains("DELETE /cards/{id}"), "{body}");
    // What the caller put in a path is scrubbed before it is counted by route.
    assert_eq!(timed(mock.addr, "GET", "/cards/4111-1111-1111-1111/verify", b"").1, 404);
    let (code, summary) = mock.stop();
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("8 requests: 5 recorded exactly, 1 like a recorded one, 2 not recorded"), "{summary}");
    assert!(summary.contains("DELETE /cards/{id}"), "unmatched calls are reported by route: {summary}");
    assert!(summary.contains("GET /cards/****-****-****-1111/verify"), "{summary}");
    assert!(!summary.contains("4111-1111-1111-1111"), "{summary}");
}

#[test]
fn slower_on_purpose_and_faults_injected() {
    let dir = tempfile::tempdir().unwrap();
    let tapes = record(dir.path());
    let fast = recorded_times(&tapes, "/delay/20");
    // Three times slower: past an application's timeout that production's times met.
    let mock = MockProcess::start(&tapes, &["--latency", "3x"]);
    let (took, status, _) = timed(mock.addr, "GET", "/delay/20", b"");
    assert_eq!(status, 200);
    assert!(took >= fast[0] * 3, "{took:?} < 3 × {:?}", fast[0]);
    drop(mock);
    let mock = MockProcess::start(&tapes, &["--latency", "+300ms"]);
    let (took, _, _) = timed(mock.addr, "GET", "/delay/20", b"");
    assert!(took >= fast[0] + Duration::from_millis(300), "{took:?}");
    drop(mock);
    // Every call of one route fails as asked; the others do not.
    let mock = MockProcess::start(&tapes, &["--latency", "0", "--fault", "GET /delay/{n}: 100% 503", "--seed", "1"]);
    let (_, status, body) = timed(mock.addr, "GET", "/delay/250", b"");
    assert_eq!(status, 503);
    assert!(body.contains("injected"), "{body}");
    assert_eq!(timed(mock.addr, "POST", "/echo?kind=charge&v=2", b"{}").1, 200);
    let (_, summary) = mock.stop();
    assert!(summary.contains("1 × 503 injected"), "{summary}");
    // A reset: the connection closes without an answer.
    let mock = MockProcess::start(&tapes, &["--latency", "0", "--fault", "100% reset"]);
    let (_, status, _) = timed(mock.addr, "GET", "/delay/250", b"");
    assert_eq!(status, 0, "no answer at all");
    // A share: about that many, drawn the same way for the same seed.
    let draws = |seed: &str| {
        let mock = MockProcess::start(&tapes, &["--latency", "0", "--fault", "50% 500", "--seed", seed]);
        (0..40).map(|_| timed(mock.addr, "GET", "/delay/20", b"").1).collect::<Vec<_>>()
    };
    let (a, b) = (draws("7"), draws("7"));
    assert_eq!(a, b, "the same seed, the same faults");
    let failed = a.iter().filter(|s| **s == 500).count();
    assert!((8..=32).contains(&failed), "{failed} of 40 at 50%");
}

fn exchange(target: &str, status: u16, answer: &str, start_ms: u64) -> Exchange {
    let mut e = Exchange {
        request: Request { method: "GET".into(), target: target.into(), ..Default::default() },
        response: Some(Response { status, body: Body::full(answer.to_string()), ..Default::default() }),
        ..Default::default()
    };
    e.timing.start_ns = start_ms * 1_000_000;
    e.timing.head_ns = Some(5_000_000);
    e.timing.end_ns = Some(5_000_000);
    e
}

#[test]
fn repeated_calls_answer_in_recorded_order() {
    let dir = tempfile::tempdir().unwrap();
    // A job polled until it is done, as production's dependency answered it.
    write_tape(
        dir.path(),
        &[
            exchange("/jobs/7", 202, "pending", 0),
            exchange("/jobs/7", 202, "running", 100),
            exchange("/jobs/7", 200, "done", 200),
        ],
    );
    let mock = MockProcess::start(dir.path(), &[]);
    let answers: Vec<(u16, String)> = (0..4)
        .map(|_| http(mock.addr, "GET", "/jobs/7", b"").unwrap())
        .map(|(s, b)| (s, String::from_utf8(b).unwrap()))
        .collect();
    let want = [(202, "pending"), (202, "running"), (200, "done"), (200, "done")];
    assert_eq!(answers, want.map(|(s, b)| (s, b.to_string())));
}

#[test]
fn bad_input_gets_one_line_and_the_expected_form() {
    let dir = tempfile::tempdir().unwrap();
    let mut cut = exchange("/a", 200, "", 0);
    cut.response = None;
    cut.error = Some(tapedeck_captures::ErrorKind::ClientAborted);
    write_tape(&dir.path().join("empty"), &[cut]);
    write_tape(&dir.path().join("ok"), &[exchange("/a", 200, "a", 0)]);
    let (empty, ok, nowhere) = (dir.path().join("empty"), dir.path().join("ok"), dir.path().join("nowhere"));
    let cases: [(&[&str], &str); 6] = [
        (&["mock", s(&empty), "--listen", "127.0.0.1:0"], "no recorded answers"),
        (&["mock", s(&ok), "--listen", "127.0.0.1:0", "--service", "pay"], "no tape there names a service"),
        (&["mock", s(&ok), "--listen", "127.0.0.1:0", "--latency", "slow"], "expected recorded, 0, a factor"),
        (&["mock", s(&ok), "--listen", "127.0.0.1:0", "--fault", "5% teapot"], "expected '[METHOD /path:]"),
        (&["mock", s(&ok), "--listen", "127.0.0.1:0", "--fault", "70% 500, 40% reset"], "more than 100%"),
        (&["mock", s(&nowhere), "--listen", "127.0.0.1:0"], "nowhere"),
    ];
    for (args, says) in cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_directory_with_a_service_and_its_dependency_mocks_the_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start();
    // The service's own traffic and its dependency's, side by side.
    for (sub, role, path) in [("shop", "ingress", "/size/5"), ("payments", "dependency", "/delay/1")] {
        let proxy = ProxyProcess::capturing(&upstream, &dir.path().join(sub), &["--role", role], None);
        assert_eq!(http(proxy.addr, "GET", path, b"").unwrap().0, 200);
        proxy.signal(libc::SIGTERM);
        assert_eq!(proxy.wait(Duration::from_secs(30)).0, 0);
    }
    let mock = MockProcess::start(dir.path(), &[]);
    assert!(mock.said.contains("1 exchanges recorded in front of a service"), "{}", mock.said);
    assert_eq!(timed(mock.addr, "GET", "/delay/1", b"").1, 200);
    assert_eq!(timed(mock.addr, "GET", "/size/5", b"").1, 404, "the service's own answers are not the dependency's");
    let out = run(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.url(),
        "--capture-dir",
        s(&dir.path().join("x")),
        "--role",
        "egress",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingress (in front of a service) or dependency"));
}

#[test]
fn unmatched_calls_pass_through_to_a_sandbox_never_to_the_recorded_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let tapes = record(dir.path());
    let sandbox = Upstream::start();
    let mock = MockProcess::start(&tapes, &["--passthrough", &sandbox.url()]);
    // Recorded: answered from the tape, the sandbox never asked.
    assert_eq!(timed(mock.addr, "GET", "/delay/20", b"").1, 200);
    assert!(sandbox.seen().is_empty());
    // Not recorded: the sandbox's answer, relayed; it saw the request as sent.
    let (_, status, body) = timed(mock.addr, "DELETE", "/cards/42?soft=1", b"");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let seen = sandbox.seen();
    assert_eq!((seen.len(), seen[0].method.as_str(), seen[0].path.as_str()), (1, "DELETE", "/cards/42?soft=1"));
    assert_eq!(seen[0].header("host"), Some(sandbox.addr.to_string().as_str()), "Host is the sandbox's");
    // A body that breaks off is refused unread, never passed on, and counted.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(mock.addr).unwrap();
        s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
    }
    assert_eq!(sandbox.seen().len(), 1);
    let (code, summary) = mock.stop();
    assert_eq!(code, 0);
    assert!(summary.contains("1 more refused unread"), "{summary}");
    assert!(summary.contains("1 not recorded") && summary.contains("1 passed through"), "{summary}");

    // A sandbox that is down: a 502 saying so, the mock goes on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mock = MockProcess::start(&tapes, &["--passthrough", &format!("http://{dead}")]);
    let (_, status, body) = timed(mock.addr, "DELETE", "/cards/42", b"");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("--passthrough failed"), "{body}");
    assert_eq!(timed(mock.addr, "GET", "/delay/20", b"").1, 200);
    drop(mock);

    // The dependency the tapes were recorded from is refused: staging's stray calls would
    // reach it (real charges).
    let segment = tapedeck_captures::tape::discover(&[&tapes]).unwrap().remove(0);
    let recorded = tapedeck_captures::tape::SegmentReader::open(&segment).unwrap();
    let upstream = recorded.header().label("upstream").unwrap().to_string();
    // Spelled otherwise, it is the same service.
    let spelled = upstream.replace("127.0.0.1", "LOCALHOST.");
    for url in [upstream.as_str(), &upstream.to_uppercase().replace("HTTP://", "http://"), &spelled] {
        let out = run(&["mock", s(&tapes), "--listen", "127.0.0.1:0", "--passthrough", url]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("recorded in front of"), "{url}");
    }
    for (bad, why) in [("ftp://x", "is not http or https"), ("http://u:p@x", "credentials"), ("nohost", "no scheme")] {
        let out = run(&["mock", s(&tapes), "--listen", "127.0.0.1:0", "--passthrough", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
