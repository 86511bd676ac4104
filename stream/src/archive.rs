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
use tapedeck_captures::tape::block::{check_framed, decode_framed};
use tapedeck_captures::tape::{TapeKind, TapeWriter, WriterConfig};

use crate::address::{NatsAuth, StreamAddress};
use crate::{headers, StreamError};

/// Tape writers open at most (kinds of scrub fingerprint and producer labels).
const MAX_WRITERS: usize = 64;

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
    /// Create the stream, made so, if it does not exist (`--create-stream`).
    pub create_stream: Option<crate::StreamSettings>,
    /// Name `--create-stream` when the stream does not exist (the command has it).
    pub suggest_create: bool,
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
            create_stream: None,
            suggest_create: true,
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

/// Tape writers by scrub fingerprint and labels: a tape's header says how its records
/// were scrubbed and where they were recorded (the replay's guard against production
/// reads the `upstream` label), so blocks that differ in either go to tapes of their own.
struct Writers {
    config: ArchiveConfig,
    by_scrub: HashMap<(Option<String>, String), TapeWriter>,
}

impl Writers {
    fn get(&mut self, scrub: Option<String>, labels: String) -> Result<&mut TapeWriter, StreamError> {
        let mut key = (scrub, labels);
        if !self.by_scrub.contains_key(&key) && self.by_scrub.len() >= MAX_WRITERS {
            // Open files stay bounded whatever the stream holds: beyond, blocks keep their
            // scrub fingerprint and lose their labels.
            if !self.by_scrub.keys().any(|(_, l)| l.is_empty()) {
                tracing::warn!(
                    "archive: more than {MAX_WRITERS} kinds of producer labels; the rest are archived without labels"
                );
            }
            key.1.clear();
        }
        if !self.by_scrub.contains_key(&key) {
            let (scrub, labels) = key.clone();
            let mut wc = WriterConfig::new(&self.config.out);
            wc.prefix = "archive".into();
            wc.kind = TapeKind::Capture;
            wc.allow_shared_dir = self.config.allow_shared_dir;
            wc.segment_max_bytes = self.config.segment_max_bytes;
            wc.segment_max_age = self.config.segment_max_age;
            wc.sync_every_block = true;
            // Cut only when the batch is flushed: blocks follow the stream's.
            wc.block_max_age = Duration::from_secs(3600);
            wc.labels = headers::decode_labels(&labels);
            wc.labels.retain(|(k, _)| k != "stream");
            wc.labels.push(("stream".into(), self.config.address.to_string()));
            wc.scrub_fingerprint = scrub;
            // Each writer names its tapes apart: several may rotate in one second.
            wc.instance = format!("{}-{}", wc.instance, self.by_scrub.len() + 1);
            let w = TapeWriter::new(wc).map_err(StreamError::Tape)?;
            self.by_scrub.insert(key.clone(), w);
        }
        Ok(self.by_scrub.get_mut(&key).expect("inserted above"))
    }

