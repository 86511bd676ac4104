//! `tapedeck scrub`: re-scrub tapes into a new directory (after a policy change, or for
//! tapes imported from HAR or GoReplay), check tapes for anything that still looks
//! personal (`--check`, exit code 1 when found), or print the default policy. Also the
//! one place that loads a policy and key, for `tapedeck proxy` too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use tapedeck_captures::scrub::policy::{Policy, DEFAULT_POLICY};
use tapedeck_captures::scrub::Scrubber;
use tapedeck_captures::tape::{TapeKind, TapeWriter, WriterConfig};

use crate::commands::{open_tapes, warn_damage};
use crate::human;

/// The environment variable holding the scrub key (when no key file is given).
pub const KEY_ENV: &str = "TAPEDECK_SCRUB_KEY";

/// `tapedeck scrub`
#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Tapes or directories to scrub (or to check with --check).
    #[arg(value_name = "TAPE_OR_DIR", required_unless_present = "print_default_policy")]
    pub paths: Vec<PathBuf>,
    /// Directory for the scrubbed tapes.
    #[arg(short, long, value_name = "DIR", required_unless_present_any = ["check", "print_default_policy"])]
    pub out: Option<PathBuf>,
    /// Policy file (TOML) extending the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// File holding the key for `hash` (else $TAPEDECK_SCRUB_KEY; without a key, hash
    /// redacts). Also `--scrub-key-file`, as `proxy` and `replay` spell it.
    #[arg(long, value_name = "FILE", alias = "scrub-key-file")]
    pub key_file: Option<PathBuf>,
    /// Protobuf descriptor set (`protoc --include_imports --descriptor_set_out=FILE`):
    /// gRPC messages are scrubbed and checked by their field names.
    #[arg(long, value_name = "FILE")]
    pub proto_descriptor: Option<PathBuf>,
    /// Report anything that still looks personal instead of writing; exit code 1 if found.
    #[arg(long, conflicts_with = "out")]
    pub check: bool,
    /// Print the built-in policy, with comments, and exit.
    #[arg(long)]
    pub print_default_policy: bool,
    /// Accept an --out directory that is a symlink, writable by group or others, or
    /// owned by another user.
    #[arg(long)]
    pub allow_shared_dir: bool,
    /// Refuse a --key-file that group or others can read, or another user owns (without
    /// it, a warning).
    #[arg(long)]
    pub strict_perms: bool,
}

/// Where a scrubber's settings come from.
#[derive(Clone, Default)]
pub struct ScrubFiles<'a> {
    /// The policy (TOML), over the defaults.
    pub policy: Option<&'a Path>,
    /// The key for `hash` (else the environment).
    pub key_file: Option<&'a Path>,
    /// A protobuf descriptor set for gRPC messages ([`load_proto`]).
    pub proto: Option<tapedeck_captures::proto::ProtoSchema>,
    /// Refuse a key file others can read (else a warning).
    pub strict_perms: bool,
}

/// Loads the policy file (over the defaults), the key (file, else environment) and the
/// descriptor set. A key file others can read is warned about, or refused with
/// `strict_perms`.
pub fn load_scrubber(files: ScrubFiles<'_>) -> Result<Scrubber> {
    let ScrubFiles { policy, key_file, proto, strict_perms } = files;
    let policy = match policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read scrub policy {}", path.display()))?;
            Policy::parse(&text, &path.display().to_string())?.over_defaults()
        }
        None => Policy::defaults(),
    };
    let key = match key_file {
        Some(path) => {
            super::check_secret_file(path, "scrub key", strict_perms)?;
            Some(std::fs::read(path).with_context(|| format!("cannot read scrub key {}", path.display()))?)
        }
        None => std::env::var_os(KEY_ENV).map(|v| v.into_encoded_bytes()),
    };
    let key = key.map(|k| k.trim_ascii().to_vec());
    if let Some(k) = &key {
        check_key_strength(k)?;
    }
    let scrubber = Scrubber::new(&policy, key.as_deref());
    Ok(match proto {
        Some(schema) => scrubber.with_proto(schema),
        None => scrubber,
    })
}

