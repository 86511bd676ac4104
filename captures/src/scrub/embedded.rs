//! Values that are documents of their own. Answers echo requests (debug endpoints, webhook
//! delivery logs, gateways' request inspectors, error pages), so a JSON string may hold a
//! whole JSON or XML document, a form, a URL with a query, a cookie string or an
//! `Authorization` value. Each such value is parsed and scrubbed with its format's rules, recursively (to
//! [`MAX_EMBED_DEPTH`]), and written back in the same format; anything else meets the
//! detectors. Values under a name get that name's meaning too: a member named like a
//! credential header is treated as that header, a GraphQL document under `query` as
//! GraphQL, and a random-looking value under a name that says session, token, secret,
//! key, csrf, auth or sid as a secret.

use base64::Engine as _;

use crate::scrub::action::Action;
use crate::scrub::detect::is_secretish;
use crate::scrub::{graphql, json, HeaderOutcome, PairsOf, Pass};

use crate::scrub::names::{is_pair_name_key, is_pair_value_key, is_secret_name, AUTH_SCHEMES};

/// How many documents deep a value inside a value is followed.
pub const MAX_EMBED_DEPTH: u8 = 4;

/// `Bearer abc…`: the scheme and the credential.
pub(crate) fn auth_value(text: &str) -> Option<(&str, &str)> {
    let (scheme, credential) = text.split_once(' ')?;
    let credential_shaped = if scheme.eq_ignore_ascii_case("digest") {
        // `Digest username="…", realm="…", response="…"`
        credential.contains('=') && credential.contains(',')
    } else {
        // One token: "Basic plan includes 5 users" is prose, not a credential.
        credential.len() >= 8 && !credential.contains(char::is_whitespace)
    };
    (credential_shaped && AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))).then_some((scheme, credential))
}

/// True for `a=1&b=2`: names of URL-ish characters, no white space.
pub(crate) fn looks_like_form(text: &str) -> bool {
    !text.is_empty()
        && text.contains('=')
        && !text.bytes().any(|b| b.is_ascii_whitespace())
        && text.split('&').all(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            !name.is_empty()
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'%')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']' | b'%'))
        })
}

/// `a=1; b=2` (a Cookie header) or `a=1; Path=/; HttpOnly` (a Set-Cookie header); the
/// second is `Some(true)`.
pub(crate) fn looks_like_cookie(text: &str) -> Option<bool> {
    if !text.contains('=') || !text.contains(';') {
        return None;
    }
    let mut set_cookie = false;
    for (i, part) in text.split(';').map(str::trim).enumerate() {
        let name = part.split_once('=').map_or(part, |(n, _)| n).trim();
        let attribute = matches!(
            name.to_ascii_lowercase().as_str(),
            "path" | "domain" | "expires" | "max-age" | "samesite" | "httponly" | "secure" | "partitioned"
        );
        if i > 0 && attribute {
            set_cookie = true;
            continue;
        }
        let token = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            && part.contains('=');
        if !(token || part.is_empty() && i > 0) {
            return None;
        }
    }
    Some(set_cookie)
}

/// True for an absolute URL or a path with a query, without white space.
pub(crate) fn looks_like_url(text: &str) -> bool {
    let scheme = |s: &str| text.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s));
    (scheme("http://") || scheme("https://") || (text.starts_with('/') && text.contains('?')))
        && !text.bytes().any(|b| b.is_ascii_whitespace())
}

