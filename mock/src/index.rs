//! Which recorded answer a request gets.
//!
//! Requests are looked up in tiers, each an index, never a scan of the tapes:
//! 1. **exact**: the same method, path, query (parameters in any order) and body (JSON
//!    bodies compared as values, keys in any order);
//! 2. **similar**: the same method and path, or else the same route (`GET /users/{id}`):
//!    the recorded request closest to it wins — most query parameters and JSON body
//!    values alike, then the path's segments — among at most [`MAX_CANDIDATES`] (and
//!    remembered: the same request asked again is not compared again);
//! 3. **unmatched**: nothing recorded for the route.
//!
//! Identical requests recorded several times are one group, answered in recorded order
//! (a sequence: a polled job answers "pending", then "done"); past its end the last
//! answer repeats.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tapedeck_captures::{route, ErrorKind, Exchange};

/// Groups compared for a similar match, at most: the first recorded ones.
pub const MAX_CANDIDATES: usize = 256;

/// Similar matches remembered (a request asked again is not compared again), at most;
/// then forgotten all at once.
const MEMO: usize = 65_536;

/// What a recorded exchange answered.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A response.
    Response {
        /// Its status.
        status: u16,
        /// Its headers (those about the connection, and any a client could not take,
        /// left out; `Content-Length` is set again for the body sent).
        headers: http::HeaderMap,
        /// Its body as recorded (possibly cut at the proxy's `--max-body`).
        body: Bytes,
        /// The body was recorded cut, or scrubbed away.
        cut: bool,
    },
    /// No response: the dependency reset the connection, or never answered in time.
    Failed(ErrorKind),
}

/// One recorded answer and when it came.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `METHOD /template`.
    pub route: String,
    /// What was answered.
    pub answer: Answer,
    /// From the request's start to the response's head.
    pub head: Duration,
    /// From the request's start to its last byte.
    pub end: Duration,
}

/// How a request was matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// The same request was recorded.
    Exact,
    /// A request like it was recorded.
    Similar,
}

/// The answer for a request, or none.
pub enum Match<'a> {
    /// A recorded answer, and how it was found.
    Found(&'a Recorded, MatchKind),
    /// Nothing recorded for the request's route.
    Unmatched {
        /// Its route (`METHOD /template`).
        route: String,
    },
}

/// The recorded requests of one kind, identical, with their answers in recorded order.
struct Group {
    query: Vec<(String, String)>,
    json: Option<serde_json::Value>,
    segments: Vec<String>,
    answers: Vec<usize>,
    next: AtomicUsize,
}

