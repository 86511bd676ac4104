//! One block of records, the unit a tape is written in and a stream sink publishes:
//! records encoded one after another, compressed with zstd, framed by a checksummed
//! [`BlockHeader`]. The same bytes are a block inside a `.tape` segment and one message of
//! a capture stream, so a block read from either decodes the same way.

use std::time::Instant;

use crate::codec;
use crate::exchange::Exchange;
use crate::tape::format::{BlockHeader, BlockIndex, BLOCK_HEADER_LEN, MAX_BLOCK_PAYLOAD, MAX_BLOCK_RAW};

/// Records gathered for the next block.
#[derive(Debug)]
pub struct BlockBuilder {
    pub(crate) raw: Vec<u8>,
    pub(crate) records: u32,
    pub(crate) min_start: i64,
    pub(crate) max_start: i64,
    pub(crate) max_lateness: u64,
    pub(crate) opened: Option<Instant>,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        BlockBuilder::new()
    }
}

impl BlockBuilder {
    /// An empty block.
    pub fn new() -> Self {
        BlockBuilder {
            raw: Vec::new(),
            records: 0,
            min_start: i64::MAX,
            max_start: i64::MIN,
            max_lateness: 0,
            opened: None,
        }
    }

    /// Adds one exchange; `frontier` is the latest request start already written before
    /// this block (for the lateness a reader must allow for), `i64::MIN` if none.
    pub fn push(&mut self, exchange: &Exchange, frontier: i64) -> Result<(), String> {
        codec::encode_record(exchange, &mut self.raw)?;
        let start = exchange.wall_start_ns();
        let frontier = frontier.max(self.max_start);
        if frontier > start {
            self.max_lateness = self.max_lateness.max(frontier.abs_diff(start));
        }
        self.records += 1;
        self.min_start = self.min_start.min(start);
        self.max_start = self.max_start.max(start);
        self.opened.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Records in the block.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Uncompressed bytes of its records.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// When its first record arrived.
    pub fn opened(&self) -> Option<Instant> {
        self.opened
    }

    /// The earliest and latest request start in it (`None` when empty).
    pub fn span(&self) -> Option<(i64, i64)> {
        (self.records > 0).then_some((self.min_start, self.max_start))
    }

    /// True when it holds `max_records` records or `max_bytes` bytes.
    pub fn is_full(&self, max_records: u32, max_bytes: usize) -> bool {
        self.records >= max_records || self.raw.len() >= max_bytes
    }

    /// Compresses the records into `payload` (replacing what it held); returns the block's
    /// header and its index entry (offset 0). The builder keeps its records until
    /// [`reset`](Self::reset).
    pub fn compress(
        &self,
        compressor: &mut zstd::bulk::Compressor<'static>,
        payload: &mut Vec<u8>,
    ) -> std::io::Result<(BlockHeader, BlockIndex)> {
        payload.clear();
        payload.reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        compressor.compress_to_buffer(&self.raw[..], payload)?;
        let raw_len = self.raw.len() as u32;
        let header = BlockHeader::for_payload(payload, raw_len, self.records, self.max_lateness);
        let index = BlockIndex {
            offset: 0,
            payload_len: header.payload_len,
            raw_len,
            records: self.records,
            min_start_ns: self.min_start,
            max_start_ns: self.max_start,
            max_lateness_ns: self.max_lateness,
        };
        Ok((header, index))
    }

    /// The block as it is written: header and compressed payload, in `out` (replacing
    /// what it held). The builder keeps its records until [`reset`](Self::reset).
    pub fn frame(
        &self,
        compressor: &mut zstd::bulk::Compressor<'static>,
        out: &mut Vec<u8>,
    ) -> std::io::Result<BlockIndex> {
        let mut payload = Vec::new();
        let (header, index) = self.compress(compressor, &mut payload)?;
        out.clear();
        out.reserve(BLOCK_HEADER_LEN + payload.len());
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(&payload);
        Ok(index)
    }

    /// Empties the block for the next records.
    pub fn reset(&mut self) {
        self.raw.clear();
        self.records = 0;
        self.min_start = i64::MAX;
        self.max_start = i64::MIN;
        self.max_lateness = 0;
        self.opened = None;
    }
}

/// Why a framed block cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Too short, no block magic, or lengths out of range.
    #[error("not a tapedeck block ({0})")]
    Framing(&'static str),
    /// The checksum does not match: the bytes were damaged.
    #[error("block checksum mismatch")]
    Checksum,
    /// The payload does not decompress to its announced length.
    #[error("block does not decompress")]
    Compression,
    /// A record does not decode.
    #[error("record {index} of {records} does not decode: {why}")]
    Record {
        /// Which record, from 0.
        index: u32,
        /// Records the block holds.
        records: u32,
        /// Why.
        why: String,
    },
}

/// The header of a framed block (as [`BlockBuilder::frame`] makes it), its lengths and
/// checksum verified; the payload is not decompressed.
pub fn check_framed(framed: &[u8]) -> Result<BlockHeader, BlockError> {
    let head: &[u8; BLOCK_HEADER_LEN] =
        framed.get(..BLOCK_HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(BlockError::Framing("too short"))?;
    let header = BlockHeader::parse(head).ok_or(BlockError::Framing("no block magic"))?;
    if !header.is_plausible() || header.payload_len > MAX_BLOCK_PAYLOAD || header.raw_len > MAX_BLOCK_RAW {
        return Err(BlockError::Framing("lengths out of range"));
    }
    let payload = &framed[BLOCK_HEADER_LEN..];
    if payload.len() != header.payload_len as usize {
        return Err(BlockError::Framing("payload length does not match its header"));
    }
    if header.compute_crc(payload) != header.crc {
        return Err(BlockError::Checksum);
    }
    Ok(header)
}

/// The exchanges of one framed block (as [`BlockBuilder::frame`] makes it), checked
/// against its checksum.
pub fn decode_framed(
    framed: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<(BlockHeader, Vec<Exchange>), BlockError> {
    let header = check_framed(framed)?;
    let payload = &framed[BLOCK_HEADER_LEN..];
    let mut raw = Vec::with_capacity(header.raw_len as usize);
    match decompressor.decompress_to_buffer(payload, &mut raw) {
        Ok(n) if n == header.raw_len as usize => {}
        _ => return Err(BlockError::Compression),
    }
    decode_records(&header, &raw).map(|exchanges| (header, exchanges))
}

fn decode_records(header: &BlockHeader, raw: &[u8]) -> Result<Vec<Exchange>, BlockError> {
    let mut exchanges = Vec::with_capacity(header.records.min(1 << 16) as usize);
    let mut at = 0;
    for index in 0..header.records {
        let (ex, used) = codec::decode_record(&raw[at..]).map_err(|e| BlockError::Record {
            index,
            records: header.records,
            why: e.to_string(),
        })?;
        at += used;
        exchanges.push(ex);
    }
    Ok(exchanges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Synth, SynthConfig};

    #[test]
    fn a_framed_block_decodes_to_its_exchanges_and_damage_is_caught() {
        let exchanges: Vec<Exchange> = Synth::new(SynthConfig { count: 50, ..Default::default() }).collect();
        let mut b = BlockBuilder::new();
        for ex in &exchanges {
            b.push(ex, i64::MIN).unwrap();
        }
        assert_eq!(b.records(), 50);
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        let mut decompressor = zstd::bulk::Decompressor::new().unwrap();
        let mut framed = Vec::new();
        let index = b.frame(&mut compressor, &mut framed).unwrap();
        assert_eq!(index.records, 50);
        let (header, back) = decode_framed(&framed, &mut decompressor).unwrap();
        assert_eq!(header.records, 50);
        assert_eq!(back, exchanges);
        // Damage anywhere is caught, never decoded into wrong exchanges.
        for at in [0, 10, BLOCK_HEADER_LEN + 3, framed.len() - 1] {
            let mut bad = framed.clone();
            bad[at] ^= 0x40;
            assert!(decode_framed(&bad, &mut decompressor).is_err(), "flipped byte {at}");
        }
        assert!(decode_framed(&framed[..framed.len() - 1], &mut decompressor).is_err());
        assert!(decode_framed(b"TBLK", &mut decompressor).is_err());
    }

    #[test]
    fn framed_blocks_of_two_producers_interleaved_read_back_in_start_order() {
        let all: Vec<Exchange> = Synth::new(SynthConfig { count: 400, ..Default::default() }).collect();
        // Two producers take turns; their blocks overlap in time and arrive one after the
        // other, as on a stream.
        let (a, b): (Vec<_>, Vec<_>) = all.iter().cloned().enumerate().partition(|(i, _)| i % 2 == 0);
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        let mut blocks = Vec::new();
        for producer in [a, b] {
            for chunk in producer.chunks(50) {
                let mut builder = BlockBuilder::new();
                for (_, ex) in chunk {
                    builder.push(ex, i64::MIN).unwrap();
                }
                let mut framed = Vec::new();
                let index = builder.frame(&mut compressor, &mut framed).unwrap();
                blocks.push((framed, index.min_start_ns, index.max_start_ns));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut w = crate::tape::TapeWriter::new(crate::tape::WriterConfig::new(dir.path())).unwrap();
        // A's blocks then B's: B's requests start before A's last ones.
        for (framed, first, last) in &blocks {
            w.append_framed(framed, *first, *last).unwrap();
        }
        let mut damaged = blocks[0].0.clone();
        let at = damaged.len() - 3;
        damaged[at] ^= 1;
        assert!(w.append_framed(&damaged, blocks[0].1, blocks[0].2).is_err(), "a damaged block is refused");
        w.finish().unwrap();
        let back: Vec<Exchange> = crate::tape::TapeReader::open(&[dir.path()]).unwrap().collect();
        let mut want = all.clone();
        want.sort_by_key(|e| e.wall_start_ns());
        assert_eq!(back.len(), 400);
        assert!(back.windows(2).all(|w| w[0].wall_start_ns() <= w[1].wall_start_ns()), "in start order");
        let ids = |v: &[Exchange]| {
            let mut ids: Vec<u64> = v.iter().map(|e| e.id.0).collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(ids(&back), ids(&want));
    }
}
