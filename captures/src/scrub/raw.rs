//! Protobuf messages scrubbed without a schema, by wire type: a length-delimited value
//! that parses as a message is walked as one (and re-encoded with its new length), text
//! meets the detectors, anything else is kept.

use crate::scrub::Pass;
use crate::wire::{parse, Field, MAX_DEPTH};

/// `data` scrubbed as a message without a schema; `None` when nothing changed or it is
/// not a well-formed message.
pub(crate) fn scrub_raw(pass: &mut Pass<'_>, data: &[u8]) -> Option<Vec<u8>> {
    let fields = parse(data)?;
    rewrite(pass, data, &fields, 0)
}

/// `data` (parsed into `fields`) with its length-delimited values scrubbed; `None` when
/// nothing changed.
pub(crate) fn rewrite(pass: &mut Pass<'_>, data: &[u8], fields: &[Field], depth: usize) -> Option<Vec<u8>> {
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
            if let Some(text) = std::str::from_utf8(now).ok().filter(|t| crate::wire::is_printable(t)) {
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
