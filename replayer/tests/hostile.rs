//! The replayer against a staging built to misbehave (a raw HTTP/1.1 server on
//! 127.0.0.1): answers reset mid-body, cut short of their length, with broken chunking,
//! never, or nested 100,000 deep; and runs stopped mid-flight. The report must add up and
//! never look cleaner than the run: sent = completed + errors, only complete answers are
//! compared, a timed-out request counts in latency, a stopped run counts what was in
//! flight.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{recorded, write_tape};
use tapedeck_captures::tape::TapeReader;
use tapedeck_captures::{Body, ErrorKind, Exchange, Headers, Response};
use tapedeck_replayer::schedule::Pacing;
use tapedeck_replayer::{replay, ReplayConfig, ReplayReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: Mutex<()> = Mutex::new(());
/// Paths `/flip/…` answered once already.
static SEEN: Mutex<std::collections::BTreeSet<String>> = Mutex::new(std::collections::BTreeSet::new());

/// What every answer that is complete holds (and the recording too).
const OK_BODY: &str = r#"{"ok":true,"items":[1,2,3]}"#;

/// A staging that misbehaves by path (`/ok`, `/reset`, `/short`, `/badchunk`, `/huge`,
/// `/stall`, `/deep`); it stops when dropped.
struct Hostile {
    addr: SocketAddr,
    /// Requests whose head arrived.
    received: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start() -> Hostile {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let count = received.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else { continue };
                        tokio::spawn(serve(conn, count.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Stalled connections are dropped with the runtime.
            rt.shutdown_background();
        });
        Hostile { addr, received, stop: Some(stop), thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(mut conn: tokio::net::TcpStream, received: Arc<AtomicU64>) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        served += 1;
        // One request head (the recordings are GETs without bodies).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        received.fetch_add(1, Ordering::Relaxed);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mode = path.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
        let json = "content-type: application/json\r\n";
        match mode.as_str() {
            "ok" => {
                let answer = format!("HTTP/1.1 200 OK\r\n{json}content-length: {}\r\n\r\n{OK_BODY}", OK_BODY.len());
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            "reset" => {
                let head = format!("HTTP/1.1 200 OK\r\n{json}content-length: {}\r\n\r\n", OK_BODY.len());
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&OK_BODY.as_bytes()[..8]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                // SO_LINGER 0: the close is a reset (and blocks nothing).
                #[allow(deprecated)]
                let _ = conn.set_linger(Some(Duration::ZERO));
                return;
            }
            "short" => {
                let head = format!("HTTP/1.1 200 OK\r\n{json}content-length: {}\r\n\r\n", OK_BODY.len() + 100);
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(OK_BODY.as_bytes()).await;
                let _ = conn.shutdown().await;
                return;
            }
            "badchunk" => {
                let answer = format!("HTTP/1.1 200 OK\r\n{json}transfer-encoding: chunked\r\n\r\n8\r\n{{\"ok\":tr\r\nzz\r\nue}}\r\n0\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            // One answer per connection: the next request on it is reset unanswered (a
            // keep-alive connection the target dropped as the request went out).
            "once" if served > 1 => {
                #[allow(deprecated)]
                let _ = conn.set_linger(Some(Duration::ZERO));
                return;
            }
            "once" => {
                let answer = format!("HTTP/1.1 200 OK\r\n{json}content-length: {}\r\n\r\n{OK_BODY}", OK_BODY.len());
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            "huge" => {
                // 64 MiB, as fast as the socket takes it.
                let len = 64usize << 20;
                let head = format!("HTTP/1.1 200 OK\r\n{json}content-length: {len}\r\n\r\n");
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b' '; 1 << 20];
                for _ in 0..64 {
                    if conn.write_all(&block).await.is_err() {
                        return;
                    }
                }
            }
            "flip" => {
                // `/flip/N`, N < 100: answered once, then 404 (a flapping staging that a
                // noise probe meets); N ≥ 100: always 404 (a real regression).
                let n: u64 = path.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let first = {
                    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
                    n < 100 && seen.insert(path.clone())
                };
                let answer = if first {
                    format!("HTTP/1.1 200 OK\r\n{json}content-length: {}\r\n\r\n{OK_BODY}", OK_BODY.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()
                };
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            "stall" => {
                // Never answers (the runtime's shutdown ends it).
                tokio::time::sleep(Duration::from_secs(600)).await;
                return;
            }
            "deep" => {
                let depth = 100_000;
                let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let answer = format!("HTTP/1.1 200 OK\r\n{json}content-length: {}\r\n\r\n{body}", body.len());
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            _ => {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
            }
        }
    }
}

/// `n` recordings of `GET /MODE/i`, each its own session, all answered `OK_BODY`.
fn recordings(mode: &str, n: u64, first_id: u64) -> Vec<Exchange> {
    (0..n)
        .map(|i| {
            let id = first_id + i;
            let mut ex = recorded(id, id as f64 * 0.1, "GET", &format!("/{mode}/{i}"));
            let mut headers = Headers::new();
            headers.push("content-type", "application/json");
            ex.response = Some(Response { status: 200, headers, body: Body::full(OK_BODY), ..Default::default() });
            ex.connection = tapedeck_captures::ConnectionId(id + 1);
            ex
        })
        .collect()
}

fn config(path: &std::path::Path, target: &Hostile) -> ReplayConfig {
    let mut c = ReplayConfig::new(vec![path.to_path_buf()], target.url().parse().unwrap()).unwrap();
    c.pacing = Pacing::Max;
    c.client.timeout = Duration::from_millis(500);
    c.compare = Some(Default::default());
    c
}

fn errors_sum(r: &ReplayReport) -> u64 {
    r.errors.values().sum()
}

fn route<'r>(r: &'r ReplayReport, name: &str) -> &'r tapedeck_report::RouteReport {
    r.routes.iter().find(|x| x.route.starts_with(&format!("GET /{name}"))).unwrap_or_else(|| panic!("{name}: {r:#?}"))
}

#[test]
fn broken_answers_are_errors_of_their_kind_never_compared_and_timeouts_count_in_latency() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let mut tape = Vec::new();
    for (i, mode) in ["ok", "reset", "short", "badchunk", "stall"].iter().enumerate() {
        tape.extend(recordings(mode, if *mode == "ok" { 20 } else { 10 }, i as u64 * 100));
    }
    tape.sort_by_key(|e| e.timing.start_ns);
    let path = write_tape(dir.path(), &tape, &[]);
    let results = tempfile::tempdir().unwrap();
    let mut c = config(&path, &staging);
    c.results = Some(results.path().to_path_buf());
    let report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();

    // Everything adds up.
    assert_eq!(report.sent, 60, "{report:#?}");
    assert_eq!(report.sent, report.completed + errors_sum(&report), "{:?}", report.errors);
    let want: BTreeMap<String, u64> =
        [("reset", 10), ("incomplete_body", 10), ("protocol", 10), ("response_timeout", 10)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(report.errors, want, "each broken answer as what it is");
    // Only the complete answers are compared, and they equal the recording.
    let compare = report.compare.as_ref().unwrap();
    assert_eq!(compare.compared, 20, "{compare:?}");
    assert_eq!(compare.differing, 0, "{compare:?}");
    // A cut answer is not a 2xx.
    assert_eq!(route(&report, "reset").replayed_status, BTreeMap::from([("reset".to_string(), 10)]));
    assert_eq!(route(&report, "ok").replayed_status, BTreeMap::from([("2xx".to_string(), 20)]));
    // A timed-out request took at least the timeout.
    let stall = route(&report, "stall");
    assert_eq!(stall.timed_out, 10);
    let p50 = stall.replayed_ms.expect("timeouts are in the latency").p50;
    assert!(p50 >= 490.0, "p50 {p50} ms with a 500 ms timeout");
    assert!(stall.problems().iter().any(|p| p.contains("timed out")), "{:?}", stall.problems());
    // Ten requests are too few to judge a route's latency by, unless they timed out.
    assert!(stall.p99_flagged, "{stall:?}");
    let mut report = report;
    let gate: tapedeck_report::gate::Gate = "p99_ratio<=1.5".parse().unwrap();
    assert!(!report.apply_gates(&[gate]), "{:?}", report.gates);
    // The results tape holds every request, the broken ones with their error.
    let written: Vec<Exchange> = TapeReader::open(&[results.path()]).unwrap().collect();
    assert_eq!(written.len(), 60);
    let errors = written.iter().filter(|e| e.error == Some(ErrorKind::IncompleteBody)).count();
    assert_eq!(errors, 10);
}

#[test]
fn stopping_counts_the_requests_in_flight_and_writes_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    // Eight answered at once, eight that hang.
    let mut tape = recordings("ok", 8, 0);
    tape.extend(recordings("stall", 8, 100));
    tape.sort_by_key(|e| e.timing.start_ns);
    let path = write_tape(dir.path(), &tape, &[]);
    let results = tempfile::tempdir().unwrap();
    let mut c = config(&path, &staging);
    c.client.timeout = Duration::from_secs(60);
    c.results = Some(results.path().to_path_buf());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let received = staging.received.clone();
    std::thread::spawn(move || {
        // Once every request reached the staging, Ctrl-C.
        let until = Instant::now() + Duration::from_secs(20);
        while received.load(Ordering::Relaxed) < 16 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        flag.store(true, Ordering::Relaxed);
    });
    let report = replay(&c, &stop, Default::default()).unwrap();
    assert!(report.interrupted);
    assert_eq!(staging.received.load(Ordering::Relaxed), 16);
    assert_eq!(report.sent, 16, "what the staging received was sent: {report:#?}");
    assert_eq!(report.completed, 8);
    assert_eq!(report.errors, BTreeMap::from([("interrupted".to_string(), 8)]));
    assert_eq!(report.compare.as_ref().unwrap().compared, 8);
    let stall = route(&report, "stall");
    assert!(stall.problems().iter().any(|p| p.contains("8 requests without an answer")), "{:?}", stall.problems());
    let written: Vec<Exchange> = TapeReader::open(&[results.path()]).unwrap().collect();
    assert_eq!(written.len(), 16, "the results tape is readable and whole");
    assert_eq!(written.iter().filter(|e| e.error == Some(ErrorKind::Interrupted)).count(), 8);
}

#[test]
fn a_body_nested_100000_deep_is_compared_without_harm() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let mut tape = recordings("deep", 5, 0);
    tape.extend(recordings("ok", 5, 100));
    tape.sort_by_key(|e| e.timing.start_ns);
    let path = write_tape(dir.path(), &tape, &[]);
    let report = replay(&config(&path, &staging), &AtomicBool::new(false), Default::default()).unwrap();
    assert_eq!((report.sent, report.completed), (10, 10), "{:?}", report.errors);
    let compare = report.compare.as_ref().unwrap();
    assert_eq!(compare.compared, 10);
    assert_eq!(compare.differing, 5, "the deep answers differ from the recording: {report:#?}");
}

#[test]
fn damage_to_the_tape_is_in_the_report_and_a_gate() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    // In blocks of 100, as a busy proxy writes them.
    let mut wc = tapedeck_captures::tape::WriterConfig::new(dir.path());
    wc.block_max_records = 100;
    let mut w = tapedeck_captures::tape::TapeWriter::new(wc).unwrap();
    for ex in recordings("ok", 2000, 0) {
        w.append(&ex).unwrap();
    }
    w.finish().unwrap();
    // Ten bytes flipped in the middle of the (closed) segment.
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "tape"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 10] {
        *b ^= 0xa5;
    }
    std::fs::write(&file, bytes).unwrap();
    let mut c = config(dir.path(), &staging);
    c.compare = None;
    let mut report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();
    let damage = report.tape_damage.clone().expect("the damage is in the report");
    assert!(report.sent < 2000 && report.sent > 0, "{}", report.sent);
    assert!(damage.exact, "{damage:?}");
    assert_eq!(damage.exchanges_lost, 2000 - report.sent, "{damage:?}");
    assert!(damage.regions >= 1 && damage.bytes_skipped > 0 && !damage.problems.is_empty(), "{damage:?}");
    assert!(report.render(20).contains("tape damage"), "{}", report.render(20));
    let gate: tapedeck_report::gate::Gate = "tape_damaged_exchanges==0".parse().unwrap();
    assert!(!report.apply_gates(&[gate]), "{:?}", report.gates);
    // Played twice (`--loop 2`), the damage lost its exchanges twice.
    let lost_once = damage.exchanges_lost;
    c.loops = Some(2);
    let report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();
    let damage = report.tape_damage.expect("the damage of every pass");
    assert_eq!((damage.exchanges_lost, damage.exact), (2 * lost_once, true), "{damage:?}");
}

#[test]
fn huge_answers_are_read_whole_kept_to_max_body_and_compared_by_length() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_tape(dir.path(), &recordings("huge", 3, 0), &[]);
    let results = tempfile::tempdir().unwrap();
    let mut c = config(&path, &staging);
    c.client.timeout = Duration::from_secs(60);
    c.results = Some(results.path().to_path_buf());
    let report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();
    assert_eq!((report.sent, report.completed), (3, 3), "{:?}", report.errors);
    let compare = report.compare.as_ref().unwrap();
    assert_eq!((compare.compared, compare.differing), (3, 3), "64 MiB is not the recorded body");
    for ex in TapeReader::open(&[results.path()]).unwrap() {
        let body = &ex.response.as_ref().unwrap().body;
        assert_eq!(body.len, 64 << 20);
        assert!(body.truncated && body.data.len() <= c.client.max_body, "{} kept", body.data.len());
    }
}

#[test]
fn a_noise_probe_never_teaches_that_a_status_is_noise() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    // First requests the staging answers once (a probe then gets a 404), later ones it
    // always fails: those must be reported, whatever the probes saw.
    let mut tape = recordings("flip", 10, 0);
    let mut later = recordings("flip", 10, 100);
    for (i, ex) in later.iter_mut().enumerate() {
        ex.request.target = format!("/flip/{}", 100 + i);
        ex.timing.start_ns += 500_000_000;
    }
    tape.extend(later);
    let path = write_tape(dir.path(), &tape, &[]);
    let mut c = config(&path, &staging);
    c.noise_probe = true;
    c.pacing = Pacing::Recorded { speed: 1.0 };
    let report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();
    let compare = report.compare.as_ref().unwrap();
    assert!(compare.probes > 0, "{compare:?}");
    assert_eq!(compare.differing, 10, "the 404s are differences: {report:#?}");
    let flip = route(&report, "flip");
    let noise = &flip.diffs.as_ref().unwrap().noise;
    assert!(noise.iter().all(|n| n.key != "status" && n.key != "body"), "{noise:?}");
}

