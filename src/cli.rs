//! Command-line interface definitions (clap derive). Names and flags here are the stable
//! interface users script against: see DESIGN.md before renaming anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Capture production HTTP traffic, scrub it, replay it against staging and compare.
#[derive(Debug, Parser)]
#[command(name = "tapedeck", version, propagate_version = true, arg_required_else_help = true)]
#[command(after_help = "Start with `tapedeck demo`, then `tapedeck inspect tapedeck-demo/`.\n\
Exit codes: 0 ok, 1 check failed, 2 usage or runtime error.")]
pub struct Cli {
    /// Log format for diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More diagnostics (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Diagnostic log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarise tapes: traffic, timing, routes, sizes, damage.
    #[command(after_help = "\
Examples:
  tapedeck inspect captures/                 every segment under captures/, then a total
  tapedeck inspect capture-a.tape --json     machine-readable summary
  tapedeck inspect captures/ --top 30        show the 30 busiest routes")]
    Inspect(InspectArgs),

    /// Print the exchanges of tapes as JSON lines, raw HTTP, curl commands or HAR.
    #[command(after_help = FILTER_HELP)]
    Cat(CatArgs),

    /// Convert a HAR, GoReplay or JSON-lines file into a tape.
    #[command(after_help = "\
Examples:
  tapedeck import --from har session.har -o captures/      a browser's network export
  tapedeck import --from gor requests_0.gor -o captures/   GoReplay --output-file captures
  tapedeck import --from jsonl exchanges.jsonl -o captures/
  tapedeck import --from har - -o captures/ < session.har  read standard input")]
    Import(ImportArgs),

    /// Write the exchanges of tapes to a HAR, GoReplay or JSON-lines file.
    #[command(after_help = "\
Examples:
  tapedeck export --to har captures/ -o traffic.har    open it in Chrome DevTools (Network > Import)
  tapedeck export --to gor captures/ -o traffic.gor    replay it with GoReplay --input-file
  tapedeck export --to jsonl captures/ -o - --filter 'status >= 500'")]
    Export(ExportArgs),

