//! `tapedeck replay --mock` end to end: an application that calls a payments dependency
//! with a 500 ms timeout is recorded in production (a sidecar in front of it, another in
//! front of its dependency), then replayed against a staging copy of it whose dependency is
//! the mock: the recorded dependency latency comes back, `--mock-latency 3x` makes the
//! application's timeout fire and the report shows it, and calls production never made are
//! reported.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::ProxyProcess;
use common::upstream::{http, Incoming, Reply};
use common::*;

/// The application's timeout for a call to its dependency.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the real dependency takes to charge a card.
const CHARGE_MS: u64 = 180;

/// A JSON service on 127.0.0.1 answering `(method, path, body)` with `(status, JSON)`.
fn serve(handler: impl Fn(&str, &str, &[u8]) -> (u16, String) + Send + Sync + 'static) -> SocketAddr {
    common::upstream::serve(Arc::new(move |req: &Incoming| {
        let (status, json) = handler(&req.method, &req.path, &req.body);
        Reply { status, headers: "Content-Type: application/json\r\n".into(), body: json.into_bytes() }
    }))
}

/// One call with a deadline for the whole answer, as an application's HTTP client makes
/// it; `None` when the deadline passed (or the call failed).
fn call(addr: SocketAddr, method: &str, path: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: payments\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        s.set_read_timeout(Some(left)).ok()?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}

