//! XML bodies (`application/xml`, `text/xml`, `…+xml`, SOAP envelopes), read with a
//! streaming reader (`quick-xml`) and copied byte for byte except what is scrubbed.
//!
//! Element and attribute names get the key rules (`<password>`, `<ssn>`, `card="…"`;
//! namespace prefixes ignored), and a rule on an element covers the text of everything
//! inside it (`<address><street>…`). A `<name>` inside a person's element (`<customer>`,
//! `<user>` …) is a person's name. Other text, CDATA, attribute values and comments meet
//! the detectors and the embedded-document parsing. The output is well-formed with the
//! same structure: replaced text is escaped, a replaced tag is rewritten with its
//! attributes in order.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::scrub::action::Action;
use crate::scrub::names::{is_pair_name_key, is_pair_value_key, is_person_name_key, is_person_parent};
use crate::scrub::policy::normalize_key;
use crate::scrub::Pass;

/// Deepest element nesting accepted (deeper is refused, as JSON's depth bombs are).
pub const MAX_DEPTH: usize = 256;

/// Why a body is not XML this rewriter accepts.
#[derive(Debug, PartialEq, Eq)]
pub struct XmlError;

struct Element {
    /// The rule its name selects, if any.
    rule: Option<(Action, String)>,
    /// Its name, normalised.
    name: String,
    /// In a name/value pair (`<member><name>password</name><value>…`), the rule the
    /// name child gave the value child.
    pair: Option<(Action, String)>,
}

/// Rewrites an XML document; `Ok(None)` when nothing changed. A truncated body is kept up
/// to the last complete piece (a cut element or text is dropped).
pub(crate) fn scrub(pass: &mut Pass<'_>, input: &[u8], truncated: bool) -> Result<Option<Vec<u8>>, XmlError> {
    let text = match std::str::from_utf8(input) {
        Ok(t) => t,
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&input[..e.valid_up_to()]).map_err(|_| XmlError)?
        }
        Err(_) => return Err(XmlError),
    };
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut out = String::with_capacity(text.len());
    // Everything before `copied` is in `out`.
    let mut copied = 0;
    let mut stack: Vec<Element> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let mut changed = false;
    let mut seen_element = false;
    loop {
        let start = reader.buffer_position() as usize;
        let event = reader.read_event();
        let end = reader.buffer_position() as usize;
        let event = match event {
            Ok(e) => e,
            Err(_) if truncated && seen_element => {
                // The cut fell inside this piece: keep what came before it.
                if let Some((s, e)) = run.take() {
                    text_run(pass, text, s, e, &stack, &mut out, &mut copied);
                }
                out.push_str(&text[copied..start.min(text.len())]);
                return Ok(Some(out.into_bytes()));
            }
            Err(_) => return Err(XmlError),
        };
        if matches!(event, Event::Text(_) | Event::GeneralRef(_)) {
            run = Some((run.map_or(start, |r| r.0), end));
            continue;
        }
        // The text a cut ends in is dropped whole: half a value cannot be judged.
        if matches!(event, Event::Eof) && truncated && seen_element {
            if let Some((s, _)) = run.take() {
                out.push_str(&text[copied..s]);
                copied = text.len();
                changed = true;
            }
        }
        if let Some((s, e)) = run.take() {
            // `<name>password</name>` inside a pair: the sibling `<value>` takes its rule.
            if stack.len() >= 2 && stack.last().is_some_and(|el| is_pair_name_key(&el.name)) {
                let named = quick_xml::escape::unescape(&text[s..e]).map(|v| v.trim().to_string()).unwrap_or_default();
                if named.len() <= 64 {
                    let rule = pass.key_rule(&named);
                    let parent = stack.len() - 2;
                    stack[parent].pair = rule;
                }
            }
            changed |= text_run(pass, text, s, e, &stack, &mut out, &mut copied);
        }
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::CData(c) => {
                let value = String::from_utf8_lossy(&c).into_owned();
                if let Some(new) = text_value(pass, &value, &stack) {
                    out.push_str(&text[copied..start]);
                    out.push_str("<![CDATA[");
                    out.push_str(&new.replace("]]>", "]]&gt;"));
                    out.push_str("]]>");
                    copied = end;
                    changed = true;
                }
                continue;
            }
            Event::Comment(c) => {
                let value = String::from_utf8_lossy(&c).into_owned();
                if let Some(new) = pass.detect_text(&value) {
                    out.push_str(&text[copied..start]);
                    out.push_str("<!--");
                    let mut safe = new;
                    while safe.contains("--") {
                        safe = safe.replace("--", "- -");
                    }
                    if safe.ends_with('-') {
                        safe.push(' ');
                    }
                    out.push_str(&safe);
                    out.push_str("-->");
                    copied = end;
                    changed = true;
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        seen_element = true;
        let name = normalize_key(&String::from_utf8_lossy(e.local_name().as_ref()));
        let person = is_person_name_key(&name) && stack.last().is_some_and(|p| is_person_parent(&p.name));
        // `<field name="password">…</field>`, `<param name="ssn">`: the attribute names it.
        let named = || {
            e.attributes().with_checks(false).flatten().find_map(|a| {
                let key = normalize_key(&String::from_utf8_lossy(a.key.local_name().as_ref()));
                is_pair_name_key(&key).then(|| String::from_utf8_lossy(&a.value).into_owned())
            })
        };
        let rule = match pass.key_rule(&name) {
            Some(rule) => Some(rule),
            None => match named() {
                Some(n) => pass.key_rule(&n),
                None => None,
            },
        }
        .or_else(|| person.then(|| (Action::Hash, "xml-person:name".to_string())))
        .or_else(|| {
            // The value of a name/value pair whose name has a rule.
            is_pair_value_key(&name).then(|| stack.last().and_then(|p| p.pair.clone())).flatten()
        });
        if let Some(tag) = tag(pass, &e, rule.as_ref(), &stack, empty) {
            out.push_str(&text[copied..start]);
            out.push_str(&tag);
            copied = end;
            changed = true;
        }
        if !empty {
            if stack.len() >= MAX_DEPTH {
                return Err(XmlError);
            }
            stack.push(Element { rule, name, pair: None });
        }
    }
    if !seen_element {
        return Err(XmlError);
    }
    if !changed {
        return Ok(None);
    }
    out.push_str(&text[copied..]);
    Ok(Some(out.into_bytes()))
}

/// Text between tags (`start..end`, raw): unescaped, scrubbed, escaped back.
fn text_run(
    pass: &mut Pass<'_>,
    text: &str,
    start: usize,
    end: usize,
    stack: &[Element],
    out: &mut String,
    copied: &mut usize,
) -> bool {
    let raw = &text[start..end];
    if raw.trim().is_empty() {
        return false;
    }
    let value = quick_xml::escape::unescape(raw).map(|v| v.into_owned()).unwrap_or_else(|_| raw.to_string());
    let Some(new) = text_value(pass, &value, stack) else { return false };
    out.push_str(&text[*copied..start]);
    out.push_str(&quick_xml::escape::partial_escape(new.as_str()));
    *copied = end;
    true
}

/// The text of an element: the innermost rule around it, else the name it sits under.
fn text_value(pass: &mut Pass<'_>, value: &str, stack: &[Element]) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return None;
    }
    if let Some((action, rule)) = stack.iter().rev().find_map(|e| e.rule.as_ref()) {
        let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
        let new = match action {
            Action::Drop => {
                pass.hit(rule);
                Some(String::new())
            }
            action => pass.apply(*action, &kind, trimmed, rule),
        }?;
        // Keep the white space around the value (pretty-printed documents).
        let lead = &value[..value.len() - value.trim_start().len()];
        let trail = &value[value.trim_end().len()..];
        return Some(format!("{lead}{new}{trail}"));
    }
    pass.free_value(stack.last().map(|e| e.name.as_str()), value)
}

