//! NATS JetStream settings shared by `proxy --sink` and `archive`: how to log in and trust
//! the server's TLS. Secrets come from files, never from flags or addresses (those show in
//! process lists), and are never printed.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use tapedeck_stream::address::{NatsAuth, StreamAddress};

/// Credentials and TLS for NATS (also keys of the config file).
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
#[command(next_help_heading = "NATS")]
pub struct NatsFlags {
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`).
    #[arg(long, value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// A file holding a NATS token.
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// A NATS user name (with --nats-password-file).
    #[arg(long, value_name = "NAME")]
    pub nats_user: Option<String>,
    /// A file holding the NATS user's password.
    #[arg(long, value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the NATS server's TLS (requires TLS).
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS, with --nats-key.
    #[arg(long, value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE")]
    pub nats_key: Option<PathBuf>,
}

impl NatsFlags {
    /// Fills unset flags from the config file's values.
    pub fn merge(&mut self, file: NatsFlags) {
        let NatsFlags {
            nats_creds,
            nats_nkey,
            nats_token_file,
            nats_user,
            nats_password_file,
            nats_ca,
            nats_cert,
            nats_key,
        } = file;
        merge_from_file!(self;
            options: nats_creds, nats_nkey, nats_token_file, nats_user, nats_password_file, nats_ca, nats_cert,
                nats_key;
            lists: ; switches: );
    }

    /// Whether any is set (they need a stream to go with).
    pub fn any(&self) -> bool {
        self.nats_creds.is_some()
            || self.nats_nkey.is_some()
            || self.nats_token_file.is_some()
            || self.nats_user.is_some()
            || self.nats_password_file.is_some()
            || self.nats_ca.is_some()
            || self.nats_cert.is_some()
            || self.nats_key.is_some()
    }

    /// Warns (refuses with `strict`) when a file holding a NATS secret can be read by
    /// others, as for the TLS key and the scrub key.
    pub fn check_secrets(&self, strict: bool) -> Result<()> {
        let files = [
            (&self.nats_creds, "NATS credentials file"),
            (&self.nats_nkey, "NATS nkey seed file"),
            (&self.nats_token_file, "NATS token file"),
            (&self.nats_password_file, "NATS password file"),
            (&self.nats_key, "NATS client key"),
        ];
        for (file, what) in files {
            if let Some(path) = file {
                super::check_secret_file(path, what, strict)?;
            }
        }
        Ok(())
    }

    /// The login and TLS settings.
    pub fn auth(&self) -> NatsAuth {
        NatsAuth {
            creds: self.nats_creds.clone(),
            nkey: self.nats_nkey.clone(),
            token: self.nats_token_file.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password_file.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
        }
    }
}

/// How `--create-stream` makes the stream (also keys of the config file). A stream that
/// exists is left as it is.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
#[command(next_help_heading = "NATS")]
pub struct StreamFlags {
    /// With --create-stream: copies of each message in a JetStream cluster, 1–5 (3 keeps
    /// the stream through the loss of a server) [default: 1].
    #[arg(long, value_name = "N")]
    pub stream_replicas: Option<usize>,
    /// With --create-stream: captures older than this are removed from the stream (`0`:
    /// kept until --stream-max-bytes or the server's limit) [default: 24h].
    #[arg(long, value_name = "DURATION")]
    pub stream_max_age: Option<String>,
    /// With --create-stream: the stream's size limit, oldest captures removed first
    /// (e.g. `500GiB`) [default: the server's limits].
    #[arg(long, value_name = "SIZE")]
    pub stream_max_bytes: Option<String>,
}

impl StreamFlags {
    /// Fills unset flags from the config file's values.
    pub fn merge(&mut self, file: StreamFlags) {
        let StreamFlags { stream_replicas, stream_max_age, stream_max_bytes } = file;
        merge_from_file!(self; options: stream_replicas, stream_max_age, stream_max_bytes; lists: ; switches: );
    }

    /// The settings for `--create-stream` (`None` without it); the flags without it are
    /// refused rather than ignored.
    pub fn settings(&self, create_stream: bool) -> Result<Option<tapedeck_stream::StreamSettings>> {
        let StreamFlags { stream_replicas, stream_max_age, stream_max_bytes } = self;
        if !create_stream {
            if stream_replicas.is_some() || stream_max_age.is_some() || stream_max_bytes.is_some() {
                return Err(anyhow!(
                    "--stream-replicas, --stream-max-age and --stream-max-bytes say how --create-stream makes the \
                     stream; add --create-stream (a stream that exists is left as it is)"
                ));
            }
            return Ok(None);
        }
        let mut settings = tapedeck_stream::StreamSettings::default();
        if let Some(n) = *stream_replicas {
            if !(1..=5).contains(&n) {
                return Err(anyhow!("--stream-replicas {n}: JetStream keeps 1 to 5 copies"));
            }
            settings.replicas = n;
        }
        if let Some(age) = stream_max_age {
            settings.max_age = match age.trim() {
                "0" => std::time::Duration::ZERO,
                v => humantime::parse_duration(v)
                    .map_err(|e| anyhow!("--stream-max-age {v:?}: {e} (examples: 6h, 7days, 0 for no age limit)"))?,
            };
            // Less than a minute would lose captures before an archiver or replay could
            // read them (and JetStream needs its de-duplication window inside it).
            if !settings.max_age.is_zero() && settings.max_age < std::time::Duration::from_secs(60) {
                return Err(anyhow!("--stream-max-age {age:?}: at least 1m (or 0 for no age limit)"));
            }
        }
        if let Some(size) = stream_max_bytes {
            let bytes = size
                .parse::<bytesize::ByteSize>()
                .map_err(|e| anyhow!("--stream-max-bytes {size:?}: {e} (examples: 500GiB, 2TB)"))?
                .as_u64();
            // A limit below one block would drop every block as it came.
            if bytes < 16 << 20 {
                return Err(anyhow!(
                    "--stream-max-bytes {size:?}: at least 16MiB (a stream holds whole blocks of up to 1 MiB); leave \
                     it out for the server's limits"
                ));
            }
            settings.max_bytes = Some(bytes);
        }
        Ok(Some(settings))
    }
}

/// A stream address from a flag, or why not.
pub fn address(flag: &str, value: &str) -> Result<StreamAddress> {
    value.parse().map_err(|e| anyhow!("{flag} {}: {e}", redact(value)))
}

/// An address as it may be shown: everything up to its last `@` (credentials, whatever
/// characters they hold) is hidden.
fn redact(value: &str) -> String {
    match (value.split_once("://"), value.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", &value[at + 1..]),
        _ => value.to_string(),
    }
}

/// The `?from=TIME&to=TIME` window of a stream address (RFC 3339 times), as ns since the
/// epoch.
pub fn window(value: &str) -> Result<(Option<i64>, Option<i64>)> {
    let Some((_, query)) = value.split_once('?') else { return Ok((None, None)) };
    let (mut from, mut to) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, v) = pair.split_once('=').unwrap_or((pair, ""));
        let at = || -> Result<i64> {
            let t: jiff::Timestamp =
                v.parse().map_err(|e| anyhow!("{key}={v}: {e} (an RFC 3339 time, e.g. 2026-12-03T10:00:00Z)"))?;
            i64::try_from(t.as_nanosecond()).map_err(|_| anyhow!("{key}={v}: out of range"))
        };
        match key {
            "from" | "to" if (if key == "from" { from } else { to }).is_some() => {
                return Err(anyhow!("{}: {key}= is given twice", redact(value)));
            }
            "from" => from = Some(at()?),
            "to" => to = Some(at()?),
            other => return Err(anyhow!("{}: unknown setting {other:?}; a stream takes from= and to=", redact(value))),
        }
    }
    if let (Some(a), Some(b)) = (from, to) {
        if a >= b {
            return Err(anyhow!("{}: from= must be before to=", redact(value)));
        }
    }
    Ok((from, to))
}

/// The run id shards publish their reports under: `--run-id`, or else the `--start-at`
/// instant every shard of a run shares (`20261203T100000Z`).
pub fn run_id(given: Option<&str>, start_at: Option<i64>) -> Result<String> {
    let id = match (given, start_at) {
        (Some(id), _) => id.to_string(),
        (None, Some(ns)) => jiff::Timestamp::from_nanosecond(i128::from(ns))
            .map_err(|e| anyhow!("--start-at: {e}"))?
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string(),
        (None, None) => bail!(
            "--publish-results needs the run's id: --run-id ID (the same on every shard), or --start-at, whose \
             instant names the run"
        ),
    };
    tapedeck_stream::results::check_run_id(&id).map_err(|e| anyhow!("--run-id: {e}"))?;
    Ok(id)
}

/// The `?run=ID` of a results address (`nats://HOST:PORT/STREAM?run=ID`).
pub fn results_run(value: &str) -> Result<String> {
    let query = value.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut run = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("run", id)) if run.is_none() => run = Some(id.to_string()),
            Some(("run", _)) => bail!("{}: run= is given twice", redact(value)),
            _ => bail!("{}: unknown setting {pair:?}; a run's results are named by run=ID", redact(value)),
        }
    }
    let run = run.ok_or_else(|| {
        anyhow!(
            "{}: which run? add ?run=ID (the --run-id, or --start-at instant, the shards published under)",
            redact(value)
        )
    })?;
    tapedeck_stream::results::check_run_id(&run)?;
    Ok(run)
}

