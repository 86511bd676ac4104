//! # tapedeck-mock
//!
//! A service's dependency, served back from what the sidecar recorded in front of it
//! (`tapedeck mock TAPES --listen ADDR`): each request gets the recorded answer that fits
//! it best ([`index`]), at the time it took in production or as `--latency` scales it, and
//! failures as recorded or injected on purpose ([`timing`]); [`server`] is the listener.
#![deny(missing_docs)]

pub mod index;
pub mod passthrough;
pub mod server;
pub mod timing;

pub use index::{Index, Match, MatchKind};
pub use passthrough::Passthrough;
pub use server::{Mock, MockConfig, RouteStats};
pub use timing::{Fault, FaultRule, Latency};