/// A start tag with its attributes scrubbed; `None` when none changed.
fn tag(
    pass: &mut Pass<'_>,
    e: &BytesStart<'_>,
    own: Option<&(Action, String)>,
    stack: &[Element],
    empty: bool,
) -> Option<String> {
    let mut attributes = Vec::new();
    let mut changed = false;
    for attribute in e.attributes().with_checks(false) {
        // A malformed attribute ends the list: the tag is rewritten without it (and
        // without what follows), never left as it was.
        let Ok(attribute) = attribute else {
            changed = true;
            break;
        };
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let raw_value = String::from_utf8_lossy(&attribute.value).into_owned();
        let value = quick_xml::escape::unescape(&raw_value).map(|v| v.into_owned()).unwrap_or(raw_value.clone());
        let local = key.rsplit(':').next().unwrap_or(&key);
        let naming = is_pair_name_key(&normalize_key(local));
        let new = if key.starts_with("xmlns") {
            None
        } else if naming {
            // The attribute that names the element (`name="password"`) stays readable.
            pass.free_value(None, &value)
        } else if let Some((action, rule)) = pass.key_rule(local).or_else(|| {
            // An attribute of a ruled element (`<Password Value="…"/>`) is under its rule.
            own.cloned().or_else(|| stack.iter().rev().find_map(|e| e.rule.clone()))
        }) {
            let kind = rule.rsplit(':').next().unwrap_or("value").to_string();
            let action = if action == Action::Drop { Action::Redact } else { action };
            pass.apply(action, &kind, &value, &rule)
        } else {
            pass.free_value(Some(local), &value)
        };
        changed |= new.is_some();
        attributes.push((key, new.map_or(raw_value, |n| quick_xml::escape::escape(n.as_str()).into_owned())));
    }
    if !changed {
        return None;
    }
    let mut out = String::from("<");
    out.push_str(&String::from_utf8_lossy(e.name().as_ref()));
    for (k, v) in attributes {
        out.push(' ');
        out.push_str(&k);
        out.push_str("=\"");
        out.push_str(&v.replace('"', "&quot;"));
        out.push('"');
    }
    out.push_str(if empty { "/>" } else { ">" });
    Some(out)
}
