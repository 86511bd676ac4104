//! # tapedeck-net
//!
//! The client side that the proxy (to its upstream) and the replayer (to its target) share,
//! written once so that a fix lands in one place:
//!
//! - [`connect`]: a [`Connector`](connect::Connector) resolves a host, connects over TCP
//!   (each address in turn, within a timeout, `TCP_NODELAY`) and shakes hands with TLS,
//!   offering h2 or HTTP/1.1 only (an upgrade needs HTTP/1.1).
//! - [`tls`]: client configs (a CA file, the system's roots, or any certificate for a test
//!   target) and PEM files read with errors that say which file and what is wrong.
//! - [`error`]: [`NetError`]: the [`ErrorKind`](tapedeck_captures::ErrorKind) a failure
//!   is counted under, what was being done, and its cause (DNS, I/O, TLS, HTTP) kept as the
//!   error's source; the kinds of hyper's request and body errors.
//! - [`convert`]: `http` heads to the capture model (headers, versions).
//! - [`clock`]: a monotonic start and its wall-clock time, to time exchanges on tapes.
#![deny(missing_docs)]

pub mod clock;
pub mod connect;
pub mod convert;
pub mod error;
pub mod headers;
pub mod tls;

pub use error::NetError;
