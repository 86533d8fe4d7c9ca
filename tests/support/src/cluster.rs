//! A Kubernetes-shaped cluster made of network namespaces: nodes, pods wired Calico-style, probe
//! servers in every pod, and (as a separate step) matching Node and Pod objects in an apiserver.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node as K8sNode, Pod as K8sPod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::control_plane::ControlPlane;
use crate::error::{Error, Result, io_at};
use crate::matrix::{Reachability, ReachabilityCell};
use crate::netns::{self, delete_namespaces, ip_batch, require_root, sweep_dead_namespaces, sysctl};
use crate::probe::{DEFAULT_PROBE_TIMEOUT, ProbeOutcome, Protocol, probe_blocking};
use crate::process::{ManagedProcess, log_tail, workspace_binary};

/// IPv4 or IPv6: every pod and node has one address of each.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A port a pod serves (and declares as a named container port).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub protocol: Protocol,
    pub number: u16,
}

impl Port {
    pub fn tcp(number: u16) -> Self {
        Port { protocol: Protocol::Tcp, number }
    }

    pub fn udp(number: u16) -> Self {
        Port { protocol: Protocol::Udp, number }
    }

    /// The container port name, upstream netpol e2e style: `serve-80-tcp`.
    pub fn name(&self) -> String {
        format!("serve-{}-{}", self.number, self.protocol)
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.protocol, self.number)
    }
}

/// A node to build. `name` is logical (`n1`); the netns and Node object get a run-unique name.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A pod to build: logical namespace and name, the node it runs on, labels and served ports.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<Port>,
}

/// What [`NetCluster::build`] builds. Start from [`ClusterSpec::netpol_matrix`] or [`ClusterSpec::grid`],
/// or add nodes and pods one by one.
#[derive(Clone, Debug, Default)]
pub struct ClusterSpec {
    pub nodes: Vec<NodeSpec>,
    pub pods: Vec<PodSpec>,
    /// Extra labels per logical namespace (every namespace also gets `ns=<logical name>`).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl ClusterSpec {
    pub fn new() -> Self {
        Self::default()
    }

    /// The upstream NetworkPolicy e2e model: namespaces x, y, z × pods a, b, c on 2 nodes, each pod
    /// serving TCP and UDP on 80 and 81.
    pub fn netpol_matrix() -> Self {
        let ports = [Port::tcp(80), Port::tcp(81), Port::udp(80), Port::udp(81)];
        Self::grid(&["x", "y", "z"], &["a", "b", "c"], 2, &ports)
    }

    /// Every pod name in every namespace, spread round-robin over `nodes` nodes (`n1`, `n2`, ...),
    /// so each namespace has pods on several nodes. Pods are labelled `pod=<name>`.
    pub fn grid(namespaces: &[&str], pods: &[&str], nodes: usize, ports: &[Port]) -> Self {
        let mut spec = Self::new();
        for n in 1..=nodes.max(1) {
            spec = spec.node(&format!("n{n}"));
        }
        let mut index = 0;
        for namespace in namespaces {
            for pod in pods {
                let node = format!("n{}", index % nodes.max(1) + 1);
                spec = spec.pod(namespace, pod, &node, ports);
                index += 1;
            }
        }
        spec
    }

    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push(NodeSpec { name: name.to_string(), labels: BTreeMap::new() });
        self
    }

    /// Adds a pod labelled `pod=<name>`.
    pub fn pod(mut self, namespace: &str, name: &str, node: &str, ports: &[Port]) -> Self {
        self.pods.push(PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: node.to_string(),
            labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
            ports: ports.to_vec(),
        });
        self
    }

    /// Adds a fully specified pod.
    pub fn pod_spec(mut self, pod: PodSpec) -> Self {
        self.pods.push(pod);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() || self.nodes.len() > 200 {
            return Err(Error::Invalid(format!("a cluster needs 1..=200 nodes, got {}", self.nodes.len())));
        }
        for pod in &self.pods {
            if !self.nodes.iter().any(|n| n.name == pod.node) {
                return Err(Error::Invalid(format!(
                    "pod {}/{} is on unknown node {}",
                    pod.namespace, pod.name, pod.node
                )));
            }
            if self.pods.iter().filter(|p| p.namespace == pod.namespace && p.name == pod.name).count() > 1 {
                return Err(Error::Invalid(format!("pod {}/{} is declared twice", pod.namespace, pod.name)));
            }
        }
        for node in &self.nodes {
            if self.pods.iter().filter(|p| p.node == node.name).count() > 240 {
                return Err(Error::Invalid(format!("node {} has more than 240 pods", node.name)));
            }
        }
        Ok(())
    }
}

