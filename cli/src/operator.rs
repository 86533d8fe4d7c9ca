//! `palisade operator`: flags (with environment fallbacks) into an `OperatorConfig`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use palisade_operator::{LeaseConfig, OperatorConfig, ServiceAccountRef, Timings};

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Kubeconfig file; without it, the in-cluster ServiceAccount (or $KUBECONFIG) is used.
    #[arg(long, env = "PALISADE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Address of the plan stream (TLS WebSocket) for agents.
    #[arg(long, env = "PALISADE_STREAM_ADDRESS", default_value = "0.0.0.0:8443")]
    stream_address: SocketAddr,

    /// PEM certificate (chain) served on the plan stream.
    #[arg(long, env = "PALISADE_TLS_CERT")]
    tls_cert: PathBuf,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "PALISADE_TLS_KEY")]
    tls_key: PathBuf,

    /// Address of /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "PALISADE_PROBE_ADDRESS", default_value = "0.0.0.0:9090")]
    probe_address: SocketAddr,

    /// The agents' ServiceAccount as NAMESPACE/NAME; only its tokens may subscribe to plans.
    #[arg(long, env = "PALISADE_AGENT_SERVICE_ACCOUNT", value_parser = parse_service_account)]
    agent_service_account: ServiceAccountRef,

    /// The audience agent tokens must carry (their projected token's `audience`); unset: the API
    /// server's own.
    #[arg(long, env = "PALISADE_AGENT_TOKEN_AUDIENCE")]
    agent_token_audience: Option<String>,

    /// Name of the Lease that elects the replica writing status.
    #[arg(long, env = "PALISADE_LEASE_NAME", default_value = "palisade-operator")]
    lease_name: String,

    /// Namespace of the Lease (normally the operator's own, from the downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: String,

    /// Seconds a Lease claim lasts without renewal.
    #[arg(long, env = "PALISADE_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration_seconds: u64,

    /// This replica's identity in the Lease and in Events (normally the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: String,

    /// Seconds between pings to each agent on its plan stream.
    #[arg(long, env = "PALISADE_STREAM_PING_INTERVAL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    stream_ping_interval_seconds: u64,

    /// Seconds without any frame from an agent (its pongs included) after which its stream is
    /// closed; also the bound on each send. At least twice the ping interval.
    #[arg(long, env = "PALISADE_STREAM_IDLE_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3600))]
    stream_idle_timeout_seconds: u64,
}

fn parse_service_account(text: &str) -> Result<ServiceAccountRef, String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ServiceAccountRef { namespace: namespace.to_owned(), name: name.to_owned() })
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {text:?}")),
    }
}

impl OperatorArgs {
    fn into_config(self) -> anyhow::Result<OperatorConfig> {
        if self.stream_idle_timeout_seconds < 2 * self.stream_ping_interval_seconds {
            anyhow::bail!(
                "--stream-idle-timeout-seconds ({}) must be at least twice --stream-ping-interval-seconds ({}), \
                 or a live agent between two pings looks dead",
                self.stream_idle_timeout_seconds,
                self.stream_ping_interval_seconds
            );
        }
        let mut lease = LeaseConfig::new(self.lease_name, self.lease_namespace);
        lease.duration = Duration::from_secs(self.lease_duration_seconds);
        lease.grace = Duration::from_secs((self.lease_duration_seconds / 3).max(1));
        Ok(OperatorConfig {
            kubeconfig: self.kubeconfig,
            stream_address: self.stream_address,
            tls_certificate: self.tls_cert,
            tls_key: self.tls_key,
            probe_address: self.probe_address,
            agent_service_account: self.agent_service_account,
            agent_token_audience: self.agent_token_audience,
            lease,
            identity: self.identity,
            timings: Timings {
                stream_ping_interval: Duration::from_secs(self.stream_ping_interval_seconds),
                stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout_seconds),
                ..Timings::default()
            },
        })
    }
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    palisade_operator::run(args.into_config()?).await.context("the operator failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: OperatorArgs,
    }

    const REQUIRED: [&str; 10] = [
        "x",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--lease-namespace",
        "ns",
        "--identity",
        "op-0",
        "--agent-service-account=palisade/agent",
    ];

    #[test]
    fn parses_flags_into_a_config() {
        let config =
            Wrapper::try_parse_from(REQUIRED).expect("valid flags").args.into_config().expect("a consistent config");
        assert_eq!(
            config.agent_service_account,
            ServiceAccountRef { namespace: "palisade".into(), name: "agent".into() }
        );
        assert_eq!(config.lease.namespace, "ns");
        assert_eq!(config.stream_address.port(), 8443);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let mut args: Vec<&str> = REQUIRED.to_vec();
        args[9] = "--agent-service-account=agent";
        let error = Wrapper::try_parse_from(args).expect_err("invalid service account").to_string();
        assert!(error.contains("--agent-service-account"), "{error}");
        let mut args: Vec<&str> = REQUIRED.to_vec();
        args.extend(["--stream-address", "nowhere"]);
        let error = Wrapper::try_parse_from(args).expect_err("invalid address").to_string();
        assert!(error.contains("--stream-address"), "{error}");
        let mut args: Vec<&str> = REQUIRED.to_vec();
        args.extend(["--stream-ping-interval-seconds", "10", "--stream-idle-timeout-seconds", "15"]);
        let error = Wrapper::try_parse_from(args).expect("each flag parses").args.into_config().expect_err("too tight");
        assert!(error.to_string().contains("--stream-idle-timeout-seconds"), "{error}");
    }
}
