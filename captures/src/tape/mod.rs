//! The `.tape` capture format: segment files of compressed, checksummed blocks of
//! exchanges with a footer index. See [`format`] for the byte layout.
//!
//! - [`TapeWriter`] appends, cuts blocks, rotates segments, fsyncs and renames.
//! - [`SegmentReader`] streams one segment and recovers from torn tails and damage.
//! - [`TapeReader`] merges many segments into one stream in request-start order.
//! - [`discover`] turns user-given paths (files and directories) into segment files.

pub mod format;
pub mod merge;
pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

pub use format::{SegmentHeader, TapeKind};
pub use merge::{SegmentReport, TapeReader};
pub use reader::{ReadStats, SegmentReader};
pub use writer::{TapeWriter, WriterConfig, WriterStats};

use crate::error::TapeError;

/// True for names the writer produces: `*.tape` and unfinished `*.tape.partial`.
pub fn is_segment_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tape") || name.ends_with(".tape.partial")
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
