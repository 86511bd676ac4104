//! Differences counted per route. Each exchange's differences are kept as a *signature*
//! (the set of keys that differed), so that noise learned later in the run — or only at
//! its end — can still be told apart per exchange: an exchange differs for real when its
//! signature holds a key that is not noise.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::diff::{Diff, DiffKind};
use super::noise::NoiseModel;

/// Distinct signatures and keys kept per route; beyond, exchanges count as differing.
const LIMIT: usize = 512;

/// One example of a difference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The request, `METHOD /path?query`.
    pub request: String,
    /// Where exactly.
    pub at: String,
    /// Recorded value.
    pub recorded: String,
    /// Replayed value.
    pub replayed: String,
    /// For a status difference: the start of the replayed answer's body (scrubbed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

#[derive(Clone, Debug)]
struct KeyTally {
    kind: DiffKind,
    count: u64,
    example: Example,
    generated: Option<&'static str>,
}

/// One route's differences.
#[derive(Clone, Debug, Default)]
pub struct RouteTally {
    /// Exchanges compared (both sides answered).
    pub compared: u64,
    /// Sets of keys (hashed, sorted) that differed together, and how often.
    signatures: HashMap<Box<[u64]>, u64>,
    /// The key behind each hash.
    names: HashMap<u64, String>,
    /// Exchanges with a difference whose signature did not fit.
    overflow: u64,
    keys: HashMap<String, KeyTally>,
}

impl RouteTally {
    /// Adds one compared exchange; `request` (`METHOD /path?query`) names it in examples.
    pub fn add(&mut self, request: impl FnOnce() -> String, diffs: Vec<Diff>) {
        self.compared += 1;
        if diffs.is_empty() {
            return;
        }
        let request = request();
        let mut signature: Vec<u64> = Vec::new();
        // A key counts once per response, however many places in it differ
        // (`$.items[*].price` in three items, `$[*].price` in three messages).
        let mut counted: Vec<u64> = Vec::new();
        for d in diffs {
            let h = super::fx_hash(d.key.as_bytes());
            let first_here = !counted.contains(&h);
            counted.push(h);
            if d.generated.is_none() {
                if !self.names.contains_key(&h) && self.names.len() < LIMIT {
                    self.names.insert(h, d.key.clone());
                }
                signature.push(h);
            }
            if let Some(k) = self.keys.get_mut(&d.key) {
                if first_here {
                    k.count += 1;
                }
                // A key is generated noise only while every difference in it is.
                if d.generated.is_none() {
                    k.generated = None;
                }
            } else if self.keys.len() < LIMIT {
                let example = Example {
                    request: request.to_string(),
                    at: d.at,
                    recorded: d.recorded,
                    replayed: d.replayed,
                    answer: d.answer,
                };
                self.keys.insert(d.key, KeyTally { kind: d.kind, count: 1, example, generated: d.generated });
            }
        }
        if signature.is_empty() {
            return;
        }
        signature.sort_unstable();
        signature.dedup();
        let signature = signature.into_boxed_slice();
        if let Some(n) = self.signatures.get_mut(&signature) {
            *n += 1;
        } else if self.signatures.len() < LIMIT {
            self.signatures.insert(signature, 1);
        } else {
            self.overflow += 1;
        }
    }

    /// Folds another worker's tally in.
    pub fn merge(&mut self, other: RouteTally) {
        self.compared = self.compared.saturating_add(other.compared);
        self.overflow = self.overflow.saturating_add(other.overflow);
        for (s, n) in other.signatures {
            let m = self.signatures.entry(s).or_default();
            *m = m.saturating_add(n);
        }
        for (h, name) in other.names {
            self.names.entry(h).or_insert(name);
        }
        for (key, theirs) in other.keys {
            match self.keys.get_mut(&key) {
                Some(mine) => {
                    mine.count = mine.count.saturating_add(theirs.count);
                    if theirs.generated.is_none() {
                        mine.generated = None;
                    }
                }
                None => {
                    self.keys.insert(key, theirs);
                }
            }
        }
    }

