//! Errors of the captures crate. Each names the file it concerns and, where there is one,
//! what the user can do about it.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing tapes.
#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    /// An I/O operation on a file failed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done, e.g. "reading block".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the `.tape` magic.
    #[error("{}: not a tapedeck tape (no TAPEDECK header){hint}", path.display())]
    NotATape {
        /// The file.
        path: PathBuf,
        /// A hint about what the file looks like instead, starting with "; ".
        hint: String,
    },
    /// The file was written by a format version this build cannot read.
    #[error(
        "{}: tape format version {found} is not supported (this tapedeck reads version {supported}); {advice}",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
        /// What to do about it.
        advice: &'static str,
    },
    /// The file uses a record codec this build does not know.
    #[error("{}: unknown record codec {codec}; it was written by a newer tapedeck", path.display())]
    UnsupportedCodec {
        /// The file.
        path: PathBuf,
        /// Codec id found in the file.
        codec: u8,
    },
    /// The directory may not hold tapes: it is shared with others or reached by a link.
    #[error(transparent)]
    SharedDir(Box<crate::files::SharedDirError>),
    /// A record could not be encoded (for example it is larger than a block may be).
    #[error("cannot encode exchange: {0}")]
    Encode(String),
    /// The path holds no tape segments.
    #[error("{}: no .tape files found here; point at a capture directory or a .tape file", path.display())]
    NoTapes {
        /// The path that was searched.
        path: PathBuf,
    },
}

impl TapeError {
    /// An I/O error while `action` on `path`.
    pub fn io(path: &Path, action: &'static str, source: io::Error) -> Self {
        TapeError::Io { path: path.to_path_buf(), action, source }
    }

    /// True when the error is an I/O error caused by a full disk or quota.
    pub fn is_disk_full(&self) -> bool {
        match self {
            TapeError::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::QuotaExceeded
                    || source.raw_os_error() == Some(28) // ENOSPC
                    || source.raw_os_error() == Some(122) // EDQUOT
            }
            _ => false,
        }
    }
}

impl From<crate::files::SharedDirError> for TapeError {
    fn from(e: crate::files::SharedDirError) -> Self {
        TapeError::SharedDir(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disks_are_recognised() {
        let enospc = TapeError::io(Path::new("x"), "writing block", io::Error::from_raw_os_error(28));
        assert!(enospc.is_disk_full());
        let quota = TapeError::io(Path::new("x"), "writing block", io::Error::from_raw_os_error(122));
        assert!(quota.is_disk_full());
        let other = TapeError::io(Path::new("x"), "writing block", io::Error::from_raw_os_error(27)); // EFBIG
        assert!(!other.is_disk_full());
        assert!(enospc.to_string().starts_with("x: writing block: "));
    }
}
