//! GraphQL documents (`application/graphql` bodies, and the `query` member of a JSON
//! request): inline argument literals get the key rules by argument name
//! (`user(email: "…", ssn: "…")`), every other string literal and comment the detectors.
//! `variables` are JSON and go through the JSON rewriter with the rest of the body.
//!
//! A lexer, not a parser: it copies the document byte for byte and rewrites only the
//! literals it changes (as plain GraphQL strings), so the query keeps its shape. It is
//! small and exact where it matters; a GraphQL parser crate would rebuild the text.

use crate::scrub::action::Action;
use crate::scrub::json_string::{decode_string, write_json_string};
use crate::scrub::Pass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Name,
    Number,
    /// A string literal; `true` for a block string (`"""…"""`).
    String(bool),
    Comment,
    Punct(u8),
}

/// Splits `text` into significant tokens with their byte ranges; `None` if it is not
/// GraphQL (an unterminated string, a character GraphQL has no use for).
fn lex(text: &str) -> Option<Vec<(Token, usize, usize)>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let token = match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                Token::Comment
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                loop {
                    if i + 3 > b.len() {
                        return None;
                    }
                    if b[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                    } else if b[i..].starts_with(b"\"\"\"") {
                        i += 3;
                        break;
                    } else {
                        i += 1;
                    }
                }
                Token::String(true)
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i)? {
                        b'"' => break,
                        b'\\' => i += 2,
                        b'\n' | b'\r' => return None,
                        _ => i += 1,
                    }
                }
                i += 1;
                Token::String(false)
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                Token::Name
            }
            c if c == b'-' || c.is_ascii_digit() => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'+' | b'-')) {
                    i += 1;
                }
                Token::Number
            }
            b'.' if b[i..].starts_with(b"...") => {
                i += 3;
                Token::Punct(b'.')
            }
            c @ (b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'}' | b'|') => {
                i += 1;
                Token::Punct(c)
            }
            0xEF if b[i..].starts_with("\u{feff}".as_bytes()) => {
                i += 3;
                continue;
            }
            _ => return None,
        };
        out.push((token, start, i));
    }
    Some(out)
}

