//! `tapedeck scrub --check`: an auditor, not the scrubber run again. It shares the
//! policy (which names and detectors count as personal) but none of the scrubber's
//! traversal, so it does not share its blind spots:
//!
//! - every byte of every decoded body, header and target is scanned as one text with all
//!   detectors, raw and through every decoding ([`decode`](mod@super::decode)), whatever the
//!   content type says;
//! - then the structure is read independently (a JSON tree, form pairs, XML events,
//!   GraphQL literals, cookies, URLs), and every value under a name a rule selects must
//!   be scrubbed already (a `[REDACTED]`, a mask or a `tok_…` token); strings that are
//!   documents themselves are opened, recursively.
//!
//! Findings name the category and where it is (part and JSON path, header name, form
//! field), never the value.

use std::collections::BTreeSet;

use crate::exchange::{Exchange, Headers};
use crate::scrub::action::{is_scrubbed, Action};
use crate::scrub::decode::{self, Encoding};
use crate::scrub::detect::{is_secretish, Finding as Match, Kind};
use crate::scrub::embedded::{
    auth_value, base64_json, header_line, labelled_value, looks_like_cookie, looks_like_form, looks_like_url,
    matching_brace, url_in_text,
};
use crate::scrub::names::{
    is_pair_name_key, is_pair_value_key, is_person_name_key, is_person_parent, is_person_sibling, is_secret_name,
    leaf_name,
};
use crate::scrub::policy::normalize_key;
use crate::scrub::{body, graphql, Scrubber};

/// Nesting of documents inside values the auditor follows.
const MAX_DEPTH: u8 = 6;

/// Something personal the auditor found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// What it is: a detector's name (`email`, `card` …), `key:NAME` for a value under a
    /// name a rule selects, `header:NAME`, `cookie:NAME`, `name` or `secret`.
    pub category: String,
    /// Where: `request target`, `response header set-cookie`, `request body $.user.email`.
    pub location: String,
}

struct Audit<'a> {
    scrubber: &'a Scrubber,
    found: BTreeSet<Finding>,
    matches: Vec<Match>,
    /// Scanning a header the policy's skip list names: only e-mail addresses count.
    only_email: bool,
    /// The type of the gRPC messages in the body being audited, when the schema has it.
    proto: Option<prost_reflect::MessageDescriptor>,
}

impl Scrubber {
    /// Audits `exchange`: everything in it that still looks personal; empty when clean.
    pub fn audit(&self, exchange: &Exchange) -> Vec<Finding> {
        let mut a =
            Audit { scrubber: self, found: BTreeSet::new(), matches: Vec::new(), only_email: false, proto: None };
        let req = &exchange.request;
        // Path segments one by one (as the scrubber reads them), then the query.
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        for segment in path.split('/') {
            a.text(segment, "request target");
        }
        a.text(query, "request target");
        a.url(&req.target, "request target", 0);
        a.headers(&req.headers, "request");
        // gRPC messages by their schema's field names, when there is one.
        let method = self.proto.as_ref().and_then(|s| s.method(&req.target));
        let grpc = req.headers.get_str("content-type").is_some_and(|t| t.trim_start().starts_with("application/grpc"));
        if self.proto.is_some() && method.is_none() && grpc {
            // Its messages were scrubbed without their field names: a name or a password
            // only a field's name gives away may be on disk.
            a.flag("gRPC method not in the descriptor set (scrubbed without field names)", "request target");
        }
        a.proto = method.as_ref().map(|m| m.input());
        a.body(&req.headers, &req.body.data, req.body.truncated, "request body");
        a.proto = method.map(|m| m.output());
        a.headers(&req.trailers, "request trailer");
        if let Some(resp) = &exchange.response {
            a.headers(&resp.headers, "response");
            a.body(&resp.headers, &resp.body.data, resp.body.truncated, "response body");
            a.headers(&resp.trailers, "response trailer");
        }
        a.proto = None;
        for m in exchange.websocket.iter().flat_map(|ws| &ws.messages) {
            let location = match m.from {
                crate::websocket::Side::Client => "websocket message from the client",
                crate::websocket::Side::Server => "websocket message from the server",
            };
            a.body(&Headers::new(), &m.data, m.truncated, location);
        }
        a.found.into_iter().collect()
    }
}

