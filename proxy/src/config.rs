//! Proxy settings with the defaults a user expects. The binary fills this from flags and
//! the TOML config file; tests build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::capture::CaptureConfig;
use crate::sample::SamplingConfig;

/// Everything `serve` needs.
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The service behind the proxy: `http://host:port` or `https://host:port`, with an
    /// optional path prefix.
    pub upstream: http::Uri,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`); `None` to disable.
    pub admin: Option<SocketAddr>,
    /// Capture settings; `None` forwards without capturing.
    pub capture: Option<CaptureConfig>,
    /// Which requests to capture.
    pub sampling: SamplingConfig,
    /// A live tap (the shadow): offered the requests it wants, unscrubbed, once
    /// production's answer has gone out; its metrics and pages join the admin listener's.
    pub tap: Option<std::sync::Arc<dyn tapedeck_captures::sink::LiveTap>>,
    /// TLS on the listener.
    pub tls: Option<TlsFiles>,
    /// CA certificates (PEM) to trust for an https upstream instead of the system's.
    pub upstream_ca: Option<PathBuf>,
    /// Which HTTP version requests reach the upstream in.
    pub upstream_protocol: UpstreamProtocol,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Headers added or kept on the way to the upstream.
    pub forwarding: Forwarding,
    /// Limits that protect the proxy.
    pub limits: Limits,
    /// Worker threads, each with its own listener socket (SO_REUSEPORT), event loop and
    /// upstream pool; 0 means one per CPU.
    pub workers: usize,
}

impl ProxyConfig {
    /// A proxy from `listen` to `upstream` with defaults: no capture, admin on
    /// 127.0.0.1:9091.
    pub fn new(listen: SocketAddr, upstream: http::Uri) -> Self {
        ProxyConfig {
            listen,
            upstream,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
            capture: None,
            sampling: SamplingConfig::default(),
            tap: None,
            tls: None,
            upstream_ca: None,
            upstream_protocol: UpstreamProtocol::Auto,
            timeouts: Timeouts::default(),
            forwarding: Forwarding::default(),
            limits: Limits::default(),
            workers: 0,
        }
    }
}

/// The HTTP version spoken to the upstream (`--upstream-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/2 where HTTP/1.1 could not carry the request (it arrived over HTTP/2 as gRPC,
    /// or asking for trailers), HTTP/1.1 otherwise; an https upstream chooses by ALPN.
    #[default]
    Auto,
    /// HTTP/1.1 always (an https upstream is offered only `http/1.1`).
    Http1,
    /// HTTP/2 with prior knowledge to a plaintext upstream, for every request.
    H2c,
}

impl UpstreamProtocol {
    /// Parses `auto`, `http1` or `h2c`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(UpstreamProtocol::Auto),
            "http1" | "http1.1" | "h1" => Ok(UpstreamProtocol::Http1),
            "h2c" => Ok(UpstreamProtocol::H2c),
            other => Err(format!("{other:?}: expected auto, http1 or h2c")),
        }
    }
}

/// PEM files for TLS termination.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Timeouts, with defaults close to nginx's.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A client must send a complete request head (and, with TLS, finish the handshake)
    /// within this. It also bounds how long an HTTP/1.1 keep-alive connection may wait
    /// for its next request.
    pub header_read: Duration,
    /// Connecting to the upstream.
    pub upstream_connect: Duration,
    /// From the request body's last progress (its end, for a complete body) to the
    /// upstream's response head.
    pub upstream_response: Duration,
    /// A request body must arrive within this (zero: no limit), extended by a second for
    /// every `body_min_rate` bytes received; else the client gets a 408.
    pub body: Duration,
    /// Bytes per second that extend `body` (0: a fixed deadline).
    pub body_min_rate: u64,
    /// A client connection with no request in flight is closed after this.
    pub idle: Duration,
    /// A gRPC stream (exempt from the body and response timeouts: it moves at the
    /// application's pace) is reset after this long with nothing moving either way
    /// (Envoy's `stream_idle_timeout`).
    pub stream_idle: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(60),
            body: Duration::from_secs(60),
            body_min_rate: 500,
            idle: Duration::from_secs(75),
            stream_idle: Duration::from_secs(300),
            drain: Duration::from_secs(25),
        }
    }
}

/// Forwarding headers.
#[derive(Clone, Debug)]
pub struct Forwarding {
    /// Keep the client's `Host` (default); otherwise send the upstream's authority.
    pub preserve_host: bool,
    /// Add `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
    pub x_forwarded: bool,
    /// Add the RFC 7239 `Forwarded` header.
    pub forwarded: bool,
    /// Send HTTP/1.1 header names to the upstream in the client's spelling (for backends
    /// that wrongly treat names as case-sensitive). Costs about a microsecond per request;
    /// off by default since names are case-insensitive and HTTP/2 lower-cases them anyway.
    pub preserve_header_case: bool,
    /// Which clients' own `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are believed
    /// (kept and appended to); everyone else's are replaced by what the proxy saw.
    pub trust: Trust,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            preserve_host: true,
            x_forwarded: true,
            forwarded: false,
            preserve_header_case: false,
            trust: Trust::None,
        }
    }
}

/// Whose forwarding headers to believe (`--trust-forwarded`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Nobody's: the proxy is the edge (the default).
    None,
    /// Everybody's: every client is a trusted proxy (a load balancer in front).
    All,
    /// Clients in these networks (the load balancers' addresses).
    Networks(Vec<ipnet::IpNet>),
}

impl Trust {
    /// Parses `none`, `all` or a comma-separated list of CIDRs or addresses.
    pub fn parse(text: &str) -> Result<Trust, String> {
        match text.trim() {
            "none" => Ok(Trust::None),
            "all" => Ok(Trust::All),
            list => list
                .split(',')
                .map(|n| {
                    let n = n.trim();
                    n.parse::<ipnet::IpNet>()
                        .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| format!("{n:?} is not none, all, an address or a CIDR (10.0.0.0/8)"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Trust::Networks),
        }
    }

    /// True when headers from `peer` are believed.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        let peer = match peer {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, std::net::IpAddr::V4),
            v4 => v4,
        };
        match self {
            Trust::None => false,
            Trust::All => true,
            Trust::Networks(nets) => nets.iter().any(|n| n.contains(&peer)),
        }
    }
}

/// Resource limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head accepted (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Client connections served at once; more are closed on accept.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_header_bytes: 64 << 10, max_connections: 10_000 }
    }
}
