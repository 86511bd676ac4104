//! The `.tape` format end to end on real files: round trips, rotation, permissions,
//! crash recovery, damage, version errors and time-ordered merging.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::{SegmentReader, TapeReader, TapeWriter, WriterConfig};
use tapedeck_captures::*;

fn config(dir: &Path) -> WriterConfig {
    let mut c = WriterConfig::new(dir);
    c.instance = "test-host".into();
    c.block_max_records = 64;
    c
}

fn synth(count: usize) -> Vec<Exchange> {
    Synth::new(SynthConfig { count, ..Default::default() }).collect()
}

fn write_all(config: WriterConfig, exchanges: &[Exchange]) -> Vec<PathBuf> {
    let mut w = TapeWriter::new(config).unwrap();
    for e in exchanges {
        w.append(e).unwrap();
    }
    w.finish().unwrap()
}

fn read_segment(path: &Path) -> (Vec<Exchange>, tapedeck_captures::tape::ReadStats) {
    let mut r = SegmentReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next_exchange().unwrap() {
        out.push(e);
    }
    (out, r.stats().clone())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn round_trip_preserves_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(1000);
    let segments = write_all(config(dir.path()), &input);
    assert_eq!(segments.len(), 1);
    let (back, stats) = read_segment(&segments[0]);
    assert_eq!(back, input);
    assert!(stats.is_clean() && stats.has_footer && !stats.torn_tail, "{stats:?}");
    assert_eq!(stats.blocks, 1000_u64.div_ceil(64));
}

#[test]
fn segments_are_private_named_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let capture_dir = dir.path().join("captures");
    let segments = write_all(config(&capture_dir), &synth(10));
    let files = files_in(&capture_dir);
    assert_eq!(files, segments, "only finished .tape files remain, no .partial");
    let name = segments[0].file_name().unwrap().to_str().unwrap();
    let re = regex::Regex::new(r"^capture-test-host-\d{8}T\d{6}Z-000001\.tape$").unwrap();
    assert!(re.is_match(name), "{name}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&segments[0]).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&capture_dir).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let reader = SegmentReader::open(&segments[0]).unwrap();
    assert_eq!(reader.header().instance, "test-host");
    assert_eq!(reader.footer().unwrap().records(), 10);
}

#[test]
fn rotates_by_size_and_merges_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.segment_max_bytes = 64 << 10;
    let input = synth(3000);
    let segments = write_all(c, &input);
    assert!(segments.len() >= 3, "expected rotation, got {} segments", segments.len());
    for s in &segments {
        // A segment ends after the block that crossed the limit.
        assert!(fs::metadata(s).unwrap().len() < (64 << 10) * 4);
    }
    let back: Vec<_> = TapeReader::open(&[dir.path()]).unwrap().collect();
    assert_eq!(back, input);
}

#[test]
fn rotates_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.segment_max_age = Duration::from_millis(50);
    c.block_max_age = Duration::from_millis(10);
    let mut w = TapeWriter::new(c).unwrap();
    let input = synth(4);
    w.append(&input[0]).unwrap();
    w.append(&input[1]).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    w.tick().unwrap();
    assert_eq!(w.finished_segments().len(), 1, "the old segment was closed by tick");
    w.append(&input[2]).unwrap();
    w.append(&input[3]).unwrap();
    let segments = w.finish().unwrap();
    assert_eq!(segments.len(), 2);
    let back: Vec<_> = TapeReader::new(segments).collect();
    assert_eq!(back, input);
}

/// A writer that dies without closing (kill -9) leaves a `.partial` whose complete blocks
/// are all readable; a half-written last block is skipped and reported.
#[test]
fn crashed_writer_leaves_a_readable_partial() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(500);
    let mut w = TapeWriter::new(config(dir.path())).unwrap();
    for e in &input {
        w.append(e).unwrap();
    }
    // 500 = 7 full blocks of 64 + 52 pending in memory; die without closing.
    std::mem::forget(w);
    let files = files_in(dir.path());
    assert_eq!(files.len(), 1);
    let partial = &files[0];
    assert!(partial.to_str().unwrap().ends_with(".tape.partial"));
    let (back, stats) = read_segment(partial);
    assert_eq!(back, input[..448], "every complete block is read");
    assert!(!stats.has_footer && stats.is_clean(), "{stats:?}");

    // Tear the last block in half, as a crash mid-write would.
    let len = fs::metadata(partial).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(partial).unwrap();
    f.set_len(len - 300).unwrap();
    let (back, stats) = read_segment(partial);
    assert_eq!(back, input[..384], "all blocks before the torn one");
    assert!(stats.torn_tail);
    assert!(stats.bytes_skipped > 0 && stats.bytes_skipped < len / 7 + 1, "{stats:?}");
    assert_eq!(stats.corrupt_regions, 1);
}

