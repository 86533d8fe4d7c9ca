//! `palisade`: one binary for every Palisade process.
//!
//! - `palisade operator`: the operator (index, plan stream, status), see `palisade-operator`.
//! - `palisade webhook`: the validating admission webhook, see `palisade-webhook`.
//! - `palisade lint FILE|DIR|-`: the admission analysis over manifests, see `palisade-webhook`.
//! - `palisade agent run|cleanup`: the node agent (plan stream client, dataplane, health) and the
//!   removal of everything it installed, see `palisade-agent`.
//! - `palisade uninstall`: the chart's pre-delete hook, which cleans every node.
//! - `palisade selftest listen|connect`: the two ends of the chart's `helm test`.
//!
//! Flags have environment fallbacks here; the work is in the libraries.

mod agent;
mod lint;
mod operator;
mod selftest;
mod uninstall;
mod webhook;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Palisade: Kubernetes NetworkPolicy and ClusterNetworkPolicy enforcement"
)]
struct Cli {
    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,palisade_operator=debug`).
    #[arg(long, env = "PALISADE_LOG", default_value = "info", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: watch the cluster, stream node plans to agents, write policy status.
    Operator(operator::OperatorArgs),
    /// Run the node agent, or remove what it installed.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Run the validating admission webhook: refuse contradictory policies before they apply.
    Webhook(webhook::WebhookArgs),
    /// Check manifests as the admission webhook would: contradictions are errors, mistakes warnings.
    Lint(lint::LintArgs),
    /// Remove Palisade from every node: stop the agents, then clean each node (the chart's
    /// pre-delete hook).
    Uninstall(uninstall::UninstallArgs),
    /// The ends of `helm test`: a TCP server, and a client that checks a flow is open or closed.
    #[command(subcommand)]
    Selftest(selftest::SelftestCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .map_err(|error| anyhow::anyhow!("--log {:?} is not a valid filter: {error}", cli.log))?;
    // Colour codes only on a terminal: log files and collectors get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).init();
    match cli.command {
        Command::Operator(args) => operator::run(args).await,
        Command::Agent(command) => agent::run(command).await,
        Command::Webhook(args) => webhook::run(args).await,
        Command::Uninstall(args) => uninstall::run(args).await,
        // Plain blocking sockets: this process does nothing else.
        Command::Selftest(command) => selftest::run(command),
        // Lint's output is its report; it exits with its verdict.
        Command::Lint(args) => std::process::exit(lint::run(args)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
