//! One module per subcommand, plus what they share: opening tapes with warnings for the
//! damaged ones, and selecting exchanges with `--filter`/`--limit`.

/// Config files: what the flags left unset takes the file's value — an option its value, a
/// repeatable flag its list, a switch is on if either sets it. The file's settings are
/// destructured into locals of the fields' names beforehand, without `..`, so that a field
/// added to the flags and forgotten here does not compile (it would be read from the file
/// and silently ignored).
macro_rules! merge_from_file {
    ($flags:expr; options: $($o:ident),*; lists: $($l:ident),*; switches: $($s:ident),* $(,)?) => {
        $( if $flags.$o.is_none() { $flags.$o = $o; } )*
        $( if $flags.$l.is_empty() { $flags.$l = $l; } )*
        $( $flags.$s |= $s; )*
    };
}

pub mod archive;
pub mod cat;
pub mod demo;
pub mod import;
pub mod inspect;
pub mod mock;
pub mod nats;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod scrub;
pub mod shadow;
mod signals;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tapedeck_captures::filter::Filter;
use tapedeck_captures::tape::TapeReader;
use tapedeck_captures::Exchange;

use crate::cli::Selection;
use crate::human;

/// Set when logs are JSON (`--log-format json`): then every line on stderr is a JSON
/// event, the proxy's own status lines included.
pub static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A status line of a long-running command (`tapedeck proxy: listening on …`): plain on
/// stderr, or an INFO event when logs are JSON, so a log shipper never meets a line it
/// cannot parse.
pub fn status(command: &str, line: std::fmt::Arguments<'_>) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "tapedeck", command, "{line}");
    } else {
        say!("tapedeck {command}: {line}");
    }
}

/// Opens `paths` for time-ordered reading. Segments that cannot be opened are warned about;
/// if none can, that is an error.
///
/// A directory holding both recordings and replay results is read for its recordings,
/// with a note ([`tapedeck_captures::tape::discover_recordings`]).
/// A TOML file that does not parse: its name, the line, and the parser's message, never
/// the file's text (a key file given by mistake as `--config` must not be printed).
pub fn toml_error(what: &str, path: &std::path::Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let line = e
        .span()
        .map_or(String::new(), |s| format!(", line {}", text[..s.start.min(text.len())].matches('\n').count() + 1));
    // Settings read `key = "text"`, `key = 5`, `key = [...]`, `key = true` or `[table]`: a
    // file with no such line (a key or certificate, `TOKEN=abc`) is probably the wrong one.
    let settings_line = |line: &str| {
        let line = line.trim_start();
        line.starts_with('[')
            || line.split_once('=').is_some_and(|(key, value)| {
                let key = key.trim();
                !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                    && value.trim_start().starts_with(|c: char| "\"'[{+-tf".contains(c) || c.is_ascii_digit())
            })
    };
    let hint = if text.lines().any(settings_line) {
        ""
    } else {
        " (this does not look like a TOML settings file: is it the right one?)"
    };
    // One line: the parser's message may span several.
    let message: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    anyhow::anyhow!("{what} {}{line}: {}{hint}", path.display(), without_quoted(&message.join("; ")))
}

/// A time setting given in TOML as a string (`start-at = "2026-12-03T10:00:00Z"`) or as a
/// TOML date-time (`start-at = 2026-12-03T10:00:00Z`, unquoted): both are read as its text.
pub fn string_or_datetime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Time {
        Text(String),
        DateTime(toml::value::Datetime),
    }
    Ok(Some(match serde::Deserialize::deserialize(d)? {
        Time::Text(s) => s,
        Time::DateTime(t) => t.to_string(),
    }))
}

/// Refuses a config file key that is not one of `A`'s flags (`--config` aside): the keys
/// are the flag names, so a typo never passes silently. Names its line.
pub fn refuse_unknown_keys<A: clap::Args>(what: &str, path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    let keys: BTreeMap<toml::Spanned<String>, serde::de::IgnoredAny> =
        toml::from_str(text).map_err(|e| toml_error(what, path, text, &e))?;
    let command = A::augment_args(clap::Command::new("config"));
    let known: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_id() != "config")
        .map(|a| a.get_long().map_or_else(|| a.get_id().as_str().replace('_', "-"), str::to_string))
        .collect();
    // In the file's order: the first unknown key is the one reported.
    let mut keys: Vec<_> = keys.into_keys().collect();
    keys.sort_by_key(|k| k.span().start);
    for key in &keys {
        if !known.iter().any(|k| k == key.get_ref()) {
            let line = text[..key.span().start.min(text.len())].matches('\n').count() + 1;
            // Compared as a flag would be spelled (`MAX_BODY`, `max_body` are `max-body`).
            let spelled = key.get_ref().to_ascii_lowercase().replace('_', "-");
            let distance = |k: &&String| edit_distance(k, &spelled);
            let near = known.iter().filter(|k| distance(k) <= 2).min_by_key(distance);
            let hint = near.map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
            anyhow::bail!(
                "{what} {}, line {line}: {}{hint}; the keys are the flag names without their leading -- (see --help)",
                path.display(),
                without_quoted(&format!("unknown key `{}`", key.get_ref()))
            );
        }
    }
    Ok(())
}

