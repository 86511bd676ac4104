//! Files tapedeck writes beside its tapes (exports, reports, the noise model, write probes)
//! and the directories tapes go into.
//!
//! Every output is created new in its target's own directory (`O_EXCL`, a random name, mode
//! 0600), written completely, then renamed into place. So a planted symlink is replaced,
//! never followed; a failed write never leaves a half-written file under the requested name;
//! and an existing file is replaced only when the user said so (`--force`). A directory that
//! holds tapes must be the user's own: not a symlink, not writable by group or others, owned
//! by the user (or root), unless they opt out (`--allow-shared-dir`), because whoever can
//! write into it can plant files that tapedeck would read back as production traffic.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why one of tapedeck's JSON documents (a replay report, a noise model) cannot be read
/// or written. `what` names the document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The file cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// The document.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not such a document.
    #[error("{} is not a tapedeck {what}: {source}", path.display())]
    Invalid {
        /// The document.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A layout this version does not read.
    #[error("{}: {}", path.display(), version_problem(what, *found, *reads))]
    Version {
        /// The document.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its version (0: none).
        found: u64,
        /// The version read.
        reads: u64,
    },
    /// The document cannot be written.
    #[error("{what}: {source}")]
    Write {
        /// The document.
        what: &'static str,
        /// Why.
        #[source]
        source: OutputError,
    },
}

fn version_problem(what: &str, found: u64, reads: u64) -> String {
    match found {
        0 => format!("no {what} version in it: not a tapedeck {what}"),
        _ => format!("{what} version {found}; this tapedeck reads version {reads}"),
    }
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output exists and replacing it was not allowed.
    #[error("{} already exists: pass --force to replace it, or choose another name", path.display())]
    Exists {
        /// The output.
        path: PathBuf,
    },
    /// The output names a directory.
    #[error("{} is a directory: name a file to write", path.display())]
    IsDirectory {
        /// The output.
        path: PathBuf,
    },
    /// Creating, writing or renaming failed.
    #[error("cannot write {}: {source}{hint}", path.display())]
    Io {
        /// The output.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// What to do, starting with "; " (empty when there is nothing to say).
        hint: &'static str,
    },
}

impl OutputError {
    fn io(path: &Path, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => "; check that its directory exists",
            io::ErrorKind::PermissionDenied => "; check that its directory is writable by this user",
            _ => "",
        };
        OutputError::Io { path: path.to_path_buf(), source, hint }
    }
}

/// Checks, before the work that produces it starts, that `path` can be written: it does not
/// exist (or `force`), is not a directory, and its directory exists.
pub fn check_output(path: &Path, force: bool) -> Result<(), OutputError> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(OutputError::IsDirectory { path: path.to_path_buf() });
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(OutputError::IsDirectory { path: path.to_path_buf() }),
        Ok(_) if !force => return Err(OutputError::Exists { path: path.to_path_buf() }),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(OutputError::io(path, e)),
    }
    let dir = parent(path);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            Err(OutputError::io(path, io::Error::new(io::ErrorKind::NotADirectory, "its parent is not a directory")))
        }
        Err(e) => Err(OutputError::io(path, e)),
    }
}

/// Writes `path` through `write` into a new private file beside it, then renames it into
/// place: over an existing file only when `replace` is true. Returns what `write` returned.
pub fn write_output<T>(
    path: &Path,
    replace: bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> Result<T, OutputError> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(OutputError::IsDirectory { path: path.to_path_buf() });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent(path))
        .map_err(|e| OutputError::io(path, e))?;
    let mut out = BufWriter::with_capacity(256 << 10, tmp);
    let value = write(&mut out).and_then(|v| out.flush().map(|()| v)).map_err(|e| OutputError::io(path, e))?;
    let tmp = out.into_inner().map_err(|e| OutputError::io(path, e.into_error()))?;
    // A write that failed left `tmp`, which removes itself when dropped.
    let persisted = if replace { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    match persisted {
        Ok(_) => Ok(value),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            Err(OutputError::Exists { path: path.to_path_buf() })
        }
        Err(e) => Err(OutputError::io(path, e.error)),
    }
}

/// [`write_output`] of bytes already in memory.
pub fn write_output_bytes(path: &Path, replace: bool, bytes: &[u8]) -> Result<(), OutputError> {
    write_output(path, replace, |out| out.write_all(bytes))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Why a directory may not hold tapes.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}: tapes there could be read, replaced or planted by others; {advice}, or pass \
         --allow-shared-dir if this is intended", dir.display())]
pub struct SharedDirError {
    /// The directory.
    pub dir: PathBuf,
    /// What is wrong with it.
    pub problem: String,
    /// What to do.
    pub advice: String,
}

