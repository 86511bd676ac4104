//! `tapedeck archive`: writes a capture stream (NATS JetStream, filled by `proxy --sink`)
//! into ordinary rotating tapes, acknowledging only what is on disk.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tapedeck_stream::archive::{self, ArchiveConfig};

use super::nats::NatsFlags;

/// Flags of `tapedeck archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The stream: `nats://HOST:PORT/STREAM` (or `tls://…`).
    #[arg(value_name = "STREAM")]
    pub stream: String,
    /// Directory for the tapes (created with mode 0700).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Archive what the stream holds now, then exit (for jobs and tests); without it,
    /// archive until SIGTERM/Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// The durable consumer's name: archivers sharing a name share the work, each with its
    /// own name each gets everything.
    #[arg(long, value_name = "NAME", default_value = "tapedeck-archive")]
    pub durable: String,
    /// Only subjects matching this, e.g. `tapedeck.capture.payments.>` (one service).
    #[arg(long, value_name = "SUBJECT")]
    pub filter: Option<String>,
    /// Create the stream (file storage, subjects: --filter, else `tapedeck.capture.>`)
    /// if it does not exist.
    #[arg(long)]
    pub create_stream: bool,
    /// Accept an output directory that is a symlink, writable by others, or someone
    /// else's.
    #[arg(long)]
    pub allow_shared_dir: bool,
    #[command(flatten)]
    pub stream_flags: super::nats::StreamFlags,
    #[command(flatten)]
    pub nats: NatsFlags,
}

pub fn run(args: ArchiveArgs) -> Result<ExitCode> {
    let address = super::nats::address("STREAM", &args.stream)?;
    let mut config = ArchiveConfig::new(address, args.out.clone());
    config.auth = args.nats.auth();
    args.nats.check_secrets(false)?;
    config.once = args.once;
    config.durable = args.durable.clone();
    config.filter = args.filter.clone();
    config.allow_shared_dir = args.allow_shared_dir;
    config.create_stream = args.stream_flags.settings(args.create_stream)?;
    let stop = Arc::new(AtomicBool::new(false));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let watcher = stop.clone();
        let mut signals = super::signals::Stop::install();
        tokio::spawn(async move {
            signals.recv().await;
            watcher.store(true, Ordering::Relaxed);
        });
        archive::run(config, stop.clone()).await
    })?;
    super::status(
        "archive",
        format_args!(
            "{} exchanges in {} blocks written to {} ({} tape(s)){}{}",
            report.exchanges,
            report.blocks,
            args.out.display(),
            report.segments.len(),
            if report.duplicates > 0 {
                format!("; {} duplicate block(s) skipped", report.duplicates)
            } else {
                String::new()
            },
            if report.damaged > 0 {
                format!("; {} unreadable message(s) skipped", report.damaged)
            } else {
                String::new()
            },
        ),
    );
    Ok(ExitCode::SUCCESS)
}
