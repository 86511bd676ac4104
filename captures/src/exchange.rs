//! The data model: an [`Exchange`] is one HTTP request with its response (or the reason
//! there was none), as seen by the capture proxy, with precise timing.
//!
//! Every other part of tapedeck speaks this type: the proxy produces it, the scrubber edits
//! it, the `.tape` format stores it, the replayer re-issues its request and records the
//! target's answer as another `Exchange` linked by [`Exchange::replay_of`].

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::blob::Blob;

/// One request/response pair.
///
/// In a tape, a record holds the fields below in order (bincode), then zero or more
/// extensions, each a tag and a length-prefixed payload, for what later versions added
/// (trailers, gRPC message times, WebSocket messages); a reader skips tags it does not know, and a record without extensions is
/// a record of the first codec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// Unique id of this exchange (unique across writers: see [`IdGenerator`]).
    pub id: ExchangeId,
    /// The client connection the request arrived on.
    pub connection: ConnectionId,
    /// The sampling key's value (pseudonymised), when sampling by session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Position of this request within its connection, from 0.
    #[serde(default)]
    pub sequence: u32,
    /// When the request started and how long the response took.
    pub timing: Timing,
    /// The request as received from the client.
    pub request: Request,
    /// The response as received from the upstream, if any head arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// Why the exchange failed: no response head, or the response broke off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// Scrub rules that fired on this exchange (names and counts, never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrub: Vec<ScrubHit>,
    /// For replay results: the id of the recorded exchange this one re-issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<ExchangeId>,
    /// The WebSocket messages that followed the upgrade, when the request was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<crate::websocket::WebSocket>,
}

impl Exchange {
    /// Wall-clock start of the request, in nanoseconds since the Unix epoch.
    pub fn wall_start_ns(&self) -> i64 {
        self.timing.wall_start_ns()
    }

    /// The response status, if a response head arrived.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// About how many bytes the exchange holds in memory (headers, bodies, messages): for
    /// budgets that bound what is queued.
    pub fn approx_bytes(&self) -> usize {
        let headers: usize = self
            .request
            .headers
            .iter()
            .chain(self.response.iter().flat_map(|r| r.headers.iter()))
            .map(|h| h.name.len() + h.value.len())
            .sum();
        let messages: usize = self.websocket.iter().flat_map(|ws| &ws.messages).map(|m| m.data.len() + 32).sum();
        self.request.body.data.len()
            + self.response.as_ref().map_or(0, |r| r.body.data.len())
            + headers
            + messages
            + 256
    }
}

/// Exchange id: printed as 16 hex digits (JSON numbers above 2^53 lose precision in
/// JavaScript-based tools).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct ExchangeId(pub u64);

/// Client connection id, unique within a writer; printed like [`ExchangeId`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct ConnectionId(pub u64);

macro_rules! hex_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl FromStr for $t {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                u64::from_str_radix(s, 16).map($t)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
hex_id!(ExchangeId);
hex_id!(ConnectionId);

/// Hands out exchange and connection ids that do not collide across writers: the top 24
/// bits are random per generator, the low 40 bits count.
#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    next: std::sync::atomic::AtomicU64,
}

impl IdGenerator {
    /// A generator with a random prefix.
    pub fn new() -> Self {
        Self::with_prefix(rand::random::<u32>() as u64 & 0xff_ffff)
    }

