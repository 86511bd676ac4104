//! `tapedeck`: the command-line front end. Parses arguments, sets up logging, runs one
//! command and maps its outcome to an exit code: 0 ok, 1 a check failed, 2 usage or
//! runtime error (one line saying what failed, where, and what to do).

/// `eprintln!` that never panics: a long-running proxy or archiver whose stderr is a
/// closed pipe (its log collector died, `… 2>&1 | head`) goes on serving and draining;
/// a line it cannot write is lost, not the process. `eprintln!` would panic the thread.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod commands;
mod human;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};

/// mimalloc: the proxy and the replayer allocate and free small buffers per request from
/// many threads; `replay --speed max` measured ~5% more requests/s with it (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    // A long-running service logs what it does; one-shot commands only warn.
    let quiet = !matches!(cli.command, Command::Proxy(_) | Command::Archive(_) | Command::Mock(_));
    init_logging(cli.log_format, cli.verbose, quiet);
    let result = match cli.command {
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Cat(args) => commands::cat::run_cat(args),
        Command::Export(args) => commands::cat::run_export(args),
        Command::Import(args) => commands::import::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Proxy(args) => commands::proxy::run(*args),
        Command::Archive(args) => commands::archive::run(args),
        Command::Mock(args) => commands::mock::run(args),
        Command::Scrub(args) => commands::scrub::run(args),
        Command::Replay(args) => commands::replay::run(*args),
        Command::Report(args) => commands::report::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if commands::JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(target: "tapedeck", "{}", describe(&e));
            } else {
                say!("error: {}", describe(&e));
            }
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each said once: errors that show their cause
/// in their own message and also hand it on as their source would otherwise print it
/// twice (`No such file or directory (os error 2): No such file or directory (os error 2)`).
fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// `tapedeck inspect … | head` closes the pipe early; that is not an error. Output that
/// goes through `print!` panics on the closed pipe (Rust ignores SIGPIPE): such a panic
/// ends the process quietly with 0, as `cat` and `grep` would end; every other panic is
/// reported as usual.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        // `> /dev/full`: the output could not be written; say so in one line.
        if let Some(why) = message.strip_prefix("failed printing to stdout: ") {
            say!("error: writing output: {why}");
            std::process::exit(2);
        }
        default(info);
    }));
}

/// `tapedeck cat … | head` closes the pipe early; that is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn init_logging(format: LogFormat, verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // The NATS client logs its connection's ups and downs itself; tapedeck says what they
    // mean (once per episode), so the client's own lines show with -v only.
    let default = if verbose == 0 { format!("{default},async_nats=off") } else { default.to_string() };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A log line that cannot be written is dropped; by default the subscriber would then
    // `eprintln!` about it, which panics on a closed stderr.
    let builder = builder.log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            commands::JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().init()
        }
    }
}
