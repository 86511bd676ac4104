//! Forwarding one request: sampling decision, upstream request (hop-by-hop headers
//! removed per RFC 9110 §7.6.1, `X-Forwarded-*`/`Forwarded` added, `Host` kept),
//! streaming both bodies through tees, WebSocket/`Upgrade` tunnels, and 502/504 answers
//! when the upstream fails.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tapedeck_captures::{ConnectionId, ErrorKind, Exchange, ExchangeId, IdGenerator};

use crate::capture::CaptureQueue;
use crate::client::{Lease, UpBody, UpstreamPool};
use crate::client_body::{BodyLimit, BodyState, ClientBody, ClientFailure};
use crate::config::{Forwarding, UpstreamProtocol};
use crate::metrics::Metrics;
use crate::sample::{Decision, Sampler};
use crate::tee::{capture_headers, capture_version, Clock, Part, Recording, TeeBody};

/// One client connection, as the handler sees it.
pub struct ConnInfo {
    /// Connection id (shared with captured exchanges).
    pub id: ConnectionId,
    /// The client's address.
    pub peer: SocketAddr,
    /// True for TLS connections.
    pub tls: bool,
    /// Requests seen on this connection.
    pub sequence: AtomicU32,
    /// The client's IP as `X-Forwarded-For` carries it.
    pub client_ip: HeaderValue,
}

impl ConnInfo {
    /// Connection facts for a client at `peer`.
    pub fn new(id: ConnectionId, peer: SocketAddr, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo { id, peer, tls, sequence: AtomicU32::new(0), client_ip }
    }
}

/// The upstream, split once at start-up.
#[derive(Clone, Debug)]
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host_value: HeaderValue,
    /// Path prefix without the trailing slash ("" for none).
    prefix: String,
    port: u16,
}

