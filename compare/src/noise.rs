//! The noise model: per route, the keys (`$.meta.request_id`, `header:etag`) whose values
//! change by themselves. Learned, not written by hand:
//!
//! - from the recording: two recorded responses to identical requests (same method,
//!   target, body and credentials) that differ in a key make that key noisy;
//! - with `--noise-probe`: two replays of one request against the target (Diffy's
//!   primary/secondary idea) that differ in a key make it noisy;
//! - from a saved model (`--noise-model FILE`), which a run also updates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tapedeck_captures::exchange::Response;
use tapedeck_captures::files::DocumentError;
use tapedeck_captures::Exchange;

use super::diff;
use super::fx_hash as hash;
use super::generated::Window;
use super::CompareConfig;

/// Recorded requests remembered for finding duplicates, per worker.
const REMEMBERED: usize = 20_000;
/// JSON leaves fingerprinted per response at most.
const LEAVES: usize = 256;

/// Where a noisy key was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Recorded responses to identical requests differed.
    Recording,
    /// Two replays of one request differed.
    Probe,
    /// A saved model said so.
    Model,
}

/// Noisy keys by route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NoiseModel {
    /// Layout version of the file.
    pub version: u32,
    /// Route → key → where it was learned.
    pub routes: BTreeMap<String, BTreeMap<String, Source>>,
}

impl NoiseModel {
    /// Reads a saved model; every key in it counts as [`Source::Model`].
    pub fn load(path: &Path) -> Result<Self, DocumentError> {
        const WHAT: &str = "noise model";
        let text = std::fs::read_to_string(path).map_err(|source| DocumentError::Read {
            what: WHAT,
            path: path.into(),
            source,
        })?;
        let mut m: NoiseModel = serde_json::from_str(&text).map_err(|source| DocumentError::Invalid {
            what: WHAT,
            path: path.into(),
            source,
        })?;
        if m.version != 1 {
            return Err(DocumentError::Version { what: WHAT, path: path.into(), found: m.version.into(), reads: 1 });
        }
        for keys in m.routes.values_mut() {
            keys.values_mut().for_each(|s| *s = Source::Model);
        }
        Ok(m)
    }

    /// Writes the model as JSON: a new file (mode 0600) renamed over the old model, so a
    /// failed write leaves the old one whole and a planted symlink is replaced, not followed.
    pub fn save(&self, path: &Path) -> Result<(), DocumentError> {
        let mut m = self.clone();
        m.version = 1;
        let text = serde_json::to_string_pretty(&m).expect("a noise model is plain data");
        tapedeck_captures::files::write_output_bytes(path, true, text.as_bytes())
            .map_err(|source| DocumentError::Write { what: "noise model", source })
    }

    /// Marks `key` of `route` noisy (the first source is kept).
    pub fn add(&mut self, route: &str, key: &str, source: Source) {
        if let Some(keys) = self.routes.get_mut(route) {
            keys.entry(key.to_string()).or_insert(source);
        } else {
            self.routes.insert(route.to_string(), BTreeMap::from([(key.to_string(), source)]));
        }
    }

    /// Folds `other` in.
    pub fn merge(&mut self, other: NoiseModel) {
        for (route, keys) in other.routes {
            for (key, source) in keys {
                self.add(&route, &key, source);
            }
        }
    }

    /// Why `key` of `route` is noise, if it is.
    pub fn source(&self, route: &str, key: &str) -> Option<Source> {
        self.routes.get(route)?.get(key).copied()
    }

    /// Noisy keys, counted.
    pub fn len(&self) -> usize {
        self.routes.values().map(BTreeMap::len).sum()
    }

