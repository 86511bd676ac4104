//! The `.tape` capture format: segment files of compressed, checksummed blocks of
//! exchanges with a footer index. See [`format`](mod@format) for the byte layout.
//!
//! - [`TapeWriter`] appends, cuts blocks, rotates segments, fsyncs and renames.
//! - [`SegmentReader`] streams one segment and recovers from torn tails and damage.
//! - [`TapeReader`] merges many segments into one stream in request-start order.
//! - [`discover`] turns user-given paths (files and directories) into segment files.

pub mod block;
pub mod format;
pub mod merge;
pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

pub use format::{SegmentHeader, TapeKind};
pub use merge::{SegmentReport, TapeReader};
pub use reader::{ReadStats, SeenBlocks, SegmentReader};
pub use writer::{TapeWriter, WriterConfig, WriterStats};

use crate::error::TapeError;

/// True for names the writer produces: `*.tape` and unfinished `*.tape.partial`.
pub fn is_segment_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tape") || name.ends_with(".tape.partial")
}

/// Replay results [`discover_recordings`] left out of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedResults {
    /// The directory given.
    pub dir: PathBuf,
    /// How many segments of replay results it holds.
    pub segments: usize,
}

/// [`discover`], but a directory that holds both recordings and replay results (the
/// demo's directory, a capture with `--results` written beside it) gives only its
/// recordings, so results are never replayed or summarised as traffic by mistake; what
/// was left out is returned for a note. Results named directly (their files, or a
/// directory of results only) are taken.
pub fn discover_recordings(paths: &[impl AsRef<Path>]) -> Result<(Vec<PathBuf>, Vec<SkippedResults>), TapeError> {
    let mut segments = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let found = discover(&[path])?;
        if !path.is_dir() {
            segments.extend(found);
            continue;
        }
        let is_results =
            |p: &PathBuf| reader::SegmentReader::open(p).is_ok_and(|r| r.header().kind == TapeKind::Replay);
        let (results, recorded): (Vec<PathBuf>, Vec<PathBuf>) = found.into_iter().partition(is_results);
        if !results.is_empty() && !recorded.is_empty() {
            skipped.push(SkippedResults { dir: path.to_path_buf(), segments: results.len() });
            segments.extend(recorded);
        } else {
            segments.extend(results.into_iter().chain(recorded));
        }
    }
    Ok((segments, skipped))
}

/// Segments recorded in front of a service (what a replay sends) and those recorded in
/// front of its dependencies (what `tapedeck mock` answers with): a segment labelled
/// `role=dependency`, or `service=` one of `mocked` (the services a run mocks, whatever
/// role they were recorded with), is a dependency's. When every segment is a dependency's,
/// all of them are the traffic (a dependency's own captures, replayed against its staging
/// copy). A segment whose header cannot be read goes with the traffic, whose reader says
/// what is wrong with it.
pub fn split_dependencies(segments: Vec<PathBuf>, mocked: &[String]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dependency = |p: &PathBuf| {
        reader::SegmentReader::open(p).is_ok_and(|r| {
            let h = r.header();
            h.is_dependency() || h.label("service").is_some_and(|s| mocked.iter().any(|m| m == s))
        })
    };
    let (dependencies, traffic): (Vec<PathBuf>, Vec<PathBuf>) = segments.into_iter().partition(dependency);
    if traffic.is_empty() && mocked.is_empty() {
        return (dependencies, Vec::new());
    }
    (traffic, dependencies)
}

impl std::fmt::Display for SkippedResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: skipping {} segment(s) of replay results (name their files or directory to read them)",
            self.dir.display(),
            self.segments
        )
    }
}

/// Expands `paths` into segment files: files are taken as given (whatever their name, so
/// the reader can say what they are instead), directories are searched recursively for
/// `*.tape` and `*.tape.partial`. The result is sorted within each directory.
pub fn discover(paths: &[impl AsRef<Path>]) -> Result<Vec<PathBuf>, TapeError> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| TapeError::io(path, "opening", e))?;
        if meta.is_dir() {
            let before = out.len();
            walk(path, &mut out)?;
            if out.len() == before {
                return Err(TapeError::NoTapes { path: path.to_path_buf() });
            }
        } else {
            out.push(path.to_path_buf());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TapeError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TapeError::io(dir, "listing directory", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let Ok(meta) = std::fs::metadata(&entry) else { continue };
        if meta.is_dir() {
            walk(&entry, out)?;
        } else if is_segment_name(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}
