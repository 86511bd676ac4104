//! # tapedeck-captures
//!
//! The spine of tapedeck: the [`Exchange`] data model, the `.tape` capture format
//! ([`tape`]), route templates ([`route`]), filter expressions ([`filter`]), tape
//! summaries ([`summary`]) and conversion to and from other formats ([`convert`]: HAR,
//! GoReplay, JSON lines, raw HTTP text, curl). Personal data is removed before anything
//! reaches a disk by [`scrub`]; bodies are read through their content codings ([`coding`]),
//! gRPC bodies and protobuf messages on the wire ([`wire`]) or by a schema ([`proto`]).
//!
//! This crate has no async runtime and no HTTP stack: the proxy and the replayer depend on
//! it, never the other way round.
//!
//! ```no_run
//! use tapedeck_captures::tape::{TapeReader, TapeWriter, WriterConfig};
//! # fn main() -> Result<(), tapedeck_captures::TapeError> {
//! # let exchange: tapedeck_captures::Exchange = unimplemented!();
//! let mut writer = TapeWriter::new(WriterConfig::new("captures/"))?;
//! writer.append(&exchange)?;
//! writer.finish()?;
//!
//! for exchange in TapeReader::open(&["captures/"])? {
//!     println!("{} {}", exchange.request.method, exchange.request.target);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod blob;
pub mod codec;
pub mod coding;
pub mod convert;
pub mod error;
pub mod exchange;
pub mod files;
pub mod filter;
pub mod proto;
pub mod route;
pub mod scrub;
pub mod sink;
pub mod summary;
pub mod synth;
pub mod tape;
pub mod websocket;
pub mod wire;

pub use blob::Blob;
pub use error::TapeError;
pub use exchange::{
    Body, ConnectionId, ErrorKind, Exchange, ExchangeId, Header, Headers, HttpVersion, IdGenerator, Request, Response,
    ScrubHit, Timing,
};
