//! New-connection rate through the enforced dataplane: TCP connections per second from a pod on
//! node n1 to a pod on node n2 (both nodes' FORWARD chains in the path), with no policies, with
//! 1,000 NetworkPolicies selecting the destination pod, and with 1,000 admin-tier
//! ClusterNetworkPolicies selecting it.
//!
//! Only the first packet of a connection walks our chains (established traffic takes the
//! conntrack fast path), so new connections are where rule count costs. 999 NetworkPolicies
//! allow peers that never match (distinct CIDRs) and the one that allows the source sorts last;
//! 1,000 admin policies deny namespaces that do not exist, in priority order, and a NetworkPolicy
//! allows the source. Rendered one rule set after another, every SYN would walk all 1,000.

use std::net::SocketAddr;
use std::time::Duration;

use palisade_dataplane_tests::Testbed;
use palisade_dataplane_tests::palisade_testkit::{self, ClusterSpec, Family, Port, netns};
use palisade_dataplane_tests::policies::*;
use palisade_engine::model::{CnpAction, CnpPeer, Policy, PolicyType, Protocol, Tier};

const RUN: Duration = Duration::from_secs(3);
/// Alternating rounds, so that a busy moment of the machine hits both sides alike.
const ROUNDS: usize = 5;
const POLICIES: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(bench())
}

fn network_policies() -> Vec<Policy> {
    let selects_server = || labels(&[("pod", "server")]);
    let mut policies: Vec<Policy> = (0..POLICIES - 1)
        .map(|index| {
            let cidr = format!("10.{}.{}.0/24", index / 256, index % 256);
            network_policy(
                "b",
                &format!("p{index:04}"),
                selects_server(),
                &[PolicyType::Ingress],
                vec![np_rule(vec![ip_block(&cidr, &[])], vec![port(Protocol::Tcp, 80)])],
                vec![],
            )
        })
        .collect();
    policies.push(network_policy(
        "b",
        "zz-allow-client",
        selects_server(),
        &[PolicyType::Ingress],
        vec![np_rule(vec![from_namespaces(labels(&[("ns", "a")]))], vec![port(Protocol::Tcp, 80)])],
        vec![],
    ));
    policies
}

fn admin_policies() -> Vec<Policy> {
    let mut policies: Vec<Policy> = (0..POLICIES)
        .map(|index| {
            let nobody = CnpPeer::Namespaces(labels(&[("ns", &format!("absent-{index}"))]));
            cluster_policy(
                &format!("deny-absent-{index:04}"),
                Tier::Admin,
                i32::try_from(index % 1000).unwrap_or(1000),
                labels(&[("ns", "b")]),
                vec![cnp_rule(CnpAction::Deny, vec![nobody], Some(vec![cnp_port(Protocol::Tcp, 80)]))],
                vec![],
            )
        })
        .collect();
    policies.push(network_policy(
        "b",
        "allow-client",
        labels(&[("pod", "server")]),
        &[PolicyType::Ingress],
        vec![np_rule(vec![from_namespaces(labels(&[("ns", "a")]))], vec![port(Protocol::Tcp, 80)])],
        vec![],
    ));
    policies
}

/// Connections completed (connect, read the greeting to EOF, close) in `RUN`, from one thread in
/// the client pod's namespace.
fn connection_rate(client_netns: &str, target: SocketAddr) -> Result<f64, Box<dyn std::error::Error>> {
    let (completed, failed, elapsed) =
        netns::in_netns(client_netns, move || palisade_testkit::connection_rate_blocking(target, RUN))?;
    if failed > 0 {
        println!("  ({failed} connections failed)");
    }
    Ok(completed as f64 / elapsed.as_secs_f64())
}

async fn bench() -> Result<(), Box<dyn std::error::Error>> {
    let spec = ClusterSpec::new().node("n1").node("n2").pod("a", "client", "n1", &[Port::tcp(80)]).pod(
        "b",
        "server",
        "n2",
        &[Port::tcp(80)],
    );
    let mut testbed = Testbed::build(spec)?;
    let client = testbed.net.pod("a/client")?.clone();
    let target = SocketAddr::new(testbed.net.pod("b/server")?.ip(Family::V4), 80);
    // Many short connections: let the client reuse ports in TIME_WAIT.
    testbed.net.exec(&client.netns, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;

    let scenarios = [
        (format!("{POLICIES} NetworkPolicies on the pod"), network_policies()),
        (format!("{POLICIES} admin ClusterNetworkPolicies"), admin_policies()),
    ];
    let mut plans = Vec::new();
    for (name, policies) in &scenarios {
        assert!(
            testbed.reference_allows(policies, "a/client", "b/server", Port::tcp(80), Family::V4)?,
            "{name}: the reference must allow the probed flow"
        );
        plans.push(testbed.compile(policies)?);
    }
    let plans_without = testbed.compile(&[])?;

    connection_rate(&client.netns, target)?; // warm-up: ARP/ND, caches
    let mut without = Vec::new();
    let mut with: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut rules_on_server_node = vec![0; scenarios.len()];
    for _ in 0..ROUNDS {
        testbed.enforce_plans(&plans_without).await?;
        without.push(connection_rate(&client.netns, target)?);
        for (index, plan) in plans.iter().enumerate() {
            testbed.enforce_plans(plan).await?;
            with[index].push(connection_rate(&client.netns, target)?);
            rules_on_server_node[index] = testbed
                .net
                .node_exec("n2", &["iptables-save", "-t", "filter"])?
                .lines()
                .filter(|line| line.contains("\"pal:"))
                .count();
        }
    }
    testbed.cleanup().await?;

    let median = |runs: &[f64]| {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let show = |runs: &[f64]| runs.iter().map(|rate| format!("{rate:.0}")).collect::<Vec<_>>().join(", ");
    println!(
        "new TCP connections/s, a/client (n1) -> b/server (n2), {ROUNDS} alternating runs of {} s each, one client thread; medians",
        RUN.as_secs()
    );
    let baseline = median(&without);
    println!("  {:<40} {baseline:>8.0}/s  (runs: {})", "no policies", show(&without));
    for (index, (name, _)) in scenarios.iter().enumerate() {
        let rate = median(&with[index]);
        println!(
            "  {name:<40} {rate:>8.0}/s  (runs: {}; {} IPv4 rules on n2); ratio {:.1}% (goal >= 90%)",
            show(&with[index]),
            rules_on_server_node[index],
            100.0 * rate / baseline
        );
    }
    Ok(())
}
