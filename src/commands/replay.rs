//! `tapedeck replay`: re-issues captured traffic against a target at the recorded tempo (or
//! scaled, flat, or flat out), shows live progress, records the responses, and prints how
//! faithfully the load shape was reproduced and how the target compares per route.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use tapedeck_captures::filter::Filter;
use tapedeck_compare::noise::NoiseModel;
use tapedeck_replayer::rewrite::{parse_path_rule, parse_set_header};
use tapedeck_replayer::schedule::Pacing;
use tapedeck_replayer::{replay, Progress, ReplayConfig};
use tapedeck_report::REPORT_FILE;

use super::report::ReportFlags;

/// Flags of `tapedeck replay`, also the keys of its config file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ReplayArgs {
    /// Tapes or directories to replay (merged in recorded order).
    #[arg(value_name = "TAPE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// Where to send: `http(s)://host[:port][/path-prefix]`.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Tempo: `1x` (as recorded), `2x`, `0.5x`, any factor, or `max` (as fast as the
    /// target takes it, --concurrency in flight) [default: 1x].
    #[arg(long, value_name = "SPEED")]
    pub speed: Option<String>,
    /// A flat rate instead of the recorded gaps, in requests per second (order and mix
    /// kept).
    #[arg(long, value_name = "N", conflicts_with = "speed")]
    pub rate: Option<f64>,
    /// Requests in flight with --speed max.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Requests in flight at most; when reached, sends wait and the lag is reported
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,
    /// Only exchanges matching this expression (`tapedeck cat --help` lists the fields).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Only these methods (repeatable).
    #[arg(long, value_name = "METHOD")]
    pub method: Vec<String>,
    /// Only these routes: a template such as `/users/{id}`, or a regex on the path
    /// (repeatable).
    #[arg(long, value_name = "ROUTE")]
    pub route: Vec<String>,
    /// Only these recorded statuses: `200`, `5xx`, `500-504` (repeatable).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Only requests recorded for this host (repeatable).
    #[arg(long, value_name = "HOST")]
    pub host: Vec<String>,
    /// Start of the window: an offset from the first request (`90s`, `5m`) or a time.
    #[arg(long, value_name = "WHEN")]
    pub from: Option<String>,
    /// End of the window: an offset from the first request or a time.
    #[arg(long, value_name = "WHEN")]
    pub to: Option<String>,
    /// Replay this share of sessions (whole sessions), e.g. `10%`.
    #[arg(long, value_name = "PERCENT")]
    pub sample: Option<String>,
    /// Replay part K of N of the tapes, for N hosts replaying them together: whole sessions
    /// (and recorded connections) to one host each, every host keeping the same schedule.
    /// With --start-at, their union plays the recorded load shape.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Start the schedule at this time (RFC 3339, e.g. 2026-12-03T10:00:00Z) instead of at
    /// once, so that hosts replaying shards start in step. A host started after it refuses
    /// (exit 2) unless --late-ok.
    #[arg(long, value_name = "TIME")]
    #[serde(deserialize_with = "super::string_or_datetime")]
    pub start_at: Option<String>,
    /// With --start-at: join a schedule that has begun (requests already due go at once,
    /// counted as late) instead of refusing.
    #[arg(long)]
    pub late_ok: bool,
    /// Publish this run's report (raw counts included) to a NATS JetStream stream, subject
    /// `tapedeck.results.<run-id>.<K-of-N>`, where `tapedeck report nats://…/STREAM?run=ID`
    /// merges the shards' reports. The stream is checked before the replay starts.
    #[arg(long, value_name = "NATS_URL")]
    pub publish_results: Option<String>,
    /// The run's id for --publish-results, the same on every shard [default: the
    /// --start-at instant, e.g. 20261203T100000Z].
    #[arg(long, value_name = "ID", requires = "publish_results")]
    pub run_id: Option<String>,
    /// With --publish-results: create the stream (or add tapedeck.results.> to its
    /// subjects) if it does not take the results.
    #[arg(long, requires = "publish_results")]
    pub create_stream: bool,
    /// Answer a dependency of the target from what production's service asked of it in
    /// the replayed window, while the replay runs: `NAME=HOST:PORT`, NAME the service the
    /// dependency was recorded as (`proxy --role dependency --service NAME`, its tapes among
    /// the ones given), HOST:PORT where the target's configuration points for it. Its tapes
    /// are not replayed; the report shows the calls made to each mock. Repeatable.
    #[arg(long, value_name = "NAME=ADDR")]
    pub mock: Vec<String>,
    /// How the mocks time their answers: `recorded`, `0`, `3x`, `+200ms`, `p99` (as
    /// `tapedeck mock --latency`) [default: recorded].
    #[arg(long, value_name = "HOW")]
    pub mock_latency: Option<String>,
    /// Fail a share of the mocks' answers on purpose: `'POST /charge: 2% 503, 1% reset'`
    /// (as `tapedeck mock --fault`). Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub mock_fault: Vec<String>,
    /// Seed for the mocks' fault draws (the same seed, the same draws).
    #[arg(long, value_name = "N")]
    pub mock_seed: Option<u64>,
    /// Send a mock's calls that nothing recorded answers on to a real service (a sandbox,
    /// a staging copy): `NAME=URL`, as `tapedeck mock --passthrough`; never the recorded
    /// dependency itself. They still count as unmatched. Repeatable.
    #[arg(long, value_name = "NAME=URL")]
    pub mock_passthrough: Vec<String>,
    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Play the tapes this many times, each after the last.
    #[arg(long = "loop", value_name = "N")]
    #[serde(rename = "loop")]
    pub loops: Option<u64>,
    /// Keep replaying (looping the tapes) for this long, e.g. `10m`.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Set a header on every request, replacing the recorded one: `'Name: value'`;
    /// `${VAR}` is taken from the environment (staging credentials). Repeatable.
    #[arg(long, value_name = "HEADER")]
    pub set_header: Vec<String>,
    /// Remove a header from every request (repeatable).
    #[arg(long, value_name = "NAME")]
    pub remove_header: Vec<String>,
    /// Rewrite the path and query: `REGEX=REPLACEMENT` (`$1` for groups). Repeatable.
    #[arg(long, value_name = "RULE")]
    pub rewrite_path: Vec<String>,
    /// `Host` sent: the `target`'s (`target`, default) or the recorded one (`keep`).
    #[arg(long, value_name = "MODE")]
    pub host_header: Option<String>,
    /// Per-request timeout [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Connections to the target at most [default: 1024].
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// How requests share connections to the target: `pooled` (default: keep-alive
    /// connections shared by all requests) or `as-recorded` (one connection per recorded
    /// HTTP/1 connection, reused only for its requests, as production's clients did).
    #[arg(long, value_name = "MODE")]
    pub connection_reuse: Option<String>,
    /// Accept any TLS certificate (self-signed staging).
    #[arg(long)]
    pub insecure: bool,
    /// CA certificates (PEM) to trust for an https target.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Worker threads [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Write the responses as a tape into this directory (linked to the recorded exchanges).
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Scrub policy (TOML) for the results tape and the reports' examples, extending the
    /// built-in defaults; use the proxy's, so both agree.
    #[arg(long, value_name = "FILE")]
    pub scrub_policy: Option<PathBuf>,
    /// Key for `hash` rules in results and reports (else $TAPEDECK_SCRUB_KEY); use the
    /// proxy's key, so staging's tokens join the capture's.
    #[arg(long, value_name = "FILE")]
    pub scrub_key_file: Option<PathBuf>,
    /// Protobuf descriptor set (`protoc --include_imports --descriptor_set_out=FILE`):
    /// gRPC messages are compared field by field (`$.customer.email`, with the noise,
    /// ignore and correlation rules JSON gets) and results scrubbed by field name; without
    /// it, messages are compared by count and bytes.
    #[arg(long, value_name = "FILE")]
    pub proto_descriptor: Option<PathBuf>,
    /// Write staging's answers and the reports' examples unscrubbed (they may hold
    /// personal data and the credentials sent to staging).
    #[arg(long, conflicts_with_all = ["scrub_policy", "scrub_key_file"])]
    pub no_scrub_results: bool,
    /// Response body bytes kept per response in the results [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Never report this difference: `$.json.path`, `header:NAME`, `status`, `body`,
    /// `grpc-status`, `websocket:close`, optionally after a
    /// route (`'GET /users/{id} $.updated_at'`). Repeatable.
    #[arg(long, value_name = "RULE")]
    pub ignore: Vec<String>,
    /// Send a few safe (GET/HEAD) requests per route twice and treat what differs between
    /// the two answers as noise.
    #[arg(long)]
    pub noise_probe: bool,
    /// Noise model: read it if it exists, and write it back with what this run learned.
    #[arg(long, value_name = "FILE")]
    pub noise_model: Option<PathBuf>,
    /// Only replay: do not compare responses (nor correlate sessions).
    #[arg(long)]
    pub no_compare: bool,
    /// Do not substitute the target's generated values (ids, tokens) into later requests.
    #[arg(long)]
    pub no_correlate: bool,
    /// Replay even at the service the tapes were recorded from.
    #[arg(long)]
    pub allow_production_target: bool,
    /// Send recorded credentials (Authorization, Cookie, API-key and session-token
    /// headers) and client addresses (X-Forwarded-For, Forwarded, X-Real-IP) as recorded.
    /// Without it they are withheld: use --set-header for staging's own credentials.
    /// Refused for tapes that were not scrubbed.
    #[arg(long)]
    pub keep_credentials: bool,
    /// Replay tapes that were never scrubbed (imported, or captured with --no-scrub): their
    /// paths, queries and bodies go to the target as production recorded them.
    #[arg(long)]
    pub allow_unscrubbed: bool,
    /// Refuse a --scrub-key-file that group or others can read, or another user owns
    /// (without it, a warning).
    #[arg(long)]
    pub strict_perms: bool,
    /// Accept a --results directory that is a symlink, writable by group or others, or
    /// owned by another user.
    #[arg(long)]
    pub allow_shared_dir: bool,
    /// No live progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Report files, gates, compare settings.
    #[command(flatten)]
    #[serde(skip)]
    pub output: ReportFlags,
    #[command(flatten)]
    #[serde(skip)]
    pub nats: super::nats::NatsFlags,
    /// Read settings from this TOML file (keys are the flag names; flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl ReplayArgs {
    /// Fills unset flags from the config file.
    fn merge_file(mut self) -> Result<Self> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
        // Keys are the flag names: one that is none is refused (with its line), and each
        // part of the settings is read on its own, so that a wrong value names its line.
        super::refuse_unknown_keys::<ReplayArgs>("config file", &path, &text)?;
        let toml_error = |e| super::toml_error("config file", &path, &text, &e);
        let file: ReplayArgs = toml::from_str(&text).map_err(toml_error)?;
        let output: ReportFlags = toml::from_str(&text).map_err(toml_error)?;
        self.nats.merge(toml::from_str(&text).map_err(toml_error)?);
        #[rustfmt::skip]
        let ReplayArgs {
            paths, target, speed, rate, concurrency, max_in_flight, filter, method, route, status, host, from, to,
            sample, shard, start_at, late_ok, publish_results, run_id, create_stream, mock, mock_latency, mock_fault, mock_seed, mock_passthrough,
            limit, loops, duration, set_header, remove_header, rewrite_path, host_header, timeout, connections,
            connection_reuse, insecure, ca, workers, results, scrub_policy, scrub_key_file, proto_descriptor,
            no_scrub_results, max_body, ignore, noise_probe, noise_model, no_compare, no_correlate,
            allow_production_target, keep_credentials, allow_unscrubbed, strict_perms, allow_shared_dir, no_progress,
            output: _, nats: _, config: _,
        } = file;
        // The tempo is one setting: a --speed or --rate flag replaces the file's.
        let (speed, rate) = if self.speed.is_some() || self.rate.is_some() { (None, None) } else { (speed, rate) };
        merge_from_file!(self;
            options: target, speed, rate, concurrency, max_in_flight, filter, from, to, sample, shard, start_at, limit,
                loops, duration, publish_results, run_id, mock_latency, mock_seed,
                host_header, timeout, connections, connection_reuse, ca, workers, results, scrub_policy, scrub_key_file,
                proto_descriptor, max_body, noise_model;
            lists: paths, method, route, status, host, set_header, remove_header, rewrite_path, ignore, mock, mock_fault, mock_passthrough;
            switches: late_ok, create_stream, insecure, no_scrub_results, noise_probe, no_compare, no_correlate, allow_production_target,
                keep_credentials, allow_unscrubbed, strict_perms, allow_shared_dir, no_progress);
        let ReportFlags { report, html, junit, gate, compare_config, top, force } = output;
        merge_from_file!(self.output;
            options: report, html, junit, compare_config, top; lists: gate; switches: force);
        Ok(self)
    }
}

