//! `tapedeck mock`: a dependency served back from tapes recorded in front of it, with the
//! latency and failures it had in production (or slower, or failing more, on purpose).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tapedeck_mock::{FaultRule, Index, Latency, Mock, MockConfig, Passthrough};

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
    /// Send requests nothing was recorded for on to this service instead (a sandbox, a
    /// staging copy: `http(s)://host[:port][/prefix]`) and relay its answer, marked
    /// `x-tapedeck-mock: passthrough`. Never the recorded dependency itself, unless
    /// --allow-production-passthrough.
    #[arg(long, value_name = "URL")]
    pub passthrough: Option<String>,
    /// CA certificates (PEM) to trust for an https --passthrough.
    #[arg(long, value_name = "PEM", requires = "passthrough")]
    pub passthrough_ca: Option<PathBuf>,
    /// Let --passthrough name the service the tapes were recorded from.
    #[arg(long, requires = "passthrough")]
    pub allow_production_passthrough: bool,
}

/// The recorded answers under `paths` (of `service` only, when given), indexed.
fn load(paths: &[PathBuf], service: Option<&str>) -> Result<Index> {
    let reader = super::open_tapes(paths)?;
    let at = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    Ok(load_from(reader, &at, service, None)?.0)
}

/// The recorded answers `reader` holds (of `service` only, when given; recorded in
/// `window`, ns since the epoch, when given and it holds any), indexed, and whether the
/// window was applied (false: no window, or none of the answers is in it). `at` names the
/// tapes in messages.
pub(super) fn load_from(
    mut reader: tapedeck_captures::tape::TapeReader,
    at: &str,
    service: Option<&str>,
    window: Option<(i64, i64)>,
) -> Result<(Index, bool)> {
    let mut services = std::collections::BTreeSet::new();
    // (exchange, recorded in front of a service rather than a dependency)
    let mut exchanges = Vec::new();
    let mut replayed = 0u64;
    while let Some((segment, exchange)) = reader.next_with_segment() {
        let Some(header) = reader.reports()[segment].header.as_ref() else { continue };
        // Answers a replay got from staging are not the dependency's.
        if header.kind == tapedeck_captures::tape::TapeKind::Replay {
            replayed += 1;
            continue;
        }
        let labelled = header.label("service");
        if let Some(s) = labelled {
            services.insert(s.to_string());
        }
        if service.is_none_or(|want| labelled == Some(want)) {
            exchanges.push((exchange, header.label("role") == Some("ingress")));
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
        exchanges.retain(|(_, ingress)| !ingress);
    }
    // The replay's window, when it holds any of the service's answers (else all of them,
    // said: a mock that can answer nothing helps no one).
    let mut windowed = false;
    if let Some((from, to)) = window {
        let inside = |e: &tapedeck_captures::Exchange| (from..to).contains(&e.wall_start_ns());
        let within = exchanges.iter().filter(|(e, _)| inside(e)).count();
        if within > 0 {
            windowed = true;
            exchanges.retain(|(e, _)| inside(e));
        } else if !exchanges.is_empty() {
            say!(
                "note: none of the {} recorded answers{} is from the replayed window: the mock serves all of them",
                exchanges.len(),
                service.map(|s| format!(" of {s}")).unwrap_or_default()
            );
        }
    }
    let index = Index::build(exchanges.into_iter().map(|(e, _)| e));
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
            "no recorded answers{which} in {at}: record the dependency with `tapedeck proxy --upstream DEPENDENCY \
             --capture-dir DIR --role dependency --service NAME` in front of it{}",
            if index.skipped > 0 {
                format!(" ({} exchanges without an answer were skipped)", index.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok((index, windowed))
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
    let passthrough = args
        .passthrough
        .as_deref()
        .map(|url| Passthrough::new(url, args.passthrough_ca.as_deref()).map_err(|e| anyhow!("--passthrough {e}")))
        .transpose()?;
    Ok(MockConfig {
        latency,
        faults,
        unmatched_status: args.unmatched_status,
        seed: args.seed,
        passthrough,
        ..MockConfig::default()
    })
}

pub fn run(args: MockArgs) -> Result<ExitCode> {
    // Flags first: a usage error never waits for the tapes to be read.
    let config = config(&args)?;
    let listen = super::proxy::socket_addr("listen", &args.listen)?;
    let admin = args.admin.as_deref().map(|a| super::proxy::socket_addr("admin", a)).transpose()?;
    if let Some(p) = &config.passthrough {
        let (segments, _) = tapedeck_captures::tape::discover_recordings(&args.paths)?;
        check_passthrough(p, &segments, args.allow_production_passthrough)?;
    }
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

/// Refuses a passthrough to the service `segments` were recorded in front of (their
/// `upstream` label): a staging run's unmatched calls would reach the real dependency
/// (real charges, real mail), unless `allowed`.
pub(super) fn check_passthrough(p: &Passthrough, segments: &[PathBuf], allowed: bool) -> Result<()> {
    if allowed {
        return Ok(());
    }
    for path in segments {
        let Ok(reader) = tapedeck_captures::tape::SegmentReader::open(path) else { continue };
        let Some(upstream) = reader.header().label("upstream") else { continue };
        let Ok(uri) = upstream.parse::<http::Uri>() else { continue };
        let Some(a) = uri.authority() else { continue };
        let port = a.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        let host = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
        let theirs = p.authority().parse::<http::uri::Authority>().map(|b| host(b.host())).unwrap_or_default();
        // Local names and address literals spelled differently (`localhost`, `127.1`,
        // `[::1]`) are resolved; a production name is not looked up from here.
        let local = |h: &str| {
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            bare.parse::<std::net::IpAddr>().is_ok() || bare == "localhost" || bare.ends_with(".localhost")
        };
        let same_address = || {
            use std::net::ToSocketAddrs;
            let addrs = |h: &str| {
                (h.trim_start_matches('[').trim_end_matches(']'), port)
                    .to_socket_addrs()
                    .map(|a| a.map(|a| a.ip()).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let mine = addrs(&host(a.host()));
            addrs(&theirs).iter().any(|ip| mine.contains(ip))
        };
        if port == p.port()
            && (host(a.host()) == theirs || (local(&host(a.host())) && local(&theirs) && same_address()))
        {
            bail!(
                "--passthrough {}: the tapes were recorded in front of {upstream}: unmatched calls would reach the real \
                 dependency; point it at a sandbox or a staging copy (or --allow-production-passthrough)",
                p.url()
            );
        }
    }
    Ok(())
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
    if mock.refused() > 0 {
        let _ = writeln!(
            out,
            "  {} more refused unread: a body over 16 MiB, broken off or slower than 60 s",
            mock.refused()
        );
    }
    if stats.is_empty() {
        return out;
    }
    let _ = writeln!(out, "  {:<40} {:>8} {:>8} {:>10}  failures", "route", "exact", "similar", "unmatched");
    for (route, s) in &stats {
        let mut failures: Vec<String> = s.injected.iter().map(|(k, n)| format!("{n} × {k} injected")).collect();
        if s.recorded_failures > 0 {
            failures.push(format!("{} as recorded", s.recorded_failures));
        }
        if s.abandoned > 0 {
            failures.push(format!("{} given up by the caller before the answer", s.abandoned));
        }
        if s.passed_through > 0 {
            failures.push(format!("{} passed through", s.passed_through));
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

/// `replay --mock NAME=ADDR`: a dependency's name and where its mock answers.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct MockSpec {
    pub service: String,
    pub addr: std::net::SocketAddr,
}

impl std::str::FromStr for MockSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<MockSpec> {
        let usage = |why: &str| {
            anyhow!(
                "--mock {s:?}: {why}; expected NAME=HOST:PORT, NAME the service the dependency was recorded as \
                 (`proxy --role dependency --service NAME`), e.g. --mock payments=127.0.0.1:7001"
            )
        };
        // The last '=': a service name may hold one.
        let (name, addr) = s.rsplit_once('=').ok_or_else(|| usage("no '='"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(usage("no service name"));
        }
        let addr = addr.trim();
        let full = if addr.starts_with(':') { format!("127.0.0.1{addr}") } else { addr.to_string() };
        // An address, or a name this host resolves (`localhost:7001`): its first address.
        let addr = match full.parse() {
            Ok(a) => a,
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&full)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| usage(&format!("{addr:?} is not HOST:PORT (or HOST does not resolve here)")))?,
        };
        Ok(MockSpec { service: name.to_string(), addr })
    }
}

/// The mocks `specs` name, checked: each service once, each address once.
pub(super) fn parse_specs(specs: &[String]) -> Result<Vec<MockSpec>> {
    let parsed = specs.iter().map(|s| s.parse::<MockSpec>()).collect::<Result<Vec<_>>>()?;
    for (i, a) in parsed.iter().enumerate() {
        for b in &parsed[..i] {
            if a.service == b.service {
                bail!("--mock {}: named twice (one mock per service)", a.service);
            }
            if a.addr == b.addr {
                bail!("--mock {} and {}: both at {} (one address per mock)", b.service, a.service, a.addr);
            }
        }
    }
    Ok(parsed)
}

/// The mocks a replay runs, from its flags, checked once before anything is read:
/// `--mock NAME=ADDR`, how they answer (`--mock-latency`, `--mock-fault`, `--mock-seed`)
/// and where their unmatched calls go (`--mock-passthrough NAME=URL`).
pub(super) struct MockPlan {
    specs: Vec<MockSpec>,
    config: MockConfig,
    passthroughs: std::collections::BTreeMap<String, Passthrough>,
    /// `--mock-latency` and `--mock-fault` as given, for the report.
    latency: String,
    faults: Vec<String>,
}

/// The replay's `--mock*` flags.
pub(super) struct MockFlags<'a> {
    pub mock: &'a [String],
    pub latency: Option<&'a str>,
    pub fault: &'a [String],
    pub seed: Option<u64>,
    pub passthrough: &'a [String],
    /// The replay's `--ca`, trusted for an https passthrough too.
    pub ca: Option<&'a std::path::Path>,
}

impl MockPlan {
    /// The plan, or `None` without `--mock` (then the other `--mock-*` flags are refused).
    pub(super) fn parse(flags: MockFlags<'_>) -> Result<Option<MockPlan>> {
        if flags.mock.is_empty() {
            if flags.latency.is_some()
                || !flags.fault.is_empty()
                || flags.seed.is_some()
                || !flags.passthrough.is_empty()
            {
                bail!("--mock-latency, --mock-fault, --mock-seed and --mock-passthrough go with --mock NAME=ADDR");
            }
            return Ok(None);
        }
        let specs = parse_specs(flags.mock)?;
        let latency: Latency =
            flags.latency.unwrap_or("recorded").parse().map_err(|e| anyhow!("--mock-latency {e}"))?;
        let faults = flags
            .fault
            .iter()
            .map(|f| f.parse::<FaultRule>().map_err(|e| anyhow!("--mock-fault {e}")))
            .collect::<Result<Vec<_>>>()?;
        let mut passthroughs = std::collections::BTreeMap::new();
        for spec in flags.passthrough {
            let (name, url) = spec.split_once('=').ok_or_else(|| {
                anyhow!("--mock-passthrough {spec:?}: expected NAME=URL, e.g. payments=https://sandbox.example")
            })?;
            let name = name.trim();
            if !specs.iter().any(|m| m.service == name) {
                bail!("--mock-passthrough {name}: no --mock {name}=ADDR to pass its unmatched calls on from");
            }
            let p = Passthrough::new(url.trim(), flags.ca).map_err(|e| anyhow!("--mock-passthrough {name}: {e}"))?;
            if passthroughs.insert(name.to_string(), p).is_some() {
                bail!("--mock-passthrough {name}: given twice");
            }
        }
        Ok(Some(MockPlan {
            specs,
            config: MockConfig { latency, faults, seed: flags.seed, ..MockConfig::default() },
            passthroughs,
            latency: flags.latency.unwrap_or("recorded").to_string(),
            faults: flags.fault.to_vec(),
        }))
    }

    /// The services mocked.
    pub(super) fn services(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.service.clone()).collect()
    }
}

/// One mock running beside a replay.
struct Running {
    service: String,
    addr: std::net::SocketAddr,
    mock: std::sync::Arc<Mock>,
    /// Where its answers were recorded, in words.
    window: Option<String>,
}

/// `(from, to)` (ns since the epoch, open ends at the extremes) in RFC 3339.
fn describe_window((from, to): (i64, i64)) -> String {
    let rfc3339 =
        |ns: i64| jiff::Timestamp::from_nanosecond(i128::from(ns)).map_or_else(|_| ns.to_string(), |t| t.to_string());
    match (from, to) {
        (i64::MIN, to) => format!("until {}", rfc3339(to)),
        (from, i64::MAX) => format!("from {}", rfc3339(from)),
        (from, to) => format!("{} to {}", rfc3339(from), rfc3339(to)),
    }
}

/// The dependency mocks a replay runs beside it, each answering from its service's
/// recorded calls in the replayed window, until [`finish`](Self::finish).
pub(super) struct ReplayMocks {
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    running: Vec<Running>,
    latency: String,
    faults: Vec<String>,
}

impl ReplayMocks {
    /// Loads each service's answers from `dependencies` (the segments recorded in front of
    /// dependencies), recorded in `window` (ns since the epoch) when it holds any, and
    /// starts answering; unmatched routes are scrubbed with `scrub` (the replay's).
    pub(super) fn start(
        plan: MockPlan,
        scrub: Option<std::sync::Arc<tapedeck_captures::scrub::Scrubber>>,
        dependencies: &[PathBuf],
        window: Option<(i64, i64)>,
    ) -> Result<ReplayMocks> {
        use tapedeck_captures::tape::{SegmentReader, TapeReader};
        let MockPlan { specs, config, mut passthroughs, latency, faults } = plan;
        for p in passthroughs.values() {
            check_passthrough(p, dependencies, false)?;
        }
        let config = MockConfig { scrub, ..config };
        // Which service each dependency segment was recorded for.
        let mut by_service: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
        let mut unnamed = 0usize;
        for path in dependencies {
            match SegmentReader::open(path).ok().and_then(|r| r.header().label("service").map(str::to_string)) {
                Some(s) => by_service.entry(s).or_default().push(path.clone()),
                None => unnamed += 1,
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tapedeck-mock")
            .enable_all()
            .build()
            .context("starting the mocks' async runtime")?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut running = Vec::new();
        for spec in specs {
            let Some(segments) = by_service.get(&spec.service) else {
                let known = if by_service.is_empty() {
                    "none of them names its service".to_string()
                } else {
                    format!("they hold {}", by_service.keys().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
                };
                let unnamed = if unnamed > 0 {
                    format!(" ({unnamed} dependency segment(s) name no service: record with --service NAME)")
                } else {
                    String::new()
                };
                bail!(
                    "--mock {}: no tape here was recorded in front of {:?} ({} segment(s) recorded in front of \
                     dependencies: {known}){unnamed}; record it with `tapedeck proxy --role dependency --service {}`",
                    spec.service,
                    spec.service,
                    dependencies.len(),
                    spec.service
                );
            };
            let at = format!("the tapes of {}", spec.service);
            let (index, windowed) = load_from(TapeReader::new(segments.clone()), &at, Some(&spec.service), window)
                .with_context(|| format!("--mock {}", spec.service))?;
            let (answers, routes) = (index.len(), index.routes());
            let passthrough = passthroughs.remove(&spec.service);
            let through = passthrough.as_ref().map(|p| format!("; unmatched calls pass through to {}", p.url()));
            let mock = Mock::new(index, MockConfig { passthrough, ..config.clone() });
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(spec.addr))
                .with_context(|| format!("--mock {}={}: cannot listen there", spec.service, spec.addr))?;
            let addr = listener.local_addr().unwrap_or(spec.addr);
            let mut stopped = stopped.clone();
            runtime.spawn(mock.clone().serve(listener, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            super::status(
                "replay",
                format_args!(
                    "mock {} answering on http://{addr} from {answers} recorded answers on {routes} routes; latency {latency}{}",
                    spec.service,
                    through.unwrap_or_default()
                ),
            );
            let window = match window {
                Some(w) if windowed => Some(describe_window(w)),
                Some(_) => Some("any time (none in the replayed window)".to_string()),
                None => None,
            };
            running.push(Running { service: spec.service, addr, mock, window });
        }
        Ok(ReplayMocks { runtime, stop, running, latency, faults })
    }

    /// Stops answering; what each mock was asked.
    pub(super) fn finish(self) -> Vec<tapedeck_report::mocks::MockReport> {
        use tapedeck_report::mocks::{MockReport, MockRoute};
        let _ = self.stop.send(true);
        let reports = self
            .running
            .iter()
            .map(|r| {
                let index = r.mock.index();
                let mut stats = r.mock.stats();
                let routes: Vec<MockRoute> = index
                    .route_names()
                    .map(|route| {
                        let recorded: Vec<u64> = index.latencies(route).iter().map(|d| d.as_micros() as u64).collect();
                        (route.to_string(), recorded)
                    })
                    .chain(stats.keys().filter(|k| index.latencies(k).is_empty()).map(|k| (k.clone(), Vec::new())))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|(route, recorded)| {
                        let s = stats.remove(&route).unwrap_or_default();
                        MockRoute {
                            exact: s.exact,
                            similar: s.similar,
                            unmatched: s.unmatched,
                            recorded_failures: s.recorded_failures,
                            abandoned: s.abandoned,
                            passed_through: s.passed_through,
                            injected: s.injected.clone(),
                            ..MockRoute::new(route, &recorded, s.served_us.as_ref())
                        }
                    })
                    .collect();
                let mut m = MockReport {
                    service: r.service.clone(),
                    address: r.addr.to_string(),
                    latency: self.latency.clone(),
                    faults: self.faults.clone(),
                    answers: index.len() as u64,
                    window: r.window.clone(),
                    routes,
                    refused: r.mock.refused(),
                };
                m.sort();
                m
            })
            .collect();
        // Answers still being delayed are dropped with the runtime: the replay is over.
        self.runtime.shutdown_timeout(std::time::Duration::from_millis(200));
        reports
    }
}
