//! Builders for tests, and proptest strategies for random clusters and policies.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_engine::model::*;
use palisade_engine::verdict::Flow;
use proptest::prelude::*;

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
// Random worlds, as proptest strategies: a failing case shrinks to a small world (fewer pods,
// policies, rules and peers, simpler selectors). The vocabulary is small on purpose, so that
// selectors, CIDRs and ports hit the generated pods, nodes and flows often.
// ---------------------------------------------------------------------------------------------

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
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
const NAMED_PORTS: [(&str, Protocol, u16); 5] = [
    ("web", Protocol::Tcp, 80),
    ("web", Protocol::Udp, 80),
    ("dns", Protocol::Udp, 53),
    ("dns", Protocol::Tcp, 53),
    ("web", Protocol::Sctp, 9003),
];

fn text(choices: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(choices).prop_map(str::to_string)
}

/// Each key present two times in three.
fn arb_labels() -> impl Strategy<Value = Labels> {
    let value = || prop::option::weighted(0.67, text(&LABEL_VALUES));
    (value(), value()).prop_map(|(app, tier)| {
        let mut result = Labels::new();
        result.extend(app.map(|value| ("app".to_string(), value)));
        result.extend(tier.map(|value| ("tier".to_string(), value)));
        result
    })
}

/// One expression over the test vocabulary; In and NotIn carry one or two values.
pub fn arb_requirement() -> impl Strategy<Value = SelectorRequirement> {
    let operator = prop_oneof![
        Just(SelectorOperator::In),
        Just(SelectorOperator::NotIn),
        Just(SelectorOperator::Exists),
        Just(SelectorOperator::DoesNotExist),
    ];
    (text(&LABEL_KEYS), operator, prop::collection::vec(text(&LABEL_VALUES), 1..=2)).prop_map(
        |(key, operator, values)| {
            let values = match operator {
                SelectorOperator::In | SelectorOperator::NotIn => values,
                _ => vec![],
            };
            SelectorRequirement { key, operator, values }
        },
    )
}

/// Empty (everything) one time in three; else a label, an expression, or both.
pub fn arb_selector() -> impl Strategy<Value = LabelSelector> {
    let label = prop::option::of((text(&LABEL_KEYS), text(&LABEL_VALUES)));
    let expression = prop::option::of(arb_requirement());
    prop_oneof![
        1 => Just(LabelSelector::default()),
        2 => (label, expression).prop_map(|(label, expression)| LabelSelector {
            match_labels: label.into_iter().collect(),
            match_expressions: expression.into_iter().collect(),
        }),
    ]
}

fn arb_named_ports() -> impl Strategy<Value = Vec<NamedPort>> {
    prop::collection::vec(prop::sample::select(&NAMED_PORTS[..]), 0..=2).prop_map(|chosen| {
        let mut ports: Vec<NamedPort> = chosen
            .into_iter()
            .map(|(name, protocol, port)| NamedPort { name: name.to_string(), protocol, port })
            .collect();
        ports.sort();
        ports.dedup();
        ports
    })
}

pub fn arb_node(index: usize) -> impl Strategy<Value = Node> {
    text(&["a", "b"]).prop_map(move |role| Node {
        name: format!("n{index}"),
        labels: [("role".to_string(), role)].into(),
        ips: vec![ip(&format!("10.0.100.{}", index + 1)), ip(&format!("fd00::100:{}", index + 1))],
    })
}

/// A pod before it gets its place in the world (its node, its name and addresses).
#[derive(Clone, Debug)]
pub struct PodSketch {
    namespace: String,
    labels: Labels,
    node: prop::sample::Index,
    scheduled: bool,
    host_network: bool,
    finished: bool,
    single_stack: bool,
    named_ports: Vec<NamedPort>,
}

pub fn arb_pod_sketch() -> impl Strategy<Value = PodSketch> {
    (
        text(&NAMESPACES),
        arb_labels(),
        any::<prop::sample::Index>(),
        prop::bool::weighted(11.0 / 12.0),
        prop::bool::weighted(1.0 / 6.0),
        prop::bool::weighted(1.0 / 8.0),
        prop::bool::weighted(1.0 / 5.0),
        arb_named_ports(),
    )
        .prop_map(|(namespace, labels, node, scheduled, host_network, finished, single_stack, named_ports)| {
            PodSketch { namespace, labels, node, scheduled, host_network, finished, single_stack, named_ports }
        })
}

