//! Scrub policies: the TOML a user writes, merged over the built-in defaults and compiled
//! into the lookup tables the scrubber uses. Errors name the line and the problem.

use std::collections::BTreeMap;

// Lookups by header, field and key name run for every value scrubbed; the tables are
// fixed by the policy (input never adds entries), so a fast non-DoS-resistant hash is safe.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::scrub::action::Action;
use crate::scrub::detect::{Detectors, Kind};
use crate::scrub::jsonpath::JsonPath;

/// The built-in policy, with comments: what `tapedeck scrub --print-default-policy` prints.
pub const DEFAULT_POLICY: &str = include_str!("default-policy.toml");

/// A policy file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct PolicyError {
    /// Where the policy came from (a file name).
    pub origin: String,
    /// The 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// A custom detector.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Name, used in tokens and rule names.
    pub name: String,
    /// Regular expression.
    pub pattern: Spanned<String>,
    /// What to do with matches.
    pub action: Action,
}

/// Body handling.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Bodies {
    /// Unparseable bodies.
    pub unparsed: Option<Action>,
    /// Multipart file parts.
    pub files: Option<Action>,
    /// Headers the detectors skip.
    pub detect_skip_headers: Option<Vec<String>>,
}

/// A policy as written in TOML.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// Start from nothing instead of the defaults.
    pub replace_defaults: bool,
    /// Header rules by name.
    pub headers: BTreeMap<String, Action>,
    /// Header rules by name regex.
    pub header_patterns: BTreeMap<Spanned<String>, Action>,
    /// Cookie rules by name (`*` for the rest).
    pub cookies: BTreeMap<String, Action>,
    /// Query parameter rules.
    pub query: BTreeMap<String, Action>,
    /// Form field rules.
    pub form: BTreeMap<String, Action>,
    /// JSON key rules.
    pub json_keys: BTreeMap<String, Action>,
    /// Key rules by regular expression over the normalised name (lower case, no `_` or
    /// `-`), for names no exact key rule covers: `currentPassword`, `DATABASE_PASSWORD`.
    pub json_key_patterns: BTreeMap<Spanned<String>, Action>,
    /// JSON path rules.
    pub json_paths: BTreeMap<Spanned<String>, Action>,
    /// Detector actions by detector name.
    pub detect: BTreeMap<Spanned<String>, Action>,
    /// Custom detectors.
    pub custom: Vec<CustomDetector>,
    /// Body handling.
    pub bodies: Bodies,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

