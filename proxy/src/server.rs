//! The listener and the proxy's lifecycle: accept (plain or TLS), serve each connection
//! with HTTP/1.1 or HTTP/2 (by preface or ALPN), close idle connections, and on shutdown
//! stop accepting, drain in-flight requests up to a deadline, then flush and close the
//! capture.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tapedeck_captures::{ConnectionId, IdGenerator};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::capture::{CaptureReport, CaptureWriter};
use crate::client_body::BodyLimit;
use crate::config::{Limits, ProxyConfig, Timeouts};
use crate::connections::Connections;
use crate::forward::{ConnInfo, Forwarder, Shared};
use crate::metrics::{ConnError, Metrics};
use crate::recording::Clock;
use crate::sample::Sampler;
use crate::tls::TlsState;
use crate::upstream::Upstream;
use crate::{admin, ProxyError};

/// A running proxy.
pub struct Proxy {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<TlsState>>,
    stop: watch::Sender<Phase>,
    task: tokio::task::JoinHandle<ShutdownReport>,
}

/// What happened at shutdown.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Connections still open when the drain deadline passed (they were closed).
    pub connections_cut: usize,
    /// The capture writer's final report, if capture was on.
    pub capture: Option<CaptureReport>,
    /// The tap's closing line, if there was one.
    pub tap: Option<String>,
}

impl Proxy {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reloads the TLS certificate and key from their files (no-op without TLS).
    pub fn reload_tls(&self) -> Result<(), ProxyError> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }

    /// Stops accepting, drains in-flight requests (up to the drain timeout), closes the
    /// capture and returns what happened.
    pub async fn shutdown(self) -> ShutdownReport {
        let _ = self.stop.send(Phase::Draining);
        self.task.await.unwrap_or_default()
    }
}

/// Binds the listeners, starts the capture writer and the workers, and begins serving.
pub async fn start(mut config: ProxyConfig) -> Result<Proxy, ProxyError> {
    let metrics = Arc::new(Metrics::new());
    let upstream = Upstream::parse(&config.upstream).map_err(ProxyError::Config)?;
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let bind_error = |what, addr, e: io::Error| {
        let hint = match (e.kind(), what) {
            (io::ErrorKind::AddrInUse, LISTENER) => {
                "; another process listens there (two proxies sharing a port would split its connections): stop it or choose another --listen"
            }
            (io::ErrorKind::AddrInUse, _) => "; another process listens there: choose another --admin, or --admin off",
            _ => "",
        };
        ProxyError::Bind { what, addr, hint, source: e }
    };
    // Files and TLS settings first: a bad certificate is said whatever the ports are.
    let tls = config.tls.clone().map(TlsState::load).transpose()?.map(Arc::new);
    // Check the upstream's TLS settings now rather than on the first request.
    crate::client::UpstreamPool::new(&upstream, &config)?;
    let listeners = bind_reuseport(config.listen, workers).map_err(|e| bind_error(LISTENER, config.listen, e))?;
    let local_addr = listeners[0].local_addr().map_err(|e| bind_error(LISTENER, config.listen, e))?;
    let admin_listener = match config.admin {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|e| bind_error("the admin listener (--admin)", addr, e))?)
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let clock = Clock::now();

    let (capture, writer, max_body) = match config.capture.take() {
        Some(mut c) => {
            c.writer.tape_start_unix_ns = clock.start_unix_ns;
            c.writer.labels.push(("upstream".into(), upstream.origin()));
            let max_body = c.max_body;
            let (queue, writer) = crate::capture::start(c, metrics.clone())?;
            (Some(Arc::new(queue)), Some(writer), max_body)
        }
        // The tap alone records bodies up to the capture's default.
        None => (None, None, 1 << 20),
    };
    let sampler = capture.as_ref().map(|_| Sampler::new(&config.sampling));
    let tap = config.tap.take();
    let connections = Arc::new(Connections::default());
    let shared = Arc::new(Shared {
        connections: connections.clone(),
        websocket_pool: tapedeck_captures::websocket::Pool::new(WEBSOCKET_POOL),
        upstream,
        sampler,
        capture,
        tap: tap.clone(),
        clock,
        ids: IdGenerator::new(),
        metrics: metrics.clone(),
        max_body,
        response_timeout: config.timeouts.upstream_response,
        stream_idle: config.timeouts.stream_idle,
        body_limit: BodyLimit { timeout: config.timeouts.body, min_rate: config.timeouts.body_min_rate },
        forwarding: config.forwarding.clone(),
        protocol: config.upstream_protocol,
    });

    let (stop, stop_rx) = watch::channel(Phase::Running);
    let ready = Arc::new(AtomicBool::new(true));
    if let Some(addr) = admin_addr.filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            admin = %addr,
            "the admin listener is reachable from other hosts: /metrics shows traffic counts and capture state; keep it on 127.0.0.1 or firewall it"
        );
    }
    let header_timeout = config.timeouts.header_read;
    let admin_task = admin_listener
        .map(|l| tokio::spawn(admin::serve(l, metrics.clone(), tap.clone(), ready.clone(), header_timeout)));
    let conn_ids = Arc::new(IdGenerator::new());
    let mut worker_threads = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let pool = Arc::new(crate::client::UpstreamPool::new(&shared.upstream, &config)?);
        let acceptor = Acceptor {
            forwarder: Arc::new(Forwarder { shared: shared.clone(), pool }),
            tls: tls.clone(),
            metrics: metrics.clone(),
            timeouts: config.timeouts,
            limits: config.limits,
            connections: connections.clone(),
            conn_ids: conn_ids.clone(),
        };
        let stop_rx = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tapedeck-worker-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a worker's event loop");
                        return;
                    }
                };
                runtime.block_on(acceptor.run(listener, stop_rx));
            })
            .map_err(|e| ProxyError::Config(format!("cannot start worker threads: {e}")))?;
        worker_threads.push(handle);
    }
    let coordinator = Coordinator {
        shared,
        connections,
        timeouts: config.timeouts,
        workers: worker_threads,
        writer,
        tap,
        admin_task,
    };
    let task = tokio::spawn(coordinator.run(stop.clone(), stop_rx, ready));
    let admin = admin_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(listen = %local_addr, %admin, workers, "proxy started");
    Ok(Proxy { local_addr, admin_addr, metrics, tls, stop, task })
}

