//! The capture sink: scrubbed exchanges in tape blocks (the same bytes as a block of a
//! `.tape` file, one NATS message each, at most 1 MiB) published to JetStream subject
//! `tapedeck.capture.<service>.<producer>` with acknowledgements.
//!
//! The capture writer's thread only encodes and compresses, then hands the block to a
//! queue bounded in bytes; a thread of the sink's own publishes from it, a window of
//! blocks at a time, and takes a block off the queue once JetStream has acknowledged it.
//! While the server is slow or down, blocks wait in the queue (the client reconnects by
//! itself); a block that does not fit is dropped and counted. A request never waits for
//! any of it. A block re-sent after a lost acknowledgement carries the same message id,
//! so JetStream stores it once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use tapedeck_captures::sink::{CaptureSink, SinkStats};
use tapedeck_captures::tape::block::BlockBuilder;
use tapedeck_captures::tape::WriterConfig;
use tapedeck_captures::Exchange;

use crate::address::{NatsAuth, StreamAddress};
use crate::headers;

/// A block is at most this large before compression, so that it fits a NATS message
/// (1 MiB by default) once compressed.
const MAX_BLOCK_RAW: usize = 960 << 10;

/// Settings of a [`NatsSink`].
#[derive(Clone, Debug)]
pub struct NatsSinkConfig {
    /// The stream (created with subjects `tapedeck.capture.>` if it does not exist).
    pub address: StreamAddress,
    /// How to log in.
    pub auth: NatsAuth,
    /// The service captured (a subject token).
    pub service: String,
    /// Bytes of blocks held while the server is slow or down; beyond, blocks are dropped.
    pub queue_max_bytes: usize,
    /// Blocks published and not yet acknowledged, at most.
    pub ack_window: usize,
    /// How long closing waits for the queue to be acknowledged.
    pub close_timeout: Duration,
    /// Create the stream, made so, if it does not exist (`--create-stream`).
    pub create_stream: Option<crate::StreamSettings>,
}

impl NatsSinkConfig {
    /// Defaults for `address`.
    pub fn new(address: StreamAddress) -> Self {
        NatsSinkConfig {
            address,
            auth: NatsAuth::default(),
            service: "default".into(),
            queue_max_bytes: 256 << 20,
            ack_window: 32,
            close_timeout: Duration::from_secs(5),
            create_stream: None,
        }
    }
}

