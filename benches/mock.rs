//! `tapedeck mock`'s lookups on a 100k-exchange tape of realistic traffic (the synthetic
//! JSON API mix), against the peer a mock without an index is: a scan of the recorded
//! requests for the same method, target and body.
//!
//! `cargo bench --bench mock` — see BENCHMARKS.md for results.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::Exchange;
use tapedeck_mock::{Index, Match};

const N: usize = 100_000;

fn bench(c: &mut Criterion) {
    let exchanges: Vec<Exchange> = Synth::new(SynthConfig { count: N, ..Default::default() }).collect();
    let mut g = c.benchmark_group("mock_index");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("build_100k", |b| b.iter(|| Index::build(exchanges.iter().cloned())));
    g.finish();

    let index = Index::build(exchanges.iter().cloned());
    // Requests as recorded, spread over the tape, and the same targets with an id that was
    // never recorded (the closest recorded request of the route answers).
    let asked: Vec<&Exchange> = exchanges.iter().step_by(N / 1000).collect();
    let unseen: Vec<(String, String)> = asked
        .iter()
        .map(|e| (e.request.method.clone(), e.request.target.replace(|c: char| c.is_ascii_digit(), "9")))
        .collect();
    let mut g = c.benchmark_group("mock_answer");
    g.throughput(Throughput::Elements(asked.len() as u64));
    g.bench_function("exact", |b| {
        b.iter(|| {
            asked
                .iter()
                .filter(|e| {
                    matches!(index.answer(&e.request.method, &e.request.target, &e.request.body.data), Match::Found(..))
                })
                .count()
        })
    });
    g.bench_function("similar_again", |b| {
        b.iter(|| unseen.iter().filter(|(m, t)| matches!(index.answer(m, t, b""), Match::Found(..))).count())
    });
    // Requests never asked before (each iteration other ids): compared, not remembered.
    let mut n = 0u64;
    g.bench_function("similar_first_time", |b| {
        b.iter(|| {
            n += 1;
            let id = n.to_string();
            asked
                .iter()
                .filter(|e| {
                    let target = e.request.target.replace(|c: char| c.is_ascii_digit(), &id);
                    matches!(index.answer(&e.request.method, &target, b""), Match::Found(..))
                })
                .count()
        })
    });
    g.finish();
    // A tenth as many lookups: a scan of 100k requests each.
    let mut g = c.benchmark_group("mock_answer_peer");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100));
    g.bench_function("scan_exact", |b| {
        b.iter(|| {
            asked[..100]
                .iter()
                .map(|a| {
                    // Every recorded answer of the request (a sequence is answered in order).
                    exchanges
                        .iter()
                        .filter(|e| {
                            e.request.method == a.request.method
                                && e.request.target == a.request.target
                                && e.request.body.data[..] == a.request.body.data[..]
                        })
                        .count()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
