//! `tapedeck cat` (exchanges to standard output) and `tapedeck export` (to a file): the
//! same stream, merged in request-start order, filtered, written by one [`Exporter`].

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use tapedeck_captures::convert::{Exporter, Format};
use tapedeck_captures::files;

use crate::cli::{CatArgs, CatFormat, ExportArgs, ExportFormat, Selection};
use crate::commands::{open_tapes, warn_damage, Selector};

pub fn run_cat(args: CatArgs) -> Result<ExitCode> {
    let format = match args.format {
        CatFormat::Json => Format::Json,
        CatFormat::Http => Format::Http,
        CatFormat::Curl => Format::Curl,
        CatFormat::Har => Format::Har,
    };
    let schema = args.proto_descriptor.as_deref().map(crate::commands::scrub::load_proto).transpose()?;
    let stdout = io::stdout().lock();
    let exporter = Exporter::new(format, BufWriter::with_capacity(256 << 10, stdout)).context("writing output")?;
    // JSON lines for people: gRPC messages decoded beside their bodies.
    stream(&args.paths, &args.selection, exporter.with_grpc_messages(schema))?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_export(args: ExportArgs) -> Result<ExitCode> {
    let format = match args.to {
        ExportFormat::Har => Format::Har,
        ExportFormat::Gor => Format::Gor,
        ExportFormat::Jsonl => Format::Json,
    };
    if args.out == Path::new("-") {
        let exporter = Exporter::new(format, BufWriter::new(io::stdout().lock())).context("writing output")?;
        let n = stream(&args.paths, &args.selection, exporter)?;
        say!("exported {n} exchanges as {format}");
        return Ok(ExitCode::SUCCESS);
    }
    // Refused before any tape is read; the output appears only once complete.
    files::check_output(&args.out, args.force)?;
    // An export that fails while reading tapes reports that, not "cannot write FILE".
    let mut failed = None;
    let written = files::write_output(&args.out, args.force, |out| {
        let exporter = Exporter::new(format, out)?;
        stream(&args.paths, &args.selection, exporter).map_err(|e| {
            failed = Some(e);
            io::Error::other("the export stopped")
        })
    });
    let n = written.map_err(|e| failed.take().unwrap_or_else(|| e.into()))?;
    say!("exported {n} exchanges as {format} to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn stream(paths: &[PathBuf], selection: &Selection, mut exporter: Exporter<impl Write>) -> Result<u64> {
    let mut selector = Selector::new(selection)?;
    let mut reader = open_tapes(paths)?;
    for ex in reader.by_ref() {
        if selector.take(&ex) {
            exporter.write(&ex).context("writing output")?;
        }
        if selector.done() {
            break;
        }
    }
    let n = exporter.written();
    exporter.finish().context("writing output")?;
    if !selector.done() {
        warn_damage(&reader);
    }
    Ok(n)
}