/// A subject token: letters, digits, `-` and `_` kept, anything else `_`.
pub fn subject_token(s: &str) -> String {
    let t: String =
        s.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// One block waiting for its acknowledgement.
struct Outgoing {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
    id: String,
    records: u32,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Outgoing>>,
    queue_bytes: AtomicU64,
    wake: tokio::sync::Notify,
    closing: AtomicBool,
    blocks: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_refused: AtomicU64,
    connected: AtomicBool,
    /// Publishing fails (no acknowledgement, an error) since the episode began; a
    /// connection to a server that is frozen or out of storage stays up.
    failing: AtomicBool,
    last_server_error: Mutex<Option<(String, Instant)>>,
    /// The server's largest message (0 until connected): blocks are cut to fit it.
    max_payload: std::sync::atomic::AtomicUsize,
}

/// Publishes capture blocks to a JetStream stream.
pub struct NatsSink {
    config: NatsSinkConfig,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    builder: BlockBuilder,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    frame: Vec<u8>,
    block_max_records: u32,
    block_max_bytes: usize,
    block_max_age: Duration,
    /// Latest request start already published (for the lateness a reader allows).
    frontier: i64,
    subject: String,
    producer: String,
    scrub: Option<String>,
    labels: String,
    seq: u64,
    /// Distinguishes this run's block ids from an earlier run's of the same producer.
    run: String,
    dropped_encode: u64,
}

impl NatsSink {
    /// A sink that will publish to `config.address` once opened.
    pub fn new(config: NatsSinkConfig) -> Self {
        NatsSink {
            config,
            shared: Arc::new(Shared::default()),
            thread: None,
            builder: BlockBuilder::new(),
            compressor: None,
            frame: Vec::new(),
            block_max_records: 4096,
            block_max_bytes: MAX_BLOCK_RAW,
            block_max_age: Duration::from_secs(1),
            frontier: i64::MIN,
            subject: String::new(),
            producer: String::new(),
            scrub: None,
            labels: String::new(),
            seq: 0,
            run: String::new(),
            dropped_encode: 0,
        }
    }

    /// Uncompressed bytes a block holds at most: the configured size, or less so that it
    /// fits the server's largest message once compressed and framed (zstd grows data it
    /// cannot compress by a little).
    fn block_limit(&self) -> usize {
        let server = self.shared.max_payload.load(Ordering::Relaxed);
        if server == 0 {
            return self.block_max_bytes;
        }
        self.block_max_bytes.min((server - server / 16).saturating_sub(4096).max(1024))
    }

    /// Compresses the gathered block and queues it for publishing (or drops it, counted,
    /// when the queue is full).
    fn cut(&mut self) {
        let records = self.builder.records();
        if records == 0 {
            return;
        }
        let Some(compressor) = self.compressor.as_mut() else {
            // No compressor (zstd could not start): nothing can be published; never hold
            // the records.
            self.dropped_encode += u64::from(records);
            self.builder.reset();
            return;
        };
        let span = self.builder.span().unwrap_or_default();
        let framed = self.builder.frame(compressor, &mut self.frame);
        self.builder.reset();
        if framed.is_err() {
            self.dropped_encode += u64::from(records);
            return;
        }
        self.frontier = self.frontier.max(span.1);
        self.seq += 1;
        let id = format!("{}-{}-{}", self.producer, self.run, self.seq);
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::PRODUCER, self.producer.as_str());
        // Header values are one line of text: the service as its subject token.
        h.insert(headers::SERVICE, subject_token(&self.config.service).as_str());
        h.insert(headers::BLOCK, id.as_str());
        h.insert(headers::FIRST_NS, span.0.to_string().as_str());
        h.insert(headers::LAST_NS, span.1.to_string().as_str());
        h.insert(headers::RECORDS, records.to_string().as_str());
        if let Some(scrub) = &self.scrub {
            h.insert(headers::SCRUB, scrub.as_str());
        }
        if !self.labels.is_empty() {
            h.insert(headers::LABELS, self.labels.as_str());
        }
        let payload = Bytes::copy_from_slice(&self.frame);
        let size = payload.len() as u64;
        let out = Outgoing { subject: self.subject.clone(), headers: h, payload, id, records };
        let shared = &self.shared;
        if shared.queue_bytes.load(Ordering::Relaxed) + size > self.config.queue_max_bytes as u64 {
            shared.dropped_queue_full.fetch_add(u64::from(records), Ordering::Relaxed);
            return;
        }
        shared.queue_bytes.fetch_add(size, Ordering::Relaxed);
        shared.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(out);
        shared.wake.notify_one();
    }
}

