//! From a recorded exchange to the request sent to the target: the target's scheme, host
//! and optional path prefix, `--rewrite-path` rules, the `Host` header policy, header
//! removals and additions (staging credentials: scrubbed tapes hold none), hop-by-hop
//! fields dropped, the recorded body re-framed.
//!
//! Also the guard that refuses to replay at the authority a tape was recorded from —
//! production — unless told to.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use regex::Regex;
use tapedeck_captures::Exchange;

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct Rewrite {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host_value: HeaderValue,
    prefix: String,
    /// Send the recorded `Host` instead of the target's.
    pub keep_host: bool,
    /// Headers to drop (before `set`).
    pub remove: Vec<HeaderName>,
    /// Headers to set, replacing any recorded ones.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Regex rewrites of the path and query, applied in order.
    pub paths: Vec<(Regex, String)>,
    /// Send recorded credentials and client addresses as recorded (see [`is_withheld`]).
    pub keep_credentials: bool,
    /// Requests sent without some recorded credential or client address (shared by clones).
    pub withheld: std::sync::Arc<std::sync::atomic::AtomicU64>,
    guard: std::sync::Arc<TargetGuard>,
}

/// Decides whether a recorded authority is the target under another spelling
/// (`localhost` for `127.0.0.1`, `127.1`, `[::ffff:127.0.0.1]`, a DNS name of the same
/// address): both are resolved and their addresses compared. Each recorded authority is
/// resolved once.
#[derive(Debug, Default)]
struct TargetGuard {
    target: std::sync::OnceLock<Vec<std::net::SocketAddr>>,
    decided: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

/// `localhost`, `*.localhost` or an address literal in any spelling getaddrinfo takes.
fn local_spelling(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || (!h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'x')))
}

/// True when connecting to `a` and to `b` reaches the same listener: the same address and
/// port, or a wildcard address (`0.0.0.0`, `[::]`; connecting to one reaches this machine)
/// and a loopback or wildcard one on the same port.
fn same_socket(a: &std::net::SocketAddr, b: &std::net::SocketAddr) -> bool {
    let (x, y) = (a.ip(), b.ip());
    let local = |ip: std::net::IpAddr| ip.is_unspecified() || ip.is_loopback();
    a.port() == b.port() && (x == y || (x.is_unspecified() && local(y)) || (y.is_unspecified() && local(x)))
}

