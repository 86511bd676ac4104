//! `tapedeck import`: HAR, GoReplay or JSON lines into a tape directory.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use tapedeck_captures::convert::{self, ConvertError, Format};
use tapedeck_captures::tape::{TapeKind, TapeWriter, WriterConfig};

use crate::cli::{ImportArgs, ImportFormat};
use crate::human;

pub fn run(args: ImportArgs) -> Result<ExitCode> {
    let format = match args.from {
        ImportFormat::Har => Format::Har,
        ImportFormat::Gor => Format::Gor,
        ImportFormat::Jsonl => Format::Json,
    };
    let from_stdin = args.file == Path::new("-");
    let src: Box<dyn Read> = if from_stdin {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?)
    };
    let source_name = if from_stdin { "stdin".to_string() } else { args.file.display().to_string() };
    let mut config = WriterConfig::new(&args.out);
    config.prefix = "import".into();
    config.kind = TapeKind::Import;
    config.labels.push(("source".into(), source_name.clone()));
    config.labels.push(("source_format".into(), format.to_string()));
    config.allow_shared_dir = args.allow_shared_dir;
    let mut writer = TapeWriter::new(config)?;
    let result = convert::import(format, src, &mut |ex| writer.append(&ex).map_err(ConvertError::from));
    let report = match result {
        Ok(r) => r,
        Err(ConvertError::Format(msg)) => {
            // Nothing usable was written; do not leave an empty tape behind.
            drop(writer);
            bail!("{source_name}: {msg}");
        }
        Err(e) => return Err(e).with_context(|| format!("importing {source_name}")),
    };
    let segments = writer.finish()?;
    for w in &report.warnings {
        say!("warning: {source_name}: {w}");
    }
    if report.skipped as usize > report.warnings.len() {
        say!("warning: {source_name}: … and {} more skipped", report.skipped as usize - report.warnings.len());
    }
    for n in &report.notes {
        say!("note: {n}");
    }
    let written: Vec<String> = segments.iter().map(|p| p.display().to_string()).collect();
    println!(
        "imported {} exchanges from {source_name}{} into {}",
        human::count(report.imported),
        if report.skipped > 0 { format!(" ({} skipped)", human::count(report.skipped)) } else { String::new() },
        if written.is_empty() { args.out.display().to_string() } else { written.join(", ") },
    );
    if report.imported == 0 {
        say!("warning: {source_name} holds no exchanges");
    }
    Ok(ExitCode::SUCCESS)
}
