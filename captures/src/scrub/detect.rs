//! Value detectors: find personal data inside free text — e-mail addresses, phone numbers,
//! payment cards (Luhn-checked, so order numbers survive), IBANs (mod-97 checked), JWTs,
//! bearer and API tokens, IPv4/IPv6 addresses, and user regexes.
//!
//! Each detector has a cheap prefilter over one pass of the text (an `@` for e-mail,
//! enough digits for cards and phones, `eyJ` for JWTs…), so most strings cost one scan
//! and no regex at all.

use regex::Regex;

/// What a detector found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A JSON Web Token.
    Jwt,
    /// A bearer/basic credential or a well-known API key format.
    Token,
    /// An e-mail address.
    Email,
    /// A payment card number.
    Card,
    /// An IBAN.
    Iban,
    /// A phone number.
    Phone,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A user regex (index into the custom list).
    Custom(usize),
}

impl Kind {
    /// The built-in kinds, in priority order (earlier wins an overlap).
    pub const BUILT_IN: [Kind; 7] =
        [Kind::Jwt, Kind::Token, Kind::Email, Kind::Card, Kind::Iban, Kind::Phone, Kind::Ip];

    /// The name used in policies, rule names and tokens.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Jwt => "jwt",
            Kind::Token => "token",
            Kind::Email => "email",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::Phone => "phone",
            Kind::Ip => "ip",
            Kind::Custom(_) => "custom",
        }
    }
}

/// A match: `text[start..end]` is `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// Byte offset of the start.
    pub start: usize,
    /// Byte offset after the end.
    pub end: usize,
}

/// The compiled detectors.
#[derive(Clone, Debug)]
pub struct Detectors {
    enabled: [bool; 7],
    email: Regex,
    card: Regex,
    iban: Regex,
    jwt: Regex,
    token: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
    date: Regex,
    custom: Vec<Regex>,
}

/// One pass over the text: which detectors could possibly match.
struct Sketch {
    digits: usize,
    at: bool,
    colon: bool,
    dot: bool,
    upper: bool,
    eyj: bool,
    plus_or_paren: bool,
    /// A space, `_` or `-`: every token format has one of these or an upper-case letter.
    token_sep: bool,
}

const DIGIT: u8 = 1;
const AT: u8 = 2;
const COLON: u8 = 4;
const DOT: u8 = 8;
const UPPER: u8 = 16;
const PLUS_PAREN: u8 = 32;
const TOKEN_SEP: u8 = 64;

/// Byte classes for the sketch, so the scan is one table lookup per byte, no branches.
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b'0'..=b'9' => DIGIT,
            b'@' => AT,
            b':' => COLON,
            b'.' => DOT,
            b'A'..=b'Z' => UPPER,
            b'+' | b'(' => PLUS_PAREN,
            b' ' | b'\t' | b'_' | b'-' => TOKEN_SEP,
            _ => 0,
        };
        c += 1;
    }
    t
};

fn sketch(text: &str) -> Sketch {
    let b = text.as_bytes();
    let mut flags = 0u8;
    let mut digits = 0usize;
    for &c in b {
        let class = CLASSES[usize::from(c)];
        flags |= class;
        digits += usize::from(class & DIGIT);
    }
    Sketch {
        digits,
        at: flags & AT != 0,
        colon: flags & COLON != 0,
        dot: flags & DOT != 0,
        upper: flags & UPPER != 0,
        // JWTs start with `eyJ`: look for it only where an upper-case letter exists.
        eyj: flags & UPPER != 0 && memchr::memmem::find(b, b"eyJ").is_some(),
        plus_or_paren: flags & PLUS_PAREN != 0,
        token_sep: flags & TOKEN_SEP != 0,
    }
}

fn re(pattern: &str) -> Regex {
    // The built-in patterns are constants covered by tests.
    Regex::new(pattern).expect("built-in detector pattern is valid")
}

impl Detectors {
    /// All built-in detectors, plus `custom` regexes (already validated).
    pub fn new(enabled: [bool; 7], custom: Vec<Regex>) -> Self {
        Detectors {
            enabled,
            email: re(
                r"(?i)\b[a-z0-9][a-z0-9._%+\-]{0,63}@[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)*\.[a-z]{2,24}\b",
            ),
            card: re(r"\b\d(?:[ \-]?\d){12,18}\b"),
            iban: re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
            jwt: re(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
            token: re(concat!(
                r"(?i:\b(?:bearer|basic|token)\s+[A-Za-z0-9\-._~+/]{8,}=*)",
                r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b",
                r"|\bAKIA[0-9A-Z]{16}\b",
                r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b",
                r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}\b",
                r"|\bAIza[0-9A-Za-z_\-]{35}\b",
            )),
            ipv4: re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
            ipv6: re(r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}"),
            phone: re(concat!(
                r"\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,6}",
                r"|\(\d{2,4}\) ?\d{3,4}[ .\-]?\d{3,4}",
                r"|\b0\d{1,4}[ .\-]\d{2,4}(?:[ .\-]\d{2,4}){1,3}\b",
                r"|\b\d{3}[\-.]\d{3}[\-.]\d{4}\b",
            )),
            date: re(r"^\d{1,4}[\-./]\d{1,2}[\-./]\d{1,4}$"),
            custom,
        }
    }