#[test]
fn an_http2_answer_ended_early_by_a_no_error_reset_is_incomplete() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // An HTTP/2 (h2c) server that announces 100 bytes, sends 10, and ends the stream with
    // RST_STREAM(NO_ERROR), which reads as an end of body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let serve = async {
                loop {
                    let Ok((socket, _)) = listener.accept().await else { continue };
                    tokio::spawn(async move {
                        let Ok(mut conn) = h2::server::handshake(socket).await else { return };
                        // The connection is driven by accepting; each stream is answered
                        // beside it.
                        while let Some(Ok((_req, mut respond))) = conn.accept().await {
                            tokio::spawn(async move {
                                let head = http::Response::builder()
                                    .status(200)
                                    .header("content-type", "application/grpc")
                                    .header("content-length", "100")
                                    .body(())
                                    .unwrap();
                                let Ok(mut body) = respond.send_response(head, false) else { return };
                                let _ =
                                    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 95, 1, 2, 3, 4, 5]), false);
                                // The head and the first bytes are read first.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                body.send_reset(h2::Reason::NO_ERROR);
                            });
                        }
                    });
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = stopped => {}
            }
        });
        rt.shutdown_background();
    });
    let dir = tempfile::tempdir().unwrap();
    let mut tape = recordings("call", 3, 0);
    for ex in &mut tape {
        ex.request.method = "POST".into();
        ex.request.target = "/test.Svc/Call".into();
        ex.request.headers.push("content-type", "application/grpc");
        ex.request.body = Body::full(vec![0u8, 0, 0, 0, 0]);
    }
    let path = write_tape(dir.path(), &tape, &[]);
    let mut c = ReplayConfig::new(vec![path], format!("http://{addr}").parse().unwrap()).unwrap();
    c.pacing = Pacing::Max;
    c.client.timeout = Duration::from_secs(10);
    c.compare = Some(Default::default());
    let report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();
    let _ = stop.send(());
    let _ = server.join();
    assert_eq!(report.sent, 3);
    assert_eq!(report.errors, BTreeMap::from([("incomplete_body".to_string(), 3)]), "{report:#?}");
    assert_eq!(report.compare.as_ref().unwrap().compared, 0);
}