impl PodSketch {
    /// `index` makes names and addresses unique in one world. A finished pod keeps the address of
    /// the pod before it: Kubernetes hands a finished pod's IP to the next one, and the finished
    /// pod must not lend that pod its identity.
    pub fn place(&self, index: usize, nodes: &[Node]) -> Pod {
        let node = self.node.get(nodes);
        let terminated = !self.host_network && index > 0 && self.finished;
        let address = if terminated { index } else { index + 1 };
        let ips = if self.host_network {
            node.ips.clone()
        } else if self.single_stack {
            vec![ip(&format!("10.1.0.{address}"))]
        } else {
            vec![ip(&format!("10.1.0.{address}")), ip(&format!("fd00::1:{address:x}"))]
        };
        Pod {
            key: key(&self.namespace, &format!("p{index}")),
            labels: self.labels.clone(),
            node: self.scheduled.then(|| node.name.clone()),
            ips,
            named_ports: self.named_ports.clone(),
            host_network: self.host_network,
            terminated,
        }
    }
}

pub fn arb_namespace(name: &'static str) -> impl Strategy<Value = Namespace> {
    arb_labels().prop_map(move |labels| Namespace { name: name.to_string(), labels })
}

/// 2–4 nodes, usually every namespace (a missing one matches no namespace selector), 3–8 pods.
pub fn arb_cluster() -> impl Strategy<Value = Cluster> {
    let nodes = (2..=4usize).prop_flat_map(|count| (0..count).map(arb_node).collect::<Vec<_>>());
    let namespaces = NAMESPACES.map(|name| prop::option::weighted(7.0 / 8.0, arb_namespace(name)));
    let pods = prop::collection::vec(arb_pod_sketch(), 3..=8);
    (nodes, namespaces, pods).prop_map(|(nodes, namespaces, pods)| {
        let pods = pods.iter().enumerate().map(|(index, sketch)| sketch.place(index, &nodes)).collect();
        cluster(namespaces.into_iter().flatten().collect(), nodes, pods)
    })
}

fn arb_np_peer() -> impl Strategy<Value = NetworkPolicyPeer> {
    let block = (prop::sample::select(&BLOCKS[..]), any::<u8>()).prop_map(|((cidr, excepts), chosen)| {
        let except = excepts.iter().enumerate().filter(|(i, _)| chosen & (1 << i) != 0).map(|(_, e)| e.to_string());
        NetworkPolicyPeer {
            ip_block: Some(IpBlock { cidr: cidr.to_string(), except: except.collect() }),
            ..Default::default()
        }
    });
    prop_oneof![
        1 => block,
        1 => arb_selector().prop_map(|pods| NetworkPolicyPeer { pod_selector: Some(pods), ..Default::default() }),
        1 => arb_selector().prop_map(|namespaces| NetworkPolicyPeer {
            namespace_selector: Some(namespaces),
            ..Default::default()
        }),
        1 => (arb_selector(), arb_selector()).prop_map(|(namespaces, pods)| NetworkPolicyPeer {
            namespace_selector: Some(namespaces),
            pod_selector: Some(pods),
            ip_block: None,
        }),
    ]
}

fn arb_np_port() -> impl Strategy<Value = NetworkPolicyPort> {
    let protocol = prop_oneof![
        Just(None),
        Just(Some(Ok(Protocol::Tcp))),
        Just(Some(Ok(Protocol::Udp))),
        Just(Some(Ok(Protocol::Sctp))),
    ];
    let number = prop::sample::select(&[53, 80, 9003][..]);
    let port = prop_oneof![
        1 => Just((None, None)),
        1 => text(&PORT_NAMES).prop_map(|name| (Some(PortValue::Name(name)), None)),
        2 => (number, prop::option::weighted(0.33, 0..=1i32))
            .prop_map(|(number, span)| (Some(PortValue::Number(number)), span.map(|span| number + span))),
    ];
    (protocol, port).prop_map(|(protocol, (port, end_port))| NetworkPolicyPort { protocol, port, end_port })
}

