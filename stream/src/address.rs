//! Where a stream is, and how to log in: `nats://HOST:PORT[,HOST:PORT…]/STREAM` (or
//! `tls://…`), with credentials from files (never from the address, never logged).

use std::path::PathBuf;
use std::time::Duration;

use crate::StreamError;

/// A JetStream stream on a NATS server (or cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAddress {
    /// `host:port` of each server given.
    pub servers: Vec<String>,
    /// The stream's name.
    pub stream: String,
    /// `tls://`: TLS is required.
    pub tls: bool,
}

impl StreamAddress {
    /// True for what looks like a stream address rather than a path.
    pub fn is_stream(s: &str) -> bool {
        s.starts_with("nats://") || s.starts_with("tls://")
    }

    /// The servers as URLs for the client.
    pub fn server_urls(&self) -> Vec<String> {
        let scheme = if self.tls { "tls" } else { "nats" };
        self.servers.iter().map(|s| format!("{scheme}://{s}")).collect()
    }
}

impl std::fmt::Display for StreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        write!(f, "{scheme}://{}/{}", self.servers.join(","), self.stream)
    }
}

impl std::str::FromStr for StreamAddress {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<Self, StreamError> {
        let bad = |why: &str| {
            StreamError::Address(format!(
                "{why}; expected nats://HOST:PORT/STREAM (or tls://…, several servers as HOST:PORT,HOST:PORT)"
            ))
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("nats://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("tls://") {
            (true, r)
        } else {
            return Err(bad("not a nats:// or tls:// address"));
        };
        // An `@` anywhere (a password may hold `/`, `?` or `#`): credentials, never parsed.
        if rest.contains('@') {
            // Never in an address: it would show in `ps`, logs and reports.
            return Err(StreamError::Address(
                "credentials do not go in the address (it shows in process lists and logs); give them with \
                 --nats-creds, --nats-nkey, --nats-token-file or --nats-user with --nats-password-file"
                    .into(),
            ));
        }
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no stream name after the servers"))?;
        let stream = path.split(['?', '#']).next().unwrap_or("").trim_end_matches('/');
        if stream.is_empty() {
            return Err(bad("no stream name after the servers"));
        }
        // JetStream stream names: no whitespace, `.`, `*`, `>`, path separators.
        if stream.len() > 255 || stream.chars().any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c)) {
            return Err(bad(&format!("{stream:?} is not a stream name (letters, digits, - and _)")));
        }
        let mut servers = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            if host.is_empty() {
                return Err(bad("an empty server"));
            }
            // `host`, `host:port`, `[v6]`, `[v6]:port`.
            let with_port = match host.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                    if p.parse::<u16>().map_or(true, |p| p == 0) {
                        return Err(bad(&format!("{p:?} is not a port")));
                    }
                    host.to_string()
                }
                Some(_) if !host.starts_with('[') => {
                    return Err(bad("an IPv6 address goes in brackets: [::1]:4222"));
                }
                _ => format!("{host}:4222"),
            };
            servers.push(with_port);
        }
        Ok(StreamAddress { servers, stream: stream.to_string(), tls })
    }
}

/// How to log in to NATS and trust its TLS: each secret from a file, read when
/// connecting and never logged.
#[derive(Clone, Debug, Default)]
pub struct NatsAuth {
    /// A `.creds` file (a user JWT and its nkey seed).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`).
    pub nkey: Option<PathBuf>,
    /// A file holding a token.
    pub token: Option<PathBuf>,
    /// A user name (with `password`).
    pub user: Option<String>,
    /// A file holding the user's password.
    pub password: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the server's TLS.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
}

fn secret(path: &PathBuf, what: &str) -> Result<String, StreamError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StreamError::Auth(format!("cannot read the {what} file {}: {e}", path.display())))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(StreamError::Auth(format!("the {what} file {} is empty", path.display())));
    }
    Ok(text)
}

impl NatsAuth {
    /// Checks now that every file given can be read (and secrets are not empty), so that
    /// a long-running command refuses to start rather than run without its stream.
    pub fn check_files(&self) -> Result<(), StreamError> {
        for (path, what) in [
            (&self.creds, "NATS credentials"),
            (&self.nkey, "NATS nkey seed"),
            (&self.token, "NATS token"),
            (&self.password, "NATS password"),
        ] {
            if let Some(path) = path {
                secret(path, what)?;
            }
        }
        for (path, what) in [(&self.ca, "--nats-ca"), (&self.cert, "--nats-cert"), (&self.key, "--nats-key")] {
            if let Some(path) = path {
                std::fs::metadata(path).map_err(|e| StreamError::Auth(format!("{what} {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Client options with these credentials and TLS settings.
    pub async fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, StreamError> {
        let given = [self.creds.is_some(), self.nkey.is_some(), self.token.is_some(), self.user.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(StreamError::Auth(
                "give one way to log in: --nats-creds, --nats-nkey, --nats-token-file or --nats-user".into(),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(StreamError::Auth("--nats-user and --nats-password-file go together".into()));
        }
        let mut o = match (&self.creds, &self.nkey, &self.token, &self.user, &self.password) {
            (Some(creds), ..) => async_nats::ConnectOptions::with_credentials(&secret(creds, "NATS credentials")?)
                .map_err(|e| {
                    StreamError::Auth(format!("the NATS credentials file {} is not valid: {e}", creds.display()))
                })?,
            (_, Some(nkey), ..) => async_nats::ConnectOptions::with_nkey(secret(nkey, "NATS nkey seed")?),
            (_, _, Some(token), ..) => async_nats::ConnectOptions::with_token(secret(token, "NATS token")?),
            (_, _, _, Some(user), Some(password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), secret(password, "NATS password")?)
            }
            _ => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &self.ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => o = o.add_client_certificate(cert.clone(), key.clone()).require_tls(true),
            (None, None) => {}
            _ => return Err(StreamError::Auth("--nats-cert and --nats-key go together".into())),
        }
        Ok(o.name(name).connection_timeout(Duration::from_secs(5)).request_timeout(Some(Duration::from_secs(5))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_refuse_credentials_and_bad_names() {
        let a: StreamAddress = "nats://127.0.0.1:4222/CAPTURES".parse().unwrap();
        assert_eq!(
            (a.servers.clone(), a.stream.as_str(), a.tls),
            (vec!["127.0.0.1:4222".to_string()], "CAPTURES", false)
        );
        assert_eq!(a.to_string(), "nats://127.0.0.1:4222/CAPTURES");
        let b: StreamAddress = "tls://n1,n2:4333/caps?from=5m".parse().unwrap();
        assert_eq!(b.servers, ["n1:4222", "n2:4333"]);
        assert!(b.tls && b.stream == "caps");
        assert_eq!(b.server_urls(), ["tls://n1:4222", "tls://n2:4333"]);
        for bad in
            ["http://x/S", "nats://x", "nats://x/", "nats://u:p@x/S", "nats://x/a.b", "nats://,x/S", "nats://x/a b"]
        {
            let e = bad.parse::<StreamAddress>().unwrap_err().to_string();
            assert!(!e.contains(":p@") && !e.contains("ss@"), "{bad}: {e}");
        }
        assert!("nats://u:secret@x/S".parse::<StreamAddress>().unwrap_err().to_string().contains("--nats-creds"));
    }
}
