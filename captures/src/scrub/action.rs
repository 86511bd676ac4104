//! What a rule does to a value: `drop` it, `redact` it to a fixed marker, `mask` it
//! keeping its shape (`************4242`), or `hash` it to a keyed token
//! (`tok_email_3f9a…`: HMAC-SHA256 under the scrub key, so equal inputs give equal tokens
//! and joins, session order and replay correlation survive). `keep` exempts a value.
//!
//! Without a key, `hash` redacts instead: tokens without a secret key could be reversed
//! by hashing guesses.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The marker `redact` writes.
pub const REDACTED: &str = "[REDACTED]";

/// A rule's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Remove the value (or the field holding it).
    Drop,
    /// Replace with `[REDACTED]`.
    Redact,
    /// Replace letters and digits with `*`, keeping length, separators and a short tail.
    Mask,
    /// Replace with a keyed token `tok_KIND_<16 hex>`.
    Hash,
    /// Leave as is.
    Keep,
}

/// The scrub key and what it does.
#[derive(Clone)]
pub struct Keyer {
    mac: Option<Hmac<Sha256>>,
    fingerprint: Option<String>,
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyer").field("fingerprint", &self.fingerprint).finish()
    }
}

impl Keyer {
    /// A keyer with `key`, or none (hash then redacts).
    pub fn new(key: Option<&[u8]>) -> Self {
        let key = key.filter(|k| !k.is_empty());
        Keyer {
            mac: key.and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok()),
            // Keyed (an HMAC of a fixed label under the key), so it can be compared with
            // another run's without saying anything about the key but "the same".
            fingerprint: key.and_then(|k| {
                let mac = Hmac::<Sha256>::new_from_slice(k).ok()?;
                let digest = mac.chain_update(b"tapedeck scrub key fingerprint v2").finalize().into_bytes();
                Some(format!("h{}", hex::encode(&digest[..6])))
            }),
        }
    }

    /// Fingerprint of the key (safe to store), if there is one.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// True when `hash` can produce tokens.
    pub fn has_key(&self) -> bool {
        self.mac.is_some()
    }

    /// The token for `value` of `kind`.
    pub fn token(&self, kind: &str, value: &str) -> Option<String> {
        let mut mac = self.mac.clone()?;
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        Some(format!("tok_{kind}_{}", hex::encode(&digest[..8])))
    }

    /// Applies `action` to `value` of `kind`; `None` means drop.
    pub fn apply(&self, action: Action, kind: &str, value: &str) -> Option<String> {
        match action {
            Action::Drop => None,
            Action::Keep => Some(value.to_string()),
            Action::Redact => Some(REDACTED.to_string()),
            Action::Mask => Some(mask(kind, value)),
            Action::Hash => Some(self.token(kind, value).unwrap_or_else(|| REDACTED.to_string())),
        }
    }
}

/// [`is_scrubbed`], or the base64 of a scrubbed value (a protobuf `bytes` field, read as
/// JSON).
pub fn is_scrubbed_encoded(value: &str) -> bool {
    use base64::Engine as _;
    if value.len() < 8 || value.len() > 4096 {
        return false;
    }
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|text| is_scrubbed(&text))
}

