//! Short builders for the policies the tests write, in the engine's model (as the operator's
//! conversion would produce them from the API objects).

use palisade_engine::model::{
    ClusterNetworkPolicy, CnpAction, CnpPeer, CnpPort, CnpProtocol, CnpRule, CnpSubject, IpBlock, LabelSelector,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule, Policy, PolicyType, PortValue, Protocol,
    Revision, Tier,
};

/// `matchLabels`; no pairs selects everything.
pub fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        match_expressions: Vec::new(),
    }
}

pub fn everything() -> LabelSelector {
    LabelSelector::default()
}

fn revision(name: &str) -> Revision {
    Revision { uid: format!("uid-{name}"), generation: 1 }
}

/// A NetworkPolicy with explicit `policyTypes`.
pub fn network_policy(
    namespace: &str,
    name: &str,
    pod_selector: LabelSelector,
    types: &[PolicyType],
    ingress: Vec<NetworkPolicyRule>,
    egress: Vec<NetworkPolicyRule>,
) -> Policy {
    Policy::Network(NetworkPolicy {
        namespace: namespace.into(),
        name: name.into(),
        revision: revision(name),
        pod_selector,
        policy_types: Some(types.to_vec()),
        ingress,
        egress,
    })
}

pub fn np_rule(peers: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyRule {
    NetworkPolicyRule { peers, ports }
}

/// Every pod of the namespaces matching `selector`.
pub fn from_namespaces(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { namespace_selector: Some(selector), pod_selector: None, ip_block: None }
}

/// Pods matching `pods` in namespaces matching `namespaces`.
pub fn from_pods(namespaces: LabelSelector, pods: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { namespace_selector: Some(namespaces), pod_selector: Some(pods), ip_block: None }
}

pub fn ip_block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: None,
        pod_selector: None,
        ip_block: Some(IpBlock { cidr: cidr.into(), except: except.iter().map(|text| text.to_string()).collect() }),
    }
}

pub fn port(protocol: Protocol, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(Ok(protocol)), port: Some(PortValue::Number(number)), end_port: None }
}

pub fn port_range(protocol: Protocol, first: i32, last: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(Ok(protocol)), port: Some(PortValue::Number(first)), end_port: Some(last) }
}

pub fn named_port(protocol: Protocol, name: &str) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(Ok(protocol)), port: Some(PortValue::Name(name.into())), end_port: None }
}

/// A ClusterNetworkPolicy whose subject is the namespaces matching `subject`.
pub fn cluster_policy(
    name: &str,
    tier: Tier,
    priority: i32,
    subject: LabelSelector,
    ingress: Vec<CnpRule>,
    egress: Vec<CnpRule>,
) -> Policy {
    Policy::Cluster(ClusterNetworkPolicy {
        name: name.into(),
        revision: revision(name),
        tier,
        priority,
        subject: CnpSubject::Namespaces(subject),
        ingress,
        egress,
    })
}

pub fn cnp_rule(action: CnpAction, peers: Vec<CnpPeer>, protocols: Option<Vec<CnpProtocol>>) -> CnpRule {
    CnpRule { name: None, action, peers, protocols }
}

pub fn cnp_port(protocol: Protocol, number: i32) -> CnpProtocol {
    CnpProtocol::Port { protocol, port: CnpPort::Number(number) }
}
