//! The echo scenario, as a security reviewer would run it: `tapedeck proxy` with its
//! defaults and a key, in front of an httpbin-shaped upstream that answers with the
//! request (`args`, `form`, `data`, `json`, `headers`, `origin`, `url`; pretty and
//! compact; gzip and br), and 500 requests full of realistic personal data in seven
//! locales, sent as JSON, forms, multipart, text, XML, GraphQL, query strings and headers.
//!
//! No planted value may reach any byte of the tape directory (decompressed blocks too),
//! nor `cat` in any format; ids, SKUs, prices and timestamps survive. `scrub --check`
//! flags the unscrubbed capture and passes the scrubbed one. Replaying against a staging
//! that answers with personal data of its own leaves none of it in the results or reports.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::echo::Echo;
use common::pii::{leaks, Locale, Pii, LOCALES};
use common::proxy::ProxyProcess;
use common::*;

const ROUNDS: usize = 63; // × 8 requests

fn proxy(upstream: &Echo, dir: &Path, extra: &[&str]) -> ProxyProcess {
    let url = upstream.url();
    let mut args =
        vec!["--listen", "127.0.0.1:0", "--upstream", &url, "--capture-dir", s(dir), "--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ProxyProcess::spawn(&args, None)
}

fn stop(proxy: ProxyProcess) {
    proxy.signal(libc::SIGTERM);
    let (code, stderr) = proxy.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr:?}");
}

fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{method} {target}: {}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
}

fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// Sends the corpus; returns the non-personal values that must survive.
fn send_corpus(addr: SocketAddr, pii: &mut Pii) -> Vec<String> {
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        let locale: Locale = LOCALES[round % LOCALES.len()];
        let p = pii.person(locale);
        let order = format!("ORD-{}", 20_000 + round);
        let sku = format!("SKU-{:04}-{}", 1000 + round * 7, ["BLK", "RED", "XL"][round % 3]);
        let uuid = format!("3f2b8c1e-9a4d-4e6f-8b1a-{:012x}", 0x2c3d_4e5f_6a00 + round as u64);
        let created = format!("2024-05-{:02}T07:08:{:02}Z", 1 + round % 28, round % 60);
        kept.extend([order.clone(), sku.clone(), uuid.clone(), created.clone()]);
        let headers = vec![
            ("Cookie", format!("session_id={}; csrftoken={}; theme=dark", p.session, p.csrf)),
            ("Authorization", format!("Bearer {}", p.jwt)),
            ("X-Api-Key", p.api_key.clone()),
            ("X-Forwarded-For", p.ip.clone()),
            ("X-Request-Id", uuid.clone()),
            ("User-Agent", "echo-test/1".into()),
        ];
        let with = |ct: &str| {
            let mut h = headers.clone();
            h.push(("Content-Type", ct.to_string()));
            h
        };

        // 1. Query string and headers.
        let q = query(&[
            ("email", &p.email),
            ("phone", &p.phone),
            ("card", &p.card),
            ("ref", &order),
            ("q", &format!("call {} about {order}", p.phone)),
        ]);
        send(addr, "GET", &format!("/anything?{q}"), &headers, b"");

        // 2. Compact JSON.
        let body = serde_json::json!({
            "customer": {"first_name": p.first, "last_name": p.last, "email": p.email, "phone": p.phone,
                         "date_of_birth": p.dob, "address": {"street": p.street, "city": "Lisbon"},
                         "national_id": p.national_id},
            "payment": {"card_number": p.card, "iban": p.iban},
            "password": p.password,
            "order": {"id": order, "sku": sku, "price": 129.9, "created_at": created},
        });
        send(addr, "POST", "/anything", &with("application/json"), body.to_string().as_bytes());

        // 3. Pretty JSON, answered gzip.
        let body = serde_json::json!({
            "user": {"name": p.full, "email": p.email},
            "note": format!("Please call {} or write to {}", p.phone, p.email),
            "sku": sku,
        });
        let pretty = serde_json::to_string_pretty(&body).unwrap();
        send(addr, "POST", "/anything/gzip?pretty=1", &with("application/json"), pretty.as_bytes());

        // 4. A form, answered br.
        let form = query(&[
            ("email", &p.email),
            ("password", &p.password),
            ("phone", &p.phone),
            ("full_name", &p.full),
            ("card_number", &p.card),
            ("comment", &format!("reach me at {}", p.phone)),
            ("sku", &sku),
        ]);
        send(addr, "POST", "/anything/brotli", &with("application/x-www-form-urlencoded"), form.as_bytes());

        // 5. Multipart with a file.
        let b = "XyZbOuNdArY";
        let multipart = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n{}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nID: {} / {}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"contacts\"; filename=\"contacts.csv\"\r\nContent-Type: text/csv\r\n\r\nemail,phone\n{},{}\r\n\
             --{b}--\r\n",
            p.full, p.email, p.national_id, order, p.email, p.phone
        );
        send(addr, "POST", "/anything", &with(&format!("multipart/form-data; boundary={b}")), multipart.as_bytes());

        // 6. Free text (names in prose cannot be told from other words; formats can).
        let text = format!(
            "Hello,\nthe card {} and IBAN {} are on file for order {order}; we will call {}.\n{}\nSent from {}\n",
            p.card, p.iban, p.phone, p.national_id, p.ip
        );
        send(addr, "POST", "/anything", &with("text/plain; charset=utf-8"), text.as_bytes());

        // 7. SOAP/XML, answered as XML.
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        let xml = format!(
            r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:c="urn:crm"><soap:Body><c:CreateCustomer><c:customer ref="{order}" phone="{}"><c:name>{}</c:name><c:email>{}</c:email><c:password>{}</c:password><c:ssn>{}</c:ssn><c:address><c:street>{}</c:street></c:address><c:note><![CDATA[call {} re {}]]></c:note><c:sku>{sku}</c:sku></c:customer></c:CreateCustomer></soap:Body></soap:Envelope>"#,
            esc(&p.phone),
            esc(&p.full),
            esc(&p.email),
            esc(&p.password),
            esc(&p.national_id),
            esc(&p.street),
            p.phone,
            p.email
        );
        send(addr, "POST", "/xml", &with("application/soap+xml; charset=utf-8"), xml.as_bytes());

        // 8. GraphQL: inline arguments and variables.
        let gql = serde_json::json!({
            "query": format!(
                "mutation {{ createCustomer(fullName: \"{}\", email: \"{}\", ssn: \"{}\", dob: \"{}\", ref: \"{order}\") {{ id }} }}",
                p.full, p.email, p.national_id, p.dob
            ),
            "variables": {"phone": p.phone, "card_number": p.card},
        });
        send(addr, "POST", "/graphql", &with("application/json"), gql.to_string().as_bytes());
    }
    kept
}