impl Group {
    /// The next answer of the sequence (the last one once past its end).
    fn take(&self) -> usize {
        self.at(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The answer [`take`](Self::take) would give, leaving the sequence where it is.
    fn peek(&self) -> usize {
        self.at(self.next.load(Ordering::Relaxed))
    }

    /// Answer `i` of the sequence (the last one past its end).
    fn at(&self, i: usize) -> usize {
        self.answers[i.min(self.answers.len() - 1)]
    }
}

/// The recorded answers of a dependency, indexed.
#[derive(Default)]
pub struct Index {
    answers: Vec<Recorded>,
    groups: Vec<Group>,
    exact: FxHashMap<u64, usize>,
    by_path: FxHashMap<(String, String), Vec<usize>>,
    by_route: FxHashMap<String, Vec<usize>>,
    /// Each route's recorded end latencies, sorted.
    latencies: FxHashMap<String, Vec<Duration>>,
    /// Which group answered a request like it, by the request's key.
    /// (the group, how many of its answers the request has had: a request like a
    /// recorded sequence walks it on its own, never using up the recorded request's)
    memo: std::sync::Mutex<FxHashMap<u64, (usize, usize)>>,
    /// Exchanges without an answer to give (cut off by the client, WebSocket sessions).
    pub skipped: u64,
    /// Answers whose body was recorded cut (`--max-body`) or scrubbed away: served as kept.
    pub cut: u64,
}

impl Index {
    /// Indexes `exchanges` (in recorded order).
    pub fn build(exchanges: impl IntoIterator<Item = Exchange>) -> Index {
        let mut index = Index::default();
        for exchange in exchanges {
            index.add(exchange);
        }
        for latencies in index.latencies.values_mut() {
            latencies.sort_unstable();
        }
        index
    }

    fn add(&mut self, e: Exchange) {
        let answer = match (&e.response, e.error) {
            _ if e.websocket.is_some() => None,
            (Some(r), None) => Some(Answer::Response {
                cut: r.body.truncated,
                status: r.status,
                headers: r
                    .headers
                    .iter()
                    .filter(|h| !is_framing(&h.name.to_str_lossy()))
                    .filter_map(|h| {
                        Some((
                            http::HeaderName::from_bytes(&h.name).ok()?,
                            http::HeaderValue::from_bytes(&h.value).ok()?,
                        ))
                    })
                    .fold(http::HeaderMap::new(), |mut map, (n, v)| {
                        map.append(n, v);
                        map
                    }),
                body: r.body.data.bytes(),
            }),
            // The client gave up (or the capture stopped): not the dependency's doing.
            (_, Some(ErrorKind::ClientAborted | ErrorKind::Interrupted)) => None,
            (_, Some(kind)) => Some(Answer::Failed(kind)),
            (None, None) => None,
        };
        let Some(answer) = answer else {
            self.skipped += 1;
            return;
        };
        if matches!(answer, Answer::Response { cut: true, .. }) {
            self.cut += 1;
        }
        let method = e.request.method.to_ascii_uppercase();
        let target = e.request.target.as_str();
        let route = route::route_key(&method, target);
        // Both from the request's start.
        let head = Duration::from_nanos(e.timing.head_ns.unwrap_or(0));
        let end = Duration::from_nanos(e.timing.end_ns.or(e.timing.head_ns).unwrap_or(0));
        let at = self.answers.len();
        self.answers.push(Recorded { route: route.clone(), answer, head, end: end.max(head) });
        self.latencies.entry(route.clone()).or_default().push(end.max(head));
        let request = Request::new(&method, target, &e.request.body.data);
        let group = match self.exact.get(&request.key) {
            Some(&g) => g,
            None => {
                let g = self.groups.len();
                let (key, path) = (request.key, request.path.to_string());
                self.groups.push(request.group());
                self.exact.insert(key, g);
                self.by_path.entry((method, path)).or_default().push(g);
                self.by_route.entry(route).or_default().push(g);
                g
            }
        };
        self.groups[group].answers.push(at);
    }

    /// Recorded answers.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when nothing can be answered.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Routes with answers.
    pub fn routes(&self) -> usize {
        self.by_route.len()
    }

    /// The routes with answers (`METHOD /template`).
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.by_route.keys().map(String::as_str)
    }

    /// `route`'s recorded latencies (request start to last byte), sorted.
    pub fn latencies(&self, route: &str) -> &[Duration] {
        self.latencies.get(route).map_or(&[], Vec::as_slice)
    }

    /// The answer for a request. A `HEAD` nothing was recorded for gets the head of the
    /// `GET` that was (without moving that request's sequence on), as a server would.
    pub fn answer(&self, method: &str, target: &str, body: &[u8]) -> Match<'_> {
        let method = method.to_ascii_uppercase();
        match self.lookup(&method, target, body, true) {
            Match::Unmatched { route } if method == "HEAD" => match self.lookup("GET", target, body, false) {
                found @ Match::Found(..) => found,
                Match::Unmatched { .. } => Match::Unmatched { route },
            },
            found => found,
        }
    }

    /// [`answer`](Self::answer) for `method` (upper case); `advance`: move the matched
    /// request's sequence on (and remember a similar match).
    fn lookup(&self, method: &str, target: &str, body: &[u8], advance: bool) -> Match<'_> {
        let request = Request::new(method, target, body);
        if let Some(&g) = self.exact.get(&request.key) {
            let group = &self.groups[g];
            return Match::Found(&self.answers[if advance { group.take() } else { group.peek() }], MatchKind::Exact);
        }
        let route = route::route_key(method, target);
        if let Some((g, taken)) = self.memo.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&request.key) {
            let next = *taken;
            *taken += usize::from(advance);
            return Match::Found(&self.answers[self.groups[*g].at(next)], MatchKind::Similar);
        }
        let candidates = self
            .by_path
            .get(&(method.to_string(), request.path.to_string()))
            .or_else(|| self.by_route.get(&route))
            .map_or(&[][..], Vec::as_slice);
        let best = candidates
            .iter()
            .take(MAX_CANDIDATES)
            .copied()
            // Each scored once; the highest score, the first recorded among equals.
            .map(|g| (request.score(&self.groups[g]), g))
            .max_by(|(a, ga), (b, gb)| a.total_cmp(b).then(gb.cmp(ga)))
            .map(|(_, g)| g);
        match best {
            Some(g) => {
                if advance {
                    let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
                    if memo.len() >= MEMO {
                        memo.clear();
                    }
                    memo.insert(request.key, (g, 1));
                }
                Match::Found(&self.answers[self.groups[g].at(0)], MatchKind::Similar)
            }
            None => Match::Unmatched { route },
        }
    }
}