    /// True when the detector for `kind` is on.
    pub fn is_enabled(&self, kind: Kind) -> bool {
        match Kind::BUILT_IN.iter().position(|k| *k == kind) {
            Some(i) => self.enabled[i],
            None => true,
        }
    }

    /// Finds personal data in `text`; non-overlapping, in order.
    pub fn find(&self, text: &str, out: &mut Vec<Finding>) {
        out.clear();
        if text.len() < 6 {
            return;
        }
        let s = sketch(text);
        let mut add = |kind: Kind, re: &Regex, check: &dyn Fn(&str) -> bool| {
            if !self.is_enabled(kind) {
                return;
            }
            for m in re.find_iter(text) {
                if check(m.as_str()) {
                    out.push(Finding { kind, start: m.start(), end: m.end() });
                }
            }
        };
        if s.eyj {
            add(Kind::Jwt, &self.jwt, &|_| true);
        }
        if text.len() >= 10 && (s.token_sep || s.upper) {
            add(Kind::Token, &self.token, &|_| true);
        }
        if s.at {
            add(Kind::Email, &self.email, &|_| true);
        }
        if s.digits >= 13 {
            add(Kind::Card, &self.card, &is_card);
        }
        if s.upper && s.digits >= 4 {
            add(Kind::Iban, &self.iban, &is_iban);
        }
        if s.digits >= 8 && (s.plus_or_paren || text.contains(['-', ' ', '.'])) {
            let date = &self.date;
            add(Kind::Phone, &self.phone, &|m| is_phone(m) && !date.is_match(m));
        }
        if s.dot && s.digits >= 4 {
            add(Kind::Ip, &self.ipv4, &|_| true);
        }
        if s.colon {
            add(Kind::Ip, &self.ipv6, &is_ipv6);
        }
        for (i, re) in self.custom.iter().enumerate() {
            for m in re.find_iter(text) {
                if !m.is_empty() {
                    out.push(Finding { kind: Kind::Custom(i), start: m.start(), end: m.end() });
                }
            }
        }
        if out.len() > 1 {
            // Earlier start first; at the same start, the longer (then higher-priority) one.
            out.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)).then(a.kind.cmp(&b.kind)));
            let mut kept = 0;
            for i in 0..out.len() {
                if kept == 0 || out[i].start >= out[kept - 1].end {
                    out[kept] = out[i];
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
    }
}

/// Luhn checksum over the digits of `s`.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

fn is_card(m: &str) -> bool {
    let digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    // Issuer identification: cards start with 2–6 (Mastercard 2/5, Amex 3, Visa 4, Discover 6).
    (13..=19).contains(&digits.len()) && (2..=6).contains(&digits[0]) && luhn(&digits)
}

/// IBAN check: length and the mod-97 checksum (ISO 13616).
pub fn is_iban(m: &str) -> bool {
    let compact: Vec<u8> = m.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let mut remainder = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        remainder = if v >= 10 { (remainder * 100 + v) % 97 } else { (remainder * 10 + v) % 97 };
    }
    remainder == 1
}

fn is_phone(m: &str) -> bool {
    let digits = m.bytes().filter(u8::is_ascii_digit).count();
    (8..=15).contains(&digits)
}

