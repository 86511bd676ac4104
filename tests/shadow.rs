//! `tapedeck proxy --shadow`: production's requests mirrored to a canary and compared
//! live, against the demo's API as production and as a canary with planted drift; a
//! shadow that is down or hangs never touches production; only safe methods, and no
//! production credentials, reach it by default.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::{metric, KillOnDrop, ProxyProcess};
use common::upstream::{http, Upstream};
use common::*;

/// `tapedeck demo --serve FLAVOR` on a free port.
struct DemoApi {
    _child: KillOnDrop,
    url: String,
}

impl DemoApi {
    fn start(flavor: &str) -> DemoApi {
        let mut child = KillOnDrop(
            tapedeck()
                .args(["demo", "--serve", flavor, "--listen", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the demo API says where it listens").unwrap();
            if let Some(url) = line.split(" on ").nth(1).filter(|u| u.starts_with("http://")) {
                break url.trim().to_string();
            }
        };
        DemoApi { _child: child, url }
    }

    fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("http://").parse().unwrap()
    }
}

fn shadow_report(proxy: &ProxyProcess) -> serde_json::Value {
    let (status, body) = http(proxy.admin.unwrap(), "GET", "/shadow", b"").unwrap();
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
}

/// Waits until the shadow's metric `name` reaches `at_least`.
fn wait_for(proxy: &ProxyProcess, name: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = proxy.metrics();
        if metric(&m, name) >= at_least {
            return m;
        }
        assert!(Instant::now() < deadline, "{name} stayed below {at_least}:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A proxy in front of `production` mirroring to `shadow`, admin on a free port.
fn shadowing(production: &str, shadow: &str, extra: &[&str]) -> ProxyProcess {
    let mut args =
        vec!["--listen", "127.0.0.1:0", "--upstream", production, "--admin", "127.0.0.1:0", "--shadow", shadow];
    args.extend_from_slice(extra);
    ProxyProcess::spawn(&args, None)
}

/// `f`'s first `Some`, asked every 100 ms for 10 s at most; `what` is said if it never is.
fn until<T>(what: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The live report once it counts `n` requests (it follows the answers within a second).
fn report_counting(proxy: &ProxyProcess, n: u64) -> serde_json::Value {
    let counted = |r: &serde_json::Value| -> u64 {
        r["routes"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum()
    };
    until(|| shadow_report(proxy).to_string(), || Some(shadow_report(proxy)).filter(|r| counted(r) == n))
}

/// One request written as is (`head`: the lines after the request line), its answer.
fn raw(addr: SocketAddr, method: &str, path: &str, head: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn stop(proxy: ProxyProcess) -> Vec<String> {
    proxy.signal(libc::SIGTERM);
    let (code, lines) = proxy.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:#?}");
    lines
}

#[test]
fn the_shadow_finds_the_planted_drifts_with_examples_and_sets_nothing_else_apart() {
    let production = DemoApi::start("production");
    let canary = DemoApi::start("staging");
    let dir = tempfile::tempdir().unwrap();
    let evidence = dir.path().join("shadow");
    let proxy = shadowing(
        &production.url,
        &canary.url,
        &["--shadow-gate", "diff_rate<=0.5%", "--shadow-results", s(&evidence)],
    );
    for i in 0..40 {
        for path in [
            format!("/users/{}", 1 + i % 12),
            format!("/products/{}", 1 + i % 30),
            format!("/users/{}/orders", 1 + i % 12),
            "/search?q=lamp".to_string(),
        ] {
            let (status, _) = http(proxy.addr, "GET", &path, b"").unwrap();
            assert_eq!(status, 200, "production answers as it would without the shadow: {path}");
        }
    }
    // State-changing requests are not mirrored.
    for i in 0..10 {
        let body = format!(r#"{{"user_id": {}, "items": [{{"product_id": 1, "qty": 1}}]}}"#, 1 + i);
        let (status, _) = http(proxy.addr, "POST", "/orders", body.as_bytes()).unwrap();
        assert!(status < 500, "{status}");
    }
    let m = wait_for(&proxy, "tapedeck_shadow_compared_total", 160.0);
    assert_eq!(metric(&m, "tapedeck_shadow_requests_total"), 160.0, "{m}");
    assert_eq!(metric(&m, "tapedeck_shadow_not_mirrored_method_total"), 10.0, "{m}");
    let report = report_counting(&proxy, 160);
    let route = |name: &str| -> &serde_json::Value {
        report["routes"].as_array().unwrap().iter().find(|r| r["route"] == name).unwrap_or_else(|| panic!("{report}"))
    };
    let findings = |name: &str| -> Vec<(String, String, String)> {
        route(name)["diffs"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let e = &f["example"];
                (
                    f["key"].as_str().unwrap().to_string(),
                    e["recorded"].as_str().unwrap().to_string(),
                    e["replayed"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Config drift in a header.
    let products = findings("GET /products/{id}");
    assert!(products.iter().any(|(k, _, new)| k == "header:cache-control" && new == "no-store"), "{products:?}");
    // A renamed field, its example scrubbed (production's own answers are in it).
    let users = findings("GET /users/{id}");
    assert!(users.iter().any(|(k, _, _)| k == "$.email") && users.iter().any(|(k, _, _)| k == "$.email_address"));
    assert!(!report.to_string().contains("@example.com"), "examples are scrubbed: {users:?}");
    // A 500 on an edge case.
    let orders = findings("GET /users/{id}/orders");
    assert!(orders.iter().any(|(k, old, new)| k == "status" && old == "200" && new == "500"), "{orders:?}");
    // A slower route, and nothing else on it.
    assert!(findings("GET /search").is_empty(), "{report}");
    assert!(route("GET /search")["p99_ratio"].as_f64().unwrap() > 1.5, "{}", route("GET /search"));
    // The ids and times that differ on every answer are noise, not findings.
    for r in report["routes"].as_array().unwrap() {
        let keys: Vec<&str> =
            r["diffs"]["findings"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
        assert!(!keys.iter().any(|k| k.contains("request_id") || k.contains("served_at")), "{keys:?}");
    }
    assert!(report.to_string().contains("$.request_id"), "set apart as noise: {report}");
    assert!(!report["routes"].as_array().unwrap().iter().any(|r| r["route"].as_str().unwrap().starts_with("POST")));
    // The gate fails over its window, for a canary controller to read.
    let m = proxy.metrics();
    assert!(m.contains("tapedeck_shadow_gate_failing{gate=\"diff_rate<=0.5%\"} 1"), "{m}");
    let (status, html) = http(proxy.admin.unwrap(), "GET", "/shadow.html", b"").unwrap();
    assert_eq!(status, 200);
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains("http-equiv=\"refresh\"") && html.contains("live shadow"),
        "{}",
        &html[..300.min(html.len())]
    );
    let lines = stop(proxy);
    assert!(lines.iter().any(|l| l.contains("shadow: 160 requests sent")), "{lines:#?}");
    // The evidence stays: the report (rendered and gated like a replay's) and both answers
    // of each exchange that differed, scrubbed.
    let out = run(&["report", s(&evidence), "--gate", "diff_rate<=0.5%"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "the gate fails: {text}");
    assert!(text.contains("GET /users/{id}") && text.contains("live shadow"), "{text}");
    let mut records = Vec::new();
    for entry in std::fs::read_dir(&evidence).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tape") {
            let mut r = tapedeck_captures::tape::SegmentReader::open(&path).unwrap();
            while let Some(ex) = r.next_exchange().unwrap() {
                records.push(ex);
            }
        }
    }
    let answers: Vec<_> = records.iter().filter(|e| e.replay_of.is_some()).collect();
    // Differing beyond noise: users (renamed field), products (header), orders of users
    // without any (a quarter); not search.
    assert!(answers.len() >= 80 && answers.len() <= 100, "{}", answers.len());
    for a in &answers {
        let production = records.iter().find(|p| Some(p.id) == a.replay_of).expect("production's answer beside it");
        assert_eq!(production.request.target, a.request.target);
        assert!(!a.request.target.starts_with("/search"));
    }
    for e in &records {
        let body =
            e.response.as_ref().map(|r| String::from_utf8_lossy(r.body.data.as_ref()).to_string()).unwrap_or_default();
        assert!(!body.contains("@example.com"), "scrubbed: {body}");
    }
    drop(production);
}

#[test]
fn a_shadow_that_is_down_or_hangs_never_delays_or_fails_production() {
    let upstream = Upstream::start();
    // Down: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = upstream.url();
    let proxy = shadowing(&url, &format!("http://{closed}"), &[]);
    for i in 0..50 {
        assert_eq!(http(proxy.addr, "GET", &format!("/down/{i}"), b"").unwrap(), (200, b"ok".to_vec()));
    }
    wait_for(&proxy, "tapedeck_shadow_errors_total", 50.0);
    stop(proxy);
    // Hangs: accepts, reads, never answers.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hung.incoming().flatten() {
            held.push(s);
        }
    });
    let proxy =
        shadowing(&url, &format!("http://{hung_addr}"), &["--shadow-max-in-flight", "2", "--shadow-timeout", "60s"]);
    for i in 0..400 {
        let started = Instant::now();
        assert_eq!(http(proxy.addr, "GET", &format!("/hung/{i}"), b"").unwrap(), (200, b"ok".to_vec()));
        // The shadow's 60 s timeout is nowhere near a production request.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let m = wait_for(&proxy, "tapedeck_shadow_dropped_total{reason=\"queue_full\"}", 1.0);
    assert_eq!(metric(&m, "tapedeck_shadow_in_flight"), 2.0, "{m}");
    // Shutdown is not held by the hung shadow (its grace is 2 s).
    let started = Instant::now();
    let lines = stop(proxy);
    assert!(started.elapsed() < Duration::from_secs(20), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("shadow: ") && l.contains("0 answered")), "{lines:#?}");
    // Every request reached production once.
    assert_eq!(upstream.seen().len(), 450);
}

#[test]
fn only_safe_methods_and_no_production_credentials_reach_the_shadow() {
    let production = Upstream::start();
    let shadow = Upstream::start();
    let proxy = shadowing(&production.url(), &shadow.url(), &["--shadow-set-header", "X-Canary-Token: canary-own"]);
    let send = |method: &str, path: &str| {
        let head = "Host: shop.example\r\nAuthorization: Bearer prod-secret\r\nCookie: session=prod-cookie\r\n";
        let out = raw(proxy.addr, method, path, head);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    };
    // Personal data in a path is no route name (metrics labels, the report).
    send("GET", "/cards/4111111111111111/jsessionid;jsessionid=prod-path-secret");
    // (HEAD last: this test upstream answers it with a body, which spoils its connection.)
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"] {
        send(method, &format!("/m/{method}?page=2&access_token=prod-query-secret&sig=abc"));
    }
    wait_for(&proxy, "tapedeck_shadow_answered_total", 3.0);
    let seen = shadow.seen();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods.len(), 3, "{methods:?}");
    for s in &seen {
        assert!(
            !s.path.contains("prod-query-secret") && !s.path.contains("sig=") && !s.path.contains("prod-path-secret")
        );
    }
    assert!(seen.iter().any(|s| s.path == "/m/GET?page=2"), "{seen:?}");
    let report = until(
        || shadow_report(&proxy).to_string(),
        || Some(shadow_report(&proxy).to_string()).filter(|r| r.contains("/cards/")),
    );
    let m = proxy.metrics();
    assert!(!m.contains("4111111111111111") && !report.contains("4111111111111111"), "{m}\n{report}");
    assert!(methods.contains(&"GET") && methods.contains(&"HEAD"), "{methods:?}");
    for s in &seen {
        assert!(s.header("authorization").is_none() && s.header("cookie").is_none(), "{s:?}");
        assert_eq!(s.header("x-canary-token"), Some("canary-own"), "{s:?}");
    }
    // Production got everything, credentials included.
    assert_eq!(production.seen().len(), 7);
    assert!(production.seen()[1].path.contains("access_token=prod-query-secret"));
    assert!(production.seen().iter().all(|s| s.header("authorization") == Some("Bearer prod-secret")));
    stop(proxy);
}

#[test]
fn bad_shadow_settings_are_one_line_each() {
    let production = DemoApi::start("production");
    let url = production.url.clone();
    let same = format!("http://localhost:{}", production.addr().port());
    let wildcard = format!("http://0.0.0.0:{}", production.addr().port());
    for (extra, expect) in [
        (vec!["--shadow", "not a url"], "--shadow"),
        (vec!["--shadow", &same], "is the --upstream"),
        (vec!["--shadow", &wildcard], "is the --upstream"),
        (vec!["--shadow", "http://127.0.0.1:9/?a=b"], "a query would be lost"),
        (vec!["--shadow", "http://127.0.0.1:9", "--shadow-max-in-flight", "1000000"], "from 1 to 4096"),
        (vec!["--shadow", "http://127.0.0.1:9", "--shadow-sample", "0%"], "mirrors nothing"),
        (vec!["--shadow", "http://127.0.0.1:9", "--shadow-sample", "150%"], "--shadow-sample"),
        (vec!["--shadow", "http://127.0.0.1:9", "--shadow-gate", "diff_rate<<1"], "--shadow-gate"),
        (vec!["--shadow", "http://127.0.0.1:9", "--shadow-methods", "G T"], "--shadow-methods"),
        (vec!["--shadow", "http://127.0.0.1:9", "--shadow-timeout", "0s"], "--shadow-timeout"),
        (vec!["--shadow-sample", "5%"], "go with --shadow"),
    ] {
        let mut args = vec!["proxy", "--listen", "127.0.0.1:0", "--upstream", &url, "--admin", "off"];
        args.extend(extra.iter().copied());
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" WARN ") && !l.contains(" INFO ")).collect();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn shadow_settings_come_from_the_config_file_too() {
    let production = Upstream::start();
    let shadow = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\nadmin = \"127.0.0.1:0\"\nshadow = \"{}\"\n\
             shadow-sample = \"100%\"\nshadow-methods = [\"GET\", \"PUT\"]\nshadow-gate = [\"errors==0\"]\n\
             shadow-window = \"1m\"\n",
            production.url(),
            shadow.url()
        ),
    )
    .unwrap();
    let proxy = ProxyProcess::spawn(&["--config", s(&config)], None);
    for method in ["GET", "PUT", "POST"] {
        let out = raw(proxy.addr, method, "/c", "Host: x\r\n");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    wait_for(&proxy, "tapedeck_shadow_answered_total", 2.0);
    // The gates are judged with each snapshot (twice a second).
    until(
        || proxy.metrics(),
        || proxy.metrics().contains("tapedeck_shadow_gate_failing{gate=\"errors==0\"} 0").then_some(()),
    );
    let methods: Vec<String> = shadow.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    assert!(methods.contains(&"PUT".to_string()) && !methods.contains(&"POST".to_string()), "{methods:?}");
    stop(proxy);
}

/// Routes the shadow tells apart are bounded (its memory and its metrics' label values),
/// whatever URLs clients send.
#[test]
fn many_distinct_routes_stay_bounded() {
    let production = Upstream::start();
    let shadow = Upstream::start();
    let proxy = shadowing(&production.url(), &shadow.url(), &[]);
    // Words, not numbers: each path is a route of its own.
    let word = |mut n: usize| {
        let mut w = String::new();
        for _ in 0..4 {
            w.push((b'a' + (n % 26) as u8) as char);
            n /= 26;
        }
        w
    };
    for i in 0..260 {
        assert_eq!(http(proxy.addr, "GET", &format!("/{}", word(i)), b"").unwrap().0, 200);
    }
    wait_for(&proxy, "tapedeck_shadow_compared_total", 260.0);
    let report = report_counting(&proxy, 260);
    let routes = report["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 201, "200 routes and the rest together");
    assert!(routes.iter().any(|r| r["route"] == "(other routes)"));
    let labels = proxy.metrics().lines().filter(|l| l.starts_with("tapedeck_shadow_diff_rate{")).count();
    assert!(labels <= 201, "{labels}");
    stop(proxy);
}

#[test]
fn a_shadow_starved_of_cpu_says_so_and_does_not_judge_latency_by_it() {
    let production = Upstream::start();
    let canary = Upstream::start();
    let proxy = shadowing(&production.url(), &canary.url(), &["--shadow-gate", "p99_ratio<=1.5"]);
    // Busy CPUs: twice as many spinning threads as there are CPUs, at the lowest nice
    // level (they take next to nothing from the other tests); the shadow runs only on
    // CPU time nothing else wants, so it now waits for a CPU.
    let stop_spinning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..2 * cpus)
        .map(|_| {
            let stop = stop_spinning.clone();
            std::thread::spawn(move || {
                // SAFETY: setpriority on this thread only.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    let report = loop {
        i += 1;
        assert_eq!(http(proxy.addr, "GET", &format!("/busy/{}", i % 4), b"").unwrap(), (200, b"ok".to_vec()));
        if i % 20 == 0 {
            let report = shadow_report(&proxy);
            if report["lag"]["ms"]["p99"].as_f64().is_some_and(|p99| p99 > 1.0) {
                break report;
            }
        }
        assert!(Instant::now() < deadline, "no wait for a CPU seen: {}", shadow_report(&proxy));
    };
    stop_spinning.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    // The report says the shadow's latencies are not to be trusted, and why.
    let gate = &report["gates"][0];
    assert!(gate["detail"].as_str().unwrap().contains("waited up to"), "{gate}");
    let lines = stop(proxy);
    assert!(lines.iter().any(|l| l.contains("latency gates not judged for now")), "{lines:#?}");
}
