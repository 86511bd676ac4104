//! Helpers shared by the end-to-end tests: run the real `tapedeck` binary, make tapes.
#![allow(dead_code)]

pub mod echo;
pub mod pii;
pub mod proxy;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::{TapeWriter, WriterConfig};
use tapedeck_captures::Exchange;

/// The binary under test.
pub fn tapedeck() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    c.env_remove("RUST_LOG");
    c
}

/// Makes `cmd`'s child fail writes past `limit` bytes per file (EFBIG, as on a full disk)
/// instead of being killed by SIGXFSZ.
pub fn limit_file_size(cmd: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `tapedeck ARGS` and returns its output.
pub fn run(args: &[&str]) -> Output {
    tapedeck().args(args).output().expect("tapedeck runs")
}

/// Runs `tapedeck ARGS`, asserting success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tapedeck {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `tapedeck replay TAPES --target TARGET --speed SPEED` with `extra` flags.
#[allow(dead_code)] // not every test binary replays
pub fn replay(tapes: &std::path::Path, target: &str, speed: &str, extra: &[&str]) -> Output {
    let tapes = tapes.to_str().expect("a UTF-8 path");
    let mut args = vec!["replay", tapes, "--target", target, "--speed", speed];
    args.extend_from_slice(extra);
    run(&args)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `count` synthetic exchanges.
pub fn synth(count: usize) -> Vec<Exchange> {
    Synth::new(SynthConfig { count, ..Default::default() }).collect()
}

/// Writes `exchanges` as a closed tape in `dir`, marked scrubbed (synthetic data, as the
/// proxy would have written it); returns the segment paths.
pub fn write_tape(dir: &Path, exchanges: &[Exchange]) -> Vec<PathBuf> {
    write_tape_as(dir, exchanges, Some("policy:synthetic key:none"))
}

/// Writes `exchanges` as a closed tape in `dir` with this scrub fingerprint (`None`: an
/// unscrubbed tape, like an import).
pub fn write_tape_as(dir: &Path, exchanges: &[Exchange], scrubbed: Option<&str>) -> Vec<PathBuf> {
    let mut config = WriterConfig::new(dir);
    config.instance = "test".into();
    config.scrub_fingerprint = scrubbed.map(str::to_string);
    let mut w = TapeWriter::new(config).expect("writer");
    for e in exchanges {
        w.append(e).expect("append");
    }
    w.finish().expect("finish")
}

/// Reads every exchange under `paths` in start order.
pub fn read_all(paths: &[&Path]) -> Vec<Exchange> {
    tapedeck_captures::tape::TapeReader::open(paths).expect("open tapes").collect()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
