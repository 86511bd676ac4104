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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tapedeck_captures::ErrorKind;
use tapedeck_net::connect::{Connected, Connector};
use tapedeck_net::tls::{Alpn, Trust};
use tapedeck_net::NetError;

use crate::client_body::{BodyState, ClientBody};
use crate::config::{ProxyConfig, UpstreamProtocol};
use crate::tee::TeeBody;
use crate::upstream::Upstream;
use crate::ProxyError;

/// Body type of requests sent upstream.
pub type UpBody = TeeBody<ClientBody<Incoming>>;

/// Why an upstream request failed: its kind, what was being done, and the cause.
pub type UpstreamError = NetError;

struct Idle {
    tx: http1::SendRequest<UpBody>,
    since: Instant,
}

/// One worker's connections to the upstream.
pub struct UpstreamPool {
    connector: Connector,
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
        let (host, port, timeout) = (upstream.host(), upstream.port(), config.timeouts.upstream_connect);
        let connector = if upstream.is_https() {
            let alpn =
                match config.upstream_protocol {
                    UpstreamProtocol::Auto => Alpn::H2OrHttp1,
                    UpstreamProtocol::Http1 => Alpn::Http1,
                    UpstreamProtocol::H2c => return Err(ProxyError::Config(
                        "--upstream-protocol h2c is HTTP/2 over plaintext; an https upstream negotiates h2 by ALPN \
                         (use auto)"
                            .into(),
                    )),
                };
            let trust = config.upstream_ca.as_deref().map_or(Trust::System, Trust::CaFile);
            let tls = tapedeck_net::tls::client_config(trust, alpn)
                .map_err(|source| ProxyError::Tls { what: "--upstream-ca", source })?;
            Connector::tls(host, port, timeout, Arc::new(tls))
                .map_err(|source| ProxyError::Tls { what: "--upstream", source })?
        } else {
            Connector::plain(host, port, timeout)
        };
        Ok(UpstreamPool {
            connector,
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
        let tx = self.http2(self.connector.tcp().await?).await?;
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
        if !self.connector.is_tls() && h2c {
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
        if self.connector.is_tls() {
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
        if !self.connector.is_tls() {
            // Plaintext: HTTP/1.1 anyway.
            return self.send(req, false).await;
        }
        let mut req = h1_form(req);
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(pq);
        let conn = match self.connector.connect(Alpn::Http1).await? {
            Connected::Plain(tcp) => self.http1(tcp).await?,
            Connected::Tls(tls) => self.http1(tls).await?,
        };
        let Conn::H1(mut tx) = conn else {
            return Err(NetError::bare(ErrorKind::Protocol, "an HTTP/1.1 connection came up as HTTP/2"));
        };
        match tx.send_request(req).await {
            Ok(resp) => Ok((resp, Some(Lease { tx: Some(tx), pool: self.clone(), request: None }))),
            Err(e) => Err(UpstreamError::request(e)),
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let conn = self.connector.connect(Alpn::H2OrHttp1).await?;
        let h2 = conn.is_h2();
        match conn {
            Connected::Plain(tcp) => self.http1(tcp).await,
            Connected::Tls(tls) if h2 => Ok(Conn::H2(self.http2(tls).await?)),
            Connected::Tls(tls) => self.http1(tls).await,
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
