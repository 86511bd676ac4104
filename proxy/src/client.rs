//! The upstream connection pool: keep-alive HTTP/1.1 connections, and one multiplexed
//! HTTP/2 connection (an https upstream that offers h2 by ALPN takes every request on it;
//! a plaintext one speaks h2c, with prior knowledge, for the requests that need HTTP/2:
//! gRPC), owned by one worker.
//!
//! Each worker thread has its own pool, so taking and returning a connection is an
//! uncontended lock, and the connection's task runs on the same thread as the request
//! that uses it. An HTTP/1.1 connection goes back to the pool when the proxy has seen the
//! end of its response body ([`Lease::release`]); a request handed back unsent by a
//! connection that turned out to be closed (an upstream keep-alive timeout racing our
//! reuse) is retried on another connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tapedeck_captures::ErrorKind;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client_body::{BodyState, ClientBody};
use crate::config::{ProxyConfig, UpstreamProtocol};
use crate::tee::TeeBody;
use crate::upstream::Upstream;
use crate::ProxyError;

/// Body type of requests sent upstream.
pub type UpBody = TeeBody<ClientBody<Incoming>>;

/// Why an upstream request failed.
#[derive(Debug)]
pub struct UpstreamError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Details for logs.
    pub detail: String,
}

impl UpstreamError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        UpstreamError { kind, detail: detail.into() }
    }

    fn request(e: hyper::Error) -> Self {
        let kind = if e.is_timeout() {
            ErrorKind::ResponseTimeout
        } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            ErrorKind::Protocol
        } else {
            // Closed, incomplete, canceled, or an I/O error on the connection.
            ErrorKind::Reset
        };
        UpstreamError::new(kind, e.to_string())
    }
}

struct Idle {
    tx: http1::SendRequest<UpBody>,
    since: Instant,
}

/// One worker's connections to the upstream.
pub struct UpstreamPool {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The same TLS offering HTTP/1.1 only: an upgrade (WebSocket) needs it, HTTP/2 has
    /// no `Upgrade`.
    tls_http1: Option<TlsConnector>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    preserve_header_case: bool,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<UpBody>>>,
    /// Held while an h2c connection is being made, so that concurrent requests share it.
    h2c_connecting: tokio::sync::Mutex<()>,
}

enum Conn {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

/// An HTTP/1.1 connection in use; goes back to the pool on [`release`](Lease::release).
/// Dropped without release (an aborted body, an upgrade), the connection is not reused.
pub struct Lease {
    tx: Option<http1::SendRequest<UpBody>>,
    pool: Arc<UpstreamPool>,
    request: Option<Arc<BodyState>>,
}

impl Lease {
    /// The connection is reusable only once `request`'s body has been sent whole.
    pub fn after_body(mut self, request: Arc<BodyState>) -> Self {
        self.request = Some(request);
        self
    }

    /// Returns the connection to the pool: its response body was read to the end. If the
    /// request body is still on its way (the upstream answered before reading it all),
    /// the connection is closed instead: the next request would wait behind that body.
    pub fn release(mut self) {
        if self.request.as_ref().is_some_and(|r| !r.sent()) {
            return;
        }
        if let Some(tx) = self.tx.take() {
            self.pool.put(tx);
        }
    }
}

impl UpstreamPool {
    /// A pool for `upstream`, with TLS settings from `config`.
    pub fn new(upstream: &Upstream, config: &ProxyConfig) -> Result<Self, ProxyError> {
        let host = upstream.host().to_string();
        let tls = if upstream.is_https() {
            let mut tls = crate::tls::client_config(config.upstream_ca.as_deref())?;
            tls.alpn_protocols =
                match config.upstream_protocol {
                    UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                    UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
                    UpstreamProtocol::H2c => return Err(ProxyError::Config(
                        "--upstream-protocol h2c is HTTP/2 over plaintext; an https upstream negotiates h2 by ALPN \
                         (use auto)"
                            .into(),
                    )),
                };
            let name =
                ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string()).map_err(|e| {
                    ProxyError::Config(format!("upstream host {host:?} is not a valid TLS server name: {e}"))
                })?;
            let mut http1_only = tls.clone();
            http1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some((TlsConnector::from(Arc::new(tls)), name, TlsConnector::from(Arc::new(http1_only))))
        } else {
            None
        };
        let (tls, tls_http1) = match tls {
            Some((connector, name, http1)) => (Some((connector, name)), Some(http1)),
            None => (None, None),
        };
        Ok(UpstreamPool {
            host,
            port: upstream.port(),
            tls,
            tls_http1,
            connect_timeout: config.timeouts.upstream_connect,
            idle_timeout: Duration::from_secs(90),
            max_idle: 1024,
            preserve_header_case: config.forwarding.preserve_header_case,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2c_connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn put(&self, tx: http1::SendRequest<UpBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle { tx, since: Instant::now() });
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<UpBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.tx.is_closed() && conn.since.elapsed() < self.idle_timeout {
                return Some(conn.tx);
            }
        }
        None
    }