/// The addresses `host:port` resolves to, IPv4-mapped IPv6 written as IPv4; empty if it
/// does not resolve within two seconds (a production name the replay host cannot
/// resolve is not the target it can reach).
fn resolve(host: &str, port: u16) -> Vec<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    // getaddrinfo cannot be given a timeout: a thread that may outlive the wait.
    std::thread::spawn(move || {
        let _ = tx.send((host.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    rx.recv_timeout(std::time::Duration::from_secs(2))
        .ok()
        .and_then(Result::ok)
        .map(|addrs| {
            addrs
                .into_iter()
                .map(|a| match a.ip() {
                    std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => std::net::SocketAddr::new(v4.into(), a.port()),
                        None => a,
                    },
                    _ => a,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fields never sent as recorded: connection-level, or recomputed from the body.
const DROP: [&str; 10] = {
    let c = tapedeck_net::headers::CONNECTION_SPECIFIC;
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], "content-length", "expect", "host"]
};

/// True for a recorded field a replay does not send unless told to (`--keep-credentials`):
/// credentials (`Authorization`, `Cookie`, API keys, session and CSRF tokens, identities
/// vouched for by a proxy: production's own on an unscrubbed tape, useless pseudonyms on a
/// scrubbed one; `--set-header` supplies staging's) and client addresses.
pub fn is_withheld(name: &str) -> bool {
    tapedeck_captures::scrub::is_credential_header(name) || tapedeck_captures::scrub::is_client_address_header(name)
}

/// `target` (`/path;params?query`) without the credentials it carries: query parameters
/// named as credentials ([`tapedeck_captures::scrub::is_credential_param`]) and path
/// parameters (`;jsessionid=…`) are left out; `None` when it carries none.
pub fn without_credential_params(target: &str) -> Option<String> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let name_of = |pair: &str| {
        let name = pair.split('=').next().unwrap_or(pair);
        percent_encoding::percent_decode_str(name).decode_utf8_lossy().into_owned()
    };
    let mut changed = false;
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| match segment.split_once(';') {
            Some((head, params))
                if params.split(';').any(|p| tapedeck_captures::scrub::is_credential_param(&name_of(p))) =>
            {
                changed = true;
                head
            }
            _ => segment,
        })
        .collect();
    let mut out = segments.join("/");
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let credential = tapedeck_captures::scrub::is_credential_param(&name_of(pair));
                changed |= credential;
                !credential
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    changed.then_some(out)
}

/// What of a credential header's value `now` the target issued (`issued`: the values
/// correlation put in): of a cookie header, the cookies whose value is nothing but issued
/// values; of any other, the whole value if, but for an authentication scheme (`Bearer`)
/// and separators, it is nothing but issued values. Anything else in it is production's.
fn issued_by_target(name: &str, now: &str, issued: &[String]) -> Option<String> {
    let mut issued: Vec<&str> = issued.iter().map(String::as_str).filter(|v| !v.is_empty()).collect();
    issued.sort_by_key(|v| std::cmp::Reverse(v.len()));
    // Only issued values and separators: nothing of production's left.
    let only_issued = |v: &str| {
        let mut rest = v.to_string();
        let mut found = false;
        for i in &issued {
            if rest.contains(i) {
                found = true;
                rest = rest.replace(i, "");
            }
        }
        found && !rest.chars().any(|c| c.is_alphanumeric())
    };
    if name.eq_ignore_ascii_case("cookie") || name.eq_ignore_ascii_case("cookie2") {
        let kept: Vec<&str> = now
            .split([';', ','])
            .map(str::trim)
            // A cookie's name is a token; words before it are production's text.
            .filter(|pair| {
                pair.split_once('=').is_some_and(|(n, v)| {
                    !n.is_empty() && n.len() <= 64 && !n.contains(char::is_whitespace) && only_issued(v)
                })
            })
            .collect();
        return (!kept.is_empty()).then(|| kept.join("; "));
    }
    const SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate", "ntlm", "jwt", "dpop", "mac"];
    let credentials = match now.split_once(' ') {
        Some((scheme, rest)) if SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)) => rest,
        _ => now,
    };
    only_issued(credentials).then(|| now.to_string())
}

/// A `--set-header` or `--rewrite-path` rule that does not parse (a header value is never
/// shown: it is a credential more often than not).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(String);

/// Parses `K: V` for `--set-header`, expanding `${VAR}` from the environment so
/// credentials need not appear on the command line.
pub fn parse_set_header(s: &str) -> Result<(HeaderName, HeaderValue), RuleError> {
    // The value is a credential more often than not: never echoed, the name at most.
    let (name, value) = s.split_once(':').ok_or_else(|| {
        RuleError("--set-header: expected 'Name: value' (no ':' found; the value is not shown)".into())
    })?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        let shown: String = name.trim().chars().take(40).collect();
        RuleError(format!("--set-header {shown:?}: invalid header name"))
    })?;
    let mut expanded = String::new();
    let mut rest = value.trim();
    while let Some(i) = rest.find("${") {
        expanded.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| RuleError(format!("--set-header {name}: unclosed ${{")))?;
        let var = &rest[i + 2..i + end];
        let v = std::env::var(var)
            .map_err(|_| RuleError(format!("--set-header {name}: environment variable {var} is not set")))?;
        expanded.push_str(&v);
        rest = &rest[i + end + 1..];
    }
    expanded.push_str(rest);
    let value = HeaderValue::from_str(&expanded)
        .map_err(|_| RuleError(format!("--set-header {name}: the value is not a valid header value")))?;
    Ok((name, value))
}

/// Parses `REGEX=REPLACEMENT` for `--rewrite-path` (`$1` refers to groups).
pub fn parse_path_rule(s: &str) -> Result<(Regex, String), RuleError> {
    let (re, rep) =
        s.split_once('=').ok_or_else(|| RuleError(format!("--rewrite-path {s:?}: expected REGEX=REPLACEMENT")))?;
    let re = Regex::new(re).map_err(|e| RuleError(format!("--rewrite-path {s:?}: {e}")))?;
    Ok((re, rep.to_string()))
}

