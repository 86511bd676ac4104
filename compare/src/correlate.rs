//! Correlation for stateful sessions. When a recorded response produced a value — an id
//! in a JSON body, a `Location`, a cookie, a CSRF token — and the target produced another
//! one in its place, later requests of the same session carry the target's value, so
//! `POST /orders` → `GET /orders/{new id}` works against staging.
//!
//! Candidates are found automatically (id-like JSON keys, UUID values, `Location` path
//! segments, cookies) and by explicit rules; a value is substituted only where it appears
//! whole (between delimiters), never inside a longer token.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use tapedeck_captures::exchange::{Headers, Request, Response};
use tapedeck_captures::scrub::action::is_scrubbed;

use super::generated::is_uuid;

/// Values remembered per session at most.
const PER_SESSION: usize = 256;

/// An explicit rule: where a response carries a value later requests use.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Only for this route (`POST /orders`); every route when absent.
    pub route: Option<String>,
    /// A JSON path in the response body: `$.order.id`, `$.items[0].id`.
    pub json: Option<String>,
    /// A response header, e.g. `X-CSRF-Token`.
    pub header: Option<String>,
    /// A cookie the response sets.
    pub cookie: Option<String>,
}

/// One session's substitutions: recorded value → the target's value.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    map: HashMap<String, String>,
    /// Keys for which [`has_delimiter`] holds.
    delimited: usize,
}