impl Upstream {
    /// Splits an upstream URL; it must be absolute `http` or `https`.
    pub fn parse(uri: &Uri) -> Result<Self, String> {
        let scheme =
            uri.scheme().cloned().ok_or_else(|| format!("upstream {uri} needs a scheme: http:// or https://"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("upstream {uri}: only http and https are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("upstream {uri} needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(tapedeck_captures::scrub::userinfo_refused(
                "upstream",
                &uri.to_string(),
                "clients' own Authorization headers are forwarded",
            ));
        }
        let host_value = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let prefix = uri.path().trim_end_matches('/').to_string();
        let port = authority.port_u16().unwrap_or(if scheme == http::uri::Scheme::HTTPS { 443 } else { 80 });
        Ok(Upstream { scheme, authority, host_value, prefix, port })
    }

    /// The host name or address (IPv6 in brackets).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port (explicit, or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True for an `https` upstream.
    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    fn uri(&self, path_and_query: Option<&http::uri::PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = match (path_and_query, self.prefix.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (pq, _) => {
                let pq = pq.map_or("/", |p| p.as_str());
                http::uri::PathAndQuery::try_from(format!("{}{pq}", self.prefix))?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Ok(Uri::from_parts(parts)?)
    }
}

/// What every worker shares: sampling, capture, metrics, settings.
pub struct Shared {
    pub(crate) upstream: Upstream,
    pub(crate) sampler: Option<Sampler>,
    pub(crate) capture: Option<Arc<CaptureQueue>>,
    pub(crate) clock: Clock,
    pub(crate) ids: IdGenerator,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_body: usize,
    pub(crate) response_timeout: Duration,
    pub(crate) stream_idle: Duration,
    pub(crate) body_limit: BodyLimit,
    pub(crate) forwarding: Forwarding,
    pub(crate) protocol: UpstreamProtocol,
}

/// A worker's request handler: the shared state and the worker's own upstream pool.
pub struct Forwarder {
    pub(crate) shared: Arc<Shared>,
    pub(crate) pool: Arc<UpstreamPool>,
}

impl std::ops::Deref for Forwarder {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

pin_project_lite::pin_project! {
    /// The body of a response the proxy returns: the upstream's, streamed, or a short
    /// message of its own.
    #[project = ProxyBodyProj]
    #[allow(missing_docs)] // pin-project-lite cannot carry docs on variant fields
    pub enum ProxyBody {
        /// The upstream's body, passed through a tee, and the connection it arrives on.
        Stream { #[pin] body: TeeBody<Incoming>, lease: Option<Lease>, idle: Option<StreamIdle> },
        /// A message generated by the proxy, until it is sent.
        Message { data: Option<Bytes> },
    }
}

/// A gRPC stream's watch: nothing moving either way (the client's messages, the
/// server's) for `after` ends it.
pub struct StreamIdle {
    after: Duration,
    request: Arc<BodyState>,
    last_frame: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    metrics: Arc<Metrics>,
}

impl StreamIdle {
    fn new(after: Duration, request: Arc<BodyState>, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        StreamIdle {
            after,
            request,
            last_frame: now,
            timer: Box::pin(tokio::time::sleep_until((now + after).into())),
            metrics,
        }
    }

    /// True once the stream has been idle too long; else arms the timer to wake it.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.last_frame.max(self.request.last_moved()) + self.after;
            if deadline <= Instant::now() {
                return true;
            }
            if self.timer.deadline() != deadline.into() {
                self.timer.as_mut().reset(deadline.into());
            }
            if std::future::Future::poll(self.timer.as_mut(), cx).is_pending() {
                return false;
            }
        }
    }
}

/// Why the proxy ended a response body itself.
#[derive(Debug)]
struct StreamIdleTimeout;

impl std::fmt::Display for StreamIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gRPC stream idle past --stream-idle-timeout")
    }
}

impl std::error::Error for StreamIdleTimeout {}

impl ProxyBody {
    fn stream(body: TeeBody<Incoming>, lease: Option<Lease>, idle: Option<StreamIdle>) -> Self {
        match lease {
            // Nothing to stream (HEAD, 204, 304): the connection is free now.
            Some(l) if body.is_end_stream() => {
                l.release();
                ProxyBody::Stream { body, lease: None, idle }
            }
            lease => ProxyBody::Stream { body, lease, idle },
        }
    }

    fn message(text: &'static str) -> Self {
        ProxyBody::Message { data: Some(Bytes::from_static(text.as_bytes())) }
    }

    fn empty() -> Self {
        ProxyBody::Message { data: None }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ProxyBodyProj::Stream { mut body, lease, idle } => {
                let polled = body.as_mut().poll_frame(cx);
                if let Some(idle) = idle.as_mut() {
                    match &polled {
                        Poll::Ready(Some(Ok(_))) => idle.last_frame = Instant::now(),
                        Poll::Pending if idle.expired(cx) => {
                            // Reset (h2 RST_STREAM): the client sees the stream fail.
                            lease.take();
                            idle.metrics.upstream_error(ErrorKind::ResponseTimeout);
                            body.as_mut().abort(ErrorKind::ResponseTimeout);
                            return Poll::Ready(Some(Err(Box::new(StreamIdleTimeout))));
                        }
                        _ => {}
                    }
                }
                let polled = polled.map(|f| f.map(|r| r.map_err(Into::into)));
                let done = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        // The connection is broken: never reuse it.
                        lease.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if done {
                    if let Some(l) = lease.take() {
                        l.release();
                    }
                }
                polled
            }
            ProxyBodyProj::Message { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream { body, .. } => body.is_end_stream(),
            ProxyBody::Message { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream { body, .. } => body.size_hint(),
            ProxyBody::Message { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Hop-by-hop fields (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    // Credentials for this hop, not for the service behind it.
    header::PROXY_AUTHORIZATION,
];

/// gRPC over HTTP/2 (`application/grpc`, `+proto`, `+json`…); gRPC-Web, made for
/// HTTP/1.1, is not.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| tapedeck_captures::scrub::is_grpc_content_type(v.as_bytes()))
}

/// The client accepts trailers (`TE: trailers`).
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

fn is_upgrade(headers: &HeaderMap, version: Version) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Removes hop-by-hop fields, including those named in `Connection`. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = if upgrade { headers.get(header::UPGRADE).cloned() } else { None };
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(u) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

impl Forwarder {
    /// Handles one request from `conn`.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        if let Some(refusal) = refuse(&req) {
            self.metrics.request(refusal.status().as_u16());
            return refusal;
        }
        let started = Instant::now();
        let sequence = conn.sequence.fetch_add(1, Ordering::Relaxed);
        let upgrade = is_upgrade(req.headers(), req.version());
        let websocket = upgrade
            && req.headers().get(header::UPGRADE).is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        // gRPC runs on HTTP/2 only: a gRPC content type on HTTP/1.1 earns no exemption from
        // the body timeout below (a trickling client could claim one).
        let grpc = req.version() == Version::HTTP_2 && is_grpc(req.headers());
        let h2c = match self.protocol {
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Http1 => false,
            // What HTTP/1.1 cannot carry: gRPC (trailers, full duplex) and requests
            // that ask for trailers.
            UpstreamProtocol::Auto => req.version() == Version::HTTP_2 && (grpc || wants_trailers(req.headers())),
        };
        let recording = self.decide(&req, conn, sequence, started);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (parts, body) = req.into_parts();
        // A gRPC stream's body moves at the application's pace, not an upload's: its
        // deadline is the client's (`grpc-timeout`), as it would be without the proxy.
        let limit = if grpc { BodyLimit { timeout: Duration::ZERO, min_rate: 0 } } else { self.body_limit };
        let (body, body_state) = ClientBody::new(body, limit, started.into(), self.metrics.clone());
        let body = match &recording {
            Some(r) => TeeBody::capture(body, r.clone(), Part::Request).timing_messages(grpc),
            None => TeeBody::plain(body),
        };
        let upstream_req = match self.upstream_request(parts, body, conn, upgrade) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot build the upstream request");
                // Refused by the proxy: recorded as such, not as a client that left.
                if let Some(r) = &recording {
                    r.error(ErrorKind::Other);
                }
                self.metrics.request(400);
                return plain(StatusCode::BAD_REQUEST, "bad request\n", None);
            }
        };
        let sent = Instant::now();
        // Boxed: the send's state is large, and moved here it would be copied at every step.
        let send = Box::pin(self.pool.send(upstream_req, h2c));
        // A gRPC server may answer a client stream only at its end, however long: its
        // clock is the stream's idleness, not a response timeout.
        let wait = if grpc { self.stream_idle } else { self.response_timeout };
        let outcome = self.until_answered(send, &body_state, wait).await;
        let (mut resp, lease) = match outcome {
            Ok(Ok(sent)) => sent,
            // The request failed because the client's body did: the client's error.
            Ok(Err(_)) | Err(_) if body_state.failure().is_some() => {
                return self
                    .client_failed(body_state.failure().unwrap_or(ClientFailure::Aborted), recording.as_deref());
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e.detail, kind = %e.kind, "upstream request failed");
                return self.fail(e.kind, recording.as_deref());
            }
            Err(_) => return self.fail(ErrorKind::ResponseTimeout, recording.as_deref()),
        };
        let body_state_for_idle = body_state.clone();
        let lease = lease.map(|l| l.after_body(body_state));
        let head_at = Instant::now();
        self.metrics.upstream_latency.observe(head_at.duration_since(sent).as_secs_f64());
        let status = resp.status();
        if let Some(r) = &recording {
            r.response_head(status.as_u16(), resp.version(), resp.headers());
        }
        // An upgraded connection belongs to the tunnel, never to the pool.
        let lease = if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                // The session's messages are read and recorded with the handshake.
                let watch = recording.as_ref().filter(|_| websocket).map(|r| crate::tunnel::Watch {
                    recording: r.clone(),
                    deflate: resp
                        .headers()
                        .get_all("sec-websocket-extensions")
                        .iter()
                        .any(|v| v.to_str().is_ok_and(tapedeck_captures::websocket::deflate_accepted)),
                });
                tokio::spawn(crate::tunnel::tunnel(client_side, upstream_side, watch, self.metrics.clone()));
            }
            None
        } else {
            lease
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, status == StatusCode::SWITCHING_PROTOCOLS);
        let body = match recording {
            Some(r) => TeeBody::capture(body, r, Part::Response).timing_messages(grpc),
            None => TeeBody::plain(body),
        };
        self.metrics.request(status.as_u16());
        let added = sent.duration_since(started) + head_at.elapsed();
        self.metrics.added_latency.observe(added.as_secs_f64());
        let idle = grpc.then(|| StreamIdle::new(self.stream_idle, body_state_for_idle, self.metrics.clone()));
        Response::from_parts(parts, ProxyBody::stream(body, lease, idle))
    }

    /// The sampling decision and, if captured, the recording with the request head.
    fn decide(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        sequence: u32,
        started: Instant,
    ) -> Option<Arc<Recording>> {
        let (sampler, queue) = (self.sampler.as_ref()?, self.capture.as_ref()?);
        let session = match sampler.decide(req.method(), req.uri(), req.headers()) {
            Decision::Capture { session } => session,
            Decision::Skip(reason) => {
                self.metrics.skipped(reason);
                return None;
            }
        };
        self.metrics.captured.inc();
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
            .unwrap_or_default();
        let mut headers = capture_headers(req.headers());
        if req.version() == Version::HTTP_2 && !req.headers().contains_key(header::HOST) && !authority.is_empty() {
            // h2 carries the host in :authority; record it as Host so replays have it.
            headers.0.insert(0, tapedeck_captures::Header { name: "host".into(), value: authority.as_str().into() });
        }
        let exchange = Exchange {
            id: ExchangeId(self.ids.next()),
            connection: conn.id,
            session,
            sequence,
            timing: Default::default(),
            request: tapedeck_captures::Request {
                message_ns: Vec::new(),
                trailers: Default::default(),
                method: req.method().as_str().to_string(),
                scheme: if conn.tls { "https" } else { "http" }.into(),
                authority,
                target: req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
                version: capture_version(req.version()),
                headers,
                body: Default::default(),
            },
            response: None,
            error: None,
            scrub: Vec::new(),
            replay_of: None,
            websocket: None,
        };
        Some(Recording::new(queue.clone(), self.clock, started, self.max_body, exchange))
    }

    fn upstream_request(
        &self,
        mut parts: http::request::Parts,
        body: UpBody,
        conn: &ConnInfo,
        upgrade: bool,
    ) -> Result<Request<UpBody>, http::Error> {
        // The target's authority (absolute form, HTTP/2's :authority) wins over Host
        // (RFC 9112 §3.2.2): that is where the client meant to go.
        let original_host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());
        let uri = self.upstream.uri(parts.uri.path_and_query())?;
        let trailers = wants_trailers(&parts.headers);
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers, upgrade);
        // `TE: trailers` is hop-by-hop, but this hop takes trailers too: the upstream may
        // send them (gRPC's status travels in them), and they are passed on.
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // hyper already answered `Expect: 100-continue` to the client when the body was
        // first read; the upstream gets the body without waiting.
        headers.remove(header::EXPECT);
        let host = match (&original_host, self.forwarding.preserve_host) {
            (Some(h), true) => h.clone(),
            _ => self.upstream.host_value.clone(),
        };
        headers.insert(header::HOST, host);
        let proto = if conn.tls { "https" } else { "http" };
        // A client's own claims about where the request came from are believed only from
        // a trusted proxy (`--trust-forwarded`); anyone else's are dropped, so the
        // upstream's last, trusted element is always what this proxy saw.
        if !self.forwarding.trust.trusts(conn.peer.ip()) {
            // Every spelling an upstream might believe (True-Client-IP, CF-Connecting-IP,
            // X-Cluster-Client-IP …), not only the three this proxy writes.
            let claims: Vec<HeaderName> = headers
                .keys()
                .filter(|n| tapedeck_captures::scrub::is_client_address_header(n.as_str()))
                .cloned()
                .collect();
            for name in claims.into_iter().chain([X_FORWARDED_FOR, header::FORWARDED, X_REAL_IP]) {
                headers.remove(name);
            }
        }
        if self.forwarding.x_forwarded {
            let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", conn.peer.ip())).ok(),
                None => Some(conn.client_ip.clone()),
            };
            if let Some(v) = xff {
                headers.insert(X_FORWARDED_FOR, v);
            }
            // What this proxy saw, whoever says otherwise.
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            match &original_host {
                Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
                None => headers.remove(X_FORWARDED_HOST),
            };
        }
        if self.forwarding.forwarded {
            let ip = conn.peer.ip();
            let node = if conn.peer.is_ipv6() { format!("\"[{ip}]\"") } else { ip.to_string() };
            let mut element = format!("for={node};proto={proto}");
            if let Some(h) = original_host.as_ref().and_then(|h| h.to_str().ok()) {
                element.push_str(&format!(";host=\"{h}\""));
            }
            let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {element}"),
                None => element,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::FORWARDED, v);
            }
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }

    /// Waits for `send` (the upstream's response head) at most the response timeout
    /// after the request body last moved: an upload that takes longer than the timeout
    /// is not the upstream being slow (nginx's `proxy_send_timeout` and
    /// `proxy_read_timeout` together). `Err` when the time ran out.
    async fn until_answered<F: std::future::Future>(
        &self,
        send: F,
        body: &BodyState,
        timeout: Duration,
    ) -> Result<F::Output, ()> {
        tokio::pin!(send);
        loop {
            let deadline = body.last_moved() + timeout;
            tokio::select! {
                out = &mut send => return Ok(out),
                () = tokio::time::sleep_until(deadline.into()) => {
                    if body.last_moved() + timeout <= Instant::now() {
                        return Err(());
                    }
                }
            }
        }
    }

    /// The answer when the client's body failed: 408 when it was too slow, 400 when it
    /// was malformed (or the client left: nobody reads that answer). Counted as the
    /// client's error, so one client cannot inflate the service's 5xx and upstream-error
    /// figures.
    fn client_failed(&self, failure: ClientFailure, recording: Option<&Recording>) -> Response<ProxyBody> {
        // Counted by the body when it failed.
        tracing::debug!(kind = failure.as_str(), "request body failed");
        if let Some(r) = recording {
            r.error(ErrorKind::ClientAborted);
        }
        let (status, text) = match failure {
            ClientFailure::TimedOut => (StatusCode::REQUEST_TIMEOUT, "request body timed out\n"),
            ClientFailure::Malformed => (StatusCode::BAD_REQUEST, "malformed request body\n"),
            ClientFailure::Aborted => (StatusCode::BAD_REQUEST, "request body incomplete\n"),
        };
        self.metrics.request(status.as_u16());
        let mut resp = plain(status, text, None);
        // The rest of the body is not read: the connection cannot carry another request.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    fn fail(&self, kind: ErrorKind, recording: Option<&Recording>) -> Response<ProxyBody> {
        self.metrics.upstream_error(kind);
        if let Some(r) = recording {
            r.error(kind);
        }
        let (status, text) = match kind {
            ErrorKind::ConnectTimeout | ErrorKind::ResponseTimeout => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n")
            }
            ErrorKind::ConnectRefused => (StatusCode::BAD_GATEWAY, "upstream refused the connection\n"),
            ErrorKind::Dns => (StatusCode::BAD_GATEWAY, "upstream host not found\n"),
            ErrorKind::Tls => (StatusCode::BAD_GATEWAY, "TLS with the upstream failed\n"),
            ErrorKind::Reset => (StatusCode::BAD_GATEWAY, "upstream closed the connection\n"),
            ErrorKind::Protocol => (StatusCode::BAD_GATEWAY, "upstream sent an invalid response\n"),
            _ => (StatusCode::BAD_GATEWAY, "upstream request failed\n"),
        };
        self.metrics.request(status.as_u16());
        plain(status, text, Some(kind))
    }
}