impl Rewrite {
    /// Sends to `target` (`http(s)://host[:port][/prefix]`).
    pub fn new(target: &Uri) -> Result<Rewrite, String> {
        let scheme = target.scheme().cloned().ok_or_else(|| format!("--target {target}: needs http:// or https://"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("--target {target}: only http and https are supported"));
        }
        let authority = target.authority().cloned().ok_or_else(|| format!("--target {target}: needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(tapedeck_captures::scrub::userinfo_refused(
                "--target",
                &target.to_string(),
                "send staging's credentials with --set-header 'Authorization: Basic ${STAGING_BASIC}'",
            ));
        }
        let host_value = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        Ok(Rewrite {
            scheme,
            authority,
            host_value,
            prefix: target.path().trim_end_matches('/').to_string(),
            keep_host: false,
            remove: Vec::new(),
            set: Vec::new(),
            paths: Vec::new(),
            keep_credentials: false,
            withheld: Default::default(),
            guard: Default::default(),
        })
    }

    /// The target's host.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The target's port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// True for an https target.
    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// True when `authority` (as recorded, e.g. `api.example.com` or `10.0.0.1:8080`)
    /// names the target — replaying there would hit the recorded service. Spelled
    /// differently (`localhost`, `127.0.0.01`, a name for the same address), it is
    /// recognised by resolving both sides once.
    pub fn is_target(&self, authority: &str, recorded_scheme: &str) -> bool {
        let Ok(a) = authority.parse::<http::uri::Authority>() else { return false };
        let default = if recorded_scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
        let port = a.port_u16().unwrap_or(default);
        if a.host().eq_ignore_ascii_case(self.authority.host()) {
            return port == self.port();
        }
        // Only spellings of local names and address literals are resolved (`127.1`,
        // `0x7f.1`, `[::ffff:127.0.0.1]`, `localhost.`): a production name is not looked
        // up on the replay host (slow, and it could not be the target's spelling anyway).
        if !local_spelling(a.host()) {
            return false;
        }
        let key = format!("{}:{port}", a.host().to_ascii_lowercase());
        let mut decided = self.guard.decided.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = decided.get(&key) {
            return *known;
        }
        let target = self.guard.target.get_or_init(|| resolve(self.authority.host(), self.port()));
        let same = resolve(a.host(), port).iter().any(|addr| target.iter().any(|t| same_socket(addr, t)));
        // Bounded: a tape with ever new authorities is decided again, not remembered.
        if decided.len() < 1024 {
            decided.insert(key, same);
        }
        same
    }

    /// The request to send for `ex`.
    pub fn request(&self, ex: &Exchange) -> Result<Request<Full<Bytes>>, String> {
        self.request_keeping(ex, &[])
    }

    /// The request to send for `ex`. `own` lists the headers correlation put the target's
    /// own values into (a session token staging issued in this run), with those values: of
    /// a withheld header, only what the target issued is sent.
    pub fn request_keeping(&self, ex: &Exchange, own: &[(usize, Vec<String>)]) -> Result<Request<Full<Bytes>>, String> {
        let req = &ex.request;
        let method =
            Method::from_bytes(req.method.as_bytes()).map_err(|_| format!("invalid method {:?}", req.method))?;
        let mut target = if req.target.starts_with('/') { req.target.clone() } else { format!("/{}", req.target) };
        for (re, rep) in &self.paths {
            if let std::borrow::Cow::Owned(new) = re.replace_all(&target, rep.as_str()) {
                target = new;
            }
        }
        let pq = format!("{}{target}", self.prefix);
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq.as_str())
            .build()
            .map_err(|e| format!("cannot build a URL from {pq:?}: {e}"))?;
        let mut builder = Request::builder().method(method).uri(uri);
        let headers = builder.headers_mut().ok_or("invalid request")?;
        let mut withheld = false;
        for (i, h) in req.headers.iter().enumerate() {
            let Ok(name) = HeaderName::from_bytes(&h.name) else { continue };
            // `TE: trailers` is what a gRPC client says; other TE values are this hop's.
            let te_trailers = name == header::TE && h.value[..].eq_ignore_ascii_case(b"trailers");
            if (DROP.contains(&name.as_str()) && !te_trailers) || h.name.starts_with(b":") {
                continue;
            }
            if !self.keep_credentials && is_withheld(name.as_str()) {
                withheld = true;
                let issued = own.iter().find(|(at, _)| *at == i).and_then(|(_, values)| {
                    issued_by_target(name.as_str(), std::str::from_utf8(&h.value).ok()?, values)
                });
                if let Some(value) = issued.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    headers.append(name, value);
                }
                continue;
            }
            if let Ok(value) = HeaderValue::from_bytes(&h.value) {
                headers.append(name, value);
            }
        }
        let recorded_host = req
            .headers
            .get("host")
            .and_then(|v| HeaderValue::from_bytes(v).ok())
            .or_else(|| HeaderValue::from_str(&req.authority).ok());
        let host = match (self.keep_host, recorded_host) {
            (true, Some(h)) => h,
            _ => self.host_value.clone(),
        };
        headers.insert(header::HOST, host);
        for name in &self.remove {
            headers.remove(name);
        }
        if withheld {
            self.withheld.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        builder.body(Full::new(req.body.data.bytes())).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_captures::{Body, Headers, Request as Recorded};

    fn recorded() -> Exchange {
        let mut h = Headers::new();
        h.push("host", "api.shop.example");
        h.push("connection", "keep-alive");
        h.push("content-length", "999");
        h.push("authorization", "Bearer tok_authorization_0123456789abcdef");
        h.push("x-trace", "1");
        Exchange {
            request: Recorded {
                method: "POST".into(),
                scheme: "https".into(),
                authority: "api.shop.example".into(),
                target: "/api/v1/orders?x=1".into(),
                headers: h,
                body: Body::full(&b"{}"[..]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn recorded_credentials_are_withheld_unless_kept_or_issued_by_the_target() {
        let mut rw = Rewrite::new(&"http://staging:8080".parse().unwrap()).unwrap();
        let mut ex = recorded();
        ex.request.headers.push("Cookie", "sid=abc");
        ex.request.headers.push("X-Forwarded-For", "203.0.113.9");
        let sent = rw.request(&ex).unwrap();
        for name in ["authorization", "cookie", "x-forwarded-for"] {
            assert!(sent.headers().get(name).is_none(), "{name}");
        }
        assert_eq!(sent.headers()["x-trace"], "1");
        assert_eq!(rw.withheld.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Correlation put staging's own session into the cookie (index 5): that cookie is
        // sent, production's others are not.
        let issued = |v: &str| vec![v.to_string()];
        for (cookie, sent_cookie) in [
            ("sid=abc; remember_me=PRODREMEMBER123", Some("sid=abc")),
            ("sid=abc, remember=PRODREMEMBER999", Some("sid=abc")),
            ("sid=abc|PRODHMAC5555", None),
            ("backup=abc:PRODEXTRA888", None),
            ("PRODNAMELEAK sid=abc", None),
            ("remember=abc.PRODREMEMBER999; sid=abc", Some("sid=abc")),
        ] {
            ex.request.headers.set("cookie", cookie);
            let sent = rw.request_keeping(&ex, &[(5, issued("abc"))]).unwrap();
            assert_eq!(sent.headers().get("cookie").map(|v| v.to_str().unwrap()), sent_cookie, "{cookie}");
        }
        assert!(rw.request_keeping(&ex, &[(5, issued("abc"))]).unwrap().headers().get("authorization").is_none());
        // A bearer token replaced whole is staging's; anything of production's beside it is not.
        ex.request.headers.set("authorization", "Bearer STAGINGTOKEN99");
        let own = [(3, issued("STAGINGTOKEN99"))];
        assert_eq!(rw.request_keeping(&ex, &own).unwrap().headers()["authorization"], "Bearer STAGINGTOKEN99");
        for value in [
            "Bearer STAGINGTOKEN99 PRODX",
            "Bearer STAGINGTOKEN99.PRODSIGNATURE12345",
            "Prodalphasecretkey STAGINGTOKEN99",
        ] {
            ex.request.headers.set("authorization", value);
            assert!(rw.request_keeping(&ex, &own).unwrap().headers().get("authorization").is_none(), "{value}");
        }
        rw.keep_credentials = true;
        let sent = rw.request(&ex).unwrap();
        assert!(sent.headers().contains_key("authorization") && sent.headers().contains_key("x-forwarded-for"));
        assert_eq!(rw.withheld.load(std::sync::atomic::Ordering::Relaxed), 12);
        let creds = Rewrite::new(&"http://u:pw-123@staging".parse().unwrap()).unwrap_err();
        assert!(!creds.contains("pw-123") && creds.contains("--set-header"), "{creds}");
    }

    #[test]
    fn builds_the_target_request() {
        let mut rw = Rewrite::new(&"http://staging:8080/base/".parse().unwrap()).unwrap();
        rw.remove.push(HeaderName::from_static("x-trace"));
        std::env::set_var("TAPEDECK_TEST_TOKEN", "s3cret");
        rw.set.push(parse_set_header("Authorization: Bearer ${TAPEDECK_TEST_TOKEN}").unwrap());
        rw.paths.push(parse_path_rule("^/api/v1/=/api/v2/").unwrap());
        let req = rw.request(&recorded()).unwrap();
        assert_eq!(req.uri().to_string(), "http://staging:8080/base/api/v2/orders?x=1");
        let h = req.headers();
        assert_eq!(h["host"], "staging:8080");
        assert_eq!(h["authorization"], "Bearer s3cret");
        assert!(h.get("x-trace").is_none() && h.get("connection").is_none() && h.get("content-length").is_none());
        rw.keep_host = true;
        assert_eq!(rw.request(&recorded()).unwrap().headers()["host"], "api.shop.example");
    }

    #[test]
    fn recognises_the_recorded_service() {
        let rw = Rewrite::new(&"https://api.shop.example".parse().unwrap()).unwrap();
        assert!(rw.is_target("api.shop.example", "https"));
        assert!(rw.is_target("API.shop.example:443", "http"));
        assert!(!rw.is_target("api.shop.example", "http"), "port 80 is another listener");
        let local = Rewrite::new(&"http://127.0.0.1:9000".parse().unwrap()).unwrap();
        assert!(!local.is_target("127.0.0.1:8000", "http"), "same host, other port: fine");
        // The same address spelled otherwise is still the recorded service.
        for spelling in
            ["localhost:9000", "LOCALHOST.:9000", "127.1:9000", "127.0.0.01:9000", "[::ffff:127.0.0.1]:9000"]
        {
            assert!(local.is_target(spelling, "http"), "{spelling}");
        }
        assert!(!local.is_target("localhost:8000", "http"));
        assert!(!local.is_target("127.0.0.2:9000", "http"));
        let by_name = Rewrite::new(&"http://localhost:9000".parse().unwrap()).unwrap();
        assert!(by_name.is_target("127.0.0.1:9000", "http"));
        // Connecting to a wildcard address reaches this machine.
        let wildcard = Rewrite::new(&"http://0.0.0.0:9000".parse().unwrap()).unwrap();
        for spelling in ["127.0.0.1:9000", "localhost:9000", "[::]:9000", "0:9000"] {
            assert!(wildcard.is_target(spelling, "http"), "{spelling}");
        }
        assert!(!wildcard.is_target("127.0.0.1:8000", "http"));
        assert!(local.is_target("0.0.0.0:9000", "http"));
        assert!(Rewrite::new(&"http://[::]:9000".parse().unwrap()).unwrap().is_target("[::1]:9000", "http"));
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(parse_set_header("no colon").is_err());
        assert!(parse_set_header("X: ${TAPEDECK_SURELY_UNSET_VAR}").unwrap_err().to_string().contains("not set"));
        assert!(parse_path_rule("(=x").is_err());
        assert!(Rewrite::new(&"ftp://x".parse().unwrap()).is_err());
    }
}