#[test]
fn requests_still_waiting_for_a_connection_when_stopped_were_not_sent() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_tape(dir.path(), &recordings("stall", 8, 0), &[]);
    let mut c = config(&path, &staging);
    c.client.timeout = Duration::from_secs(60);
    c.client.connections = 2;
    c.workers = 1;
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, received) = (stop.clone(), staging.received.clone());
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(20);
        while received.load(Ordering::Relaxed) < 2 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        flag.store(true, Ordering::Relaxed);
    });
    let report = replay(&c, &stop, Default::default()).unwrap();
    assert_eq!(staging.received.load(Ordering::Relaxed), 2, "two connections, two requests on the wire");
    assert_eq!(report.sent, 2, "what waited for a connection was not sent: {report:#?}");
    assert_eq!(report.errors, BTreeMap::from([("interrupted".to_string(), 2)]));
}

#[test]
fn a_keep_alive_connection_dropped_under_a_request_is_the_targets_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let staging = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    // One session on one connection: the target answers once per connection and resets
    // the next request sent on it. Those requests are its errors, not retried away.
    let mut tape = recordings("once", 10, 0);
    for ex in &mut tape {
        ex.session = Some("one".into());
    }
    let path = write_tape(dir.path(), &tape, &[]);
    let mut c = config(&path, &staging);
    c.client.connections = 1;
    let report = replay(&c, &AtomicBool::new(false), Default::default()).unwrap();
    let received = staging.received.load(Ordering::Relaxed);
    assert_eq!(report.sent, received, "each request sent once: {report:#?}");
    assert_eq!(report.sent, report.completed + errors_sum(&report));
    assert!(report.errors.get("reset").is_some_and(|n| *n >= 1), "{:?}", report.errors);
}
