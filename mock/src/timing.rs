//! When an answer goes out (`--latency`) and which answers fail on purpose (`--fault`).

use std::time::Duration;

use rand::Rng;
use tapedeck_captures::route;

/// How long an answer takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// As recorded for that exchange (the default).
    Recorded,
    /// The recorded times multiplied (`3x`, `0.5x`).
    Scaled(f64),
    /// The recorded times plus a delay (`+200ms`).
    Added(Duration),
    /// The route's recorded percentile for every answer (`p99`, `p50`).
    Percentile(f64),
    /// At once (`0`).
    None,
}

impl std::str::FromStr for Latency {
    type Err = String;

    fn from_str(s: &str) -> Result<Latency, String> {
        let s = s.trim();
        let bad = || {
            format!("{s:?}: expected recorded, 0, a factor (3x, 0.5x), an added delay (+200ms) or a percentile (p99)")
        };
        if s == "recorded" {
            Ok(Latency::Recorded)
        } else if s == "0" || s == "none" {
            Ok(Latency::None)
        } else if let Some(f) = s.strip_suffix(['x', 'X']) {
            match f.parse::<f64>() {
                Ok(f) if (0.0..=1000.0).contains(&f) => Ok(Latency::Scaled(f)),
                _ => Err(bad()),
            }
        } else if let Some(d) = s.strip_prefix('+') {
            let d = humantime::parse_duration(d).map_err(|_| bad())?;
            if d > Duration::from_secs(3600) {
                return Err(format!("{s:?}: at most an hour"));
            }
            Ok(Latency::Added(d))
        } else if let Some(p) = s.strip_prefix(['p', 'P']) {
            match p.parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Latency::Percentile(p)),
                _ => Err(bad()),
            }
        } else {
            Err(bad())
        }
    }
}

impl Latency {
    /// When the head and the last byte go out after the request came, for an answer
    /// recorded at (`head`, `end`) on a route whose recorded latencies are `route`
    /// (sorted).
    pub fn apply(self, head: Duration, end: Duration, route: &[Duration]) -> (Duration, Duration) {
        let (head, end) = self.unbounded(head, end, route);
        // An hour at most, however the recorded times were scaled.
        (head.min(MAX_DELAY), end.min(MAX_DELAY))
    }

    fn unbounded(self, head: Duration, end: Duration, route: &[Duration]) -> (Duration, Duration) {
        match self {
            Latency::Recorded => (head, end),
            Latency::Scaled(f) => (head.mul_f64(f), end.mul_f64(f)),
            Latency::Added(d) => (head + d, end + d),
            Latency::None => (Duration::ZERO, Duration::ZERO),
            Latency::Percentile(p) => {
                let Some(last) = route.len().checked_sub(1) else { return (head, end) };
                let at = route[((p / 100.0) * last as f64).round() as usize];
                // The head keeps its share of the answer's time.
                let share = if end.is_zero() { 1.0 } else { head.as_secs_f64() / end.as_secs_f64() };
                (at.mul_f64(share.clamp(0.0, 1.0)), at)
            }
        }
    }
}

/// The longest an answer is held back.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A failure injected on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// This status, with a short JSON body saying it was injected.
    Status(u16),
    /// The connection closed without an answer.
    Reset,
    /// No answer: held until the client gives up (or [`HOLD`]).
    Timeout,
}

/// How long a `timeout` fault holds a request at most.
pub const HOLD: Duration = Duration::from_secs(300);

impl Fault {
    /// Its name in summaries and metrics.
    pub fn name(self) -> String {
        match self {
            Fault::Status(s) => s.to_string(),
            Fault::Reset => "reset".into(),
            Fault::Timeout => "timeout".into(),
        }
    }
}

/// `[METHOD] PATH: 2% 503, 1% reset, 0.5% timeout` — or without `METHOD PATH:`, for
/// every route. PATH is a path or a route template (`/users/42` and `/users/{id}` are
/// the same route).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    method: Option<String>,
    template: Option<String>,
    faults: Vec<(f64, Fault)>,
}

impl std::str::FromStr for FaultRule {
    type Err = String;