/// Every file under `dir`, raw and with its compressed blocks decompressed.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let mut i = 0;
        while let Some(p) = bytes[i..].windows(4).position(|w| w == b"TBLK") {
            let at = i + p;
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            if let Some(raw) = bytes.get(at + 28..at + 28 + len).and_then(|b| zstd::decode_all(b).ok()) {
                out.extend(raw);
            }
            i = at + 4;
        }
        out.extend(bytes);
    }
    out
}

fn assert_no_leaks(what: &str, haystack: &[u8], planted: &[String]) {
    let found = leaks(haystack, planted);
    assert!(found.is_empty(), "{} planted value(s) in {what}, e.g. {:#?}", found.len(), &found[..found.len().min(6)]);
}

#[test]
fn the_echo_scenario_leaves_nothing_personal_and_the_audit_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("scrub.key");
    std::fs::write(&key, "echo scenario key 0123456789abcdef").unwrap();
    let upstream = Echo::start(None);

    // Scrubbed, as a user runs it.
    let caps = dir.path().join("caps");
    let mut pii = Pii::new(7);
    let p = proxy(&upstream, &caps, &["--scrub-key-file", s(&key)]);
    let kept = send_corpus(p.addr, &mut pii);
    stop(p);
    let planted = pii.planted.clone();
    assert!(planted.len() > 800, "{}", planted.len());
    assert_no_leaks("the tape directory", &all_bytes(&caps), &planted);
    for format in ["json", "http", "curl", "har"] {
        assert_no_leaks(
            &format!("cat --format {format}"),
            ok(&["cat", s(&caps), "--format", format]).as_bytes(),
            &planted,
        );
    }
    let json = ok(&["cat", s(&caps), "--format", "json"]);
    for k in &kept {
        assert!(json.contains(k.as_str()), "non-personal {k:?} was scrubbed");
    }
    let check = run(&["scrub", "--check", s(&caps)]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "the scrubbed capture is flagged:\n{report}");
    assert!(report.starts_with(&format!("clean: none of {} exchanges", ROUNDS * 8)), "{report}");

    // Unscrubbed: the auditor flags (nearly) every exchange, and never prints a value.
    let raw = dir.path().join("raw");
    let mut again = Pii::new(7);
    let p = proxy(&upstream, &raw, &["--no-scrub"]);
    send_corpus(p.addr, &mut again);
    stop(p);
    let check = run(&["scrub", "--check", s(&raw)]);
    assert_eq!(check.status.code(), Some(1));
    let report = String::from_utf8_lossy(&check.stdout);
    let line = report.lines().find(|l| l.starts_with("PII found: ")).expect("a summary");
    let counts: Vec<u64> = line["PII found: ".len()..]
        .split(" exchanges")
        .next()
        .unwrap()
        .split(" of ")
        .map(|n| n.replace(',', "").parse().unwrap())
        .collect();
    assert_eq!(counts[1], (ROUNDS * 8) as u64);
    assert!(counts[0] * 100 >= counts[1] * 99, "only {} of {} exchanges flagged:\n{report}", counts[0], counts[1]);
    assert_no_leaks("the check's report", report.as_bytes(), &planted);

    // Replay the scrubbed capture at a staging that answers with personal data of its own.
    let mut staff = Pii::new(99);
    let s_person = staff.person(Locale::Uk);
    let staging = Echo::start(Some(serde_json::json!({
        "name": s_person.full, "email": s_person.email, "phone": s_person.phone,
        "note": format!("escalate to {} ({})", s_person.email, s_person.phone),
        "session": s_person.session,
    })));
    let results = dir.path().join("results");
    let report_json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let out = tapedeck()
        .args(["replay", s(&caps), "--target", &staging.url(), "--speed", "max", "--no-progress"])
        .args(["--results", s(&results), "--report", s(&report_json), "--html", s(&html)])
        .args(["--scrub-key-file", s(&key)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut everything = planted.clone();
    everything.extend(staff.planted.iter().cloned());
    assert_no_leaks("the replay results", &all_bytes(&results), &everything);
    assert_no_leaks("the results as JSON", ok(&["cat", s(&results), "--format", "json"]).as_bytes(), &everything);
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    for (what, bytes) in [
        ("report.json", std::fs::read(&report_json).unwrap()),
        ("report.html", std::fs::read(&html).unwrap()),
        ("the terminal report", terminal.into_bytes()),
    ] {
        assert_no_leaks(what, &bytes, &everything);
    }
    assert!(run(&["scrub", "--check", s(&results)]).status.success(), "the results are clean");
}