impl CaptureSink for NatsSink {
    fn open(&mut self, writer: &WriterConfig) {
        self.producer = subject_token(&writer.instance);
        self.subject = format!("tapedeck.capture.{}.{}", subject_token(&self.config.service), self.producer);
        self.scrub = writer.scrub_fingerprint.clone();
        self.labels = headers::encode_labels(&writer.labels);
        self.block_max_records = writer.block_max_records.max(1);
        self.block_max_bytes = writer.block_max_bytes.clamp(1, MAX_BLOCK_RAW);
        self.block_max_age = writer.block_max_age;
        self.run = format!("{:x}", tapedeck_captures::tape::writer::now_unix_ns());
        self.compressor = zstd::bulk::Compressor::new(writer.zstd_level).ok();
        let (shared, config) = (self.shared.clone(), self.config.clone());
        let name = format!("tapedeck {} ({})", self.producer, config.service);
        self.thread = std::thread::Builder::new()
            .name("tapedeck-sink".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    tracing::error!("the stream sink cannot start its runtime; captures are not published");
                    return;
                };
                rt.block_on(publish(shared, config, name));
            })
            .map_err(
                |e| tracing::error!(error = %e, "cannot start the stream sink's thread; captures are not published"),
            )
            .ok();
    }

    fn append(&mut self, exchange: &Exchange) {
        if self.builder.push(exchange, self.frontier).is_err() {
            self.dropped_encode += 1;
            return;
        }
        if self.builder.is_full(self.block_max_records, self.block_limit()) {
            self.cut();
        }
    }

    fn tick(&mut self) {
        if self.builder.opened().is_some_and(|t| t.elapsed() >= self.block_max_age) {
            self.cut();
        }
    }

    fn stats(&self) -> SinkStats {
        let s = &self.shared;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkStats {
            blocks: load(&s.blocks),
            records: load(&s.records),
            bytes: load(&s.bytes),
            dropped_queue_full: load(&s.dropped_queue_full),
            dropped_encode: self.dropped_encode,
            dropped_refused: load(&s.dropped_refused),
            queue_bytes: load(&s.queue_bytes),
            connected: s.connected.load(Ordering::Relaxed) && !s.failing.load(Ordering::Relaxed),
        }
    }

    fn close(&mut self) -> SinkStats {
        self.cut();
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Never published (no thread, or the deadline passed): dropped, counted.
        let left: u64 = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.drain(..).map(|o| u64::from(o.records)).sum()
        };
        self.shared.dropped_refused.fetch_add(left, Ordering::Relaxed);
        self.shared.queue_bytes.store(0, Ordering::Relaxed);
        self.stats()
    }

    fn describe(&self) -> String {
        if self.subject.is_empty() {
            self.config.address.to_string()
        } else {
            format!("{} (subject {})", self.config.address, self.subject)
        }
    }
}