    /// A generator with a fixed 24-bit prefix (tests, imports that want stable ids).
    pub fn with_prefix(prefix: u64) -> Self {
        IdGenerator { prefix: (prefix & 0xff_ffff) << 40, next: std::sync::atomic::AtomicU64::new(1) }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.prefix | (n & ((1 << 40) - 1))
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// Timing of an exchange. Offsets come from a monotonic clock; only `tape_start_unix_ns`
/// is wall-clock time, so recorded gaps between requests are exact even if the system
/// clock steps during a capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Timing {
    /// Wall-clock time at which the capture (the writer's clock) started, ns since the epoch.
    pub tape_start_unix_ns: i64,
    /// Request start (first byte of the request head), ns since `tape_start_unix_ns`.
    pub start_ns: u64,
    /// Time from request start to the response head, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_ns: Option<u64>,
    /// Time from request start to the last response byte, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
}

impl Timing {
    /// Wall-clock start of the request, ns since the Unix epoch.
    pub fn wall_start_ns(&self) -> i64 {
        self.tape_start_unix_ns.saturating_add(i64::try_from(self.start_ns).unwrap_or(i64::MAX))
    }

    /// Timing for a request that started at `wall_start_ns`, expressed against a tape that
    /// started at `tape_start_unix_ns`.
    pub fn at(tape_start_unix_ns: i64, wall_start_ns: i64) -> Self {
        Timing {
            tape_start_unix_ns,
            start_ns: u64::try_from(wall_start_ns.saturating_sub(tape_start_unix_ns)).unwrap_or(0),
            head_ns: None,
            end_ns: None,
        }
    }
}

/// The HTTP version of a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub enum HttpVersion {
    /// HTTP/0.9
    Http09,
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    #[default]
    Http11,
    /// HTTP/2
    H2,
    /// HTTP/3
    H3,
}

impl HttpVersion {
    /// The version as written in an HTTP/1 start line (`HTTP/1.1`) or in HAR (`HTTP/2`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http09 => "HTTP/0.9",
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
            HttpVersion::H2 => "HTTP/2",
            HttpVersion::H3 => "HTTP/3",
        }
    }
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HttpVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HTTP/0.9" => Ok(HttpVersion::Http09),
            "HTTP/1.0" | "HTTP/1" => Ok(HttpVersion::Http10),
            "HTTP/1.1" | "" => Ok(HttpVersion::Http11),
            "HTTP/2" | "HTTP/2.0" | "H2" | "H2C" => Ok(HttpVersion::H2),
            "HTTP/3" | "HTTP/3.0" | "H3" => Ok(HttpVersion::H3),
            other => Err(format!("unknown HTTP version {other:?}")),
        }
    }
}

impl Serialize for HttpVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HttpVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One header field, exactly as received (name case and order are kept).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Header {
    /// Field name, original case.
    pub name: Blob,
    /// Field value, raw bytes.
    pub value: Blob,
}

// Headers print as `["Name", "value"]` pairs: compact, ordered, repeated names kept.
impl Serialize for Header {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.name, &self.value).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, value) = <(Blob, Blob)>::deserialize(d)?;
        Ok(Header { name, value })
    }
}

/// An ordered header list; repeated names are separate entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(transparent)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a field.
    pub fn push(&mut self, name: impl Into<Blob>, value: impl Into<Blob>) {
        self.0.push(Header { name: name.into(), value: value.into() });
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Blob> {
        self.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| &h.value)
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Blob::as_str)
    }

    /// All values of `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Blob> + 'a {
        self.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| &h.value)
    }

    /// Removes every field named `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
        before - self.0.len()
    }

    /// Replaces every field named `name` with one field, or appends it.
    pub fn set(&mut self, name: &str, value: impl Into<Blob>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name.eq_ignore_ascii_case(name)) {
            Some(i) => {
                self.0[i].value = value;
                let mut seen = 0usize;
                self.0.retain(|h| {
                    let keep = !h.name.eq_ignore_ascii_case(name) || seen == 0;
                    if h.name.eq_ignore_ascii_case(name) {
                        seen += 1;
                    }
                    keep
                });
            }
            None => self.push(Blob::from(name), value),
        }
    }

    /// Iterates over the fields in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A message body as captured: at most the proxy's `--max-body` bytes of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Body {
    /// The captured bytes (possibly a prefix of the original body).
    #[serde(default)]
    pub data: Blob,
    /// Length of the original body on the wire, in bytes.
    #[serde(default)]
    pub len: u64,
    /// True when `data` holds less than the original body.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// Set when the body was decoded before storage: the original `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded_from: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Body {
    /// A complete body.
    pub fn full(data: impl Into<Blob>) -> Self {
        let data = data.into();
        Body { len: data.len() as u64, data, truncated: false, decoded_from: None }
    }

    /// True when no bytes were captured and none were sent.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.len == 0
    }
}