fn arb_np_rules() -> impl Strategy<Value = Vec<NetworkPolicyRule>> {
    let rule = (prop::collection::vec(arb_np_peer(), 0..=2), prop::collection::vec(arb_np_port(), 0..=2))
        .prop_map(|(peers, ports)| NetworkPolicyRule { peers, ports });
    prop::collection::vec(rule, 0..=2)
}

pub fn arb_network_policy() -> impl Strategy<Value = NetworkPolicy> {
    let policy_types = prop_oneof![
        2 => Just(None),
        1 => Just(Some(vec![PolicyType::Ingress])),
        1 => Just(Some(vec![PolicyType::Egress])),
        1 => Just(Some(vec![PolicyType::Ingress, PolicyType::Egress])),
    ];
    (text(&NAMESPACES), 0..3usize, 0..100i64, arb_selector(), policy_types, arb_np_rules(), arb_np_rules()).prop_map(
        |(namespace, name, generation, pod_selector, policy_types, ingress, egress)| NetworkPolicy {
            namespace,
            name: format!("np{name}"),
            revision: Revision { uid: String::new(), generation },
            pod_selector,
            policy_types,
            ingress,
            egress,
        },
    )
}

fn arb_cnp_peer(egress: bool) -> BoxedStrategy<CnpPeer> {
    let namespaces = arb_selector().prop_map(CnpPeer::Namespaces);
    let pods = (arb_selector(), arb_selector())
        .prop_map(|(namespace_selector, pod_selector)| CnpPeer::Pods { namespace_selector, pod_selector });
    let any_namespace_pods = arb_selector()
        .prop_map(|pod_selector| CnpPeer::Pods { namespace_selector: LabelSelector::default(), pod_selector });
    if !egress {
        return prop_oneof![3 => namespaces, 3 => pods, 2 => any_namespace_pods, 1 => Just(CnpPeer::Unknown)].boxed();
    }
    let networks =
        prop::collection::vec(prop::sample::select(&BLOCKS[..]).prop_map(|(cidr, _)| cidr.to_string()), 1..=2)
            .prop_map(CnpPeer::Networks);
    let nodes = prop_oneof![Just(LabelSelector::default()), Just(select(&[("role", "a")]))].prop_map(CnpPeer::Nodes);
    prop_oneof![
        3 => namespaces,
        3 => pods,
        2 => any_namespace_pods,
        1 => Just(CnpPeer::Unknown),
        6 => networks,
        3 => nodes,
        2 => Just(CnpPeer::DomainNames(vec!["example.com".into()])),
    ]
    .boxed()
}

fn arb_cnp_protocol() -> impl Strategy<Value = CnpProtocol> {
    let protocol = prop::sample::select(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp][..]);
    prop_oneof![
        2 => (protocol.clone(), prop::sample::select(&[53, 80, 9003][..]))
            .prop_map(|(protocol, number)| CnpProtocol::Port { protocol, port: CnpPort::Number(number) }),
        1 => protocol.prop_map(|protocol| CnpProtocol::Port { protocol, port: CnpPort::Range { start: 53, end: 81 } }),
        2 => text(&PORT_NAMES).prop_map(CnpProtocol::NamedPort),
        1 => Just(CnpProtocol::Unknown),
    ]
}

fn arb_cnp_rules(egress: bool) -> impl Strategy<Value = Vec<CnpRule>> {
    let action = prop::sample::select(&[CnpAction::Accept, CnpAction::Deny, CnpAction::Deny, CnpAction::Pass][..]);
    let protocols = prop::option::of(prop::collection::vec(arb_cnp_protocol(), 1..=2));
    let rule = (action, prop::collection::vec(arb_cnp_peer(egress), 1..=2), protocols)
        .prop_map(|(action, peers, protocols)| CnpRule { name: None, action, peers, protocols });
    prop::collection::vec(rule, 0..=3)
}

