//! A sharded run's reports on the stream. Each replay host publishes its shard's report
//! (the `report.json` it would write, raw counts included, zstd-compressed) to
//! `tapedeck.results.<run>.<part>`; [`fetch`] reads the latest report of each part of a
//! run back, for `tapedeck report nats://…/STREAM?run=ID` to merge.
//!
//! A part is `K-of-N` for shard K of N, `whole` for an unsharded run. A shard that runs
//! again publishes again; the newest report of each part is the one read.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use futures_util::StreamExt;

use crate::address::{NatsAuth, StreamAddress};
use crate::{StreamError, StreamSettings};

/// The subjects results are published under.
pub const SUBJECTS: &str = "tapedeck.results.>";

/// True for a subject results are published under.
pub fn is_results(subject: &str) -> bool {
    subject.starts_with("tapedeck.results.")
}

/// A report larger than this once decompressed is refused (one with thousands of routes'
/// histograms is a few MiB).
const MAX_REPORT: u64 = 64 << 20;

/// A run's reports read at most, together once decompressed, and parts at most: whoever
/// may publish to the stream cannot make `report` hold more.
const MAX_RUN: u64 = 512 << 20;
const MAX_PARTS: usize = 1024;

/// Where a run's reports go (or come from).
#[derive(Clone, Debug)]
pub struct ResultsConfig {
    /// The stream.
    pub address: StreamAddress,
    /// How to log in.
    pub auth: NatsAuth,
    /// The run's id, the same on every shard.
    pub run: String,
    /// Create the stream (or add [`SUBJECTS`] to it) when it lacks them.
    pub create_stream: Option<StreamSettings>,
}

/// Refuses a run id that cannot be one subject token (or is unreasonably long).
pub fn check_run_id(run: &str) -> Result<(), StreamError> {
    let ok = !run.is_empty()
        && run.len() <= 128
        && run.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(StreamError::Address(format!(
            "run id {run:?}: 1 to 128 letters, digits, '-', '_', ':' or '+' (one NATS subject token)"
        )))
    }
}

/// The part a report is, as a subject token: `K-of-N` or `whole`.
pub fn part(shard: Option<(usize, usize)>) -> String {
    match shard {
        Some((k, n)) => format!("{k}-of-{n}"),
        None => "whole".to_string(),
    }
}

fn subject(run: &str, part: &str) -> String {
    format!("tapedeck.results.{run}.{part}")
}

/// A connection to the stream, checked to take the run's subjects: made before a replay
/// so that a run that could not publish its report fails before it starts, not after.
pub struct Publisher {
    js: jetstream::Context,
    config: ResultsConfig,
}

impl Publisher {
    /// Connects and makes sure the stream takes the run's subjects (creating or widening
    /// it only with `create_stream`).
    pub async fn open(config: ResultsConfig) -> Result<Publisher, StreamError> {
        check_run_id(&config.run)?;
        let js = crate::connect(&config.address, &config.auth, "tapedeck replay").await?;
        crate::ensure_subjects(
            &js,
            &config.address,
            SUBJECTS,
            &subject(&config.run, "whole"),
            config.create_stream.as_ref(),
        )
        .await
        .map_err(|why| StreamError::Stream { stream: config.address.stream.clone(), why })?;
        Ok(Publisher { js, config })
    }

