//! Writing tapes: [`TapeWriter`] appends exchanges into blocks, blocks into segment files,
//! and rotates segments by size and age.
//!
//! A segment is written as `NAME.tape.partial` (mode 0600), block by block, each block in
//! one `write` call. Closing it appends the footer index, fsyncs, renames it to
//! `NAME.tape` and fsyncs the directory, so a `.tape` file is always complete and a crash
//! leaves at most one `.partial` whose intact blocks are all readable.
//!
//! The writer is synchronous and owns no thread: the proxy drives it from its capture task
//! and calls [`TapeWriter::tick`] periodically so idle blocks still get cut on time.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::codec;
use crate::error::TapeError;
use crate::exchange::Exchange;
use crate::tape::block::BlockBuilder;
use crate::tape::format::*;

/// How a [`TapeWriter`] cuts blocks, names and rotates segments.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Directory the segments go into (created with mode 0700 if missing).
    pub dir: PathBuf,
    /// First part of segment names, e.g. `capture`.
    pub prefix: String,
    /// Host/instance part of segment names; defaults to the host name.
    pub instance: String,
    /// What produces the tape.
    pub kind: TapeKind,
    /// Producer string for the header.
    pub producer: String,
    /// Scrub-policy fingerprint for the header.
    pub scrub_fingerprint: Option<String>,
    /// Labels for the header.
    pub labels: Vec<(String, String)>,
    /// Wall-clock start of the producer's clock, ns since the epoch.
    pub tape_start_unix_ns: i64,
    /// Cut a block after this many records.
    pub block_max_records: u32,
    /// Cut a block once its uncompressed records reach this many bytes.
    pub block_max_bytes: usize,
    /// Cut a block once its first record is this old.
    pub block_max_age: Duration,
    /// Rotate once a segment reaches this many bytes on disk.
    pub segment_max_bytes: u64,
    /// Rotate once a segment is this old.
    pub segment_max_age: Duration,
    /// zstd compression level.
    pub zstd_level: i32,
    /// fsync after every block (durable against power loss, slower); segments are always
    /// fsynced when closed.
    pub sync_every_block: bool,
    /// Accept a directory that is a symlink, writable by group or others, or owned by
    /// another user (see [`crate::files::check_private_dir`]).
    pub allow_shared_dir: bool,
}

impl WriterConfig {
    /// Defaults suitable for a capture proxy writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WriterConfig {
            dir: dir.into(),
            prefix: "capture".into(),
            instance: default_instance(),
            kind: TapeKind::Capture,
            producer: concat!("tapedeck ", env!("CARGO_PKG_VERSION")).into(),
            scrub_fingerprint: None,
            labels: Vec::new(),
            tape_start_unix_ns: now_unix_ns(),
            block_max_records: 4096,
            block_max_bytes: 1 << 20,
            block_max_age: Duration::from_secs(1),
            segment_max_bytes: 256 << 20,
            segment_max_age: Duration::from_secs(3600),
            zstd_level: 3,
            allow_shared_dir: false,
            sync_every_block: false,
        }
    }
}

/// The host name, made safe for a file name.
pub fn default_instance() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    sanitize_name_part(if host.is_empty() { "localhost" } else { &host })
}

fn sanitize_name_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// Current wall-clock time in ns since the Unix epoch.
pub fn now_unix_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Counters of what a writer has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records written to disk inside complete blocks.
    pub records: u64,
    /// Records lost because their block could not be written (disk full, I/O error).
    pub records_lost: u64,
    /// Records written (counted in `records`) to a segment someone else deleted while it
    /// was open: on disk once, gone now.
    pub records_deleted: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Segments closed.
    pub segments: u64,
    /// Bytes written to disk.
    pub bytes_on_disk: u64,
    /// Uncompressed record bytes written.
    pub raw_bytes: u64,
}

