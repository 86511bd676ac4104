//! # tapedeck-compare
//!
//! Comparison of replayed (or shadowed) responses with the recorded baseline: pure logic,
//! no I/O, used by the replayer and by anything else that holds two answers to one request.
//!
//! - [`diff`]: what differs in one exchange (status, chosen headers, JSON by path, text,
//!   binary, WebSocket messages), under the ignore rules of a [`CompareConfig`]; JSON of the
//!   same shape is walked in lockstep without parsing (its private `lockstep` child).
//! - [`generated`]: values that differ by design (UUIDs, the replay's timestamps, tokens).
//! - [`noise`]: paths learned to be noisy — from recorded responses to identical requests,
//!   from `--noise-probe` (two replays of one request), or from a saved model.
//! - [`tally`]: per-route counts and examples, with noise told apart at the end, when the
//!   whole noise model is known.
//! - [`correlate`]: values the target generated replace recorded ones in later requests of
//!   the same session.

#![deny(missing_docs)]

pub mod correlate;
pub mod diff;
pub mod generated;
pub mod noise;
pub mod tally;

use regex::Regex;
use serde::Deserialize;

/// Distinct routes tracked by a run's counters (latency, differences, noise); more are
/// counted together under one name.
pub const MAX_ROUTES: usize = 2_000;

/// A fast in-process hash (not stable across versions; never stored).
pub(crate) fn fx_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

/// A name read back from a document (a status class, an error kind, why a value looked
/// generated) as the `&'static str` the counters key on: each distinct name is kept once
/// for the life of the process, so reading many documents costs no more than their
/// distinct names.
pub fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(kept);
    kept
}

/// The path of a `Location` value (absolute URL or path), without query or fragment.
pub(crate) fn location_path(location: &str) -> &str {
    let p = match location.find("://") {
        Some(i) => location[i + 3..].find('/').map_or("/", |j| &location[i + 3 + j..]),
        None => location,
    };
    p.split(['?', '#']).next().unwrap_or(p)
}

/// Headers compared by default: the ones a client acts on.
pub const DEFAULT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "cache-control",
    "location",
    "set-cookie",
    "access-control-allow-origin",
    "content-security-policy",
    "strict-transport-security",
    "vary",
];

/// What to compare and what to ignore (the `--compare-config` TOML file, plus flags).
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// Response headers compared, lower case.
    pub headers: Vec<String>,
    /// Ignored keys (`$.meta.request_id`, `header:x-request-id`, `$.items[*].price`),
    /// optionally for one route only.
    ignore: Vec<(Option<String>, String)>,
    /// Differences between two values that both match one of these are ignored.
    ignore_values: Vec<Regex>,
    /// Explicit correlation rules.
    pub correlate: Vec<correlate::Rule>,
    /// Learn correlations from the recording (ids, `Location`) automatically.
    pub auto_correlate: bool,
    /// A route's p99 is flagged when replayed/recorded exceeds this…
    pub p99_ratio_flag: f64,
    /// …and the difference is at least this many ms…
    pub p99_min_delta_ms: f64,
    /// …over at least this many requests.
    pub min_count: u64,
    /// Scrubs the values examples show (set from the replay's scrub settings).
    pub scrub: Option<std::sync::Arc<tapedeck_captures::scrub::Scrubber>>,
    /// gRPC message types (`--proto-descriptor`): messages compared field by field.
    pub proto: Option<tapedeck_captures::proto::ProtoSchema>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
            ignore: Vec::new(),
            ignore_values: Vec::new(),
            correlate: Vec::new(),
            auto_correlate: true,
            p99_ratio_flag: 1.5,
            p99_min_delta_ms: 10.0,
            min_count: 20,
            scrub: None,
            proto: None,
        }
    }
}

/// The TOML layout of a compare config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareFile {
    /// Replaces the compared headers.
    pub headers: Option<Vec<String>>,
    /// Added to the compared headers.
    #[serde(default)]
    pub extra_headers: Vec<String>,
    /// Ignore rules: `$.path`, `header:name`, or `METHOD /route $.path`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Value regexes: a difference between two matching values is ignored.
    #[serde(default)]
    pub ignore_values: Vec<String>,
    /// Correlation rules.
    #[serde(default)]
    pub correlate: Vec<correlate::Rule>,
    /// Learn correlations automatically (default true).
    pub auto_correlate: Option<bool>,
    /// Flag routes whose p99 ratio exceeds this (default 1.5).
    pub p99_ratio_flag: Option<f64>,
    /// …by at least this many ms (default 10).
    pub p99_min_delta_ms: Option<f64>,
    /// …over at least this many requests (default 20).
    pub min_count: Option<u64>,
}

