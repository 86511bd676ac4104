//! N hosts replaying one capture together: `--shard K/N` splits it by session (whole
//! sessions and recorded connections to one shard each) and `start_at` starts every
//! shard's schedule at the same instant, so that together they play the recorded shape.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use support::{recorded, recorded_id, write_tape, Target};
use tapedeck_captures::{ConnectionId, Exchange};
use tapedeck_replayer::schedule::Pacing;
use tapedeck_replayer::source::{Selection, Shard, Source};
use tapedeck_replayer::{replay, session_key, ReplayConfig, ReplayError};

/// `count` exchanges over ~`count` × 6 ms: a third in 40 sessions, a third on 17 recorded
/// connections, a third independent.
fn mixed(count: u64) -> Vec<Exchange> {
    let mut at = 0.0;
    (0..count)
        .map(|i| {
            at += 1.0 + ((i * 7919) % 11) as f64;
            let mut ex = recorded(i, at, "GET", &format!("/api/items/{i}"));
            match i % 3 {
                0 => ex.session = Some(format!("user-{}", i % 40)),
                1 => ex.connection = ConnectionId(1000 + i % 17),
                _ => {}
            }
            ex
        })
        .collect()
}

fn now_ns() -> i64 {
    tapedeck_captures::tape::writer::now_unix_ns()
}

#[test]
fn shards_are_whole_sessions_and_together_exactly_the_selection() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = mixed(600);
    let path = write_tape(dir.path(), &exchanges, &[]);
    for (count, limit) in [(1, None), (3, None), (4, Some(250))] {
        let mut owner: BTreeMap<u64, u32> = BTreeMap::new();
        let mut key_owner = BTreeMap::new();
        for index in 0..count {
            let selection = Selection { shard: Some(Shard { index, count }), limit, ..Default::default() };
            let mut source = Source::open(std::slice::from_ref(&path), selection).unwrap();
            let mut positions = Vec::new();
            while let Some(ex) = source.next() {
                assert!(owner.insert(ex.id.0, index).is_none(), "exchange {} in two shards", ex.id.0);
                let key = format!("{:?}", session_key(&ex));
                let first = *key_owner.entry(key.clone()).or_insert(index);
                assert_eq!(first, index, "{key} split between shards {first} and {index}");
                // Every shard keeps the selection's schedule: its position is the exchange's
                // place in the whole selection, not in the shard.
                positions.push((source.schedule_position().1, ex.id.0));
            }
            assert!(positions.iter().all(|(p, id)| p == id), "shard {index}/{count}: {positions:?}");
        }
        let want: BTreeSet<u64> = (0..limit.unwrap_or(600)).collect();
        assert_eq!(owner.keys().copied().collect::<BTreeSet<_>>(), want, "{count} shards, limit {limit:?}");
        if count > 1 {
            let sizes: Vec<usize> = (0..count).map(|k| owner.values().filter(|&&o| o == k).count()).collect();
            assert!(sizes.iter().all(|&n| n > 0), "every shard has work: {sizes:?}");
        }
    }
}

#[test]
fn shards_started_together_play_the_recorded_shape() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = mixed(300);
    let path = write_tape(dir.path(), &exchanges, &[]);
    let recorded_span_ms = (exchanges.last().unwrap().timing.start_ns - exchanges[0].timing.start_ns) as f64 / 1e6;
    let target = Target::start(Duration::ZERO);
    // Every host is told the same instant, a little ahead (as a job would be).
    let start_at = now_ns() + 1_500_000_000;
    let start = Instant::now() + Duration::from_nanos((start_at - now_ns()) as u64);
    let reports: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|index| {
                let (path, url) = (path.clone(), target.url());
                s.spawn(move || {
                    let mut c = ReplayConfig::new(vec![path], url.parse().unwrap()).unwrap();
                    c.pacing = Pacing::Recorded { speed: 1.0 };
                    c.selection.shard = Some(Shard { index, count: 3 });
                    c.start_at = Some(start_at);
                    replay(&c, &AtomicBool::new(false), Default::default()).expect("replay")
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let arrivals = target.arrivals();
    let ids: Vec<u64> = arrivals.iter().map(recorded_id).collect();
    assert_eq!(ids.len(), 300, "each exchange sent once");
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), (0..300).collect(), "by one shard or another");
    assert_eq!(reports.iter().map(|r| r.sent).sum::<u64>(), 300);
    let mut shards: Vec<String> = reports.iter().filter_map(|r| r.shard.clone()).collect();
    shards.sort();
    assert_eq!(shards, ["0/3", "1/3", "2/3"]);
    // Nothing before the agreed instant (a small allowance for the two clocks' conversion),
    // and the union spans the recorded time: the load was not squeezed together. (Lower
    // bounds: a busy machine only sends later.)
    let first = arrivals.iter().map(|a| a.at).min().unwrap();
    let last = arrivals.iter().map(|a| a.at).max().unwrap();
    assert!(first + Duration::from_millis(5) >= start, "sent {:?} before --start-at", start - first);
    let span_ms = (last - first).as_secs_f64() * 1e3;
    assert!(span_ms >= 0.9 * recorded_span_ms, "the shards together span {span_ms:.0} ms of {recorded_span_ms:.0}");
    // Every shard's report counts from the agreed instant: the same start, and timelines
    // that line up (no bucket for the wait before it).
    let agreed = jiff::Timestamp::from_nanosecond(i128::from(start_at)).unwrap().to_string();
    for r in &reports {
        assert_eq!(r.started_at, agreed);
        let timeline = r.timeline.as_ref().expect("a timeline");
        let first_due = timeline.recorded.iter().position(|&n| n > 0).expect("something due");
        assert!(first_due as f64 * timeline.bucket_secs < 0.5, "first due {first_due} buckets after the start");
    }
}

