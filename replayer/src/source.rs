//! What to replay: recorded exchanges from any number of tapes, merged in start order and
//! streamed (memory does not grow with the tapes), narrowed by filters, a session-whole
//! sample, a time window and a limit.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use tapedeck_captures::filter::Filter;
use tapedeck_captures::tape::TapeReader;
use tapedeck_captures::{route, Exchange, TapeError};

use crate::session::SessionKey;

/// A bound of the time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    /// This long after the first recorded request.
    Offset(Duration),
    /// This wall-clock time, ns since the epoch.
    At(i64),
}

impl std::str::FromStr for TimeBound {
    type Err = String;

    /// `90s`, `5m` (offsets) or `2026-11-25T15:00:00Z` (a time).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(d) = humantime_lite(s) {
            return Ok(TimeBound::Offset(d));
        }
        s.parse::<jiff::Timestamp>()
            .map(|t| TimeBound::At(t.as_nanosecond() as i64))
            .map_err(|_| format!("{s:?}: expected an offset such as 90s or 5m, or a time such as 2026-11-25T15:00:00Z"))
    }
}

/// `250ms`, `90s`, `5m`, `2h`.
fn humantime_lite(s: &str) -> Result<Duration, ()> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or(())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| ())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(()),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Status selection: `200`, `5xx`, `500-504`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange(u16, u16);

impl std::str::FromStr for StatusRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || format!("{s:?}: expected a status such as 200, 5xx or 500-504");
        if let Some(class) = t.strip_suffix("xx") {
            let c: u16 = class.parse().map_err(|_| bad())?;
            return Ok(StatusRange(c * 100, c * 100 + 99));
        }
        if let Some((a, b)) = t.split_once('-') {
            return Ok(StatusRange(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?));
        }
        let v = t.parse().map_err(|_| bad())?;
        Ok(StatusRange(v, v))
    }
}

/// Which recorded exchanges to replay.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// A filter expression (`tapedeck cat --help` lists the fields).
    pub filter: Option<Filter>,
    /// Methods (any of).
    pub methods: Vec<String>,
    /// Routes: a template such as `/users/{id}` (exact) or a regex on the path.
    pub routes: Vec<String>,
    /// Recorded statuses (any of).
    pub statuses: Vec<StatusRange>,
    /// Recorded hosts (`Host`/authority, any of).
    pub hosts: Vec<String>,
    /// Start of the time window.
    pub from: Option<TimeBound>,
    /// End of the time window.
    pub to: Option<TimeBound>,
    /// Share of sessions to replay (whole sessions, chosen by a hash of their key).
    pub sample: Option<f64>,
    /// This host's part of the tapes when several hosts replay them together.
    pub shard: Option<Shard>,
    /// At most this many exchanges.
    pub limit: Option<u64>,
    /// Services mocked in this run (`replay --mock NAME=ADDR`): their tapes answer the
    /// mocks and are not replayed, like every tape recorded in front of a dependency
    /// ([`split_dependencies`](tapedeck_captures::tape::split_dependencies)).
    pub mocked: Vec<String>,
}

impl Selection {
    /// True when nothing narrows the selection.
    pub fn is_everything(&self) -> bool {
        self.filter.is_none()
            && self.methods.is_empty()
            && self.routes.is_empty()
            && self.statuses.is_empty()
            && self.hosts.is_empty()
            && self.from.is_none()
            && self.to.is_none()
            && self.sample.is_none()
            && self.shard.is_none()
            && self.limit.is_none()
    }
}

/// Shard `index` of `count` (`--shard K/N`): when N hosts replay the same tapes, host K
/// sends the sessions whose key hashes to K — a session stays on one host and keeps its
/// order; exchanges without a session spread by their recorded connection (or alone). The N
/// shards together are the whole selection, each exchange in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This host's shard, from 0.
    pub index: u32,
    /// Shards in all.
    pub count: u32,
}

impl Shard {
    /// True when `key`'s exchanges are this shard's.
    pub fn holds(&self, key: &SessionKey) -> bool {
        // Re-mixed, so that the shards do not follow `--sample`'s cut of the same hash.
        let h = (key.stable_hash() ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h >> 32) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `K/N`: shard K (from 0) of N.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = |why: &str| format!("{s:?}: {why}; expected K/N, this host's shard K (0 to N-1) of N, e.g. 0/3");
        let (k, n) = s.trim().split_once('/').ok_or_else(|| usage("no '/'"))?;
        if n.contains('/') {
            return Err(usage("more than one '/'"));
        }
        let number = |part: &str, name: &str| {
            let part = part.trim();
            part.parse::<u32>().map_err(|e| match e.kind() {
                std::num::IntErrorKind::PosOverflow => usage(&format!("{name} is too large")),
                std::num::IntErrorKind::Empty => usage(&format!("{name} is missing")),
                _ => usage(&format!("{name} ({part:?}) is not a whole number")),
            })
        };
        let (index, count) = (number(k, "K")?, number(n, "N")?);
        if count == 0 {
            return Err(usage("N must be at least 1"));
        }
        if index >= count {
            return Err(usage("K counts from 0, so it must be below N"));
        }
        Ok(Shard { index, count })
    }
}

