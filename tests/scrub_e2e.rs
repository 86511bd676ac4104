//! Nothing personal reaches disk: a corpus of generated personal data — names, e-mails,
//! phone numbers, cards, IBANs, addresses, tokens — in headers, cookies, the path, the
//! query, JSON, forms, multipart uploads, text and gzip-compressed bodies, both ways,
//! (names in the fields that hold them: no regex can find a name in free text),
//! goes through `tapedeck proxy`. No planted value may appear anywhere in the bytes of
//! the tape directory, in the decompressed blocks, or in `tapedeck cat --format json`,
//! while non-personal fields survive. `tapedeck scrub --check` agrees, and flags the
//! same traffic captured with `--no-scrub`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::proxy::ProxyProcess;
use common::upstream::Upstream;
use common::*;

fn start_proxy(upstream: &Upstream, dir: &std::path::Path, extra: &[&str]) -> ProxyProcess {
    ProxyProcess::capturing(upstream, dir, extra, None)
}

fn stop(proxy: ProxyProcess) {
    proxy.signal(libc::SIGTERM);
    let (code, stderr) = proxy.wait(Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr:?}");
}

/// A deterministic generator of personal data.
struct Corpus {
    seed: u64,
    planted: Vec<String>,
}

const FIRST: [&str; 6] = ["Marisol", "Thaddeus", "Ingeborg", "Oluwaseun", "Esperanza", "Kazimierz"];
const LAST: [&str; 6] = [
    "Quintero-Haldane",
    "Vanterpool",
    "Abernathy-Nakamura",
    "Okonkwo-Lindqvist",
    "Featherstonehaugh",
    "Brzęczyszczykiewicz",
];

impl Corpus {
    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + (self.next() % 10) as u8)).collect()
    }

    fn plant(&mut self, value: String) -> String {
        self.planted.push(value.clone());
        value
    }

    fn name(&mut self) -> (String, String) {
        let f = FIRST[(self.next() % 6) as usize].to_string();
        let l = LAST[(self.next() % 6) as usize].to_string();
        (self.plant(f), self.plant(l))
    }

    fn email(&mut self, first: &str, last: &str) -> String {
        let n = self.digits(3);
        let local: String =
            format!("{first}.{last}{n}").to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
        self.plant(format!("{local}@mailbox-example.org"))
    }

    fn phone(&mut self) -> String {
        let v = match self.next() % 4 {
            0 => format!("+44 20 7946 {}", self.digits(4)),
            1 => format!("(415) 555-{}", self.digits(4)),
            2 => format!("+49 30 {}", self.digits(6)),
            _ => format!("03-{}-{}", self.digits(4), self.digits(4)),
        };
        self.plant(v)
    }

    fn card(&mut self) -> String {
        let mut digits: Vec<u8> = std::iter::once(4).chain((0..14).map(|_| (self.next() % 10) as u8)).collect();
        let check = (0..10).find(|c| {
            let mut all = digits.clone();
            all.push(*c);
            tapedeck_captures::scrub::detect::luhn(&all)
        });
        digits.push(check.unwrap_or(0));
        let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        self.plant(format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16]))
    }

    fn iban(&mut self) -> String {
        let bban = self.digits(18);
        // ISO 13616 check digits: 98 - (BBAN + "DE00" as digits) mod 97.
        let numeric = format!("{bban}131400");
        let rem = numeric.bytes().fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
        let iban = format!("DE{:02}{bban}", 98 - rem);
        assert!(tapedeck_captures::scrub::detect::is_iban(&iban));
        self.plant(iban)
    }

    fn token(&mut self, prefix: &str, len: usize) -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let s: String =
            (0..len).map(|_| char::from(alphabet[(self.next() % alphabet.len() as u64) as usize])).collect();
        self.plant(format!("{prefix}{s}"))
    }
}

