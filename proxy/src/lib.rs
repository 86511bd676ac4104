//! # tapedeck-proxy
//!
//! The capture sidecar (`tapedeck proxy`): a reverse proxy in front of a production
//! service that forwards every request, samples a share of them and records each sampled
//! request/response pair into `.tape` files through a bounded queue, dropping captures —
//! never requests — when capture falls behind.
//!
//! This crate is being built in issue B; until then it holds no code. Its data model and
//! tape writer live in `tapedeck-captures`.
#![deny(missing_docs)]
