//! What differs between a recorded response and a replayed one: status, chosen headers and
//! the body — JSON by structure (path by path), text by normalised text, anything else by
//! length and hash.
//!
//! A value the scrubber wrote into the recording (`[REDACTED]`, `tok_email_…`, a mask) is
//! compared by type only: the target's real value cannot be expected to match it.

use std::fmt::Write;

use serde_json::Value;
use tapedeck_captures::exchange::{Headers, Response};
use tapedeck_captures::route;
use tapedeck_captures::scrub::action::is_scrubbed;
use tapedeck_captures::websocket::{Kind, Side, WebSocket};
use tapedeck_captures::Blob;

use super::generated::{self, Window};
use super::CompareConfig;

mod lockstep;

/// Differences kept per exchange at most (the first ones, in path order): enough to tell
/// what differs, bounded for bodies where everything does.
const MAX_DIFFS: usize = 256;
/// Characters of a value shown in examples.
const SHOWN: usize = 120;

/// What kind of difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Another status code.
    Status,
    /// A compared header has another value.
    HeaderChanged,
    /// A compared header is missing in the replay.
    HeaderRemoved,
    /// A compared header appeared in the replay.
    HeaderAdded,
    /// A JSON value changed.
    ValueChanged,
    /// A JSON value changed type (number → string, …).
    TypeChanged,
    /// A JSON key appeared.
    KeyAdded,
    /// A JSON key disappeared.
    KeyRemoved,
    /// A JSON array has another length.
    ArrayLength,
    /// A text body differs.
    Text,
    /// A binary body differs (length or hash).
    Binary,
    /// One body is JSON and the other is not.
    Format,
}

impl DiffKind {
    /// Stable name, as in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Status => "status",
            DiffKind::HeaderChanged => "header_changed",
            DiffKind::HeaderRemoved => "header_removed",
            DiffKind::HeaderAdded => "header_added",
            DiffKind::ValueChanged => "value_changed",
            DiffKind::TypeChanged => "type_changed",
            DiffKind::KeyAdded => "key_added",
            DiffKind::KeyRemoved => "key_removed",
            DiffKind::ArrayLength => "array_length",
            DiffKind::Text => "text",
            DiffKind::Binary => "binary",
            DiffKind::Format => "format",
        }
    }
}

/// One difference.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    /// What kind.
    pub kind: DiffKind,
    /// Where, as grouped across exchanges: `status`, `header:cache-control`,
    /// `$.items[*].price`, `body`.
    pub key: String,
    /// Where exactly: `$.items[3].price`.
    pub at: String,
    /// The recorded value (shortened).
    pub recorded: String,
    /// The replayed value (shortened).
    pub replayed: String,
    /// Set when the values look generated (`uuid`, `timestamp`, `token`): noise.
    pub generated: Option<&'static str>,
    /// For a status difference: the start of the replayed answer's body (scrubbed), which
    /// says why when the target explains its error (`payments timed out after 500 ms`).
    pub answer: Option<String>,
}

/// Compares `replayed` with `recorded` under `config`; `route` is the exchange's route key,
/// for route-scoped ignore rules.
pub fn compare(
    recorded: &Response,
    replayed: &Response,
    route: &str,
    config: &CompareConfig,
    window: &Window,
) -> Vec<Diff> {
    compare_call(recorded, replayed, route, None, config, window)
}

/// [`compare`], told the request's path (a gRPC call's method, which the route's template
/// may have turned into a placeholder).
pub fn compare_call(
    recorded: &Response,
    replayed: &Response,
    route: &str,
    path: Option<&str>,
    config: &CompareConfig,
    window: &Window,
) -> Vec<Diff> {
    let mut out = Out { diffs: Vec::new(), route, path, protobuf: false, config, window };
    if recorded.status != replayed.status {
        out.push(
            DiffKind::Status,
            "status".into(),
            "status".into(),
            &recorded.status.to_string(),
            &replayed.status.to_string(),
        );
        // Another status means another body: its differences would only repeat this one;
        // what the target said instead is shown with it.
        if let Some(d) = out.diffs.last_mut() {
            d.answer = answer_excerpt(&replayed.body.data.bytes(), config);
        }
        return out.diffs;
    }
    // gRPC's status is in its trailers (or, for a call that failed at once, its head): a
    // status of its own, compared like HTTP's.
    if let (Some(a), Some(b)) = (grpc_status(recorded), grpc_status(replayed)) {
        if a != b {
            let name = |c: u32| format!("{} ({c})", tapedeck_captures::proto::grpc_code_name(c));
            out.push(DiffKind::Status, "grpc-status".into(), "grpc-status".into(), &name(a), &name(b));
            return out.diffs;
        }
    }
    headers(&mut out, &recorded.headers, &replayed.headers);
    body(&mut out, recorded, replayed);
    out.diffs
}