impl Audit<'_> {
    fn flag(&mut self, category: impl Into<String>, location: &str) {
        self.found.insert(Finding { category: category.into(), location: location.to_string() });
    }

    /// All detectors over `text`, raw and through every decoding, repeatedly decoded.
    fn text(&mut self, text: &str, location: &str) {
        self.scan(text, location);
        for encoding in Encoding::ALL {
            if let Some(view) = decode::view(text, encoding) {
                self.scan(&view.text, location);
                for inner in Encoding::ALL {
                    if let Some(deeper) = decode::view(&view.text, inner) {
                        self.scan(&deeper.text, location);
                    }
                }
            }
        }
    }

    fn scan(&mut self, text: &str, location: &str) {
        let policy = &self.scrubber.policy;
        policy.detectors.find(text, &mut self.matches);
        let only_email = self.only_email;
        let hits: Vec<String> = self
            .matches
            .iter()
            .filter(|m| !only_email || m.kind == Kind::Email)
            .filter(|m| policy.detect_actions.get(&m.kind).is_some_and(|a| *a != Action::Keep))
            .filter(|m| !is_scrubbed(&text[m.start..m.end]))
            .map(|m| policy.kind_name(m.kind).to_string())
            .collect();
        for h in hits {
            self.flag(h, location);
        }
    }

    /// A value under a rule must already be scrubbed.
    fn ruled(&mut self, action: Action, value: &str, category: String, location: &str) {
        if action != Action::Keep && !value.trim().is_empty() && !is_scrubbed(value.trim()) {
            self.flag(category, location);
        }
    }

    fn headers(&mut self, headers: &Headers, side: &str) {
        for h in headers.iter() {
            let name = h.name.to_str_lossy().to_ascii_lowercase();
            let value = h.value.to_str_lossy();
            let location = format!("{side} header {name}");
            // Headers the policy says hold nothing personal (Host, Content-Type …).
            // Headers the policy says hold nothing personal (Host, User-Agent …) may still
            // quote an e-mail address (`MyBot/1.0 (+mailto:ops@…)`).
            self.only_email = self.scrubber.policy.detect_skip.contains(&name);
            self.text(&value, &location);
            self.only_email = false;
            self.header(&name, &value, &location, 0);
        }
    }

    /// A header (or a value named like one): its rule, or its cookies, or its content.
    fn header(&mut self, name: &str, value: &str, location: &str, depth: u8) {
        let policy = &self.scrubber.policy;
        let rule = policy
            .headers
            .get(name)
            .copied()
            .or_else(|| policy.header_patterns.iter().find(|(re, _, _)| re.is_match(name)).map(|(_, _, a)| *a))
            .or_else(|| super::credential_without_rule(name).then_some(Action::Hash));
        if let Some(action) = rule {
            if name == "sec-websocket-protocol" {
                // Protocol names stay; entries that carry a credential must be scrubbed.
                for entry in value.split(',').map(str::trim).filter(|e| super::subprotocol_holds_credential(e)) {
                    self.ruled(action, entry, format!("header:{name}"), location);
                }
                return;
            }
            let credential = match auth_value(value) {
                Some((_, c)) if name.ends_with("authorization") || name.ends_with("authentication") => c,
                _ => value,
            };
            return self.ruled(action, credential, format!("header:{name}"), location);
        }
        match name {
            "cookie" | "cookie2" => self.cookies(value, false, location),
            "set-cookie" => self.cookies(value, true, location),
            _ if policy.detect_skip.contains(name) => {}
            _ => self.value(None, value, location, depth),
        }
    }

    fn cookies(&mut self, value: &str, set_cookie: bool, location: &str) {
        for (i, part) in value.split(';').enumerate() {
            if set_cookie && i > 0 {
                continue;
            }
            let Some((name, v)) = part.split_once('=') else { continue };
            let lower = name.trim().to_ascii_lowercase();
            let policy = &self.scrubber.policy;
            let action = policy.cookies.get(&lower).copied().unwrap_or(policy.cookie_default);
            self.ruled(action, v, format!("cookie:{lower}"), location);
        }
    }

    fn body(&mut self, headers: &Headers, data: &[u8], truncated: bool, location: &str) {
        if data.is_empty() {
            return;
        }
        let decoded;
        let mut data = data;
        if let Some(encoding) = headers.get_str("content-encoding").map(|e| e.trim().to_ascii_lowercase()) {
            if !encoding.is_empty() && encoding != "identity" {
                match crate::coding::decode(&encoding, data) {
                    Some((d, _)) => {
                        decoded = d;
                        data = &decoded;
                    }
                    None => return self.flag("undecodable body", location),
                }
            }
        }
        let text = String::from_utf8_lossy(data);
        // Every byte, whatever the content type says.
        self.text(&text, location);
        let media = headers.get_str("content-type").unwrap_or("").to_ascii_lowercase();
        if media.contains("multipart/") {
            // Parts are scanned as text above; their fields by name here.
            for part in text.split("\r\n--") {
                let Some((head, content)) = part.split_once("\r\n\r\n") else { continue };
                let param = |key: &str| {
                    head.split(';').find_map(|p| p.trim().strip_prefix(key).map(|n| n.trim_matches('"').to_string()))
                };
                let content = content.trim_end();
                if param("filename=").is_some() {
                    let files = self.scrubber.policy.files;
                    self.ruled(files, content, "file".into(), location);
                    continue;
                }
                self.value(param("name=").as_deref(), content, location, 1);
            }
            return;
        }
        if media.contains("csv") || media.contains("tab-separated") {
            // Each cell under its column's name.
            let delimiter = if media.contains("tab") { '\t' } else { ',' };
            let mut lines = text.lines();
            let columns: Vec<String> = lines
                .next()
                .map(|h| body::cells(h, delimiter).into_iter().map(|c| c.trim_matches('"').to_string()).collect())
                .unwrap_or_default();
            for line in lines {
                for (i, cell) in body::cells(line, delimiter).into_iter().enumerate() {
                    let at = format!("{location} column {}", columns.get(i).map_or("?", String::as_str));
                    self.value(columns.get(i).map(String::as_str), cell.trim_matches('"'), &at, 1);
                }
            }
            return;
        }
        if let Some(desc) = self.proto.clone().filter(|_| crate::wire::reads_frames(&media)) {
            // Each message checked by its fields' names: what scrubbing it again would
            // change (scrubbing is idempotent: nothing, once scrubbed).
            let encoding = headers.get_str("grpc-encoding").map(|e| e.trim().to_ascii_lowercase());
            for message in crate::wire::messages_of(data, encoding.as_deref(), truncated).unwrap_or_default() {
                let mut pass = crate::scrub::Pass::new(self.scrubber);
                match super::protobuf::scrub(&mut pass, &desc, &message) {
                    Err(()) => self.flag("gRPC message not of the descriptor set's type", location),
                    Ok(None) => {}
                    // Rules that would fire (encoded again, a message may only have its
                    // map entries in another order: nothing to report).
                    Ok(Some(_)) => {
                        for rule in pass.hits.keys() {
                            self.flag(format!("field {rule}"), location);
                        }
                    }
                }
            }
            return;
        }
        if media.ends_with("/xml") || media.contains("+xml") || (media.is_empty() && text.trim_start().starts_with('<'))
        {
            return self.xml(&text, location, 0);
        }
        self.value(None, &text, location, 0);
        let structured = text.trim_start().starts_with(['{', '[', '<']) || looks_like_form(text.trim());
        if !structured && !media.contains("form") {
            self.prose(&text, location);
        }
    }

    /// Free text: JSON objects in it, `name: value` pairs by the name's rules, URLs.
    fn prose(&mut self, text: &str, location: &str) {
        let b = text.as_bytes();
        let mut i = 0;
        while let Some(open) = memchr::memchr(b'{', &b[i..]).map(|p| i + p) {
            let Some(close) = matching_brace(b, open) else { break };
            match serde_json::from_str::<serde_json::Value>(&text[open..=close]) {
                Ok(doc) => {
                    self.json(&doc, "$", None, location, 1);
                    i = close + 1;
                }
                Err(_) => i = open + 1,
            }
        }
        let mut paired: Option<(Action, usize)> = None;
        for c in labelled_value().captures_iter(text) {
            let (Some(name), Some(value)) = (c.get(1), c.get(2)) else { continue };
            // `<input name="password" value="…">`: the name gives the next value its rule.
            let norm = normalize_key(name.as_str());
            let v = value.as_str().trim_matches(['"', '\'']);
            if is_pair_name_key(&norm) {
                paired = self.scrubber.policy.key_action(&normalize_key(leaf_name(v))).map(|(a, _)| (a, value.end()));
                continue;
            }
            if let Some((action, at)) = paired.take() {
                if is_pair_value_key(&norm) && value.start() - at < 200 {
                    self.ruled(action, v, "key:pair".into(), &format!("{location} {}=", name.as_str()));
                    continue;
                }
            }
            let lower = name.as_str().to_ascii_lowercase();
            if self.scrubber.policy.is_header_name(&lower) {
                // `Authorization: Bearer …`: the rest of the line is the header's value.
                let (_, line) = header_line(text, value.start());
                self.header(&lower, line, &format!("{location} {}:", name.as_str()), 1);
                continue;
            }
            let v = value.as_str().trim_matches(['"', '\'']);
            let norm = normalize_key(leaf_name(name.as_str()));
            if let Some((action, _)) = self.scrubber.policy.key_action(&norm) {
                self.ruled(action, v, format!("key:{norm}"), &format!("{location} {}=", name.as_str()));
            }
        }
        for m in url_in_text().find_iter(text) {
            self.url(m.as_str(), location, 1);
        }
    }

    /// A value (under `key`, if named): its name's rules, then what it is as a document.
    fn value(&mut self, key: Option<&str>, value: &str, location: &str, depth: u8) {
        if depth > 0 {
            self.text(value, location);
        }
        let v = value.trim();
        if v.is_empty() || depth > MAX_DEPTH {
            return;
        }
        if let Some(key) = key {
            let norm = normalize_key(leaf_name(key));
            let lower = key.to_ascii_lowercase();
            let policy = &self.scrubber.policy;
            if policy.is_header_name(&lower) {
                return self.header(&lower, v, location, depth + 1);
            }
            if let Some((action, _)) = policy.key_action(&norm) {
                return self.ruled(action, v, format!("key:{norm}"), location);
            }
            if is_secret_name(key) && is_secretish(v) && !is_scrubbed(v) {
                self.flag("secret", location);
            }
            if lower == "query" && graphql::looks_like(v) {
                return self.graphql(v, location);
            }
        }
        if let Some((decoded, _)) = base64_json(v) {
            if let Some(docs) = json_documents(&String::from_utf8_lossy(&decoded)) {
                for doc in docs {
                    self.json(&doc, "$", None, &format!("{location} (base64)"), depth + 1);
                }
                return;
            }
        }
        let (first, last) = (v.as_bytes()[0], v.as_bytes()[v.len() - 1]);
        if matches!((first, last), (b'{', b'}') | (b'[', b']')) {
            if let Some(docs) = json_documents(v) {
                for doc in docs {
                    self.json(&doc, "$", None, location, depth);
                }
                return;
            }
            if graphql::looks_like(v) {
                return self.graphql(v, location);
            }
        }
        if graphql::looks_like(v) && depth == 0 {
            return self.graphql(v, location);
        }
        if first == b'<' && last == b'>' {
            return self.xml(v, location, depth + 1);
        }
        if looks_like_url(v) {
            return self.url(v, location, depth);
        }
        if let Some(set_cookie) = looks_like_cookie(v) {
            return self.cookies(v, set_cookie, location);
        }
        if looks_like_form(v) {
            self.pairs(v, Pairs::Form, location, depth);
        }
    }

    /// `name=value&…`: the query or form rule by name (as the scrubber reads them), then
    /// the value's own name rules and content.
    fn pairs(&mut self, text: &str, of: Pairs, location: &str, depth: u8) {
        for (name, value) in form_urlencoded::parse(text.as_bytes()) {
            let at = format!("{location} {name}=");
            let lower = leaf_name(&name).to_ascii_lowercase();
            let policy = &self.scrubber.policy;
            let table = match of {
                Pairs::Query => &policy.query,
                Pairs::Form => &policy.form,
            };
            if let Some(action) = table.get(&lower).copied() {
                self.text(&value, &at);
                self.ruled(action, &value, format!("{}:{lower}", of.name()), &at);
                continue;
            }
            self.value(Some(&name), &value, &at, depth + 1);
        }
    }

    fn url(&mut self, text: &str, location: &str, depth: u8) {
        let after_scheme = text.find("://").map_or(text, |i| &text[i + 3..]);
        let authority_end = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
        if text.contains("://") {
            if let Some((userinfo, _)) = after_scheme[..authority_end].rsplit_once('@') {
                self.ruled(Action::Hash, userinfo, "userinfo".into(), location);
            }
        }
        let rest = &after_scheme[authority_end..];
        let (target, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        if let Some((_, query)) = target.split_once('?') {
            self.pairs(query, Pairs::Query, location, depth);
        }
        if looks_like_form(fragment) {
            self.pairs(fragment, Pairs::Query, location, depth);
        }
    }

    fn json(&mut self, v: &serde_json::Value, path: &str, key: Option<&str>, location: &str, depth: u8) {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                // `{"name": "password", "value": "…"}`: the value under its name's rule.
                let named = map.iter().find_map(|(k, v)| match v {
                    Value::String(s) if is_pair_name_key(&normalize_key(k)) => Some(s.as_str()),
                    _ => None,
                });
                if let Some(rule) = named.and_then(|n| self.scrubber.policy.key_action(&normalize_key(leaf_name(n)))) {
                    for (k, v) in map {
                        if let (true, Value::String(s)) = (is_pair_value_key(&normalize_key(k)), v) {
                            self.ruled(rule.0, s, rule.1.clone(), &format!("{location} {path}.{k}"));
                        }
                    }
                }
                // GraphQL `variables` passed under other names (`login(password: $p)`).
                if let (Some(Value::String(q)), Some(Value::Object(vars))) = (map.get("query"), map.get("variables")) {
                    let aliases = graphql::variable_arguments(q);
                    for (var, v) in vars {
                        if let Some(arg) = aliases.get(var) {
                            self.json(v, &format!("{path}.variables.{var}"), Some(arg), location, depth);
                        }
                    }
                }
                let parent = key.map(normalize_key);
                let person = parent.as_deref().is_some_and(is_person_parent)
                    || map.keys().any(|k| is_person_sibling(&normalize_key(k)));
                for (k, child) in map {
                    let at = format!("{path}.{k}");
                    let here = format!("{location} {at}");
                    self.text(k, &here);
                    if person && is_person_name_key(&normalize_key(k)) {
                        if let Value::String(s) = child {
                            self.ruled(Action::Hash, s, "name".into(), &here);
                            continue;
                        }
                    }
                    self.json(child, &at, Some(k), location, depth);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.json(child, &format!("{path}[{i}]"), key, location, depth);
                }
            }
            Value::String(s) => self.value(key, s, &format!("{location} {path}"), depth + 1),
            Value::Number(n) => {
                let at = format!("{location} {path}");
                let text = n.to_string();
                self.text(&text, &at);
                if let Some(k) = key {
                    let policy = &self.scrubber.policy;
                    if let Some((action, _)) = policy.key_action(&normalize_key(leaf_name(k))) {
                        self.ruled(action, &text, format!("key:{}", normalize_key(k)), &at);
                    }
                }
            }
            _ => {}
        }
    }

    fn graphql(&mut self, text: &str, location: &str) {
        for (key, literal) in graphql::literals(text) {
            self.value(key.as_deref(), &literal, &format!("{location} graphql"), 1);
        }
    }

    fn xml(&mut self, text: &str, location: &str, depth: u8) {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut stack: Vec<String> = Vec::new();
        // Per open element: the rule a `<name>` child gave its pair, and the rule its own
        // text is under as a pair's `<value>`.
        let mut pairs: Vec<(Option<Action>, Option<Action>)> = Vec::new();
        loop {
            let event = match reader.read_event() {
                Ok(Event::Eof) | Err(_) => break,
                Ok(e) => e,
            };
            let opens = matches!(event, Event::Start(_));
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    for a in e.attributes().with_checks(false).flatten() {
                        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
                        let raw = String::from_utf8_lossy(&a.value);
                        let value = quick_xml::escape::unescape(&raw).map(|v| v.into_owned()).unwrap_or_default();
                        self.value(Some(&key), &value, &format!("{location} <{name} {key}>"), depth + 1);
                    }
                    if opens {
                        let value_rule = is_pair_value_key(&normalize_key(&name))
                            .then(|| pairs.last().and_then(|p| p.0))
                            .flatten()
                            .or_else(|| pairs.last().and_then(|p| p.1));
                        stack.push(name);
                        pairs.push((None, value_rule));
                    }
                }
                Event::End(_) => {
                    stack.pop();
                    pairs.pop();
                }
                Event::Text(t) => {
                    let value = t.xml10_content().map(|v| v.into_owned()).unwrap_or_default();
                    let n = stack.len();
                    if n >= 2 && is_pair_name_key(&normalize_key(&stack[n - 1])) {
                        let rule = self.scrubber.policy.key_action(&normalize_key(value.trim())).map(|(a, _)| a);
                        pairs[n - 2].0 = rule;
                    }
                    if let Some(action) = pairs.last().and_then(|p| p.1) {
                        let at = format!("{location} <{}>", stack.last().map_or("", String::as_str));
                        self.ruled(action, &value, "key:pair".into(), &at);
                        continue;
                    }
                    self.xml_text(&stack, &value, location, depth);
                }
                Event::CData(c) => {
                    let value = String::from_utf8_lossy(&c).into_owned();
                    self.xml_text(&stack, &value, location, depth);
                }
                _ => {}
            }
        }
    }

    fn xml_text(&mut self, stack: &[String], value: &str, location: &str, depth: u8) {
        let Some(element) = stack.last() else { return };
        let at = format!("{location} <{element}>");
        let norm = normalize_key(element);
        let ruled = stack.iter().rev().find_map(|e| self.scrubber.policy.key_action(&normalize_key(e)).map(|(a, _)| a));
        if let Some(action) = ruled {
            return self.ruled(action, value, format!("key:{norm}"), &at);
        }
        let parent = stack.len().checked_sub(2).map(|i| normalize_key(&stack[i]));
        if is_person_name_key(&norm) && parent.as_deref().is_some_and(is_person_parent) {
            return self.ruled(Action::Hash, value, "name".into(), &at);
        }
        self.value(Some(element), value, &at, depth + 1);
    }
}

/// Which rule table `name=value` pairs answer to.
#[derive(Clone, Copy)]
enum Pairs {
    Query,
    Form,
}

impl Pairs {
    fn name(self) -> &'static str {
        match self {
            Pairs::Query => "query",
            Pairs::Form => "form",
        }
    }
}

/// One JSON document, or JSON lines; `None` if it is neither.
fn json_documents(text: &str) -> Option<Vec<serde_json::Value>> {
    let docs: Result<Vec<serde_json::Value>, _> = serde_json::Deserializer::from_str(text).into_iter().collect();
    docs.ok().filter(|d| !d.is_empty())
}
