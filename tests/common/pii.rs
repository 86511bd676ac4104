//! A seeded generator of realistic personal data in several locales (US, UK, DE, FR, NL,
//! ES, IT): names with diacritics, e-mails, phones in national formats with and without
//! extensions, cards of every brand and length (Luhn-valid), IBANs with valid check
//! digits, addresses, dates of birth, passwords with punctuation, JWTs, API keys, session
//! and CSRF cookies, IPs and national identifiers with valid check rules. Every value it
//! hands out is remembered in `planted`, so a test can look for each in every byte.

pub struct Pii {
    state: u64,
    /// Every value handed out, to look for later.
    pub planted: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
pub enum Locale {
    Us,
    Uk,
    De,
    Fr,
    Nl,
    Es,
    It,
}

pub const LOCALES: [Locale; 7] = [Locale::Us, Locale::Uk, Locale::De, Locale::Fr, Locale::Nl, Locale::Es, Locale::It];

/// One person's data.
#[derive(Clone, Debug)]
pub struct Person {
    pub first: String,
    pub last: String,
    pub full: String,
    pub email: String,
    pub phone: String,
    pub card: String,
    pub iban: String,
    pub street: String,
    pub dob: String,
    pub password: String,
    pub jwt: String,
    pub api_key: String,
    pub session: String,
    pub csrf: String,
    pub ip: String,
    pub national_id: String,
}

const FIRST: &[(&str, &[&str])] = &[
    ("us", &["Marisol", "Thaddeus", "Kimberleigh", "Jermaine"]),
    ("uk", &["Ffion", "Alasdair", "Imogen", "Rhodri"]),
    ("de", &["Jürgen", "Henrietta", "Wolfram", "Gisela"]),
    ("fr", &["Chloé", "Anatole", "Bérénice", "Gaëtan"]),
    ("nl", &["Pieternella", "Joost", "Marieke", "Sjoerd"]),
    ("es", &["Inmaculada", "Íñigo", "Begoña", "Ximeno"]),
    ("it", &["Ludovica", "Gianmarco", "Annunziata", "Pierluigi"]),
];
const LAST: &[&str] = &[
    "Quintero-Haldane",
    "Vanterpool",
    "Featherstonehaugh",
    "Schwarzenböck",
    "Delacroix-Moreau",
    "Verhoeven-Bakker",
    "Etxeberria",
    "Brambilla-Rossetti",
    "Okonkwo-Lindqvist",
    "Brzęczyszczykiewicz",
];
const STREETS: &[&str] = &[
    "Harbour Road",
    "Kastanienallee",
    "Rue des Martyrs",
    "Prinsengracht",
    "Calle de Alcalá",
    "Via dei Coronari",
    "Maple Crescent",
];

impl Pii {
    pub fn new(seed: u64) -> Pii {
        Pii { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, planted: Vec::new() }
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| char::from(*self.pick(A))).collect()
    }

    fn b64url(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        // Never all letters: real tokens mix digits in.
        let mut s: String = (0..n).map(|_| char::from(*self.pick(A))).collect();
        s.replace_range(n / 2..n / 2 + 1, "7");
        s
    }

    /// Remembers `value` as planted and returns it.
    pub fn plant(&mut self, value: String) -> String {
        self.planted.push(value.clone());
        value
    }