/// One request with headers over a fresh connection; returns the status.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Sends the corpus through the proxy at `addr`; returns the planted values.
fn send_corpus(addr: SocketAddr) -> Vec<String> {
    let mut c = Corpus { seed: 0x5eed_1234_abcd_ef01, planted: Vec::new() };
    for round in 0..4 {
        let (first, last) = c.name();
        let email = c.email(&first, &last);
        let phone = c.phone();
        let card = c.card();
        let iban = c.iban();
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{}.{}", c.token("eyJzdWIi", 24), c.token("", 20));
        c.planted.push(jwt.clone());
        let api_key = c.token("sk_live_", 24);
        let session = c.token("sess", 28);
        let ip = c.plant(format!("198.51.100.{}", 10 + round));
        let street = c.plant(format!("{} Quayside Crescent", 100 + round));
        let password = c.token("Pw!", 14);
        let enc_email: String = form_urlencoded::byte_serialize(email.as_bytes()).collect();
        let enc_phone: String = form_urlencoded::byte_serialize(phone.as_bytes()).collect();

        let headers = vec![
            ("Authorization", format!("Bearer {jwt}")),
            ("Cookie", format!("sid={session}; theme=dark")),
            ("X-Api-Key", api_key.clone()),
            ("X-Forwarded-For", ip.clone()),
        ];
        let target = format!("/users/{enc_email}/orders?email={enc_email}&phone={enc_phone}&page=2");
        assert_eq!(request(addr, "GET", &target, &headers, b""), 200);

        let json = format!(
            r#"{{"user": {{"name": "{first} {last}", "email": "{email}", "phone": "{phone}", "address": {{"street": "{street}", "city": "Porto"}}, "plan": "pro"}},
 "payment": {{"card_number": "{card}", "holder": "{first} {last}"}}, "iban": "{iban}", "password": "{password}",
 "items": [{{"sku": "SKU-77", "qty": 2}}], "warehouse": "Lisbon", "note": "call {phone} or write {email}"}}"#
        );
        let mut h = headers.clone();
        h.push(("Content-Type", "application/json".into()));
        assert_eq!(request(addr, "POST", "/echo", &h, json.as_bytes()), 200);

        let form = format!(
            "email={enc_email}&password={password}&card_number={}&comment=ring+{enc_phone}&size=XL",
            card.replace(' ', "+")
        );
        let mut h = headers.clone();
        h.push(("Content-Type", "application/x-www-form-urlencoded".into()));
        assert_eq!(request(addr, "POST", "/echo", &h, form.as_bytes()), 200);

        let multipart = format!(
            "--B0undary\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n{email}\r\n\
             --B0undary\r\nContent-Disposition: form-data; name=\"full_name\"\r\n\r\n{first} {last}\r\n\
             --B0undary\r\nContent-Disposition: form-data; name=\"bio\"\r\n\r\nReach me on {phone}, IBAN {iban}\r\n\
             --B0undary\r\nContent-Disposition: form-data; name=\"passport\"; filename=\"scan.png\"\r\nContent-Type: image/png\r\n\r\n\
             PNG passport of {first} {last} born 1984 {street}\r\n\
             --B0undary\r\nContent-Disposition: form-data; name=\"profile\"\r\nContent-Type: application/json\r\n\r\n\
             {{\"first_name\": \"{first}\", \"last_name\": \"{last}\", \"tier\": \"gold\"}}\r\n--B0undary--\r\n"
        );
        let mut h = headers.clone();
        h.push(("Content-Type", "multipart/form-data; boundary=B0undary".into()));
        assert_eq!(request(addr, "POST", "/echo", &h, multipart.as_bytes()), 200);

        let mut h = headers.clone();
        h.push(("Content-Type", "application/json".into()));
        h.push(("Content-Encoding", "gzip".into()));
        assert_eq!(request(addr, "POST", "/echo/gzip", &h, &gzip(json.as_bytes())), 200);

        let text = format!("Dear customer,\nyour card {card} and account {iban} are linked to {email} ({phone}).\n");
        let mut h = headers.clone();
        h.push(("Content-Type", "text/plain; charset=utf-8".into()));
        assert_eq!(request(addr, "POST", "/echo", &h, text.as_bytes()), 200);
    }
    c.planted
}

/// Where `needle` (or its URL-encoded form) occurs in `haystack`.
fn leaks<'a>(haystack: &[u8], planted: &'a [String]) -> Vec<&'a str> {
    planted
        .iter()
        .filter(|p| {
            let encoded: String = form_urlencoded::byte_serialize(p.as_bytes()).collect();
            [p.as_bytes(), encoded.as_bytes()].iter().any(|n| haystack.windows(n.len()).any(|w| w == *n))
        })
        .map(String::as_str)
        .collect()
}

/// The decompressed payloads of every block in a segment file, found by their framing.
fn raw_blocks(file: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = file[i..].windows(4).position(|w| w == b"TBLK") {
        let at = i + p;
        let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        if let Some(payload) = file.get(at + 28..at + 28 + len) {
            if let Ok(raw) = zstd::decode_all(payload) {
                out.push(raw);
            }
        }
        i = at + 4;
    }
    out
}

