//! Shapes a security review found leaking (or wrongly scrubbed) after the first round of
//! embedded-document work, one test per class. Each asserts the planted value is gone
//! and the auditor agrees, or that a harmless value survives.

use super::*;
use crate::exchange::{Body, Request, Response};

fn scrubber() -> &'static Scrubber {
    static SCRUBBER: std::sync::OnceLock<Scrubber> = std::sync::OnceLock::new();
    SCRUBBER.get_or_init(|| Scrubber::with_defaults(Some(b"hostile shapes test key")))
}

/// A request with `headers` and `body` of `content_type`; the scrubbed exchange.
fn request(target: &str, content_type: &str, headers: &[(&str, &str)], body: &str) -> Exchange {
    let mut h = Headers::new();
    if !content_type.is_empty() {
        h.push("Content-Type", content_type);
    }
    for (n, v) in headers {
        h.push(*n, *v);
    }
    let mut ex = Exchange {
        request: Request {
            method: "POST".into(),
            target: target.into(),
            headers: h,
            body: Body::full(body.as_bytes().to_vec()),
            ..Default::default()
        },
        response: Some(Response { status: 200, ..Default::default() }),
        ..Default::default()
    };
    let raw = ex.clone();
    assert!(!scrubber().audit(&raw).is_empty() || body.is_empty(), "the auditor flags the raw request: {body}");
    scrubber().scrub(&mut ex);
    ex
}

