//! `tapedeck proxy --shadow URL`: the live shadow's flags (also keys of the config file),
//! turned into a running [`Shadow`] for the proxy's tap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde::Deserialize;
use tapedeck_captures::scrub::Scrubber;
use tapedeck_replayer::rewrite::parse_set_header;
use tapedeck_replayer::shadow::{Shadow, ShadowConfig, SAFE_METHODS};

/// Mirror sampled requests to a canary and compare its answers with production's, live.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
#[command(next_help_heading = "Live shadow")]
pub struct ShadowFlags {
    /// After production's answer has gone out, re-send the request to this canary or
    /// staging (`http(s)://host:port`) and compare its answer with production's; the live
    /// report is at /shadow.html on the admin listener, counts in /metrics.
    #[arg(long, value_name = "URL")]
    pub shadow: Option<String>,
    /// Share of requests mirrored, e.g. `5%` [default: 100%].
    #[arg(long, value_name = "PERCENT")]
    pub shadow_sample: Option<String>,
    /// Methods mirrored, comma-separated [default: GET,HEAD,OPTIONS]. Others change
    /// state: mirror them only to a shadow with a database of its own.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub shadow_methods: Vec<String>,
    /// Shadow requests in flight at most; more are dropped and counted [default: 64].
    #[arg(long, value_name = "N")]
    pub shadow_max_in_flight: Option<usize>,
    /// Bytes of requests waiting for or in the shadow at most [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    pub shadow_queue_max_bytes: Option<String>,
    /// Time the shadow has to answer [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub shadow_timeout: Option<String>,
    /// A gate judged live over --shadow-window, e.g. `diff_rate<=0.5%` (the replay's
    /// gate language); a failing gate sets tapedeck_shadow_gate_failing{gate} to 1.
    /// Repeatable.
    #[arg(long, value_name = "EXPR")]
    pub shadow_gate: Vec<String>,
    /// The window the gates judge [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub shadow_window: Option<String>,
    /// Send production's credentials (Authorization, Cookie, …) to the shadow as they
    /// came; without it they are withheld (give the shadow its own with
    /// --shadow-set-header).
    #[arg(long)]
    pub shadow_keep_credentials: bool,
    /// Set a header on every shadow request, `Name: value` (`${VAR}` from the
    /// environment). Repeatable.
    #[arg(long, value_name = "HEADER")]
    pub shadow_set_header: Vec<String>,
    /// CA certificates (PEM) to trust for an https shadow.
    #[arg(long, value_name = "FILE")]
    pub shadow_ca: Option<PathBuf>,
    /// What to compare and ignore (the replay's --compare-config file).
    #[arg(long, value_name = "FILE")]
    pub shadow_compare_config: Option<PathBuf>,
    /// Keep the evidence here: report.json, rewritten every 5 s and at the end (`tapedeck
    /// report DIR` renders it), and a results tape of the exchanges that differed —
    /// production's answer and the shadow's, scrubbed.
    #[arg(long, value_name = "DIR")]
    pub shadow_results: Option<PathBuf>,
}

impl ShadowFlags {
    /// Fills unset flags from the config file's values.
    pub fn merge(&mut self, file: ShadowFlags) {
        let ShadowFlags {
            shadow,
            shadow_sample,
            shadow_methods,
            shadow_max_in_flight,
            shadow_queue_max_bytes,
            shadow_timeout,
            shadow_gate,
            shadow_window,
            shadow_keep_credentials,
            shadow_set_header,
            shadow_ca,
            shadow_compare_config,
            shadow_results,
        } = file;
        merge_from_file!(self;
            options: shadow, shadow_sample, shadow_max_in_flight, shadow_queue_max_bytes, shadow_timeout,
                shadow_window, shadow_ca, shadow_compare_config, shadow_results;
            lists: shadow_methods, shadow_gate, shadow_set_header;
            switches: shadow_keep_credentials);
    }

    /// Whether any shadow setting is given without --shadow (refused, not ignored).
    fn any_setting(&self) -> bool {
        self.shadow_sample.is_some()
            || !self.shadow_methods.is_empty()
            || self.shadow_max_in_flight.is_some()
            || self.shadow_queue_max_bytes.is_some()
            || self.shadow_timeout.is_some()
            || !self.shadow_gate.is_empty()
            || self.shadow_window.is_some()
            || self.shadow_keep_credentials
            || !self.shadow_set_header.is_empty()
            || self.shadow_ca.is_some()
            || self.shadow_compare_config.is_some()
            || self.shadow_results.is_some()
    }

