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
//! - [`address`]: `nats://HOST:PORT/STREAM` addresses and credentials.
//!
//! A message is one tape block (the bytes of a block in a `.tape` file) with headers
//! naming its producer, service, block id, first and last request start and record count
//! ([`headers`]).
#![deny(missing_docs)]

pub mod address;
pub mod archive;
pub mod sink;

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
    #[error(
        "cannot connect to {address}: {why} (is nats-server running there, with JetStream on: `nats-server -js`?)"
    )]
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
