//! `tapedeck demo`: the whole job on embedded defaults, all on 127.0.0.1. It starts a small
//! JSON API as "production" and a copy with planted drift as "staging", runs the capture
//! proxy in front of production while simulated users browse, search and order through
//! it, checks the (scrubbed) capture for personal data, replays it against staging at 2x,
//! compares every response with production's, and prints the report — then checks that
//! the report named each planted drift and nothing else.

mod api;
mod workload;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tapedeck_captures::scrub::Scrubber;
use tapedeck_captures::tape;
use tapedeck_compare::diff::DiffKind;
use tapedeck_report::{ReplayReport, RouteReport};

use crate::cli::DemoArgs;
use crate::commands::proxy::ProxyArgs;
use crate::commands::replay::ReplayArgs;
use crate::commands::report::ReportFlags;

/// Marks a directory as the demo's own, so re-running may clear it.
const MARKER: &str = ".tapedeck-demo";

/// The demo's scrub key, so `hash` rules write joinable tokens. Public on purpose: never
/// use it for real captures.
const DEMO_KEY: &[u8] = b"tapedeck demo key - public, not a secret\n";

/// A drift planted in staging and how the report must show it.
struct Planted {
    what: &'static str,
    route: &'static str,
    found: fn(&RouteReport) -> bool,
    /// Finding keys this drift explains on its route.
    keys: &'static [&'static str],
    /// The route's p99 flag is explained by this drift.
    slower: bool,
}

fn has(r: &RouteReport, key: &str, kind: DiffKind) -> bool {
    r.diffs.as_ref().is_some_and(|d| d.findings.iter().any(|f| f.key == key && f.kind == kind))
}

const PLANTED: &[Planted] = &[
    Planted {
        what: "renamed field: `email` became `email_address`",
        route: "GET /users/{id}",
        found: |r| has(r, "$.email", DiffKind::KeyRemoved) && has(r, "$.email_address", DiffKind::KeyAdded),
        keys: &["$.email", "$.email_address"],
        slower: false,
    },
    Planted {
        what: "slower route: search takes 3× as long",
        route: "GET /search",
        found: |r| r.p99_flagged,
        keys: &[],
        slower: true,
    },
    Planted {
        what: "500 on an edge case: orders of a user who has none",
        route: "GET /users/{id}/orders",
        found: |r| {
            r.diffs
                .as_ref()
                .is_some_and(|d| d.findings.iter().any(|f| f.kind == DiffKind::Status && f.example.replayed == "500"))
        },
        keys: &["status"],
        slower: false,
    },
    Planted {
        what: "config drift: products served `Cache-Control: no-store`",
        route: "GET /products/{id}",
        found: |r| has(r, "header:cache-control", DiffKind::HeaderChanged),
        keys: &["header:cache-control"],
        slower: false,
    },
];

