//! Sampling: which requests get captured, decided once per request from its head alone,
//! before any byte is copied.
//!
//! Order: `--include`/`--exclude` rules, then the percentage — per request at random, or,
//! with `--sample-key`, by a salted hash of the session key so a session is captured
//! completely or not at all — then the `--max-capture-rps` cap (a lock-free GCRA token
//! bucket). Requests without the key are sampled at random at the same rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{HeaderMap, Method, Uri};
use regex::Regex;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::metrics::SkipReason;

/// Where the session key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleKey {
    /// A request header.
    Header(http::HeaderName),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
}

impl std::str::FromStr for SampleKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) =
            s.split_once(':').ok_or_else(|| format!("{s:?}: expected header:NAME, cookie:NAME or query:NAME"))?;
        if name.is_empty() {
            return Err(format!("{s:?}: the name after {kind}: is empty"));
        }
        match kind {
            "header" => http::HeaderName::from_bytes(name.as_bytes())
                .map(SampleKey::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            "cookie" => Ok(SampleKey::Cookie(name.to_string())),
            "query" => Ok(SampleKey::Query(name.to_string())),
            _ => Err(format!("{s:?}: expected header:NAME, cookie:NAME or query:NAME")),
        }
    }
}

/// `--include`/`--exclude`: an optional method and a path regex, e.g. `POST ^/api/orders`.
#[derive(Clone, Debug)]
pub struct RouteRule {
    method: Option<Method>,
    path: Regex,
}

impl RouteRule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.path.is_match(path)
    }
}

impl std::str::FromStr for RouteRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (method, pattern) = match s.split_once(char::is_whitespace) {
            Some((m, p)) => (Some(m), p.trim()),
            None => (None, s),
        };
        let method = match method {
            None | Some("*") => None,
            Some(m) => Some(
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("{m:?} is not an HTTP method"))?,
            ),
        };
        let path = Regex::new(pattern).map_err(|e| format!("{pattern:?} is not a valid regex: {e}"))?;
        Ok(RouteRule { method, path })
    }
}

/// Sampling settings.
#[derive(Clone, Debug)]
pub struct SamplingConfig {
    /// Share of requests (or sessions) to capture, 0.0–1.0.
    pub rate: f64,
    /// Session key for consistent sampling.
    pub key: Option<SampleKey>,
    /// At most this many captures per second (burst: one second's worth).
    pub max_per_sec: Option<f64>,
    /// Capture only requests matching one of these (all when empty).
    pub include: Vec<RouteRule>,
    /// Never capture requests matching one of these.
    pub exclude: Vec<RouteRule>,
    /// Salt for the session hash; random per process when unset. Give every proxy in
    /// front of one service the same salt so they agree on which sessions to capture.
    pub salt: Option<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { rate: 1.0, key: None, max_per_sec: None, include: Vec::new(), exclude: Vec::new(), salt: None }
    }
}

/// Parses `25%`, `0.25` or `100%` into a rate.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?}: expected a percentage such as 25% (or a fraction such as 0.25)"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{s:?}: the sample rate must be between 0% and 100%"));
    }
    Ok(value)
}

/// The outcome for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Capture it; `session` is the pseudonymised session key, if there is one.
    Capture {
        /// Pseudonymised session key.
        session: Option<String>,
    },
    /// Do not capture it.
    Skip(SkipReason),
}

/// Decides per request. Shared by all connections.
pub struct Sampler {
    threshold: u64,
    always: bool,
    key: Option<SampleKey>,
    include: Vec<RouteRule>,
    exclude: Vec<RouteRule>,
    sample_keys: (u64, u64),
    session_keys: (u64, u64),
    bucket: Option<Gcra>,
}

impl Sampler {
    /// A sampler for `config`.
    pub fn new(config: &SamplingConfig) -> Self {
        let (sample_keys, session_keys) = match &config.salt {
            Some(salt) => (keys_from(salt, b"sample"), keys_from(salt, b"session")),
            None => ((rand::random(), rand::random()), (rand::random(), rand::random())),
        };
        Sampler {
            threshold: (config.rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            always: config.rate >= 1.0,
            key: config.key.clone(),
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            sample_keys,
            session_keys,
            bucket: config.max_per_sec.filter(|r| *r > 0.0).map(Gcra::new),
        }
    }

    /// Decides whether to capture a request, from its head.
    pub fn decide(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Decision {
        let path = uri.path();
        if (!self.include.is_empty() && !self.include.iter().any(|r| r.matches(method, path)))
            || self.exclude.iter().any(|r| r.matches(method, path))
        {
            return Decision::Skip(SkipReason::Filtered);
        }
        let key = self.key.as_ref().and_then(|k| key_value(k, uri, headers));
        let sampled = match &key {
            _ if self.always => true,
            Some(value) => hash(self.sample_keys, value.as_bytes()) < self.threshold,
            None => rand::random::<u64>() < self.threshold,
        };
        if !sampled {
            return Decision::Skip(SkipReason::Sampled);
        }
        if let Some(bucket) = &self.bucket {
            if !bucket.admit() {
                return Decision::Skip(SkipReason::RateCap);
            }
        }
        let session = key.map(|v| format!("s_{:016x}", hash(self.session_keys, v.as_bytes())));
        Decision::Capture { session }
    }
}

fn keys_from(salt: &str, purpose: &[u8]) -> (u64, u64) {
    let mut a = SipHasher13::new_with_keys(0x7461_7065, 0x6465_636b);
    a.write(purpose);
    a.write(salt.as_bytes());
    let k0 = a.finish();
    a.write_u8(1);
    (k0, a.finish())
}

fn hash((k0, k1): (u64, u64), value: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write(value);
    h.finish()
}

/// The session key's value in this request, if present.
fn key_value(key: &SampleKey, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    match key {
        SampleKey::Header(name) => {
            headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_string)
        }
        SampleKey::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty()),
        SampleKey::Query(name) => uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.into_owned())
                .filter(|v| !v.is_empty())
        }),
    }
}