/// The request half of an exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`, as seen by the proxy's client.
    pub scheme: String,
    /// Host (and port) the client addressed: the `Host` header or the h2 `:authority`.
    pub authority: String,
    /// Path and query, e.g. `/users/42?expand=orders`.
    pub target: String,
    /// Protocol version.
    pub version: HttpVersion,
    /// Header fields as received.
    pub headers: Headers,
    /// Body as captured.
    pub body: Body,
    /// Trailer fields that followed the body (HTTP/2, chunked HTTP/1.1).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub trailers: Headers,
    /// gRPC: when each message of the body had arrived whole, in ns after the request
    /// started (a stream's pacing, which a replay keeps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ns: Vec<u64>,
}

impl Request {
    /// Path without the query string.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(p, _)| p)
    }

    /// Query string without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The absolute URL of the request.
    pub fn url(&self) -> String {
        let scheme = if self.scheme.is_empty() { "http" } else { &self.scheme };
        let authority = if self.authority.is_empty() { "localhost" } else { &self.authority };
        let slash = if self.target.starts_with('/') { "" } else { "/" };
        format!("{scheme}://{authority}{slash}{}", self.target)
    }
}

/// The response half of an exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Protocol version.
    pub version: HttpVersion,
    /// Header fields as received.
    pub headers: Headers,
    /// Body as captured.
    pub body: Body,
    /// Trailer fields that followed the body (gRPC's `grpc-status` travels here).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub trailers: Headers,
    /// gRPC: when each message of the body had arrived whole, in ns after the request
    /// started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ns: Vec<u64>,
}

/// The record encoding (see [`Exchange`]): the fields every codec has, in order; trailers
/// travel as extensions of the exchange.
mod record {
    use bincode::de::read::Reader;
    use bincode::de::Decoder;
    use bincode::enc::Encoder;
    use bincode::error::{DecodeError, EncodeError};
    use bincode::{Decode, Encode};

    use super::{Exchange, Headers, Request, Response};

    /// Extension tags.
    const REQUEST_TRAILERS: u8 = 1;
    const RESPONSE_TRAILERS: u8 = 2;
    const REQUEST_MESSAGES: u8 = 3;
    const RESPONSE_MESSAGES: u8 = 4;
    const WEBSOCKET: u8 = 5;

