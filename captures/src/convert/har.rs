//! HAR 1.2 (HTTP Archive), the format browsers export from their network panel.
//!
//! Export writes a spec-valid HAR that Chrome DevTools imports (every field its importer
//! requires is present and typed as it expects), one entry at a time. Start times carry
//! nanoseconds (`2026-01-02T03:04:05.123456789Z`, valid ISO 8601), and tapedeck's own
//! fields ride along in `_tapedeck` (HAR allows `_`-prefixed custom fields), so a
//! tape → HAR → tape round trip keeps ids, exact timing, truncation and error kinds.
//!
//! Import streams `log.entries` one entry at a time; an entry that is not a usable HAR
//! entry is skipped with a warning naming its index, and the rest are imported.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::blob::Blob;
use crate::convert::http::reason;
use crate::convert::{split_url, ConvertError, ImportReport};
use crate::exchange::*;
use crate::websocket::{Kind, Message, Side, WebSocket};

/// Writes the HAR prologue.
pub fn write_prologue(out: &mut impl Write) -> io::Result<()> {
    let creator = json!({ "name": "tapedeck", "version": env!("CARGO_PKG_VERSION") });
    write!(out, "{{\"log\":{{\"version\":\"1.2\",\"creator\":{creator},\"pages\":[],\"entries\":[")
}

/// Writes the HAR epilogue.
pub fn write_epilogue(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "\n]}}}}")
}

/// Writes one entry; `first` omits the separating comma.
pub fn write_entry(out: &mut impl Write, ex: &Exchange, first: bool) -> io::Result<()> {
    if !first {
        out.write_all(b",")?;
    }
    out.write_all(b"\n")?;
    serde_json::to_writer(&mut *out, &entry(ex)).map_err(io::Error::from)
}

fn name_values(headers: &Headers) -> Vec<Value> {
    headers.iter().map(|h| json!({ "name": h.name.to_str_lossy(), "value": h.value.to_str_lossy() })).collect()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).map_or_else(|_| "1970-01-01T00:00:00Z".into(), |t| t.to_string())
}

/// Text for a HAR `text` field and, when the bytes are not UTF-8, their base64.
fn text_of(data: &Blob) -> (String, Option<String>) {
    match data.as_str() {
        Some(s) => (s.to_string(), None),
        None => (BASE64.encode(data), Some("base64".into())),
    }
}

