//! Bad clients and TLS: malformed HTTP, oversized heads, slowloris, junk instead of a TLS
//! handshake, bogus HTTP/2 frames, idle and surplus connections. Each is answered or
//! closed cleanly, counted, and everyone else keeps being served. Also TLS termination
//! with ALPN and certificate reload.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tapedeck_proxy::config::TlsFiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `limit` passes); returns what arrived.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// The proxy still serves others, and counted at least `at_least` connections that ended
/// for `reason`.
async fn still_serves_and_counted(proxy: &TestProxy, reason: &str, at_least: f64) {
    let (status, _, _) = get(&client(), &proxy.url("/echo")).await;
    assert_eq!(status, StatusCode::OK, "the proxy keeps serving others");
    let name = format!("tapedeck_connection_errors_total{{reason=\"{reason}\"}}");
    let counted = wait_for_metric(proxy.admin, &name, at_least).await;
    assert!(counted >= at_least, "{reason}: counted {counted}, expected at least {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused_and_counted() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| c.limits.max_header_bytes = 16 << 10).await;

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"THIS IS NOT HTTP\x00\x01\r\n\r\n").await.unwrap();
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&reply));

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(64 << 10));
    let _ = s.write_all(big.as_bytes()).await;
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(reply.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&reply));

    still_serves_and_counted(&proxy, "protocol", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_at_the_header_timeout() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| c.timeouts.header_read = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut dripping = true;
    while dripping && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        dripping = s.write_all(b"X-Slow: 1\r\n").await.is_ok();
        let mut buf = [0u8; 256];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            break;
        }
    }
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "a client dripping its head is disconnected");
    assert!(started.elapsed() < Duration::from_secs(2), "after about the header timeout: {:?}", started.elapsed());
    still_serves_and_counted(&proxy, "header_timeout", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_http2_frames_close_only_that_connection() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // A SETTINGS frame whose length is not a multiple of 6, then garbage.
    s.write_all(&[0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]).await.unwrap();
    s.write_all(&[0xff; 64]).await.unwrap();
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the connection is closed");
    // The server may send its SETTINGS and a GOAWAY (type 7) first.
    let has_goaway = reply.windows(4).any(|w| w[3] == 0x7 && w[0] == 0);
    assert!(reply.is_empty() || has_goaway || reply.len() < 200, "{reply:?}");
    still_serves_and_counted(&proxy, "protocol", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_surplus_ones_refused() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| {
        c.timeouts.idle = Duration::from_millis(300);
        c.limits.max_connections = 3;
    })
    .await;
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let head = read_head(&mut idle).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        read_head(&mut s).await.unwrap();
        held.push(s);
    }
    let mut surplus = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = surplus.write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let (reply, closed) = read_to_close(&mut surplus, Duration::from_secs(2)).await;
    assert!(closed && reply.is_empty(), "over the limit: closed without an answer");
    assert_eq!(wait_for_metric(proxy.admin, "tapedeck_connection_errors_total{reason=\"overload\"}", 1.0).await, 1.0);
    drop(held);
}

struct Certs {
    _dir: tempfile::TempDir,
    files: TlsFiles,
}

fn certs(name: &str) -> (Certs, CertificateDer<'static>) {
    let dir = tempfile::tempdir().unwrap();
    let (files, der) = write_certs(dir.path(), name);
    (Certs { _dir: dir, files }, der)
}

