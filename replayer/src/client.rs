//! The replayer's HTTP client: one pool per worker thread, HTTP/1.1 keep-alive connections
//! (at most `--connections` per worker's share) and one multiplexed HTTP/2 connection when
//! an https target offers h2 by ALPN. Records every outcome: status, headers, body up to a
//! limit, time to the response head and to its last byte, or why there was none.
//!
//! A request with no idle connection queues for the next free one, and the pool opens
//! connections in the background while requests queue — a few at a time, never more than
//! requests waiting. Opening one per request instead turns a burst into a connect storm
//! that stalls the schedule for ~100 ms (measured at 20k requests/s).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tapedeck_captures::ErrorKind;
use tapedeck_net::connect::{Connected, Connector};
use tapedeck_net::error::{body_kind, request_kind};
use tapedeck_net::tls::{Alpn, TlsError, Trust};
use tapedeck_net::NetError;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::paced::{MessagePace, PacedBody};
use crate::websocket::WsPlan;

/// How a request turned out.
#[derive(Debug)]
pub struct Outcome {
    /// When the request was handed to a connection.
    pub sent_at: Instant,
    /// The response status, if a head arrived.
    pub status: Option<StatusCode>,
    /// The response's version.
    pub version: Version,
    /// The response's headers.
    pub headers: HeaderMap,
    /// The first bytes of the body.
    pub body: Bytes,
    /// The body's full length.
    pub body_len: u64,
    /// Time from sending to the response head.
    pub head: Option<Duration>,
    /// Time from sending to the last body byte.
    pub end: Option<Duration>,
    /// Why there was no (complete) response.
    pub error: Option<ErrorKind>,
    /// The trailer fields that ended the body (gRPC's status).
    pub trailers: HeaderMap,
    /// A WebSocket upgrade's session, as both sides sent it.
    pub websocket: Option<tapedeck_captures::websocket::WebSocket>,
    /// gRPC: when each message of the answer was complete, ns after the request was sent.
    pub message_ns: Vec<u64>,
}

impl Outcome {
    /// The gRPC status of a complete gRPC answer (trailers, or a trailers-only head).
    pub fn grpc_status(&self) -> Option<u32> {
        if self.error.is_some() {
            return None;
        }
        let value = self.trailers.get("grpc-status").or_else(|| self.headers.get("grpc-status"))?;
        value.to_str().ok()?.trim().parse().ok()
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Per-request timeout (connect, head and body).
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// HTTP/1.1 connections per worker at most.
    pub connections: usize,
    /// Response body bytes kept per response.
    pub max_body: usize,
    /// Accept any certificate (self-signed staging).
    pub insecure: bool,
    /// CA certificates (PEM) to trust instead of the system's.
    pub ca: Option<std::path::PathBuf>,
    /// One target connection per recorded HTTP/1 connection, reused for its requests only
    /// (the recorded connection pattern), instead of a shared pool.
    pub as_recorded: bool,
}

struct Idle {
    tx: http1::SendRequest<Full<Bytes>>,
    /// Counts the connection against the cap until it is dropped.
    _permit: OwnedSemaphorePermit,
}

/// What a queued request is told.
enum Handed {
    /// A free HTTP/1.1 connection.
    Conn(Idle),
    /// An HTTP/2 connection is up: look again.
    Retry,
    /// Connecting failed.
    Failed(ErrorKind),
}

/// Connects opened at once at most, per worker.
const MAX_CONNECTING: usize = 8;

/// One worker's connections to the target (cheap to clone: shared state).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    config: ClientConfig,
    state: Mutex<PoolState>,
    h2: Mutex<Option<http2::SendRequest<PacedBody>>>,
    /// A plaintext target's HTTP/2 connection (prior knowledge), for gRPC; held while made.
    h2c: tokio::sync::Mutex<Option<http2::SendRequest<PacedBody>>>,
    permits: Arc<Semaphore>,
    /// Where the first cause of each error kind is kept for the report.
    progress: Arc<crate::progress::Progress>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Idle>,
    /// With `as_recorded`: the connection of each recorded connection, and when it was
    /// last used.
    dedicated: HashMap<u64, (Idle, Instant)>,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Handed>>,
    /// Connects under way.
    connecting: usize,
}

impl PoolState {
    /// Gives `handed` to the oldest request still waiting; hands it back if none is.
    fn hand(&mut self, mut handed: Handed) -> Option<Handed> {
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.send(handed) {
                Ok(()) => return None,
                Err(back) => handed = back,
            }
        }
        Some(handed)
    }

    fn live_waiters(&mut self) -> usize {
        self.waiters.retain(|w| !w.is_closed());
        self.waiters.len()
    }
}

