//! `kill -9` of a process writing a tape leaves a `.partial` segment that `inspect` and
//! `cat` read, minus at most the block being written when the process died.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tapedeck_captures::tape::{TapeWriter, WriterConfig};

const CHILD_ENV: &str = "TAPEDECK_TEST_CRASH_CHILD_DIR";

/// Not a test on its own: when started by `killed_writer_leaves_a_readable_partial` it
/// writes exchanges forever, reporting each block it has handed to the OS.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let mut config = WriterConfig::new(dir);
    config.block_max_records = 16;
    let mut writer = TapeWriter::new(config).unwrap();
    let mut stdout = std::io::stdout();
    for (i, ex) in synth(CHILD_RECORDS).iter().enumerate() {
        writer.append(ex).unwrap();
        if (i + 1) % 16 == 0 {
            writeln!(stdout, "flushed {}", i + 1).unwrap();
            stdout.flush().unwrap();
        }
    }
    // Still running, segment still open: wait to be killed.
    std::thread::sleep(Duration::from_secs(60));
}

const CHILD_RECORDS: usize = 20_000;

#[test]
fn killed_writer_leaves_a_readable_partial() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut flushed = 0u64;
    while flushed < 2000 {
        assert!(Instant::now() < deadline, "the writer child made no progress");
        let line = lines.next().expect("child output").unwrap();
        if let Some(n) = line.strip_prefix("flushed ") {
            flushed = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no footer, no rename
    child.wait().unwrap();

    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert!(s(&files[0]).ends_with(".tape.partial"), "{files:?}");

    let json: Value = serde_json::from_str(&ok(&["inspect", s(dir.path()), "--json"])).unwrap();
    let read = json["total"]["exchanges"].as_u64().unwrap();
    assert!(read >= flushed, "every block reported before the kill is readable: {read} < {flushed}");
    let seg = &json["segments"][0]["read"];
    assert_eq!(seg["has_footer"], false);
    // At most the block in flight at the kill is lost, and a torn block is reported.
    if seg["bytes_skipped"].as_u64().unwrap() > 0 {
        assert_eq!(seg["torn_tail"], true);
        assert_eq!(seg["corrupt_regions"], 1);
    }
    let input = synth(CHILD_RECORDS);
    let lines = ok(&["cat", s(dir.path())]);
    assert_eq!(lines.lines().count() as u64, read);
    for (i, line) in lines.lines().enumerate() {
        let ex: tapedeck_captures::Exchange = serde_json::from_str(line).unwrap();
        assert_eq!(ex, input[i], "record {i} is intact");
    }
    let text = ok(&["inspect", s(dir.path())]);
    assert!(text.contains("UNFINISHED"), "{text}");
}
