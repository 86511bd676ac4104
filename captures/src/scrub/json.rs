//! The streaming JSON rewriter: copies a JSON document (or a sequence of them, as in JSON
//! lines) byte for byte, changing only the values rules or detectors select.
//!
//! It never builds a tree, so key order, number spelling, escapes and whitespace survive
//! exactly, memory stays proportional to nesting depth, and depth is capped (a depth bomb
//! is rejected, not recursed into). A truncated body (cut at `--max-body`) is rewritten
//! up to its last complete member; the member the cut fell in is dropped whole, so half a
//! value cannot slip past a detector.

use std::borrow::Cow;

use crate::scrub::action::{is_scrubbed, Action};
use crate::scrub::json_string::{decode_string, write_json_string};
use crate::scrub::jsonpath::Step;
use crate::scrub::names::{is_pair_name_key, is_person_parent};
use crate::scrub::policy::{normalize_key, normalize_key_ascii};
use crate::scrub::{HeaderOutcome, Pass};

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 128;

/// Why a body is not JSON this rewriter accepts.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Not valid JSON at this byte offset.
    Invalid(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Invalid(usize),
    TooDeep,
    /// The input ended early.
    Eof,
    /// The input ended early in a truncated body and the cut member was removed.
    Cut,
}

type R<T> = Result<T, Stop>;

/// Rewrites `input`; `Ok(None)` when nothing changed.
pub(crate) fn scrub(pass: &mut Pass<'_>, input: &[u8], truncated: bool) -> Result<Option<Vec<u8>>, JsonError> {
    let mut w = Rewriter {
        pass,
        input,
        text: match std::str::from_utf8(input) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&input[..e.valid_up_to()]).unwrap_or_default(),
        },
        pos: 0,
        out: Vec::with_capacity(input.len()),
        path: Vec::new(),
        objects: Vec::new(),
        aliases: None,
        changed: false,
        truncated,
        keep_cut: false,
    };
    let result = w.document();
    w.finish_open();
    match result {
        Ok(()) | Err(Stop::Cut) => {}
        Err(Stop::Eof) if truncated => {}
        Err(Stop::Eof) => return Err(JsonError::Invalid(input.len())),
        Err(Stop::Invalid(at)) => return Err(JsonError::Invalid(at)),
        Err(Stop::TooDeep) => return Err(JsonError::TooDeep),
    }
    let changed = w.changed || w.out.len() != input.len();
    Ok(changed.then_some(w.out))
}

/// An object being rewritten.
struct Open {
    /// Where it starts in the input (to read a pair's name among its members).
    start: usize,
    /// A member so far says it describes a person (an e-mail, phone, address …).
    person: bool,
    /// `name` members written before the object was known to be a person's: their
    /// place in the output and their text, hashed when the object turns out to be one.
    names: Vec<(usize, usize, String)>,
    /// Read once per object (re-reading it for every member would be quadratic): the
    /// string of its pair-naming member (`name`, `type` …) …
    pair_name: Option<Option<String>>,
    /// … and the argument of each GraphQL variable, from its `query` member.
    aliases: Option<Option<rustc_hash::FxHashMap<String, String>>>,
}

/// Names deferred per object at most; past that they are hashed at once.
const MAX_DEFERRED_NAMES: usize = 64;

struct Rewriter<'p, 'a, 'i> {
    pass: &'p mut Pass<'a>,
    input: &'i [u8],
    /// The longest prefix of `input` that is valid UTF-8 (all of it, but for a body cut
    /// in a character or holding invalid bytes).
    text: &'i str,
    pos: usize,
    out: Vec<u8>,
    path: Vec<Step<'i>>,
    /// The open objects, innermost last.
    objects: Vec<Open>,
    /// GraphQL `variables` being rewritten: at which object depth, and the argument each
    /// variable is passed as (`login(password: $p)`: `p` → `password`).
    aliases: Option<(usize, rustc_hash::FxHashMap<String, String>)>,
    changed: bool,
    truncated: bool,
    /// The next value is a member's that no rule took: if the body was cut inside it
    /// (a string), its words up to the cut are kept ([`Rewriter::cut_string`]).
    keep_cut: bool,
}

