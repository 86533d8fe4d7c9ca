//! Builders for tests, and a seeded generator of random clusters, policies and events.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_engine::model::*;
use palisade_engine::verdict::Flow;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn select(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: labels(pairs), match_expressions: vec![] }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub fn key(namespace: &str, name: &str) -> PodKey {
    PodKey { namespace: namespace.into(), name: name.into() }
}

pub fn pod(namespace: &str, name: &str, node: &str, ips: &[&str], pod_labels: &[(&str, &str)]) -> Pod {
    Pod {
        key: key(namespace, name),
        labels: labels(pod_labels),
        node: Some(node.into()),
        ips: ips.iter().map(|text| ip(text)).collect(),
        named_ports: vec![],
        host_network: false,
        terminated: false,
    }
}

pub fn namespace(name: &str, ns_labels: &[(&str, &str)]) -> Namespace {
    Namespace { name: name.into(), labels: labels(ns_labels) }
}

pub fn node(name: &str, ips: &[&str], node_labels: &[(&str, &str)]) -> Node {
    Node { name: name.into(), labels: labels(node_labels), ips: ips.iter().map(|text| ip(text)).collect() }
}

pub fn cluster(namespaces: Vec<Namespace>, nodes: Vec<Node>, pods: Vec<Pod>) -> Cluster {
    Cluster {
        namespaces: namespaces.into_iter().map(|n| (n.name.clone(), n)).collect(),
        nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        pods: pods.into_iter().map(|p| (p.key.clone(), p)).collect(),
    }
}

pub fn np(namespace: &str, name: &str, pod_selector: LabelSelector) -> NetworkPolicy {
    NetworkPolicy {
        namespace: namespace.into(),
        name: name.into(),
        revision: Revision::default(),
        pod_selector,
        policy_types: None,
        ingress: vec![],
        egress: vec![],
    }
}

pub fn cnp(name: &str, tier: Tier, priority: i32, subject: CnpSubject) -> ClusterNetworkPolicy {
    ClusterNetworkPolicy {
        name: name.into(),
        revision: Revision::default(),
        tier,
        priority,
        subject,
        ingress: vec![],
        egress: vec![],
    }
}

pub fn cnp_rule(action: CnpAction, peers: Vec<CnpPeer>, protocols: Option<Vec<CnpProtocol>>) -> CnpRule {
    CnpRule { name: None, action, peers, protocols }
}

pub fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(Ok(Protocol::Tcp)), port: Some(PortValue::Number(port as i32)), end_port: None }
}

pub fn flow(src: &str, dst: &str, protocol: Protocol, port: u16) -> Flow {
    Flow { src: ip(src), dst: ip(dst), protocol, port }
}

// ---------------------------------------------------------------------------------------------
// Random worlds. A seed drives a tiny deterministic generator, so a failing case reproduces from
// the seed proptest prints.
// ---------------------------------------------------------------------------------------------

pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const LABEL_KEYS: [&str; 2] = ["app", "tier"];
const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];
/// CIDRs near the generated addresses, each with excepts that are strict subsets.
const BLOCKS: [(&str, &[&str]); 8] = [
    ("10.1.0.0/24", &["10.1.0.0/30", "10.1.0.4/30"]),
    ("10.1.0.0/28", &["10.1.0.2/31"]),
    ("10.0.0.0/8", &["10.1.0.0/29", "10.0.100.0/24"]),
    ("0.0.0.0/0", &["10.1.0.0/29"]),
    ("10.0.100.1/24", &[]),
    ("fd00::/16", &["fd00::1:0/125"]),
    ("fd00::1:0/120", &["fd00::1:4/126"]),
    ("::/0", &["fd00::100:0/120"]),
];
pub const PORTS: [(Protocol, u16); 7] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Tcp, 53),
    (Protocol::Udp, 53),
    (Protocol::Udp, 80),
    (Protocol::Sctp, 9003),
    (Protocol::Icmp, 0),
];
const PORT_NAMES: [&str; 3] = ["web", "dns", "nope"];