/// One open `.tape.partial` file.
struct SegmentWriter {
    file: File,
    partial: PathBuf,
    final_path: PathBuf,
    /// Offset after the last complete block.
    offset: u64,
    opened: Instant,
    footer: Footer,
    /// Running maximum request start of this segment, for lateness.
    frontier: i64,
    /// The file's device and inode: if the path stops naming this file (deleted,
    /// replaced), what is written goes nowhere.
    identity: Option<(u64, u64)>,
}

impl SegmentWriter {
    /// Creates the file; `opened` is when the segment's first record arrived (its age
    /// counts from there).
    fn create(dir: &Path, base: &str, header: &SegmentHeader, opened: Instant) -> Result<Self, TapeError> {
        let final_path = dir.join(format!("{base}.tape"));
        let partial = dir.join(format!("{base}.tape.partial"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        if final_path.exists() {
            return Err(TapeError::io(&final_path, "creating segment", std::io::ErrorKind::AlreadyExists.into()));
        }
        let mut file = options.open(&partial).map_err(|e| TapeError::io(&partial, "creating segment", e))?;
        let body = codec::encode_header(header);
        let mut buf = Vec::with_capacity(PREAMBLE_LEN + body.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.push(CODEC_BINCODE2_ZSTD_EXT);
        buf.push(0);
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        if let Err(e) = file.write_all(&buf) {
            let _ = fs::remove_file(&partial);
            return Err(TapeError::io(&partial, "writing segment header", e));
        }
        let identity = file_identity(&file.metadata().map_err(|e| TapeError::io(&partial, "creating segment", e))?);
        Ok(SegmentWriter {
            file,
            partial,
            final_path,
            offset: buf.len() as u64,
            opened,
            footer: Footer::default(),
            frontier: i64::MIN,
            identity,
        })
    }

    /// Whether the `.partial` path still names the file being written, and if not,
    /// whether the file still exists under another name.
    fn fate(&self) -> Fate {
        let linked = match fs::metadata(&self.partial) {
            Ok(meta) => self.identity.is_none() || file_identity(&meta) == self.identity,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        };
        if linked {
            return Fate::Linked;
        }
        match self.file.metadata() {
            Ok(meta) if link_count(&meta) == 0 => Fate::Deleted,
            _ => Fate::Moved,
        }
    }

    /// The footer index and trailer that close the segment, stamped now.
    fn footer_bytes(&mut self) -> Vec<u8> {
        self.footer.closed_unix_ns = now_unix_ns();
        let body = codec::encode_footer(&self.footer);
        let mut buf = Vec::with_capacity(FOOTER_HEADER_LEN + body.len() + TRAILER_LEN);
        buf.extend_from_slice(FOOTER_MAGIC);
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        buf.extend_from_slice(&self.offset.to_le_bytes());
        buf.extend_from_slice(TRAILER_MAGIC);
        buf
    }

    /// Closes a segment that was moved away: its footer is written where it is now.
    fn close_in_place(mut self) -> u64 {
        let buf = self.footer_bytes();
        match self.file.write_all(&buf).and_then(|()| self.file.sync_all()) {
            Ok(()) => buf.len() as u64,
            Err(_) => 0,
        }
    }

    /// Records in the blocks written so far.
    fn records(&self) -> u64 {
        self.footer.blocks.iter().map(|b| u64::from(b.records)).sum()
    }

    /// Writes one block; on failure the file is cut back to the last complete block.
    fn write_block(
        &mut self,
        header: &BlockHeader,
        payload: &[u8],
        index: BlockIndex,
        sync: bool,
    ) -> Result<u64, TapeError> {
        let mut buf = Vec::with_capacity(BLOCK_HEADER_LEN + payload.len());
        buf.extend_from_slice(&header.to_bytes());
        buf.extend_from_slice(payload);
        let result = self.file.write_all(&buf).and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            self.rewind();
            return Err(TapeError::io(&self.partial, "writing block", e));
        }
        self.footer.blocks.push(BlockIndex { offset: self.offset, ..index });
        self.offset += buf.len() as u64;
        Ok(buf.len() as u64)
    }

    /// Drops a torn block so the next block lands where it belongs. If even that fails,
    /// the reader's resynchronisation will skip the torn bytes.
    fn rewind(&mut self) {
        let _ = self.file.set_len(self.offset);
        let _ = self.file.seek(SeekFrom::Start(self.offset));
    }

    /// Writes the footer and trailer, fsyncs and renames to `.tape`.
    fn close(mut self) -> Result<(PathBuf, u64), Closing> {
        let buf = self.footer_bytes();
        if let Err(e) = self.file.write_all(&buf).and_then(|()| self.file.sync_all()) {
            self.rewind();
            return Err(Closing::Unclosed(TapeError::io(&self.partial, "closing segment", e)));
        }
        let written = buf.len() as u64;
        match publish(&self.partial, &self.final_path) {
            Ok(()) => Ok((self.final_path, written)),
            Err(e) => Err(Closing::Unrenamed { partial: self.partial, final_path: self.final_path, written, error: e }),
        }
    }
}

/// Why [`SegmentWriter::close`] did not finish.
enum Closing {
    /// The footer could not be written: the segment stays a readable `.partial`.
    Unclosed(TapeError),
    /// Closed (footer written, synced) but not renamed: retried later.
    Unrenamed { partial: PathBuf, final_path: PathBuf, written: u64, error: TapeError },
}

/// Renames a closed `.partial` to its final name and makes the rename durable.
fn publish(partial: &Path, final_path: &Path) -> Result<(), TapeError> {
    fs::rename(partial, final_path).map_err(|e| TapeError::io(partial, "renaming segment", e))?;
    if let Some(dir) = final_path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// What became of an open segment's file.
enum Fate {
    Linked,
    /// Renamed or moved away by someone else: still on disk, still readable.
    Moved,
    /// Deleted: what it held is gone.
    Deleted,
}

/// How many names a file has (0: deleted while open).
fn link_count(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::nlink(meta)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        1
    }
}

/// A file's device and inode number, where the platform has them.
fn file_identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// True for a `.partial` that was closed (it ends in the trailer) but never renamed.
fn is_closed_partial(path: &Path) -> bool {
    let Ok(mut file) = File::open(path) else { return false };
    let mut trailer = [0u8; TRAILER_LEN];
    let read = file
        .seek(SeekFrom::End(-(TRAILER_LEN as i64)))
        .and_then(|_| std::io::Read::read_exact(&mut file, &mut trailer));
    read.is_ok() && &trailer[TRAILER_LEN - TRAILER_MAGIC.len()..] == TRAILER_MAGIC
}

/// How often [`TapeWriter::tick`] checks that the open segment is still there.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Appends exchanges to rotating `.tape` segments in one directory.
pub struct TapeWriter {
    config: WriterConfig,
    seq: u32,
    segment: Option<SegmentWriter>,
    block: BlockBuilder,
    compressor: zstd::bulk::Compressor<'static>,
    payload: Vec<u8>,
    finished: Vec<PathBuf>,
    /// Closed segments whose rename failed, retried on every tick and rotation.
    unrenamed: Vec<(PathBuf, PathBuf)>,
    /// The open segment was deleted or moved by someone else: reported by the next
    /// [`tick`](Self::tick) (or [`take_lost`](Self::take_lost)), once.
    lost: Option<TapeError>,
    /// When the open segment was last checked ([`CHECK_EVERY`]).
    checked: Instant,
    stats: WriterStats,
}

impl TapeWriter {
    /// A writer into `config.dir`, creating the directory (mode 0700) if needed. No file is
    /// created until the first exchange arrives.
    pub fn new(config: WriterConfig) -> Result<Self, TapeError> {
        crate::files::make_private_dir(&config.dir, config.allow_shared_dir, "creating capture directory")?;
        let compressor = zstd::bulk::Compressor::new(config.zstd_level)
            .map_err(|e| TapeError::io(&config.dir, "initialising zstd", e))?;
        Ok(TapeWriter {
            config,
            seq: 0,
            segment: None,
            block: BlockBuilder::new(),
            compressor,
            payload: Vec::new(),
            finished: Vec::new(),
            unrenamed: Vec::new(),
            lost: None,
            checked: Instant::now(),
            stats: WriterStats::default(),
        })
    }

    /// Renames `.partial` segments in the directory that were closed but never renamed
    /// (a rename that failed before a restart); returns the segments renamed. A
    /// `.partial` without its trailer (a crash, or another writer's open segment) is left
    /// as it is: it is readable, and may still be written.
    pub fn recover_closed_partials(&mut self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.config.dir) else { return Vec::new() };
        let mut renamed = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let Some(base) = name.strip_suffix(".tape.partial") else { continue };
            let final_path = path.with_file_name(format!("{base}.tape"));
            if !final_path.exists() && is_closed_partial(&path) && publish(&path, &final_path).is_ok() {
                renamed.push(final_path);
            }
        }
        renamed.sort();
        renamed
    }