impl Pass<'_> {
    /// A value no rule took, under `key` when it has one: by what its name says, else as
    /// the document it is, else through the detectors. `None` when it stays as it is.
    pub(crate) fn free_value(&mut self, key: Option<&str>, text: &str) -> Option<String> {
        self.free_value_checked(key, text, false)
    }

    /// [`free_value`](Self::free_value), told whether `key` is already known not to be a
    /// header's name (the JSON rewriter asks first).
    pub(crate) fn free_value_checked(&mut self, key: Option<&str>, text: &str, not_header: bool) -> Option<String> {
        // Plain words: no document, no detector can find anything (header names excepted,
        // whose rules take any value).
        if (not_header || key.is_none())
            && crate::scrub::detect::inert(text)
            && self.scrubber.policy.detectors.built_in_only()
        {
            return None;
        }
        if let Some(key) = key {
            if let Some(out) = self.named(key, text, not_header) {
                return out;
            }
        }
        if let Some(out) = self.embedded(text) {
            return out;
        }
        // `/reset-password/9f86…`: a path is read as a request target.
        if text.starts_with('/') && text.len() > 1 && !text.contains(char::is_whitespace) {
            let mut t = text.to_string();
            self.target(&mut t);
            return match self.detect_text(&t) {
                Some(new) => Some(new),
                None => (t != text).then_some(t),
            };
        }
        // Log lines, echoed headers and connection strings: `Authorization: Bearer …`,
        // `Password=…;`, URLs.
        let b = text.as_bytes();
        let labelled = memchr::memchr(b'=', b).is_some()
            || memchr::memchr_iter(b':', b).any(|i| matches!(b.get(i + 1), Some(b' ' | b'\t' | b'"' | b'\'')));
        if labelled || (memchr::memchr(b':', b).is_some() && text.contains("://")) {
            return self.prose(text, labelled);
        }
        self.detect_text(text)
    }

    /// A text body: a document if it is one (JSON, XML, a form …), else prose with its
    /// labelled values.
    pub(crate) fn text_body(&mut self, text: &str) -> Option<String> {
        if let Some(out) = self.embedded(text) {
            return out;
        }
        self.prose(text, true)
    }

    /// Free text (a text body, a log line, a header): URLs in it are scrubbed as URLs;
    /// with `labelled`, `name: value` and `name=value` pairs by the name's rule (logfmt,
    /// YAML, `.env` dumps, Python reprs) and JSON objects in it as JSON (server-sent
    /// events, JSONP, a page's embedded state); then the detectors.
    pub(crate) fn prose(&mut self, text: &str, labelled: bool) -> Option<String> {
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        if memchr::memmem::find(text.as_bytes(), b"://").is_some() {
            for m in url_in_text().find_iter(text) {
                if let Some(new) = self.nested(|p| p.url(m.as_str())) {
                    edits.push((m.start(), m.end(), new));
                }
            }
        }
        if labelled && self.depth < MAX_EMBED_DEPTH {
            self.json_in_text(text, &mut edits);
            // `<input name="password" value="…">`, `<meta name="csrf-token" content="…">`:
            // a pair's name gives the next value its rule.
            let mut paired: Option<(Action, String, usize)> = None;
            for c in labelled_value().captures_iter(text) {
                let (Some(name), Some(value)) = (c.get(1), c.get(2)) else { continue };
                let norm = crate::scrub::policy::normalize_key(name.as_str());
                if is_pair_name_key(&norm) {
                    let named = value.as_str().trim_matches(['"', '\'']);
                    paired = self.key_rule(named).map(|(a, l)| (a, l, value.end()));
                    continue;
                }
                if let Some((action, rule, at)) = paired.take() {
                    if is_pair_value_key(&norm) && value.start() - at < 200 {
                        let raw = value.as_str();
                        let inner = raw.trim_matches(['"', '\'']);
                        let action = if action == Action::Drop { Action::Redact } else { action };
                        let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
                        if let Some(new) = self.apply(action, &kind, inner, &rule) {
                            let start = value.start() + raw.find(inner).unwrap_or(0);
                            edits.push((start, start + inner.len(), new));
                        }
                        continue;
                    }
                }
                if edits.iter().any(|(s, e, _)| value.start() < *e && *s < value.end()) {
                    continue;
                }
                // `Authorization: Bearer …`, `Cookie: a=1; b=2`: the rest of the line is the
                // header's value.
                if let Some(header) = self.header_like(name.as_str()) {
                    let (start, line) = header_line(text, value.start());
                    let end = start + line.len();
                    if edits.iter().any(|(s, e, _)| start < *e && *s < end) {
                        continue;
                    }
                    let new = match self.header_value(&header, line) {
                        HeaderOutcome::Keep => None,
                        HeaderOutcome::Drop => Some(crate::scrub::action::REDACTED.to_string()),
                        HeaderOutcome::Replace(new) => Some(new),
                    };
                    if let Some(new) = new {
                        edits.push((start, end, new));
                    }
                    continue;
                }
                let raw = value.as_str();
                let quote =
                    raw.chars().next().filter(|q| matches!(q, '"' | '\'') && raw.len() >= 2 && raw.ends_with(*q));
                let inner = if quote.is_some() { &raw[1..raw.len() - 1] } else { raw };
                let Some((action, rule)) = self.key_rule(name.as_str()) else {
                    // `url=/login?token=…`: a path with a query.
                    if inner.starts_with('/') && inner.contains('?') {
                        let mut t = inner.to_string();
                        self.target(&mut t);
                        if t != inner {
                            let start = value.start() + usize::from(quote.is_some());
                            edits.push((start, start + inner.len(), t));
                        }
                    }
                    continue;
                };
                let action = if action == Action::Drop { Action::Redact } else { action };
                let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
                if let Some(new) = self.apply(action, &kind, inner, &rule) {
                    let new = match quote {
                        Some(q) => format!("{q}{new}{q}"),
                        None => new,
                    };
                    edits.push((value.start(), value.end(), new));
                }
            }
        }
        edits.sort_by_key(|e| e.0);
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end, new) in &edits {
            if *start < last {
                continue;
            }
            out.push_str(&text[last..*start]);
            out.push_str(new);
            last = *end;
        }
        out.push_str(&text[last..]);
        let changed = !edits.is_empty();
        match self.detect_text(&out) {
            Some(new) => Some(new),
            None => changed.then_some(out),
        }
    }

    /// JSON objects inside free text, each scrubbed as JSON.
    fn json_in_text(&mut self, text: &str, edits: &mut Vec<(usize, usize, String)>) {
        let b = text.as_bytes();
        let mut i = 0;
        let mut found = 0;
        while let Some(open) = memchr::memchr(b'{', &b[i..]).map(|p| i + p) {
            let Some(close) = matching_brace(b, open) else { break };
            let candidate = &text[open..=close];
            if let Ok(result) = self.nested(|p| json::scrub(p, candidate.as_bytes(), false)) {
                if let Some(new) = result.and_then(|v| String::from_utf8(v).ok()) {
                    edits.push((open, close + 1, new));
                }
                found += 1;
                i = close + 1;
            } else {
                i = open + 1;
            }
            if found > 1000 {
                break;
            }
        }
    }

    /// The rule the key tables give `name` (JSON keys apply to every named value: form
    /// fields, XML elements and attributes, GraphQL arguments).
    pub(crate) fn key_rule(&mut self, name: &str) -> Option<(Action, String)> {
        let info = self.key_info(name);
        info.rule.map(|(a, l)| (a, l.to_string()))
    }

    /// The header `name` is named like, if a header rule or the cookie parsing applies to
    /// it: `Cookie`, `Authorization`, `X-Api-Key`, `x-…-token` …
    pub(crate) fn header_like(&mut self, name: &str) -> Option<String> {
        let info = self.key_info(name);
        info.header.map(|h| h.to_string())
    }

    /// `text` under `key`: `Some(result)` when the name decides how it is scrubbed.
    fn named(&mut self, key: &str, text: &str, not_header: bool) -> Option<Option<String>> {
        if let Some(header) = (!not_header).then(|| self.header_like(key)).flatten() {
            return Some(match self.header_value(&header, text) {
                HeaderOutcome::Keep => self.detect_text(text),
                HeaderOutcome::Drop => Some(String::new()),
                HeaderOutcome::Replace(new) => Some(new),
            });
        }
        if key.eq_ignore_ascii_case("query") && graphql::looks_like(text) {
            return Some(self.nested(|p| graphql::scrub(p, text)));
        }
        if text.len() >= 20 && is_secretish(text) && is_secret_name(key) {
            let rule = "secret:key".to_string();
            return Some(self.apply(Action::Hash, "secret", text, &rule));
        }
        None
    }

    /// The front of a value a capture limit cut: a document's front (JSON, XML) keeps
    /// its complete parts, scrubbed as that document; other text meets everything a
    /// free value meets. `None` when it stays as it is; `Some("")` when nothing of it
    /// can be kept.
    pub(crate) fn cut_value(&mut self, key: Option<&str>, text: &str) -> Option<String> {
        let t = text.trim_start();
        if self.depth < MAX_EMBED_DEPTH && (t.starts_with('{') || t.starts_with('[')) {
            return match self.nested(|p| json::scrub(p, text.as_bytes(), true)) {
                Ok(result) => result.map(|v| String::from_utf8(v).unwrap_or_default()),
                Err(_) => Some(String::new()),
            };
        }
        if self.depth < MAX_EMBED_DEPTH && t.starts_with('<') {
            return match self.nested(|p| crate::scrub::xml::scrub(p, text.as_bytes(), true)) {
                Ok(result) => result.map(|v| String::from_utf8(v).unwrap_or_default()),
                Err(_) => Some(String::new()),
            };
        }
        self.free_value(key, text)
    }

    /// Runs `f` one document deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// `Some(result)` when `text` is a document of a format this module parses.
    fn embedded(&mut self, text: &str) -> Option<Option<String>> {
        if self.depth >= MAX_EMBED_DEPTH || text.len() < 3 {
            return None;
        }
        let t = text.trim();
        let (first, last) = (*t.as_bytes().first()?, *t.as_bytes().last()?);
        // A JSON document in base64 (`eyJ…`, `W3s…`): Pub/Sub pushes, webhook envelopes.
        if let Some((decoded, engine)) = base64_json(t) {
            if let Ok(result) = self.nested(|p| json::scrub(p, &decoded, false)) {
                return Some(result.map(|new| engine.encode(new)));
            }
        }
        if (first == b'{' && last == b'}') || (first == b'[' && last == b']') {
            if let Ok(result) = self.nested(|p| json::scrub(p, text.as_bytes(), false)) {
                return Some(result.and_then(|v| String::from_utf8(v).ok()));
            }
            // `{ user(id: 1) { … } }`: GraphQL's query shorthand.
            if first == b'{' && graphql::looks_like(t) {
                return Some(self.nested(|p| graphql::scrub(p, text)));
            }
            return None;
        }
        if first == b'<' && last == b'>' {
            // An XML document quoted in a value (an echoed SOAP request, a logged payload).
            if let Ok(result) = self.nested(|p| crate::scrub::xml::scrub(p, text.as_bytes(), false)) {
                return Some(result.and_then(|v| String::from_utf8(v).ok()));
            }
        }
        if looks_like_url(t) {
            return Some(self.nested(|p| p.url(text)));
        }
        if auth_value(t).is_some() && self.scrubber.policy.headers.contains_key("authorization") {
            return Some(match self.header_value("authorization", text) {
                HeaderOutcome::Replace(new) => Some(new),
                HeaderOutcome::Drop => Some(String::new()),
                HeaderOutcome::Keep => None,
            });
        }
        if let Some(set_cookie) = looks_like_cookie(t) {
            return Some(match self.nested(|p| p.cookies(text, "; ", set_cookie)) {
                HeaderOutcome::Replace(new) => Some(new),
                HeaderOutcome::Drop => Some(String::new()),
                HeaderOutcome::Keep => self.detect_text(text),
            });
        }
        if looks_like_form(t) {
            return Some(self.nested(|p| p.pairs(text, PairsOf::Form)));
        }
        None
    }

    /// A URL: user-info hashed, host through the detectors, path and query as a request
    /// target, a fragment holding parameters (`#access_token=…`) as a query.
    fn url(&mut self, text: &str) -> Option<String> {
        let (origin, rest) = match text.find("://") {
            Some(i) => {
                let after = &text[i + 3..];
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                text.split_at(i + 3 + end)
            }
            None => ("", text),
        };
        let mut new_origin = None;
        if let Some(scheme_end) = origin.find("://").map(|i| i + 3) {
            let authority = &origin[scheme_end..];
            let (userinfo, host) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let new_user = userinfo.and_then(|u| self.apply(Action::Hash, "userinfo", u, "url:userinfo"));
            let new_host = self.detect_text(host);
            if new_user.is_some() || new_host.is_some() {
                let mut o = origin[..scheme_end].to_string();
                if let Some(u) = userinfo {
                    o.push_str(new_user.as_deref().unwrap_or(u));
                    o.push('@');
                }
                o.push_str(new_host.as_deref().unwrap_or(host));
                new_origin = Some(o);
            }
        }
        let (target, fragment) = match rest.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (rest, None),
        };
        let mut new_target = target.to_string();
        self.target(&mut new_target);
        let new_fragment =
            fragment.and_then(|f| if looks_like_form(f) { self.pairs(f, PairsOf::Query) } else { self.detect_text(f) });
        if new_origin.is_none() && new_target == target && new_fragment.is_none() {
            return None;
        }
        let mut out = new_origin.unwrap_or_else(|| origin.to_string());
        out.push_str(&new_target);
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(new_fragment.as_deref().unwrap_or(f));
        }
        Some(out)
    }
}

