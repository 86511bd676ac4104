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
        self.map.insert(recorded, replayed).is_none()
    }

    /// True when `recorded` was learned to be `replayed` on the target.
    pub fn maps(&self, recorded: &str, replayed: &str) -> bool {
        self.map.get(recorded).is_some_and(|v| v == replayed)
    }

    /// Learns from one exchange of `route`: the recorded response against the replayed
    /// one. Returns how many new values were learned.
    pub fn learn(
        &mut self,
        recorded: &Response,
        replayed: &Response,
        route: &str,
        rules: &[Rule],
        auto: bool,
    ) -> usize {
        let mut learned = 0;
        if auto {
            // Redirects to a created resource.
            if let (Some(a), Some(b)) = (recorded.headers.get_str("location"), replayed.headers.get_str("location")) {
                let (a, b) = (path_of(a), path_of(b));
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
            if let (Some(a), Some(b)) = (json_of(recorded), json_of(replayed)) {
                learned += self.ids(&a, &b, "");
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

    /// Id-like values at the same place in both bodies.
    fn ids(&mut self, a: &Value, b: &Value, key: &str) -> usize {
        match (a, b) {
            (Value::Object(oa), Value::Object(ob)) => {
                oa.iter().filter_map(|(k, va)| ob.get(k).map(|vb| self.ids(va, vb, k))).sum()
            }
            (Value::Array(xa), Value::Array(xb)) => xa.iter().zip(xb).map(|(x, y)| self.ids(x, y, key)).sum(),
            (Value::String(x), Value::String(y)) if is_id_key(key) || (is_uuid(x) && is_uuid(y)) => {
                usize::from(self.insert(x.clone(), y.clone()))
            }
            (Value::Number(x), Value::Number(y)) if is_id_key(key) => {
                usize::from(self.insert(x.to_string(), y.to_string()))
            }
            _ => 0,
        }
    }

    /// Puts the target's values into `request`; returns how many places changed.
    pub fn apply(&self, request: &mut Request) -> usize {
        if self.map.is_empty() {
            return 0;
        }
        let mut n = 0;
        if let Some(t) = self.replace(&request.target) {
            request.target = t;
            n += 1;
        }
        for h in request.headers.0.iter_mut() {
            let name = h.name.to_ascii_lowercase();
            if matches!(&name[..], b"host" | b"content-length") {
                continue;
            }
            if let Some(v) = std::str::from_utf8(&h.value).ok().and_then(|v| self.replace(v)) {
                h.value = v.into_bytes().into();
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
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let mut out = String::with_capacity(s.len());
        let mut changed = false;
        let mut rest = s;
        while !rest.is_empty() {
            let start = rest.find(is_word).unwrap_or(rest.len());
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
            let word = &rest[..end];
            match self.map.get(word) {
                Some(v) => {
                    out.push_str(v);
                    changed = true;
                }
                None => out.push_str(word),
            }
            rest = &rest[end..];
        }
        // Values with delimiters inside (tokens with dots, JWTs): whole-string matches.
        for (from, to) in self.map.iter().filter(|(k, _)| k.len() >= 8 && k.contains(|c: char| !is_word(c))) {
            if out.contains(from.as_str()) {
                out = out.replace(from.as_str(), to);
                changed = true;
            }
        }
        changed.then_some(out)
    }
}

fn is_id_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "id" || k.ends_with("_id") || key.ends_with("Id") || k == "uuid" || k.contains("token") || k.contains("csrf")
}

fn path_of(location: &str) -> &str {
    let p = match location.find("://") {
        Some(i) => location[i + 3..].find('/').map_or("/", |j| &location[i + 3 + j..]),
        None => location,
    };
    p.split(['?', '#']).next().unwrap_or(p)
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
        assert!(vars.learn(&rec, &rep, "POST /orders", &rules, true) >= 3);
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
        assert_eq!(vars.apply(&mut req), 3);
        assert_eq!(req.target, "/orders/5001?ref=B9&page=10420");
        assert_eq!(req.headers.get_str("x-csrf-token"), Some("zzz999"));
        assert_eq!(&req.body.data[..], br#"{"order_id":5001}"#);
        assert_eq!(req.headers.get_str("content-length"), Some("17"));
    }

    #[test]
    fn scrubbed_and_equal_values_are_not_learned() {
        let mut vars = Vars::default();
        let rec = response(&[("set-cookie", "sid=[REDACTED]")], r#"{"id":"7","user_id":"u-1"}"#);
        let rep = response(&[("set-cookie", "sid=real")], r#"{"id":"8","user_id":"u-1"}"#);
        // "7" is too short to substitute safely; u-1 is unchanged; the cookie was scrubbed.
        assert_eq!(vars.learn(&rec, &rep, "POST /x", &[], true), 0);
        assert!(vars.is_empty());
    }
}