/// The publishing thread: connects (and reconnects), makes sure the stream exists, then
/// publishes the queue a window at a time until closed.
async fn publish(shared: Arc<Shared>, config: NatsSinkConfig, name: String) {
    let deadline = |shared: &Shared| shared.closing.load(Ordering::Acquire);
    let options = match config.auth.options(&name).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("stream sink: {e}; captures are not published");
            return;
        }
    };
    let events = shared.clone();
    let options = options.retry_on_initial_connect().event_callback(move |event| {
        let events = events.clone();
        async move {
            match event {
                async_nats::Event::Connected => events.connected.store(true, Ordering::Relaxed),
                async_nats::Event::Disconnected => {
                    events.connected.store(false, Ordering::Relaxed);
                    tracing::warn!("stream sink: disconnected; captures queue (bounded) until it reconnects");
                }
                async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
                    // Each reconnect attempt repeats it: said once a minute at most.
                    let text = event.to_string();
                    let mut last = events.last_server_error.lock().unwrap_or_else(|p| p.into_inner());
                    let fresh =
                        last.as_ref().is_none_or(|(t, at)| *t != text || at.elapsed() >= Duration::from_secs(60));
                    if fresh {
                        let hint = if text.contains("authorization") || text.contains("authentication") {
                            " (the server refused the login: check --nats-creds, --nats-nkey, --nats-token-file or \
                             --nats-user)"
                        } else {
                            ""
                        };
                        tracing::error!("stream sink: the server says: {text}{hint}");
                        *last = Some((text, Instant::now()));
                    }
                }
                other => tracing::debug!("stream sink: {other}"),
            }
        }
    });
    let client = match options.connect(config.address.server_urls()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("stream sink: {}; captures are not published", crate::connect_error(&config.address, &e));
            return;
        }
    };
    if client.connection_state() == async_nats::connection::State::Connected {
        shared.connected.store(true, Ordering::Relaxed);
    }
    let mut seen_max_payload = 0;
    let mut too_large_said: Option<Instant> = None;
    let mut wrong_stream_said: Option<Instant> = None;
    let js = jetstream::new(client);
    let mut closing_since: Option<Instant> = None;
    let mut stream_ready = false;
    let mut trouble = Trouble::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        if deadline(&shared) {
            let since = *closing_since.get_or_insert_with(Instant::now);
            let empty = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            if empty || since.elapsed() >= config.close_timeout {
                return;
            }
        }
        // Known once connected (and again after a reconnect, perhaps to another server).
        let max_payload = js.client().server_info().max_payload;
        if max_payload != seen_max_payload && max_payload > 0 {
            seen_max_payload = max_payload;
            shared.max_payload.store(max_payload, Ordering::Relaxed);
        }
        if !stream_ready {
            match ensure_stream(&js, &config).await {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    trouble.fail(&shared, &e);
                    pause(&shared, &mut backoff).await;
                    continue;
                }
            }
        }
        let batch: Vec<(String, async_nats::HeaderMap, Bytes, String)> = {
            let q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.iter()
                .take(config.ack_window.max(1))
                .map(|o| (o.subject.clone(), o.headers.clone(), o.payload.clone(), o.id.clone()))
                .collect()
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(100), shared.wake.notified()).await;
            continue;
        }
        // Publish the window, then take its acknowledgements in order.
        let mut acks = Vec::with_capacity(batch.len());
        for (subject, headers, payload, id) in batch {
            let message =
                jetstream::message::PublishMessage::build().payload(payload).headers(headers).message_id(id.as_str());
            match js.send_publish(subject, message).await {
                Ok(ack) => acks.push(Ok(ack)),
                Err(e) => {
                    acks.push(Err(e));
                    break;
                }
            }
        }
        let mut problem = None;
        for ack in acks {
            let result = match ack {
                Ok(future) => future.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => {
                    if ack.stream != config.address.stream
                        && wrong_stream_said.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60))
                    {
                        wrong_stream_said = Some(Instant::now());
                        tracing::error!(
                            "stream sink: the captures went to stream {}, not {}: that stream takes their subjects \
                             (tapedeck.capture.{}.…); publish to it, or give the streams subjects apart",
                            ack.stream,
                            config.address.stream,
                            subject_token(&config.service)
                        );
                    }
                    let Some(done) = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
                    shared.queue_bytes.fetch_sub(done.payload.len() as u64, Ordering::Relaxed);
                    shared.blocks.fetch_add(1, Ordering::Relaxed);
                    shared.records.fetch_add(u64::from(done.records), Ordering::Relaxed);
                    shared.bytes.fetch_add(done.payload.len() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    // Never fits this server (one capture larger than its largest message):
                    // counted, not retried, said once a minute at most.
                    if let Some(done) = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
                        shared.queue_bytes.fetch_sub(done.payload.len() as u64, Ordering::Relaxed);
                        shared.dropped_refused.fetch_add(u64::from(done.records), Ordering::Relaxed);
                    }
                    if too_large_said.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                        too_large_said = Some(Instant::now());
                        tracing::warn!(
                            "stream sink: a block was larger than the server's max_payload ({e}): a capture larger \
                             than that cannot be published (lower --max-body, or raise max_payload); dropped, counted"
                        );
                    }
                    break;
                }
                Err(e) => {
                    problem = Some(e);
                    break;
                }
            }
        }
        match problem {
            None => {
                trouble.ok(&shared);
                backoff = Duration::from_millis(100);
            }
            Some(e) => {
                trouble.fail(&shared, &format!("publishing to {} failed ({e})", config.address));
                if e.kind() == PublishErrorKind::StreamNotFound {
                    stream_ready = false;
                }
                pause(&shared, &mut backoff).await;
            }
        }
    }
}

/// How often a sink that keeps failing says so again.
const COMPLAIN_EVERY: Duration = Duration::from_secs(60);

/// A failure episode: said when it starts, again each minute with what it has cost, and
/// when it ends.
#[derive(Default)]
struct Trouble {
    since: Option<Instant>,
    said: Option<Instant>,
}