/// A results directory holds one run: an earlier run's report and results tapes are
/// refused, or removed with `force`.
fn prepare_results(dir: &std::path::Path, force: bool, allow_shared: bool) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // Before anything in it is touched: a planted link or someone else's directory must
    // not make --force delete their files.
    tapedeck_captures::files::check_private_dir(dir, allow_shared)?;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let earlier: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == REPORT_FILE || (name.starts_with("replay-") && name.contains(".tape"))
        })
        .collect();
    if earlier.is_empty() {
        return Ok(());
    }
    if !force {
        bail!(
            "{} holds an earlier run ({} files: {REPORT_FILE}, replay-*.tape): pass --force to replace it, or \
             choose a new --results directory",
            dir.display(),
            earlier.len()
        );
    }
    // Only files are removed: a link of that name is replaced when the report is written.
    for p in earlier.iter().filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())) {
        std::fs::remove_file(p).with_context(|| format!("cannot remove the earlier run's {}", p.display()))?;
    }
    Ok(())
}

fn config(args: &ReplayArgs) -> Result<ReplayConfig> {
    if args.paths.is_empty() {
        bail!("which tapes? give tapes or directories (or `paths` in --config)");
    }
    let target = args.target.as_deref().ok_or_else(|| {
        anyhow!("--target is required: where to replay, e.g. --target http://staging:8080 (never production)")
    })?;
    if tapedeck_captures::scrub::userinfo_span(target).is_some() {
        bail!(tapedeck_captures::scrub::userinfo_refused(
            "--target",
            target,
            "send staging's credentials with --set-header 'Authorization: Basic ${STAGING_BASIC}'"
        ));
    }
    let target: http::Uri =
        target.parse().map_err(|e| anyhow!("--target {:?}: {e}", tapedeck_captures::scrub::redact_userinfo(target)))?;
    let mut c = ReplayConfig::new(args.paths.clone(), target)?;
    c.pacing = match args.rate {
        Some(r) if r > 0.0 && r.is_finite() => Pacing::Rate { per_sec: r },
        Some(r) => bail!("--rate {r}: must be above 0"),
        None => args.speed.as_deref().unwrap_or("1x").parse::<Pacing>().map_err(|e| anyhow!("--speed {e}"))?,
    };
    c.max_in_flight = args.max_in_flight.unwrap_or(1024).max(1);
    if let Some(n) = args.concurrency {
        if c.pacing != Pacing::Max {
            bail!("--concurrency goes with --speed max; use --max-in-flight to bound a paced replay");
        }
        c.max_in_flight = n.max(1);
    }
    let s = &mut c.selection;
    s.filter = args.filter.as_deref().map(Filter::parse).transpose().context("invalid --filter")?;
    s.methods = args.method.clone();
    s.routes = args.route.clone();
    s.statuses =
        args.status.iter().map(|v| v.parse()).collect::<Result<_, String>>().map_err(|e| anyhow!("--status {e}"))?;
    s.hosts = args.host.clone();
    s.from = args.from.as_deref().map(str::parse).transpose().map_err(|e: String| anyhow!("--from {e}"))?;
    s.to = args.to.as_deref().map(str::parse).transpose().map_err(|e: String| anyhow!("--to {e}"))?;
    s.shard = args.shard.as_deref().map(str::parse).transpose().map_err(|e| anyhow!("--shard {e}"))?;
    s.sample = args
        .sample
        .as_deref()
        .map(tapedeck_proxy::sample::parse_rate)
        .transpose()
        .map_err(|e| anyhow!("--sample {e}"))?;
    s.limit = args.limit;
    c.loops = args.loops;
    if let Some(at) = &args.start_at {
        let t: jiff::Timestamp = at.parse().map_err(|e| {
            anyhow!("--start-at {at:?}: {e} (an RFC 3339 time with its offset, e.g. 2026-12-03T10:00:00Z)")
        })?;
        let ahead = t.as_nanosecond() - i128::from(tapedeck_captures::tape::writer::now_unix_ns());
        if ahead > 7 * 24 * 3_600_000_000_000 {
            bail!("--start-at {at}: more than a week ahead; is the date right?");
        }
        c.start_at = Some(i64::try_from(t.as_nanosecond()).map_err(|_| anyhow!("--start-at {at}: out of range"))?);
        c.late_ok = args.late_ok;
    } else if args.late_ok {
        bail!("--late-ok goes with --start-at (it lets a host join a schedule that has begun)");
    }
    c.duration = args.duration.as_deref().map(humantime::parse_duration).transpose().context("invalid --duration")?;
    if c.duration.is_some_and(|d| d > Duration::from_secs(365 * 24 * 3600)) {
        bail!("--duration: at most a year");
    }
    c.rewrite.keep_host = match args.host_header.as_deref().unwrap_or("target") {
        "keep" => true,
        "target" => false,
        other => bail!("--host-header {other:?}: expected keep or target"),
    };
    for h in &args.remove_header {
        c.rewrite.remove.push(h.parse().map_err(|_| {
            // A whole `Name: value` given by mistake would echo a credential: the name at most.
            let shown: String = h.split(':').next().unwrap_or("").trim().chars().take(40).collect();
            anyhow!("--remove-header {shown:?}: invalid header name (give the name alone)")
        })?);
    }
    for h in &args.set_header {
        c.rewrite.set.push(parse_set_header(h)?);
    }
    for r in &args.rewrite_path {
        c.rewrite.paths.push(parse_path_rule(r)?);
    }
    if let Some(t) = &args.timeout {
        c.client.timeout = humantime::parse_duration(t).map_err(|e| anyhow!("--timeout {t:?}: {e}"))?;
        if c.client.timeout > Duration::from_secs(30 * 24 * 3600) {
            bail!("--timeout {t:?}: at most 30 days");
        }
        // Connecting (and the TLS handshake) within the request's own time, not past it.
        c.client.connect_timeout = c.client.connect_timeout.min(c.client.timeout);
    }
    c.client.connections = args.connections.unwrap_or(1024).max(1);
    c.client.as_recorded = match args.connection_reuse.as_deref().unwrap_or("pooled") {
        "pooled" => false,
        "as-recorded" => true,
        other => bail!("--connection-reuse {other:?}: expected pooled or as-recorded"),
    };
    c.client.insecure = args.insecure;
    c.client.ca = args.ca.clone();
    if !c.rewrite.is_https() && (args.insecure || args.ca.is_some()) {
        tracing::warn!("--ca and --insecure apply to an https:// target; {} is plain http", c.rewrite.origin());
    }
    if let Some(m) = &args.max_body {
        c.client.max_body =
            m.parse::<bytesize::ByteSize>().map_err(|e| anyhow!("--max-body {m:?}: {e}"))?.as_u64() as usize;
    }
    if let Some(w) = args.workers {
        c.workers = w.max(1);
    }
    c.results = args.results.clone();
    c.allow_production_target = args.allow_production_target;
    c.allow_shared_dir = args.allow_shared_dir;
    c.rewrite.keep_credentials = args.keep_credentials;
    c.allow_unscrubbed = args.allow_unscrubbed;
    // Read once: the comparison and the results' scrubbing share it.
    let proto = args.proto_descriptor.as_deref().map(super::scrub::load_proto).transpose()?;
    c.compare = if args.no_compare {
        if args.noise_probe
            || args.noise_model.is_some()
            || !args.ignore.is_empty()
            || args.output.compare_config.is_some()
        {
            bail!("--no-compare turns comparison off; drop it to use --ignore, --noise-probe, --noise-model or --compare-config");
        }
        None
    } else {
        let mut compare = super::report::compare_config(args.output.compare_config.as_deref())?;
        compare.proto = proto.clone();
        for rule in &args.ignore {
            compare.add_ignore(rule).map_err(|e| anyhow!("--ignore: {e}"))?;
        }
        if args.no_correlate {
            compare.auto_correlate = false;
            compare.correlate.clear();
        }
        Some(compare)
    };
    c.scrub = if args.no_scrub_results {
        if args.scrub_policy.is_some() || args.scrub_key_file.is_some() {
            bail!("--no-scrub-results turns scrubbing off; drop --scrub-policy and --scrub-key-file with it");
        }
        say!(
            "WARNING: --no-scrub-results: staging's answers (--results) and the reports' examples are written \
             UNSCRUBBED and may hold personal data and credentials"
        );
        None
    } else {
        let scrubber = super::scrub::load_scrubber(super::scrub::ScrubFiles {
            policy: args.scrub_policy.as_deref(),
            key_file: args.scrub_key_file.as_deref(),
            proto,
            strict_perms: args.strict_perms,
        })?;
        if args.results.is_some() && !scrubber.has_key() {
            say!("note: results are scrubbed; {}", super::scrub::NO_KEY_NOTICE);
        }
        Some(std::sync::Arc::new(scrubber))
    };
    c.noise_probe = args.noise_probe;
    if let Some(path) = args.noise_model.as_deref().filter(|p| p.exists()) {
        c.noise_model = NoiseModel::load(path)?;
    }
    Ok(c)
}