#[test]
fn damage_in_the_middle_costs_one_block() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth(640);
    let segments = write_all(config(dir.path()), &input);
    let path = &segments[0];
    let footer = SegmentReader::open(path).unwrap().footer().unwrap().clone();
    let victim = footer.blocks[4];
    let mut bytes = fs::read(path).unwrap();
    let mid = (victim.offset + 40) as usize;
    bytes[mid..mid + 16].copy_from_slice(b"garbage garbage!");
    fs::write(path, &bytes).unwrap();

    let (back, stats) = read_segment(path);
    let lost = 4 * 64..5 * 64;
    let expected: Vec<_> =
        input.iter().enumerate().filter(|(i, _)| !lost.contains(i)).map(|(_, e)| e.clone()).collect();
    assert_eq!(back, expected);
    assert_eq!(stats.corrupt_regions, 1);
    assert_eq!(stats.bytes_skipped, footer.blocks[5].offset - victim.offset);
    assert!(!stats.torn_tail, "a closed segment with a bad block is not torn");

    // Without the footer (trailer destroyed) the reader finds the next block by scanning.
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(b"XXXXXXXX");
    fs::write(path, &bytes).unwrap();
    let (back2, stats2) = read_segment(path);
    assert_eq!(back2, expected);
    assert!(!stats2.has_footer);
}

#[test]
fn version_and_foreign_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_all(config(dir.path()), &synth(3));
    let mut bytes = fs::read(&segments[0]).unwrap();
    bytes[8..10].copy_from_slice(&7u16.to_le_bytes());
    let future = dir.path().join("future.tape");
    fs::write(&future, &bytes).unwrap();
    let err = SegmentReader::open(&future).err().unwrap().to_string();
    assert!(err.contains("future.tape") && err.contains("version 7") && err.contains("reads version 1"), "{err}");
    assert!(err.contains("upgrade tapedeck"), "{err}");

    let har = dir.path().join("capture.har");
    fs::write(&har, br#"{"log":{"entries":[]}}"#).unwrap();
    let err = SegmentReader::open(&har).err().unwrap().to_string();
    assert!(err.contains("not a tapedeck tape") && err.contains("--from har"), "{err}");

    let empty = dir.path().join("empty.tape.partial");
    fs::write(&empty, b"").unwrap();
    assert!(SegmentReader::open(&empty).err().unwrap().to_string().contains("empty"));

    let nothing = tempfile::tempdir().unwrap();
    let err = TapeReader::open(&[nothing.path()]).err().unwrap().to_string();
    assert!(err.contains("no .tape files"), "{err}");
}

#[test]
fn merge_orders_many_writers_and_reports_bad_segments() {
    let dir = tempfile::tempdir().unwrap();
    let all = synth(2000);
    // Two "proxies" each saw every other request.
    let (a, b): (Vec<_>, Vec<_>) = all.iter().cloned().enumerate().partition(|(i, _)| i % 2 == 0);
    let a: Vec<_> = a.into_iter().map(|(_, e)| e).collect();
    let b: Vec<_> = b.into_iter().map(|(_, e)| e).collect();
    let mut ca = config(dir.path());
    ca.instance = "proxy-a".into();
    let mut cb = config(dir.path());
    cb.instance = "proxy-b".into();
    cb.segment_max_bytes = 100 << 10;
    write_all(ca, &a);
    write_all(cb, &b);
    fs::write(dir.path().join("junk.tape"), b"not a tape at all").unwrap();

    let mut reader = TapeReader::open(&[dir.path()]).unwrap();
    let back: Vec<_> = reader.by_ref().collect();
    assert_eq!(back, all);
    let bad: Vec<_> = reader.reports().iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].path.ends_with("junk.tape"));
}