fn request_cookies(headers: &Headers) -> Vec<Value> {
    headers
        .get_all("cookie")
        .flat_map(|v| {
            v.to_str_lossy()
                .split(';')
                .filter_map(|pair| {
                    let (n, v) = pair.split_once('=')?;
                    Some(json!({ "name": n.trim(), "value": v.trim() }))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn response_cookies(headers: &Headers) -> Vec<Value> {
    headers
        .get_all("set-cookie")
        .filter_map(|v| {
            let text = v.to_str_lossy();
            let mut parts = text.split(';');
            let (name, value) = parts.next()?.split_once('=')?;
            let mut cookie = json!({ "name": name.trim(), "value": value.trim() });
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" => cookie["path"] = json!(v.trim()),
                    "domain" => cookie["domain"] = json!(v.trim()),
                    "httponly" => cookie["httpOnly"] = json!(true),
                    "secure" => cookie["secure"] = json!(true),
                    _ => {}
                }
            }
            Some(cookie)
        })
        .collect()
}

fn entry(ex: &Exchange) -> Value {
    let req = &ex.request;
    let query: Vec<Value> = req
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(n, v)| json!({ "name": n, "value": v })).collect())
        .unwrap_or_default();
    let mut request = json!({
        "method": req.method,
        "url": req.url(),
        "httpVersion": req.version.as_str(),
        "cookies": request_cookies(&req.headers),
        "headers": name_values(&req.headers),
        "queryString": query,
        "headersSize": -1,
        "bodySize": if req.body.is_empty() { 0 } else { req.body.len as i64 },
    });
    if !req.body.data.is_empty() {
        let (text, _) = text_of(&req.body.data);
        let mime = req.headers.get_str("content-type").unwrap_or("application/octet-stream");
        request["postData"] = json!({ "mimeType": mime, "text": text });
    }
    let head = ex.timing.head_ns.unwrap_or(0);
    let end = ex.timing.end_ns.unwrap_or(head).max(head);
    let response = match &ex.response {
        Some(r) => {
            let (text, encoding) = text_of(&r.body.data);
            let mut content = json!({
                "size": r.body.len,
                "mimeType": r.headers.get_str("content-type").unwrap_or("x-unknown"),
            });
            if !r.body.data.is_empty() {
                content["text"] = json!(text);
                if let Some(enc) = encoding {
                    content["encoding"] = json!(enc);
                }
            }
            json!({
                "status": r.status,
                "statusText": reason(r.status),
                "httpVersion": r.version.as_str(),
                "cookies": response_cookies(&r.headers),
                "headers": name_values(&r.headers),
                "content": content,
                "redirectURL": r.headers.get_str("location").unwrap_or(""),
                "headersSize": -1,
                "bodySize": r.body.len,
            })
        }
        None => json!({
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": { "size": 0, "mimeType": "x-unknown" }, "redirectURL": "",
            "headersSize": -1, "bodySize": -1,
        }),
    };
    let mut response = response;
    if let Some(e) = ex.error {
        response["_error"] = json!(e.as_str());
    }
    let extra = Extra {
        id: ex.id,
        connection: ex.connection,
        session: ex.session.clone(),
        sequence: ex.sequence,
        timing: ex.timing,
        error: ex.error,
        scrub: ex.scrub.clone(),
        replay_of: ex.replay_of,
        request_body: BodyExtra::of(&req.body),
        response_body: ex.response.as_ref().map(|r| BodyExtra::of(&r.body)),
        request_trailers: req.trailers.clone(),
        response_trailers: ex.response.as_ref().map(|r| r.trailers.clone()).unwrap_or_default(),
        websocket: ex.websocket.clone(),
    };
    let mut entry = json!({
        "startedDateTime": rfc3339(ex.wall_start_ns()),
        "time": ms(end),
        "request": request,
        "response": response,
        "cache": {},
        "timings": { "blocked": -1, "dns": -1, "connect": -1, "send": 0, "wait": ms(head), "receive": ms(end - head), "ssl": -1 },
        "connection": ex.connection.to_string(),
        "_tapedeck": extra,
    });
    if let Some(ws) = &ex.websocket {
        // Chrome's marks, which HAR viewers look for.
        entry["_resourceType"] = json!("websocket");
        entry["_webSocketMessages"] = Value::Array(ws_messages_out(ws, ex.wall_start_ns()));
    }
    entry
}

/// A session's messages as Chrome's DevTools writes them in a HAR (`_webSocketMessages`:
/// `send`/`receive`, epoch seconds, opcode, text or base64; a close carries its reason).
fn ws_messages_out(ws: &WebSocket, wall_start_ns: i64) -> Vec<Value> {
    ws.messages
        .iter()
        .map(|m| {
            let data = match m.kind {
                Kind::Binary => BASE64.encode(&m.data),
                _ => m.data.to_str_lossy().into_owned(),
            };
            json!({
                "type": if m.from == Side::Client { "send" } else { "receive" },
                "time": (wall_start_ns as f64 + m.at_ns as f64) / 1e9,
                "opcode": m.kind.opcode(),
                "data": data,
            })
        })
        .collect()
}

/// Chrome's `_webSocketMessages` as a session (an entry without tapedeck's own fields).
fn ws_messages_in(messages: Vec<WsMessageIn>, wall_start_ns: i64) -> WebSocket {
    let messages = messages
        .into_iter()
        .filter_map(|m| {
            let kind = [Kind::Text, Kind::Binary, Kind::Close, Kind::Ping, Kind::Pong]
                .into_iter()
                .find(|k| u64::from(k.opcode()) == m.opcode)?;
            let from = if m.kind == "send" { Side::Client } else { Side::Server };
            // Seconds as a float: exact to the microsecond, which is what Chrome writes.
            let at_ns = ((m.time * 1e6).round() as i64).saturating_mul(1000).saturating_sub(wall_start_ns).max(0);
            let data = match kind {
                Kind::Binary => BASE64.decode(&m.data).unwrap_or_else(|_| m.data.clone().into_bytes()),
                _ => m.data.into_bytes(),
            };
            let len = data.len() as u64;
            Some(Message { from, at_ns: at_ns as u64, kind, code: None, data: Blob::from(data), len, truncated: false })
        })
        .collect();
    WebSocket { messages, ..Default::default() }
}

/// tapedeck's own fields, kept in `_tapedeck` so a HAR round trip is lossless.
#[derive(Serialize, Deserialize)]
struct Extra {
    id: ExchangeId,
    connection: ConnectionId,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    sequence: u32,
    timing: Timing,
    #[serde(default)]
    error: Option<ErrorKind>,
    #[serde(default)]
    scrub: Vec<ScrubHit>,
    #[serde(default)]
    replay_of: Option<ExchangeId>,
    request_body: BodyExtra,
    #[serde(default)]
    response_body: Option<BodyExtra>,
    /// Trailer fields (HAR has no place for them).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    request_trailers: Headers,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    response_trailers: Headers,
    /// The WebSocket session, whole (`_webSocketMessages` has Chrome's view of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    websocket: Option<WebSocket>,
}

/// One of Chrome's `_webSocketMessages`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WsMessageIn {
    #[serde(rename = "type")]
    kind: String,
    time: f64,
    opcode: u64,
    data: String,
}