fn random_labels(rng: &mut Seeded) -> Labels {
    let mut result = Labels::new();
    for key in LABEL_KEYS {
        if !rng.chance(3) {
            result.insert(key.to_string(), rng.pick(&LABEL_VALUES).to_string());
        }
    }
    result
}

pub fn random_selector(rng: &mut Seeded) -> LabelSelector {
    let mut selector = LabelSelector::default();
    if rng.chance(3) {
        return selector;
    }
    if rng.chance(2) {
        selector.match_labels.insert(rng.pick(&LABEL_KEYS).to_string(), rng.pick(&LABEL_VALUES).to_string());
    }
    if rng.chance(2) {
        let operator = match rng.below(4) {
            0 => SelectorOperator::In,
            1 => SelectorOperator::NotIn,
            2 => SelectorOperator::Exists,
            _ => SelectorOperator::DoesNotExist,
        };
        let values = match operator {
            SelectorOperator::In | SelectorOperator::NotIn => {
                (0..1 + rng.below(2)).map(|_| rng.pick(&LABEL_VALUES).to_string()).collect()
            }
            _ => vec![],
        };
        selector.match_expressions.push(SelectorRequirement {
            key: rng.pick(&LABEL_KEYS).to_string(),
            operator,
            values,
        });
    }
    selector
}

fn random_named_ports(rng: &mut Seeded) -> Vec<NamedPort> {
    let choices = [
        NamedPort { name: "web".into(), protocol: Protocol::Tcp, port: 80 },
        NamedPort { name: "web".into(), protocol: Protocol::Udp, port: 80 },
        NamedPort { name: "dns".into(), protocol: Protocol::Udp, port: 53 },
        NamedPort { name: "dns".into(), protocol: Protocol::Tcp, port: 53 },
        NamedPort { name: "web".into(), protocol: Protocol::Sctp, port: 9003 },
    ];
    choices.into_iter().filter(|_| rng.chance(3)).collect()
}

pub fn random_node(rng: &mut Seeded, index: usize) -> Node {
    let role = rng.pick(&["a", "b"]).to_string();
    Node {
        name: format!("n{index}"),
        labels: [("role".to_string(), role)].into(),
        ips: vec![ip(&format!("10.0.100.{}", index + 1)), ip(&format!("fd00::100:{}", index + 1))],
    }
}

/// `index` makes addresses unique across the pods of one world.
pub fn random_pod(rng: &mut Seeded, index: usize, nodes: &[Node]) -> Pod {
    let node = rng.pick(nodes);
    let host_network = rng.chance(6);
    // A finished pod keeps the address of the pod before it: Kubernetes hands a finished pod's IP
    // to the next one, and the finished pod must not lend that pod its identity.
    let terminated = !host_network && index > 0 && rng.chance(8);
    let address = if terminated { index } else { index + 1 };
    let ips = if host_network {
        node.ips.clone()
    } else if rng.chance(5) {
        vec![ip(&format!("10.1.0.{address}"))]
    } else {
        vec![ip(&format!("10.1.0.{address}")), ip(&format!("fd00::1:{address:x}"))]
    };
    Pod {
        key: key(rng.pick::<&str>(&NAMESPACES), &format!("p{index}")),
        labels: random_labels(rng),
        node: if rng.chance(12) { None } else { Some(node.name.clone()) },
        ips,
        named_ports: random_named_ports(rng),
        host_network,
        terminated,
    }
}

pub fn random_namespace(rng: &mut Seeded, name: &str) -> Namespace {
    Namespace { name: name.into(), labels: random_labels(rng) }
}

pub fn random_cluster(rng: &mut Seeded) -> Cluster {
    let nodes: Vec<Node> = (0..2 + rng.below(3)).map(|i| random_node(rng, i)).collect();
    // Usually every namespace exists; sometimes one is missing (its pods match no namespace selector).
    let mut namespaces = Vec::new();
    for name in NAMESPACES {
        if !rng.chance(8) {
            namespaces.push(random_namespace(rng, name));
        }
    }
    let pods: Vec<Pod> = (0..2 + rng.below(6)).map(|i| random_pod(rng, i, &nodes)).collect();
    cluster(namespaces, nodes, pods)
}

