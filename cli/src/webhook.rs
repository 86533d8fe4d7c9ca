//! `palisade webhook`: flags (with environment fallbacks) into a `WebhookConfig`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use palisade_webhook::review::ConflictMode;
use palisade_webhook::server::{self, WebhookConfig};

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Kubeconfig file; without it, the in-cluster ServiceAccount (or $KUBECONFIG) is used.
    #[arg(long, env = "PALISADE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Address of the admission endpoint (`POST /validate`, TLS).
    #[arg(long, env = "PALISADE_WEBHOOK_ADDRESS", default_value = "0.0.0.0:9443")]
    address: SocketAddr,

    /// PEM certificate (chain) the endpoint serves; reloaded when the file changes.
    #[arg(long, env = "PALISADE_TLS_CERT")]
    tls_cert: PathBuf,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "PALISADE_TLS_KEY")]
    tls_key: PathBuf,

    /// Address of /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "PALISADE_PROBE_ADDRESS", default_value = "0.0.0.0:9091")]
    probe_address: SocketAddr,

    /// What to do with contradictions: refuse the request, or admit it with warnings.
    #[arg(long, env = "PALISADE_CONFLICTS", value_enum, default_value_t = Conflicts::Reject)]
    conflicts: Conflicts,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Conflicts {
    Reject,
    Warn,
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let config = WebhookConfig {
        kubeconfig: args.kubeconfig,
        address: args.address,
        tls_certificate: args.tls_cert,
        tls_key: args.tls_key,
        probe_address: args.probe_address,
        conflicts: match args.conflicts {
            Conflicts::Reject => ConflictMode::Reject,
            Conflicts::Warn => ConflictMode::Warn,
        },
        tls_reload: Duration::from_secs(10),
    };
    server::run(config).await?;
    Ok(())
}
