//! Benchmark harness: the proxy with a tape writer that stalls (its scrub hook blocks for
//! STALL_SECS on the first capture, as a hung disk would), to show that memory stays
//! bounded under load while captures are dropped and requests keep flowing.
//!
//! `cargo run --release -p tapedeck-proxy --example stalled_writer -- LISTEN UPSTREAM DIR STALL_SECS`
//! Used by `benches/stalled_writer.sh`, which drives load with wrk and samples RSS.

use std::time::Duration;

use tapedeck_proxy::capture::CaptureConfig;
use tapedeck_proxy::config::ProxyConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: stalled_writer LISTEN UPSTREAM DIR STALL_SECS");
        std::process::exit(2);
    }
    let stall = Duration::from_secs(args[4].parse()?);
    let mut config = ProxyConfig::new(args[1].parse()?, args[2].parse()?);
    config.admin = Some("127.0.0.1:18095".parse()?);
    let mut capture = CaptureConfig::new(&args[3]);
    let mut stalled = false;
    capture.scrub = Some(Box::new(move |_| {
        if !stalled {
            stalled = true;
            std::thread::sleep(stall);
        }
    }));
    config.capture = Some(capture);
    let proxy = tapedeck_proxy::start(config).await?;
    eprintln!("listening on {}", proxy.local_addr());
    tokio::signal::ctrl_c().await?;
    let report = proxy.shutdown().await;
    eprintln!("stopped: {:?}", report.capture.map(|c| c.stats));
    Ok(())
}
