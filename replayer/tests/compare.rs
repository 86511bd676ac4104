//! Comparison against real targets on 127.0.0.1: noise learned from the recording is set
//! apart while a real change is reported; ids a target generates are carried into later
//! requests of the same session (and without correlation those requests fail); the
//! report's JSON round-trips, its HTML is one file with nothing fetched from elsewhere.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{recorded, write_tape};
use tapedeck_captures::exchange::{Body, Headers, Response};
use tapedeck_captures::Exchange;
use tapedeck_compare::diff::DiffKind;
use tapedeck_replayer::schedule::Pacing;
use tapedeck_replayer::{replay, ReplayConfig, ReplayReport};
use tapedeck_report::{html, junit};

/// What a handler answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);
type Handler = Arc<dyn Fn(&str, &str, &[u8]) -> Answer + Send + Sync>;

/// A server answering with `handler`; runs until the test process ends.
fn serve(handler: Handler) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            let (status, headers, text) = handler(parts.method.as_str(), &target, &body);
                            let mut r =
                                http::Response::builder().status(status).header("content-type", "application/json");
                            for (k, v) in headers {
                                r = r.header(k, v);
                            }
                            Ok::<_, Infallible>(r.body(Full::new(Bytes::from(text))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn json_response(status: u16, body: &str, headers: &[(&str, &str)]) -> Option<Response> {
    let mut h = Headers::new();
    h.push("content-type", "application/json");
    for (k, v) in headers {
        h.push(*k, *v);
    }
    Some(Response { status, headers: h, body: Body::full(body.as_bytes().to_vec()), ..Default::default() })
}

fn run(
    exchanges: &[Exchange],
    target: SocketAddr,
    tweak: impl FnOnce(&mut ReplayConfig),
) -> (tempfile::TempDir, ReplayReport) {
    let dir = tempfile::tempdir().unwrap();
    let tapes = write_tape(&dir.path().join("tapes"), exchanges, &[]);
    let mut config = ReplayConfig::new(vec![tapes], format!("http://{target}").parse().unwrap()).unwrap();
    config.pacing = Pacing::Max;
    config.max_in_flight = 8;
    config.workers = 2;
    tweak(&mut config);
    let report = replay(&config, &AtomicBool::new(false), Default::default()).unwrap();
    (dir, report)
}

fn uuid(i: u64) -> String {
    format!("{:08x}-1111-4222-a333-{:012x}", i * 2_654_435_761 % 0xffff_ffff, i * 97)
}

#[test]
fn noise_learned_from_the_recording_is_set_apart_and_a_real_change_is_not() {
    // Identical requests answered with another `seq` each time: `seq` is noise. Ids and
    // timestamps differ by design. The price of item 2 really changed on the target.
    let mut exchanges = Vec::new();
    for i in 0..40u64 {
        let item = 1 + i % 2;
        let mut ex = recorded(i, i as f64, "GET", &format!("/items/{item}"));
        let price = if item == 1 { 10 } else { 20 };
        let body = format!(
            r#"{{"item":{item},"price":{price},"seq":{i},"rid":"{}","at":"2025-11-24T10:00:{:02}Z"}}"#,
            uuid(i),
            i % 60
        );
        ex.response = json_response(200, &body, &[("cache-control", "max-age=60")]);
        exchanges.push(ex);
    }
    let target = serve(Arc::new(|_, path: &str, _| {
        let item: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        let price = if item == 1 { 10 } else { 25 };
        let body = format!(
            r#"{{"item":{item},"price":{price},"seq":999,"rid":"{}","at":"{}"}}"#,
            uuid(item + 1000),
            jiff::Timestamp::now()
        );
        (200, vec![("cache-control", "max-age=60".to_string())], body)
    }));
    let (_dir, report) = run(&exchanges, target, |_| {});
    let route = report.routes.iter().find(|r| r.route == "GET /items/{id}").expect("the route is reported");
    let d = route.diffs.as_ref().expect("compared");
    assert_eq!(d.compared, 40);
    assert_eq!(d.differing, 20, "only item 2's answers differ for real: {d:#?}");
    let keys: Vec<(&str, DiffKind)> = d.findings.iter().map(|f| (f.key.as_str(), f.kind)).collect();
    assert_eq!(keys, [("$.price", DiffKind::ValueChanged)]);
    assert_eq!((d.findings[0].example.recorded.as_str(), d.findings[0].example.replayed.as_str()), ("20", "25"));
    let noise: HashMap<&str, &str> = d.noise.iter().map(|n| (n.key.as_str(), n.reason.as_str())).collect();
    assert_eq!(noise.get("$.seq"), Some(&"learned from the recording"), "{noise:?}");
    assert_eq!(noise.get("$.rid"), Some(&"uuid"));
    assert_eq!(noise.get("$.at"), Some(&"timestamp"));
    assert_eq!(report.compare.as_ref().unwrap().differing, 20);
    // The learned model is what a later run can start from.
    assert!(report.noise.source("GET /items/{id}", "$.seq").is_some());
}

/// A shop that numbers new orders from 7000; unknown orders are 404.
fn shop() -> SocketAddr {
    let orders: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let next = Arc::new(Mutex::new(7000u64));
    serve(Arc::new(move |method, path, body| match (method, path) {
        ("POST", "/orders") => {
            let mut n = next.lock().unwrap();
            let id = *n;
            *n += 1;
            let sku = String::from_utf8_lossy(body).into_owned();
            orders.lock().unwrap().insert(id, sku.clone());
            (201, vec![("location", format!("/orders/{id}"))], format!(r#"{{"id":{id},"sku":{sku}}}"#))
        }
        ("GET", p) => match p.strip_prefix("/orders/").and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => match orders.lock().unwrap().get(&id) {
                Some(sku) => (200, vec![], format!(r#"{{"id":{id},"sku":{sku},"status":"created"}}"#)),
                None => (404, vec![], r#"{"error":"no such order"}"#.into()),
            },
            None => (404, vec![], "{}".into()),
        },
        _ => (405, vec![], "{}".into()),
    }))
}

/// Five sessions, each creating an order (recorded id 100+k) and fetching it.
fn orders_recording() -> Vec<Exchange> {
    let mut out = Vec::new();
    for k in 0..5u64 {
        let id = 100 + k;
        let mut create = recorded(2 * k, k as f64 * 3.0, "POST", "/orders");
        create.session = Some(format!("user-{k}"));
        create.request.body = Body::full(format!("\"sku-{k}\"").into_bytes());
        create.response =
            json_response(201, &format!(r#"{{"id":{id},"sku":"sku-{k}"}}"#), &[("location", &format!("/orders/{id}"))]);
        let mut fetch = recorded(2 * k + 1, k as f64 * 3.0 + 1.0, "GET", &format!("/orders/{id}"));
        fetch.session = Some(format!("user-{k}"));
        fetch.response = json_response(200, &format!(r#"{{"id":{id},"sku":"sku-{k}","status":"created"}}"#), &[]);
        out.push(create);
        out.push(fetch);
    }
    out
}

#[test]
fn ids_the_target_generates_are_carried_into_later_requests_of_the_session() {
    let target = shop();
    let (_dir, report) = run(&orders_recording(), target, |_| {});
    let fetch = report.routes.iter().find(|r| r.route == "GET /orders/{id}").unwrap();
    assert_eq!(fetch.replayed_status.get("2xx"), Some(&5), "every fetch found its new order: {fetch:#?}");
    let c = report.compare.as_ref().unwrap();
    assert_eq!(c.differing, 0, "the target's own ids are not differences: {:#?}", report.routes);
    assert!(c.substitutions >= 5, "{c:?}");

    // Without correlation the fetches ask for the recorded ids, which staging never made.
    let target = shop();
    let (_dir, report) = run(&orders_recording(), target, |c| {
        let compare = c.compare.as_mut().unwrap();
        compare.auto_correlate = false;
    });
    let fetch = report.routes.iter().find(|r| r.route == "GET /orders/{id}").unwrap();
    assert_eq!(fetch.replayed_status.get("4xx"), Some(&5));
    let d = fetch.diffs.as_ref().unwrap();
    assert_eq!((d.differing, d.findings[0].kind), (5, DiffKind::Status));
}

#[test]
fn the_report_round_trips_as_json_and_renders_as_one_self_contained_html_file() {
    let target = shop();
    let (dir, mut report) = run(&orders_recording(), target, |_| {});
    report.apply_gates(&["errors==0".parse().unwrap(), "diff_rate<=1%".parse().unwrap()]);
    let path: PathBuf = dir.path().join("report.json");
    report.save(&path, false).unwrap();
    let loaded = ReplayReport::load(&path).unwrap();
    assert_eq!(serde_json::to_value(&loaded).unwrap(), serde_json::to_value(&report).unwrap());
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(value["schema_version"], tapedeck_report::SCHEMA_VERSION);

    // Another schema version is refused with both versions named.
    std::fs::write(&path, serde_json::to_string(&serde_json::json!({"schema_version": 99})).unwrap()).unwrap();
    let err = ReplayReport::load(&path).unwrap_err();
    assert!(
        matches!(err, tapedeck_captures::files::DocumentError::Version { found: 99, .. }),
        "a typed error: {err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("99") && err.contains(&tapedeck_report::SCHEMA_VERSION.to_string()), "{err}");

    let page = html::render(&report);
    assert!(page.starts_with("<!doctype html>") && page.trim_end().ends_with("</html>"));
    for external in ["src=", "href=", "url(", "@import", "<script", "<link", "<iframe"] {
        assert!(!page.contains(external), "the HTML report refers to something outside itself: {external}");
    }
    assert!(page.matches("<svg").count() >= 2, "a rate chart and latency charts");
    for route in &report.routes {
        assert!(page.contains(&route.route), "{} is in the HTML", route.route);
    }

    let xml = junit::render(&report);
    assert_eq!(xml.matches("<testcase").count(), report.routes.len() + 2);
    assert!(xml.contains("name=\"GET /orders/{id}\""));
}

#[test]
fn probes_learn_the_targets_own_noise_and_a_saved_model_carries_it_to_the_next_run() {
    // Every answer carries a fresh `nonce` that looks like nothing generated; the recording
    // has no duplicates to learn it from.
    let nonce = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let target = serve(Arc::new(move |_, path: &str, _| {
        let n = nonce.fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        (200, vec![], format!(r#"{{"path":"{path}","nonce":{n}}}"#))
    }));
    let exchanges: Vec<Exchange> = (0..30u64)
        .map(|i| {
            let mut ex = recorded(i, i as f64, "GET", &format!("/things/{i}"));
            ex.response = json_response(200, &format!(r#"{{"path":"/things/{i}","nonce":0}}"#), &[]);
            ex
        })
        .collect();
    let differing = |r: &ReplayReport| r.compare.as_ref().unwrap().differing;

    let (_dir, plain) = run(&exchanges, target, |_| {});
    assert_eq!(differing(&plain), 30, "without probes the nonce looks like a change");

    let (_dir, probed) = run(&exchanges, target, |c| c.noise_probe = true);
    assert_eq!(differing(&probed), 0, "{:#?}", probed.routes);
    let c = probed.compare.as_ref().unwrap();
    assert!(c.probes >= 1 && c.probes <= 10, "five probes per route and worker at most: {c:?}");
    let route = &probed.routes[0];
    let noise = &route.diffs.as_ref().unwrap().noise;
    assert_eq!((noise[0].key.as_str(), noise[0].reason.as_str()), ("$.nonce", "learned from probes"));

    // Saved and loaded, the model needs no probes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.json");
    probed.noise.save(&path).unwrap();
    let model = tapedeck_compare::noise::NoiseModel::load(&path).unwrap();
    let (_dir, again) = run(&exchanges, target, |c| c.noise_model = model);
    assert_eq!(differing(&again), 0);
    assert_eq!(again.routes[0].diffs.as_ref().unwrap().noise[0].reason, "learned from the noise model");
}