/// A connection to the stream a run's report is published to (`--publish-results`).
pub struct ResultsPublisher {
    runtime: tokio::runtime::Runtime,
    publisher: tapedeck_stream::results::Publisher,
    part: String,
    address: String,
}

impl ResultsPublisher {
    /// Connects and checks that the stream takes the run's results.
    pub fn open(
        url: &str,
        nats: &NatsFlags,
        run: String,
        shard: Option<(usize, usize)>,
        create_stream: bool,
    ) -> Result<ResultsPublisher> {
        let address = address("--publish-results", url)?;
        if url.contains('?') {
            bail!(
                "--publish-results {}: no settings after the stream name (the run is named by --run-id)",
                redact(url)
            );
        }
        nats.check_secrets(false)?;
        let results = tapedeck_stream::results::ResultsConfig {
            address: address.clone(),
            auth: nats.auth(),
            run: run.clone(),
            create_stream: create_stream.then(tapedeck_stream::StreamSettings::default),
        };
        // A worker of its own keeps the connection alive (answering the server's pings)
        // through a replay that may last hours.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tapedeck-results")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let publisher = runtime
            .block_on(tapedeck_stream::results::Publisher::open(results))
            .map_err(|e| anyhow!("--publish-results: {e}"))?;
        let part = tapedeck_stream::results::part(shard);
        Ok(ResultsPublisher { runtime, publisher, part, address: format!("{address}?run={run}") })
    }

