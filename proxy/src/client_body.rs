//! The client's request body on its way upstream: held to a deadline, and watched so the
//! handler knows whether it was sent whole and, if not, whose fault that was.
//!
//! A client that trickles its body must not keep a proxy connection, an upstream
//! connection and a worker's attention forever. The body gets `timeout` to arrive, plus
//! one second for every `min_rate` bytes received (Apache's `mod_reqtimeout`
//! `body=…,MinRate=…`): a large upload on a slow but steady link keeps going, a client
//! sending a byte now and then is cut off. Time waiting for the upstream to read does not
//! count against the client only in the sense that the deadline is checked when the body
//! is polled; a stalled upstream is the response timeout's business.
//!
//! [`BodyState`] is shared with the handler: the upstream connection may go back to the
//! pool only if the body was sent completely (an upstream that answers early — a 401, a
//! 413, nginx `return` — would otherwise be handed to the next request while this body
//! still streams into it, and that request would wait behind it), and a failed upstream
//! request whose cause was the client's body is the client's error (400 or 408), not the
//! upstream's (502).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub use crate::failure::ClientFailure;

/// How a request body's trip went, as far as it has gone.
#[derive(Debug)]
pub struct BodyState {
    sent: AtomicBool,
    failure: AtomicU8,
    /// When the request started, and how long after it the body last moved (or ended).
    start: std::time::Instant,
    moved_ns: std::sync::atomic::AtomicU64,
}

impl BodyState {
    fn new(start: std::time::Instant) -> Self {
        BodyState { sent: AtomicBool::new(false), failure: AtomicU8::new(0), start, moved_ns: Default::default() }
    }

    /// When the body last moved towards the upstream, or was sent whole (the request's
    /// start, if it has not moved yet). The upstream's response timeout counts from
    /// here: an upload's own time is not the upstream's slowness.
    pub fn last_moved(&self) -> std::time::Instant {
        self.start + Duration::from_nanos(self.moved_ns.load(Ordering::Acquire))
    }

    fn moved(&self) {
        self.moved_ns.store(self.start.elapsed().as_nanos() as u64, Ordering::Release);
    }

    /// True once the whole body was handed to the upstream connection.
    pub fn sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }

    /// Why the body failed, if it did.
    pub fn failure(&self) -> Option<ClientFailure> {
        ClientFailure::of_code(self.failure.load(Ordering::Acquire))
    }

    /// Records the body's failure; true the first time.
    fn fail(&self, f: ClientFailure) -> bool {
        self.failure.compare_exchange(0, f.code(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// The body's time limit: a base and a minimum rate that extends it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit {
    /// Time for the body before any extension; zero turns the limit off.
    pub timeout: Duration,
    /// Each `min_rate` bytes received extend the deadline by a second; 0 for a fixed
    /// deadline.
    pub min_rate: u64,
}

impl BodyLimit {
    fn deadline(&self, start: Instant, received: u64) -> Instant {
        let extra = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(received as f64 / rate as f64),
        };
        // Saturating: a limit of years must not overflow the clock.
        let far = start + Duration::from_secs(100 * 365 * 24 * 3600);
        start.checked_add(self.timeout).and_then(|t| t.checked_add(extra)).unwrap_or(far).min(far)
    }
}

/// The error a client body ends with when it ran out of time.
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client did not send its request body in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Errors of a [`ClientBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A client's request body, passed through, with a deadline and a [`BodyState`].
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        state: Arc<BodyState>,
        limit: BodyLimit,
        start: Instant,
        received: u64,
        // Armed at the first poll that has to wait (most bodies never do).
        timer: Option<Pin<Box<Sleep>>>,
        // Counts the failure, whether or not the upstream had answered already.
        metrics: Arc<crate::metrics::Metrics>,
    }
}

impl<B: Body<Data = Bytes, Error = hyper::Error>> ClientBody<B> {
    /// Wraps `inner`, whose request began at `start`; a failure is counted in `metrics`.
    pub fn new(
        inner: B,
        limit: BodyLimit,
        start: Instant,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Self, Arc<BodyState>) {
        let state = Arc::new(BodyState::new(start.into_std()));
        if inner.is_end_stream() {
            state.sent.store(true, Ordering::Release);
        }
        (ClientBody { inner, state: state.clone(), limit, start, received: 0, timer: None, metrics }, state)
    }
}

impl<B: Body<Data = Bytes, Error = hyper::Error>> Body for ClientBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.state.moved();
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                    if let Some(timer) = this.timer.as_mut() {
                        timer.as_mut().reset(this.limit.deadline(*this.start, *this.received));
                    }
                }
                // A body of known length ends with its last frame: hyper does not poll
                // it again, so `Ready(None)` never comes.
                if this.inner.is_end_stream() {
                    this.state.sent.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let failure = ClientFailure::of_hyper(&e);
                if this.state.fail(failure) {
                    this.metrics.client_error(failure);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.state.moved();
                this.state.sent.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.limit.timeout.is_zero() {
                    return Poll::Pending;
                }
                let deadline = this.limit.deadline(*this.start, *this.received);
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if this.state.fail(ClientFailure::TimedOut) {
                            this.metrics.client_error(ClientFailure::TimedOut);
                        }
                        Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn the_deadline_grows_with_what_arrived() {
        let start = Instant::now();
        let limit = BodyLimit { timeout: Duration::from_secs(10), min_rate: 500 };
        assert_eq!(limit.deadline(start, 0), start + Duration::from_secs(10));
        assert_eq!(limit.deadline(start, 5_000), start + Duration::from_secs(20));
        let fixed = BodyLimit { timeout: Duration::from_secs(10), min_rate: 0 };
        assert_eq!(fixed.deadline(start, 1 << 30), start + Duration::from_secs(10));
    }

    #[test]
    fn the_first_failure_is_the_one_kept() {
        let s = BodyState::new(std::time::Instant::now());
        assert_eq!(s.failure(), None);
        assert!(s.fail(ClientFailure::TimedOut));
        assert!(!s.fail(ClientFailure::Aborted));
        assert_eq!(s.failure(), Some(ClientFailure::TimedOut));
        assert!(!s.sent());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_counts_as_sent_and_needs_no_timer() {
        let (body, state) = ClientBody::new(
            http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}),
            limit(),
            Instant::now(),
            Arc::new(crate::metrics::Metrics::new()),
        );
        assert!(state.sent());
        assert!(body.collect().await.is_ok());
    }

    fn limit() -> BodyLimit {
        BodyLimit { timeout: Duration::from_secs(5), min_rate: 0 }
    }
}
