//! The fast path of the JSON diff: both bodies walked token by token, side by side,
//! without building either document. Two answers from the same code almost always have
//! the same shape and key order, and then this finds their differences at a fraction of
//! the cost of parsing both. Anything else — keys in another order or missing, arrays of
//! other lengths, an object where the other has a scalar, invalid JSON — returns `None`
//! and the caller falls back to the full structural diff.

use super::DiffKind;

/// A difference found: kind, grouping key (`[*]` for indices), exact path, recorded and
/// replayed values as shown.
pub(super) type Found = (DiffKind, String, String, String, String);

/// The differences between two JSON documents of the same shape, or `None`.
pub(super) fn diff(a: &[u8], b: &[u8], limit: usize) -> Option<Vec<Found>> {
    let (mut x, mut y) = (Cursor { s: a, i: 0 }, Cursor { s: b, i: 0 });
    let mut walk = Walk { out: Vec::new(), limit, tail: common_suffix(a, b), done: false };
    value(&mut x, &mut y, &mut Vec::new(), &mut walk)?;
    (walk.done || (x.end() && y.end())).then_some(walk.out)
}

/// The state of one walk.
struct Walk {
    out: Vec<Found>,
    limit: usize,
    /// Bytes at the end both documents share.
    tail: usize,
    /// Set once the rest of both documents is the same bytes: nothing more to find.
    done: bool,
}

impl Walk {
    /// True (and done) when what is left of both documents is their common tail.
    fn rest_is_equal(&mut self, x: &Cursor<'_>, y: &Cursor<'_>) -> bool {
        let (rx, ry) = (x.s.len() - x.i, y.s.len() - y.i);
        self.done = rx == ry && rx <= self.tail;
        self.done
    }
}

/// How many bytes `a` and `b` share at their ends (compared in blocks, then bytes).
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let mut n = 0;
    let max = a.len().min(b.len());
    while n + BLOCK <= max && a[a.len() - n - BLOCK..a.len() - n] == b[b.len() - n - BLOCK..b.len() - n] {
        n += BLOCK;
    }
    while n < max && a[a.len() - n - 1] == b[b.len() - n - 1] {
        n += 1;
    }
    n
}

/// One step of the path to a value: kept as slices, rendered only for a difference.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a [u8]),
    Index(usize),
}

/// `(key, at)`: the path with indices as `[*]`, and exactly.
fn render(path: &[Step<'_>]) -> (String, String) {
    let (mut key, mut at) = (String::from("$"), String::from("$"));
    for step in path {
        match step {
            Step::Key(k) => {
                // Keys were checked to be free of escapes; they are UTF-8 in valid JSON.
                let k = String::from_utf8_lossy(k);
                super::push_key(&mut key, &k);
                super::push_key(&mut at, &k);
            }
            Step::Index(i) => {
                key.push_str("[*]");
                at.push_str(&format!("[{i}]"));
            }
        }
    }
    (key, at)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Scalar {
    String,
    Number,
    Literal,
}

impl<'a> Cursor<'a> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(c) = self.s.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(*c);
            }
            self.i += 1;
        }
        None
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// A string token, quotes included (escapes left as they are).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.peek()?;
        let start = self.i;
        self.eat(b'"')?;
        loop {
            match self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(&self.s[start..self.i]);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    fn scalar(&mut self) -> Option<(Scalar, &'a [u8])> {
        match self.peek()? {
            b'"' => Some((Scalar::String, self.string()?)),
            c if c == b'-' || c.is_ascii_digit() => Some((
                Scalar::Number,
                self.run(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))?,
            )),
            b't' | b'f' | b'n' => Some((Scalar::Literal, self.run(|c| c.is_ascii_alphabetic())?)),
            _ => None,
        }
    }

    fn run(&mut self, f: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| f(*c)) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }
}