/// A WebSocket session's server messages, compared in order as a JSON array (`$[i]`; a
/// message that is JSON by its members: `$[2].price`; a message either side kept only
/// part of, by length), and the server's close code (`websocket:close`). Pings and pongs
/// belong to the connection, not the service: not compared.
pub fn compare_websocket(
    recorded: &WebSocket,
    replayed: &WebSocket,
    route: &str,
    config: &CompareConfig,
    window: &Window,
) -> Vec<Diff> {
    let mut out = Out { diffs: Vec::new(), route, path: None, protobuf: false, config, window };
    let data = |ws: &WebSocket| -> Vec<(Kind, Blob, u64, bool)> {
        ws.from(Side::Server)
            .filter(|m| matches!(m.kind, Kind::Text | Kind::Binary))
            .map(|m| (m.kind, m.data.clone(), m.len, m.truncated))
            .collect()
    };
    let (mut ma, mut mb) = (data(recorded), data(replayed));
    // A client message the recording kept only in part (past `--max-body`, or bytes the
    // scrubber dropped) was not sent as production's client sent it: what the server said
    // after it is not comparable.
    // Past the first message the capture did not keep, the same: the session is known
    // only in part.
    let mut server_before = 0;
    for m in recorded.messages.iter().filter(|m| matches!(m.kind, Kind::Text | Kind::Binary)) {
        if recorded.dropped_from_ns.is_some_and(|at| m.at_ns >= at) {
            ma.truncate(server_before);
            mb.truncate(server_before);
            break;
        }
        match m.from {
            Side::Server => server_before += 1,
            Side::Client if m.truncated => {
                ma.truncate(server_before);
                mb.truncate(server_before);
                break;
            }
            Side::Client => {}
        }
    }
    let doc = |m: &(Kind, Blob, u64, bool), by_length: bool| -> Value {
        let (kind, data, len, _) = m;
        if by_length {
            return Value::String(format!("{len} bytes"));
        }
        match (kind, data.as_str()) {
            (Kind::Text, Some(text)) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
            _ => Value::String(fingerprint(data)),
        }
    };
    let docs: (Vec<Value>, Vec<Value>) = (0..ma.len().max(mb.len()))
        .map(|i| {
            let (a, b) = (ma.get(i), mb.get(i));
            let by_length = a.is_some_and(|m| m.3) || b.is_some_and(|m| m.3);
            (a.map(|m| doc(m, by_length)), b.map(|m| doc(m, by_length)))
        })
        .fold((Vec::new(), Vec::new()), |(mut va, mut vb), (a, b)| {
            va.extend(a);
            vb.extend(b);
            (va, vb)
        });
    if docs.0 != docs.1 {
        json(&mut out, &Value::Array(docs.0), &Value::Array(docs.1), &mut String::from("$"), &mut String::from("$"));
    }
    // The server's close code, and whether it closed first or answered the client's.
    let close = |ws: &WebSocket| {
        let first = ws.close().map(|m| m.from);
        ws.from(Side::Server).find(|m| m.kind == Kind::Close).map_or("none".to_string(), |m| {
            let code = m.code.map_or("without a code".to_string(), |c| c.to_string());
            if first == Some(Side::Server) {
                format!("{code}, closed by the server")
            } else {
                format!("{code}, in answer to the client's close")
            }
        })
    };
    let (ca, cb) = (close(recorded), close(replayed));
    // A recording that ended without the server's close says nothing of how staging should
    // close (the replay ended that session itself).
    // (A recorded close without a code — Chrome's HARs keep none — says nothing of one.)
    let recorded_close = recorded.from(Side::Server).find(|m| m.kind == Kind::Close);
    if ca != cb && recorded_close.is_some_and(|m| m.code.is_some()) {
        out.push(DiffKind::Status, "websocket:close".into(), "websocket:close".into(), &ca, &cb);
    }
    if let (None, Some(why)) = (&recorded.unreadable, &replayed.unreadable) {
        out.push(DiffKind::Format, "websocket".into(), "websocket".into(), "WebSocket frames", why);
    }
    out.diffs
}