#[test]
fn no_planted_value_reaches_the_tape_and_the_rest_survives() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("scrub.key");
    std::fs::write(&key, "an example key of more than sixteen bytes\n").unwrap();
    let caps = dir.path().join("caps");
    let proxy = start_proxy(&upstream, &caps, &["--scrub-key-file", s(&key)]);
    let planted = send_corpus(proxy.addr);
    std::thread::sleep(Duration::from_millis(100)); // the writer polls its queue
    let metrics = proxy.metrics();
    for rule in ["detect:email", "header:authorization", "json-key:password"] {
        let line = format!("tapedeck_scrub_hits_total{{rule=\"{rule}\"}}");
        assert!(common::proxy::metric(&metrics, &line) > 0.0, "{line} in\n{metrics}");
    }
    stop(proxy);
    assert!(planted.len() > 40);

    let mut files = 0;
    for entry in std::fs::read_dir(&caps).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        assert_eq!(leaks(&bytes, &planted), Vec::<&str>::new(), "planted values in the tape file bytes");
        let blocks = raw_blocks(&bytes);
        assert!(!blocks.is_empty());
        for block in blocks {
            assert_eq!(leaks(&block, &planted), Vec::<&str>::new(), "planted values in a decompressed block");
        }
    }
    assert!(files >= 1);
    let json = ok(&["cat", s(&caps), "--format", "json"]);
    assert_eq!(leaks(json.as_bytes(), &planted), Vec::<&str>::new(), "planted values in cat --format json");

    // What is not personal survives unchanged.
    let exchanges = read_all(&[&caps]);
    assert_eq!(exchanges.len(), 24);
    let bodies: String = exchanges
        .iter()
        .flat_map(|e| [Some(&e.request.body), e.response.as_ref().map(|r| &r.body)])
        .flatten()
        .map(|b| String::from_utf8_lossy(&b.data).into_owned())
        .collect();
    for needle in [
        "\"sku\": \"SKU-77\"",
        "\"qty\": 2",
        "\"warehouse\": \"Lisbon\"",
        "\"plan\": \"pro\"",
        "size=XL",
        "\"tier\": \"gold\"",
    ] {
        assert!(bodies.contains(needle), "{needle} should survive scrubbing");
    }
    let get = exchanges.iter().find(|e| e.request.method == "GET").unwrap();
    assert!(
        get.request.target.ends_with("&page=2") && get.request.target.contains("/orders?"),
        "{}",
        get.request.target
    );
    // One e-mail gets one token wherever it appears: joins survive.
    let token = get.request.target.split("email=").nth(1).unwrap().split('&').next().unwrap();
    assert!(token.starts_with("tok_email_"));
    assert!(get.request.target.starts_with(&format!("/users/{token}/")));
    let gz = exchanges.iter().find(|e| e.request.target == "/echo/gzip").unwrap();
    assert_eq!(gz.request.body.decoded_from.as_deref(), Some("gzip"), "compressed bodies are stored decoded");
    assert!(gz.request.headers.get("content-encoding").is_none());
    let text = String::from_utf8_lossy(&gz.request.body.data);
    assert!(text.contains(token), "the same token in a decompressed JSON body: {text}");

    // The scrub marks and the tape header tell a reviewer what happened.
    let inspect = ok(&["inspect", s(&caps)]);
    assert!(inspect.contains("scrub policy policy:") && inspect.contains("detect:email"), "{inspect}");
    let check = run(&["scrub", "--check", s(&caps)]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).starts_with("clean: none of 24 exchanges"));

    // The same traffic without scrubbing is flagged.
    let raw = dir.path().join("raw");
    let proxy = start_proxy(&upstream, &raw, &["--no-scrub"]);
    send_corpus(proxy.addr);
    stop(proxy);
    let check = run(&["scrub", "--check", s(&raw)]);
    assert_eq!(check.status.code(), Some(1));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("PII found: 24 of 24 exchanges"), "{report}");
    for rule in ["email", "header:authorization", "cookie:sid", "key:password", "file"] {
        assert!(report.contains(rule), "{rule} in {report}");
    }
    assert_eq!(leaks(report.as_bytes(), &planted), Vec::<&str>::new(), "the check never prints values");

    // `tapedeck scrub` turns the raw capture into a clean one.
    let cleaned = dir.path().join("cleaned");
    let out = tapedeck().args(["scrub", s(&raw), "-o", s(&cleaned), "--key-file", s(&key)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run(&["scrub", "--check", s(&cleaned)]).status.success());
    let cleaned_json = ok(&["cat", s(&cleaned)]);
    assert_eq!(leaks(cleaned_json.as_bytes(), &planted), Vec::<&str>::new());
    assert!(cleaned_json.contains(token), "the proxy and the scrub command agree on tokens under one key");
}