impl CompareConfig {
    /// Reads a TOML compare config on top of the defaults.
    pub fn from_file(file: CompareFile) -> Result<Self, String> {
        let mut c = CompareConfig::default();
        if let Some(h) = file.headers {
            c.headers = h;
        }
        c.headers.extend(file.extra_headers);
        for h in &mut c.headers {
            *h = h.to_ascii_lowercase();
        }
        for i in &file.ignore {
            c.add_ignore(i)?;
        }
        for v in &file.ignore_values {
            c.add_ignore_value(v)?;
        }
        c.correlate = file.correlate;
        c.auto_correlate = file.auto_correlate.unwrap_or(true);
        c.p99_ratio_flag = file.p99_ratio_flag.unwrap_or(c.p99_ratio_flag);
        c.p99_min_delta_ms = file.p99_min_delta_ms.unwrap_or(c.p99_min_delta_ms);
        c.min_count = file.min_count.unwrap_or(c.min_count);
        Ok(c)
    }

    /// Adds an ignore rule: `$.path` (array indices as `[*]` or a number), `header:NAME`,
    /// `status`, `body`, `grpc-status`, `websocket:close` (a session's close code),
    /// `websocket` (a session that stopped being readable), each optionally after a route:
    /// `GET /users/{id} $.updated_at`.
    pub fn add_ignore(&mut self, rule: &str) -> Result<(), String> {
        let rule = rule.trim();
        let (route, key) = match rule.rsplit_once(' ') {
            Some((route, key)) => (Some(route.trim().to_string()), key),
            None => (None, rule),
        };
        let key = if let Some(h) = key.strip_prefix("header:") {
            format!("header:{}", h.to_ascii_lowercase())
        } else if key.starts_with('$') {
            // Concrete indices match every element, as differences are grouped.
            let re = Regex::new(r"\[\d+\]").expect("constant regex");
            re.replace_all(key, "[*]").into_owned()
        } else if matches!(key, "status" | "body" | "grpc-status" | "websocket:close" | "websocket") {
            key.to_string()
        } else {
            return Err(format!(
                "ignore rule `{rule}`: expected `$.json.path`, `header:NAME`, `status`, `body`, `grpc-status`, `websocket:close` or `websocket`, optionally after a route (`GET /users/{{id}} $.updated_at`)"
            ));
        };
        if route.as_deref().is_some_and(|r| !r.contains(' ')) {
            return Err(format!("ignore rule `{rule}`: a route is `METHOD /path`, e.g. `GET /users/{{id}}`"));
        }
        self.ignore.push((route, key));
        Ok(())
    }

    /// Adds a value regex.
    pub fn add_ignore_value(&mut self, re: &str) -> Result<(), String> {
        self.ignore_values.push(Regex::new(re).map_err(|e| format!("ignore value regex `{re}`: {e}"))?);
        Ok(())
    }

    /// True when `key` (or a parent of it) is ignored on `route`.
    pub fn ignores(&self, route: &str, key: &str) -> bool {
        self.ignore.iter().any(|(r, k)| {
            r.as_deref().is_none_or(|r| r == route)
                && (key == k
                    || (key.starts_with(k.as_str()) && matches!(key.as_bytes().get(k.len()), Some(b'.' | b'['))))
        })
    }

    /// True when both values match one ignore regex.
    pub fn ignores_values(&self, a: &str, b: &str) -> bool {
        self.ignore_values.iter().any(|re| re.is_match(a) && re.is_match(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/compare.toml")).unwrap();
        let file: CompareFile = toml::from_str(&text).unwrap();
        let c = CompareConfig::from_file(file).unwrap();
        assert!(c.ignores("GET /x", "$.meta.request_id"));
        assert!(c.ignores("GET /x", "$.meta.request_id.part"));
        assert!(!c.ignores("GET /x", "$.meta.request_idx"));
        assert!(c.headers.contains(&"x-api-version".to_string()));
        assert!(!c.correlate.is_empty());
    }

    #[test]
    fn bad_rules_are_explained() {
        let mut c = CompareConfig::default();
        assert!(c.add_ignore("meta.id").unwrap_err().contains("expected"));
        assert!(c.add_ignore("/users $.id").unwrap_err().contains("METHOD /path"));
        assert!(c.add_ignore_value("(").is_err());
        c.add_ignore("$.items[3].ts").unwrap();
        assert!(c.ignores("GET /x", "$.items[*].ts"));
    }
}