    /// The route's findings, with what `noise` (for `route`) says is noise set apart.
    pub fn finish(&self, route: &str, noise: &NoiseModel) -> RouteDiffs {
        let is_noise =
            |key: &str| noise.source(route, key).is_some() || self.keys.get(key).is_some_and(|k| k.generated.is_some());
        let mut differing = self.overflow;
        // A key whose name was not kept (over the limit) counts as a real difference.
        let real = |h: &u64| self.names.get(h).is_none_or(|k| !is_noise(k));
        for (signature, n) in &self.signatures {
            if signature.iter().any(real) {
                differing = differing.saturating_add(*n);
            }
        }
        let mut findings = Vec::new();
        let mut noisy = Vec::new();
        for (key, k) in &self.keys {
            let reason = match (k.generated, noise.source(route, key)) {
                (Some(g), _) => Some(g.to_string()),
                (None, Some(source)) => Some(format!("learned from {}", source_name(source))),
                (None, None) => None,
            };
            match reason {
                Some(reason) => noisy.push(NoiseEntry { key: key.clone(), reason, count: k.count }),
                None => findings.push(Finding {
                    kind: k.kind,
                    key: key.clone(),
                    count: k.count,
                    example: k.example.clone(),
                }),
            }
        }
        findings.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        noisy.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        RouteDiffs {
            compared: self.compared,
            differing,
            diff_rate: if self.compared > 0 { differing as f64 / self.compared as f64 } else { 0.0 },
            findings,
            noise: noisy,
        }
    }
}

/// A [`RouteTally`] as data, for a report that other reports can be merged with
/// (`tapedeck report --merge`): differing keys by name, so that it reads back whatever
/// hash a later version uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TallyDoc {
    /// Exchanges compared.
    pub compared: u64,
    /// Exchanges with a difference whose signature did not fit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow: u64,
    /// Sets of keys that differed together, and how often; a key whose name was not kept
    /// is `#` and its hash in hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<(Vec<String>, u64)>,
    /// Keys that differed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyDoc>,
}

/// One key of a [`TallyDoc`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyDoc {
    /// Where (`status`, `header:NAME`, `$.path`).
    pub key: String,
    /// What kind of difference.
    pub kind: DiffKind,
    /// Exchanges with it.
    pub count: u64,
    /// The first one.
    pub example: Example,
    /// Why every difference in it looked generated (`uuid`, …), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RouteTally {
    /// The tally as data ([`TallyDoc`]).
    pub fn to_doc(&self) -> TallyDoc {
        let name = |h: &u64| self.names.get(h).cloned().unwrap_or_else(|| format!("#{h:x}"));
        let mut signatures: Vec<(Vec<String>, u64)> =
            self.signatures.iter().map(|(s, n)| (s.iter().map(name).collect(), *n)).collect();
        signatures.sort();
        let mut keys: Vec<KeyDoc> = self
            .keys
            .iter()
            .map(|(key, k)| KeyDoc {
                key: key.clone(),
                kind: k.kind,
                count: k.count,
                example: k.example.clone(),
                generated: k.generated.map(str::to_string),
            })
            .collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        TallyDoc { compared: self.compared, overflow: self.overflow, signatures, keys }
    }

    /// A tally read back from data (as [`RouteTally::to_doc`] wrote it); the same limits
    /// hold as when counting.
    pub fn from_doc(doc: TallyDoc) -> RouteTally {
        let mut t = RouteTally { compared: doc.compared, overflow: doc.overflow, ..Default::default() };
        for (keys, n) in doc.signatures {
            let mut signature: Vec<u64> = keys
                .iter()
                .map(|k| match k.strip_prefix('#').and_then(|h| u64::from_str_radix(h, 16).ok()) {
                    Some(h) => h,
                    None => {
                        let h = super::fx_hash(k.as_bytes());
                        if t.names.len() < LIMIT {
                            t.names.entry(h).or_insert_with(|| k.clone());
                        }
                        h
                    }
                })
                .collect();
            signature.sort_unstable();
            signature.dedup();
            let signature = signature.into_boxed_slice();
            if let Some(m) = t.signatures.get_mut(&signature) {
                *m = m.saturating_add(n);
            } else if t.signatures.len() < LIMIT {
                t.signatures.insert(signature, n);
            } else {
                t.overflow = t.overflow.saturating_add(n);
            }
        }
        for k in doc.keys.into_iter().take(LIMIT) {
            let generated = k.generated.as_deref().map(crate::intern);
            t.keys.insert(k.key, KeyTally { kind: k.kind, count: k.count, example: k.example, generated });
        }
        t
    }
}

