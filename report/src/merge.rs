//! Shards' reports made one. Every run's report carries its raw counts ([`StatsDoc`]:
//! HDR histograms, difference tallies, the timeline, the noise it knew); `tapedeck report
//! --merge` adds N shards' counts up — HDR histograms merge exactly — and builds the report
//! of the whole from them, as if one host had replayed every shard.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tapedeck_compare::noise::NoiseModel;
use tapedeck_compare::tally::{RouteTally, TallyDoc};
use tapedeck_compare::{intern, CompareConfig};

use crate::stats::{histogram, RouteStats, Stats, Timeline};
use crate::{ReplayReport, TapeDamage};

/// A run's counts as data: what [`Stats`] holds, with times as offsets from the run's
/// start and histograms in HDR's V2 encoding (base64).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatsDoc {
    /// The run's start (what the offsets count from), ns since the epoch.
    pub origin_unix_ns: i64,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered completely.
    pub completed: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// Requests without a complete answer, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Send time minus due time, µs.
    pub lag: String,
    /// Sends more than 1 ms late.
    pub late_1ms: u64,
    /// Sends more than 10 ms late.
    pub late_10ms: u64,
    /// First and last send, ns after the start.
    pub sends: Option<(u64, u64)>,
    /// First and last due time, ns after the start.
    pub dues: Option<(u64, u64)>,
    /// Requests due and sent over time.
    pub timeline: TimelineDoc,
    /// The noise the run's comparison knew at its end (what it was given and learned).
    #[serde(default)]
    pub noise: NoiseModel,
    /// Correlated values substituted.
    #[serde(default)]
    pub substitutions: u64,
    /// Noise probes sent.
    #[serde(default)]
    pub probes: u64,
    /// Noise probes without a complete answer.
    #[serde(default)]
    pub probes_failed: u64,
    /// Answers not compared (the comparer had fallen behind).
    #[serde(default)]
    pub compare_shed: u64,
    /// By route.
    pub routes: BTreeMap<String, RouteDoc>,
}

/// One route's counts ([`RouteStats`] as data).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouteDoc {
    /// Requests replayed.
    pub count: u64,
    /// Recorded time to last byte, µs (histogram).
    pub recorded: String,
    /// Replayed time to last byte, µs (histogram).
    pub replayed: String,
    /// Requests that timed out.
    #[serde(default)]
    pub timeouts: u64,
    /// Recorded status classes.
    pub recorded_status: BTreeMap<String, u64>,
    /// Replayed status classes.
    pub replayed_status: BTreeMap<String, u64>,
    /// Errors by kind.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Differences.
    #[serde(default)]
    pub diffs: TallyDoc,
    /// Streams: time to the first message, recorded and replayed (histograms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_message: Option<(String, String)>,
    /// WebSocket answers to client messages, recorded and replayed (histograms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<(String, String)>,
}

/// The timeline as data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TimelineDoc {
    /// Width of a bucket, ms.
    pub bucket_ms: u64,
    /// Requests due per bucket.
    pub due: Vec<u64>,
    /// Requests sent per bucket.
    pub sent: Vec<u64>,
}

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing was given.
    #[error("nothing to merge: give the shards' results directories (or their report JSON files)")]
    Empty,
    /// A report without counts.
    #[error(
        "{part}: this report carries no counts to merge (it was made by `report --merge` or `--baseline`, or by an \
         older tapedeck); give each shard's own results directory or `--report` file"
    )]
    NoCounts {
        /// Which report.
        part: String,
    },
    /// A report that is not a shard's.
    #[error(
        "{part} replayed the whole selection, not a shard (--shard K/N): only the shards of one run are merged; \
         to compare two runs use --baseline OLD NEW"
    )]
    NotAShard {
        /// Which report.
        part: String,
    },
    /// Shards of different splits.
    #[error("{a} is shard {a_shard} and {b} is shard {b_shard}: shards of different splits do not make one run")]
    Splits {
        /// One report…
        a: String,
        /// …its shard…
        a_shard: String,
        /// …another…
        b: String,
        /// …and its shard.
        b_shard: String,
    },
    /// One shard given twice: its counts would be added twice.
    #[error("shard {shard} is given twice ({a} and {b}): its requests would count twice")]
    Twice {
        /// The shard.
        shard: String,
        /// One report…
        a: String,
        /// …and the other.
        b: String,
    },
    /// A histogram that does not decode.
    #[error("{part}: the {what} histogram of {route} cannot be read ({why}); the file is damaged")]
    Histogram {
        /// Which report.
        part: String,
        /// Which route.
        route: String,
        /// Which histogram.
        what: &'static str,
        /// Why.
        why: String,
    },
}

