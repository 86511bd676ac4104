//! Scrubber tests: rules, detectors in every place they run, body formats, bad input,
//! idempotence, and properties over arbitrary input.

use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::exchange::{Body, Request, Response};

const KEY: &[u8] = b"test scrub key";

/// One scrubber for all tests: compiling the policy's regexes is the slow part.
fn scrubber() -> &'static Scrubber {
    static SCRUBBER: std::sync::OnceLock<Scrubber> = std::sync::OnceLock::new();
    SCRUBBER.get_or_init(|| Scrubber::with_defaults(Some(KEY)))
}

fn exchange(
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    resp_headers: &[(&str, &str)],
    resp_body: &[u8],
) -> Exchange {
    let mut h = Headers::new();
    for (n, v) in headers {
        h.push(*n, *v);
    }
    let mut rh = Headers::new();
    for (n, v) in resp_headers {
        rh.push(*n, *v);
    }
    Exchange {
        request: Request {
            method: "POST".into(),
            target: target.into(),
            headers: h,
            body: Body::full(body),
            ..Default::default()
        },
        response: Some(Response { status: 200, headers: rh, body: Body::full(resp_body), ..Default::default() }),
        ..Default::default()
    }
}

fn json_body(body: &str) -> (String, Exchange) {
    let mut ex = exchange("/", &[("content-type", "application/json")], body.as_bytes(), &[], b"");
    scrubber().scrub(&mut ex);
    (String::from_utf8(ex.request.body.data.to_vec()).unwrap(), ex)
}

fn hits(ex: &Exchange) -> Vec<(String, u32)> {
    ex.scrub.iter().map(|h| (h.rule.clone(), h.count)).collect()
}

#[test]
fn json_rules_and_detectors_change_only_what_they_select() {
    let input = r#"{ "user": {"name": "Ada Lovelace", "email":"ada@example.com", "plan": "pro", "age": 36},
  "password" : "hunter2", "items": [ {"sku": "A-1", "price": 12.50, "note": "call +44 20 7946 0958"} ],
  "big": 1.0e300, "ok": true, "nothing": null, "esc": "tab\there" }"#;
    let (out, ex) = json_body(input);
    let value: serde_json::Value = serde_json::from_str(&out).expect("still valid JSON");
    assert!(out.starts_with("{ \"user\": {\"name\": \"tok_name_"), "whitespace and order kept: {out}");
    assert!(value["user"]["email"].as_str().unwrap().starts_with("tok_email_"));
    assert_eq!(value["user"]["plan"], "pro");
    assert_eq!(value["user"]["age"], 36);
    assert_eq!(value["password"], "[REDACTED]");
    assert_eq!(value["items"][0]["sku"], "A-1");
    assert_eq!(value["items"][0]["note"], "call +** ** **** 0958");
    assert!(out.contains("\"price\": 12.50"), "numbers keep their spelling: {out}");
    assert!(out.contains("\"big\": 1.0e300"), "{out}");
    assert!(out.contains(r#""esc": "tab\there""#), "escapes kept where nothing changed: {out}");
    let h = hits(&ex);
    assert!(h.contains(&("json-path:$..user.name".into(), 1)), "{h:?}");
    assert!(h.contains(&("json-key:email".into(), 1)), "{h:?}");
    assert!(h.contains(&("json-key:password".into(), 1)), "{h:?}");
    assert!(h.contains(&("detect:phone".into(), 1)), "{h:?}");
    for planted in ["Ada Lovelace", "ada@example.com", "hunter2", "7946 0958"] {
        assert!(!out.contains(planted), "{planted} leaked: {out}");
    }
}

#[test]
fn json_drop_removes_members_and_elements_cleanly() {
    let policy =
        Policy::parse("[json-paths]\n\"$.secret\" = \"drop\"\n\"$.list[1]\" = \"drop\"\n\"$.first\" = \"drop\"\n", "t")
            .unwrap()
            .over_defaults();
    let s = Scrubber::new(&policy, Some(KEY));
    let mut ex = exchange(
        "/",
        &[("content-type", "application/json")],
        br#"{"first": 1, "a": {"b": [1,2]}, "secret": {"x": [1, {"y": 2}]}, "list": [10, 20, 30], "z": "end"}"#,
        &[],
        b"",
    );
    s.scrub(&mut ex);
    let out = String::from_utf8(ex.request.body.data.to_vec()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"a": {"b": [1, 2]}, "list": [10, 30], "z": "end"}), "{out}");
}