/// A valid IPv6 address with at least three groups (so `std::ba…` or `::1` in prose is
/// not mistaken for a client address).
fn is_ipv6(m: &str) -> bool {
    m.split(':').filter(|g| !g.is_empty()).count() >= 3 && m.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detectors() -> Detectors {
        Detectors::new([true; 7], vec![Regex::new(r"EMP-\d{6}").unwrap()])
    }

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        detectors().find(text, &mut out);
        out.iter().map(|f| (f.kind, text[f.start..f.end].to_string())).collect()
    }

    fn finds(text: &str, kind: Kind, value: &str) {
        let found = kinds(text);
        assert!(found.contains(&(kind, value.to_string())), "{kind:?} {value:?} not found in {text:?}: {found:?}");
    }

    fn clean(text: &str) {
        assert_eq!(kinds(text), vec![], "false positive in {text:?}");
    }

    #[test]
    fn emails_in_prose_and_urls() {
        finds(
            "Contact Jane at jane.doe+news@mail.example.co.uk today.",
            Kind::Email,
            "jane.doe+news@mail.example.co.uk",
        );
        finds("mailto:OPS@Example.COM", Kind::Email, "OPS@Example.COM");
        clean("version 1.2.3 @ noon");
        clean("user@localhost");
    }

    #[test]
    fn cards_need_a_valid_luhn_and_issuer() {
        finds("card 4242 4242 4242 4242 ok", Kind::Card, "4242 4242 4242 4242");
        finds("4111-1111-1111-1111", Kind::Card, "4111-1111-1111-1111");
        finds("amex 378282246310005", Kind::Card, "378282246310005");
        finds("mc 5555555555554444", Kind::Card, "5555555555554444");
        clean("order 4242424242424241"); // Luhn fails
        clean("order 1234567890123456"); // no issuer starts with 1
        clean("tracking 9400111899223817"); // starts with 9
    }

    #[test]
    fn ibans_need_a_valid_checksum() {
        finds("pay to GB82 WEST 1234 5698 7654 32 please", Kind::Iban, "GB82 WEST 1234 5698 7654 32");
        finds("DE89370400440532013000", Kind::Iban, "DE89370400440532013000");
        finds("FR1420041010050500013M02606", Kind::Iban, "FR1420041010050500013M02606");
        clean("GB82 WEST 1234 5698 7654 33"); // checksum off by one
        clean("SKU AB12 CDEF GHIJ");
    }

    #[test]
    fn phone_numbers_of_several_countries() {
        finds("call +1 (415) 555-2671", Kind::Phone, "+1 (415) 555-2671");
        finds("(415) 555-2671", Kind::Phone, "(415) 555-2671");
        finds("415-555-2671", Kind::Phone, "415-555-2671");
        finds("UK +44 20 7946 0958", Kind::Phone, "+44 20 7946 0958");
        finds("London 020 7946 0958", Kind::Phone, "020 7946 0958");
        finds("Paris 01 42 68 53 00", Kind::Phone, "01 42 68 53 00");
        finds("Berlin +49 30 901820", Kind::Phone, "+49 30 901820");
        finds("Tokyo 03-1234-5678", Kind::Phone, "03-1234-5678");
        finds("India +91 98765 43210", Kind::Phone, "+91 98765 43210");
        clean("on 2024-01-31 at 10:15:00");
        clean("born 01-02-1990");
        clean("version 10.2.3 build 4");
        clean("id 1234567890"); // bare digits are ids, not phones
    }

    #[test]
    fn tokens_jwts_and_keys() {
        finds(
            "jwt: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig_nature-xyz",
            Kind::Jwt,
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig_nature-xyz",
        );
        // After a scheme, the whole credential is the (longer) token match.
        finds(
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig",
            Kind::Token,
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig",
        );
        finds("Bearer abcdef0123456789", Kind::Token, "Bearer abcdef0123456789");
        finds("basic dXNlcjpwYXNzd29yZA==", Kind::Token, "basic dXNlcjpwYXNzd29yZA==");
        finds("key sk_live_51HqLyjWDarjtT1zdp7dc", Kind::Token, "sk_live_51HqLyjWDarjtT1zdp7dc");
        finds("aws AKIAIOSFODNN7EXAMPLE", Kind::Token, "AKIAIOSFODNN7EXAMPLE");
        clean("a token of appreciation");
    }

    #[test]
    fn ip_addresses() {
        finds("from 203.0.113.195, 10.0.0.1", Kind::Ip, "203.0.113.195");
        finds("from 203.0.113.195, 10.0.0.1", Kind::Ip, "10.0.0.1");
        finds("v6 2001:db8::8a2e:370:7334 here", Kind::Ip, "2001:db8::8a2e:370:7334");
        finds("fe80:0:0:0:202:b3ff:fe1e:8329", Kind::Ip, "fe80:0:0:0:202:b3ff:fe1e:8329");
        clean("at 10:15:30 sharp");
        clean("999.1.1.1 is not an address");
        clean("use std::backtrace::Backtrace;");
    }

    #[test]
    fn custom_regexes_and_overlaps() {
        finds("badge EMP-123456", Kind::Custom(0), "EMP-123456");
        // An e-mail inside a JWT-looking string is reported once, as the longer match.
        let found = kinds("x eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0. y");
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2]));
        assert!(!luhn(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 1]));
        assert!(is_iban("NL91ABNA0417164300"));
        assert!(!is_iban("NL91ABNA0417164301"));
    }
}
