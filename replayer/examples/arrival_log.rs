//! A target for timing benchmarks: answers every request `200 ok` and logs when each
//! `GET /seq/N` arrived (monotonic ns since start). `GET /dump` returns the log as
//! `N NS` lines and clears it.
//!
//! `cargo run --release -p tapedeck-replayer --example arrival_log -- 127.0.0.1:18190`

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18190".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("arrival_log: listening on {addr}");
        let start = Instant::now();
        let log: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let at = start.elapsed().as_nanos() as u64;
                    let path = req.uri().path();
                    let body = if let Some(n) = path.strip_prefix("/seq/").and_then(|n| n.parse().ok()) {
                        log.lock().unwrap().push((n, at));
                        Bytes::from_static(b"ok")
                    } else if path == "/dump" {
                        let entries = std::mem::take(&mut *log.lock().unwrap());
                        Bytes::from(entries.iter().map(|(n, t)| format!("{n} {t}\n")).collect::<String>())
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