/// Loads a protobuf descriptor set (`--proto-descriptor`).
pub fn load_proto(path: &Path) -> Result<tapedeck_captures::proto::ProtoSchema> {
    Ok(tapedeck_captures::proto::ProtoSchema::load(path)?)
}

/// How to make a good key, for messages.
const KEY_ADVICE: &str = "use 32 random bytes, e.g. `head -c 32 /dev/urandom | base64 > scrub.key`";

/// Refuses keys that could be guessed: tokens are HMACs under the key, so anyone holding a
/// capture and one value they know (their own e-mail) can test guesses offline.
fn check_key_strength(key: &[u8]) -> Result<()> {
    if key.len() < 16 {
        bail!("the scrub key is {} bytes; {KEY_ADVICE}", key.len());
    }
    let mut seen = [false; 256];
    key.iter().for_each(|b| seen[usize::from(*b)] = true);
    let distinct = seen.iter().filter(|s| **s).count();
    // Steps of 0 or ±1 between neighbours (`aaaa`, `abcd`, `0123`).
    let steps = key.windows(2).filter(|w| w[0].abs_diff(w[1]) <= 1).count();
    // A part said twice or more (`Winter2026!xyz` twice, `xxSummer2026!` with repeats):
    // the longest part found again is a fifth of the key or more.
    let probe = &key[..key.len().min(256)];
    let mut longest = 0;
    for i in 0..probe.len() {
        for j in i + 1..probe.len() {
            let same = probe[j..].iter().zip(&probe[i..]).take_while(|(a, b)| a == b).count();
            longest = longest.max(same);
        }
    }
    let repeated = longest >= 6 && longest * 5 >= probe.len();
    let pattern = if distinct < 10 {
        Some(format!("uses only {distinct} different bytes"))
    } else if steps * 2 >= key.len() {
        Some("is mostly runs of neighbouring characters (aaaa, 0123)".to_string())
    } else if repeated {
        Some("repeats a short part".to_string())
    } else {
        None
    };
    if let Some(why) = pattern {
        bail!("the scrub key {why}: it looks like a pattern, not a random key; {KEY_ADVICE}");
    }
    if key.len() < 32 {
        tracing::warn!("the scrub key is {} bytes; {KEY_ADVICE}", key.len());
    }
    Ok(())
}

/// The notice printed when `hash` rules will redact for lack of a key.
pub const NO_KEY_NOTICE: &str = "no scrub key (--scrub-key-file or $TAPEDECK_SCRUB_KEY): `hash` rules redact \
     instead of writing joinable tokens";

