//! `tapedeck archive`: a durable JetStream consumer that writes a capture stream into
//! ordinary rotating tapes. A batch of blocks is appended, flushed and fsynced before any
//! of it is acknowledged, so a crash at any point loses nothing (at-least-once); a block
//! delivered twice (a lost acknowledgement, a restart) is written once, by its block id.
//! Blocks of several producers interleave in time; the tapes say how far (block
//! lateness), and readers merge them back into start order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::StreamExt;
use tapedeck_captures::tape::block::decode_framed;
use tapedeck_captures::tape::{TapeKind, TapeWriter, WriterConfig};

use crate::address::{NatsAuth, StreamAddress};
use crate::{headers, StreamError};

/// Block ids remembered for removing duplicates.
const SEEN_IDS: usize = 100_000;

/// Settings of an archive run.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    /// The stream.
    pub address: StreamAddress,
    /// How to log in.
    pub auth: NatsAuth,
    /// Where the tapes go.
    pub out: PathBuf,
    /// The durable consumer's name: instances sharing it share the work.
    pub durable: String,
    /// Only subjects matching this (`tapedeck.capture.payments.>`).
    pub filter: Option<String>,
    /// Archive what the stream holds now, then stop.
    pub once: bool,
    /// Rotate tapes at this size.
    pub segment_max_bytes: u64,
    /// Rotate tapes at this age.
    pub segment_max_age: Duration,
    /// Accept a shared output directory.
    pub allow_shared_dir: bool,
}

impl ArchiveConfig {
    /// Defaults: durable consumer `tapedeck-archive`, 256 MiB / 1 h segments.
    pub fn new(address: StreamAddress, out: PathBuf) -> Self {
        ArchiveConfig {
            address,
            auth: NatsAuth::default(),
            out,
            durable: "tapedeck-archive".into(),
            filter: None,
            once: false,
            segment_max_bytes: 256 << 20,
            segment_max_age: Duration::from_secs(3600),
            allow_shared_dir: false,
        }
    }
}

/// What an archive run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Blocks written.
    pub blocks: u64,
    /// Exchanges written.
    pub exchanges: u64,
    /// Blocks delivered again and skipped.
    pub duplicates: u64,
    /// Blocks that did not decode (damaged, or not tapedeck's): acknowledged as
    /// terminated, not written.
    pub damaged: u64,
    /// Tapes closed.
    pub segments: Vec<PathBuf>,
}

/// Tape writers by scrub fingerprint: a tape's header says how its records were
/// scrubbed, so blocks scrubbed differently (or not at all) go to tapes of their own.
struct Writers {
    config: ArchiveConfig,
    by_scrub: HashMap<Option<String>, TapeWriter>,
}