fn random_np_peer(rng: &mut Seeded) -> NetworkPolicyPeer {
    if rng.chance(3) {
        let (cidr, excepts) = rng.pick(&BLOCKS);
        let except = excepts.iter().filter(|_| rng.chance(2)).map(|e| e.to_string()).collect();
        return NetworkPolicyPeer { ip_block: Some(IpBlock { cidr: cidr.to_string(), except }), ..Default::default() };
    }
    match rng.below(3) {
        0 => NetworkPolicyPeer { pod_selector: Some(random_selector(rng)), ..Default::default() },
        1 => NetworkPolicyPeer { namespace_selector: Some(random_selector(rng)), ..Default::default() },
        _ => NetworkPolicyPeer {
            namespace_selector: Some(random_selector(rng)),
            pod_selector: Some(random_selector(rng)),
            ip_block: None,
        },
    }
}

fn random_np_port(rng: &mut Seeded) -> NetworkPolicyPort {
    let protocol = match rng.below(4) {
        0 => None,
        1 => Some(Ok(Protocol::Tcp)),
        2 => Some(Ok(Protocol::Udp)),
        _ => Some(Ok(Protocol::Sctp)),
    };
    let (port, end_port) = match rng.below(4) {
        0 => (None, None),
        1 => (Some(PortValue::Name(rng.pick(&PORT_NAMES).to_string())), None),
        _ => {
            let number = *rng.pick(&[53, 80, 9003]);
            let end = if rng.chance(3) { Some(number + rng.below(2) as i32) } else { None };
            (Some(PortValue::Number(number)), end)
        }
    };
    NetworkPolicyPort { protocol, port, end_port }
}

fn random_np_rules(rng: &mut Seeded) -> Vec<NetworkPolicyRule> {
    (0..rng.below(3))
        .map(|_| NetworkPolicyRule {
            peers: (0..rng.below(3)).map(|_| random_np_peer(rng)).collect(),
            ports: (0..rng.below(3)).map(|_| random_np_port(rng)).collect(),
        })
        .collect()
}

pub fn random_network_policy(rng: &mut Seeded) -> NetworkPolicy {
    let policy_types = match rng.below(5) {
        0 | 1 => None,
        2 => Some(vec![PolicyType::Ingress]),
        3 => Some(vec![PolicyType::Egress]),
        _ => Some(vec![PolicyType::Ingress, PolicyType::Egress]),
    };
    NetworkPolicy {
        namespace: rng.pick(&NAMESPACES).to_string(),
        name: format!("np{}", rng.below(3)),
        revision: Revision { uid: String::new(), generation: rng.below(100) as i64 },
        pod_selector: random_selector(rng),
        policy_types,
        ingress: random_np_rules(rng),
        egress: random_np_rules(rng),
    }
}

fn random_cnp_peer(rng: &mut Seeded, direction_is_egress: bool) -> CnpPeer {
    let kinds = if direction_is_egress { 7 } else { 3 };
    match rng.below(kinds) {
        0 => CnpPeer::Namespaces(random_selector(rng)),
        1 => CnpPeer::Pods { namespace_selector: random_selector(rng), pod_selector: random_selector(rng) },
        2 => {
            if rng.chance(4) {
                CnpPeer::Unknown
            } else {
                CnpPeer::Pods { namespace_selector: LabelSelector::default(), pod_selector: random_selector(rng) }
            }
        }
        3 | 4 => CnpPeer::Networks((0..1 + rng.below(2)).map(|_| rng.pick(&BLOCKS).0.to_string()).collect()),
        5 => CnpPeer::Nodes(if rng.chance(2) { LabelSelector::default() } else { select(&[("role", "a")]) }),
        _ => CnpPeer::DomainNames(vec!["example.com".into()]),
    }
}

