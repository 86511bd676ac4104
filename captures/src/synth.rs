//! Realistic synthetic traffic for `tapedeck demo`, benchmarks and tests: a JSON API
//! (users, orders, products, search) called by browser-like clients over keep-alive
//! connections, with Poisson arrivals, per-route log-normal latencies, browser headers,
//! cookies and bearer tokens, and JSON bodies from a few hundred bytes to tens of KiB.
//!
//! Deterministic for a given seed, so benchmark inputs are identical across runs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::blob::Blob;
use crate::exchange::*;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Random seed.
    pub seed: u64,
    /// Number of exchanges.
    pub count: usize,
    /// Mean arrival rate, requests per second.
    pub rps: f64,
    /// Wall-clock time of the first request, ns since the epoch.
    pub start_unix_ns: i64,
    /// If set, every response body is about this many bytes; otherwise sizes follow the
    /// route (200 B – 20 KiB).
    pub body_bytes: Option<usize>,
    /// Concurrent client sessions.
    pub sessions: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 42,
            count: 1000,
            rps: 200.0,
            start_unix_ns: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
            body_bytes: None,
            sessions: 50,
        }
    }
}

const FIRST: [&str; 16] = [
    "Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Frances", "Dennis", "Radia", "Edsger", "Hedy",
    "Tim", "Karen", "Donald", "Sophie",
];
const LAST: [&str; 16] = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Liskov",
    "Thompson",
    "Allen",
    "Ritchie",
    "Perlman",
    "Dijkstra",
    "Lamarr",
    "Berners-Lee",
    "Jones",
    "Knuth",
    "Wilson",
];
const CITIES: [&str; 8] = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Montreal", "Tallinn", "Adelaide"];
const PRODUCTS: [&str; 12] = [
    "mechanical keyboard",
    "usb-c hub",
    "noise cancelling headphones",
    "standing desk",
    "monitor arm",
    "webcam",
    "laptop stand",
    "ergonomic mouse",
    "desk lamp",
    "cable tray",
    "footrest",
    "headset stand",
];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

struct Session {
    connection: u64,
    sequence: u32,
    user: u32,
    agent: &'static str,
    token: String,
    cookie: String,
}

/// Generates exchanges in request-start order.
pub struct Synth {
    rng: StdRng,
    config: SynthConfig,
    produced: usize,
    clock_ns: f64,
    ids: IdGenerator,
    sessions: Vec<Session>,
}

impl Synth {
    /// A generator for `config`.
    pub fn new(config: SynthConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let ids = IdGenerator::with_prefix(config.seed & 0xff_ffff);
        let sessions = (0..config.sessions.max(1))
            .map(|i| Session {
                connection: ids.next(),
                sequence: 0,
                user: rng.random_range(1000..99_999),
                agent: AGENTS[i % AGENTS.len()],
                token: format!(
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1{}In0.{}",
                    rng.random_range(100..999),
                    hex(&mut rng, 22)
                ),
                cookie: format!("sid={}; theme=dark", hex(&mut rng, 32)),
            })
            .collect();
        Synth { rng, config, produced: 0, clock_ns: 0.0, ids, sessions }
    }

    fn json_list(&mut self, kind: &str, user: u32, target: usize) -> String {
        let mut out = format!("{{\"{kind}\":[");
        let mut i = 0;
        while out.len() < target.saturating_sub(60) || i == 0 {
            if i > 0 {
                out.push(',');
            }
            let id = self.rng.random_range(10_000..999_999);
            let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
            let price = self.rng.random_range(500..90_000) as f64 / 100.0;
            let day = self.rng.random_range(1..28);
            let status = ["paid", "shipped", "delivered", "pending"][self.rng.random_range(0..4)];
            out.push_str(&format!(
                "{{\"id\":{id},\"user_id\":{user},\"item\":\"{product}\",\"quantity\":{},\"price\":{price:.2},\"currency\":\"EUR\",\"status\":\"{status}\",\"created_at\":\"2025-12-{day:02}T10:{:02}:00Z\"}}",
                self.rng.random_range(1..5),
                self.rng.random_range(0..60)
            ));
            i += 1;
        }
        out.push_str(&format!("],\"total\":{i},\"page\":1}}"));
        out
    }

