//! WebSocket through the sidecar: a real server and client (tungstenite) see each other
//! exactly as directly, and the capture holds the handshake and every message — both
//! sides, in order, timed, scrubbed, with the close — within the capture's limits.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tapedeck_captures::websocket::{Kind, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use support::*;

/// What a client sees of the chat: every message it receives until the server closes.
async fn talk(addr: std::net::SocketAddr, big: usize) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/chat?room=7");
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream).await.expect("handshake");
    assert_eq!(resp.status(), 101);
    let mut seen = Vec::new();
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>| loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer").unwrap().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Close(c) => return format!("close {:?}", c.map(|c| u16::from(c.code))),
            _ => continue,
        }
    };
    seen.push(next(&mut ws).await);
    ws.send(Message::text(r#"{"to":"ann@example.com","text":"hi"}"#)).await.unwrap();
    seen.push(next(&mut ws).await);
    ws.send(Message::binary([vec![0xffu8], vec![7u8; big - 1]].concat())).await.unwrap();
    seen.push(next(&mut ws).await);
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    ws.send(Message::text("plain text from bob@example.org")).await.unwrap();
    seen.push(next(&mut ws).await);
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() })).await.unwrap();
    seen.push(next(&mut ws).await);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_passes_as_directly_and_is_recorded_message_by_message() {
    let chat = ws::ChatServer::start().await;
    let server = chat.addr;
    let direct = talk(server, 300).await;
    let mut proxy = TestProxy::start(&format!("http://{server}"), |c| {
        let scrubber = tapedeck_captures::scrub::Scrubber::with_defaults(Some(b"websocket capture test key 0123456"));
        c.capture.as_mut().unwrap().scrub = Some(Box::new(move |ex| scrubber.scrub(ex)));
    })
    .await;
    let through = talk(proxy.addr, 300).await;
    assert_eq!(through, direct);
    assert_eq!(direct.len(), 5, "{direct:?}");
    // Counted once the connection ended (pings, pongs and closes too).
    let server = wait_for_metric(proxy.admin, "tapedeck_websocket_messages_total{from=\"server\"}", 6.0).await;
    let client = wait_for_metric(proxy.admin, "tapedeck_websocket_messages_total{from=\"client\"}", 5.0).await;
    assert_eq!((client, server), (5.0, 6.0));
    assert_eq!(metric(&metrics_text(proxy.admin).await, "tapedeck_upgraded_connections"), 0.0);

    let captured = proxy.finish().await;
    assert_eq!(captured.len(), 1, "{captured:?}");
    let ex = &captured[0];
    assert_eq!(ex.status(), Some(101));
    assert_eq!(ex.request.target, "/chat?room=7");
    let ws = ex.websocket.as_ref().expect("the session is recorded");
    assert!(ws.unreadable.is_none(), "{:?}", ws.unreadable);
    let seen: Vec<(Side, Kind)> = ws.messages.iter().map(|m| (m.from, m.kind)).collect();
    use Kind::*;
    use Side::*;
    assert_eq!(
        seen,
        [
            (Server, Text),
            (Client, Text),
            (Server, Text),
            (Client, Binary),
            (Server, Text),
            (Client, Ping),
            (Server, Pong),
            (Client, Text),
            (Server, Text),
            (Client, Close),
            (Server, Close),
        ]
    );
    // Timed in order, after the handshake, before the end.
    let head = ex.timing.head_ns.unwrap();
    assert!(ws.messages.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    assert!(ws.messages[0].at_ns >= head && ws.end_ns.unwrap() >= ws.messages[10].at_ns);
    // Scrubbed before it reached the disk: the e-mail in JSON, the one in text; bytes
    // nobody can read are dropped, their length kept.
    let text = |i: usize| String::from_utf8_lossy(&ws.messages[i].data).into_owned();
    assert!(text(1).starts_with(r#"{"to":"tok_email_"#), "{}", text(1));
    assert!(!text(2).contains("ann@") && text(2).contains("tok_email_"), "{}", text(2));
    assert!(!text(7).contains("bob@example.org"), "{}", text(7));
    assert_eq!((ws.messages[3].data.len(), ws.messages[3].len), (0, 300));
    assert_eq!(&ws.messages[5].data[..], b"are you there");
    assert_eq!((ws.messages[9].code, &ws.messages[9].data[..]), (Some(1000), &b"done"[..]));
    assert_eq!(ws.messages[10].code, Some(1000));
    assert_eq!(ws.ended, Some(tapedeck_captures::websocket::Ended::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_beyond_max_body_keeps_a_prefix_and_forwards_everything() {
    let chat = ws::ChatServer::start().await;
    let server = chat.addr;
    let mut proxy = TestProxy::start(&format!("http://{server}"), |c| {
        c.capture.as_mut().unwrap().max_body = 1000;
    })
    .await;
    // A 1 MiB message in one direction (tungstenite sends it as one frame; the proxy reads
    // it in many chunks).
    let through = talk(proxy.addr, 1 << 20).await;
    assert!(through[2].contains(&format!("\"bytes\":{}", 1 << 20)), "{through:?}");
    let captured = proxy.finish().await;
    let ws = captured[0].websocket.as_ref().unwrap();
    let kept: usize = ws.messages.iter().filter(|m| !m.kind.is_control()).map(|m| m.data.len()).sum();
    assert!(kept <= 1000 + 200, "{kept}"); // scrubbing can lengthen what it replaces
    assert_eq!(ws.messages.iter().find(|m| m.kind == Kind::Binary).unwrap().len, 1 << 20);
    assert_eq!(ws.close().and_then(|m| m.code), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_websocket_frames_pass_untouched_and_the_record_says_why() {
    let upstream = RawUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // A valid frame, then bytes of another protocol: every byte comes back as sent.
    let mut sent = vec![0x81, 0x82, 1, 2, 3, 4, b'o' ^ 1, b'k' ^ 2];
    sent.extend_from_slice(b"\x83not a frame at all");
    s.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, sent);
    drop(s);
    let captured = proxy.finish().await;
    let ws = captured[0].websocket.as_ref().expect("recorded");
    // What came before the foreign bytes is kept; nothing after them is read (the
    // upstream's echo of the frame came after).
    assert_eq!(ws.messages.iter().map(|m| (m.from, &m.data[..])).collect::<Vec<_>>(), [(Side::Client, &b"ok"[..])]);
    assert!(ws.unreadable.as_deref().is_some_and(|u| u.contains("unknown opcode 3")), "{:?}", ws.unreadable);
}

/// Open sessions count as connections: against `--max-connections`, and in the drain at
/// shutdown (they get the drain timeout, and are recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_count_as_connections_and_are_drained_at_shutdown() {
    let chat = ws::ChatServer::start().await;
    let mut proxy = TestProxy::start(&chat.url(), |c| {
        c.limits.max_connections = 2;
        c.timeouts.drain = Duration::from_secs(20);
    })
    .await;
    let open = |addr| async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/chat"), stream).await?;
        ws.next().await.unwrap()?; // the greeting
        Ok::<_, tokio_tungstenite::tungstenite::Error>(ws)
    };
    let mut first = open(proxy.addr).await.unwrap();
    let _second = open(proxy.addr).await.unwrap();
    assert_eq!(metric(&metrics_text(proxy.admin).await, "tapedeck_upgraded_connections"), 2.0);
    // Two sessions hold the cap (the metrics scrape came on a connection of its own).
    assert!(open(proxy.addr).await.is_err(), "a third connection is over --max-connections 2");
    drop(_second);
    // Shutdown waits for the open session…
    let p = proxy.proxy.take().unwrap();
    let shutdown = tokio::spawn(p.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!shutdown.is_finished(), "the drain waits for open sessions");
    // … which still works meanwhile, and ends when its client closes.
    first.send(Message::text("still here")).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), first.next()).await.unwrap().unwrap().unwrap();
    assert!(answer.to_text().unwrap().contains("still here"), "{answer:?}");
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    drop(first);
    let report = tokio::time::timeout(Duration::from_secs(15), shutdown).await.expect("drained").unwrap();
    assert_eq!(report.connections_cut, 0);
    let captured = proxy.captured();
    let recorded = captured.iter().filter_map(|e| e.websocket.as_ref()).map(|ws| ws.messages.len()).max();
    assert!(recorded.is_some_and(|n| n >= 4), "{captured:?}");
}

/// An https upstream that offers HTTP/2 by ALPN (as most do) gets upgrades over HTTP/1.1:
/// HTTP/2 has no `Upgrade`, and a WebSocket sent that way fails (426 or 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reaches_an_https_upstream_that_offers_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_certs(dir.path(), "localhost");
    // The server offers h2 first; tungstenite speaks HTTP/1.1 only (as a WebSocket server
    // beside an h2 stack does for upgrades).
    let config = tapedeck_proxy::tls::server_config(&files).unwrap();
    assert_eq!(config.alpn_protocols.first().map(Vec::as_slice), Some(&b"h2"[..]));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    return; // an h2 connection cannot carry the upgrade: fails as a server would
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut proxy = TestProxy::start(&format!("https://localhost:{}", addr.port()), |c| {
        c.upstream_ca = Some(files.cert.clone());
    })
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("ws://{}/echo", proxy.addr), stream).await.expect("upgraded");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over https")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.to_text().unwrap(), "over https");
    ws.close(None).await.unwrap();
    drop(ws);
    let captured = proxy.finish().await;
    assert_eq!(captured[0].status(), Some(101));
}

/// A session with nothing moving either way for `--stream-idle-timeout` is closed: an idle
/// client cannot hold its connection slot for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_after_the_stream_idle_timeout() {
    let chat = ws::ChatServer::start().await;
    let mut proxy = TestProxy::start(&chat.url(), |c| c.timeouts.stream_idle = Duration::from_millis(500)).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/chat", proxy.addr), stream).await.unwrap();
    ws.next().await.unwrap().unwrap(); // the greeting
                                       // Then nothing: the proxy closes the connection (not a second before the timeout).
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("closed by the proxy");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    let mut open = 1.0;
    for _ in 0..250 {
        open = metric(&metrics_text(proxy.admin).await, "tapedeck_upgraded_connections");
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0);
    let captured = proxy.finish().await;
    let ws = captured[0].websocket.as_ref().unwrap();
    assert_eq!(ws.ended, Some(tapedeck_captures::websocket::Ended::Dropped), "{ws:?}");
}