/// Why the tapes cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The tapes cannot be opened.
    #[error(transparent)]
    Tapes(#[from] TapeError),
    /// A `--route` pattern is not a valid regular expression.
    #[error("--route {pattern:?}: {source}")]
    Route {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// No segment of the tapes can be read; why the first one cannot.
    #[error("{0}")]
    Unreadable(String),
}

/// The recorded exchanges to replay, in start order.
pub struct Source {
    paths: Vec<PathBuf>,
    selection: Selection,
    route_regexes: Vec<Option<Regex>>,
    reader: TapeReader,
    first_ns: Option<i64>,
    /// The recorded start of the first selected exchange (whichever shard's).
    origin_ns: Option<i64>,
    /// Exchanges selected, whichever shard's, across loops.
    candidates: u64,
    /// An order-free digest of the selection, whichever shard's ([`Source::input_digest`]).
    digest: u64,
    taken: u64,
    /// First and last start of the current pass, for looping.
    pass_first: Option<i64>,
    pass_last: i64,
    pass_count: u64,
    exhausted_window: bool,
}

impl Source {
    /// Opens the tapes under `paths`.
    pub fn open(paths: &[PathBuf], selection: Selection) -> Result<Source, SourceError> {
        let (reader, _) = TapeReader::open_traffic(paths, &selection.mocked)?;
        let route_regexes = selection
            .routes
            .iter()
            .map(|r| {
                if r.contains('{') {
                    Ok(None)
                } else {
                    Regex::new(r).map(Some).map_err(|source| SourceError::Route { pattern: r.clone(), source })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Source {
            paths: paths.to_vec(),
            selection,
            route_regexes,
            reader,
            first_ns: None,
            origin_ns: None,
            candidates: 0,
            digest: 0,
            taken: 0,
            pass_first: None,
            pass_last: 0,
            pass_count: 0,
            exhausted_window: false,
        })
    }

    /// The underlying reader (its reports describe damaged or unreadable segments).
    pub fn reader(&self) -> &TapeReader {
        &self.reader
    }

    /// Starts another pass over the tapes; returns the recorded span and mean gap of the
    /// pass just finished (for the schedule), or `None` if it selected nothing.
    pub fn restart(&mut self) -> Result<Option<(i64, i64)>, SourceError> {
        let Some(first) = self.pass_first else { return Ok(None) };
        let span = self.pass_last - first;
        let gap = if self.pass_count > 1 { span / (self.pass_count as i64 - 1) } else { 0 };
        self.reader = TapeReader::open_traffic(&self.paths, &self.selection.mocked)?.0;
        self.pass_first = None;
        self.pass_count = 0;
        self.exhausted_window = false;
        Ok(Some((span, gap)))
    }

    /// A digest of the exchanges selected so far, every shard's, in any order: shards that
    /// read the same captures under the same flags to the end agree on it (`report
    /// --merge` says when they do not).
    pub fn input_digest(&self) -> u64 {
        self.digest
    }

    /// True when the limit is reached (`--limit` counts the whole selection, every shard's
    /// exchanges: a shard replays its part of the first N).
    pub fn limit_reached(&self) -> bool {
        self.selection.limit.is_some_and(|l| self.candidates >= l)
    }

    /// Where the schedule of the exchange just returned stands, the same for every shard:
    /// the recorded start of the selection's first exchange, and this one's position in the
    /// selection (from 0, across loops).
    pub fn schedule_position(&self) -> (i64, u64) {
        (self.origin_ns.unwrap_or(0), self.candidates.saturating_sub(1))
    }

    /// Exchanges of this shard returned so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    fn selected(&mut self, ex: &Exchange) -> bool {
        let s = &self.selection;
        let start = ex.wall_start_ns();
        let first = *self.first_ns.get_or_insert(start);
        let at = |b: TimeBound| match b {
            TimeBound::Offset(d) => first + d.as_nanos() as i64,
            TimeBound::At(t) => t,
        };
        if s.from.is_some_and(|b| start < at(b)) {
            return false;
        }
        if s.to.is_some_and(|b| start >= at(b)) {
            self.exhausted_window = true;
            return false;
        }
        if !s.methods.is_empty() && !s.methods.iter().any(|m| m.eq_ignore_ascii_case(&ex.request.method)) {
            return false;
        }
        if !s.hosts.is_empty() && !s.hosts.iter().any(|h| h.eq_ignore_ascii_case(&ex.request.authority)) {
            return false;
        }
        if !s.statuses.is_empty() && !ex.status().is_some_and(|st| s.statuses.iter().any(|r| (r.0..=r.1).contains(&st)))
        {
            return false;
        }
        if !s.routes.is_empty() {
            let template = route::template(&ex.request.target);
            let path = ex.request.path();
            let hit = s.routes.iter().zip(&self.route_regexes).any(|(r, re)| match re {
                Some(re) => re.is_match(path),
                None => *r == template,
            });
            if !hit {
                return false;
            }
        }
        if let Some(share) = s.sample {
            let h = crate::session::session_key(ex).stable_hash();
            if (h as f64 / u64::MAX as f64) >= share {
                return false;
            }
        }
        if s.filter.as_ref().is_some_and(|f| !f.matches(ex)) {
            return false;
        }
        true
    }
}

impl Iterator for Source {
    type Item = Exchange;

    fn next(&mut self) -> Option<Exchange> {
        loop {
            if self.limit_reached() || self.exhausted_window {
                return None;
            }
            let ex = self.reader.next()?;
            if self.selected(&ex) {
                // Counted whichever shard it is: every shard keeps the same schedule (origin,
                // position, loop span), so that together they play the recorded shape.
                let start = ex.wall_start_ns();
                self.origin_ns.get_or_insert(start);
                self.pass_first.get_or_insert(start);
                self.pass_last = self.pass_last.max(start);
                self.pass_count += 1;
                self.candidates += 1;
                // Summed: the same whatever order the tapes are read in.
                let mut h = (ex.id.0 ^ (start as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                h ^= h >> 31;
                self.digest = self.digest.wrapping_add(h);
                if self.selection.shard.is_some_and(|shard| !shard.holds(&crate::session::session_key(&ex))) {
                    continue;
                }
                self.taken += 1;
                return Some(ex);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds_and_statuses() {
        assert_eq!("90s".parse::<TimeBound>().unwrap(), TimeBound::Offset(Duration::from_secs(90)));
        assert_eq!("250ms".parse::<TimeBound>().unwrap(), TimeBound::Offset(Duration::from_millis(250)));
        assert_eq!("2026-01-01T00:00:00Z".parse::<TimeBound>().unwrap(), TimeBound::At(1_767_225_600_000_000_000));
        assert!("soon".parse::<TimeBound>().is_err());
        assert_eq!("5xx".parse::<StatusRange>().unwrap(), StatusRange(500, 599));
        assert_eq!("404".parse::<StatusRange>().unwrap(), StatusRange(404, 404));
        assert_eq!("500-504".parse::<StatusRange>().unwrap(), StatusRange(500, 504));
        assert!("ok".parse::<StatusRange>().is_err());
    }

    #[test]
    fn shards_parse_and_refuse_what_cannot_be() {
        for (bad, why) in [
            ("1/2/3", "more than one '/'"),
            ("99999999999/3", "K is too large"),
            ("0/", "N is missing"),
            ("a/3", "K (\"a\") is not a whole number"),
            ("-1/3", "K (\"-1\") is not a whole number"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!("1/3".parse::<Shard>().unwrap(), Shard { index: 1, count: 3 });
        assert_eq!(" 0 / 1 ".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in ["3/3", "0/0", "1", "a/3", "-1/3", "1/x", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("K/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_key_is_in_exactly_one_shard_and_shards_are_even() {
        for count in [1u32, 2, 3, 7] {
            let mut sizes = vec![0u32; count as usize];
            for i in 0..30_000u64 {
                let key = match i % 3 {
                    0 => SessionKey::Session(format!("user-{i}")),
                    1 => SessionKey::Connection(i),
                    _ => SessionKey::Single(i),
                };
                let owners: Vec<u32> = (0..count).filter(|&index| Shard { index, count }.holds(&key)).collect();
                assert_eq!(owners.len(), 1, "{key:?} in shards {owners:?} of {count}");
                sizes[owners[0] as usize] += 1;
            }
            let even = 30_000 / count;
            assert!(sizes.iter().all(|&n| n.abs_diff(even) < even / 10), "{count} shards: {sizes:?}");
        }
    }
}
