//! WebSocket end to end as a user runs it: `tapedeck proxy` in front of a chat service
//! records each session message by message, scrubbed; `tapedeck replay` plays the sessions
//! against staging — at the recorded pace or flat out — and finds the message whose field
//! changed, or the upgrade staging refused.

mod common;
#[path = "../proxy/tests/support/ws.rs"]
mod ws;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::proxy::ProxyProcess;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A client's session through `addr`: asks for quotes of `skus` (`gap` apart) and closes.
async fn shop(addr: std::net::SocketAddr, path: &str, skus: &[&str], gap: Duration) -> Vec<String> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream).await.expect("upgrade");
    let mut seen = Vec::new();
    let read = async |ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Close(_))) | None => return "closed".to_string(),
            _ => continue,
        }
    };
    seen.push(read(&mut ws).await);
    for sku in skus {
        tokio::time::sleep(gap).await;
        let ask = format!(r#"{{"op":"quote","sku":"{sku}","email":"jane.doe@example.com"}}"#);
        ws.send(Message::text(ask)).await.unwrap();
        seen.push(read(&mut ws).await);
    }
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
    seen.push(read(&mut ws).await);
    seen
}

/// A session the server ends: a question, then `bye`, and the server closes.
async fn visit(addr: std::net::SocketAddr) -> Vec<String> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/visit"), stream).await.expect("upgrade");
    let mut seen = Vec::new();
    ws.send(Message::text(r#"{"op":"quote","sku":"B-1"}"#)).await.unwrap();
    ws.send(Message::text(r#"{"op":"bye"}"#)).await.unwrap();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        seen.push(m.to_string());
    }
    seen
}

/// `tapedeck proxy` in front of `upstream`, scrubbing with a key, capturing into `caps`.
fn capture_proxy(upstream: &str, caps: &std::path::Path, key: &std::path::Path) -> ProxyProcess {
    std::fs::write(key, "a key for the WebSocket replay test, 4c1d").unwrap();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    ProxyProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--capture-dir",
            s(caps),
            "--admin",
            "off",
            "--scrub-key-file",
            s(key),
        ],
        None,
    )
}