#[test]
fn objects_under_a_key_rule_are_replaced_whole_and_keys_are_scrubbed() {
    let (out, _) =
        json_body(r#"{"address": {"street": "1 Main St", "city": "Oslo"}, "counts": {"bob@example.org": 3}}"#);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["address"], "[REDACTED]");
    let key = v["counts"].as_object().unwrap().keys().next().unwrap().clone();
    assert!(key.starts_with("tok_email_"), "{key}");
    assert!(!out.contains("bob@example.org"));
}

#[test]
fn card_numbers_stored_as_json_numbers_are_masked() {
    let (out, _) = json_body(r#"{"n": 4242424242424242, "order": 1234567890123456}"#);
    assert!(out.contains(r#""n": "************4242""#), "{out}");
    assert!(out.contains("1234567890123456"), "order ids are not cards: {out}");
}

#[test]
fn headers_cookies_query_and_path() {
    let mut ex = exchange(
        "/users/jane@example.com/orders?email=jane%40example.com&page=2&q=call+415-555-2671",
        &[
            ("Authorization", "Bearer abc.def.ghi-secret"),
            ("Cookie", "sid=s3cr3t; theme=dark"),
            ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
            ("Host", "10.1.2.3:8080"),
            ("User-Agent", "Mozilla/5.0 Chrome/131.0.0.0"),
            ("X-Custom-Token", "zzz"),
            ("Referer", "https://shop.example/account?mail=jane.doe@example.com"),
        ],
        b"",
        &[("Set-Cookie", "sid=n3w; Path=/; HttpOnly"), ("Content-Type", "application/json")],
        b"",
    );
    scrubber().scrub(&mut ex);
    let req = &ex.request;
    assert!(req.target.starts_with("/users/tok_email_"), "{}", req.target);
    assert!(req.target.contains("?email=tok_email_"), "{}", req.target);
    assert!(req.target.ends_with("&page=2&q=call+***-***-2671"), "{}", req.target);
    assert!(!req.target.contains("jane"), "{}", req.target);
    assert!(req.target.contains("page=2"));
    let auth = req.headers.get_str("authorization").unwrap();
    assert!(auth.starts_with("Bearer tok_authorization_"), "{auth}");
    let cookie = req.headers.get_str("cookie").unwrap();
    assert!(cookie.starts_with("sid=tok_cookie_") && cookie.contains("; theme=tok_cookie_"), "{cookie}");
    let xff = req.headers.get_str("x-forwarded-for").unwrap();
    assert!(xff.starts_with("tok_ip_") && xff.contains(", tok_ip_"), "{xff}");
    assert_eq!(req.headers.get_str("host"), Some("10.1.2.3:8080"), "replays need Host");
    assert_eq!(req.headers.get_str("user-agent"), Some("Mozilla/5.0 Chrome/131.0.0.0"));
    assert!(req.headers.get_str("x-custom-token").unwrap().starts_with("tok_"));
    assert!(!req.headers.get_str("referer").unwrap().contains("jane"));
    let set_cookie = ex.response.as_ref().unwrap().headers.get_str("set-cookie").unwrap();
    assert!(set_cookie.starts_with("sid=tok_cookie_") && set_cookie.ends_with("; Path=/; HttpOnly"), "{set_cookie}");
    // The same value gets the same token wherever it appears.
    let email_token = req.target.split("email=").nth(1).unwrap().split('&').next().unwrap();
    assert!(req.target.starts_with(&format!("/users/{email_token}")), "joins survive: {}", req.target);
}

#[test]
fn forms_multipart_and_text() {
    let mut ex = exchange(
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "62")],
        b"user=ada&password=hunter2&email=ada%40example.com&note=hello",
        &[("Content-Type", "text/html"), ("Content-Length", "47")],
        b"<p>Write to ada@example.com or call 020 7946 0958</p>",
    );
    scrubber().scrub(&mut ex);
    let form = String::from_utf8(ex.request.body.data.to_vec()).unwrap();
    assert!(form.starts_with("user=ada&password=%5BREDACTED%5D&email=tok_email_"), "{form}");
    assert!(form.ends_with("&note=hello"));
    assert_eq!(
        ex.request.headers.get_str("content-length"),
        Some(form.len().to_string().as_str()),
        "Content-Length follows"
    );
    assert_eq!(ex.request.body.len, form.len() as u64);
    let html = String::from_utf8(ex.response.as_ref().unwrap().body.data.to_vec()).unwrap();
    assert!(html.starts_with("<p>Write to tok_email_") && html.contains("call *** **** 0958"), "{html}");

    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nada@example.com\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"bio\"\r\n\r\nI live at 1 Main St, call +1 (415) 555-2671\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"ada@example.com.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 secret passport scan\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"phone\": \"+44 20 7946 0958\", \"kind\": \"id\"}\r\n\
--XyZ--\r\n";
    let mut ex = exchange("/upload", &[("Content-Type", "multipart/form-data; boundary=XyZ")], multipart, &[], b"");
    scrubber().scrub(&mut ex);
    let out = String::from_utf8(ex.request.body.data.to_vec()).unwrap();
    for planted in ["ada@example.com", "555-2671", "passport", "7946 0958"] {
        assert!(!out.contains(planted), "{planted} leaked:\n{out}");
    }
    assert!(out.contains("name=\"email\"\r\n\r\ntok_email_"), "{out}");
    assert!(out.contains("filename=\"tok_email_"), "file names meet the detectors: {out}");
    assert!(out.contains("\"kind\": \"id\""), "{out}");
    assert!(out.ends_with("--XyZ--\r\n"));
    assert!(hits(&ex).contains(&("multipart:file".into(), 1)));
    let once = ex.clone();
    scrubber().scrub(&mut ex);
    assert_eq!(ex, once, "a second pass over a scrubbed upload changes nothing");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_bodies_are_decoded_scrubbed_and_stored_decoded() {
    let plain = br#"{"email": "ada@example.com", "id": 7}"#;
    for (encoding, data) in [
        ("gzip", gzip(plain)),
        ("br", {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &plain[..], &mut out, &brotli::enc::BrotliEncoderParams::default()).unwrap();
            out
        }),
        ("zstd", zstd::encode_all(&plain[..], 3).unwrap()),
        ("deflate", {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }),
    ] {
        let mut ex =
            exchange("/", &[], b"", &[("Content-Type", "application/json"), ("Content-Encoding", encoding)], &data);
        scrubber().scrub(&mut ex);
        let resp = ex.response.as_ref().unwrap();
        let out = String::from_utf8(resp.body.data.to_vec()).unwrap();
        assert!(out.starts_with(r#"{"email": "tok_email_"#), "{encoding}: {out}");
        assert_eq!(resp.body.decoded_from.as_deref(), Some(encoding));
        assert!(resp.headers.get("content-encoding").is_none(), "{encoding}");
    }

    // Undecodable data claiming gzip is dropped, not stored raw.
    let mut ex = exchange(
        "/",
        &[],
        b"",
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        b"\x1f\x8bnot gzip ada@example.com",
    );
    scrubber().scrub(&mut ex);
    let resp = ex.response.as_ref().unwrap();
    assert!(resp.body.data.is_empty() && resp.body.truncated);
    assert!(hits(&ex).contains(&("body:undecodable".into(), 1)));

    // A decompression bomb stops at the limit.
    let bomb = gzip(&vec![b'a'; crate::coding::MAX_DECODED + 1024]);
    assert!(bomb.len() < 100_000);
    assert!(crate::coding::decode("gzip", &bomb).is_none());
}

#[test]
fn bad_input_falls_back_to_the_unparsed_rule_without_panicking() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (ct, body) in [
        ("application/json", b"{\"email\": ada@example.com}".to_vec()),
        ("application/json", deep.into_bytes()),
        ("application/json", b"{\"a\": \"\xff\xfe\"}".to_vec()),
        ("text/plain", b"\xff\xfe ada@example.com".to_vec()),
        ("multipart/form-data; boundary=Q", b"--Q\r\nno blank line ada@example.com".to_vec()),
        ("image/png", b"\x89PNG ada@example.com".to_vec()),
    ] {
        let mut ex = exchange("/", &[("Content-Type", ct)], &body, &[], b"");
        scrubber().scrub(&mut ex);
        assert!(ex.request.body.data.is_empty(), "{ct}: dropped");
        assert!(ex.request.body.truncated);
        assert!(ex.scrub.iter().any(|h| h.rule == "body:unparsed"), "{ct}: {:?}", ex.scrub);
    }
}

#[test]
fn truncated_json_is_scrubbed_up_to_the_cut() {
    let mut ex = exchange("/", &[("Content-Type", "application/json")], b"", &[], b"");
    let full = br#"{"items": [{"email": "a@example.com"}, {"email": "b@example.com"}, {"email": "cut@exa"#;
    ex.request.body = Body { data: Blob::from(&full[..]), len: 10_000, truncated: true, decoded_from: None };
    scrubber().scrub(&mut ex);
    let out = String::from_utf8(ex.request.body.data.to_vec()).unwrap();
    assert!(out.starts_with(r#"{"items": [{"email": "tok_email_"#), "{out}");
    assert_eq!(out.matches("tok_email_").count(), 2);
    assert!(!out.contains("cut@"), "the member the cut fell in is dropped: {out}");
    assert_eq!(ex.request.body.len, 10_000, "the original length stays");
}

#[test]
fn no_key_means_redaction_and_the_fingerprint_says_so() {
    let s = Scrubber::with_defaults(None);
    assert!(!s.has_key());
    assert!(s.fingerprint().ends_with("key:none"));
    let mut ex = exchange("/", &[("Content-Type", "application/json")], br#"{"email": "ada@example.com"}"#, &[], b"");
    s.scrub(&mut ex);
    assert_eq!(&ex.request.body.data[..], br#"{"email": "[REDACTED]"}"#);
    assert!(scrubber().fingerprint().starts_with("policy:"));
    assert!(!scrubber().fingerprint().contains("test scrub key"));
}

#[test]
fn check_reports_what_would_change_and_nothing_after_scrubbing() {
    let mut ex = exchange(
        "/?email=ada@example.com",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        br#"{"card": "4111 1111 1111 1111"}"#,
        &[("Content-Type", "application/json")],
        br#"{"ok": true}"#,
    );
    ex.request.headers.push("Content-Type", "application/json");
    let before = scrubber().audit(&ex);
    let found: Vec<_> = before.iter().map(|f| (f.category.as_str(), f.location.as_str())).collect();
    assert!(found.contains(&("email", "request target")), "{found:?}");
    assert!(found.contains(&("header:authorization", "request header authorization")), "{found:?}");
    assert!(found.contains(&("card", "request body $.card")), "{found:?}");
    assert!(found.contains(&("card", "request body")), "{found:?}");
    scrubber().scrub(&mut ex);
    assert!(scrubber().audit(&ex).is_empty(), "{:?}", scrubber().audit(&ex));
}

fn arb_json(depth: u32) -> BoxedStrategy<serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "ada@example.com",
            "+44 20 7946 0958",
            "4242 4242 4242 4242",
            "plain",
            "x\"y\\z\n",
            "é😀"
        ])
        .prop_map(serde_json::Value::from),
        "[a-z0-9 @.+\\-]{0,20}".prop_map(serde_json::Value::from),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        2 => leaf,
        1 => prop::collection::vec(arb_json(depth - 1), 0..4).prop_map(serde_json::Value::from),
        1 => prop::collection::btree_map(
            prop::sample::select(vec!["email", "name", "user", "password", "items", "note", "x", "first_name"]).prop_map(String::from),
            arb_json(depth - 1),
            0..4
        )
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
    ]
    .boxed()
}

/// The shape of a JSON value — containers and keys, with leaves as null — where a member
/// a default rule selects (`email`, `password`, `first_name`, a user's `name`) counts as a
/// leaf, since its rule replaces it whole.
fn shape(v: &serde_json::Value, key: &str, parent: &str) -> serde_json::Value {
    let ruled = matches!(key, "email" | "password" | "first_name") || (key == "name" && parent == "user");
    match v {
        _ if ruled => serde_json::Value::Null,
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(|v| shape(v, "[]", key)).collect()),
        serde_json::Value::Object(o) => serde_json::Value::Array(o.iter().map(|(k, v)| shape(v, k, key)).collect()),
        _ => serde_json::Value::Null,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn json_stays_valid_json_of_the_same_shape_and_scrubbing_is_idempotent(v in arb_json(4)) {
        let text = serde_json::to_string_pretty(&v).unwrap();
        let mut ex = exchange("/", &[("content-type", "application/json")], text.as_bytes(), &[], b"");
        scrubber().scrub(&mut ex);
        let once = ex.request.body.data.to_vec();
        let parsed: serde_json::Value = serde_json::from_slice(&once).expect("valid JSON");
        prop_assert_eq!(shape(&parsed, "", ""), shape(&v, "", ""));
        let hits_once = ex.scrub.clone();
        scrubber().scrub(&mut ex);
        prop_assert_eq!(ex.request.body.data.to_vec(), once, "a second pass changes nothing");
        prop_assert_eq!(ex.scrub, hits_once, "and fires no rule");
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        ct in prop::sample::select(vec!["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", "", "image/png"]),
        ce in prop::sample::select(vec!["", "gzip", "br", "deflate", "zstd", "gzip, br", "bogus"]),
        target in "/[ -~]{0,40}",
        header in "[ -~]{0,40}",
        truncated in any::<bool>(),
    ) {
        let mut headers = vec![("Cookie", header.as_str()), ("X-Thing", header.as_str())];
        if !ct.is_empty() { headers.push(("Content-Type", ct)); }
        if !ce.is_empty() { headers.push(("Content-Encoding", ce)); }
        let mut ex = exchange(&target, &headers, &body, &headers, &body);
        ex.request.body.truncated = truncated;
        scrubber().scrub(&mut ex);
        let first = ex.clone();
        scrubber().scrub(&mut ex);
        prop_assert_eq!(&ex.request.target, &first.request.target, "idempotent target");
        prop_assert_eq!(&ex.request.headers, &first.request.headers, "idempotent headers");
    }
}

#[test]
fn replacements_that_form_new_matches_are_scrubbed_in_the_same_pass() {
    // Found by the scrub fuzzer: the token that replaces `a@b.ca` forms a new
    // address with `@b.co`; one pass must leave nothing a second pass would change.
    // And path segments are re-encoded as paths (a space is %20; `+` stays a plus).
    for target in
        ["/#ema\"a@b.ca@b.co\"", "/x?q=a@b.ca@b.co", "/rt/fo\u{FFFD}c:o+26999000, \u{FFFD},    0248826628\"eu"]
    {
        let mut ex = exchange(target, &[], b"", &[], b"");
        scrubber().scrub(&mut ex);
        let once = ex.request.target.clone();
        assert!(!once.contains("b.co"), "{once}");
        scrubber().scrub(&mut ex);
        assert_eq!(ex.request.target, once);
    }
}

#[test]
fn skip_listed_headers_still_lose_email_addresses_but_keep_their_versions() {
    let ua = "MyBot/1.0 (+mailto:ops.lead@example.com; build 10.0.19045.3693)";
    let mut ex = exchange("/", &[("user-agent", ua), ("x-request-id", "ada@example.org")], b"", &[], b"");
    assert!(!scrubber().audit(&ex).is_empty(), "the auditor flags an e-mail in a skip-listed header");
    scrubber().scrub(&mut ex);
    let ua_after = ex.request.headers.get("user-agent").unwrap().to_str_lossy().to_string();
    assert!(!ua_after.contains("ops.lead@example.com"), "{ua_after}");
    assert!(ua_after.starts_with("MyBot/1.0 (+mailto:") && ua_after.contains("10.0.19045.3693"), "{ua_after}");
    assert!(!ex.request.headers.get("x-request-id").unwrap().to_str_lossy().contains("ada@"));
    assert!(scrubber().audit(&ex).is_empty(), "{:?}", scrubber().audit(&ex));
    // A plain User-Agent is left as it was.
    let plain = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0.6099.129";
    let mut ex = exchange("/", &[("user-agent", plain)], b"", &[], b"");
    scrubber().scrub(&mut ex);
    assert_eq!(ex.request.headers.get("user-agent").unwrap().to_str_lossy(), plain);
}

#[test]
fn card_numbers_grouped_by_dots_are_found() {
    let (out, _) = json_body(r#"{"note": "card 4111.1111.1111.1111 exp 12/29", "version": "2024.1001.1203.7"}"#);
    assert!(!out.contains("4111.1111.1111.1111"), "{out}");
    assert!(out.contains("2024.1001.1203.7"), "{out}");
}

#[test]
fn userinfo_is_never_echoed() {
    use super::{redact_userinfo, userinfo_span};
    assert_eq!(redact_userinfo("http://user:s3cret@db.internal:5432/x?y#z"), "http://***@db.internal:5432/x?y#z");
    assert_eq!(redact_userinfo("https://a@b@host"), "https://***@host");
    assert_eq!(redact_userinfo("user:s3cret@host:80"), "***@host:80");
    assert_eq!(redact_userinfo("http://host:80"), "http://host:80");
    assert!(userinfo_span("http://host:8080/base").is_none());
    // Passwords holding what a URL parser would read as path, query, fragment or port.
    for url in [
        "http://admin:s3cr/etPW5@127.0.0.1",
        "http://admin:p?wPW7@h",
        "http://admin:p#wPW8@h/x",
        "http://admin:2024/SecretPW@h",
        "//admin:secretPW@h",
        "http:/admin:secretPW@h",
        "//admin:SecretPW:/x@host",
        "admin:SecretPW:/x@host",
    ] {
        let shown = redact_userinfo(url);
        assert!(!shown.contains("PW") && !shown.contains("admin"), "{url}: {shown}");
        assert!(userinfo_span(url).is_some(), "{url}");
    }
    let refused = super::userinfo_refused("--upstream", "http://u:hunter22@h", "drop them");
    assert!(!refused.contains("hunter22") && refused.contains("http://***@h"), "{refused}");
}

#[test]
fn trailers_are_scrubbed_and_audited_like_headers() {
    let mut ex = exchange("/pay.Payments/Charge", &[], b"", &[("content-type", "application/grpc")], b"");
    ex.request.trailers.push("x-user-token", "Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah5Sg");
    let resp = ex.response.as_mut().unwrap();
    resp.trailers.push("grpc-status", "5");
    resp.trailers.push("grpc-message", "no account for jane.doe@example.com");
    let found = scrubber().audit(&ex);
    let locations: Vec<_> = found.iter().map(|f| f.location.as_str()).collect();
    assert!(locations.iter().any(|l| l.contains("response trailer header grpc-message")), "{found:?}");
    scrubber().scrub(&mut ex);
    let resp = ex.response.as_ref().unwrap();
    assert_eq!(resp.trailers.get_str("grpc-status"), Some("5"));
    let message = resp.trailers.get_str("grpc-message").unwrap();
    assert!(!message.contains("jane.doe") && message.starts_with("no account for "), "{message}");
    assert!(!ex.request.trailers.get_str("x-user-token").unwrap().contains("Zk3pQ9"));
    assert!(scrubber().audit(&ex).is_empty(), "{:?}", scrubber().audit(&ex));
}

#[test]
fn websocket_messages_are_scrubbed_like_bodies_and_audited() {
    use crate::websocket::{Kind, Message, Side, WebSocket};
    let message = |from, kind, data: &[u8], code| Message {
        from,
        at_ns: 1,
        kind,
        code,
        data: Blob::from(data.to_vec()),
        len: data.len() as u64,
        truncated: false,
    };
    let mut ex = exchange("/live", &[("upgrade", "websocket")], b"", &[], b"");
    ex.websocket = Some(WebSocket {
        messages: vec![
            message(Side::Client, Kind::Text, br#"{"password":"hunter2","to":"ann@example.com"}"#, None),
            message(Side::Server, Kind::Text, b"card 4111 1111 1111 1111 charged for bob@example.org", None),
            message(Side::Server, Kind::Binary, b"\x00\xffsecret\x01", None),
            message(Side::Client, Kind::Close, b"bye ann@example.com", Some(1000)),
            // Bytes that happen to be UTF-8 (protobuf with short strings): still bytes.
            message(Side::Client, Kind::Binary, b"\n\tAnn Smith\x12\x07hunter2", None),
            message(Side::Server, Kind::Close, br#"{"password":"hunter2"}"#, Some(4000)),
            message(Side::Server, Kind::Ping, b"ann@example.com \xff password=hunter2", None),
        ],
        ..Default::default()
    });
    assert!(!scrubber().audit(&ex).is_empty());
    scrubber().scrub(&mut ex);
    let ws = ex.websocket.as_ref().unwrap();
    let text = |i: usize| String::from_utf8_lossy(&ws.messages[i].data).into_owned();
    assert!(!text(0).contains("hunter2") && !text(0).contains("ann@"), "{}", text(0));
    assert!(text(0).contains("\"to\":\"tok_email_"), "{}", text(0));
    assert!(!text(1).contains("4111 1111") && !text(1).contains("bob@"), "{}", text(1));
    // Bytes nobody can read follow `unparsed` (dropped), their length kept.
    assert!(ws.messages[2].data.is_empty() && ws.messages[2].truncated && ws.messages[2].len == 9);
    assert!(!text(3).contains("ann@") && ws.messages[3].code == Some(1000), "{}", text(3));
    assert!(ws.messages[4].data.is_empty() && ws.messages[4].len == 20, "{}", text(4));
    assert!(!text(5).contains("hunter2") && ws.messages[5].code == Some(4000), "{}", text(5));
    assert!(!text(6).contains("ann@") && !text(6).contains("hunter2"), "{}", text(6));
    assert_eq!(scrubber().audit(&ex), Vec::new());
    // Idempotent.
    let once = ex.clone();
    scrubber().scrub(&mut ex);
    assert_eq!(ex.websocket, once.websocket);
}

#[test]
fn websocket_subprotocol_names_stay_and_tokens_among_them_are_hashed() {
    let token = "base64url.bearer.authorization.k8s.io.ZXlKaGJHY2lPaUpTVXpJMU5pSXNJbXRwWkNJNklp";
    let mut ex = exchange(
        "/ws",
        &[
            ("Sec-WebSocket-Protocol", &format!("graphql-transport-ws, {token}")),
            ("sec-websocket-protocol", "chat, wamp.2.json"),
        ],
        b"",
        &[],
        b"",
    );
    assert!(!scrubber().audit(&ex).is_empty(), "the token is found");
    scrubber().scrub(&mut ex);
    let values: Vec<String> =
        ex.request.headers.get_all("sec-websocket-protocol").map(|v| v.to_str_lossy().into_owned()).collect();
    assert!(values[0].starts_with("graphql-transport-ws, tok_"), "{values:?}");
    assert!(!values[0].contains("ZXlK"), "{values:?}");
    assert_eq!(values[1], "chat, wamp.2.json");
    assert_eq!(scrubber().audit(&ex), Vec::new());
}

#[test]
fn a_websocket_text_message_that_is_not_utf8_keeps_nothing_readable() {
    use crate::websocket::{Kind, Message, Side, WebSocket};
    let data = b"\xffcard 4111 1111 1111 1111 ann@example.com".to_vec();
    let mut ex = exchange("/ws", &[], b"", &[], b"");
    ex.websocket = Some(WebSocket {
        messages: vec![Message {
            from: Side::Client,
            at_ns: 1,
            kind: Kind::Text,
            code: None,
            len: data.len() as u64,
            data: Blob::from(data),
            truncated: false,
        }],
        ..Default::default()
    });
    scrubber().scrub(&mut ex);
    let m = &ex.websocket.as_ref().unwrap().messages[0];
    assert!(m.data.is_empty() && m.truncated, "{:?}", m.data);
    assert_eq!(scrubber().audit(&ex), Vec::new());
}