fn grpc_status(r: &Response) -> Option<u32> {
    tapedeck_captures::proto::grpc_status(&r.headers, &r.trailers)
}

struct Out<'a> {
    diffs: Vec<Diff>,
    route: &'a str,
    /// The request's path, when known.
    path: Option<&'a str>,
    /// Comparing protobuf messages (where a rule removes numbers and messages).
    protobuf: bool,
    config: &'a CompareConfig,
    window: &'a Window,
}

impl Out<'_> {
    fn push(&mut self, kind: DiffKind, key: String, at: String, recorded: &str, replayed: &str) {
        if self.config.ignores(self.route, &key) || self.config.ignores_values(recorded, replayed) {
            return;
        }
        if self.diffs.len() >= MAX_DIFFS {
            return;
        }
        let generated = match kind {
            DiffKind::ValueChanged | DiffKind::HeaderChanged => generated::both(recorded, replayed, self.window),
            _ => None,
        };
        // Values are scrubbed before they are shortened: a cut value hides from the detectors.
        let (recorded, replayed) = match &self.config.scrub {
            Some(s) => (shorten(&s.scrub_value(&at, recorded)), shorten(&s.scrub_value(&at, replayed))),
            None => (shorten(recorded), shorten(replayed)),
        };
        self.diffs.push(Diff { kind, key, at, recorded, replayed, generated, answer: None });
    }
}

/// Body bytes read for an answer's excerpt.
const EXCERPT_READ: usize = 4096;

/// The start of an answer's body, when it is text: scrubbed (as a document), on one line,
/// shortened.
fn answer_excerpt(body: &[u8], config: &CompareConfig) -> Option<String> {
    let head = &body[..body.len().min(EXCERPT_READ)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // Cut inside a character: up to it.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    if text.trim().is_empty() || text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return None;
    }
    let text = match &config.scrub {
        Some(s) => s.scrub_value("body", text),
        None => text.to_string(),
    };
    Some(shorten(&text.split_whitespace().collect::<Vec<_>>().join(" ")))
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn header_value(h: &Headers, name: &str) -> Option<String> {
    let mut values = h.get_all(name).map(|v| String::from_utf8_lossy(v).into_owned()).peekable();
    values.peek()?;
    Some(match name {
        // Cookies: their names (values are per-user and scrubbed).
        "set-cookie" => {
            let mut names: Vec<String> = values.map(|v| v.split('=').next().unwrap_or("").trim().to_string()).collect();
            names.sort();
            names.join(", ")
        }
        // Redirects: where to, as a route (ids in it are the target's own).
        "location" => {
            let v = values.next().unwrap_or_default();
            route::template(super::location_path(&v))
        }
        _ => values.map(|v| v.trim().to_string()).collect::<Vec<_>>().join(", "),
    })
}

fn headers(out: &mut Out<'_>, recorded: &Headers, replayed: &Headers) {
    for name in &out.config.headers {
        // The usual case, the same bytes on both sides (or absent on both), costs no copy.
        if recorded.get_all(name).eq(replayed.get_all(name)) {
            continue;
        }
        let (a, b) = (header_value(recorded, name), header_value(replayed, name));
        let key = format!("header:{name}");
        match (a, b) {
            (Some(a), Some(b)) if a != b && !is_scrubbed(&a) => {
                out.push(DiffKind::HeaderChanged, key.clone(), key, &a, &b)
            }
            (Some(a), None) => out.push(DiffKind::HeaderRemoved, key.clone(), key, &a, ""),
            (None, Some(b)) => out.push(DiffKind::HeaderAdded, key.clone(), key, "", &b),
            _ => {}
        }
    }
}

/// The replayed body, decoded if the target compressed it (recordings are stored decoded).
fn decoded(r: &Response) -> std::borrow::Cow<'_, [u8]> {
    // gRPC compresses message by message (`grpc-encoding`); captures store them decoded.
    if r.headers.get_str("content-type").is_some_and(|t| t.trim_start().starts_with("application/grpc")) {
        let encoding = r.headers.get_str("grpc-encoding").map(str::trim);
        if let Some(plain) = tapedeck_captures::wire::uncompressed(&r.body.data, encoding) {
            return plain.into();
        }
    }
    match r.headers.get_str("content-encoding").map(str::trim) {
        Some(enc) if !enc.is_empty() && !enc.eq_ignore_ascii_case("identity") && r.body.decoded_from.is_none() => {
            match tapedeck_captures::coding::decode(enc, &r.body.data) {
                Some((bytes, _)) => bytes.into(),
                None => (&r.body.data[..]).into(),
            }
        }
        _ => (&r.body.data[..]).into(),
    }
}