    fn h2_sender(&self) -> Option<http2::SendRequest<UpBody>> {
        let mut slot = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// The h2c connection, made (once, however many requests wait for it) if there is
    /// none or it closed.
    async fn h2c_sender(&self) -> Result<http2::SendRequest<UpBody>, UpstreamError> {
        if let Some(tx) = self.h2_sender() {
            return Ok(tx);
        }
        let _connecting = self.h2c_connecting.lock().await;
        if let Some(tx) = self.h2_sender() {
            return Ok(tx);
        }
        let tx = self.http2(self.tcp().await?).await?;
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
        Ok(tx)
    }

    /// Sends `req`, on an idle connection if there is one. HTTP/1.1 responses come with
    /// the lease of their connection. `h2c`: a plaintext upstream gets this request over
    /// HTTP/2 with prior knowledge.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpBody>,
        h2c: bool,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        if self.tls.is_none() && h2c {
            h2_form(&mut req);
            // A connection that closed between the check and the send hands the request
            // back: once more on a new one.
            let mut h2 = Box::pin(self.h2c_sender()).await?;
            let req = match h2.try_send_request(req).await {
                Ok(resp) => return Ok((resp, None)),
                Err(mut e) => e.take_message().ok_or_else(|| UpstreamError::request(e.into_error()))?,
            };
            let mut h2 = Box::pin(self.h2c_sender()).await?;
            return h2.send_request(req).await.map(|resp| (resp, None)).map_err(UpstreamError::request);
        }
        if self.tls.is_some() {
            if let Some(mut h2) = self.h2_sender() {
                let mut h2_req = req;
                h2_form(&mut h2_req);
                match h2.try_send_request(h2_req).await {
                    Ok(resp) => return Ok((resp, None)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = h1_form(unsent),
                        None => return Err(UpstreamError::request(e.into_error())),
                    },
                }
            } else {
                req = h1_form(req);
            }
        }
        // HTTP/1.1 requests go out in origin form (`GET /path HTTP/1.1`); HTTP/2 needs the
        // absolute form for its :scheme and :authority.
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let absolute = std::mem::replace(req.uri_mut(), http::Uri::from(pq));
        // Idle connections first; a stale one hands the request back and we try the next.
        while let Some(mut tx) = self.take_idle() {
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(Lease { tx: Some(tx), pool: self.clone(), request: None }))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::request(e.into_error())),
                },
            }
        }
        // Boxed, as the h2c path above: connecting (TLS, handshakes) is a large future that
        // would otherwise be copied with every request's state, connected or not.
        match Box::pin(self.connect()).await? {
            Conn::H1(mut tx) => match tx.send_request(req).await {
                Ok(resp) => Ok((resp, Some(Lease { tx: Some(tx), pool: self.clone(), request: None }))),
                Err(e) => Err(UpstreamError::request(e)),
            },
            Conn::H2(mut tx) => {
                *req.uri_mut() = absolute;
                h2_form(&mut req);
                *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
                tx.send_request(req).await.map(|resp| (resp, None)).map_err(UpstreamError::request)
            }
        }
    }

    /// Sends an upgrade request (WebSocket …) over HTTP/1.1 whatever the upstream offers by
    /// ALPN, on a connection of its own (an accepted upgrade takes it over).
    pub async fn send_upgrade(
        self: &Arc<Self>,
        req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        let (Some(connector), Some((_, name))) = (&self.tls_http1, &self.tls) else {
            // Plaintext: HTTP/1.1 anyway.
            return self.send(req, false).await;
        };
        let mut req = h1_form(req);
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(pq);
        let stream = self.tcp().await?;
        let tls = self.handshake(connector, name, stream).await?;
        let Conn::H1(mut tx) = self.http1(tls).await? else {
            return Err(UpstreamError::new(ErrorKind::Protocol, "an HTTP/1.1 connection came up as HTTP/2"));
        };
        match tx.send_request(req).await {
            Ok(resp) => Ok((resp, Some(Lease { tx: Some(tx), pool: self.clone(), request: None }))),
            Err(e) => Err(UpstreamError::request(e)),
        }
    }

    /// The TLS handshake with the upstream, within the connect timeout.
    async fn handshake(
        &self,
        connector: &TlsConnector,
        name: &ServerName<'static>,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, connector.connect(name.clone(), stream))
            .await
            .map_err(|_| UpstreamError::new(ErrorKind::ConnectTimeout, "TLS handshake with the upstream timed out"))?
            .map_err(|e| UpstreamError::new(ErrorKind::Tls, format!("TLS handshake with the upstream: {e}")))
    }

    async fn tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| UpstreamError::new(ErrorKind::Dns, format!("resolving {}: {e}", self.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(UpstreamError::new(ErrorKind::Dns, format!("{} has no addresses", self.host)));
        }
        let mut last = UpstreamError::new(ErrorKind::ConnectRefused, "no address tried");
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = UpstreamError::new(ErrorKind::of_io(&e), format!("connecting to {addr}: {e}")),
                Err(_) => {
                    last = UpstreamError::new(ErrorKind::ConnectTimeout, format!("connecting to {addr}: timed out"))
                }
            }
        }
        let stream = stream.ok_or(last)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let stream = self.tcp().await?;
        match &self.tls {
            None => self.http1(stream).await,
            Some((connector, name)) => {
                let tls = self.handshake(connector, name, stream).await?;
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Ok(Conn::H2(self.http2(tls).await?))
                } else {
                    self.http1(tls).await
                }
            }
        }
    }

    async fn http2<T>(&self, io: T) -> Result<http2::SendRequest<UpBody>, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(io))
            .await
            .map_err(UpstreamError::request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        Ok(tx)
    }

    async fn http1<T>(&self, io: T) -> Result<Conn, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = http1::Builder::new()
            .preserve_header_case(self.preserve_header_case)
            .handshake(TokioIo::new(io))
            .await
            .map_err(UpstreamError::request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Conn::H1(tx))
    }
}

/// An HTTP/2 request carries its host as `:authority`: the `Host` the proxy decided on
/// becomes the URI's authority (an h2 server must refuse a `host` that differs from it,
/// RFC 9113 §8.3.1), and the field itself is dropped.
fn h2_form(req: &mut Request<UpBody>) {
    let Some(host) = req.headers_mut().remove(http::header::HOST) else { return };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if let Ok(authority) = http::uri::Authority::try_from(host.as_bytes()) {
        parts.authority = Some(authority);
    }
    if parts.scheme.is_none() {
        parts.scheme = Some(http::uri::Scheme::HTTP);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
}

/// An HTTP/2 request handed back unsent, for HTTP/1.1: its authority becomes `Host` again.
fn h1_form(mut req: Request<UpBody>) -> Request<UpBody> {
    if let Some(host) = req.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()) {
        req.headers_mut().entry(http::header::HOST).or_insert(host);
    }
    req
}
