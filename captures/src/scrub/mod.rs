//! PII scrubbing: removes or pseudonymises personal data and credentials in exchanges,
//! inside the capture writer before anything is encoded, and in existing tapes.
//!
//! A [`Scrubber`] applies a [`Policy`] — rules by header, cookie, query,
//! form-field and JSON key or path, plus value [`detectors`](detect) that run over
//! everything no rule took — with one of four [`actions`](action). Bodies are handled by
//! content type ([`body`]): JSON is rewritten in a streaming pass that changes nothing but
//! the selected values ([`json`]); forms, multipart uploads and text are parsed; compressed
//! bodies are decoded first and stored decoded; what cannot be parsed follows the policy
//! (dropped by default). Every exchange records which rules fired and how often, never the
//! values.
//!
//! Scrubbing is idempotent: values it wrote (`[REDACTED]`, masks, `tok_…` tokens) are
//! recognised and left alone, so scrubbing a scrubbed tape changes nothing.

pub mod action;
pub mod audit;
pub mod body;
pub mod checks;
pub mod decode;
pub mod detect;
mod embedded;
pub mod graphql;
pub(crate) mod grpc;
pub mod json;
mod json_string;
pub mod jsonpath;
mod keys;
mod names;

pub use names::{is_client_address_header, is_credential_header, is_credential_param};

/// A header that holds a credential by its name but has no rule: cookies excepted, whose
/// rules are per cookie.
pub(crate) fn credential_without_rule(name: &str) -> bool {
    !matches!(name, "cookie" | "cookie2" | "set-cookie" | "set-cookie2") && is_credential_header(name)
}

/// Where a URL's userinfo may lie (`user:password@`): from after `scheme://` (or `//`,
/// or `scheme:/`) to the last `@`. A password may hold `/`, `?`, `#`, `@` or digits that
/// read as a port, so any `@` counts: tapedeck takes no credentials in URLs, and an `@`
/// that belongs to a path is written `%40`.
pub fn userinfo_span(url: &str) -> Option<std::ops::Range<usize>> {
    let at = url.rfind('@')?;
    // After the scheme's `://` (or `:/`, a scheme being letters first), or a leading `//`.
    let scheme_end = url
        .find(':')
        .filter(|i| {
            url[..*i].starts_with(|c: char| c.is_ascii_alphabetic())
                && url[..*i].bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        })
        .filter(|i| url[*i + 1..].starts_with('/'));
    let start = match scheme_end {
        Some(i) if url[i + 1..].starts_with("//") => i + 3,
        Some(i) => i + 2,
        None if url.starts_with("//") => 2,
        None => 0,
    };
    Some(start.min(at)..at)
}

/// `url` with its userinfo (`user:password@`) shown as `***@`, for messages: a URL given on
/// the command line may carry credentials, which are never echoed.
pub fn redact_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    match userinfo_span(url) {
        Some(span) => format!("{}***{}", &url[..span.start], &url[span.end..]).into(),
        None => url.into(),
    }
}

/// The error for a URL that carries credentials, which tapedeck neither sends nor stores:
/// `flag` names where it came from, `instead` says what to do.
pub fn userinfo_refused(flag: &str, url: &str, instead: &str) -> String {
    format!(
        "{flag} {}: credentials in the URL are not supported (they would be printed and recorded, and are never \
         sent; an @ that belongs to the path is written %40); {instead}",
        redact_userinfo(url)
    )
}
pub mod policy;
mod protobuf;
mod raw;
pub mod xml;

use std::collections::BTreeMap;

use crate::blob::Blob;
use crate::exchange::{Exchange, Headers, ScrubHit};
use action::{is_scrubbed, Action, Keyer};
use detect::Finding;
use keys::{KeyCache, KeyInfo, ShortKey};
use policy::{Compiled, Policy};

