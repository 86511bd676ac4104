//! The demo's users: concurrent sessions browsing, searching and ordering through the
//! capture proxy, each with its own credentials and think time, as production traffic
//! would look.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use super::api::{PRODUCTS, SEARCHES, USERS};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What the workload did.
#[derive(Debug, Default)]
pub struct Done {
    pub requests: u64,
    pub failed: u64,
}

/// Runs `sessions` users against `proxy` for `length`.
pub async fn run(proxy: SocketAddr, sessions: u64, length: Duration) -> Done {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + length;
    let tasks: Vec<_> =
        (1..=sessions.min(USERS)).map(|user| tokio::spawn(session(client.clone(), proxy, user, until))).collect();
    let mut done = Done::default();
    for t in tasks {
        if let Ok(d) = t.await {
            done.requests += d.requests;
            done.failed += d.failed;
        }
    }
    done
}

async fn session(client: HttpClient, proxy: SocketAddr, user: u64, until: Instant) -> Done {
    let mut done = Done::default();
    let token = format!("demo-{:x}", rand::random::<u64>());
    let cookie = format!("session={:x}{:x}", rand::random::<u64>(), rand::random::<u64>());
    // Stagger the starts, as real users arrive.
    tokio::time::sleep(Duration::from_millis(user * 7 % 200)).await;
    let mut step = 0u64;
    while Instant::now() < until {
        let (method, path, body) = next(user, step);
        step += 1;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{proxy}{path}"))
            .header("x-user-id", user.to_string())
            .header("authorization", format!("Bearer {token}"))
            .header("cookie", &cookie)
            .header("user-agent", "tapedeck-demo/1 (browser)")
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("valid request");
        done.requests += 1;
        match client.request(req).await {
            Ok(resp) => {
                let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
                let ok = resp.into_body().collect().await.is_ok();
                done.failed += u64::from(!ok);
                // A new order is looked at right away: the request a replay must correlate.
                if let Some(loc) = location {
                    let req = http::Request::get(format!("http://{proxy}{loc}"))
                        .header("x-user-id", user.to_string())
                        .header("authorization", format!("Bearer {token}"))
                        .header("cookie", &cookie)
                        .header("accept", "application/json")
                        .body(Full::new(Bytes::new()))
                        .expect("valid request");
                    done.requests += 1;
                    let ok = match client.request(req).await {
                        Ok(r) => r.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    done.failed += u64::from(!ok);
                }
            }
            Err(_) => done.failed += 1,
        }
        let think = rand::rng().random_range(15..60);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    done
}

/// The session's next request: mostly reads, sometimes an order.
fn next(user: u64, step: u64) -> (&'static str, String, Option<String>) {
    let mut rng = rand::rng();
    match step % 6 {
        0 => ("GET", format!("/users/{user}"), None),
        1 | 4 => ("GET", format!("/products/{}", rng.random_range(1..=PRODUCTS)), None),
        2 => ("GET", format!("/search?q={}", SEARCHES[rng.random_range(0..SEARCHES.len())]), None),
        3 => ("GET", format!("/users/{user}/orders"), None),
        _ if rng.random_bool(0.5) => {
            let body = format!(
                r#"{{"user_id":{user},"items":[{{"product_id":{},"qty":{}}}]}}"#,
                rng.random_range(1..=PRODUCTS),
                rng.random_range(1..=3)
            );
            ("POST", "/orders".into(), Some(body))
        }
        _ => ("GET", format!("/search?q={}", SEARCHES[rng.random_range(0..SEARCHES.len())]), None),
    }
}
