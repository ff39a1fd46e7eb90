//! Connections to one directory: TLS set-up, timeouts, and a small pool of reused connections.
//!
//! ldap3 has no pool and no reconnect of its own. One `Ldap` handle multiplexes operations on one
//! connection, but a bind changes the identity of the whole connection, so tollgate keeps two pools per
//! provider: connections bound as the service account (searches), and connections used only to check
//! user passwords (each check re-binds, so whatever identity the last check left behind does not matter).
//! A connection whose driver has ended (the server restarted, an idle timeout) is dropped when it is taken
//! from the pool, and an operation that fails on a reused connection because the connection broke is
//! retried once on a fresh one: that is what lets tollgate recover from a directory restart on its own.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Semaphore;

/// LDAP operations sent to the directory, by kind. Read by tests and the benchmark; the same events go to
/// the `tollgate_ldap_operations_total` metric.
#[derive(Debug, Default)]
pub struct OpCounters {
    /// Binds as the service account (once per new pooled connection).
    pub service_binds: AtomicU64,
    /// Binds as a user, to check a password.
    pub user_binds: AtomicU64,
    /// Searches (user look-ups, group look-ups, probes).
    pub searches: AtomicU64,
    /// New TCP (and TLS) connections opened.
    pub connects: AtomicU64,
}

impl OpCounters {
    /// (service binds, user binds, searches, connects)
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.service_binds.load(Ordering::Relaxed),
            self.user_binds.load(Ordering::Relaxed),
            self.searches.load(Ordering::Relaxed),
            self.connects.load(Ordering::Relaxed),
        )
    }
}

/// An LDAP operation sent to the directory, for counting.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Search,
    ServiceBind,
    UserBind,
}

/// Builds the rustls configuration: the configured CA file, or the system trust store. Certificate
/// checking cannot be turned off. The ring provider is named explicitly so that another crypto provider
/// compiled into the binary can never make rustls panic over which one to use.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: cannot read CA certificates: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: holds no CERTIFICATE block", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How to open a connection to the directory.
pub struct Connector {
    pub url: String,
    pub settings: LdapConnSettings,
    /// Applied to every operation (ldap3's `with_timeout` covers only the next operation).
    pub op_timeout: Duration,
    pub counters: Arc<OpCounters>,
    /// The provider name, for metrics.
    pub provider: String,
}

impl Connector {
    /// A new connection (TCP, and TLS when configured), not bound.
    pub async fn connect(&self) -> Result<Ldap, LdapError> {
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let (conn, ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url).await?;
        // The driver task owns the socket; when it ends (server gone), the handle reports `is_closed`.
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection closed");
            }
        });
        Ok(ldap)
    }

    /// Count an operation in both the plain counters and the metrics.
    pub fn count(&self, op: Op) {
        let (counter, label) = match op {
            Op::Search => (&self.counters.searches, "search"),
            Op::ServiceBind => (&self.counters.service_binds, "bind"),
            Op::UserBind => (&self.counters.user_binds, "bind"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tollgate_ldap_operations_total", "provider" => self.provider.clone(), "op" => label)
            .increment(1);
    }
}

/// True for errors that mean the connection itself is broken (as opposed to the server answering with an
/// error code): only these are worth a retry on a fresh connection.
pub fn is_connection_error(e: &LdapError) -> bool {
    matches!(e, LdapError::Io { .. } | LdapError::OpSend { .. } | LdapError::ResultRecv { .. } | LdapError::EndOfStream)
}

/// A pool of connections, optionally bound as the service account when opened.
pub struct Pool {
    connector: Arc<Connector>,
    service: Option<(String, SecretString)>,
    idle: Mutex<Vec<Ldap>>,
    /// Bounds the connections in use at once, so a burst of logins cannot open hundreds of sockets.
    permits: Semaphore,
    max_idle: usize,
}

/// A connection taken from a pool; give it back with [`Pool::put`] when it is healthy.
pub struct Pooled<'a> {
    pub ldap: Ldap,
    /// True when the connection was opened for this call (a failure then is not a stale connection).
    pub fresh: bool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    pub fn new(connector: Arc<Connector>, service: Option<(String, SecretString)>, size: usize) -> Pool {
        Pool { connector, service, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size.max(1)), max_idle: size }
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The service account's DN and password, when the pool binds as one.
    pub fn service_account(&self) -> Option<&(String, SecretString)> {
        self.service.as_ref()
    }

    /// An idle connection that is still open, or a new one (bound as the service account if configured).
    /// `force_fresh` skips the idle ones (the retry after a broken connection).
    pub async fn take(&self, force_fresh: bool) -> Result<Pooled<'_>, LdapError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LdapError::Io { source: std::io::Error::other("connection pool closed") })?;
        if !force_fresh {
            loop {
                let next = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
                match next {
                    // A closed one: its server went away; drop it and look further.
                    Some(mut ldap) => {
                        if !ldap.is_closed() {
                            return Ok(Pooled { ldap, fresh: false, _permit: permit });
                        }
                    }
                    None => break,
                }
            }
        }
        let mut ldap = self.connector.connect().await?;
        if let Some((dn, password)) = &self.service {
            self.connector.count(Op::ServiceBind);
            ldap.with_timeout(self.connector.op_timeout).simple_bind(dn, password.expose_secret()).await?.success()?;
        }
        Ok(Pooled { ldap, fresh: true, _permit: permit })
    }

    /// Return a healthy connection for reuse.
    pub fn put(&self, pooled: Pooled<'_>) {
        let mut ldap = pooled.ldap;
        if ldap.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(ldap);
            }
        }
    }
}
