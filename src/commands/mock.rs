//! `tapedeck mock`: a dependency served back from tapes recorded in front of it, with the
//! latency and failures it had in production (or slower, or failing more, on purpose).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tapedeck_mock::{FaultRule, Index, Latency, Mock, MockConfig};

/// Flags of `tapedeck mock`.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Tapes or directories recorded in front of the dependency (`tapedeck proxy
    /// --upstream DEPENDENCY`).
    #[arg(value_name = "TAPE_OR_DIR", required = true)]
    pub paths: Vec<PathBuf>,
    /// Where to answer, e.g. `127.0.0.1:7001` (point the application's base URL for the
    /// dependency there).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Only the captures of this service (tapes written with `proxy --service NAME`).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// When answers go out: `recorded` (each exchange's own time), `0`, a factor (`3x`), an
    /// added delay (`+200ms`) or the route's recorded percentile (`p99`) [default: recorded].
    #[arg(long, value_name = "HOW", default_value = "recorded")]
    pub latency: String,
    /// Fail a share of answers on purpose: `'POST /charge: 2% 503, 1% reset, 0.5% timeout'`
    /// (without `METHOD /path:`, every route). Repeatable; the first rule that covers a
    /// request decides.
    #[arg(long, value_name = "SPEC")]
    pub fault: Vec<String>,
    /// The status of the answer to a request nothing was recorded for (its body says so).
    #[arg(long, value_name = "STATUS", default_value_t = 404)]
    pub unmatched_status: u16,
    /// Seed for drawing faults: the same seed draws the same faults for the same requests
    /// in the same order.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Serve `/metrics` (Prometheus) on this address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
}

