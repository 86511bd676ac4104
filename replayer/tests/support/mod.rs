//! Test fixtures for the replayer: a target server that logs when each request arrives and
//! when its response went out, and builders for tapes with exact recorded timing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tapedeck_captures::exchange::{Body, Headers, Request, Response};
use tapedeck_captures::tape::{TapeWriter, WriterConfig};
use tapedeck_captures::{ConnectionId, Exchange, ExchangeId, Timing};

/// One request as the target saw it.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// When its head was parsed.
    pub at: Instant,
    /// When its response was handed back.
    pub answered: Instant,
    pub method: String,
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The client's address: one per connection.
    pub peer: SocketAddr,
}

/// A target answering `200 ok` (after `delay`), logging every request.
pub struct Target {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Arrival>>>,
    concurrent: Arc<AtomicUsize>,
    max_concurrent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Target {
    pub fn start(delay: Duration) -> Target {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let concurrent = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let t = Target {
            addr,
            log: log.clone(),
            concurrent: concurrent.clone(),
            max_concurrent: max_concurrent.clone(),
            stop: stop.clone(),
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Ok((stream, peer))) =
                        tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
                    else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (log, concurrent, max_concurrent) = (log.clone(), concurrent.clone(), max_concurrent.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let at = Instant::now();
                            let (log, concurrent, max_concurrent) =
                                (log.clone(), concurrent.clone(), max_concurrent.clone());
                            async move {
                                let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                                max_concurrent.fetch_max(now, Ordering::SeqCst);
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                concurrent.fetch_sub(1, Ordering::SeqCst);
                                log.lock().unwrap().push(Arrival {
                                    at,
                                    answered: Instant::now(),
                                    method: parts.method.to_string(),
                                    target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                                    headers: parts.headers,
                                    body,
                                    peer,
                                });
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                    b"ok",
                                ))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        t
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        let mut v = self.log.lock().unwrap().clone();
        v.sort_by_key(|a| a.at);
        v
    }

    /// Most requests the target was working on at once.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.load(Ordering::SeqCst)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A recorded exchange: `method target` at `at_ms` after the recording began, answered
/// `200` in `took_ms`.
pub fn recorded(id: u64, at_ms: f64, method: &str, target: &str) -> Exchange {
    const EPOCH: i64 = 1_764_000_000_000_000_000;
    let mut headers = Headers::new();
    headers.push("host", "api.shop.example");
    headers.push("x-recorded-id", id.to_string());
    let mut timing = Timing::at(EPOCH, EPOCH + (at_ms * 1e6) as i64);
    timing.head_ns = Some(4_000_000);
    timing.end_ns = Some(5_000_000);
    Exchange {
        id: ExchangeId(id),
        connection: ConnectionId(0),
        timing,
        request: Request {
            method: method.into(),
            scheme: "https".into(),
            authority: "api.shop.example".into(),
            target: target.into(),
            headers,
            body: Body::full(Bytes::new()),
            ..Default::default()
        },
        response: Some(Response { status: 200, body: Body::full(Bytes::from_static(b"ok")), ..Default::default() }),
        ..Default::default()
    }
}

/// Writes `exchanges` as one closed tape in `dir`, with `labels`.
pub fn write_tape(dir: &Path, exchanges: &[Exchange], labels: &[(&str, &str)]) -> PathBuf {
    let mut config = WriterConfig::new(dir);
    config.instance = "test".into();
    config.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut w = TapeWriter::new(config).unwrap();
    for e in exchanges {
        w.append(e).unwrap();
    }
    w.finish().unwrap();
    dir.to_path_buf()
}

/// The `x-recorded-id` of an arrival.
pub fn recorded_id(a: &Arrival) -> u64 {
    a.headers["x-recorded-id"].to_str().unwrap().parse().unwrap()
}

/// Percentile `q` (0..1) of `values`.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
