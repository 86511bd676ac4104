//! Values that look generated — UUIDs, timestamps of the replay's own time, random tokens —
//! differ on every response by design; a change between two of them is noise, not a
//! regression.

/// The replay's time: a replayed timestamp counts as generated only if it falls in it.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Unix seconds, inclusive.
    pub from: i64,
    /// Unix seconds, inclusive.
    pub to: i64,
}

impl Default for Window {
    /// Any time at all.
    fn default() -> Self {
        Window { from: i64::MIN, to: i64::MAX }
    }
}

impl Window {
    /// From ten minutes before `start_unix` on: slack for clocks and caches.
    pub fn since(start_unix: i64) -> Self {
        Window { from: start_unix - 600, to: i64::MAX }
    }
}

/// Why both values look generated: `uuid`, `timestamp` or `token`; `None` otherwise.
pub fn both(recorded: &str, replayed: &str, window: &Window) -> Option<&'static str> {
    if is_uuid(recorded) && is_uuid(replayed) {
        return Some("uuid");
    }
    if let (Some(_), Some(t)) = (timestamp(recorded), timestamp(replayed)) {
        return (window.from..=window.to).contains(&t).then_some("timestamp");
    }
    if recorded.len() == replayed.len() && is_token(recorded) && is_token(replayed) {
        return Some("token");
    }
    None
}

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Unix seconds of a timestamp: RFC 3339 / ISO 8601 (with or without offset, taken as
/// UTC), an HTTP date, or epoch seconds/milliseconds/microseconds/nanoseconds.
pub fn timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 10 || s.len() > 40 {
        return None;
    }
    let b = s.as_bytes();
    if b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b.len() >= 16 {
        if let Ok(t) = s.parse::<jiff::Timestamp>() {
            return Some(t.as_second());
        }
        if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
            return dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp().as_second());
        }
        return None;
    }
    if s.ends_with("GMT") {
        return jiff::fmt::rfc2822::parse(s).ok().map(|z| z.timestamp().as_second());
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: i64 = int.parse().ok()?;
    let secs = match int.len() {
        10 => n,
        13 => n / 1_000,
        16 => n / 1_000_000,
        19 => n / 1_000_000_000,
        _ => return None,
    };
    // 2001 .. 2100: plausible clocks, not order numbers.
    (1_000_000_000..4_102_444_800).contains(&secs).then_some(secs)
}

/// At least 16 characters of letters, digits, `-` and `_`, with letters and digits mixed
/// and no long repeats: a random identifier, not a word.
pub fn is_token(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 16 || !b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_')) {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    if digits < 2 || letters < 2 {
        return false;
    }
    let mut seen = [0u32; 256];
    for c in b {
        seen[*c as usize] += 1;
    }
    let n = b.len() as f64;
    let entropy: f64 = seen.iter().filter(|&&k| k > 0).map(|&k| -(k as f64 / n) * (k as f64 / n).log2()).sum();
    entropy >= 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_many_forms() {
        let t = 1_764_095_229; // 2025-11-25T18:27:09Z
        assert_eq!(timestamp("2025-11-25T18:27:09Z"), Some(t));
        assert_eq!(timestamp("2025-11-25T19:27:09.123+01:00"), Some(t));
        assert_eq!(timestamp("2025-11-25 18:27:09"), Some(t));
        assert_eq!(timestamp("Tue, 25 Nov 2025 18:27:09 GMT"), Some(t));
        assert_eq!(timestamp("1764095229"), Some(t));
        assert_eq!(timestamp("1764095229123"), Some(t));
        assert_eq!(timestamp("1764095229.5"), Some(t));
        for no in ["2025-11-25", "12345678901", "order-1764095229", "9999999999999999999999"] {
            assert_eq!(timestamp(no), None, "{no}");
        }
    }

    #[test]
    fn generated_pairs() {
        let w = Window::since(1_764_000_000);
        assert_eq!(both("2025-11-24T10:00:00Z", "2025-11-25T18:27:09Z", &w), Some("timestamp"));
        // A replayed date outside the replay's time is data, not a clock.
        assert_eq!(both("2025-11-24T10:00:00Z", "2020-01-01T00:00:00Z", &w), None);
        assert_eq!(both("3f2b9c1ad8e04b7f", "9a0c3e5b7d1f2a4c", &w), Some("token"));
        assert_eq!(both("a1B2c3D4e5F6g7H8i9", "Z9y8X7w6V5u4T3s2R1", &w), Some("token"));
        // Words and numbers are not tokens.
        assert_eq!(both("internationalization", "internationalisation", &w), None);
        assert_eq!(both("1234567890123456", "1234567890123457", &w), None);
        assert_eq!(both("jane", "john", &w), None);
    }
}
