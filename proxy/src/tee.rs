//! The body tee: [`TeeBody`] wraps a streaming body and passes every frame through
//! untouched; for a captured request it also keeps (reference-counted, not copied) the
//! first `max_body` bytes and counts the rest, and gives them to the [`Recording`] when the
//! body ends. Forwarding never waits for the capture: the tee only looks at frames as they
//! go by.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tapedeck_captures::proto::MessageClock;

use crate::recording::Outcome;
use crate::recording::{Part, Recording};
use tapedeck_captures::ErrorKind;

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
            let recording = &self.recording;
            clock.observe(data, || recording.elapsed_ns());
        }
        self.seen += data.len() as u64;
        let room = self.recording.max_body() - self.kept;
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
