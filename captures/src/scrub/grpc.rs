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

use crate::scrub::Pass;

/// True for a gRPC content type over HTTP/2 (`application/grpc`, `+proto`, `+json` …);
/// gRPC-Web, made for HTTP/1.1, is not. The proxy and the replayer choose HTTP/2 by it.
pub fn is_grpc_content_type(content_type: &[u8]) -> bool {
    content_type.len() >= 16
        && content_type[..16].eq_ignore_ascii_case(b"application/grpc")
        && !content_type[16..].get(..4).is_some_and(|w| w.eq_ignore_ascii_case(b"-web"))
}

/// True for a media type (lower case, no parameters) whose body the scrubber reads as
/// gRPC frames: gRPC, and gRPC-Web in its binary form (its text form is base64). The
/// scrubber and the audit decide by it, so they read the same bodies.
pub(crate) fn reads_frames(media: &str) -> bool {
    media.starts_with("application/grpc") && !media.starts_with("application/grpc-web-text")
}

/// Messages nested deeper than this are kept as they are (a bomb of nested lengths).
pub(crate) const MAX_DEPTH: usize = 32;

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
                let (plain, complete) = crate::scrub::body::decode(coding, message).ok_or(Unparsed)?;
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

/// `data` (gRPC frames) with every compressed message decoded and stored with flag 0, as
/// captures store them; `None` when it is not a sequence of whole frames or a message does
/// not decode.
pub fn uncompressed(data: &[u8], encoding: Option<&str>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    while at < data.len() {
        let head = data.get(at..at + 5)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let message = data.get(at + 5..at + 5 + len)?;
        at += 5 + len;
        let (flag, message) = match head[0] {
            1 => match crate::scrub::body::decode(encoding?, message)? {
                (plain, true) => (0, std::borrow::Cow::Owned(plain)),
                _ => return None,
            },
            flag => (flag, std::borrow::Cow::Borrowed(message)),
        };
        out.push(flag);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
    }
    Some(out)
}

/// The messages of `data` (gRPC frames), decompressed; `None` when it is not a sequence of
/// whole frames or a message does not decode. Trailer frames (gRPC-Web) are left out.
pub fn messages(data: &[u8], encoding: Option<&str>) -> Option<Vec<Vec<u8>>> {
    messages_of(data, encoding, false)
}

/// [`messages`], of a body that may be cut (`truncated`): its whole frames.
pub(crate) fn messages_of(data: &[u8], encoding: Option<&str>, truncated: bool) -> Option<Vec<Vec<u8>>> {
    let whole = if truncated { &data[..whole_frames(data)] } else { data };
    let plain = uncompressed(whole, encoding)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < plain.len() {
        let len = u32::from_be_bytes([plain[at + 1], plain[at + 2], plain[at + 3], plain[at + 4]]) as usize;
        if plain[at] & 0x80 == 0 {
            out.push(plain[at + 5..at + 5 + len].to_vec());
        }
        at += 5 + len;
    }
    Some(out)
}

/// The length of the whole frames `data` starts with.
fn whole_frames(data: &[u8]) -> usize {
    let mut at = 0;
    while let Some(head) = data.get(at..at + 5) {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        match at.checked_add(5 + len).filter(|end| *end <= data.len()) {
            Some(end) => at = end,
            None => break,
        }
    }
    at
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
    Ok(rewrite(pass, message, &fields, 0))
}

/// True when `data`, read as a message, holds messages nested at most `levels` deep (a
/// length-delimited value that parses as a message is one level down).
pub(crate) fn nested_within(data: &[u8], levels: usize) -> bool {
    let Some(fields) = parse(data) else { return true };
    fields.iter().filter(|f| f.wire == 2 && !f.value.is_empty()).all(|f| {
        let value = &data[f.value.clone()];
        parse(value).is_none() || (levels > 0 && nested_within(value, levels - 1))
    })
}