#[derive(Serialize, Deserialize)]
struct BodyExtra {
    len: u64,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    decoded_from: Option<String>,
    /// The exact bytes, when HAR's text field cannot carry them (binary request bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl BodyExtra {
    fn of(body: &Body) -> Self {
        let base64 = (body.data.as_str().is_none()).then(|| BASE64.encode(&body.data));
        BodyExtra { len: body.len, truncated: body.truncated, decoded_from: body.decoded_from.clone(), base64 }
    }
}

// ---- import ----------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EntryIn {
    started_date_time: Option<String>,
    time: Option<f64>,
    request: Option<RequestIn>,
    response: Option<ResponseIn>,
    timings: Option<TimingsIn>,
    connection: Option<String>,
    #[serde(rename = "_tapedeck")]
    tapedeck: Option<Extra>,
    #[serde(rename = "_webSocketMessages")]
    web_socket_messages: Option<Vec<WsMessageIn>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RequestIn {
    method: Option<String>,
    url: Option<String>,
    http_version: Option<String>,
    headers: Vec<NameValue>,
    post_data: Option<PostDataIn>,
    body_size: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PostDataIn {
    text: Option<String>,
    params: Vec<NameValue>,
    encoding: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResponseIn {
    status: Option<f64>,
    http_version: Option<String>,
    headers: Vec<NameValue>,
    content: Option<ContentIn>,
    #[serde(rename = "_error")]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ContentIn {
    size: Option<f64>,
    text: Option<String>,
    encoding: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TimingsIn {
    blocked: Option<f64>,
    dns: Option<f64>,
    connect: Option<f64>,
    send: Option<f64>,
    wait: Option<f64>,
}

/// Imports the entries of a HAR document from `src`, handing each exchange to `sink`.
pub fn import(
    src: impl Read,
    sink: &mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
) -> Result<ImportReport, ConvertError> {
    let mut state = ImportState {
        report: ImportReport::default(),
        sink,
        ids: IdGenerator::new(),
        sequences: HashMap::new(),
        tape_start: None,
        index: 0,
        sink_error: None,
        saw_entries: false,
    };
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::new(src));
    let result = RootSeed(&mut state).deserialize(&mut de);
    if let Some(e) = state.sink_error.take() {
        return Err(e);
    }
    if let Err(e) = result {
        if state.report.imported == 0 {
            return Err(ConvertError::Format(format!("not a valid HAR file: {e}")));
        }
        // A HAR cut off mid-way (a crashed export, a partial download): keep what was read.
        let n = state.report.imported;
        state.report.warn(format!("the file breaks off after {n} entries ({e}); those {n} were imported"));
    }
    if !state.saw_entries {
        return Err(ConvertError::Format("not a HAR file: no log.entries array".into()));
    }
    Ok(state.report)
}

struct ImportState<'a> {
    report: ImportReport,
    sink: &'a mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
    ids: IdGenerator,
    sequences: HashMap<u64, u32>,
    tape_start: Option<i64>,
    index: usize,
    sink_error: Option<ConvertError>,
    saw_entries: bool,
}

impl ImportState<'_> {
    fn entry(&mut self, value: Value) -> Result<(), String> {
        let index = self.index;
        self.index += 1;
        let converted =
            serde_json::from_value::<EntryIn>(value).map_err(|e| e.to_string()).and_then(|e| self.convert(e));
        match converted {
            Ok(ex) => {
                if let Err(e) = (self.sink)(ex) {
                    let msg = e.to_string();
                    self.sink_error = Some(e);
                    return Err(msg);
                }
                self.report.imported += 1;
            }
            Err(why) => self.report.skip(format!("entry {index}: {why}; skipped")),
        }
        Ok(())
    }

    fn convert(&mut self, e: EntryIn) -> Result<Exchange, String> {
        let req = e.request.ok_or("no request")?;
        let url = req.url.clone().ok_or("request has no url")?;
        if let Some(extra) = e.tapedeck {
            return Ok(self.exchange_from_extra(extra, req, e.response, &url));
        }
        let started = e.started_date_time.ok_or("no startedDateTime")?;
        let wall = started
            .parse::<jiff::Timestamp>()
            .map_err(|err| format!("startedDateTime {started:?} is not an ISO 8601 time: {err}"))?
            .as_nanosecond() as i64;
        let tape_start = *self.tape_start.get_or_insert(wall);
        let mut timing = if wall >= tape_start { Timing::at(tape_start, wall) } else { Timing::at(wall, wall) };
        let t = e.timings.unwrap_or_default();
        let before_head: f64 =
            [t.blocked, t.dns, t.connect, t.send, t.wait].iter().flatten().filter(|v| **v > 0.0).sum();
        let to_ns = |ms: f64| (ms * 1e6).round() as u64;
        let connection = e.connection.as_deref().map_or(0, connection_id);
        let sequence = self.sequences.entry(connection).or_insert(0);
        let this_sequence = *sequence;
        *sequence += 1;
        let request = build_request(req, &url);
        let (response, error) = build_response(e.response);
        if response.is_some() {
            timing.head_ns = Some(to_ns(before_head));
            timing.end_ns = e.time.filter(|t| t.is_finite() && *t >= 0.0).map(to_ns);
        }
        Ok(Exchange {
            id: ExchangeId(self.ids.next()),
            connection: ConnectionId(connection),
            session: None,
            sequence: this_sequence,
            timing,
            request,
            response,
            error,
            scrub: Vec::new(),
            replay_of: None,
            websocket: e.web_socket_messages.map(|m| ws_messages_in(m, wall)),
        })
    }

    fn exchange_from_extra(&mut self, extra: Extra, req: RequestIn, resp: Option<ResponseIn>, url: &str) -> Exchange {
        let mut request = build_request(req, url);
        apply_body_extra(&mut request.body, &extra.request_body);
        request.trailers = extra.request_trailers;
        let (mut response, _) = build_response(resp);
        if let (Some(r), Some(b)) = (response.as_mut(), extra.response_body.as_ref()) {
            apply_body_extra(&mut r.body, b);
        }
        if let Some(r) = response.as_mut() {
            r.trailers = extra.response_trailers;
        }
        Exchange {
            id: extra.id,
            connection: extra.connection,
            session: extra.session,
            sequence: extra.sequence,
            timing: extra.timing,
            request,
            response,
            error: extra.error,
            scrub: extra.scrub,
            replay_of: extra.replay_of,
            websocket: extra.websocket,
        }
    }
}

