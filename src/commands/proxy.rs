//! `tapedeck proxy`: runs the capture sidecar until SIGTERM/SIGINT, then drains and closes
//! the tape. SIGHUP reloads the TLS certificate.
//!
//! Every flag can also be set in a TOML file (`--config`), with the flag's name as key
//! (`capture-dir = "captures/"`); flags win over the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use tapedeck_proxy::capture::CaptureConfig;
use tapedeck_proxy::config::{ProxyConfig, TlsFiles};
use tapedeck_proxy::sample::{parse_rate, SampleKey};

use crate::commands::scrub::{load_scrubber, ScrubFiles, NO_KEY_NOTICE};
use crate::human;

/// Flags of `tapedeck proxy`, also the keys of its config file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ProxyArgs {
    /// Address to listen on, e.g. `:8080` or `127.0.0.1:8080`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The service to forward to: `http://host:port` or `https://host:port[/prefix]`.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Directory for capture tapes (created with mode 0700); without it the proxy only
    /// forwards.
    #[arg(long, value_name = "DIR")]
    pub capture_dir: Option<PathBuf>,
    /// Also (or instead of --capture-dir) publish the scrubbed captures to a NATS
    /// JetStream stream: `nats://HOST:PORT/STREAM` (`tls://…` for TLS), subject
    /// `tapedeck.capture.<service>.<instance>`; `tapedeck archive` writes it into tapes.
    /// When the server is slow or down, captures queue up to --queue-max-bytes, then are
    /// dropped and counted; requests never wait.
    #[arg(long, value_name = "URL")]
    pub sink: Option<String>,
    /// With --sink: create the stream (file storage, subjects
    /// `tapedeck.capture.<service>.>`) if it does not exist; without it, a missing stream
    /// is an error (logged; the captures for it are dropped and counted).
    #[arg(long)]
    pub create_stream: bool,
    /// The service captured, for the stream's subjects and the tapes' labels [default:
    /// default].
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// What the proxy stands in front of, a label of its tapes: `ingress` (a service,
    /// for `replay`) or `dependency` (a service's dependency, for `tapedeck mock`)
    /// [default: ingress].
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Accept a --capture-dir that is a symlink, writable by group or others, or owned by
    /// another user (others could then read, replace or plant tapes).
    #[arg(long)]
    pub allow_shared_dir: bool,
    /// Admin listener for /metrics, /healthz, /readyz (`off` to disable).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Share of requests to capture, e.g. `25%` [default: 100%].
    #[arg(long, value_name = "PERCENT")]
    pub sample: Option<String>,
    /// Sample whole sessions by this key: `header:NAME`, `cookie:NAME` or `query:NAME`.
    #[arg(long, value_name = "KEY")]
    pub sample_key: Option<String>,
    /// Salt for session sampling; give all proxies of one service the same salt so they
    /// pick the same sessions [default: random per process].
    #[arg(long, value_name = "TEXT")]
    pub sample_salt: Option<String>,
    /// At most this many captures per second.
    #[arg(long, value_name = "N")]
    pub max_capture_rps: Option<f64>,
    /// Capture only matching requests: `'[METHOD] PATH_REGEX'` (repeatable).
    #[arg(long, value_name = "RULE")]
    pub include: Vec<String>,
    /// Never capture matching requests: `'[METHOD] PATH_REGEX'` (repeatable).
    #[arg(long, value_name = "RULE")]
    pub exclude: Vec<String>,
    /// Body bytes captured per request and response; the rest is marked truncated
    /// [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Scrub policy (TOML) extending the built-in defaults; see `tapedeck scrub
    /// --print-default-policy`. Captures are always scrubbed unless --no-scrub.
    #[arg(long, value_name = "FILE")]
    pub scrub_policy: Option<PathBuf>,
    /// File holding the key for `hash` rules (else $TAPEDECK_SCRUB_KEY; without a key,
    /// hash redacts).
    #[arg(long, value_name = "FILE")]
    pub scrub_key_file: Option<PathBuf>,
    /// Protobuf descriptor set (`protoc --include_imports --descriptor_set_out=FILE`):
    /// gRPC messages are scrubbed by their field names, like JSON members (without it, by
    /// walking the wire format: strings meet the detectors).
    #[arg(long, value_name = "FILE")]
    pub proto_descriptor: Option<PathBuf>,
    /// Write captures without scrubbing (they will hold personal data).
    #[arg(long, conflicts_with = "scrub_policy")]
    pub no_scrub: bool,
    /// TLS certificate chain (PEM) for the listener.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the listener.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse to start when the scrub key or TLS key file can be read by group or others
    /// (without it, a warning).
    #[arg(long)]
    pub strict_perms: bool,
    /// CA certificates (PEM) to trust for an https upstream [default: the system's].
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Option<PathBuf>,
    /// HTTP version to the upstream: `auto` (HTTP/2 for gRPC and requests asking for
    /// trailers that arrived over HTTP/2 — h2c to a plaintext upstream — HTTP/1.1 for the
    /// rest; an https upstream chooses by ALPN), `http1`, or `h2c` (HTTP/2 with prior
    /// knowledge for every request) [default: auto].
    #[arg(long, value_name = "PROTOCOL")]
    pub upstream_protocol: Option<String>,
    /// `Host` sent upstream: `keep` the client's, or `upstream` [default: keep].
    #[arg(long, value_name = "MODE")]
    pub host_header: Option<String>,
    /// Headers telling the upstream about the client: `x-forwarded`, `forwarded`, `both`
    /// or `none` [default: x-forwarded].
    #[arg(long, value_name = "MODE")]
    pub forwarded_headers: Option<String>,
    /// Whose own X-Forwarded-For, Forwarded and X-Real-IP to believe: `none` (this proxy
    /// is the edge), `all`, or the load balancers' addresses as CIDRs,
    /// `10.0.0.0/8,192.168.1.7`; others' are replaced by what the proxy saw [default:
    /// none].
    #[arg(long, value_name = "WHO")]
    pub trust_forwarded: Option<String>,
    /// Time for a client to send a request head [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time to connect to the upstream [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time for the upstream to start its response, counted from when the request body
    /// was sent (or last moved: a long upload is not a slow upstream) [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// Time for a client to send its request body, extended by a second for every
    /// `--body-min-rate` bytes received; slower clients get a 408 [default: 60s; 0 for no
    /// limit].
    #[arg(long, value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// Bytes per second that extend `--body-timeout`, so slow but steady uploads finish
    /// while trickling clients are cut off [default: 500; 0 for a fixed deadline].
    #[arg(long, value_name = "SIZE")]
    pub body_min_rate: Option<String>,
    /// Reset a gRPC stream (exempt from the body and upstream timeouts: it moves at the
    /// application's pace), or close a WebSocket or other upgraded connection, after this
    /// long with nothing moving either way [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub stream_idle_timeout: Option<String>,
    /// Close client connections idle this long [default: 75s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// On shutdown, time for in-flight requests to finish [default: 25s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Captures the writer queue holds before dropping new ones [default: 10000].
    #[arg(long, value_name = "N")]
    pub queue_max: Option<usize>,
    /// Bytes the writer queue holds before dropping new captures [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    pub queue_max_bytes: Option<String>,
    /// Start a new tape segment at this size [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    pub segment_max_size: Option<String>,
    /// Start a new tape segment at this age [default: 1h].
    #[arg(long, value_name = "DURATION")]
    pub segment_max_age: Option<String>,
    /// Instance name in segment file names and, with --sink, the last token of the
    /// stream subject (`tapedeck.capture.<service>.<instance>`) [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Worker threads, each with its own event loop and upstream connections [default:
    /// one per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Send header names upstream in the client's spelling, for backends that wrongly
    /// treat them as case-sensitive (costs about 1 µs per request).
    #[arg(long)]
    pub preserve_header_case: bool,
    /// Client connections served at once [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest request head accepted [default: 64KiB].
    #[arg(long, value_name = "SIZE")]
    pub max_header_size: Option<String>,
    #[command(flatten)]
    #[serde(skip)]
    pub shadow: super::shadow::ShadowFlags,
    #[command(flatten)]
    #[serde(skip)]
    pub stream_flags: super::nats::StreamFlags,
    #[command(flatten)]
    #[serde(skip)]
    pub nats: super::nats::NatsFlags,
    /// Read settings from this TOML file (keys are the flag names).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl ProxyArgs {
    /// Fills unset flags from the config file.
    fn merge_file(mut self) -> Result<Self> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
        // Keys are the flag names: one that is none is refused (with its line).
        super::refuse_unknown_keys::<ProxyArgs>("config file", &path, &text)?;
        let toml_error = |e| super::toml_error("config file", &path, &text, &e);
        let file: ProxyArgs = toml::from_str(&text).map_err(toml_error)?;
        self.nats.merge(toml::from_str(&text).map_err(toml_error)?);
        self.stream_flags.merge(toml::from_str(&text).map_err(toml_error)?);
        self.shadow.merge(toml::from_str(&text).map_err(toml_error)?);
        #[rustfmt::skip]
        let ProxyArgs {
            listen, upstream, sink, create_stream, service, role, shadow: _, stream_flags: _, nats: _, capture_dir, allow_shared_dir, admin, sample, sample_key, sample_salt, max_capture_rps,
            include, exclude, max_body, scrub_policy, scrub_key_file, proto_descriptor, no_scrub, tls_cert, tls_key,
            strict_perms, upstream_ca, upstream_protocol, host_header, forwarded_headers, trust_forwarded,
            header_timeout, connect_timeout, upstream_timeout, body_timeout, body_min_rate, stream_idle_timeout,
            idle_timeout, drain_timeout, queue_max, queue_max_bytes, segment_max_size, segment_max_age, instance,
            workers, preserve_header_case, max_connections, max_header_size, config: _,
        } = file;
        merge_from_file!(self;
            options: listen, upstream, sink, service, role, capture_dir, admin, sample, sample_key, sample_salt, max_capture_rps, max_body,
                scrub_policy, scrub_key_file, proto_descriptor, tls_cert, tls_key, upstream_ca, upstream_protocol,
                host_header, forwarded_headers, trust_forwarded, header_timeout, connect_timeout, upstream_timeout,
                body_timeout, body_min_rate, stream_idle_timeout, idle_timeout, drain_timeout, queue_max,
                queue_max_bytes, segment_max_size, segment_max_age, instance, workers, max_connections,
                max_header_size;
            lists: include, exclude;
            switches: create_stream, allow_shared_dir, no_scrub, strict_perms, preserve_header_case);
        Ok(self)
    }
}