#[test]
fn a_shard_without_exchanges_ends_at_once_even_with_a_duration() {
    // One session: all of it goes to one shard, the other two have nothing to send, and
    // must say so at once rather than reading the tapes again until --duration is up.
    let dir = tempfile::tempdir().unwrap();
    let mut exchanges = mixed(30);
    for ex in &mut exchanges {
        ex.session = Some("only-user".into());
    }
    let path = write_tape(dir.path(), &exchanges, &[]);
    let target = Target::start(Duration::ZERO);
    let owner = (0..3).find(|&i| Shard { index: i, count: 3 }.holds(&session_key(&exchanges[0]))).unwrap();
    for index in (0..3).filter(|&i| i != owner) {
        let mut c = ReplayConfig::new(vec![path.clone()], target.url().parse().unwrap()).unwrap();
        c.selection.shard = Some(Shard { index, count: 3 });
        c.duration = Some(Duration::from_secs(120));
        let started = Instant::now();
        let report = replay(&c, &AtomicBool::new(false), Default::default()).expect("replay");
        assert_eq!(report.sent, 0);
        assert!(started.elapsed() < Duration::from_secs(30), "ran {:?}", started.elapsed());
    }
    assert!(target.arrivals().is_empty());
}

#[test]
fn a_stop_while_waiting_for_start_at_ends_the_run_without_sending() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tape(dir.path(), &mixed(10), &[]);
    let target = Target::start(Duration::ZERO);
    let mut c = ReplayConfig::new(vec![path], target.url().parse().unwrap()).unwrap();
    c.start_at = Some(now_ns() + 600_000_000_000);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let report = replay(&c, &stop, Default::default()).expect("replay");
    stopper.join().unwrap();
    assert!(report.interrupted && report.sent == 0);
    assert!(started.elapsed() < Duration::from_secs(30), "waited {:?}", started.elapsed());
    assert!(target.arrivals().is_empty());
}

#[test]
fn a_host_started_after_start_at_refuses_unless_late_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tape(dir.path(), &mixed(20), &[]);
    let target = Target::start(Duration::ZERO);
    let mut c = ReplayConfig::new(vec![path], target.url().parse().unwrap()).unwrap();
    c.pacing = Pacing::Max;
    c.start_at = Some(now_ns() - 30_000_000_000);
    match replay(&c, &AtomicBool::new(false), Default::default()) {
        Err(e @ ReplayError::Late { .. }) => {
            let text = e.to_string();
            assert!(text.contains("--late-ok") && text.contains("--start-at"), "{text}");
        }
        other => panic!("expected Late, got {:?}", other.map(|r| r.sent)),
    }
    assert!(target.arrivals().is_empty(), "nothing sent");
    c.late_ok = true;
    let report = replay(&c, &AtomicBool::new(false), Default::default()).expect("joins late");
    assert_eq!(report.sent, 20);
    assert_eq!(target.arrivals().len(), 20);
}

