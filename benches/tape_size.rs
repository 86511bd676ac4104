//! Size on disk of the same traffic in different forms: raw HTTP/1.1 text (what GoReplay
//! stores), JSON lines + zstd, and tapedeck's `.tape`. Deterministic: no timing involved.
//!
//! `cargo bench --bench tape_size`

use std::io::Write;

use tapedeck_captures::convert::{Exporter, Format};
use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::{TapeWriter, WriterConfig};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; this one has none to list.
    }
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>12} {:>10} {:>10}",
        "input", "exchanges", "HTTP/1.1", "jsonl+zstd-3", ".tape", "HTTP/tape", "jsonl/tape"
    );
    for (name, body) in [("mix", None), ("1KiB", Some(1024))] {
        let exchanges: Vec<_> =
            Synth::new(SynthConfig { count: 20_000, body_bytes: body, ..Default::default() }).collect();
        let mut http = Exporter::new(Format::Gor, Vec::new()).unwrap();
        for e in &exchanges {
            http.write(e).unwrap();
        }
        let http = http.finish().unwrap().len();
        let mut jsonl = zstd::Encoder::new(Vec::new(), 3).unwrap();
        for e in &exchanges {
            serde_json::to_writer(&mut jsonl, e).unwrap();
            jsonl.write_all(b"\n").unwrap();
        }
        let jsonl = jsonl.finish().unwrap().len();
        let dir = tempfile::tempdir().unwrap();
        let mut w = TapeWriter::new(WriterConfig::new(dir.path())).unwrap();
        for e in &exchanges {
            w.append(e).unwrap();
        }
        let tape: u64 = w.finish().unwrap().iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        println!(
            "{name:<6} {:>12} {:>12} {:>14} {:>12} {:>9.1}x {:>9.2}x",
            exchanges.len(),
            http,
            jsonl,
            tape,
            http as f64 / tape as f64,
            jsonl as f64 / tape as f64
        );
    }
}