/// `data` scrubbed as a message without a schema; `None` when nothing changed or it is
/// not a well-formed message.
pub(crate) fn scrub_raw(pass: &mut Pass<'_>, data: &[u8]) -> Option<Vec<u8>> {
    let fields = parse(data)?;
    rewrite(pass, data, &fields, 0)
}

/// One field of a message: where its value lies and how it is encoded.
pub(crate) struct Field {
    /// The key (tag and wire type) bytes.
    pub(crate) key: std::ops::Range<usize>,
    /// The value bytes (for wire type 2, without the length).
    pub(crate) value: std::ops::Range<usize>,
    pub(crate) wire: u8,
    /// The field's number.
    pub(crate) number: u32,
}

fn varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of `data` if all of it is a well-formed message (field numbers from 1, wire
/// types 0, 1, 2 and 5, lengths inside it); `None` otherwise.
pub(crate) fn parse(data: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let start = at;
        let key = varint(data, &mut at)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 || number > (1 << 29) - 1 {
            return None;
        }
        let key_range = start..at;
        let value = match wire {
            0 => {
                let s = at;
                varint(data, &mut at)?;
                s..at
            }
            1 => {
                at = at.checked_add(8).filter(|e| *e <= data.len())?;
                at - 8..at
            }
            5 => {
                at = at.checked_add(4).filter(|e| *e <= data.len())?;
                at - 4..at
            }
            2 => {
                let len = usize::try_from(varint(data, &mut at)?).ok()?;
                let s = at;
                at = at.checked_add(len).filter(|e| *e <= data.len())?;
                s..at
            }
            _ => return None,
        };
        fields.push(Field { key: key_range, value, wire, number: number as u32 });
    }
    Some(fields)
}

/// `data` (parsed into `fields`) with its length-delimited values scrubbed; `None` when
/// nothing changed.
fn rewrite(pass: &mut Pass<'_>, data: &[u8], fields: &[Field], depth: usize) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for f in fields.iter().filter(|f| f.wire == 2) {
        let value = &data[f.value.clone()];
        let Some(new) = scrub_value(pass, value, depth) else { continue };
        let buf = out.get_or_insert_with(|| Vec::with_capacity(data.len()));
        buf.extend_from_slice(&data[copied..f.key.end]);
        let mut len = new.len() as u64;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            buf.push(if len == 0 { b } else { b | 0x80 });
            if len == 0 {
                break;
            }
        }
        buf.extend_from_slice(&new);
        copied = f.value.end;
    }
    let mut buf = out?;
    buf.extend_from_slice(&data[copied..]);
    Some(buf)
}

/// A length-delimited value: a nested message if it parses as one (its structure is what
/// must survive), else text for the detectors, else bytes kept as they are.
pub(crate) fn scrub_value(pass: &mut Pass<'_>, value: &[u8], depth: usize) -> Option<Vec<u8>> {
    if value.is_empty() {
        return None;
    }
    if depth < MAX_DEPTH {
        if let Some(fields) = parse(value) {
            let walked = rewrite(pass, value, &fields, depth + 1);
            // Printable text can happen to parse as a message (`alice0@example.com` does:
            // tags and lengths made of letters), and read as one its address would never
            // meet the detectors: what is still printable text after the walk meets them
            // as text (a real message's tokens are already scrubbed and change nothing).
            let now = walked.as_deref().unwrap_or(value);
            if let Some(text) = std::str::from_utf8(now).ok().filter(|t| crate::proto::is_printable(t)) {
                if let Some(new) = pass.free_value(None, text) {
                    return Some(new.into_bytes());
                }
            }
            return walked;
        }
    }
    match std::str::from_utf8(value) {
        Ok(text) => pass.free_value(None, text).map(String::into_bytes),
        // Binary, but with something a detector finds (an address beside a stray byte):
        // replaced by its scrubbed text rather than kept.
        Err(_) => pass.detect_text(&String::from_utf8_lossy(value)).map(String::into_bytes),
    }
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