/// The recorded answers under `paths` (of `service` only, when given), indexed.
fn load(paths: &[PathBuf], service: Option<&str>) -> Result<Index> {
    let mut reader = super::open_tapes(paths)?;
    let mut services = std::collections::BTreeSet::new();
    // (exchange, recorded in front of a service rather than a dependency)
    let mut exchanges = Vec::new();
    let mut replayed = 0u64;
    while let Some((segment, exchange)) = reader.next_with_segment() {
        let label = |key: &str| {
            reader.reports()[segment]
                .header
                .as_ref()
                .and_then(|h| h.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        };
        // Answers a replay got from staging are not the dependency's.
        let header = reader.reports()[segment].header.as_ref();
        if header.is_some_and(|h| h.kind == tapedeck_captures::tape::TapeKind::Replay) {
            replayed += 1;
            continue;
        }
        let labelled = label("service");
        if let Some(s) = &labelled {
            services.insert(s.clone());
        }
        if service.is_none_or(|want| labelled.as_deref() == Some(want)) {
            exchanges.push((exchange, label("role").as_deref() == Some("ingress")));
        }
    }
    super::warn_damage(&reader);
    if replayed > 0 {
        say!("note: {replayed} exchanges of replay results (`tapedeck replay --results`) left out: staging's answers, not the dependency's");
    }
    // A directory holding a service's own captures beside its dependencies' (`proxy
    // --role dependency`): the dependencies' answers only.
    let dependencies = exchanges.iter().any(|(_, ingress)| !ingress);
    let ingress = exchanges.iter().filter(|(_, ingress)| *ingress).count();
    if dependencies && ingress > 0 {
        say!("note: {ingress} exchanges recorded in front of a service (proxy --role ingress) left out: a mock answers for dependencies");
    }
    let index = Index::build(exchanges.into_iter().filter(|(_, ingress)| !dependencies || !ingress).map(|(e, _)| e));
    if index.is_empty() {
        let which = match service {
            Some(s) if services.is_empty() => {
                format!(" of service {s:?} (no tape there names a service: leave --service out)")
            }
            Some(s) => format!(
                " of service {s:?} (the tapes hold {})",
                services.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
            ),
            None => String::new(),
        };
        bail!(
            "no recorded answers{which} in {}: record the dependency with `tapedeck proxy --upstream DEPENDENCY \
             --capture-dir DIR` in front of it{}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            if index.skipped > 0 {
                format!(" ({} exchanges without an answer were skipped)", index.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(index)
}

fn config(args: &MockArgs) -> Result<MockConfig> {
    let latency: Latency = args.latency.parse().map_err(|e| anyhow!("--latency {e}"))?;
    let faults = args
        .fault
        .iter()
        .map(|f| f.parse::<FaultRule>().map_err(|e| anyhow!("--fault {e}")))
        .collect::<Result<Vec<_>>>()?;
    if !(200..=599).contains(&args.unmatched_status) {
        bail!("--unmatched-status {}: a final HTTP status, 200 to 599", args.unmatched_status);
    }
    Ok(MockConfig { latency, faults, unmatched_status: args.unmatched_status, seed: args.seed })
}

pub fn run(args: MockArgs) -> Result<ExitCode> {
    // Flags first: a usage error never waits for the tapes to be read.
    let config = config(&args)?;
    let listen = super::proxy::socket_addr("listen", &args.listen)?;
    let admin = args.admin.as_deref().map(|a| super::proxy::socket_addr("admin", a)).transpose()?;
    let index = load(&args.paths, args.service.as_deref())?;
    let (answers, routes, skipped) = (index.len(), index.routes(), index.skipped);
    if index.cut > 0 {
        say!(
            "note: {} recorded answers have bodies cut at the proxy's --max-body or scrubbed away; they are served as \
             kept (record with a larger --max-body, or a scrub policy that keeps them, for whole bodies)",
            index.cut
        );
    }
    let mock = Mock::new(index, config);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut stop = super::signals::Stop::install();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen {listen}: cannot listen there"))?;
        let addr = listener.local_addr().unwrap_or(listen);
        if let Some(admin) = admin {
            let admin = tokio::net::TcpListener::bind(admin)
                .await
                .with_context(|| format!("--admin {admin}: cannot listen there"))?;
            tokio::spawn(serve_metrics(admin, mock.clone()));
        }
        let skipped = if skipped > 0 { format!(" ({skipped} without an answer skipped)") } else { String::new() };
        super::status(
            "mock",
            format_args!(
                "answering on http://{addr} from {answers} recorded answers on {routes} routes{skipped}; latency {}",
                args.latency
            ),
        );
        mock.clone().serve(listener, async move { stop.recv().await }).await;
        anyhow::Ok(())
    })?;
    print!("{}", summary(&mock));
    Ok(ExitCode::SUCCESS)
}

/// What was served, by route.
fn summary(mock: &Mock) -> String {
    use std::fmt::Write as _;
    let stats = mock.stats();
    let mut out = String::new();
    let total = |f: fn(&tapedeck_mock::RouteStats) -> u64| stats.values().map(f).sum::<u64>();
    let _ = writeln!(
        out,
        "tapedeck mock: {} requests: {} recorded exactly, {} like a recorded one, {} not recorded",
        total(|s| s.exact + s.similar + s.unmatched),
        total(|s| s.exact),
        total(|s| s.similar),
        total(|s| s.unmatched)
    );
    if stats.is_empty() {
        return out;
    }
    let _ = writeln!(out, "  {:<40} {:>8} {:>8} {:>10}  failures", "route", "exact", "similar", "unmatched");
    for (route, s) in &stats {
        let mut failures: Vec<String> = s.injected.iter().map(|(k, n)| format!("{n} × {k} injected")).collect();
        if s.recorded_failures > 0 {
            failures.push(format!("{} as recorded", s.recorded_failures));
        }
        let _ =
            writeln!(out, "  {route:<40} {:>8} {:>8} {:>10}  {}", s.exact, s.similar, s.unmatched, failures.join(", "));
    }
    out
}

/// `/metrics` on the admin listener.
async fn serve_metrics(listener: tokio::net::TcpListener, mock: std::sync::Arc<Mock>) {
    use http_body_util::Full;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let mock = mock.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mock = mock.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (200, mock.metrics()),
                        _ => (404, "only /metrics here\n".to_string()),
                    };
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(bytes::Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