    /// The output directory is one tapes can be written to (private, writable), made if
    /// missing.
    fn check(&mut self) -> Result<(), StreamError> {
        let out = self.config.out.clone();
        tapedeck_captures::files::make_private_dir(&out, self.config.allow_shared_dir, "creating the output directory")
            .map_err(StreamError::Tape)?;
        tapedeck_captures::files::write_probe(&out)
            .map_err(|e| StreamError::Tape(tapedeck_captures::TapeError::io(&out, "checking that it is writable", e)))
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
    let mut sink = Sink::new(&config)?;
    // Unreachable at start: said at once (later outages, the client rides out, and says
    // so: when the connection goes, each minute while it is away, and when it is back).
    let away: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let events = away.clone();
    let server = config.address.to_string();
    let options = config.auth.options("tapedeck archive").await?.event_callback(move |event| {
        let (away, server) = (events.clone(), server.clone());
        async move {
            let mut away = away.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                async_nats::Event::Disconnected if away.is_none() => {
                    *away = Some(std::time::Instant::now());
                    tracing::warn!(
                        "archive: lost the connection to {server}; reconnecting (nothing is lost: blocks not yet \
                         acknowledged stay in the stream)"
                    );
                }
                async_nats::Event::Connected => {
                    if let Some(since) = away.take() {
                        tracing::warn!("archive: connected again after {}s", since.elapsed().as_secs());
                    }
                }
                _ => {}
            }
        }
    });
    let reminder = {
        let (away, server) = (away.clone(), config.address.to_string());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let since = *away.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(since) = since {
                    tracing::warn!("archive: still no connection to {server} after {}s", since.elapsed().as_secs());
                }
            }
        })
    };
    let _reminder = AbortOnDrop(reminder);
    let client =
        options.connect(config.address.server_urls()).await.map_err(|e| crate::connect_error(&config.address, &e))?;
    let js = jetstream::new(client.clone());
    let mut stream = open_stream(&js, &config).await?;
    let stream_error = |why: String| StreamError::Stream { stream: config.address.stream.clone(), why };
    let info = stream.info().await.map_err(|e| stream_error(e.to_string()))?;
    let (last, subjects) = (info.state.last_sequence, info.config.subjects.join(", "));
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
        .map_err(|e| {
            let text = e.to_string();
            stream_error(match &config.filter {
                Some(f) if text.contains("filter subject") => {
                    format!("--filter {f} is not among the stream's subjects ({subjects}); name a subject within them")
                }
                _ => format!("consumer: {text}"),
            })
        })?;
    // A durable made earlier keeps the filter it was made with: an archiver that asked
    // for another would silently archive the wrong services.
    let had = consumer.cached_info().config.filter_subject.clone();
    let wanted = config.filter.clone().unwrap_or_default();
    if had != wanted {
        let say =
            |f: &str| if f.is_empty() { "no --filter (every subject)".to_string() } else { format!("--filter {f}") };
        return Err(stream_error(format!(
            "the durable consumer {} was made with {}, not {}; give this archive a --durable name of its own (or \
             remove that consumer: nats consumer rm {} {})",
            config.durable,
            say(&had),
            say(&wanted),
            config.address.stream,
            config.durable
        )));
    }
    // The output now, with the stream and the filter known good (a refused one leaves no
    // directory behind), and before anything is taken from the stream (taken and not
    // acknowledged, it would wait out the ack wait).
    sink.writers.check()?;
    tracing::info!(
        "archive: {} (durable {}{}) into {}; {last} message(s) in the stream now",
        config.address,
        config.durable,
        config.filter.as_deref().map(|f| format!(", {f}")).unwrap_or_default(),
        config.out.display()
    );
    // Blocks an earlier archiver of this name took and did not acknowledge (it crashed)
    // come back only after the ack wait: a `--once` now would miss them.
    let mut consumer = consumer;
    if let Ok(info) = consumer.info().await {
        if info.num_ack_pending > 0 {
            tracing::warn!(
                "archive: {} block(s) taken by an earlier archiver of {} are not acknowledged yet; they come back \
                 within 60 s{}",
                info.num_ack_pending,
                config.durable,
                if config.once { ": run again then to have them" } else { "" }
            );
        }
    }
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
            // A replay's report published to the same stream is not a capture.
            let kind = match take_capture(&mut sink, &message)? {
                Taken::Written | Taken::Duplicate | Taken::Other => AckKind::Ack,
                Taken::Damaged(e) => {
                    tracing::warn!(subject = %message.subject, "archive: a message is not a readable block ({e}); skipped");
                    AckKind::Term
                }
            };
            taken.push((message, kind));
        }
        if taken.is_empty() {
            sink.writers.tick()?;
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
        sink.writers.flush()?;
        for (message, kind) in taken {
            if let Err(e) = message.ack_with(kind).await {
                tracing::warn!("archive: acknowledgement failed ({e}); the block will come again and be skipped");
            }
        }
        // Acknowledgements are queued in the client: sent before anything else happens (a
        // stop right after would drop them, and the next run would write the blocks again).
        if let Err(e) = client.flush().await {
            tracing::warn!("archive: acknowledgements not confirmed sent ({e}); those blocks may come again");
        }
        if config.once && highest >= last {
            break;
        }
    }
    let _ = client.flush().await;
    sink.finish()
}

