//! Bodies by content type. Compressed bodies (`gzip`, `deflate`, `br`, `zstd`) are decoded
//! first — never stored raw when they may hold personal data — and kept decoded, with the
//! encoding noted in [`Body::decoded_from`] and `Content-Encoding` removed. Then JSON (and
//! JSON lines) go through the streaming rewriter, urlencoded forms and multipart uploads
//! through their field rules, text through the detectors; anything else, or anything that
//! does not parse, follows the policy's `unparsed` action. `Content-Length` follows the
//! body.

use crate::coding::decode;

use crate::blob::Blob;
use crate::exchange::{Body, Headers};
use crate::scrub::action::Action;
use crate::scrub::{json, xml, PairsOf, Pass};

/// What kind of content a body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    Json,
    Form,
    Multipart,
    Xml,
    GraphQl,
    Csv,
    Text,
    /// gRPC's length-prefixed messages: protobuf, or JSON (`+json`).
    Grpc {
        json: bool,
    },
    Other,
}

fn media_type(headers: &Headers) -> (String, String) {
    let ct = headers.get_str("content-type").unwrap_or("").to_string();
    let mt = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    (mt, ct)
}

fn classify(media: &str, data: &[u8]) -> Content {
    match media {
        "" => {
            let data = data.strip_prefix("\u{feff}".as_bytes()).unwrap_or(data);
            let first = data.iter().find(|b| !b.is_ascii_whitespace());
            if matches!(first, Some(b'{' | b'[')) {
                Content::Json
            } else if std::str::from_utf8(data).is_ok() {
                Content::Text
            } else {
                Content::Other
            }
        }
        m if m == "application/json"
            || m.ends_with("+json")
            || m.ends_with("/json")
            || m.contains("ndjson")
            || m.contains("jsonl") =>
        {
            Content::Json
        }
        "application/x-www-form-urlencoded" => Content::Form,
        "multipart/form-data" => Content::Multipart,
        m if m.ends_with("+xml") || m.ends_with("/xml") => Content::Xml,
        "application/graphql" | "application/graphql+json" => Content::GraphQl,
        "text/csv" | "application/csv" | "text/tab-separated-values" => Content::Csv,
        // gRPC-Web's text form is base64: not read.
        m if crate::wire::reads_frames(m) => Content::Grpc { json: m.ends_with("+json") },
        m if m.starts_with("text/") || m == "application/javascript" => Content::Text,
        _ => Content::Other,
    }
}

/// Scrubs `body` (described by `headers`), fixing `Content-Encoding` and `Content-Length`.
pub(crate) fn scrub(pass: &mut Pass<'_>, headers: &mut Headers, body: &mut Body) {
    if body.data.is_empty() {
        return;
    }
    let original_len = body.data.len();
    if let Some(encoding) = headers.get_str("content-encoding").map(|e| e.trim().to_ascii_lowercase()) {
        if !encoding.is_empty() && encoding != "identity" {
            match decode(&encoding, &body.data) {
                Some((decoded, complete)) => {
                    body.data = Blob::from(decoded);
                    body.truncated |= !complete;
                    body.decoded_from = Some(encoding);
                    headers.remove("content-encoding");
                }
                None => {
                    unparsed(pass, headers, body, "body:undecodable");
                    return;
                }
            }
        }
    }
    let (media, full_type) = media_type(headers);
    let replaced = match classify(&media, &body.data) {
        Content::Json => match json::scrub(pass, &body.data, body.truncated) {
            Ok(new) => new,
            Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
        },
        Content::Form => match std::str::from_utf8(&body.data) {
            // A cut falls inside the last pair: it is dropped, half a value cannot be judged.
            Ok(text) if body.truncated => {
                // The `&` stays, so a second pass finds the same end (scrubbing is idempotent).
                let whole = text.rfind('&').map_or("", |i| &text[..=i]);
                Some(pass.pairs(whole, PairsOf::Form).unwrap_or_else(|| whole.to_string()).into_bytes())
            }
            Ok(text) => pass.pairs(text.trim_end_matches(['\r', '\n']), PairsOf::Form).map(String::into_bytes),
            Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
        },
        Content::Multipart => {
            match boundary(&full_type).and_then(|b| multipart(pass, &body.data, &b, body.truncated)) {
                Some(new) => new,
                None => return unparsed(pass, headers, body, "body:unparsed"),
            }
        }
        Content::Xml => match xml::scrub(pass, &body.data, body.truncated) {
            Ok(new) => new,
            Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
        },
        Content::GraphQl => match std::str::from_utf8(&body.data) {
            Ok(text) => {
                crate::scrub::graphql::scrub(pass, text).or_else(|| pass.detect_text(text)).map(String::into_bytes)
            }
            Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
        },
        Content::Csv => match std::str::from_utf8(&body.data) {
            Ok(text) => csv(pass, text, if media.contains("tab") { '\t' } else { ',' }, body.truncated),
            Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
        },
        Content::Text => match std::str::from_utf8(&body.data) {
            Ok(text) if body.truncated => Some(cut_text(pass, text)),
            Ok(text) => pass.text_body(text.strip_prefix('\u{feff}').unwrap_or(text)).map(|new| {
                if text.starts_with('\u{feff}') {
                    format!("\u{feff}{new}").into_bytes()
                } else {
                    new.into_bytes()
                }
            }),
            // A cut can fall inside a UTF-8 sequence: scrub the valid prefix.
            Err(e) if body.truncated && e.error_len().is_none() => {
                let text = std::str::from_utf8(&body.data[..e.valid_up_to()]).unwrap_or_default();
                Some(cut_text(pass, text))
            }
            Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
        },
        Content::Grpc { json } => {
            let encoding = headers.get_str("grpc-encoding").map(|e| e.trim().to_ascii_lowercase());
            match crate::scrub::grpc::scrub(pass, &body.data, body.truncated, encoding.as_deref(), json) {
                Ok(new) => new,
                Err(_) => return unparsed(pass, headers, body, "body:unparsed"),
            }
        }
        Content::Other => return unparsed(pass, headers, body, "body:unparsed"),
    };
    if let Some(new) = replaced {
        body.data = Blob::from(new);
    }
    if body.data.len() != original_len || body.decoded_from.is_some() {
        fix_length(headers, body);
    }
}