fn random_cnp_protocol(rng: &mut Seeded) -> CnpProtocol {
    let protocol = *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
    match rng.below(6) {
        0 | 1 => CnpProtocol::Port { protocol, port: CnpPort::Number(*rng.pick(&[53, 80, 9003])) },
        2 => CnpProtocol::Port { protocol, port: CnpPort::Range { start: 53, end: 81 } },
        3 | 4 => CnpProtocol::NamedPort(rng.pick(&PORT_NAMES).to_string()),
        _ => CnpProtocol::Unknown,
    }
}

fn random_cnp_rules(rng: &mut Seeded, egress: bool) -> Vec<CnpRule> {
    (0..rng.below(4))
        .map(|_| CnpRule {
            name: None,
            action: *rng.pick(&[CnpAction::Accept, CnpAction::Deny, CnpAction::Pass]),
            peers: (0..1 + rng.below(2)).map(|_| random_cnp_peer(rng, egress)).collect(),
            protocols: if rng.chance(2) {
                None
            } else {
                Some((0..1 + rng.below(2)).map(|_| random_cnp_protocol(rng)).collect())
            },
        })
        .collect()
}

pub fn random_cluster_policy(rng: &mut Seeded) -> ClusterNetworkPolicy {
    let subject = if rng.chance(2) {
        CnpSubject::Namespaces(random_selector(rng))
    } else {
        CnpSubject::Pods { namespace_selector: random_selector(rng), pod_selector: random_selector(rng) }
    };
    ClusterNetworkPolicy {
        name: format!("c{}", rng.below(5)),
        revision: Revision { uid: String::new(), generation: rng.below(100) as i64 },
        tier: *rng.pick(&[Tier::Admin, Tier::Admin, Tier::Baseline]),
        priority: *rng.pick(&[0, 1, 1, 2]),
        subject,
        ingress: random_cnp_rules(rng, false),
        egress: random_cnp_rules(rng, true),
    }
}

/// A random policy; about one in twelve is invalid, to exercise quarantine.
pub fn random_policy(rng: &mut Seeded) -> Policy {
    let mut policy = if rng.chance(2) {
        Policy::Network(random_network_policy(rng))
    } else {
        Policy::Cluster(random_cluster_policy(rng))
    };
    if rng.chance(12) {
        match &mut policy {
            Policy::Network(np) => np.policy_types = Some(vec![PolicyType::Unknown("Sideways".into())]),
            Policy::Cluster(cnp) => cnp.priority = 1001,
        }
    }
    policy
}

pub fn random_policies(rng: &mut Seeded) -> Vec<Policy> {
    (0..rng.below(6)).map(|_| random_policy(rng)).collect()
}

/// Interesting addresses: every pod and node address plus one external address per family.
pub fn addresses(cluster: &Cluster) -> Vec<IpAddr> {
    let mut all: BTreeSet<IpAddr> = [ip("192.0.2.1"), ip("2001:db8::1")].into();
    all.extend(cluster.pods.values().flat_map(|pod| pod.ips.iter().copied()));
    all.extend(cluster.nodes.values().flat_map(|node| node.ips.iter().copied()));
    all.into_iter().collect()
}

/// Every same-family address pair with every protocol/port of [`PORTS`].
pub fn flows(cluster: &Cluster) -> Vec<Flow> {
    let addresses = addresses(cluster);
    let mut flows = Vec::new();
    for src in &addresses {
        for dst in addresses.iter().filter(|dst| dst.is_ipv4() == src.is_ipv4()) {
            for (protocol, port) in PORTS {
                flows.push(Flow { src: *src, dst: *dst, protocol, port });
            }
        }
    }
    flows
}

pub fn node_ips(cluster: &Cluster) -> BTreeMap<String, Vec<IpAddr>> {
    cluster.nodes.values().map(|node| (node.name.clone(), node.ips.clone())).collect()
}