/// A request as the index sees it (borrowing from the request: a lookup allocates only
/// for a JSON body).
struct Request<'a> {
    key: u64,
    path: &'a str,
    query: Vec<(&'a str, &'a str)>,
    json: Option<serde_json::Value>,
}

impl<'a> Request<'a> {
    fn new(method: &str, target: &'a str, body: &[u8]) -> Request<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = path.split('#').next().unwrap_or_default();
        let mut query: Vec<(&str, &str)> =
            query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
        query.sort_unstable();
        let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'{' | b'['));
        let json = looks_json.then(|| serde_json::from_slice::<serde_json::Value>(body).ok()).flatten();
        let mut h = DefaultHasher::new();
        (method, path, &query).hash(&mut h);
        // JSON as a value (map keys sorted), anything else as bytes.
        match &json {
            Some(v) => v.to_string().hash(&mut h),
            None => body.hash(&mut h),
        }
        Request { key: h.finish(), path, query, json }
    }

    /// The group this request would be, when recorded.
    fn group(self) -> Group {
        Group {
            query: self.query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            json: self.json,
            segments: self.path.split('/').map(str::to_string).collect(),
            answers: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// How alike a recorded group is: query parameters and JSON values alike count
    /// most, then path segments.
    fn score(&self, g: &Group) -> f64 {
        let mut score = 0.0;
        for (k, v) in &self.query {
            if g.query.iter().any(|(gk, gv)| gk == k && gv == v) {
                score += 2.0;
            } else if g.query.iter().any(|(gk, _)| gk == k) {
                score += 1.0;
            }
        }
        score -= 0.5 * g.query.iter().filter(|(gk, _)| !self.query.iter().any(|(k, _)| k == gk)).count() as f64;
        if let (Some(a), Some(b)) = (&self.json, &g.json) {
            score += json_likeness(a, b, 0);
        }
        score + 0.25 * self.path.split('/').zip(&g.segments).filter(|(a, b)| a == b).count() as f64
    }
}

/// Leaves equal count 2, keys present on both sides 1; bounded in depth.
fn json_likeness(a: &serde_json::Value, b: &serde_json::Value, depth: usize) -> f64 {
    use serde_json::Value;
    if depth > 32 {
        return 0.0;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.iter().filter_map(|(k, v)| y.get(k).map(|w| 1.0 + json_likeness(v, w, depth + 1))).sum()
        }
        (Value::Array(x), Value::Array(y)) => x.iter().zip(y).map(|(v, w)| json_likeness(v, w, depth + 1)).sum(),
        (x, y) if x == y => 2.0,
        _ => 0.0,
    }
}