    /// The configuration in use.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Paths of the segments closed so far.
    pub fn finished_segments(&self) -> &[PathBuf] {
        &self.finished
    }

    /// Records waiting in the current block (not yet on disk).
    pub fn pending_records(&self) -> u32 {
        self.block.records
    }

    /// Appends one exchange. It reaches the disk when its block is cut (by count, size or
    /// age) or on [`flush`](Self::flush)/[`finish`](Self::finish). If a block cannot be
    /// written its records are counted in [`WriterStats::records_lost`] and the error is
    /// returned; the writer stays usable and later blocks are written normally.
    pub fn append(&mut self, exchange: &Exchange) -> Result<(), TapeError> {
        let frontier = self.segment.as_ref().map_or(i64::MIN, |s| s.frontier);
        self.block.push(exchange, frontier).map_err(TapeError::Encode)?;
        if self.block.is_full(self.config.block_max_records, self.config.block_max_bytes) {
            self.flush()?;
        }
        self.tick()
    }

    /// Appends a whole block as another writer framed it ([`BlockBuilder::frame`]: a
    /// capture stream's message), without decoding it: its checksum is verified, its
    /// lateness widened to this segment's (its requests may start before ones already
    /// written) and it is written as one block. `min_start_ns`/`max_start_ns` are its
    /// requests' first and last start, as its producer said. Records gathered by
    /// [`append`](Self::append) are written first.
    pub fn append_framed(&mut self, framed: &[u8], min_start_ns: i64, max_start_ns: i64) -> Result<(), TapeError> {
        let bad = |what: &'static str| TapeError::io(&self.config.dir, what, std::io::ErrorKind::InvalidData.into());
        let head: &[u8; BLOCK_HEADER_LEN] = framed
            .get(..BLOCK_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad("reading a framed block"))?;
        let header = BlockHeader::parse(head).ok_or_else(|| bad("reading a framed block (no block magic)"))?;
        let payload = &framed[BLOCK_HEADER_LEN..];
        if !header.is_plausible() || payload.len() != header.payload_len as usize || min_start_ns > max_start_ns {
            return Err(bad("reading a framed block (lengths out of range)"));
        }
        if header.compute_crc(payload) != header.crc {
            return Err(bad("reading a framed block (checksum mismatch)"));
        }
        self.flush_block_only()?;
        let opened = Instant::now();
        let segment = match self.segment.take() {
            Some(s) => s,
            None => self.open_segment(opened)?,
        };
        let segment = self.segment.insert(segment);
        let lateness = if segment.frontier > min_start_ns { segment.frontier.abs_diff(min_start_ns) } else { 0 };
        let max_lateness = header.max_lateness_ns.max(lateness);
        let header = BlockHeader::for_payload(payload, header.raw_len, header.records, max_lateness);
        let index = BlockIndex {
            offset: 0,
            payload_len: header.payload_len,
            raw_len: header.raw_len,
            records: header.records,
            min_start_ns,
            max_start_ns,
            max_lateness_ns: max_lateness,
        };
        let written = match segment.write_block(&header, payload, index, self.config.sync_every_block) {
            Ok(n) => n,
            Err(e) => {
                self.stats.records_lost += u64::from(header.records);
                return Err(e);
            }
        };
        segment.frontier = segment.frontier.max(max_start_ns);
        self.stats.blocks += 1;
        self.stats.records += u64::from(header.records);
        self.stats.raw_bytes += u64::from(header.raw_len);
        self.stats.bytes_on_disk += written;
        if self.segment.as_ref().is_some_and(|s| s.offset >= self.config.segment_max_bytes) {
            self.rotate()?;
        }
        Ok(())
    }