    fn from_str(s: &str) -> Result<FaultRule, String> {
        let form = "expected '[METHOD /path:] 2% 503, 1% reset, 0.5% timeout'";
        let (scope, list) = match s.split_once(": ") {
            Some((scope, list)) => (Some(scope.trim()), list),
            None => (None, s),
        };
        let (method, template) = match scope {
            None => (None, None),
            Some(scope) => {
                let (method, path) = match scope.split_once(' ') {
                    Some((m, p)) => (Some(m.trim().to_ascii_uppercase()), p.trim()),
                    None => (None, scope),
                };
                if !path.starts_with('/')
                    || method.as_deref().is_some_and(|m| !m.bytes().all(|b| b.is_ascii_alphabetic()))
                {
                    return Err(format!("{s:?}: {scope:?} is not a route ({form})"));
                }
                (method, Some(route::template(path)))
            }
        };
        let mut faults = Vec::new();
        let mut total = 0.0;
        for item in list.split(',').map(str::trim) {
            let (share, what) = item.split_once(' ').ok_or_else(|| format!("{s:?}: {item:?}: {form}"))?;
            let share = share
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| format!("{s:?}: {share:?} is not a share (0.5%, 2%) ({form})"))?;
            let fault = match what.trim() {
                "reset" => Fault::Reset,
                "timeout" => Fault::Timeout,
                code => match code.parse::<u16>() {
                    Ok(c) if (200..=599).contains(&c) => Fault::Status(c),
                    _ => {
                        return Err(format!("{s:?}: {code:?} is not a status (200 to 599), reset or timeout ({form})"))
                    }
                },
            };
            total += share;
            faults.push((share / 100.0, fault));
        }
        if total > 100.0 + 1e-9 {
            return Err(format!("{s:?}: the shares add up to {total}%, more than 100%"));
        }
        Ok(FaultRule { method, template, faults })
    }
}

impl FaultRule {
    /// True when the rule is about `method` and the path of `target`.
    pub fn covers(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.template.as_deref().is_none_or(|t| same_route(t, &route::template(target)))
    }

    /// A fault drawn by its shares, or none.
    pub fn draw(&self, rng: &mut impl Rng) -> Option<Fault> {
        let mut x: f64 = rng.random();
        for &(share, fault) in &self.faults {
            if x < share {
                return Some(fault);
            }
            x -= share;
        }
        None
    }
}

/// True when template `rule` names the route of template `request`: segment by segment
/// alike, a `{placeholder}` of any name standing for any generated segment.
fn same_route(rule: &str, request: &str) -> bool {
    let placeholder = |s: &str| s.len() > 2 && s.starts_with('{') && s.ends_with('}');
    let (a, b): (Vec<&str>, Vec<&str>) = (rule.split('/').collect(), request.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || (placeholder(x) && placeholder(y)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn latencies_parse_and_apply() {
        let ms = Duration::from_millis;
        assert_eq!("3x".parse::<Latency>().unwrap().apply(ms(10), ms(20), &[]), (ms(30), ms(60)));
        assert_eq!("+200ms".parse::<Latency>().unwrap().apply(ms(10), ms(20), &[]), (ms(210), ms(220)));
        assert_eq!("0".parse::<Latency>().unwrap().apply(ms(10), ms(20), &[]), (ms(0), ms(0)));
        let route: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(
            "p99".parse::<Latency>().unwrap().apply(ms(10), ms(20), &route),
            (Duration::from_micros(49_500), ms(99))
        );
        for bad in ["fast", "3", "-1x", "p101", "+soon", "+2days", "nanx"] {
            assert!(bad.parse::<Latency>().unwrap_err().contains("expected") || bad == "+2days", "{bad}");
        }
    }

    #[test]
    fn fault_rules_parse_scope_and_draw_by_share() {
        let rule: FaultRule = "POST /charge: 2% 503, 1% reset, 0.5% timeout".parse().unwrap();
        assert!(rule.covers("post", "/charge?x=1") && !rule.covers("GET", "/charge"));
        let by_template: FaultRule = "/users/{id}: 50% 500".parse().unwrap();
        assert!(by_template.covers("GET", "/users/42") && by_template.covers("PUT", "/users/7"));
        let any_name: FaultRule = "GET /users/{user}/orders: 50% 500".parse().unwrap();
        assert!(any_name.covers("GET", "/users/42/orders") && !any_name.covers("GET", "/users/me/orders"));
        assert!("10% reset".parse::<FaultRule>().unwrap().covers("GET", "/anything"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            *counts.entry(rule.draw(&mut rng)).or_insert(0u32) += 1;
        }
        let near = |f: Option<Fault>, want: f64| (f64::from(counts[&f]) / 1000.0 - want).abs() < 0.3;
        assert!(
            near(Some(Fault::Status(503)), 2.0) && near(Some(Fault::Reset), 1.0) && near(Some(Fault::Timeout), 0.5)
        );
        for bad in ["", "2%", "2% teapot", "POST charge: 2% 503", "60% 503, 50% reset", "2% 99", "2% 101", "x%: 1% 500"]
        {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
    }
}