/// A block on disk twice (an archiver that crashed after writing a batch and before
/// acknowledging it writes the batch again) is read once and counted, never as damage;
/// blocks that merely look alike (same size, same count) are all read.
#[test]
fn a_block_stored_twice_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let all = synth(3000);
    let written = write_all(config(dir.path()), &all);
    assert_eq!(written.len(), 1);
    // The second copy of the first half of the blocks, as the restarted archiver's
    // segment would hold them (another file, another header, the same block bytes).
    let copy = dir.path().join("capture-again.tape");
    fs::copy(&written[0], &copy).unwrap();
    let mut reader = TapeReader::open(&[dir.path()]).unwrap();
    let back: Vec<_> = reader.by_ref().collect();
    assert_eq!(back.len(), all.len(), "each exchange once");
    assert_eq!(back, all);
    let reports = reader.reports();
    let dup_records: u64 = reports.iter().map(|r| r.stats.duplicate_records).sum();
    let dup_blocks: u64 = reports.iter().map(|r| r.stats.duplicate_blocks).sum();
    assert_eq!(dup_records, 3000);
    assert_eq!(dup_blocks, 3000_u64.div_ceil(64));
    assert!(reports.iter().all(|r| r.stats.is_clean()), "not damage");
    // Read alone, a segment is read whole.
    assert_eq!(read_segment(&copy).0.len(), 3000);
    // Many identical exchanges (same size, same record count per block) at other
    // times are not mistaken for copies.
    let other = tempfile::tempdir().unwrap();
    let mut same: Vec<Exchange> = Vec::new();
    for (i, e) in all.iter().take(1).cycle().take(2000).enumerate() {
        let mut e = e.clone();
        e.timing.start_ns += i as u64 * 1000;
        same.push(e);
    }
    write_all(config(other.path()), &same);
    assert_eq!(TapeReader::open(&[other.path()]).unwrap().count(), 2000);
}

/// Exchanges are written when they complete, so a slow request lands after faster ones
/// that started later; readers still deliver them in start order.
#[test]
fn completion_order_is_read_back_in_start_order() {
    let mut input = synth(400);
    // Make every 10th request slow: it completes 50 requests later.
    let mut written = input.clone();
    for i in (0..written.len()).step_by(10).rev() {
        let slow = written.remove(i);
        let to = (i + 50).min(written.len());
        written.insert(to, slow);
    }
    assert_ne!(written, input);
    for keep_footer in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TapeWriter::new(config(dir.path())).unwrap();
        for e in &written {
            w.append(e).unwrap();
        }
        if keep_footer {
            w.finish().unwrap();
        } else {
            w.flush().unwrap();
            std::mem::forget(w);
        }
        let back: Vec<_> = TapeReader::open(&[dir.path()]).unwrap().collect();
        input.sort_by_key(Exchange::wall_start_ns);
        assert_eq!(back.len(), input.len());
        assert!(back.windows(2).all(|w| w[0].wall_start_ns() <= w[1].wall_start_ns()), "footer={keep_footer}");
    }
}