/// A CSV (or TSV) table: the header row names the columns, and each cell gets its
/// column's key rule (`email`, `password`, `dob` …), or the detectors. A cut body loses its
/// last, partial row.
fn csv(pass: &mut Pass<'_>, text: &str, delimiter: char, truncated: bool) -> Option<Vec<u8>> {
    let text = if truncated { text.rfind('\n').map_or("", |i| &text[..=i]) } else { text };
    let mut lines = text.split_inclusive('\n');
    let header_line = lines.next()?;
    let columns: Vec<String> = cells(header_line.trim_end_matches(['\r', '\n']), delimiter)
        .into_iter()
        .map(|c| c.trim_matches('"').to_string())
        .collect();
    let mut out = String::with_capacity(text.len());
    out.push_str(header_line);
    let mut changed = false;
    for line in lines {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let mut row = Vec::new();
        for (i, cell) in cells(body, delimiter).into_iter().enumerate() {
            let quoted = cell.len() >= 2 && cell.starts_with('"') && cell.ends_with('"');
            let value = if quoted { cell[1..cell.len() - 1].replace("\"\"", "\"") } else { cell.to_string() };
            let column = columns.get(i).map(String::as_str);
            let new = match column.and_then(|c| pass.key_rule(c)) {
                Some((action, rule)) => {
                    let action = if action == Action::Drop { Action::Redact } else { action };
                    let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
                    pass.apply(action, &kind, &value, &rule)
                }
                None => pass.free_value(column, &value),
            };
            match new {
                Some(new) => {
                    changed = true;
                    if new.contains([delimiter, '"', '\n']) || quoted {
                        row.push(format!("\"{}\"", new.replace('"', "\"\"")));
                    } else {
                        row.push(new);
                    }
                }
                None => row.push(cell.to_string()),
            }
        }
        out.push_str(&row.join(&delimiter.to_string()));
        out.push_str(ending);
    }
    (changed || out.len() != text.len()).then(|| out.into_bytes())
}

