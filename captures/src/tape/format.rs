//! The `.tape` segment layout: constants, the segment header, block framing and the
//! footer index. Encoding of the structured parts lives in [`crate::codec`].
//!
//! ```text
//! preamble   "TAPEDECK" | version u16 | codec u8 | 0u8 | header_len u32 | header_crc u32
//! header     codec(SegmentHeader)                                   (header_len bytes)
//! block*     "TBLK" | payload_len u32 | raw_len u32 | records u32 | max_lateness_ns u64
//!            | crc32 u32 | payload                                  (payload = zstd(records))
//! records    (len u32 | codec(Exchange))*                           (inside the payload)
//! footer     "TFTR" | len u32 | crc32 u32 | codec(Footer)
//! trailer    footer_offset u64 | "TAPE-END"                         (last 16 bytes)
//! ```
//!
//! All integers are little-endian. A block's CRC covers its header fields after the magic
//! and its payload, so a reader can trust a block's boundaries once the CRC matches and can
//! resynchronise on the next `TBLK` magic after damage. Each block is written with a single
//! `write` call, so a crash tears at most the block being written. A segment without a
//! trailer (crash, `kill -9`, full disk) is still readable block by block.

use bincode::{Decode, Encode};
use serde::Serialize;

/// File magic at offset 0.
pub const MAGIC: &[u8; 8] = b"TAPEDECK";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Codec id: records encoded with bincode 2 (standard config), blocks compressed with zstd.
pub const CODEC_BINCODE2_ZSTD: u8 = 1;
/// Codec id: as [`CODEC_BINCODE2_ZSTD`], and a record may end with tagged extensions, each
/// a tag byte and a length-prefixed bincode payload: 1 request trailers, 2 response
/// trailers, 3 request message times, 4 response message times (gRPC), 5 a WebSocket
/// session (see [`Exchange`](crate::Exchange)); readers skip tags they do not know.
/// Written by this build; both are read.
pub const CODEC_BINCODE2_ZSTD_EXT: u8 = 2;
/// Length of the fixed preamble before the header.
pub const PREAMBLE_LEN: usize = 20;
/// Block magic.
pub const BLOCK_MAGIC: &[u8; 4] = b"TBLK";
/// Length of a block header (magic included).
pub const BLOCK_HEADER_LEN: usize = 28;
/// Footer magic.
pub const FOOTER_MAGIC: &[u8; 4] = b"TFTR";
/// Length of the footer's framing (magic, length, crc).
pub const FOOTER_HEADER_LEN: usize = 12;
/// Trailer magic, the last 8 bytes of a closed segment.
pub const TRAILER_MAGIC: &[u8; 8] = b"TAPE-END";
/// Length of the trailer.
pub const TRAILER_LEN: usize = 16;
/// Largest compressed payload a reader accepts for one block.
pub const MAX_BLOCK_PAYLOAD: u32 = 256 << 20;
/// Largest uncompressed block a reader accepts; also the largest single record.
pub const MAX_BLOCK_RAW: u32 = 256 << 20;
/// Largest header or footer a reader accepts.
pub const MAX_META_LEN: u32 = 64 << 20;

/// What produced a tape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum TapeKind {
    /// Recorded by `tapedeck proxy`.
    #[default]
    Capture,
    /// Converted from another format by `tapedeck import`.
    Import,
    /// Responses recorded by `tapedeck replay`.
    Replay,
    /// Rewritten by `tapedeck scrub`.
    Scrubbed,
    /// Written by `tapedeck demo`.
    Demo,
}

impl TapeKind {
    /// The lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            TapeKind::Capture => "capture",
            TapeKind::Import => "import",
            TapeKind::Replay => "replay",
            TapeKind::Scrubbed => "scrubbed",
            TapeKind::Demo => "demo",
        }
    }
}

/// Metadata at the start of every segment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Encode, Decode)]
pub struct SegmentHeader {
    /// Format version (from the preamble).
    pub format_version: u16,
    /// Codec id (from the preamble).
    pub codec: u8,
    /// When this segment file was created, ns since the epoch.
    pub created_unix_ns: i64,
    /// Wall-clock start of the writer's clock (shared by all its segments).
    pub tape_start_unix_ns: i64,
    /// The program that wrote it, e.g. `tapedeck 0.1.0`.
    pub producer: String,
    /// Host/instance name of the writer.
    pub instance: String,
    /// Sequence number of this segment within its writer, from 1.
    pub segment_seq: u32,
    /// What produced the tape.
    pub kind: TapeKind,
    /// Fingerprint of the scrub policy (and key) the records went through, if any.
    pub scrub_fingerprint: Option<String>,
    /// Free-form labels, e.g. `upstream=http://127.0.0.1:3000`.
    pub labels: Vec<(String, String)>,
}

