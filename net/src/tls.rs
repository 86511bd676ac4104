//! TLS for clients: whom to trust (a CA file, the system's roots, or — for a test target
//! only — any certificate), what to offer by ALPN, and PEM files read with errors that say
//! which file and what is wrong with it (never its contents).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not PEM.
    #[error("{}: not a PEM {what} file: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What it should hold ("certificate", "key").
        what: &'static str,
        /// Why.
        #[source]
        source: pem::Error,
    },
    /// A PEM file holds nothing of what it should.
    #[error("{}: no {what} found (expected PEM \"BEGIN {label}\")", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// The PEM label expected.
        label: &'static str,
    },
    /// A certificate or key rustls refuses.
    #[error("{}: {source}", path.display())]
    Refused {
        /// The file(s).
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A host that cannot be a TLS server name.
    #[error("{host:?} is not a valid TLS server name: {source}")]
    ServerName {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// rustls cannot build the configuration.
    #[error("TLS: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    fn of_pem(path: &Path, what: &'static str, e: pem::Error) -> Self {
        match e {
            pem::Error::Io(source) => TlsError::Read { path: path.into(), source },
            source => TlsError::Pem { path: path.into(), what, source },
        }
    }
}

/// The crypto provider every TLS config here uses (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::of_pem(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.into(), what: "certificate", label: "CERTIFICATE" });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Empty { path: path.into(), what: "private key", label: "PRIVATE KEY" },
        e => TlsError::of_pem(path, "key", e),
    })
}

/// Whom a client trusts.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// The system's trust store.
    System,
    /// The CAs in a PEM file (a private CA).
    CaFile(&'a Path),
    /// Any certificate: for a test target with a self-signed one (`--insecure`).
    AnyCertificate,
}

/// What a client offers by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// h2, else HTTP/1.1.
    H2OrHttp1,
    /// HTTP/1.1 only (an upgrade such as WebSocket: HTTP/2 has no `Upgrade`).
    Http1,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2OrHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        }
    }
}

/// A client config trusting `trust`, offering `alpn`.
pub fn client_config(trust: Trust<'_>, alpn: Alpn) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::AnyCertificate => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|source| TlsError::Refused { path: path.into(), source })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = alpn.protocols();
    Ok(config)
}

/// The same config offering HTTP/1.1 only.
pub fn http1_only(config: &rustls::ClientConfig) -> rustls::ClientConfig {
    let mut http1 = config.clone();
    http1.alpn_protocols = Alpn::Http1.protocols();
    http1
}

/// The TLS server name of a URL's host (an IPv6 address without its brackets).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|source| TlsError::ServerName { host: host.into(), source })
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_hold_no_certificate_say_which_and_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = client_config(Trust::CaFile(&empty), Alpn::H2OrHttp1).unwrap_err();
        assert!(matches!(e, TlsError::Empty { .. }), "{e:?}");
        assert!(e.to_string().contains("empty.pem") && e.to_string().contains("BEGIN CERTIFICATE"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = client_config(Trust::CaFile(&missing), Alpn::H2OrHttp1).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the I/O error is kept as the source");
        let e = read_key(&empty).unwrap_err();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
    }

    #[test]
    fn a_ca_file_is_trusted_and_alpn_is_what_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let config = client_config(Trust::CaFile(&path), Alpn::H2OrHttp1).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(http1_only(&config).alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(
            client_config(Trust::AnyCertificate, Alpn::Http1).unwrap().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn server_names_drop_ipv6_brackets_and_refuse_nonsense() {
        assert!(matches!(server_name("[::1]").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("staging.internal").unwrap(), ServerName::DnsName(_)));
        let e = server_name("bad host!").unwrap_err();
        assert!(e.to_string().contains("bad host!"), "{e}");
    }
}
