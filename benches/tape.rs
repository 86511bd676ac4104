//! Tape encode and decode throughput on realistic traffic, against a peer measured in the
//! same run: JSON lines through a zstd stream at the same level (what a tool without its
//! own format would write).
//!
//! `cargo bench --bench tape` — see BENCHMARKS.md for results.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::{SegmentReader, TapeWriter, WriterConfig};
use tapedeck_captures::Exchange;

const N: usize = 5_000;

fn inputs() -> Vec<(&'static str, Vec<Exchange>)> {
    vec![
        ("mix", Synth::new(SynthConfig { count: N, ..Default::default() }).collect()),
        ("1KiB", Synth::new(SynthConfig { count: N, body_bytes: Some(1024), ..Default::default() }).collect()),
    ]
}

fn write_tape(dir: &Path, exchanges: &[Exchange]) -> std::path::PathBuf {
    let mut w = TapeWriter::new(WriterConfig::new(dir)).unwrap();
    for e in exchanges {
        w.append(e).unwrap();
    }
    w.finish().unwrap().remove(0)
}

fn write_jsonl_zstd(path: &Path, exchanges: &[Exchange]) {
    let mut enc = zstd::Encoder::new(BufWriter::new(File::create(path).unwrap()), 3).unwrap();
    for e in exchanges {
        serde_json::to_writer(&mut enc, e).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    enc.finish().unwrap().flush().unwrap();
}

fn bench(c: &mut Criterion) {
    for (name, exchanges) in inputs() {
        let raw: usize = exchanges.iter().map(|e| tapedeck_captures::convert::http::wire_size(e) as usize).sum();
        eprintln!("input {name}: {N} exchanges, {:.1} MB as HTTP/1.1 ({} B each)", raw as f64 / 1e6, raw / N);
        let mut g = c.benchmark_group(format!("encode/{name}"));
        g.throughput(Throughput::Elements(N as u64));
        g.sample_size(20);
        g.bench_function(BenchmarkId::new("tape", name), |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| write_tape(dir.path(), &exchanges),
                criterion::BatchSize::PerIteration,
            )
        });
        g.bench_function(BenchmarkId::new("jsonl+zstd", name), |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| write_jsonl_zstd(&dir.path().join("x.jsonl.zst"), &exchanges),
                criterion::BatchSize::PerIteration,
            )
        });
        g.finish();

        let dir = tempfile::tempdir().unwrap();
        let tape = write_tape(dir.path(), &exchanges);
        let jsonl = dir.path().join("x.jsonl.zst");
        write_jsonl_zstd(&jsonl, &exchanges);
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.throughput(Throughput::Elements(N as u64));
        g.sample_size(20);
        g.bench_function(BenchmarkId::new("tape", name), |b| {
            b.iter(|| {
                let mut r = SegmentReader::open(&tape).unwrap();
                let mut n = 0;
                while let Some(e) = r.next_exchange().unwrap() {
                    n += e.request.body.data.len();
                }
                n
            })
        });
        g.bench_function(BenchmarkId::new("jsonl+zstd", name), |b| {
            b.iter(|| {
                let dec = BufReader::new(zstd::Decoder::new(File::open(&jsonl).unwrap()).unwrap());
                let mut n = 0;
                for line in dec.lines() {
                    let e: Exchange = serde_json::from_str(&line.unwrap()).unwrap();
                    n += e.request.body.data.len();
                }
                n
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