pub fn arb_cluster_policy() -> impl Strategy<Value = ClusterNetworkPolicy> {
    let subject = prop_oneof![
        arb_selector().prop_map(CnpSubject::Namespaces),
        (arb_selector(), arb_selector())
            .prop_map(|(namespace_selector, pod_selector)| CnpSubject::Pods { namespace_selector, pod_selector }),
    ];
    let tier = prop_oneof![2 => Just(Tier::Admin), 1 => Just(Tier::Baseline)];
    (
        0..5usize,
        0..100i64,
        tier,
        prop::sample::select(&[0, 1, 1, 2][..]),
        subject,
        arb_cnp_rules(false),
        arb_cnp_rules(true),
    )
        .prop_map(|(name, generation, tier, priority, subject, ingress, egress)| ClusterNetworkPolicy {
            name: format!("c{name}"),
            revision: Revision { uid: String::new(), generation },
            tier,
            priority,
            subject,
            ingress,
            egress,
        })
}

/// Ways a policy can be refused: some leave the subject readable (the stand-in enforces), some
/// break the subject itself (nothing is enforced).
#[derive(Clone, Copy, Debug)]
pub enum Breakage {
    UnknownPolicyType,
    BadCidr,
    EndPortBelowPort,
    PriorityOutOfRange,
    EmptyInValues,
    InvalidSubject,
}

fn break_policy(policy: &mut Policy, breakage: Breakage) {
    match (policy, breakage) {
        (Policy::Network(np), Breakage::UnknownPolicyType) => {
            np.policy_types = Some(vec![PolicyType::Unknown("Sideways".into())])
        }
        (Policy::Network(np), Breakage::BadCidr) => np.ingress.push(NetworkPolicyRule {
            peers: vec![NetworkPolicyPeer {
                ip_block: Some(IpBlock { cidr: "10.1.0.0/33".into(), except: vec![] }),
                ..Default::default()
            }],
            ports: vec![],
        }),
        (Policy::Network(np), Breakage::EndPortBelowPort) => np.egress.push(NetworkPolicyRule {
            peers: vec![],
            ports: vec![NetworkPolicyPort { protocol: None, port: Some(PortValue::Number(80)), end_port: Some(53) }],
        }),
        (Policy::Network(np), _) => np.pod_selector.match_expressions.push(SelectorRequirement {
            key: "app".into(),
            operator: SelectorOperator::In,
            values: vec![],
        }),
        (Policy::Cluster(cnp), Breakage::PriorityOutOfRange) => cnp.priority = 1001,
        (Policy::Cluster(cnp), Breakage::InvalidSubject) => cnp.subject = CnpSubject::Invalid("both set".into()),
        (Policy::Cluster(cnp), Breakage::BadCidr) => cnp.egress.push(CnpRule {
            name: None,
            action: CnpAction::Deny,
            peers: vec![CnpPeer::Networks(vec!["10.1.0.0/33".into()])],
            protocols: None,
        }),
        (Policy::Cluster(cnp), _) => cnp.ingress.push(CnpRule {
            name: None,
            action: CnpAction::Accept,
            peers: vec![CnpPeer::Namespaces(LabelSelector {
                match_labels: Default::default(),
                match_expressions: vec![SelectorRequirement {
                    key: "app".into(),
                    operator: SelectorOperator::NotIn,
                    values: vec![],
                }],
            })],
            protocols: None,
        }),
    }
}

/// A random policy; about one in ten is invalid, to exercise refusal and the fail-closed stand-in.
pub fn arb_policy() -> impl Strategy<Value = Policy> {
    let breakage = prop::option::weighted(
        0.1,
        prop::sample::select(
            &[
                Breakage::UnknownPolicyType,
                Breakage::BadCidr,
                Breakage::EndPortBelowPort,
                Breakage::PriorityOutOfRange,
                Breakage::EmptyInValues,
                Breakage::InvalidSubject,
            ][..],
        ),
    );
    let policy =
        prop_oneof![arb_network_policy().prop_map(Policy::Network), arb_cluster_policy().prop_map(Policy::Cluster),];
    (policy, breakage).prop_map(|(mut policy, breakage)| {
        if let Some(breakage) = breakage {
            break_policy(&mut policy, breakage);
        }
        policy
    })
}

/// 2–6 policies. A world without any is judged by Kubernetes' default alone, which proves little.
pub fn arb_policies() -> impl Strategy<Value = Vec<Policy>> {
    prop::collection::vec(arb_policy(), 2..=6)
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
