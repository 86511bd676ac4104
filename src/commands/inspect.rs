//! `tapedeck inspect`: per segment and in total, what the tapes hold — traffic, timing,
//! routes, sizes and damage — as a table or as JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde::Serialize;
use tapedeck_captures::summary::{Percentiles, Summary};
use tapedeck_captures::tape::{self, ReadStats, SegmentHeader, SegmentReader};

use crate::cli::InspectArgs;
use crate::human;

/// One segment's findings.
struct Segment {
    path: PathBuf,
    header: Option<SegmentHeader>,
    stats: ReadStats,
    summary: Summary,
    error: Option<String>,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let (files, skipped) = tape::discover_recordings(&args.paths)?;
    for s in &skipped {
        say!("note: {s}");
    }
    // A block stored twice (an archiver restarted before acknowledging it) counts once.
    let seen = tape::SeenBlocks::default();
    let segments: Vec<Segment> = files.into_iter().map(|f| inspect_segment(f, &seen)).collect();
    let readable = segments.iter().filter(|s| s.header.is_some()).count();
    if readable == 0 {
        let first = segments.iter().find_map(|s| s.error.as_deref()).unwrap_or("no segments");
        if segments.len() == 1 {
            bail!("{first}");
        }
        bail!("none of the {} files is a readable tape; first: {first}", segments.len());
    }
    let mut total = Summary::new();
    let mut damage = Damage::default();
    for s in &segments {
        total.merge(&s.summary);
        damage.add(s);
    }
    if args.json {
        let out = JsonOut {
            segments: segments.iter().map(|s| segment_json(s, args.top)).collect(),
            total: summary_json(&total, &damage, args.top),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_human(&segments, &total, &damage, args.top);
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect_segment(path: PathBuf, seen: &tape::SeenBlocks) -> Segment {
    let mut summary = Summary::new();
    let mut reader = match SegmentReader::open(&path) {
        Ok(r) => r.skipping_seen(seen.clone()),
        Err(e) => {
            say!("warning: {e}; skipping it");
            return Segment { path, header: None, stats: ReadStats::default(), summary, error: Some(e.to_string()) };
        }
    };
    let mut error = None;
    loop {
        match reader.next_exchange() {
            Ok(Some(ex)) => summary.add(&ex),
            Ok(None) => break,
            Err(e) => {
                say!("warning: {e}; summarising what was read before it");
                error = Some(e.to_string());
                break;
            }
        }
    }
    Segment { path, header: Some(reader.header().clone()), stats: reader.stats().clone(), summary, error }
}

/// Damage totals across segments.
#[derive(Default, Serialize)]
struct Damage {
    bytes_on_disk: u64,
    records_raw_bytes: u64,
    bytes_skipped: u64,
    corrupt_regions: u64,
    corrupt_records: u64,
    /// Records stored twice and read once (not damage).
    duplicate_records: u64,
    unfinished_segments: Vec<PathBuf>,
    unreadable_segments: Vec<PathBuf>,
}

impl Damage {
    fn add(&mut self, s: &Segment) {
        if s.header.is_none() {
            self.unreadable_segments.push(s.path.clone());
            return;
        }
        self.bytes_on_disk += s.stats.file_len;
        self.records_raw_bytes += s.stats.raw_bytes;
        self.bytes_skipped += s.stats.bytes_skipped;
        self.corrupt_regions += s.stats.corrupt_regions;
        self.corrupt_records += s.stats.corrupt_records;
        self.duplicate_records += s.stats.duplicate_records;
        if !s.stats.has_footer {
            self.unfinished_segments.push(s.path.clone());
        }
    }
}

#[derive(Serialize)]
struct JsonOut {
    segments: Vec<SegmentJson>,
    total: SummaryJson,
}

#[derive(Serialize)]
struct SegmentJson {
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<SegmentHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    read: ReadStats,
    summary: SummaryJson,
}

#[derive(Serialize)]
struct RouteJson {
    route: String,
    count: u64,
    errors: u64,
    mean_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct SummaryJson {
    exchanges: u64,
    first_start: Option<String>,
    last_start: Option<String>,
    span_secs: f64,
    requests_per_sec: f64,
    methods: BTreeMap<String, u64>,
    status_classes: BTreeMap<String, u64>,
    upstream_errors: BTreeMap<String, u64>,
    latency_ms: Option<Percentiles>,
    truncated_request_bodies: u64,
    truncated_response_bodies: u64,
    request_body_bytes: u64,
    response_body_bytes: u64,
    http_bytes: u64,
    websocket_sessions: u64,
    websocket_messages: u64,
    websocket_bytes: u64,
    bytes_on_disk: u64,
    records_raw_bytes: u64,
    compression_ratio: f64,
    scrub_hits: BTreeMap<String, u64>,
    top_routes: Vec<RouteJson>,
    bytes_skipped: u64,
    corrupt_regions: u64,
    corrupt_records: u64,
    duplicate_records: u64,
}

fn summary_json(s: &Summary, d: &Damage, top: usize) -> SummaryJson {
    SummaryJson {
        exchanges: s.exchanges,
        first_start: s.first_start_ns.map(human::rfc3339),
        last_start: s.last_start_ns.map(human::rfc3339),
        span_secs: s.span_secs(),
        requests_per_sec: s.requests_per_sec(),
        methods: s.methods.clone(),
        status_classes: s.status_classes.clone(),
        upstream_errors: s.errors.clone(),
        latency_ms: s.latency(),
        truncated_request_bodies: s.truncated_requests,
        truncated_response_bodies: s.truncated_responses,
        request_body_bytes: s.request_body_bytes,
        response_body_bytes: s.response_body_bytes,
        http_bytes: s.http_bytes,
        websocket_sessions: s.websocket_sessions,
        websocket_messages: s.websocket_messages,
        websocket_bytes: s.websocket_bytes,
        bytes_on_disk: d.bytes_on_disk,
        records_raw_bytes: d.records_raw_bytes,
        compression_ratio: ratio(s.http_bytes, d.bytes_on_disk),
        scrub_hits: s.scrub_hits.clone(),
        top_routes: s
            .top_routes(top)
            .into_iter()
            .map(|(route, r)| RouteJson {
                route: route.into(),
                count: r.count,
                errors: r.errors,
                mean_ms: r.mean_ms,
                max_ms: r.max_ms,
            })
            .collect(),
        bytes_skipped: d.bytes_skipped,
        corrupt_regions: d.corrupt_regions,
        corrupt_records: d.corrupt_records,
        duplicate_records: d.duplicate_records,
    }
}

fn segment_json(s: &Segment, top: usize) -> SegmentJson {
    let mut d = Damage::default();
    d.add(s);
    SegmentJson {
        path: s.path.clone(),
        header: s.header.clone(),
        error: s.error.clone(),
        read: s.stats.clone(),
        summary: summary_json(&s.summary, &d, top),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn shares(map: &BTreeMap<String, u64>, total: u64) -> String {
    let mut items: Vec<_> = map.iter().collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    items.iter().map(|(k, v)| format!("{k} {}", human::percent(**v, total))).collect::<Vec<_>>().join("  ")
}

/// What could not be read, in one line (`none`).
fn damage_line(damage: &Damage) -> String {
    let mut problems = Vec::new();
    if damage.bytes_skipped > 0 {
        problems.push(format!(
            "{} skipped in {} damaged region(s)",
            human::bytes(damage.bytes_skipped),
            damage.corrupt_regions
        ));
    }
    if damage.corrupt_records > 0 {
        problems.push(format!("{} undecodable records", human::count(damage.corrupt_records)));
    }
    if !damage.unfinished_segments.is_empty() {
        problems.push(format!(
            "{} unfinished segment(s) (writer still running or crashed)",
            damage.unfinished_segments.len()
        ));
    }
    if !damage.unreadable_segments.is_empty() {
        problems.push(format!("{} unreadable file(s)", damage.unreadable_segments.len()));
    }
    if problems.is_empty() {
        "none".into()
    } else {
        problems.join("; ")
    }
}

fn print_human(segments: &[Segment], total: &Summary, damage: &Damage, top: usize) {
    let several = segments.len() > 1;
    if several {
        println!("{} segments", segments.len());
        for s in segments {
            let name = s.path.display();
            let Some(_) = &s.header else {
                println!("  {name}  unreadable: {}", s.error.as_deref().unwrap_or("?"));
                continue;
            };
            let state = if s.stats.has_footer { "closed" } else { "UNFINISHED" };
            let damaged = if s.stats.is_clean() {
                String::new()
            } else {
                format!(", {} skipped", human::bytes(s.stats.bytes_skipped))
            };
            println!(
                "  {name}  {state}, {} exchanges over {}, {}{damaged}",
                human::count(s.summary.exchanges),
                human::span(s.summary.span_secs()),
                human::bytes(s.stats.file_len),
            );
        }
        println!();
        println!("total");
    } else if let Some(s) = segments.first() {
        let h = s.header.as_ref();
        println!("{}", s.path.display());
        if let Some(h) = h {
            let scrub =
                h.scrub_fingerprint.as_deref().map_or("not scrubbed".to_string(), |f| format!("scrub policy {f}"));
            println!(
                "  {} tape written by {} on {}, {}, {}",
                h.kind.as_str(),
                if h.producer.is_empty() { "?" } else { &h.producer },
                if h.instance.is_empty() { "?" } else { &h.instance },
                if s.stats.has_footer { "closed" } else { "UNFINISHED (no footer)" },
                scrub
            );
        }
    }
    let row = |label: &str, value: String| println!("  {label:<16} {value}");
    let n = total.exchanges;
    row("exchanges", human::count(n));
    if let (Some(first), Some(last)) = (total.first_start_ns, total.last_start_ns) {
        row(
            "time span",
            format!("{} → {} ({})", human::time(first), human::time(last), human::span(total.span_secs())),
        );
        row("rate", format!("{:.1} requests/s", total.requests_per_sec()));
    }
    if n == 0 {
        // Nothing readable: what was lost is the news.
        row("damage", damage_line(damage));
        return;
    }
    row("methods", shares(&total.methods, n));
    row("status", shares(&total.status_classes, n));
    if let Some(l) = total.latency() {
        row(
            "latency",
            format!(
                "p50 {}  p95 {}  p99 {}  max {}",
                human::ms(l.p50),
                human::ms(l.p95),
                human::ms(l.p99),
                human::ms(l.max)
            ),
        );
    }
    row(
        "size",
        format!(
            "{} as HTTP/1.1 → {} on disk ({})",
            human::bytes(total.http_bytes),
            human::bytes(damage.bytes_on_disk),
            match ratio(total.http_bytes, damage.bytes_on_disk) {
                r if r >= 1.0 => format!("{r:.1}× smaller"),
                r if r > 0.0 => format!("{:.1}× larger: tiny exchanges and the file's index", 1.0 / r),
                _ => "nothing on disk".to_string(),
            }
        ),
    );
    row(
        "bodies",
        format!(
            "{} request, {} response bytes; truncated: {} requests, {} responses",
            human::bytes(total.request_body_bytes),
            human::bytes(total.response_body_bytes),
            human::count(total.truncated_requests),
            human::count(total.truncated_responses)
        ),
    );
    if total.websocket_sessions > 0 {
        row(
            "websocket",
            format!(
                "{} sessions, {} messages, {} of payload",
                human::count(total.websocket_sessions),
                human::count(total.websocket_messages),
                human::bytes(total.websocket_bytes)
            ),
        );
    }
    let errors = if total.errors.is_empty() {
        "none".to_string()
    } else {
        total.errors.iter().map(|(k, v)| format!("{k} {}", human::count(*v))).collect::<Vec<_>>().join(", ")
    };
    row("upstream errors", errors);
    if !total.scrub_hits.is_empty() {
        let hits: Vec<_> = total.scrub_hits.iter().map(|(k, v)| format!("{k} {}", human::count(*v))).collect();
        row("scrubbed", hits.join(", "));
    }
    row("damage", damage_line(damage));
    if damage.duplicate_records > 0 {
        row(
            "stored twice",
            format!(
                "{} exchanges, read once (the same blocks in two files, or a path given twice: an archiver \
                 restarted before acknowledging them, two archivers into one directory, a copied tape)",
                human::count(damage.duplicate_records)
            ),
        );
    }
    println!();
    println!("  {:>8}  {:>6}  {:>7}  {:>9}  {:>9}  top routes", "count", "share", "5xx/err", "mean", "max");
    for (route, r) in total.top_routes(top) {
        println!(
            "  {:>8}  {:>6}  {:>7}  {:>9}  {:>9}  {route}",
            human::count(r.count),
            human::percent(r.count, n),
            human::count(r.errors),
            human::ms(r.mean_ms),
            human::ms(r.max_ms),
        );
    }
    if total.routes.len() > top {
        println!("  … {} more routes (--top N to see more)", total.routes.len() - top);
    }
}