impl<'i> Rewriter<'_, '_, 'i> {
    fn document(&mut self) -> R<()> {
        loop {
            let ws = self.pos;
            self.skip_ws();
            self.out.extend_from_slice(&self.input[ws..self.pos]);
            if self.pos >= self.input.len() {
                return Ok(());
            }
            let mark = self.out.len();
            match self.value(0) {
                Err(Stop::Eof) if self.truncated => {
                    self.out.truncate(mark);
                    return Err(Stop::Cut);
                }
                other => other?,
            }
        }
    }

    fn peek(&self) -> R<u8> {
        self.input.get(self.pos).copied().ok_or(Stop::Eof)
    }

    /// [`peek`](Self::peek) where a container's next member or element would start: a
    /// cut body ending there keeps what came before (scrubbing it again keeps it too).
    fn peek_or_cut(&mut self) -> R<u8> {
        // `&mut`: a cut may mark the last value whole ([`Rewriter::cut_after_last_item`]).
        match self.peek() {
            Err(Stop::Eof) if self.truncated => Err(self.cut_after_last_item()),
            other => other,
        }
    }

    /// The cut ends the output here, after the last complete item. A number or literal
    /// that ends the output would read as cut when the output is scrubbed again (`12`
    /// of `1234`): a space after it says it is whole, so a second pass keeps it too.
    fn cut_after_last_item(&mut self) -> Stop {
        if self.out.last().is_some_and(|b| !b.is_ascii_whitespace() && !b"\"}]{[,:".contains(b)) {
            self.out.push(b' ');
        }
        Stop::Cut
    }

    fn skip_ws(&mut self) {
        while matches!(self.input.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> R<()> {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Stop::Invalid(self.pos))
        }
    }

    /// The JSON path rule for the value at the current path.
    fn path_rule(&self) -> Option<(Action, String)> {
        let policy = &self.pass.scrubber.policy;
        if policy.json_paths.is_empty() {
            return None;
        }
        // Most values cannot match any path: skip them by the name the paths end in
        // (members asked [`KeyInfo::path_name`] before calling).
        let may_match = match self.path.last() {
            Some(Step::Key(_)) => true,
            _ => policy.json_path_names.is_none(),
        };
        if !may_match {
            return None;
        }
        policy.json_paths.iter().find(|(p, _)| p.matches(&self.path)).map(|(p, a)| (*a, format!("json-path:{p}")))
    }

