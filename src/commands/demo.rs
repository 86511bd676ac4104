//! `tapedeck demo`: a tour with no set-up. Generates realistic API traffic (users, orders,
//! search; browser headers, cookies, tokens, personal data), scrubs it with the default
//! policy as the capture proxy would, writes it as a capture tape, summarises it and shows
//! what to try next.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use tapedeck_captures::scrub::Scrubber;
use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::{self, TapeKind, TapeWriter, WriterConfig};

use crate::cli::{DemoArgs, InspectArgs};
use crate::commands::inspect;

/// The demo's scrub key. Public on purpose: never use it for real captures.
const DEMO_KEY: &[u8] = b"tapedeck demo key - public, not a secret";

/// Marks a directory as the demo's own, so re-running may clear it.
const MARKER: &str = ".tapedeck-demo";

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let dir = args.out.join("capture");
    prepare(&args.out, &dir)?;
    let mut config = WriterConfig::new(&dir);
    config.prefix = "demo".into();
    config.kind = TapeKind::Demo;
    config.segment_max_bytes = 4 << 20;
    let synth = SynthConfig {
        count: args.count,
        start_unix_ns: tape::writer::now_unix_ns() - 60_000_000_000,
        ..Default::default()
    };
    config.tape_start_unix_ns = synth.start_unix_ns;
    // A fixed, public key: the demo shows tokens; real captures use a secret one.
    let scrubber = Scrubber::with_defaults(Some(DEMO_KEY));
    config.scrub_fingerprint = Some(scrubber.fingerprint());
    let mut writer = TapeWriter::new(config)?;
    for mut ex in Synth::new(synth) {
        scrubber.scrub(&mut ex);
        writer.append(&ex)?;
    }
    let segments = writer.finish()?;
    println!(
        "tapedeck demo: wrote {} exchanges of synthetic API traffic, scrubbed with the default policy, into {} segment(s) in {}\n",
        args.count,
        segments.len(),
        dir.display()
    );
    inspect::run(InspectArgs { paths: vec![dir.clone()], json: false, top: 8 })?;
    let d = dir.display();
    println!(
        "\nTry next:\n  \
         tapedeck inspect {d} --json\n  \
         tapedeck cat {d} --format http --limit 2\n  \
         tapedeck cat {d} --format curl --filter 'method == POST' --limit 3\n  \
         tapedeck scrub --check {d}     (a security review: is anything personal left?)\n  \
         tapedeck export --to har {d} -o demo.har     (Chrome DevTools > Network > Import HAR)\n  \
         tapedeck export --to gor {d} -o demo.gor     (GoReplay --input-file)"
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates the demo directory, or clears the tapes of a previous demo run in it. Refuses
/// to touch a directory that holds tapes but is not the demo's own.
fn prepare(root: &Path, dir: &Path) -> Result<()> {
    let marker = root.join(MARKER);
    if dir.exists() {
        let tapes = tape::discover(&[dir]).unwrap_or_default();
        if !tapes.is_empty() && !marker.exists() {
            bail!("{} already holds tapes that the demo did not write; choose another --out", dir.display());
        }
        for t in tapes {
            fs::remove_file(&t).with_context(|| format!("cannot remove old demo tape {}", t.display()))?;
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(&marker, "This directory was written by `tapedeck demo` and is cleared when it runs again.\n")
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(())
}
