//! gRPC bodies: a sequence of length-prefixed messages (a flag byte, a big-endian u32
//! length, the message), each scrubbed as what it is.
//!
//! A compressed message (flag 1, `grpc-encoding` gzip, deflate or zstd) is decoded, scrubbed
//! and stored uncompressed with flag 0, which gRPC allows whatever `grpc-encoding` says.
//! `+json` messages go through the JSON rewriter. Protobuf messages are walked by wire type
//! without a schema: a length-delimited field that parses as a message is scrubbed as one
//! (and re-encoded with its new length), a UTF-8 one goes through the detectors as a value
//! no rule named, anything else is kept. gRPC-Web's trailer frame (flag 0x80: header lines)
//! goes through the detectors too. A cut body keeps its whole messages. With a schema
//! (`--proto-descriptor`), messages are read by their field names ([`super::protobuf`]).

use crate::scrub::raw;
use crate::scrub::Pass;
use crate::wire::{nested_within, parse, MAX_DEPTH};

/// Why a gRPC body could not be scrubbed.
#[derive(Debug)]
pub(crate) struct Unparsed;

/// Scrubs a gRPC body; `Ok(None)` when nothing changed.
pub(crate) fn scrub(
    pass: &mut Pass<'_>,
    data: &[u8],
    truncated: bool,
    encoding: Option<&str>,
    json: bool,
) -> Result<Option<Vec<u8>>, Unparsed> {
    let mut out = Vec::with_capacity(data.len());
    let mut changed = false;
    let mut at = 0;
    while at < data.len() {
        let Some(head) = data.get(at..at + 5) else {
            // A cut inside a prefix: the partial frame is dropped.
            return if truncated { Ok(Some(out)) } else { Err(Unparsed) };
        };
        let flag = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some(message) = data.get(at + 5..at + 5 + len) else {
            return if truncated { Ok(Some(out)) } else { Err(Unparsed) };
        };
        at += 5 + len;
        let (flag, replaced) = match flag {
            0 => (0, scrub_message(pass, message, json)?),
            1 => {
                let coding = encoding.ok_or(Unparsed)?;
                let (plain, complete) = crate::coding::decode(coding, message).ok_or(Unparsed)?;
                if !complete {
                    return Err(Unparsed);
                }
                // Stored uncompressed: changed either way.
                let new = scrub_message(pass, &plain, json)?.unwrap_or(plain);
                (0, Some(new))
            }
            // gRPC-Web trailers: `grpc-status: 0\r\ngrpc-message: …`.
            0x80 => {
                let text = std::str::from_utf8(message).map_err(|_| Unparsed)?;
                (0x80, pass.detect_text(text).map(String::into_bytes))
            }
            _ => return Err(Unparsed),
        };
        let message = replaced.as_deref().unwrap_or(message);
        changed |= replaced.is_some();
        out.push(flag);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
    }
    Ok(changed.then_some(out))
}

