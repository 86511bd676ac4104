//! Raw HTTP/1.1 text: rendering exchanges as wire-format messages (`tapedeck cat --format
//! http`, GoReplay export) and parsing raw messages back (GoReplay import).
//!
//! Bodies in an [`Exchange`] are entity bodies with transfer framing removed, so rendering
//! re-frames them: a chunked message gets one chunk, and a `Content-Length` that no longer
//! matches (truncated or scrubbed body) is corrected, so the text is always a valid,
//! replayable message. HTTP/2 requests are written as HTTP/1.1 with a `Host` header.

use std::io::{self, Write};

use crate::blob::Blob;
use crate::exchange::{Body, Exchange, Headers, HttpVersion, Request, Response};

/// The canonical reason phrase of `status`, or `""`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn http1_version(v: HttpVersion) -> &'static str {
    match v {
        HttpVersion::Http10 | HttpVersion::Http09 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// Headers as they must be sent over HTTP/1.1 with `body` as the entity: framing fixed,
/// pseudo-headers dropped.
pub fn framed_headers(headers: &Headers, body: &Body) -> Headers {
    framed(headers, body, &Headers::default())
}

/// As [`framed_headers`]; a message with trailers is chunked (the only HTTP/1.1 framing
/// that carries them).
fn framed(headers: &Headers, body: &Body, trailers: &Headers) -> Headers {
    let mut out = Headers(headers.iter().filter(|h| !h.name.starts_with(b":")).cloned().collect());
    let mut chunked =
        out.get_all("transfer-encoding").any(|v| v.to_str_lossy().to_ascii_lowercase().contains("chunked"));
    if !trailers.is_empty() && !chunked {
        out.set("Transfer-Encoding", "chunked");
        chunked = true;
    }
    if chunked {
        out.remove("content-length");
    } else if out.get("content-length").is_some() || !body.data.is_empty() {
        out.set("Content-Length", body.data.len().to_string());
    }
    out
}

fn write_headers(out: &mut impl Write, headers: &Headers) -> io::Result<()> {
    for h in headers {
        out.write_all(&h.name)?;
        out.write_all(b": ")?;
        out.write_all(&h.value)?;
        out.write_all(b"\r\n")?;
    }
    out.write_all(b"\r\n")
}

fn write_body(out: &mut impl Write, headers: &Headers, data: &Blob, trailers: &Headers) -> io::Result<()> {
    let chunked =
        headers.get_all("transfer-encoding").any(|v| v.to_str_lossy().to_ascii_lowercase().contains("chunked"));
    if chunked {
        if !data.is_empty() {
            write!(out, "{:x}\r\n", data.len())?;
            out.write_all(data)?;
            out.write_all(b"\r\n")?;
        }
        out.write_all(b"0\r\n")?;
        write_headers(out, trailers)
    } else {
        out.write_all(data)
    }
}

/// Writes the request as an HTTP/1.1 message.
pub fn write_request(out: &mut impl Write, req: &Request) -> io::Result<()> {
    let target = if req.target.is_empty() { "/" } else { &req.target };
    write!(out, "{} {} {}\r\n", req.method, target, http1_version(req.version))?;
    let mut headers = framed(&req.headers, &req.body, &req.trailers);
    if headers.get("host").is_none() && !req.authority.is_empty() {
        headers.0.insert(
            0,
            crate::exchange::Header { name: Blob::from_static("Host"), value: Blob::from(req.authority.as_str()) },
        );
    }
    write_headers(out, &headers)?;
    write_body(out, &headers, &req.body.data, &req.trailers)
}

/// Writes the response as an HTTP/1.1 message.
pub fn write_response(out: &mut impl Write, resp: &Response) -> io::Result<()> {
    write!(out, "{} {} {}\r\n", http1_version(resp.version), resp.status, reason(resp.status))?;
    let headers = framed(&resp.headers, &resp.body, &resp.trailers);
    write_headers(out, &headers)?;
    write_body(out, &headers, &resp.body.data, &resp.trailers)
}

/// A WebSocket session as lines after its handshake: `>>` what the client sent, `<<` what
/// the server sent, with the time after the upgrade request started.
pub fn write_websocket(out: &mut impl Write, ws: &crate::websocket::WebSocket) -> io::Result<()> {
    use crate::websocket::{Kind, Side};
    let mut notes = Vec::new();
    if let Some(d) = &ws.decoded_from {
        notes.push(format!("{d} inflated"));
    }
    if ws.dropped > 0 {
        notes.push(format!("{} messages not kept", ws.dropped));
    }
    if let Some(u) = &ws.unreadable {
        notes.push(format!("unreadable after that: {u}"));
    }
    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
    writeln!(out, "--- websocket: {} messages{notes}", ws.messages.len())?;
    for m in &ws.messages {
        let arrow = if m.from == Side::Client { ">>" } else { "<<" };
        let code = m.code.map_or(String::new(), |c| format!(" {c}"));
        write!(out, "{arrow} {:>9.1} ms {}{code}", m.at_ns as f64 / 1e6, m.kind.as_str())?;
        match (m.kind, m.data.as_str()) {
            (Kind::Binary, _) | (_, None) => write!(out, " {} bytes", m.len)?,
            (_, Some(text)) => {
                if !text.is_empty() {
                    write!(out, " {}", text.replace('\n', "\\n"))?;
                }
                if m.truncated {
                    write!(out, " (cut: {} bytes in all)", m.len)?;
                }
            }
        }
        writeln!(out)?;
    }
    if let Some(end) = ws.end_ns {
        let how = ws.ended.map_or("ended", crate::websocket::Ended::describe);
        writeln!(out, "--- {how} at {:.1} ms", end as f64 / 1e6)?;
    }
    writeln!(out)
}

/// Approximate size of the exchange as HTTP/1.1 text (no allocation).
pub fn wire_size(ex: &Exchange) -> u64 {
    let headers = |h: &Headers| h.iter().map(|h| h.name.len() + h.value.len() + 4).sum::<usize>() as u64 + 2;
    let req = &ex.request;
    let mut n = (req.method.len() + req.target.len() + 11) as u64 + headers(&req.headers) + req.body.data.len() as u64;
    if let Some(r) = &ex.response {
        n += 15 + headers(&r.headers) + r.body.data.len() as u64;
    }
    // A WebSocket session's messages, as frames.
    for m in ex.websocket.iter().flat_map(|ws| &ws.messages) {
        n += 6 + m.data.len() as u64;
    }
    n
}

/// A message parsed from raw bytes.
pub struct Parsed<T> {
    /// The start line and headers, with the body.
    pub message: T,
    /// Bytes after the message (pipelined data), if any.
    pub rest_len: usize,
}

/// Parses a raw HTTP/1.x request. `authority` and `scheme` are taken from the `Host`
/// header and left `http` respectively.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, String> {
    let mut cap = 64;
    loop {
        let mut storage = vec![httparse::EMPTY_HEADER; cap];
        let mut req = httparse::Request::new(&mut storage);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let headers = collect_headers(req.headers);
                let version = if req.version == Some(0) { HttpVersion::Http10 } else { HttpVersion::Http11 };
                let (body, used) = parse_body(&headers, &buf[head_len..], true);
                let authority = headers.get_str("host").unwrap_or_default().to_string();
                let request = Request {
                    message_ns: Vec::new(),
                    trailers: Default::default(),
                    method: req.method.unwrap_or("GET").to_string(),
                    scheme: "http".into(),
                    authority,
                    target: req.path.unwrap_or("/").to_string(),
                    version,
                    headers,
                    body,
                };
                return Ok(Parsed { message: request, rest_len: buf.len() - head_len - used });
            }
            Ok(httparse::Status::Partial) => return Err("request head is incomplete".into()),
            Err(httparse::Error::TooManyHeaders) if cap < 8192 => cap *= 4,
            Err(e) => return Err(format!("not a valid HTTP request: {e}")),
        }
    }
}