/// `text` decoded when it is base64 (standard or URL-safe, padded or not) of a JSON object
/// or array, with the engine that decodes it (to encode the scrubbed document back alike).
pub(crate) fn base64_json(text: &str) -> Option<(Vec<u8>, &'static base64::engine::GeneralPurpose)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    // `eyJ` / `eyAi` / `W3s` / `WyJ` …: `{"`, `{ "`, `[{`, `["` encoded.
    if text.len() < 16 || !(text.starts_with("ey") || text.starts_with('W')) || text.contains('.') {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')) {
        return None;
    }
    let engine = match (text.contains(['-', '_']), text.ends_with('=')) {
        (false, true) => &STANDARD,
        (false, false) if text.len().is_multiple_of(4) => &STANDARD,
        (false, false) => &STANDARD_NO_PAD,
        (true, true) => &URL_SAFE,
        (true, false) => &URL_SAFE_NO_PAD,
    };
    let decoded = engine.decode(text).ok()?;
    let first = decoded.iter().find(|b| !b.is_ascii_whitespace())?;
    (matches!(first, b'{' | b'[') && serde_json::from_slice::<serde_json::Value>(&decoded).is_ok())
        .then_some((decoded, engine))
}

/// The value of a header written as a line (`Authorization: Bearer …`) starting at `at`:
/// to the end of the line, or inside the quotes it opens with (`"Cookie": "a=1"`). Its
/// start and text.
pub(crate) fn header_line(text: &str, at: usize) -> (usize, &str) {
    let rest = &text[at..];
    if let Some(q) = rest.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let inner = &rest[1..];
        let end = inner.find([q, '\n', '\r']).unwrap_or(inner.len());
        return (at + 1, &inner[..end]);
    }
    let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
    (at, rest[..end].trim_end_matches(['"', '\'', ',', ';', '<']))
}