fn stop(proxy: ProxyProcess) {
    proxy.signal(libc::SIGTERM);
    let (code, lines) = proxy.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:?}");
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn websocket_sessions_replay_against_staging_and_a_changed_message_is_found() {
    let rt = runtime();
    let production = rt.block_on(ws::ChatServer::start());
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = capture_proxy(&production.url(), &caps, &dir.path().join("scrub.key"));
    let skus: Vec<String> = (0..10).map(|i| format!("A-{i}")).collect();
    let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
    let seen = rt.block_on(shop(proxy.addr, "/quotes", &skus, Duration::ZERO));
    assert_eq!(seen.len(), 12, "{seen:?}");
    assert!(seen[8].contains(r#""sku":"A-7","price":1999"#), "{seen:?}");
    stop(proxy);

    // The capture: one upgrade with its session, scrubbed.
    let jsonl = ok(&["cat", s(&caps)]);
    assert_eq!(jsonl.lines().count(), 1, "{jsonl}");
    assert!(!jsonl.contains("jane.doe"), "{jsonl}");
    let ex: serde_json::Value = serde_json::from_str(jsonl.trim()).unwrap();
    let messages = ex["websocket"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1 + 2 * 10 + 2, "{ex}");
    let http = ok(&["cat", s(&caps), "--format", "http"]);
    assert!(http.contains("--- websocket: 23 messages") && http.contains("<<") && http.contains(">>"), "{http}");
    let check = run(&["scrub", "--check", s(&caps)]);
    assert!(check.status.success(), "{}\n{}", String::from_utf8_lossy(&check.stdout), stderr(&check));

    // A staging that behaves: the session plays through, nothing differs.
    let same = rt.block_on(ws::ChatServer::start());
    let path = dir.path().join("same.json");
    let results = dir.path().join("results");
    let out = replay(&caps, &same.url(), "max", &["--report", s(&path), "--results", s(&results)]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let json = report(&path);
    assert_eq!((json["completed"].as_u64(), json["compare"]["differing"].as_u64()), (Some(1), Some(0)), "{json}");
    // The results tape holds staging's side of the session.
    let replayed = ok(&["cat", s(&results)]);
    let ex: serde_json::Value = serde_json::from_str(replayed.trim()).unwrap();
    let messages = ex["websocket"]["messages"].as_array().unwrap();
    let from = |side: &str| messages.iter().filter(|m| m["from"] == side).count();
    assert_eq!((from("client"), from("server")), (11, 12), "{ex}");
    assert!(!replayed.contains("jane.doe"), "results are scrubbed too: {replayed}");

    // A staging with a bug: the quote for A-7 is found by its field.
    let staging = rt.block_on(ws::ChatServer::start_drifted());
    let path = dir.path().join("drift.json");
    let out = replay(&caps, &staging.url(), "max", &["--report", s(&path)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{stdout}\n{}", stderr(&out));
    let json = report(&path);
    assert_eq!(json["compare"]["differing"].as_u64(), Some(1), "{json}");
    assert!(stdout.contains("$[8].price") && stdout.contains("2099"), "{stdout}");
}

#[test]
fn a_session_keeps_its_pace_and_a_refused_upgrade_is_a_status_difference() {
    let rt = runtime();
    let production = rt.block_on(ws::ChatServer::start());
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = capture_proxy(&production.url(), &caps, &dir.path().join("scrub.key"));
    // Four questions 200 ms apart: the session lasts 800 ms or more.
    rt.block_on(shop(proxy.addr, "/quotes", &["A-1", "A-2", "A-3", "A-4"], Duration::from_millis(200)));
    stop(proxy);

    let staging = rt.block_on(ws::ChatServer::start());
    let results = dir.path().join("results-1x");
    let out = replay(&caps, &staging.url(), "1x", &["--results", s(&results)]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let ex: serde_json::Value = serde_json::from_str(ok(&["cat", s(&results)]).trim()).unwrap();
    let asked: Vec<u64> = ex["websocket"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "client" && m["kind"] == "text")
        .map(|m| m["at_ns"].as_u64().unwrap())
        .collect();
    assert_eq!(asked.len(), 4, "{ex}");
    assert!(asked.windows(2).all(|w| w[1] >= w[0] + 150_000_000), "200 ms apart, as recorded: {asked:?}");

    // A staging that does not upgrade that path (the tape edited as a user might: its
    // import is unscrubbed, so it goes with --allow-unscrubbed): 101 → 404.
    let mut tape = ok(&["cat", s(&caps)]);
    tape = tape.replace("\"/quotes\"", "\"/refuse\"");
    let edited = dir.path().join("refuse.jsonl");
    std::fs::write(&edited, tape).unwrap();
    let imported = dir.path().join("refuse");
    ok(&["import", "--from", "jsonl", s(&edited), "-o", s(&imported)]);
    let path = dir.path().join("refused.json");
    let out = replay(&imported, &staging.url(), "max", &["--allow-unscrubbed", "--report", s(&path)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{stdout}\n{}", stderr(&out));
    let json = report(&path);
    assert_eq!(json["compare"]["differing"].as_u64(), Some(1), "{json}");
    assert!(stdout.contains("101") && stdout.contains("404"), "{stdout}");
}

/// A staging that accepts the upgrade and then misbehaves (`mode`), for every connection.
async fn hostile_staging(mode: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let key = text
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key")))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                let accept = match mode {
                    "wrong-accept" => "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
                    _ => tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                match mode {
                    "garbage" => {
                        let _ = stream.write_all(b"\x83this is not a frame").await;
                    }
                    "hangup" => return,
                    _ => {}
                }
                // Read (and ignore) whatever comes, never answering, never closing.
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
            });
        }
    });
    addr
}

#[test]
fn a_staging_that_misbehaves_after_the_upgrade_ends_the_session_and_is_reported() {
    let rt = runtime();
    let production = rt.block_on(ws::ChatServer::start());
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = capture_proxy(&production.url(), &caps, &dir.path().join("scrub.key"));
    rt.block_on(shop(proxy.addr, "/quotes", &["A-1", "A-2", "A-3"], Duration::ZERO));
    stop(proxy);
    for (mode, expect) in [
        ("silent", "recorded `4 items` → replayed `0 items`"),
        ("garbage", "unknown opcode 3"),
        ("hangup", "recorded `4 items` → replayed `0 items`"),
        ("wrong-accept", "Sec-WebSocket-Accept"),
    ] {
        let addr = rt.block_on(hostile_staging(mode));
        let path = dir.path().join(format!("{mode}.json"));
        let started = std::time::Instant::now();
        let out = replay(&caps, &format!("http://{addr}"), "max", &["--report", s(&path)]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{stdout}\n{}", stderr(&out));
        // It ends by itself (a silent server is not waited for forever)…
        assert!(started.elapsed() < Duration::from_secs(60), "{mode}: {:?}", started.elapsed());
        // A target that answered nothing completely fails the run (2), as for any request.
        match mode {
            "wrong-accept" => assert_eq!(out.status.code(), Some(2), "{mode}: {all}"),
            _ => assert!(out.status.code().is_some_and(|c| c <= 1), "{mode}: {all}"),
        }
        // … and says what went wrong.
        let json = report(&path);
        let completed = if mode == "wrong-accept" { 0 } else { 1 };
        assert_eq!(json["completed"].as_u64(), Some(completed), "{mode}: {json}");
        assert!(all.contains(expect), "{mode}: expected {expect:?} in {all}");
        if mode == "wrong-accept" {
            assert_eq!(json["errors"]["protocol"].as_u64(), Some(1), "{json}");
        } else {
            assert_eq!(json["compare"]["differing"].as_u64(), Some(1), "{mode}: {json}");
        }
    }
}

#[test]
fn at_the_recorded_pace_a_slow_staging_is_waited_for_and_its_slowness_reported() {
    let rt = runtime();
    let production = rt.block_on(ws::ChatServer::start());
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let proxy = capture_proxy(&production.url(), &caps, &dir.path().join("scrub.key"));
    rt.block_on(async {
        shop(proxy.addr, "/quotes", &["A-1", "A-2", "A-3", "A-4"], Duration::from_millis(100)).await;
        let seen = visit(proxy.addr).await;
        assert!(seen.iter().any(|m| m.contains(r#""bye":true"#)), "{seen:?}");
    });
    stop(proxy);
    // A staging that takes 300 ms over every answer: the client waits for each, as the
    // recorded one did; nothing is lost, the slowness is reported.
    let slow = rt.block_on(ws::ChatServer::start_slow(Duration::from_millis(300)));
    let path = dir.path().join("slow.json");
    let out = replay(&caps, &slow.url(), "1x", &["--report", s(&path)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{stdout}\n{}", stderr(&out));
    let json = report(&path);
    assert_eq!(json["compare"]["differing"].as_u64(), Some(0), "nothing lost: {stdout}");
    assert!(stdout.contains("answers to client messages"), "{stdout}");
    let answers: Vec<f64> =
        json["routes"].as_array().unwrap().iter().filter_map(|r| r["answers"]["replayed_ms"]["p50"].as_f64()).collect();
    assert!(!answers.is_empty() && answers.iter().all(|ms| *ms >= 300.0), "{json}");
    // The session the server ended: its close answered, not sent first.
    let same = rt.block_on(ws::ChatServer::start());
    let results = dir.path().join("results");
    let path = dir.path().join("same.json");
    let out = replay(&caps, &same.url(), "max", &["--report", s(&path), "--results", s(&results)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(report(&path)["compare"]["differing"].as_u64(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let replayed = ok(&["cat", s(&results), "--filter", "path == '/visit'"]);
    let ex: serde_json::Value = serde_json::from_str(replayed.trim()).unwrap();
    let closes: Vec<&str> = ex["websocket"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "close")
        .map(|m| m["from"].as_str().unwrap())
        .collect();
    assert_eq!(closes, ["server", "client"], "{ex}");
}