/// A shard's report, and what to call it in messages (its path).
pub struct Part {
    /// Its path, for messages.
    pub name: String,
    /// The report.
    pub report: ReplayReport,
}

/// The report of N shards merged, and what the reader should know about it.
pub struct Merged {
    /// The report of the whole.
    pub report: ReplayReport,
    /// Warnings: missing shards, shards that did not start together, other targets.
    pub warnings: Vec<String>,
}

pub(crate) fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing into memory fails only for a histogram the encoding cannot hold, which the
    // constructors here never make; an empty string then reads back as empty.
    if V2Serializer::new().serialize(h, &mut bytes).is_err() {
        bytes.clear();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes into `into` (a histogram with the bounds the run uses): values outside them
/// saturate, so a file written with other bounds still merges.
/// The largest value a run's histograms track (the lag's, 30 days in µs).
const MAX_TRACKABLE_US: u64 = crate::stats::MAX_LAG_US;

/// Shards of one run at most (a larger N is no split tapedeck makes sense of).
const MAX_SHARDS: u32 = 10_000;

pub(crate) fn decode_into(text: &str, into: &mut Histogram<u64>) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())?;
    // The V2 header (40 bytes) says how long the counts are and how the histogram was
    // made: checked against the bytes there are and the bounds a run uses before the
    // decoder sizes anything from it.
    let field = |at: usize, len: usize| -> u64 {
        bytes.get(at..at + len).map_or(0, |b| b.iter().fold(0u64, |n, x| (n << 8) | u64::from(*x)))
    };
    if bytes.len() < 40 {
        return Err("too short for a histogram".into());
    }
    let (payload_len, digits, lowest, highest) = (field(4, 4), field(12, 4), field(16, 8), field(24, 8));
    if payload_len != (bytes.len() - 40) as u64 {
        return Err(format!("it claims {payload_len} bytes of counts and holds {}", bytes.len() - 40));
    }
    if digits != 3 || lowest != 1 || highest > MAX_TRACKABLE_US {
        return Err(format!("bounds 1..{highest} at {digits} digits are not a replay's (1..≤30 days in µs, 3 digits)"));
    }
    let h: Histogram<u64> =
        Deserializer::new().deserialize(&mut std::io::Cursor::new(bytes)).map_err(|e| format!("{e:?}"))?;
    for v in h.iter_recorded() {
        let _ = into.record_n(v.value_iterated_to().clamp(1, MAX_TRACKABLE_US), v.count_at_value());
    }
    Ok(())
}

fn owned(m: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn interned(m: BTreeMap<String, u64>) -> BTreeMap<&'static str, u64> {
    m.into_iter().map(|(k, v)| (intern(&k), v)).collect()
}

impl Stats {
    /// The counts as data; `origin_unix_ns` is the run's start, `noise` what its
    /// comparison knew at the end.
    pub fn to_doc(&self, origin_unix_ns: i64, noise: &NoiseModel) -> StatsDoc {
        let pair =
            |p: &Option<Box<(Histogram<u64>, Histogram<u64>)>>| p.as_deref().map(|(a, b)| (encode(a), encode(b)));
        StatsDoc {
            origin_unix_ns,
            sent: self.sent,
            completed: self.completed,
            bytes: self.bytes,
            errors: owned(&self.errors),
            lag: encode(&self.lag),
            late_1ms: self.late_1ms,
            late_10ms: self.late_10ms,
            sends: self.sends,
            dues: self.dues,
            timeline: TimelineDoc {
                bucket_ms: self.timeline.bucket_ms,
                due: self.timeline.due.clone(),
                sent: self.timeline.sent.clone(),
            },
            noise: noise.clone(),
            substitutions: self.substitutions,
            probes: self.probes,
            probes_failed: self.probes_failed,
            compare_shed: self.compare_shed,
            routes: self
                .routes
                .iter()
                .map(|(route, r)| {
                    let doc = RouteDoc {
                        count: r.count,
                        recorded: encode(&r.recorded),
                        replayed: encode(&r.replayed),
                        timeouts: r.timeouts,
                        recorded_status: owned(&r.recorded_status),
                        replayed_status: owned(&r.replayed_status),
                        errors: owned(&r.errors),
                        diffs: r.diffs.to_doc(),
                        first_message: pair(&r.first_message),
                        answers: pair(&r.answers),
                    };
                    (route.clone(), doc)
                })
                .collect(),
        }
    }

