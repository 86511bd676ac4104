//! The JSON path subset scrub rules use: `$.user.email`, `$..password` (at any depth),
//! `$.items[*].card`, `$.items[0]`, `$['odd key']`, `$.*`.
//!
//! Paths are matched against the position of a value while the JSON rewriter streams
//! through a body, so matching works on a stack of keys and indices, not on a tree.

use std::fmt;

/// One step of a document position. Keys borrow from the document where they can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// An object member.
    Key(std::borrow::Cow<'a, str>),
    /// An array element.
    Index(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    Name(String),
    Index(usize),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    /// `..`: any number of steps before this one.
    descendant: bool,
    selector: Selector,
}

/// The last member name of a concrete path such as `$.user.emails[0]` (`emails`), or
/// `$['odd key']`; `None` for `$` or a path ending in a wildcard.
pub fn last_member(path: &str) -> Option<&str> {
    let mut p = path.trim_end();
    while let Some(open) = p.strip_suffix(']').and_then(|q| q.rfind('[')) {
        let inner = &p[open + 1..p.len() - 1];
        if let Some(quoted) = inner.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
            return Some(quoted);
        }
        p = &p[..open];
    }
    let name = p.rsplit('.').next()?;
    (!name.is_empty() && name != "$" && name != "*").then_some(name)
}

/// A compiled JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    source: String,
    segments: Vec<Segment>,
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for JsonPath {
    type Err = String;

    fn from_str(source: &str) -> Result<Self, String> {
        let err = |at: usize, what: &str| format!("JSON path {source:?}: {what} at character {}", at + 1);
        let b = source.as_bytes();
        if b.first() != Some(&b'$') {
            return Err(err(0, "must start with $"));
        }
        let mut i = 1;
        let mut segments = Vec::new();
        while i < b.len() {
            let descendant = b[i..].starts_with(b"..");
            match b[i] {
                b'.' => {
                    i += if descendant { 2 } else { 1 };
                    if b.get(i) == Some(&b'[') {
                        continue_bracket(source, &mut i, descendant, &mut segments)?;
                        continue;
                    }
                    let start = i;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        i += 1;
                    }
                    let name = &source[start..i];
                    if name.is_empty() {
                        return Err(err(start, "expected a member name"));
                    }
                    let selector = if name == "*" { Selector::Any } else { Selector::Name(name.to_string()) };
                    segments.push(Segment { descendant, selector });
                }
                b'[' => continue_bracket(source, &mut i, false, &mut segments)?,
                _ => return Err(err(i, "expected . or [")),
            }
        }
        if segments.is_empty() {
            return Err(err(0, "selects the whole document; name a member"));
        }
        Ok(JsonPath { source: source.to_string(), segments })
    }
}

fn continue_bracket(source: &str, i: &mut usize, descendant: bool, segments: &mut Vec<Segment>) -> Result<(), String> {
    let open = *i;
    let close =
        source[open..].find(']').map(|p| open + p).ok_or_else(|| format!("JSON path {source:?}: [ without ]"))?;
    let inner = source[open + 1..close].trim();
    let selector = if inner == "*" {
        Selector::Any
    } else if let Ok(n) = inner.parse::<usize>() {
        Selector::Index(n)
    } else if inner.len() >= 2
        && (inner.starts_with('\'') && inner.ends_with('\'') || inner.starts_with('"') && inner.ends_with('"'))
    {
        Selector::Name(inner[1..inner.len() - 1].to_string())
    } else {
        return Err(format!("JSON path {source:?}: [{inner}] is not *, an index or a quoted name"));
    };
    segments.push(Segment { descendant, selector });
    *i = close + 1;
    Ok(())
}

impl JsonPath {
    /// The member name this path's last step selects, if it names one (`$..user.name` →
    /// `name`); lets callers skip paths that cannot match a value.
    pub fn last_name(&self) -> Option<&str> {
        match &self.segments.last()?.selector {
            Selector::Name(n) => Some(n),
            _ => None,
        }
    }

    /// True when a value at `path` is selected.
    pub fn matches(&self, path: &[Step<'_>]) -> bool {
        // Cheap rejection: the segments after the last descendant one are anchored at the
        // path's end (`$..user.name`: `user` right before `name`), and most paths fail there.
        let mut at = path.len();
        for seg in self.segments.iter().rev() {
            let Some(before) = at.checked_sub(1) else { return false };
            at = before;
            if !selects(&seg.selector, &path[at]) {
                return false;
            }
            if seg.descendant {
                break;
            }
        }
        match_from(&self.segments, path)
    }
}

fn selects(selector: &Selector, step: &Step<'_>) -> bool {
    match (selector, step) {
        (Selector::Any, _) => true,
        (Selector::Name(n), Step::Key(k)) => n == k,
        (Selector::Index(n), Step::Index(i)) => n == i,
        _ => false,
    }
}

fn match_from(segments: &[Segment], path: &[Step<'_>]) -> bool {
    let Some((seg, rest)) = segments.split_first() else { return path.is_empty() };
    if seg.descendant {
        (0..path.len()).any(|k| selects(&seg.selector, &path[k]) && match_from(rest, &path[k + 1..]))
    } else {
        path.first().is_some_and(|step| selects(&seg.selector, step)) && match_from(rest, &path[1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_members() {
        assert_eq!(last_member("$.user.email"), Some("email"));
        assert_eq!(last_member("$.users[3].phones[0]"), Some("phones"));
        assert_eq!(last_member("$['odd key']"), Some("odd key"));
        assert_eq!(last_member("$"), None);
        assert_eq!(last_member("$[0]"), None);
        assert_eq!(last_member("$.a.*"), None);
    }

    fn path(steps: &[&'static str]) -> Vec<Step<'static>> {
        steps.iter().map(|s| s.parse::<usize>().map_or_else(|_| Step::Key((*s).into()), Step::Index)).collect()
    }

    fn m(p: &str, steps: &[&'static str]) -> bool {
        p.parse::<JsonPath>().unwrap().matches(&path(steps))
    }

    #[test]
    fn matches_children_descendants_wildcards_and_indices() {
        assert!(m("$.user.email", &["user", "email"]));
        assert!(!m("$.user.email", &["admin", "user", "email"]));
        assert!(m("$..password", &["a", "b", "password"]));
        assert!(m("$..password", &["password"]));
        assert!(!m("$..password", &["password", "x"]));
        assert!(m("$.items[*].card", &["items", "3", "card"]));
        assert!(!m("$.items[*].card", &["items", "card"]));
        assert!(m("$.items[0]", &["items", "0"]));
        assert!(!m("$.items[0]", &["items", "1"]));
        assert!(m("$['odd key'].x", &["odd key", "x"]));
        assert!(m("$..user.*", &["data", "user", "name"]));
        assert!(m("$..[*].ssn", &["people", "2", "ssn"]));
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in ["user.email", "$.", "$.a[", "$.a[x]", "$", "$x"] {
            assert!(bad.parse::<JsonPath>().is_err(), "{bad}");
        }
    }
}
