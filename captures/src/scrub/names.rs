//! What names mean: which member, field, element or argument names make the value under
//! them a person's name, a secret, or one half of a name/value pair, and the innermost
//! name of a structured one (`user[password]`). The scrubber and the auditor share these.

/// Words of a name that make a random-looking value under it a secret.
const SECRET_WORDS: &[&str] = &[
    "session",
    "sessionid",
    "sid",
    "token",
    "secret",
    "csrf",
    "xsrf",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "passwd",
    "password",
    "apikey",
    "cookie",
    "jwt",
    "bearer",
    "signature",
    "nonce",
];

/// Words that make a following `key` a secret's name (`api_key`, `accessKey`).
const KEY_QUALIFIERS: &[&str] =
    &["api", "access", "secret", "private", "auth", "session", "signing", "encryption", "master", "client"];

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
    "applicant",
    "beneficiary",
    "payer",
    "payee",
    "cardholder",
    "accountholder",
    "signer",
    "attendee",
    "student",
    "teacher",
    "assignee",
    "reporter",
    "emergencycontact",
    "spouse",
    "guardian",
    "participant",
    "recipients",
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

/// `Authorization` schemes whose credential follows a space.
pub(crate) const AUTH_SCHEMES: &[&str] =
    &["bearer", "basic", "digest", "token", "negotiate", "apikey", "api-key", "hoba", "mutual", "dpop", "ntlm"];

/// The innermost name of a structured field name: `password` for `user[password]`,
/// `user.password` or `users[0][password]`.
pub(crate) fn leaf_name(name: &str) -> &str {
    if !name.contains(['[', '.', '/']) {
        return name;
    }
    name.split(['[', ']', '.', '/']).rfind(|s| !s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit())).unwrap_or(name)
}

/// True when a member named `name` (normalised) under `parent` (normalised; lists count as
/// their singular) is a person's name.
pub(crate) fn is_person_name_key(name: &str) -> bool {
    matches!(name, "name" | "fullname" | "displayname" | "realname" | "legalname" | "nickname")
}

/// Members that name another member's meaning in name/value pairs:
/// `{"name": "password", "value": "…"}`, `{"type": "password", "value": "…"}`.
pub(crate) fn is_pair_name_key(name: &str) -> bool {
    matches!(
        name,
        "name"
            | "type"
            | "key"
            | "k"
            | "field"
            | "fieldname"
            | "param"
            | "parameter"
            | "attribute"
            | "property"
            | "path"
            | "label"
    )
}

/// Members holding the value of a name/value pair.
pub(crate) fn is_pair_value_key(name: &str) -> bool {
    matches!(name, "value" | "values" | "val" | "v" | "fieldvalue" | "data" | "content" | "text")
}

/// True when `parent` (a normalised key) names a person.
pub(crate) fn is_person_parent(parent: &str) -> bool {
    static SET: std::sync::OnceLock<rustc_hash::FxHashSet<&'static str>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(|| PERSON_PARENTS.iter().copied().collect());
    let singular = parent.strip_suffix('s').unwrap_or(parent);
    set.contains(parent) || set.contains(singular)
}

/// True when a sibling named `key` (normalised) says its object is a person.
pub(crate) fn is_person_sibling(key: &str) -> bool {
    static SET: std::sync::OnceLock<rustc_hash::FxHashSet<&'static str>> = std::sync::OnceLock::new();
    SET.get_or_init(|| PERSON_SIBLINGS.iter().copied().collect()).contains(key)
}

/// True when a random-looking value under `name` is a secret: a word of the name says
/// session, token, secret, csrf, auth … (`X-Session-Id`, `csrftoken`), or `key` follows
/// a qualifier (`api_key`, `accessKey`). `sortKey`, `keyword`, `authorId` and an S3 `Key`
/// are not.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let words = words(name);
    words.iter().enumerate().any(|(i, w)| {
        SECRET_WORDS.contains(&w.as_str())
            || SECRET_WORDS.iter().any(|s| s.len() >= 5 && w.ends_with(s))
            || (w == "key" && i > 0 && KEY_QUALIFIERS.contains(&words[i - 1].as_str()))
    })
}

