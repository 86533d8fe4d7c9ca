//! `palisade agent run|cleanup`: flags (with environment fallbacks) into an `AgentConfig`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_agent::backend::Backend;
use palisade_agent::render::DEFAULT_MARK;
use palisade_agent::{AgentConfig, Applier, ApplyConfig};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Enforce this node's plans: the persisted plan first, then the operator's plan stream.
    Run(RunArgs),
    /// Remove every chain, hook rule and ipset Palisade owns on this node; nothing else.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// This node's name (normally from the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node: String,

    /// The operator's plan-stream service: HOST:PORT or wss://HOST:PORT.
    #[arg(long, env = "PALISADE_OPERATOR")]
    operator: String,

    /// ServiceAccount token presented to the operator; re-read at every connect (tokens rotate).
    #[arg(long, env = "PALISADE_TOKEN_FILE", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    token_file: PathBuf,

    /// PEM bundle of the CA that signed the operator's serving certificate.
    #[arg(long, env = "PALISADE_CA_FILE", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")]
    ca_file: PathBuf,

    /// Directory where the last enforced plan is persisted.
    #[arg(long, env = "PALISADE_STATE_DIR", default_value = "/var/lib/palisade")]
    state_dir: PathBuf,

    /// Overrides the node's own addresses, which the plan carries from the Node object (repeat or
    /// comma-separate); ingress from them is always allowed. Normally left unset.
    #[arg(long = "node-ip", env = "NODE_IPS", value_delimiter = ',')]
    node_ips: Vec<IpAddr>,

    /// The single packet-mark bit the dataplane may use, e.g. 0x10000.
    #[arg(long, env = "PALISADE_MARK", default_value_t = DEFAULT_MARK, value_parser = parse_mark)]
    mark: u32,

    /// Program this network namespace (`ip netns exec`) instead of the agent's own.
    #[arg(long, env = "PALISADE_NETNS")]
    netns: Option<String>,

    /// Do not program ip6tables (IPv4-only nodes without IPv6 netfilter).
    #[arg(long, env = "PALISADE_NO_IPV6")]
    no_ipv6: bool,

    /// Address of /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "PALISADE_HEALTH_ADDRESS", default_value = "0.0.0.0:9102")]
    health_address: SocketAddr,

    /// Seconds between drift checks (the kernel is read back and repaired).
    #[arg(long, env = "PALISADE_RESYNC_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    resync_seconds: u64,

    /// Seconds without any frame from the operator (its pings included) after which the plan
    /// stream counts as dead and the agent reconnects; also the bound on each report sent and on
    /// each connection attempt. The
    /// operator pings at least three times as often (`--stream-ping-interval-seconds`).
    #[arg(long, env = "PALISADE_STREAM_IDLE_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    stream_idle_timeout_seconds: u64,

    /// Which iptables backend to program: `auto` detects the one the node's other tools use
    /// (kubelet's canary chains, else the backend holding more rules), or `legacy`, or `nft`.
    #[arg(long, env = "PALISADE_IPTABLES_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    iptables_backend: BackendChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendChoice {
    Auto,
    Legacy,
    Nft,
}

impl BackendChoice {
    /// `None`: let the agent detect it.
    fn backend(self) -> Option<Backend> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Legacy => Some(Backend::Legacy),
            BackendChoice::Nft => Some(Backend::Nft),
        }
    }
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Clean this network namespace (`ip netns exec`) instead of the agent's own.
    #[arg(long, env = "PALISADE_NETNS")]
    netns: Option<String>,

    /// Leave ip6tables alone (IPv4-only nodes without IPv6 netfilter).
    #[arg(long, env = "PALISADE_NO_IPV6")]
    no_ipv6: bool,

    /// After cleaning, stay up until SIGTERM or SIGINT (the uninstall's DaemonSet: a running pod
    /// is a cleaned node).
    #[arg(long)]
    hold: bool,
}

/// Accepts decimal or 0x-hex; exactly one bit, because the dataplane clears and tests only it.
fn parse_mark(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    let mark = parsed.map_err(|error| format!("{text:?} is not a number: {error}"))?;
    if mark.count_ones() != 1 {
        return Err(format!("{text:?} must have exactly one bit set"));
    }
    Ok(mark)
}

impl RunArgs {
    fn into_config(self) -> AgentConfig {
        AgentConfig {
            token_file: self.token_file,
            ca_file: self.ca_file,
            state_dir: self.state_dir,
            node_ips: self.node_ips,
            mark: self.mark,
            netns: self.netns,
            ipv6: !self.no_ipv6,
            health_addr: self.health_address,
            resync_interval: Duration::from_secs(self.resync_seconds),
            stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout_seconds),
            iptables_backend: self.iptables_backend.backend(),
            ..AgentConfig::new(self.node, self.operator)
        }
    }
}

pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Run(args) => palisade_agent::run(args.into_config()).await.context("the agent failed"),
        AgentCommand::Cleanup(args) => {
            let mut config = ApplyConfig { netns: args.netns, ipv6: !args.no_ipv6, ..ApplyConfig::default() };
            // Clean where the agent would have written: the backend the node uses.
            let runner = palisade_agent::exec::Runner { ip: config.binaries.ip.clone(), netns: config.netns.clone() };
            let detection = palisade_agent::backend::detect(&runner).await;
            println!("iptables backend: {} ({})", detection.backend, detection.why);
            config.binaries = detection.backend.binaries(config.binaries);
            let report = Applier::new(config).cleanup().await.context("cleanup failed")?;
            println!(
                "removed {} chains, {} hook rules, {} sets",
                report.chains_deleted, report.marked_rules_deleted, report.sets_destroyed
            );
            if args.hold {
                hold_until_stopped().await?;
            }
            Ok(())
        }
    }
}

async fn hold_until_stopped() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: AgentCommand,
    }

    fn parse(args: &[&str]) -> Result<AgentCommand, String> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Wrapper::try_parse_from(all).map(|wrapper| wrapper.command).map_err(|error| error.to_string())
    }

    #[test]
    fn parses_run_flags_into_a_config() {
        let parsed = parse(&[
            "run",
            "--node",
            "n1",
            "--operator",
            "op:8443",
            "--node-ip",
            "10.0.0.1,fd00::1",
            "--mark",
            "0x20000",
            "--netns",
            "ns1",
        ]);
        let Ok(AgentCommand::Run(args)) = parsed else { panic!("expected run: {parsed:?}") };
        let config = args.into_config();
        assert_eq!(config.node, "n1");
        assert_eq!(config.node_ips.len(), 2);
        assert_eq!(config.mark, 0x20000);
        assert_eq!(config.netns.as_deref(), Some("ns1"));
        assert_eq!(config.resync_interval, Duration::from_secs(60));
        assert!(config.ipv6);
        assert_eq!(config.iptables_backend, None, "auto by default: detected at start");
        assert_eq!(config.stream_idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let base = ["run", "--node", "n1", "--operator", "op:8443"];
        for (flag, value) in [
            ("--mark", "0x3"),
            ("--node-ip", "nowhere"),
            ("--health-address", "x"),
            ("--resync-seconds", "0"),
            ("--iptables-backend", "bogus"),
        ] {
            let mut args = base.to_vec();
            args.extend([flag, value]);
            let error = parse(&args).expect_err("invalid flag");
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn cleanup_takes_a_namespace() {
        let parsed = parse(&["cleanup", "--netns", "n1"]);
        assert!(matches!(parsed, Ok(AgentCommand::Cleanup(CleanupArgs { netns: Some(ref name), .. })) if name == "n1"));
    }
}