/// A built node: a network namespace routing its pods.
#[derive(Clone, Debug)]
pub struct Node {
    /// Logical name from the spec (`n1`).
    pub name: String,
    /// Network namespace, also used as the Node object's name (`pal-<pid>-<run>-n1`).
    pub netns: String,
    pub labels: BTreeMap<String, String>,
    /// Address on the fabric link (`fab0`): the Node's InternalIP and every local pod's hostIP.
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// Fixed link-local address on `fab0`, the IPv6 next hop other nodes use.
    pub link_local: Ipv6Addr,
    pub pod_cidr_v4: String,
    pub pod_cidr_v6: String,
}

impl Node {
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.ipv4),
            Family::V6 => IpAddr::V6(self.ipv6),
        }
    }
}

/// A built pod: a network namespace with `eth0`, joined to its node by a veth.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Logical namespace from the spec (`x`); [`NetCluster::k8s_namespace`] maps it to the API name.
    pub namespace: String,
    pub name: String,
    /// Logical node name.
    pub node: String,
    pub netns: String,
    /// The node-side end of the pod's veth (in the node's namespace), e.g. for tc or iptables rules.
    pub host_veth: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Pod {
    /// `namespace/name`, the id used in grids and by [`NetCluster::pod`].
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.ipv4),
            Family::V6 => IpAddr::V6(self.ipv6),
        }
    }
}

/// The IPv4 gateway every pod routes to (onlink); the node answers ARP for it via proxy ARP.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 gateway every pod routes to; each node-side veth owns it (there are no RAs).
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// Nodes, pods and their probe servers, all in network namespaces named `pal-<pid>-<run>-...`.
///
/// Addressing (nothing outside 198.18.0.0/15 and fd00:198:18::/48):
/// - fabric bridge `br0` in its own namespace: 198.18.0.1/24, fd00:198:18::1/64;
/// - node *i* (1-based) on `fab0`: 198.18.0.(10+i)/24, fd00:198:18::(10+i)/64, fe80::(10+i);
/// - pods of node *i*: 198.18.*i*.(10+k)/32 and fd00:198:18:*i*::(10+k)/128, routed by the node
///   with /32 and /128 routes onto `pv<k>` veths; pods default-route via 169.254.1.1 / fe80::1.
///
/// Dropping it kills the probe servers and deletes every namespace; namespaces of dead runs are
/// swept at the next build.
pub struct NetCluster {
    run: String,
    fabric: String,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    servers: Vec<ManagedProcess>,
    relay: Option<ApiserverRelay>,
    created_netns: Vec<String>,
    dir: tempfile::TempDir,
}

impl NetCluster {
    /// Builds the namespaces, links, addresses, routes and probe servers, and returns once every
    /// probe server listens. Needs root. Blocking (about a second for the 9-pod model).
    pub fn build(spec: ClusterSpec) -> Result<Self> {
        require_root()?;
        spec.validate()?;
        let probe_binary = probe_binary()?;
        sweep_dead_namespaces();

        let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        let run = format!("{}{}-{seq}", netns::NETNS_PREFIX, std::process::id());
        let dir = tempfile::Builder::new().prefix("palisade-net-").tempdir().map_err(io_at(std::env::temp_dir()))?;
        let mut cluster = NetCluster {
            fabric: format!("{run}-fabric"),
            run,
            nodes: Vec::new(),
            pods: Vec::new(),
            namespace_labels: spec.namespace_labels.clone(),
            servers: Vec::new(),
            relay: None,
            created_netns: Vec::new(),
            dir,
        };
        cluster.plan(&spec);
        cluster.wire()?;
        cluster.start_probe_servers(&probe_binary)?;
        Ok(cluster)
    }

