//! Test fixtures for the proxy: real upstream servers on 127.0.0.1, a proxy in front of
//! them capturing into a temporary directory, and real HTTP clients.
#![allow(dead_code)]

pub mod grpc;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tapedeck_captures::tape::TapeReader;
use tapedeck_captures::Exchange;
use tapedeck_proxy::capture::CaptureConfig;
use tapedeck_proxy::config::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A scriptable upstream:
/// - `/echo`: 200 with the request's method, path and body echoed as text, and the
///   request headers returned as `x-echo-NAME` response headers;
/// - `/delay/MS`: waits MS milliseconds, then 200 `slept`;
/// - `/status/CODE`: that status;
/// - `/bytes/N`: N bytes streamed in 64 KiB chunks (no Content-Length);
/// - `/upload`: reads the body, answers with its length;
/// - `/drip/N`: N chunks of 1 KiB, 100 ms apart.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(text.into()).boxed());
    *r.status_mut() = status;
    r
}

async fn route(req: Request<Incoming>) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match head {
        "echo" => {
            let method = req.method().to_string();
            let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let mut headers = req.headers().clone();
            // HTTP/2 carries the host as :authority: echoed as `x-echo-host` all the same.
            if let Some(a) = req.uri().authority().filter(|_| !headers.contains_key(http::header::HOST)) {
                headers.insert(http::header::HOST, a.as_str().parse().unwrap());
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut text = format!("{method} {target}\n").into_bytes();
            text.extend_from_slice(&body);
            let mut r = full(StatusCode::OK, text);
            for (name, value) in &headers {
                if let Ok(n) = http::HeaderName::from_bytes(format!("x-echo-{name}").as_bytes()) {
                    r.headers_mut().append(n, value.clone());
                }
            }
            r
        }
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            full(StatusCode::OK, "slept")
        }
        "status" => full(
            StatusCode::from_u16(arg.parse().unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "status",
        ),
        "bytes" => {
            let total: usize = arg.parse().unwrap_or(0);
            let chunks = (0..total.div_ceil(65536)).map(move |i| {
                let n = (total - i * 65536).min(65536);
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![(i % 251) as u8; n])))
            });
            Response::new(StreamBody::new(iter_stream(chunks)).boxed())
        }
        "upload" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            let mut sum = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    n += d.len();
                    sum = d.iter().fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
                }
            }
            full(StatusCode::OK, format!("{n} {sum}"))
        }
        "drip" => {
            let n: usize = arg.parse().unwrap_or(10);
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                for _ in 0..n {
                    if tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            Response::new(StreamBody::new(ReceiverStream(rx)).boxed())
        }
        _ => full(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// A stream over an iterator (avoids a futures dependency).
pub fn iter_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::serve(None).await
    }

    /// The same routes over TLS with `cert`/`key` (PEM files), offering h2 by ALPN when
    /// `h2` is set.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path, h2: bool) -> Upstream {
        let files = tapedeck_proxy::config::TlsFiles { cert: cert.into(), key: key.into() };
        let mut config = (*tapedeck_proxy::tls::server_config(&files).unwrap()).clone();
        if !h2 {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Upstream::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(|req| async move { Ok::<_, Infallible>(route(req).await) });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else { return };
                            builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await
                        }
                    };
                });
            }
        });
        Upstream { addr, connections, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// An upstream that answers every request with the exact bytes of its head, so tests can
/// see header case, order and repeats as they arrived. `/close` closes without answering;
/// `/upgrade` answers 101 and then echoes bytes.
pub struct RawUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    loop {
                        let Some(head) = read_head(&mut stream).await else { return };
                        let text = String::from_utf8_lossy(&head).to_string();
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.split_once(':')
                                    .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                                    .map(|(_, v)| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        let mut body = vec![0; len];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if text.starts_with("GET /close") {
                            return;
                        }
                        if text.starts_with("GET /upgrade") {
                            let _ = stream
                                .write_all(
                                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
                                )
                                .await;
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = stream.read(&mut buf).await {
                                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n",
                            head.len()
                        );
                        if stream.write_all(reply.as_bytes()).await.is_err() || stream.write_all(&head).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one request or response head (up to and including the blank line).
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 1 << 20 {
            return None;
        }
    }
    Some(head)
}

/// A proxy with capture into a temporary directory.
pub struct TestProxy {
    pub proxy: Option<tapedeck_proxy::Proxy>,
    /// The proxy's metrics; still readable after `finish`.
    pub metrics: Arc<tapedeck_proxy::metrics::Metrics>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestProxy {
    /// Starts a proxy to `upstream`; `tune` adjusts the config before start.
    pub async fn start(upstream: &str, tune: impl FnOnce(&mut ProxyConfig)) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), upstream.parse().unwrap());
        config.admin = Some("127.0.0.1:0".parse().unwrap());
        let mut capture = CaptureConfig::new(dir.path().join("tapes"));
        capture.writer.instance = "test".into();
        config.capture = Some(capture);
        tune(&mut config);
        let proxy = tapedeck_proxy::start(config).await.expect("proxy starts");
        let addr = proxy.local_addr();
        let admin = proxy.admin_addr().unwrap();
        let metrics = proxy.metrics().clone();
        TestProxy { proxy: Some(proxy), metrics, addr, admin, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts the proxy down and returns everything it captured, in start order.
    pub async fn finish(&mut self) -> Vec<Exchange> {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
        self.captured()
    }

    /// What is on disk now.
    pub fn captured(&self) -> Vec<Exchange> {
        let tapes = self.dir.path().join("tapes");
        match TapeReader::open(&[&tapes]) {
            Ok(r) => r.collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn tape_dir(&self) -> PathBuf {
        self.dir.path().join("tapes")
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client with keep-alive.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// Sends a request and reads the whole response.
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
    let resp = client.request(req).await.expect("request succeeds");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

pub async fn get(client: &HttpClient, url: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    send(client, Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

/// Fetches the admin `/metrics` text.
pub async fn metrics_text(admin: SocketAddr) -> String {
    let (_, _, body) = get(&client(), &format!("http://{admin}/metrics")).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of one metric line (exact name with labels).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

/// Waits (up to 5 s) for a metric to reach `at_least`; returns its value. Connection
/// errors are counted just after the connection closes, so a client that saw the close
/// may read the counter a moment before it moves.
pub async fn wait_for_metric(admin: SocketAddr, name: &str, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics_text(admin).await;
        let value = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0);
        if value >= at_least || std::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A self-signed certificate for `name` (and 127.0.0.1) and its key, written into `dir`.
pub fn write_certs(
    dir: &std::path::Path,
    name: &str,
) -> (tapedeck_proxy::config::TlsFiles, rustls::pki_types::CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (tapedeck_proxy::config::TlsFiles { cert, key }, ck.cert.der().clone())
}