/// True when `text` is a GraphQL executable document: it lexes, and starts with an
/// operation keyword, `fragment`, or a selection set `{ field …`.
pub fn looks_like(text: &str) -> bool {
    // Comments may come first (GraphiQL's default document starts with some).
    let mut t = text.trim_start();
    while let Some(rest) = t.strip_prefix('#') {
        t = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
    }
    let keyword = ["query", "mutation", "subscription", "fragment", "{"].iter().any(|k| t.starts_with(k));
    if !keyword || t.len() > 1 << 20 {
        return false;
    }
    let Some(tokens) = lex(t) else { return false };
    // Operations and fragments have selection sets, balanced.
    let mut depth = 0i32;
    for (token, ..) in &tokens {
        match token {
            Token::Punct(b'{') => depth += 1,
            Token::Punct(b'}') => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    if depth != 0 || !tokens.iter().any(|t| t.0 == Token::Punct(b'{')) {
        return false;
    }
    let significant: Vec<_> = tokens.iter().filter(|t| t.0 != Token::Comment).take(2).collect();
    match significant.as_slice() {
        [(Token::Punct(b'{'), ..), (Token::Name, ..)] => true,
        [(Token::Name, s, e), ..] => matches!(&t[*s..*e], "query" | "mutation" | "subscription" | "fragment"),
        _ => false,
    }
}

/// The text of a string token.
fn literal_text(raw: &str, block: bool) -> Option<String> {
    if block {
        Some(raw[3..raw.len() - 3].replace("\\\"\"\"", "\"\"\""))
    } else {
        decode_string(&raw.as_bytes()[1..raw.len() - 1])
    }
}

/// The tokens of `text`, each with the argument, variable or input field it belongs to
/// (the name before the last `:`, until a bracket closes it); `None` if it does not lex.
#[allow(clippy::type_complexity)]
fn keyed(text: &str) -> Option<Vec<(Option<&str>, Token, usize, usize)>> {
    let mut key: Option<&str> = None;
    let mut previous: Option<(Token, usize, usize)> = None;
    let mut out = Vec::new();
    for (token, start, end) in lex(text)? {
        match token {
            Token::Punct(b':') => key = previous.filter(|p| p.0 == Token::Name).map(|p| &text[p.1..p.2]),
            Token::Punct(b'(' | b')' | b'{' | b'}') => key = None,
            _ => {}
        }
        if token != Token::Comment {
            previous = Some((token, start, end));
        }
        out.push((key, token, start, end));
    }
    Some(out)
}

/// Every string literal, numeric argument and comment of a document, with the name it is
/// under: what an auditor checks.
pub fn literals(text: &str) -> Vec<(Option<String>, String)> {
    let Some(tokens) = keyed(text) else { return vec![(None, text.to_string())] };
    tokens
        .into_iter()
        .filter_map(|(key, token, start, end)| {
            let raw = &text[start..end];
            let value = match token {
                Token::String(block) => literal_text(raw, block).unwrap_or_else(|| raw.to_string()),
                Token::Number if key.is_some() => raw.to_string(),
                Token::Comment => raw.to_string(),
                _ => return None,
            };
            Some((key.filter(|_| token != Token::Comment).map(str::to_string), value))
        })
        .collect()
}

/// The argument each variable is passed as, where the names differ:
/// `login(password: $p)` gives `p` → `password`.
pub(crate) fn variable_arguments(text: &str) -> rustc_hash::FxHashMap<String, String> {
    let mut out = rustc_hash::FxHashMap::default();
    let Some(tokens) = keyed(text) else { return out };
    for pair in tokens.windows(2) {
        if let [(Some(arg), Token::Punct(b'$'), ..), (_, Token::Name, s, e)] = pair {
            let var = &text[*s..*e];
            if var != *arg {
                out.insert(var.to_string(), arg.to_string());
            }
        }
    }
    out
}

/// Scrubs a GraphQL document; `None` when nothing changed (or it does not lex).
pub(crate) fn scrub(pass: &mut Pass<'_>, text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut changed = false;
    for (key, token, start, end) in keyed(text)? {
        let raw = &text[start..end];
        let replacement = match token {
            Token::Comment => pass.detect_text(raw),
            Token::String(block) => {
                // A literal with a bad escape still meets the rules, as written.
                let value = literal_text(raw, block).unwrap_or_else(|| raw.to_string());
                literal(pass, key, &value)
            }
            Token::Number if key.is_some() => literal(pass, key, raw),
            _ => None,
        };
        if let Some(new) = replacement {
            out.push_str(&text[last..start]);
            if token == Token::Comment {
                out.push_str(&new.replace(['\n', '\r'], " "));
            } else {
                let mut buf = Vec::with_capacity(new.len() + 2);
                write_json_string(&mut buf, &new);
                out.push_str(&String::from_utf8_lossy(&buf));
            }
            last = end;
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// A literal under `key`: the key rules, else what its name says and the detectors.
fn literal(pass: &mut Pass<'_>, key: Option<&str>, value: &str) -> Option<String> {
    if let Some((action, rule)) = key.and_then(|k| pass.key_rule(k)) {
        // A dropped argument would leave the query invalid: it is emptied instead.
        let action = if action == Action::Drop { Action::Redact } else { action };
        let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
        return pass.apply(action, &kind, value, &rule);
    }
    pass.free_value(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_and_recognises_documents() {
        assert!(looks_like("query Q($id: ID!) { user(id: $id) { name } }"));
        assert!(looks_like("{ user(email: \"a@b.co\") { id } }"));
        assert!(looks_like("mutation { a }"));
        assert!(looks_like("# Write your query\n# here\nmutation { login(password: \"x\") { ok } }"));
        assert!(!looks_like("{\"a\": 1}"));
        assert!(!looks_like("query about the weather"));
        assert!(!looks_like("queryX(\"unterminated) {"));
        let t = lex(r#"a(b: "x\"y", c: """bl"ock""", d: -1.5e3) # note"#).unwrap();
        let kinds: Vec<_> = t.iter().map(|t| t.0).collect();
        assert_eq!(
            kinds,
            vec![
                Token::Name,
                Token::Punct(b'('),
                Token::Name,
                Token::Punct(b':'),
                Token::String(false),
                Token::Name,
                Token::Punct(b':'),
                Token::String(true),
                Token::Name,
                Token::Punct(b':'),
                Token::Number,
                Token::Punct(b')'),
                Token::Comment
            ]
        );
    }
}