    /// Assigns names and addresses (no side effects).
    fn plan(&mut self, spec: &ClusterSpec) {
        for (i, node_spec) in spec.nodes.iter().enumerate() {
            let i = i as u16 + 1;
            let mut labels = node_spec.labels.clone();
            let netns = format!("{}-{}", self.run, node_spec.name);
            labels.insert("kubernetes.io/hostname".into(), netns.clone());
            self.nodes.push(Node {
                name: node_spec.name.clone(),
                netns,
                labels,
                ipv4: Ipv4Addr::new(198, 18, 0, 10 + i as u8),
                ipv6: Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 10 + i),
                link_local: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 10 + i),
                pod_cidr_v4: format!("198.18.{i}.0/24"),
                pod_cidr_v6: format!("fd00:198:18:{i:x}::/64"),
            });
        }
        for (index, pod_spec) in spec.pods.iter().enumerate() {
            let Some(node_index) = self.nodes.iter().position(|n| n.name == pod_spec.node) else { continue };
            let i = node_index as u16 + 1;
            let k = self.pods.iter().filter(|p| p.node == pod_spec.node).count() as u16;
            self.pods.push(Pod {
                namespace: pod_spec.namespace.clone(),
                name: pod_spec.name.clone(),
                node: pod_spec.node.clone(),
                netns: format!("{}-{}-{}-{}", self.run, pod_spec.node, pod_spec.namespace, pod_spec.name),
                host_veth: format!("pv{index}"),
                labels: pod_spec.labels.clone(),
                ports: pod_spec.ports.clone(),
                ipv4: Ipv4Addr::new(198, 18, i as u8, 10 + k as u8),
                ipv6: Ipv6Addr::new(0xfd00, 0x198, 0x18, i, 0, 0, 0, 10 + k),
            });
        }
    }

    fn wire(&mut self) -> Result<()> {
        let all: Vec<String> = std::iter::once(self.fabric.clone())
            .chain(self.nodes.iter().map(|n| n.netns.clone()))
            .chain(self.pods.iter().map(|p| p.netns.clone()))
            .collect();
        for name in &all {
            crate::process::run("ip", &["netns", "add", name])?;
            self.created_netns.push(name.clone());
        }
        // Before any interface exists, so every new interface inherits "no DAD": addresses are
        // usable at once instead of after ~1 s of duplicate detection.
        let no_dad = [
            ("net.ipv6.conf.all.accept_dad".to_string(), "0"),
            ("net.ipv6.conf.default.accept_dad".to_string(), "0"),
            ("net.ipv6.conf.default.accept_ra".to_string(), "0"),
        ];
        for name in &all {
            sysctl(name, &no_dad)?;
        }
        for node in &self.nodes {
            sysctl(
                &node.netns,
                &[("net.ipv4.ip_forward".to_string(), "1"), ("net.ipv6.conf.all.forwarding".to_string(), "1")],
            )?;
        }

        // Fabric: one bridge; its addresses are the nodes' default gateway, which proxy ARP needs
        // (a node only answers for 169.254.1.1 if it has a route to it out of another interface).
        let mut fabric = vec![
            "link set lo up".to_string(),
            "link add br0 type bridge".to_string(),
            "addr add 198.18.0.1/24 dev br0".to_string(),
            "addr add fd00:198:18::1/64 dev br0 nodad".to_string(),
            "link set br0 up".to_string(),
        ];
        for (i, node) in self.nodes.iter().enumerate() {
            let mut commands = vec![
                "link set lo up".to_string(),
                // Explicit, distinct ifindexes on the two ends: the kernel treats a veth whose ifindex
                // equals its peer's (common across fresh namespaces: both are 2) as a non-urgent link
                // event, and activates it up to a second later; until then it drops every packet.
                format!(
                    "link add fab0 index 10 type veth peer name n{} index {} netns {}",
                    i + 1,
                    100 + i,
                    self.fabric
                ),
                format!("addr add {}/24 dev fab0", node.ipv4),
                format!("addr add {}/64 dev fab0 nodad", node.ipv6),
                format!("addr add {}/64 dev fab0 nodad", node.link_local),
                "link set fab0 up".to_string(),
                "route add default via 198.18.0.1 dev fab0".to_string(),
            ];
            for other in self.nodes.iter().filter(|o| o.name != node.name) {
                commands.push(format!("route add {} via {} dev fab0", other.pod_cidr_v4, other.ipv4));
                commands.push(format!("route add {} via {} dev fab0", other.pod_cidr_v6, other.link_local));
            }
            for pod in self.pods.iter().filter(|p| p.node == node.name) {
                commands.push(format!(
                    "link add {} index {} type veth peer name eth0 index 2 netns {}",
                    pod.host_veth,
                    1000 + pod_index(&pod.host_veth),
                    pod.netns
                ));
                commands.push(format!("addr add {POD_GATEWAY_V6}/64 dev {} nodad", pod.host_veth));
                commands.push(format!("link set {} up", pod.host_veth));
                commands.push(format!("route add {}/32 dev {}", pod.ipv4, pod.host_veth));
                commands.push(format!("route add {}/128 dev {}", pod.ipv6, pod.host_veth));
            }
            ip_batch(Some(&node.netns), &commands)?;
            fabric.push(format!("link set n{} master br0 up", i + 1));
        }
        ip_batch(Some(&self.fabric), &fabric)?;

        for node in &self.nodes {
            let mut settings = Vec::new();
            for pod in self.pods.iter().filter(|p| p.node == node.name) {
                settings.push((format!("net.ipv4.conf.{}.proxy_arp", pod.host_veth), "1"));
                // Without this, proxy ARP answers after a random delay of up to 800 ms.
                settings.push((format!("net.ipv4.neigh.{}.proxy_delay", pod.host_veth), "0"));
            }
            sysctl(&node.netns, &settings)?;
        }

        for pod in &self.pods {
            ip_batch(
                Some(&pod.netns),
                &[
                    "link set lo up".to_string(),
                    format!("addr add {}/32 dev eth0", pod.ipv4),
                    format!("addr add {}/128 dev eth0 nodad", pod.ipv6),
                    "link set eth0 up".to_string(),
                    format!("route add {POD_GATEWAY_V4} dev eth0 scope link"),
                    format!("route add default via {POD_GATEWAY_V4} dev eth0"),
                    format!("route add ::/0 via {POD_GATEWAY_V6} dev eth0"),
                ],
            )?;
        }
        self.wait_links_up(&all)
    }

    /// Waits until every veth is operationally up, i.e. the kernel's link watcher has activated it
    /// (a link still pending drops packets silently).
    fn wait_links_up(&self, namespaces: &[String]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for name in namespaces {
            loop {
                let links = netns::exec(name, &["ip", "-br", "link"])?;
                let pending: Vec<&str> = links
                    .lines()
                    // Veths only (`name@peer`): the bridge's own state lags by up to a second but
                    // does not gate forwarding between its ports.
                    .filter(|l| l.split_whitespace().next().is_some_and(|n| n.contains('@')))
                    .filter(|l| l.split_whitespace().nth(1) != Some("UP"))
                    .collect();
                if pending.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("links in {name} to come up: {pending:?}"),
                        seconds: 5,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn start_probe_servers(&mut self, binary: &Path) -> Result<()> {
        for pod in &self.pods {
            if pod.ports.is_empty() {
                continue;
            }
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &pod.netns]).arg(binary).args(["serve", "--name", &pod.id()]);
            for port in &pod.ports {
                command.args([format!("--{}", port.protocol), port.number.to_string()]);
            }
            let log = self.dir.path().join(format!("probe-{}-{}.log", pod.namespace, pod.name));
            self.servers.push(ManagedProcess::spawn(&format!("probe server {}", pod.id()), command, &log)?);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for server in &mut self.servers {
            loop {
                let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
                if log.contains("listening") {
                    break;
                }
                if let Some(status) = server.exited() {
                    return Err(server.exited_early_error(status));
                }
                if Instant::now() > deadline {
                    return Err(Error::NotReady {
                        what: "probe server".into(),
                        seconds: 15,
                        log: server.log_path().to_path_buf(),
                        tail: log_tail(server.log_path(), 10),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// The run prefix of every namespace name (`pal-<pid>-<n>`).
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// Namespace holding the fabric bridge that links the nodes.
    pub fn fabric_netns(&self) -> &str {
        &self.fabric
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// A node by logical name (`n1`).
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| Error::Invalid(format!("no node {name}")))
    }

    /// A pod by id (`x/a`).
    pub fn pod(&self, id: &str) -> Result<&Pod> {
        self.pods.iter().find(|p| p.id() == id).ok_or_else(|| Error::Invalid(format!("no pod {id}")))
    }

    /// The API-server name of logical namespace `logical`: `<logical>-<pid>-<run>`, so several
    /// clusters can share one control plane (namespaces can never be reused there).
    pub fn k8s_namespace(&self, logical: &str) -> String {
        format!("{logical}-{}", self.run.trim_start_matches(netns::NETNS_PREFIX))
    }

    /// Logical namespaces, in first-seen order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for pod in &self.pods {
            if !seen.contains(&pod.namespace) {
                seen.push(pod.namespace.clone());
            }
        }
        seen
    }

    /// Runs `args` in network namespace `netns` (any of this cluster's, or another), returning stdout.
    pub fn exec(&self, netns: &str, args: &[&str]) -> Result<String> {
        netns::exec(netns, args)
    }

    /// Runs `args` in the namespace of node `node` (logical name), e.g. `["iptables", "-S"]`.
    pub fn node_exec(&self, node: &str, args: &[&str]) -> Result<String> {
        netns::exec(&self.node(node)?.netns, args)
    }

    /// Probes `to:port` from pod `from` (id `x/a`). Runs on a short-lived thread inside the pod's
    /// namespace, so the caller's runtime is never blocked.
    pub async fn probe(
        &self,
        from: &str,
        to: IpAddr,
        protocol: Protocol,
        port: u16,
        timeout: Duration,
    ) -> Result<ProbeOutcome> {
        let netns = self.pod(from)?.netns.clone();
        netns::in_netns_async(&netns, move || probe_blocking(SocketAddr::new(to, port), protocol, timeout)).await
    }

    /// Probes every pod from every pod (including itself) on `port` over `family`, with the default
    /// timeout and up to 16 probes at a time. Rows and columns follow [`NetCluster::pods`] order.
    pub async fn probe_matrix(&self, port: Port, family: Family) -> Result<Reachability> {
        self.probe_matrix_with(port, family, DEFAULT_PROBE_TIMEOUT, 16).await
    }

    pub async fn probe_matrix_with(
        &self,
        port: Port,
        family: Family,
        timeout: Duration,
        parallelism: usize,
    ) -> Result<Reachability> {
        let limit = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (row, from) in self.pods.iter().enumerate() {
            for (column, to) in self.pods.iter().enumerate() {
                let netns = from.netns.clone();
                let target = SocketAddr::new(to.ip(family), port.number);
                let limit = limit.clone();
                tasks.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let outcome =
                        netns::in_netns_async(&netns, move || probe_blocking(target, port.protocol, timeout)).await;
                    (row, column, outcome)
                });
            }
        }
        let n = self.pods.len();
        let mut cells = vec![vec![ProbeOutcome::Dropped; n]; n];
        while let Some(joined) = tasks.join_next().await {
            let (row, column, outcome) = joined.map_err(|e| Error::Invalid(format!("probe task: {e}")))?;
            cells[row][column] = outcome?;
        }
        let pods: Vec<ReachabilityCell> = self.pods.iter().cloned().map(ReachabilityCell::from).collect();
        Ok(Reachability::new(port, family, pods, cells))
    }

    /// Programs a kube-proxy-like ClusterIP in every node namespace: iptables `nat` DNAT rules in
    /// PREROUTING (traffic from pods) and OUTPUT (from the node itself) sending `vip:port` to the
    /// backends (`(pod id, target port)`), spread with `statistic --mode random`. Use a VIP from
    /// [`crate::SERVICE_CIDR`]. No masquerade, so a pod reaching itself through the VIP fails
    /// (hairpin), as with kube-proxy without `--masquerade-all`.
    pub fn add_cluster_ip_service(&self, vip: IpAddr, port: Port, backends: &[(&str, u16)]) -> Result<()> {
        if backends.is_empty() {
            return Err(Error::Invalid("a service needs at least one backend".into()));
        }
        let family = if vip.is_ipv4() { Family::V4 } else { Family::V6 };
        let tool = if family == Family::V4 { "iptables" } else { "ip6tables" };
        let mut destinations = Vec::new();
        for (pod, target_port) in backends {
            let ip = self.pod(pod)?.ip(family);
            destinations.push(match ip {
                IpAddr::V4(v4) => format!("{v4}:{target_port}"),
                IpAddr::V6(v6) => format!("[{v6}]:{target_port}"),
            });
        }
        for node in &self.nodes {
            for chain in ["PREROUTING", "OUTPUT"] {
                let count = destinations.len();
                for (index, destination) in destinations.iter().enumerate() {
                    let vip_text = vip.to_string();
                    let dport = port.number.to_string();
                    let probability = format!("{:.6}", 1.0 / (count - index) as f64);
                    let mut args = vec![
                        tool,
                        "-w",
                        "-t",
                        "nat",
                        "-A",
                        chain,
                        "-d",
                        &vip_text,
                        "-p",
                        port.protocol.as_str(),
                        "--dport",
                        &dport,
                    ];
                    if index + 1 < count {
                        args.extend(["-m", "statistic", "--mode", "random", "--probability", &probability]);
                    }
                    args.extend(["-j", "DNAT", "--to-destination", destination]);
                    netns::exec(&node.netns, &args)?;
                }
            }
        }
        Ok(())
    }

    /// Creates a Node per node (labels, InternalIPs in both families, podCIDRs, Ready), as the
    /// kubelet would register it.
    pub async fn register_nodes(&self, client: &Client) -> Result<()> {
        let nodes: Api<K8sNode> = Api::all(client.clone());
        for node in &self.nodes {
            let object: K8sNode = serde_json::from_value(json!({
                "metadata": { "name": node.netns, "labels": node.labels },
                "spec": { "podCIDR": node.pod_cidr_v4, "podCIDRs": [node.pod_cidr_v4, node.pod_cidr_v6] },
                "status": {
                    "addresses": [
                        { "type": "InternalIP", "address": node.ipv4.to_string() },
                        { "type": "InternalIP", "address": node.ipv6.to_string() },
                        { "type": "Hostname", "address": node.netns },
                    ],
                    "conditions": [{ "type": "Ready", "status": "True", "reason": "PalisadeTestkit" }],
                },
            }))
            .map_err(|e| Error::Invalid(e.to_string()))?;
            nodes.create(&PostParams::default(), &object).await?;
            // Status is not reset on Node create, but patch anyway in case a future version does.
            nodes
                .patch_status(&node.netns, &PatchParams::default(), &Patch::Merge(json!({ "status": object.status })))
                .await?;
        }
        Ok(())
    }

    /// Creates the matching API objects: a Namespace per logical namespace (labelled
    /// `ns=<logical>`), a Node per node (InternalIPs, podCIDRs, Ready) and a Pod per pod (nodeName,
    /// labels, named container ports), then patches each Pod's status to Running with its real IPs,
    /// as the kubelet would. Separate from [`NetCluster::build`] so netns-only tests need no apiserver.
    pub async fn register(&self, client: &Client) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for logical in self.namespaces() {
            let mut labels = self.namespace_labels.get(&logical).cloned().unwrap_or_default();
            labels.insert("ns".into(), logical.clone());
            let object: Namespace = serde_json::from_value(json!({
                "metadata": { "name": self.k8s_namespace(&logical), "labels": labels }
            }))
            .map_err(|e| Error::Invalid(e.to_string()))?;
            namespaces.create(&PostParams::default(), &object).await?;
        }
        self.register_nodes(client).await?;
        for pod in &self.pods {
            let namespace = self.k8s_namespace(&pod.namespace);
            let node = self.node(&pod.node)?;
            let ports: Vec<_> = pod
                .ports
                .iter()
                .map(|p| json!({ "name": p.name(), "containerPort": p.number, "protocol": p.protocol.k8s_name() }))
                .collect();
            let object: K8sPod = serde_json::from_value(json!({
                "metadata": { "name": pod.name, "namespace": namespace, "labels": pod.labels },
                "spec": {
                    "nodeName": node.netns,
                    "containers": [{ "name": "probe", "image": "palisade.invalid/probe", "ports": ports }],
                },
            }))
            .map_err(|e| Error::Invalid(e.to_string()))?;
            Api::<K8sPod>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &object).await?;
            mark_pod_running(
                client,
                &namespace,
                &pod.name,
                &[IpAddr::V4(pod.ipv4), IpAddr::V6(pod.ipv6)],
                &[node.ip(Family::V4), node.ip(Family::V6)],
            )
            .await?;
        }
        Ok(())
    }

    /// Makes the apiserver reachable from inside the cluster, as the `kubernetes` Service is: every
    /// node gets [`crate::APISERVER_SERVICE_IP`] on its loopback and a TCP relay there (port 443) to the
    /// control plane's loopback address, so agents run with `ip netns exec <node>` (and pods, via
    /// their node) can talk to it. The serving certificate already names that IP. Returns the URL to
    /// put in their kubeconfig (see [`ControlPlane::kubeconfig_for`]). The relay runs on its own
    /// thread and stops when the cluster is dropped.
    pub fn expose_apiserver(&mut self, plane: &ControlPlane) -> Result<String> {
        let target: SocketAddr = plane
            .apiserver_url()
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| Error::Invalid(format!("apiserver url {}: {e}", plane.apiserver_url())))?;
        let vip = crate::APISERVER_SERVICE_IP;
        let mut listeners = Vec::new();
        for node in &self.nodes {
            ip_batch(Some(&node.netns), &[format!("addr add {vip}/32 dev lo")])?;
            let listener = netns::in_netns(&node.netns, move || {
                let listener = std::net::TcpListener::bind((vip, 443))?;
                listener.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(listener)
            })?
            .map_err(|source| Error::Netns { namespace: node.netns.clone(), source })?;
            listeners.push(listener);
        }
        self.relay = Some(ApiserverRelay::start(listeners, target)?);
        Ok(format!("https://{vip}:443"))
    }

    /// Probe server logs and other per-cluster files.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// TCP relays from listeners inside node namespaces to the apiserver, on a dedicated thread and
