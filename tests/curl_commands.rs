//! `tapedeck cat --format curl` prints commands that really run: each is executed by `sh`
//! against a server on 127.0.0.1, which must receive the recorded method, target, headers
//! and body byte for byte. Skipped (with a message) when curl is not installed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use tapedeck_captures::*;

struct Received {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Accepts connections until dropped; reports each request (Content-Length bodies).
fn server() -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').unwrap();
                headers.push((n.to_string(), v.trim().to_string()));
            }
            let len = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
            let _ = tx.send(Received { method, target, headers, body });
        }
    });
    (port, rx)
}

fn exchange(port: u16, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Exchange {
    let mut h = Headers::new();
    h.push("Host", format!("127.0.0.1:{port}"));
    for (n, v) in headers {
        h.push(*n, *v);
    }
    if !body.is_empty() {
        h.push("Content-Length", body.len().to_string());
    }
    Exchange {
        id: ExchangeId(1),
        connection: ConnectionId(1),
        session: None,
        sequence: 0,
        timing: Timing::at(1_700_000_000_000_000_000, 1_700_000_000_000_000_000),
        request: Request {
            message_ns: Vec::new(),
            trailers: Default::default(),
            method: method.into(),
            scheme: "http".into(),
            authority: format!("127.0.0.1:{port}"),
            target: target.into(),
            version: HttpVersion::Http11,
            headers: h,
            body: Body::full(body),
        },
        response: None,
        error: Some(ErrorKind::ConnectRefused),
        scrub: vec![],
        replay_of: None,
        websocket: None,
    }
}

#[test]
fn curl_commands_reproduce_the_recorded_requests() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipping: curl is not installed");
        return;
    }
    let (port, rx) = server();
    let binary: Vec<u8> = (0u8..=255).chain([0, 0, 10, 13]).collect();
    let cases = vec![
        exchange(
            port,
            "GET",
            "/search?q=it%27s&page=2",
            &[("Accept", "application/json"), ("X-Quote", "it's \"quoted\" $HOME `x`")],
            b"",
        ),
        exchange(
            port,
            "POST",
            "/api/orders",
            &[("Content-Type", "application/json")],
            br#"{"note":"it's $5 \\ `rm -rf`"}"#,
        ),
        exchange(port, "PUT", "/blobs/1", &[("Content-Type", "application/octet-stream")], &binary),
        exchange(port, "DELETE", "/carts/9", &[("X-Empty", "")], b""),
    ];
    let dir = tempfile::tempdir().unwrap();
    write_tape(dir.path(), &cases);
    let script = ok(&["cat", s(dir.path()), "--format", "curl"]);
    let commands: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(commands.len(), cases.len());
    for (cmd, want) in commands.iter().zip(&cases) {
        let status = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
        assert!(status.success(), "command failed: {cmd}");
        let got = rx.recv_timeout(Duration::from_secs(10)).expect("the server received the request");
        assert_eq!(got.method, want.request.method, "{cmd}");
        assert_eq!(got.target, want.request.target, "{cmd}");
        assert_eq!(got.body, &want.request.body.data[..], "{cmd}");
        for h in &want.request.headers {
            let name = h.name.to_str_lossy();
            let value = h.value.to_str_lossy();
            assert!(
                got.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(&name) && *v == value),
                "header {name}: {value} missing from {:?} ({cmd})",
                got.headers
            );
        }
    }
}
