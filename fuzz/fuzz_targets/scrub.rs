//! The scrubber and the auditor must never panic or hang on any body, header or target,
//! also when the input is a document quoted inside another (JSON in a JSON string, XML,
//! GraphQL, forms, cookies), and scrubbing twice must change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_captures::exchange::{Body, Exchange, Headers, Request};
use tapedeck_captures::scrub::Scrubber;

const TYPES: [&str; 10] = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "",
    "application/x-ndjson",
    "image/png",
    "application/soap+xml",
    "application/graphql",
    "text/xml",
];
const ENCODINGS: [&str; 6] = ["", "gzip", "br", "deflate", "zstd", "gzip, br"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (head, body) = rest.split_at(split);
    let text = String::from_utf8_lossy(head);
    let mut headers = Headers::new();
    let ct = TYPES[usize::from(selector) % TYPES.len()];
    if !ct.is_empty() {
        headers.push("content-type", ct);
    }
    let ce = ENCODINGS[usize::from(selector >> 3) % ENCODINGS.len()];
    if !ce.is_empty() {
        headers.push("content-encoding", ce);
    }
    headers.push("cookie", text.as_ref());
    headers.push("x-note", text.as_ref());
    // Bit 6: the body quoted as a string inside a JSON document (an echoed request).
    let body = if selector & 0x40 != 0 {
        serde_json::json!({ "data": String::from_utf8_lossy(body), "headers": { "Cookie": text.as_ref() } })
            .to_string()
            .into_bytes()
    } else {
        body.to_vec()
    };
    let mut body = Body::full(body);
    body.truncated = selector & 0x80 != 0;
    let mut ex = Exchange {
        request: Request { method: "POST".into(), target: format!("/{text}"), headers, body, ..Default::default() },
        ..Default::default()
    };
    static SCRUBBER: std::sync::OnceLock<Scrubber> = std::sync::OnceLock::new();
    let scrubber = SCRUBBER.get_or_init(|| Scrubber::with_defaults(Some(b"fuzzing scrub key 0123456789")));
    scrubber.scrub(&mut ex);
    let once = ex.clone();
    scrubber.scrub(&mut ex);
    assert_eq!(ex.request.target, once.request.target);
    assert_eq!(ex.request.headers, once.request.headers);
    assert_eq!(ex.request.body.data, once.request.body.data);
    let _ = scrubber.audit(&ex);
});