/// Binds `n` listening sockets to one address with SO_REUSEPORT, so the kernel spreads
/// connections over the workers. Port 0 picks a port for the first; the rest share it.
///
/// SO_REUSEPORT would also let another process bind the same port and silently take part
/// of the connections; a probe bound without it first fails if anyone listens there.
fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    fn one(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(reuse_port)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    }
    if addr.port() != 0 {
        // The probe, closed at once.
        one(addr, false)?;
    }
    let first = one(addr, true)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(one(bound, true)?);
    }
    Ok(all)
}

/// The proxy listener, as errors name it.
const LISTENER: &str = "the proxy listener (--listen)";

/// Where the proxy is in its life; connections watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Finish in-flight requests, take no new ones.
    Draining,
    /// The drain deadline passed: close now.
    Closing,
}

/// Bytes that the captured WebSocket sessions under way keep in all (each keeps at most
/// `--max-body`): a sidecar with thousands of open sessions stays bounded.
const WEBSOCKET_POOL: usize = 64 << 20;

/// Runs shutdown: drain, cut what is left at the deadline, stop the workers, close the
/// capture.
struct Coordinator {
    shared: Arc<Shared>,
    connections: Arc<Connections>,
    timeouts: Timeouts,
    workers: Vec<std::thread::JoinHandle<()>>,
    writer: Option<CaptureWriter>,
    tap: Option<Arc<dyn tapedeck_captures::sink::LiveTap>>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

impl Coordinator {
    async fn run(
        self,
        phase: watch::Sender<Phase>,
        mut stop: watch::Receiver<Phase>,
        ready: Arc<AtomicBool>,
    ) -> ShutdownReport {
        while *stop.borrow() == Phase::Running {
            if stop.changed().await.is_err() {
                break;
            }
        }
        ready.store(false, Ordering::Release);
        tracing::info!(open = self.connections.open(), "stopped accepting; draining");
        let drained = self.connections.wait_closed(self.timeouts.drain).await;
        let connections_cut = self.connections.open();
        if !drained {
            tracing::warn!(open = connections_cut, "drain deadline reached; closing the remaining connections");
        }
        let _ = phase.send(Phase::Closing);
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join()))).await;
        // Requests cut off at the deadline may still hold the capture queue; closing it
        // lets the writer finish with what it has.
        if let Some(queue) = self.shared.capture.as_ref() {
            queue.close();
        }
        drop(self.shared);
        let capture = match self.writer {
            Some(w) => tokio::task::spawn_blocking(move || w.join()).await.ok(),
            None => None,
        };
        // Every request has let go of its recording: nothing more is offered to the tap.
        let tap = match self.tap {
            Some(t) => tokio::task::spawn_blocking(move || t.close()).await.ok(),
            None => None,
        };
        if let Some(t) = self.admin_task {
            t.abort();
        }
        tracing::info!("proxy stopped");
        ShutdownReport { connections_cut, capture, tap }
    }
}

/// One worker: accepts on its own listener and serves its connections on its own
/// event loop.
struct Acceptor {
    forwarder: Arc<Forwarder>,
    tls: Option<Arc<TlsState>>,
    metrics: Arc<Metrics>,
    timeouts: Timeouts,
    limits: Limits,
    connections: Arc<Connections>,
    conn_ids: Arc<IdGenerator>,
}

