//! Decoded views of a text, so the detectors see through encodings: percent-encoding
//! (`jane%40example.com`, also doubly encoded, and with `+` for space as in forms), HTML
//! and XML character references (`&#64;`, `&commat;`), and backslash escapes (`\u0040`,
//! `\x40`). A [`View`] keeps, for every decoded byte, where it came from in the raw text,
//! so a finding in the decoded text is removed from the raw text in its original
//! encoding, and its replacement is written in that encoding too.

use memchr::memchr;

/// An encoding the detectors look through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `%XX` (repeatedly, for doubly encoded text); `+` stays `+`.
    Percent,
    /// `%XX` and `+` for a space, as in `application/x-www-form-urlencoded`.
    Form,
    /// `&#64;`, `&#x40;`, `&amp;` and the common named references.
    Html,
    /// `\uXXXX` (with surrogate pairs), `\xXX` and the one-letter escapes.
    Escapes,
}

impl Encoding {
    /// Every encoding, in the order they are tried.
    pub const ALL: [Encoding; 4] = [Encoding::Percent, Encoding::Form, Encoding::Html, Encoding::Escapes];

    /// True when `text` may hold this encoding (a cheap look for its marker).
    pub fn may_apply(self, text: &str) -> bool {
        let b = text.as_bytes();
        match self {
            Encoding::Percent => memchr(b'%', b).is_some(),
            Encoding::Form => memchr(b'%', b).is_some() && memchr(b'+', b).is_some(),
            Encoding::Html => memchr(b'&', b).is_some_and(|i| b[i..].contains(&b';')),
            Encoding::Escapes => memchr(b'\\', b).is_some(),
        }
    }
}

/// `text` decoded, with the raw offset of every decoded byte.
#[derive(Debug)]
pub struct View {
    /// The decoded text (invalid UTF-8 from percent-decoding becomes `?`).
    pub text: String,
    /// `map[i]`: where decoded byte `i` starts in the raw text; one extra entry for the end.
    map: Vec<usize>,
    encoding: Encoding,
}

impl View {
    /// The raw byte range that decoded `start..end` came from.
    pub fn raw_span(&self, start: usize, end: usize) -> (usize, usize) {
        (self.map[start], self.map[end])
    }

    /// `replacement` written in this view's encoding.
    pub fn encode(&self, replacement: &str) -> String {
        match self.encoding {
            Encoding::Percent | Encoding::Form => {
                let mut out = String::with_capacity(replacement.len());
                for b in replacement.bytes() {
                    match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                            out.push(b as char)
                        }
                        b' ' if self.encoding == Encoding::Form => out.push('+'),
                        _ => out.push_str(&format!("%{b:02X}")),
                    }
                }
                out
            }
            Encoding::Html => replacement
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
            Encoding::Escapes => replacement.replace('\\', "\\\\").replace('"', "\\\""),
        }
    }
}

/// Decodes `text` as `encoding`; `None` when nothing in it is encoded that way.
pub fn view(text: &str, encoding: Encoding) -> Option<View> {
    if !encoding.may_apply(text) {
        return None;
    }
    let (bytes, map) = match encoding {
        Encoding::Percent | Encoding::Form => {
            let plus = encoding == Encoding::Form;
            let (mut bytes, mut map) = percent(text.as_bytes(), plus)?;
            // Doubly (or triply) encoded text: `%2540` → `%40` → `@`.
            for _ in 0..2 {
                let Some((again, inner)) = percent(&bytes, false) else { break };
                map = inner.iter().map(|i| map[*i]).collect();
                bytes = again;
            }
            (bytes, map)
        }
        Encoding::Html => html(text)?,
        Encoding::Escapes => escapes(text)?,
    };
    let (text, map) = to_text(bytes, map);
    Some(View { text, map, encoding })
}

/// Bytes to text, one `?` per byte of an invalid sequence so the map stays aligned.
fn to_text(bytes: Vec<u8>, map: Vec<usize>) -> (String, Vec<usize>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, map),
        Err(e) => {
            let bytes = e.into_bytes();
            let mut out = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                out.extend(std::iter::repeat_n('?', chunk.invalid().len()));
            }
            (out, map)
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes; `None` if nothing was encoded.
fn percent(raw: &[u8], plus: bool) -> Option<(Vec<u8>, Vec<usize>)> {
    let mut out = Vec::with_capacity(raw.len());
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    let mut changed = false;
    while i < raw.len() {
        map.push(i);
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    changed = true;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => {
                out.push(b' ');
                changed = true;
            }
            b => out.push(b),
        }
        i += 1;
    }
    map.push(raw.len());
    changed.then_some((out, map))
}

/// Named references worth knowing: the XML five and what hides e-mails and phones.
const NAMED: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", ' '),
    ("commat", '@'),
    ("period", '.'),
    ("plus", '+'),
    ("hyphen", '-'),
    ("dash", '-'),
    ("lpar", '('),
    ("rpar", ')'),
    ("num", '#'),
    ("sol", '/'),
    ("colon", ':'),
    ("lowbar", '_'),
];

