//! Reading one segment: [`SegmentReader`] streams its exchanges block by block, in file
//! order, with memory bounded by the largest block rather than the file.
//!
//! Damage is not an error. A torn tail (crash, `kill -9`, full disk), a block whose CRC
//! fails, or garbage in the middle is skipped: the reader jumps to the next block the
//! footer lists or scans for the next block magic, and counts what it skipped in
//! [`ReadStats`]. Errors are reserved for files that are not tapes, versions this build
//! cannot read, and I/O failures. Every step moves forward, so no input can make it loop.
//!
//! Readers that share a [`SeenBlocks`] read a block stored twice once: the archiver
//! acknowledges a block after it is on disk, so one that crashes in between writes the
//! block again when the stream hands it back (at-least-once on disk, once as read).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::Digest as _;

use crate::codec;
use crate::error::TapeError;
use crate::exchange::Exchange;
use crate::tape::format::*;

/// How many problem descriptions a reader keeps (the counters keep counting).
const MAX_PROBLEMS: usize = 16;
const SCAN_CHUNK: usize = 64 << 10;

/// What a reader found in a segment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Size of the file when it was opened.
    pub file_len: u64,
    /// Intact blocks read.
    pub blocks: u64,
    /// Records returned.
    pub records: u64,
    /// Uncompressed bytes of the intact blocks.
    pub raw_bytes: u64,
    /// File bytes that could not be read as records (damage, torn tail).
    pub bytes_skipped: u64,
    /// Separate damaged regions found.
    pub corrupt_regions: u64,
    /// Records lost inside otherwise intact blocks.
    pub corrupt_records: u64,
    /// The file ends in a damaged or unfinished region (no footer): it was not closed.
    pub torn_tail: bool,
    /// Intact blocks skipped because a reader sharing this one's [`SeenBlocks`] had read
    /// the same bytes already (stored twice; not damage).
    pub duplicate_blocks: u64,
    /// Records in those blocks.
    pub duplicate_records: u64,
    /// The file has a valid footer index (it was closed cleanly).
    pub has_footer: bool,
    /// The segment header was damaged; records were recovered without it.
    pub header_damaged: bool,
    /// The first few problems, each with its file offset.
    pub problems: Vec<String>,
}

impl ReadStats {
    /// True when nothing was skipped or lost.
    pub fn is_clean(&self) -> bool {
        self.bytes_skipped == 0 && self.corrupt_records == 0 && !self.header_damaged
    }

    fn problem(&mut self, msg: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(msg);
        }
    }
}

/// How many blocks a [`SeenBlocks`] remembers. A block and its second copy cover the same
/// requests, so a reader merging by time meets them close together.
const BLOCKS_REMEMBERED: usize = 1 << 16;

/// The blocks that readers sharing this have read, by a digest of their compressed bytes
/// (SHA-256, 128 bits kept: two different blocks never meet by chance). The last
/// [`BLOCKS_REMEMBERED`] are kept.
#[derive(Clone, Default)]
pub struct SeenBlocks(Arc<Mutex<SeenInner>>);

#[derive(Default)]
struct SeenInner {
    set: std::collections::HashSet<u128>,
    order: std::collections::VecDeque<u128>,
}

impl SeenBlocks {
    /// True the first time these compressed bytes are offered.
    fn first_time(&self, payload: &[u8]) -> bool {
        let digest = sha2::Sha256::digest(payload);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let key = u128::from_le_bytes(key);
        let mut inner = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !inner.set.insert(key) {
            return false;
        }
        inner.order.push_back(key);
        if inner.order.len() > BLOCKS_REMEMBERED {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
        true
    }
}

/// Streams the exchanges of one segment in file order.
pub struct SegmentReader<R = BufReader<File>> {
    src: R,
    path: PathBuf,
    header: SegmentHeader,
    footer: Option<Footer>,
    /// Offset of the next block to read.
    pos: u64,
    /// Where block data ends: the footer's offset, or the file length.
    end: u64,
    block: Vec<u8>,
    cursor: usize,
    remaining: u32,
    block_offset: u64,
    payload: Vec<u8>,
    decompressor: zstd::bulk::Decompressor<'static>,
    stats: ReadStats,
    in_damage: bool,
    max_lateness_seen: u64,
    done: bool,
    seen: Option<SeenBlocks>,
}

impl SegmentReader<BufReader<File>> {
    /// Opens a segment file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TapeError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| TapeError::io(path, "opening tape", e))?;
        SegmentReader::new(BufReader::with_capacity(256 << 10, file), path)
    }
}

