//! The upstream's URL, split once at start-up: where every request goes.

use http::header::HeaderValue;
use http::Uri;

/// The upstream, split once at start-up.
#[derive(Clone, Debug)]
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host_value: HeaderValue,
    /// Path prefix without the trailing slash ("" for none).
    prefix: String,
    port: u16,
}

impl Upstream {
    /// Splits an upstream URL; it must be absolute `http` or `https`.
    pub fn parse(uri: &Uri) -> Result<Self, String> {
        let scheme =
            uri.scheme().cloned().ok_or_else(|| format!("upstream {uri} needs a scheme: http:// or https://"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("upstream {uri}: only http and https are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("upstream {uri} needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(tapedeck_captures::scrub::userinfo_refused(
                "upstream",
                &uri.to_string(),
                "clients' own Authorization headers are forwarded",
            ));
        }
        let host_value = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let prefix = uri.path().trim_end_matches('/').to_string();
        let port = authority.port_u16().unwrap_or(if scheme == http::uri::Scheme::HTTPS { 443 } else { 80 });
        Ok(Upstream { scheme, authority, host_value, prefix, port })
    }

    /// The host name or address (IPv6 in brackets).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port (explicit, or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True for an `https` upstream.
    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// The upstream's authority as a `Host` value.
    pub(crate) fn host_value(&self) -> &HeaderValue {
        &self.host_value
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The upstream URL for a request's path and query (under the upstream's own prefix).
    pub(crate) fn uri(&self, path_and_query: Option<&http::uri::PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = match (path_and_query, self.prefix.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (pq, _) => {
                let pq = pq.map_or("/", |p| p.as_str());
                http::uri::PathAndQuery::try_from(format!("{}{pq}", self.prefix))?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Ok(Uri::from_parts(parts)?)
    }
}