/// Sets `stop` on Ctrl-C or SIGTERM. The handlers are in place when this returns (a
/// signal that comes a moment later is never the default one, which kills the process
/// without its summary); they are then served on a thread of their own.
/// Calls a dependency gets during a request of the replayed window's last second can
/// start this much later (ns): the mocks answer from them too.
const MOCK_WINDOW_SLACK_NS: i64 = 30_000_000_000;

/// The recorded window `--from`/`--to` select (ns since the epoch), which the mocks answer
/// from; `None` when the whole recording is replayed.
fn mock_window(config: &ReplayConfig) -> Result<Option<(i64, i64)>> {
    use tapedeck_replayer::source::TimeBound;
    let (from, to) = (config.selection.from, config.selection.to);
    if from.is_none() && to.is_none() {
        return Ok(None);
    }
    // Offsets count from the first recorded request the replay reads.
    let offsets = [from, to].iter().any(|b| matches!(b, Some(TimeBound::Offset(_))));
    let first = if offsets {
        tapedeck_captures::tape::TapeReader::open_traffic(&config.paths, &config.selection.mocked)?
            .0
            .next()
            .map(|e| e.wall_start_ns())
    } else {
        None
    };
    let at = |b: TimeBound| match b {
        TimeBound::Offset(d) => first.map(|f| f.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))),
        TimeBound::At(t) => Some(t),
    };
    let from = from.and_then(at).unwrap_or(i64::MIN);
    let to = to.and_then(at).map_or(i64::MAX, |t| t.saturating_add(MOCK_WINDOW_SLACK_NS));
    Ok(Some((from, to)))
}