    pub fn person(&mut self, locale: Locale) -> Person {
        let l = locale as usize;
        let first = self.pick(FIRST[l].1).to_string();
        let last = self.pick(LAST).to_string();
        let ascii = |s: &str| -> String {
            s.chars()
                .filter_map(|c| match c {
                    'ü' => Some('u'),
                    'ö' => Some('o'),
                    'é' | 'è' | 'ë' => Some('e'),
                    'í' => Some('i'),
                    'ñ' => Some('n'),
                    'ę' => Some('e'),
                    'É' => Some('e'),
                    'Í' => Some('i'),
                    c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        };
        let domain =
            ["example.com", "example.co.uk", "example.de", "example.fr", "example.nl", "example.es", "example.it"][l];
        let email = format!("{}.{}{}@{domain}", ascii(&first), ascii(&last), self.below(100));
        let phone = self.phone(locale);
        let card = self.card();
        let iban = self.iban(locale);
        let street = format!("{} {}", self.below(180) + 1, self.pick(STREETS));
        let dob = format!("{}-{:02}-{:02}", 1940 + self.below(60), self.below(12) + 1, self.below(28) + 1);
        let password =
            format!("{}{}!#{}", self.alnum(6), self.pick(&["$", "%", "&", "?", "\"", "\\", "'"]), self.digits(3));
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", self.b64url(24), self.b64url(43));
        let api_key = format!("ak_{}", self.alnum(28));
        let session = self.b64url(32);
        let csrf = self.alnum(32);
        let ip = if self.below(4) == 0 {
            format!("2001:db8:{:x}:{:x}::{:x}", self.below(65535), self.below(65535), self.below(65535) + 1)
        } else {
            format!("{}.{}.{}.{}", 11 + self.below(180), self.below(256), self.below(256), 1 + self.below(254))
        };
        // Planted inside: for labelled ids, the digits without the label.
        let national_id = self.national_id(locale);
        if !national_id.starts_with("BSN ") && !national_id.starts_with("Steuer-IdNr. ") {
            self.plant(national_id.clone());
        }
        let p = Person {
            full: format!("{first} {last}"),
            first,
            last,
            email,
            phone,
            card,
            iban,
            street,
            dob,
            password,
            jwt,
            api_key,
            session,
            csrf,
            ip,
            national_id,
        };
        for v in [
            &p.full,
            &p.email,
            &p.phone,
            &p.card,
            &p.iban,
            &p.street,
            &p.dob,
            &p.password,
            &p.jwt,
            &p.api_key,
            &p.session,
            &p.csrf,
            &p.ip,
        ] {
            self.plant(v.clone());
        }
        p
    }

    fn phone(&mut self, locale: Locale) -> String {
        let ext_len = 1 + self.below(5) as usize;
        let ext = if self.below(3) == 0 { format!("x{}", self.digits(ext_len)) } else { String::new() };
        let d = |p: &mut Pii, n| p.digits(n);
        let base = match (locale, self.below(3)) {
            (Locale::Us, 0) => format!("{}-{}-{}", 200 + self.below(700), d(self, 3), d(self, 4)),
            (Locale::Us, 1) => format!("({}) {}-{}", 200 + self.below(700), d(self, 3), d(self, 4)),
            (Locale::Us, _) => format!("001-{}-{}-{}", 200 + self.below(700), d(self, 3), d(self, 4)),
            (Locale::Uk, 0) => format!("+44 20 {} {}", d(self, 4), d(self, 4)),
            (Locale::Uk, 1) => format!("07{} {}", d(self, 3), d(self, 6)),
            (Locale::Uk, _) => format!("(0{}) {} {}", 113 + self.below(80), d(self, 3), d(self, 4)),
            (Locale::De, 0) => format!("+49 30 {}", d(self, 7)),
            (Locale::De, 1) => format!("0{}/{}", 30 + self.below(60), d(self, 6)),
            (Locale::De, _) => format!("+49(0){} {}", 8300 + self.below(99), d(self, 5)),
            (Locale::Fr, 0) => {
                format!("0{} {} {} {} {}", 1 + self.below(7), d(self, 2), d(self, 2), d(self, 2), d(self, 2))
            }
            (Locale::Fr, 1) => format!("+33 (0)1 {} {} {} {}", d(self, 2), d(self, 2), d(self, 2), d(self, 2)),
            (Locale::Fr, _) => format!("0{}{}", 6 + self.below(2), d(self, 8)),
            (Locale::Nl, 0) => format!("06-{}", d(self, 8)),
            (Locale::Nl, 1) => format!("+31 20 {} {}", d(self, 3), d(self, 4)),
            (Locale::Nl, _) => format!("020-{}", d(self, 7)),
            (Locale::Es, 0) => format!("+34 {} {} {}", 600 + self.below(399), d(self, 3), d(self, 3)),
            (Locale::Es, 1) => format!("{} {} {}", 910 + self.below(9), d(self, 3), d(self, 3)),
            (Locale::Es, _) => format!("{} {} {} {}", 600 + self.below(99), d(self, 2), d(self, 2), d(self, 2)),
            (Locale::It, _) => format!("+39 0{} {} {}", 2 + self.below(8), d(self, 4), d(self, 4)),
        };
        format!("{base}{ext}")
    }

    /// A Luhn-valid card of a random brand and one of its lengths, with separators
    /// sometimes.
    fn card(&mut self) -> String {
        let brands: &[(&str, &[usize])] = &[
            ("4", &[13, 16, 19]),
            ("51", &[16]),
            ("55", &[16]),
            ("2221", &[16]),
            ("2720", &[16]),
            ("34", &[15]),
            ("37", &[15]),
            ("6011", &[16, 19]),
            ("65", &[16]),
            ("3528", &[16]),
            ("3589", &[19]),
            ("36", &[14]),
            ("300", &[14]),
            ("5018", &[12, 13, 18]),
            ("6759", &[16]),
            ("62", &[16, 19]),
        ];
        let (prefix, lengths) = self.pick(brands);
        let len = *self.pick(lengths);
        let mut digits = format!("{prefix}{}", self.digits(len - prefix.len() - 1));
        for check in 0..10 {
            let candidate = format!("{digits}{check}");
            if luhn(&candidate) {
                digits = candidate;
                break;
            }
        }
        match self.below(3) {
            0 if len == 16 => {
                digits.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
            }
            1 if len == 16 => {
                digits.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("-")
            }
            _ => digits,
        }
    }

    fn iban(&mut self, locale: Locale) -> String {
        let (country, bban) = match locale {
            Locale::Us | Locale::Uk => ("GB", format!("WEST{}", self.digits(14))),
            Locale::De => ("DE", self.digits(18)),
            Locale::Fr => ("FR", format!("{}M{}", self.digits(20), self.digits(2))),
            Locale::Nl => ("NL", format!("ABNA{}", self.digits(10))),
            Locale::Es => ("ES", self.digits(20)),
            Locale::It => ("IT", format!("X{}", self.digits(22))),
        };
        // ISO 13616 check digits: 98 - (BBAN + country + "00") mod 97.
        let rearranged = format!("{bban}{country}00");
        let mut rem = 0u32;
        for c in rearranged.chars() {
            let v = c.to_digit(36).unwrap();
            rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
        }
        format!("{country}{:02}{bban}", 98 - rem)
    }

    fn national_id(&mut self, locale: Locale) -> String {
        match locale {
            Locale::Us => format!("{:03}-{:02}-{:04}", 1 + self.below(660), 1 + self.below(98), 1 + self.below(9998)),
            Locale::Uk => {
                let l = |p: &mut Pii| char::from(*p.pick(b"ABCEHJKLMPRSTWXY"));
                let suffix = char::from(*self.pick(b"ABCD"));
                format!("{}{} {} {} {} {suffix}", l(self), l(self), self.digits(2), self.digits(2), self.digits(2))
            }
            Locale::Es => {
                let n = 10_000_000 + self.below(89_999_999);
                format!("{n}{}", char::from(b"TRWAGMYFPDXBNJZSQVHLCKE"[(n % 23) as usize]))
            }
            Locale::Fr => {
                let n = (1 + self.below(2)) * 1_000_000_000_000 + self.below(1_000_000_000_000);
                format!("{n}{:02}", 97 - n % 97)
            }
            Locale::Nl => loop {
                let d = self.digits(9);
                let b: Vec<i32> = d.bytes().map(|c| i32::from(c - b'0')).collect();
                let sum: i32 = (0..8).map(|i| (9 - i as i32) * b[i]).sum::<i32>() - b[8];
                if sum % 11 == 0 && b[0] != 0 {
                    self.plant(d.clone());
                    return format!("BSN {d}");
                }
            },
            Locale::De => {
                // Steuer-IdNr: 11 digits, ISO 7064 MOD 11,10 check digit.
                let d = format!("{}{}", 1 + self.below(9), self.digits(9));
                let mut product = 10;
                for c in d.bytes() {
                    let mut sum = (u32::from(c - b'0') + product) % 10;
                    if sum == 0 {
                        sum = 10;
                    }
                    product = (sum * 2) % 11;
                }
                let id = format!("{d}{}", (11 - product) % 10);
                self.plant(id.clone());
                format!("Steuer-IdNr. {id}")
            }
            Locale::It => {
                let letters = |p: &mut Pii, n| (0..n).map(|_| char::from(b'A' + p.below(26) as u8)).collect::<String>();
                let body = format!(
                    "{}{:02}{}{:02}{}{:03}",
                    letters(self, 6),
                    self.below(100),
                    char::from(*self.pick(b"ABCDEHLMPRST")),
                    1 + self.below(28),
                    letters(self, 1),
                    self.below(1000)
                );
                const ODD: [u32; 36] = [
                    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8,
                    12, 14, 16, 10, 22, 25, 24, 23,
                ];
                let sum: u32 = body
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        let v = c.to_digit(36).unwrap();
                        if i % 2 == 0 {
                            ODD[v as usize]
                        } else if v < 10 {
                            v
                        } else {
                            v - 10
                        }
                    })
                    .sum();
                format!("{body}{}", char::from(b'A' + (sum % 26) as u8))
            }
        }
    }
}