/// Two string tokens read side by side: one pass while they agree, which is the usual
/// case (keys, unchanged values). Returns both tokens, quotes included.
fn strings<'a, 'b>(x: &mut Cursor<'a>, y: &mut Cursor<'b>) -> Option<(&'a [u8], &'b [u8])> {
    x.peek()?;
    y.peek()?;
    let (sa, sb) = (&x.s[x.i..], &y.s[y.i..]);
    if sa.first() != Some(&b'"') || sb.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while let (Some(&ca), Some(&cb)) = (sa.get(i), sb.get(i)) {
        if ca != cb {
            break;
        }
        match ca {
            b'"' => {
                x.i += i + 1;
                y.i += i + 1;
                return Some((&sa[..=i], &sb[..=i]));
            }
            // An escape: the escaped byte must agree too.
            b'\\' if sa.get(i + 1) == sb.get(i + 1) => i += 2,
            b'\\' => break,
            _ => i += 1,
        }
    }
    Some((x.string()?, y.string()?))
}

fn decode(token: &[u8], kind: Scalar) -> Option<String> {
    match kind {
        Scalar::String => serde_json::from_slice::<String>(token).ok(),
        _ => std::str::from_utf8(token).ok().map(str::to_string),
    }
}

fn type_name(kind: Scalar, token: &[u8]) -> &'static str {
    match kind {
        Scalar::String => "string",
        Scalar::Number => "number",
        Scalar::Literal if token == b"null" => "null",
        Scalar::Literal => "boolean",
    }
}

/// Nesting walked at most: deeper documents go to the full diff, whose parser refuses
/// them (a body nested 100,000 deep must not overflow the comparer's stack).
const MAX_DEPTH: usize = 128;