fn client_config(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_negotiates_h2_and_http1() {
    let upstream = Upstream::start().await;
    let (certs, der) = certs("localhost");
    let mut proxy = TestProxy::start(&upstream.url(), |c| c.tls = Some(certs.files.clone())).await;
    let url = format!("https://localhost:{}/echo", proxy.addr.port());
    for (offer_h2, expect) in [(true, http::Version::HTTP_2), (false, http::Version::HTTP_11)] {
        // hyper-rustls offers ALPN protocols from what is enabled.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(std::slice::from_ref(&der), &[]))
            .https_only()
            .enable_http1();
        let connector = if offer_h2 { builder.enable_http2().build() } else { builder.build() };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        // localhost must resolve to the proxy: connect by name, the proxy listens on 127.0.0.1.
        let resp = client.request(http::Request::get(&url).body(Full::new(Bytes::new())).unwrap()).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => panic!("TLS request failed: {e:?}"),
        };
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), expect);
        assert_eq!(resp.headers().get("x-echo-x-forwarded-proto").unwrap(), "https");
    }
    let captured = proxy.finish().await;
    assert_eq!(captured.len(), 2);
    assert!(captured.iter().all(|e| e.request.scheme == "https"));
    assert!(captured.iter().any(|e| e.request.version == tapedeck_captures::HttpVersion::H2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_instead_of_a_handshake_is_counted_and_reload_swaps_the_certificate() {
    let upstream = Upstream::start().await;
    let (certs, first) = certs("localhost");
    let proxy = TestProxy::start(&upstream.url(), |c| c.tls = Some(certs.files.clone())).await;

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "plain HTTP on the TLS port is dropped");
    assert_eq!(wait_for_metric(proxy.admin, "tapedeck_connection_errors_total{reason=\"tls\"}", 1.0).await, 1.0);

    let peer_cert = |roots: Vec<CertificateDer<'static>>| {
        let addr = proxy.addr;
        async move {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&roots, &[b"http/1.1"])));
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
            Ok::<_, std::io::Error>(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
        }
    };
    assert_eq!(peer_cert(vec![first.clone()]).await.unwrap(), first);

    // Replace the files and reload (what SIGHUP does in the binary).
    let (_, second) = write_certs(certs.files.cert.parent().unwrap(), "localhost");
    proxy.proxy.as_ref().unwrap().reload_tls().unwrap();
    assert_eq!(peer_cert(vec![second.clone()]).await.unwrap(), second, "new connections get the new certificate");

    // A broken file keeps the old certificate in use.
    std::fs::write(&certs.files.key, "not a key").unwrap();
    assert!(proxy.proxy.as_ref().unwrap().reload_tls().is_err());
    assert_eq!(peer_cert(vec![second.clone()]).await.unwrap(), second);
    let _: PathBuf = certs.files.cert.clone();
}