/// A request of `content_type` with `headers` and `body`, not scrubbed yet.
fn unscrubbed(content_type: &str, headers: &[(&str, &str)], body: &str) -> Exchange {
    let mut h = Headers::new();
    h.push("Content-Type", content_type);
    for (n, v) in headers {
        h.push(*n, *v);
    }
    Exchange {
        request: Request {
            method: "POST".into(),
            target: "/".into(),
            headers: h,
            body: Body::full(body.as_bytes().to_vec()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A request of `content_type` whose body `data` was cut at `--max-body`, not scrubbed yet.
fn cut(content_type: &str, data: &str) -> Exchange {
    let mut ex = unscrubbed(content_type, &[], data);
    ex.request.body.truncated = true;
    ex.request.body.len = data.len() as u64 + 100;
    ex
}

fn text(ex: &Exchange) -> String {
    let mut all = ex.request.target.clone();
    for h in ex.request.headers.iter() {
        all.push_str(&format!("\n{}: {}", h.name.to_str_lossy(), h.value.to_str_lossy()));
    }
    all.push('\n');
    all.push_str(&String::from_utf8_lossy(&ex.request.body.data));
    all
}

fn gone(ex: &Exchange, planted: &[&str]) {
    let all = text(ex);
    for p in planted {
        assert!(!all.contains(p), "{p:?} survived:\n{all}");
    }
    assert!(scrubber().audit(ex).is_empty(), "{:?}\n{all}", scrubber().audit(ex));
}

#[test]
fn passwords_under_any_name() {
    let ex = request(
        "/",
        "application/json",
        &[],
        r#"{"currentPassword":"Cur!Pw1","newPassword":"New!Pw2","password_confirmation":"Conf!Pw3","DATABASE_PASSWORD":"DbPassw0rd!","SMTP_PASS":"SmtpP4ss","credentials":[{"type":"password","value":"Kc!Secret99"}],"properties":[{"name":"password","value":"Hs!Pw5"}],"clientSecret":"cs_9f8e7d6c5b4a","note":"Tr0ub4dor***x"}"#,
    );
    gone(
        &ex,
        &["Cur!Pw1", "New!Pw2", "Conf!Pw3", "DbPassw0rd!", "SmtpP4ss", "Kc!Secret99", "Hs!Pw5", "cs_9f8e7d6c5b4a"],
    );
}

#[test]
fn graphql_with_leading_comments_and_password_arguments() {
    let ex = request(
        "/graphql",
        "application/json",
        &[],
        r##"{"query":"# Write your query\nmutation { changePassword(currentPassword: \"Gql!Old1\", newPassword: \"Gql!New2\") { ok } }"}"##,
    );
    gone(&ex, &["Gql!Old1", "Gql!New2"]);
}

#[test]
fn structured_form_names() {
    let ex = request(
        "/",
        "application/x-www-form-urlencoded",
        &[],
        "user%5Bpassword%5D=Rails%21Pw1&customer%5Bfirst_name%5D=Railsina&user.password=Dot%21Pw2&code=4f3a2b1c&code_verifier=dBjftJeZ4CVPmB92K27uhbUJU1p1r",
    );
    gone(&ex, &["Rails%21Pw1", "Railsina", "Dot%21Pw2", "4f3a2b1c", "dBjftJeZ4CVP"]);
}

#[test]
fn credential_headers_outside_the_usual_names() {
    let ex = request(
        "/",
        "",
        &[
            ("api-key", "azk_0123456789abcdef"),
            ("Ocp-Apim-Subscription-Key", "apim0123456789abcdef"),
            ("X-Auth-Key", "cfk_0123456789abcdef"),
            ("Token", "tk_0123456789abcdef"),
            ("Link", "<https://api.example.com/items?page=2&access_token=ya29.a0Af0123456789>; rel=\"next\""),
        ],
        "",
    );
    gone(
        &ex,
        &[
            "azk_0123456789abcdef",
            "apim0123456789abcdef",
            "cfk_0123456789abcdef",
            "tk_0123456789abcdef",
            "ya29.a0Af0123456789",
        ],
    );
}

#[test]
fn secrets_in_urls_keys_and_tokens() {
    let ex = request(
        "/reset-password/9f86d081884c7d659a2feaa0c55ad015?x=1",
        "application/json",
        &[],
        r#"{"dsn":"postgres://app:PgS3cretPw@db:5432/prod","log":"retrying http://admin:HttpS3cret@10.0.0.5:8080/health in 5s","private_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n","cardCode":"123","securityCode":"4567","env":"GITHUB_TOKEN=github_pat_11ABCDEFG0123456789_abcdefghijklmnop"}"#,
    );
    gone(
        &ex,
        &[
            "9f86d081884c7d659a2feaa0c55ad015",
            "PgS3cretPw",
            "HttpS3cret",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "\"123\"",
            "4567",
            "github_pat_11ABCDEFG",
        ],
    );
}

#[test]
fn labelled_values_in_text_bodies() {
    for (ct, body) in [
        ("text/event-stream", "event: login\ndata: {\"user\":{\"name\":\"Sse Person\",\"email\":\"sse@example.com\"},\"password\":\"SsePw!1\"}\n\n"),
        ("application/javascript", "cb({\"password\":\"JsonpPw!2\",\"access_token\":\"opaqueAccess0123\"})"),
        ("text/plain", "login failed: {'username': 'pyuser', 'password': 'PyPw!77'}"),
        ("text/plain", "level=error msg=\"login failed\" password=LogfmtPw!8 user_email=logfmt@example.com"),
        ("text/yaml", "database:\n  password: YamlPw!9\n  host: db.internal\n"),
    ] {
        let ex = request("/", ct, &[], body);
        gone(&ex, &["Sse Person", "sse@example.com", "SsePw!1", "JsonpPw!2", "opaqueAccess0123", "pyuser", "PyPw!77", "LogfmtPw!8", "YamlPw!9"]);
        assert!(text(&ex).contains("db.internal") || !body.contains("db.internal"));
    }
}

#[test]
fn cookies_without_names_and_cut_text() {
    let ex = request("/", "", &[("Cookie", "NoNameSessionValue0123456789")], "");
    gone(&ex, &["NoNameSessionValue0123456789"]);
    let mut ex = cut("text/plain", "card 4111 1111 1111 11");
    scrubber().scrub(&mut ex);
    assert!(!String::from_utf8_lossy(&ex.request.body.data).contains("1111 11"), "the cut word is dropped");
}

#[test]
fn harmless_values_survive() {
    let body = r#"{"product":"Basic T-Shirt","error":"The access token provided is expired","digest":"Weekly digest delivered every Monday","logo":"logo@2x.png","ua":"Chrome/120.0.0.0","sku":"TS123456A","when":"05.03.2024 10:15","region":{"displayName":"West Europe"},"Key":"reports/2024/q1/summary-final.pdf","sortKey":"c0ffee00c0ffee00c0ffee00","remote":"git@github.com:acme/shop.git","next_page_token":"CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA0cTZtNhABGAE"}"#;
    let mut ex = unscrubbed("application/json", &[], body);
    assert_eq!(scrubber().audit(&ex), vec![], "the auditor raises no false alarm");
    scrubber().scrub(&mut ex);
    assert_eq!(String::from_utf8_lossy(&ex.request.body.data), body);
}

#[test]
fn second_review_shapes() {
    let ex = request(
        "/",
        "text/plain",
        &[],
        "GET /me HTTP/1.1\nAuthorization: Bearer AuthTextTok0123456789abcdef\nCookie: session=EchoSess0123456789; theme=dark\n",
    );
    gone(&ex, &["AuthTextTok0123456789abcdef", "EchoSess0123456789"]);
    let ex = request(
        "/",
        "application/json",
        &[],
        r#"{"patch":[{"op":"replace","path":"/password","value":"PatchPw9!zz"}],"pairs":[{"k":"password","v":"KvPw!42"}],"conn":"Server=db;User Id=sa;Password=AdoPw!123;","jdbc":"jdbc:mysql://db/app?user=root&password=JdbcPw456","path":"/reset-password/RegResetTok0123456789abcdef","log":"request headers: Authorization: Bearer LogTok0123456789abcdef"}"#,
    );
    gone(
        &ex,
        &["PatchPw9!zz", "KvPw!42", "AdoPw!123", "JdbcPw456", "RegResetTok0123456789abcdef", "LogTok0123456789abcdef"],
    );
    let ex = request(
        "/RPC2",
        "text/xml",
        &[],
        "<methodCall><params><param><value><struct><member><name>password</name><value><string>XmlRpcPw2</string></value></member><member><name>user</name><value><string>bob</string></value></member></struct></value></param></params></methodCall>",
    );
    gone(&ex, &["XmlRpcPw2"]);
    assert!(text(&ex).contains("<name>password</name>") && text(&ex).contains("<string>bob</string>"), "{}", text(&ex));
}

#[test]
fn second_review_false_positives() {
    let body = r#"{"className":"btn-primary","businessName":"Acme GmbH","syntaxId":"js","license":"MIT","secretary":"Ms Moneypenny","max_tokens":1024,"usage":{"prompt_tokens":12,"total_tokens":40}}"#;
    let mut ex =
        unscrubbed("application/json", &[("Forwarded", "for=198.51.100.17;proto=https;by=203.0.113.43")], body);
    scrubber().scrub(&mut ex);
    assert_eq!(String::from_utf8_lossy(&ex.request.body.data), body);
    let fwd = ex.request.headers.get_str("forwarded").unwrap();
    assert!(fwd.contains(";proto=https;by=") && !fwd.contains("198.51.100.17"), "{fwd}");
}

#[test]
fn third_round_shapes() {
    let ex = request(
        "/cart;jsessionid=1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D/view",
        "text/html",
        &[],
        "<form><input type=\"hidden\" name=\"authenticity_token\" value=\"Rails0123456789abcdefXYZ\"><input name=\"password\" value=\"HtmlPw!9\"></form><meta name=\"csrf-token\" content=\"MetaCsrf0123456789abcdef\">\nkeys: ya29.a0AfH6SMBx0123456789abcdefghij hf_abcdefghijklmnopqrstuvwxyz0123456789\n",
    );
    gone(
        &ex,
        &[
            "1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D",
            "Rails0123456789abcdefXYZ",
            "HtmlPw!9",
            "MetaCsrf0123456789abcdef",
            "ya29.a0AfH6SMBx",
            "hf_abcdefghij",
        ],
    );
}

#[test]
fn csv_columns_by_header() {
    let ex = request(
        "/export",
        "text/csv; charset=utf-8",
        &[],
        "id,full_name,email,password,dob,postcode,sku\r\n1,Kvinta Labelworth,kvinta@example.com,CsvPw!1,1980-02-03,SW1A 1AA,KB-2231\r\n2,\"Doe, Jane\",jane@example.org,\"Pw,2\",1975-06-07,10115,MS-77\r\n",
    );
    gone(
        &ex,
        &[
            "Kvinta Labelworth",
            "kvinta@example.com",
            "CsvPw!1",
            "1980-02-03",
            "SW1A 1AA",
            "Doe, Jane",
            "jane@example.org",
            "Pw,2",
            "1975-06-07",
            "10115",
        ],
    );
    let out = text(&ex);
    assert!(
        out.contains("id,full_name,email,password,dob,postcode,sku\r\n1,tok_")
            && out.contains(",KB-2231\r\n2,")
            && out.contains(",MS-77\r\n"),
        "{out}"
    );
}

#[test]
fn base64_wrapped_json() {
    use base64::Engine as _;
    let inner = r#"{"email":"pubsub@example.com","password":"B64Pw!7","order":"ORD-77"}"#;
    let data = base64::engine::general_purpose::STANDARD.encode(inner);
    let ex =
        request("/push", "application/json", &[], &format!(r#"{{"message":{{"data":"{data}","messageId":"123"}}}}"#));
    let body: serde_json::Value = serde_json::from_slice(&ex.request.body.data).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(body["message"]["data"].as_str().unwrap()).unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    assert!(
        !decoded.contains("pubsub@example.com") && !decoded.contains("B64Pw!7") && decoded.contains("ORD-77"),
        "{decoded}"
    );
    assert!(scrubber().audit(&ex).is_empty());
}

#[test]
fn graphql_variables_under_other_names() {
    let ex = request(
        "/graphql",
        "application/json",
        &[],
        r#"{"variables":{"p":"GqlVarPw31","u":"gqluser","n":3},"query":"mutation Login($u: String!, $p: String!) { login(username: $u, password: $p) { token } }"}"#,
    );
    gone(&ex, &["GqlVarPw31", "gqluser"]);
    assert!(text(&ex).contains("\"n\":3"));
}

#[test]
fn cut_bodies_are_scrubbed_idempotently() {
    for (ct, data) in [
        ("text/plain", "card 4111 1111 1111 11"),
        ("text/plain", "mail jane@example.com and more tex"),
        ("text/plain", "\0 "),
        ("text/plain", "nospace"),
        ("application/x-www-form-urlencoded", "a=1&email=jane%40example.com&b=2&c=tru"),
    ] {
        let mut ex = cut(ct, data);
        scrubber().scrub(&mut ex);
        let once = ex.request.body.data.clone();
        scrubber().scrub(&mut ex);
        assert_eq!(ex.request.body.data, once, "{ct} {data:?}");
        let text = String::from_utf8_lossy(&once);
        assert!(!text.contains("1111") && !text.contains("jane"), "{text:?}");
    }
}

#[test]
fn code_review_findings() {
    // Many `value` members and `variables` keys: each object is read for its pair name and
    // its query once, not once per member (this took minutes when it was quadratic).
    let many: String = (0..20_000).map(|_| r#""value":"a","#).collect::<String>();
    let ex = request("/", "application/json", &[], &format!(r#"{{{many}"email":"many@example.com"}}"#));
    gone(&ex, &["many@example.com"]);
    let many: String = (0..8_000).map(|_| r#""variables":{},"#).collect::<String>();
    let body = format!(r#"{{{many}"query":"mutation {{ login(password: $p) {{ ok }} }}","email":"q@example.com"}}"#);
    gone(&request("/", "application/json", &[], &body), &["q@example.com"]);
    // A malformed attribute does not keep the tag's other attributes as they were.
    let ex = request("/", "application/xml", &[], r#"<user email="jane.doe@example.com" flag><x/></user>"#);
    assert!(!text(&ex).contains("jane.doe@example.com"), "{}", text(&ex));
    // Matrix parameters are encoded once.
    let ex = request("/a;password=hunter2;x=1/b", "", &[], "");
    assert_eq!(ex.request.target, "/a;password=%5BREDACTED%5D;x=1/b");
    // Rule names come from the policy, never from the body's keys.
    let ex = request("/", "application/json", &[], r#"{"user_jane_doe_1970_password":"y1!zzz"}"#);
    assert!(ex.scrub.iter().all(|h| !h.rule.contains("jane")), "{:?}", ex.scrub);
    // Only a real scheme makes `Scheme <mask>` a scrubbed value.
    let ex = request("/", "application/json", &[], r#"{"password":"Sunshine *"}"#);
    gone(&ex, &["Sunshine"]);
}

#[test]
fn xml_cut_inside_text_drops_the_cut_text() {
    let mut ex = cut("application/xml", "<r><id>7</id><note>call jane.doe@exam");
    scrubber().scrub(&mut ex);
    let out = String::from_utf8_lossy(&ex.request.body.data).into_owned();
    assert!(out.starts_with("<r><id>7</id><note>") && !out.contains("jane"), "{out}");
}

#[test]
fn xml_depth_bombs_are_refused_and_compressed_xml_is_scrubbed() {
    let bomb = format!("{}jane@example.com{}", "<a>".repeat(300), "</a>".repeat(300));
    let ex = request("/", "application/xml", &[], &bomb);
    assert!(!text(&ex).contains("jane@example.com"), "a depth bomb is not kept");
    let xml = r#"<user email="deflated@example.com"><name>x</name></user>"#;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, xml.as_bytes()).unwrap();
    let mut ex = unscrubbed("text/xml", &[("Content-Encoding", "deflate")], "");
    ex.request.body = Body::full(z.finish().unwrap());
    scrubber().scrub(&mut ex);
    let out = String::from_utf8_lossy(&ex.request.body.data).into_owned();
    assert!(out.starts_with("<user email=\"tok_email_") && !out.contains("deflated@"), "{out}");
}

/// A JSON body captured up to `limit` bytes (as `--max-body` does), scrubbed twice.
fn cut_json(body: &str, limit: usize) -> (String, String) {
    let once = cut_json_pass(&body.as_bytes()[..limit.min(body.len())]);
    let twice = cut_json_pass(once.as_bytes());
    (once, twice)
}

fn cut_json_pass(data: &[u8]) -> String {
    let mut h = Headers::new();
    h.push("content-type", "application/json");
    let mut ex = Exchange {
        request: Request {
            method: "POST".into(),
            target: "/".into(),
            headers: h,
            body: Body { truncated: true, data: data.to_vec().into(), len: 10_000, decoded_from: None },
            ..Default::default()
        },
        ..Default::default()
    };
    scrubber().scrub(&mut ex);
    String::from_utf8(ex.request.body.data.to_vec()).unwrap()
}

#[test]
fn a_body_cut_inside_a_string_keeps_its_whole_words_and_nothing_half_read() {
    let body = r#"{"data": "a fairly long string value that goes on and on past the limit of sixty four bytes"}"#;
    let (once, twice) = cut_json(body, 64);
    assert_eq!(once, r#"{"data": "a fairly long string value that goes on and on past""#);
    assert_eq!(twice, once, "idempotent");
    // The word the cut went through may be the front of something personal.
    for (body, limit, gone) in [
        (r#"{"note": "please write to ada.lovelace@example.com today"}"#, 38, "ada.lovelace"),
        (r#"{"note": "card 4111 1111 1111 1111 expires soon"}"#, 28, "4111"),
        (r#"{"password": "correct horse battery staple"}"#, 30, "correct"),
        (r#"{"user": {"name": "Ada Lovelace"}}"#, 26, "Ada"),
        (r#"{"data": "{\"password\": \"hunter two\", \"note\": \"hello there friend\"}"}"#, 60, "hunter"),
    ] {
        let (once, twice) = cut_json(body, limit);
        assert!(!once.contains(gone), "{body} cut at {limit}: {once}");
        assert_eq!(twice, once, "idempotent: {body}");
    }
    // Complete members before the cut stay as they were.
    let (once, _) = cut_json(r#"{"id": 7, "status": "shipped", "note": "leave it at the door"}"#, 50);
    assert!(once.starts_with(r#"{"id": 7, "status": "shipped", "note": "leave it"#), "{once}");
}

#[test]
fn cut_bodies_keep_no_half_name_and_scrub_to_the_same_bytes_twice() {
    // A name cut inside an object that is not (yet) known to be a person's.
    let body = r#"{"results": [{"name": "Grace Hopper", "role": "admiral"}]}"#;
    let cut = body.find("Hop").unwrap() + 3;
    let (once, twice) = cut_json(body, cut);
    assert!(!once.contains("Grace"), "{once}");
    assert_eq!(twice, once);
    // Numbers and literals before the cut could be cut themselves on a second pass.
    for body in [r#"{"a": 1, "b": 2}"#, "[1, 2, 3]", r#"{"a": true, "b": false}"#, r#"{"a": 1 , "b": 2}"#] {
        for limit in 1..body.len() {
            let (once, twice) = cut_json(body, limit);
            assert_eq!(twice, once, "{body} cut at {limit}");
        }
    }
}

#[test]
fn a_cut_string_is_scrubbed_through_its_escapes() {
    // The words before the cut hold an address written with a JSON escape.
    let body = r#"{"note": "mail ada\u0040example.com or ring +44 20 7946 0958 today, thanks a lot"}"#;
    let cut = body.find("thanks").unwrap() + 3;
    let (once, twice) = cut_json(body, cut);
    assert!(!once.contains("ada") && !once.contains("7946"), "{once}");
    assert!(once.contains("mail") && once.contains("today"), "{once}");
    assert_eq!(twice, once);
}