fn watch_signals(stop: Arc<AtomicBool>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let mut stop_signals = {
        let _context = rt.enter();
        super::signals::Stop::install()
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            for signals in 0.. {
                stop_signals.recv().await;
                // Stderr may be a closed pipe (a supervisor's log gone): saying so must never
                // keep the signal from working, so the flag is set first and nothing panics.
                use std::io::Write as _;
                if signals > 0 {
                    // A second Ctrl-C: the user will not wait for the requests in flight.
                    let _ = writeln!(std::io::stderr(), "tapedeck replay: stopped at once; the summary and results are not written");
                    std::process::exit(130);
                }
                stop.store(true, Ordering::Relaxed);
                let _ = writeln!(
                    std::io::stderr(),
                    "\ntapedeck replay: stopping; waiting up to 5 s for requests in flight (Ctrl-C again to quit at once)"
                );
            }
        });
    });
}

/// While the schedule waits for `--start-at`: how long, for people (whole seconds).
fn waiting(progress: &Progress) -> Option<String> {
    let at = progress.starts_at_unix_ns.load(Ordering::Relaxed);
    let left = at.checked_sub(tapedeck_captures::tape::writer::now_unix_ns()).filter(|&ns| at != 0 && ns > 0)?;
    let left = humantime::format_duration(Duration::from_secs((left as u64).div_ceil(1_000_000_000)));
    let at = jiff::Timestamp::from_nanosecond(i128::from(at)).map_or_else(|_| String::new(), |t| t.to_string());
    Some(format!("waiting {left} until --start-at {at}, in step with the other shards"))
}