pub(super) fn duration(flag: &str, value: Option<&str>, default: Duration) -> Result<Duration> {
    const MAX: Duration = Duration::from_secs(30 * 24 * 3600);
    match value {
        None => Ok(default),
        Some(v) => match humantime::parse_duration(v) {
            Ok(d) if d > MAX => bail!("--{flag} {v:?}: at most 30 days"),
            Ok(d) => Ok(d),
            Err(e) => bail!("--{flag} {v:?}: {e} (examples: 500ms, 30s, 5m)"),
        },
    }
}

pub(super) fn size(flag: &str, value: Option<&str>, default: u64) -> Result<u64> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| anyhow!("--{flag} {v:?}: {e} (examples: 1MiB, 512KiB, 1048576)")),
    }
}

/// `:8080` means every interface.
pub(crate) fn socket_addr(flag: &str, value: &str) -> Result<SocketAddr> {
    let full = if value.starts_with(':') { format!("0.0.0.0{value}") } else { value.to_string() };
    full.parse().map_err(|_| anyhow!("--{flag} {value:?}: expected HOST:PORT such as 127.0.0.1:8080 or :8080"))
}

/// The proxy's settings, and a line saying what the shadow does (with --shadow, started).
pub(crate) fn build_config(args: ProxyArgs) -> Result<(ProxyConfig, Option<String>)> {
    let listen = socket_addr(
        "listen",
        args.listen.as_deref().ok_or_else(|| anyhow!("--listen is required (e.g. --listen :8080)"))?,
    )?;
    let upstream_text = args
        .upstream
        .as_deref()
        .ok_or_else(|| anyhow!("--upstream is required (e.g. --upstream http://127.0.0.1:3000)"))?;
    if tapedeck_captures::scrub::userinfo_span(upstream_text).is_some() {
        bail!(tapedeck_captures::scrub::userinfo_refused(
            "--upstream",
            upstream_text,
            "clients' own Authorization headers are forwarded"
        ));
    }
    let upstream: http::Uri = upstream_text
        .parse()
        .map_err(|e| anyhow!("--upstream {:?}: {e}", tapedeck_captures::scrub::redact_userinfo(upstream_text)))?;
    let mut config = ProxyConfig::new(listen, upstream);
    config.admin = match args.admin.as_deref() {
        Some("off" | "none" | "") => None,
        Some(a) => Some(socket_addr("admin", a)?),
        None => config.admin,
    };
    if let Some(rate) = &args.sample {
        config.sampling.rate = parse_rate(rate).map_err(|e| anyhow!("--sample {e}"))?;
    }
    if let Some(key) = &args.sample_key {
        config.sampling.key = Some(key.parse::<SampleKey>().map_err(|e| anyhow!("--sample-key {e}"))?);
    }
    config.sampling.salt = args.sample_salt.clone();
    config.sampling.max_per_sec = args.max_capture_rps;
    for rule in &args.include {
        config.sampling.include.push(rule.parse().map_err(|e| anyhow!("--include {e}"))?);
    }
    for rule in &args.exclude {
        config.sampling.exclude.push(rule.parse().map_err(|e| anyhow!("--exclude {e}"))?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        super::check_secret_file(key, "TLS key", args.strict_perms)?;
        config.tls = Some(TlsFiles { cert: cert.clone(), key: key.clone() });
    } else if args.tls_cert.is_some() != args.tls_key.is_some() {
        bail!("--tls-cert and --tls-key go together");
    }
    config.upstream_ca = args.upstream_ca.clone();
    if config.upstream_ca.is_some() && config.upstream.scheme() != Some(&http::uri::Scheme::HTTPS) {
        tracing::warn!("--upstream-ca applies to an https:// upstream; {} is plain http", config.upstream);
    }
    if let Some(p) = &args.upstream_protocol {
        config.upstream_protocol =
            tapedeck_proxy::config::UpstreamProtocol::parse(p).map_err(|e| anyhow!("--upstream-protocol {e}"))?;
    }
    config.forwarding.preserve_host = match args.host_header.as_deref() {
        None | Some("keep") => true,
        Some("upstream") => false,
        Some(other) => bail!("--host-header {other:?}: expected keep or upstream"),
    };
    (config.forwarding.x_forwarded, config.forwarding.forwarded) = match args.forwarded_headers.as_deref() {
        None | Some("x-forwarded") => (true, false),
        Some("forwarded") => (false, true),
        Some("both") => (true, true),
        Some("none") => (false, false),
        Some(other) => bail!("--forwarded-headers {other:?}: expected x-forwarded, forwarded, both or none"),
    };
    let t = &mut config.timeouts;
    t.header_read = duration("header-timeout", args.header_timeout.as_deref(), t.header_read)?;
    t.upstream_connect = duration("connect-timeout", args.connect_timeout.as_deref(), t.upstream_connect)?;
    t.upstream_response = duration("upstream-timeout", args.upstream_timeout.as_deref(), t.upstream_response)?;
    t.body = duration("body-timeout", args.body_timeout.as_deref(), t.body)?;
    t.body_min_rate = size("body-min-rate", args.body_min_rate.as_deref(), t.body_min_rate)?;
    t.idle = duration("idle-timeout", args.idle_timeout.as_deref(), t.idle)?;
    t.stream_idle = duration("stream-idle-timeout", args.stream_idle_timeout.as_deref(), t.stream_idle)?;
    if t.stream_idle.is_zero() {
        bail!("--stream-idle-timeout 0: a gRPC stream needs some idle limit (the default is 5m)");
    }
    t.drain = duration("drain-timeout", args.drain_timeout.as_deref(), t.drain)?;
    config.forwarding.preserve_header_case = args.preserve_header_case;
    if let Some(t) = &args.trust_forwarded {
        config.forwarding.trust =
            tapedeck_proxy::config::Trust::parse(t).map_err(|e| anyhow!("--trust-forwarded: {e}"))?;
    }
    config.workers = args.workers.unwrap_or(0);
    if let Some(n) = args.max_connections {
        config.limits.max_connections = n;
    }
    config.limits.max_header_bytes = size("max-header-size", args.max_header_size.as_deref(), 64 << 10)? as usize;
    let sink = args.sink.as_deref().map(|s| super::nats::address("--sink", s)).transpose()?;
    if sink.is_none() && (args.nats.any() || args.create_stream) {
        bail!("--create-stream and the --nats-* flags go with --sink nats://HOST:PORT/STREAM");
    }
    let stream_settings = args.stream_flags.settings(args.create_stream)?;
    // One scrubber for the captures and the shadow's report examples.
    let scrubber = if !args.no_scrub && (args.capture_dir.is_some() || sink.is_some() || args.shadow.shadow.is_some()) {
        let scrubber = load_scrubber(ScrubFiles {
            policy: args.scrub_policy.as_deref(),
            key_file: args.scrub_key_file.as_deref(),
            proto: args.proto_descriptor.as_deref().map(crate::commands::scrub::load_proto).transpose()?,
            strict_perms: args.strict_perms,
        })?;
        if !scrubber.has_key() {
            tracing::warn!("{NO_KEY_NOTICE}");
        }
        Some(std::sync::Arc::new(scrubber))
    } else {
        None
    };
    if args.capture_dir.is_some() || sink.is_some() {
        let mut capture = CaptureConfig::new(args.capture_dir.clone().unwrap_or_default());
        capture.write_tapes = args.capture_dir.is_some();
        let service = args.service.clone().unwrap_or_else(|| "default".into());
        capture.writer.labels.push(("service".into(), service.clone()));
        let role = args.role.as_deref().unwrap_or("ingress");
        if !matches!(role, "ingress" | "dependency") {
            bail!("--role {role}: ingress (in front of a service) or dependency (in front of what a service calls)");
        }
        capture.writer.labels.push(("role".into(), role.into()));
        capture.writer.allow_shared_dir = args.allow_shared_dir;
        // Judged (and made, if new) before any port is bound: a directory others could
        // write is the error to hear, whatever the ports.
        if let Some(dir) = &args.capture_dir {
            tapedeck_captures::files::make_private_dir(dir, args.allow_shared_dir, "creating capture directory")?;
        }
        capture.max_body = size("max-body", args.max_body.as_deref(), 1 << 20)? as usize;
        if capture.max_body > 100 << 20 {
            bail!("--max-body {}: at most 100MiB per body can be captured", human::bytes(capture.max_body as u64));
        }
        if let Some(n) = args.queue_max {
            capture.queue_max_exchanges = n.max(1);
        }
        capture.queue_max_bytes = size("queue-max-bytes", args.queue_max_bytes.as_deref(), 256 << 20)? as usize;
        capture.writer.segment_max_bytes = size("segment-max-size", args.segment_max_size.as_deref(), 256 << 20)?;
        capture.writer.segment_max_age =
            duration("segment-max-age", args.segment_max_age.as_deref(), Duration::from_secs(3600))?;
        if let Some(instance) = &args.instance {
            capture.writer.instance = instance.clone();
        }
        capture.writer.producer = concat!("tapedeck ", env!("CARGO_PKG_VERSION")).into();
        if let Some(scrubber) = scrubber.clone() {
            capture.writer.scrub_fingerprint = Some(scrubber.fingerprint());
            capture.scrub = Some(Box::new(move |ex| scrubber.scrub(ex)));
        }
        if let Some(address) = sink {
            let mut sink = tapedeck_stream::sink::NatsSinkConfig::new(address);
            sink.auth = args.nats.auth();
            sink.auth.check_files()?;
            args.nats.check_secrets(args.strict_perms)?;
            sink.service = service;
            sink.create_stream = stream_settings.clone();
            sink.queue_max_bytes = capture.queue_max_bytes;
            capture.sinks.push(Box::new(tapedeck_stream::sink::NatsSink::new(sink)));
        }
        config.capture = Some(capture);
    } else if args.sample.is_some()
        || args.sample_key.is_some()
        || !args.include.is_empty()
        || (args.shadow.shadow.is_none() && (args.scrub_policy.is_some() || args.proto_descriptor.is_some()))
    {
        bail!(
            "sampling and scrub flags need --capture-dir or --sink (scrub flags also --shadow): without them the \
             proxy only forwards"
        );
    }
    let shadow = match args.shadow.start(&config.upstream, scrubber, args.allow_shared_dir)? {
        Some((shadow, line)) => {
            config.tap = Some(std::sync::Arc::new(shadow));
            Some(line)
        }
        None => None,
    };
    Ok((config, shadow))
}

pub fn run(args: ProxyArgs) -> Result<ExitCode> {
    let (config, shadow) = build_config(args.merge_file()?)?;
    // Requests are served by the proxy's own worker threads; this runtime only waits for
    // signals and runs the admin endpoint and shutdown.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(config, shadow))
}

async fn serve(config: ProxyConfig, shadow: Option<String>) -> Result<ExitCode> {
    let capture_dir = config.capture.as_ref().filter(|c| c.write_tapes).map(|c| c.writer.dir.clone());
    let sinks: Vec<String> =
        config.capture.as_ref().map(|c| c.sinks.iter().map(|s| s.describe()).collect()).unwrap_or_default();
    let scrubbed = config.capture.as_ref().is_some_and(|c| c.scrub.is_some());
    let rate = config.sampling.rate;
    let upstream = config.upstream.to_string();
    // Before the address is printed: a supervisor may signal as soon as it reads it.
    let mut signals = Signals::install();
    let proxy = tapedeck_proxy::start(config).await?;
    let mut into: Vec<String> = capture_dir.iter().map(|d| d.display().to_string()).collect();
    into.extend(sinks.iter().map(|s| format!("stream {s}")));
    let capture = if into.is_empty() {
        "capture off".to_string()
    } else {
        format!(
            "capturing {} of requests into {}{}",
            human::percent((rate * 1000.0) as u64, 1000),
            into.join(" and "),
            if scrubbed { ", scrubbed" } else { " UNSCRUBBED (--no-scrub)" }
        )
    };
    let admin = proxy.admin_addr().map_or("admin off".to_string(), |a| format!("metrics at http://{a}/metrics"));
    super::status("proxy", format_args!("listening on {} -> {upstream}; {capture}; {admin}", proxy.local_addr()));
    if let Some(line) = shadow {
        let page = proxy
            .admin_addr()
            .map_or("; no admin listener (--admin off): its counts and report are not shown".to_string(), |a| {
                format!("; live report at http://{a}/shadow.html")
            });
        super::status("proxy", format_args!("{line}{page}"));
    }
    signals.wait_for_stop(&proxy).await;
    super::status("proxy", format_args!("stopping; draining in-flight requests (Ctrl-C again to stop at once)"));
    let shutdown = proxy.shutdown();
    tokio::pin!(shutdown);
    let report = tokio::select! {
        r = &mut shutdown => r,
        () = signals.stop.recv() => {
            super::status(
                "proxy",
                format_args!("stopped without draining; the open segment stays as .partial (still readable)"),
            );
            return Ok(ExitCode::from(130));
        }
    };
    if report.connections_cut > 0 {
        super::status(
            "proxy",
            format_args!(
                "{} connection(s) were still open at the drain deadline and were closed",
                report.connections_cut
            ),
        );
    }
    if let Some(line) = &report.tap {
        super::status("proxy", format_args!("{line}"));
    }
    if let Some(c) = report.capture {
        for (sink, s) in &c.sinks {
            let dropped = s.dropped_queue_full + s.dropped_encode + s.dropped_refused;
            super::status(
                "proxy",
                format_args!(
                    "published {} exchanges in {} blocks to {sink}; {} dropped{}",
                    human::count(s.records),
                    human::count(s.blocks),
                    human::count(dropped),
                    if dropped > 0 {
                        format!(
                            " ({} queue full, {} unencodable, {} refused or unacknowledged at shutdown)",
                            s.dropped_queue_full, s.dropped_encode, s.dropped_refused
                        )
                    } else {
                        String::new()
                    }
                ),
            );
        }
        let s = c.stats;
        if capture_dir.is_some() {
            super::status(
                "proxy",
                format_args!(
                    "wrote {} exchanges ({} on disk) in {} segment(s); {} lost to write errors{}",
                    human::count(s.records),
                    human::bytes(s.bytes_on_disk),
                    c.segments.len(),
                    human::count(s.records_lost),
                    if s.records_deleted > 0 {
                        format!(
                            "; {} of those written were in a segment someone deleted",
                            human::count(s.records_deleted)
                        )
                    } else {
                        String::new()
                    }
                ),
            );
        }
        if let Some(e) = c.close_error {
            bail!("closing the capture: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM, SIGINT and SIGHUP, caught from start-up on.
struct Signals {
    stop: super::signals::Stop,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        Signals { stop: super::signals::Stop::install(), hup: super::signals::hangup() }
    }

    /// Waits for SIGTERM or SIGINT; SIGHUP reloads the TLS certificate meanwhile.
    async fn wait_for_stop(&mut self, proxy: &tapedeck_proxy::Proxy) {
        loop {
            tokio::select! {
                () = self.stop.recv() => return,
                () = super::signals::recv(&mut self.hup) => match proxy.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificate"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_sizes_and_durations() {
        assert_eq!(socket_addr("listen", ":8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
        assert!(socket_addr("listen", "8080").is_err());
        assert_eq!(size("max-body", Some("1MiB"), 0).unwrap(), 1 << 20);
        assert_eq!(size("max-body", Some("512KiB"), 0).unwrap(), 512 << 10);
        assert!(size("max-body", Some("lots"), 0).is_err());
        assert_eq!(duration("x", Some("250ms"), Duration::ZERO).unwrap(), Duration::from_millis(250));
        assert!(duration("x", Some("soon"), Duration::ZERO).unwrap_err().to_string().contains("--x"));
    }

    #[test]
    fn the_example_config_is_valid() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy.toml");
        let args = ProxyArgs { config: Some(example.into()), ..Default::default() }.merge_file().unwrap();
        let (config, _) = build_config(args).unwrap();
        assert_eq!(config.sampling.rate, 0.25);
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.capture.unwrap().max_body, 1 << 20);
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.toml");
        std::fs::write(
            &file,
            "listen = \":9000\"\nupstream = \"http://127.0.0.1:3000\"\nsample = \"10%\"\ninclude = [\"^/api/\"]\n",
        )
        .unwrap();
        let args = ProxyArgs { sample: Some("50%".into()), config: Some(file.clone()), ..Default::default() };
        let merged = args.merge_file().unwrap();
        assert_eq!(merged.listen.as_deref(), Some(":9000"));
        assert_eq!(merged.sample.as_deref(), Some("50%"));
        assert_eq!(merged.include, ["^/api/"]);

        std::fs::write(&file, "listen = \":9000\"\nsampel = \"10%\"\n").unwrap();
        let err = ProxyArgs { config: Some(file), ..Default::default() }.merge_file().unwrap_err().to_string();
        assert!(err.contains("sampel") && err.contains("line 2"), "{err}");
    }
}
