//! # tapedeck-proxy
//!
//! The capture sidecar (`tapedeck proxy`): a reverse proxy in front of a production
//! service. It forwards every request (HTTP/1.1 and HTTP/2, plain or TLS, streaming both
//! ways, WebSocket upgrades tunnelled), decides per request whether to capture it
//! ([`sample`]), copies at most `max_body` bytes of each body as it streams by ([`tee`])
//! into the exchange being assembled ([`recording`]), reads a captured WebSocket's
//! messages as they go by ([`tunnel`]), and hands finished exchanges to a writer thread
//! through a bounded queue ([`capture`]). When capture falls behind or the disk fails,
//! captures are dropped and counted — requests never wait and never fail because of
//! capture.
//!
//! Concerns are separate modules composed in [`server::start`]: [`forward`] (one request:
//! header rules in `headers`, the answer's body in [`proxy_body`]), [`client`] (the
//! upstream pool to the [`upstream`]), [`client_body`] (the client's body and its limits),
//! [`tls`], [`metrics`] and [`admin`] (`/metrics`, `/healthz`, `/readyz`).
//!
//! ```no_run
//! # async fn run() -> Result<(), tapedeck_proxy::ProxyError> {
//! use tapedeck_proxy::{capture::CaptureConfig, config::ProxyConfig};
//! let mut config = ProxyConfig::new("0.0.0.0:8080".parse().unwrap(), "http://127.0.0.1:3000".parse().unwrap());
//! config.capture = Some(CaptureConfig::new("captures/"));
//! let proxy = tapedeck_proxy::start(config).await?;
//! // … until SIGTERM:
//! let report = proxy.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod capture;
pub mod client;
pub mod client_body;
pub mod config;
mod connections;
pub mod failure;
pub mod forward;
mod headers;
pub mod metrics;
pub mod proxy_body;
pub mod recording;
pub mod sample;
pub mod server;
pub mod tee;
pub mod tls;
pub mod tunnel;
pub mod upstream;

use std::net::SocketAddr;

pub use server::{start, Proxy, ShutdownReport};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not bind.
    #[error("cannot open {what} on {addr}: {source}{hint}")]
    Bind {
        /// Which listener: the proxy's (`--listen`) or the admin one (`--admin`).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What to do, starting with "; " (or empty).
        hint: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS settings cannot be used: files missing or invalid, a host that is no server name.
    #[error("{what}: {source}")]
    Tls {
        /// Which setting (`--tls-cert/--tls-key`, `--upstream-ca`, `--upstream`).
        what: &'static str,
        /// Why.
        #[source]
        source: tapedeck_net::tls::TlsError,
    },
    /// The capture directory cannot be used.
    #[error("capture: {0}")]
    Capture(#[from] tapedeck_captures::TapeError),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
}