/// Runs `count` shards of `path` together (all of them, or `Some(K)` alone), each report
/// read back from its JSON as `report --merge` reads it.
fn run_shards(path: &std::path::Path, url: &str, count: u32) -> Vec<tapedeck_report::merge::Part> {
    let start_at = now_ns() + 1_000_000_000;
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..count)
            .map(|index| {
                s.spawn(move || {
                    let mut c = ReplayConfig::new(vec![path.to_path_buf()], url.parse().unwrap()).unwrap();
                    c.selection.shard = Some(Shard { index, count });
                    c.start_at = Some(start_at);
                    let report = replay(&c, &AtomicBool::new(false), Default::default()).expect("replay");
                    let json = serde_json::to_string(&report).unwrap();
                    tapedeck_report::merge::Part {
                        name: format!("shard-{index}"),
                        report: serde_json::from_str(&json).unwrap(),
                    }
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn merged_shard_reports_count_what_the_whole_run_counts() {
    // Three routes, recorded latencies 1-13 ms, some answers the target now gives
    // differently (a body, a status): everything a report counts, in every shard.
    let dir = tempfile::tempdir().unwrap();
    let mut exchanges = mixed(240);
    for (i, ex) in exchanges.iter_mut().enumerate() {
        ex.request.target = ["/api/items/", "/api/users/", "/health?x="][i % 3].to_string() + &i.to_string();
        ex.timing.end_ns = Some(1_000_000 * (1 + (i as u64 * 7) % 13));
        let response = ex.response.as_mut().unwrap();
        if i % 5 == 0 {
            response.body = tapedeck_captures::exchange::Body::full(bytes::Bytes::from_static(b"changed"));
        }
        if i % 7 == 0 {
            response.status = 503;
        }
    }
    let path = write_tape(dir.path(), &exchanges, &[]);
    let target = Target::start(Duration::ZERO);
    let mut c = ReplayConfig::new(vec![path.clone()], target.url().parse().unwrap()).unwrap();
    c.start_at = Some(now_ns() + 500_000_000);
    let whole = replay(&c, &AtomicBool::new(false), Default::default()).expect("replay");
    let parts = run_shards(&path, &target.url(), 3);
    let merged = tapedeck_report::merge::merge(parts, &tapedeck_compare::CompareConfig::default()).expect("merge");
    assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
    let m = merged.report;
    assert_eq!((m.sent, m.completed, &m.errors), (whole.sent, whole.completed, &whole.errors));
    assert_eq!((m.shard.as_deref(), m.merged_from.len()), (None, 3));
    let routes = |r: &tapedeck_replayer::ReplayReport| {
        let mut v: Vec<_> = r
            .routes
            .iter()
            .map(|x| {
                let diffs = x.diffs.as_ref().expect("compared");
                let findings: Vec<_> = diffs.findings.iter().map(|f| (f.key.clone(), f.count)).collect();
                // Recorded latencies come from the tape: merged exactly, they are the same.
                (
                    x.route.clone(),
                    x.count,
                    x.recorded_status.clone(),
                    x.replayed_status.clone(),
                    x.recorded_ms.map(|l| (l.p50, l.p95, l.p99, l.max)),
                    diffs.compared,
                    diffs.differing,
                    findings,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(routes(&m), routes(&whole));
    assert_eq!(
        m.compare.as_ref().map(|c| (c.compared, c.differing)),
        whole.compare.as_ref().map(|c| (c.compared, c.differing))
    );
    assert!(m.compare.as_ref().unwrap().differing > 0, "the planted differences are found");
    // The same schedule from the same kind of start: the same requests due per bucket.
    assert_eq!(m.timeline.as_ref().map(|t| &t.recorded), whole.timeline.as_ref().map(|t| &t.recorded));
    // Replayed latency: each shard's requests, every one of them, in the merged histogram.
    let replayed: u64 =
        m.routes.iter().filter_map(|r| r.latency_buckets.as_ref()).map(|b| b.replayed.iter().sum::<u64>()).sum();
    assert_eq!(replayed, whole.completed);
}

#[test]
fn merging_refuses_what_is_not_one_runs_shards_and_says_what_is_missing() {
    use tapedeck_report::merge::{merge, MergeError, Part};
    let dir = tempfile::tempdir().unwrap();
    let path = write_tape(dir.path(), &mixed(60), &[]);
    let target = Target::start(Duration::ZERO);
    let config = tapedeck_compare::CompareConfig::default();
    let parts = || run_shards(&path, &target.url(), 3);
    let mut three = parts();
    // A shard missing: merged, and said.
    three.remove(1);
    let merged = merge(three, &config).expect("two of three merge");
    assert!(merged.warnings.iter().any(|w| w.contains("1/3 missing")), "{:?}", merged.warnings);
    assert_eq!(merged.report.shard.as_deref(), Some("0,2/3"));
    // A shard twice: refused (its requests would count twice).
    let mut twice = parts();
    let copy = Part { name: "again".into(), report: twice[0].report.clone() };
    twice.push(copy);
    assert!(matches!(merge(twice, &config), Err(MergeError::Twice { .. })));
    // A whole run, or a report without counts: refused.
    let mut whole = parts();
    whole[0].report.shard = None;
    assert!(matches!(merge(whole, &config), Err(MergeError::NotAShard { .. })));
    let mut bare = parts();
    bare[2].report.stats = None;
    assert!(matches!(merge(bare, &config), Err(MergeError::NoCounts { .. })));
    // Shards of another split.
    let mut mixed_split = parts();
    mixed_split[1].report.shard = Some("1/4".into());
    let e = merge(mixed_split, &config).err().expect("refused");
    assert!(matches!(e, MergeError::Splits { .. }) && e.to_string().contains("1/4"), "{e}");
    assert!(matches!(merge(Vec::new(), &config), Err(MergeError::Empty)));
    // Shards of different captures (another tape, another window): merged, and said.
    let other_dir = tempfile::tempdir().unwrap();
    let other = write_tape(other_dir.path(), &mixed(61), &[]);
    let same = parts();
    let digests: Vec<_> = same.iter().map(|p| p.report.input_digest.clone()).collect();
    assert!(digests[0].is_some() && digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    let mut different = parts();
    different[1] = run_shards(&other, &target.url(), 3).swap_remove(1);
    let merged = merge(different, &config).expect("merged");
    assert!(merged.warnings.iter().any(|w| w.contains("read different captures")), "{:?}", merged.warnings);
}
