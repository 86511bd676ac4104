//! False positives, measured: values that are not personal — order ids, SKUs, UUIDs,
//! timestamps, prices, versions, hashes, tracking numbers, product names — must survive
//! the default policy. A seeded generator makes a few thousand of each kind, scrubs each
//! under a neutral name, and counts what changed. Kinds that can never look personal
//! must never change; long digit strings can collide with card numbers (a 16-digit id
//! that passes the Luhn check and starts like a Visa is indistinguishable from one), and
//! their rate is bounded and printed (`cargo test --test false_positives -- --nocapture`).

use tapedeck_captures::scrub::Scrubber;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize])).collect()
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
    /// Between `lo` and `hi` digits.
    fn some_digits(&mut self, lo: u64, hi: u64) -> String {
        let n = lo + self.below(hi - lo + 1);
        self.digits(n as usize)
    }
}

fn rate(scrubber: &Scrubber, values: &[String]) -> (usize, Option<String>) {
    let mut changed = 0;
    let mut example = None;
    for v in values {
        let out = scrubber.scrub_value("$.value", v);
        if out != *v {
            changed += 1;
            example.get_or_insert_with(|| format!("{v} -> {out}"));
        }
    }
    (changed, example)
}

#[test]
fn non_personal_values_survive() {
    let scrubber = Scrubber::with_defaults(Some(b"false positive measurement key"));
    let mut r = Rng(0x5eed_1234_abcd_9876);
    const N: usize = 3000;
    let mut kinds: Vec<(&str, Vec<String>, f64)> = Vec::new();
    let mut gen = |name: &'static str, max_rate: f64, f: &mut dyn FnMut(&mut Rng) -> String| {
        kinds.push((name, (0..N).map(|_| f(&mut r)).collect(), max_rate));
    };
    gen("uuid", 0.0, &mut |r| format!("{}-{}-4{}-a{}-{}", r.hex(8), r.hex(4), r.hex(3), r.hex(3), r.hex(12)));
    gen("iso timestamp", 0.0, &mut |r| {
        format!(
            "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}.{}Z",
            r.below(30),
            1 + r.below(12),
            1 + r.below(28),
            r.below(24),
            r.below(60),
            r.below(60),
            r.some_digits(1, 9)
        )
    });
    gen("epoch ms", 0.0, &mut |r| format!("17{}", r.digits(11)));
    gen("price", 0.0, &mut |r| format!("{}.{:02}", r.below(100_000), r.below(100)));
    gen("sku", 0.0, &mut |r| format!("SKU-{}-{}", r.digits(4), ["BLK", "RED", "XL", "M"][r.below(4) as usize]));
    gen("order id", 0.0, &mut |r| format!("ORD-{}", r.some_digits(5, 10)));
    gen("numeric id ≤ 11 digits", 0.0, &mut |r| r.some_digits(1, 11).trim_start_matches('0').to_string());
    gen("zero-padded id", 0.0, &mut |r| format!("{:0width$}", r.below(10_000_000), width = 8 + r.below(2) as usize));
    gen("git sha", 0.0, &mut |r| r.hex(40));
    gen("etag", 0.0, &mut |r| format!("W/\"{}\"", r.hex(16)));
    gen("semver", 0.0, &mut |r| format!("{}.{}.{}-rc.{}", r.below(20), r.below(50), r.below(200), r.below(9)));
    gen("ups tracking", 0.0, &mut |r| format!("1Z{}{}", r.hex(6).to_uppercase(), r.digits(10)));
    gen("product name", 0.0, &mut |r| {
        format!(
            "{} {} #{}",
            ["Mechanical", "Wireless", "Ergonomic"][r.below(3) as usize],
            ["keyboard", "mouse", "desk lamp"][r.below(3) as usize],
            r.below(1000)
        )
    });
    gen("date", 0.0, &mut |r| format!("{:02}/{:02}/20{:02}", 1 + r.below(28), 1 + r.below(12), r.below(30)));
    // Long digit ids collide with card numbers by construction (~1 in 10 pass the Luhn
    // check; only those starting like an issuer count).
    gen("numeric id 12–19 digits", 0.06, &mut |r| {
        let lead = 1 + r.below(9);
        format!("{lead}{}", r.some_digits(11, 18))
    });
    let mut failures = Vec::new();
    for (name, values, max_rate) in &kinds {
        let (changed, example) = rate(&scrubber, values);
        let share = changed as f64 / values.len() as f64;
        println!("{name:>26}: {changed:>4} of {} changed ({:.2}%)", values.len(), share * 100.0);
        if share > *max_rate {
            failures.push(format!(
                "{name}: {:.2}% > {:.2}% (e.g. {})",
                share * 100.0,
                max_rate * 100.0,
                example.unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