impl Vars {
    /// Nothing to substitute.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn insert(&mut self, recorded: String, replayed: String) -> bool {
        if recorded == replayed || recorded.len() < 2 || replayed.is_empty() || is_scrubbed(&recorded) {
            return false;
        }
        if self.map.len() >= PER_SESSION && !self.map.contains_key(&recorded) {
            return false;
        }
        let delimited = has_delimiter(&recorded);
        let new = self.map.insert(recorded, replayed).is_none();
        self.delimited += usize::from(new && delimited);
        new
    }

    /// True when the automatic rules may learn something from this pair of answers (a
    /// cheap test: headers present, id-like keys in the body).
    pub fn would_learn(recorded: &Response, replayed: &Response, creates: bool) -> bool {
        let both = |name: &str| recorded.headers.get(name).is_some() && replayed.headers.get(name).is_some();
        both("location") || both("set-cookie") || may_hold_ids(&recorded.body.data, creates)
    }

    /// True when `recorded` was learned to be `replayed` on the target.
    pub fn maps(&self, recorded: &str, replayed: &str) -> bool {
        self.map.get(recorded).is_some_and(|v| v == replayed)
    }

    /// Learns from one exchange of `route`: the recorded response against the replayed
    /// one. Ids in JSON bodies are learned from answers to requests that change state
    /// (`creates`: POST, PUT, …) — where new resources come from —, tokens from any answer.
    /// Returns how many new values were learned.
    pub fn learn(
        &mut self,
        recorded: &Response,
        replayed: &Response,
        route: &str,
        creates: bool,
        rules: &[Rule],
        auto: bool,
    ) -> usize {
        let mut learned = 0;
        if auto {
            // Redirects to a created resource.
            if let (Some(a), Some(b)) = (recorded.headers.get_str("location"), replayed.headers.get_str("location")) {
                let (a, b) = (super::location_path(a), super::location_path(b));
                let (sa, sb): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
                if sa.len() == sb.len() {
                    for (x, y) in sa.iter().zip(&sb) {
                        learned += usize::from(x != y && self.insert(x.to_string(), y.to_string()));
                    }
                }
            }
            for (name, a, b) in cookies(&recorded.headers, &replayed.headers) {
                let _ = name;
                learned += usize::from(self.insert(a, b));
            }
            // Parsing costs time on the worker's event loop: only bodies with such keys.
            if may_hold_ids(&recorded.body.data, creates) {
                if let (Some(a), Some(b)) = (json_of(recorded), json_of(replayed)) {
                    learned += self.ids(&a, &b, "", creates);
                }
            }
        }
        for rule in rules.iter().filter(|r| r.route.as_deref().is_none_or(|r| r == route)) {
            if let Some(path) = &rule.json {
                if let (Some(a), Some(b)) = (json_of(recorded), json_of(replayed)) {
                    if let (Some(x), Some(y)) = (at_path(&a, path), at_path(&b, path)) {
                        learned += usize::from(self.insert(text(x), text(y)));
                    }
                }
            }
            if let Some(name) = &rule.header {
                if let (Some(x), Some(y)) = (recorded.headers.get_str(name), replayed.headers.get_str(name)) {
                    learned += usize::from(self.insert(x.trim().to_string(), y.trim().to_string()));
                }
            }
            if let Some(cookie) = &rule.cookie {
                for (name, a, b) in cookies(&recorded.headers, &replayed.headers) {
                    if name.eq_ignore_ascii_case(cookie) {
                        learned += usize::from(self.insert(a, b));
                    }
                }
            }
        }
        learned
    }

    /// Id-like values at the same place in both bodies (only tokens unless `creates`).
    fn ids(&mut self, a: &Value, b: &Value, key: &str, creates: bool) -> usize {
        match (a, b) {
            (Value::Object(oa), Value::Object(ob)) => {
                oa.iter().filter_map(|(k, va)| ob.get(k).map(|vb| self.ids(va, vb, k, creates))).sum()
            }
            (Value::Array(xa), Value::Array(xb)) => xa.iter().zip(xb).map(|(x, y)| self.ids(x, y, key, creates)).sum(),
            (Value::String(x), Value::String(y))
                if is_token_key(key) || (creates && (is_id_key(key) || (is_uuid(x) && is_uuid(y)))) =>
            {
                usize::from(self.insert(x.clone(), y.clone()))
            }
            (Value::Number(x), Value::Number(y)) if creates && is_id_key(key) => {
                usize::from(self.insert(x.to_string(), y.to_string()))
            }
            _ => 0,
        }
    }

    /// Puts the target's values into `request`; returns how many places changed and adds
    /// the headers it changed to `headers`: their indexes and the target's values put in.
    pub fn apply(&self, request: &mut Request, headers: &mut Vec<(usize, Vec<String>)>) -> usize {
        if self.map.is_empty() {
            return 0;
        }
        let mut n = 0;
        if let Some(t) = self.replace(&request.target) {
            request.target = t;
            n += 1;
        }
        for (i, h) in request.headers.0.iter_mut().enumerate() {
            let name = h.name.to_ascii_lowercase();
            if matches!(&name[..], b"host" | b"content-length") {
                continue;
            }
            let mut issued = Vec::new();
            if let Some(v) = std::str::from_utf8(&h.value).ok().and_then(|v| self.replace_noting(v, &mut issued)) {
                h.value = v.into_bytes().into();
                headers.push((i, issued));
                n += 1;
            }
        }
        if !request.body.truncated {
            if let Some(body) = std::str::from_utf8(&request.body.data).ok().and_then(|b| self.replace(b)) {
                request.body = tapedeck_captures::exchange::Body::full(body.into_bytes());
                if request.headers.get("content-length").is_some() {
                    request.headers.set("content-length", request.body.len.to_string());
                }
                n += 1;
            }
        }
        n
    }

    /// `s` with every whole occurrence of a recorded value replaced; `None` if unchanged.
    fn replace(&self, s: &str) -> Option<String> {
        self.replace_noting(s, &mut Vec::new())
    }

    /// [`replace`](Self::replace), adding the target's values it put in to `issued`.
    fn replace_noting(&self, s: &str, issued: &mut Vec<String>) -> Option<String> {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        let bytes = s.as_bytes();
        let mut out: Option<String> = None;
        let (mut i, mut copied) = (0, 0);
        while i < bytes.len() {
            if !is_word(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_word(bytes[i]) {
                i += 1;
            }
            // Word boundaries are ASCII, so `start..i` is on character boundaries.
            if let Some(v) = self.map.get(&s[start..i]) {
                let o = out.get_or_insert_with(|| String::with_capacity(s.len() + 16));
                o.push_str(&s[copied..start]);
                o.push_str(v);
                issued.push(v.clone());
                copied = i;
            }
        }
        if let Some(o) = out.as_mut() {
            o.push_str(&s[copied..]);
        }
        if self.delimited > 0 {
            // Values with delimiters inside (tokens with dots, JWTs): whole-string matches.
            for (from, to) in self.map.iter().filter(|(k, _)| has_delimiter(k)) {
                let current = out.as_deref().unwrap_or(s);
                if current.contains(from.as_str()) {
                    out = Some(current.replace(from.as_str(), to));
                    issued.push(to.clone());
                }
            }
        }
        out
    }
}

