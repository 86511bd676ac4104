//! Runnable `curl` commands for recorded requests (`tapedeck cat --format curl`).
//!
//! Every argument is single-quoted for POSIX shells. Headers curl computes itself
//! (`Content-Length`, `Transfer-Encoding`, `Connection`) and pseudo-headers are left out;
//! a binary body is piped in through `base64 -d` so NUL bytes survive.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::exchange::{Exchange, HttpVersion};

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

const SKIP: [&str; 5] = ["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"];

/// Writes one curl command (one line, plus a leading comment line).
pub fn write_curl(out: &mut impl Write, ex: &Exchange) -> io::Result<()> {
    let req = &ex.request;
    let status =
        ex.status().map_or_else(|| ex.error.map_or("no response".to_string(), |e| e.to_string()), |s| s.to_string());
    writeln!(out, "# {} {} {} -> {}", ex.id, req.method, req.target, status)?;
    let body = &req.body.data;
    let binary = !body.is_empty() && (body.as_str().is_none() || body.contains(&0));
    if binary {
        write!(out, "printf %s {} | base64 -d | ", shell_quote(&BASE64.encode(body)))?;
    }
    write!(out, "curl -sS")?;
    match req.version {
        HttpVersion::Http10 | HttpVersion::Http09 => write!(out, " --http1.0")?,
        HttpVersion::H2 => write!(out, " --http2")?,
        _ => {}
    }
    let implied = if body.is_empty() { "GET" } else { "POST" };
    if req.method != implied {
        write!(out, " -X {}", shell_quote(&req.method))?;
    }
    let url = req.url();
    for h in &req.headers {
        let name = h.name.to_str_lossy();
        let lower = name.to_ascii_lowercase();
        if name.starts_with(':') || SKIP.contains(&lower.as_str()) {
            continue;
        }
        // Host is implied by the URL unless it differs from it.
        if lower == "host" && h.value.as_str() == Some(req.authority.as_str()) {
            continue;
        }
        let value = h.value.to_str_lossy();
        if value.is_empty() {
            // `-H 'X;'` is curl's way to send an empty header.
            write!(out, " -H {}", shell_quote(&format!("{name};")))?;
        } else {
            write!(out, " -H {}", shell_quote(&format!("{name}: {value}")))?;
        }
    }
    if binary {
        write!(out, " --data-binary @-")?;
    } else if let Some(text) = body.as_str().filter(|t| !t.is_empty()) {
        write!(out, " --data-binary {}", shell_quote(text))?;
    }
    writeln!(out, " {}", shell_quote(&url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::*;

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn renders_method_headers_and_body() {
        let mut headers = Headers::new();
        headers.push("Host", "api.test");
        headers.push("Content-Type", "application/json");
        headers.push("Content-Length", "9");
        let ex = Exchange {
            id: ExchangeId(1),
            connection: ConnectionId(1),
            session: None,
            sequence: 0,
            timing: Timing::default(),
            request: Request {
                message_ns: Vec::new(),
                trailers: Default::default(),
                method: "PUT".into(),
                scheme: "http".into(),
                authority: "api.test".into(),
                target: "/a?b=c".into(),
                version: HttpVersion::Http11,
                headers,
                body: Body::full(&b"{\"x\":\"'\"}"[..]),
            },
            response: None,
            error: Some(ErrorKind::Reset),
            scrub: vec![],
            replay_of: None,
            websocket: None,
        };
        let mut out = Vec::new();
        write_curl(&mut out, &ex).unwrap();
        let text = String::from_utf8(out).unwrap();
        let cmd = text.lines().nth(1).unwrap();
        assert_eq!(
            cmd,
            r#"curl -sS -X 'PUT' -H 'Content-Type: application/json' --data-binary '{"x":"'\''"}' 'http://api.test/a?b=c'"#
        );
    }
}