/// Applies a compiled policy. Cheap to share between threads.
#[derive(Clone, Debug)]
pub struct Scrubber {
    pub(crate) policy: Compiled,
    keyer: Keyer,
    keys: KeyCache,
    /// gRPC message types, when a descriptor set was given.
    proto: Option<crate::proto::ProtoSchema>,
}

/// Rule names and how often each fired.
pub type Hits = BTreeMap<String, u32>;

impl Scrubber {
    /// A scrubber for `policy` (already merged over the defaults as wanted) with an
    /// optional key for `hash`.
    pub fn new(policy: &Policy, key: Option<&[u8]>) -> Scrubber {
        Scrubber { policy: Compiled::new(policy), keyer: Keyer::new(key), keys: KeyCache::default(), proto: None }
    }

    /// The built-in policy.
    pub fn with_defaults(key: Option<&[u8]>) -> Scrubber {
        Scrubber::new(&Policy::defaults(), key)
    }

    /// This scrubber reading gRPC messages by `schema`'s field names.
    pub fn with_proto(mut self, schema: crate::proto::ProtoSchema) -> Scrubber {
        self.proto = Some(schema);
        self
    }

    /// The descriptor set it reads gRPC messages with.
    pub fn proto(&self) -> Option<&crate::proto::ProtoSchema> {
        self.proto.as_ref()
    }

    /// True when `hash` rules produce tokens (a key was given).
    pub fn has_key(&self) -> bool {
        self.keyer.has_key()
    }

    /// What goes into a tape's header: the policy's fingerprint and the key's (never the
    /// key itself).
    pub fn fingerprint(&self) -> String {
        let proto = self.proto.as_ref().map(|p| format!(" proto:{}", p.fingerprint())).unwrap_or_default();
        format!("policy:{}{proto} key:{}", self.policy.fingerprint, self.keyer.fingerprint().unwrap_or("none"))
    }

    /// Scrubs one value shown out of its exchange (a report's example) the way it would
    /// be scrubbed in place. `at` says where it was: a JSON path (`$.user.email`: its last
    /// member name's rules apply), `header:NAME`, or anything else (the value is then read
    /// as what it is: a document, a URL, free text).
    pub fn scrub_value(&self, at: &str, value: &str) -> String {
        let mut pass = Pass::new(self);
        let out = if let Some(name) = at.strip_prefix("header:") {
            match pass.header_value(&name.to_ascii_lowercase(), value) {
                HeaderOutcome::Keep => None,
                HeaderOutcome::Drop => Some(action::REDACTED.to_string()),
                HeaderOutcome::Replace(new) => Some(new),
            }
        } else if at.starts_with('$') {
            let key = jsonpath::last_member(at);
            match key.and_then(|k| pass.key_rule(k)) {
                Some((a, rule)) => {
                    let a = if a == Action::Drop { Action::Redact } else { a };
                    let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
                    pass.apply(a, &kind, value, &rule)
                }
                None => pass.free_value(key, value),
            }
        } else {
            pass.free_value(None, value)
        };
        out.unwrap_or_else(|| value.to_string())
    }

    /// The action of the rule that takes the member `at` names (`$.customer.card`, by its
    /// last name), if one does: a recording holds that member scrubbed, or not at all (a
    /// `drop` rule; a protobuf number, message or map no token fits).
    pub fn rule_for(&self, at: &str) -> Option<Action> {
        let mut pass = Pass::new(self);
        jsonpath::last_member(at).and_then(|k| pass.key_rule(k)).map(|(a, _)| a).filter(|a| *a != Action::Keep)
    }

    /// Scrubs a request target (`/path?query`) the way a capture's is scrubbed.
    pub fn scrub_target(&self, target: &str) -> String {
        let mut pass = Pass::new(self);
        let mut t = target.to_string();
        pass.target(&mut t);
        t
    }

    /// Scrubs `exchange` in place and records the rules that fired.
    pub fn scrub(&self, exchange: &mut Exchange) {
        let mut pass = Pass::new(self);
        pass.exchange(exchange);
        merge_hits(&mut exchange.scrub, pass.hits);
    }
}

