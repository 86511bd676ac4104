//! Connecting to a service: resolve its host, connect over TCP to each address in turn
//! within a timeout (`TCP_NODELAY` set), and shake hands with TLS when it is https.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tapedeck_captures::ErrorKind;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::{self, Alpn, TlsError};
use crate::NetError;

/// How to reach one service (`host:port`, plain or TLS).
#[derive(Clone)]
pub struct Connector {
    host: String,
    port: u16,
    timeout: Duration,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    name: ServerName<'static>,
    /// As configured (h2 and HTTP/1.1, or what the caller chose).
    offered: TlsConnector,
    /// HTTP/1.1 only, for upgrades.
    http1: TlsConnector,
}

impl Connector {
    /// A plaintext service at `host:port` (`host` as in a URL: an IPv6 address in
    /// brackets), each connection attempt (and TLS handshake) within `timeout`.
    pub fn plain(host: &str, port: u16, timeout: Duration) -> Self {
        Connector { host: host.to_string(), port, timeout, tls: None }
    }

    /// A TLS service, with `config` (its ALPN offer is kept; an HTTP/1.1-only twin is made
    /// for upgrades).
    pub fn tls(host: &str, port: u16, timeout: Duration, config: Arc<rustls::ClientConfig>) -> Result<Self, TlsError> {
        let name = tls::server_name(host)?;
        let http1 = TlsConnector::from(Arc::new(tls::http1_only(&config)));
        let tls = Tls { name, offered: TlsConnector::from(config), http1 };
        Ok(Connector { tls: Some(tls), ..Connector::plain(host, port, timeout) })
    }

    /// The host, as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True when connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A TCP connection: the first address that accepts within the timeout.
    pub async fn tcp(&self) -> Result<TcpStream, NetError> {
        // A URL spells an IPv6 address in brackets (`[::1]`); the resolver takes it bare.
        let host = self.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.host);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|e| NetError::new(ErrorKind::Dns, format!("resolving {}", self.host), e))?
            .collect();
        let mut last = NetError::bare(ErrorKind::Dns, format!("{} has no addresses", self.host));
        for addr in addrs {
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = NetError::new(ErrorKind::of_io(&e), format!("connecting to {addr}"), e),
                Err(_) => {
                    last = NetError::bare(
                        ErrorKind::ConnectTimeout,
                        format!("connecting to {addr}: no answer within {:?}", self.timeout),
                    )
                }
            }
        }
        Err(last)
    }

    /// A connection: TCP, then the TLS handshake offering `alpn` when the service is
    /// https.
    pub async fn connect(&self, alpn: Alpn) -> Result<Connected, NetError> {
        let stream = self.tcp().await?;
        self.handshake(stream, alpn).await
    }

    /// The TLS handshake on `stream`, offering `alpn`, within the timeout; a plaintext
    /// service's stream as it is.
    pub async fn handshake(&self, stream: TcpStream, alpn: Alpn) -> Result<Connected, NetError> {
        let Some(tls) = self.tls.as_ref() else { return Ok(Connected::Plain(stream)) };
        let connector = match alpn {
            Alpn::H2OrHttp1 => &tls.offered,
            Alpn::Http1 => &tls.http1,
        };
        match tokio::time::timeout(self.timeout, connector.connect(tls.name.clone(), stream)).await {
            Err(_) => Err(NetError::bare(
                ErrorKind::ConnectTimeout,
                format!("TLS handshake with {}: no answer within {:?}", self.host, self.timeout),
            )),
            Ok(Err(e)) => Err(NetError::new(ErrorKind::Tls, format!("TLS handshake with {}", self.host), e)),
            Ok(Ok(stream)) => Ok(Connected::Tls(Box::new(stream))),
        }
    }
}

/// A connection made by a [`Connector`].
pub enum Connected {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (boxed: its state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected {
    /// True when TLS negotiated HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        match self {
            Connected::Plain(_) => false,
            Connected::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[tokio::test]
    async fn a_refused_connection_keeps_its_cause() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Connector::plain("127.0.0.1", port, Duration::from_secs(5));
        let e = c.tcp().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectRefused);
        assert!(e.detail().contains(&format!("127.0.0.1:{port}")), "{}", e.detail());
        assert!(e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).is_some(), "the I/O error is the source");
    }

    #[tokio::test]
    async fn an_ipv6_address_in_brackets_connects() {
        // The host as a URL spells it. Skipped where this machine has no IPv6 loopback.
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let c = Connector::plain("[::1]", port, Duration::from_secs(5));
        let stream = c.tcp().await.expect("connects to ::1");
        assert!(stream.peer_addr().unwrap().is_ipv6());
        drop(listener);
        let e = c.tcp().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectRefused, "{}", e.detail());
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_a_dns_error_with_the_resolvers_reason() {
        let c = Connector::plain("no-such-host.invalid", 80, Duration::from_secs(5));
        let e = c.tcp().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Dns);
        assert!(e.detail().starts_with("resolving no-such-host.invalid"), "{}", e.detail());
    }

    #[tokio::test]
    async fn a_tls_failure_is_a_tls_error_with_rustls_reason() {
        // A plaintext server on a TLS connector: the handshake fails, and says why.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        let config = tls::client_config(tls::Trust::System, Alpn::H2OrHttp1).unwrap();
        let c = Connector::tls("localhost", port, Duration::from_secs(5), Arc::new(config)).unwrap();
        assert!(c.is_tls());
        let e = c.connect(Alpn::Http1).await.err().expect("no TLS there");
        assert_eq!(e.kind, ErrorKind::Tls);
        assert!(e.source().is_some() && e.detail().len() > "TLS handshake with localhost".len(), "{}", e.detail());
        let plain = Connector::plain("localhost", port, Duration::from_secs(1));
        assert!(matches!(plain.connect(Alpn::Http1).await, Ok(Connected::Plain(_))));
    }
}
