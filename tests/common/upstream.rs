//! A small blocking HTTP/1.1 upstream for end-to-end tests of the binary: `/delay/MS`
//! waits, `/size/N` answers N bytes, `/echo` answers with the request's body,
//! `Content-Type` and `Content-Encoding` (and the request's cookies as `Set-Cookie`), anything
//! else answers `ok`. Keep-alive supported. Every request is logged (`Upstream::seen`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Upstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
}

/// A request the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A request as [`serve`] read it.
pub struct Incoming {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An answer for [`serve`] to write: status, header lines (each ending in CRLF; not
/// Content-Length, which it adds) and body.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

pub type Handler = Arc<dyn Fn(&Incoming) -> Reply + Send + Sync>;

/// A small keep-alive HTTP/1.1 server on 127.0.0.1 answering with `handler`, one thread
/// per connection (`Content-Length` bodies; `Connection: close` honoured). It lives as long
/// as the test process.
pub fn serve(handler: Handler) -> SocketAddr {
    serve_logged(None, handler)
}

/// [`serve`], logging each request into `log` as soon as its head is read (a request whose
/// body never comes whole is logged too).
fn serve_logged(log: Option<Arc<Mutex<Vec<Seen>>>>, handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (handler, log) = (handler.clone(), log.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let _ = writer.set_nodelay(true);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let method = line.split_whitespace().next().unwrap_or("").to_string();
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((n, v)) = h.split_once(':') {
                            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
                    let len = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0usize);
                    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    if let Some(log) = &log {
                        log.lock().unwrap().push(Seen {
                            method: method.clone(),
                            path: path.clone(),
                            headers: headers.clone(),
                        });
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = handler(&Incoming { method, path, headers, body });
                    let reason = http::StatusCode::from_u16(reply.status).ok().and_then(|s| s.canonical_reason());
                    let head = format!(
                        "HTTP/1.1 {} {}\r\n{}Content-Length: {}\r\n\r\n",
                        reply.status,
                        reason.unwrap_or("X"),
                        reply.headers,
                        reply.body.len()
                    );
                    if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&reply.body)).is_err() || close
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

impl Upstream {
    pub fn start() -> Upstream {
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = serve_logged(
            Some(log.clone()),
            Arc::new(move |req: &Incoming| {
                let path = req.path.as_str();
                let mut headers = String::new();
                let body = if path.starts_with("/echo") {
                    // In the order they came.
                    for (n, v) in &req.headers {
                        match n.as_str() {
                            "content-type" => headers.push_str(&format!("Content-Type: {v}\r\n")),
                            "content-encoding" => headers.push_str(&format!("Content-Encoding: {v}\r\n")),
                            "cookie" => {
                                for cookie in v.split(';') {
                                    headers.push_str(&format!("Set-Cookie: {}; Path=/; HttpOnly\r\n", cookie.trim()));
                                }
                            }
                            _ => {}
                        }
                    }
                    req.body.clone()
                } else if let Some(ms) = path.strip_prefix("/delay/") {
                    std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                    b"slept".to_vec()
                } else if let Some(n) = path.strip_prefix("/size/") {
                    vec![b'z'; n.parse().unwrap_or(0)]
                } else {
                    b"ok".to_vec()
                };
                if headers.is_empty() {
                    headers = "Content-Type: text/plain\r\n".into();
                }
                Reply { status: 200, headers, body }
            }),
        );
        Upstream { addr, log }
    }

    /// The requests received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One blocking HTTP/1.1 request (Connection: close); returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body_at = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(out.len(), |i| i + 4);
    Ok((status, out[body_at..].to_vec()))
}