    impl Encode for Request {
        fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
            self.method.encode(e)?;
            self.scheme.encode(e)?;
            self.authority.encode(e)?;
            self.target.encode(e)?;
            self.version.encode(e)?;
            self.headers.encode(e)?;
            self.body.encode(e)
        }
    }

    impl<C> Decode<C> for Request {
        fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
            Ok(Request {
                method: Decode::decode(d)?,
                scheme: Decode::decode(d)?,
                authority: Decode::decode(d)?,
                target: Decode::decode(d)?,
                version: Decode::decode(d)?,
                headers: Decode::decode(d)?,
                body: Decode::decode(d)?,
                trailers: Headers::default(),
                message_ns: Vec::new(),
            })
        }
    }
    bincode::impl_borrow_decode!(Request);

    impl Encode for Response {
        fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
            self.status.encode(e)?;
            self.version.encode(e)?;
            self.headers.encode(e)?;
            self.body.encode(e)
        }
    }

    impl<C> Decode<C> for Response {
        fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
            Ok(Response {
                status: Decode::decode(d)?,
                version: Decode::decode(d)?,
                headers: Decode::decode(d)?,
                body: Decode::decode(d)?,
                trailers: Headers::default(),
                message_ns: Vec::new(),
            })
        }
    }
    bincode::impl_borrow_decode!(Response);

    /// An extension's payload. Limited like a record (a damaged payload can claim 2^60
    /// elements: that is an error, not an allocation).
    fn payload<T: Decode<()>>(payload: &[u8]) -> Result<T, DecodeError> {
        let config = bincode::config::standard().with_limit::<{ crate::tape::format::MAX_BLOCK_RAW as usize }>();
        bincode::decode_from_slice(payload, config).map(|(v, _)| v)
    }

    fn extension<E: Encoder>(e: &mut E, tag: u8, value: &impl Encode) -> Result<(), EncodeError> {
        let payload = bincode::encode_to_vec(value, bincode::config::standard())?;
        tag.encode(e)?;
        payload.encode(e)
    }

    impl Encode for Exchange {
        fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
            self.id.encode(e)?;
            self.connection.encode(e)?;
            self.session.encode(e)?;
            self.sequence.encode(e)?;
            self.timing.encode(e)?;
            self.request.encode(e)?;
            self.response.encode(e)?;
            self.error.encode(e)?;
            self.scrub.encode(e)?;
            self.replay_of.encode(e)?;
            if !self.request.trailers.is_empty() {
                extension(e, REQUEST_TRAILERS, &self.request.trailers)?;
            }
            if let Some(r) = self.response.as_ref().filter(|r| !r.trailers.is_empty()) {
                extension(e, RESPONSE_TRAILERS, &r.trailers)?;
            }
            if !self.request.message_ns.is_empty() {
                extension(e, REQUEST_MESSAGES, &self.request.message_ns)?;
            }
            if let Some(r) = self.response.as_ref().filter(|r| !r.message_ns.is_empty()) {
                extension(e, RESPONSE_MESSAGES, &r.message_ns)?;
            }
            if let Some(ws) = &self.websocket {
                extension(e, WEBSOCKET, ws)?;
            }
            Ok(())
        }
    }

    impl<C> Decode<C> for Exchange {
        fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
            let mut ex = Exchange {
                id: Decode::decode(d)?,
                connection: Decode::decode(d)?,
                session: Decode::decode(d)?,
                sequence: Decode::decode(d)?,
                timing: Decode::decode(d)?,
                request: Decode::decode(d)?,
                response: Decode::decode(d)?,
                error: Decode::decode(d)?,
                scrub: Decode::decode(d)?,
                replay_of: Decode::decode(d)?,
                websocket: None,
            };
            // Extensions, until the record ends.
            while d.reader().peek_read(1).is_some() {
                let tag = u8::decode(d)?;
                let payload: Vec<u8> = Decode::decode(d)?;
                let headers = || self::payload::<Headers>(&payload);
                match tag {
                    REQUEST_TRAILERS => ex.request.trailers = headers()?,
                    RESPONSE_TRAILERS => {
                        if let Some(r) = ex.response.as_mut() {
                            r.trailers = headers()?;
                        }
                    }
                    REQUEST_MESSAGES => ex.request.message_ns = self::payload(&payload)?,
                    RESPONSE_MESSAGES => {
                        if let Some(r) = ex.response.as_mut() {
                            r.message_ns = self::payload(&payload)?;
                        }
                    }
                    WEBSOCKET => ex.websocket = Some(self::payload(&payload)?),
                    _ => {} // a later version's: skipped
                }
            }
            Ok(ex)
        }
    }
    bincode::impl_borrow_decode!(Exchange);
}

