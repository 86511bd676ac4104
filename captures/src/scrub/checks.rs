//! The check rules of the formats the detectors find: Luhn and the card issuers' number
//! ranges, the IBAN's mod-97, and the national identifiers' own checks (US SSN ranges, ES
//! DNI/NIE letters, FR NIR keys, IT codice fiscale check characters, NL BSN 11-check, DE
//! Steuer-IdNr ISO 7064). A regular expression finds a shape; these decide whether it is
//! the real thing, so order numbers and SKUs of the same shape survive.

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
    sum.is_multiple_of(10)
}

fn digits_of(m: &str) -> Vec<u8> {
    m.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
}

/// The number made of the first `n` digits.
fn prefix(digits: &[u8], n: usize) -> u32 {
    digits.iter().take(n).fold(0, |acc, d| acc * 10 + u32::from(*d))
}

/// True when `digits` (already a valid Luhn length) start an issuer range of that length:
/// Visa, Mastercard (51–55, 2221–2720), Amex, Discover, JCB, Diners, Maestro, UnionPay, Mir.
pub fn is_card_number(digits: &[u8]) -> bool {
    let len = digits.len();
    if !(12..=19).contains(&len) || !luhn(digits) {
        return false;
    }
    let (p2, p3, p4, p6) = (prefix(digits, 2), prefix(digits, 3), prefix(digits, 4), prefix(digits, 6));
    let brand_lengths: &[std::ops::RangeInclusive<usize>] = match () {
        _ if digits[0] == 4 => &[13..=13, 16..=16, 19..=19],
        _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) || (2200..=2204).contains(&p4) => &[16..=16],
        _ if p2 == 34 || p2 == 37 => &[15..=15],
        _ if (3528..=3589).contains(&p4) => &[16..=19],
        _ if p4 == 2131 || p4 == 1800 => &[15..=15],
        _ if (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39 => &[14..=19],
        _ if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622_126..=622_925).contains(&p6) => &[16..=19],
        _ if p2 == 50
            || (56..=58).contains(&p2)
            || matches!(p4, 5893 | 6304 | 6390 | 604 | 6759 | 6761 | 6762 | 6763) =>
        {
            &[12..=19]
        }
        _ if p2 == 62 || p2 == 81 => &[16..=19],
        _ => &[],
    };
    brand_lengths.iter().any(|r| r.contains(&len))
}

pub(crate) fn is_card(m: &str) -> bool {
    is_card_number(&digits_of(m))
}

/// A token match that is a credential: a scheme word must be followed by something
/// random-looking ("Token verification failed", "digest delivered" are prose).
pub(crate) fn is_token(m: &str) -> bool {
    let Some((scheme, credential)) = m.split_once([' ', '\t']) else { return true };
    if !scheme.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        return true;
    }
    let credential = credential.trim();
    let digits = credential.bytes().any(|b| b.is_ascii_digit());
    let upper = credential.bytes().any(|b| b.is_ascii_uppercase());
    let lower = credential.bytes().any(|b| b.is_ascii_lowercase());
    (digits && (upper || lower)) || (credential.len() >= 16 && upper && lower) || credential.ends_with('=')
}