/// Makes `dir` (and missing parents) as a directory only this user can open (0700), judged
/// by [`check_private_dir`] before it is made (a refused directory leaves nothing behind)
/// and after (what exists now is what was judged). `action` names the step in an error
/// ("creating the output directory").
pub fn make_private_dir(dir: &Path, allow_shared: bool, action: &'static str) -> Result<(), crate::TapeError> {
    check_private_dir(dir, allow_shared)?;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| crate::TapeError::io(dir, action, e))?;
    check_private_dir(dir, allow_shared)?;
    Ok(())
}

/// Checks that `dir` is private to this user: not a symlink, writable by nobody else,
/// owned by this user or by root; and that no directory above it lets anyone else swap it
/// (each owned by this user or root, writable by others only with the sticky bit, as
/// `/tmp`), as OpenSSH's StrictModes checks — on the path as given and as resolved, so a
/// link on the way is no way around. Writable by the group is fine when the group is this
/// user's own (Debian's user-private groups, umask 002). A `dir` that does not exist yet is
/// judged by the directories above it. `allow_shared` skips the check.
pub fn check_private_dir(dir: &Path, allow_shared: bool) -> Result<(), SharedDirError> {
    if allow_shared {
        return Ok(());
    }
    let refuse = |problem: String, advice: String| SharedDirError { dir: dir.to_path_buf(), problem, advice };
    // A trailing slash would make lstat follow the link: ask about the name itself.
    let name = dir.components().as_path();
    let name = if name.as_os_str().is_empty() { Path::new(".") } else { name };
    let ids = Ids::current();
    match fs::symlink_metadata(name) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::canonicalize(name).map(|t| format!(" (to {})", t.display())).unwrap_or_default();
            return Err(refuse(format!("is a symbolic link{target}"), "name the real directory".into()));
        }
        Ok(meta) => {
            if let Some((problem, advice)) = ids.problem(&meta, name, "it") {
                return Err(refuse(problem, advice));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(format!("cannot inspect it: {e}"), "check the path".into())),
    }
    // Above it: each directory on the path as given (a link's own directory decides who can
    // swap the link), then on the resolved path.
    let given = std::path::absolute(name).unwrap_or_else(|_| name.to_path_buf());
    let existing = given.ancestors().find(|a| a.exists()).map(Path::to_path_buf);
    let resolved = existing.as_deref().and_then(|e| fs::canonicalize(e).ok());
    let lexical = given.ancestors().skip(1).map(Path::to_path_buf);
    let real = resolved.iter().flat_map(|r| r.ancestors().map(Path::to_path_buf).collect::<Vec<_>>());
    for above in lexical.chain(real) {
        if above == given {
            continue;
        }
        // A link on the way is as good as its owner: someone else's can be pointed elsewhere.
        if let Some(link) = fs::symlink_metadata(&above).ok().filter(|m| m.file_type().is_symlink()) {
            use std::os::unix::fs::MetadataExt;
            if link.uid() != ids.uid && link.uid() != 0 {
                return Err(refuse(
                    format!(
                        "lies below {}, a link of user id {}, who could point it elsewhere",
                        above.display(),
                        link.uid()
                    ),
                    "name the real directory".into(),
                ));
            }
        }
        let Ok(meta) = fs::metadata(&above) else { continue };
        if let Some((problem, advice)) = ids.problem(&meta, &above, "") {
            return Err(refuse(format!("lies in {}, which {problem}: they could replace it", above.display()), advice));
        }
    }
    Ok(())
}

/// Who this process is, for [`check_private_dir`].
struct Ids {
    uid: u32,
    gid: u32,
    /// The group is this user's alone: named as the user, no other members listed (a
    /// user-private group, as Debian makes them). Only then is "writable by the group" the
    /// same as "writable by me".
    private_group: bool,
}

impl Ids {
    fn current() -> Self {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ids { uid, gid, private_group: user_private_group(uid, gid) }
    }