fn apply_body_extra(body: &mut Body, extra: &BodyExtra) {
    if let Some(bytes) = extra.base64.as_deref().and_then(|b| BASE64.decode(b).ok()) {
        body.data = Blob::from(bytes);
    }
    body.len = extra.len;
    body.truncated = extra.truncated;
    body.decoded_from.clone_from(&extra.decoded_from);
}

/// A numeric connection id from HAR's string (Chrome uses decimal numbers), or a hash.
fn connection_id(s: &str) -> u64 {
    s.parse::<u64>()
        .or_else(|_| u64::from_str_radix(s, 16))
        .unwrap_or_else(|_| crate::convert::stable_hash(s.as_bytes()))
}

fn headers_of(list: Vec<NameValue>) -> (Headers, Option<String>) {
    let mut headers = Headers::new();
    let mut authority = None;
    for nv in list {
        if nv.name.eq_ignore_ascii_case(":authority") {
            authority = Some(nv.value);
        } else if !nv.name.starts_with(':') {
            headers.push(nv.name, nv.value);
        }
    }
    (headers, authority)
}

fn build_request(req: RequestIn, url: &str) -> Request {
    let (headers, pseudo_authority) = headers_of(req.headers);
    let (scheme, mut authority, target) = split_url(url);
    if authority.is_empty() {
        authority = pseudo_authority.or_else(|| headers.get_str("host").map(str::to_string)).unwrap_or_default();
    }
    let data: Vec<u8> = match req.post_data {
        Some(p) => match (p.text, p.encoding.as_deref()) {
            (Some(t), Some("base64")) => BASE64.decode(t.as_bytes()).unwrap_or_else(|_| t.into_bytes()),
            (Some(t), _) => t.into_bytes(),
            (None, _) => form_urlencoded::Serializer::new(String::new())
                .extend_pairs(p.params.iter().map(|nv| (&nv.name, &nv.value)))
                .finish()
                .into_bytes(),
        },
        None => Vec::new(),
    };
    let mut body = Body::full(data);
    if let Some(size) = req.body_size.filter(|s| *s >= 0.0) {
        body.len = (size as u64).max(body.data.len() as u64);
    }
    Request {
        message_ns: Vec::new(),
        trailers: Default::default(),
        method: req.method.unwrap_or_else(|| "GET".into()),
        scheme,
        authority,
        target,
        version: req.http_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or_default(),
        headers,
        body,
    }
}