    /// The shadow, started, and a line saying what it does; `None` without --shadow.
    /// `upstream` is production: a shadow that is production is refused.
    pub fn start(
        &self,
        upstream: &http::Uri,
        scrub: Option<Arc<Scrubber>>,
        allow_shared_dir: bool,
    ) -> Result<Option<(Shadow, String)>> {
        let Some(url) = &self.shadow else {
            if self.any_setting() {
                bail!("the --shadow-* settings go with --shadow URL");
            }
            return Ok(None);
        };
        let target: http::Uri = url.parse().map_err(|e| anyhow!("--shadow {url:?}: {e} (e.g. http://canary:8080)"))?;
        if target.query().is_some() {
            bail!(
                "--shadow {url}: a query would be lost (each request keeps its own); give the canary's origin and path"
            );
        }
        let mut config = ShadowConfig::new(&target).map_err(|e| anyhow!(e))?;
        let production = upstream.authority().map(|a| a.as_str()).unwrap_or_default();
        if config.rewrite.is_target(production, upstream.scheme_str().unwrap_or("http")) {
            bail!("--shadow {url} is the --upstream ({upstream}): every mirrored request would reach production twice");
        }
        if let Some(rate) = &self.shadow_sample {
            config.rate = tapedeck_proxy::sample::parse_rate(rate).map_err(|e| anyhow!("--shadow-sample {e}"))?;
            if config.rate <= 0.0 {
                bail!("--shadow-sample {rate}: mirrors nothing; leave --shadow out instead");
            }
        }
        if !self.shadow_methods.is_empty() {
            config.methods = Vec::new();
            for m in &self.shadow_methods {
                let m = m.trim().to_ascii_uppercase();
                if m.is_empty() || http::Method::from_bytes(m.as_bytes()).is_err() {
                    bail!("--shadow-methods {m:?}: not a method (e.g. GET,HEAD,POST)");
                }
                config.methods.push(m);
            }
            let unsafe_ones: Vec<&str> =
                config.methods.iter().map(String::as_str).filter(|m| !SAFE_METHODS.contains(m)).collect();
            if !unsafe_ones.is_empty() {
                tracing::warn!(
                    "--shadow-methods mirrors {}: requests that change state reach the shadow too; its database \
                     must not be production's",
                    unsafe_ones.join(", ")
                );
            }
        }
        if let Some(n) = self.shadow_max_in_flight {
            if !(1..=4096).contains(&n) {
                bail!("--shadow-max-in-flight {n}: from 1 to 4096");
            }
            config.max_in_flight = n;
            config.client.connections = n;
        }
        if let Some(size) = &self.shadow_queue_max_bytes {
            config.max_bytes = super::proxy::size("shadow-queue-max-bytes", Some(size), 0)? as usize;
            if config.max_bytes < 64 << 10 {
                bail!("--shadow-queue-max-bytes {size}: at least 64KiB");
            }
        }
        // The proxy's durations, and more than zero.
        let duration = |flag: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            let d = super::proxy::duration(flag, v.as_deref(), default)?;
            if d.is_zero() {
                bail!("--{flag} {:?}: must be more than zero", v.as_deref().unwrap_or_default());
            }
            Ok(d)
        };
        config.client.timeout = duration("shadow-timeout", &self.shadow_timeout, config.client.timeout)?;
        config.window = duration("shadow-window", &self.shadow_window, config.window)?;
        for g in &self.shadow_gate {
            config.gates.push(g.parse().map_err(|e| anyhow!("--shadow-gate {e}"))?);
        }
        config.rewrite.keep_credentials = self.shadow_keep_credentials;
        for h in &self.shadow_set_header {
            config.rewrite.set.push(
                parse_set_header(h)
                    .map_err(|e| anyhow!("{}", e.to_string().replace("--set-header", "--shadow-set-header")))?,
            );
        }
        config.client.ca = self.shadow_ca.clone();
        config.compare = super::report::compare_config(self.shadow_compare_config.as_deref())?;
        let unscrubbed = if scrub.is_none() { "; its report's examples are UNSCRUBBED (--no-scrub)" } else { "" };
        config.scrub = scrub;
        config.results = self.shadow_results.clone();
        config.allow_shared_dir = allow_shared_dir;
        let methods = config.methods.join(", ");
        let rate = config.rate;
        let origin = config.rewrite.origin();
        let shadow = Shadow::start(config)?;
        let line = format!(
            "shadowing {} of {methods} requests to {origin}{unscrubbed}",
            crate::human::percent((rate * 1000.0) as u64, 1000)
        );
        Ok(Some((shadow, line)))
    }
}
