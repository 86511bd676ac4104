//! `tapedeck report`: re-renders a replay's report from its saved results without
//! replaying (terminal, JSON, HTML, JUnit, gates), or compares two runs for load-shape
//! regression tests (`--baseline OLD NEW`). Also the report outputs `replay` shares.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use tapedeck_captures::files;
use tapedeck_compare::{CompareConfig, CompareFile};
use tapedeck_report::gate::Gate;
use tapedeck_report::{baseline, html, junit, ReplayReport};
use tapedeck_stream::address::StreamAddress;

/// Flags of `tapedeck report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results directory written by `replay --results DIR`, a report written by
    /// `replay --report FILE.json`, or `nats://HOST:PORT/STREAM?run=ID`: the reports a
    /// run's shards published there (`replay --publish-results`), merged.
    #[arg(value_name = "RESULTS")]
    pub results: Option<PathBuf>,
    /// Compare two runs: `--baseline OLD NEW` (or `--baseline OLD` with RESULTS as the
    /// new run). Latency ratios, status mixes and gates then read "new against old".
    #[arg(long, num_args = 1..=2, value_names = ["OLD", "NEW"])]
    pub baseline: Vec<PathBuf>,
    /// Merge the reports of a run's shards (`replay --shard K/N`, each a results
    /// directory or report JSON) into the report of the whole: counts added, latency
    /// histograms merged exactly, differences tallied again, gates applied to the whole.
    #[arg(long, num_args = 1.., value_name = "RESULTS", conflicts_with_all = ["results", "baseline"])]
    pub merge: Vec<PathBuf>,
    #[command(flatten)]
    pub output: ReportFlags,
    /// Credentials for `tapedeck report nats://HOST:PORT/STREAM?run=ID` (the reports a
    /// run's shards published with `replay --publish-results`).
    #[command(flatten)]
    pub nats: super::nats::NatsFlags,
}

/// Where a run's report goes and what it must pass: the flags `replay` and `report` share,
/// declared once (also keys of `replay`'s config file).
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
#[command(next_help_heading = "Report")]
pub struct ReportFlags {
    /// Write the report as JSON (schema: docs/report.md).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the report as one self-contained HTML file (charts, diffs side by side).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the report as JUnit XML (one test case per route, one per gate).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Fail (exit 1) unless this holds: `[ROUTE:]METRIC OP NUMBER[%]`, e.g.
    /// `diff_rate<=0.5%`, `p99_ratio<=1.25`, `errors==0`, `GET /search:p99_ratio<=2`.
    /// Repeatable.
    #[arg(long, value_name = "EXPR")]
    pub gate: Vec<String>,
    /// Compare settings (TOML): headers compared, ignore rules, correlation rules and latency
    /// flag thresholds. See examples/compare.toml.
    #[arg(long, value_name = "FILE")]
    pub compare_config: Option<PathBuf>,
    /// Routes listed in the summary [default: 20].
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Replace report files that exist (and, replaying, an earlier run in --results).
    #[arg(long)]
    pub force: bool,
}

impl ReportFlags {
    /// Routes listed in the summary.
    pub fn top(&self) -> usize {
        self.top.unwrap_or(20)
    }

    /// The report files asked for.
    pub fn outputs(&self) -> Outputs {
        Outputs { json: self.report.clone(), html: self.html.clone(), junit: self.junit.clone(), force: self.force }
    }

    /// The `--gate` expressions, parsed.
    pub fn gates(&self) -> Result<Vec<Gate>> {
        Ok(self.gate.iter().map(|g| g.parse::<Gate>()).collect::<Result<_, _>>()?)
    }
}

/// Where a report goes besides the terminal. Each file is written new (mode 0600) and
/// renamed into place; an existing one is replaced only with `force`.
#[derive(Debug, Default)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub force: bool,
}

impl Outputs {
    fn each(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.json, &self.html, &self.junit].into_iter().flatten()
    }

    /// Checks that every output can be written, before the work that produces them, and
    /// that none is named twice (with `others`, the run's other files).
    pub fn check(&self, others: &[&Path]) -> Result<()> {
        let mut seen: Vec<PathBuf> = others.iter().map(|p| files::output_identity(p)).collect();
        for path in self.each() {
            files::check_output(path, self.force)?;
            let full = files::output_identity(path);
            if seen.contains(&full) {
                bail!("{} is named for two outputs of this run: give each its own file", path.display());
            }
            seen.push(full);
        }
        Ok(())
    }

    /// Writes every requested form, saying where.
    pub fn write(&self, report: &ReplayReport) -> Result<()> {
        if let Some(path) = &self.json {
            report.save(path, self.force)?;
            println!("  JSON report written to {}", path.display());
        }
        if let Some(path) = &self.html {
            files::write_output_bytes(path, self.force, html::render(report).as_bytes())
                .context("writing the HTML report")?;
            println!("  HTML report written to {} (open it in a browser)", path.display());
        }
        if let Some(path) = &self.junit {
            files::write_output_bytes(path, self.force, junit::render(report).as_bytes())
                .context("writing the JUnit report")?;
            println!("  JUnit report written to {}", path.display());
        }
        Ok(())
    }
}