    /// True when nothing is noisy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first recorded answer to a request.
struct First {
    /// Status, compared headers and body, hashed.
    hash: u64,
    /// The answer itself, kept (within [`KEPT_BYTES`]) to find *which* keys differ once
    /// an identical request is answered differently.
    response: Option<Response>,
}

/// Bytes of first answers kept per learner at most.
const KEPT_BYTES: usize = 8 << 20;

/// Learns noise from recorded responses to identical requests. Cheap for the common case
/// — a request seen once, or answered the same again — which only hashes; bodies are
/// parsed only when an identical request was answered differently.
#[derive(Default)]
pub struct Learner {
    seen: HashMap<u64, First>,
    kept_bytes: usize,
    /// What was learned.
    pub model: NoiseModel,
}

/// The request's identity: what a server's answer may depend on.
fn request_key(ex: &Exchange) -> u64 {
    let r = &ex.request;
    let mut h =
        hash(r.method.as_bytes()) ^ hash(r.target.as_bytes()).rotate_left(1) ^ hash(&r.body.data).rotate_left(2);
    for name in ["authorization", "cookie", "accept", "accept-language"] {
        for v in r.headers.get_all(name) {
            h = h.rotate_left(5) ^ hash(v);
        }
    }
    h
}

/// Status, compared headers and body, hashed.
fn answer_hash(r: &Response, config: &CompareConfig) -> u64 {
    let mut h = u64::from(r.status) ^ hash(&r.body.data).rotate_left(3);
    for name in &config.headers {
        for v in r.headers.get_all(name) {
            h = h.rotate_left(5) ^ hash(v);
        }
    }
    h
}

/// The leaves of a JSON body and the compared headers, as (key, value hash).
fn leaves(resp: &Response, config: &CompareConfig) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for name in &config.headers {
        let v: Vec<&[u8]> = resp.headers.get_all(name).map(|b| &b[..]).collect();
        if !v.is_empty() {
            out.push((format!("header:{name}"), hash(&v.concat())));
        }
    }
    if let Ok(json) = serde_json::from_slice::<Value>(&resp.body.data) {
        walk(&json, &mut String::from("$"), &mut out);
    } else if !resp.body.data.is_empty() {
        out.push(("body".into(), hash(&resp.body.data)));
    }
    out
}

fn walk(v: &Value, key: &mut String, out: &mut Vec<(String, u64)>) {
    if out.len() >= LEAVES {
        return;
    }
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let len = key.len();
                key.push('.');
                key.push_str(k);
                walk(v, key, out);
                key.truncate(len);
            }
        }
        Value::Array(a) => {
            let len = key.len();
            key.push_str("[*]");
            // Element keys repeat: fold every element's value into one hash per key.
            let mut inner = Vec::new();
            for item in a {
                walk(item, key, &mut inner);
            }
            let mut folded: BTreeMap<String, u64> = BTreeMap::new();
            for (k, h) in inner {
                let e = folded.entry(k).or_insert(0);
                *e = e.rotate_left(7) ^ h;
            }
            out.extend(folded);
            key.truncate(len);
            out.push((format!("{key}.length"), a.len() as u64));
        }
        other => out.push((key.clone(), hash(other.to_string().as_bytes()))),
    }
}

impl Learner {
    /// Looks at one recorded exchange of `route`.
    pub fn observe(&mut self, ex: &Exchange, route: &str, config: &CompareConfig) {
        let Some(resp) = ex.response.as_ref().filter(|r| !r.body.truncated) else { return };
        let id = request_key(ex);
        let answer = answer_hash(resp, config);
        let size = resp.body.data.len() + 64 * resp.headers.len();
        let Some(first) = self.seen.get_mut(&id) else {
            if self.seen.len() < REMEMBERED {
                let keep = self.kept_bytes + size <= KEPT_BYTES;
                self.kept_bytes += if keep { size } else { 0 };
                self.seen.insert(id, First { hash: answer, response: keep.then(|| resp.clone()) });
            }
            return;
        };
        if first.hash == answer {
            return;
        }
        let Some(earlier) = first.response.as_ref() else {
            // Not kept (over budget): keep this one, to learn from the next answer.
            if self.kept_bytes + size <= KEPT_BYTES {
                self.kept_bytes += size;
                *first = First { hash: answer, response: Some(resp.clone()) };
            }
            return;
        };
        if earlier.status != resp.status {
            // Another status is another kind of answer, not noise in the same one.
            return;
        }
        if !self.model.routes.contains_key(route) && self.model.routes.len() >= crate::MAX_ROUTES {
            return;
        }
        let earlier_leaves = leaves(earlier, config);
        let mut before: Vec<(u64, u64)> = earlier_leaves.iter().map(|(k, v)| (hash(k.as_bytes()), *v)).collect();
        before.sort_unstable();
        let now = leaves(resp, config);
        let now_keys: std::collections::HashSet<u64> = now.iter().map(|(k, _)| hash(k.as_bytes())).collect();
        for (key, value) in &now {
            let kh = hash(key.as_bytes());
            match before.binary_search_by_key(&kh, |(k, _)| *k) {
                Ok(i) if before[i].1 == *value => {}
                // Changed, or present in only one of them.
                _ => self.model.add(route, key.trim_end_matches(".length"), Source::Recording),
            }
        }
        // Keys only the earlier answer had are noisy too (optional fields).
        let earlier_only: Vec<String> = earlier_leaves
            .into_iter()
            .filter(|(k, _)| !now_keys.contains(&hash(k.as_bytes())))
            .map(|(k, _)| k)
            .collect();
        for key in earlier_only {
            self.model.add(route, key.trim_end_matches(".length"), Source::Recording);
        }
    }
}