    /// What lets someone else change `path` (described by `meta`), and the fix; `None` when
    /// nothing does. `it` names the directory in the problem ("it", or "" for "which …").
    fn problem(&self, meta: &fs::Metadata, path: &Path, it: &str) -> Option<(String, String)> {
        use std::os::unix::fs::MetadataExt;
        let subject = if it.is_empty() { String::new() } else { format!("{it} ") };
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if meta.uid() != self.uid && meta.uid() != 0 {
            return Some((
                format!("{subject}belongs to user id {}, not to this user ({})", meta.uid(), self.uid),
                "use a directory of your own".into(),
            ));
        }
        // The directory itself must be closed to others; one above only needs the sticky
        // bit, which stops others from renaming what is not theirs.
        let open_to_others = mode & 0o002 != 0 && !(sticky && it.is_empty());
        // With an access control list the group bits are only its mask: who may write is
        // in the list, so group-write counts as open.
        let own_group = meta.gid() == self.gid && self.private_group && !has_acl(path);
        let open_to_group = mode & 0o020 != 0 && !own_group && !(sticky && it.is_empty());
        if open_to_others || open_to_group {
            let who = if open_to_others { "everyone" } else { "its group" };
            let what = if it.is_empty() { "can be written by" } else { "is writable by" };
            let fix = if open_to_others { "o-w" } else { "g-w" };
            return Some((
                format!("{subject}{what} {who} (mode {mode:o})"),
                format!("`chmod {fix} {}`", path.display()),
            ));
        }
        None
    }
}

/// True when `gid` is `uid`'s user-private group: it has the user's name and lists no
/// other member.
fn user_private_group(uid: u32, gid: u32) -> bool {
    use std::ffi::CStr;
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: the structs are filled by the calls, the strings they point to live in `buf`,
    // which outlives every use below; results are checked before use.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) != 0 || found.is_null() {
            return false;
        }
        let user = CStr::from_ptr(pw.pw_name).to_owned();
        let mut gbuf = vec![0 as libc::c_char; 64 << 10];
        let mut gr: libc::group = std::mem::zeroed();
        let mut gfound: *mut libc::group = std::ptr::null_mut();
        if libc::getgrgid_r(gid, &mut gr, gbuf.as_mut_ptr(), gbuf.len(), &mut gfound) != 0 || gfound.is_null() {
            return false;
        }
        if CStr::from_ptr(gr.gr_name) != user.as_c_str() {
            return false;
        }
        let mut member = gr.gr_mem;
        while !member.is_null() && !(*member).is_null() {
            if CStr::from_ptr(*member) != user.as_c_str() {
                return false;
            }
            member = member.add(1);
        }
        true
    }
}

/// True when `path` has a POSIX access control list (Linux; elsewhere not checked).
#[cfg(not(target_os = "linux"))]
fn has_acl(_path: &Path) -> bool {
    false
}

/// True when `path` has a POSIX access control list.
#[cfg(target_os = "linux")]
fn has_acl(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return true };
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks for the size only.
    let n = unsafe { libc::getxattr(c_path.as_ptr(), c"system.posix_acl_access".as_ptr(), std::ptr::null_mut(), 0) };
    n >= 0
}

/// What `path` names, for telling two outputs apart: its directory resolved (links and
/// `..` followed, as far as it exists), then its name.
pub fn output_identity(path: &Path) -> PathBuf {
    // The name itself is not followed: an output replaces a link of its name.
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => resolved(dir).join(name),
        _ => abs,
    }
}

/// `path` with its longest existing part resolved (links and `..` followed) and the rest,
/// not made yet, appended as given.
pub fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for existing in abs.ancestors() {
        if let Ok(real) = fs::canonicalize(existing) {
            let rest = abs.strip_prefix(existing).unwrap_or(Path::new(""));
            return if rest.as_os_str().is_empty() { real } else { real.join(rest) };
        }
    }
    abs
}