impl<R: Read + Seek> SegmentReader<R> {
    /// Reads the header (and footer, if present) of a segment from `src`; `path` is used
    /// in messages.
    pub fn new(mut src: R, path: impl Into<PathBuf>) -> Result<Self, TapeError> {
        let path = path.into();
        let file_len = src.seek(SeekFrom::End(0)).map_err(|e| TapeError::io(&path, "reading tape", e))?;
        src.seek(SeekFrom::Start(0)).map_err(|e| TapeError::io(&path, "reading tape", e))?;
        let mut preamble = [0u8; PREAMBLE_LEN];
        let got = read_up_to(&mut src, &mut preamble).map_err(|e| TapeError::io(&path, "reading tape header", e))?;
        if got < MAGIC.len() || &preamble[..MAGIC.len()] != MAGIC {
            let hint = sniff(&preamble[..got], got as u64 == file_len);
            return Err(TapeError::NotATape { path, hint });
        }
        let mut stats = ReadStats { file_len, ..Default::default() };
        let version = u16::from_le_bytes([preamble[8], preamble[9]]);
        if got >= 10 && version != FORMAT_VERSION {
            let advice = if version > FORMAT_VERSION {
                "upgrade tapedeck to read it"
            } else {
                "convert it with the tapedeck release that wrote it (tapedeck export --to jsonl)"
            };
            return Err(TapeError::UnsupportedVersion { path, found: version, supported: FORMAT_VERSION, advice });
        }
        let codec_id = preamble[10];
        if got > 10 && codec_id != CODEC_BINCODE2_ZSTD && codec_id != CODEC_BINCODE2_ZSTD_EXT {
            return Err(TapeError::UnsupportedCodec { path, codec: codec_id });
        }
        if got < PREAMBLE_LEN {
            stats.header_damaged = true;
            stats.torn_tail = true;
            stats.bytes_skipped = file_len;
            stats.problem("file ends inside the segment header".into());
            let header = SegmentHeader { format_version: FORMAT_VERSION, ..Default::default() };
            return Self::assemble(src, path, header, None, file_len, file_len, stats, false);
        }
        let header_len = u32::from_le_bytes([preamble[12], preamble[13], preamble[14], preamble[15]]);
        let header_crc = u32::from_le_bytes([preamble[16], preamble[17], preamble[18], preamble[19]]);
        let header_end = PREAMBLE_LEN as u64 + u64::from(header_len);
        let mut header = None;
        if header_len <= MAX_META_LEN && header_end <= file_len {
            let mut buf = vec![0u8; header_len as usize];
            src.read_exact(&mut buf).map_err(|e| TapeError::io(&path, "reading tape header", e))?;
            if crc32fast::hash(&buf) == header_crc {
                header = codec::decode_header(&buf).ok();
            }
        }
        let (header, pos, damaged) = match header {
            Some(h) => (SegmentHeader { format_version: version, codec: codec_id, ..h }, header_end, false),
            None => {
                stats.header_damaged = true;
                stats
                    .problem(format!("offset {PREAMBLE_LEN}: segment header is damaged; recovering blocks without it"));
                let h = SegmentHeader { format_version: version, codec: codec_id, ..Default::default() };
                (h, PREAMBLE_LEN as u64, true)
            }
        };
        let footer = read_footer(&mut src, pos, file_len).map_err(|e| TapeError::io(&path, "reading footer", e))?;
        let end = footer.as_ref().map_or(file_len, |(off, _)| *off);
        stats.has_footer = footer.is_some();
        Self::assemble(src, path, header, footer.map(|(_, f)| f), pos, end, stats, damaged)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        src: R,
        path: PathBuf,
        header: SegmentHeader,
        footer: Option<Footer>,
        pos: u64,
        end: u64,
        stats: ReadStats,
        header_damaged: bool,
    ) -> Result<Self, TapeError> {
        let decompressor = zstd::bulk::Decompressor::new().map_err(|e| TapeError::io(&path, "initialising zstd", e))?;
        let mut reader = SegmentReader {
            src,
            path,
            header,
            footer,
            pos,
            end,
            block: Vec::new(),
            cursor: 0,
            remaining: 0,
            block_offset: 0,
            payload: Vec::new(),
            decompressor,
            stats,
            in_damage: false,
            max_lateness_seen: 0,
            done: pos >= end,
            seen: None,
        };
        if header_damaged && !reader.done {
            // Without a trustworthy header length, find the first block by its magic.
            reader.in_damage = true;
            reader.stats.corrupt_regions += 1;
            let next = reader.scan_for_magic(pos)?;
            reader.jump(pos, next);
        }
        Ok(reader)
    }