/// True when a query parameter (or path parameter, `;jsessionid=`) named `name` carries a
/// credential: a secret's name (`token`, `access_token`, `api_key`, `session`,
/// `password`, `client_secret`), a signature (`sig`, `signature`, `X-Amz-Signature`,
/// `X-Amz-Credential`, `X-Goog-Signature`), an OAuth `code`, or a bare `key`.
pub fn is_credential_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    is_secret_name(name)
        || matches!(lower.as_str(), "sig" | "signature" | "code" | "key" | "apikey" | "pass" | "pwd" | "password")
        || lower.ends_with("-signature")
        || lower.ends_with("-credential")
        || lower.ends_with("-security-token")
}

/// True when a request header named `name` carries a credential or an identity vouched for
/// by a proxy in front: `Authorization`, `Authentication`, `Proxy-Authorization`,
/// `Cookie`/`Cookie2`; a name that says secret (`X-Auth-Token`, `X-Session-Id`,
/// `X-CSRF-Token`, `X-Passcode`, `X-Signed-Request`); any `…-Key` but an idempotency,
/// cache or WebSocket key (`X-App-Key`, `Ocp-Apim-Subscription-Key`, `X-RapidAPI-Key`); a
/// client certificate (`X-Forwarded-Client-Cert`); a user asserted by an authenticating
/// proxy (`X-Forwarded-User`, `X-Remote-User`, `X-MS-Client-Principal`,
/// `X-Amzn-OIDC-Data`). A replay does not send these as recorded: they are production's
/// (or their pseudonyms), never staging's.
pub fn is_credential_header(name: &str) -> bool {
    // Most names hold none of these: decided by one automaton pass, without splitting them.
    const NEEDLES: &[&str] = &[
        "auth",
        "cookie",
        "sess",
        "sid",
        "token",
        "secret",
        "csrf",
        "xsrf",
        "cred",
        "pass",
        "pwd",
        "key",
        "jwt",
        "bearer",
        "sign",
        "nonce",
        "cert",
        "user",
        "email",
        "principal",
        "oidc",
        "otp",
        "group",
        "identity",
        "role",
        "imperson",
        "login",
        "pin",
        "mfa",
        "2fa",
        "ssl",
        "tls",
        "uid",
        "consumer",
        "hasura",
        "remote",
        "code",
        "dn",
        "subject",
        "amzn",
        "goog",
    ];
    static PREFILTER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    let prefilter = PREFILTER.get_or_init(|| {
        aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(NEEDLES).expect("fixed needles")
    });
    if !prefilter.is_match(name) {
        return false;
    }
    let words = words(name);
    let has = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
    const NOT_SECRET_KEYS: &[&str] = &[
        "idempotency",
        "websocket",
        "socket",
        "cache",
        "sort",
        "partition",
        "routing",
        "primary",
        "foreign",
        "public",
        "dedup",
        "deduplication",
        "message",
        "trace",
        "request",
        "correlation",
        "object",
        "shard",
        "lock",
        "hash",
    ];
    let key = words.iter().enumerate().any(|(i, w)| {
        (w == "key" || (w.len() > 3 && w.ends_with("key")))
            && !(i > 0 && NOT_SECRET_KEYS.contains(&words[i - 1].as_str()))
    });
    // A one-time code, a PIN, a second factor (`X-Totp`, `X-Sms-Code`, `X-Verification-Code`).
    let last = words.last().map(String::as_str).unwrap_or("");
    let before_last = words.len().checked_sub(2).and_then(|i| words.get(i)).map(String::as_str).unwrap_or("");
    let code = words.iter().any(|w| {
        matches!(w.as_str(), "otp" | "totp" | "hotp" | "pin" | "mfa" | "2fa" | "passcode")
            || (w.len() > 3 && (w.ends_with("otp") || w.ends_with("2fa")))
    }) || (last == "code"
        && matches!(
            before_last,
            "verification" | "sms" | "security" | "auth" | "confirmation" | "recovery" | "backup" | "login" | "access"
        ));
    // Who the caller is, as a gateway or an authenticating proxy asserts it: whole families
    // (Kong's X-Consumer-*, Hasura's X-Hasura-*, Kubernetes' X-Remote-* and Impersonate-*,
    // Authelia's Remote-*), or a name ending in who (`X-User`, `X-User-Id`,
    // `X-Forwarded-Email`, `X-Webauth-User`) — not `X-User-Locale` or `X-Group-By`.
    let family = |prefix: &[&str]| words.len() > prefix.len() && words.iter().zip(prefix).all(|(w, p)| w == p);
    let families = family(&["x", "consumer"])
        || family(&["x", "hasura"])
        || family(&["x", "remote"])
        || family(&["remote"])
        || family(&["impersonate"])
        || family(&["x", "auth", "request"])
        || family(&["x", "amzn", "oidc"])
        || family(&["x", "ms", "client", "principal"])
        || family(&["x", "goog", "authenticated"])
        || family(&["tailscale", "user"]);
    const WHO: &[&str] = &[
        "user",
        "userid",
        "username",
        "login",
        "email",
        "principal",
        "groups",
        "roles",
        "role",
        "identity",
        "uid",
        "userinfo",
    ];
    let ends_in_who = WHO.contains(&last) || (matches!(last, "id" | "name") && WHO.contains(&before_last));
    let asserted = words.first().is_some_and(|w| w == "x" || w == "remote")
        || has(&["remote", "forwarded", "authenticated", "auth", "webauth", "consumer", "client", "proxy", "gateway"]);
    key || code
        || is_secret_name(name)
        || has(&[
            "authentication",
            "authorization",
            "cookie2",
            "pwd",
            "pass",
            "passphrase",
            "signed",
            "oidc",
            "impersonate",
        ])
        || (has(&["cert", "certificate", "certs", "clientcert"])
            && has(&["client", "ssl", "tls", "peer", "forwarded", "arr"]))
        || (has(&["ssl", "tls", "client"])
            && has(&["dn", "subject", "issuer", "serial", "fingerprint", "cert", "certificate"]))
        || families
        || (ends_in_who && asserted)
}

