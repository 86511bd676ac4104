//! Scrub throughput on realistic JSON bodies (1–20 KiB, nested, with personal data in
//! some fields) against serde_json parsing and re-serialising the same bodies — the
//! least a tree-based scrubber would do.
//!
//! gRPC answers too: the same data as protobuf, scrubbed with a descriptor set and
//! without, against prost-reflect decoding and re-encoding it.
//!
//! `cargo bench --bench scrub`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapedeck_captures::exchange::{Body, Exchange, Headers, Request};
use tapedeck_captures::scrub::Scrubber;

/// JSON bodies like an API's: a user object with personal data and a list of orders.
fn bodies() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, target) in [1_000usize, 2_000, 5_000, 10_000, 20_000].iter().cycle().take(50).enumerate() {
        let mut body = format!(
            r#"{{"user": {{"id": {i}, "name": "Ada Lovelace", "email": "ada{i}@example.com", "phone": "+44 20 7946 {:04}",
"address": {{"street": "{i} Harbour Road", "city": "Lisbon"}}, "plan": "pro", "created_at": "2024-03-0{}T10:00:00Z"}},
"orders": ["#,
            i % 10000,
            i % 9 + 1
        );
        let mut n = 0;
        while body.len() < *target {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"id": {}, "items": [{{"sku": "SKU-{n}", "name": "mechanical keyboard", "qty": 2, "price": 129.90}}],
"status": "shipped", "note": "leave at the door, ring twice", "tracking": "1Z999AA1012345678{}"}}"#,
                100_000 + n,
                n % 10
            ));
            n += 1;
        }
        body.push_str("], \"total\": 42, \"page\": 1}");
        out.push(body.into_bytes());
    }
    out
}

