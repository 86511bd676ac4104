//! Value detectors: find personal data inside free text — e-mail addresses, phone numbers
//! (with extensions; US, UK, DE, FR, NL, ES and international formats), payment cards
//! (every major issuer range, 12–19 digits, Luhn-checked, so order numbers survive), IBANs
//! (mod-97 checked), national identifiers with their check rules (US SSN, UK NINO, NL BSN,
//! ES DNI/NIE, FR NIR, DE tax id, IT codice fiscale), JWTs, bearer and API tokens,
//! IPv4/IPv6 addresses, and user regexes.
//!
//! Each detector has a cheap prefilter over one pass of the text (an `@` for e-mail,
//! enough digits for cards and phones, `eyJ` for JWTs…), so most strings cost one scan
//! and no regex at all. Identifiers that are bare digits (a BSN, a German tax id, an
//! unformatted SSN) look like any order number, so in free text they count only after a
//! label that names them ("BSN: …"); under a key that names them the key rules take them.

use regex::Regex;

use crate::scrub::checks::{file_extension, is_card, is_ipv6, is_labelled_id, is_phone, is_token};
pub use crate::scrub::checks::{is_bsn, is_card_number, is_de_tax_id, is_iban, is_national_id, luhn};

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
    /// A national identifier: SSN, NINO, BSN, DNI/NIE, NIR, Steuer-IdNr, codice fiscale.
    NationalId,
    /// A phone number.
    Phone,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A user regex (index into the custom list).
    Custom(usize),
}

/// How many built-in detectors there are.
pub const BUILT_IN_COUNT: usize = 8;

impl Kind {
    /// The built-in kinds, in priority order (earlier wins an overlap).
    pub const BUILT_IN: [Kind; BUILT_IN_COUNT] =
        [Kind::Jwt, Kind::Token, Kind::Email, Kind::Card, Kind::Iban, Kind::NationalId, Kind::Phone, Kind::Ip];

    /// The name used in policies, rule names and tokens.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Jwt => "jwt",
            Kind::Token => "token",
            Kind::Email => "email",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::NationalId => "national_id",
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
    enabled: [bool; BUILT_IN_COUNT],
    email: Regex,
    card: Regex,
    iban: Regex,
    jwt: Regex,
    /// `Bearer …`, `Basic …`: a scheme word and a credential.
    scheme: Regex,
    /// Scheme words and id labels, found case-insensitively in one pass before the
    /// regular expressions that need them run.
    words: aho_corasick::AhoCorasick,
    /// Credentials of known formats (`sk_live_…`, `AKIA…`, PEM keys …).
    token: Regex,
    /// The password in `scheme://user:password@host`.
    userinfo: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
    date: Regex,
    /// Formatted national identifiers (SSN, NINO, DNI/NIE, NIR, codice fiscale).
    national: Regex,
    /// Bare-digit identifiers after a label that names them.
    labelled: Regex,
    /// `token`, `card`, `iban`, `national`, `phone`, `ipv4`, `ipv6` in one set: which of
    /// them match anywhere, in one scan, before each one that does is run for its
    /// places (most values with digits — timestamps, tracking numbers, ids — match none).
    prefilter: regex::RegexSet,
    custom: Vec<Regex>,
}

/// The order of [`Detectors::prefilter`].
const PRE_TOKEN: usize = 0;
const PRE_CARD: usize = 1;
const PRE_IBAN: usize = 2;
const PRE_NATIONAL: usize = 3;
const PRE_PHONE: usize = 4;
const PRE_IPV4: usize = 5;
const PRE_IPV6: usize = 6;

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

/// Words some detectors need before they run: scheme words first ([`SCHEMES`] of them),
/// then the labels of bare-digit national ids.
const WORDS: [&str; 17] = [
    "bearer",
    "basic",
    "token",
    "digest",
    "negotiate",
    "apikey",
    "api-key",
    "bsn",
    "burgerservicenummer",
    "sofi",
    "ssn",
    "social security",
    "steuer",
    "idnr",
    "tax",
    "tin",
    "national",
];
const SCHEMES: usize = 7;

/// A phone extension: `x3554`, ` ext. 12`, ` extension 7`, `#12`. Part of the match, so
/// masking removes it too.
macro_rules! ext {
    () => {
        r"(?:[ \t]?(?:x|ext\.?|extension|#)[ \t]?\d{1,6})?"
    };
}

