//! TLS for the listener: its certificate, reloadable (e.g. on SIGHUP). The upstream
//! client's TLS is [`tapedeck_net::tls`]'s.

use std::sync::{Arc, RwLock};

use tapedeck_net::tls::{provider, read_certs, read_key, TlsError};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::ProxyError;

/// Builds the listener's TLS config (ALPN: h2, http/1.1).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
    let tls = |what, source| ProxyError::Tls { what, source };
    let certs = read_certs(&files.cert).map_err(|e| tls("--tls-cert", e))?;
    let key = read_key(&files.key).map_err(|e| tls("--tls-key", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("TLS", TlsError::from(e)))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| {
            let path = format!("{} / {}", files.cert.display(), files.key.display()).into();
            tls("--tls-cert/--tls-key", TlsError::Refused { path, source })
        })?;
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