fn build_response(resp: Option<ResponseIn>) -> (Option<Response>, Option<ErrorKind>) {
    let Some(resp) = resp else { return (None, Some(ErrorKind::Other)) };
    let status = resp.status.unwrap_or(0.0);
    if !(100.0..1000.0).contains(&status) {
        return (None, Some(resp.error.as_deref().map_or(ErrorKind::Other, browser_error)));
    }
    let (headers, _) = headers_of(resp.headers);
    let content = resp.content.unwrap_or_default();
    let data = match (content.text, content.encoding.as_deref()) {
        (Some(t), Some("base64")) => BASE64.decode(t.as_bytes()).unwrap_or_else(|_| t.into_bytes()),
        (Some(t), _) => t.into_bytes(),
        (None, _) => Vec::new(),
    };
    let size = content.size.filter(|s| *s >= 0.0).map_or(data.len() as u64, |s| s as u64);
    let truncated = (data.len() as u64) < size;
    // Browsers store bodies already decompressed while keeping the Content-Encoding header.
    let decoded_from = headers.get_str("content-encoding").filter(|_| !data.is_empty()).map(str::to_string);
    let body = Body { data: Blob::from(data), len: size, truncated, decoded_from };
    let version = resp.http_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or_default();
    (
        Some(Response {
            trailers: Default::default(),
            message_ns: Vec::new(),
            status: status as u16,
            version,
            headers,
            body,
        }),
        None,
    )
}