fn value<'a>(x: &mut Cursor<'a>, y: &mut Cursor<'_>, path: &mut Vec<Step<'a>>, walk: &mut Walk) -> Option<()> {
    if path.len() >= MAX_DEPTH {
        return None;
    }
    match (x.peek()?, y.peek()?) {
        (b'{', b'{') => {
            x.i += 1;
            y.i += 1;
            if x.peek()? == b'}' || y.peek()? == b'}' {
                return (x.eat(b'}').is_some() && y.eat(b'}').is_some()).then_some(());
            }
            loop {
                let (ka, kb) = strings(x, y)?;
                // Another key, or one needing unescaping: the full diff names it properly.
                if ka != kb || ka.contains(&b'\\') {
                    return None;
                }
                x.eat(b':')?;
                y.eat(b':')?;
                path.push(Step::Key(&ka[1..ka.len() - 1]));
                value(x, y, path, walk)?;
                path.pop();
                if walk.done || walk.rest_is_equal(x, y) {
                    return Some(());
                }
                match (x.peek()?, y.peek()?) {
                    (b',', b',') => {
                        x.i += 1;
                        y.i += 1;
                    }
                    (b'}', b'}') => {
                        x.i += 1;
                        y.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }
        (b'[', b'[') => {
            x.i += 1;
            y.i += 1;
            if x.peek()? == b']' || y.peek()? == b']' {
                return (x.eat(b']').is_some() && y.eat(b']').is_some()).then_some(());
            }
            let mut n = 0usize;
            loop {
                path.push(Step::Index(n));
                value(x, y, path, walk)?;
                path.pop();
                if walk.done || walk.rest_is_equal(x, y) {
                    return Some(());
                }
                n += 1;
                match (x.peek()?, y.peek()?) {
                    (b',', b',') => {
                        x.i += 1;
                        y.i += 1;
                    }
                    (b']', b']') => {
                        x.i += 1;
                        y.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }
        (b'{' | b'[', _) | (_, b'{' | b'[') => None,
        (b'"', b'"') => {
            let (ra, rb) = strings(x, y)?;
            scalars(path, &mut walk.out, walk.limit, (Scalar::String, ra), (Scalar::String, rb))
        }
        _ => {
            let (a, b) = (x.scalar()?, y.scalar()?);
            scalars(path, &mut walk.out, walk.limit, a, b)
        }
    }
}

/// Compares two scalar tokens at `path`.
fn scalars(
    path: &[Step<'_>],
    out: &mut Vec<Found>,
    limit: usize,
    (ta, ra): (Scalar, &[u8]),
    (tb, rb): (Scalar, &[u8]),
) -> Option<()> {
    if ta == tb && ra == rb {
        return Some(());
    }
    let (va, vb) = (decode(ra, ta)?, decode(rb, tb)?);
    if ta == Scalar::String && tapedeck_captures::scrub::action::is_scrubbed(&va) {
        return Some(());
    }
    if out.len() >= limit {
        return Some(());
    }
    if ta != tb || type_name(ta, ra) != type_name(tb, rb) {
        let (sa, sb) = (format!("{va} ({})", type_name(ta, ra)), format!("{vb} ({})", type_name(tb, rb)));
        let (key, at) = render(path);
        out.push((DiffKind::TypeChanged, key, at, sa, sb));
    } else if ta == Scalar::Number {
        // `1.50` and `1.5` are one number to a JSON parser.
        let parse = |raw: &[u8]| serde_json::from_slice::<serde_json::Value>(raw).ok();
        if parse(ra)? != parse(rb)? {
            let (key, at) = render(path);
            out.push((DiffKind::ValueChanged, key, at, va, vb));
        }
    } else if va != vb {
        let (key, at) = render(path);
        out.push((DiffKind::ValueChanged, key, at, va, vb));
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_nested_past_the_limit_fall_back_without_overflowing() {
        let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (a, b) = (deep("1"), deep("2"));
        // On a thread with a small stack, as the comparer's would overflow.
        let found = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || diff(a.as_bytes(), b.as_bytes(), 10))
            .unwrap()
            .join()
            .unwrap();
        assert!(found.is_none());
    }

    use super::*;

    fn keys(a: &str, b: &str) -> Option<Vec<(DiffKind, String, String, String)>> {
        diff(a.as_bytes(), b.as_bytes(), 100).map(|v| v.into_iter().map(|(k, _, at, x, y)| (k, at, x, y)).collect())
    }

    #[test]
    fn same_shapes_are_diffed_in_place() {
        let got = keys(
            r#"{"a":1,"b":{"c":"x","d":[1,2,{"e":true}]},"f":null,"g":"\u00e9","h":1.50}"#,
            r#"{ "a": 2, "b": {"c": "y", "d": [1, 3, {"e": false}]}, "f": 0, "g": "é", "h": 1.5 }"#,
        )
        .unwrap();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            [
                (DiffKind::ValueChanged, s("$.a"), s("1"), s("2")),
                (DiffKind::ValueChanged, s("$.b.c"), s("x"), s("y")),
                (DiffKind::ValueChanged, s("$.b.d[1]"), s("2"), s("3")),
                (DiffKind::ValueChanged, s("$.b.d[2].e"), s("true"), s("false")),
                (DiffKind::TypeChanged, s("$.f"), s("null (null)"), s("0 (number)")),
            ]
        );
        assert_eq!(keys(r#"{"a":"[REDACTED]"}"#, r#"{"a":"jane@example.com"}"#).unwrap(), []);
    }

    #[test]
    fn other_shapes_fall_back() {
        for (a, b) in [
            (r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#),
            (r#"{"a":1}"#, r#"{"a":1,"b":2}"#),
            (r#"[1,2]"#, r#"[1,2,3]"#),
            (r#"{"a":[1]}"#, r#"{"a":1}"#),
            (r#"{"a":1} x"#, r#"{"a":1}"#),
            (r#"{"a":1"#, r#"{"a":1}"#),
            (r#"{"a\"b":1}"#, r#"{"a\"b":1}"#),
        ] {
            assert_eq!(keys(a, b), None, "{a} / {b}");
        }
    }
}
