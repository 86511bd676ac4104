//! The demo's service: a small JSON API (users, orders, products, search) with personal
//! data, per-request ids and timestamps. Run as "production", and as "staging" with
//! planted drift — what a release could break without anyone noticing in staging:
//!
//! - a renamed field: `GET /users/{id}` answers `email_address` instead of `email`;
//! - a slower route: `GET /search` takes 3× as long;
//! - a 500 on an edge case: `GET /users/{id}/orders` fails for a user without orders;
//! - config drift in a default header: products are served `Cache-Control: no-store`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Users in the data set; every fourth has no orders to begin with.
pub const USERS: u64 = 48;
/// Products in the catalogue.
pub const PRODUCTS: u64 = 30;
/// What people search for.
pub const SEARCHES: &[&str] = &["lamp", "desk", "chair", "mug", "cable", "shelf", "plant", "rug"];
/// The recorded search time; staging takes three times as long.
/// Production's search time; staging's is three times that. Large enough that the
/// planted slowdown (80 ms at p99) stands far above what a busy machine adds to any
/// route's p99 (the demo's own check runs on shared CI machines).
pub const SEARCH_MS: u64 = 40;

const FIRST: &[&str] =
    &["Jane", "Omar", "Mei", "Lukas", "Ana", "Tunde", "Priya", "Sven", "Chloé", "Diego", "Aiko", "Nora"];
const LAST: &[&str] = &["Doe", "Haddad", "Chen", "Becker", "Silva", "Okafor", "Raman", "Lind"];
const PRODUCT: &[&str] =
    &["desk lamp", "standing desk", "office chair", "coffee mug", "usb cable", "wall shelf", "fern plant", "wool rug"];

/// Which service this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Production,
    Staging,
}

struct State {
    flavor: Flavor,
    orders: BTreeMap<u64, Value>,
    next_id: u64,
}

/// A running API; stops when dropped.
pub struct Api {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn user(id: u64) -> Value {
    let (first, last) = (FIRST[(id as usize * 7) % FIRST.len()], LAST[(id as usize * 5) % LAST.len()]);
    json!({
        "id": id,
        "name": format!("{first} {last}"),
        "email": format!("{}.{}{id}@example.com", first.to_lowercase(), last.to_lowercase()),
        "phone": format!("+1 415 555 {:04}", 1000 + id * 37 % 9000),
        "plan": if id.is_multiple_of(3) { "pro" } else { "free" },
        "created_at": format!("2024-0{}-1{}T09:30:00Z", 1 + id % 9, id % 10),
    })
}

fn product(id: u64) -> Value {
    json!({
        "id": id,
        "name": format!("{} #{id}", PRODUCT[id as usize % PRODUCT.len()]),
        "price_cents": 999 + id * 250,
        "in_stock": !id.is_multiple_of(7),
    })
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex(&b);
    format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Starts the API on 127.0.0.1 (any free port).
pub async fn start(flavor: Flavor) -> std::io::Result<Api> {
    start_on(flavor, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts the API on `addr`.
pub async fn start_on(flavor: Flavor, addr: SocketAddr) -> std::io::Result<Api> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let mut orders = BTreeMap::new();
    for uid in (1..=USERS).filter(|u| u % 4 != 0) {
        let id = 1000 + uid;
        let items = json!([{"product_id": uid % PRODUCTS + 1, "qty": 1 + uid % 3}]);
        orders.insert(id, json!({"id": id, "user_id": uid, "items": items, "status": "shipped", "created_at": "2025-06-01T12:00:00Z"}));
    }
    // The two services number new orders differently, as two databases would.
    let next_id = if flavor == Flavor::Production { 100_000 } else { 500_000 };
    let state = Arc::new(Mutex::new(State { flavor, orders, next_id }));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(Api { addr, task })
}

fn reply(status: StatusCode, body: Value, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r =
        Response::builder().status(status).header("content-type", "application/json").header("x-request-id", uuid());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body.to_string()))).expect("valid response")
}

/// Adds the per-request noise every answer carries.
fn stamped(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.insert("request_id".into(), uuid().into());
        o.insert("served_at".into(), now().into());
    }
    v
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, stamped(json!({"error": format!("no such {what}")})), &[])
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let flavor = state.lock().expect("demo state").flavor;
    let staging = flavor == Flavor::Staging;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<u64>().ok();
    let response = match (&method, &parts[..]) {
        (&Method::GET, ["users", u]) => match id(u).filter(|u| (1..=USERS).contains(u)) {
            Some(u) => {
                let mut v = user(u);
                if staging {
                    // Drift: a renamed field.
                    if let Some(email) = v.as_object_mut().and_then(|o| o.remove("email")) {
                        v["email_address"] = email;
                    }
                }
                reply(StatusCode::OK, stamped(v), &[("cache-control", "private, max-age=60".into())])
            }
            None => not_found("user"),
        },
        (&Method::GET, ["users", u, "orders"]) => match id(u).filter(|u| (1..=USERS).contains(u)) {
            Some(u) => {
                let orders: Vec<Value> =
                    state.lock().expect("demo state").orders.values().filter(|o| o["user_id"] == u).cloned().collect();
                if staging && orders.is_empty() {
                    // Drift: an edge case that crashes.
                    reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal error"}), &[])
                } else {
                    let count = orders.len();
                    reply(StatusCode::OK, stamped(json!({"user_id": u, "orders": orders, "count": count})), &[])
                }
            }
            None => not_found("user"),
        },
        (&Method::GET, ["products", p]) => match id(p).filter(|p| (1..=PRODUCTS).contains(p)) {
            Some(p) => {
                // Drift: another default caching header.
                let cache = if staging { "no-store" } else { "public, max-age=300" };
                reply(StatusCode::OK, stamped(product(p)), &[("cache-control", cache.into())])
            }
            None => not_found("product"),
        },
        (&Method::GET, ["search"]) => {
            let q = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            // Drift: three times slower.
            tokio::time::sleep(Duration::from_millis(if staging { 3 * SEARCH_MS } else { SEARCH_MS })).await;
            let results: Vec<Value> =
                (1..=PRODUCTS).map(product).filter(|p| p["name"].as_str().is_some_and(|n| n.contains(&q))).collect();
            reply(StatusCode::OK, stamped(json!({"query": q, "results": results, "count": results.len()})), &[])
        }
        (&Method::POST, ["orders"]) => match serde_json::from_slice::<Value>(&body) {
            Ok(order) if order["user_id"].is_u64() && order["items"].is_array() => {
                let mut s = state.lock().expect("demo state");
                let id = s.next_id;
                s.next_id += 1;
                let v = json!({"id": id, "user_id": order["user_id"], "items": order["items"], "status": "created", "created_at": now()});
                s.orders.insert(id, v.clone());
                drop(s);
                reply(StatusCode::CREATED, stamped(v), &[("location", format!("/orders/{id}"))])
            }
            _ => reply(StatusCode::BAD_REQUEST, stamped(json!({"error": "expected {user_id, items}"})), &[]),
        },
        (&Method::GET, ["orders", o]) => {
            match id(o).and_then(|o| state.lock().expect("demo state").orders.get(&o).cloned()) {
                Some(v) => reply(StatusCode::OK, stamped(v), &[]),
                None => not_found("order"),
            }
        }
        _ => not_found("route"),
    };
    Ok(response)
}
