//! The admin listener (127.0.0.1 by default): `/metrics` (Prometheus text), `/healthz`
//! (the process is alive) and `/readyz` (accepting traffic; 503 while draining); with a
//! live tap (the shadow), its metrics in `/metrics` and its pages (`/shadow`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use tapedeck_captures::sink::LiveTap;

use crate::metrics::Metrics;

/// Admin connections served at once; more are closed on accept (a scraper needs one).
const MAX_CONNECTIONS: usize = 64;

/// Serves admin requests until the task is aborted. A client must send each request
/// head within `header_timeout` (which also bounds an idle keep-alive connection), as on
/// the main listener; at most `MAX_CONNECTIONS` (64) are open at once.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    tap: Option<Arc<dyn LiveTap>>,
    ready: Arc<AtomicBool>,
    header_timeout: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        let tap = tap.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = route(&req, &metrics, tap.as_deref(), &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

fn route(
    req: &Request<Incoming>,
    metrics: &Metrics,
    tap: Option<&dyn LiveTap>,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    let page = tap.filter(|_| req.method() == Method::GET).and_then(|t| t.page(req.uri().path()));
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        _ if page.is_some() => {
            let page = page.expect("checked");
            (StatusCode::OK, page.content_type, Bytes::from(page.body))
        }
        (&Method::GET, "/metrics") => {
            let mut text = metrics.render();
            if let Some(tap) = tap {
                // Before the exposition's end marker.
                let eof = text.ends_with("# EOF\n");
                if eof {
                    text.truncate(text.len() - "# EOF\n".len());
                }
                tap.metrics(&mut text);
                if eof {
                    text.push_str("# EOF\n");
                }
            }
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", Bytes::from(text))
        }
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        (&Method::GET, "/readyz") if ready.load(Ordering::Acquire) => {
            (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n"))
        }
        (&Method::GET, "/readyz") => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", Bytes::from_static(b"draining\n")),
        _ => {
            (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found: try /metrics, /healthz or /readyz\n"))
        }
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}
