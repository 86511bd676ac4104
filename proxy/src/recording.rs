//! The exchange being captured.
//!
//! A [`Recording`] is the exchange being assembled: the request head when the request
//! arrives, the response head when it comes, each body when its tee lets go, a WebSocket
//! session when its tunnel ends. The handler, both body tees and a tunnel each hold it;
//! when the last of them lets go — everything finished, failed or was abandoned — it is
//! complete and goes to the capture queue, and to the live tap if it wanted it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tapedeck_captures::{Blob, ErrorKind, Exchange};
pub use tapedeck_net::clock::Clock;
use tapedeck_net::convert;

use crate::capture::CaptureQueue;

/// An exchange being captured.
pub struct Recording {
    queue: Option<Arc<CaptureQueue>>,
    tap: Option<Arc<dyn tapedeck_captures::sink::LiveTap>>,
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
pub(crate) enum Outcome {
    Complete,
    Failed,
    Abandoned,
}

impl Recording {
    /// Starts recording `exchange` (request head filled in) that began at `started`, for
    /// the capture `queue` and/or the live `tap`.
    pub fn new(
        queue: Option<Arc<CaptureQueue>>,
        tap: Option<Arc<dyn tapedeck_captures::sink::LiveTap>>,
        clock: Clock,
        started: Instant,
        max_body: usize,
        mut exchange: Exchange,
    ) -> Arc<Self> {
        exchange.timing.tape_start_unix_ns = clock.start_unix_ns;
        exchange.timing.start_ns = clock.offset_ns(started);
        Arc::new(Recording { queue, tap, started, max_body, exchange: Mutex::new(exchange) })
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
                version: convert::version(version),
                headers: convert::headers(headers),
                body: Default::default(),
            });
        });
    }

    /// Records the trailer fields that ended `part`'s body.
    pub(crate) fn trailers(&self, part: Part, trailers: &http::HeaderMap) {
        let trailers = convert::headers(trailers);
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

    pub(crate) fn finish_part(
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
        // The answer has gone to the client: the tap's work starts after it.
        match (&self.queue, &self.tap) {
            (Some(queue), Some(tap)) => {
                tap.offer(exchange.clone());
                queue.push(exchange);
            }
            (Some(queue), None) => queue.push(exchange),
            (None, Some(tap)) => tap.offer(exchange),
            (None, None) => {}
        }
    }
}