/// runtime (a test's runtime may end before the cluster does).
struct ApiserverRelay {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiserverRelay {
    fn start(listeners: Vec<std::net::TcpListener>, target: SocketAddr) -> Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io_at("tokio runtime"))?;
        let thread = std::thread::Builder::new()
            .name("palisade-apiserver-relay".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for listener in listeners {
                        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { continue };
                        tokio::spawn(async move {
                            while let Ok((mut inbound, _)) = listener.accept().await {
                                tokio::spawn(async move {
                                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                    }
                                });
                            }
                        });
                    }
                    let _ = stopped.await;
                });
            })
            .map_err(io_at("relay thread"))?;
        Ok(ApiserverRelay { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for ApiserverRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        self.relay = None;
        self.servers.clear();
        // Pods first, then nodes (their veths go with them), then the fabric.
        let mut names = self.created_netns.clone();
        names.reverse();
        delete_namespaces(&names);
    }
}

/// Does what the kubelet would: sets a Pod's status to Running and Ready with `pod_ips` (first one
/// becomes `podIP`) and `host_ips`. Pod status is reset on create, so this must follow the create.
pub async fn mark_pod_running(
    client: &Client,
    namespace: &str,
    name: &str,
    pod_ips: &[IpAddr],
    host_ips: &[IpAddr],
) -> Result<K8sPod> {
    let (Some(pod_ip), Some(host_ip)) = (pod_ips.first(), host_ips.first()) else {
        return Err(Error::Invalid("mark_pod_running needs at least one pod IP and one host IP".into()));
    };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({
        "status": {
            "phase": "Running",
            "podIP": pod_ip.to_string(),
            "podIPs": pod_ips.iter().map(|ip| json!({ "ip": ip.to_string() })).collect::<Vec<_>>(),
            "hostIP": host_ip.to_string(),
            "hostIPs": host_ips.iter().map(|ip| json!({ "ip": ip.to_string() })).collect::<Vec<_>>(),
            "startTime": now,
            "conditions": [
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
                { "type": "Initialized", "status": "True", "lastTransitionTime": now },
                { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                { "type": "Ready", "status": "True", "lastTransitionTime": now },
            ],
        }
    });
    Ok(Api::<K8sPod>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?)
}

fn pod_index(host_veth: &str) -> u32 {
    host_veth.trim_start_matches("pv").parse().unwrap_or(0)
}

/// Path of the `palisade-probe` binary: `$PALISADE_PROBE_BIN`, else the one `cargo test` built
/// next to the running test executable (see [`workspace_binary`]).
pub fn probe_binary() -> Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(found.clone());
    }
    let found = workspace_binary("palisade-probe", "PALISADE_PROBE_BIN", "palisade-testkit")?;
    Ok(FOUND.get_or_init(|| found).clone())
}
