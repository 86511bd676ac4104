//! Filter expressions over exchanges, shared by `tapedeck cat --filter`, `export` and the
//! replayer:
//!
//! ```text
//! method == POST && status >= 500
//! route ~ '^/users/' and not (status == 2xx)
//! resp.header.content-type ~ json || error
//! duration_ms > 250 && host == api.example.com
//! ```
//!
//! Fields: `method`, `path`, `query`, `target`, `route`, `host`, `scheme`, `version`,
//! `status` (a number, or a class such as `5xx`), `duration_ms`, `head_ms`, `error` (kind
//! name, empty when none), `session`, `sequence`, `truncated`, `id`, `connection`,
//! `req.header.NAME`, `resp.header.NAME`, `req.body`, `resp.body`.
//! Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `~` (regex match), `!~`; combine with
//! `&&`/`and`, `||`/`or`, `!`/`not` and parentheses. A bare field is true when it is
//! non-empty and non-zero (`error`, `truncated`).

use std::fmt;

use regex::Regex;

use crate::exchange::Exchange;
use crate::route;

/// A parsed filter expression.
#[derive(Clone, Debug)]
pub struct Filter {
    expr: Expr,
    source: String,
}

/// A filter that does not parse: the message says where and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {expression:?}: {message} (at column {column})")]
pub struct FilterError {
    /// The expression.
    pub expression: String,
    /// What is wrong.
    pub message: String,
    /// 1-based column of the problem.
    pub column: usize,
}

#[derive(Clone, Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Truthy(Field),
    Compare(Field, Op, Value),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Query,
    Target,
    Route,
    Host,
    Scheme,
    Version,
    Status,
    DurationMs,
    HeadMs,
    Error,
    Session,
    Sequence,
    Truncated,
    Id,
    Connection,
    ReqHeader(String),
    RespHeader(String),
    ReqBody,
    RespBody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
}

#[derive(Clone, Debug)]
enum Value {
    Text(String),
    Number(f64),
    StatusClass(u16),
    Regex(Regex),
}

enum Resolved {
    Text(String),
    Number(f64),
    Missing,
}

impl Filter {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(source)?;
        let mut parser = Parser { tokens, pos: 0, source };
        let expr = parser.or()?;
        if let Some(t) = parser.tokens.get(parser.pos) {
            return Err(parser.error(t.column, format!("unexpected {:?}", t.text)));
        }
        Ok(Filter { expr, source: source.to_string() })
    }

    /// True when `exchange` satisfies the expression.
    pub fn matches(&self, exchange: &Exchange) -> bool {
        eval(&self.expr, exchange)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        Filter::parse(s)
    }
}

fn eval(expr: &Expr, ex: &Exchange) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, ex) && eval(b, ex),
        Expr::Or(a, b) => eval(a, ex) || eval(b, ex),
        Expr::Not(a) => !eval(a, ex),
        Expr::Truthy(field) => match resolve(field, ex) {
            Resolved::Text(s) => !s.is_empty() && s != "false",
            Resolved::Number(n) => n != 0.0,
            Resolved::Missing => false,
        },
        Expr::Compare(field, op, value) => compare(&resolve(field, ex), *op, value, field == &Field::Method),
    }
}

fn compare(actual: &Resolved, op: Op, expected: &Value, ignore_case: bool) -> bool {
    use std::cmp::Ordering;
    let ordering = match (actual, expected) {
        (_, Value::Regex(re)) => {
            let text = match actual {
                Resolved::Text(s) => s.clone(),
                Resolved::Number(n) => n.to_string(),
                Resolved::Missing => String::new(),
            };
            let hit = re.is_match(&text);
            return if op == Op::Match { hit } else { !hit };
        }
        (Resolved::Missing, _) => return op == Op::Ne,
        (Resolved::Number(n), Value::StatusClass(c)) => {
            let hit = (*n as u16) / 100 == *c;
            return match op {
                Op::Eq => hit,
                Op::Ne => !hit,
                _ => false,
            };
        }
        (Resolved::Number(a), Value::Number(b)) => a.partial_cmp(b),
        (Resolved::Number(a), Value::Text(b)) => match b.parse::<f64>() {
            Ok(b) => a.partial_cmp(&b),
            Err(_) => Some(a.to_string().as_str().cmp(b.as_str())),
        },
        (Resolved::Text(a), Value::Number(b)) => match a.parse::<f64>() {
            Ok(a) => a.partial_cmp(b),
            Err(_) => Some(a.as_str().cmp(b.to_string().as_str())),
        },
        (Resolved::Text(a), Value::Text(b)) if ignore_case => Some(a.to_ascii_uppercase().cmp(&b.to_ascii_uppercase())),
        (Resolved::Text(a), Value::Text(b)) => Some(a.as_str().cmp(b.as_str())),
        (Resolved::Text(_), Value::StatusClass(_)) => return op == Op::Ne,
    };
    let Some(ordering) = ordering else { return false };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Match | Op::NotMatch => false,
    }
}