/// True for values a scrubber already wrote (so scrubbing twice changes nothing),
/// including a credential that keeps its scheme (`Bearer tok_…`).
pub fn is_scrubbed(value: &str) -> bool {
    if let Some((scheme, rest)) = value.split_once(' ') {
        // Only a real scheme: `Sunshine *` is not `Bearer tok_…`.
        if crate::scrub::names::AUTH_SCHEMES.iter().any(|k| k.eq_ignore_ascii_case(scheme))
            && !rest.contains(' ')
            && is_scrubbed(rest)
        {
            return true;
        }
    }
    value == REDACTED
        || is_mask(value)
        || value.strip_prefix("tok_").is_some_and(|rest| {
            rest.rsplit_once('_').is_some_and(|(kind, hex)| {
                !kind.is_empty() && hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
}

/// True for what [`mask`] writes, and only that: stars where letters and digits were,
/// separators as they were, at most the last four digits of a number, or an e-mail's
/// first letter and top-level domain. `Tr0ub4dor***x` is not a mask.
pub fn is_mask(value: &str) -> bool {
    let stars = value.bytes().filter(|b| *b == b'*').count();
    if stars == 0 {
        return false;
    }
    if let Some((local, domain)) = value.rsplit_once('@') {
        let mut local = local.chars();
        let first_ok = local.next().is_some_and(|c| c.is_alphanumeric() || c == '*');
        let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
        return first_ok
            && local.all(|c| c == '*' || !c.is_alphanumeric())
            && host.chars().all(|c| c == '*' || !c.is_alphanumeric())
            && tld.chars().all(|c| c.is_ascii_alphabetic());
    }
    // Kept characters: at most four digits (a number's last four).
    let mut kept = value.chars().filter(|c| c.is_alphanumeric());
    kept.clone().count() <= 4 && kept.all(|c| c.is_ascii_digit())
}

/// Keeps the shape of `value`: separators stay, letters and digits become `*`, except the
/// last four of a card, IBAN or phone number and the first letter and top-level domain of
/// an e-mail address.
pub fn mask(kind: &str, value: &str) -> String {
    let star = |c: char| if c.is_alphanumeric() { '*' } else { c };
    match kind {
        "email" => match value.rsplit_once('@') {
            Some((local, domain)) => {
                let mut out = String::with_capacity(value.len());
                let mut chars = local.chars();
                if let Some(first) = chars.next() {
                    out.push(first);
                }
                out.extend(chars.map(star));
                out.push('@');
                match domain.rsplit_once('.') {
                    Some((host, tld)) => {
                        out.extend(host.chars().map(star));
                        out.push('.');
                        out.push_str(tld);
                    }
                    None => out.extend(domain.chars().map(star)),
                }
                out
            }
            None => value.chars().map(star).collect(),
        },
        "card" | "iban" | "phone" => {
            // At most the last four digits of the number itself: an extension or any
            // other suffix after it (`x3554`, `ext. 12`) is masked whole.
            let number_end = match kind {
                "phone" => value.find(|c: char| c.is_alphabetic() || c == '#').unwrap_or(value.len()),
                _ => value.len(),
            };
            let number = &value[..number_end];
            let total = number.chars().filter(|c| c.is_alphanumeric()).count();
            let mut seen = 0;
            let mut out: String = number
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() {
                        seen += 1;
                        if seen > total.saturating_sub(4) && c.is_ascii_digit() {
                            return c;
                        }
                        '*'
                    } else {
                        c
                    }
                })
                .collect();
            out.extend(value[number_end..].chars().map(star));
            out
        }
        _ => value.chars().map(star).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_per_key_and_differ_across_keys() {
        let a = Keyer::new(Some(b"key one"));
        let b = Keyer::new(Some(b"key two"));
        let t = a.token("email", "jane@example.com").unwrap();
        assert!(t.starts_with("tok_email_") && t.len() == "tok_email_".len() + 16, "{t}");
        assert_eq!(t, Keyer::new(Some(b"key one")).token("email", "jane@example.com").unwrap());
        assert_ne!(t, b.token("email", "jane@example.com").unwrap());
        assert_ne!(t, a.token("phone", "jane@example.com").unwrap(), "the kind is part of the token");
        assert!(is_scrubbed(&t));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(!format!("{a:?}").contains("key one"));
    }

    #[test]
    fn hash_without_a_key_redacts() {
        let none = Keyer::new(None);
        assert!(!none.has_key());
        assert_eq!(none.apply(Action::Hash, "email", "jane@example.com").unwrap(), REDACTED);
        assert_eq!(none.fingerprint(), None);
    }

    #[test]
    fn masks_keep_shape() {
        assert_eq!(mask("card", "4242 4242 4242 4242"), "**** **** **** 4242");
        assert_eq!(mask("email", "jane.doe@mail.example.com"), "j***.***@****.*******.com");
        assert_eq!(mask("phone", "+44 20 7946 0958"), "+** ** **** 0958");
        assert_eq!(mask("other", "secret-42"), "******-**");
        // Nothing after the number survives: no extension, no suffix.
        assert_eq!(mask("phone", "792-291-3465x3554"), "***-***-3465*****");
        assert_eq!(mask("phone", "+1-792-291-0590x90009"), "+*-***-***-0590******");
        assert_eq!(mask("phone", "(415) 555-2671 ext. 12"), "(***) ***-2671 ***. **");
        for m in ["**** **** **** 4242", "j***.***@****.*******.com"] {
            assert!(is_scrubbed(m));
        }
        assert!(!is_scrubbed("jane@example.com"));
        for m in [
            "*",
            "**-**",
            "*.**",
            "***-***-3465*****",
            "+** ** **** 0958",
            "**************4300",
            "j***.***@****.*******.com",
        ] {
            assert!(is_scrubbed(m), "{m}");
        }
        for not_mask in ["Tr0ub4dor***x", "12 Main St *** ring twice", "abc***def-long-session-value", "***abc"] {
            assert!(!is_scrubbed(not_mask), "{not_mask}");
        }
        assert!(!is_scrubbed("tok_nothex_zzzzzzzzzzzzzzzz"));
    }
}
