//! Forwarding one request: refusing what a reverse proxy must not forward, the sampling
//! decision and the recording's request head, the upstream request (header rules in
//! `headers`), both bodies streamed through tees, upgrades handed to [`crate::tunnel`],
//! and 502/504 answers when the upstream fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tapedeck_captures::{ConnectionId, ErrorKind, Exchange, ExchangeId, IdGenerator};

use crate::capture::CaptureQueue;
use crate::client::{UpBody, UpstreamPool};
use crate::client_body::{BodyLimit, BodyState, ClientBody};
use crate::config::{Forwarding, UpstreamProtocol};
use crate::failure::ClientFailure;
use crate::headers::{is_grpc, is_upgrade, strip_hop_by_hop, valid_host, wants_trailers};
use crate::metrics::Metrics;
use crate::proxy_body::{plain, ProxyBody, StreamIdle};
use crate::recording::{Clock, Part, Recording};
use crate::sample::{Decision, Sampler};
use crate::tee::TeeBody;
use crate::upstream::Upstream;
use tapedeck_net::convert;

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

/// What every worker shares: sampling, capture, metrics, settings.
pub struct Shared {
    pub(crate) upstream: Upstream,
    pub(crate) sampler: Option<Sampler>,
    pub(crate) capture: Option<Arc<CaptureQueue>>,
    pub(crate) tap: Option<Arc<dyn tapedeck_captures::sink::LiveTap>>,
    pub(crate) clock: Clock,
    pub(crate) ids: IdGenerator,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_body: usize,
    pub(crate) response_timeout: Duration,
    pub(crate) stream_idle: Duration,
    pub(crate) body_limit: BodyLimit,
    pub(crate) forwarding: Forwarding,
    pub(crate) protocol: UpstreamProtocol,
    /// Open connections: an upgraded one stays counted while its tunnel lives.
    pub(crate) connections: Arc<crate::connections::Connections>,
    /// What captured WebSocket sessions under way keep in all.
    pub(crate) websocket_pool: Arc<tapedeck_captures::websocket::Pool>,
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
        let send = if upgrade {
            Box::pin(self.pool.send_upgrade(upstream_req))
                as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        } else {
            Box::pin(self.pool.send(upstream_req, h2c))
        };
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
                tracing::debug!(error = %e.detail(), kind = %e.kind, "upstream request failed");
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
                    pool: self.websocket_pool.clone(),
                    deflate: resp
                        .headers()
                        .get_all("sec-websocket-extensions")
                        .iter()
                        .any(|v| v.to_str().is_ok_and(tapedeck_captures::websocket::deflate_accepted)),
                });
                // Counted as open (the cap, the drain) for as long as it lives.
                let open = self.connections.hold(self.metrics.clone());
                tokio::spawn(crate::tunnel::tunnel(
                    client_side,
                    upstream_side,
                    watch,
                    self.metrics.clone(),
                    self.stream_idle,
                    open,
                ));
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
        let captured = match (self.sampler.as_ref(), self.capture.as_ref()) {
            (Some(sampler), Some(queue)) => match sampler.decide(req.method(), req.uri(), req.headers()) {
                Decision::Capture { session } => Some((session, queue.clone())),
                Decision::Skip(reason) => {
                    self.metrics.skipped(reason);
                    None
                }
            },
            _ => None,
        };
        let tap = self.tap.as_ref().filter(|t| t.wants(req.method().as_str(), req.uri().path())).cloned();
        if captured.is_none() && tap.is_none() {
            return None;
        }
        let (session, queue) = match captured {
            Some((session, queue)) => {
                self.metrics.captured.inc();
                (session, Some(queue))
            }
            None => (None, None),
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
            .unwrap_or_default();
        let mut headers = convert::headers(req.headers());
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
                version: convert::version(req.version()),
                headers,
                body: Default::default(),
            },
            response: None,
            error: None,
            scrub: Vec::new(),
            replay_of: None,
            websocket: None,
        };
        Some(Recording::new(queue, tap, self.clock, started, self.max_body, exchange))
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
            _ => self.upstream.host_value().clone(),
        };
        headers.insert(header::HOST, host);
        crate::headers::add_forwarding(
            headers,
            conn.peer,
            &conn.client_ip,
            conn.tls,
            original_host.as_ref(),
            &self.forwarding,
        );
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