/// Headers about the connection or the body's framing: the mock's own.
fn is_framing(name: &str) -> bool {
    tapedeck_net::headers::is_connection_specific(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_captures::{Body, Exchange, Request as Req, Response};

    fn exchange(method: &str, target: &str, body: &str, status: u16, answer: &str, ms: u64) -> Exchange {
        let mut e = Exchange {
            request: Req {
                method: method.into(),
                target: target.into(),
                body: Body::full(body.to_string()),
                ..Default::default()
            },
            response: Some(Response { status, body: Body::full(answer.to_string()), ..Default::default() }),
            ..Default::default()
        };
        e.timing.head_ns = Some(ms * 1_000_000);
        e.timing.end_ns = Some(ms * 1_000_000);
        e
    }

    fn body(m: Match<'_>) -> (String, Option<MatchKind>) {
        match m {
            Match::Found(r, kind) => match &r.answer {
                Answer::Response { body, .. } => (String::from_utf8_lossy(body).into(), Some(kind)),
                Answer::Failed(k) => (k.as_str().into(), Some(kind)),
            },
            Match::Unmatched { route } => (route, None),
        }
    }

    #[test]
    fn exact_then_similar_then_unmatched_and_sequences_in_order() {
        let index = Index::build([
            exchange("GET", "/jobs/7", "", 200, "pending", 10),
            exchange("GET", "/jobs/7", "", 200, "done", 12),
            exchange("GET", "/users/1?fields=a&lang=en", "", 200, "user 1 en", 5),
            exchange("GET", "/users/1?lang=de", "", 200, "user 1 de", 5),
            exchange("POST", "/charge", r#"{"amount":5,"currency":"EUR","id":"x1"}"#, 200, "eur", 30),
            exchange("POST", "/charge", r#"{"amount":5,"currency":"USD","id":"x2"}"#, 402, "usd", 30),
        ]);
        assert_eq!((index.len(), index.routes()), (6, 3));
        // A sequence, then its last answer again.
        for want in ["pending", "done", "done"] {
            assert_eq!(body(index.answer("GET", "/jobs/7", b"")), (want.into(), Some(MatchKind::Exact)));
        }
        // Parameters in another order are the same request; JSON keys likewise.
        assert_eq!(body(index.answer("get", "/users/1?lang=en&fields=a", b"")).0, "user 1 en");
        assert_eq!(
            body(index.answer("POST", "/charge", br#"{"id":"x2","currency":"USD","amount":5}"#)),
            ("usd".into(), Some(MatchKind::Exact))
        );
        // Like one recorded: the closest wins.
        assert_eq!(
            body(index.answer("GET", "/users/1?lang=de&x=1", b"")),
            ("user 1 de".into(), Some(MatchKind::Similar))
        );
        assert_eq!(body(index.answer("GET", "/users/2?lang=de", b"")), ("user 1 de".into(), Some(MatchKind::Similar)));
        assert_eq!(body(index.answer("POST", "/charge", br#"{"amount":9,"currency":"USD","id":"new"}"#)).0, "usd");
        // Nothing for the route.
        assert_eq!(body(index.answer("DELETE", "/users/1", b"")), ("DELETE /users/{id}".into(), None));
        assert_eq!(index.latencies("GET /jobs/{id}"), [Duration::from_millis(10), Duration::from_millis(12)]);
        // A request like a recorded sequence walks it on its own.
        let fresh = Index::build([
            exchange("GET", "/jobs/1", "", 200, "pending", 10),
            exchange("GET", "/jobs/1", "", 200, "done", 10),
        ]);
        for (target, want) in
            [("/jobs/2", "pending"), ("/jobs/3", "pending"), ("/jobs/2", "done"), ("/jobs/1", "pending")]
        {
            assert_eq!(body(fresh.answer("GET", target, b"")).0, want, "{target}");
        }
        // A HEAD where only the GET was recorded: that GET's answer, its sequence unmoved.
        let polled = Index::build([
            exchange("GET", "/jobs/1", "", 200, "pending", 10),
            exchange("GET", "/jobs/1", "", 200, "done", 10),
        ]);
        for _ in 0..2 {
            assert_eq!(body(polled.answer("HEAD", "/jobs/1", b"")), ("pending".into(), Some(MatchKind::Exact)));
        }
        assert_eq!(body(polled.answer("GET", "/jobs/1", b"")).0, "pending");
        assert_eq!(body(polled.answer("HEAD", "/jobs/1", b"")).0, "done");
        assert_eq!(body(polled.answer("HEAD", "/jobs/9", b"")), ("pending".into(), Some(MatchKind::Similar)));
        assert_eq!(body(polled.answer("HEAD", "/other", b"")), ("HEAD /other".into(), None));
    }

    #[test]
    fn recorded_failures_are_answers_and_aborted_exchanges_are_not() {
        let mut reset = exchange("GET", "/flaky", "", 0, "", 3);
        reset.response = None;
        reset.error = Some(ErrorKind::Reset);
        let mut aborted = exchange("GET", "/gone", "", 0, "", 3);
        aborted.response = None;
        aborted.error = Some(ErrorKind::ClientAborted);
        let index = Index::build([reset, aborted]);
        assert_eq!((index.len(), index.skipped), (1, 1));
        assert_eq!(body(index.answer("GET", "/flaky", b"")).0, "reset");
    }
}
