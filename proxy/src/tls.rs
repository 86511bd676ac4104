//! TLS: the listener's certificate (reloadable, e.g. on SIGHUP) and the upstream client's
//! trust roots.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::ProxyError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ProxyError::Tls(pem_error(path, "certificate", e)))?;
    if certs.is_empty() {
        return Err(ProxyError::Tls(format!(
            "{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\")",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ProxyError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            ProxyError::Tls(format!("{}: no private key found (expected PEM \"BEGIN PRIVATE KEY\")", path.display()))
        }
        e => ProxyError::Tls(pem_error(path, "key", e)),
    })
}

/// A PEM file that cannot be read, without its contents.
pub(crate) fn pem_error(path: &Path, what: &str, e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("{}: {e}", path.display()),
        e => format!("{}: not a PEM {what} file: {e}", path.display()),
    }
}

/// Builds the listener's TLS config (ALPN: h2, http/1.1).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ProxyError::Tls(format!("{} / {}: {e}", files.cert.display(), files.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS acceptor, replaceable while running.
pub struct TlsState {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl TlsState {
    /// Loads the certificate and key.
    pub fn load(files: TlsFiles) -> Result<Self, ProxyError> {
        let acceptor = TlsAcceptor::from(server_config(&files)?);
        Ok(TlsState { files, acceptor: RwLock::new(acceptor) })
    }

    /// The current acceptor.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), ProxyError> {
        let acceptor = TlsAcceptor::from(server_config(&self.files)?);
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        Ok(())
    }
}

/// TLS settings for connecting to an https upstream: the given CA file, or the system's
/// trust store.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ProxyError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| ProxyError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
