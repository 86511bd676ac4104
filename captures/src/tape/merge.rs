//! Reading many segments as one stream in request-start order.
//!
//! Exchanges are written when they *complete*, so within a segment a long request lands
//! after shorter ones that started later. The writer records, per block, how far behind
//! the running maximum start any record is (its lateness). [`Ordered`] holds back records
//! for exactly that window — the footer's maximum when the segment was closed, otherwise
//! the largest seen so far — so memory follows the longest request, not the file.
//! [`TapeReader`] then merges the ordered segments with a heap, opening segments lazily in
//! order of their first request so a directory of thousands of segments keeps few open.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::TapeError;
use crate::exchange::Exchange;
use crate::tape::format::SegmentHeader;
use crate::tape::reader::{ReadStats, SeenBlocks, SegmentReader};

/// Records an [`Ordered`] stream holds back at most, whatever the window says.
const MAX_HELD: usize = 100_000;
/// A segment without a footer may hold requests that started this long before it was
/// created (a request in flight across rotation).
const UNCLOSED_SLACK_NS: i64 = 60_000_000_000;

/// An exchange waiting in a heap, ordered by request start, then by `tie` (the order it
/// was read in, or its segment's index): equal starts keep a stable order.
struct ByStart {
    start: i64,
    tie: u64,
    exchange: Exchange,
}

impl PartialEq for ByStart {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ByStart {}
impl PartialOrd for ByStart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByStart {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.start, self.tie).cmp(&(other.start, other.tie))
    }
}

/// One segment's exchanges in start order (see the module docs).
pub struct Ordered<R = BufReader<File>> {
    reader: SegmentReader<R>,
    held: BinaryHeap<Reverse<ByStart>>,
    seq: u64,
    frontier: i64,
    fixed_window: Option<u64>,
    last_emitted: i64,
    out_of_order: u64,
    exhausted: bool,
}

impl<R: Read + Seek> Ordered<R> {
    /// Orders the records of `reader`.
    pub fn new(reader: SegmentReader<R>) -> Self {
        let fixed_window = reader.footer().map(|f| f.max_lateness_ns());
        Ordered {
            reader,
            held: BinaryHeap::new(),
            seq: 0,
            frontier: i64::MIN,
            fixed_window,
            last_emitted: i64::MIN,
            out_of_order: 0,
            exhausted: false,
        }
    }

    /// The underlying reader (header, footer, stats).
    pub fn reader(&self) -> &SegmentReader<R> {
        &self.reader
    }

    /// Records emitted after a record that started later (lateness beyond the window,
    /// which only happens in segments without a footer).
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    fn window(&self) -> u64 {
        self.fixed_window.unwrap_or_else(|| self.reader.max_lateness_seen())
    }

    /// The next exchange in start order.
    pub fn next_exchange(&mut self) -> Result<Option<Exchange>, TapeError> {
        loop {
            if let Some(Reverse(top)) = self.held.peek() {
                let released =
                    top.start.saturating_add(i64::try_from(self.window()).unwrap_or(i64::MAX)) <= self.frontier;
                if self.exhausted || released || self.held.len() > MAX_HELD {
                    let Some(Reverse(h)) = self.held.pop() else { break };
                    if h.start < self.last_emitted {
                        self.out_of_order += 1;
                    }
                    self.last_emitted = self.last_emitted.max(h.start);
                    return Ok(Some(h.exchange));
                }
            } else if self.exhausted {
                return Ok(None);
            }
            match self.reader.next_exchange() {
                Ok(Some(exchange)) => {
                    let start = exchange.wall_start_ns();
                    self.frontier = self.frontier.max(start);
                    self.seq += 1;
                    self.held.push(Reverse(ByStart { start, tie: self.seq, exchange }));
                }
                Ok(None) => self.exhausted = true,
                Err(e) => {
                    self.exhausted = true;
                    return Err(e);
                }
            }
        }
        Ok(None)
    }
}

/// What happened to one segment of a [`TapeReader`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Its header, if it could be opened.
    pub header: Option<SegmentHeader>,
    /// What was read and skipped.
    pub stats: ReadStats,
    /// Records delivered out of start order.
    pub out_of_order: u64,
    /// Why the segment could not be (fully) read, if it could not.
    pub error: Option<String>,
    /// Records the footer counts, for closed segments.
    pub footer_records: Option<u64>,
}

struct Pending {
    path: PathBuf,
    index: usize,
    /// Earliest time a request in this segment may have started.
    earliest: i64,
}

/// Reads any number of segments as one stream ordered by request start (wall clock).
///
/// Segments that cannot be opened or are damaged do not stop the stream: they are
/// described in [`reports`](Self::reports), and the caller decides whether to warn or fail.
/// A block stored twice (an archiver restarted between writing and acknowledging it) is
/// read once and counted in its segment's [`ReadStats::duplicate_blocks`].
pub struct TapeReader {
    pending: Vec<Pending>,
    open: Vec<Option<Ordered>>,
    heads: BinaryHeap<Reverse<ByStart>>,
    reports: Vec<SegmentReport>,
    skipped: Vec<crate::tape::SkippedResults>,
    /// A block stored twice (in one segment or two) is read once.
    seen: SeenBlocks,
}