fn bytes_strategy(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

prop_compose! {
    fn arb_exchange()(
        id in any::<u64>(),
        conn in any::<u64>(),
        session in prop::option::of("[a-z0-9_]{0,12}"),
        seq in any::<u32>(),
        start in 0u64..1 << 50,
        head in prop::option::of(0u64..1 << 40),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        target in "/[a-z0-9/?=&%._-]{0,40}",
        headers in prop::collection::vec((bytes_strategy(20), bytes_strategy(60)), 0..8),
        req_body in bytes_strategy(2000),
        truncated in any::<bool>(),
        status in prop::option::of(100u16..600),
        resp_body in bytes_strategy(3000),
        error in prop::option::of(prop::sample::select(ErrorKind::ALL.to_vec())),
        messages in prop::collection::vec(any::<u64>(), 0..4),
    ) -> Exchange {
        let mut h = Headers::new();
        for (n, v) in headers { h.push(n, v); }
        let mut body = Body::full(req_body);
        body.truncated = truncated;
        body.len += u64::from(truncated) * 10;
        Exchange {
            id: ExchangeId(id),
            connection: ConnectionId(conn),
            session,
            sequence: seq,
            timing: Timing { tape_start_unix_ns: 1_700_000_000_000_000_000, start_ns: start, head_ns: head, end_ns: head.map(|h| h + 5) },
            request: Request { message_ns: messages.clone(), trailers: Default::default(), method: method.into(), scheme: "http".into(), authority: "svc:80".into(), target, version: HttpVersion::Http11, headers: h.clone(), body },
            response: status.map(|s| Response { message_ns: messages.iter().rev().copied().collect(), trailers: Default::default(), status: s, version: HttpVersion::H2, headers: h, body: Body::full(resp_body) }),
            error,
            scrub: vec![ScrubHit { rule: "detect:email".into(), count: 2 }],
            replay_of: None,
            websocket: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_exchanges_round_trip(exchanges in prop::collection::vec(arb_exchange(), 0..40), block in 1u32..16) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.block_max_records = block;
        let mut w = TapeWriter::new(c).unwrap();
        for e in &exchanges { w.append(e).unwrap(); }
        let segments = w.finish().unwrap();
        let back: Vec<Exchange> = segments.iter().flat_map(|s| read_segment(s).0).collect();
        prop_assert_eq!(back, exchanges);
    }

    #[test]
    fn damaged_tapes_never_panic_or_invent_records(
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = synth(200);
        let segments = write_all(config(dir.path()), &input);
        let mut bytes = fs::read(&segments[0]).unwrap();
        for (at, value) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(t) = truncate {
            bytes.truncate(t.index(bytes.len()));
        }
        if let Ok(mut r) = SegmentReader::new(Cursor::new(bytes), "mutated.tape") {
            let mut n = 0;
            while let Some(e) = r.next_exchange().unwrap() {
                prop_assert!(input.contains(&e), "a damaged tape returned a record that was never written");
                n += 1;
            }
            prop_assert!(n <= input.len());
        }
    }
}

/// The one `.tape.partial` in `dir`.
fn the_partial(dir: &Path) -> PathBuf {
    let partials: Vec<_> = files_in(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".partial")).collect();
    assert_eq!(partials.len(), 1, "{partials:?}");
    partials[0].clone()
}

#[test]
fn a_deleted_open_segment_is_noticed_counted_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = synth(60);
    let mut w = TapeWriter::new(config(dir.path())).unwrap();
    for ex in &exchanges[..20] {
        w.append(ex).unwrap();
    }
    w.flush().unwrap();
    // Someone cleans up the directory while the writer works.
    fs::remove_file(the_partial(dir.path())).unwrap();
    std::thread::sleep(Duration::from_millis(250)); // the writer looks a few times a second
    let err = w.tick().expect_err("the loss is reported");
    assert!(err.to_string().contains("deleted by someone else"), "{err}");
    assert_eq!(w.stats().records_deleted, 20, "what the deleted file held is counted");
    assert_eq!(w.stats().records_lost, 0, "nothing failed to be written");
    // Reported once, not on every tick; writing goes on into a new segment.
    assert!(w.tick().is_ok());
    for ex in &exchanges[20..] {
        w.append(ex).unwrap();
    }
    let segments = w.finish().unwrap();
    assert_eq!(segments.len(), 1);
    let (read, _) = read_segment(&segments[0]);
    assert_eq!(read.len(), 40);
    assert_eq!(read[0].id, exchanges[20].id);
}

#[test]
fn a_segment_replaced_under_the_same_name_is_noticed_too() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = synth(10);
    let mut w = TapeWriter::new(config(dir.path())).unwrap();
    for ex in &exchanges[..5] {
        w.append(ex).unwrap();
    }
    w.flush().unwrap();
    let partial = the_partial(dir.path());
    fs::remove_file(&partial).unwrap();
    fs::write(&partial, b"someone else's file").unwrap();
    let mut errors: Vec<String> =
        exchanges[5..].iter().filter_map(|ex| w.append(ex).err()).map(|e| e.to_string()).collect();
    errors.extend(w.flush().err().map(|e| e.to_string()));
    errors.extend(w.take_lost().map(|e| e.to_string()));
    assert_eq!(errors.len(), 1, "the loss is reported once: {errors:?}");
    assert!(errors[0].contains("deleted by someone else"), "{errors:?}");
    assert_eq!(w.stats().records_deleted, 5);
    assert_eq!(w.stats().records, 10, "the block that was due went to a new segment");
    assert_eq!(fs::read(&partial).unwrap(), b"someone else's file", "the other file is left alone");
}