/// URLs in free text: `https://…`, `wss://…`, `ftp://…`, up to white space or a quote.
pub(crate) fn url_in_text() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r#"(?i)\b[a-z][a-z0-9+.\-]{1,15}://[^\s<>"'\\`]+"#).expect("valid"))
}

/// `name: value`, `name=value`, `"name": "value"`, `'name': 'value'` in free text.
pub(crate) fn labelled_value() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r#"(?m)(?:^|[\s{,;&?(\[])["']?([A-Za-z_][A-Za-z0-9_.\-\[\]]{0,48})["']?[ \t]*[:=][ \t]*("[^"\n]{1,512}"|'[^'\n]{1,512}'|[^\s,;&'"<>{}()\[\]]{1,512})"#,
        )
        .expect("valid")
    })
}

/// The `}` closing the `{` at `open`, skipping strings; `None` if unbalanced.
pub(crate) fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'{' if !in_string => depth += 1,
            b'}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        if depth > 128 {
            return None;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::names::is_person_parent;

    #[test]
    fn shapes_are_recognised() {
        assert!(looks_like_form("a=1&b=x%40y.com&c="));
        assert!(looks_like_form("session_id=abc"));
        assert!(!looks_like_form("a = 1"));
        assert!(!looks_like_form("jane@example.com=1"));
        assert!(!looks_like_form("no equals here"));
        assert_eq!(looks_like_cookie("session_id=abc; csrftoken=def"), Some(false));
        assert_eq!(looks_like_cookie("sid=abc; Path=/; HttpOnly; Secure"), Some(true));
        assert_eq!(looks_like_cookie("a; b"), None);
        assert_eq!(looks_like_cookie("x=1; this is prose; y"), None);
        assert!(looks_like_url("https://example.com/a?b=c"));
        assert!(looks_like_url("/search?q=x"));
        assert!(!looks_like_url("/static/app.js"));
        assert!(!looks_like_url("https://example.com and more"));
        assert_eq!(auth_value("Bearer abc.def.ghi"), Some(("Bearer", "abc.def.ghi")));
        assert_eq!(auth_value("Basically nothing"), None);
        assert_eq!(auth_value("Basic plan includes 5 users"), None);
        assert_eq!(auth_value("Token expired"), None);
        assert!(auth_value("Digest username=\"jane\", realm=\"api\", response=\"6629fae4\"").is_some());
        assert!(is_person_parent("customers") && is_person_parent("user") && !is_person_parent("product"));
        assert!(is_secret_name("csrftoken") && is_secret_name("X-Session-Id") && !is_secret_name("request_id"));
        assert!(is_secret_name("api_key") && is_secret_name("accessKey") && is_secret_name("sessionToken"));
        for not_secret in ["Key", "sortKey", "keyword", "authorId", "sidebarWidget", "monkey"] {
            assert!(!is_secret_name(not_secret), "{not_secret}");
        }
    }
}
