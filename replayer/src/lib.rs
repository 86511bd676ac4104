//! # tapedeck-replayer
//!
//! Replay and comparison (`tapedeck replay`): re-issues captured traffic against a target
//! at the recorded tempo (open-loop, per-session ordering kept), records what came back,
//! and compares it with the production baseline to gate releases.
//!
//! This crate is being built in issues D and E; until then it holds no code. The tapes
//! it reads come from `tapedeck-captures`.
#![deny(missing_docs)]