    /// Cuts the current block if it is older than `block_max_age` and rotates the segment
    /// if it is older than `segment_max_age`. Call it about once per `block_max_age`.
    pub fn tick(&mut self) -> Result<(), TapeError> {
        if self.checked.elapsed() >= CHECK_EVERY {
            // A rename retry and two `stat`s: a few times a second, not per append.
            self.checked = Instant::now();
            self.retry_renames();
            self.drop_segment_if_gone();
        }
        if let Some(lost) = self.lost.take() {
            return Err(lost);
        }
        if self.block.opened.is_some_and(|t| t.elapsed() >= self.config.block_max_age) {
            self.flush()?;
        }
        if self.segment.as_ref().is_some_and(|s| s.opened.elapsed() >= self.config.segment_max_age) {
            self.rotate()?;
        }
        Ok(())
    }

    /// Writes the current block to disk now (if it holds any record).
    pub fn flush(&mut self) -> Result<(), TapeError> {
        self.flush_block_only()?;
        if self.segment.as_ref().is_some_and(|s| s.offset >= self.config.segment_max_bytes) {
            self.rotate()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> Result<(), TapeError> {
        let (header, index) = self
            .block
            .compress(&mut self.compressor, &mut self.payload)
            .map_err(|e| TapeError::io(&self.config.dir, "compressing block", e))?;
        let raw_len = index.raw_len;
        let segment = match self.segment.take() {
            Some(s) => s,
            None => self.open_segment(self.block.opened.unwrap_or_else(Instant::now))?,
        };
        let segment = self.segment.insert(segment);
        let written = segment.write_block(&header, &self.payload, index, self.config.sync_every_block)?;
        segment.frontier = segment.frontier.max(self.block.max_start);
        self.stats.blocks += 1;
        self.stats.records += u64::from(self.block.records);
        self.stats.raw_bytes += u64::from(raw_len);
        self.stats.bytes_on_disk += written;
        Ok(())
    }

    fn open_segment(&mut self, opened: Instant) -> Result<SegmentWriter, TapeError> {
        let now = now_unix_ns();
        let stamp = jiff::Timestamp::from_nanosecond(i128::from(now))
            .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|_| "00000000T000000Z".into());
        let prefix = sanitize_name_part(&self.config.prefix);
        let instance = sanitize_name_part(&self.config.instance);
        let mut last_err = None;
        // Another writer (or a restart within the same second) may hold the name: try the
        // next sequence number.
        for _ in 0..1000 {
            self.seq += 1;
            let header = SegmentHeader {
                format_version: FORMAT_VERSION,
                codec: CODEC_BINCODE2_ZSTD_EXT,
                created_unix_ns: now,
                tape_start_unix_ns: self.config.tape_start_unix_ns,
                producer: self.config.producer.clone(),
                instance: self.config.instance.clone(),
                segment_seq: self.seq,
                kind: self.config.kind,
                scrub_fingerprint: self.config.scrub_fingerprint.clone(),
                labels: self.config.labels.clone(),
            };
            let base = format!("{prefix}-{instance}-{stamp}-{:06}", self.seq);
            match SegmentWriter::create(&self.config.dir, &base, &header, opened) {
                Ok(s) => {
                    self.stats.bytes_on_disk += s.offset;
                    return Ok(s);
                }
                Err(TapeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    last_err = Some(source);
                }
                Err(e) => {
                    // No file was made: the number is free for the next attempt.
                    self.seq -= 1;
                    return Err(e);
                }
            }
        }
        Err(TapeError::io(
            &self.config.dir,
            "choosing a free segment name",
            last_err.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
        ))
    }

    /// Writes the current block and closes the current segment (a new one is opened by the
    /// next append).
    pub fn rotate(&mut self) -> Result<(), TapeError> {
        self.flush_block_only()?;
        if let Some(segment) = self.segment.take() {
            match segment.close() {
                Ok((path, written)) => {
                    self.stats.bytes_on_disk += written;
                    self.stats.segments += 1;
                    self.finished.push(path);
                }
                Err(Closing::Unclosed(e)) => return Err(e),
                Err(Closing::Unrenamed { partial, final_path, written, error }) => {
                    // Complete on disk and readable as it is; renamed when possible.
                    self.stats.bytes_on_disk += written;
                    self.unrenamed.push((partial, final_path));
                    return Err(error);
                }
            }
        }
        self.retry_renames();
        Ok(())
    }

    /// Renames closed segments whose rename failed before.
    /// Renames closed segments whose rename failed before. Failures are not errors
    /// again (the first was reported); a segment whose `.partial` is gone (renamed by
    /// someone else, or by another writer's recovery) is forgotten.
    fn retry_renames(&mut self) {
        let mut still = Vec::new();
        for (partial, final_path) in std::mem::take(&mut self.unrenamed) {
            match publish(&partial, &final_path) {
                Ok(()) => {
                    self.stats.segments += 1;
                    self.finished.push(final_path);
                }
                Err(TapeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    if final_path.exists() {
                        self.stats.segments += 1;
                        self.finished.push(final_path);
                    }
                }
                Err(_) => still.push((partial, final_path)),
            }
        }
        self.unrenamed = still;
    }

    /// What happened to a segment someone else deleted or moved while it was open, if
    /// that is not reported yet ([`tick`](Self::tick) reports it too).
    pub fn take_lost(&mut self) -> Option<TapeError> {
        self.drop_segment_if_gone();
        self.lost.take()
    }

    /// If the open segment's file was deleted, what was written to it is gone: counts
    /// its records as deleted and forgets it. If it was moved or renamed, it is closed
    /// where it is now. Either way the next block starts a new segment, and the event
    /// is kept for [`tick`](Self::tick) to report.
    fn drop_segment_if_gone(&mut self) {
        let Some(fate) = self.segment.as_ref().map(SegmentWriter::fate) else { return };
        let Some(segment) = self.segment.take_if(|_| !matches!(fate, Fate::Linked)) else { return };
        let partial = segment.partial.clone();
        let what = match fate {
            Fate::Deleted => {
                self.stats.records_deleted += segment.records();
                "writing segment (the open file was deleted by someone else: the captures it held are lost; a new segment is started)"
            }
            _ => {
                self.stats.bytes_on_disk += segment.close_in_place();
                self.stats.segments += 1;
                "writing segment (the open file was moved or replaced by someone else: it was closed where it is now, readable; a new segment is started)"
            }
        };
        self.lost.get_or_insert(TapeError::io(&partial, what, std::io::ErrorKind::NotFound.into()));
    }

    // `flush` may itself rotate; rotation must only write the block.
    fn flush_block_only(&mut self) -> Result<(), TapeError> {
        self.drop_segment_if_gone();
        if self.block.records == 0 {
            return Ok(());
        }
        let result = self.write_block();
        if result.is_err() {
            self.stats.records_lost += u64::from(self.block.records);
        }
        self.block.reset();
        result
    }

    /// Writes everything and closes the current segment; returns every segment closed by
    /// this writer.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, TapeError> {
        self.rotate()?;
        Ok(std::mem::take(&mut self.finished))
    }
}

impl Drop for TapeWriter {
    fn drop(&mut self) {
        // Best effort for writers dropped without `finish` (e.g. on an error path): a
        // closed segment is better than a `.partial`.
        if self.segment.is_some() || self.block.records > 0 {
            let _ = self.rotate();
        }
    }
}