/// Parses a raw HTTP/1.x response.
pub fn parse_response(buf: &[u8]) -> Result<Parsed<Response>, String> {
    let mut cap = 64;
    loop {
        let mut storage = vec![httparse::EMPTY_HEADER; cap];
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let headers = collect_headers(resp.headers);
                let version = if resp.version == Some(0) { HttpVersion::Http10 } else { HttpVersion::Http11 };
                let (body, used) = parse_body(&headers, &buf[head_len..], false);
                let response = Response {
                    trailers: Default::default(),
                    message_ns: Vec::new(),
                    status: resp.code.unwrap_or(0),
                    version,
                    headers,
                    body,
                };
                return Ok(Parsed { message: response, rest_len: buf.len() - head_len - used });
            }
            Ok(httparse::Status::Partial) => return Err("response head is incomplete".into()),
            Err(httparse::Error::TooManyHeaders) if cap < 8192 => cap *= 4,
            Err(e) => return Err(format!("not a valid HTTP response: {e}")),
        }
    }
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Headers {
    let mut headers = Headers::new();
    for h in raw {
        headers.push(h.name, h.value);
    }
    headers
}

/// Extracts the entity body from `rest` according to the message's framing; returns the
/// body and the bytes of `rest` it used. A body shorter than its framing says is marked
/// truncated with the declared length.
fn parse_body(headers: &Headers, rest: &[u8], is_request: bool) -> (Body, usize) {
    let chunked =
        headers.get_all("transfer-encoding").any(|v| v.to_str_lossy().to_ascii_lowercase().contains("chunked"));
    if chunked {
        if let Some((data, used)) = dechunk(rest) {
            return (Body::full(data), used);
        }
        // Malformed or cut-off chunking: keep what is there, undecoded.
        return (
            Body { data: Blob::from(rest), len: rest.len() as u64, truncated: true, decoded_from: None },
            rest.len(),
        );
    }
    if let Some(cl) = headers.get_str("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        let take = rest.len().min(usize::try_from(cl).unwrap_or(usize::MAX));
        let body = Body { data: Blob::from(&rest[..take]), len: cl, truncated: (take as u64) < cl, decoded_from: None };
        return (body, take);
    }
    if is_request {
        // A request without framing has no body.
        return (Body::default(), 0);
    }
    (Body::full(rest), rest.len())
}