    /// Run the capture sidecar: forward to an upstream, record sampled traffic to tapes.
    #[command(after_help = "\
Examples:
  tapedeck proxy --listen :8080 --upstream http://127.0.0.1:3000 --capture-dir captures/ --sample 25%
  tapedeck proxy --listen :8443 --tls-cert cert.pem --tls-key key.pem --upstream http://127.0.0.1:3000 \\
                 --capture-dir captures/ --sample-key cookie:session --sample 10% --max-capture-rps 200
  tapedeck proxy --config proxy.toml        (keys are the flag names: capture-dir = \"captures/\")

Requests are always forwarded; capture never delays or fails them. When the writer falls
behind or the disk is full, captures are dropped and counted (see /metrics).
Stop with Ctrl-C or SIGTERM: in-flight requests drain, the current tape is closed.
SIGHUP reloads the TLS certificate.")]
    Proxy(Box<crate::commands::proxy::ProxyArgs>),

    /// Write a capture stream (NATS JetStream, filled by `proxy --sink`) into tapes.
    #[command(after_help = "\
Examples:
  tapedeck archive nats://127.0.0.1:4222/CAPTURES -o captures/            until Ctrl-C/SIGTERM
  tapedeck archive nats://nats:4222/CAPTURES -o captures/ --once          what the stream holds now
  tapedeck archive tls://nats:4222/CAPTURES -o payments/ --filter 'tapedeck.capture.payments.>' \\
                   --durable archive-payments --nats-creds archive.creds --nats-ca nats-ca.pem

Blocks are acknowledged only once they are on disk (fsynced): at least once, and a block
delivered twice is written once (one written again after a crash is read once). Archivers sharing a --durable name share the work.")]
    Archive(crate::commands::archive::ArchiveArgs),

    /// Serve a dependency back from tapes recorded in front of it, with its recorded
    /// latency and failures (or slower, or failing more, on purpose).
    #[command(after_help = "\
Examples:
  tapedeck proxy --listen :7000 --upstream https://payments.internal \\
                 --capture-dir payments/ --service payments --role dependency
  tapedeck mock payments/ --listen 127.0.0.1:7001                  as recorded
  tapedeck mock payments/ --listen 127.0.0.1:7001 --latency 3x     three times slower
  tapedeck mock payments/ --listen 127.0.0.1:7001 \\
                --fault 'POST /charge: 2% 503, 1% reset, 0.5% timeout'

Each request gets the recorded answer that fits it best: the same request (query
parameters and JSON keys in any order), else the closest recorded request of its route;
identical requests recorded several times answer in recorded order. A request nothing
was recorded for gets --unmatched-status with a JSON explanation. Stop with Ctrl-C or
SIGTERM: a summary by route follows.")]
    Mock(crate::commands::mock::MockArgs),

    /// Replay captured traffic against a target (staging) at the recorded tempo.
    #[command(after_help = "\
Examples:
  tapedeck replay captures/ --target http://staging:8080                 as recorded (1x)
  tapedeck replay captures/ --target http://staging:8080 --speed 2x      twice as fast
  tapedeck replay captures/ --target http://staging:8080 --rate 500      a flat 500 requests/s
  tapedeck replay captures/ --target http://staging:8080 --speed max --concurrency 64
  tapedeck replay captures/ --target https://staging --set-header 'Authorization: Bearer ${STAGING_TOKEN}' \\
                  --route '/api/orders' --from 5m --to 10m --results replay-out/ --report replay.json
  tapedeck replay --config replay.toml --speed 4x          settings from a file, flags win
  tapedeck replay captures/ --target http://staging:8080 --speed 2x --results run/ \
                  --html report.html --junit junit.xml \
                  --gate 'diff_rate<=0.5%' --gate 'p99_ratio<=1.25' --gate 'errors==0'

Responses are compared with the recorded ones: status, the headers a client acts on,
JSON bodies path by path. Noise (timestamps, uuids, tokens, and keys that differ between
recorded answers to identical requests) is learned and set apart; ids the target
generates are carried into later requests of the same session. Exit code: 0 ok, 1 a gate
failed, 2 the replay could not run (or the target answered nothing).

Requests of one recorded session or connection keep their order; sessions run
concurrently. The schedule is open-loop: a slow target makes requests late, and the
lag is reported. Replaying at the service the tapes were recorded from is refused
unless --allow-production-target.")]
    Replay(Box<crate::commands::replay::ReplayArgs>),

    /// Re-render a replay's report from its results, compare two runs, or merge shards.
    #[command(after_help = "\
Examples:
  tapedeck report run/                                   the report of `replay --results run/`
  tapedeck report run/ --html report.html --gate 'diff_rate<=1%'
  tapedeck report --baseline last-week.json today.json   load-shape regression: new vs old
  tapedeck report --baseline old/ new/ --gate 'p99_ratio<=1.2' --gate 'error_rate<=0.1%'
  tapedeck report --merge run-0/ run-1/ run-2/ --gate 'diff_rate<=0.5%'   the shards of one run

Exit code: 0 ok, 1 a gate failed, 2 the reports cannot be read.")]
    Report(crate::commands::report::ReportArgs),

    /// Scrub personal data from tapes, check tapes for it, or print the default policy.
    #[command(after_help = "\
Examples:
  tapedeck scrub --print-default-policy > policy.toml      the built-in rules, commented
  tapedeck scrub imported/ -o clean/ --policy policy.toml  re-scrub (e.g. after import)
  tapedeck scrub --check captures/                         exit code 1 if anything looks personal

The key for `hash` comes from --key-file or $TAPEDECK_SCRUB_KEY; use the same key as the
proxy so tokens match. It is never written to a tape; its fingerprint is.")]
    Scrub(crate::commands::scrub::ScrubArgs),

    /// The whole job with no set-up: capture, scrub, replay against a drifted staging, report.
    #[command(after_help = "\
Starts a JSON API as production and a copy with planted drift as staging (all on
127.0.0.1), captures simulated users through the proxy, checks the capture for personal
data, replays it against staging at 2x and prints the report; the HTML report is written
to the output directory.

Examples:
  tapedeck demo                            writes tapedeck-demo/ (capture, results, report.html)
  tapedeck demo --out /tmp/demo --seconds 20 --sessions 48")]
    Demo(DemoArgs),
}

const FILTER_HELP: &str = "\
Examples:
  tapedeck cat captures/ | jq .request.target          JSON lines, one exchange each
  tapedeck cat captures/ --format http --limit 5       raw HTTP/1.1 requests and responses
  tapedeck cat captures/ --format curl --filter 'method == POST && status == 5xx'
  tapedeck cat captures/ --format har > traffic.har

Filters: FIELD OP VALUE, combined with && (and), || (or), ! (not) and parentheses.
  Fields: method path query target route host scheme version status duration_ms head_ms
          error session sequence truncated id connection req.header.NAME resp.header.NAME
          req.body resp.body
  Ops:    == != < <= > >= ~ (regex) !~      status also takes classes: status == 5xx
  A bare field is true when set: 'error', '!truncated'.";

/// `tapedeck inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Tape files or directories (searched recursively for *.tape and *.tape.partial).
    #[arg(required = true, value_name = "TAPE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many of the busiest routes to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// Output formats of `cat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CatFormat {
    /// JSON lines: one exchange per line.
    Json,
    /// Raw HTTP/1.1 requests and responses.
    Http,
    /// Runnable curl commands.
    Curl,
    /// One HAR 1.2 document.
    Har,
}