fn source_name(s: super::noise::Source) -> &'static str {
    match s {
        super::noise::Source::Recording => "the recording",
        super::noise::Source::Probe => "probes",
        super::noise::Source::Model => "the noise model",
    }
}

/// A route's comparison, as reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteDiffs {
    /// Exchanges compared (both sides answered).
    pub compared: u64,
    /// Exchanges with at least one difference that is not noise.
    pub differing: u64,
    /// `differing / compared`.
    pub diff_rate: f64,
    /// Differences, most frequent first, each with its first example.
    pub findings: Vec<Finding>,
    /// Keys that differed but are noise, and why.
    pub noise: Vec<NoiseEntry>,
}

/// A difference found on a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What kind.
    pub kind: DiffKind,
    /// Where (`status`, `header:NAME`, `$.path`, `body`).
    pub key: String,
    /// Exchanges with it.
    pub count: u64,
    /// The first one.
    pub example: Example,
}

/// A key set apart as noise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseEntry {
    /// Where.
    pub key: String,
    /// Why: `uuid`, `timestamp`, `token`, `learned from the recording`, …
    pub reason: String,
    /// Exchanges in which it differed.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::Source;

    fn diff(key: &str, generated: Option<&'static str>) -> Diff {
        Diff {
            kind: DiffKind::ValueChanged,
            key: key.into(),
            at: key.into(),
            recorded: "a".into(),
            replayed: "b".into(),
            generated,
            answer: None,
        }
    }

    #[test]
    fn noise_learned_late_still_clears_exchanges() {
        let mut t = RouteTally::default();
        t.add(|| "GET /a".into(), vec![diff("$.ts", None)]);
        t.add(|| "GET /a".into(), vec![diff("$.ts", None), diff("$.total", None)]);
        t.add(|| "GET /a".into(), vec![diff("$.id", Some("uuid"))]);
        t.add(|| "GET /a".into(), vec![]);
        let before = t.finish("GET /a", &NoiseModel::default());
        assert_eq!((before.compared, before.differing), (4, 2));
        let mut noise = NoiseModel::default();
        noise.add("GET /a", "$.ts", Source::Recording);
        let after = t.finish("GET /a", &noise);
        assert_eq!(after.differing, 1);
        assert_eq!(after.diff_rate, 0.25);
        assert_eq!(after.findings.len(), 1);
        assert_eq!(after.findings[0].key, "$.total");
        let reasons: Vec<(&str, &str)> = after.noise.iter().map(|n| (n.key.as_str(), n.reason.as_str())).collect();
        assert_eq!(reasons, [("$.ts", "learned from the recording"), ("$.id", "uuid")]);
    }

    #[test]
    fn a_tally_read_back_from_its_doc_finishes_the_same() {
        let mut t = RouteTally::default();
        t.add(|| "GET /a".into(), vec![diff("$.ts", None), diff("$.total", None)]);
        t.add(|| "GET /a".into(), vec![diff("$.ts", None)]);
        t.add(|| "GET /a".into(), vec![diff("$.id", Some("uuid"))]);
        t.add(|| "GET /a".into(), vec![]);
        let doc = t.to_doc();
        let json = serde_json::to_string(&doc).unwrap();
        let back = RouteTally::from_doc(serde_json::from_str(&json).unwrap());
        let mut noise = NoiseModel::default();
        noise.add("GET /a", "$.ts", Source::Recording);
        for noise in [NoiseModel::default(), noise] {
            assert_eq!(back.finish("GET /a", &noise), t.finish("GET /a", &noise));
        }
        assert_eq!(back.to_doc(), doc);
        // Merged after reading back, as two shards' tallies are.
        let mut twice = RouteTally::from_doc(doc.clone());
        twice.merge(RouteTally::from_doc(doc));
        let r = twice.finish("GET /a", &NoiseModel::default());
        assert_eq!((r.compared, r.differing), (8, 4));
    }

    #[test]
    fn a_key_that_once_changed_for_real_is_not_generated_noise() {
        let mut a = RouteTally::default();
        a.add(|| "GET /a".into(), vec![diff("$.v", Some("token"))]);
        let mut b = RouteTally::default();
        b.add(|| "GET /a".into(), vec![diff("$.v", None)]);
        a.merge(b);
        let r = a.finish("GET /a", &NoiseModel::default());
        assert_eq!((r.differing, r.findings.len()), (1, 1));
    }
}