/// Echo-shaped answers (httpbin `/anything`, webhook delivery logs): the request quoted
/// back — headers with cookies and credentials, the raw body as a JSON string, the parsed
/// body, the URL with its query — 2–6 KiB each.
fn echo_bodies() -> Vec<Vec<u8>> {
    (0..50)
        .map(|i| {
            let inner = serde_json::json!({
                "customer": {"first_name": "Ada", "last_name": format!("Lovelace{i}"), "email": format!("ada{i}@example.com"),
                             "phone": format!("+44 20 7946 {:04}", i), "address": {"street": format!("{i} Harbour Road"), "city": "Lisbon"}},
                "order": {"id": format!("ORD-{}", 10_000 + i), "items": (0..(i % 8 + 2)).map(|n| serde_json::json!({"sku": format!("SKU-{n}"), "qty": 1, "price": 12.5})).collect::<Vec<_>>()},
                "password": "hunter2!#",
            });
            let doc = serde_json::json!({
                "args": {"email": format!("ada{i}@example.com"), "page": "2"},
                "data": inner.to_string(),
                "files": {},
                "form": {},
                "headers": {
                    "Accept": "application/json",
                    "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLXZhbHVlLTk4NzY1",
                    "Cookie": format!("session_id=c2VjcmV0LXNlc3Npb24tdmFsdWUt{i:04}; csrftoken=Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah{i:02}"),
                    "Content-Type": "application/json",
                    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                    "X-Forwarded-For": format!("203.0.113.{}", i % 250),
                    "X-Request-Id": format!("3f2b8c1e-9a4d-4e6f-8b1a-{i:012x}"),
                },
                "json": inner,
                "method": "POST",
                "origin": format!("203.0.113.{}", i % 250),
                "url": format!("https://api.example.com/anything?email=ada{i}%40example.com&page=2"),
            });
            if i % 2 == 0 { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap()
        })
        .collect()
}

/// `bodies` as JSON answers.
fn as_answers(bodies: &[Vec<u8>]) -> Vec<Exchange> {
    let mut headers = Headers::new();
    headers.push("content-type", "application/json");
    bodies
        .iter()
        .map(|b| Exchange {
            request: Request { method: "POST".into(), target: "/anything".into(), ..Default::default() },
            response: Some(tapedeck_captures::exchange::Response {
                status: 200,
                headers: headers.clone(),
                body: Body::full(b.clone()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// Scrubbing `exchanges` (holding `bodies`) against serde_json parsing and re-serialising
/// the same bodies, in one group.
fn against_serde_json(c: &mut Criterion, group: &str, scrubber: &Scrubber, bodies: &[Vec<u8>], exchanges: &[Exchange]) {
    let total: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(total));
    g.bench_function("tapedeck scrub", |b| {
        b.iter_batched(
            || exchanges.to_vec(),
            |mut exs| {
                for ex in &mut exs {
                    scrubber.scrub(ex);
                }
                exs
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("serde_json parse + serialize", |b| {
        b.iter(|| {
            let mut n = 0;
            for body in bodies {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                n += serde_json::to_vec(&v).unwrap().len();
            }
            n
        })
    });
    g.finish();
}

/// `INTERLEAVED_ROUNDS=N cargo bench --bench scrub`: the scrubber and serde_json timed in
/// alternation, a fifth of a second each per round, and the median of the per-round ratios — on a
/// shared machine whose load drifts, a ratio of neighbours is steadier than two criterion
/// groups measured a minute apart.
fn interleaved(group: &str, rounds: usize, scrubber: &Scrubber, bodies: &[Vec<u8>], exchanges: &[Exchange]) {
    let total: usize = bodies.iter().map(Vec::len).sum();
    let mib_s = |mut run: Box<dyn FnMut() + '_>| {
        let start = std::time::Instant::now();
        let mut n = 0;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            run();
            n += 1;
        }
        (n * total) as f64 / start.elapsed().as_secs_f64() / (1 << 20) as f64
    };
    let mut rows = Vec::new();
    for _ in 0..rounds {
        let ours = mib_s(Box::new(|| {
            for ex in &mut exchanges.to_vec() {
                scrubber.scrub(ex);
            }
        }));
        let peer = mib_s(Box::new(|| {
            for body in bodies {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                std::hint::black_box(serde_json::to_vec(&v).unwrap());
            }
        }));
        println!("{group}: tapedeck {ours:.0} MiB/s, serde_json {peer:.0} MiB/s, ratio {:.2}", ours / peer);
        rows.push((ours, peer, ours / peer));
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| [r.0, r.1, r.2][i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{group}: median tapedeck {:.0} MiB/s, serde_json {:.0} MiB/s, ratio {:.2}",
        median(0),
        median(1),
        median(2)
    );
}

const SHOP_PROTO: &str = r#"
    syntax = "proto3";
    package shop;
    message Address { string street = 1; string city = 2; }
    message User { int64 id = 1; string name = 2; string email = 3; string phone = 4; Address address = 5; string plan = 6; }
    message Item { string sku = 1; string name = 2; int32 qty = 3; double price = 4; }
    message Order { int64 id = 1; repeated Item items = 2; string status = 3; string note = 4; string tracking = 5; }
    message Page { User user = 1; repeated Order orders = 2; int32 total = 3; }
    service Shop { rpc List(Page) returns (Page); }
"#;

/// The JSON bodies' data as protobuf `Page` messages in gRPC frames (`/shop.Shop/List`
/// answers), and the descriptor set that names their fields.
fn grpc_answers(bodies: &[Vec<u8>]) -> (tapedeck_captures::proto::ProtoSchema, Vec<Exchange>, Vec<Vec<u8>>) {
    use prost_reflect::prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.proto"), SHOP_PROTO).unwrap();
    let set = protox::compile(["shop.proto"], [dir.path()]).unwrap();
    let schema = tapedeck_captures::proto::ProtoSchema::from_bytes(&set.encode_to_vec(), "shop.pb").unwrap();
    let desc = schema.message("/shop.Shop/List", tapedeck_captures::proto::Side::Response).unwrap();
    let mut headers = Headers::new();
    headers.push("content-type", "application/grpc");
    let mut messages = Vec::new();
    let exchanges = bodies
        .iter()
        .map(|b| {
            let mut json: serde_json::Value = serde_json::from_slice(b).unwrap();
            // `tracking` numbers are strings in the schema; the rest maps as it is.
            for o in json["orders"].as_array_mut().unwrap() {
                o["tracking"] = serde_json::Value::String(o["tracking"].to_string());
            }
            json["user"].as_object_mut().unwrap().remove("created_at");
            json.as_object_mut().unwrap().remove("page");
            let message = prost_reflect::DynamicMessage::deserialize(desc.clone(), json).unwrap().encode_to_vec();
            let framed = [&[0][..], &(message.len() as u32).to_be_bytes(), &message].concat();
            messages.push(message);
            Exchange {
                request: Request { method: "POST".into(), target: "/shop.Shop/List".into(), ..Default::default() },
                response: Some(tapedeck_captures::exchange::Response {
                    status: 200,
                    headers: headers.clone(),
                    body: Body::full(framed),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    (schema, exchanges, messages)
}

/// gRPC answers scrubbed with the descriptor set (by field name) and without (the wire
/// walk), against prost-reflect decoding and re-encoding them — the least a schema-based
/// scrubber does.
fn grpc_scrub(c: &mut Criterion, bodies: &[Vec<u8>]) {
    use prost_reflect::prost::Message as _;
    let (schema, exchanges, messages) = grpc_answers(bodies);
    let key = Some(&b"benchmark scrub key 0123456789"[..]);
    let named = Scrubber::with_defaults(key).with_proto(schema.clone());
    let wire = Scrubber::with_defaults(key);
    let desc = schema.message("/shop.Shop/List", tapedeck_captures::proto::Side::Response).unwrap();
    let total: usize = messages.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("scrub_grpc");
    g.throughput(Throughput::Bytes(total as u64));
    for (name, scrubber) in [("tapedeck scrub, descriptor set", &named), ("tapedeck scrub, wire walk", &wire)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || exchanges.clone(),
                |mut all| {
                    for ex in &mut all {
                        scrubber.scrub(ex);
                    }
                    all
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("prost-reflect decode + encode", |b| {
        b.iter(|| {
            for m in &messages {
                let msg = prost_reflect::DynamicMessage::decode(desc.clone(), &m[..]).unwrap();
                std::hint::black_box(msg.encode_to_vec());
            }
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let bodies = bodies();
    let scrubber = Scrubber::with_defaults(Some(b"benchmark scrub key 0123456789"));
    let mut headers = Headers::new();
    headers.push("content-type", "application/json");
    let exchanges: Vec<Exchange> = bodies
        .iter()
        .map(|b| Exchange {
            request: Request {
                method: "POST".into(),
                target: "/api/orders".into(),
                headers: headers.clone(),
                body: Body::full(b.clone()),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let echo = echo_bodies();
    if let Some(rounds) = std::env::var("INTERLEAVED_ROUNDS").ok().and_then(|r| r.parse().ok()) {
        interleaved("scrub_json", rounds, &scrubber, &bodies, &exchanges);
        interleaved("scrub_echo", rounds, &scrubber, &echo, &as_answers(&echo));
        return;
    }
    against_serde_json(c, "scrub_json", &scrubber, &bodies, &exchanges);
    against_serde_json(c, "scrub_echo", &scrubber, &echo, &as_answers(&echo));
    grpc_scrub(c, &bodies);

    // The load benchmark's exchange: a tiny GET and a 1 KiB text/plain answer.
    let mut req_headers = Headers::new();
    req_headers.push("host", "127.0.0.1:18084");
    let mut resp_headers = Headers::new();
    for (n, v) in [
        ("server", "nginx/1.22.1"),
        ("date", "Wed, 25 Nov 2026 16:00:00 GMT"),
        ("content-type", "text/plain"),
        ("content-length", "1024"),
        ("connection", "keep-alive"),
    ] {
        resp_headers.push(n, v);
    }
    let small = Exchange {
        request: Request { method: "GET".into(), target: "/".into(), headers: req_headers, ..Default::default() },
        response: Some(tapedeck_captures::exchange::Response {
            status: 200,
            headers: resp_headers,
            body: Body::full(vec![b'x'; 1024]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut g = c.benchmark_group("scrub_exchange");
    g.throughput(Throughput::Elements(1));
    g.bench_function("GET / with 1 KiB text answer", |b| {
        b.iter_batched(
            || small.clone(),
            |mut ex| {
                scrubber.scrub(&mut ex);
                ex
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