/// `tapedeck cat`
#[derive(Debug, Args)]
pub struct CatArgs {
    /// Tape files or directories.
    #[arg(required = true, value_name = "TAPE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = CatFormat::Json)]
    pub format: CatFormat,
    /// Protobuf descriptor set (`protoc --include_imports --descriptor_set_out=FILE`): gRPC
    /// messages are shown by field name (`body.messages` in JSON lines; without it, by
    /// field number).
    #[arg(long, value_name = "FILE")]
    pub proto_descriptor: Option<PathBuf>,
    #[command(flatten)]
    pub selection: Selection,
}

/// Which exchanges to take.
#[derive(Debug, Args)]
pub struct Selection {
    /// Only exchanges matching this expression (see below).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after this many exchanges.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// Formats `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// HAR 1.2 (browser network export).
    Har,
    /// GoReplay file.
    Gor,
    /// JSON lines as written by `tapedeck cat` / `export --to jsonl`.
    #[value(alias = "json")]
    Jsonl,
}

/// `tapedeck import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Input format.
    #[arg(long, value_enum)]
    pub from: ImportFormat,
    /// Input file (`-` for standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Directory to write the tape into (created with mode 0700 if missing). Imported
    /// tapes are not scrubbed: run `tapedeck scrub` on them before handing them on.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Accept an --out directory that is a symlink, writable by group or others, or
    /// owned by another user.
    #[arg(long)]
    pub allow_shared_dir: bool,
}

/// Formats `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// HAR 1.2.
    Har,
    /// GoReplay file.
    Gor,
    /// JSON lines.
    #[value(alias = "json")]
    Jsonl,
}

/// `tapedeck export`
#[derive(Debug, Args)]
#[command(after_help = FILTER_HELP)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum)]
    pub to: ExportFormat,
    /// Tape files or directories.
    #[arg(required = true, value_name = "TAPE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// Output file (`-` for standard output). Written beside the target and renamed into
    /// place, mode 0600; an existing file is replaced only with --force.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub selection: Selection,
}

/// `tapedeck demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's files.
    #[arg(long, default_value = "tapedeck-demo")]
    pub out: PathBuf,
    /// Seconds of traffic to capture.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Simulated users browsing at once.
    #[arg(long, default_value_t = 32)]
    pub sessions: u64,
    /// Write into a directory others can write or own (e.g. a CI build directory with mode
    /// 0777); see `tapedeck proxy --help`.
    #[arg(long)]
    pub allow_shared_dir: bool,
    /// Only serve the demo's API, as production or as staging with its planted drift,
    /// until stopped (to try `proxy --shadow` or a replay by hand).
    #[arg(long, value_name = "FLAVOR", value_parser = ["production", "staging"])]
    pub serve: Option<String>,
    /// With --serve: where to listen [default: 127.0.0.1, any free port].
    #[arg(long, value_name = "ADDR", requires = "serve")]
    pub listen: Option<std::net::SocketAddr>,
}