    /// The counts read back, their times moved to count from `base_unix_ns` (an earlier
    /// start than the doc's, when shards did not start together); `part` names the file
    /// in errors.
    pub fn from_doc(doc: StatsDoc, base_unix_ns: i64, part: &str) -> Result<Stats, MergeError> {
        let shift = doc.origin_unix_ns.saturating_sub(base_unix_ns).max(0) as u64;
        let moved = |span: Option<(u64, u64)>| span.map(|(a, b)| (a.saturating_add(shift), b.saturating_add(shift)));
        let bad = |route: &str, what: &'static str| {
            let (part, route) = (part.to_string(), route.to_string());
            move |why| MergeError::Histogram { part, route, what, why }
        };
        let mut stats = Stats {
            sent: doc.sent,
            completed: doc.completed,
            bytes: doc.bytes,
            errors: interned(doc.errors),
            late_1ms: doc.late_1ms,
            late_10ms: doc.late_10ms,
            sends: moved(doc.sends),
            dues: moved(doc.dues),
            timeline: Timeline::from_parts(doc.timeline.bucket_ms, doc.timeline.due, doc.timeline.sent, shift),
            noise: doc.noise,
            substitutions: doc.substitutions,
            probes: doc.probes,
            probes_failed: doc.probes_failed,
            compare_shed: doc.compare_shed,
            ..Stats::default()
        };
        decode_into(&doc.lag, &mut stats.lag).map_err(bad("(all)", "lag"))?;
        // A run keeps MAX_ROUTES routes and `(other routes)`: more is no run's.
        if doc.routes.len() > crate::stats::MAX_ROUTES + 1 {
            return Err(MergeError::Histogram {
                part: part.to_string(),
                route: format!("{} routes", doc.routes.len()),
                what: "route",
                why: format!("a run keeps at most {} routes", crate::stats::MAX_ROUTES + 1),
            });
        }
        for (route, r) in doc.routes {
            let mut mine = RouteStats {
                count: r.count,
                timeouts: r.timeouts,
                recorded_status: interned(r.recorded_status),
                replayed_status: interned(r.replayed_status),
                errors: interned(r.errors),
                diffs: RouteTally::from_doc(r.diffs),
                ..RouteStats::default()
            };
            decode_into(&r.recorded, &mut mine.recorded).map_err(bad(&route, "recorded latency"))?;
            decode_into(&r.replayed, &mut mine.replayed).map_err(bad(&route, "replayed latency"))?;
            for (pair, theirs, what) in
                [(&mut mine.first_message, r.first_message, "first message"), (&mut mine.answers, r.answers, "answers")]
            {
                if let Some((a, b)) = theirs {
                    let (x, y) = &mut **pair.get_or_insert_with(|| Box::new((histogram(), histogram())));
                    decode_into(&a, x).map_err(bad(&route, what))?;
                    decode_into(&b, y).map_err(bad(&route, what))?;
                }
            }
            // Through `merge`, so that the route limit holds for files as for a run.
            let mut one = Stats::default();
            one.routes.insert(route, mine);
            stats.merge(one);
        }
        Ok(stats)
    }
}

/// `K/N` → (K, N).
fn shard_of(text: &str) -> Option<(u32, u32)> {
    let (k, n) = text.split_once('/')?;
    let (k, n): (u32, u32) = (k.parse().ok()?, n.parse().ok()?);
    ((1..=MAX_SHARDS).contains(&n) && k < n).then_some((k, n))
}