    fn user_json(&mut self, user: u32) -> String {
        let first = FIRST[(user as usize) % FIRST.len()];
        let last = LAST[(user as usize / 7) % LAST.len()];
        let city = CITIES[(user as usize / 3) % CITIES.len()];
        format!(
            "{{\"id\":{user},\"name\":\"{first} {last}\",\"email\":\"{}.{}@example.com\",\"phone\":\"+44 20 7946 {:04}\",\"address\":{{\"city\":\"{city}\",\"street\":\"{} Harbour Road\"}},\"created_at\":\"2024-0{}-1{}T08:00:00Z\",\"plan\":\"pro\"}}",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase(),
            user % 10_000,
            user % 200 + 1,
            user % 9 + 1,
            user % 9
        )
    }
}

fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)])).collect()
}

fn uuid(rng: &mut StdRng) -> String {
    let h = hex(rng, 32);
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

impl Iterator for Synth {
    type Item = Exchange;

    fn next(&mut self) -> Option<Exchange> {
        if self.produced >= self.config.count {
            return None;
        }
        self.produced += 1;
        // Poisson arrivals: exponential gaps.
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        self.clock_ns += -u.ln() / self.config.rps.max(0.001) * 1e9;
        let s = self.rng.random_range(0..self.sessions.len());
        let (connection, sequence, user, agent, token, cookie) = {
            let sess = &mut self.sessions[s];
            let seq = sess.sequence;
            sess.sequence += 1;
            (sess.connection, seq, sess.user, sess.agent, sess.token.clone(), sess.cookie.clone())
        };
        let pick = self.rng.random_range(0..100);
        let sized = |default: usize| self.config.body_bytes.unwrap_or(default);
        let (method, target, req_body, status, resp_body, base_ms): (&str, String, String, u16, String, f64) =
            match pick {
                0..=29 => (
                    "GET",
                    format!("/api/users/{user}"),
                    String::new(),
                    200,
                    {
                        let b = self.user_json(user);
                        match self.config.body_bytes {
                            Some(n) if n > b.len() => {
                                self.json_list("recent_orders", user, n).replacen('{', &format!("{{\"user\":{b},"), 1)
                            }
                            _ => b,
                        }
                    },
                    8.0,
                ),
                30..=49 => {
                    let n = sized(self.rng.random_range(2_000..20_000));
                    (
                        "GET",
                        format!("/api/users/{user}/orders?page=1&limit=20"),
                        String::new(),
                        200,
                        self.json_list("orders", user, n),
                        25.0,
                    )
                }
                50..=64 => {
                    let q = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())].replace(' ', "+");
                    let n = sized(self.rng.random_range(1_000..8_000));
                    (
                        "GET",
                        format!("/api/search?q={q}&sort=relevance"),
                        String::new(),
                        200,
                        self.json_list("results", user, n),
                        40.0,
                    )
                }
                65..=79 => {
                    let id = self.rng.random_range(100..5_000);
                    let body = format!(
                        "{{\"id\":{id},\"name\":\"{}\",\"price\":{:.2},\"stock\":{}}}",
                        PRODUCTS[id % PRODUCTS.len()],
                        id as f64 / 7.0,
                        id % 40
                    );
                    (
                        "GET",
                        format!("/api/products/{id}"),
                        String::new(),
                        if id % 97 == 0 { 404 } else { 200 },
                        body,
                        5.0,
                    )
                }
                80..=91 => {
                    let item = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
                    let req = format!("{{\"user_id\":{user},\"items\":[{{\"sku\":\"SKU-{}\",\"name\":\"{item}\",\"quantity\":1}}],\"payment\":{{\"card\":\"4242 4242 4242 4242\",\"holder\":\"{} {}\"}},\"note\":\"leave at door\"}}", self.rng.random_range(1000..9999), FIRST[user as usize % 16], LAST[user as usize % 16]);
                    let order = self.rng.random_range(100_000..999_999);
                    let resp = format!("{{\"id\":{order},\"status\":\"created\",\"request_id\":\"{}\",\"created_at\":\"2026-01-01T00:00:00Z\"}}", uuid(&mut self.rng));
                    ("POST", "/api/orders".to_string(), req, if order % 50 == 0 { 500 } else { 201 }, resp, 60.0)
                }
                92..=96 => (
                    "PUT",
                    format!("/api/users/{user}/preferences"),
                    "{\"theme\":\"dark\",\"newsletter\":false}".into(),
                    204,
                    String::new(),
                    12.0,
                ),
                _ => ("GET", "/healthz".to_string(), String::new(), 200, "{\"status\":\"ok\"}".into(), 0.5),
            };
        // Log-normal latency around the route's base.
        let z: f64 = (0..6).map(|_| self.rng.random_range(-1.0..1.0)).sum::<f64>() / 2.0;
        let head_ms = base_ms * (0.5 * z).exp();
        let transfer_ms = resp_body.len() as f64 / 50_000.0;
        let mut req_headers = Headers::new();
        req_headers.push("Host", "api.shop.example");
        req_headers.push("User-Agent", agent);
        req_headers.push("Accept", "application/json, text/plain, */*");
        req_headers.push("Accept-Language", "en-GB,en;q=0.9");
        req_headers.push("Accept-Encoding", "gzip, deflate, br");
        req_headers.push("Referer", "https://shop.example/account");
        req_headers.push("Authorization", format!("Bearer {token}"));
        req_headers.push("Cookie", cookie);
        req_headers.push("X-Forwarded-For", format!("203.0.113.{}", user % 250));
        if !req_body.is_empty() {
            req_headers.push("Content-Type", "application/json");
            req_headers.push("Content-Length", req_body.len().to_string());
        }
        let mut resp_headers = Headers::new();
        resp_headers.push("Content-Type", "application/json; charset=utf-8");
        resp_headers.push("Date", "Thu, 01 Jan 2026 00:00:00 GMT");
        resp_headers.push("Cache-Control", "private, max-age=0");
        resp_headers.push("X-Request-Id", uuid(&mut self.rng));
        if !resp_body.is_empty() {
            resp_headers.push("Content-Length", resp_body.len().to_string());
        }
        let mut timing = Timing::at(self.config.start_unix_ns, self.config.start_unix_ns + self.clock_ns as i64);
        timing.head_ns = Some((head_ms * 1e6) as u64);
        timing.end_ns = Some(((head_ms + transfer_ms) * 1e6) as u64);
        Some(Exchange {
            id: ExchangeId(self.ids.next()),
            connection: ConnectionId(connection),
            session: Some(format!("user-{user}")),
            sequence,
            timing,
            request: Request {
                message_ns: Vec::new(),
                trailers: Default::default(),
                method: method.into(),
                scheme: "https".into(),
                authority: "api.shop.example".into(),
                target,
                version: HttpVersion::Http11,
                headers: req_headers,
                body: Body::full(Blob::from(req_body)),
            },
            response: Some(Response {
                message_ns: Vec::new(),
                trailers: Default::default(),
                status,
                version: HttpVersion::Http11,
                headers: resp_headers,
                body: Body::full(Blob::from(resp_body)),
            }),
            error: None,
            scrub: Vec::new(),
            replay_of: None,
            websocket: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_realistic() {
        let a: Vec<_> = Synth::new(SynthConfig { count: 300, ..Default::default() }).collect();
        let b: Vec<_> = Synth::new(SynthConfig { count: 300, ..Default::default() }).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].wall_start_ns() <= w[1].wall_start_ns()));
        let sizes: Vec<usize> = a.iter().map(|e| e.response.as_ref().unwrap().body.data.len()).collect();
        assert!(sizes.iter().any(|&s| s > 10_000) && sizes.iter().any(|&s| s < 300));
        for e in &a {
            let body = &e.response.as_ref().unwrap().body.data;
            if !body.is_empty() {
                serde_json::from_slice::<serde_json::Value>(body).expect("bodies are JSON");
            }
        }
    }

    #[test]
    fn fixed_body_size_is_respected() {
        for e in Synth::new(SynthConfig { count: 50, body_bytes: Some(1024), ..Default::default() }) {
            let n = e.response.unwrap().body.data.len();
            assert!(n < 1400, "{n}");
        }
    }
}