/// True when a request header named `name` carries the client's address (`X-Forwarded-For`,
/// `Forwarded`, `X-Real-IP`, `True-Client-IP`, `X-Cluster-Client-IP`, `Fastly-Client-IP`,
/// `CloudFront-Viewer-Address`, `X-Envoy-External-Address` …): production's users, and a
/// trust decision that is staging's own to make.
pub fn is_client_address_header(name: &str) -> bool {
    // Every such name holds one of these: the rest (most) are decided by one automaton
    // pass, as the proxy asks this for every header of every request.
    static PREFILTER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    let prefilter = PREFILTER.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(["forwarded", "ip", "addr"])
            .expect("fixed needles")
    });
    if !prefilter.is_match(name) {
        return false;
    }
    if ["forwarded", "x-forwarded", "x-ip", "ip"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
        return true;
    }
    let holds = |word: &str| name.as_bytes().windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes()));
    if holds("forwarded-for") || holds("external-address") || holds("viewer-address") || holds("client-address") {
        return true;
    }
    if !(holds("ip") || holds("addr")) {
        return false;
    }
    let words = words(name);
    let has = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
    has(&["clientip", "socketip", "realip", "remoteip", "userip", "sourceip", "originip", "peerip"])
        || (has(&["ip", "ips", "ipv4", "ipv6", "addr", "address"])
            && has(&[
                "client",
                "real",
                "connecting",
                "true",
                "cluster",
                "original",
                "originating",
                "external",
                "remote",
                "forwarded",
                "user",
                "proxyuser",
                "source",
                "origin",
                "peer",
                "viewer",
                "socket",
                "pseudo",
            ]))
}