fn ms(ns: Option<u64>) -> Resolved {
    ns.map_or(Resolved::Missing, |n| Resolved::Number(n as f64 / 1e6))
}

fn resolve(field: &Field, ex: &Exchange) -> Resolved {
    let text = |s: &str| Resolved::Text(s.to_string());
    match field {
        Field::Method => text(&ex.request.method),
        Field::Path => text(ex.request.path()),
        Field::Query => text(ex.request.query().unwrap_or("")),
        Field::Target => text(&ex.request.target),
        Field::Route => Resolved::Text(route::template(&ex.request.target)),
        Field::Host => text(&ex.request.authority),
        Field::Scheme => text(&ex.request.scheme),
        Field::Version => text(ex.request.version.as_str()),
        Field::Status => ex.status().map_or(Resolved::Missing, |s| Resolved::Number(f64::from(s))),
        Field::DurationMs => ms(ex.timing.end_ns),
        Field::HeadMs => ms(ex.timing.head_ns),
        Field::Error => text(ex.error.map_or("", |e| e.as_str())),
        Field::Session => text(ex.session.as_deref().unwrap_or("")),
        Field::Sequence => Resolved::Number(f64::from(ex.sequence)),
        Field::Truncated => {
            let t = ex.request.body.truncated || ex.response.as_ref().is_some_and(|r| r.body.truncated);
            text(if t { "true" } else { "false" })
        }
        Field::Id => Resolved::Text(ex.id.to_string()),
        Field::Connection => Resolved::Text(ex.connection.to_string()),
        Field::ReqHeader(name) => {
            ex.request.headers.get(name).map_or(Resolved::Missing, |v| Resolved::Text(v.to_str_lossy().into_owned()))
        }
        Field::RespHeader(name) => ex
            .response
            .as_ref()
            .and_then(|r| r.headers.get(name))
            .map_or(Resolved::Missing, |v| Resolved::Text(v.to_str_lossy().into_owned())),
        Field::ReqBody => Resolved::Text(ex.request.body.data.to_str_lossy().into_owned()),
        Field::RespBody => {
            ex.response.as_ref().map_or(Resolved::Missing, |r| Resolved::Text(r.body.data.to_str_lossy().into_owned()))
        }
    }
}

