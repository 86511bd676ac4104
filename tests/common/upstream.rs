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

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let method = line.split_whitespace().next().unwrap_or("").to_string();
                        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let mut headers = Vec::new();
                        let mut len = 0usize;
                        let mut echoed = Vec::new();
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
                                if n.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                                for (from, to) in
                                    [("content-type", "Content-Type"), ("content-encoding", "Content-Encoding")]
                                {
                                    if n.eq_ignore_ascii_case(from) {
                                        echoed.push(format!("{to}: {}\r\n", v.trim()));
                                    }
                                }
                                if n.eq_ignore_ascii_case("cookie") {
                                    for cookie in v.split(';') {
                                        echoed.push(format!("Set-Cookie: {}; Path=/; HttpOnly\r\n", cookie.trim()));
                                    }
                                }
                            }
                        }
                        seen.lock().unwrap().push(Seen { method, path: path.clone(), headers });
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let mut extra = String::new();
                        let reply = if path.starts_with("/echo") {
                            extra = echoed.concat();
                            body
                        } else if let Some(ms) = path.strip_prefix("/delay/") {
                            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                            b"slept".to_vec()
                        } else if let Some(n) = path.strip_prefix("/size/") {
                            vec![b'z'; n.parse().unwrap_or(0)]
                        } else {
                            b"ok".to_vec()
                        };
                        if extra.is_empty() {
                            extra = "Content-Type: text/plain\r\n".into();
                        }
                        let head = format!("HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n", reply.len());
                        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&reply)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
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
