//! Capture behaviour under load: sampling statistics, whole sessions, the rate cap, and a
//! stalled writer whose full queue drops captures (counted) while every request succeeds.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

/// Sends `n` requests with `concurrency` in flight; `make` builds request `i`. Returns the
/// slowest response time.
async fn blast(
    proxy: &TestProxy,
    n: usize,
    concurrency: usize,
    make: impl Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
) -> Duration {
    let client = client();
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, make, next) = (client.clone(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return slowest;
                }
                let started = Instant::now();
                let (status, _, _) = send(&client, make(i)).await;
                assert_eq!(status, StatusCode::OK, "request {i} failed");
                slowest = slowest.max(started.elapsed());
            }
        }));
    }
    let _ = proxy;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_sampling_captures_about_ten_percent() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |c| c.sampling.rate = 0.10).await;
    let url = proxy.url("/echo");
    blast(&proxy, 10_000, 16, move |_| Request::get(url.clone()).body(Full::new(Bytes::new())).unwrap()).await;
    let m = metrics_text(proxy.admin).await;
    let captured = metric(&m, "tapedeck_captured_total");
    let skipped = metric(&m, "tapedeck_sampled_out_total{reason=\"sampled\"}");
    assert_eq!(captured + skipped, 10_000.0);
    // Binomial(10000, 0.1): sd = 30; ±150 is five sd.
    assert!((850.0..=1150.0).contains(&captured), "captured {captured} of 10000 at 10%");
    let on_disk = proxy.finish().await.len() as f64;
    assert_eq!(on_disk, captured, "every capture reached the tape");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_sampling_is_all_or_nothing() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |c| {
        c.sampling.rate = 0.25;
        c.sampling.key = Some("cookie:sid".parse().unwrap());
    })
    .await;
    let url = proxy.url("/echo");
    // 400 sessions × 5 requests, interleaved.
    blast(&proxy, 2000, 8, move |i| {
        Request::get(format!("{url}?s={}&n={}", i % 400, i / 400))
            .header("cookie", format!("theme=dark; sid=session-{}", i % 400))
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let captured = proxy.finish().await;
    let mut per_session: HashMap<String, usize> = HashMap::new();
    let mut pseudonyms: HashMap<String, String> = HashMap::new();
    for e in &captured {
        let q = e.request.query().unwrap();
        let s = q.split('&').next().unwrap().to_string();
        *per_session.entry(s.clone()).or_default() += 1;
        let pseudonym = e.session.clone().expect("captured session requests carry their session id");
        assert!(!pseudonym.contains("session-"), "the raw key is not stored: {pseudonym}");
        assert_eq!(pseudonyms.entry(s).or_insert_with(|| pseudonym.clone()), &pseudonym, "one pseudonym per session");
    }
    assert!(per_session.values().all(|&n| n == 5), "sessions are captured whole: {per_session:?}");
    let sessions = per_session.len();
    assert!((60..=140).contains(&sessions), "{sessions} of 400 sessions at 25%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_cap_and_route_rules_limit_captures() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |c| {
        c.sampling.max_per_sec = Some(20.0);
        c.sampling.exclude = vec!["^/status/".parse().unwrap()];
    })
    .await;
    let url = proxy.url("");
    let started = Instant::now();
    blast(&proxy, 400, 4, move |i| {
        let path = if i % 4 == 0 { "/status/200" } else { "/echo" };
        Request::get(format!("{url}{path}")).body(Full::new(Bytes::new())).unwrap()
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let m = metrics_text(proxy.admin).await;
    assert_eq!(metric(&m, "tapedeck_sampled_out_total{reason=\"filtered\"}"), 100.0);
    let captured = proxy.finish().await;
    assert!(captured.iter().all(|e| e.request.target == "/echo"));
    let cap = 20.0 + 20.0 * elapsed + 1.0;
    assert!((20..=cap as usize).contains(&captured.len()), "{} captured in {elapsed:.2}s at 20/s", captured.len());
}

/// A writer that cannot keep up (here: a scrub hook that takes 20 ms per exchange) fills
/// the queue; further captures are dropped and counted, and no request waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_drops_captures_not_requests() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |c| {
        let capture = c.capture.as_mut().unwrap();
        capture.queue_max_exchanges = 4;
        capture.scrub = Some(Box::new(|_| std::thread::sleep(Duration::from_millis(20))));
    })
    .await;
    let url = proxy.url("/echo");
    let slowest = blast(&proxy, 500, 8, move |_| {
        Request::post(url.clone()).body(Full::new(Bytes::from_static(b"payload"))).unwrap()
    })
    .await;
    assert!(slowest < Duration::from_millis(500), "a request waited {slowest:?} on capture");
    let m = metrics_text(proxy.admin).await;
    assert_eq!(metric(&m, "tapedeck_captured_total"), 500.0);
    let written = proxy.finish().await.len() as u64;
    // Read after shutdown: the last captures are queued (or dropped) as their bodies finish.
    let dropped = proxy.metrics.dropped_count(tapedeck_proxy::metrics::DropReason::QueueFull);
    assert!(dropped > 100, "most captures are dropped while the writer is stalled: {dropped}");
    assert_eq!(written + dropped, 500, "every capture is either written or counted as dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&upstream.url(), |_| {}).await;
    let c = client();
    let (s, _, b) = get(&c, &format!("http://{}/healthz", proxy.admin)).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"ok\n"[..]));
    let (s, _, _) = get(&c, &format!("http://{}/readyz", proxy.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&c, &format!("http://{}/nope", proxy.admin)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    get(&c, &proxy.url("/status/503")).await;
    let m = metrics_text(proxy.admin).await;
    for name in [
        "tapedeck_requests_total{class=\"5xx\"}",
        "tapedeck_captured_total",
        "tapedeck_capture_queue_depth",
        "tapedeck_capture_written_bytes_total",
        "tapedeck_upstream_latency_seconds_count",
        "tapedeck_added_latency_seconds_count",
        "tapedeck_connections",
    ] {
        metric(&m, name);
    }
    assert_eq!(metric(&m, "tapedeck_requests_total{class=\"5xx\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_open_segment_loses_only_what_it_held_and_counts_it() {
    let upstream = Upstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url(), |c| {
        c.capture.as_mut().unwrap().writer.block_max_age = Duration::from_millis(50);
    })
    .await;
    let client = client();
    let send = |n: usize| {
        let (client, url) = (client.clone(), proxy.url("/echo"));
        async move {
            for _ in 0..n {
                assert_eq!(get(&client, &url).await.0, StatusCode::OK);
            }
        }
    };
    send(30).await;
    // Every capture so far is in the open segment's blocks.
    let written = wait_for_metric(proxy.admin, "tapedeck_capture_written_total", 30.0).await;
    assert_eq!(written, 30.0);
    let partial = std::fs::read_dir(proxy.tape_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tape.partial"))
        .expect("an open segment");
    std::fs::remove_file(&partial).unwrap();
    send(20).await;
    let lost = wait_for_metric(proxy.admin, "tapedeck_capture_deleted_total", 30.0).await;
    assert_eq!(lost, 30.0, "what the deleted file held is counted");
    let m = metrics_text(proxy.admin).await;
    assert_eq!(
        metric(&m, "tapedeck_capture_dropped_total{reason=\"write_error\"}"),
        0.0,
        "nothing failed to be written"
    );
    let after = proxy.finish().await;
    assert_eq!(after.len(), 20, "later captures go to a new segment");
}
