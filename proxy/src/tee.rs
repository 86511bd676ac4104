//! The body tee and the recording it feeds.
//!
//! [`TeeBody`] wraps a streaming body and passes every frame through untouched; for a
//! captured request it also keeps (reference-counted, not copied) the first `max_body`
//! bytes and counts the rest. Forwarding never waits for the capture: the tee only looks
//! at frames as they go by.
//!
//! A [`Recording`] is the exchange being assembled. The handler, the request body's tee
//! and the response body's tee each hold it; when the last of them lets go — both bodies
//! finished, failed or were abandoned — it is complete and goes to the capture queue.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tapedeck_captures::{Blob, ErrorKind, Exchange, Headers, HttpVersion};

use tapedeck_captures::proto::MessageClock;

use crate::capture::CaptureQueue;

/// The proxy's clock: a monotonic start and its wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic start.
    pub start: Instant,
    /// Wall-clock time of `start`, ns since the epoch.
    pub start_unix_ns: i64,
}

impl Clock {
    /// A clock starting now.
    pub fn now() -> Self {
        Clock { start: Instant::now(), start_unix_ns: tapedeck_captures::tape::writer::now_unix_ns() }
    }

    fn offset_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }
}

/// Converts `http` headers to the capture model (names as the HTTP stack reports them).
/// All names and values are copied into one buffer that the fields slice, so a request's
/// headers cost one allocation rather than two per field.
pub fn capture_headers(map: &http::HeaderMap) -> Headers {
    let total: usize = map.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for (name, value) in map {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    let all = buf.freeze();
    let mut at = 0;
    let fields = map
        .iter()
        .map(|(name, value)| {
            let (n, v) = (name.as_str().len(), value.len());
            let header = tapedeck_captures::Header {
                name: Blob::from(all.slice(at..at + n)),
                value: Blob::from(all.slice(at + n..at + n + v)),
            };
            at += n + v;
            header
        })
        .collect();
    Headers(fields)
}

/// The capture model's version for an `http` version.
pub fn capture_version(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_09 => HttpVersion::Http09,
        http::Version::HTTP_10 => HttpVersion::Http10,
        http::Version::HTTP_2 => HttpVersion::H2,
        http::Version::HTTP_3 => HttpVersion::H3,
        _ => HttpVersion::Http11,
    }
}

/// An exchange being captured.
pub struct Recording {
    queue: Arc<CaptureQueue>,
    started: Instant,
    max_body: usize,
    exchange: Mutex<Exchange>,
}

/// Which body a tee watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The client's request body.
    Request,
    /// The upstream's response body.
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Complete,
    Failed,
    Abandoned,
}

impl Recording {
    /// Starts recording `exchange` (request head filled in) that began at `started`.
    pub fn new(
        queue: Arc<CaptureQueue>,
        clock: Clock,
        started: Instant,
        max_body: usize,
        mut exchange: Exchange,
    ) -> Arc<Self> {
        exchange.timing.tape_start_unix_ns = clock.start_unix_ns;
        exchange.timing.start_ns = clock.offset_ns(started);
        Arc::new(Recording { queue, started, max_body, exchange: Mutex::new(exchange) })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Exchange) -> R) -> R {
        // A poisoned lock only means another holder panicked mid-update; the exchange is
        // still a best-effort record.
        let mut guard = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Records the response head, received now.
    pub fn response_head(&self, status: u16, version: http::Version, headers: &http::HeaderMap) {
        let head_ns = self.started.elapsed().as_nanos() as u64;
        self.with(|ex| {
            ex.timing.head_ns = Some(head_ns);
            ex.response = Some(tapedeck_captures::Response {
                message_ns: Vec::new(),
                trailers: Default::default(),
                status,
                version: capture_version(version),
                headers: capture_headers(headers),
                body: Default::default(),
            });
        });
    }

    /// Records the trailer fields that ended `part`'s body.
    fn trailers(&self, part: Part, trailers: &http::HeaderMap) {
        let trailers = capture_headers(trailers);
        self.with(|ex| match part {
            Part::Request => ex.request.trailers = trailers,
            Part::Response => {
                if let Some(r) = ex.response.as_mut() {
                    r.trailers = trailers;
                }
            }
        });
    }

    /// Time since the request started, ns.
    pub fn elapsed_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The capture's `--max-body`.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Records the WebSocket session that followed the upgrade.
    pub fn websocket(&self, ws: tapedeck_captures::websocket::WebSocket) {
        self.with(|ex| ex.websocket = Some(ws));
    }

    /// Records that the upstream failed.
    pub fn error(&self, kind: ErrorKind) {
        self.with(|ex| ex.error = Some(kind));
    }

    fn finish_part(
        &self,
        part: Part,
        chunks: Vec<Bytes>,
        kept: usize,
        seen: u64,
        outcome: Outcome,
        messages: Vec<u64>,
    ) {
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let data = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(kept);
                for c in chunks {
                    buf.extend_from_slice(&c);
                }
                buf.freeze()
            }
        };
        let body = tapedeck_captures::Body {
            truncated: (kept as u64) < seen || outcome != Outcome::Complete,
            data: Blob::from(data),
            len: seen,
            decoded_from: None,
        };
        self.with(|ex| match part {
            Part::Request => {
                if outcome == Outcome::Failed && ex.error.is_none() {
                    ex.error = Some(ErrorKind::ClientAborted);
                }
                ex.request.body = body;
                ex.request.message_ns = messages;
            }
            Part::Response => {
                ex.timing.end_ns = Some(now_ns);
                match outcome {
                    Outcome::Failed if ex.error.is_none() => ex.error = Some(ErrorKind::Reset),
                    Outcome::Abandoned if ex.error.is_none() => ex.error = Some(ErrorKind::ClientAborted),
                    _ => {}
                }
                if let Some(r) = ex.response.as_mut() {
                    r.body = body;
                    r.message_ns = messages;
                }
            }
        });
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let mut exchange = std::mem::take(self.exchange.get_mut().unwrap_or_else(|p| p.into_inner()));
        if exchange.timing.end_ns.is_none() {
            exchange.timing.end_ns = exchange.timing.head_ns.or_else(|| Some(self.started.elapsed().as_nanos() as u64));
        }
        // No answer and no error: the request was dropped unanswered, which only happens
        // when the client went away (a gRPC client past its deadline cancels its stream).
        if exchange.response.is_none() && exchange.error.is_none() {
            exchange.error = Some(ErrorKind::ClientAborted);
        }
        self.queue.push(exchange);
    }
}

