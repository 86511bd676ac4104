//! Writes synthetic traffic to a tape directory, for benchmarks that need big tapes.
//!
//! `cargo run --release -p tapedeck-captures --example synth_tape -- DIR COUNT [SEGMENT_MIB]`

use tapedeck_captures::synth::{Synth, SynthConfig};
use tapedeck_captures::tape::{TapeWriter, WriterConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: synth_tape DIR COUNT [SEGMENT_MIB]");
        std::process::exit(2);
    };
    let mut config = WriterConfig::new(dir);
    config.prefix = "synth".into();
    if let Some(mib) = args.get(3) {
        config.segment_max_bytes = mib.parse::<u64>()? << 20;
    }
    let mut writer = TapeWriter::new(config)?;
    let synth = SynthConfig { count: count.parse()?, rps: 5_000.0, sessions: 500, ..Default::default() };
    for ex in Synth::new(synth) {
        writer.append(&ex)?;
    }
    let stats = writer.stats().clone();
    let segments = writer.finish()?;
    eprintln!(
        "wrote {} exchanges in {} segment(s), {} bytes on disk",
        stats.records,
        segments.len(),
        stats.bytes_on_disk
    );
    Ok(())
}