/// The real payments dependency: charging takes [`CHARGE_MS`], exchange rates are quick.
fn payments() -> SocketAddr {
    serve(|method, path, body| match (method, path) {
        ("POST", "/charge") => {
            std::thread::sleep(Duration::from_millis(CHARGE_MS));
            let order: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            (200, format!(r#"{{"charge":"ch_{}","status":"paid"}}"#, order["order"].as_u64().unwrap_or(0)))
        }
        ("GET", "/fx/EUR") => {
            std::thread::sleep(Duration::from_millis(5));
            (200, r#"{"currency":"EUR","rate":1.08}"#.to_string())
        }
        _ => (404, r#"{"error":"no such route"}"#.to_string()),
    })
}

/// The application under test: `GET /checkout/N` charges order N through its dependency
/// (504 when the dependency takes over 500 ms), `GET /rates` asks it for a rate. With
/// `loyalty`, a checkout also makes a call production's version never made.
fn application(dependency: SocketAddr, loyalty: bool) -> SocketAddr {
    serve(move |_, path, _| {
        if let Some(order) = path.strip_prefix("/checkout/") {
            let order: u64 = order.parse().unwrap_or(0);
            if loyalty {
                let _ = call(dependency, "GET", &format!("/loyalty/{order}"), "", DEPENDENCY_TIMEOUT);
            }
            let charge = format!(r#"{{"order":{order},"amount":{}}}"#, 100 + order);
            return match call(dependency, "POST", "/charge", &charge, DEPENDENCY_TIMEOUT) {
                Some((200, answer)) => (200, format!(r#"{{"order":{order},"payment":{answer}}}"#)),
                Some((status, _)) => (502, format!(r#"{{"order":{order},"error":"payments answered {status}"}}"#)),
                None => (504, format!(r#"{{"order":{order},"error":"payments timed out after 500 ms"}}"#)),
            };
        }
        if path == "/rates" {
            return match call(dependency, "GET", "/fx/EUR", "", DEPENDENCY_TIMEOUT) {
                Some((200, answer)) => (200, answer),
                _ => (504, r#"{"error":"payments timed out after 500 ms"}"#.to_string()),
            };
        }
        (404, r#"{"error":"not found"}"#.to_string())
    })
}

/// Production, recorded: the application behind a sidecar, its dependency behind another
/// (`--role dependency --service payments`), both writing into `capture/`.
fn record(capture: &std::path::Path) {
    let payments_sidecar = ProxyProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{}", payments()),
            "--capture-dir",
            s(&capture.join("payments")),
            "--role",
            "dependency",
            "--service",
            "payments",
            "--admin",
            "127.0.0.1:0",
        ],
        None,
    );
    let app = application(payments_sidecar.addr, false);
    let ingress = ProxyProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{app}"),
            "--capture-dir",
            s(&capture.join("checkout")),
            "--service",
            "checkout",
            "--admin",
            "127.0.0.1:0",
        ],
        None,
    );
    for order in 1..=20 {
        let (status, body) = http(ingress.addr, "GET", &format!("/checkout/{order}"), b"").unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(http(ingress.addr, "GET", "/rates", b"").unwrap().0, 200);
    }
    for sidecar in [ingress, payments_sidecar] {
        sidecar.signal(libc::SIGTERM);
        assert_eq!(sidecar.wait(Duration::from_secs(30)).0, 0);
    }
}

/// A port nothing listens on now (for the mock the staging application is configured to
/// call before the replay starts it).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn route<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("{name}: {report}"))
}

/// Replays `capture` against a new staging copy of the application (with `loyalty`, the
/// version making a new call), its dependency mocked on a free port, the JSON report into
/// `json`; the run and its report.
fn replay_staging(
    capture: &std::path::Path,
    loyalty: bool,
    json: &std::path::Path,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let mock_at = free_port();
    let staging = application(mock_at, loyalty);
    let mock = format!("payments={mock_at}");
    let mut flags = vec!["--concurrency", "4", "--mock", &mock, "--report", s(json), "--no-progress"];
    flags.extend_from_slice(extra);
    let out = replay(capture, &format!("http://{staging}"), "max", &flags);
    let report = serde_json::from_slice(&std::fs::read(json).unwrap_or_default()).unwrap_or_default();
    (out, report)
}

#[test]
fn a_replay_with_its_dependency_mocked_sees_production_latency_and_its_own_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    record(&capture);

    // Staging's application, a version that also asks the dependency for loyalty points.
    let json = dir.path().join("report.json");
    let (out, report) = replay_staging(&capture, true, &json, &["--gate", "mock_unmatched==0"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "the gate on calls production never made fails:\n{stdout}\n{err}");
    assert!(err.contains("mock payments answering on"), "{err}");
    // Only the service's own traffic was replayed: the dependency's tapes answered the mock.
    assert_eq!(report["sent"], 40, "{stdout}");
    assert_eq!(route(&report, "GET /checkout/{id}")["count"], 20);
    let mock = &report["mocks"][0];
    assert_eq!(mock["service"], "payments");
    let mock_route = |name: &str| {
        mock["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .unwrap_or_else(|| panic!("{name}: {mock}"))
    };
    let charge = mock_route("POST /charge");
    assert_eq!((charge["recorded"].as_u64(), charge["exact"].as_u64()), (Some(20), Some(20)), "{charge}");
    assert_eq!(mock_route("GET /fx/EUR")["exact"], 20, "{mock}");
    // The new call is a finding, by route.
    let loyalty = mock_route("GET /loyalty/{id}");
    assert_eq!((loyalty["unmatched"].as_u64(), loyalty["recorded"].as_u64()), (Some(20), Some(0)), "{loyalty}");
    assert!(stdout.contains("changed call pattern: GET /loyalty/{id}: 20 ×"), "{stdout}");
    assert!(stdout.contains("FAIL mock_unmatched==0"), "{stdout}");
    // The dependency's recorded latency comes back: each answer at its recorded time,
    // never before it (a busy machine may add to it, so the upper margin is wider).
    let (recorded, served) = (&charge["recorded_ms"], &charge["served_ms"]);
    for q in ["p50", "p99"] {
        let (a, b) = (recorded[q].as_f64().unwrap(), served[q].as_f64().unwrap());
        assert!(a >= CHARGE_MS as f64 * 0.95, "recorded {q} {a} ms");
        assert!(b >= a * 0.99 && b <= a * 1.10 + 50.0, "{q}: recorded {a} ms, served {b} ms");
    }
    // …and so does the application's: its checkout is as slow as production's was.
    let checkout = route(&report, "GET /checkout/{id}");
    let (a, b) = (checkout["recorded_ms"]["p50"].as_f64().unwrap(), checkout["replayed_ms"]["p50"].as_f64().unwrap());
    assert!(b >= a * 0.9 && b <= a * 1.1 + 50.0, "checkout p50: recorded {a} ms, replayed {b} ms");
    assert_eq!(checkout["diffs"]["differing"], 0, "{checkout}");

    // The dependency three times slower, as on a bad day: the application's 500 ms
    // timeout fires on every checkout, and the report says so.
    let (out, report) =
        replay_staging(&capture, false, &json, &["--mock-latency", "3x", "--gate", "new_5xx==0", "--force"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", stderr(&out));
    let checkout = route(&report, "GET /checkout/{id}");
    assert_eq!(checkout["replayed_status"]["5xx"], 20, "{checkout}");
    assert!(stdout.contains("20 more 5xx than recorded"), "{stdout}");
    assert!(stdout.contains("payments timed out after 500 ms"), "the report names the timeout: {stdout}");
    assert!(stdout.contains("latency 3x"), "{stdout}");
    // Quick calls stay well under the timeout at 3x.
    assert_eq!(route(&report, "GET /rates")["replayed_status"]["2xx"], 20, "{report}");
    assert_eq!(report["mocks"][0]["latency"], "3x");
    // The mock saw it too: every charge given up by its caller before the answer came.
    let charge =
        report["mocks"][0]["routes"].as_array().unwrap().iter().find(|r| r["route"] == "POST /charge").unwrap();
    assert_eq!(charge["abandoned"], 20, "{charge}");
    assert!(
        stdout.contains("POST /charge: the target went away before the whole answer on 20 of 20 calls"),
        "{stdout}"
    );
}

#[test]
fn mock_flags_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let tapes = dir.path();
    write_tape(tapes, &synth(3));
    for (flags, expected) in [
        (vec!["--mock", "payments"], "expected NAME=HOST:PORT"),
        (vec!["--mock", "=127.0.0.1:1"], "no service name"),
        (vec!["--mock", "payments=somewhere"], "is not HOST:PORT"),
        (vec!["--mock", "a=127.0.0.1:7001", "--mock", "a=127.0.0.1:7002"], "named twice"),
        (vec!["--mock", "a=127.0.0.1:7001", "--mock", "b=127.0.0.1:7001"], "one address per mock"),
        (vec!["--mock-latency", "3x"], "go with --mock NAME=ADDR"),
        (vec!["--mock", "a=127.0.0.1:7001", "--mock-latency", "fast"], "--mock-latency"),
        (vec!["--mock", "a=127.0.0.1:7001", "--mock-fault", "lots"], "--mock-fault"),
    ] {
        let out = replay(tapes, "http://127.0.0.1:9", "max", &flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{flags:?}: {}", stderr(&out));
    }
    // A service the tapes were never recorded for: said, with what they hold.
    let out = replay(tapes, "http://127.0.0.1:9", "max", &["--mock", "payments=127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--mock payments: no tape here was recorded in front of"), "{}", stderr(&out));
}