impl Detectors {
    /// All built-in detectors, plus `custom` regexes (already validated).
    pub fn new(enabled: [bool; BUILT_IN_COUNT], custom: Vec<Regex>) -> Self {
        let mut d = Detectors {
            prefilter: regex::RegexSet::empty(),
            enabled,
            email: re(
                r"(?i)\b[a-z0-9][a-z0-9._%+\-]{0,63}@[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)*\.[a-z]{2,24}\b",
            ),
            // No leading `\b`: `ref_5500005555555559` holds a card (checked below: not inside
            // a longer number).
            // Digits in groups by spaces or dashes, or 4-4-4-4 by dots (`4111.1111.…`).
            card: re(r"\d(?:[ \-]?\d){11,18}\b|\b\d{4}\.\d{4}\.\d{4}\.\d{1,7}\b"),
            iban: re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
            jwt: re(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
            scheme: re(r"(?i:\b(?:bearer|basic|token|digest|negotiate|apikey|api-key)[ \t]+[A-Za-z0-9\-._~+/]{8,}=*)"),
            words: aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(WORDS)
                .expect("built-in words are valid"),
            token: re(concat!(
                r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b",
                r"|\bAKIA[0-9A-Z]{16}\b",
                r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b",
                r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}\b",
                r"|\bAIza[0-9A-Za-z_\-]{35}\b",
                r"|\bgithub_pat_[A-Za-z0-9_]{22,}",
                r"|\bglpat-[A-Za-z0-9_\-]{20,}",
                r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}",
                r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
                r"|\bwhsec_[A-Za-z0-9+/=]{20,}",
                r"|\bSG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}",
                r"|\bxapp-[A-Za-z0-9\-]{10,}",
                r"|\bnpm_[A-Za-z0-9]{36}\b",
                r"|\bya29\.[A-Za-z0-9_\-]{20,}",
                r"|\bhf_[A-Za-z0-9]{30,}",
                r"|\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
                r"|\bSK[0-9a-fA-F]{32}\b",
                r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
            )),
            userinfo: re(r"(?i)\b[a-z][a-z0-9+.\-]{1,15}://[^\s:/@?#\x22'<>]*:([^\s/@?#\x22'<>]+)@"),
            ipv4: re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
            ipv6: re(r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}"),
            phone: re(concat!(
                // International: +44 20 7946 0958, 0049 30 901820, +1-792-291-3465x3554,
                // +49(0)30 12345678, +33 (0)1 42 68 53 00.
                r"(?:\+|\b00 ?)[1-9]\d{0,2}(?:[ .\-/]?\(?\d{1,5}\)?){2,6}",
                ext!(),
                // A trunk prefix in parentheses: (415) 555-2671, (020) 7946 0958, (09841) 15318.
                r"|\(\d{2,5}\)[ \-]?\d{2,8}(?:[ .\-/]\d{2,8}){0,3}",
                ext!(),
                // National with a leading 0: 020 7946 0958, 030/901820, 06-12345678, 01 42 68 53 00,
                // 07700 900123, 0201234567.
                r"|\b0[1-9]\d{0,4}(?:[ .\-/]?\d{2,8}){1,4}",
                ext!(),
                r"\b",
                // North American: 792-291-3465, 792.291.3465, 792 291 3465, 1-800-555-0199,
                // 001-792-291-3465x3554.
                r"|\b(?:1[\-. ])?\d{3}[\-. ]\d{3}[\-. ]\d{4}",
                ext!(),
                r"\b",
                // Spanish: 912 345 678, 612 34 56 78.
                r"|\b[6-9]\d{2} (?:\d{3} \d{3}|\d{2} \d{2} \d{2})",
                ext!(),
                r"\b",
            )),
            date: re(
                r"^(?:\d{1,2}[\-./]\d{1,2}[\-./]\d{2,4}|\d{4}[\-./]\d{1,2}[\-./]\d{1,2}|\d{1,4} \d{1,2} \d{1,4}$)",
            ),
            national: re(concat!(
                // US SSN: 078-05-1120, 078 05 1120.
                r"\b\d{3}[\- ]\d{2}[\- ]\d{4}\b",
                // UK NINO: QQ 12 34 56 C.
                r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] \d{2} \d{2} \d{2} [A-D]\b",
                // ES DNI and NIE: 12345678Z, X1234567L.
                r"|\b[XYZ]?-?\d{7,8}-?[A-Z]\b",
                // FR NIR: 1 84 12 76 451 089 46, 184127645108946 (Corsica: 2A/2B).
                r"|\b[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b",
                // IT codice fiscale: RSSMRA85T10A562S (digits may be letters: omocodia).
                r"|\b[A-Z]{6}[0-9LMNP-V]{2}[A-EHLMPR-T][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]\b",
            )),
            labelled: re(concat!(
                r"(?i)\b(?:bsn|burgerservicenummer|sofi-?nummer|ssn|social security(?: number| no\.?)?",
                r"|steuer-?id(?:nr|entifikationsnummer)?|idnr|tax[ _\-]?id|tin|national[ _\-]?id)",
                r"\W{0,4}(?:no\.?|nr\.?|number|#)?\W{0,3}(\d[\d .]{7,14}\d)\b",
            )),
            custom,
        };
        let set = [&d.token, &d.card, &d.iban, &d.national, &d.phone, &d.ipv4, &d.ipv6].map(Regex::as_str);
        d.prefilter = regex::RegexSet::new(set).expect("built-in detector patterns are valid");
        d
    }

    /// True when no user regex is configured (the built-in detectors' needs are known, see
    /// [`inert`]).
    pub fn built_in_only(&self) -> bool {
        self.custom.is_empty()
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
        if s.at && self.is_enabled(Kind::Email) {
            for m in self.email.find_iter(text) {
                let (start, mut end) = (m.start(), m.end());
                // `git@github.com:acme/shop.git` is a remote, not an address.
                if m.as_str().starts_with("git@") && text.as_bytes().get(end) == Some(&b':') {
                    continue;
                }
                // `logo@2x.png` is an asset; `ada@example.com.pdf` still holds an address.
                if let Some(ext) = file_extension(m.as_str()) {
                    end -= ext.len() + 1;
                    let domain = text[start..end].rsplit_once('@').map_or("", |(_, d)| d);
                    if !domain.contains('.')
                        || !domain
                            .rsplit('.')
                            .next()
                            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()))
                    {
                        continue;
                    }
                }
                out.push(Finding { kind: Kind::Email, start, end });
            }
        }
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
        // Which scheme words and id labels occur (one case-insensitive pass).
        let (mut scheme_word, mut label_word) = (false, false);
        if text.len() >= 10 {
            for m in self.words.find_iter(text) {
                if m.pattern().as_usize() < SCHEMES {
                    scheme_word = true;
                } else {
                    label_word = true;
                }
            }
        }
        if scheme_word && s.token_sep {
            add(Kind::Token, &self.scheme, &is_token);
        }
        // Which of the set's detectors the sketch allows; past one, the set says which
        // of those match at all.
        let mut wanted = [false; 7];
        wanted[PRE_TOKEN] = text.len() >= 10 && (s.token_sep || s.upper);
        wanted[PRE_CARD] = s.digits >= 12;
        wanted[PRE_IBAN] = s.upper && s.digits >= 4;
        // Every national format has 9+ digits, or 6+ beside capital letters.
        wanted[PRE_NATIONAL] = s.digits >= 9 || (s.upper && s.digits >= 6);
        wanted[PRE_PHONE] =
            s.digits >= 8 && (s.plus_or_paren || text.contains(['-', ' ', '.', '/']) || text.starts_with('0'));
        wanted[PRE_IPV4] = s.dot && s.digits >= 4;
        wanted[PRE_IPV6] = s.colon;
        if wanted.iter().filter(|w| **w).count() > 1 {
            let matched = self.prefilter.matches(text);
            for (i, w) in wanted.iter_mut().enumerate() {
                *w &= matched.matched(i);
            }
        }
        if wanted[PRE_TOKEN] {
            add(Kind::Token, &self.token, &|_| true);
        }
        if wanted[PRE_CARD] {
            // Not inside a longer number or a word (`1Z5784…` is a tracking number); after
            // `_` it may be (`ref_5500…`).
            let inside_number = |m: &str| {
                let start = m.as_ptr() as usize - text.as_ptr() as usize;
                text.as_bytes().get(start.wrapping_sub(1)).is_some_and(u8::is_ascii_alphanumeric)
            };
            add(Kind::Card, &self.card, &|m| !inside_number(m) && is_card(m));
        }
        if wanted[PRE_IBAN] {
            add(Kind::Iban, &self.iban, &is_iban);
        }
        if wanted[PRE_NATIONAL] {
            add(Kind::NationalId, &self.national, &is_national_id);
        }
        if wanted[PRE_PHONE] {
            let date = &self.date;
            add(Kind::Phone, &self.phone, &|m| is_phone(m) && !date.is_match(m));
        }
        if wanted[PRE_IPV4] {
            // `Chrome/120.0.0.0`, `v4.18.2.0`: versions, not addresses.
            let version = |m: &str| {
                let start = m.as_ptr() as usize - text.as_ptr() as usize;
                matches!(text.as_bytes().get(start.wrapping_sub(1)), Some(b'/' | b'v' | b'V'))
            };
            add(Kind::Ip, &self.ipv4, &|m| !version(m));
        }
        if wanted[PRE_IPV6] {
            add(Kind::Ip, &self.ipv6, &is_ipv6);
        }
        if s.at && s.colon && self.is_enabled(Kind::Token) {
            for c in self.userinfo.captures_iter(text) {
                if let Some(m) = c.get(1) {
                    out.push(Finding { kind: Kind::Token, start: m.start(), end: m.end() });
                }
            }
        }
        // Labels are rare: a quick yes/no before the slower search with captures.
        if label_word && s.digits >= 8 && self.is_enabled(Kind::NationalId) {
            for c in self.labelled.captures_iter(text) {
                if let Some(m) = c.get(1).filter(|m| is_labelled_id(m.as_str())) {
                    out.push(Finding { kind: Kind::NationalId, start: m.start(), end: m.end() });
                }
            }
        }
        for (i, re) in self.custom.iter().enumerate() {
            for m in re.find_iter(text) {
                if !m.is_empty() {
                    out.push(Finding { kind: Kind::Custom(i), start: m.start(), end: m.end() });
                }
            }
        }
        // Numbers that are parts of something else: a fraction (`…:16.0095254Z`), an
        // identifier (`ORD-0989784056`, `inv_4111…`), a UUID's groups.
        let b = text.as_bytes();
        let uuids =
            if s.digits >= 8 && memchr::memchr_iter(b'-', b).nth(3).is_some() { uuid_spans(text) } else { Vec::new() };
        out.retain(|f| {
            if !matches!(f.kind, Kind::Phone | Kind::Card | Kind::NationalId) {
                return true;
            }
            let before = |i: usize| f.start.checked_sub(i).and_then(|j| b.get(j)).copied();
            let part_of_number = b[f.start].is_ascii_digit()
                && match before(1) {
                    Some(b'.' | b',') => before(2).is_some_and(|c| c.is_ascii_digit()),
                    // Luhn and the issuer ranges make a card glued to a name still a card.
                    Some(b'-' | b'_' | b'#') if f.kind != Kind::Card => {
                        before(2).is_some_and(|c| c.is_ascii_alphanumeric())
                    }
                    _ => false,
                };
            !part_of_number && !uuids.iter().any(|(s, e)| f.start < *e && *s < f.end)
        });
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