/// Keys that differ between two replays of one request (`--noise-probe`).
pub fn probe(
    first: &tapedeck_captures::exchange::Response,
    second: &tapedeck_captures::exchange::Response,
    route: &str,
    config: &CompareConfig,
    model: &mut NoiseModel,
) {
    // Only values that move between two answers to the same request are noise (a time, an
    // id); a status, a body's format or its shape that changed is the target failing or
    // flapping, which must stay visible.
    for d in diff::compare(first, second, route, config, &Window::default()) {
        if matches!(d.kind, diff::DiffKind::ValueChanged | diff::DiffKind::HeaderChanged) {
            model.add(route, &d.key, Source::Probe);
        }
    }
}

/// The set of noisy keys of one route, for quick lookups.
pub fn keys_of<'a>(model: &'a NoiseModel, route: &str) -> BTreeSet<&'a str> {
    model.routes.get(route).map(|k| k.keys().map(String::as_str).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_captures::exchange::{Body, Headers, Request, Response};

    fn exchange(target: &str, body: &str) -> Exchange {
        Exchange {
            request: Request { method: "GET".into(), target: target.into(), ..Default::default() },
            response: Some(Response {
                status: 200,
                headers: Headers::new(),
                body: Body::full(body.as_bytes().to_vec()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn identical_requests_teach_which_keys_are_noise() {
        let config = CompareConfig::default();
        let mut l = Learner::default();
        let r = "GET /users/{id}";
        l.observe(&exchange("/users/1", r#"{"name":"a","served_at":"t1","items":[{"n":1,"x":"p"}]}"#), r, &config);
        l.observe(&exchange("/users/1", r#"{"name":"a","served_at":"t2","items":[{"n":1,"x":"q"}]}"#), r, &config);
        // Another user's answer is not a duplicate: its other name teaches nothing.
        l.observe(&exchange("/users/2", r#"{"name":"b","served_at":"t3","items":[]}"#), r, &config);
        let keys: Vec<&str> = keys_of(&l.model, r).into_iter().collect();
        assert_eq!(keys, ["$.items[*].x", "$.served_at"]);
    }

    #[test]
    fn models_round_trip_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = NoiseModel::default();
        m.add("GET /a", "$.t", Source::Recording);
        let path = dir.path().join("noise.json");
        m.save(&path).unwrap();
        let mut loaded = NoiseModel::load(&path).unwrap();
        assert_eq!(loaded.source("GET /a", "$.t"), Some(Source::Model));
        let mut other = NoiseModel::default();
        other.add("GET /b", "header:etag", Source::Probe);
        loaded.merge(other);
        assert_eq!(loaded.len(), 2);
        std::fs::write(&path, "{}").unwrap();
        assert!(NoiseModel::load(&path).unwrap_err().to_string().contains("not a tapedeck noise model"));
    }
}