/// Maps a browser's network error (`net::ERR_…`) or a tapedeck kind to an [`ErrorKind`].
fn browser_error(e: &str) -> ErrorKind {
    if let Ok(kind) = e.parse::<ErrorKind>() {
        return kind;
    }
    let e = e.to_ascii_uppercase();
    if e.contains("REFUSED") {
        ErrorKind::ConnectRefused
    } else if e.contains("NAME_NOT_RESOLVED") || e.contains("DNS") {
        ErrorKind::Dns
    } else if e.contains("TIMED_OUT") {
        ErrorKind::ConnectTimeout
    } else if e.contains("SSL") || e.contains("CERT") {
        ErrorKind::Tls
    } else if e.contains("RESET") || e.contains("EMPTY_RESPONSE") || e.contains("CLOSED") {
        ErrorKind::Reset
    } else if e.contains("ABORTED") {
        ErrorKind::ClientAborted
    } else {
        ErrorKind::Other
    }
}

struct RootSeed<'s, 'a>(&'s mut ImportState<'a>);
struct LogSeed<'s, 'a>(&'s mut ImportState<'a>);
struct EntriesSeed<'s, 'a>(&'s mut ImportState<'a>);

impl<'de> DeserializeSeed<'de> for RootSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RootSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a HAR object with a \"log\" member")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "log" {
                map.next_value_seed(LogSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for LogSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LogSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a HAR log object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "entries" {
                self.0.saw_entries = true;
                map.next_value_seed(EntriesSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of HAR entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            self.0.entry(value).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod websocket_tests {
    use super::*;

    #[test]
    fn chrome_websocket_messages_import_as_a_session() {
        let har = r#"{"log":{"version":"1.2","entries":[{
            "startedDateTime":"2026-01-01T00:00:00.000Z","time":5,
            "request":{"method":"GET","url":"wss://chat.example.com/live","httpVersion":"HTTP/1.1","headers":[]},
            "response":{"status":101,"statusText":"Switching Protocols","httpVersion":"HTTP/1.1","headers":[]},
            "_resourceType":"websocket",
            "_webSocketMessages":[
                {"type":"send","time":1767225600.25,"opcode":1,"data":"{\"op\":\"hi\"}"},
                {"type":"receive","time":1767225600.5,"opcode":2,"data":"/wAB"},
                {"type":"receive","time":1767225601,"opcode":8,"data":"bye"},
                {"type":"send","time":1767225601,"opcode":99,"data":"unknown opcode: skipped"}
            ]}]}}"#;
        let mut got = Vec::new();
        import(har.as_bytes(), &mut |ex| {
            got.push(ex);
            Ok(())
        })
        .unwrap();
        let ws = got[0].websocket.as_ref().expect("a session");
        let seen: Vec<_> = ws.messages.iter().map(|m| (m.from, m.kind, m.at_ns, m.data.to_vec())).collect();
        assert_eq!(
            seen,
            [
                (Side::Client, Kind::Text, 250_000_000, br#"{"op":"hi"}"#.to_vec()),
                (Side::Server, Kind::Binary, 500_000_000, vec![0xff, 0, 1]),
                (Side::Server, Kind::Close, 1_000_000_000, b"bye".to_vec()),
            ]
        );
    }
}