impl Policy {
    /// Parses a policy; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError {
            origin: origin.to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().to_string(),
        })?;
        // Validate what serde cannot, with the line it is on.
        let at = |spanned_start: usize, message: String| PolicyError {
            origin: origin.to_string(),
            line: Some(line_of(text, spanned_start)),
            message,
        };
        for pattern in policy.header_patterns.keys() {
            Regex::new(pattern.get_ref())
                .map_err(|e| at(pattern.span().start, format!("invalid header pattern: {e}")))?;
        }
        for pattern in policy.json_key_patterns.keys() {
            Regex::new(pattern.get_ref()).map_err(|e| at(pattern.span().start, format!("invalid key pattern: {e}")))?;
        }
        for path in policy.json_paths.keys() {
            path.get_ref().parse::<JsonPath>().map_err(|e| at(path.span().start, e))?;
        }
        for name in policy.detect.keys() {
            if !Kind::BUILT_IN.iter().any(|k| k.name() == name.get_ref()) {
                let known: Vec<_> = Kind::BUILT_IN.iter().map(|k| k.name()).collect();
                return Err(at(
                    name.span().start,
                    format!("unknown detector {:?}; detectors are {}", name.get_ref(), known.join(", ")),
                ));
            }
        }
        for c in &policy.custom {
            Regex::new(c.pattern.get_ref())
                .map_err(|e| at(c.pattern.span().start, format!("custom detector {:?}: {e}", c.name)))?;
            if c.name.is_empty() || !c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(at(
                    c.pattern.span().start,
                    format!("custom detector name {:?}: use letters, digits and _", c.name),
                ));
            }
        }
        Ok(policy)
    }

    /// The built-in defaults.
    pub fn defaults() -> Policy {
        // The embedded default policy is covered by tests; it always parses.
        Policy::parse(DEFAULT_POLICY, "built-in policy").expect("the built-in policy parses")
    }

    /// `self` over the defaults (unless it replaces them).
    pub fn over_defaults(self) -> Policy {
        if self.replace_defaults {
            return self;
        }
        let mut merged = Policy::defaults();
        merged.headers.extend(self.headers);
        merged.header_patterns.extend(self.header_patterns);
        merged.cookies.extend(self.cookies);
        merged.query.extend(self.query);
        merged.form.extend(self.form);
        merged.json_keys.extend(self.json_keys);
        merged.json_key_patterns.extend(self.json_key_patterns);
        merged.json_paths.extend(self.json_paths);
        merged.detect.extend(self.detect);
        merged.custom.extend(self.custom);
        if self.bodies.unparsed.is_some() {
            merged.bodies.unparsed = self.bodies.unparsed;
        }
        if self.bodies.files.is_some() {
            merged.bodies.files = self.bodies.files;
        }
        if self.bodies.detect_skip_headers.is_some() {
            merged.bodies.detect_skip_headers = self.bodies.detect_skip_headers;
        }
        merged.replace_defaults = false;
        merged
    }

    /// A short, stable fingerprint of the policy's content.
    pub fn fingerprint(&self) -> String {
        // Spans are positions in one file, not content: fingerprint the rules only.
        let canonical = serde_json::json!({
            "headers": self.headers,
            "header_patterns": self.header_patterns.iter().map(|(k, v)| (k.get_ref().clone(), *v)).collect::<BTreeMap<_, _>>(),
            "cookies": self.cookies,
            "query": self.query,
            "form": self.form,
            "json_keys": self.json_keys,
            "json_key_patterns": self.json_key_patterns.iter().map(|(k, v)| (k.get_ref().clone(), *v)).collect::<BTreeMap<_, _>>(),
            "json_paths": self.json_paths.iter().map(|(k, v)| (k.get_ref().clone(), *v)).collect::<BTreeMap<_, _>>(),
            "detect": self.detect.iter().map(|(k, v)| (k.get_ref().clone(), *v)).collect::<BTreeMap<_, _>>(),
            "custom": self.custom.iter().map(|c| (c.name.clone(), c.pattern.get_ref().clone(), c.action)).collect::<Vec<_>>(),
            "bodies": [self.bodies.unparsed, self.bodies.files],
            "skip": self.bodies.detect_skip_headers,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        hex::encode(&digest[..6])
    }
}

/// A short name for a key pattern: its first run of letters (`password` for
/// `password|passwd|…`, `first` for `^(first|last)name$`).
fn pattern_word(pattern: &str) -> &str {
    let start = pattern.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(pattern.len());
    let rest = &pattern[start..];
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    if end == 0 {
        "pattern"
    } else {
        &rest[..end]
    }
}

/// Lower-cases `key` and drops `_` and `-`, so `first_name` matches `firstName`.
pub fn normalize_key(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// [`normalize_key`] into `buf` without allocating, for short ASCII keys (the common
/// case on the scrubbing hot path); `None` for others.
pub fn normalize_key_ascii<'b>(key: &str, buf: &'b mut [u8; 64]) -> Option<&'b str> {
    let mut n = 0;
    for b in key.bytes() {
        if !b.is_ascii() {
            return None;
        }
        if b == b'_' || b == b'-' {
            continue;
        }
        *buf.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// A policy ready to apply.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub(crate) headers: HashMap<String, Action>,
    pub(crate) header_patterns: Vec<(Regex, String, Action)>,
    pub(crate) cookies: HashMap<String, Action>,
    pub(crate) cookie_default: Action,
    pub(crate) query: HashMap<String, Action>,
    pub(crate) form: HashMap<String, Action>,
    pub(crate) json_keys: HashMap<String, Action>,
    /// Key patterns, one set so a name is matched against all of them in one pass.
    pub(crate) json_key_patterns: (regex::RegexSet, Vec<(String, Action)>),
    pub(crate) json_paths: Vec<(JsonPath, Action)>,
    /// Member names JSON paths end in; `None` if some path ends in `*` or an index.
    pub(crate) json_path_names: Option<HashSet<String>>,
    pub(crate) detectors: Detectors,
    pub(crate) detect_actions: HashMap<Kind, Action>,
    pub(crate) custom_names: Vec<String>,
    pub(crate) unparsed: Action,
    pub(crate) files: Action,
    pub(crate) detect_skip: HashSet<String>,
    pub(crate) fingerprint: String,
}

impl Compiled {
    /// Compiles a (validated) policy.
    pub fn new(policy: &Policy) -> Compiled {
        let lower = |m: &BTreeMap<String, Action>| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect();
        let mut detect_actions = HashMap::default();
        let mut enabled = [false; crate::scrub::detect::BUILT_IN_COUNT];
        for (i, kind) in Kind::BUILT_IN.iter().enumerate() {
            let action =
                policy.detect.iter().find(|(k, _)| k.get_ref() == kind.name()).map_or(Action::Keep, |(_, a)| *a);
            enabled[i] = action != Action::Keep;
            detect_actions.insert(*kind, action);
        }
        let mut custom = Vec::new();
        let mut custom_names = Vec::new();
        for (i, c) in policy.custom.iter().enumerate() {
            if let Ok(re) = Regex::new(c.pattern.get_ref()) {
                custom.push(re);
                custom_names.push(c.name.clone());
                detect_actions.insert(Kind::Custom(i), c.action);
            }
        }
        Compiled {
            headers: lower(&policy.headers),
            header_patterns: policy
                .header_patterns
                .iter()
                .filter_map(|(p, a)| Regex::new(p.get_ref()).ok().map(|re| (re, p.get_ref().clone(), *a)))
                .collect(),
            cookie_default: policy.cookies.get("*").copied().unwrap_or(Action::Keep),
            cookies: policy
                .cookies
                .iter()
                .filter(|(k, _)| *k != "*")
                .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                .collect(),
            query: lower(&policy.query),
            form: lower(&policy.form),
            json_keys: policy.json_keys.iter().map(|(k, v)| (normalize_key(k), *v)).collect(),
            json_key_patterns: {
                let valid: Vec<(String, Action)> = policy
                    .json_key_patterns
                    .iter()
                    .filter(|(p, _)| Regex::new(p.get_ref()).is_ok())
                    .map(|(p, a)| (p.get_ref().clone(), *a))
                    .collect();
                let set = regex::RegexSet::new(valid.iter().map(|(p, _)| p.as_str()))
                    .unwrap_or_else(|_| regex::RegexSet::empty());
                (set, valid)
            },
            json_paths: policy
                .json_paths
                .iter()
                .filter_map(|(p, a)| p.get_ref().parse().ok().map(|jp| (jp, *a)))
                .collect(),
            json_path_names: policy
                .json_paths
                .keys()
                .map(|p| p.get_ref().parse::<JsonPath>().ok().and_then(|jp| jp.last_name().map(str::to_string)))
                .collect(),
            detectors: Detectors::new(enabled, custom),
            detect_actions,
            custom_names,
            unparsed: policy.bodies.unparsed.unwrap_or(Action::Drop),
            files: policy.bodies.files.unwrap_or(Action::Drop),
            detect_skip: policy.bodies.detect_skip_headers.iter().flatten().map(|h| h.to_ascii_lowercase()).collect(),
            fingerprint: policy.fingerprint(),
        }
    }

    /// True when `lower` (a lower-case name) is a header the policy or the cookie parsing
    /// has something to say about: `cookie`, `authorization`, `x-…-token` …
    pub fn is_header_name(&self, lower: &str) -> bool {
        lower == "cookie"
            || lower == "set-cookie"
            || self.headers.contains_key(lower)
            || self.header_patterns.iter().any(|(re, _, _)| re.is_match(lower))
    }

    /// The rule for a normalised key name: an exact key rule, else the strictest of the
    /// key patterns it matches (drop, then redact, hash, mask). The label names the rule.
    pub fn key_action(&self, norm: &str) -> Option<(Action, String)> {
        if let Some(a) = self.json_keys.get(norm) {
            return Some((*a, format!("json-key:{norm}")));
        }
        let (set, patterns) = &self.json_key_patterns;
        if patterns.is_empty() {
            return None;
        }
        let strictness = |a: Action| match a {
            Action::Drop => 4,
            Action::Redact => 3,
            Action::Hash => 2,
            Action::Mask => 1,
            Action::Keep => 0,
        };
        set.matches(norm)
            .into_iter()
            .map(|i| &patterns[i])
            .max_by_key(|(_, a)| strictness(*a))
            // Labelled by the pattern's first word, not the body's key: rule names and
            // token kinds come from the policy, never from the data.
            .map(|(p, a)| (*a, format!("json-key-pattern:{}", pattern_word(p))))
    }

    /// The name of a detector kind, for tokens and rule names.
    pub fn kind_name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Custom(i) => self.custom_names.get(i).map_or("custom", String::as_str),
            k => k.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_parses_and_covers_the_essentials() {
        let p = Policy::defaults();
        assert_eq!(p.headers["authorization"], Action::Hash);
        assert_eq!(p.cookies["*"], Action::Hash);
        assert!(p.json_keys.contains_key("password"));
        let c = Compiled::new(&p);
        assert_eq!(c.detect_actions[&Kind::Email], Action::Hash);
        assert!(c.detect_skip.contains("host"));
        assert_eq!(c.fingerprint, Policy::defaults().fingerprint(), "fingerprints are stable");
    }

    #[test]
    fn user_policies_extend_or_replace_the_defaults() {
        let mine = Policy::parse("[json-keys]\nnickname = \"hash\"\n[detect]\nip = \"keep\"\n", "mine.toml").unwrap();
        let merged = mine.clone().over_defaults();
        assert!(merged.json_keys.contains_key("nickname") && merged.json_keys.contains_key("password"));
        let c = Compiled::new(&merged);
        assert_eq!(c.detect_actions[&Kind::Ip], Action::Keep);
        assert!(!c.detectors.is_enabled(Kind::Ip));
        assert_ne!(c.fingerprint, Policy::defaults().fingerprint());

        let only =
            Policy::parse("replace-defaults = true\n[json-keys]\nnickname = \"hash\"\n", "x").unwrap().over_defaults();
        assert!(!only.json_keys.contains_key("password"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("[headers]\nauthorization = \"scramble\"\n", 2, "unknown variant `scramble`"),
            ("[json-paths]\n\"user.email\" = \"hash\"\n", 2, "must start with $"),
            ("[header-patterns]\n'(' = \"hash\"\n", 2, "invalid header pattern"),
            ("[detect]\nemial = \"hash\"\n", 2, "unknown detector \"emial\""),
            ("[[custom]]\nname = \"x\"\npattern = '['\naction = \"hash\"\n", 3, "custom detector \"x\""),
            ("[bodys]\n", 1, "unknown field `bodys`"),
        ];
        for (text, line, message) in cases {
            let e = Policy::parse(text, "policy.toml").unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("policy.toml, line {line}: ")), "{e}");
        }
    }

    #[test]
    fn keys_are_normalised() {
        assert_eq!(normalize_key("First_Name"), "firstname");
        assert_eq!(normalize_key("first-name"), "firstname");
        assert_eq!(normalize_key("firstName"), "firstname");
    }
}