/// The stream, created first with `create_stream` if it does not exist.
async fn open_stream(
    js: &jetstream::Context,
    config: &ArchiveConfig,
) -> Result<jetstream::stream::Stream, StreamError> {
    let name = &config.address.stream;
    let error = |why: String| StreamError::Stream { stream: name.clone(), why };
    match js.get_stream(name).await {
        Ok(s) => Ok(s),
        Err(e) if crate::sink::is_not_found(&e) && config.create_stream.is_some() => {
            let subjects = config.filter.clone().unwrap_or_else(|| "tapedeck.capture.>".into());
            crate::sink::create_stream(js, name, &subjects, &config.create_stream.clone().unwrap_or_default())
                .await
                .map_err(error)?;
            js.get_stream(name).await.map_err(|e| error(e.to_string()))
        }
        Err(e) if crate::sink::is_not_found(&e) => {
            let names: Vec<String> = {
                use futures_util::StreamExt as _;
                js.stream_names().take(20).filter_map(|n| async move { n.ok() }).collect().await
            };
            let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            Err(error(format!(
                "does not exist on {} (streams there: {known}){}",
                config.address,
                if config.suggest_create { "; pass --create-stream to create it, or check the name" } else { "" }
            )))
        }
        Err(e) => Err(error(e.to_string())),
    }
}

/// What became of a message.
enum Taken {
    Written,
    Duplicate,
    /// Not a capture: a replay's report published to the same stream.
    Other,
    Damaged(tapedeck_captures::tape::block::BlockError),
}

/// Blocks on their way into tapes: the writers, the ids seen, the counts.
struct Sink {
    writers: Writers,
    seen: HashSet<String>,
    order: VecDeque<String>,
    decompressor: zstd::bulk::Decompressor<'static>,
    report: ArchiveReport,
}

impl Sink {
    fn new(config: &ArchiveConfig) -> Result<Sink, StreamError> {
        let decompressor = zstd::bulk::Decompressor::new()
            .map_err(|e| StreamError::Tape(tapedeck_captures::TapeError::io(&config.out, "initialising zstd", e)))?;
        Ok(Sink {
            writers: Writers { config: config.clone(), by_scrub: HashMap::new() },
            seen: HashSet::new(),
            order: VecDeque::new(),
            decompressor,
            report: ArchiveReport::default(),
        })
    }

    fn finish(mut self) -> Result<ArchiveReport, StreamError> {
        self.report.segments = self.writers.finish()?;
        Ok(self.report)
    }
}

/// Writes one message's block (unless its id was seen); an unreadable one is counted.
fn take(sink: &mut Sink, payload: &[u8], headers: Option<&async_nats::HeaderMap>) -> Result<Taken, StreamError> {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.to_string());
    let id = header(headers::BLOCK);
    if id.as_ref().is_some_and(|id| sink.seen.contains(id)) {
        sink.report.duplicates += 1;
        return Ok(Taken::Duplicate);
    }
    let number = |name: &str| header(name).and_then(|v| v.parse::<i64>().ok());
    let writer = sink.writers.get(header(headers::SCRUB), header(headers::LABELS).unwrap_or_default())?;
    let records = match (number(headers::FIRST_NS), number(headers::LAST_NS)) {
        // The block goes to the tape as it came, checksum verified, never decoded: the
        // archive's cost is the network and the disk.
        (Some(first), Some(last)) if first <= last => match check_framed(payload) {
            Ok(h) => {
                writer.append_framed(payload, first, last).map_err(StreamError::Tape)?;
                u64::from(h.records)
            }
            Err(e) => {
                sink.report.damaged += 1;
                return Ok(Taken::Damaged(e));
            }
        },
        // Without its span (another producer's message), decoded and written record by
        // record.
        _ => match decode_framed(payload, &mut sink.decompressor) {
            Ok((_, exchanges)) => {
                for ex in &exchanges {
                    writer.append(ex).map_err(StreamError::Tape)?;
                }
                exchanges.len() as u64
            }
            Err(e) => {
                sink.report.damaged += 1;
                return Ok(Taken::Damaged(e));
            }
        },
    };
    sink.report.blocks += 1;
    sink.report.exchanges += records;
    if let Some(id) = id {
        sink.seen.insert(id.clone());
        sink.order.push_back(id);
        if sink.order.len() > SEEN_IDS {
            if let Some(old) = sink.order.pop_front() {
                sink.seen.remove(&old);
            }
        }
    }
    Ok(Taken::Written)
}