/// The file extension an e-mail-shaped match ends in (`logo@2x.png`), if any.
pub(crate) fn file_extension(m: &str) -> Option<&str> {
    let ext = m.rsplit('.').next()?;
    let known = ["png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "css", "js", "pdf", "mp4", "txt", "csv"];
    known.iter().any(|k| k.eq_ignore_ascii_case(ext)).then_some(ext)
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

pub(crate) fn is_phone(m: &str) -> bool {
    // The extension is not part of the number's length.
    let main = m.find(['x', 'e', '#']).map_or(m, |i| &m[..i]).trim_end();
    let digits = main.bytes().filter(u8::is_ascii_digit).count();
    // Unformatted national numbers have 10 or 11 digits (`0142685300`, `02079460958`);
    // shorter runs of digits are ids (`05961272`).
    let unformatted = main.bytes().all(|b| b.is_ascii_digit());
    (8..=15).contains(&digits) && (!unformatted || (10..=11).contains(&digits))
}

/// A valid IPv6 address with at least three groups (so `std::ba…` or `::1` in prose is
/// not mistaken for a client address).
pub(crate) fn is_ipv6(m: &str) -> bool {
    m.split(':').filter(|g| !g.is_empty()).count() >= 3 && m.parse::<std::net::Ipv6Addr>().is_ok()
}

/// A formatted national identifier whose check rule holds.
pub fn is_national_id(m: &str) -> bool {
    let compact: String = m.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let b = compact.as_bytes();
    let all_digits = b.iter().all(u8::is_ascii_digit);
    match b.len() {
        // US SSN (formatted): area not 000, 666 or 9xx; group not 00; serial not 0000.
        9 if all_digits && m.len() == 11 => is_ssn(b),
        // UK NINO: two letters, six digits, a letter A–D; some prefixes are never issued.
        9 if b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() && b[8].is_ascii_uppercase() => {
            !matches!(&compact[..2], "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ")
        }
        // ES DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter).
        9 => is_dni(&compact),
        // FR NIR: 13 digits (2A/2B counted as 19/18) and a two-digit key.
        15 => is_nir(&compact),
        // IT codice fiscale.
        16 => is_codice_fiscale(b),
        _ => false,
    }
}

fn is_ssn(d: &[u8]) -> bool {
    let area = &d[..3];
    area != b"000" && area != b"666" && area[0] != b'9' && &d[3..5] != b"00" && &d[5..9] != b"0000"
}

fn is_dni(s: &str) -> bool {
    const LETTERS: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let b = s.as_bytes();
    let (digits, letter) = (&s[..8], b[8]);
    let lead = match b[0] {
        b'X' => "0",
        b'Y' => "1",
        b'Z' => "2",
        c if c.is_ascii_digit() => "",
        _ => return false,
    };
    let number = format!("{lead}{}", if lead.is_empty() { digits } else { &digits[1..] });
    match number.parse::<u32>() {
        Ok(n) if number.bytes().all(|c| c.is_ascii_digit()) => LETTERS[(n % 23) as usize] == letter,
        _ => false,
    }
}

fn is_nir(s: &str) -> bool {
    let corsica = s.replacen("2A", "19", 1).replacen("2B", "18", 1);
    if !corsica.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    // Corsican departments count as 19 (2A) and 18 (2B) in the key (INSEE).
    let (Ok(n), Ok(key)) = (corsica[..13].parse::<u64>(), corsica[13..].parse::<u64>()) else { return false };
    (1..=97).contains(&key) && 97 - n % 97 == key
}

fn is_codice_fiscale(b: &[u8]) -> bool {
    const ODD: [u32; 36] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, // 0-9
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23, // A-Z
    ];
    let value = |c: u8| -> Option<usize> {
        match c {
            b'0'..=b'9' => Some(usize::from(c - b'0')),
            b'A'..=b'Z' => Some(usize::from(c - b'A') + 10),
            _ => None,
        }
    };
    let mut sum = 0u32;
    for (i, &c) in b[..15].iter().enumerate() {
        let Some(v) = value(c) else { return false };
        sum += if i % 2 == 0 {
            ODD[v]
        } else if v < 10 {
            v as u32
        } else {
            (v - 10) as u32
        };
    }
    b[15] == b'A' + (sum % 26) as u8
}

/// A bare-digit identifier after a label: NL BSN (11-check), DE Steuer-IdNr (ISO 7064
/// MOD 11,10), or an unformatted US SSN.
pub(crate) fn is_labelled_id(m: &str) -> bool {
    let d = digits_of(m);
    match d.len() {
        9 => is_bsn(&d) || is_ssn(&d.iter().map(|x| x + b'0').collect::<Vec<_>>()),
        11 => is_de_tax_id(&d),
        _ => false,
    }
}

/// NL BSN: 9·d1 + 8·d2 + … + 2·d8 − d9 is a multiple of 11.
pub fn is_bsn(d: &[u8]) -> bool {
    if d.len() != 9 {
        return false;
    }
    let sum: i32 =
        d[..8].iter().enumerate().map(|(i, x)| (9 - i as i32) * i32::from(*x)).sum::<i32>() - i32::from(d[8]);
    sum % 11 == 0 && d.iter().any(|x| *x != 0)
}

/// DE Steuerliche Identifikationsnummer: 11 digits, no leading 0, ISO 7064 MOD 11,10.
pub fn is_de_tax_id(d: &[u8]) -> bool {
    if d.len() != 11 || d[0] == 0 {
        return false;
    }
    let mut product = 10u32;
    for x in &d[..10] {
        let mut sum = (u32::from(*x) + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let check = (11 - product) % 10;
    check == u32::from(d[10])
}
