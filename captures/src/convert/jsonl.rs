//! JSON lines: one [`Exchange`] per line, in the shape `tapedeck cat --format json` prints
//! (bodies as text, or `{"base64": …}` when they are not UTF-8). Lossless both ways.

use std::io::{self, BufRead, Write};

use crate::convert::{ConvertError, ImportReport};
use crate::exchange::Exchange;

/// Writes one exchange as a JSON line.
pub fn write_exchange(out: &mut impl Write, ex: &Exchange) -> io::Result<()> {
    // `From` keeps an I/O error as it was (a closed pipe stays `BrokenPipe`).
    serde_json::to_writer(&mut *out, ex).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Writes one exchange as a JSON line, with the messages of its gRPC bodies decoded beside
/// them (`body.messages`, see [`crate::proto::messages_json`]).
pub fn write_exchange_with_messages(
    out: &mut impl Write,
    ex: &Exchange,
    schema: Option<&crate::proto::ProtoSchema>,
) -> io::Result<()> {
    use crate::proto::{messages_json, Side};
    let path = ex.request.path();
    let request = messages_json(schema, path, Side::Request, &ex.request.headers, &ex.request.body);
    let response = ex.response.as_ref().and_then(|r| messages_json(schema, path, Side::Response, &r.headers, &r.body));
    if request.is_none() && response.is_none() {
        return write_exchange(out, ex);
    }
    let mut value = serde_json::to_value(ex).map_err(io::Error::from)?;
    for (side, messages) in [("request", request), ("response", response)] {
        if let (Some(messages), Some(body)) = (messages, value.pointer_mut(&format!("/{side}/body"))) {
            if let Some(body) = body.as_object_mut() {
                body.insert("messages".into(), serde_json::Value::Array(messages));
            }
        }
    }
    serde_json::to_writer(&mut *out, &value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Imports JSON lines; blank lines are ignored and a line that is not an exchange is
/// skipped with a warning naming its line number.
pub fn import(
    src: impl BufRead,
    sink: &mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
) -> Result<ImportReport, ConvertError> {
    let mut report = ImportReport::default();
    let mut lines = 0u64;
    for (i, line) in src.split(b'\n').enumerate() {
        let line = line.map_err(ConvertError::Io)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        match serde_json::from_slice::<Exchange>(&line) {
            Ok(ex) => {
                sink(ex)?;
                report.imported += 1;
            }
            Err(e) => report.skip(format!("line {}: not a tapedeck exchange: {e}; skipped", i + 1)),
        }
    }
    if lines > 0 && report.imported == 0 {
        return Err(ConvertError::Format(format!(
            "no line is a tapedeck exchange; first problem: {}",
            report.warnings.first().map_or("", String::as_str)
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Body, Headers, Request, Response};

    #[test]
    fn grpc_messages_are_shown_beside_bodies_and_imports_ignore_them() {
        let mut h = Headers::new();
        h.push("content-type", "application/grpc+proto");
        // Field 1: "A-7"; then a frame that is not a message.
        let body = [&[0, 0, 0, 0, 5, 0x0a, 3, b'A', b'-', b'7'][..], &[0, 0, 0, 0, 2, 0xff, 0xff]].concat();
        let ex = Exchange {
            request: Request {
                method: "POST".into(),
                target: "/shop.Orders/Get".into(),
                headers: h.clone(),
                body: Body::full(body),
                ..Default::default()
            },
            response: Some(Response { status: 200, headers: h, ..Default::default() }),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_exchange_with_messages(&mut out, &ex, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["request"]["body"]["messages"], serde_json::json!([{"1": "A-7"}, {"base64": "//8="}]));
        assert!(v["response"]["body"].get("messages").is_none(), "an empty body shows none: {v}");
        let mut back = Vec::new();
        import(&out[..], &mut |e| {
            back.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, vec![ex]);
    }
}
