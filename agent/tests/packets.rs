//! Real packets: a node namespace routing two pod namespaces, TCP probes flipped by plans.
//!
//! Built by hand (veth pairs and routes) rather than with the shared testkit, to keep this crate's
//! tests free of the testkit's Kubernetes dependencies.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use palisade_agent::{RenderConfig, render};
use palisade_engine::model::PolicyKind;
use palisade_engine::plan::{Action, Direction, DirectionPlan, Group, LocalPod, NodePlan, PeerMatch, PortMatch};

const CLIENT_IP: &str = "198.18.1.10";
const SERVER_IP: &str = "198.18.2.10";
const PORT: u16 = 8080;

/// Moves the calling thread into a named network namespace.
fn enter_netns(name: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{name}")).expect("open netns");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// A TCP server in `netns` accepting until dropped.
struct Server {
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(netns: &str, addr: SocketAddr) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (netns, flag) = (netns.to_string(), stop.clone());
        std::thread::spawn(move || {
            enter_netns(&netns);
            let listener = TcpListener::bind(addr).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = ready_tx.send(());
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("server ready");
        Server { stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// True when a TCP connection from inside `netns` to `addr` is established within 1 s.
fn connects(netns: &str, addr: SocketAddr) -> bool {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        enter_netns(&netns);
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })
    .join()
    .expect("probe thread")
}

struct Topology {
    node: Netns,
    client: Netns,
    server: Netns,
}

/// node routes 198.18.1.0/24 (client) and 198.18.2.0/24 (server); pods default-route via it.
fn topology() -> Topology {
    let (node, client, server) = (Netns::new(), Netns::new(), Netns::new());
    node.sh("sysctl -qw net.ipv4.ip_forward=1");
    for (pod, index, ip) in [(&client, 1, CLIENT_IP), (&server, 2, SERVER_IP)] {
        let host_side = format!("pv{index}");
        node.sh(&format!("ip link add {host_side} type veth peer name eth0 netns {}", pod.name));
        node.sh(&format!("ip addr add 198.18.{index}.1/24 dev {host_side} && ip link set {host_side} up"));
        pod.sh(&format!(
            "ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via 198.18.{index}.1"
        ));
    }
    Topology { node, client, server }
}

/// The node addresses come from the override here (the flag path); other tests take them from the plan.
fn config() -> RenderConfig {
    RenderConfig { node_ips: vec![ip("198.18.1.1"), ip("198.18.2.1")], ..RenderConfig::default() }
}

/// The server pod is isolated for ingress by a NetworkPolicy allowing `allowed` on tcp/8080, and
/// optionally by an admin policy denying the client first.
fn plan(allowed: &[&str], admin_deny_client: bool) -> NodePlan {
    let mut groups = BTreeMap::new();
    groups.insert(gid(CLIENTS), Group::Addresses(allowed.iter().map(|text| ip(text)).collect()));
    groups.insert(gid(BLOCK), Group::Addresses(BTreeSet::from([ip(CLIENT_IP)])));
    let mut rule_sets = BTreeMap::new();
    rule_sets.insert(
        rsid(NP_INGRESS),
        rule_set(
            PolicyKind::NetworkPolicy,
            "allow-clients",
            Direction::Ingress,
            vec![rule(
                0,
                Action::Accept,
                PeerMatch::AnyOf(vec![gid(CLIENTS)]),
                PortMatch::AnyOf(vec![tcp(PORT, PORT)]),
            )],
        ),
    );
    rule_sets.insert(
        rsid(ADMIN_EGRESS),
        rule_set(
            PolicyKind::ClusterNetworkPolicy,
            "deny-client",
            Direction::Ingress,
            vec![rule(0, Action::Deny, PeerMatch::AnyOf(vec![gid(BLOCK)]), PortMatch::Any)],
        ),
    );
    let mut pods = BTreeMap::new();
    pods.insert(
        pod("default", "server"),
        LocalPod {
            ips: vec![ip(SERVER_IP)],
            ingress: DirectionPlan {
                admin: if admin_deny_client { vec![rsid(ADMIN_EGRESS)] } else { Vec::new() },
                network_policy: Some(vec![rsid(NP_INGRESS)]),
                baseline: Vec::new(),
            },
            egress: DirectionPlan::default(),
        },
    );
    pods.insert(pod("default", "client"), LocalPod { ips: vec![ip(CLIENT_IP)], ..LocalPod::default() });
    NodePlan { node: "node-a".into(), node_ips: Vec::new(), pods, rule_sets, groups }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_flip_real_tcp_connections() {
    let topology = topology();
    let target: SocketAddr = format!("{SERVER_IP}:{PORT}").parse().expect("addr");
    let _server = Server::start(&topology.server.name, target);
    assert!(connects(&topology.client.name, target), "no policy yet: the topology must connect");

    let mut applier = topology.node.applier();
    applier.sync(&render(&plan(&[CLIENT_IP], false), &config())).await.expect("allow");
    assert!(connects(&topology.client.name, target), "client is in the allowed group");

    let churn = applier.sync(&render(&plan(&[], false), &config())).await.expect("deny by churn");
    assert_eq!(churn.iptables_lines, 0, "group membership change must be set-only");
    assert!(!connects(&topology.client.name, target), "client left the allowed group");
    assert!(connects(&topology.node.name, target), "the node itself (kubelet probes) is always allowed");

    applier.sync(&render(&plan(&[CLIENT_IP], true), &config())).await.expect("admin deny");
    assert!(!connects(&topology.client.name, target), "admin Deny wins over the NetworkPolicy allow");

    applier.cleanup().await.expect("cleanup");
    assert!(connects(&topology.client.name, target), "cleanup restores connectivity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reaches_isolated_pods_from_any_host_address_without_a_node_ip_flag() {
    let topology = topology();
    // The Node object's InternalIP is on another interface than the one facing the pods (as a
    // node's eth0 beside a CNI bridge): connections to pods leave from the bridge-side address.
    topology
        .node
        .sh("ip link add internal0 type veth peer name internal1 && ip addr add 198.18.100.1/32 dev internal0");
    let target: SocketAddr = format!("{SERVER_IP}:{PORT}").parse().expect("addr");
    let _server = Server::start(&topology.server.name, target);
    let mut isolated = plan(&[], false);
    isolated.node_ips = vec![ip("198.18.100.1")];
    let rendered = render(&isolated, &RenderConfig::default());
    assert!(
        rendered.v4.chains["PAL-INGRESS"].iter().any(|rule| rule.spec.contains("-s 198.18.100.1/32 -j RETURN")),
        "the plan's node address is allowed without any flag"
    );
    let mut applier = topology.node.applier();
    applier.sync(&rendered).await.expect("isolate the server");
    assert!(!connects(&topology.client.name, target), "the server is isolated");
    assert!(connects(&topology.node.name, target), "the node's own traffic (kubelet probes) is always allowed");
    applier.cleanup().await.expect("cleanup");
}