/// Requests a reverse proxy must not forward (RFC 9112 §3.2, RFC 9110 §9.3.6): an
/// HTTP/1.1 request without exactly one valid `Host` is a 400; `CONNECT` (a forward
/// proxy's method: forwarded, it would reach the service as `CONNECT /`) is a 405.
fn refuse(req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    // `connect` in any case: a method name is case-sensitive, but no service has a
    // lower-case CONNECT of its own, and forwarded it would reach it as `connect /`.
    if req.method().as_str().eq_ignore_ascii_case("CONNECT") {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served: this is a reverse proxy\n", None);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
        // What follows a CONNECT is tunnel bytes, not a request.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(resp);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    let uri = req.uri();
    let bad_host = match (first, second) {
        (_, Some(_)) => Some("more than one Host header\n"),
        (Some(h), None) if !h.to_str().is_ok_and(valid_host) => Some("invalid Host header\n"),
        (None, None) if req.version() == Version::HTTP_11 => Some("HTTP/1.1 requests need a Host header\n"),
        // `GET host:443`: the authority form is CONNECT's alone.
        _ if uri.scheme().is_none() && uri.authority().is_some() => Some("invalid request target\n"),
        // HTTP/2's :authority, or an absolute-form target: the same rules as Host.
        _ if uri.authority().is_some_and(|a| !valid_host(a.as_str())) => Some("invalid authority\n"),
        // RFC 9113 §8.3.1: on HTTP/2 a Host that names another authority makes the request
        // malformed (HTTP/1.1's absolute form instead overrides Host, RFC 9112 §3.2.2).
        (Some(h), None)
            if req.version() == Version::HTTP_2
                && uri.authority().is_some_and(|a| !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())) =>
        {
            Some("Host header differs from :authority\n")
        }
        _ => None,
    };
    bad_host.map(|text| {
        let mut resp = plain(StatusCode::BAD_REQUEST, text, None);
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    })
}

/// A `Host` or authority a proxy may pass on: `host[:port]` with a real port, no user
/// information, nothing a header parser downstream could split differently (quotes,
/// commas, spaces).
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && !h.contains(['@', ',', ';', '"', ' '])
        && h.parse::<http::uri::Authority>().is_ok()
        // A port, if any, is a real one (`a:99999999` parses as an authority).
        && (h.ends_with(']') || h.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_ok()))
}

fn plain(status: StatusCode, text: &'static str, kind: Option<ErrorKind>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::message(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(k) = kind {
        h.insert("x-tapedeck-error", HeaderValue::from_static(k.as_str()));
    }
    resp
}

/// A response with no body, for callers outside this module.
pub fn empty_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = status;
    resp
}
