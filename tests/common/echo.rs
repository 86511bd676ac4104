//! An httpbin-shaped echo upstream: every answer is a JSON document holding the request —
//! `args` (the query), `form` (urlencoded and multipart fields), `files`, `data` (the raw
//! body as a string), `json` (the body parsed), `headers` (names in their original case),
//! `origin`, `url` — the shape of debug endpoints, webhook delivery logs and gateways'
//! request inspectors. `/xml…` answers the same as XML. A path holding `/gzip` or
//! `/brotli` is compressed that way; `?pretty=1` pretty-prints. With `extra`, every JSON
//! answer also carries that object (staging's own personal data).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use serde_json::{json, Map, Value};

pub struct Echo {
    pub addr: SocketAddr,
}

impl Echo {
    pub fn start(extra: Option<Value>) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let extra = extra.clone();
                std::thread::spawn(move || serve(stream, extra));
            }
        });
        Echo { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn read(reader: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Req { method, target, headers, body: Vec::new() };
    if req.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = req.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        req.body = vec![0; len];
        reader.read_exact(&mut req.body).ok()?;
    }
    Some(req)
}

fn serve(stream: TcpStream, extra: Option<Value>) {
    let peer = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(req) = read(&mut reader) {
        let (content_type, mut body) = answer(&req, &peer, extra.as_ref());
        let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n");
        if req.target.contains("/gzip") {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&body).unwrap();
            body = e.finish().unwrap();
            head.push_str("Content-Encoding: gzip\r\n");
        } else if req.target.contains("/brotli") {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &body[..], &mut out, &Default::default()).unwrap();
            body = out;
            head.push_str("Content-Encoding: br\r\n");
        }
        // Cookies come back as Set-Cookie, as session endpoints do.
        for c in req.header("cookie").unwrap_or("").split(';').filter(|c| c.contains('=')) {
            head.push_str(&format!("Set-Cookie: {}; Path=/; HttpOnly\r\n", c.trim()));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body)).is_err() {
            return;
        }
    }
}

fn pairs(text: &str) -> Map<String, Value> {
    form_urlencoded::parse(text.as_bytes()).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect()
}

/// `(form fields, files)` of a multipart body.
fn multipart(body: &str, boundary: &str) -> (Map<String, Value>, Map<String, Value>) {
    let (mut form, mut files) = (Map::new(), Map::new());
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else { continue };
        let content = content.strip_suffix("\r\n").unwrap_or(content).to_string();
        let param = |key: &str| {
            head.split(';').find_map(|p| p.trim().strip_prefix(key).map(|v| v.trim_matches('"').to_string()))
        };
        let Some(name) = param("name=") else { continue };
        if param("filename=").is_some() {
            files.insert(name, Value::String(content));
        } else {
            form.insert(name, Value::String(content));
        }
    }
    (form, files)
}

fn answer(req: &Req, peer: &str, extra: Option<&Value>) -> (&'static str, Vec<u8>) {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let ct = req.header("content-type").unwrap_or("").to_ascii_lowercase();
    let text = String::from_utf8_lossy(&req.body).into_owned();
    let (mut form, mut files, mut data, mut parsed) = (Map::new(), Map::new(), String::new(), Value::Null);
    if ct.starts_with("application/x-www-form-urlencoded") {
        form = pairs(&text);
    } else if ct.starts_with("multipart/form-data") {
        let original = req.header("content-type").unwrap_or("");
        let boundary = original.split("boundary=").nth(1).unwrap_or("").trim_matches('"').to_string();
        (form, files) = multipart(&text, &boundary);
    } else {
        data = text.clone();
        parsed = serde_json::from_str(&text).unwrap_or(Value::Null);
    }
    let host = req.header("host").unwrap_or("localhost");
    let origin =
        req.header("x-forwarded-for").map_or(peer.to_string(), |f| f.split(',').next().unwrap().trim().to_string());
    if path.starts_with("/xml") {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<echo>\n  <headers>\n");
        for (n, v) in &req.headers {
            let n = title_case(n);
            xml.push_str(&format!("    <{n}>{}</{n}>\n", esc(v)));
        }
        xml.push_str(&format!(
            "  </headers>\n  <origin>{}</origin>\n  <url>{}</url>\n  <data>{}</data>\n</echo>\n",
            esc(&origin),
            esc(&format!("http://{host}{}", req.target)),
            esc(&data)
        ));
        return ("application/xml; charset=utf-8", xml.into_bytes());
    }
    // Names as httpbin shows them: `X-Api-Key`, `Cookie`.
    let headers: BTreeMap<String, &str> = req.headers.iter().map(|(n, v)| (title_case(n), v.as_str())).collect();
    let mut doc = json!({
        "args": pairs(query),
        "data": data,
        "files": files,
        "form": form,
        "headers": headers,
        "json": parsed,
        "method": req.method,
        "origin": origin,
        "url": format!("http://{host}{}", req.target),
    });
    if let Some(extra) = extra {
        doc["served_by"] = extra.clone();
    }
    let pretty = query.split('&').any(|p| p == "pretty=1");
    let body = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap();
    ("application/json", body)
}

fn title_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
        })
        .collect::<Vec<_>>()
        .join("-")
}