/// Without a progress bar: says once that the schedule waits for `--start-at`, when it
/// does (after the tapes and settings were checked).
fn announce_wait(progress: Arc<Progress>, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            if progress.starts_at_unix_ns.load(Ordering::Relaxed) != 0 {
                if let Some(wait) = waiting(&progress) {
                    say!("tapedeck replay: {wait}");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// A live progress bar on stderr, until `done` is set: sent (of the total, once the tapes'
/// footers give it), the rate over the last second, in flight, errors and lag.
fn show_progress(progress: Arc<Progress>, done: Arc<AtomicBool>, paced: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let style = |template: &str| indicatif::ProgressStyle::with_template(template).map(|s| s.progress_chars("=> "));
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(s) = style("{elapsed_precise} {spinner} {pos} sent · {msg}") {
            bar.set_style(s);
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut window = std::collections::VecDeque::from([(std::time::Instant::now(), 0u64)]);
        while !done.load(Ordering::Relaxed) {
            if let Some(wait) = waiting(&progress) {
                bar.set_message(wait);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let total = load(&progress.total_hint);
            if total > 0 && bar.length().is_none() {
                bar.set_length(total);
                if let Ok(s) = style("{elapsed_precise} [{bar:25}] {pos}/{len} · {msg}") {
                    bar.set_style(s);
                }
            }
            let sent = load(&progress.sent);
            let now = std::time::Instant::now();
            window.push_back((now, sent));
            while window.len() > 11 {
                window.pop_front();
            }
            let (then, before) = window[0];
            let rate = (sent - before) as f64 / (now - then).as_secs_f64().max(0.001);
            bar.set_position(sent);
            let mut msg = format!(
                "{rate:.0}/s · {} in flight · {} errors",
                progress.in_flight.load(Ordering::Relaxed),
                load(&progress.errors)
            );
            // Unpaced, nothing is due at a time: lag would only say how long requests queued.
            if paced {
                msg += &format!(
                    " · lag max {:.1} ms, {} >10 ms",
                    load(&progress.max_lag_us) as f64 / 1000.0,
                    load(&progress.late)
                );
            }
            bar.set_message(msg);
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}

/// A `nats://` stream among the replay's paths: its place among them, its address and
/// its `?from=&to=` window (ns since the Unix epoch).
struct StreamPath {
    index: usize,
    address: tapedeck_stream::address::StreamAddress,
    from: Option<i64>,
    to: Option<i64>,
}

/// The streams among `paths`, each parsed once.
fn stream_paths(paths: &[std::path::PathBuf]) -> Result<Vec<StreamPath>> {
    let mut streams = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let Some(text) = path.to_str().filter(|t| tapedeck_stream::address::StreamAddress::is_stream(t)) else {
            continue;
        };
        let address = super::nats::address("stream", text)?;
        let (from, to) = super::nats::window(text)?;
        streams.push(StreamPath { index, address, from, to });
    }
    Ok(streams)
}

/// Replaces each stream among `args.paths` by a private temporary directory holding a
/// copy of it (kept until the returned directories are dropped).
fn copy_streams(args: &mut ReplayArgs, streams: Vec<StreamPath>) -> Result<Vec<tempfile::TempDir>> {
    let mut copies = Vec::new();
    if !streams.is_empty() {
        args.nats.check_secrets(false)?;
    }
    for StreamPath { index, address, from, to } in streams {
        let dir = tempfile::Builder::new().prefix("tapedeck-stream-").tempdir().context("a temporary directory")?;
        let mut config = tapedeck_stream::archive::ArchiveConfig::new(address.clone(), dir.path().join("tapes"));
        config.auth = args.nats.auth();
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
        let copied = runtime.block_on(tapedeck_stream::archive::snapshot(config, from, to))?;
        say!(
            "tapedeck replay: copied {} exchanges ({} blocks) from {address}{}",
            copied.exchanges,
            copied.blocks,
            if copied.damaged > 0 {
                format!("; {} unreadable message(s) skipped", copied.damaged)
            } else {
                String::new()
            }
        );
        if copied.exchanges == 0 {
            bail!("{address} holds no captures{}", if from.is_some() || to.is_some() { " in that window" } else { "" });
        }
        args.paths[index] = dir.path().join("tapes");
        copies.push(dir);
    }
    if copies.is_empty() && args.nats.any() && args.publish_results.is_none() {
        bail!("the --nats-* flags go with a nats:// stream among the tapes, or --publish-results");
    }
    Ok(copies)
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let mut args = args.merge_file()?;
    // A stream's `?from=&to=` window is the replay's window too (the copy reaches a little
    // wider, to catch blocks published late), unless --from/--to say otherwise.
    let mut streams = stream_paths(&args.paths)?;
    // Shards copy the stream each at its own moment: an open window would give each
    // different captures. It ends at --start-at, or must say where it ends.
    if args.shard.is_some() && args.to.is_none() {
        let start_at = args.start_at.as_deref().and_then(|t| t.trim().parse::<jiff::Timestamp>().ok());
        for s in streams.iter_mut().filter(|s| s.to.is_none()) {
            match start_at {
                Some(at) => s.to = i64::try_from(at.as_nanosecond()).ok(),
                None => bail!(
                    "{}: a sharded replay from a stream needs its window's end (?to=TIME, or --to, or --start-at, \
                     which then ends it) so that every shard copies the same captures",
                    s.address
                ),
            }
        }
    }
    for &StreamPath { from, to, .. } in &streams {
        let at = |ns: i64| jiff::Timestamp::from_nanosecond(i128::from(ns)).map(|t| t.to_string()).ok();
        if args.from.is_none() {
            args.from = from.and_then(at);
        }
        if args.to.is_none() {
            args.to = to.and_then(at);
        }
    }
    // The flags are checked before a stream is copied (which can take a while), and the
    // copies' directories replace the streams among the paths.
    let mut config = config(&args)?;
    let mock_plan = super::mock::MockPlan::parse(super::mock::MockFlags {
        mock: &args.mock,
        latency: args.mock_latency.as_deref(),
        fault: &args.mock_fault,
        seed: args.mock_seed,
        passthrough: &args.mock_passthrough,
        ca: args.ca.as_deref(),
    })?;
    if let Some(plan) = &mock_plan {
        config.selection.mocked = plan.services();
    }
    // Late already: said before a copy of a stream that would only make it later.
    config.check_on_time()?;
    // Where the report will be published, checked now: not after a long run.
    let publisher = match &args.publish_results {
        Some(url) => Some(super::nats::ResultsPublisher::open(
            url,
            &args.nats,
            super::nats::run_id(args.run_id.as_deref(), config.start_at)?,
            config.selection.shard.map(|s| (s.index as usize, s.count as usize)),
            args.create_stream,
        )?),
        // Set in a config file, where clap's `requires` does not look.
        None if args.run_id.is_some() || args.create_stream => {
            bail!("--run-id and --create-stream go with --publish-results")
        }
        None => None,
    };
    let _copies = copy_streams(&mut args, streams)?;
    config.paths = args.paths.clone();
    let mut dependencies = Vec::new();
    if let Ok((segments, skipped)) = tapedeck_captures::tape::discover_recordings(&args.paths) {
        for s in skipped {
            say!("note: {s}");
        }
        let (traffic, deps) = tapedeck_captures::tape::split_dependencies(segments, &config.selection.mocked);
        if traffic.is_empty() && !deps.is_empty() {
            bail!(
                "every tape given was recorded in front of a mocked dependency ({}): give the service's own \
                 captures too (`proxy --role ingress`), which the replay sends while the mocks answer",
                config.selection.mocked.join(", ")
            );
        }
        let dependency_only = deps.is_empty()
            && traffic
                .iter()
                .any(|p| tapedeck_captures::tape::SegmentReader::open(p).is_ok_and(|r| r.header().is_dependency()));
        if dependency_only {
            say!(
                "note: these tapes were recorded in front of a dependency (proxy --role dependency): its calls are \
                 replayed against the target, as to a staging copy of that dependency"
            );
        }
        if !deps.is_empty() && args.mock.is_empty() {
            say!(
                "note: {} segment(s) recorded in front of dependencies (proxy --role dependency) are not replayed; \
                 --mock NAME=ADDR answers the target's calls to them from those",
                deps.len()
            );
        }
        dependencies = deps;
    }
    let gates = args.output.gates()?;
    // Outputs that cannot be written are refused before the replay, not after it.
    let outputs = args.output.outputs();
    // The results directory first (judged, and made if new), so outputs may go inside it.
    if let Some(dir) = &config.results {
        tapedeck_captures::files::make_private_dir(dir, args.allow_shared_dir, "creating the results directory")?;
    }
    let results_report = config.results.as_ref().map(|d| d.join(REPORT_FILE));
    let mut others: Vec<&std::path::Path> = results_report.iter().map(|p| p.as_path()).collect();
    if let Some(model) = &args.noise_model {
        // Read, then written back: its directory must exist now, not after the run.
        tapedeck_captures::files::check_output(model, true).context("--noise-model")?;
        if results_report.as_deref().map(tapedeck_captures::files::output_identity)
            == Some(tapedeck_captures::files::output_identity(model))
        {
            bail!("--noise-model {} is the results directory's report: give it its own file", model.display());
        }
        others.push(model);
    }
    outputs.check(&others)?;
    if let Some(dir) = &config.results {
        prepare_results(dir, args.output.force, args.allow_shared_dir)?;
    }
    if !gates.is_empty() && config.compare.is_none() && gates.iter().any(|g| g.text.contains("diff")) {
        bail!("--gate on differences needs the comparison; drop --no-compare");
    }
    let mocks = match mock_plan {
        Some(plan) => {
            Some(super::mock::ReplayMocks::start(plan, config.scrub.clone(), &dependencies, mock_window(&config)?)?)
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let bar = (!args.no_progress && std::io::stderr().is_terminal())
        .then(|| show_progress(progress.clone(), done.clone(), config.pacing != Pacing::Max));
    if bar.is_none() && config.start_at.is_some() {
        announce_wait(progress.clone(), done.clone());
    }
    let result = replay(&config, &stop, progress);
    done.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    let mut report = result?;
    if let Some(mocks) = mocks {
        report.mocks = mocks.finish();
    }
    report.apply_gates(&gates);
    print!("{}", report.render(args.output.top()));
    if let (Some(dir), Some(_)) = (&config.results, &report.results) {
        // Beside the responses, so `tapedeck report DIR` can re-render without replaying.
        if let Err(e) = report.save(&dir.join(REPORT_FILE), args.output.force) {
            say!("tapedeck replay: {e}");
        }
    }
    if let Some(path) = &args.noise_model {
        match report.noise.save(path) {
            Ok(()) => println!("  noise model ({} noisy keys) written to {}", report.noise.len(), path.display()),
            Err(e) => say!("tapedeck replay: {e}"),
        }
    }
    let withheld = config.rewrite.withheld.load(Ordering::Relaxed);
    if withheld > 0 {
        println!(
            "  note: {withheld} requests were sent without their recorded credentials or client addresses \
             (--set-header supplies staging's own; --keep-credentials sends them as recorded)"
        );
    }
    outputs.write(&report)?;
    // Published last (the local files first: the network may be gone), and only a run
    // that went to its end: a stopped shard's report would pass for its whole part (an
    // earlier complete report of the same part stays the one read).
    if let Some(p) = &publisher {
        if report.interrupted {
            say!(
                "tapedeck replay: the report was not published to {}: the run stopped early; run the shard again",
                p.address()
            );
        } else {
            // A shard that cannot publish fails: the merge of the run would lack it.
            p.publish(&report)?;
        }
    }
    if report.results_failed > 0 {
        bail!(
            "{} of {} responses could not be written to {} (is the disk full?); the summary above is complete, \
             the results tape is not",
            report.results_failed,
            report.sent,
            report.results.as_deref().unwrap_or("the results directory")
        );
    }
    let stopped = report.interrupted && stop.load(Ordering::Relaxed);
    if stopped {
        // Ctrl-C: the run's own exit code, whatever was answered (the summary says what).
        if report.sent == 0 {
            say!("tapedeck replay: stopped before the first request was sent");
        } else if report.completed == 0 {
            let why = if report.errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", tapedeck_report::mix(&report.errors))
            };
            say!("tapedeck replay: stopped before any answer: {} request(s) sent, none answered{why}", report.sent);
        }
        return Ok(ExitCode::from(130));
    }
    if report.sent == 0 {
        if let Some(d) = &report.tape_damage {
            bail!("nothing was replayed, and the tapes are damaged: {}", d.summary());
        }
        // Not an error (an empty window, or a shard without sessions, can be expected), but
        // never silent.
        let shard = match &report.shard {
            Some(s) => format!(
                ", or none of those it matched is in shard {s} (whole sessions go to one shard: with few sessions, \
                 or a small --limit, a shard can get none)"
            ),
            None => String::new(),
        };
        say!(
            "tapedeck replay: nothing was replayed: no recorded exchange matched the selection \
             (--route, --method, --status, --host, --filter, --from/--to, --sample, --limit){shard}; \
             `tapedeck inspect TAPES` lists the routes and times the tapes hold"
        );
    }
    if report.sent > 0 && report.completed == 0 {
        let why = tapedeck_report::mix(&report.errors);
        let unreachable: u64 = ["connect_refused", "dns"].iter().filter_map(|k| report.errors.get(*k)).sum();
        let gave_up = if report.interrupted && unreachable >= tapedeck_replayer::progress::DEAD_TARGET_AFTER {
            format!("; stopped after {unreachable} unreachable, the rest of the schedule not sent")
        } else {
            String::new()
        };
        let causes: String = report.error_causes.iter().map(|(k, c)| format!("; {k}: {c}")).collect();
        let broken: u64 = ["reset", "incomplete_body", "protocol", "response_timeout"]
            .iter()
            .filter_map(|k| report.errors.get(*k))
            .sum();
        let most = report.errors.iter().max_by_key(|(_, n)| **n).map(|(k, _)| k.as_str());
        let advice = match most {
            _ if broken == report.sent => "it is reachable, but every answer broke off or timed out: see its logs",
            Some("tls") => "the TLS handshake failed: see why above",
            Some("dns") => "its name does not resolve from this machine",
            Some("connect_timeout") => {
                "nothing accepted the connection in time: a wrong address or port, or a firewall?"
            }
            Some("connect_refused") => "is it running, and listening on that port?",
            _ => "is it running and reachable?",
        };
        bail!(
            "the target {} answered none of {} requests completely ({why}{gave_up}){causes}; {advice}",
            report.target,
            report.sent
        );
    }
    Ok(if report.gates_passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid_and_flags_win() {
        let text = include_str!("../../examples/replay.toml");
        crate::commands::refuse_unknown_keys::<ReplayArgs>(
            "example",
            std::path::Path::new("examples/replay.toml"),
            text,
        )
        .unwrap();
        let example: ReplayArgs = toml::from_str(text).unwrap();
        assert_eq!(example.target.as_deref(), Some("https://staging.internal:8443"));
        assert_eq!(example.set_header, ["Authorization: Bearer ${STAGING_TOKEN}"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("replay.toml");
        std::fs::write(
            &file,
            "paths = [\"caps/\"]\ntarget = \"http://staging:8080\"\nspeed = \"2x\"\nloop = 3\ngate = [\"errors==0\"]\ntop = 7\n",
        )
        .unwrap();
        let flags = ReplayArgs { rate: Some(50.0), config: Some(file.clone()), ..Default::default() };
        let merged = flags.merge_file().unwrap();
        assert_eq!(merged.paths, [PathBuf::from("caps/")]);
        assert_eq!(merged.target.as_deref(), Some("http://staging:8080"));
        assert_eq!((merged.rate, merged.speed), (Some(50.0), None), "--rate replaces the file's speed");
        assert_eq!(merged.loops, Some(3));
        assert_eq!((merged.output.gate.as_slice(), merged.output.top), (&["errors==0".to_string()][..], Some(7)));

        std::fs::write(&file, "target = \"http://staging:8080\"\nsped = \"2x\"\n").unwrap();
        let err = ReplayArgs { config: Some(file.clone()), ..Default::default() }.merge_file().unwrap_err();
        assert!(
            format!("{err:#}").contains("line 2") && format!("{err:#}").contains("did you mean `speed`"),
            "{err:#}"
        );
        // The first unknown key in the file's order; a key spelled in capitals or with
        // underscores is matched as a flag would be spelled, its text never shown.
        std::fs::write(&file, "zzz = 1\ntarget = \"http://x\"\nMAX_BODY = \"1MiB\"\n").unwrap();
        let err = ReplayArgs { config: Some(file.clone()), ..Default::default() }.merge_file().unwrap_err();
        assert!(format!("{err:#}").contains("line 1: unknown key `zzz`"), "{err:#}");
        std::fs::write(&file, "target = \"http://x\"\nMAX_BODY = \"1MiB\"\n").unwrap();
        let err =
            format!("{:#}", ReplayArgs { config: Some(file.clone()), ..Default::default() }.merge_file().unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("did you mean `max-body`") && !err.contains("MAX_BODY"),
            "{err}"
        );
        // A file that is no settings file (a token, a key): one line, and said so.
        std::fs::write(&file, "API_TOKEN=abc123def456\n").unwrap();
        let err =
            format!("{:#}", ReplayArgs { config: Some(file.clone()), ..Default::default() }.merge_file().unwrap_err());
        assert!(!err.contains('\n') && err.contains("does not look like a TOML settings file"), "{err}");
        assert!(!err.contains("abc123"), "{err}");
        // A wrong value in the report's part names its line too.
        std::fs::write(&file, "target = \"http://staging:8080\"\n\ntop = \"many\"\n").unwrap();
        let err = ReplayArgs { config: Some(file.clone()), ..Default::default() }.merge_file().unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
        // Flags win over the file, the file fills what flags leave.
        std::fs::write(&file, "top = 7\nhtml = \"r.html\"\n").unwrap();
        let flags = ReplayArgs {
            output: ReportFlags { top: Some(3), ..Default::default() },
            config: Some(file),
            ..Default::default()
        };
        let merged = flags.merge_file().unwrap();
        assert_eq!((merged.output.top, merged.output.html), (Some(3), Some(PathBuf::from("r.html"))));
    }
}
