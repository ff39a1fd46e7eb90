//! TLS on tollgate's own listener (rustls with the ring provider), with certificate reload.
//!
//! Most deployments terminate TLS at a proxy (Traefik, nginx) and run tollgate on plain HTTP; this is for
//! the others. The certificate and key are re-read on SIGHUP and when either file changes (see `reload`),
//! so a renewed certificate (cert-manager, certbot) is served without a restart. A bad new pair is refused
//! and the running one kept.

use axum_server::tls_rustls::RustlsConfig;

use crate::config::ops::TlsSettings;

/// Select ring as the process-wide rustls provider (the only one compiled in). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Load the certificate chain and key. Errors name the files.
pub async fn load(tls: &TlsSettings) -> Result<RustlsConfig, String> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file).await.map_err(|e| describe(tls, e))
}

/// Replace the served certificate; on error the running one stays in place.
pub async fn reload(config: &RustlsConfig, tls: &TlsSettings) -> Result<(), String> {
    config.reload_from_pem_file(&tls.cert_file, &tls.key_file).await.map_err(|e| describe(tls, e))
}

fn describe(tls: &TlsSettings, e: std::io::Error) -> String {
    format!("server.tls: cannot use certificate {} with key {}: {e}", tls.cert_file.display(), tls.key_file.display())
}