/// Generic cell rate algorithm: a token bucket as one atomic "theoretical arrival time".
struct Gcra {
    epoch: Instant,
    interval_ns: u64,
    burst_ns: u64,
    tat: AtomicU64,
}

impl Gcra {
    fn new(per_sec: f64) -> Self {
        let interval_ns = (1e9 / per_sec).max(1.0) as u64;
        let burst = per_sec.max(1.0);
        Gcra {
            epoch: Instant::now(),
            interval_ns,
            burst_ns: (burst * interval_ns as f64) as u64,
            tat: AtomicU64::new(0),
        }
    }

    fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now) + self.interval_ns;
            if new_tat > now + self.burst_ns {
                return false;
            }
            match self.tat.compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
        }
        (Method::GET, path.parse().unwrap(), h)
    }

    #[test]
    fn parses_rates_keys_and_rules() {
        assert_eq!(parse_rate("25%").unwrap(), 0.25);
        assert_eq!(parse_rate("0.5").unwrap(), 0.5);
        assert!(parse_rate("150%").is_err());
        assert!(parse_rate("lots").is_err());
        assert_eq!("cookie:sid".parse::<SampleKey>().unwrap(), SampleKey::Cookie("sid".into()));
        assert!("header:".parse::<SampleKey>().is_err());
        assert!("body:x".parse::<SampleKey>().is_err());
        let rule: RouteRule = "post ^/api/orders".parse().unwrap();
        assert!(rule.matches(&Method::POST, "/api/orders/1"));
        assert!(!rule.matches(&Method::GET, "/api/orders/1"));
        assert!("^/x(".parse::<RouteRule>().is_err());
    }

    #[test]
    fn sessions_are_all_or_nothing() {
        let config = SamplingConfig {
            rate: 0.3,
            key: Some("cookie:sid".parse().unwrap()),
            salt: Some("s".into()),
            ..Default::default()
        };
        let sampler = Sampler::new(&config);
        let mut captured_sessions = 0;
        for s in 0..2000 {
            let cookie = format!("theme=x; sid=user{s}");
            let decisions: Vec<_> = (0..5)
                .map(|i| {
                    let (m, u, h) = req(&format!("/p/{i}"), &[("cookie", &cookie)]);
                    matches!(sampler.decide(&m, &u, &h), Decision::Capture { .. })
                })
                .collect();
            assert!(decisions.iter().all(|d| *d == decisions[0]), "session {s} split: {decisions:?}");
            captured_sessions += usize::from(decisions[0]);
        }
        assert!((500..700).contains(&captured_sessions), "{captured_sessions} of 2000 sessions at 30%");
        // The same salt gives the same choice in another proxy; the session id is stable too.
        let other = Sampler::new(&config);
        let (m, u, h) = req("/", &[("cookie", "sid=user7")]);
        assert_eq!(sampler.decide(&m, &u, &h), other.decide(&m, &u, &h));
    }

    #[test]
    fn rules_filter_and_the_cap_limits() {
        let config = SamplingConfig {
            include: vec!["^/api/".parse().unwrap()],
            exclude: vec!["GET ^/api/health".parse().unwrap()],
            max_per_sec: Some(5.0),
            ..Default::default()
        };
        let sampler = Sampler::new(&config);
        let (m, u, h) = req("/static/app.js", &[]);
        assert_eq!(sampler.decide(&m, &u, &h), Decision::Skip(SkipReason::Filtered));
        let (m, u, h) = req("/api/health", &[]);
        assert_eq!(sampler.decide(&m, &u, &h), Decision::Skip(SkipReason::Filtered));
        let (m, u, h) = req("/api/users", &[]);
        let admitted = (0..50).filter(|_| matches!(sampler.decide(&m, &u, &h), Decision::Capture { .. })).count();
        assert_eq!(admitted, 5, "a burst of one second's worth, then the cap");
    }
}
