//! `--passthrough URL`: a request nothing was recorded for goes on to a real service
//! (a dependency's sandbox, its staging copy) instead of getting the mock's "not recorded"
//! answer; its answer comes back marked `x-tapedeck-mock: passthrough`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tapedeck_net::connect::{Connected, Connector};
use tapedeck_net::tls::{Alpn, Trust};

/// How long a passed-through request may take, connection and whole answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Answer bodies relayed, at most (a longer one is a 502).
const MAX_ANSWER: usize = 64 << 20;

/// Where unmatched requests go.
#[derive(Clone)]
pub struct Passthrough {
    url: String,
    connector: Connector,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix without the trailing slash ("" for none).
    prefix: String,
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Passthrough").field(&self.url).finish()
    }
}

impl Passthrough {
    /// `url`: `http(s)://host[:port][/prefix]`; an https one is trusted by the system's
    /// roots, or `ca` (PEM) when given.
    pub fn new(url: &str, ca: Option<&std::path::Path>) -> Result<Passthrough, String> {
        let expected = "expected http(s)://host[:port][/prefix], e.g. https://payments.sandbox.example";
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}; {expected}"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| format!("{url:?}: no scheme; {expected}"))?;
        let https = match scheme.as_str() {
            "http" => false,
            "https" => true,
            other => return Err(format!("{url:?}: {other} is not http or https; {expected}")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| format!("{url:?}: no host; {expected}"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: credentials in the URL are refused (they would be logged and reported)"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a query has no place here; {expected}"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connector = if https {
            let trust = ca.map_or(Trust::System, Trust::CaFile);
            let config = tapedeck_net::tls::client_config(trust, Alpn::Http1).map_err(|e| format!("{url}: {e}"))?;
            Connector::tls(authority.host(), port, TIMEOUT, Arc::new(config)).map_err(|e| format!("{url}: {e}"))?
        } else {
            Connector::plain(authority.host(), port, TIMEOUT)
        };
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Passthrough { url: url.to_string(), connector, scheme, authority, prefix })
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// The port (explicit, or the scheme's default).
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(if self.scheme == http::uri::Scheme::HTTPS { 443 } else { 80 })
    }

    /// Sends the request on (its connection's own fields and `Host` replaced) and reads
    /// the whole answer; why not, in words.
    pub(crate) async fn forward(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<hyper::Response<Full<Bytes>>, String> {
        match tokio::time::timeout(TIMEOUT, self.exchange(parts, body)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no whole answer from {} within {TIMEOUT:?}", self.url)),
        }
    }

    async fn exchange(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<hyper::Response<Full<Bytes>>, String> {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = hyper::Request::new(Full::new(body.clone()));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = format!("{}{pq}", self.prefix).parse().map_err(|e| format!("{pq:?}: {e}"))?;
        let headers = request.headers_mut();
        for (name, value) in &parts.headers {
            if !tapedeck_net::headers::is_connection_specific(name.as_str())
                && name != http::header::HOST
                && name != http::header::CONTENT_LENGTH
                && name != http::header::EXPECT
            {
                headers.append(name, value.clone());
            }
        }
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(self.authority.as_str()).map_err(|e| e.to_string())?,
        );
        if !body.is_empty() || !matches!(parts.method, http::Method::GET | http::Method::HEAD) {
            headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        let connected = self.connector.connect(Alpn::Http1).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = match connected {
            Connected::Plain(s) => {
                let (tx, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
                (tx, tokio::spawn(async move { drop(conn.await) }))
            }
            Connected::Tls(s) => {
                let (tx, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(*s)).await.map_err(|e| e.to_string())?;
                (tx, tokio::spawn(async move { drop(conn.await) }))
            }
        };
        let answer = sender.send_request(request).await.map_err(|e| format!("{}: {e}", self.url));
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                connection.abort();
                return Err(e);
            }
        };
        let (mut head, incoming) = answer.into_parts();
        let body = Limited::new(incoming, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", self.url))?
            .to_bytes();
        connection.abort();
        for name in tapedeck_net::headers::CONNECTION_SPECIFIC {
            head.headers.remove(name);
        }
        let bodiless = head.status.is_informational()
            || head.status == http::StatusCode::NO_CONTENT
            || head.status == http::StatusCode::NOT_MODIFIED;
        if parts.method != http::Method::HEAD && !bodiless {
            head.headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        head.headers.insert("x-tapedeck-mock", http::HeaderValue::from_static("passthrough"));
        Ok(hyper::Response::from_parts(head, Full::new(body)))
    }
}