/// Takes `message` if it is a capture; a replay's report published to the same stream
/// (`tapedeck.results.…`) is passed over.
fn take_capture(sink: &mut Sink, message: &jetstream::Message) -> Result<Taken, StreamError> {
    if crate::results::is_results(&message.subject) {
        return Ok(Taken::Other);
    }
    take(sink, &message.payload, message.headers.as_ref())
}

/// Copies what the stream holds now — from `from` on (ns since the epoch, by the time
/// blocks were published, a little before to be safe) and up to blocks starting after
/// `to` — into tapes in `config.out`, through an ordered consumer of its own: nothing is
/// acknowledged or taken from other consumers (`replay nats://…`).
pub async fn snapshot(config: ArchiveConfig, from: Option<i64>, to: Option<i64>) -> Result<ArchiveReport, StreamError> {
    let stream_error = |why: String| StreamError::Stream { stream: config.address.stream.clone(), why };
    let js = crate::connect(&config.address, &config.auth, "tapedeck replay").await?;
    let mut stream =
        open_stream(&js, &ArchiveConfig { create_stream: None, suggest_create: false, ..config.clone() }).await?;
    let last = stream.info().await.map_err(|e| stream_error(e.to_string()))?.state.last_sequence;
    let mut sink = Sink::new(&config)?;
    if last == 0 {
        return sink.finish();
    }
    // Blocks are published up to a block's age after their first request: start earlier.
    let deliver_policy = match from {
        Some(ns) => {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns) - 60_000_000_000)
                .map_err(|e| stream_error(format!("from: {e}")))?;
            jetstream::consumer::DeliverPolicy::ByStartTime { start_time: at }
        }
        None => jetstream::consumer::DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy,
            filter_subject: config.filter.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error(format!("consumer: {e}")))?;
    let mut messages = consumer.messages().await.map_err(|e| stream_error(e.to_string()))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let message = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(stream_error(e.to_string())),
            // Nothing more within the wait (a filter that leaves the last messages out).
            Ok(None) | Err(_) => break,
        };
        let (seq, published) = match message.info() {
            Ok(i) => (i.stream_sequence, i.published.unix_timestamp_nanos()),
            Err(_) => (last, 0),
        };
        let first_ns = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::FIRST_NS))
            .and_then(|v| v.as_str().parse::<i64>().ok());
        // Producers publish late by up to a block's age (and their queues): a block past
        // `to` is skipped, and the copy ends once blocks are published well after it.
        let past = to.is_some_and(|to| first_ns.is_some_and(|f| f >= to));
        if !past {
            if let Taken::Damaged(e) = take_capture(&mut sink, &message)? {
                tracing::warn!(subject = %message.subject, "a stream message is not a readable block ({e}); skipped");
            }
        }
        let well_after = to.is_some_and(|to| published > i128::from(to) + 60_000_000_000);
        if seq >= last || well_after {
            break;
        }
    }
    sink.finish()
}

/// Aborts a task when dropped (however the function that started it returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
