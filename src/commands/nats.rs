//! NATS JetStream settings shared by `proxy --sink` and `archive`: how to log in and trust
//! the server's TLS. Secrets come from files, never from flags or addresses (those show in
//! process lists), and are never printed.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use serde::Deserialize;
use tapedeck_stream::address::{NatsAuth, StreamAddress};

/// Credentials and TLS for NATS (also keys of the config file).
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
#[command(next_help_heading = "NATS")]
pub struct NatsFlags {
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`).
    #[arg(long, value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// A file holding a NATS token.
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// A NATS user name (with --nats-password-file).
    #[arg(long, value_name = "NAME")]
    pub nats_user: Option<String>,
    /// A file holding the NATS user's password.
    #[arg(long, value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the NATS server's TLS (requires TLS).
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS, with --nats-key.
    #[arg(long, value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE")]
    pub nats_key: Option<PathBuf>,
}

impl NatsFlags {
    /// Fills unset flags from the config file's values.
    pub fn merge(&mut self, file: NatsFlags) {
        let NatsFlags {
            nats_creds,
            nats_nkey,
            nats_token_file,
            nats_user,
            nats_password_file,
            nats_ca,
            nats_cert,
            nats_key,
        } = file;
        merge_from_file!(self;
            options: nats_creds, nats_nkey, nats_token_file, nats_user, nats_password_file, nats_ca, nats_cert,
                nats_key;
            lists: ; switches: );
    }

    /// Whether any is set (they need a stream to go with).
    pub fn any(&self) -> bool {
        self.nats_creds.is_some()
            || self.nats_nkey.is_some()
            || self.nats_token_file.is_some()
            || self.nats_user.is_some()
            || self.nats_password_file.is_some()
            || self.nats_ca.is_some()
            || self.nats_cert.is_some()
            || self.nats_key.is_some()
    }

    /// The login and TLS settings.
    pub fn auth(&self) -> NatsAuth {
        NatsAuth {
            creds: self.nats_creds.clone(),
            nkey: self.nats_nkey.clone(),
            token: self.nats_token_file.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password_file.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
        }
    }
}

/// A stream address from a flag, or why not.
pub fn address(flag: &str, value: &str) -> Result<StreamAddress> {
    value.parse().map_err(|e| anyhow!("{flag} {}: {e}", redact(value)))
}

/// An address as it may be shown: everything up to its last `@` (credentials, whatever
/// characters they hold) is hidden.
fn redact(value: &str) -> String {
    match (value.split_once("://"), value.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", &value[at + 1..]),
        _ => value.to_string(),
    }
}

/// The `?from=TIME&to=TIME` window of a stream address (RFC 3339 times), as ns since the
/// epoch.
pub fn window(value: &str) -> Result<(Option<i64>, Option<i64>)> {
    let Some((_, query)) = value.split_once('?') else { return Ok((None, None)) };
    let (mut from, mut to) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, v) = pair.split_once('=').unwrap_or((pair, ""));
        let at = || -> Result<i64> {
            let t: jiff::Timestamp =
                v.parse().map_err(|e| anyhow!("{key}={v}: {e} (an RFC 3339 time, e.g. 2026-12-03T10:00:00Z)"))?;
            i64::try_from(t.as_nanosecond()).map_err(|_| anyhow!("{key}={v}: out of range"))
        };
        match key {
            "from" => from = Some(at()?),
            "to" => to = Some(at()?),
            other => return Err(anyhow!("{}: unknown setting {other:?}; a stream takes from= and to=", redact(value))),
        }
    }
    if let (Some(a), Some(b)) = (from, to) {
        if a >= b {
            return Err(anyhow!("{}: from= must be before to=", redact(value)));
        }
    }
    Ok((from, to))
}