/// TLS settings for the target (`--ca`, `--insecure`), offering h2 and HTTP/1.1.
pub fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig, TlsError> {
    let trust = match (&config.ca, config.insecure) {
        (_, true) => Trust::AnyCertificate,
        (Some(ca), false) => Trust::CaFile(ca),
        (None, false) => Trust::System,
    };
    tapedeck_net::tls::client_config(trust, Alpn::H2OrHttp1)
}

impl Pool {
    /// A pool for `host:port` (TLS when `tls` is given).
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
        config: ClientConfig,
        progress: Arc<crate::progress::Progress>,
    ) -> Result<Pool, TlsError> {
        let timeout = config.connect_timeout;
        let connector = match tls {
            Some(tls) => Connector::tls(host, port, timeout, tls)?,
            None => Connector::plain(host, port, timeout),
        };
        let permits = Arc::new(Semaphore::new(config.connections.max(1)));
        let inner = Inner {
            connector,
            config,
            state: Mutex::new(PoolState::default()),
            h2: Mutex::new(None),
            h2c: tokio::sync::Mutex::new(None),
            permits,
            progress,
        };
        Ok(Pool { inner: Arc::new(inner) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` (recorded on connection `recorded`, 0 if unknown) and reads its response
    /// within the request timeout.
    pub async fn send(&self, req: Request<Full<Bytes>>, recorded: u64) -> Outcome {
        let started = Instant::now();
        // A paced stream's own length is not the target's slowness.
        let websocket = req.extensions().get::<Arc<WsPlan>>().cloned();
        let pace = match &websocket {
            Some(plan) => plan.span(),
            None => req.extensions().get::<MessagePace>().map_or(Duration::ZERO, MessagePace::span),
        };
        let exchange = async {
            if let Some(plan) = websocket {
                Box::pin(self.exchange_websocket(req, plan)).await
            } else if !self.inner.connector.is_tls() && is_grpc(req.headers()) {
                // gRPC needs HTTP/2: a plaintext target speaks it with prior knowledge.
                self.exchange_h2c(req).await
            } else if self.inner.config.as_recorded
                && recorded != 0
                && self.inner.h2.lock().unwrap_or_else(|p| p.into_inner()).is_none()
            {
                self.exchange_dedicated(req, recorded).await
            } else {
                self.exchange(req).await
            }
        };
        match tokio::time::timeout(self.inner.config.timeout + pace, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(started, ErrorKind::ResponseTimeout),
        }
    }

    async fn exchange(&self, mut req: Request<Full<Bytes>>) -> Outcome {
        let started = Instant::now();
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let absolute = std::mem::replace(req.uri_mut(), http::Uri::from(pq));
        loop {
            let h2 = self.inner.h2.lock().unwrap_or_else(|p| p.into_inner()).clone().filter(|tx| !tx.is_closed());
            if let Some(mut tx) = h2 {
                *req.uri_mut() = absolute;
                let req = paced(req).await;
                let sent_at = Instant::now();
                on_wire(&req);
                let head = req.method() == http::Method::HEAD;
                return match tx.send_request(req).await {
                    Ok(resp) => self.read(sent_at, resp, None, head).await,
                    Err(e) => Outcome::failed(sent_at, request_kind(&e)),
                };
            }
            let idle = self.state().idle.pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => match self.wait_for_connection().await {
                    Handed::Conn(conn) => conn,
                    Handed::Retry => continue,
                    Handed::Failed(kind) => return Outcome::failed(started, kind),
                },
            };
            // A stale connection hands the request back; try the next.
            if conn.tx.ready().await.is_err() {
                continue;
            }
            let sent_at = Instant::now();
            on_wire(&req);
            let head = req.method() == http::Method::HEAD;
            // A request the connection did not take (closed before it went out) goes on
            // another. One that went out and met a reset is the target's error, counted
            // against it: retrying it would hide a target that drops requests.
            match conn.tx.try_send_request(req).await {
                Ok(resp) => return self.read(sent_at, resp, Some(conn), head).await,
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Outcome::failed(sent_at, request_kind(&e.into_error())),
                },
            }
        }
    }

    /// A WebSocket upgrade, on a connection of its own (HTTP/1.1: the upgrade takes it
    /// over), then the recorded session played on it.
    async fn exchange_websocket(&self, req: Request<Full<Bytes>>, plan: Arc<WsPlan>) -> Outcome {
        let started = Instant::now();
        match self.inner.connector.connect(Alpn::Http1).await {
            Ok(Connected::Plain(tcp)) => self.upgrade(tcp, req, &plan).await,
            Ok(Connected::Tls(tls)) => self.upgrade(tls, req, &plan).await,
            Err(e) => Outcome::failed(started, self.failed(e)),
        }
    }

    async fn upgrade<T>(&self, io: T, mut req: Request<Full<Bytes>>, plan: &WsPlan) -> Outcome
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let started = Instant::now();
        let (mut tx, conn) = match http1::handshake(TokioIo::new(io)).await {
            Ok(c) => c,
            Err(e) => return Outcome::failed(started, request_kind(&e)),
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(pq);
        // A key of our own: the recorded one was for the recorded connection.
        let key = crate::websocket::new_key();
        let headers = req.headers_mut();
        headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        headers.insert(http::header::SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
        if let Ok(v) = http::HeaderValue::from_str(&key) {
            headers.insert(http::header::SEC_WEBSOCKET_KEY, v);
        }
        let sent_at = Instant::now();
        on_wire(&req);
        let mut resp = match tx.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => return Outcome::failed(sent_at, request_kind(&e)),
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Refused: an answer like any other (its status is the difference).
            return self.read_body(sent_at, resp, None, false).await.0;
        }
        let head = sent_at.elapsed();
        // RFC 6455 §4.1: a client fails the connection unless the answer says `Upgrade:
        // websocket`, `Connection: Upgrade` and the accept value its key asks for.
        let h = resp.headers();
        let has_token = |name: http::header::HeaderName, token: &str| {
            h.get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
        };
        let accepted = h
            .get(http::header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == crate::websocket::accept_for(&key).as_bytes())
            && has_token(http::header::UPGRADE, "websocket")
            && has_token(http::header::CONNECTION, "upgrade");
        let deflate = resp
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .any(|v| v.to_str().is_ok_and(tapedeck_captures::websocket::deflate_accepted));
        let upgraded = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        let mut outcome = Outcome {
            sent_at,
            status: Some(parts.status),
            version: parts.version,
            headers: parts.headers,
            body: Bytes::new(),
            body_len: 0,
            head: Some(head),
            // The handshake's time, as the capture measures it (the session's length is
            // the session's).
            end: Some(head),
            error: None,
            trailers: HeaderMap::new(),
            websocket: None,
            message_ns: Vec::new(),
        };
        if !accepted {
            self.inner.progress.note_cause(ErrorKind::Protocol, || {
                "the target answered a WebSocket upgrade 101 without `Upgrade: websocket`, `Connection: Upgrade` and the right Sec-WebSocket-Accept".to_string()
            });
            outcome.error = Some(ErrorKind::Protocol);
            return outcome;
        }
        match upgraded.await {
            Ok(io) => {
                let start = tokio::time::Instant::from_std(sent_at);
                let ws = crate::websocket::play(TokioIo::new(io), plan, deflate, start, self.inner.config.max_body);
                outcome.websocket = Some(ws.await);
            }
            Err(e) => outcome.error = Some(request_kind(&e)),
        }
        outcome
    }

    /// A gRPC request to a plaintext target, on the h2c connection (made once, remade when
    /// it closed).
    async fn exchange_h2c(&self, mut req: Request<Full<Bytes>>) -> Outcome {
        let started = Instant::now();
        let tx = {
            let mut slot = self.inner.h2c.lock().await;
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let made = match self.inner.connector.tcp().await.map_err(|e| self.failed(e)) {
                        Ok(stream) => http2_conn(stream).await,
                        Err(kind) => Err(kind),
                    };
                    match made {
                        Ok(tx) => slot.insert(tx).clone(),
                        Err(kind) => return Outcome::failed(started, kind),
                    }
                }
            }
        };
        // HTTP/2 carries the host as :authority.
        if let Some(host) = req.headers_mut().remove(http::header::HOST) {
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.authority = http::uri::Authority::try_from(host.as_bytes()).ok().or(parts.authority);
            *req.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
        }
        let req = paced(req).await;
        let mut tx = tx;
        let sent_at = Instant::now();
        on_wire(&req);
        let head = req.method() == http::Method::HEAD;
        match tx.send_request(req).await {
            Ok(resp) => self.read(sent_at, resp, None, head).await,
            Err(e) => Outcome::failed(sent_at, request_kind(&e)),
        }
    }

    /// `--connections as-recorded`: the request goes on its recorded connection's own
    /// target connection, opened on first use. At the connection cap, the longest idle
    /// one is closed to make room.
    async fn exchange_dedicated(&self, mut req: Request<Full<Bytes>>, recorded: u64) -> Outcome {
        let started = Instant::now();
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(pq);
        let mut kept = self.state().dedicated.remove(&recorded).map(|(conn, _)| conn);
        if let Some(conn) = kept.as_mut() {
            if conn.tx.ready().await.is_err() {
                kept = None;
            }
        }
        let mut conn = match kept {
            Some(conn) => conn,
            None => {
                // Finished requests keep their connections (and permits) for their recorded
                // connection; at the cap, close the longest idle to make room.
                let permit = loop {
                    if let Ok(p) = self.inner.permits.clone().try_acquire_owned() {
                        break p;
                    }
                    let oldest = {
                        let mut state = self.state();
                        let key = state.dedicated.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k);
                        key.and_then(|k| state.dedicated.remove(&k))
                    };
                    if oldest.is_none() {
                        // All in use: wait for one to finish.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                };
                match Box::pin(self.connect()).await {
                    Ok(Conn::H1(tx)) => Idle { tx, _permit: permit },
                    Ok(Conn::H2(tx)) => {
                        // The target multiplexes: every request shares the h2 connection.
                        *self.inner.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
                        return self.exchange(req).await;
                    }
                    Err(kind) => return Outcome::failed(started, kind),
                }
            }
        };
        let sent_at = Instant::now();
        on_wire(&req);
        let head = req.method() == http::Method::HEAD;
        match conn.tx.send_request(req).await {
            Ok(resp) => {
                let (outcome, conn) = self.read_body(sent_at, resp, Some(conn), head).await;
                if let Some(conn) = conn {
                    self.state().dedicated.insert(recorded, (conn, Instant::now()));
                }
                outcome
            }
            Err(e) => Outcome::failed(sent_at, request_kind(&e)),
        }
    }

    /// Queues for the next free connection, opening another if fewer are being opened
    /// than requests wait.
    async fn wait_for_connection(&self) -> Handed {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state();
            state.waiters.push_back(tx);
            self.open_for_waiters(&mut state);
        }
        rx.await.unwrap_or(Handed::Failed(ErrorKind::Other))
    }

    /// Starts connects while fewer are under way than requests wait (up to a few).
    fn open_for_waiters(&self, state: &mut PoolState) {
        while state.connecting < MAX_CONNECTING.min(state.live_waiters()) {
            state.connecting += 1;
            tokio::spawn(self.clone().open());
        }
    }

    /// Opens a connection in the background and hands it to the oldest waiting request.
    fn open(self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.open_inner().await })
    }

    async fn open_inner(&self) {
        let outcome = match self.inner.permits.clone().acquire_owned().await {
            Ok(permit) => match Box::pin(self.connect()).await {
                Ok(Conn::H1(tx)) => Handed::Conn(Idle { tx, _permit: permit }),
                Ok(Conn::H2(tx)) => {
                    *self.inner.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
                    Handed::Retry
                }
                Err(kind) => Handed::Failed(kind),
            },
            Err(_) => Handed::Failed(ErrorKind::Other),
        };
        let mut state = self.state();
        state.connecting -= 1;
        match outcome {
            // Every waiting request can use the multiplexed connection.
            Handed::Retry => {
                for waiter in state.waiters.drain(..) {
                    let _ = waiter.send(Handed::Retry);
                }
            }
            handed => {
                if let Some(Handed::Conn(idle)) = state.hand(handed) {
                    state.idle.push(idle);
                }
            }
        }
        // Keep opening while requests still wait.
        self.open_for_waiters(&mut state);
    }

    /// A connection is free again: to the oldest waiting request, or the idle list.
    fn check_in(&self, conn: Idle) {
        let mut state = self.state();
        if let Some(Handed::Conn(idle)) = state.hand(Handed::Conn(conn)) {
            state.idle.push(idle);
        }
    }

    /// Reads the response body; returns the connection to the pool if it ended cleanly.
    async fn read(
        &self,
        sent_at: Instant,
        resp: http::Response<hyper::body::Incoming>,
        conn: Option<Idle>,
        head_request: bool,
    ) -> Outcome {
        let (outcome, conn) = self.read_body(sent_at, resp, conn, head_request).await;
        if let Some(conn) = conn {
            self.check_in(conn);
        }
        outcome
    }

    /// Reads the response body (keeping up to `max_body` bytes); gives the connection back
    /// if the body ended cleanly.
    async fn read_body(
        &self,
        sent_at: Instant,
        resp: http::Response<hyper::body::Incoming>,
        conn: Option<Idle>,
        head_request: bool,
    ) -> (Outcome, Option<Idle>) {
        let head = sent_at.elapsed();
        let (parts, mut body) = resp.into_parts();
        let mut kept = BytesMut::new();
        let mut len = 0u64;
        let mut error = None;
        let mut trailers = HeaderMap::new();
        // A gRPC answer's messages are timed as they arrive (a stream's pace).
        let mut clock = is_grpc(&parts.headers).then(tapedeck_captures::proto::MessageClock::default);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        if let Some(clock) = clock.as_mut() {
                            clock.observe(data, || sent_at.elapsed().as_nanos() as u64);
                        }
                        len += data.len() as u64;
                        let room = self.inner.config.max_body.saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..room.min(data.len())]);
                    } else if let Some(t) = frame.trailers_ref() {
                        trailers = t.clone();
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "response body broke off");
                    error = Some(body_kind(&e));
                    break;
                }
            }
        }
        let end = sent_at.elapsed();
        // A body that ended short of its announced length is cut, however it ended (HTTP/2
        // lets a server end a stream with a NO_ERROR reset, which reads as an end).
        let announced =
            parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let bodiless = parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || head_request;
        if error.is_none() && !bodiless && announced.is_some_and(|n| len < n) {
            error = Some(ErrorKind::IncompleteBody);
        }
        // A gRPC answer ends with its status; one without it was cut (however it ended).
        let status_named = trailers.contains_key("grpc-status") || parts.headers.contains_key("grpc-status");
        if error.is_none() && parts.status == StatusCode::OK && is_grpc(&parts.headers) && !status_named {
            error = Some(ErrorKind::IncompleteBody);
        }
        let conn = conn.filter(|c| error.is_none() && !c.tx.is_closed());
        let outcome = Outcome {
            sent_at,
            status: Some(parts.status),
            version: parts.version,
            headers: parts.headers,
            body: kept.freeze(),
            body_len: len,
            head: Some(head),
            end: Some(end),
            error,
            trailers,
            websocket: None,
            message_ns: clock.map(|c| c.into_times()).unwrap_or_default(),
        };
        (outcome, conn)
    }

    /// A failure to reach the target: its cause is kept for the report (the first of each
    /// kind), with advice for TLS failures.
    fn failed(&self, e: NetError) -> ErrorKind {
        let host = self.inner.connector.host();
        self.inner.progress.note_cause(e.kind, || match (e.kind, std::error::Error::source(&e)) {
            (ErrorKind::Tls, Some(cause)) => crate::progress::explain_tls(&cause.to_string(), host),
            _ => e.detail(),
        });
        e.kind
    }

    async fn connect(&self) -> Result<Conn, ErrorKind> {
        let conn = self.inner.connector.connect(Alpn::H2OrHttp1).await.map_err(|e| self.failed(e))?;
        let h2 = conn.is_h2();
        match conn {
            Connected::Plain(tcp) => http1_conn(tcp).await,
            Connected::Tls(tls) if h2 => Ok(Conn::H2(http2_conn(tls).await?)),
            Connected::Tls(tls) => http1_conn(tls).await,
        }
    }
}

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<PacedBody>),
}