/// TLS 1.0 and 1.1 and suites without AEAD are refused, tried with `openssl s_client`
/// (skipped without it); TLS 1.2 with AES-GCM and TLS 1.3 are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tls_versions_and_non_aead_suites_are_refused() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl command to try old TLS versions with");
        return;
    }
    let upstream = Upstream::start().await;
    let (certs, _) = certs("localhost");
    let mut proxy = TestProxy::start(&upstream.url(), |c| c.tls = Some(certs.files.clone())).await;
    let connect = format!("127.0.0.1:{}", proxy.addr.port());
    let attempts: [(&[&str], bool); 5] = [
        (&["-tls1_3"], true),
        (&["-tls1_2", "-cipher", "ECDHE+AESGCM"], true),
        (&["-tls1_2", "-cipher", "ECDHE+AES:!AESGCM:!AESCCM:@SECLEVEL=0"], false),
        (&["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], false),
        (&["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], false),
    ];
    for (args, accepted) in attempts {
        let (connect, owned) = (connect.clone(), args.to_vec());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("openssl")
                .args(["s_client", "-connect", &connect, "-servername", "localhost"])
                .args(&owned)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let negotiated = out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
        assert_eq!(
            negotiated,
            accepted,
            "openssl s_client {:?}:\n{text}\n{}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = proxy.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_reached_over_tls_with_h2_or_http1() {
    for h2 in [true, false] {
        let (certs, _) = certs("localhost");
        let upstream = Upstream::start_tls(&certs.files.cert, &certs.files.key, h2).await;
        let url = format!("https://localhost:{}", upstream.addr.port());
        let ca = certs.files.cert.clone();
        let mut proxy = TestProxy::start(&url, |c| c.upstream_ca = Some(ca)).await;
        let client = client();
        for i in 0..5 {
            let (status, headers, body) = get(&client, &proxy.url(&format!("/echo?i={i}"))).await;
            assert_eq!(status, StatusCode::OK, "h2={h2}");
            assert_eq!(body, format!("GET /echo?i={i}\n"));
            assert_eq!(headers.get("x-echo-host").unwrap().to_str().unwrap(), proxy.addr.to_string());
        }
        let captured = proxy.finish().await;
        assert_eq!(captured.len(), 5);
        let version = captured[0].response.as_ref().unwrap().version;
        let expected = if h2 { tapedeck_captures::HttpVersion::H2 } else { tapedeck_captures::HttpVersion::Http11 };
        assert_eq!(version, expected, "the upstream protocol is negotiated by ALPN");
        assert!(upstream.connections.load(std::sync::atomic::Ordering::SeqCst) <= 2, "connections are reused");
    }

    // An upstream whose certificate is not trusted gets a 502 with the TLS error kind.
    let (other, _) = certs("localhost");
    let (certs, _) = certs("localhost");
    let upstream = Upstream::start_tls(&certs.files.cert, &certs.files.key, true).await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let mut proxy = TestProxy::start(&url, |c| c.upstream_ca = Some(other.files.cert.clone())).await;
    let (status, headers, _) = get(&client(), &proxy.url("/echo")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get("x-tapedeck-error").unwrap(), "tls");
    assert_eq!(proxy.finish().await[0].error, Some(tapedeck_captures::ErrorKind::Tls));
}

/// An upstream that answers `POST /early` at once, before reading the body (nginx
/// `return 401`, an auth check, a 413), then reads and discards the body as it arrives
/// and keeps the connection alive; other requests get 200 after their body.
async fn early_answering_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    let early = text.starts_with("post /early");
                    if early
                        && stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n").await.is_err()
                    {
                        return;
                    }
                    let mut body = vec![0; len];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if !early && stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A client that sends a POST head announcing `len` bytes, then trickles one byte every
/// `every` until told to stop; returns what it read back.
fn trickler(
    addr: std::net::SocketAddr,
    path: &str,
    len: usize,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<u8>> {
    trickler_with(addr, path, len, every, stop, "")
}

/// [`trickler`] with extra header lines (each ending in CRLF).
fn trickler_with(
    addr: std::net::SocketAddr,
    path: &str,
    len: usize,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    extra: &str,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: {len}\r\n\r\n");
    tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        for _ in 0..len {
            if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(b"x").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(every, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        reply
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_streaming_never_holds_up_another_clients_request() {
    let (upstream, task) = early_answering_upstream().await;
    // One worker, one pool: every request would share the connections the slow bodies hold.
    let proxy = TestProxy::start(&format!("http://{upstream}"), |c| {
        c.workers = 1;
        c.timeouts.upstream_response = Duration::from_secs(3);
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> =
        (0..8).map(|_| trickler(proxy.addr, "/early", 10_000, Duration::from_millis(50), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Ordinary requests meanwhile, on one keep-alive client: all answered, none waits.
    let client = client();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let (status, _, body) = get(&client, &proxy.url(&format!("/probe/{i}"))).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]), "probe {i}");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in slow {
        let reply = s.await.unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&reply));
    }
    // Before the fix every probe waited out the 3 s upstream timeout behind a slow body.
    assert!(slowest < Duration::from_millis(1500), "slowest probe took {slowest:?}");
    let text = metrics_text(proxy.admin).await;
    assert_eq!(metric(&text, "tapedeck_upstream_errors_total{kind=\"response_timeout\"}"), 0.0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_a_408_and_counts_as_the_clients_error() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| {
        c.timeouts.body = Duration::from_millis(600);
        c.timeouts.body_min_rate = 500;
    })
    .await;
    // 1 byte per 50 ms: the deadline moves 2 ms per byte, so the client is cut off a
    // little after 0.6 s.
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reply = trickler(proxy.addr, "/upload", 1_000, Duration::from_millis(50), stop).await.unwrap();
    let took = started.elapsed();
    assert!(reply.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&reply));
    assert!(took < Duration::from_secs(20), "cut off after {took:?}");
    let counted = wait_for_metric(proxy.admin, "tapedeck_client_errors_total{kind=\"body_timeout\"}", 1.0).await;
    assert_eq!(counted, 1.0);
    let text = metrics_text(proxy.admin).await;
    for kind in ["reset", "response_timeout", "other"] {
        assert_eq!(metric(&text, &format!("tapedeck_upstream_errors_total{{kind=\"{kind}\"}}")), 0.0, "{kind}");
    }
    assert_eq!(metric(&text, "tapedeck_requests_total{class=\"5xx\"}"), 0.0);
    // Claiming to be gRPC (HTTP/2 only) on HTTP/1.1 earns no exemption.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let grpc = trickler_with(
        proxy.addr,
        "/upload",
        1_000,
        Duration::from_millis(50),
        stop,
        "Content-Type: application/grpc\r\n",
    );
    let reply = grpc.await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&reply));
    // A steady upload larger than the base allowance still goes through.
    let body = vec![b'y'; 200_000];
    let (status, _, answer) =
        send(&client(), http::Request::post(proxy.url("/upload")).body(Full::new(Bytes::from(body))).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer.starts_with(b"200000 "), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_abandoned_bodies_are_client_errors_not_upstream_errors() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    // A chunk size that is not hex, after a valid chunk.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
        .await
        .unwrap();
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&reply));
    // A client that leaves mid-body.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nonly a few bytes").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let malformed = wait_for_metric(proxy.admin, "tapedeck_client_errors_total{kind=\"malformed_body\"}", 1.0).await;
    let aborted = wait_for_metric(proxy.admin, "tapedeck_client_errors_total{kind=\"aborted\"}", 1.0).await;
    assert_eq!((malformed, aborted), (1.0, 1.0));
    let text = metrics_text(proxy.admin).await;
    for kind in ["reset", "protocol", "other", "client_aborted"] {
        assert_eq!(metric(&text, &format!("tapedeck_upstream_errors_total{{kind=\"{kind}\"}}")), 0.0, "{kind}");
    }
    assert_eq!(metric(&text, "tapedeck_requests_total{class=\"5xx\"}"), 0.0);
    still_serves_and_counted(&proxy, "protocol", 0.0).await;
}

/// RFC 9113 §8.3.1: on HTTP/2 a `host` header naming another authority than `:authority`
/// makes the request malformed; the same name in another case is the same authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_whose_host_contradicts_their_authority_are_refused() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let h2 = h2c_client();
    let with_host =
        |host: &str| Request::get(proxy.url("/echo")).header("host", host).body(Full::new(Bytes::new())).unwrap();
    let (status, _, body) = send(&h2, with_host("evil.example")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(":authority"));
    let (status, headers, _) = send(&h2, with_host(&proxy.addr.to_string().to_uppercase())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["x-echo-host"].to_str().unwrap().eq_ignore_ascii_case(&proxy.addr.to_string()));
    let (status, _, _) = get(&h2, &proxy.url("/echo")).await;
    assert_eq!(status, StatusCode::OK);
    let captured = proxy.finish().await;
    assert_eq!(captured.len(), 2, "the refused request never reached the service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_reverse_proxy_must_not_forward_are_refused_not_passed_on() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let cases: [(&[u8], &str); 11] = [
        (b"GET /echo HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /echo HTTP/1.1\r\nHost: a:99999999\r\n\r\n", "HTTP/1.1 400"),
        (b"GET http://u:p@a/echo HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400"),
        (b"GET a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "HTTP/1.1 400"),
        (b"connect a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "HTTP/1.1 405"),
        // The absolute form's authority wins over Host.
        (
            b"GET http://wanted.example/echo HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
            "x-echo-host: wanted.example",
        ),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /echo HTTP/1.1\r\nHost: a\", for=1.2.3.4\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /echo HTTP/1.1\r\nHost: user@a\r\n\r\n", "HTTP/1.1 400"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "HTTP/1.1 405"),
        // HTTP/1.0 has no Host requirement.
        (b"GET /echo HTTP/1.0\r\n\r\n", "HTTP/1.0 200"),
    ];
    for (request, expected) in cases {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let (reply, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with(expected) || (expected.starts_with("x-") && reply.contains(expected)),
            "{:?}: {reply}",
            String::from_utf8_lossy(request)
        );
    }
    // None of the refused ones reached the service.
    let captured = proxy.captured();
    assert!(captured.iter().all(|e| e.request.method != "CONNECT"));
    let text = metrics_text(proxy.admin).await;
    assert_eq!(metric(&text, "tapedeck_requests_total{class=\"4xx\"}"), 9.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_upstream_timeout_is_not_a_slow_upstream() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| c.timeouts.upstream_response = Duration::from_millis(800)).await;
    // 300 KB at about 100 KB/s: three seconds of upload, steady.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..30 {
        s.write_all(&[b'u'; 10_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(10)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("\r\n\r\n300000 "), "{reply}");
    // An upstream that is slow once the body is in still times out.
    let started = Instant::now();
    let (status, _, _) = get(&client(), &proxy.url("/delay/3000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_after_an_early_answer_is_still_counted() {
    let (upstream, task) = early_answering_upstream().await;
    let proxy = TestProxy::start(&format!("http://{upstream}"), |c| {
        c.timeouts.body = Duration::from_millis(400);
        c.timeouts.body_min_rate = 0;
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reply = trickler(proxy.addr, "/early", 100, Duration::from_millis(50), stop).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&reply));
    let counted = wait_for_metric(proxy.admin, "tapedeck_client_errors_total{kind=\"body_timeout\"}", 1.0).await;
    assert_eq!(counted, 1.0, "the body timed out after the upstream had answered");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_http2_body_gets_a_408_too() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| {
        c.timeouts.body = Duration::from_millis(400);
        c.timeouts.body_min_rate = 0;
    })
    .await;
    // A byte every 50 ms for 2 s, over HTTP/2.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        for _ in 0..40 {
            if tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"a")))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let client: hyper_util::client::legacy::Client<_, http_body_util::StreamBody<ReceiverStream<_>>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let req =
        http::Request::post(proxy.url("/upload")).body(http_body_util::StreamBody::new(ReceiverStream(rx))).unwrap();
    let resp = client.request(req).await.expect("an answer, then RST_STREAM(NO_ERROR) for the rest of the body");
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    let counted = wait_for_metric(proxy.admin, "tapedeck_client_errors_total{kind=\"body_timeout\"}", 1.0).await;
    assert_eq!(counted, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_cuts_off_slow_heads_and_caps_its_connections() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |c| c.timeouts.header_read = Duration::from_millis(400)).await;
    // A half-sent request is closed at the header timeout, as on the main listener.
    let mut s = TcpStream::connect(proxy.admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    // 100 idle connections (a long header timeout this time): the 36 over the cap of 64
    // are closed at once; scrapes work again once the idle ones go.
    let proxy = TestProxy::start(&upstream.url(), |c| c.timeouts.header_read = Duration::from_secs(20)).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(proxy.admin).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the accept loop catches up
    let mut refused = 0;
    for s in &mut idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            refused += 1;
        }
    }
    // 36 over the cap; a busy machine may not have closed the last few yet.
    assert!((20..=36).contains(&refused), "connections over the cap are closed: {refused}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = metrics_text(proxy.admin).await;
    assert!(text.contains("tapedeck_requests_total"));
}
