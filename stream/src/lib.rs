//! # tapedeck-stream
//!
//! tapedeck on NATS JetStream, for fleets: many sidecars capture into one stream, and
//! archivers write the stream into ordinary tapes.
//!
//! - [`sink`]: [`NatsSink`](sink::NatsSink), a capture sink for the proxy that publishes
//!   scrubbed tape blocks with acknowledgements, queueing (bounded) while the server is
//!   slow or down and dropping (counted) beyond, never holding a request.
//! - [`archive`]: a durable consumer that writes the stream into rotating tapes,
//!   acknowledging only what is on disk.
//! - [`results`]: a sharded replay's reports, published by each shard and read back to
//!   merge them.
//! - [`address`]: `nats://HOST:PORT/STREAM` addresses and credentials.
//!
//! A message is one tape block (the bytes of a block in a `.tape` file) with headers
//! naming its producer, service, block id, first and last request start and record count
//! ([`headers`]).
#![deny(missing_docs)]

pub mod address;
pub mod archive;
pub mod results;
pub mod sink;

use std::time::Duration;

/// How a stream tapedeck creates (`--create-stream`) is made. A stream that exists is
/// left as its owner made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Copies of each message in a JetStream cluster (1–5; 3 keeps the stream through the
    /// loss of a node).
    pub replicas: usize,
    /// Messages older than this are removed; zero keeps them until `max_bytes`.
    pub max_age: Duration,
    /// The stream's size limit, oldest removed first; `None`: the server's limits.
    pub max_bytes: Option<u64>,
}

impl Default for StreamSettings {
    /// One copy, a day of captures: a stream that outgrows the server's disk would refuse
    /// every capture from then on.
    fn default() -> Self {
        StreamSettings { replicas: 1, max_age: Duration::from_secs(24 * 3600), max_bytes: None }
    }
}

/// Header names of a capture message.
pub mod headers {
    /// The producing sidecar (its instance name).
    pub const PRODUCER: &str = "Tapedeck-Producer";
    /// The service captured.
    pub const SERVICE: &str = "Tapedeck-Service";
    /// The block's id, unique per producer run: duplicates are removed by it.
    pub const BLOCK: &str = "Tapedeck-Block";
    /// Earliest request start in the block, ns since the epoch.
    pub const FIRST_NS: &str = "Tapedeck-First-Ns";
    /// Latest request start in the block, ns since the epoch.
    pub const LAST_NS: &str = "Tapedeck-Last-Ns";
    /// Exchanges in the block.
    pub const RECORDS: &str = "Tapedeck-Records";
    /// The scrub policy's fingerprint (absent: not scrubbed).
    pub const SCRUB: &str = "Tapedeck-Scrub";
    /// The producer's tape labels (`upstream`, `service`): `key=value` pairs joined by
    /// `;`, each part percent-escaped ([`encode_labels`]).
    pub const LABELS: &str = "Tapedeck-Labels";

    fn escape(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_graphic() && !b"%;=".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }

    fn unescape(s: &str) -> Option<String> {
        let mut out = Vec::with_capacity(s.len());
        let mut bytes = s.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            } else {
                out.push(b);
            }
        }
        String::from_utf8(out).ok()
    }

    /// Labels as one header value.
    pub fn encode_labels(labels: &[(String, String)]) -> String {
        let mut out = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            escape(k, &mut out);
            out.push('=');
            escape(v, &mut out);
        }
        out
    }

    /// Labels from a header value; pairs that do not decode are left out.
    pub fn decode_labels(value: &str) -> Vec<(String, String)> {
        value
            .split(';')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((unescape(k)?, unescape(v)?))
            })
            .filter(|(k, _)| !k.is_empty())
            .take(64)
            .collect()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn labels_survive_a_header() {
            let labels = vec![
                ("upstream".to_string(), "http://127.0.0.1:3000/a;b=c".to_string()),
                ("service".to_string(), "shop é %".to_string()),
            ];
            let v = super::encode_labels(&labels);
            assert!(v.bytes().all(|b| b.is_ascii_graphic()), "{v}");
            assert_eq!(super::decode_labels(&v), labels);
            assert!(super::decode_labels("x=%G1;=y;z").is_empty());
        }
    }
}

/// Makes sure stream `address` takes `subject` (one of those `ours`, a subject filter,
/// names): with `create`, a stream that does not exist is created for `ours` and one that
/// exists is given `ours` too; without, either is an error saying so.
pub(crate) async fn ensure_subjects(
    js: &async_nats::jetstream::Context,
    address: &address::StreamAddress,
    ours: &str,
    subject: &str,
    create: Option<&StreamSettings>,
) -> Result<(), String> {
    let name = &address.stream;
    match js.get_stream(name).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(|e| format!("cannot read stream {name}: {e}"))?.clone();
            if info.config.subjects.iter().any(|filter| sink::subject_matches(filter, subject)) {
                return Ok(());
            }
            if create.is_none() {
                return Err(format!(
                    "stream {name} takes {}, not {ours}: pass --create-stream to add them to it, or publish to the \
                     stream that takes them",
                    info.config.subjects.join(", ")
                ));
            }
            let mut updated = info.config.clone();
            updated.subjects.push(ours.to_string());
            js.update_stream(updated).await.map(|_| ()).map_err(|e| format!("cannot add {ours} to stream {name}: {e}"))
        }
        Err(e) if sink::is_not_found(&e) => match create {
            // Only these subjects: streams of other services can live beside it.
            Some(settings) => sink::create_stream(js, name, ours, settings).await,
            None => Err(format!(
                "stream {name} does not exist on {address}: pass --create-stream to create it (or create it with the \
                 NATS tools, subjects {ours})"
            )),
        },
        Err(e) => Err(format!("cannot look up stream {name}: {e}")),
    }
}

/// A JetStream context on `address`, logged in as `auth` says, named `name` on the
/// server; a failure said for people.
pub(crate) async fn connect(
    address: &address::StreamAddress,
    auth: &address::NatsAuth,
    name: &str,
) -> Result<async_nats::jetstream::Context, StreamError> {
    let client =
        auth.options(name).await?.connect(address.server_urls()).await.map_err(|e| connect_error(address, &e))?;
    Ok(async_nats::jetstream::new(client))
}

/// Why a connection failed, for people: the client's reason and what to do.
pub(crate) fn connect_error(address: &address::StreamAddress, e: &async_nats::ConnectError) -> StreamError {
    use async_nats::ConnectErrorKind as K;
    let advice = match e.kind() {
        K::AuthorizationViolation | K::Authentication => {
            "the server refused the login: check --nats-creds, --nats-nkey, --nats-token-file or --nats-user"
        }
        K::Tls => "TLS failed: check tls:// and --nats-ca (and --nats-cert/--nats-key if the server asks for one)",
        K::Dns => "the host name does not resolve",
        _ => "is nats-server running there, with JetStream on (`nats-server -js`)?",
    };
    StreamError::Connect { address: address.to_string(), why: format!("{} — {advice}", e.kind()) }
}

/// What went wrong with a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The address cannot be used.
    #[error("{0}")]
    Address(String),
    /// The credentials or TLS files cannot be used.
    #[error("{0}")]
    Auth(String),
    /// The server cannot be reached.
    #[error("cannot connect to {address}: {why}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        why: String,
    },
    /// The stream (or its consumer) cannot be used.
    #[error("stream {stream}: {why}")]
    Stream {
        /// Which.
        stream: String,
        /// Why.
        why: String,
    },
    /// The tapes cannot be written.
    #[error(transparent)]
    Tape(tapedeck_captures::TapeError),
}