    /// Skips blocks that a reader sharing `seen` has read already (counted in
    /// [`ReadStats::duplicate_blocks`]).
    pub fn skipping_seen(mut self, seen: SeenBlocks) -> Self {
        self.seen = Some(seen);
        self
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The segment header (defaults if it was damaged).
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The footer index, if the segment was closed cleanly.
    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    /// What has been read and skipped so far (complete once the reader is exhausted).
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// The largest record lateness of any block read so far (see [`BlockIndex`]).
    pub fn max_lateness_seen(&self) -> u64 {
        self.max_lateness_seen
    }

    /// The next exchange in file order; `Ok(None)` at the end. Damage is skipped and
    /// counted; only I/O errors are returned.
    pub fn next_exchange(&mut self) -> Result<Option<Exchange>, TapeError> {
        loop {
            if self.remaining > 0 {
                match codec::decode_record(&self.block[self.cursor..]) {
                    Ok((exchange, used)) => {
                        self.cursor += used;
                        self.remaining -= 1;
                        self.stats.records += 1;
                        return Ok(Some(exchange));
                    }
                    Err(e) => {
                        self.stats.corrupt_records += u64::from(self.remaining);
                        let msg = format!(
                            "offset {}: block holds {} undecodable record(s): {e}",
                            self.block_offset, self.remaining
                        );
                        self.stats.problem(msg);
                        self.remaining = 0;
                    }
                }
            }
            if self.done {
                return Ok(None);
            }
            self.read_block()?;
        }
    }

    /// Reads the block at `self.pos` into `self.block`, or skips damage.
    fn read_block(&mut self) -> Result<(), TapeError> {
        let at = self.pos;
        if at >= self.end {
            self.done = true;
            return Ok(());
        }
        let mut raw_header = [0u8; BLOCK_HEADER_LEN];
        self.seek(at)?;
        let available = (self.end - at).min(BLOCK_HEADER_LEN as u64) as usize;
        let got =
            read_up_to(&mut self.src, &mut raw_header[..available]).map_err(|e| self.io_err("reading block", e))?;
        if got < BLOCK_HEADER_LEN {
            return self.skip_to_end(at, "block header cut short (torn tail)");
        }
        let Some(header) = BlockHeader::parse(&raw_header) else {
            let what = if &raw_header[..4] == FOOTER_MAGIC { "unreadable footer" } else { "no block magic" };
            return self.damaged(at, what);
        };
        if !header.is_plausible() {
            return self.damaged(at, "block lengths out of range");
        }
        let block_end = at + BLOCK_HEADER_LEN as u64 + u64::from(header.payload_len);
        if block_end > self.end {
            return self.damaged(at, "block runs past the end of the file (torn tail)");
        }
        self.payload.clear();
        self.payload.resize(header.payload_len as usize, 0);
        self.src.read_exact(&mut self.payload).map_err(|e| self.io_err("reading block", e))?;
        if header.compute_crc(&self.payload) != header.crc {
            return self.damaged(at, "block checksum mismatch");
        }
        if self.seen.as_ref().is_some_and(|seen| !seen.first_time(&self.payload)) {
            self.in_damage = false;
            self.stats.duplicate_blocks += 1;
            self.stats.duplicate_records += u64::from(header.records);
            self.pos = block_end;
            return Ok(());
        }
        self.block.clear();
        self.block.reserve(header.raw_len as usize);
        let decompressed = self.decompressor.decompress_to_buffer(&self.payload[..], &mut self.block);
        if !matches!(decompressed, Ok(n) if n == header.raw_len as usize) {
            // The CRC matched, so the boundaries are right: skip just this block.
            self.note_damage(at, "block does not decompress");
            self.stats.bytes_skipped += block_end - at;
            self.pos = block_end;
            return Ok(());
        }
        self.in_damage = false;
        self.stats.blocks += 1;
        self.stats.raw_bytes += u64::from(header.raw_len);
        self.max_lateness_seen = self.max_lateness_seen.max(header.max_lateness_ns);
        self.cursor = 0;
        self.remaining = header.records;
        self.block_offset = at;
        self.pos = block_end;
        Ok(())
    }

    fn note_damage(&mut self, at: u64, what: &str) {
        if !self.in_damage {
            self.stats.corrupt_regions += 1;
            self.stats.problem(format!("offset {at}: {what}"));
        }
    }

    /// Damage at `at`: record it and continue at the next plausible block.
    fn damaged(&mut self, at: u64, what: &str) -> Result<(), TapeError> {
        self.note_damage(at, what);
        self.in_damage = true;
        self.resync(at)
    }

    fn skip_to_end(&mut self, at: u64, what: &str) -> Result<(), TapeError> {
        self.note_damage(at, what);
        self.jump(at, None);
        Ok(())
    }

    /// Moves `pos` to the next candidate block after `at`: the next block the footer lists,
    /// or the next `TBLK` magic in the file. Counts the bytes in between as skipped.
    fn resync(&mut self, at: u64) -> Result<(), TapeError> {
        let from_footer =
            self.footer.as_ref().and_then(|f| f.blocks.iter().map(|b| b.offset).find(|&o| o > at && o < self.end));
        let next = match from_footer {
            Some(o) => Some(o),
            None => self.scan_for_magic(at + 1)?,
        };
        self.jump(at, next);
        Ok(())
    }

    /// Skips from `at` to `next` (or to the end when there is no next block).
    fn jump(&mut self, at: u64, next: Option<u64>) {
        match next {
            Some(next) => {
                self.stats.bytes_skipped += next - at;
                self.pos = next;
            }
            None => {
                self.stats.bytes_skipped += self.end.saturating_sub(at);
                self.stats.torn_tail = self.footer.is_none();
                self.pos = self.end;
                self.done = true;
            }
        }
    }

    fn scan_for_magic(&mut self, from: u64) -> Result<Option<u64>, TapeError> {
        let mut chunk = vec![0u8; SCAN_CHUNK];
        let mut offset = from;
        while offset < self.end {
            self.seek(offset)?;
            let want = ((self.end - offset) as usize).min(SCAN_CHUNK);
            let got =
                read_up_to(&mut self.src, &mut chunk[..want]).map_err(|e| self.io_err("scanning for blocks", e))?;
            if got < BLOCK_MAGIC.len() {
                return Ok(None);
            }
            if let Some(i) = chunk[..got].windows(BLOCK_MAGIC.len()).position(|w| w == BLOCK_MAGIC) {
                return Ok(Some(offset + i as u64));
            }
            // Overlap by three bytes so a magic split across chunks is still found.
            offset += (got - (BLOCK_MAGIC.len() - 1)) as u64;
        }
        Ok(None)
    }

    fn seek(&mut self, to: u64) -> Result<(), TapeError> {
        self.src.seek(SeekFrom::Start(to)).map(drop).map_err(|e| self.io_err("seeking", e))
    }

    fn io_err(&self, action: &'static str, e: io::Error) -> TapeError {
        TapeError::io(&self.path, action, e)
    }
}

impl<R: Read + Seek> Iterator for SegmentReader<R> {
    type Item = Result<Exchange, TapeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_exchange() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}

/// Reads the trailer and footer if they are intact; returns the footer's offset and the
/// footer. Anything inconsistent means "no footer" and the blocks are read without it.
fn read_footer<R: Read + Seek>(src: &mut R, data_start: u64, file_len: u64) -> io::Result<Option<(u64, Footer)>> {
    let min_len = data_start + (FOOTER_HEADER_LEN + TRAILER_LEN) as u64;
    if file_len < min_len {
        return Ok(None);
    }
    let mut trailer = [0u8; TRAILER_LEN];
    src.seek(SeekFrom::Start(file_len - TRAILER_LEN as u64))?;
    src.read_exact(&mut trailer)?;
    if &trailer[8..] != TRAILER_MAGIC {
        return Ok(None);
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&trailer[..8]);
    let footer_offset = u64::from_le_bytes(off);
    if footer_offset < data_start || footer_offset > file_len - (FOOTER_HEADER_LEN + TRAILER_LEN) as u64 {
        return Ok(None);
    }
    let mut head = [0u8; FOOTER_HEADER_LEN];
    src.seek(SeekFrom::Start(footer_offset))?;
    src.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let expected_end = footer_offset + (FOOTER_HEADER_LEN + TRAILER_LEN) as u64 + u64::from(len);
    if &head[..4] != FOOTER_MAGIC || len > MAX_META_LEN || expected_end != file_len {
        return Ok(None);
    }
    let mut body = vec![0u8; len as usize];
    src.read_exact(&mut body)?;
    if crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(codec::decode_footer(&body).ok().map(|f| (footer_offset, f)))
}

/// Reads until `buf` is full or the source ends; returns how much was read.
fn read_up_to<R: Read>(src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A hint for a file that is not a tape, from its first bytes.
fn sniff(start: &[u8], whole_file: bool) -> String {
    let text = String::from_utf8_lossy(start);
    let trimmed = text.trim_start();
    if start.is_empty() && whole_file {
        "; the file is empty (a writer may have crashed before writing its header)".into()
    } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
        "; it looks like JSON: for a HAR or JSON-lines file use `tapedeck import --from har|jsonl`".into()
    } else if matches!(trimmed.as_bytes(), [b'1'..=b'3', b' ', ..]) {
        "; it looks like a GoReplay file: use `tapedeck import --from gor`".into()
    } else {
        String::new()
    }
}