pub fn luhn(digits: &str) -> bool {
    let d: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    tapedeck_captures::scrub::detect::luhn(&d)
}

/// Which of `planted` occur in `haystack`, as written or URL-, percent- or JSON-encoded,
/// each with a little context (the test's own synthetic data) to say where.
pub fn leaks<'a>(haystack: &[u8], planted: &'a [String]) -> Vec<(&'a str, String)> {
    let mut needles = Vec::new();
    let mut owner = Vec::new();
    for (i, p) in planted.iter().enumerate() {
        let form: String = form_urlencoded::byte_serialize(p.as_bytes()).collect();
        let percent = form.replace('+', "%20");
        let json = serde_json::to_string(p.as_str()).unwrap();
        for n in [p.clone(), form, percent, json.trim_matches('"').to_string()] {
            if !n.is_empty() {
                needles.push(n);
                owner.push(i);
            }
        }
    }
    let ac = aho_corasick::AhoCorasick::new(&needles).unwrap();
    let mut found: Vec<(&str, String)> = Vec::new();
    for m in ac.find_overlapping_iter(haystack) {
        let p = planted[owner[m.pattern().as_usize()]].as_str();
        if !found.iter().any(|(f, _)| *f == p) {
            let context =
                String::from_utf8_lossy(&haystack[m.start().saturating_sub(60)..(m.end() + 20).min(haystack.len())]);
            found.push((p, context.into_owned()));
        }
    }
    found
}