/// The compare settings: defaults, or a TOML file on top of them.
pub fn compare_config(path: Option<&Path>) -> Result<CompareConfig> {
    let Some(path) = path else { return Ok(CompareConfig::default()) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read compare config {}", path.display()))?;
    let file: CompareFile = toml::from_str(&text).map_err(|e| super::toml_error("compare config", path, &text, &e))?;
    CompareConfig::from_file(file).map_err(|e| anyhow!("compare config {}: {e}", path.display()))
}

fn load(path: &Path) -> Result<ReplayReport> {
    if path.to_str().is_some_and(StreamAddress::is_stream) {
        bail!(
            "{}: a run's reports on a stream are read as the one RESULTS (`tapedeck report 'nats://…/STREAM?run=ID'`), \
             not with --baseline or --merge",
            path.display()
        );
    }
    ReplayReport::load(path).map_err(|e| {
        anyhow!(
            "{e}\n(give a directory written by `tapedeck replay --results DIR`, or a file from `--report FILE.json`)"
        )
    })
}

/// The shards' reports under `paths` as one report; warnings (a missing shard…) on stderr.
fn merge(paths: &[PathBuf], compare: Option<&Path>) -> Result<ReplayReport> {
    let parts = paths
        .iter()
        .map(|p| Ok(tapedeck_report::merge::Part { name: p.display().to_string(), report: load(p)? }))
        .collect::<Result<Vec<_>>>()?;
    merge_parts(parts, compare)
}

/// The reports a run published to a stream: its shards' merged, or the whole run's.
fn from_stream(url: &str, args: &ReportArgs) -> Result<ReplayReport> {
    let mut parts = super::nats::fetch_results(url, &args.nats)?;
    if parts.len() == 1 && parts[0].report.shard.is_none() {
        return Ok(parts.remove(0).report);
    }
    merge_parts(parts, args.output.compare_config.as_deref())
}

fn merge_parts(parts: Vec<tapedeck_report::merge::Part>, compare: Option<&Path>) -> Result<ReplayReport> {
    let mut config = compare_config(compare)?;
    config.min_count = parts[0].report.min_count;
    let merged = tapedeck_report::merge::merge(parts, &config)?;
    for w in &merged.warnings {
        say!("warning: {w}");
    }
    Ok(merged.report)
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let gates = args.output.gates()?;
    let outputs = args.output.outputs();
    outputs.check(&[])?;
    let stream = args.results.as_ref().and_then(|p| p.to_str()).filter(|p| StreamAddress::is_stream(p));
    if args.nats.any() && stream.is_none() {
        bail!("the --nats-* flags go with a run's results on a stream (nats://HOST:PORT/STREAM?run=ID)");
    }
    let mut report = match (&args.results, &args.baseline[..]) {
        _ if !args.merge.is_empty() => merge(&args.merge, args.output.compare_config.as_deref())?,
        (Some(_), []) if stream.is_some() => from_stream(stream.unwrap_or_default(), &args)?,
        (None, []) => {
            bail!("which run? give a results directory or a report JSON (or --baseline OLD NEW, or --merge SHARDS...)")
        }
        (Some(_), [_, _]) => bail!("--baseline OLD NEW already names both runs; drop RESULTS or NEW"),
        (None, [_]) => bail!("--baseline OLD compares with a new run: give it as RESULTS or as --baseline OLD NEW"),
        (Some(path), []) => load(path)?,
        (results, [old, rest @ ..]) => {
            let new = results.as_ref().or(rest.first()).expect("matched above");
            let mut config = compare_config(args.output.compare_config.as_deref())?;
            let (old_report, new_report) = (load(old)?, load(new)?);
            config.min_count = new_report.min_count;
            if old_report.shard != new_report.shard {
                let part =
                    |s: &Option<String>| s.as_ref().map_or("the whole selection".to_string(), |s| format!("shard {s}"));
                say!(
                    "warning: the baseline replayed {} and the new run {}: counts and rates are not comparable \
                     (compare whole runs, or the same shard of each)",
                    part(&old_report.shard),
                    part(&new_report.shard)
                );
            }
            baseline::compare(&old_report, &old.display().to_string(), &new_report, &config)
        }
    };
    report.apply_gates(&gates);
    print!("{}", report.render(args.output.top()));
    outputs.write(&report)?;
    // Shards missing from a merge: the report is of part of the run, which must not pass
    // a release as if it were all of it.
    let partial = (!args.merge.is_empty() || stream.is_some()) && report.shard.is_some();
    if partial {
        say!(
            "tapedeck report: FAIL: the merged report covers shards {} only; merge every shard of the run",
            report.shard.as_deref().unwrap_or("?")
        );
    }
    Ok(if report.gates_passed() && !partial { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