/// Why an exchange has no (complete) response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The upstream refused the connection.
    ConnectRefused,
    /// Connecting to the upstream timed out.
    ConnectTimeout,
    /// The upstream's name did not resolve.
    Dns,
    /// The TLS handshake with the upstream failed.
    Tls,
    /// The upstream did not answer within the response timeout.
    ResponseTimeout,
    /// The upstream closed or reset the connection before the response was complete.
    Reset,
    /// The upstream sent something that is not valid HTTP.
    Protocol,
    /// The client went away before the exchange completed.
    ClientAborted,
    /// Anything else.
    Other,
    /// The response ended before its announced length (`Content-Length`, a chunked body
    /// without its last chunk, an HTTP/2 stream ended early).
    IncompleteBody,
    /// The run was stopped (Ctrl-C, `--duration`) while the request was in flight.
    Interrupted,
}

impl ErrorKind {
    /// Every kind, for tables and metrics.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Dns,
        ErrorKind::Tls,
        ErrorKind::ResponseTimeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
        ErrorKind::ClientAborted,
        ErrorKind::Other,
        ErrorKind::IncompleteBody,
        ErrorKind::Interrupted,
    ];

    /// The kind of a failed connect or an I/O error on a connection.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            _ => ErrorKind::Other,
        }
    }

    /// The snake_case name used in JSON, metrics and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::ResponseTimeout => "response_timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ClientAborted => "client_aborted",
            ErrorKind::Other => "other",
            ErrorKind::IncompleteBody => "incomplete_body",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown error kind {s:?}"))
    }
}

/// One scrub rule that fired, with how many values it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ScrubHit {
    /// Rule name, e.g. `header:authorization` or `detect:email`.
    pub rule: String,
    /// Number of values the rule changed in this exchange.
    pub count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_hex_and_parse_back() {
        let id = ExchangeId(0x00ab_cdef_0000_0001);
        assert_eq!(id.to_string(), "00abcdef00000001");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""00abcdef00000001""#);
        assert_eq!(serde_json::from_str::<ExchangeId>(r#""00abcdef00000001""#).unwrap(), id);
    }

    #[test]
    fn id_generators_with_different_prefixes_never_collide() {
        let a = IdGenerator::with_prefix(1);
        let b = IdGenerator::with_prefix(2);
        let ids: std::collections::HashSet<u64> = (0..1000).flat_map(|_| [a.next(), b.next()]).collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn headers_keep_order_and_repeats() {
        let mut h = Headers::new();
        h.push("Set-Cookie", "a=1");
        h.push("content-type", "text/plain");
        h.push("set-cookie", "b=2");
        assert_eq!(h.get_all("SET-COOKIE").count(), 2);
        assert_eq!(h.get_str("Content-Type"), Some("text/plain"));
        h.set("Set-Cookie", "c=3");
        assert_eq!(h.get_all("set-cookie").map(|v| v.to_str_lossy().into_owned()).collect::<Vec<_>>(), ["c=3"]);
        assert_eq!(h.0[0].name.as_str(), Some("Set-Cookie"));
        assert_eq!(h.remove("content-type"), 1);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn versions_parse_from_har_and_http1_spellings() {
        assert_eq!("http/2.0".parse::<HttpVersion>().unwrap(), HttpVersion::H2);
        assert_eq!("HTTP/1.1".parse::<HttpVersion>().unwrap(), HttpVersion::Http11);
        assert!("SPDY/3".parse::<HttpVersion>().is_err());
    }

    #[test]
    fn timing_wall_clock_is_start_plus_offset() {
        let t = Timing::at(1_000, 1_500);
        assert_eq!(t.start_ns, 500);
        assert_eq!(t.wall_start_ns(), 1_500);
        // A request recorded before the tape's start clamps to the start instead of wrapping.
        assert_eq!(Timing::at(1_000, 900).start_ns, 0);
    }

    #[test]
    fn request_splits_path_and_query_and_builds_url() {
        let r = Request {
            scheme: "https".into(),
            authority: "api.example.com".into(),
            target: "/users/1?x=2".into(),
            ..Default::default()
        };
        assert_eq!(r.path(), "/users/1");
        assert_eq!(r.query(), Some("x=2"));
        assert_eq!(r.url(), "https://api.example.com/users/1?x=2");
    }
}
