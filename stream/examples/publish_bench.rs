//! Publish throughput of the capture sink: COUNT synthetic exchanges (JSON-API shaped, as
//! `captures::synth` makes them) appended through a `NatsSink` as fast as it takes them,
//! blocks of up to BLOCK_KIB KiB, JetStream acknowledgements for every block; prints the
//! exchanges and compressed MB/s acknowledged, and what was dropped.
//!
//!   cargo run --release -p tapedeck-stream --example publish_bench -- nats://127.0.0.1:4222/BENCH 200000 [BLOCK_KIB]

use std::time::{Duration, Instant};

use tapedeck_captures::sink::CaptureSink;
use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::WriterConfig;
use tapedeck_stream::sink::{NatsSink, NatsSinkConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: publish_bench nats://HOST:PORT/STREAM COUNT [BLOCK_KIB]");
        std::process::exit(2);
    }
    let address = args[1].parse().expect("a stream address");
    let count: usize = args[2].parse().expect("a count");
    let block_kib: usize = args.get(3).map_or(960, |b| b.parse().expect("KiB"));
    let exchanges: Vec<_> = Synth::new(SynthConfig { count, ..Default::default() }).collect();
    let address: tapedeck_stream::address::StreamAddress = address;
    // What encoding and compressing alone cost (the sink's work before the network).
    let encoded = Instant::now();
    let (mut builder, mut frame, mut bytes) = (tapedeck_captures::tape::block::BlockBuilder::new(), Vec::new(), 0);
    let mut compressor = zstd::bulk::Compressor::new(3).expect("zstd");
    for ex in &exchanges {
        builder.push(ex, i64::MIN).expect("encodes");
        if builder.is_full(4096, block_kib << 10) {
            builder.frame(&mut compressor, &mut frame).expect("compresses");
            bytes += frame.len();
            builder.reset();
        }
    }
    let secs = encoded.elapsed().as_secs_f64();
    println!(
        "encode+compress alone: {:.0} exchanges/s, {:.1} MB/s compressed",
        exchanges.len() as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    let mut config = NatsSinkConfig::new(address.clone());
    // A service of its own: the stream is created for its subjects only.
    config.service = format!("bench-{}", address.stream);
    // REPLICAS=3 against a JetStream cluster: the stream replicated on three servers.
    let replicas = std::env::var("REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    config.create_stream = Some(tapedeck_stream::StreamSettings { replicas, ..Default::default() });
    config.queue_max_bytes = 1 << 30;
    config.close_timeout = Duration::from_secs(120);
    let mut sink = NatsSink::new(config);
    let mut writer = WriterConfig::new("unused");
    writer.instance = "bench".into();
    writer.block_max_bytes = block_kib << 10;
    sink.open(&writer);
    // Connected before the clock starts.
    let ready = Instant::now();
    while !sink.stats().connected && ready.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    for ex in &exchanges {
        sink.append(ex);
    }
    let stats = sink.close();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} exchanges in {} blocks acknowledged in {secs:.2} s: {:.0} exchanges/s, {:.1} MB/s compressed; dropped {}",
        stats.records,
        stats.blocks,
        stats.records as f64 / secs,
        stats.bytes as f64 / secs / 1e6,
        stats.dropped_queue_full + stats.dropped_encode + stats.dropped_refused
    );
}
