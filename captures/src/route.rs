//! Route templates: `/users/123/orders/9f1c…` becomes `/users/{id}/orders/{uuid}`, so
//! statistics group requests by endpoint rather than by URL.
//!
//! Only path segments that look generated are replaced: numbers, UUIDs, long hex strings,
//! dates, e-mail addresses and long random-looking tokens. Words, version prefixes (`v2`)
//! and short slugs stay, because they name endpoints.

/// The templated path of `target` (a path with optional query; the query is dropped).
pub fn template(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(classify(segment).unwrap_or(segment));
    }
    out
}

/// `METHOD /template`, the key statistics group by.
pub fn route_key(method: &str, target: &str) -> String {
    format!("{method} {}", template(target))
}

fn classify(segment: &str) -> Option<&'static str> {
    let s = segment.as_bytes();
    if s.is_empty() {
        return None;
    }
    if s.iter().all(u8::is_ascii_digit) {
        return Some("{id}");
    }
    if is_uuid(s) {
        return Some("{uuid}");
    }
    if is_date(s) {
        return Some("{date}");
    }
    if (segment.contains('@') || segment.contains("%40")) && segment.contains('.') {
        return Some("{email}");
    }
    let digits = s.iter().filter(|b| b.is_ascii_digit()).count();
    if s.len() >= 8 && digits > 0 && s.iter().all(u8::is_ascii_hexdigit) {
        return Some("{hex}");
    }
    let letters = s.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let token_chars = s.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%'));
    if s.len() >= 16 && token_chars && digits >= 2 && letters >= 2 && !s.contains(&b'.') {
        return Some("{token}");
    }
    None
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { *b == b'-' } else { b.is_ascii_hexdigit() })
}

fn is_date(s: &[u8]) -> bool {
    // 2024-01-31
    s.len() == 10 && s.iter().enumerate().all(|(i, b)| if matches!(i, 4 | 7) { *b == b'-' } else { b.is_ascii_digit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_generated_segments_and_keeps_words() {
        let cases = [
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/456?expand=1", "/users/{id}/orders/{id}"),
            ("/items/550e8400-e29b-41d4-a716-446655440000", "/items/{uuid}"),
            ("/blobs/9f86d081884c7d65", "/blobs/{hex}"),
            ("/reports/2024-01-31", "/reports/{date}"),
            ("/users/jane@example.com/orders", "/users/{email}/orders"),
            ("/users/jane%40example.com/orders", "/users/{email}/orders"),
            ("/s/aZ3kP9xQ2mN7vB4t", "/s/{token}"),
            ("/api/v2/search", "/api/v2/search"),
            ("/static/app.min.js", "/static/app.min.js"),
            ("/decade/facade", "/decade/facade"),
            ("/", "/"),
            ("", "/"),
            ("/trailing/", "/trailing/"),
        ];
        for (input, want) in cases {
            assert_eq!(template(input), want, "template({input:?})");
        }
        assert_eq!(route_key("GET", "/a/1"), "GET /a/{id}");
    }
}