    /// Publishes `report` (JSON) as `part` of the run, waiting for the stream to store it
    /// (three tries); returns the subject.
    pub async fn publish(&self, part: &str, report: &[u8]) -> Result<String, StreamError> {
        let stream_error = |why: String| StreamError::Stream { stream: self.config.address.stream.clone(), why };
        let subject = subject(&self.config.run, part);
        let payload = zstd::encode_all(report, 3).map_err(|e| stream_error(format!("compressing the report: {e}")))?;
        let max = self.js.client().server_info().max_payload;
        if payload.len() > max {
            return Err(stream_error(format!(
                "the report is {} bytes compressed, over the server's max_payload of {max}: raise max_payload",
                payload.len()
            )));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Encoding", "zstd");
        // The same id on each try: a try whose acknowledgement was lost is stored once.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        headers.insert("Nats-Msg-Id", format!("{subject}.{}.{nanos}", std::process::id()).as_str());
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            let sent = self.js.publish_with_headers(subject.clone(), headers.clone(), payload.clone().into()).await;
            match sent {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(subject),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        Err(stream_error(format!("cannot publish the report to {subject}: {last}")))
    }
}

/// One part's report as published.
#[derive(Debug)]
pub struct Published {
    /// The part (`K-of-N`, `whole`, or whatever a publisher named it).
    pub part: String,
    /// The report, as JSON.
    pub json: Vec<u8>,
    /// When it was stored, ns since the epoch.
    pub at: i128,
}

/// A run's reports as read back.
#[derive(Debug)]
pub struct Fetched {
    /// The newest report of each part of the run's newest split, in part order.
    pub parts: Vec<Published>,
    /// Parts of another split (`2-of-3` when the newest is of 4 shards, or `whole`) left
    /// out: an earlier run under the same id.
    pub ignored: Vec<String>,
}

/// The shards a part name says the run was split into (`whole`: 0).
fn split_of(part: &str) -> Option<u64> {
    match part.split_once("-of-") {
        Some((_, n)) => n.parse().ok(),
        None => (part == "whole").then_some(0),
    }
}

/// The newest report of each part of run `run` on the stream; an error if the run has
/// none there. Parts of another split than the newest report's are left out (named).
pub async fn fetch(address: &StreamAddress, auth: &NatsAuth, run: &str) -> Result<Fetched, StreamError> {
    check_run_id(run)?;
    let stream_error = |why: String| StreamError::Stream { stream: address.stream.clone(), why };
    let js = crate::connect(address, auth, "tapedeck report").await?;
    let mut stream = match js.get_stream(&address.stream).await {
        Ok(s) => s,
        Err(e) if crate::sink::is_not_found(&e) => {
            return Err(stream_error(format!("does not exist on {address}")));
        }
        Err(e) => return Err(stream_error(e.to_string())),
    };
    let filter = subject(run, "*");
    let info = stream.info().await.map_err(|e| stream_error(e.to_string()))?.clone();
    let none = || {
        stream_error(format!(
            "holds no reports of run {run:?} ({filter}): did the shards run with --publish-results {address} and \
             this --run-id?"
        ))
    };
    if info.state.messages == 0 {
        return Err(none());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::LastPerSubject,
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error(format!("consumer: {e}")))?;
    // Nothing of the run: the consumer has nothing pending from the start.
    if consumer.cached_info().num_pending == 0 {
        return Err(none());
    }
    let mut messages = consumer.messages().await.map_err(|e| stream_error(e.to_string()))?;
    let mut found = Vec::new();
    let mut total = 0u64;
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(stream_error(e.to_string())),
            Ok(None) | Err(_) => break,
        };
        let part = message.subject.rsplit('.').next().unwrap_or_default().to_string();
        let compressed =
            message.headers.as_ref().and_then(|h| h.get("Content-Encoding")).is_some_and(|v| v.as_str() == "zstd");
        let json = if compressed {
            let mut out = Vec::new();
            let read = zstd::stream::read::Decoder::new(&message.payload[..])
                .and_then(|d| std::io::copy(&mut std::io::Read::take(d, MAX_REPORT + 1), &mut out));
            match read {
                Ok(n) if n <= MAX_REPORT => out,
                Ok(_) => return Err(stream_error(format!("{}: a report over {MAX_REPORT} bytes", message.subject))),
                Err(e) => return Err(stream_error(format!("{}: not a readable report: {e}", message.subject))),
            }
        } else {
            message.payload.to_vec()
        };
        let at = message.info().map(|i| i.published.unix_timestamp_nanos()).unwrap_or(0);
        total += json.len() as u64;
        if total > MAX_RUN || found.len() >= MAX_PARTS {
            return Err(stream_error(format!(
                "run {run:?} holds more than {MAX_PARTS} reports or {MAX_RUN} bytes of them: not a run's shards"
            )));
        }
        found.push(Published { part, json, at });
        let left = message.info().map(|i| i.pending).unwrap_or(0);
        if left == 0 {
            break;
        }
    }
    let Some(newest) = found.iter().max_by_key(|p| p.at).map(|p| split_of(&p.part)) else {
        return Err(none());
    };
    let (mut parts, others): (Vec<_>, Vec<_>) = found.into_iter().partition(|p| split_of(&p.part) == newest);
    parts.sort_by(|a, b| a.part.cmp(&b.part));
    Ok(Fetched { parts, ignored: others.into_iter().map(|p| p.part).collect() })
}