/// The cells of one CSV row, quotes kept (a quoted cell may hold the delimiter).
pub(crate) fn cells(row: &str, delimiter: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in row.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == delimiter && !quoted {
            out.push(&row[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&row[start..]);
    out
}

/// A text body cut at `--max-body`: the word the cut fell in is dropped (half an e-mail
/// address or card number no longer looks like one), the rest scrubbed.
fn cut_text(pass: &mut Pass<'_>, text: &str) -> Vec<u8> {
    // Up to and with the last white space, so a second pass finds the same end.
    let mut end = text.char_indices().rev().find(|(_, c)| c.is_whitespace()).map_or(0, |(i, c)| i + c.len_utf8());
    // A number cut short may span several groups (`4111 1111 1111 11`): drop every
    // trailing word made of number characters only.
    loop {
        let stem = text[..end].trim_end();
        let word_start =
            stem.char_indices().rev().find(|(_, c)| c.is_whitespace()).map_or(0, |(i, c)| i + c.len_utf8());
        let word = &stem[word_start..];
        if word.is_empty() || !word.chars().all(|c| c.is_ascii_digit() || "-.()+/".contains(c)) {
            break;
        }
        end = word_start;
    }
    let whole = &text[..end];
    pass.prose(whole, true).unwrap_or_else(|| whole.to_string()).into_bytes()
}

/// Applies the policy's `unparsed` action to a body it cannot look into.
pub(crate) fn unparsed(pass: &mut Pass<'_>, headers: &mut Headers, body: &mut Body, rule: &str) {
    let action = pass.scrubber.policy.unparsed;
    if action == Action::Keep {
        return;
    }
    pass.hit(rule);
    let text = String::from_utf8_lossy(&body.data).into_owned();
    body.data = match action {
        Action::Hash => Blob::from(pass.scrubber.keyer.apply(Action::Hash, "body", &text).unwrap_or_default()),
        Action::Redact | Action::Mask => Blob::from_static(crate::scrub::action::REDACTED),
        _ => Blob::new(),
    };
    // The original length stays: the body was there, its content is not.
    body.truncated = true;
    if let Some(enc) = headers.get_str("content-encoding").map(str::to_string) {
        headers.remove("content-encoding");
        body.decoded_from.get_or_insert(enc);
    }
}

fn fix_length(headers: &mut Headers, body: &mut Body) {
    if body.truncated {
        return;
    }
    body.len = body.data.len() as u64;
    if headers.get("content-length").is_some() {
        headers.set("content-length", body.data.len().to_string());
    }
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("boundary")).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites a multipart/form-data body part by part, keeping its boundary. File parts
/// follow the `files` action; fields follow the form rules, or the JSON rewriter and the
/// detectors by their content. `None` if the body is not valid multipart.
fn multipart(pass: &mut Pass<'_>, data: &[u8], boundary: &str, truncated: bool) -> Option<Option<Vec<u8>>> {
    if boundary.is_empty() || boundary.len() > 200 {
        return None;
    }
    let delimiter = format!("--{boundary}").into_bytes();
    let start = find(data, &delimiter)?;
    let mut out = data[..start].to_vec();
    let mut rest = &data[start..];
    let mut changed = false;
    loop {
        // `rest` starts at a delimiter.
        let after = &rest[delimiter.len()..];
        if after.starts_with(b"--") {
            out.extend_from_slice(rest);
            return Some(changed.then_some(out));
        }
        let body_start = find(after, b"\r\n\r\n").map(|i| i + 4);
        let next = find(after, &[b"\r\n".as_slice(), &delimiter].concat());
        let (Some(body_start), Some(next)) = (body_start, next) else {
            // The cut fell inside this part: drop it.
            return truncated.then_some(Some(out));
        };
        if body_start > next {
            return None;
        }
        let head = std::str::from_utf8(&after[..body_start]).ok()?;
        let content = &after[body_start..next];
        let disposition =
            head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:")).unwrap_or("");
        let param = |name: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let field = crate::scrub::names::leaf_name(&param("name").unwrap_or_default()).to_ascii_lowercase();
        let part_type = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.trim().to_ascii_lowercase())
            })
            .unwrap_or_default();
        let mut new_head = head.to_string();
        if let Some(filename) = param("filename") {
            if let Some(clean) = pass.detect_text(&filename) {
                new_head = new_head.replace(&filename, &clean);
            }
        }
        let new_content: Option<Vec<u8>> = if param("filename").is_some() {
            let action = pass.scrubber.policy.files;
            let already =
                content.is_empty() || std::str::from_utf8(content).is_ok_and(crate::scrub::action::is_scrubbed);
            match action {
                Action::Keep => None,
                _ if already => None,
                Action::Hash => {
                    pass.hit("multipart:file");
                    Some(
                        pass.scrubber
                            .keyer
                            .apply(Action::Hash, "file", &String::from_utf8_lossy(content))
                            .unwrap_or_default()
                            .into_bytes(),
                    )
                }
                Action::Redact | Action::Mask => {
                    pass.hit("multipart:file");
                    Some(crate::scrub::action::REDACTED.as_bytes().to_vec())
                }
                Action::Drop => {
                    pass.hit("multipart:file");
                    Some(Vec::new())
                }
            }
        } else if let Some((action, rule)) = pass
            .scrubber
            .policy
            .form
            .get(&field)
            .map(|a| (*a, format!("form:{field}")))
            .or_else(|| pass.key_rule(&field))
        {
            let text = String::from_utf8_lossy(content).into_owned();
            pass.apply(action, &field, &text, &rule).map(String::into_bytes)
        } else if classify(part_type.split(';').next().unwrap_or(""), content) == Content::Json {
            json::scrub(pass, content, false).ok()?
        } else {
            match std::str::from_utf8(content) {
                Ok(text) => pass.free_value(Some(&field), text).map(String::into_bytes),
                Err(_) => {
                    pass.hit("multipart:unparsed");
                    Some(Vec::new())
                }
            }
        };
        out.extend_from_slice(&rest[..delimiter.len()]);
        out.extend_from_slice(new_head.as_bytes());
        match new_content {
            Some(c) => {
                changed = true;
                out.extend_from_slice(&c);
            }
            None => out.extend_from_slice(content),
        }
        if new_head != head {
            changed = true;
        }
        out.extend_from_slice(b"\r\n");
        rest = &after[next + 2..];
    }
}