fn push_char(out: &mut Vec<u8>, map: &mut Vec<usize>, c: char, at: usize) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push(b);
        map.push(at);
    }
}

/// Decodes character references; `None` if there were none.
fn html(text: &str) -> Option<(Vec<u8>, Vec<usize>)> {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    let mut changed = false;
    while i < raw.len() {
        if raw[i] == b'&' {
            if let Some(end) = raw[i + 1..].iter().take(12).position(|b| *b == b';').map(|p| i + 1 + p) {
                let name = &text[i + 1..end];
                let c = if let Some(num) = name.strip_prefix('#') {
                    match num.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok(),
                        None => num.parse::<u32>().ok(),
                    }
                    .and_then(char::from_u32)
                } else {
                    NAMED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
                };
                if let Some(c) = c {
                    push_char(&mut out, &mut map, c, i);
                    i = end + 1;
                    changed = true;
                    continue;
                }
            }
        }
        out.push(raw[i]);
        map.push(i);
        i += 1;
    }
    map.push(raw.len());
    changed.then_some((out, map))
}

/// Decodes backslash escapes; `None` if there were none.
fn escapes(text: &str) -> Option<(Vec<u8>, Vec<usize>)> {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    let mut changed = false;
    let unit = |at: usize| -> Option<u32> {
        let h = raw.get(at..at + 4)?;
        h.iter().try_fold(0u32, |acc, b| Some(acc << 4 | u32::from(hex(*b)?)))
    };
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            let decoded: Option<(char, usize)> = match raw[i + 1] {
                b'u' => unit(i + 2).and_then(|u| {
                    if (0xD800..0xDC00).contains(&u) && raw.get(i + 6..i + 8) == Some(b"\\u") {
                        let low = unit(i + 8).filter(|l| (0xDC00..0xE000).contains(l))?;
                        char::from_u32(0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)).map(|c| (c, 12))
                    } else {
                        char::from_u32(u).map(|c| (c, 6))
                    }
                }),
                b'x' => match (raw.get(i + 2).and_then(|b| hex(*b)), raw.get(i + 3).and_then(|b| hex(*b))) {
                    (Some(h), Some(l)) => char::from_u32(u32::from(h << 4 | l)).map(|c| (c, 4)),
                    _ => None,
                },
                b'n' => Some(('\n', 2)),
                b't' => Some(('\t', 2)),
                b'r' => Some(('\r', 2)),
                b'"' => Some(('"', 2)),
                b'\'' => Some(('\'', 2)),
                b'/' => Some(('/', 2)),
                b'\\' => Some(('\\', 2)),
                _ => None,
            };
            if let Some((c, len)) = decoded {
                push_char(&mut out, &mut map, c, i);
                i += len;
                changed = true;
                continue;
            }
        }
        out.push(raw[i]);
        map.push(i);
        i += 1;
    }
    map.push(raw.len());
    changed.then_some((out, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str, encoding: Encoding, find: &str, replacement: &str) -> String {
        let v = view(text, encoding).expect("decodes");
        let start = v.text.find(find).unwrap_or_else(|| panic!("{find:?} not in {:?}", v.text));
        let (rs, re) = v.raw_span(start, start + find.len());
        format!("{}{}{}", &text[..rs], v.encode(replacement), &text[re..])
    }

    #[test]
    fn findings_map_back_to_the_raw_text() {
        assert_eq!(
            round("to=jane%40example.com&x=1", Encoding::Percent, "jane@example.com", "tok_email_1"),
            "to=tok_email_1&x=1"
        );
        assert_eq!(round("a%252540b.com", Encoding::Percent, "a@b.com", "[R]"), "%5BR%5D");
        assert_eq!(
            round("call+%2B1+415+555+2671", Encoding::Form, "+1 415 555 2671", "+* *** 2671"),
            "call+%2B*+***+2671"
        );
        assert_eq!(round("mail jane&#64;example&period;com!", Encoding::Html, "jane@example.com", "x"), "mail x!");
        assert_eq!(round(r"e \u006aane\u0040x.io", Encoding::Escapes, "jane@x.io", "t"), "e t");
        assert_eq!(round("é%C3%A9 jane%40x.io", Encoding::Percent, "jane@x.io", "t"), "é%C3%A9 t");
    }

    #[test]
    fn nothing_encoded_means_no_view_and_bad_input_never_panics() {
        assert!(view("plain text", Encoding::Percent).is_none());
        assert!(view("100% sure", Encoding::Percent).is_none());
        assert!(view("a & b; c", Encoding::Html).is_none());
        for s in ["%", "%%", "%F", "%FF%FE", "&#;", "&#x110000;", "\\", "\\u12", "\\ud800\\u0041", "&#99999999999;"] {
            for e in Encoding::ALL {
                if let Some(v) = view(s, e) {
                    assert_eq!(v.map.len(), v.text.len() + 1, "{s:?} {e:?}");
                }
            }
        }
    }
}
