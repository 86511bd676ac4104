//! Upgraded connections (WebSocket, or whatever a `101 Switching Protocols` switches to):
//! bytes are copied both ways untouched. For a captured WebSocket, what each side sends is
//! also read into messages ([`Session`]) as it goes by — never holding a byte back — and
//! the session is recorded with the exchange when the connection ends, however it ends (a
//! close, a reset, the proxy shutting down).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use hyper_util::rt::TokioIo;
use tapedeck_captures::websocket::{Ended, Limits, Pool, Session, Side};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;
use crate::recording::Recording;

/// A captured WebSocket upgrade to read.
pub(crate) struct Watch {
    /// The upgrade's exchange, recorded when the connection ends.
    pub recording: Arc<Recording>,
    /// The server accepted `permessage-deflate`.
    pub deflate: bool,
    /// What all sessions under way may keep together.
    pub pool: Arc<Pool>,
}

/// Copies bytes both ways between an upgraded client and upstream connection; reads a
/// WebSocket's messages on the way when `watch` says so.
pub(crate) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    watch: Option<Watch>,
    metrics: Arc<Metrics>,
    idle: std::time::Duration,
    _open: crate::connections::ConnGuard,
) {
    let (c, u) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (c, u) = (TokioIo::new(c), TokioIo::new(u));
    metrics.upgraded.inc();
    let _upgraded = Open(metrics.clone());
    // Nothing moving either way for `idle` (`--stream-idle-timeout`) ends the tunnel: an
    // idle or half-closed client must not hold its connection slot for ever.
    let activity = Arc::new(Activity { start: Instant::now(), last_ms: AtomicU64::new(0) });
    let log = watch.map(|watch| {
        let limits = Limits::for_max_body(watch.recording.max_body());
        Arc::new(Log {
            session: Mutex::new(Some(Session::new(limits, watch.deflate).with_pool(watch.pool))),
            recording: watch.recording,
            metrics,
            ended: AtomicBool::new(false),
        })
    });
    let mut c = Tapped { io: c, side: Side::Client, log: log.clone(), activity: activity.clone() };
    let mut u = Tapped { io: u, side: Side::Server, log: log.clone(), activity: activity.clone() };
    let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
    tokio::pin!(copy);
    let ended = loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            ended = &mut copy => break Some(ended),
            () = tokio::time::sleep_until(deadline.into()) => {
                if activity.last() + idle <= Instant::now() {
                    break None;
                }
            }
        }
    };
    // The connection ended by itself or by the idle rule (not cut by a shutdown dropping
    // this task).
    if let Some(log) = &log {
        log.ended.store(true, Ordering::Relaxed);
    }
    match ended {
        Some(Err(e)) => tracing::debug!(error = %e, "upgraded connection ended"),
        None => tracing::debug!("upgraded connection idle past --stream-idle-timeout: closed"),
        Some(Ok(_)) => {}
    }
}

/// When either side last sent something.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts an upgraded connection as open while it lives (however its task ends).
struct Open(Arc<Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.upgraded.dec();
    }
}

/// The session being read; recorded when both directions let go of it.
struct Log {
    session: Mutex<Option<Session>>,
    recording: Arc<Recording>,
    metrics: Arc<Metrics>,
    /// Set when the connection ended by itself.
    ended: AtomicBool,
}

impl Drop for Log {
    fn drop(&mut self) {
        let session = self.session.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(session) = session {
            let mut ws = session.finish(self.recording.elapsed_ns());
            // Cut by a shutdown, unless the closing handshake had finished already.
            if !self.ended.load(Ordering::Relaxed) && ws.ended != Some(Ended::Closed) {
                ws.ended = Some(Ended::Cut);
            }
            for (i, side) in [Side::Client, Side::Server].into_iter().enumerate() {
                self.metrics.websocket_messages[i].inc_by(ws.from(side).count() as u64);
            }
            if ws.unreadable.is_some() {
                self.metrics.websocket_unreadable.inc();
            }
            self.recording.websocket(ws);
        }
    }
}

/// One side's connection; what is read from it is what that side sent.
struct Tapped<T> {
    io: T,
    side: Side,
    /// The session, when it is captured.
    log: Option<Arc<Log>>,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tapped<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            self.activity.touch();
            if let Some(log) = &self.log {
                let now = log.recording.elapsed_ns();
                let mut session = log.session.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = session.as_mut() {
                    s.feed(self.side, read, now);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tapped<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