fn is_text(r: &Response) -> bool {
    let ct = r.headers.get_str("content-type").unwrap_or("").to_ascii_lowercase();
    ct.starts_with("text/") || ct.contains("xml") || ct.contains("x-www-form-urlencoded") || ct.contains("javascript")
}

fn body(out: &mut Out<'_>, recorded: &Response, replayed: &Response) {
    if recorded.body.truncated || replayed.body.truncated {
        // Only a prefix of one of them is known: compare lengths, not content.
        if recorded.body.len != replayed.body.len {
            out.push(
                DiffKind::Binary,
                "body".into(),
                "body".into(),
                &format!("{} bytes", recorded.body.len),
                &format!("{} bytes", replayed.body.len),
            );
        }
        return;
    }
    let (a, b) = (decoded(recorded), decoded(replayed));
    if a == b {
        return;
    }
    if is_grpc(recorded) && is_grpc(replayed) && grpc(out, &a, &b) {
        return;
    }
    if let Some(found) = lockstep::diff(&a, &b, MAX_DIFFS) {
        for (kind, key, at, x, y) in found {
            out.push(kind, key, at, &x, &y);
        }
        return;
    }
    let (ja, jb) = (serde_json::from_slice::<Value>(&a), serde_json::from_slice::<Value>(&b));
    match (ja, jb) {
        (Ok(ja), Ok(jb)) => json(out, &ja, &jb, &mut String::from("$"), &mut String::from("$")),
        (Ok(_), Err(_)) | (Err(_), Ok(_)) if !a.is_empty() && !b.is_empty() => {
            out.push(DiffKind::Format, "body".into(), "body".into(), &lossy(&a), &lossy(&b))
        }
        _ if is_text(recorded)
            || is_text(replayed)
            || (std::str::from_utf8(&a).is_ok() && std::str::from_utf8(&b).is_ok()) =>
        {
            text(out, &lossy(&a), &lossy(&b))
        }
        _ => out.push(DiffKind::Binary, "body".into(), "body".into(), &fingerprint(&a), &fingerprint(&b)),
    }
}

fn is_grpc(r: &Response) -> bool {
    r.headers
        .get_str("content-type")
        .is_some_and(|t| tapedeck_captures::wire::is_grpc_content_type(t.trim().as_bytes()))
}

/// gRPC bodies (decoded frames) compared message by message, as JSON documents (one
/// message: `$.field`; a stream: `$[i].field`): with a schema for the call, the documents
/// the messages map to, fields by name; without one, fields by number (`$.2.1`). False
/// when they are not whole frames or messages (then compared as any body).
fn grpc(out: &mut Out<'_>, a: &[u8], b: &[u8]) -> bool {
    use tapedeck_captures::proto::{ProtoSchema, Side};
    let (Some(ma), Some(mb)) = (tapedeck_captures::wire::messages(a, None), tapedeck_captures::wire::messages(b, None))
    else {
        return false;
    };
    // The method is the request's path (routes, `METHOD /template`, may hide it).
    let path = out.path.unwrap_or_else(|| out.route.split_once(' ').map_or(out.route, |(_, p)| p));
    let desc = out.config.proto.as_ref().and_then(|p| p.message(path, Side::Response));
    // A message the schema cannot read (an `Any` of a type it lacks …) by field number.
    let read = |m: &Vec<u8>| {
        desc.as_ref().and_then(|d| ProtoSchema::to_json(d, m)).or_else(|| tapedeck_captures::proto::wire_json(m))
    };
    let docs = |ms: &[Vec<u8>]| ms.iter().map(read).collect::<Option<Vec<_>>>();
    let (Some(mut da), Some(mut db)) = (docs(&ma), docs(&mb)) else {
        return false;
    };
    let (ja, jb) = if da.len() == 1 && db.len() == 1 {
        (da.remove(0), db.remove(0))
    } else {
        (Value::Array(da), Value::Array(db))
    };
    out.protobuf = true;
    json(out, &ja, &jb, &mut String::from("$"), &mut String::from("$"));
    true
}