/// Values of 8+ characters with a delimiter inside are matched as substrings.
fn has_delimiter(v: &str) -> bool {
    v.len() >= 8 && v.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// True when a JSON body may have a key [`is_id_key`] (with `creates`) or
/// [`is_token_key`] accepts, or a UUID value.
fn may_hold_ids(body: &[u8], creates: bool) -> bool {
    type Re = std::sync::OnceLock<regex::bytes::Regex>;
    static IDS: Re = Re::new();
    static TOKENS: Re = Re::new();
    let re = if creates {
        IDS.get_or_init(|| {
            regex::bytes::Regex::new(r#"(?i:id|token|csrf[a-z_]*|uuid)"\s*:|"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-"#)
                .expect("constant regex")
        })
    } else {
        TOKENS.get_or_init(|| regex::bytes::Regex::new(r#"(?i:token|csrf[a-z_]*)"\s*:"#).expect("constant regex"))
    };
    re.is_match(body)
}

/// Keys of values that identify something a later request may name. Tracing ids
/// (`request_id`, `trace_id`…) are per answer and never named again.
fn is_id_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    let tracing = ["request_id", "requestid", "trace_id", "traceid", "span_id", "spanid", "correlation_id"];
    if tracing.contains(&k.as_str()) {
        return false;
    }
    k == "id" || k.ends_with("_id") || key.ends_with("Id") || k == "uuid" || is_token_key(key)
}

/// Keys of tokens a later request must send back (CSRF, session or API tokens).
fn is_token_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("token") || k.contains("csrf")
}

fn json_of(r: &Response) -> Option<Value> {
    if r.body.truncated || r.body.data.is_empty() {
        return None;
    }
    serde_json::from_slice(&r.body.data).ok()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `$.a.b[0].c`.
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    let rest = path.strip_prefix('$')?;
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let (name, indices) = part.split_once('[').map_or((part, ""), |(n, i)| (n, i));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// `(name, recorded value, replayed value)` of cookies both responses set.
fn cookies(a: &Headers, b: &Headers) -> Vec<(String, String, String)> {
    let parse = |h: &Headers| -> Vec<(String, String)> {
        h.get_all("set-cookie")
            .filter_map(|v| {
                let v = String::from_utf8_lossy(v);
                let pair = v.split(';').next()?;
                let (n, val) = pair.split_once('=')?;
                Some((n.trim().to_string(), val.trim().to_string()))
            })
            .collect()
    };
    let theirs = parse(b);
    parse(a)
        .into_iter()
        .filter_map(|(n, va)| theirs.iter().find(|(m, _)| *m == n).map(|(_, vb)| (n, va, vb.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_captures::exchange::Body;

    fn response(headers: &[(&str, &str)], body: &str) -> Response {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.push(*n, *v);
        }
        Response { status: 201, headers: h, body: Body::full(body.as_bytes().to_vec()), ..Default::default() }
    }

    #[test]
    fn created_ids_follow_the_session() {
        let mut vars = Vars::default();
        let rec = response(
            &[("location", "http://prod/orders/1042"), ("set-cookie", "csrf=abc123; Path=/")],
            r#"{"order":{"id":1042,"ref":"A7"}}"#,
        );
        let rep = response(
            &[("location", "/orders/5001"), ("set-cookie", "csrf=zzz999; Path=/")],
            r#"{"order":{"id":5001,"ref":"B9"}}"#,
        );
        let rules = [Rule { json: Some("$.order.ref".into()), ..Default::default() }];
        assert!(vars.learn(&rec, &rep, "POST /orders", true, &rules, true) >= 3);
        let mut req = Request {
            method: "GET".into(),
            target: "/orders/1042?ref=A7&page=10420".into(),
            headers: {
                let mut h = Headers::new();
                h.push("x-csrf-token", "abc123");
                h.push("content-length", "17");
                h
            },
            body: Body::full(br#"{"order_id":1042}"#.to_vec()),
            ..Default::default()
        };
        let mut headers = Vec::new();
        assert_eq!(vars.apply(&mut req, &mut headers), 3);
        assert_eq!(headers, [(0, vec!["zzz999".to_string()])]);
        assert_eq!(req.target, "/orders/5001?ref=B9&page=10420");
        assert_eq!(req.headers.get_str("x-csrf-token"), Some("zzz999"));
        assert_eq!(&req.body.data[..], br#"{"order_id":5001}"#);
        assert_eq!(req.headers.get_str("content-length"), Some("17"));
    }

    #[test]
    fn scrubbed_and_equal_values_are_not_learned() {
        let mut vars = Vars::default();
        let rec = response(&[("set-cookie", "sid=[REDACTED]")], r#"{"id":"7","user_id":"u-1","request_id":"r-1"}"#);
        let rep = response(&[("set-cookie", "sid=real")], r#"{"id":"8","user_id":"u-1","request_id":"r-2"}"#);
        // "7" is too short to substitute safely; u-1 is unchanged; the cookie was scrubbed;
        // a request id is tracing, not a resource.
        assert_eq!(vars.learn(&rec, &rep, "POST /x", true, &[], true), 0);
        assert!(vars.is_empty());
        // Answers to reads teach tokens, not ids.
        let rec = response(&[], r#"{"id":"1001","csrf_token":"abc123"}"#);
        let rep = response(&[], r#"{"id":"5001","csrf_token":"xyz789"}"#);
        assert_eq!(vars.learn(&rec, &rep, "GET /form", false, &[], true), 1);
        assert!(vars.maps("abc123", "xyz789") && !vars.maps("1001", "5001"));
    }
}
