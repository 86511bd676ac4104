//! Forwarding through a real proxy to real upstreams on 127.0.0.1: methods, headers,
//! bodies (empty, chunked, 50 MiB streaming), HTTP/1.1 and h2c, keep-alive, pipelining,
//! `Expect: 100-continue`, upgrades, and upstream failures.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use support::*;
use tapedeck_captures::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_headers_and_bodies_round_trip_and_are_captured() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let client = client();
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let body = if method == "GET" { Bytes::new() } else { Bytes::from(format!("{method} body")) };
        let req = Request::builder()
            .method(method)
            .uri(proxy.url("/echo?x=1"))
            .header("X-Repeat", "one")
            .header("x-repeat", "two")
            .header("X-Custom", "v")
            .body(Full::new(body.clone()))
            .unwrap();
        let (status, headers, echoed) = send(&client, req).await;
        assert_eq!(status, StatusCode::OK);
        let mut expected = format!("{method} /echo?x=1\n").into_bytes();
        expected.extend_from_slice(&body);
        assert_eq!(echoed, expected);
        let repeats: Vec<_> =
            headers.get_all("x-echo-x-repeat").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        assert_eq!(repeats, ["one", "two"], "repeated headers reach the upstream in order");
        assert_eq!(headers.get("x-echo-x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(headers.get("x-echo-x-forwarded-proto").unwrap(), "http");
        assert_eq!(headers.get("x-echo-host").unwrap().to_str().unwrap(), proxy.addr.to_string(), "Host is preserved");
    }
    let (status, headers, body) =
        send(&client, Request::head(proxy.url("/echo")).body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert!(headers.contains_key("content-length"));

    let captured = proxy.finish().await;
    assert_eq!(captured.len(), 7);
    let post = captured.iter().find(|e| e.request.method == "POST").unwrap();
    assert_eq!(post.request.target, "/echo?x=1");
    assert_eq!(&post.request.body.data[..], b"POST body");
    assert_eq!(post.request.headers.get_all("x-repeat").count(), 2);
    let resp = post.response.as_ref().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body.data[..], b"POST /echo?x=1\nPOST body");
    assert!(post.timing.head_ns.is_some() && post.timing.end_ns >= post.timing.head_ns);
    // Keep-alive: each client connection numbers its requests 0, 1, 2… in start order.
    let mut per_conn: std::collections::BTreeMap<_, Vec<u32>> = Default::default();
    for e in &captured {
        per_conn.entry(e.connection).or_default().push(e.sequence);
    }
    assert!(per_conn.len() <= 2, "the client's keep-alive connections are reused: {per_conn:?}");
    for seqs in per_conn.values() {
        assert_eq!(*seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_header_case_hop_by_hop_and_forwarded() {
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| {
        c.forwarding.forwarded = true;
        c.forwarding.preserve_header_case = true;
        // The client here stands for a trusted load balancer: its X-Forwarded-For is kept.
        c.forwarding.trust = tapedeck_proxy::config::Trust::parse("127.0.0.0/8").unwrap();
    })
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /raw HTTP/1.1\r\nHost: shop.example\r\nX-MiXeD-CaSe: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
              Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await.unwrap();
    let text = String::from_utf8_lossy(&head);
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: ").or(l.strip_prefix("Content-Length: ")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    let seen = String::from_utf8(body).unwrap();
    assert!(seen.starts_with("GET /raw HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("X-MiXeD-CaSe: 1\r\n"), "header case is preserved upstream: {seen}");
    assert!(seen.contains("Host: shop.example\r\n"), "{seen}");
    for hop in ["x-hop", "keep-alive:", "proxy-connection"] {
        assert!(!seen.to_ascii_lowercase().contains(hop), "{hop} must not be forwarded: {seen}");
    }
    // TE is this hop's: the proxy takes trailers too (and passes them to a client that
    // asked for them), and says only that.
    assert_eq!(seen.to_ascii_lowercase().matches("\r\nte:").count(), 1, "{seen}");
    assert!(seen.to_ascii_lowercase().contains("\r\nte: trailers\r\n"), "{seen}");
    assert!(seen.to_ascii_lowercase().contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"), "{seen}");
    assert!(seen.contains("for=127.0.0.1;proto=http;host=\"shop.example\""), "{seen}");
    // Repeated response headers come back as two fields.
    assert_eq!(text.to_ascii_lowercase().matches("x-multi:").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_and_captures_are_truncated() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |c| c.capture.as_mut().unwrap().max_body = 64 << 10).await;
    let client = client();
    // 50 MiB download, chunked from the upstream.
    let size = 50 << 20;
    let resp = client
        .request(Request::get(proxy.url(&format!("/bytes/{size}"))).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (mut n, mut ok) = (0usize, true);
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            ok &= d.iter().all(|b| *b == ((n / 65536) % 251) as u8 || d.len() < 65536);
            n += d.len();
        }
    }
    assert_eq!(n, size);
    assert!(ok, "download bytes arrive intact");

    // 50 MiB upload, streamed by the client in 1 MiB chunks.
    let chunks = (0..50).map(|i| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![i as u8; 1 << 20]))));
    let stream_client: hyper_util::client::legacy::Client<_, StreamBody<IterStream<_>>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = Request::post(proxy.url("/upload")).body(StreamBody::new(iter_stream(chunks))).unwrap();
    let resp = stream_client.request(req).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let expected_sum = (0..50u64)
        .flat_map(|i| std::iter::repeat_n(i as u8, 1 << 20))
        .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
    assert_eq!(text, format!("{} {expected_sum}", 50 << 20));

    let captured = proxy.finish().await;
    let download = captured.iter().find(|e| e.request.target.starts_with("/bytes")).unwrap();
    let body = &download.response.as_ref().unwrap().body;
    assert_eq!((body.data.len(), body.len, body.truncated), (64 << 10, size as u64, true));
    assert_eq!(download.error, None);
    let upload = captured.iter().find(|e| e.request.target == "/upload").unwrap();
    assert_eq!(
        (upload.request.body.data.len(), upload.request.body.len, upload.request.body.truncated),
        (64 << 10, 50 << 20, true)
    );
}

/// The proxy streams: the client sees the first chunk long before the upstream finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_not_buffered() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let started = Instant::now();
    let resp =
        client().request(Request::get(proxy.url("/drip/10")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let first_at = started.elapsed();
    while body.frame().await.is_some() {}
    let all_at = started.elapsed();
    assert!(first_at < Duration::from_millis(300), "first chunk after {first_at:?}");
    assert!(all_at > Duration::from_millis(800), "the upstream drips for ~900 ms: {all_at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_and_keep_alive_reuse() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let h2 = h2c_client();
    for i in 0..5 {
        let (status, headers, body) = get(&h2, &proxy.url(&format!("/echo?i={i}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("GET /echo?i={i}\n"));
        assert_eq!(
            headers.get("x-echo-host").unwrap().to_str().unwrap(),
            proxy.addr.to_string(),
            "h2 :authority becomes Host"
        );
    }
    let h1 = client();
    for _ in 0..10 {
        get(&h1, &proxy.url("/echo")).await;
    }
    let metrics = metrics_text(proxy.admin).await;
    let accepted = metric(&metrics, "tapedeck_connections_accepted_total");
    assert!(accepted <= 3.0, "15 requests over at most 3 client connections, got {accepted}");
    assert!(
        upstream.connections.load(std::sync::atomic::Ordering::SeqCst) <= 3,
        "the proxy reuses upstream connections"
    );
    let captured = proxy.finish().await;
    let h1_captured: Vec<_> =
        captured.iter().filter(|e| e.request.version == tapedeck_captures::HttpVersion::Http11).collect();
    assert_eq!(h1_captured.len(), 10);
    let reused = h1_captured.iter().filter(|e| e.sequence > 0).count();
    assert!(reused >= 7, "keep-alive: most h1 requests follow another on their connection ({reused} of 10)");
    let h2_captured: Vec<_> =
        captured.iter().filter(|e| e.request.version == tapedeck_captures::HttpVersion::H2).collect();
    assert_eq!(h2_captured.len(), 5);
    assert_eq!(h2_captured[0].request.headers.get_str("host"), Some(proxy.addr.to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_expect_continue() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=3 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.windows(b"GET /echo?n=3".len()).all(|w| w != b"GET /echo?n=3") {
        assert!(Instant::now() < deadline, "pipelined responses: {}", String::from_utf8_lossy(&got));
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let order: Vec<_> = ["n=1", "n=2", "n=3"].iter().map(|n| text.find(n).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "responses in request order: {text}");

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let interim = read_head(&mut s).await.unwrap();
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue"), "{}", String::from_utf8_lossy(&interim));
    s.write_all(b"hello").await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_tunnelled_and_recorded_as_the_handshake() {
    let upstream = RawUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("upgrade: echo"), "{text}");
    for msg in ["ping", "second frame"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    drop(s);
    let captured = proxy.finish().await;
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].status(), Some(101));
    assert!(captured[0].response.as_ref().unwrap().body.data.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_slow_and_reset_give_502_504_and_are_recorded() {
    let raw = RawUpstream::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    };
    let mut down = TestProxy::start(&format!("http://{closed}"), |_| {}).await;
    let (status, headers, body) = get(&client(), &down.url("/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get("x-tapedeck-error").unwrap(), "connect_refused");
    assert_eq!(body, "upstream refused the connection\n");
    let m = metrics_text(down.admin).await;
    assert_eq!(metric(&m, "tapedeck_upstream_errors_total{kind=\"connect_refused\"}"), 1.0);
    let captured = down.finish().await;
    assert_eq!(captured[0].error, Some(ErrorKind::ConnectRefused));
    assert!(captured[0].response.is_none());

    let upstream = Upstream::start().await;
    let mut slow =
        TestProxy::start(&upstream.url(), |c| c.timeouts.upstream_response = Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, _, _) = get(&client(), &slow.url("/delay/2000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(slow.finish().await[0].error, Some(ErrorKind::ResponseTimeout));

    let mut reset = TestProxy::start(&raw.url(), |_| {}).await;
    let (status, headers, _) = get(&client(), &reset.url("/close")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get("x-tapedeck-error").unwrap(), "reset");
    assert_eq!(reset.finish().await[0].error, Some(ErrorKind::Reset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abort_mid_body_is_recorded_and_the_proxy_keeps_serving() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /drip/20 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    drop(s); // go away mid-body
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = get(&client(), &proxy.url("/echo")).await;
    assert_eq!(status, StatusCode::OK);
    let captured = proxy.finish().await;
    let aborted = captured.iter().find(|e| e.request.target == "/drip/20").unwrap();
    assert_eq!(aborted.error, Some(ErrorKind::ClientAborted));
    assert!(aborted.response.as_ref().unwrap().body.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_timing_matches_upstream_latency() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let client = client();
    get(&client, &proxy.url("/delay/0")).await; // warm the upstream pool
    let before = tapedeck_captures::tape::writer::now_unix_ns();
    get(&client, &proxy.url("/delay/50")).await;
    let after = tapedeck_captures::tape::writer::now_unix_ns();
    let captured = proxy.finish().await;
    let ex = captured.iter().find(|e| e.request.target == "/delay/50").unwrap();
    let head_ms = ex.timing.head_ns.unwrap() as f64 / 1e6;
    assert!((50.0..65.0).contains(&head_ms), "recorded {head_ms} ms for a 50 ms upstream delay");
    assert!(ex.timing.end_ns.unwrap() >= ex.timing.head_ns.unwrap());
    assert!(ex.wall_start_ns() >= before - 5_000_000 && ex.wall_start_ns() <= after, "wall-clock start is right");
}

/// A listener whose accept queue is full never completes new handshakes: connecting to it
/// times out, on loopback, without leaving the machine.
fn unresponsive_listener() -> (socket2::Socket, Vec<std::net::TcpStream>, std::net::SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(std::net::TcpStream::from(s));
    }
    std::thread::sleep(Duration::from_millis(100));
    (socket, fillers, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeouts_give_504_and_host_can_be_the_upstreams() {
    let (_listener, _fillers, addr) = unresponsive_listener();
    let mut proxy =
        TestProxy::start(&format!("http://{addr}"), |c| c.timeouts.upstream_connect = Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, headers, _) = get(&client(), &proxy.url("/x")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers.get("x-tapedeck-error").unwrap(), "connect_timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(proxy.finish().await[0].error, Some(ErrorKind::ConnectTimeout));

    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| c.forwarding.preserve_host = false).await;
    let (_, headers, _) = get(&client(), &proxy.url("/echo")).await;
    assert_eq!(
        headers.get("x-echo-host").unwrap().to_str().unwrap(),
        upstream.addr.to_string(),
        "--host-header upstream"
    );
    assert_eq!(headers.get("x-echo-x-forwarded-host").unwrap().to_str().unwrap(), proxy.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_bodies_reuse_upstream_connections_too() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| c.workers = 1).await;
    let h1 = client();
    for i in 0..10 {
        let body = Bytes::from(format!("payload {i} ").repeat(100));
        let (status, _, answer) =
            send(&h1, http::Request::post(proxy.url("/upload")).body(Full::new(body.clone())).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer.starts_with(format!("{} ", body.len()).as_bytes()));
    }
    let opened = upstream.connections.load(std::sync::atomic::Ordering::SeqCst);
    // Sent whole, a body of known length frees its connection for the next request.
    assert!(opened <= 2, "10 POSTs opened {opened} upstream connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_untrusted_clients_are_replaced_not_believed() {
    let upstream = Upstream::start().await;
    let forged = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "admin.internal"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        // Other spellings upstreams believe.
        ("true-client-ip", "6.6.6.6"),
        ("cf-connecting-ip", "6.6.6.6"),
        ("x-cluster-client-ip", "6.6.6.6"),
        ("x-forwarded", "for=6.6.6.6"),
    ];
    let request = |proxy: &TestProxy| {
        let mut req = Request::get(proxy.url("/echo"));
        for (n, v) in forged {
            req = req.header(n, v);
        }
        req.body(Full::new(Bytes::new())).unwrap()
    };
    // Default: this proxy is the edge; what it saw replaces what the client claims.
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let (status, headers, _) = send(&client(), request(&proxy)).await;
    assert_eq!(status, StatusCode::OK);
    let seen = |name: &str| headers.get(format!("x-echo-{name}")).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(seen("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen("x-forwarded-host"), Some(proxy.addr.to_string()));
    for gone in [
        "x-real-ip",
        "forwarded",
        "proxy-authorization",
        "true-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "x-forwarded",
    ] {
        assert_eq!(seen(gone), None, "{gone} must not reach the upstream");
    }
    // Behind a trusted load balancer: its chain is kept and extended; proto and host
    // are still what this proxy saw.
    let trusted = TestProxy::start(&upstream.url(), |c| {
        c.forwarding.trust = tapedeck_proxy::config::Trust::parse("10.0.0.0/8, 127.0.0.1").unwrap();
    })
    .await;
    let (_, headers, _) = send(&client(), request(&trusted)).await;
    let seen = |name: &str| headers.get(format!("x-echo-{name}")).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(seen("x-forwarded-for").as_deref(), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(seen("x-real-ip").as_deref(), Some("6.6.6.6"));
    assert_eq!(seen("true-client-ip").as_deref(), Some("6.6.6.6"));
    assert_eq!(seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen("proxy-authorization"), None);
    assert!(tapedeck_proxy::config::Trust::parse("10.0.0.0/33").is_err());
    assert!(tapedeck_proxy::config::Trust::parse("lan").is_err());
}