impl TapeReader {
    /// Prepares to read `segments` (files, as found by [`discover`](crate::tape::discover)).
    /// Reads each header and footer now to learn its time range; keeps none open.
    pub fn new(segments: Vec<PathBuf>) -> Self {
        let mut pending = Vec::with_capacity(segments.len());
        let mut reports = Vec::with_capacity(segments.len());
        for (index, path) in segments.into_iter().enumerate() {
            let mut report = SegmentReport { path: path.clone(), ..Default::default() };
            match SegmentReader::open(&path) {
                Ok(reader) => {
                    let earliest = match reader.footer().and_then(|f| f.time_range()) {
                        Some((min, _)) => min,
                        None if reader.stats().header_damaged => i64::MIN,
                        None => reader.header().created_unix_ns.saturating_sub(UNCLOSED_SLACK_NS),
                    };
                    report.header = Some(reader.header().clone());
                    report.footer_records = reader.footer().map(|f| f.records());
                    pending.push(Pending { path, index, earliest });
                }
                Err(e) => report.error = Some(e.to_string()),
            }
            reports.push(report);
        }
        // Latest first, so the next segment to open is at the end.
        pending.sort_by_key(|p| Reverse((p.earliest, p.index)));
        let open = (0..reports.len()).map(|_| None).collect();
        TapeReader {
            pending,
            open,
            heads: BinaryHeap::new(),
            reports,
            skipped: Vec::new(),
            seen: SeenBlocks::default(),
        }
    }

    /// Discovers the segments under `paths` (recordings only, where a directory also
    /// holds replay results: [`discover_recordings`](crate::tape::discover_recordings))
    /// and prepares to read them.
    pub fn open(paths: &[impl AsRef<Path>]) -> Result<Self, TapeError> {
        let (segments, skipped) = crate::tape::discover_recordings(paths)?;
        Ok(TapeReader { skipped, ..TapeReader::new(segments) })
    }

    /// [`open`](Self::open), without the segments recorded in front of dependencies
    /// ([`split_dependencies`](crate::tape::split_dependencies)); also returns those.
    pub fn open_traffic(paths: &[impl AsRef<Path>], mocked: &[String]) -> Result<(Self, Vec<PathBuf>), TapeError> {
        let (segments, skipped) = crate::tape::discover_recordings(paths)?;
        let (traffic, dependencies) = crate::tape::split_dependencies(segments, mocked);
        Ok((TapeReader { skipped, ..TapeReader::new(traffic) }, dependencies))
    }

    /// Replay results left out of directories that also hold recordings.
    pub fn skipped_results(&self) -> &[crate::tape::SkippedResults] {
        &self.skipped
    }

    /// Per-segment reports. Complete once the stream is exhausted.
    pub fn reports(&self) -> &[SegmentReport] {
        &self.reports
    }

    /// Number of segments that could be opened.
    pub fn readable_segments(&self) -> usize {
        self.reports.iter().filter(|r| r.header.is_some()).count()
    }

    /// The next exchange and the index (into [`reports`](Self::reports)) of its segment.
    pub fn next_with_segment(&mut self) -> Option<(usize, Exchange)> {
        loop {
            let threshold = self.heads.peek().map_or(i64::MAX, |Reverse(h)| h.start);
            match self.pending.last() {
                Some(p) if self.heads.is_empty() || p.earliest <= threshold => {
                    let Some(p) = self.pending.pop() else { continue };
                    self.activate(p);
                }
                _ => break,
            }
        }
        let Reverse(head) = self.heads.pop()?;
        let index = head.tie as usize;
        self.advance(index);
        Some((index, head.exchange))
    }

    fn activate(&mut self, p: Pending) {
        match SegmentReader::open(&p.path) {
            Ok(reader) => {
                self.open[p.index] = Some(Ordered::new(reader.skipping_seen(self.seen.clone())));
                self.advance(p.index);
            }
            Err(e) => self.reports[p.index].error = Some(e.to_string()),
        }
    }

    /// Pulls the next exchange of segment `index` into the heap, or retires the segment.
    fn advance(&mut self, index: usize) {
        let Some(ordered) = self.open[index].as_mut() else { return };
        let outcome = ordered.next_exchange();
        match outcome {
            Ok(Some(exchange)) => {
                self.heads.push(Reverse(ByStart { start: exchange.wall_start_ns(), tie: index as u64, exchange }));
                return;
            }
            Ok(None) => {}
            Err(e) => self.reports[index].error = Some(e.to_string()),
        }
        if let Some(done) = self.open[index].take() {
            let report = &mut self.reports[index];
            report.stats = done.reader().stats().clone();
            report.out_of_order = done.out_of_order();
        }
    }
}

impl Iterator for TapeReader {
    type Item = Exchange;
    fn next(&mut self) -> Option<Exchange> {
        self.next_with_segment().map(|(_, e)| e)
    }
}