impl Acceptor {
    async fn run(self, listener: std::net::TcpListener, mut stop: watch::Receiver<Phase>) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the listening socket");
                return;
            }
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.header_read)
            .max_buf_size(self.limits.max_header_bytes.max(8192))
            .preserve_header_case(self.forwarder.forwarding.preserve_header_case)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.limits.max_header_bytes as u32)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        let builder = Arc::new(builder);
        while *stop.borrow() == Phase::Running {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.admit(stream, peer, &builder, stop.clone()),
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        self.metrics.conn_error(ConnError::Io);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        drop(listener);
        // Keep this worker's event loop running for its connections until they finish
        // or the coordinator says the drain deadline has passed.
        while *stop.borrow() != Phase::Closing {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // Connections left now are cut when the runtime drops; give them a moment to
        // notice the closing phase first.
        self.connections.wait_closed(Duration::from_secs(1)).await;
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        builder: &Arc<auto::Builder<TokioExecutor>>,
        stop: watch::Receiver<Phase>,
    ) {
        let guard = self.connections.hold(self.metrics.clone());
        if self.connections.open() > self.limits.max_connections {
            self.metrics.conn_error(ConnError::Overload);
            return;
        }
        self.metrics.connections_total.inc();
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo::new(ConnectionId(self.conn_ids.next()), peer, self.tls.is_some());
        let serve = ServeConn {
            forwarder: self.forwarder.clone(),
            metrics: self.metrics.clone(),
            builder: builder.clone(),
            tls: self.tls.as_ref().map(|t| t.acceptor()),
            timeouts: self.timeouts,
        };
        tokio::spawn(async move {
            serve.run(stream, conn, stop).await;
            drop(guard);
        });
    }
}

struct ServeConn {
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: Timeouts,
}

impl ServeConn {
    async fn run(self, stream: TcpStream, conn: ConnInfo, stop: watch::Receiver<Phase>) {
        let activity = Arc::new(AtomicU64::new(0));
        match self.tls.clone() {
            Some(acceptor) => match tokio::time::timeout(self.timeouts.header_read, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => self.serve(ActivityIo::new(tls, activity.clone()), conn, activity, stop).await,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                    self.metrics.conn_error(ConnError::Tls);
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
                    self.metrics.conn_error(ConnError::HeaderTimeout);
                }
            },
            None => self.serve(ActivityIo::new(stream, activity.clone()), conn, activity, stop).await,
        }
    }

    async fn serve<I>(&self, io: I, conn: ConnInfo, activity: Arc<AtomicU64>, mut stop: watch::Receiver<Phase>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(conn);
        let forwarder = self.forwarder.clone();
        let peer = conn.peer;
        let service = service_fn(move |req| {
            let forwarder = forwarder.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(forwarder.handle(req, &conn).await) }
        });
        let connection = self.builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let check_every = (self.timeouts.idle / 4).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(check_every);
        ticker.tick().await;
        let mut last_seen = activity.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        let mut closing = false;
        let result = loop {
            if !closing && *stop.borrow() >= Phase::Draining {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            if *stop.borrow() == Phase::Closing {
                tracing::debug!(%peer, "closing a connection at the drain deadline");
                return;
            }
            tokio::select! {
                biased;
                result = connection.as_mut() => break result,
                changed = stop.changed() => {
                    if changed.is_err() {
                        // The proxy is gone; finish what is in flight.
                        break connection.as_mut().await;
                    }
                }
                _ = ticker.tick(), if !closing => {
                    let now = activity.load(Ordering::Relaxed);
                    if now == last_seen {
                        quiet += check_every;
                        if quiet >= self.timeouts.idle {
                            tracing::debug!(%peer, "closing idle connection");
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    } else {
                        last_seen = now;
                        quiet = Duration::ZERO;
                    }
                }
            }
        };
        if let Err(e) = result {
            let reason = conn_error_reason(&*e);
            tracing::debug!(%peer, error = %e, reason = ?reason, "client connection ended with an error");
            self.metrics.conn_error(reason);
        }
    }
}

fn conn_error_reason(e: &(dyn std::error::Error + 'static)) -> ConnError {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return ConnError::HeaderTimeout;
            }
            if h.is_parse() || h.is_parse_too_large() || h.is_parse_status() || h.is_user() {
                return ConnError::Protocol;
            }
        }
        if err.downcast_ref::<io::Error>().is_some() {
            return ConnError::Io;
        }
        source = err.source();
    }
    ConnError::Protocol
}

pin_project_lite::pin_project! {
    /// Counts reads and writes, so the idle check needs no clock on the hot path.
    struct ActivityIo<T> {
        #[pin]
        inner: T,
        activity: Arc<AtomicU64>,
    }
}

impl<T> ActivityIo<T> {
    fn new(inner: T, activity: Arc<AtomicU64>) -> Self {
        ActivityIo { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