/// Collects the captured prefix of one body.
struct Sink {
    recording: Arc<Recording>,
    part: Part,
    chunks: Vec<Bytes>,
    kept: usize,
    seen: u64,
    /// gRPC: when each message arrived whole.
    messages: Option<MessageClock>,
}

impl Sink {
    fn observe(&mut self, data: &Bytes) {
        if let Some(clock) = self.messages.as_mut() {
            let started = self.recording.started;
            clock.observe(data, || started.elapsed().as_nanos() as u64);
        }
        self.seen += data.len() as u64;
        let room = self.recording.max_body - self.kept;
        if room > 0 && !data.is_empty() {
            let take = room.min(data.len());
            self.chunks.push(data.slice(..take));
            self.kept += take;
        }
    }

    fn finish(self, outcome: Outcome) {
        let messages = self.messages.map(MessageClock::into_times).unwrap_or_default();
        self.recording.finish_part(self.part, self.chunks, self.kept, self.seen, outcome, messages);
    }
}

pin_project_lite::pin_project! {
    /// A body passed through unchanged, with an optional capture of its first bytes.
    pub struct TeeBody<B> {
        #[pin]
        inner: B,
        sink: Option<Sink>,
    }

    impl<B> PinnedDrop for TeeBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(sink) = this.project().sink.take() {
                sink.finish(Outcome::Abandoned);
            }
        }
    }
}

impl<B: Body<Data = Bytes>> TeeBody<B> {
    /// A body that is only passed through.
    pub fn plain(inner: B) -> Self {
        TeeBody { inner, sink: None }
    }

    /// A body whose first bytes are captured into `recording` as `part`.
    pub fn capture(inner: B, recording: Arc<Recording>, part: Part) -> Self {
        let sink = Sink { recording, part, chunks: Vec::new(), kept: 0, seen: 0, messages: None };
        if inner.is_end_stream() {
            // Empty bodies (HEAD, 204, 304, GET) may never be polled.
            sink.finish(Outcome::Complete);
            return TeeBody { inner, sink: None };
        }
        TeeBody { inner, sink: Some(sink) }
    }
}

impl<B> TeeBody<B> {
    /// A capture that also notes when each gRPC message arrived whole (`message_ns`).
    pub fn timing_messages(mut self, grpc: bool) -> Self {
        if let Some(sink) = self.sink.as_mut().filter(|_| grpc) {
            sink.messages = Some(MessageClock::default());
        }
        self
    }

    /// The proxy ends the body itself (a gRPC stream idle too long): recorded as failed,
    /// with `kind`.
    pub fn abort(self: Pin<&mut Self>, kind: ErrorKind) {
        if let Some(sink) = self.project().sink.take() {
            sink.recording.error(kind);
            sink.finish(Outcome::Failed);
        }
    }
}

impl<B: Body<Data = Bytes>> Body for TeeBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let Some(sink) = this.sink.as_mut() else { return polled };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    sink.observe(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    sink.recording.trailers(sink.part, trailers);
                }
                // A body of known length may not be polled again after its last frame.
                if this.inner.is_end_stream() {
                    if let Some(sink) = this.sink.take() {
                        sink.finish(Outcome::Complete);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(sink) = this.sink.take() {
                    sink.finish(Outcome::Failed);
                }
            }
            Poll::Ready(None) => {
                if let Some(sink) = this.sink.take() {
                    sink.finish(Outcome::Complete);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