impl Writers {
    fn get(&mut self, scrub: Option<String>) -> Result<&mut TapeWriter, StreamError> {
        if !self.by_scrub.contains_key(&scrub) {
            let mut wc = WriterConfig::new(&self.config.out);
            wc.prefix = "archive".into();
            wc.kind = TapeKind::Capture;
            wc.allow_shared_dir = self.config.allow_shared_dir;
            wc.segment_max_bytes = self.config.segment_max_bytes;
            wc.segment_max_age = self.config.segment_max_age;
            wc.sync_every_block = true;
            // Cut only when the batch is flushed: blocks follow the stream's.
            wc.block_max_age = Duration::from_secs(3600);
            wc.labels.push(("stream".into(), self.config.address.to_string()));
            wc.scrub_fingerprint = scrub.clone();
            let w = TapeWriter::new(wc).map_err(StreamError::Tape)?;
            self.by_scrub.insert(scrub.clone(), w);
        }
        Ok(self.by_scrub.get_mut(&scrub).expect("inserted above"))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        for w in self.by_scrub.values_mut() {
            w.flush().map_err(StreamError::Tape)?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), StreamError> {
        for w in self.by_scrub.values_mut() {
            w.tick().map_err(StreamError::Tape)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<PathBuf>, StreamError> {
        let mut out = Vec::new();
        for w in self.by_scrub.into_values() {
            out.extend(w.finish().map_err(StreamError::Tape)?);
        }
        out.sort();
        Ok(out)
    }
}

/// Runs the archive until `stop` is set (or, with `once`, until the stream's messages at
/// the start are written).
pub async fn run(config: ArchiveConfig, stop: Arc<AtomicBool>) -> Result<ArchiveReport, StreamError> {
    let mut options = config.auth.options("tapedeck archive").await?;
    if !config.once {
        options = options.retry_on_initial_connect();
    }
    let client = options
        .connect(config.address.server_urls())
        .await
        .map_err(|e| StreamError::Connect { address: config.address.to_string(), why: e.to_string() })?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(&config.address.stream)
        .await
        .map_err(|e| StreamError::Stream { stream: config.address.stream.clone(), why: e.to_string() })?;
    let last = stream
        .info()
        .await
        .map_err(|e| StreamError::Stream { stream: config.address.stream.clone(), why: e.to_string() })?
        .state
        .last_sequence;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                filter_subject: config.filter.clone().unwrap_or_default(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| StreamError::Stream { stream: config.address.stream.clone(), why: format!("consumer: {e}") })?;
    let mut writers = Writers { config: config.clone(), by_scrub: HashMap::new() };
    let mut seen: HashSet<String> = HashSet::new();
    let mut order: VecDeque<String> = VecDeque::new();
    let mut decompressor = zstd::bulk::Decompressor::new()
        .map_err(|e| StreamError::Tape(tapedeck_captures::TapeError::io(&config.out, "initialising zstd", e)))?;
    let mut report = ArchiveReport::default();
    let mut idle_fetches = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = consumer
            .fetch()
            .max_messages(64)
            .expires(Duration::from_millis(if config.once { 500 } else { 2000 }))
            .messages()
            .await
            .map_err(|e| StreamError::Stream { stream: config.address.stream.clone(), why: e.to_string() })?;
        let mut taken = Vec::new();
        let mut highest = 0;
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("archive: {e}");
                    break;
                }
            };
            if let Ok(info) = message.info() {
                highest = highest.max(info.stream_sequence);
            }
            let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.to_string());
            let id = header(headers::BLOCK);
            if id.as_ref().is_some_and(|id| seen.contains(id)) {
                report.duplicates += 1;
                taken.push((message, AckKind::Ack));
                continue;
            }
            match decode_framed(&message.payload, &mut decompressor) {
                Ok((_, exchanges)) => {
                    let writer = writers.get(header(headers::SCRUB))?;
                    for ex in &exchanges {
                        writer.append(ex).map_err(StreamError::Tape)?;
                    }
                    report.blocks += 1;
                    report.exchanges += exchanges.len() as u64;
                    if let Some(id) = id {
                        seen.insert(id.clone());
                        order.push_back(id);
                        if order.len() > SEEN_IDS {
                            if let Some(old) = order.pop_front() {
                                seen.remove(&old);
                            }
                        }
                    }
                    taken.push((message, AckKind::Ack));
                }
                Err(e) => {
                    tracing::warn!(subject = %message.subject, "archive: a message is not a readable block ({e}); skipped");
                    report.damaged += 1;
                    taken.push((message, AckKind::Term));
                }
            }
        }
        if taken.is_empty() {
            writers.tick()?;
            idle_fetches += 1;
            // With --once: done when the stream's messages at the start are in (or the
            // consumer has nothing more to give, twice over).
            if config.once && (highest >= last || idle_fetches >= 2) {
                break;
            }
            continue;
        }
        idle_fetches = 0;
        // On disk (fsynced) before anything is acknowledged.
        writers.flush()?;
        for (message, kind) in taken {
            if let Err(e) = message.ack_with(kind).await {
                tracing::warn!("archive: acknowledgement failed ({e}); the block will come again and be skipped");
            }
        }
        if config.once && highest >= last {
            break;
        }
    }
    report.segments = writers.finish()?;
    Ok(report)
}
