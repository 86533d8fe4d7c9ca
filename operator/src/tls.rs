//! A serving certificate (the plan stream's, the webhook's), reloaded when its files change.
//!
//! cert-manager and projected Secret volumes rotate the files in place; reloading them keeps
//! serving without a restart (and without dropping the agents' streams). The files are compared by
//! content, not modification time, because a Secret volume swaps a symlink and keeps old times.
//! A pair that does not load (half written, key and certificate mismatched) is reported and the
//! previous certificate stays in use; the next change is tried again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::counter::Counter;

use crate::OperatorError;

/// Counts of reloads, for the serving process's metrics.
#[derive(Clone, Debug, Default)]
pub struct ReloadCounters {
    pub reloads: Counter,
    pub failures: Counter,
}

/// Where the serving certificate comes from, and the live configuration serving it. The
/// operator's plan stream and the admission webhook both serve with it.
#[derive(Clone)]
pub struct ServingCertificate {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub config: RustlsConfig,
}

impl ServingCertificate {
    /// Loads the pair once; a failure here stops the start (there is nothing to serve with).
    pub async fn load(certificate: &Path, key: &Path) -> Result<ServingCertificate, OperatorError> {
        let tls_error =
            |source| OperatorError::Tls { certificate: certificate.to_owned(), key: key.to_owned(), source };
        let (certificate_pem, key_pem) = read_pair(certificate, key).await.map_err(tls_error)?;
        let config = RustlsConfig::from_pem(certificate_pem, key_pem).await.map_err(tls_error)?;
        Ok(ServingCertificate { certificate: certificate.to_owned(), key: key.to_owned(), config })
    }

    /// Checks the files every `interval` and reloads on a change, until `shutdown`.
    pub async fn watch(self, interval: Duration, counters: ReloadCounters, shutdown: CancellationToken) {
        // The files are small: keeping their bytes is the simplest exact comparison.
        let mut loaded = read_pair(&self.certificate, &self.key).await.ok();
        let mut rejected = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let pair = match read_pair(&self.certificate, &self.key).await {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(certificate = %self.certificate.display(), key = %self.key.display(), %error,
                        "cannot read the serving certificate; keeping the loaded one");
                    continue;
                }
            };
            if loaded.as_ref() == Some(&pair) || rejected.as_ref() == Some(&pair) {
                continue;
            }
            match self.config.reload_from_pem(pair.0.clone(), pair.1.clone()).await {
                Ok(()) => {
                    loaded = Some(pair);
                    counters.reloads.inc();
                    tracing::info!(certificate = %self.certificate.display(), "reloaded the serving certificate");
                }
                Err(error) => {
                    rejected = Some(pair);
                    counters.failures.inc();
                    tracing::error!(certificate = %self.certificate.display(), key = %self.key.display(), %error,
                        "the changed serving certificate does not load; keeping the previous one");
                }
            }
        }
    }
}

async fn read_pair(certificate: &Path, key: &Path) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    Ok((tokio::fs::read(certificate).await?, tokio::fs::read(key).await?))
}
