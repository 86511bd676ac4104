//! Writes a tape of `COUNT` independent `GET /seq/N` requests recorded at a steady `RPS`,
//! for replay benchmarks (`benches/replay_load.sh`).
//!
//! `cargo run --release -p tapedeck-replayer --example bench_tape -- DIR COUNT RPS [BODY]`
//!
//! Every response is recorded as `{"ok":true}`, or with BODY (a file, served as
//! `application/json`) for comparison benchmarks.

use tapedeck_captures::exchange::{Body, Headers, Request, Response};
use tapedeck_captures::tape::{TapeWriter, WriterConfig};
use tapedeck_captures::{Exchange, ExchangeId, Timing};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count), Some(rps)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: bench_tape DIR COUNT RPS [BODY]");
        std::process::exit(2);
    };
    let (count, rps): (u64, f64) = (count.parse()?, rps.parse()?);
    let mut config = WriterConfig::new(dir);
    config.prefix = "bench".into();
    let start = tapedeck_captures::tape::writer::now_unix_ns();
    config.tape_start_unix_ns = start;
    let mut writer = TapeWriter::new(config)?;
    let (body, mut response_headers) = (args.get(4).map(std::fs::read).transpose()?, Headers::new());
    if body.is_some() {
        response_headers.push("content-type", "application/json");
    }
    let body = Body::full(body.unwrap_or_else(|| b"{\"ok\":true}".to_vec()));
    let mut headers = Headers::new();
    headers.push("host", "api.shop.example");
    headers.push("accept", "application/json");
    for n in 0..count {
        let mut timing = Timing::at(start, start + (n as f64 * 1e9 / rps) as i64);
        timing.head_ns = Some(1_000_000);
        timing.end_ns = Some(1_100_000);
        writer.append(&Exchange {
            id: ExchangeId(n + 1),
            timing,
            request: Request {
                method: "GET".into(),
                scheme: "https".into(),
                authority: "api.shop.example".into(),
                target: format!("/seq/{n}"),
                headers: headers.clone(),
                ..Default::default()
            },
            response: Some(Response {
                status: 200,
                headers: response_headers.clone(),
                body: body.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })?;
    }
    let segments = writer.finish()?;
    eprintln!("wrote {count} requests at {rps}/s into {} segment(s) in {dir}", segments.len());
    Ok(())
}