fn merge_hits(into: &mut Vec<ScrubHit>, hits: Hits) {
    for (rule, count) in hits {
        match into.iter_mut().find(|h| h.rule == rule) {
            Some(h) => h.count = h.count.saturating_add(count),
            None => into.push(ScrubHit { rule, count }),
        }
    }
}

/// One scrubbing pass over one exchange.
pub(crate) struct Pass<'a> {
    pub(crate) scrubber: &'a Scrubber,
    pub(crate) hits: Hits,
    findings: Vec<Finding>,
    /// How many documents deep inside a value the pass is ([`embedded`]).
    depth: u8,
    /// What each member name means ([`Pass::key_info`]), looked up once per pass: bodies
    /// repeat their names, and key patterns and header patterns are regular expressions.
    keys: rustc_hash::FxHashMap<Box<str>, KeyInfo>,
    /// The same for names of up to 23 bytes, packed into three words: compared and
    /// hashed without a call (most names are short; this lookup runs for every member).
    short_keys: rustc_hash::FxHashMap<ShortKey, KeyInfo>,
    /// Detecting in a header the skip list names: e-mail addresses only.
    only_email: bool,
    /// The type of the gRPC messages in the body being scrubbed, when the schema has it.
    pub(crate) proto: Option<prost_reflect::MessageDescriptor>,
}

impl<'a> Pass<'a> {
    fn new(scrubber: &'a Scrubber) -> Self {
        Pass {
            scrubber,
            hits: Hits::new(),
            findings: Vec::new(),
            depth: 0,
            keys: Default::default(),
            short_keys: Default::default(),
            only_email: false,
            proto: None,
        }
    }

    /// What the name `key` means (its key rule, the header it is named like, whether it
    /// names a person or a pair's value): remembered for the pass, and by the scrubber
    /// for every pass (the rules behind it are regular expressions; a service's bodies
    /// use the same few hundred names).
    pub(crate) fn key_info(&mut self, key: &str) -> KeyInfo {
        let short = ShortKey::new(key);
        let cached = match &short {
            Some(short) => self.short_keys.get(short),
            None => self.keys.get(key),
        };
        if let Some(info) = cached {
            return info.clone();
        }
        let info = self.scrubber.keys.get_or_insert(key, |key| keys::meaning(&self.scrubber.policy, key));
        if self.keys.len() + self.short_keys.len() < keys::PASS_CAPACITY {
            match short {
                Some(short) => self.short_keys.insert(short, info.clone()),
                None => self.keys.insert(key.into(), info.clone()),
            };
        }
        info
    }