    /// Publishes the run's report, saying where (or why not).
    pub fn publish(&self, report: &tapedeck_report::ReplayReport) -> Result<()> {
        let json = serde_json::to_vec(report).context("the report as JSON")?;
        match self.runtime.block_on(self.publisher.publish(&self.part, &json)) {
            Ok(subject) => {
                println!("  report published to {subject} (`tapedeck report '{}'` merges the run)", self.address);
                Ok(())
            }
            Err(e) => Err(anyhow!(
                "{e}; the report was not published (the summary above is complete): run the shard again, or keep \
                 --results DIR on every shard and merge those with `tapedeck report --merge`"
            )),
        }
    }

    /// Where the run's reports go, as `report` reads them.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// The reports a run's shards published to a stream (`nats://HOST:PORT/STREAM?run=ID`),
/// each read as a report, named by its part.
pub fn fetch_results(url: &str, nats: &NatsFlags) -> Result<Vec<tapedeck_report::merge::Part>> {
    let address = address("results", url)?;
    let run = results_run(url)?;
    nats.check_secrets(false)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let fetched = runtime.block_on(tapedeck_stream::results::fetch(&address, &nats.auth(), &run))?;
    if !fetched.ignored.is_empty() {
        say!(
            "warning: {} older report(s) of run {run:?} from another split left out ({}); a fresh --run-id for each \
             run keeps runs apart",
            fetched.ignored.len(),
            fetched.ignored.join(", ")
        );
    }
    fetched
        .parts
        .into_iter()
        .map(|p| {
            let name = format!("{address}?run={run} ({})", p.part);
            let report = tapedeck_report::ReplayReport::parse(&p.json, std::path::Path::new(&name))?;
            Ok(tapedeck_report::merge::Part { name, report })
        })
        .collect()
}