fn scrub_message(pass: &mut Pass<'_>, message: &[u8], json: bool) -> Result<Option<Vec<u8>>, Unparsed> {
    if json {
        return crate::scrub::json::scrub(pass, message, false).map_err(|_| Unparsed);
    }
    if message.is_empty() {
        return Ok(None);
    }
    // Deeper than the walks read (a bomb of nested lengths, an `Any` inside an `Any` …):
    // not scrubbed in part, but as unparsed.
    if !nested_within(message, MAX_DEPTH) {
        return Err(Unparsed);
    }
    if let Some(desc) = pass.proto.clone() {
        match crate::scrub::protobuf::scrub(pass, &desc, message) {
            Ok(out) => return Ok(out),
            // Not the type the schema names (an older or newer schema, another method's
            // message): scrubbed without it, and counted, so `scrub --check` can tell.
            Err(()) => pass.hit("grpc:schema-mismatch"),
        }
    }
    let fields = parse(message).ok_or(Unparsed)?;
    Ok(raw::rewrite(pass, message, &fields, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::Scrubber;

    fn field(number: u64, wire: u8, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |mut v: u64, out: &mut Vec<u8>| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            out.push(if v == 0 { b } else { b | 0x80 });
            if v == 0 {
                break;
            }
        };
        put(number << 3 | u64::from(wire), &mut out);
        if wire == 2 {
            put(value.len() as u64, &mut out);
        }
        out.extend_from_slice(value);
        out
    }

    fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// `{ 1: "…email…", 2: 42, 3: { 1: "…phone…", 2: bytes } }`
    fn customer() -> Vec<u8> {
        let inner = [field(1, 2, b"call +44 20 7946 0958 after six"), field(2, 2, &[0xff, 0x00, 0x10, 0xfe])].concat();
        [field(1, 2, b"jane.doe@example.com"), field(2, 0, &[42]), field(3, 2, &inner), field(4, 5, &[1, 2, 3, 4])]
            .concat()
    }

    fn scrubbed(body: &[u8], truncated: bool, encoding: Option<&str>) -> Vec<u8> {
        let scrubber = Scrubber::with_defaults(Some(b"a key for the grpc tests, 0123456789"));
        let mut pass = Pass::new(&scrubber);
        scrub(&mut pass, body, truncated, encoding, false).unwrap().unwrap_or_else(|| body.to_vec())
    }

    #[test]
    fn strings_in_messages_meet_the_detectors_and_the_structure_survives() {
        let body = [frame(0, &customer()), frame(0, &field(1, 2, b"nothing personal here"))].concat();
        let out = scrubbed(&body, false, None);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("jane.doe") && !text.contains("7946"), "{text}");
        // Two frames, each a well-formed message with the same fields in the same order.
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        let first = parse(&out[5..5 + len]).expect("still a message");
        let numbers: Vec<_> = first.iter().map(|f| (f.wire, out[5 + f.key.start])).collect();
        assert_eq!(numbers.len(), 4);
        let nested = &out[5..5 + len][first[2].value.clone()];
        let inner = parse(nested).expect("the nested message too");
        assert_eq!(&nested[inner[1].value.clone()], &[0xff, 0x00, 0x10, 0xfe], "bytes kept");
        assert_eq!(&out[5 + len..], &frame(0, &field(1, 2, b"nothing personal here"))[..]);
        // Scrubbing again changes nothing.
        assert_eq!(scrubbed(&out, false, None), out);
    }

    #[test]
    fn compressed_messages_are_stored_decoded_and_cut_bodies_keep_whole_messages() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&customer()).unwrap();
        let body = frame(1, &gz.finish().unwrap());
        let out = scrubbed(&body, false, Some("gzip"));
        assert_eq!(out[0], 0, "stored uncompressed");
        assert!(parse(&out[5..]).is_some());
        assert!(!String::from_utf8_lossy(&out).contains("jane.doe"));

        let two = [frame(0, &customer()), frame(0, &customer())].concat();
        let cut = &two[..two.len() - 7];
        let out = scrubbed(cut, true, None);
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(out.len(), 5 + len, "the cut message is dropped, the whole one kept");
    }

    #[test]
    fn text_that_happens_to_parse_as_a_message_meets_the_detectors() {
        // `alice0@example.com` reads as two fixed64 fields (field 12); an SSN as varints.
        for text in [&b"alice0@example.com"[..], b"078-05-1120"] {
            assert!(parse(text).is_some(), "{}", String::from_utf8_lossy(text));
            let body = frame(0, &[field(1, 2, b"id-7"), field(2, 2, text)].concat());
            let out = scrubbed(&body, false, None);
            assert!(!out.windows(text.len()).any(|w| w == text), "{}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn what_is_not_grpc_is_unparsed() {
        let scrubber = Scrubber::with_defaults(None);
        let mut pass = Pass::new(&scrubber);
        assert!(scrub(&mut pass, b"{\"not\": \"grpc\"}", false, None, false).is_err());
        assert!(scrub(&mut pass, &frame(1, b"xx"), false, None, false).is_err(), "compressed, no encoding");
        assert!(scrub(&mut pass, &frame(0, &[0x0f, 0x01]), false, None, false).is_err(), "wire type 7");
        // A length that claims more than there is.
        assert!(parse(&[0x0a, 0xff, 0xff, 0xff, 0x0f]).is_none());
    }
}

#[cfg(test)]
mod web_text_tests {
    use crate::exchange::{Body, Exchange, Headers, Request};
    use crate::scrub::Scrubber;

    #[test]
    fn grpc_web_text_bodies_which_are_base64_keep_nothing_readable() {
        use base64::Engine as _;
        let message = [&[0x0a, 20][..], b"jane.doe@example.com"].concat();
        let frame = [&[0][..], &(message.len() as u32).to_be_bytes(), &message].concat();
        let body = base64::engine::general_purpose::STANDARD.encode(frame);
        let mut h = Headers::new();
        h.push("content-type", "application/grpc-web-text");
        let mut ex = Exchange {
            request: Request {
                method: "POST".into(),
                target: "/shop.Orders/Get".into(),
                headers: h,
                body: Body::full(body.clone().into_bytes()),
                ..Default::default()
            },
            ..Default::default()
        };
        let scrubber = Scrubber::with_defaults(None);
        scrubber.scrub(&mut ex);
        let stored = String::from_utf8_lossy(&ex.request.body.data).into_owned();
        assert_ne!(stored, body, "not stored as it came");
        let decoded = base64::engine::general_purpose::STANDARD.decode(stored.trim()).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&decoded).contains("jane.doe"), "{stored}");
        assert!(scrubber.audit(&ex).is_empty(), "{:?}", scrubber.audit(&ex));
    }
}
