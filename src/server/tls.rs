//! TLS on tollgate's own listeners (rustls with the ring provider), with certificate reload.
//!
//! Most deployments terminate TLS at a proxy (Traefik, nginx) and run tollgate on plain HTTP; this is for
//! the others. The certificate and key are re-read on SIGHUP and when either file changes (see `live.rs`),
//! so a renewed certificate (cert-manager, certbot) is served without a restart: connections accepted after
//! the reload get the new pair. A bad new pair is refused and the running one kept.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::ops::TlsSettings;

/// Select ring as the process-wide rustls provider (the only one compiled in). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The served certificate, swappable while connections are being accepted.
#[derive(Clone)]
pub struct Tls {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Load the certificate chain and key. Errors name the files.
    pub fn load(tls: &TlsSettings) -> Result<Tls, String> {
        Ok(Tls { config: Arc::new(RwLock::new(Arc::new(server_config(tls)?))) })
    }

    /// Replace the served certificate; on error the running one stays in place.
    pub fn reload(&self, tls: &TlsSettings) -> Result<(), String> {
        let fresh = Arc::new(server_config(tls)?);
        match self.config.write() {
            Ok(mut c) => *c = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(())
    }

    /// The acceptor for the next connection, with the certificate in force.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn server_config(tls: &TlsSettings) -> Result<ServerConfig, String> {
    install_crypto_provider();
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "server.tls: cannot use certificate {} with key {}: {e}",
            tls.cert_file.display(),
            tls.key_file.display()
        )
    };
    let cert_pem = std::fs::read(&tls.cert_file).map_err(|e| fail(&e))?;
    let key_pem = std::fs::read(&tls.key_file).map_err(|e| fail(&e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&format!("{}: not a PEM certificate chain: {e}", tls.cert_file.display())))?;
    if chain.is_empty() {
        return Err(fail(&format!("{}: no CERTIFICATE block", tls.cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| fail(&format!("{}: no usable private key: {e}", tls.key_file.display())))?;
    let mut config =
        ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).map_err(|e| fail(&e))?;
    // HTTP/2 for clients that offer it, as the plain listener accepts h2c.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