/// Decodes a complete chunked body; `None` if it is malformed or incomplete.
pub fn dechunk(mut buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = buf.len();
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Skip trailers up to the empty line.
            loop {
                let end = buf.windows(2).position(|w| w == b"\r\n")?;
                buf = &buf[end + 2..];
                if end == 0 {
                    return Some((out, total - buf.len()));
                }
            }
        }
        let chunk = buf.get(..size)?;
        out.extend_from_slice(chunk);
        if buf.get(size..size + 2)? != b"\r\n" {
            return None;
        }
        buf = &buf[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_a_request_with_content_length() {
        let raw =
            b"POST /orders?x=1 HTTP/1.1\r\nHost: api.test\r\nContent-Length: 7\r\nX-A: 1\r\nx-a: 2\r\n\r\na=1&b=2";
        let p = parse_request(raw).unwrap();
        let r = p.message;
        assert_eq!((r.method.as_str(), r.target.as_str(), r.authority.as_str()), ("POST", "/orders?x=1", "api.test"));
        assert_eq!(r.headers.get_all("x-a").count(), 2);
        assert_eq!(&r.body.data[..], b"a=1&b=2");
        let mut out = Vec::new();
        write_request(&mut out, &r).unwrap();
        assert_eq!(&out[..], &raw[..]);
    }

    #[test]
    fn dechunks_and_rechunks() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let p = parse_response(raw).unwrap();
        assert_eq!(&p.message.body.data[..], b"hello world");
        assert_eq!(p.rest_len, 0);
        let mut out = Vec::new();
        write_response(&mut out, &p.message).unwrap();
        let back = parse_response(&out).unwrap();
        assert_eq!(back.message.body, p.message.body);
    }

    #[test]
    fn short_bodies_are_marked_truncated_and_reframed() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
        let resp = parse_response(raw).unwrap().message;
        assert!(resp.body.truncated);
        assert_eq!(resp.body.len, 100);
        let mut out = Vec::new();
        write_response(&mut out, &resp).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("Content-Length: 5\r\n"));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(parse_request(b"\x00\x01garbage").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: x").is_err());
        assert!(dechunk(b"zz\r\n").is_none());
        assert!(dechunk(b"5\r\nhel").is_none());
    }
}
