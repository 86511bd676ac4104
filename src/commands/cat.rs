//! `tapedeck cat` (exchanges to standard output) and `tapedeck export` (to a file): the
//! same stream, merged in request-start order, filtered, written by one [`Exporter`].

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use tapedeck_captures::convert::{Exporter, Format};

use crate::cli::{CatArgs, CatFormat, ExportArgs, ExportFormat, Selection};
use crate::commands::{open_tapes, warn_damage, Selector};

pub fn run_cat(args: CatArgs) -> Result<ExitCode> {
    let format = match args.format {
        CatFormat::Json => Format::Json,
        CatFormat::Http => Format::Http,
        CatFormat::Curl => Format::Curl,
        CatFormat::Har => Format::Har,
    };
    let stdout = io::stdout().lock();
    stream(&args.paths, &args.selection, format, BufWriter::with_capacity(256 << 10, stdout))?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_export(args: ExportArgs) -> Result<ExitCode> {
    let format = match args.to {
        ExportFormat::Har => Format::Har,
        ExportFormat::Gor => Format::Gor,
        ExportFormat::Jsonl => Format::Json,
    };
    if args.out == Path::new("-") {
        let n = stream(&args.paths, &args.selection, format, BufWriter::new(io::stdout().lock()))?;
        eprintln!("exported {n} exchanges as {format}");
        return Ok(ExitCode::SUCCESS);
    }
    // Write beside the target and rename at the end, so a failed export never leaves a
    // half-written file under the requested name.
    let tmp = temp_path(&args.out);
    let file = fs::File::create(&tmp).with_context(|| {
        format!("cannot create {}: check that its directory exists and is writable", args.out.display())
    })?;
    let written =
        stream(&args.paths, &args.selection, format, BufWriter::with_capacity(256 << 10, file)).and_then(|n| {
            fs::rename(&tmp, &args.out).map(|()| n).with_context(|| format!("cannot write {}", args.out.display()))
        });
    match written {
        Ok(n) => {
            eprintln!("exported {n} exchanges as {format} to {}", args.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    out.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn stream(paths: &[PathBuf], selection: &Selection, format: Format, out: impl Write) -> Result<u64> {
    let mut selector = Selector::new(selection)?;
    let mut reader = open_tapes(paths)?;
    let mut exporter = Exporter::new(format, out).context("writing output")?;
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
