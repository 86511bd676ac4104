//! Values that are documents of their own. Answers echo requests (debug endpoints, webhook
//! delivery logs, gateways' request inspectors, error pages), so a JSON string may hold a
//! whole JSON or XML document, a form, a URL with a query, a cookie string or an
//! `Authorization` value. Each such value is parsed and scrubbed with its format's rules, recursively (to
//! [`MAX_EMBED_DEPTH`]), and written back in the same format; anything else meets the
//! detectors. Values under a name get that name's meaning too: a member named like a
//! credential header is treated as that header, a GraphQL document under `query` as
//! GraphQL, and a random-looking value under a name that says session, token, secret,
//! key, csrf, auth or sid as a secret.

use crate::scrub::action::Action;
use crate::scrub::detect::is_secretish;
use crate::scrub::policy::normalize_key;
use crate::scrub::{graphql, json, HeaderOutcome, PairsOf, Pass};

/// How many documents deep a value inside a value is followed.
pub const MAX_EMBED_DEPTH: u8 = 4;

/// `Authorization` schemes whose credential follows a space.
const AUTH_SCHEMES: &[&str] =
    &["bearer", "basic", "digest", "token", "negotiate", "apikey", "api-key", "hoba", "mutual", "dpop", "ntlm"];

/// Words in a name that make a random-looking value under it a secret.
const SECRET_WORDS: &[&str] = &["session", "token", "secret", "key", "csrf", "xsrf", "auth", "sid", "passw", "cred"];

/// Person parents: a `name` directly under one of these (or in a list of them) is a
/// person's name.
const PERSON_PARENTS: &[&str] = &[
    "user",
    "customer",
    "person",
    "people",
    "contact",
    "holder",
    "account",
    "owner",
    "author",
    "member",
    "employee",
    "patient",
    "recipient",
    "sender",
    "buyer",
    "seller",
    "profile",
    "billing",
    "shipping",
    "passenger",
    "guest",
    "driver",
    "applicant",
    "beneficiary",
    "client",
    "payer",
    "payee",
    "cardholder",
    "accountholder",
    "signer",
    "attendee",
    "student",
    "teacher",
    "from",
    "to",
    "cc",
    "bcc",
    "replyto",
];

/// Sibling names that say an object describes a person.
const PERSON_SIBLINGS: &[&str] = &[
    "email",
    "emailaddress",
    "mail",
    "phone",
    "phonenumber",
    "mobile",
    "telephone",
    "tel",
    "address",
    "streetaddress",
    "street",
    "dob",
    "dateofbirth",
    "birthdate",
    "birthday",
    "firstname",
    "lastname",
    "surname",
    "givenname",
    "familyname",
    "ssn",
    "nationalid",
    "gender",
    "salutation",
    "nationality",
];

/// True when a member named `name` (normalised) under `parent` (normalised; lists count as
/// their singular) is a person's name.
pub(crate) fn is_person_name_key(name: &str) -> bool {
    matches!(name, "name" | "fullname" | "displayname" | "realname" | "legalname" | "nickname")
}

/// True when `parent` (a normalised key) names a person.
pub(crate) fn is_person_parent(parent: &str) -> bool {
    let singular = parent.strip_suffix('s').unwrap_or(parent);
    PERSON_PARENTS.contains(&parent) || PERSON_PARENTS.contains(&singular)
}

/// True when a sibling named `key` (normalised) says its object is a person.
pub(crate) fn is_person_sibling(key: &str) -> bool {
    PERSON_SIBLINGS.contains(&key)
}

/// True when a random-looking value under `name` is a secret.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// `Bearer abc…`: the scheme and the credential.
pub(crate) fn auth_value(text: &str) -> Option<(&str, &str)> {
    let (scheme, credential) = text.split_once(' ')?;
    (AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)) && credential.trim().len() >= 4)
        .then_some((scheme, credential))
}

/// True for `a=1&b=2`: names of URL-ish characters, no white space.
pub(crate) fn looks_like_form(text: &str) -> bool {
    !text.is_empty()
        && text.contains('=')
        && !text.bytes().any(|b| b.is_ascii_whitespace())
        && text.split('&').all(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            !name.is_empty()
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'%')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']' | b'%'))
        })
}