impl Trouble {
    fn fail(&mut self, shared: &Shared, what: &str) {
        shared.failing.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self.said.is_some_and(|t| now.duration_since(t) < COMPLAIN_EVERY) {
            return;
        }
        self.said = Some(now);
        let queued = shared.queue_bytes.load(Ordering::Relaxed);
        let dropped =
            shared.dropped_queue_full.load(Ordering::Relaxed) + shared.dropped_refused.load(Ordering::Relaxed);
        if since == now {
            tracing::error!(
                "stream sink: {what}; captures queue (up to --queue-max-bytes) and are retried, requests are unaffected"
            );
        } else {
            tracing::warn!(
                "stream sink: still failing after {}s: {what}; {queued} bytes queued, {dropped} captures dropped so far",
                now.duration_since(since).as_secs()
            );
        }
    }

    fn ok(&mut self, shared: &Shared) {
        shared.failing.store(false, Ordering::Relaxed);
        if let Some(since) = self.since.take() {
            tracing::warn!("stream sink: publishing resumed after {}s", since.elapsed().as_secs());
            self.said = None;
        }
    }
}

/// Waits `backoff` (doubled up to 2 s for next time), or less when closing.
async fn pause(shared: &Shared, backoff: &mut Duration) {
    let wait = if shared.closing.load(Ordering::Acquire) { Duration::from_millis(50) } else { *backoff };
    tokio::time::sleep(wait).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
}

/// The stream must exist; with `create_stream`, it is created (file storage, subjects
/// `tapedeck.capture.<service>.>`) if it does not.
async fn ensure_stream(js: &jetstream::Context, config: &NatsSinkConfig) -> Result<(), String> {
    let service = subject_token(&config.service);
    let ours = format!("tapedeck.capture.{service}.>");
    crate::ensure_subjects(
        js,
        &config.address,
        &ours,
        &format!("tapedeck.capture.{service}._"),
        config.create_stream.as_ref(),
    )
    .await
}

/// True when NATS subject `filter` (`*` one token, `>` the rest) takes `subject`.
pub(crate) fn subject_matches(filter: &str, subject: &str) -> bool {
    let (mut f, mut s) = (filter.split('.'), subject.split('.'));
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when `e` says the stream does not exist.
pub(crate) fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Creates a capture stream: file storage, `subjects`, a two-minute window for removing
/// blocks published twice.
pub(crate) async fn create_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
    settings: &crate::StreamSettings,
) -> Result<(), String> {
    js.create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        storage: jetstream::stream::StorageType::File,
        // JetStream's de-duplication window may not exceed the stream's age limit.
        duplicate_window: match settings.max_age {
            age if age.is_zero() => Duration::from_secs(120),
            age => age.min(Duration::from_secs(120)),
        },
        num_replicas: settings.replicas,
        max_age: settings.max_age,
        max_bytes: settings.max_bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| {
        let overlap = if e.to_string().contains("overlap") {
            " (another stream already takes those subjects: publish to that one, or give this one other \
             subjects with the NATS tools)"
        } else {
            ""
        };
        let text = e.to_string();
        let replicas =
            if ["insufficient resources", "replicas", "no suitable peers", "10005"].iter().any(|t| text.contains(t)) {
                format!(
                    " (--stream-replicas {} needs a JetStream cluster of at least that many servers with room)",
                    settings.replicas
                )
            } else {
                String::new()
            };
        format!("cannot create stream {name} for {subjects}: {e}{overlap}{replicas}")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_match_as_nats_does() {
        use super::subject_matches as m;
        assert!(m("tapedeck.capture.>", "tapedeck.capture.shop.pod-1"));
        assert!(m("tapedeck.capture.shop.>", "tapedeck.capture.shop.pod-1"));
        assert!(m("tapedeck.*.shop.*", "tapedeck.capture.shop.pod-1"));
        assert!(!m("tapedeck.capture.shop.>", "tapedeck.capture.pay.pod-1"));
        assert!(!m("tapedeck.capture.>", "tapedeck.capture"));
        assert!(!m("tapedeck.capture.shop", "tapedeck.capture.shop.pod-1"));
    }
}