/// Merges shards' reports into the report of the whole run: counts added, histograms
/// merged, differences tallied again against the noise any shard knew, `config` judging
/// latency as a run's comparison does. Gates are not applied.
pub fn merge(parts: Vec<Part>, config: &CompareConfig) -> Result<Merged, MergeError> {
    if parts.is_empty() {
        return Err(MergeError::Empty);
    }
    let mut warnings = Vec::new();
    // Which shards, each once, all of one split.
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    let mut split: Option<(u32, String, String)> = None;
    for p in &parts {
        let shard = p.report.shard.clone().unwrap_or_default();
        let Some((k, n)) = shard_of(&shard) else {
            return Err(MergeError::NotAShard { part: p.name.clone() });
        };
        if p.report.stats.is_none() {
            return Err(MergeError::NoCounts { part: p.name.clone() });
        }
        match &split {
            Some((count, a, a_shard)) if *count != n => {
                return Err(MergeError::Splits {
                    a: a.clone(),
                    a_shard: a_shard.clone(),
                    b: p.name.clone(),
                    b_shard: shard,
                })
            }
            Some(_) => {}
            None => split = Some((n, p.name.clone(), shard)),
        }
        if let Some(a) = seen.insert(k, p.name.clone()) {
            return Err(MergeError::Twice { shard: format!("{k}/{n}"), a, b: p.name.clone() });
        }
    }
    let count = split.map_or(1, |(n, _, _)| n);
    let missing: Vec<String> = (0..count).filter(|k| !seen.contains_key(k)).map(|k| format!("{k}/{count}")).collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "shard{} {} missing: this report covers {} of {count} shards, not the whole run",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            seen.len()
        ));
    }
    let targets: BTreeSet<String> = parts.iter().map(|p| p.report.target.clone()).collect();
    let target = targets.iter().cloned().collect::<Vec<_>>().join(", ");
    if targets.len() > 1 {
        warnings.push(format!(
            "the shards replayed against different targets ({target}): latency and answers are those of all of them"
        ));
    }
    let pacings: BTreeSet<&str> = parts.iter().map(|p| p.report.pacing.as_str()).collect();
    if pacings.len() > 1 {
        warnings.push(format!(
            "the shards were paced differently ({}): their union is not the recorded load shape",
            pacings.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    let digests: BTreeSet<&str> = parts.iter().filter_map(|p| p.report.input_digest.as_deref()).collect();
    if digests.len() > 1 {
        warnings.push(
            "the shards read different captures (their input digests differ: other tapes, another stream window, \
             other selection flags): their union is not one recording"
                .to_string(),
        );
    }
    let mocked = parts.iter().filter(|p| !p.report.mocks.is_empty()).count();
    if mocked > 0 && mocked < parts.len() {
        warnings.push(format!(
            "{mocked} of {} shards ran dependency mocks (--mock): the mocks' calls are those shards' only",
            parts.len()
        ));
    }
    let pacing = parts[0].report.pacing.clone();
    let origins: Vec<i64> = parts.iter().filter_map(|p| p.report.stats.as_ref().map(|s| s.origin_unix_ns)).collect();
    let base = origins.iter().copied().min().unwrap_or(0);
    let spread = origins.iter().copied().max().unwrap_or(0).saturating_sub(base);
    if spread > 1_000_000_000 {
        warnings.push(format!(
            "the shards started {:.1} s apart (not at one --start-at): their timelines are set side by side by the \
             wall clock",
            spread as f64 / 1e9
        ));
    }

    let compared = parts.iter().any(|p| p.report.compare.is_some());
    // The earliest, by time (RFC 3339 texts do not sort by time: `…53.5Z` < `…53Z`).
    let started_at = parts
        .iter()
        .map(|p| &p.report.started_at)
        .min_by_key(|t| t.parse::<jiff::Timestamp>().map_or(i128::MAX, |t| t.as_nanosecond()))
        .cloned()
        .unwrap_or_default();
    let mut stats = Stats::default();
    let mut noise = NoiseModel::default();
    let mut merged_from = Vec::new();
    let (mut written, mut failed, mut waited, mut interrupted) = (0, 0, 0, false);
    let mut causes = BTreeMap::new();
    let mut results = Vec::new();
    let mut damage: Option<TapeDamage> = None;
    let mut mocks = Vec::new();
    for p in parts {
        let Part { name, mut report } = p;
        let doc = *report.stats.take().expect("checked above");
        noise.merge(doc.noise.clone());
        stats.merge(Stats::from_doc(doc, base, &name)?);
        merged_from.push(format!("{} ({name})", report.shard.as_deref().unwrap_or("?")));
        written += report.results_written;
        failed += report.results_failed;
        waited += report.results_waited;
        interrupted |= report.interrupted;
        for (k, v) in report.error_causes {
            causes.entry(k).or_insert(v);
        }
        results.extend(report.results);
        mocks.push(report.mocks);
        // Every shard reads the whole tapes: their damage is the same damage, not a sum.
        if let Some(d) = report.tape_damage {
            if damage.as_ref().is_none_or(|mine| d.exchanges_lost > mine.exchanges_lost) {
                damage = Some(d);
            }
        }
    }
    let mut report = ReplayReport::new(&stats, target, pacing, started_at, compared.then_some((config, &noise)));
    report.noise = noise;
    report.error_causes = causes;
    report.results = (!results.is_empty()).then(|| results.join(", "));
    report.results_written = written;
    report.results_failed = failed;
    report.results_waited = waited;
    report.interrupted = interrupted;
    report.tape_damage = damage;
    report.merged_from = merged_from;
    report.mocks = crate::mocks::merge(mocks);
    if !missing.is_empty() {
        let covered: Vec<String> = seen.keys().map(u32::to_string).collect();
        report.shard = Some(format!("{}/{count}", covered.join(",")));
    }
    Ok(Merged { report, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, shard: &str, doc: StatsDoc) -> Part {
        let mut report = ReplayReport::new(&Stats::default(), "http://t".into(), "1x".into(), String::new(), None);
        report.shard = Some(shard.into());
        report.stats = Some(Box::new(doc));
        Part { name: name.into(), report }
    }

    fn doc_with(sent: u64) -> StatsDoc {
        let mut s = Stats { sent, ..Stats::default() };
        s.lag.saturating_record(5);
        s.route("GET /a").count = sent;
        s.to_doc(0, &NoiseModel::default())
    }

    #[test]
    fn tampered_counts_merge_without_panics_or_unbounded_work() {
        let config = CompareConfig::default();
        // Counts at their limit add up to their limit, not a panic or a wrap.
        let merged = merge(vec![part("a", "0/2", doc_with(u64::MAX)), part("b", "1/2", doc_with(u64::MAX))], &config)
            .expect("merged");
        assert_eq!(merged.report.sent, u64::MAX);
        // A split no run makes, K past N: refused as not a shard.
        for shard in ["0/4294967295", "5/3", "0/0"] {
            let e = merge(vec![part("a", shard, doc_with(1))], &config).err().expect(shard);
            assert!(matches!(e, MergeError::NotAShard { .. }), "{shard}: {e}");
        }
        // A histogram whose header claims more counts than it holds: refused at once.
        let mut bad = doc_with(1);
        let mut header = Vec::new();
        for v in [0x1c84_9313u32, 0xFFFF_FFF0, 0, 3] {
            header.extend_from_slice(&v.to_be_bytes());
        }
        header.extend_from_slice(&1u64.to_be_bytes());
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        header.extend_from_slice(&1f64.to_be_bytes());
        bad.lag = base64::engine::general_purpose::STANDARD.encode(&header);
        let started = std::time::Instant::now();
        let e = merge(vec![part("a", "0/1", bad)], &config).err().expect("refused");
        assert!(matches!(e, MergeError::Histogram { .. }), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // More routes than a run keeps: refused, not decoded.
        let mut many = doc_with(1);
        let route = many.routes.values().next().unwrap().clone();
        for i in 0..crate::stats::MAX_ROUTES + 5 {
            many.routes.insert(format!("GET /r{i}"), route.clone());
        }
        assert!(merge(vec![part("a", "0/1", many)], &config).is_err());
        // Timelines with absurd widths and shifts stay within their bucket count.
        let mut wide = doc_with(1);
        wide.timeline = TimelineDoc { bucket_ms: 0, due: vec![u64::MAX; 3], sent: vec![1; 5_000] };
        wide.origin_unix_ns = i64::MAX;
        let mut early = doc_with(1);
        early.origin_unix_ns = i64::MIN;
        let merged = merge(vec![part("a", "0/2", wide), part("b", "1/2", early)], &config).expect("merged");
        assert!(merged.report.timeline.unwrap().replayed.len() <= 600);
    }
}