/// `a=1; b=2` (a Cookie header) or `a=1; Path=/; HttpOnly` (a Set-Cookie header); the
/// second is `Some(true)`.
pub(crate) fn looks_like_cookie(text: &str) -> Option<bool> {
    if !text.contains('=') || !text.contains(';') {
        return None;
    }
    let mut set_cookie = false;
    for (i, part) in text.split(';').map(str::trim).enumerate() {
        let name = part.split_once('=').map_or(part, |(n, _)| n).trim();
        let attribute = matches!(
            name.to_ascii_lowercase().as_str(),
            "path" | "domain" | "expires" | "max-age" | "samesite" | "httponly" | "secure" | "partitioned"
        );
        if i > 0 && attribute {
            set_cookie = true;
            continue;
        }
        let token = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            && part.contains('=');
        if !(token || part.is_empty() && i > 0) {
            return None;
        }
    }
    Some(set_cookie)
}

/// True for an absolute URL or a path with a query, without white space.
pub(crate) fn looks_like_url(text: &str) -> bool {
    let scheme = |s: &str| text.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s));
    (scheme("http://") || scheme("https://") || (text.starts_with('/') && text.contains('?')))
        && !text.bytes().any(|b| b.is_ascii_whitespace())
}

impl Pass<'_> {
    /// A value no rule took, under `key` when it has one: by what its name says, else as
    /// the document it is, else through the detectors. `None` when it stays as it is.
    pub(crate) fn free_value(&mut self, key: Option<&str>, text: &str) -> Option<String> {
        if let Some(key) = key {
            if let Some(out) = self.named(key, text) {
                return out;
            }
        }
        if let Some(out) = self.embedded(text) {
            return out;
        }
        self.detect_text(text)
    }

    /// The rule the key tables give `name` (JSON keys apply to every named value: form
    /// fields, XML elements and attributes, GraphQL arguments).
    pub(crate) fn key_rule(&self, name: &str) -> Option<(Action, String)> {
        let norm = normalize_key(name);
        self.scrubber.policy.json_keys.get(&norm).map(|a| (*a, format!("json-key:{norm}")))
    }

    /// The header `name` is named like, if a header rule or the cookie parsing applies to
    /// it: `Cookie`, `Authorization`, `X-Api-Key`, `x-…-token` …
    pub(crate) fn header_like(&self, name: &str) -> Option<String> {
        let mut buf = [0u8; 64];
        let lower = crate::scrub::lowercase_ascii(name.as_bytes(), &mut buf)?;
        let policy = &self.scrubber.policy;
        let known = lower == "cookie"
            || lower == "set-cookie"
            || policy.headers.contains_key(lower)
            || policy.header_patterns.iter().any(|(re, _, _)| re.is_match(lower));
        known.then(|| lower.to_string())
    }

    /// `text` under `key`: `Some(result)` when the name decides how it is scrubbed.
    fn named(&mut self, key: &str, text: &str) -> Option<Option<String>> {
        if let Some(header) = self.header_like(key) {
            return Some(match self.header_value(&header, text) {
                HeaderOutcome::Keep => self.detect_text(text),
                HeaderOutcome::Drop => Some(String::new()),
                HeaderOutcome::Replace(new) => Some(new),
            });
        }
        if key.eq_ignore_ascii_case("query") && graphql::looks_like(text) {
            return Some(self.nested(|p| graphql::scrub(p, text)));
        }
        if text.len() >= 20 && is_secretish(text) && is_secret_name(key) {
            let rule = format!("secret:{}", normalize_key(key));
            return Some(self.apply(Action::Hash, "secret", text, &rule));
        }
        None
    }

    /// Runs `f` one document deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// `Some(result)` when `text` is a document of a format this module parses.
    fn embedded(&mut self, text: &str) -> Option<Option<String>> {
        if self.depth >= MAX_EMBED_DEPTH || text.len() < 3 {
            return None;
        }
        let t = text.trim();
        let (first, last) = (*t.as_bytes().first()?, *t.as_bytes().last()?);
        if (first == b'{' && last == b'}') || (first == b'[' && last == b']') {
            if let Ok(result) = self.nested(|p| json::scrub(p, text.as_bytes(), false)) {
                return Some(result.and_then(|v| String::from_utf8(v).ok()));
            }
            // `{ user(id: 1) { … } }`: GraphQL's query shorthand.
            if first == b'{' && graphql::looks_like(t) {
                return Some(self.nested(|p| graphql::scrub(p, text)));
            }
            return None;
        }
        if first == b'<' && last == b'>' {
            // An XML document quoted in a value (an echoed SOAP request, a logged payload).
            if let Ok(result) = self.nested(|p| crate::scrub::xml::scrub(p, text.as_bytes(), false)) {
                return Some(result.and_then(|v| String::from_utf8(v).ok()));
            }
        }
        if looks_like_url(t) {
            return Some(self.nested(|p| p.url(text)));
        }
        if auth_value(t).is_some() && self.scrubber.policy.headers.contains_key("authorization") {
            return Some(match self.header_value("authorization", text) {
                HeaderOutcome::Replace(new) => Some(new),
                HeaderOutcome::Drop => Some(String::new()),
                HeaderOutcome::Keep => None,
            });
        }
        if let Some(set_cookie) = looks_like_cookie(t) {
            return Some(match self.nested(|p| p.cookies(text, "; ", set_cookie)) {
                HeaderOutcome::Replace(new) => Some(new),
                HeaderOutcome::Drop => Some(String::new()),
                HeaderOutcome::Keep => self.detect_text(text),
            });
        }
        if looks_like_form(t) {
            return Some(self.nested(|p| p.pairs(text, PairsOf::Form)));
        }
        None
    }

    /// A URL: user-info hashed, host through the detectors, path and query as a request
    /// target, a fragment holding parameters (`#access_token=…`) as a query.
    fn url(&mut self, text: &str) -> Option<String> {
        let (origin, rest) = match text.find("://") {
            Some(i) => {
                let after = &text[i + 3..];
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                text.split_at(i + 3 + end)
            }
            None => ("", text),
        };
        let mut new_origin = None;
        if let Some(scheme_end) = origin.find("://").map(|i| i + 3) {
            let authority = &origin[scheme_end..];
            let (userinfo, host) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let new_user = userinfo.and_then(|u| self.apply(Action::Hash, "userinfo", u, "url:userinfo"));
            let new_host = self.detect_text(host);
            if new_user.is_some() || new_host.is_some() {
                let mut o = origin[..scheme_end].to_string();
                if let Some(u) = userinfo {
                    o.push_str(new_user.as_deref().unwrap_or(u));
                    o.push('@');
                }
                o.push_str(new_host.as_deref().unwrap_or(host));
                new_origin = Some(o);
            }
        }
        let (target, fragment) = match rest.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (rest, None),
        };
        let mut new_target = target.to_string();
        self.target(&mut new_target);
        let new_fragment =
            fragment.and_then(|f| if looks_like_form(f) { self.pairs(f, PairsOf::Query) } else { self.detect_text(f) });
        if new_origin.is_none() && new_target == target && new_fragment.is_none() {
            return None;
        }
        let mut out = new_origin.unwrap_or_else(|| origin.to_string());
        out.push_str(&new_target);
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(new_fragment.as_deref().unwrap_or(f));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_recognised() {
        assert!(looks_like_form("a=1&b=x%40y.com&c="));
        assert!(looks_like_form("session_id=abc"));
        assert!(!looks_like_form("a = 1"));
        assert!(!looks_like_form("jane@example.com=1"));
        assert!(!looks_like_form("no equals here"));
        assert_eq!(looks_like_cookie("session_id=abc; csrftoken=def"), Some(false));
        assert_eq!(looks_like_cookie("sid=abc; Path=/; HttpOnly; Secure"), Some(true));
        assert_eq!(looks_like_cookie("a; b"), None);
        assert_eq!(looks_like_cookie("x=1; this is prose; y"), None);
        assert!(looks_like_url("https://example.com/a?b=c"));
        assert!(looks_like_url("/search?q=x"));
        assert!(!looks_like_url("/static/app.js"));
        assert!(!looks_like_url("https://example.com and more"));
        assert_eq!(auth_value("Bearer abc.def.ghi"), Some(("Bearer", "abc.def.ghi")));
        assert_eq!(auth_value("Basically nothing"), None);
        assert!(is_person_parent("customers") && is_person_parent("user") && !is_person_parent("product"));
        assert!(is_secret_name("csrftoken") && is_secret_name("X-Session-Id") && !is_secret_name("request_id"));
    }
}