    pub(crate) fn hit(&mut self, rule: &str) {
        match self.hits.get_mut(rule) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                self.hits.insert(rule.to_string(), 1);
            }
        }
    }

    /// Applies a rule's action to `value`, counting the hit under `rule`; `None` when
    /// the value stays as it is. `Some("")` for drop.
    pub(crate) fn apply(&mut self, action: Action, kind: &str, value: &str, rule: &str) -> Option<String> {
        if action == Action::Keep || is_scrubbed(value) || value.is_empty() {
            return None;
        }
        self.hit(rule);
        // An e-mail address is the same token whichever rule took it (`email`, `userEmail`,
        // the detector), so joins across places survive.
        let kind = if action == Action::Hash && kind != "email" && detect::is_email(value) { "email" } else { kind };
        Some(self.scrubber.keyer.apply(action, kind, value).unwrap_or_default())
    }

    /// Runs the detectors over `text` and over its decoded views ([`decode`]: percent,
    /// form, HTML references, backslash escapes); the scrubbed text if anything was found.
    /// A finding in a decoded view is replaced in the raw text, in that encoding.
    ///
    /// Repeats until nothing more is found: a replacement can form a new match with the
    /// text beside it (`a@b.ca@b.co` → `tok_email_…@b.co`), and scrubbing must be
    /// idempotent. Only text that changed is scanned again.
    pub(crate) fn detect_text(&mut self, text: &str) -> Option<String> {
        if detect::inert(text) && self.scrubber.policy.detectors.built_in_only() {
            return None;
        }
        let mut current: Option<String> = None;
        for _ in 0..8 {
            let base = current.as_deref().unwrap_or(text);
            let mut next = self.detect_once(base, None);
            // One scan says whether any decoding can apply.
            if next.is_none() && memchr::memchr3(b'%', b'&', b'\\', base.as_bytes()).is_some() {
                for encoding in decode::Encoding::ALL {
                    if let Some(view) = decode::view(base, encoding) {
                        next = self.detect_once(base, Some(&view));
                        if next.is_some() {
                            break;
                        }
                    }
                }
            }
            match next {
                Some(n) => current = Some(n),
                None => break,
            }
        }
        current
    }

    /// One scan of `raw` (or of `view`, a decoding of it); the replaced raw text.
    fn detect_once(&mut self, raw: &str, view: Option<&decode::View>) -> Option<String> {
        let policy = &self.scrubber.policy;
        let scan = view.map_or(raw, |v| v.text.as_str());
        policy.detectors.find(scan, &mut self.findings);
        if self.only_email {
            self.findings.retain(|f| f.kind == detect::Kind::Email);
        }
        if self.findings.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(raw.len());
        let mut last = 0;
        let mut changed = false;
        let findings = std::mem::take(&mut self.findings);
        for f in &findings {
            let action = policy.detect_actions.get(&f.kind).copied().unwrap_or(Action::Keep);
            let value = &scan[f.start..f.end];
            let (start, end) = view.map_or((f.start, f.end), |v| v.raw_span(f.start, f.end));
            if start < last || !raw.is_char_boundary(start) || !raw.is_char_boundary(end) {
                continue;
            }
            let kind = policy.kind_name(f.kind).to_string();
            if let Some(new) = self.apply(action, &kind, value, &format!("detect:{kind}")) {
                out.push_str(&raw[last..start]);
                match view {
                    Some(v) => out.push_str(&v.encode(&new)),
                    None => out.push_str(&new),
                }
                last = end;
                changed = true;
            }
        }
        self.findings = findings;
        if !changed {
            return None;
        }
        out.push_str(&raw[last..]);
        Some(out)
    }

    fn exchange(&mut self, ex: &mut Exchange) {
        // The call's path names its message types (read before the target is scrubbed).
        let method = self.scrubber.proto.as_ref().and_then(|s| s.method(&ex.request.target));
        self.target(&mut ex.request.target);
        self.headers(&mut ex.request.headers);
        self.proto = method.as_ref().map(|m| m.input());
        body::scrub(self, &mut ex.request.headers, &mut ex.request.body);
        self.proto = method.map(|m| m.output());
        // Trailers are header fields that come last (gRPC's `grpc-message` may quote a
        // customer's e-mail): the same rules.
        self.headers(&mut ex.request.trailers);
        if let Some(r) = ex.response.as_mut() {
            self.headers(&mut r.headers);
            body::scrub(self, &mut r.headers, &mut r.body);
            self.headers(&mut r.trailers);
        }
        self.proto = None;
        if let Some(ws) = ex.websocket.as_mut() {
            self.websocket(ws);
        }
    }

    /// WebSocket messages: a text message (and a ping's, pong's or close's payload) is read
    /// like a body of no declared type (JSON, text, or the `unparsed` rule when it is not
    /// UTF-8); a binary message follows the `unparsed` rule whatever its bytes (protobuf
    /// with short strings is valid UTF-8, and no name would say what its fields hold).
    fn websocket(&mut self, ws: &mut crate::websocket::WebSocket) {
        let mut no_headers = crate::exchange::Headers::new();
        for m in &mut ws.messages {
            let mut body = crate::exchange::Body {
                data: std::mem::take(&mut m.data),
                len: m.len,
                truncated: m.truncated,
                decoded_from: None,
            };
            if m.kind == crate::websocket::Kind::Binary {
                if !body.data.is_empty() {
                    body::unparsed(self, &mut no_headers, &mut body, "websocket:binary");
                }
            } else {
                body::scrub(self, &mut no_headers, &mut body);
            }
            (m.data, m.len, m.truncated) = (body.data, body.len, body.truncated);
        }
    }

    /// The request target: path segments meet the detectors, query parameters their
    /// rules (or the detectors). Allocates only when something changes.
    pub(crate) fn target(&mut self, target: &mut String) {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target.as_str(), None),
        };
        let mut new_path: Option<String> = None;
        let mut previous = "";
        for (i, seg) in path.split('/').enumerate() {
            let mut replaced =
                if seg.contains('%') { self.detect_text(&percent_decode(seg)) } else { self.detect_text(seg) };
            // `/reset-password/9f86d0…`, `/verify/…`: a secret after a segment that says so.
            if replaced.is_none() && detect::is_secretish(seg) && names_a_secret(previous) {
                replaced = self.apply(Action::Hash, "secret", seg, "path:secret");
            }
            // Matrix parameters: `/cart;jsessionid=1A2B…/view`.
            if replaced.is_none() {
                if let Some((head, params)) = seg.split_once(';').filter(|(_, p)| p.contains('=')) {
                    // Decoded here: the segment is percent-encoded once, below.
                    replaced = self
                        .pairs(&params.replace(';', "&"), PairsOf::Query)
                        .map(|p| percent_decode(&format!("{head};{}", p.replace('&', ";"))));
                }
            }
            previous = seg;
            match (replaced, &mut new_path) {
                (Some(new), slot) => {
                    let out = slot.get_or_insert_with(|| path.split('/').take(i).collect::<Vec<_>>().join("/"));
                    if i > 0 {
                        out.push('/');
                    }
                    out.extend(percent_encoding::utf8_percent_encode(&new, PATH_SEGMENT));
                }
                (None, Some(out)) => {
                    if i > 0 {
                        out.push('/');
                    }
                    out.push_str(seg);
                }
                (None, None) => {}
            }
        }
        let new_query = query.and_then(|q| self.pairs(q, PairsOf::Query));
        if new_path.is_none() && new_query.is_none() {
            return;
        }
        let mut new = new_path.unwrap_or_else(|| path.to_string());
        if let Some(q) = new_query.as_deref().or(query) {
            new.push('?');
            new.push_str(q);
        }
        *target = new;
    }

    /// `name=value&…` pairs (query strings, urlencoded forms): rules by name, detectors
    /// for the rest. Unchanged pairs keep their exact bytes.
    pub(crate) fn pairs(&mut self, text: &str, of: PairsOf) -> Option<String> {
        let mut out = Vec::new();
        let mut changed = false;
        for pair in text.split('&') {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(raw_name);
            let value = form_decode(raw_value);
            let rules = match of {
                PairsOf::Query => &self.scrubber.policy.query,
                PairsOf::Form => &self.scrubber.policy.form,
            };
            let prefix = match of {
                PairsOf::Query => "query",
                PairsOf::Form => "form",
            };
            // `user[password]`, `user.password`: the innermost name says what it is.
            let lower = names::leaf_name(&name).to_ascii_lowercase();
            let rule = rules.get(&lower).map(|a| (*a, format!("{prefix}:{lower}"))).or_else(|| self.key_rule(&name));
            let replacement = match rule {
                Some((Action::Drop, rule)) if !value.is_empty() => {
                    self.hit(&rule);
                    changed = true;
                    continue;
                }
                Some((action, rule)) => self.apply(action, &lower, &value, &rule),
                None => self.free_value(Some(&name), &value),
            };
            match replacement {
                Some(new) => {
                    changed = true;
                    out.push(format!(
                        "{raw_name}={}",
                        form_urlencoded::byte_serialize(new.as_bytes()).collect::<String>()
                    ));
                }
                None => out.push(pair.to_string()),
            }
        }
        changed.then(|| out.join("&"))
    }

    /// Header values: rules by name and pattern, cookies by cookie name, detectors for the
    /// rest (except headers replays need that hold nothing personal). Allocates only for
    /// values it changes.
    pub(crate) fn headers(&mut self, headers: &mut Headers) {
        let mut i = 0;
        while i < headers.0.len() {
            let mut buf = [0u8; 64];
            let raw_name = &headers.0[i].name;
            let lowered;
            let name = match lowercase_ascii(raw_name, &mut buf) {
                Some(n) => n,
                None => {
                    lowered = raw_name.to_str_lossy().to_ascii_lowercase();
                    &lowered
                }
            };
            let value = headers.0[i].value.to_str_lossy();
            match self.header_value(name, &value) {
                HeaderOutcome::Keep => i += 1,
                HeaderOutcome::Drop => {
                    headers.0.remove(i);
                }
                HeaderOutcome::Replace(new) => {
                    headers.0[i].value = Blob::from(new);
                    i += 1;
                }
            }
        }
    }

    pub(crate) fn header_value(&mut self, name: &str, value: &str) -> HeaderOutcome {
        let policy = &self.scrubber.policy;
        let rule = policy
            .headers
            .get(name)
            .map(|a| (*a, format!("header:{name}")))
            .or_else(|| {
                policy
                    .header_patterns
                    .iter()
                    .find(|(re, _, _)| re.is_match(name))
                    .map(|(_, p, a)| (*a, format!("header-pattern:{p}")))
            })
            // A credential no rule names (`X-App-Key`, `X-Passcode`, `X-Forwarded-Client-Cert`):
            // hashed all the same. Cookies have rules of their own, per cookie.
            .or_else(|| credential_without_rule(name).then(|| (Action::Hash, "header:credential".to_string())));
        if let Some((action, rule)) = rule {
            if action == Action::Drop {
                self.hit(&rule);
                return HeaderOutcome::Drop;
            }
            // Credentials keep their scheme: `Bearer <token>`.
            if let Some((scheme, credential)) = value.split_once(' ').filter(|(s, _)| {
                (name.ends_with("authorization") || name.ends_with("authentication"))
                    && s.chars().all(char::is_alphabetic)
            }) {
                return match self.apply(action, name, credential, &rule) {
                    Some(new) => HeaderOutcome::Replace(format!("{scheme} {new}")),
                    None => HeaderOutcome::Keep,
                };
            }
            // A list of subprotocol names, where some clients put a token
            // (`base64url.bearer.authorization.k8s.io.<token>`): only those are credentials,
            // and the names must stay for a replay's handshake to be accepted.
            if name == "sec-websocket-protocol" {
                let mut changed = false;
                let parts: Vec<String> = value
                    .split(',')
                    .map(|p| match p.trim() {
                        entry if subprotocol_holds_credential(entry) => match self.apply(action, name, entry, &rule) {
                            Some(new) => {
                                changed = true;
                                new
                            }
                            None => entry.to_string(),
                        },
                        entry => entry.to_string(),
                    })
                    .filter(|p| !p.is_empty())
                    .collect();
                return if changed { HeaderOutcome::Replace(parts.join(", ")) } else { HeaderOutcome::Keep };
            }
            return self.apply(action, name, value, &rule).map_or(HeaderOutcome::Keep, HeaderOutcome::Replace);
        }
        match name {
            "cookie" | "cookie2" => self.cookies(value, "; ", false),
            "set-cookie" | "set-cookie2" => self.cookies(value, "; ", true),
            // `for=…;proto=https`: parameters, not cookies; addresses meet the detectors.
            "forwarded" => self.detect_text(value).map_or(HeaderOutcome::Keep, HeaderOutcome::Replace),
            // Headers that hold nothing personal (User-Agent, X-Request-Id …) but may quote
            // an e-mail address (`MyBot/1.0 (+mailto:ops@…)`); their versions and ids
            // are not phone numbers or addresses.
            _ if policy.detect_skip.contains(name) => {
                self.only_email = true;
                let out = self.detect_text(value);
                self.only_email = false;
                out.map_or(HeaderOutcome::Keep, HeaderOutcome::Replace)
            }
            _ => self.free_value(None, value).map_or(HeaderOutcome::Keep, HeaderOutcome::Replace),
        }
    }

    /// `a=1; b=2` (Cookie) or `a=1; Path=/; HttpOnly` (Set-Cookie: only the first pair is a
    /// cookie, the rest are attributes).
    pub(crate) fn cookies(&mut self, value: &str, sep: &str, set_cookie: bool) -> HeaderOutcome {
        let mut parts = Vec::new();
        let mut changed = false;
        for (n, part) in value.split(';').map(str::trim).enumerate() {
            if set_cookie && n > 0 {
                parts.push(part.to_string());
                continue;
            }
            let Some((name, v)) = part.split_once('=') else {
                // A value without a name: the default cookie rule.
                let action = self.scrubber.policy.cookie_default;
                match (set_cookie, self.apply(action, "cookie", part, "cookie:*")) {
                    (false, Some(new)) if action != Action::Drop => {
                        changed = true;
                        parts.push(new);
                    }
                    (false, Some(_)) => changed = true,
                    _ => parts.push(part.to_string()),
                }
                continue;
            };
            let policy = &self.scrubber.policy;
            let lower = name.trim().to_ascii_lowercase();
            let (action, rule) = match policy.cookies.get(&lower) {
                Some(a) => (*a, format!("cookie:{lower}")),
                None => (policy.cookie_default, "cookie:*".to_string()),
            };
            match (action, self.apply(action, "cookie", v, &rule)) {
                (Action::Drop, Some(_)) => changed = true,
                (_, Some(new)) => {
                    changed = true;
                    parts.push(format!("{name}={new}"));
                }
                (_, None) => parts.push(part.to_string()),
            }
        }
        if !changed {
            return HeaderOutcome::Keep;
        }
        if parts.is_empty() || (set_cookie && !parts[0].contains('=')) {
            return HeaderOutcome::Drop;
        }
        HeaderOutcome::Replace(parts.join(sep))
    }
}