/// True for text no built-in detector or document parser can find anything in: lower-case
/// words and punctuation (`leave at the door, ring twice`), or short text without digits
/// (`Lisbon`, `created_at`). Every built-in format needs a digit, an `@`, a `:`, `=`, `%`,
/// `&`, `\`, a bracket, or upper-case letters in a long run (keys such as `sk_live_…` mix
/// cases and digits); most strings in a body have none of these, and skip every regular
/// expression.
pub fn inert(text: &str) -> bool {
    const LOWER: u8 = 1;
    const UPPER: u8 = 2;
    const CLASSES: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut c = 0;
        while c < 256 {
            t[c] = match c as u8 {
                b'a'..=b'z' | b' ' | b'\t' | b'\n' | b'\r' | b',' | b'.' | b'!' | b'?' | b';' | b'\'' | b'"' | b'-' => {
                    LOWER
                }
                b'(' | b')' | b'*' | b'/' | b'_' => LOWER,
                0x80..=0xff => LOWER,
                b'A'..=b'Z' => UPPER,
                _ => 0,
            };
            c += 1;
        }
        t
    };
    let mut all = LOWER | UPPER;
    let mut any = 0;
    for &b in text.as_bytes() {
        let class = CLASSES[usize::from(b)];
        all &= if class == 0 { 0 } else { LOWER | UPPER };
        any |= class;
    }
    // Tokens of known formats made of letters alone are 20 characters or more.
    all != 0 && (any & UPPER == 0 || text.len() < 20)
}

