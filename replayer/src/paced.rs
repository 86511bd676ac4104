//! A gRPC request body sent message by message at its recorded pace: a client stream
//! that took 40 s in production takes 40 s (20 s at 2x) against staging, with its
//! messages where they were in time, and its trailers after them. Without a pace (flat
//! out, or not a stream) the messages go at once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A request extension: when each message of the body is due, after the request is sent,
/// and the trailers that follow them.
#[derive(Clone, Debug, Default)]
pub struct MessagePace {
    /// One per message (a message beyond them goes with the last).
    pub due: Vec<Duration>,
    /// Trailer fields sent after the last message.
    pub trailers: Option<HeaderMap>,
}

impl MessagePace {
    /// The recorded times of a request's messages (ns after it started), at `speed`.
    pub fn recorded(message_ns: &[u64], speed: f64) -> Vec<Duration> {
        let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
        message_ns.iter().map(|&ns| Duration::from_secs_f64(ns as f64 / 1e9 / speed)).collect()
    }

    /// When the last message is due.
    pub fn span(&self) -> Duration {
        self.due.iter().copied().max().unwrap_or_default()
    }
}

/// The body: frames waiting for their time, then trailers.
#[derive(Debug)]
pub struct PacedBody {
    frames: VecDeque<(Duration, Bytes)>,
    trailers: Option<HeaderMap>,
    /// When the first frame was asked for (the request's send).
    start: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    len: u64,
}

impl PacedBody {
    /// `data` at once.
    pub fn whole(data: Bytes) -> Self {
        PacedBody::new(data, None)
    }

    /// `data` (gRPC frames) paced by `pace`; at once if it has none, or if `data` is not
    /// whole frames.
    pub fn new(data: Bytes, pace: Option<&MessagePace>) -> Self {
        let len = data.len() as u64;
        let trailers = pace.and_then(|p| p.trailers.clone());
        let mut frames = VecDeque::new();
        match pace.filter(|p| !p.due.is_empty()).and_then(|p| split(&data).map(|f| (p, f))) {
            Some((pace, parts)) => {
                let last = *pace.due.last().unwrap_or(&Duration::ZERO);
                for (i, part) in parts.into_iter().enumerate() {
                    frames.push_back((pace.due.get(i).copied().unwrap_or(last), part));
                }
            }
            None if !data.is_empty() => frames.push_back((Duration::ZERO, data)),
            None => {}
        }
        PacedBody { frames, trailers, start: None, timer: None, len }
    }
}

/// `data` cut at its gRPC frame boundaries; `None` if it is not whole frames.
fn split(data: &Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let head = data.get(at..at + 5)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let end = at.checked_add(5 + len).filter(|e| *e <= data.len())?;
        out.push(data.slice(at..end));
        at = end;
    }
    Some(out)
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let start = *this.start.get_or_insert_with(Instant::now);
        if let Some((due, _)) = this.frames.front() {
            let at = start + *due;
            if Instant::now() < at {
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                ready!(timer.as_mut().poll(cx));
            }
            let (_, data) = this.frames.pop_front().expect("a front frame");
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn frame(text: &str) -> Vec<u8> {
        [&[0u8][..], &(text.len() as u32).to_be_bytes(), text.as_bytes()].concat()
    }

    #[tokio::test(start_paused = true)]
    async fn messages_go_at_their_time_then_the_trailers() {
        let data = Bytes::from([frame("a"), frame("bb"), frame("ccc")].concat());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-done", "yes".parse().unwrap());
        let pace = MessagePace {
            due: MessagePace::recorded(&[0, 100_000_000, 300_000_000], 2.0),
            trailers: Some(trailers.clone()),
        };
        assert_eq!(pace.span(), Duration::from_millis(150));
        let mut body = PacedBody::new(data, Some(&pace));
        let start = Instant::now();
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            let at = start.elapsed();
            match frame.into_data() {
                Ok(d) => seen.push((at, d.len())),
                Err(f) => {
                    assert_eq!(f.into_trailers().unwrap(), trailers);
                    seen.push((at, 0));
                }
            }
        }
        let ms = |d: Duration| d.as_millis();
        let got: Vec<_> = seen.iter().map(|(at, n)| (ms(*at), *n)).collect();
        assert_eq!(got, [(0, 6), (50, 7), (150, 8), (150, 0)], "at half the recorded times, trailers last");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_pace_or_whole_frames_the_body_goes_at_once() {
        let whole = PacedBody::whole(Bytes::from_static(b"plain"));
        assert_eq!(whole.collect().await.unwrap().to_bytes(), Bytes::from_static(b"plain"));
        let pace = MessagePace { due: vec![Duration::from_secs(5)], trailers: None };
        let cut = PacedBody::new(Bytes::from_static(&[0, 0, 0, 0, 9, 1]), Some(&pace));
        let start = Instant::now();
        assert_eq!(cut.collect().await.unwrap().to_bytes().len(), 6);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