/// This process's effective user id.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Proves that `dir` is writable by creating and removing a file with a random name
/// (`O_EXCL`: never through a planted symlink, never over an existing file).
pub fn write_probe(dir: &Path) -> io::Result<()> {
    let mut probe = tempfile::Builder::new().prefix(".tapedeck-write-test-").tempfile_in(dir)?;
    probe.write_all(b"ok")?;
    probe.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn outputs_are_new_private_files_and_replace_only_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report.json");
        check_output(&out, false).unwrap();
        write_output_bytes(&out, false, b"one").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"one");
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

        let exists = check_output(&out, false).unwrap_err();
        assert!(exists.to_string().contains("already exists: pass --force"), "{exists}");
        assert!(matches!(write_output_bytes(&out, false, b"two"), Err(OutputError::Exists { .. })));
        assert_eq!(fs::read(&out).unwrap(), b"one");
        check_output(&out, true).unwrap();
        write_output_bytes(&out, true, b"two").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"two");
        // Nothing but the output is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_symlink_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("out.html");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        assert!(matches!(check_output(&out, false), Err(OutputError::Exists { .. })));
        assert!(matches!(write_output_bytes(&out, false, b"x"), Err(OutputError::Exists { .. })));
        write_output_bytes(&out, true, b"report").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&out).unwrap(), b"report");
        // A dangling link is refused the same way.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(check_output(&dangling, false), Err(OutputError::Exists { .. })));
    }

    #[test]
    fn a_failed_write_leaves_neither_output_nor_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export.har");
        let err = write_output(&out, false, |w| {
            w.write_all(b"half")?;
            Err::<(), _>(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = check_output(&dir.path().join("no/such/dir/x"), false).unwrap_err();
        assert!(missing.to_string().contains("check that its directory exists"), "{missing}");
        assert!(matches!(check_output(dir.path(), true), Err(OutputError::IsDirectory { .. })));
        let slash = PathBuf::from(format!("{}/new/", dir.path().display()));
        assert!(matches!(check_output(&slash, true), Err(OutputError::IsDirectory { .. })));
    }

    #[test]
    fn directories_shared_with_others_or_reached_by_a_link_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("own");
        fs::create_dir(&own).unwrap();
        fs::set_permissions(&own, fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(&own, false).unwrap();
        let is_root = current_uid() == 0;

        for mode in [0o777, 0o1777, 0o707] {
            fs::set_permissions(&own, fs::Permissions::from_mode(mode)).unwrap();
            let err = check_private_dir(&own, false).unwrap_err().to_string();
            assert!(
                err.contains("everyone") && err.contains("chmod o-w") && err.contains("--allow-shared-dir"),
                "{mode:o}: {err}"
            );
            check_private_dir(&own, true).unwrap();
        }
        // Writable by this user's own private group (Debian's umask 002): fine; by a group
        // others share, or another group: not.
        fs::set_permissions(&own, fs::Permissions::from_mode(0o775)).unwrap();
        let ids = Ids::current();
        assert_eq!(check_private_dir(&own, false).is_ok(), ids.private_group, "private group: {}", ids.private_group);
        if is_root {
            std::os::unix::fs::chown(&own, None, Some(4242)).unwrap();
            let err = check_private_dir(&own, false).unwrap_err().to_string();
            assert!(err.contains("its group") && err.contains("chmod g-w"), "{err}");
        }
        fs::set_permissions(&own, fs::Permissions::from_mode(0o755)).unwrap();
        check_private_dir(&own, false).unwrap();

        // A directory inside one that others may write (no sticky bit), or inside another
        // user's, could be swapped under the writer; so could one not made yet.
        let open = root.path().join("open");
        fs::create_dir(&open).unwrap();
        let inner = open.join("caps");
        fs::create_dir(&inner).unwrap();
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        for dir in [inner.clone(), open.join("not/yet")] {
            let err = check_private_dir(&dir, false).unwrap_err().to_string();
            assert!(err.contains("lies in") && err.contains(&format!("chmod o-w {}", open.display())), "{err}");
        }
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        check_private_dir(&inner, false).unwrap();
        if is_root {
            std::os::unix::fs::chown(&open, Some(4321), None).unwrap();
            let err = check_private_dir(&inner, false).unwrap_err().to_string();
            assert!(err.contains("belongs to user id 4321"), "{err}");
            std::os::unix::fs::chown(&open, Some(0), None).unwrap();
        }
        // Reached through a link: the link's own directory decides who can swap it.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let mine = root.path().join("mine");
        fs::create_dir(&mine).unwrap();
        std::os::unix::fs::symlink(&mine, open.join("l")).unwrap();
        let err = check_private_dir(&open.join("l/caps"), false).unwrap_err().to_string();
        assert!(err.contains("lies in") && err.contains("open"), "{err}");
        let via = root.path().join("via");
        std::os::unix::fs::symlink(&open, &via).unwrap();
        assert!(check_private_dir(&via.join("caps"), false).is_err());
        // Another user's link in a sticky directory: they could point it elsewhere.
        if is_root {
            let sticky = root.path().join("sticky");
            fs::create_dir(&sticky).unwrap();
            fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
            let theirs = sticky.join("l");
            std::os::unix::fs::symlink(&mine, &theirs).unwrap();
            check_private_dir(&theirs.join("caps"), false).unwrap();
            std::os::unix::fs::lchown(&theirs, Some(4321), None).unwrap();
            let err = check_private_dir(&theirs.join("caps"), false).unwrap_err().to_string();
            assert!(err.contains("a link of user id 4321"), "{err}");
        }

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        for spelling in [link.clone(), PathBuf::from(format!("{}/", link.display()))] {
            let err = check_private_dir(&spelling, false).unwrap_err().to_string();
            assert!(err.contains("symbolic link") && err.contains("own"), "{err}");
        }
    }

    #[test]
    fn the_write_probe_never_touches_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        write_probe(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        // Root can write anyway; the probe must then still leave nothing behind.
        let _ = write_probe(dir.path());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }
}