async fn http2_conn<T, B>(io: T) -> Result<http2::SendRequest<B>, ErrorKind>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| request_kind(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// A request extension the client sets once the request is handed to a connection: a
/// request still waiting for one when a run stops was never sent.
#[derive(Clone, Debug, Default)]
pub struct OnWire(pub Arc<std::sync::atomic::AtomicBool>);

fn on_wire<B>(req: &Request<B>) {
    if let Some(w) = req.extensions().get::<OnWire>() {
        w.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An HTTP/2 request's body: a gRPC stream's messages at their recorded pace, then its
/// recorded trailers ([`MessagePace`]); anything else at once.
async fn paced(req: Request<Full<Bytes>>) -> Request<PacedBody> {
    let (parts, body) = req.into_parts();
    let data = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let body = PacedBody::new(data, parts.extensions.get::<MessagePace>());
    Request::from_parts(parts, body)
}

/// gRPC over HTTP/2 (`application/grpc…`; gRPC-Web, made for HTTP/1.1, is not).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| tapedeck_captures::wire::is_grpc_content_type(v.as_bytes()))
}

async fn http1_conn<T>(io: T) -> Result<Conn, ErrorKind>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::handshake(TokioIo::new(io)).await.map_err(|e| request_kind(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn::H1(tx))
}

impl Outcome {
    pub(crate) fn failed(sent_at: Instant, kind: ErrorKind) -> Outcome {
        Outcome {
            sent_at,
            status: None,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            body_len: 0,
            head: None,
            end: None,
            error: Some(kind),
            trailers: HeaderMap::new(),
            websocket: None,
            message_ns: Vec::new(),
        }
    }
}
