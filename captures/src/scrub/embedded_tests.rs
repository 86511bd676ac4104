//! Scrubbing data in shapes no single rule names: echoed requests (httpbin-style), values
//! that are documents of their own, XML, GraphQL, encodings, person names; and the
//! auditor agreeing with the scrubber.

use proptest::prelude::*;

use super::*;
use crate::exchange::{Body, Request, Response};

const KEY: &[u8] = b"test scrub key, embedded";

fn scrubber() -> &'static Scrubber {
    static SCRUBBER: std::sync::OnceLock<Scrubber> = std::sync::OnceLock::new();
    SCRUBBER.get_or_init(|| Scrubber::with_defaults(Some(KEY)))
}

fn response(content_type: &str, body: &str) -> Exchange {
    let mut h = Headers::new();
    h.push("Content-Type", content_type);
    Exchange {
        request: Request { method: "GET".into(), target: "/anything".into(), ..Default::default() },
        response: Some(Response {
            status: 200,
            headers: h,
            body: Body::full(body.as_bytes().to_vec()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Scrubs `body` as a response of `content_type`; the body after, and the exchange.
fn scrub(content_type: &str, body: &str) -> (String, Exchange) {
    let mut ex = response(content_type, body);
    scrubber().scrub(&mut ex);
    let out = String::from_utf8(ex.response.as_ref().unwrap().body.data.to_vec()).unwrap();
    (out, ex)
}

fn assert_gone(out: &str, planted: &[&str]) {
    for p in planted {
        assert!(!out.contains(p), "{p:?} survived in\n{out}");
    }
}

fn assert_kept(out: &str, kept: &[&str]) {
    for k in kept {
        assert!(out.contains(k), "{k:?} was lost from\n{out}");
    }
}

const ECHO: &str = r#"{
  "args": {"email": "juphaus@example.net", "ref": "ORD-20931"},
  "data": "{\"password\": \"S3cr3t!pass\", \"dob\": \"1984-07-19\", \"address\": \"12 Rue de Rivoli, Paris\", \"name\": \"Chloé Martin\", \"email\": \"chloe@example.fr\", \"sku\": \"KB-2231\"}",
  "form": {"comment": "call me on 792-291-3465x3554", "note": "user=jane&pw=hunter2&mail=jane%40example.org"},
  "headers": {
    "Accept": "application/json",
    "Authorization": "Bearer 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "Cookie": "session_id=c2VjcmV0LXNlc3Npb24tdmFsdWUtOTk4Nw; csrftoken=Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah5Sg",
    "X-Api-Key": "ak_live_f83kd92jd82kd02kdl",
    "X-Session-Token": "tkn-3b9f1c2d8e7a6b5c4d3e2f1a",
    "X-Forwarded-For": "203.0.113.195, 10.0.0.7",
    "X-Request-Id": "3f2b8c1e-9a4d-4e6f-8b1a-2c3d4e5f6a7b"
  },
  "json": {"customer": {"name": "Pieter de Vries", "iban": "NL91ABNA0417164300"}, "items": [{"sku": "KB-2231", "name": "Mechanical keyboard", "price": 129.9}]},
  "origin": "203.0.113.195",
  "url": "https://api.example.com/anything?email=juphaus%40example.net&phone=%2B44+20+7946+0958&page=2"
}"#;

const ECHO_PLANTED: &[&str] = &[
    "juphaus",
    "S3cr3t!pass",
    "1984-07-19",
    "Rue de Rivoli",
    "Chloé Martin",
    "chloe@example.fr",
    "291-3465",
    "3554",
    "hunter2",
    "jane%40example.org",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "c2VjcmV0LXNlc3Npb24tdmFsdWUtOTk4Nw",
    "Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah5Sg",
    "ak_live_f83kd92jd82kd02kdl",
    "tkn-3b9f1c2d8e7a6b5c4d3e2f1a",
    "203.0.113.195",
    "Pieter de Vries",
    "NL91ABNA0417164300",
    "7946",
];

#[test]
fn echoed_requests_are_scrubbed_in_every_embedded_shape() {
    let compact: String = serde_json::to_string(&serde_json::from_str::<serde_json::Value>(ECHO).unwrap()).unwrap();
    for body in [ECHO, compact.as_str()] {
        let (out, ex) = scrub("application/json", body);
        let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_gone(&out, ECHO_PLANTED);
        assert_kept(
            &out,
            &["ORD-20931", "KB-2231", "Mechanical keyboard", "129.9", "page=2", "3f2b8c1e-9a4d-4e6f-8b1a-2c3d4e5f6a7b"],
        );
        // Embedded documents keep their encoding and shape.
        let data: serde_json::Value =
            serde_json::from_str(v["data"].as_str().unwrap()).expect("data is still a JSON string");
        assert_eq!(data["sku"], "KB-2231");
        assert_eq!(data["password"], "[REDACTED]");
        assert!(v["headers"]["Authorization"].as_str().unwrap().starts_with("Bearer tok_"), "{out}");
        let cookie = v["headers"]["Cookie"].as_str().unwrap();
        assert!(cookie.starts_with("session_id=tok_cookie_") && cookie.contains("; csrftoken=tok_cookie_"), "{cookie}");
        let url = v["url"].as_str().unwrap();
        assert!(url.starts_with("https://api.example.com/anything?email=tok_") && url.ends_with("&page=2"), "{url}");
        let note = v["form"]["note"].as_str().unwrap();
        assert!(note.starts_with("user=jane&pw=%5BREDACTED%5D&mail=tok_email_"), "{note}");
        assert!(scrubber().audit(&ex).is_empty(), "{:?}", scrubber().audit(&ex));
        // Idempotent.
        let (again, _) = scrub("application/json", &out);
        assert_eq!(again, out);
    }
    // The auditor flags the unscrubbed document, by location.
    let findings = scrubber().audit(&response("application/json", ECHO));
    let at = |loc: &str| findings.iter().any(|f| f.location.contains(loc));
    for loc in ["$.headers.Cookie", "$.headers.X-Api-Key", "$.data", "$.url", "$.json.customer.name", "$.origin"] {
        assert!(at(loc), "{loc} not flagged: {findings:?}");
    }
}

#[test]
fn xml_and_soap_keep_their_structure() {
    let soap = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:c="urn:crm">
  <soap:Body>
    <c:CreateCustomer>
      <c:customer id="C-1001" email="m.rossi@example.it">
        <c:name>Mario Rossi</c:name>
        <c:password>S3cr3t!pass</c:password>
        <c:ssn>078-05-1120</c:ssn>
        <c:codiceFiscale>RSSMRA85T10A562S</c:codiceFiscale>
        <c:address><c:street>Via Roma 1</c:street><c:city>Milano</c:city></c:address>
        <c:note><![CDATA[call +39 02 1234 5678 & ask for Mario]]></c:note>
        <c:phone>+39&#32;02 1234 5678</c:phone>
      </c:customer>
      <c:product><c:name>Espresso machine</c:name><c:sku>EM-77</c:sku></c:product>
      <!-- created by mario.rossi@example.it -->
    </c:CreateCustomer>
  </soap:Body>
</soap:Envelope>"#;
    let (out, ex) = scrub("text/xml; charset=utf-8", soap);
    assert_gone(
        &out,
        &[
            "m.rossi@",
            "Mario Rossi",
            "S3cr3t!pass",
            "078-05-1120",
            "RSSMRA85T10A562S",
            "Via Roma",
            "1234 5678",
            "mario.rossi@",
        ],
    );
    assert_kept(
        &out,
        &[
            "C-1001",
            "Espresso machine",
            "EM-77",
            "<c:city>",
            "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"",
        ],
    );
    // Same elements in the same order, well-formed.
    let names = |text: &str| {
        let mut r = quick_xml::Reader::from_str(text);
        let mut names = Vec::new();
        loop {
            match r.read_event().expect("well-formed") {
                quick_xml::events::Event::Start(e) => {
                    names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned())
                }
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        names
    };
    assert_eq!(names(&out), names(soap));
    assert!(scrubber().audit(&ex).is_empty(), "{:?}", scrubber().audit(&ex));
    assert!(!scrubber().audit(&response("application/soap+xml", soap)).is_empty());
    let (again, _) = scrub("text/xml", &out);
    assert_eq!(again, out, "idempotent");
}

#[test]
fn graphql_inline_arguments_and_variables() {
    let body = r#"{"query": "query Find($e: String = \"ops@example.com\") { user(email: \"a.b@example.com\", ssn: \"219-09-9999\", dob: \"1990-02-03\", limit: 10) { id name } }", "variables": {"email": "v@example.com", "national_id": "AB123456C"}}"#;
    let (out, ex) = scrub("application/json", body);
    assert_gone(
        &out,
        &["ops@example.com", "a.b@example.com", "219-09-9999", "1990-02-03", "v@example.com", "AB123456C"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let query = v["query"].as_str().unwrap();
    assert!(query.contains("limit: 10) { id name } }") && query.contains("ssn: \"[REDACTED]\""), "{query}");
    assert!(scrubber().audit(&ex).is_empty(), "{:?}", scrubber().audit(&ex));

    let raw = "{ customer(nino: \"AB 12 34 56 C\", phone: \"020 7946 0958\") { orders { id } } }";
    let mut ex = response("application/graphql", raw);
    scrubber().scrub(&mut ex);
    let out = String::from_utf8(ex.response.unwrap().body.data.to_vec()).unwrap();
    assert_gone(&out, &["AB 12 34 56 C", "7946 0958"]);
    assert!(out.ends_with("{ orders { id } } }"), "{out}");
}

#[test]
fn detectors_see_through_encodings() {
    for (text, planted) in [
        ("redirect to /u?to=jane%40example.com now", "jane%40example.com"),
        ("double: jane%2540example.com", "jane%2540example.com"),
        ("html: jane&#64;example&#46;com", "jane&#64;example"),
        ("entity: jane&commat;example.com", "jane&commat;"),
        (r"js: jane\u0040example.com", r"jane\u0040"),
        ("phone: %2B44%2020%207946%200958", "7946"),
    ] {
        let (out, ex) = scrub("text/plain", text);
        assert!(!out.contains(planted), "{planted:?} survived: {out}");
        assert!(scrubber().audit(&ex).is_empty(), "{text}: {:?}", scrubber().audit(&ex));
        assert!(!scrubber().audit(&response("text/plain", text)).is_empty(), "{text} not flagged");
    }
}

#[test]
fn names_of_people_but_not_of_products() {
    let (out, _) =
        scrub("application/json", r#"{"id": 7, "name": "Nora Haddad", "email": "nora@example.com", "plan": "pro"}"#);
    assert_gone(&out, &["Nora Haddad"]);
    let (out, _) = scrub(
        "application/json",
        r#"{"users": [{"id": 1, "name": "Sven Berg"}], "product": {"id": 2, "name": "Desk lamp"}}"#,
    );
    assert_gone(&out, &["Sven Berg"]);
    assert_kept(&out, &["\"name\": \"Desk lamp\""]);
    let (out, _) = scrub("application/json", r#"[{"id": 3, "name": "Chair", "price_cents": 4999, "in_stock": true}]"#);
    assert_kept(&out, &["\"name\": \"Chair\""]);
}

#[test]
fn secrets_under_credential_names_and_header_shaped_members() {
    let (out, _) = scrub(
        "application/json",
        r#"{"session": "Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah5Sg", "refresh_token_id": "ab", "request_id": "c0ffee00c0ffee00c0ffee00", "proxy-authorization": "Basic dXNlcjpwYXNzd29yZA==", "set-cookie": "sid=abc123def456; Path=/; HttpOnly"}"#,
    );
    assert_gone(&out, &["Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah5Sg", "dXNlcjpwYXNzd29yZA==", "abc123def456"]);
    assert_kept(&out, &["c0ffee00c0ffee00c0ffee00", "\"Basic tok_", "; Path=/; HttpOnly"]);
}

/// Strings holding documents of every embedded kind, nested.
fn arb_embedded(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        "[a-z0-9 @.%+&=;:/?#_-]{0,24}",
        Just("jane@example.com".to_string()),
        Just("4111 1111 1111 1111".to_string()),
        Just("Bearer abcdefgh12345678".to_string()),
        Just("a%40b.co".to_string()),
    ];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(("[a-z_]{1,8}", inner.clone()), 0..4).prop_map(|m| {
                let map: serde_json::Map<String, serde_json::Value> =
                    m.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                serde_json::Value::Object(map).to_string()
            }),
            prop::collection::vec(("[a-z_]{1,8}", inner.clone()), 1..4)
                .prop_map(|pairs| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!(
                "sid={}; csrftoken={}",
                a.replace([';', ' '], ""),
                b.replace([';', ' '], "")
            )),
            inner.clone().prop_map(|q| format!(
                "https://x.example/p?q={}",
                form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
            )),
            inner.prop_map(|s| format!("<a x=\"1\"><b>{}</b></a>", quick_xml::escape::escape(s.as_str()))),
        ]
    })
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn embedded_documents_round_trip_in_their_encoding(s in arb_embedded(3)) {
        let doc = serde_json::json!({"value": s, "list": [s.clone()]}).to_string();
        let (out, _) = scrub("application/json", &doc);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        let inner = v["value"].as_str().expect("still a string");
        // An embedded JSON document stays JSON of the same shape.
        if let Ok(before) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&s) {
            let after: serde_json::Map<String, serde_json::Value> = serde_json::from_str(inner).expect("still JSON inside");
            prop_assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
        }
        let (again, _) = scrub("application/json", &out);
        prop_assert_eq!(&again, &out, "idempotent");
    }

    #[test]
    fn xml_stays_well_formed(texts in prop::collection::vec("[a-zA-Z0-9 @.&<>\"'+%-]{0,30}", 1..5), attr in "[a-z0-9@.+ -]{0,20}") {
        let mut doc = format!("<root a=\"{}\">", quick_xml::escape::escape(attr.as_str()));
        for (i, t) in texts.iter().enumerate() {
            let el = ["name", "email", "note", "password", "x"][i % 5];
            doc.push_str(&format!("<{el}>{}</{el}>", quick_xml::escape::escape(t.as_str())));
        }
        doc.push_str("</root>");
        let (out, _) = scrub("application/xml", &doc);
        let mut r = quick_xml::Reader::from_str(&out);
        loop {
            match r.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => prop_assert!(false, "{e} in {out}"),
            }
        }
        let (again, _) = scrub("application/xml", &out);
        prop_assert_eq!(again, out);
    }

    #[test]
    fn no_panic_on_arbitrary_nesting(s in arb_embedded(4), ct in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/xml"), Just("application/graphql"), Just("application/x-www-form-urlencoded")]) {
        let mut ex = response(ct, &s);
        scrubber().scrub(&mut ex);
        let _ = scrubber().audit(&ex);
    }
}