/// True when `value` is one e-mail address, nothing around it.
pub fn is_email(value: &str) -> bool {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    value.contains('@')
        && value.len() <= 254
        && RE
            .get_or_init(|| {
                re(r"(?i)^[a-z0-9][a-z0-9._%+\-]{0,63}@[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)*\.[a-z]{2,24}$")
            })
            .is_match(value)
}

/// True for a value that looks like a secret: at least 20 characters of one token alphabet
/// (hex, base64, base64url, base62) with enough variety, and not a UUID (request ids and
/// record ids are UUIDs; they must survive).
pub fn is_secretish(value: &str) -> bool {
    let v = value.trim_end_matches('=');
    if v.len() < 20 || v.len() > 4096 {
        return false;
    }
    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'.' | b'%')) {
        return false;
    }
    if is_uuid(v) {
        return false;
    }
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    let letters = v.bytes().filter(u8::is_ascii_alphabetic).count();
    let mut seen = [false; 128];
    for b in v.bytes() {
        seen[usize::from(b & 0x7f)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    digits > 0 && letters > 0 && distinct >= 10
}

/// Where `text` holds UUIDs.
fn uuid_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i + 36 <= b.len() {
        let bounded = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if bounded
            && b[i].is_ascii_hexdigit()
            && text.get(i..i + 36).is_some_and(is_uuid)
            && b.get(i + 36).is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            spans.push((i, i + 36));
            i += 36;
        } else {
            i += 1;
        }
    }
    spans
}

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detectors() -> Detectors {
        Detectors::new([true; BUILT_IN_COUNT], vec![Regex::new(r"EMP-\d{6}").unwrap()])
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
        clean("am 05.03.2024 10:15 Uhr");
        clean("on 03/05/2024 09:30");
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
        clean("The access token provided is expired");
        clean("Weekly digest delivered every Monday");
        clean("Basic T-Shirt");
        finds(
            "key github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            Kind::Token,
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        );
        finds("glpat-abcdefghij0123456789", Kind::Token, "glpat-abcdefghij0123456789");
        finds("k ASIAIOSFODNN7EXAMPLE", Kind::Token, "ASIAIOSFODNN7EXAMPLE");
        finds(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            Kind::Token,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        );
        finds("db postgres://app:PgS3cretPw@db:5432/prod", Kind::Token, "PgS3cretPw");
        finds("retrying http://admin:HttpS3cret@10.0.0.5:8080/health", Kind::Token, "HttpS3cret");
        clean("asset logo@2x.png and hero@3x.jpg");
        clean("git@github.com:acme/shop.git");
        clean("Chrome/120.0.0.0 Safari/537.36 v4.0.0.0");
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
    fn phones_with_extensions_and_national_formats() {
        for (text, phone) in [
            ("call 792-291-3465x3554 now", "792-291-3465x3554"),
            ("tel 001-792-291-3465x3554", "001-792-291-3465x3554"),
            ("tel +1-792-291-0590x90009", "+1-792-291-0590x90009"),
            ("desk (415) 555-2671 ext. 12", "(415) 555-2671 ext. 12"),
            ("us 792.291.3465", "792.291.3465"),
            ("us 792 291 3465", "792 291 3465"),
            ("us 1-800-555-0199", "1-800-555-0199"),
            ("uk 07700 900123", "07700 900123"),
            ("uk +44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
            ("uk (020) 7946 0958", "(020) 7946 0958"),
            ("de 030/901820", "030/901820"),
            ("de +49(0)8347 88452", "+49(0)8347 88452"),
            ("de (09841) 15318", "(09841) 15318"),
            ("de 0049 30 901820", "0049 30 901820"),
            ("uk 00 44 20 7946 0958", "00 44 20 7946 0958"),
            ("fr 0142685300", "0142685300"),
            ("fr +33 (0)1 42 68 53 00", "+33 (0)1 42 68 53 00"),
            ("nl 06-12345678", "06-12345678"),
            ("nl 020-1234567", "020-1234567"),
            ("nl +31 20 123 4567", "+31 20 123 4567"),
            ("es 912 345 678", "912 345 678"),
            ("es 612 34 56 78", "612 34 56 78"),
            ("es 696 76 11 48x79437 ok", "696 76 11 48x79437"),
            ("es +34912345678", "+34912345678"),
        ] {
            finds(text, Kind::Phone, phone);
        }
    }

    #[test]
    fn cards_of_every_brand_and_length() {
        for card in [
            "4222000000006",       // Visa 13
            "4111000000000000001", // Visa 19
            "2223000000000007",    // Mastercard 2-series
            "6011000000000004",    // Discover
            "64400000000000002",   // Discover 17
            "3530000000000003",    // JCB
            "213100000000001",     // JCB 15
            "30569300000005",      // Diners 14
            "36000000000008",      // Diners 14
            "340000000000009",     // Amex
            "501800000009",        // Maestro 12
            "5893000000003",       // Maestro 13
            "501800000000000009",  // Maestro 18
            "6759000000000000",    // Maestro 16
            "6200000000000005",    // UnionPay 16
            "6200000000000000000", // UnionPay 19
            "6011 0000 0000 0004", // with separators
            "3530-0000-0000-0003",
        ] {
            finds(&format!("statement-{card}.pdf"), Kind::Card, card);
            finds(&format!("ref_{card}"), Kind::Card, card);
            finds(&format!("pay {card} ok"), Kind::Card, card);
        }
        clean("order 600000000001"); // 12 digits, no 12-digit brand at 60
        clean("sku 100000000000009");
    }

    #[test]
    fn national_identifiers_with_their_check_rules() {
        finds("ssn 078-05-1120", Kind::NationalId, "078-05-1120");
        finds("ssn 219 09 9999", Kind::NationalId, "219 09 9999");
        clean("ref 000-12-3456"); // area 000 is never issued
        clean("ref 666-12-3456");
        finds("nino AB 12 34 56 C", Kind::NationalId, "AB 12 34 56 C");
        clean("sku TS123456A"); // unspaced: a product code as often as a NINO
        clean("ref PR240315C");
        finds("dni 12345678Z", Kind::NationalId, "12345678Z");
        finds("nie X1234567L", Kind::NationalId, "X1234567L");
        clean("part 12345678A"); // wrong check letter
        finds("nir 1 84 01 76 451 089 64", Kind::NationalId, "1 84 01 76 451 089 64");
        finds("nir 269029934173285", Kind::NationalId, "269029934173285");
        clean("nir 269029934173286");
        finds("cf RSSMRA85T10A562S", Kind::NationalId, "RSSMRA85T10A562S");
        clean("cf RSSMRA85T10A562T");
        // Bare digits only after a label.
        finds("BSN: 123456782", Kind::NationalId, "123456782");
        finds("Steuer-IdNr. 86095742719", Kind::NationalId, "86095742719");
        finds("SSN 078051120", Kind::NationalId, "078051120");
        clean("order 123456782 shipped");
        clean("invoice 86095742719");
    }

    #[test]
    fn ids_skus_uuids_timestamps_and_prices_survive() {
        for text in [
            "order 100234 total 129.90 EUR",
            "sku KB-2231-BLK qty 2",
            "request 3f2b8c1e-9a4d-4e6f-8b1a-2c3d4e5f6a7b",
            "at 2024-03-05T10:15:00.123Z (1709633700123)",
            "tracking 1Z999AA10123456784",
            "price 1299.00 and 2024-01-31",
            "build 20240131.1052",
            "port 8080 pid 12345",
            "served 2026-12-02T06:56:16.75182575Z",
        ] {
            clean(text);
        }
    }

    #[test]
    fn inert_text_needs_no_detector() {
        for t in ["leave at the door, ring twice", "Lisbon", "mechanical keyboard", "Chloé"] {
            assert!(inert(t), "{t}");
        }
        for t in [
            "jane@example.com",
            "call 0142685300",
            "AKIAIOSFODNNSEXAMPLE",
            "a=b",
            "x%40y",
            "Bearer abcdefghij012",
            "ftp://a",
        ] {
            assert!(!inert(t), "{t}");
        }
    }

    #[test]
    fn secrets_and_uuids() {
        assert!(is_secretish("c2VjcmV0LXNlc3Npb24tdmFsdWUtOTk4Nw"));
        assert!(is_secretish("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"));
        assert!(!is_secretish("3f2b8c1e-9a4d-4e6f-8b1a-2c3d4e5f6a7b"));
        assert!(!is_secretish("short1234"));
        assert!(!is_secretish("the quick brown fox jumps"));
        assert!(!is_secretish("aaaaaaaaaaaaaaaaaaaaaaaaa1"));
    }

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2]));
        assert!(!luhn(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 1]));
        assert!(is_iban("NL91ABNA0417164300"));
        assert!(!is_iban("NL91ABNA0417164301"));
    }
}