pub(crate) enum HeaderOutcome {
    Keep,
    Drop,
    Replace(String),
}

/// Which rule table `name=value` pairs use.
#[derive(Clone, Copy)]
pub(crate) enum PairsOf {
    Query,
    Form,
}

/// `name` lower-cased into `buf` when it is short ASCII.
pub(crate) fn lowercase_ascii<'b>(name: &[u8], buf: &'b mut [u8; 64]) -> Option<&'b str> {
    let out = buf.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        if !b.is_ascii() {
            return None;
        }
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// True for a path segment after which a secret is expected.
/// A `Sec-WebSocket-Protocol` entry that carries a credential rather than naming a
/// protocol: a token-like value, or a dotted name whose parts say bearer, token,
/// authorization, key or secret.
pub(crate) fn subprotocol_holds_credential(entry: &str) -> bool {
    detect::is_secretish(entry)
        || entry.len() > 64
        || entry.split(['.', '-', '_']).any(|w| {
            ["bearer", "token", "authorization", "auth", "key", "secret", "password", "jwt"]
                .iter()
                .any(|s| w.eq_ignore_ascii_case(s))
        })
}

fn names_a_secret(segment: &str) -> bool {
    const WORDS: [&str; 17] = [
        "reset",
        "token",
        "verify",
        "confirm",
        "activat",
        "magic",
        "invite",
        "unsubscribe",
        "password",
        "secret",
        "session",
        "otp",
        "signin",
        "apikey",
        "login",
        "link",
        "auth",
    ];
    let lower = segment.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
}

fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A path segment's text (`+` is a literal plus in a path, unlike in a query).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// What must be escaped in a path segment (RFC 3986 `pchar` keeps the rest).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

#[cfg(test)]
mod embedded_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