/// Levenshtein distance, for suggesting a key (short strings only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// `message` with the values a parser quotes shown as `…`: double-quoted strings
/// (`invalid type: string "Bearer …"`), and in backticks anything but a short lower-case
/// name (an unknown key `Qm9z…` that is a key file's text, a long integer). A value in a
/// settings file may be a credential; the names of its keys are not.
fn without_quoted(message: &str) -> String {
    let name_like = |t: &str| {
        t.len() <= 32
            && t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
            && t.chars().filter(char::is_ascii_digit).count() < 6
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        out.push_str(&rest[..i]);
        let quote = &rest[i..i + 1];
        let after = &rest[i + 1..];
        // The closing quote: the next one not escaped with a backslash.
        let close = after.char_indices().scan(false, |escaped, (at, c)| {
            let this = (at, c, *escaped);
            *escaped = c == '\\' && !*escaped;
            Some(this)
        });
        let close = close.filter(|(_, c, escaped)| c.to_string() == quote && !escaped).map(|(at, _, _)| at).next();
        match close {
            Some(end) => {
                let inner = &after[..end];
                let shown =
                    if quote == "`" && (name_like(inner) || inner.chars().count() <= 1) { inner } else { "…" };
                out.push_str(quote);
                out.push_str(shown);
                out.push_str(quote);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(quote);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A secret (key) file that group or others can read: a warning, or an error when `strict`.
pub fn check_secret_file(path: &std::path::Path, what: &str, strict: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) }; // reading it will say why
    let mode = meta.mode() & 0o777;
    let me = tapedeck_captures::files::current_uid();
    let problem = if meta.uid() != me && meta.uid() != 0 {
        format!(
            "{what} {} belongs to user id {}, who can read or replace it; keep it in a file of your own",
            path.display(),
            meta.uid()
        )
    } else if mode & 0o077 != 0 {
        format!(
            "{what} {} can be read by {} (mode {mode:o}); `chmod 600 {}`",
            path.display(),
            if mode & 0o007 != 0 { "everyone" } else { "its group" },
            path.display()
        )
    } else {
        return Ok(());
    };
    if strict {
        bail!("{problem} (refused: --strict-perms)");
    }
    tracing::warn!("{problem}");
    Ok(())
}

pub fn open_tapes(paths: &[PathBuf]) -> Result<TapeReader> {
    let reader = TapeReader::open(paths)?;
    for skipped in reader.skipped_results() {
        say!("note: {skipped}");
    }
    let failed: Vec<_> = reader.reports().iter().filter_map(|r| r.error.as_deref()).collect();
    if reader.readable_segments() == 0 {
        match failed.as_slice() {
            [one] => bail!("{one}"),
            many => bail!("none of the {} files is a readable tape; first: {}", many.len(), many[0]),
        }
    }
    for e in failed {
        say!("warning: {e}; skipping it");
    }
    Ok(reader)
}

/// Warns about damage found while reading (call after the stream is exhausted).
pub fn warn_damage(reader: &TapeReader) {
    for r in reader.reports() {
        if r.header.is_none() {
            continue;
        }
        if let Some(e) = &r.error {
            say!("warning: {e}");
        }
        let s = &r.stats;
        if !s.is_clean() {
            let tail = if s.torn_tail { " (unfinished: the writer did not close it)" } else { "" };
            say!(
                "warning: {}: skipped {} of damaged data in {} place(s){tail}; every intact record was read",
                r.path.display(),
                human::bytes(s.bytes_skipped),
                s.corrupt_regions.max(1)
            );
        }
    }
}

/// `--filter` and `--limit` applied to a stream.
pub struct Selector {
    filter: Option<Filter>,
    limit: Option<u64>,
    taken: u64,
}

impl Selector {
    pub fn new(selection: &Selection) -> Result<Self> {
        let filter = selection.filter.as_deref().map(Filter::parse).transpose().context("invalid --filter")?;
        Ok(Selector { filter, limit: selection.limit, taken: 0 })
    }

    /// True when the limit is reached and reading can stop.
    pub fn done(&self) -> bool {
        self.limit.is_some_and(|l| self.taken >= l)
    }

    /// True when `ex` is selected (and counts it against the limit).
    pub fn take(&mut self, ex: &Exchange) -> bool {
        if self.done() || self.filter.as_ref().is_some_and(|f| !f.matches(ex)) {
            return false;
        }
        self.taken += 1;
        true
    }
}