    /// A value with no rule: containers recurse, strings and numbers meet the detectors.
    fn value(&mut self, depth: usize) -> R<()> {
        // For this value only, never for what a container holds.
        let keep_cut = std::mem::take(&mut self.keep_cut);
        if depth > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => {
                let start = self.pos;
                let (raw, text) = match self.string() {
                    Err(Stop::Eof) if keep_cut && self.truncated => return self.cut_string(start),
                    other => other?,
                };
                let key = match self.path.last() {
                    Some(Step::Key(k)) => Some(k.as_ref()),
                    _ => None,
                };
                // Object members were checked for header names in `member`.
                match self.pass.free_value_checked(key, &text, key.is_some()) {
                    Some(new) => self.emit_string(&new),
                    None => self.out.extend_from_slice(raw),
                }
                Ok(())
            }
            _ => {
                let start = self.pos;
                self.scalar()?;
                let raw = &self.input[start..self.pos];
                // A card number stored as a JSON number is still a card number.
                if raw.len() >= 13 && raw.iter().all(u8::is_ascii_digit) {
                    let text = std::str::from_utf8(raw).unwrap_or_default().to_string();
                    if let Some(new) = self.pass.detect_text(&text) {
                        self.emit_string(&new);
                        return Ok(());
                    }
                }
                self.out.extend_from_slice(raw);
                Ok(())
            }
        }
    }

    /// A value a rule selected: replaced whole by the rule's action.
    fn ruled_value(&mut self, action: Action, label: &str, depth: usize) -> R<()> {
        let start = self.pos;
        self.skip_value(depth)?;
        let raw = &self.input[start..self.pos];
        let kind = label.rsplit(['.', ':']).next().unwrap_or("value").trim_end_matches(']');
        let replacement = match raw[0] {
            b'"' => {
                let text = decode_string(&raw[1..raw.len() - 1]).ok_or(Stop::Invalid(start))?;
                if is_scrubbed(&text) || action == Action::Keep {
                    None
                } else {
                    self.pass.apply(action, kind, &text, label)
                }
            }
            b'n' | b't' | b'f' => None, // null and booleans hold nothing personal
            b'{' | b'[' if action == Action::Keep => None,
            b'{' | b'[' => {
                let text = String::from_utf8_lossy(raw);
                let whole = if action == Action::Hash { Action::Hash } else { Action::Redact };
                self.pass.apply(whole, kind, &text, label)
            }
            _ if action == Action::Keep => None,
            _ => self.pass.apply(action, kind, &String::from_utf8_lossy(raw), label),
        };
        match replacement {
            Some(new) => self.emit_string(&new),
            None => self.out.extend_from_slice(raw),
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> R<()> {
        self.objects.push(Open { start: self.pos, person: false, names: Vec::new(), pair_name: None, aliases: None });
        let result = self.object_members(depth);
        if result.is_ok() {
            if let Some(open) = self.objects.pop() {
                if open.person {
                    self.hash_names(open.names);
                }
            }
        }
        // An object the input ended in stays open: `finish_open` deals with it.
        result
    }

    /// Replaces `name` members already written by their hash (last first, so the earlier
    /// places stay valid).
    fn hash_names(&mut self, mut names: Vec<(usize, usize, String)>) {
        names.sort_by_key(|n| std::cmp::Reverse(n.0));
        for (start, end, text) in names {
            if end > self.out.len() {
                continue;
            }
            if let Some(new) = self.pass.apply(Action::Hash, "name", &text, "json-person:name") {
                let mut literal = Vec::with_capacity(new.len() + 2);
                write_json_string(&mut literal, &new);
                self.out.splice(start..end, literal);
                self.changed = true;
            }
        }
    }

    /// After a cut: names in objects the input ended in are hashed, whatever followed them
    /// (their siblings were never seen).
    fn finish_open(&mut self) {
        let names: Vec<_> = self.objects.drain(..).flat_map(|o| o.names).collect();
        self.hash_names(names);
    }

    fn object_members(&mut self, depth: usize) -> R<()> {
        self.expect(b'{')?;
        self.out.push(b'{');
        let mut first = true;
        loop {
            let ws = self.pos;
            self.skip_ws();
            if self.peek_or_cut()? == b'}' {
                self.out.extend_from_slice(&self.input[ws..=self.pos]);
                self.pos += 1;
                return Ok(());
            }
            let mark = self.out.len();
            let result = self.member(ws, first, depth);
            if self.item_done(result, mark, &mut first, b'}')? {
                return Ok(());
            }
        }
    }

    /// After an object member or array element (`result`: kept or dropped; its output
    /// starts at `mark`): the separator. Returns true when `close` ended the container.
    // Inlined into both loops: as a call it cost ~4% of scrub throughput (cargo bench).
    #[inline(always)]
    fn item_done(&mut self, result: R<bool>, mark: usize, first: &mut bool, close: u8) -> R<bool> {
        let kept = match result {
            Ok(kept) => kept,
            Err(Stop::Eof) if self.truncated => {
                self.out.truncate(mark);
                return Err(self.cut_after_last_item());
            }
            Err(e) => return Err(e),
        };
        *first &= !kept;
        let trailing = self.pos;
        self.skip_ws();
        let sep = match self.peek() {
            // A cut body that ends right after a complete string, object or array (or a
            // dropped member) keeps it: scrubbing it again must not take more away.
            Err(Stop::Eof) if self.truncated => return Err(self.cut_after_last_item()),
            other => other?,
        };
        if kept {
            self.out.extend_from_slice(&self.input[trailing..self.pos]);
        }
        self.pos += 1;
        match sep {
            b',' => Ok(false),
            c if c == close => {
                self.out.push(close);
                Ok(true)
            }
            _ => Err(Stop::Invalid(self.pos - 1)),
        }
    }

    /// One `"key": value` member; returns false when the rule dropped it.
    fn member(&mut self, ws: usize, first: bool, depth: usize) -> R<bool> {
        let key_start = self.pos;
        if self.peek()? != b'"' {
            return Err(Stop::Invalid(self.pos));
        }
        let (raw_key, key) = self.string()?;
        let key_end = self.pos;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        let value_start = self.pos;
        self.path.push(Step::Key(key.clone()));
        // Inside GraphQL `variables`, a variable's name is the argument it is passed as.
        let alias = match &self.aliases {
            Some((depth, names)) if *depth == self.objects.len() => names.get(key.as_ref()).cloned(),
            _ => None,
        };
        let info = self.pass.key_info(alias.as_deref().unwrap_or(&key));
        // `"variables": {…}` beside a GraphQL `"query"`: learn which argument each variable is.
        let graphql_variables = self.input.get(value_start) == Some(&b'{')
            && key.eq_ignore_ascii_case("variables")
            && self.aliases.is_none();
        if graphql_variables {
            let known = self.objects.last().and_then(|o| o.aliases.clone());
            let names = match known {
                Some(names) => names,
                None => {
                    let names = self
                        .sibling_string(|k| k == "query", 1 << 20)
                        .map(|q| crate::scrub::graphql::variable_arguments(&q))
                        .filter(|n| !n.is_empty());
                    if let Some(open) = self.objects.last_mut() {
                        open.aliases = Some(names.clone());
                    }
                    names
                }
            };
            if let Some(names) = names {
                self.aliases = Some((self.objects.len() + 1, names));
            }
        }
        // Paths first, then the key's rule.
        let path_rule = if info.path_name { self.path_rule() } else { None };
        let by_path = path_rule.is_some();
        let rule = path_rule.or_else(|| info.rule.as_ref().map(|(a, l)| (*a, l.to_string())));
        // A string under a credential header's name is that header (`"Cookie": "sid=…"`),
        // unless a JSON path says otherwise; `name` in a person's object is a person's name.
        let string = self.input.get(value_start) == Some(&b'"');
        let header = info.header.as_ref().filter(|_| string && !by_path).map(|h| h.to_string());
        if info.person_sibling {
            if let Some(open) = self.objects.last_mut() {
                open.person = true;
            }
        }
        let name_like = string && rule.is_none() && header.is_none() && info.person_name;
        // Past a few deferred names in one object, a name is hashed at once (deferring
        // thousands would make the output splices quadratic).
        let crowded = self.objects.last().is_some_and(|o| o.names.len() >= MAX_DEFERRED_NAMES);
        let person = name_like && (crowded || self.is_person_object());
        // `{"name": "password", "value": "…"}`: the value takes the rule its name has.
        let rule = match rule {
            None if string && !name_like && header.is_none() && info.pair_value => self.pair_rule(),
            rule => rule,
        };
        let result = match rule {
            Some((Action::Drop, label)) => {
                self.pass.hit(&label);
                self.changed = true;
                self.skip_value(depth).map(|()| false)
            }
            rule => {
                if !first {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(&self.input[ws..key_start]);
                // Keys can be personal too: maps keyed by e-mail address.
                let inert = alias.is_none() && info.inert;
                match if inert { None } else { self.pass.detect_text(&key) } {
                    Some(new) => self.emit_string(&new),
                    None => self.out.extend_from_slice(raw_key),
                }
                self.out.extend_from_slice(&self.input[key_end..value_start]);
                match (rule, header) {
                    (_, Some(header)) => self.header_member(&header),
                    (Some((action, label)), None) => self.ruled_value(action, &label, depth),
                    (None, None) if person => self.ruled_value(Action::Hash, "json-person:name", depth),
                    (None, None) if name_like => {
                        // A sibling after it may still say this is a person.
                        let start = self.out.len();
                        let result = self.value(depth);
                        if result.is_ok() {
                            let raw = &self.input[value_start + 1..self.pos - 1];
                            let text = match std::str::from_utf8(raw) {
                                Ok(t) if !t.contains('\\') => t.to_string(),
                                _ => decode_string(raw).unwrap_or_default(),
                            };
                            let end = self.out.len();
                            if let Some(open) = self.objects.last_mut() {
                                open.names.push((start, end, text));
                            }
                        }
                        result
                    }
                    (None, None) => {
                        self.keep_cut = true;
                        let result = self.value(depth);
                        self.keep_cut = false;
                        result
                    }
                }
                .map(|()| true)
            }
        };
        if graphql_variables {
            self.aliases = None;
        }
        self.path.pop();
        result
    }

    /// The body (captured up to `--max-body`) ends inside the string that starts at
    /// `start`: its whole words are kept, through the detectors, and the string closed;
    /// the word the cut went through, and groups of digits just before it, are dropped
    /// (they may be the front of an address or a card number, which no detector would
    /// recognise). Ends the document.
    fn cut_string(&mut self, start: usize) -> R<()> {
        let inner = &self.input[start + 1..];
        let words = inner.iter().rposition(|b| *b == b' ').map_or(&inner[..0], |i| &inner[..i]);
        let Some(mut text) = decode_string(words) else {
            self.emit_string("");
            self.changed = true;
            return Err(Stop::Cut);
        };
        // Groups of digits before the cut may be the front of a spaced card or phone
        // number (`4111 1111 …`): they go too.
        while let Some((front, last)) = text.trim_end().rsplit_once(' ') {
            if !last.bytes().any(|b| b.is_ascii_digit() || b == b'@') {
                break;
            }
            text.truncate(front.len());
        }
        if text.bytes().any(|b| b.is_ascii_digit()) && !text.contains(' ') {
            text.clear();
        }
        let key = match self.path.last() {
            Some(Step::Key(k)) => Some(k.to_string()),
            _ => None,
        };
        let new = self.pass.cut_value(key.as_deref(), &text);
        self.emit_string(new.as_deref().unwrap_or(&text));
        self.changed = true;
        self.pos = self.input.len();
        Err(Stop::Cut)
    }

    /// A string member named like a credential header, scrubbed as that header.
    fn header_member(&mut self, header: &str) -> R<()> {
        let (raw, text) = self.string()?;
        match self.pass.header_value(header, &text) {
            HeaderOutcome::Keep => match self.pass.detect_text(&text) {
                Some(new) => self.emit_string(&new),
                None => self.out.extend_from_slice(raw),
            },
            HeaderOutcome::Drop => self.emit_string(""),
            HeaderOutcome::Replace(new) => self.emit_string(&new),
        }
        Ok(())
    }

    /// The rule a name/value pair's name gives its value: the key rule of the string in a
    /// sibling `name`, `type`, `key` or `field` member.
    fn pair_rule(&mut self) -> Option<(Action, String)> {
        let named = match self.objects.last()?.pair_name.clone() {
            Some(known) => known,
            None => {
                let found = self.sibling_string(is_pair_name_key, 64);
                self.objects.last_mut()?.pair_name = Some(found.clone());
                found
            }
        }?;
        self.pass.key_rule(&named)
    }

    /// The first string member of the current object whose normalised name `wanted`
    /// accepts (and no longer than `max`), read from the object's start.
    fn sibling_string(&mut self, wanted: fn(&str) -> bool, max: usize) -> Option<String> {
        let start = self.objects.last()?.start;
        let resume = self.pos;
        self.pos = start + 1;
        let mut found: Option<String> = None;
        loop {
            self.skip_ws();
            let Ok((_, name)) = self.string() else { break };
            let mut buf = [0u8; 64];
            let is_wanted = normalize_key_ascii(&name, &mut buf).is_some_and(wanted);
            self.skip_ws();
            if self.expect(b':').is_err() {
                break;
            }
            self.skip_ws();
            if is_wanted && self.peek() == Ok(b'"') {
                match self.string() {
                    Ok((_, v)) if v.len() <= max => found = Some(v.into_owned()),
                    _ => break,
                }
            } else if self.skip_value(0).is_err() {
                break;
            }
            if found.is_some() {
                break;
            }
            self.skip_ws();
            if self.expect(b',').is_err() {
                break;
            }
        }
        self.pos = resume;
        found
    }

    /// True when the current object describes a person: its parent names one (`user`,
    /// `customers[*]` …) or a sibling does (an e-mail, phone, address or birth date beside
    /// it). A product's `name` has neither.
    fn is_person_object(&mut self) -> bool {
        if self.objects.last().is_some_and(|o| o.person) {
            return true;
        }
        let parent = self.path.iter().rev().skip(1).find_map(|s| match s {
            Step::Key(k) => Some(k),
            Step::Index(_) => None,
        });
        let mut pbuf = [0u8; 64];
        parent.is_some_and(|p| match normalize_key_ascii(p, &mut pbuf) {
            Some(n) => is_person_parent(n),
            None => is_person_parent(&normalize_key(p)),
        })
    }

    fn array(&mut self, depth: usize) -> R<()> {
        self.expect(b'[')?;
        self.out.push(b'[');
        let mut first = true;
        let mut index = 0;
        loop {
            let ws = self.pos;
            self.skip_ws();
            if self.peek_or_cut()? == b']' {
                self.out.extend_from_slice(&self.input[ws..=self.pos]);
                self.pos += 1;
                return Ok(());
            }
            let mark = self.out.len();
            self.path.push(Step::Index(index));
            let rule = self.path_rule();
            let result = match rule {
                Some((Action::Drop, label)) => {
                    self.pass.hit(&label);
                    self.changed = true;
                    self.skip_value(depth).map(|()| false)
                }
                rule => {
                    if !first {
                        self.out.push(b',');
                    }
                    self.out.extend_from_slice(&self.input[ws..self.pos]);
                    match rule {
                        Some((action, label)) => self.ruled_value(action, &label, depth),
                        None => self.value(depth),
                    }
                    .map(|()| true)
                }
            };
            self.path.pop();
            index += 1;
            if self.item_done(result, mark, &mut first, b']')? {
                return Ok(());
            }
        }
    }

    /// Moves past one value without writing it (still validating it).
    fn skip_value(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let close = if self.peek()? == b'{' { b'}' } else { b']' };
                let is_object = close == b'}';
                self.pos += 1;
                self.skip_ws();
                if self.peek()? == close {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    if is_object {
                        if self.peek()? != b'"' {
                            return Err(Stop::Invalid(self.pos));
                        }
                        self.string()?;
                        self.skip_ws();
                        self.expect(b':')?;
                        self.skip_ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        c if c == close => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(Stop::Invalid(self.pos)),
                    }
                }
            }
            _ => self.scalar(),
        }
    }

    /// A string at `pos`: its raw bytes (with quotes) and its text.
    fn string(&mut self) -> R<(&'i [u8], Cow<'i, str>)> {
        let start = self.pos;
        self.expect(b'"')?;
        let mut escaped = false;
        // To the next quote or backslash at memchr's speed; control characters between
        // are checked in one vectorised pass.
        loop {
            let rest = &self.input[self.pos..];
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                return match rest.iter().position(|c| *c < 0x20) {
                    Some(c) => Err(Stop::Invalid(self.pos + c)),
                    None => Err(Stop::Eof),
                };
            };
            if rest[..i].iter().any(|c| *c < 0x20) {
                let c = rest.iter().position(|c| *c < 0x20).unwrap_or(i);
                return Err(Stop::Invalid(self.pos + c));
            }
            self.pos += i;
            if rest[i] == b'"' {
                break;
            }
            escaped = true;
            self.pos += 2;
            if self.pos > self.input.len() {
                return Err(Stop::Eof);
            }
        }
        self.pos += 1;
        let raw = &self.input[start..self.pos];
        let text = if escaped {
            Cow::Owned(decode_string(&raw[1..raw.len() - 1]).ok_or(Stop::Invalid(start))?)
        } else if self.pos <= self.text.len() {
            // Inside the body's valid UTF-8 prefix (checked once): a slice, no second check.
            Cow::Borrowed(self.text.get(start + 1..self.pos - 1).ok_or(Stop::Invalid(start))?)
        } else {
            Cow::Borrowed(std::str::from_utf8(&raw[1..raw.len() - 1]).map_err(|_| Stop::Invalid(start))?)
        };
        Ok((raw, text))
    }

    /// A number, `true`, `false` or `null`.
    fn scalar(&mut self) -> R<()> {
        let start = self.pos;
        let rest = &self.input[start..];
        for literal in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(literal) {
                self.pos += literal.len();
                return Ok(());
            }
            if literal.starts_with(rest) && !rest.is_empty() {
                return Err(Stop::Eof);
            }
        }
        let b = self.input;
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        if digits(&mut i) == 0 {
            return Err(if i >= b.len() { Stop::Eof } else { Stop::Invalid(i) });
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                return Err(if i >= b.len() { Stop::Eof } else { Stop::Invalid(i) });
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(if i >= b.len() { Stop::Eof } else { Stop::Invalid(i) });
            }
        }
        // A number running into the end of a truncated body may be cut short.
        if i >= b.len() && self.truncated {
            return Err(Stop::Eof);
        }
        self.pos = i;
        Ok(())
    }

    fn emit_string(&mut self, text: &str) {
        self.changed = true;
        write_json_string(&mut self.out, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        assert_eq!(decode_string(br#"a\"b\\c\/d\n\u00e9\ud83d\ude00"#).unwrap(), "a\"b\\c/d\né😀");
        assert_eq!(decode_string(br#"\ud83d"#).unwrap(), "\u{FFFD}");
        assert!(decode_string(br#"\x"#).is_none());
        let mut out = Vec::new();
        write_json_string(&mut out, "q\"\\\n\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""q\"\\\n\u0001é""#);
    }
}