/// `demo --serve FLAVOR`: the demo's API alone, until SIGTERM or Ctrl-C.
fn serve(flavor: &str, listen: Option<std::net::SocketAddr>) -> Result<ExitCode> {
    let flavor = if flavor == "staging" { api::Flavor::Staging } else { api::Flavor::Production };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut stop = crate::commands::signals::Stop::install();
        let addr = listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let api = api::start_on(flavor, addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let drift = if flavor == api::Flavor::Staging { " (with the planted drift)" } else { "" };
        crate::commands::status(
            "demo",
            format_args!("serving the demo API as {flavor:?}{drift} on http://{}", api.addr),
        );
        stop.recv().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    if let Some(flavor) = &args.serve {
        return serve(flavor, args.listen);
    }
    let out = args.out.clone();
    // Refused before any server starts, and before anything is made.
    tapedeck_captures::files::check_private_dir(&out, args.allow_shared_dir)?;
    let capture = out.join("capture");
    let results = out.join("results");
    prepare(&out, &[&capture, &results])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Production, staging (with drift) and the capture proxy run on this runtime while the
    // replay below runs on its own threads.
    let (production, staging) = runtime.block_on(async {
        Ok::<_, std::io::Error>((api::start(api::Flavor::Production).await?, api::start(api::Flavor::Staging).await?))
    })?;
    println!("tapedeck demo: a JSON API (users, orders, products, search) as production, and a staging copy with planted drift");
    println!("  production  http://{}\n  staging     http://{}\n", production.addr, staging.addr);

    let key_file = out.join("demo-scrub.key");
    write_private(&key_file, DEMO_KEY)?;
    let proxy_args = ProxyArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(format!("http://{}", production.addr)),
        capture_dir: Some(capture.clone()),
        admin: Some("127.0.0.1:0".into()),
        sample_key: Some("header:x-user-id".into()),
        instance: Some("demo".into()),
        scrub_key_file: Some(key_file.clone()),
        allow_shared_dir: args.allow_shared_dir,
        ..Default::default()
    };
    let (proxy_config, _) = crate::commands::proxy::build_config(proxy_args)?;
    let seconds = Duration::from_secs(args.seconds.max(1));
    let (done, captured) = runtime.block_on(async {
        let proxy = tapedeck_proxy::start(proxy_config).await?;
        println!(
            "1/4 capture: tapedeck proxy on {} in front of production; {} users browse, search and order for {} s…",
            proxy.local_addr(),
            args.sessions,
            seconds.as_secs()
        );
        let done = workload::run(proxy.local_addr(), args.sessions, seconds).await;
        let report = proxy.shutdown().await;
        Ok::<_, anyhow::Error>((done, report.capture.map_or(0, |c| c.stats.records)))
    })?;
    println!(
        "    {} requests through the proxy ({} failed); {} exchanges captured into {}, scrubbed before they reached the disk\n",
        done.requests,
        done.failed,
        captured,
        capture.display()
    );
    if captured == 0 {
        bail!("the demo captured nothing; see the warnings above");
    }

    println!("2/4 scrub check: is anything personal left in the capture?");
    print!("    ");
    crate::commands::scrub::check(std::slice::from_ref(&capture), &Scrubber::with_defaults(None))?;
    println!();

    println!("3/4 replay against staging at 2x, comparing every response with production's\n");
    let gates = ["diff_rate<=0.5%", "errors==0", "GET /search:p99_ratio<=1.25"];
    // A route is flagged slower only when its p99 grew by half a planted slowdown: CPU
    // contention on a shared machine moves a p99 over a few dozen requests by tens of ms.
    let compare_config = out.join("compare.toml");
    std::fs::write(&compare_config, format!("p99_min_delta_ms = {}\n", api::SEARCH_MS))
        .with_context(|| format!("writing {}", compare_config.display()))?;
    let replay_args = ReplayArgs {
        output: ReportFlags {
            compare_config: Some(compare_config),
            report: Some(out.join("report.json")),
            html: Some(out.join("report.html")),
            junit: Some(out.join("junit.xml")),
            gate: gates.iter().map(|g| g.to_string()).collect(),
            top: Some(12),
            // The demo's own directory: what an earlier demo wrote is replaced.
            force: true,
        },
        paths: vec![capture.clone()],
        target: Some(format!("http://{}", staging.addr)),
        speed: Some("2x".into()),
        results: Some(results.clone()),
        // Staging's answers are scrubbed with the proxy's key, so their tokens join the capture's.
        scrub_key_file: Some(key_file.clone()),
        allow_shared_dir: args.allow_shared_dir,
        ..Default::default()
    };
    crate::commands::replay::run(replay_args)?;
    let report = ReplayReport::load(&out.join("report.json"))?;
    if !report.gates_passed() {
        println!("    (`tapedeck replay` exited with code 1 here: a CI job with these gates would stop the release)\n");
    }

    println!("4/4 did the report find what was planted in staging?");
    let (missed, unexpected) = verdict(&report);
    let d = out.display();
    println!(
        "\nOpen {d}/report.html in a browser for charts and side-by-side differences.\n\
         Try next:\n  \
         tapedeck inspect {d}/capture\n  \
         tapedeck cat {d}/capture --format http --limit 2          (scrubbed: no credentials, no e-mails)\n  \
         tapedeck report {d}/results --gate 'errors==0'            (re-render without replaying)\n  \
         tapedeck replay {d}/capture --target http://staging:8080 --speed 2x --gate 'diff_rate<=0.5%'"
    );
    drop((production, staging));
    if missed + unexpected > 0 {
        bail!("the demo's report missed {missed} planted drift(s) and reported {unexpected} unexpected difference(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints, for each planted drift, whether the report found it, and lists anything else
/// it reported (a false positive). Returns (missed, unexpected).
fn verdict(report: &ReplayReport) -> (usize, usize) {
    let mut missed = 0;
    for p in PLANTED {
        let found = report.routes.iter().find(|r| r.route == p.route).is_some_and(|r| (p.found)(r));
        missed += usize::from(!found);
        println!("  {} {:<24} {}", if found { "found " } else { "MISSED" }, p.route, p.what);
    }
    let mut unexpected = Vec::new();
    for r in &report.routes {
        let planted: Vec<&Planted> = PLANTED.iter().filter(|p| p.route == r.route).collect();
        for f in r.diffs.iter().flat_map(|d| d.findings.iter()) {
            if !planted.iter().any(|p| p.keys.contains(&f.key.as_str())) {
                unexpected.push(format!("{} {} {}", r.route, f.kind.as_str(), f.key));
            }
        }
        if r.p99_flagged && !planted.iter().any(|p| p.slower) {
            unexpected.push(format!("{} flagged slower", r.route));
        }
        if r.error_count() > 0 {
            unexpected.push(format!("{} {} requests without an answer", r.route, r.error_count()));
        }
    }
    if unexpected.is_empty() {
        println!(
            "  no false positives: nothing else was reported (request ids and timestamps were set apart as noise)"
        );
    } else {
        for u in &unexpected {
            println!("  UNEXPECTED {u}");
        }
    }
    (missed, unexpected.len())
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the demo directory, or clears what a previous demo run wrote in it. Refuses to
/// touch a directory that holds tapes but is not the demo's own.
fn prepare(root: &Path, dirs: &[&PathBuf]) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let marker = root.join(MARKER);
    for dir in dirs {
        if dir.exists() {
            let tapes = tape::discover(&[dir]).unwrap_or_default();
            if !tapes.is_empty() && !marker.exists() {
                bail!("{} already holds tapes that the demo did not write; choose another --out", dir.display());
            }
            for t in tapes {
                fs::remove_file(&t).with_context(|| format!("cannot remove old demo tape {}", t.display()))?;
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(&marker, "This directory was written by `tapedeck demo` and is cleared when it runs again.\n")
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(())
}
