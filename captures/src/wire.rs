//! gRPC and protobuf on the wire, without a schema: a gRPC body's length-prefixed frames
//! (compressed or not), and the protobuf wire format read field by field. Shared by the
//! scrubber (which walks messages it has no schema for), the schema-aware reader
//! ([`crate::proto`]) and the tools that show or compare messages.

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
pub fn reads_frames(media: &str) -> bool {
    media.starts_with("application/grpc") && !media.starts_with("application/grpc-web-text")
}

/// Messages nested deeper than this are kept as they are (a bomb of nested lengths).
pub const MAX_DEPTH: usize = 32;

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
            1 => match crate::coding::decode(encoding?, message)? {
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
pub fn messages_of(data: &[u8], encoding: Option<&str>, truncated: bool) -> Option<Vec<Vec<u8>>> {
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

/// True when `data`, read as a message, holds messages nested at most `levels` deep (a
/// length-delimited value that parses as a message is one level down).
pub fn nested_within(data: &[u8], levels: usize) -> bool {
    let Some(fields) = parse(data) else { return true };
    fields.iter().filter(|f| f.wire == 2 && !f.value.is_empty()).all(|f| {
        let value = &data[f.value.clone()];
        parse(value).is_none() || (levels > 0 && nested_within(value, levels - 1))
    })
}

/// One field of a message: where its value lies and how it is encoded.
pub struct Field {
    /// The key (tag and wire type) bytes.
    pub key: std::ops::Range<usize>,
    /// The value bytes (for wire type 2, without the length).
    pub value: std::ops::Range<usize>,
    /// The wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
    pub wire: u8,
    /// The field's number.
    pub number: u32,
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
pub fn parse(data: &[u8]) -> Option<Vec<Field>> {
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

/// Text without control characters (but tabs and line ends).
pub fn is_printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}