impl SegmentHeader {
    /// The value of label `key` (`service`, `role`, `upstream`…), if the writer set it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// True for a segment recorded in front of a dependency (`proxy --role dependency`):
    /// a service's outbound calls, answered by `tapedeck mock`, not traffic to replay
    /// against the service.
    pub fn is_dependency(&self) -> bool {
        self.label("role") == Some("dependency")
    }
}

/// Per-block facts kept in the footer index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Encode, Decode)]
pub struct BlockIndex {
    /// File offset of the block header.
    pub offset: u64,
    /// Compressed payload length.
    pub payload_len: u32,
    /// Uncompressed length of the records.
    pub raw_len: u32,
    /// Number of records.
    pub records: u32,
    /// Earliest request start in the block, ns since the epoch.
    pub min_start_ns: i64,
    /// Latest request start in the block, ns since the epoch.
    pub max_start_ns: i64,
    /// How far behind the running maximum start a record of this block may be (ns).
    pub max_lateness_ns: u64,
}

/// The index at the end of a closed segment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Encode, Decode)]
pub struct Footer {
    /// Every block in file order.
    pub blocks: Vec<BlockIndex>,
    /// When the segment was closed, ns since the epoch.
    pub closed_unix_ns: i64,
}

impl Footer {
    /// Total records in the segment.
    pub fn records(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.records)).sum()
    }

    /// Total uncompressed bytes of records.
    pub fn raw_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.raw_len)).sum()
    }

    /// Earliest and latest request start, if the segment holds any record.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self.blocks.iter().filter(|b| b.records > 0).map(|b| b.min_start_ns).min()?;
        let max = self.blocks.iter().filter(|b| b.records > 0).map(|b| b.max_start_ns).max()?;
        Some((min, max))
    }

    /// The largest lateness of any block: the reorder window that puts this segment's
    /// records in exact start order.
    pub fn max_lateness_ns(&self) -> u64 {
        self.blocks.iter().map(|b| b.max_lateness_ns).max().unwrap_or(0)
    }
}

/// The fixed fields of a block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Compressed payload length.
    pub payload_len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
    /// Number of records.
    pub records: u32,
    /// Largest lateness of a record in this block, ns.
    pub max_lateness_ns: u64,
    /// CRC-32 of the header fields after the magic and of the payload.
    pub crc: u32,
}

impl BlockHeader {
    /// Builds a header for `payload`, computing its CRC.
    pub fn for_payload(payload: &[u8], raw_len: u32, records: u32, max_lateness_ns: u64) -> Self {
        let mut h = BlockHeader { payload_len: payload.len() as u32, raw_len, records, max_lateness_ns, crc: 0 };
        h.crc = h.compute_crc(payload);
        h
    }

    /// Serialises the header.
    pub fn to_bytes(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[0..4].copy_from_slice(BLOCK_MAGIC);
        out[4..24].copy_from_slice(&self.crc_fields());
        out[24..28].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// Parses a header; `None` when the magic is wrong.
    pub fn parse(buf: &[u8; BLOCK_HEADER_LEN]) -> Option<Self> {
        if &buf[0..4] != BLOCK_MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let mut lateness = [0u8; 8];
        lateness.copy_from_slice(&buf[16..24]);
        Some(BlockHeader {
            payload_len: u32_at(4),
            raw_len: u32_at(8),
            records: u32_at(12),
            max_lateness_ns: u64::from_le_bytes(lateness),
            crc: u32_at(24),
        })
    }

    /// True when the lengths are within what a reader accepts.
    pub fn is_plausible(&self) -> bool {
        self.payload_len <= MAX_BLOCK_PAYLOAD && self.raw_len <= MAX_BLOCK_RAW
    }

    /// CRC of the header fields and `payload`.
    pub fn compute_crc(&self, payload: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.crc_fields());
        hasher.update(payload);
        hasher.finalize()
    }

    fn crc_fields(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0..4].copy_from_slice(&self.payload_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.raw_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.records.to_le_bytes());
        out[12..20].copy_from_slice(&self.max_lateness_ns.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_header_round_trips_and_detects_damage() {
        let payload = b"compressed bytes";
        let h = BlockHeader::for_payload(payload, 100, 3, 42);
        let bytes = h.to_bytes();
        let back = BlockHeader::parse(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.compute_crc(payload), back.crc);
        assert_ne!(back.compute_crc(b"compressed bytez"), back.crc);
        let mut bad = bytes;
        bad[0] = b'X';
        assert!(BlockHeader::parse(&bad).is_none());
    }
}