/// `1 item`, `3 items`.
pub(crate) fn items(n: usize) -> String {
    format!("{n} item{}", if n == 1 { "" } else { "s" })
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(4 * SHOWN)]).into_owned()
}

fn fingerprint(b: &[u8]) -> String {
    format!("{} bytes, hash {:016x}", b.len(), tapedeck_captures::convert::stable_hash(b))
}

/// Text compared with runs of whitespace collapsed; the first differing line is shown.
fn text(out: &mut Out<'_>, a: &str, b: &str) {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if norm(a) == norm(b) {
        return;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let line =
        (0..la.len().max(lb.len())).find(|&i| la.get(i).map(|l| l.trim()) != lb.get(i).map(|l| l.trim())).unwrap_or(0);
    out.push(
        DiffKind::Text,
        "body".into(),
        format!("line {}", line + 1),
        la.get(line).copied().unwrap_or(""),
        lb.get(line).copied().unwrap_or(""),
    );
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", items(a.len())),
        Value::Object(o) => format!("{{{} keys}}", o.len()),
        other => other.to_string(),
    }
}

/// Walks both values; `at` is the exact path, `key` the path with array indices as `[*]`.
fn json(out: &mut Out<'_>, a: &Value, b: &Value, at: &mut String, key: &mut String) {
    if out.diffs.len() >= MAX_DIFFS {
        return;
    }
    if let Value::String(s) = a {
        // A protobuf `bytes` field reads as base64: scrubbed too when its text is.
        if is_scrubbed(s) || (a != b && tapedeck_captures::scrub::action::is_scrubbed_encoded(s)) {
            return;
        }
    }
    match (a, b) {
        (Value::Object(oa), Value::Object(ob)) => {
            for (k, va) in oa {
                let (al, kl) = (at.len(), key.len());
                push_key(at, k);
                push_key(key, k);
                match ob.get(k) {
                    Some(vb) => json(out, va, vb, at, key),
                    None => out.push(DiffKind::KeyRemoved, key.clone(), at.clone(), &scalar(va), ""),
                }
                at.truncate(al);
                key.truncate(kl);
            }
            for (k, vb) in ob.iter().filter(|(k, _)| !oa.contains_key(*k)) {
                let (al, kl) = (at.len(), key.len());
                push_key(at, k);
                push_key(key, k);
                // A member the scrubber removes from recordings (a `drop` rule; a protobuf
                // number a rule took) is absent there by design, not by the target.
                let removed = match out.config.scrub.as_ref() {
                    Some(s) => match s.rule_for(at) {
                        Some(tapedeck_captures::scrub::action::Action::Drop) => true,
                        Some(_) => out.protobuf,
                        // A protobuf number the detectors took (a card number) went too.
                        None => out.protobuf && vb.is_number() && s.scrub_value(at, &scalar(vb)) != scalar(vb),
                    },
                    None => false,
                };
                if !removed {
                    out.push(DiffKind::KeyAdded, key.clone(), at.clone(), "", &scalar(vb));
                }
                at.truncate(al);
                key.truncate(kl);
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            if xa.len() != xb.len() {
                let (n, m) = (items(xa.len()), items(xb.len()));
                out.push(DiffKind::ArrayLength, key.clone(), at.clone(), &n, &m);
            }
            let kl = key.len();
            key.push_str("[*]");
            for (i, (va, vb)) in xa.iter().zip(xb).enumerate() {
                let al = at.len();
                let _ = write!(at, "[{i}]");
                json(out, va, vb, at, key);
                at.truncate(al);
            }
            key.truncate(kl);
        }
        _ if std::mem::discriminant(a) != std::mem::discriminant(b) => {
            let (ta, tb) = (format!("{} ({})", scalar(a), type_name(a)), format!("{} ({})", scalar(b), type_name(b)));
            out.push(DiffKind::TypeChanged, key.clone(), at.clone(), &ta, &tb);
        }
        _ if a != b => out.push(DiffKind::ValueChanged, key.clone(), at.clone(), &scalar(a), &scalar(b)),
        _ => {}
    }
}

/// Appends `.k` (or `["k"]` for keys that are not identifiers) to a path.
pub(super) fn push_key(path: &mut String, k: &str) {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        path.push('.');
        path.push_str(k);
    } else {
        path.push_str(&format!("[{}]", serde_json::Value::String(k.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_captures::exchange::Body;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.push(*n, *v);
        }
        Response { status, headers: h, body: Body::full(body.as_bytes().to_vec()), ..Default::default() }
    }

    /// A gRPC answer: `message` framed, as a capture stores it.
    fn grpc_answer(message: &[u8]) -> Response {
        let mut h = Headers::new();
        h.push("content-type", "application/grpc");
        let body = [&[0][..], &(message.len() as u32).to_be_bytes(), message].concat();
        Response { status: 200, headers: h, body: Body::full(body), ..Default::default() }
    }

    #[test]
    fn grpc_messages_compare_by_name_past_what_scrubbing_removed() {
        use prost::Message as _;
        use prost_reflect::{DynamicMessage, Value as PValue};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("shop.proto"),
            r#"syntax = "proto3"; package shop;
               message Customer { string email = 1; int64 card = 2; bytes token = 3; }
               message Order { string id = 1; Customer customer = 2; int64 total_cents = 3; }
               service Orders { rpc GetOrderV2Beta22(Order) returns (Order); }"#,
        )
        .unwrap();
        let set = protox::compile(["shop.proto"], [dir.path()]).unwrap();
        let schema = tapedeck_captures::proto::ProtoSchema::from_bytes(&set.encode_to_vec(), "shop.pb").unwrap();
        let path = "/shop.Orders/GetOrderV2Beta22";
        let desc = schema.message(path, tapedeck_captures::proto::Side::Response).unwrap();
        let order = |email: &str, card: i64, token: &[u8], cents: i64| {
            let mut c =
                DynamicMessage::new(desc.get_field_by_name("customer").unwrap().kind().as_message().unwrap().clone());
            c.set_field_by_name("email", PValue::String(email.into()));
            if card != 0 {
                c.set_field_by_name("card", PValue::I64(card));
            }
            c.set_field_by_name("token", PValue::Bytes(token.to_vec().into()));
            let mut o = DynamicMessage::new(desc.clone());
            o.set_field_by_name("id", PValue::String("A-7".into()));
            o.set_field_by_name("customer", PValue::Message(c));
            o.set_field_by_name("total_cents", PValue::I64(cents));
            grpc_answer(&o.encode_to_vec())
        };
        let scrubber = tapedeck_captures::scrub::Scrubber::with_defaults(Some(b"a key for the diff tests 0123456789"));
        let config =
            CompareConfig { proto: Some(schema), scrub: Some(std::sync::Arc::new(scrubber)), ..Default::default() };
        // As recorded (scrubbed: the card removed, the token hashed) and as staging answers.
        let recorded = order("tok_email_0123456789abcdef", 0, b"tok_token_0123456789abcdef", 1999);
        let same = order("jane@example.com", 4111111111111111, b"s3cr3t-session", 1999);
        let dearer = order("jane@example.com", 4111111111111111, b"s3cr3t-session", 2099);
        // The route's template may hide the method; the request's path names it.
        let run = |b: &Response| {
            compare_call(&recorded, b, "POST /shop.Orders/{token}", Some(path), &config, &Window::default())
                .into_iter()
                .map(|d| (d.kind, d.at))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&same), [], "what scrubbing changed or removed is no difference");
        assert_eq!(run(&dearer), [(DiffKind::ValueChanged, "$.total_cents".to_string())]);
    }

    fn diffs(a: &Response, b: &Response, config: &CompareConfig) -> Vec<(DiffKind, String, String, String)> {
        compare(a, b, "GET /x", config, &Window::default())
            .into_iter()
            .map(|d| (d.kind, d.at, d.recorded, d.replayed))
            .collect()
    }

    fn json_body(s: &str) -> Response {
        response(200, &[("content-type", "application/json")], s)
    }

    #[test]
    fn json_differences_are_found_by_path() {
        let a = json_body(r#"{"user":{"email":"a@b.c","age":30},"items":[{"p":1},{"p":2}],"n":1}"#);
        let b = json_body(r#"{"user":{"email_address":"a@b.c","age":"30"},"items":[{"p":1},{"p":3},{"p":4}],"n":1}"#);
        let got = diffs(&a, &b, &CompareConfig::default());
        // Keys are walked in sorted order.
        let want = [
            (DiffKind::ArrayLength, "$.items", "2 items", "3 items"),
            (DiffKind::ValueChanged, "$.items[1].p", "2", "3"),
            (DiffKind::TypeChanged, "$.user.age", "30 (number)", "30 (string)"),
            (DiffKind::KeyRemoved, "$.user.email", "a@b.c", ""),
            (DiffKind::KeyAdded, "$.user.email_address", "", "a@b.c"),
        ];
        let got: Vec<_> = got.iter().map(|(k, at, a, b)| (*k, at.as_str(), a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
        // Grouping keys use [*] for array indices.
        let keys: Vec<String> = compare(&a, &b, "GET /x", &CompareConfig::default(), &Window::default())
            .into_iter()
            .map(|d| d.key)
            .collect();
        assert!(keys.contains(&"$.items[*].p".to_string()), "{keys:?}");
    }

    #[test]
    fn equal_json_in_another_key_order_or_spacing_is_equal() {
        let a = json_body(r#"{"a":1,"b":[1,2]}"#);
        let b = json_body("{ \"b\": [1, 2],\n \"a\": 1 }");
        assert!(diffs(&a, &b, &CompareConfig::default()).is_empty());
    }

    #[test]
    fn scrubbed_recorded_values_are_not_differences() {
        let a = json_body(r#"{"email":"[REDACTED]","card":"************4242","t":"tok_email_0123456789abcdef"}"#);
        let b = json_body(r#"{"email":"jane@example.com","card":"4242424242424242","t":"x"}"#);
        assert!(diffs(&a, &b, &CompareConfig::default()).is_empty());
    }

    #[test]
    fn status_and_headers() {
        let a = response(200, &[("content-type", "text/plain"), ("cache-control", "max-age=60")], "ok");
        let b = response(500, &[("content-type", "text/plain")], "boom");
        let got = diffs(&a, &b, &CompareConfig::default());
        assert_eq!(got, [(DiffKind::Status, "status".into(), "200".into(), "500".into())]);
        let b =
            response(200, &[("content-type", "text/plain"), ("cache-control", "no-store"), ("location", "/o/9")], "ok");
        let got = diffs(&a, &b, &CompareConfig::default());
        assert_eq!(
            got[0],
            (DiffKind::HeaderChanged, "header:cache-control".into(), "max-age=60".into(), "no-store".into())
        );
        assert_eq!(got[1], (DiffKind::HeaderAdded, "header:location".into(), "".into(), "/o/{id}".into()));
        // Locations compare as routes: other ids are not differences.
        let a = response(201, &[("location", "http://prod/orders/12")], "");
        let b = response(201, &[("location", "/orders/9913")], "");
        assert!(diffs(&a, &b, &CompareConfig::default()).is_empty());
    }

    #[test]
    fn ignore_rules_apply_by_path_route_and_value() {
        let a = json_body(r#"{"meta":{"request_id":"r1"},"total":3,"etag":"v-1"}"#);
        let b = json_body(r#"{"meta":{"request_id":"r2"},"total":4,"etag":"v-2"}"#);
        let mut config = CompareConfig::default();
        config.add_ignore("$.meta.request_id").unwrap();
        config.add_ignore("GET /other $.total").unwrap();
        config.add_ignore_value("^v-[0-9]+$").unwrap();
        let got = diffs(&a, &b, &config);
        assert_eq!(got, [(DiffKind::ValueChanged, "$.total".into(), "3".into(), "4".into())]);
        config.add_ignore("GET /x $.total").unwrap();
        assert!(diffs(&a, &b, &config).is_empty());
    }

    #[test]
    fn text_and_binary_bodies() {
        let a = response(200, &[("content-type", "text/html")], "<p>hello</p>\n<p>world</p>");
        let b = response(200, &[("content-type", "text/html")], "<p>hello</p>   \n<p>there</p>");
        let got = diffs(&a, &b, &CompareConfig::default());
        assert_eq!(got, [(DiffKind::Text, "line 2".into(), "<p>world</p>".into(), "<p>there</p>".into())]);
        let a = response(200, &[("content-type", "image/png")], "\u{0}\u{1}");
        let mut b = a.clone();
        b.body = Body::full(vec![0u8, 0xff, 0xfe]);
        assert_eq!(diffs(&a, &b, &CompareConfig::default())[0].0, DiffKind::Binary);
    }

    #[test]
    fn generated_values_are_marked() {
        let a = json_body(r#"{"id":"0b6f4a8e-2f55-4c3e-9a51-2b8e6f6c1d11","n":"a"}"#);
        let b = json_body(r#"{"id":"7d3f1c2a-9b8e-4f6a-8c5d-1e2f3a4b5c6d","n":"b"}"#);
        let d = compare(&a, &b, "GET /x", &CompareConfig::default(), &Window::default());
        assert_eq!(d[0].generated, Some("uuid"));
        assert_eq!(d[1].generated, None);
    }
}

/// The fast path agrees with the full structural diff wherever it applies, and neither
/// panics on arbitrary input.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            (-1000.0f64..1000.0).prop_map(|f| json!(f)),
            "[a-z\u{e9}\"\\\\ ]{0,6}".prop_map(Value::String),
        ]
    }

    fn document() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `v` with some leaves replaced (same shape), chosen by `picks`.
    fn mutate(v: &Value, picks: &mut impl Iterator<Item = (bool, Value)>) -> Value {
        match v {
            Value::Array(a) => Value::Array(a.iter().map(|x| mutate(x, picks)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), mutate(x, picks))).collect()),
            leaf => match picks.next() {
                Some((true, other)) => other,
                _ => leaf.clone(),
            },
        }
    }

    fn full(a: &Value, b: &Value) -> Vec<(DiffKind, String, String, String)> {
        let config = CompareConfig::default();
        let window = Window::default();
        let mut out =
            Out { diffs: Vec::new(), route: "GET /x", path: None, protobuf: false, config: &config, window: &window };
        json(&mut out, a, b, &mut String::from("$"), &mut String::from("$"));
        out.diffs.into_iter().map(|d| (d.kind, d.at, d.recorded, d.replayed)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn lockstep_matches_the_full_diff(a in document(), picks in prop::collection::vec((any::<bool>(), leaf()), 0..40)) {
            let b = mutate(&a, &mut picks.into_iter());
            // Serialised with sorted keys on both sides, as the full diff walks them; once
            // compact on both sides (common tails end the walk early), once not.
            let ta = serde_json::to_vec(&a).unwrap();
            for tb in [serde_json::to_vec(&b).unwrap(), serde_json::to_vec_pretty(&b).unwrap()] {
                // Same shape, plain keys: the fast path always applies.
                let fast = lockstep::diff(&ta, &tb, MAX_DIFFS).expect("same shape");
                let fast: Vec<_> = fast.into_iter().map(|(k, _, at, x, y)| (k, at, shorten(&x), shorten(&y))).collect();
                prop_assert_eq!(fast, full(&a, &b));
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bodies(a in prop::collection::vec(any::<u8>(), 0..200), b in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = lockstep::diff(&a, &b, MAX_DIFFS);
            let r = |body: &[u8]| Response { status: 200, body: tapedeck_captures::exchange::Body::full(body.to_vec()), ..Default::default() };
            let _ = compare(&r(&a), &r(&b), "GET /x", &CompareConfig::default(), &Window::default());
        }
    }
}