pub fn run(args: ScrubArgs) -> Result<ExitCode> {
    if args.print_default_policy {
        print!("{DEFAULT_POLICY}");
        return Ok(ExitCode::SUCCESS);
    }
    let scrubber = load_scrubber(ScrubFiles {
        policy: args.policy.as_deref(),
        key_file: args.key_file.as_deref(),
        proto: args.proto_descriptor.as_deref().map(load_proto).transpose()?,
        strict_perms: args.strict_perms,
    })?;
    if args.check {
        return check(&args.paths, &scrubber);
    }
    if !scrubber.has_key() {
        say!("note: {NO_KEY_NOTICE}");
    }
    let Some(out) = args.out.as_ref() else { bail!("--out DIR is required (or --check)") };
    // Scrubbed tapes beside the unscrubbed ones would be read together, and the directory
    // would look scrubbed while it is not.
    {
        let real_out = tapedeck_captures::files::resolved(out);
        for input in &args.paths {
            let dir = if input.is_dir() { Some(input.as_path()) } else { input.parent() };
            // Into it, or into a directory inside it (which the next scrub of it would read).
            if dir
                .and_then(|d| std::fs::canonicalize(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok())
                .is_some_and(|d| real_out.starts_with(d))
            {
                bail!(
                    "--out {} holds the tapes being scrubbed: write to a new directory, then remove the unscrubbed ones",
                    out.display()
                );
            }
        }
    }
    let mut reader = open_tapes(&args.paths)?;
    let mut config = WriterConfig::new(out);
    config.prefix = "scrubbed".into();
    config.kind = TapeKind::Scrubbed;
    config.scrub_fingerprint = Some(scrubber.fingerprint());
    config.allow_shared_dir = args.allow_shared_dir;
    let mut writer = TapeWriter::new(config)?;
    let mut count = 0u64;
    let mut hits: std::collections::BTreeMap<String, u64> = Default::default();
    for mut ex in reader.by_ref() {
        let before = ex.scrub.clone();
        scrubber.scrub(&mut ex);
        for h in &ex.scrub {
            let earlier = before.iter().find(|b| b.rule == h.rule).map_or(0, |b| b.count);
            if h.count > earlier {
                *hits.entry(h.rule.clone()).or_default() += u64::from(h.count - earlier);
            }
        }
        writer.append(&ex)?;
        count += 1;
    }
    let segments = writer.finish()?;
    warn_damage(&reader);
    println!("scrubbed {} exchanges into {} ({} segment(s))", human::count(count), out.display(), segments.len());
    let mut by_count: Vec<_> = hits.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (rule, n) in by_count.iter().take(20) {
        println!("  {:>10}  {rule}", human::count(*n));
    }
    Ok(ExitCode::SUCCESS)
}

/// Audits tapes ([`Scrubber::audit`]): every exchange that still holds anything personal
/// is reported with the category and location of each finding, never the value.
pub(crate) fn check(paths: &[PathBuf], scrubber: &Scrubber) -> Result<ExitCode> {
    // The verdict is the exit code: a closed output pipe (`| head`) stops the listing,
    // never the audit, so `set -o pipefail` still sees 1 when something was found.
    let mut out = std::io::stdout().lock();
    macro_rules! say {
        ($out:expr, $($arg:tt)*) => {{
            let _ = writeln!($out, $($arg)*);
        }};
    }
    let mut reader = open_tapes(paths)?;
    let mut scanned = 0u64;
    let mut flagged = 0u64;
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    for ex in reader.by_ref() {
        scanned += 1;
        let found = scrubber.audit(&ex);
        if found.is_empty() {
            continue;
        }
        flagged += 1;
        if flagged <= 50 {
            let mut by_location: Vec<(String, Vec<&str>)> = Vec::new();
            for f in &found {
                match by_location.iter_mut().find(|(l, _)| *l == f.location) {
                    Some((_, cats)) => cats.push(&f.category),
                    None => by_location.push((f.location.clone(), vec![&f.category])),
                }
            }
            let parts: Vec<String> = by_location.iter().map(|(l, c)| format!("{l}: {}", c.join(", "))).collect();
            say!(
                out,
                "{} {} {}  {}",
                ex.id,
                ex.request.method,
                tapedeck_captures::route::template(&ex.request.target),
                parts.join("; ")
            );
        }
        let categories: std::collections::BTreeSet<&str> = found.iter().map(|f| f.category.as_str()).collect();
        for c in categories {
            *totals.entry(c.to_string()).or_default() += 1;
        }
    }
    warn_damage(&reader);
    if flagged == 0 {
        say!(
            out,
            "clean: none of {} exchanges holds anything personal the audit recognises (all detectors over \
             every decoding, key rules over every embedded document)",
            human::count(scanned)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if flagged > 50 {
        say!(out, "… and {} more", human::count(flagged - 50));
    }
    let summary: Vec<String> = totals.iter().map(|(r, n)| format!("{r} in {}", human::count(*n))).collect();
    say!(out, "PII found: {} of {} exchanges ({})", human::count(flagged), human::count(scanned), summary.join(", "));
    Ok(ExitCode::from(1))
}