fn field_named(name: &str) -> Option<Field> {
    let lower = name.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("req.header.").or_else(|| lower.strip_prefix("request.header.")) {
        return (!h.is_empty()).then(|| Field::ReqHeader(h.to_string()));
    }
    if let Some(h) = lower.strip_prefix("resp.header.").or_else(|| lower.strip_prefix("response.header.")) {
        return (!h.is_empty()).then(|| Field::RespHeader(h.to_string()));
    }
    Some(match lower.as_str() {
        "method" => Field::Method,
        "path" => Field::Path,
        "query" => Field::Query,
        "target" | "url" => Field::Target,
        "route" => Field::Route,
        "host" | "authority" => Field::Host,
        "scheme" => Field::Scheme,
        "version" => Field::Version,
        "status" => Field::Status,
        "duration_ms" | "latency_ms" => Field::DurationMs,
        "head_ms" | "ttfb_ms" => Field::HeadMs,
        "error" => Field::Error,
        "session" => Field::Session,
        "sequence" | "seq" => Field::Sequence,
        "truncated" => Field::Truncated,
        "id" => Field::Id,
        "connection" => Field::Connection,
        "req.body" | "request.body" => Field::ReqBody,
        "resp.body" | "response.body" => Field::RespBody,
        _ => return None,
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Word,
    Quoted,
    Op,
    LParen,
    RParen,
    And,
    Or,
    Not,
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    text: String,
    column: usize,
}

fn tokenize(source: &str) -> Result<Vec<Token>, FilterError> {
    let err = |column: usize, message: String| FilterError { expression: source.to_string(), message, column };
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (_, c) = chars[i];
        let column = i + 1;
        let two: String = chars[i..].iter().take(2).map(|(_, c)| *c).collect();
        let mut push = |kind: Kind, text: String, len: usize| {
            tokens.push(Token { kind, text, column });
            i += len;
        };
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => push(Kind::LParen, "(".into(), 1),
            ')' => push(Kind::RParen, ")".into(), 1),
            _ if two == "&&" => push(Kind::And, two, 2),
            _ if two == "||" => push(Kind::Or, two, 2),
            _ if matches!(two.as_str(), "==" | "!=" | "<=" | ">=" | "!~") => push(Kind::Op, two, 2),
            '<' | '>' | '~' => push(Kind::Op, c.to_string(), 1),
            '=' => push(Kind::Op, "==".into(), 1),
            '!' => push(Kind::Not, "!".into(), 1),
            '"' | '\'' => {
                let mut text = String::new();
                let mut j = i + 1;
                let mut closed = false;
                while j < chars.len() {
                    let (_, d) = chars[j];
                    if d == '\\' && j + 1 < chars.len() {
                        text.push(chars[j + 1].1);
                        j += 2;
                        continue;
                    }
                    if d == c {
                        closed = true;
                        break;
                    }
                    text.push(d);
                    j += 1;
                }
                if !closed {
                    return Err(err(column, format!("unterminated string starting with {c}")));
                }
                tokens.push(Token { kind: Kind::Quoted, text, column });
                i = j + 1;
            }
            _ => {
                // A value after an operator runs to the next space or ')', so values such
                // as `x=1` or `a|b` need no quotes; a field name stops at any operator.
                let after_op = tokens.last().is_some_and(|t| t.kind == Kind::Op);
                let stops: &str = if after_op { ")" } else { "()<>=!~&|\"'" };
                let mut j = i;
                while j < chars.len() && !chars[j].1.is_whitespace() && !stops.contains(chars[j].1) {
                    j += 1;
                }
                let text: String = chars[i..j].iter().map(|(_, c)| *c).collect();
                let kind = match text.to_ascii_lowercase().as_str() {
                    _ if after_op => Kind::Word,
                    "and" => Kind::And,
                    "or" => Kind::Or,
                    "not" => Kind::Not,
                    _ => Kind::Word,
                };
                if j == i {
                    return Err(err(column, format!("unexpected character {c:?}")));
                }
                tokens.push(Token { kind, text, column });
                i = j;
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    source: &'a str,
}

impl Parser<'_> {
    fn error(&self, column: usize, message: String) -> FilterError {
        FilterError { expression: self.source.to_string(), message, column }
    }

    fn end_column(&self) -> usize {
        self.source.chars().count() + 1
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, kind: Kind) -> bool {
        if self.peek().is_some_and(|t| t.kind == kind) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.eat(Kind::Or) {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.eat(Kind::And) {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat(Kind::Not) {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat(Kind::LParen) {
            let inner = self.or()?;
            if !self.eat(Kind::RParen) {
                let col = self.peek().map_or(self.end_column(), |t| t.column);
                return Err(self.error(col, "expected ')'".into()));
            }
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.error(self.end_column(), "expected a field such as status, method or route".into()));
        };
        if tok.kind != Kind::Word {
            return Err(self.error(tok.column, format!("expected a field, found {:?}", tok.text)));
        }
        let field = field_named(&tok.text).ok_or_else(|| {
            self.error(tok.column, format!("unknown field {:?} (see `tapedeck cat --help` for the list)", tok.text))
        })?;
        self.pos += 1;
        let Some(op_tok) = self.peek().filter(|t| t.kind == Kind::Op).cloned() else {
            return Ok(Expr::Truthy(field));
        };
        self.pos += 1;
        let op = match op_tok.text.as_str() {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "~" => Op::Match,
            _ => Op::NotMatch,
        };
        let Some(value_tok) = self.peek().filter(|t| matches!(t.kind, Kind::Word | Kind::Quoted)).cloned() else {
            let col = self.peek().map_or(self.end_column(), |t| t.column);
            return Err(self.error(col, format!("expected a value after {:?}", op_tok.text)));
        };
        self.pos += 1;
        let text = value_tok.text;
        let value = if matches!(op, Op::Match | Op::NotMatch) {
            Value::Regex(Regex::new(&text).map_err(|e| self.error(value_tok.column, format!("invalid regex: {e}")))?)
        } else if field == Field::Status && is_status_class(&text) {
            Value::StatusClass(u16::from(text.as_bytes()[0] - b'0'))
        } else if value_tok.kind == Kind::Word && text.parse::<f64>().is_ok_and(f64::is_finite) {
            Value::Number(text.parse().unwrap_or_default())
        } else {
            Value::Text(text)
        };
        if matches!(value, Value::StatusClass(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(self.error(op_tok.column, "a status class such as 5xx only works with == and !=".into()));
        }
        Ok(Expr::Compare(field, op, value))
    }
}

fn is_status_class(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3
        && (b'1'..=b'5').contains(&b[0])
        && b[1].eq_ignore_ascii_case(&b'x')
        && b[2].eq_ignore_ascii_case(&b'x')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::*;

    fn ex(method: &str, target: &str, status: Option<u16>, ms: u64) -> Exchange {
        let mut headers = Headers::new();
        headers.push("Content-Type", "application/json");
        Exchange {
            id: ExchangeId(1),
            connection: ConnectionId(2),
            session: None,
            sequence: 0,
            timing: Timing { end_ns: Some(ms * 1_000_000), ..Default::default() },
            request: Request {
                method: method.into(),
                target: target.into(),
                authority: "api".into(),
                ..Default::default()
            },
            response: status.map(|s| Response { status: s, headers, ..Default::default() }),
            error: if status.is_none() { Some(ErrorKind::ConnectRefused) } else { None },
            scrub: vec![],
            replay_of: None,
            websocket: None,
        }
    }

    fn m(filter: &str, e: &Exchange) -> bool {
        Filter::parse(filter).unwrap().matches(e)
    }

    #[test]
    fn evaluates_fields_operators_and_logic() {
        let get = ex("GET", "/users/42?x=1", Some(200), 12);
        let post = ex("POST", "/orders", Some(503), 900);
        let down = ex("GET", "/health", None, 0);
        assert!(m("method == get", &get));
        assert!(m("method == POST && status >= 500", &post));
        assert!(!m("method == POST && status >= 500", &get));
        assert!(m("status == 5xx", &post));
        assert!(m("status != 5xx", &get));
        assert!(m("route == '/users/{id}'", &get));
        assert!(m("path ~ ^/users/ and query == x=1", &get));
        assert!(m("duration_ms > 500", &post));
        assert!(m("resp.header.content-type ~ json", &get));
        assert!(m("error", &down));
        assert!(!m("error", &get));
        assert!(m("error == connect_refused", &down));
        assert!(m("not (status < 300) || error", &down));
        assert!(!m("status == 200", &down), "a missing status equals nothing");
        assert!(m("status != 200", &down));
        assert!(m("!truncated", &get));
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = Filter::parse("status >=").unwrap_err();
        assert_eq!(e.column, 10);
        assert!(e.message.contains("expected a value"));
        let e = Filter::parse("colour == red").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        assert_eq!(Filter::parse("(status == 200").unwrap_err().message, "expected ')'");
        assert!(Filter::parse("path ~ '('").unwrap_err().message.contains("invalid regex"));
        assert!(Filter::parse("status < 5xx").is_err());
        assert!(Filter::parse("path == 'open").is_err());
        assert!(Filter::parse("").is_err());
    }
}