#[test]
fn a_segment_moved_away_is_closed_where_it_is_and_a_new_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = synth(30);
    let mut w = TapeWriter::new(config(dir.path())).unwrap();
    for ex in &exchanges[..10] {
        w.append(ex).unwrap();
    }
    w.flush().unwrap();
    let moved = dir.path().join("elsewhere.bin");
    fs::rename(the_partial(dir.path()), &moved).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let err = w.tick().expect_err("the move is reported");
    assert!(err.to_string().contains("moved or replaced"), "{err}");
    assert_eq!((w.stats().records_deleted, w.stats().records_lost), (0, 0), "nothing is lost");
    for ex in &exchanges[10..] {
        w.append(ex).unwrap();
    }
    let segments = w.finish().unwrap();
    let (read, stats) = read_segment(&moved);
    assert_eq!(read.len(), 10, "the moved file is complete and readable");
    assert!(stats.is_clean(), "{stats:?}");
    assert_eq!(read_segment(&segments[0]).0.len(), 20);
}

#[test]
fn a_failed_rename_is_retried_and_a_restart_renames_what_was_closed() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = synth(10);
    let mut w = TapeWriter::new(config(dir.path())).unwrap();
    for ex in &exchanges {
        w.append(ex).unwrap();
    }
    w.flush().unwrap();
    // A directory where the segment's final name should go makes the rename fail.
    let partial = the_partial(dir.path());
    let final_path = PathBuf::from(partial.to_string_lossy().trim_end_matches(".partial"));
    fs::create_dir(&final_path).unwrap();
    assert!(w.rotate().is_err());
    assert!(w.finished_segments().is_empty());
    fs::remove_dir(&final_path).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    w.tick().unwrap();
    assert_eq!(w.finished_segments(), std::slice::from_ref(&final_path));
    assert_eq!(read_segment(&final_path).0.len(), 10);
    drop(w);

    // A closed segment left as `.partial` by an earlier run is renamed by the next one;
    // an unclosed one (a crash, another writer) is left as it is.
    fs::rename(&final_path, &partial).unwrap();
    let crashed = dir.path().join("capture-other-20260101T000000Z-000001.tape.partial");
    fs::write(&crashed, &fs::read(&partial).unwrap()[..200]).unwrap();
    let mut w = TapeWriter::new(config(dir.path())).unwrap();
    assert_eq!(w.recover_closed_partials(), std::slice::from_ref(&final_path));
    assert!(final_path.exists() && crashed.exists() && !partial.exists());
}

#[test]
fn a_replay_leaves_out_what_was_recorded_in_front_of_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    // (Other counts: a block stored twice is read once.)
    let write = |sub: &str, labels: &[(&str, &str)], count: usize| {
        let mut c = config(&dir.path().join(sub));
        c.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        write_all(c, &synth(count))
    };
    let shop = write("shop", &[("service", "shop"), ("role", "ingress")], 3);
    let payments = write("payments", &[("service", "payments"), ("role", "dependency")], 5);
    let fx = write("fx", &[("service", "fx")], 4);
    let all = tapedeck_captures::tape::discover(&[dir.path()]).unwrap();
    let split = |mocked: &[&str]| {
        let mocked: Vec<String> = mocked.iter().map(|s| s.to_string()).collect();
        let (mut traffic, mut deps) = tapedeck_captures::tape::split_dependencies(all.clone(), &mocked);
        traffic.sort();
        deps.sort();
        (traffic, deps)
    };
    let sorted = |parts: &[&Vec<PathBuf>]| {
        let mut v: Vec<PathBuf> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
        v.sort();
        v
    };
    // A dependency by its role; one named by --mock whatever its role.
    assert_eq!(split(&[]), (sorted(&[&shop, &fx]), sorted(&[&payments])));
    assert_eq!(split(&["fx"]), (sorted(&[&shop]), sorted(&[&payments, &fx])));
    // Only a dependency's own captures: they are the traffic (its staging copy replayed).
    let (only, _) = tapedeck_captures::tape::split_dependencies(payments.clone(), &[]);
    assert_eq!(only, payments);
    // …unless it is mocked: then there is nothing to send.
    let (none, deps) = tapedeck_captures::tape::split_dependencies(payments.clone(), &["payments".to_string()]);
    assert!(none.is_empty() && deps == payments);
    let (reader, left_out) = TapeReader::open_traffic(&[dir.path()], &[]).unwrap();
    assert_eq!((reader.count(), left_out.len()), (7, payments.len()));
}
