//! # tapedeck-report
//!
//! A run's report: how faithfully the load shape was reproduced (throughput intended
//! and achieved, lag against the schedule), how the target compares with the recording per
//! route (status mix, latency, response differences with noise set apart) and the gates.
//!
//! The JSON form is stable: its layout is versioned by [`SCHEMA_VERSION`] and documented in
//! `docs/report.md`; fields are only added (with defaults) within a version. Renderers:
//! [`terminal`], [`html`] (one self-contained file), [`junit`]; [`baseline`] compares two
//! runs; [`merge`] makes N shards' reports one.
//!
//! - [`stats`]: what a run measured, per worker and merged (the input of a report).
//! - [`gate`]: `--gate` expressions over a report.
#![deny(missing_docs)]

pub mod baseline;
pub mod gate;
pub mod html;
pub mod junit;
pub mod merge;
pub mod mocks;
mod model;
pub mod stats;
pub mod terminal;

pub use model::*;