/// The words of a name, lower case: `X-Session-Id` → x, session, id; `accessKey` → access,
/// key; `csrftoken` → csrftoken.
fn words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_told_from_ordinary_ones() {
        for name in [
            "authorization",
            "Proxy-Authorization",
            "cookie",
            "X-Api-Key",
            "x-auth-token",
            "X-Session-Id",
            "x-csrf-token",
            "X-XSRF-TOKEN",
            "x-amz-security-token",
            "X-Access-Key",
            "x-hub-signature-256",
            "Authentication",
            "X-Authentication",
            "Ocp-Apim-Subscription-Key",
            "x-rapidapi-key",
            "X-DD-Application-Key",
            "X-License-Key",
            "X-App-Key",
            "X-Consumer-Key",
            "X-Passcode",
            "X-Pwd",
            "X-Signed-Request",
            "Cookie2",
            "X-Forwarded-User",
            "X-Remote-User",
            "Remote-User",
            "X-Forwarded-Email",
            "X-Ms-Client-Principal",
            "X-MS-CLIENT-PRINCIPAL-NAME",
            "X-Client-Cert",
            "X-Forwarded-Client-Cert",
            "X-Amzn-Oidc-Data",
            "x-goog-authenticated-user-email",
            "X-Webauth-User",
            "X-Consumer-Username",
            "X-Authenticated-Userid",
            "X-Forwarded-Groups",
            "Impersonate-User",
            "Impersonate-Group",
            "X-Hasura-Role",
            "X-Hasura-User-Id",
            "X-User",
            "X-User-Id",
            "Tailscale-User-Login",
            "Remote-Groups",
            "X-Totp",
            "X-Pin",
            "X-Mfa-Code",
            "X-2fa-Code",
            "X-Arr-ClientCert",
            "X-Ssl-Client-S-Dn",
            "X-Consumer-Id",
            "X-Consumer-Custom-Id",
            "X-Remote-Extra-Scopes",
            "X-Hasura-Org-Id",
            "Remote-Name",
            "X-Client-Dn",
            "X-Ssl-Subject",
            "X-Verification-Code",
            "X-Sms-Code",
            "X-Security-Code",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in [
            "X-Forwarded-For",
            "forwarded",
            "X-Real-IP",
            "True-Client-IP",
            "X-Cluster-Client-IP",
            "Fastly-Client-IP",
            "X-Original-Forwarded-For",
            "X-Envoy-External-Address",
            "CF-Connecting-IP",
            "X-Client-IP",
            "CF-Connecting-IPv6",
            "CloudFront-Viewer-Address",
            "X-Originating-IP",
            "X-Azure-ClientIP",
            "X-Azure-SocketIP",
            "X-ProxyUser-Ip",
            "X-Remote-Addr",
            "X-Client-Addr",
            "X-Forwarded",
            "Cf-Pseudo-Ipv4",
            "X-Ip",
        ] {
            assert!(is_client_address_header(name), "{name}");
        }
        for name in ["x-forwarded-proto", "x-forwarded-host", "accept", "x-ip-version", "x-shipping"] {
            assert!(!is_client_address_header(name), "{name}");
        }
        for name in [
            "accept",
            "content-type",
            "user-agent",
            "x-request-id",
            "x-forwarded-proto",
            "if-none-match",
            "keep-alive",
            "x-keyword",
            "sec-fetch-site",
            "x-author-id",
            "idempotency-key",
            "Sec-WebSocket-Key",
            "x-cache-key",
            "user-agent",
            "x-user-agent",
            "x-forwarded-proto",
            "x-request-id",
            "x-ssl-client-verify",
            "x-spinner",
            "shipping-address",
            "user-agent",
            "x-grouping-mode",
            "X-User-Locale",
            "X-User-Timezone",
            "X-Goog-User-Project",
            "X-Role-Hint",
            "X-Group-By",
            "X-Email-Template",
            "X-Login-Page",
            "X-Error-Code",
            "traceparent",
            "x-request-id",
        ] {
            assert!(!is_credential_header(name), "{name}");
        }
    }
}
