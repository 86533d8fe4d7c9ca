//! The reference evaluator: the specification written as plainly as possible, to judge the
//! compiler against.
//!
//! It reads policies in the shape the user wrote them ([`crate::model`]) and resolves every
//! default itself, straight from the specification: policy types, "own namespace", TCP, "every
//! port", host bits of a CIDR, the fail-closed reading of fields this version does not know, and
//! the stand-in of a refused policy. It shares nothing with the compiler's normalization
//! ([`crate::validate`]'s normalized types), so a bug there cannot hide on both sides of the
//! property test. It shares with the compiler only label selector matching and the definition of
//! a policy endpoint ([`Pod::is_policy_endpoint`]); validation is only a yes/no gate: is this
//! version accepted?
//!
//! It is slow on purpose: it scans everything for every flow.

use std::net::IpAddr;

use crate::model::{
    Cluster, ClusterNetworkPolicy, CnpAction, CnpPeer, CnpPort, CnpProtocol, CnpRule, CnpSubject, LabelSelector,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule, Pod, Policy, PolicyRef, PolicyType,
    PortValue, Protocol, Tier,
};
use crate::plan::{Action, Direction};
use crate::validate::validate;
use crate::verdict::{Decision, Flow, Reason, Verdict};

/// Judges one flow against the cluster and the policies (see [`Reference::new`] for versions).
pub fn verdict(cluster: &Cluster, policies: &[Policy], flow: &Flow) -> Verdict {
    Reference::new(cluster, policies).verdict(flow)
}

/// The reference evaluator with the versions in force chosen once, to judge many flows.
pub struct Reference<'a> {
    cluster: &'a Cluster,
    in_force: Vec<InForce>,
}

/// What one policy object enforces.
enum InForce {
    /// The newest version that validation accepts.
    Accepted(Policy),
    /// No version was ever accepted: the newest version, read by its fail-closed meaning.
    Refused(Policy),
}

impl InForce {
    fn policy(&self) -> &Policy {
        match self {
            InForce::Accepted(policy) | InForce::Refused(policy) => policy,
        }
    }
}

impl<'a> Reference<'a> {
    /// `policies` may hold several versions of one policy, oldest first. In force is the newest
    /// version that validation accepts. A policy with no accepted version enforces the closed side
    /// of what it says ([`Policy::fail_closed_stand_in`] documents the choice), unless even that
    /// cannot be read (its subject is what is wrong): then it enforces nothing.
    pub fn new(cluster: &'a Cluster, policies: &[Policy]) -> Self {
        let mut versions: Vec<(PolicyRef, Vec<&Policy>)> = Vec::new();
        for policy in policies {
            let reference = policy.reference();
            match versions.iter_mut().find(|(seen, _)| *seen == reference) {
                Some((_, list)) => list.push(policy),
                None => versions.push((reference, vec![policy])),
            }
        }
        let in_force = versions
            .into_iter()
            .filter_map(|(_, list)| {
                if let Some(accepted) = list.iter().rev().find(|policy| validate(policy).is_ok()) {
                    return Some(InForce::Accepted((*accepted).clone()));
                }
                let newest = list.last()?;
                let readable = validate(&newest.fail_closed_stand_in()).is_ok();
                readable.then(|| InForce::Refused((*newest).clone()))
            })
            .collect();
        Reference { cluster, in_force }
    }

    pub fn verdict(&self, flow: &Flow) -> Verdict {
        if flow.src == flow.dst {
            let loopback = Decision { allowed: true, reason: Reason::Loopback };
            return Verdict { allowed: true, egress: loopback.clone(), ingress: loopback };
        }
        let judge = Judge { cluster: self.cluster, in_force: &self.in_force, flow };
        let egress = match endpoint_with_address(self.cluster, flow.src) {
            None => Decision { allowed: true, reason: Reason::NotAPod },
            Some(pod) => judge.decide(pod, Direction::Egress, flow.dst),
        };
        let ingress = match endpoint_with_address(self.cluster, flow.dst) {
            None => Decision { allowed: true, reason: Reason::NotAPod },
            Some(pod) if own_node_addresses(self.cluster, pod).contains(&flow.src) => {
                Decision { allowed: true, reason: Reason::FromOwnNode }
            }
            Some(pod) => judge.decide(pod, Direction::Ingress, flow.src),
        };
        Verdict { allowed: egress.allowed && ingress.allowed, egress, ingress }
    }
}

/// The pod that owns an address and that policies can judge ([`Pod::is_policy_endpoint`]).
fn endpoint_with_address(cluster: &Cluster, address: IpAddr) -> Option<&Pod> {
    cluster.pods.values().find(|pod| pod.is_policy_endpoint() && pod.ips.contains(&address))
}

fn own_node_addresses<'a>(cluster: &'a Cluster, pod: &Pod) -> &'a [IpAddr] {
    pod.node.as_ref().and_then(|node| cluster.nodes.get(node)).map(|node| node.ips.as_slice()).unwrap_or(&[])
}

/// Whether `address` is inside the CIDR `text`. Kubernetes accepts host bits and ignores them,
/// so only the prefix's bits are compared.
fn cidr_contains(text: &str, address: IpAddr) -> bool {
    let Some((network, prefix)) = text.split_once('/') else { return false };
    let (Ok(network), Ok(prefix)) = (network.parse::<IpAddr>(), prefix.parse::<u32>()) else { return false };
    let (network, address, width) = match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    if prefix > width {
        return false;
    }
    let ignored = width - prefix;
    prefix == 0 || (network >> ignored) == (address >> ignored)
}

/// The three tiers in the order they are consulted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Admin,
    NetworkPolicy,
    Baseline,
}

struct Judge<'a> {
    cluster: &'a Cluster,
    in_force: &'a [InForce],
    flow: &'a Flow,
}

impl Judge<'_> {
    /// Admin tier, then NetworkPolicies, then Baseline tier, then Kubernetes' default (allow).
    fn decide(&self, pod: &Pod, direction: Direction, peer: IpAddr) -> Decision {
        if let Some(decision) = self.decide_tier(Layer::Admin, pod, direction, peer) {
            return decision;
        }
        let isolating = self.applying(Layer::NetworkPolicy, pod, direction);
        if !isolating.is_empty() {
            for entry in &isolating {
                if let InForce::Accepted(Policy::Network(np)) = entry {
                    let rules = np_rules(np, direction);
                    if let Some(index) = rules.iter().position(|rule| self.np_rule_matches(np, rule, peer)) {
                        let reason =
                            Reason::Rule { policy: entry.policy().reference(), rule: index, action: Action::Accept };
                        return Decision { allowed: true, reason };
                    }
                }
            }
            let by = isolating.iter().map(|entry| entry.policy().reference()).collect();
            return Decision { allowed: false, reason: Reason::Isolated { by } };
        }
        if let Some(decision) = self.decide_tier(Layer::Baseline, pod, direction, peer) {
            return decision;
        }
        Decision { allowed: true, reason: Reason::Default }
    }

    /// The first rule that matches, over the tier's policies in order, decides; a Pass (or no
    /// match at all) hands the flow to the next tier.
    fn decide_tier(&self, layer: Layer, pod: &Pod, direction: Direction, peer: IpAddr) -> Option<Decision> {
        for entry in self.applying(layer, pod, direction) {
            let Policy::Cluster(cnp) = entry.policy() else { continue };
            let matched = match entry {
                // The stand-in is one rule that denies every peer, port and protocol.
                InForce::Refused(_) => Some((0, Action::Deny)),
                InForce::Accepted(_) => cnp_rules(cnp, direction)
                    .iter()
                    .enumerate()
                    .find_map(|(index, rule)| self.cnp_rule_decides(rule, peer).map(|action| (index, action))),
            };
            if let Some((index, action)) = matched {
                let reason = Reason::Rule { policy: entry.policy().reference(), rule: index, action };
                return match action {
                    Action::Accept => Some(Decision { allowed: true, reason }),
                    Action::Deny => Some(Decision { allowed: false, reason }),
                    Action::Pass => None,
                };
            }
        }
        None
    }

    /// The layer's policies that select the pod and take part in the direction, in evaluation
    /// order: ClusterNetworkPolicies by priority, then name (Palisade's tie-break, so every node
    /// decides alike); NetworkPolicies by name (the order does not change the verdict).
    fn applying(&self, layer: Layer, pod: &Pod, direction: Direction) -> Vec<&InForce> {
        let mut selected: Vec<&InForce> = self
            .in_force
            .iter()
            .filter(|entry| layer_of(entry.policy()) == layer)
            .filter(|entry| takes_part(entry, direction) && self.subject_selects(entry.policy(), pod))
            .collect();
        selected.sort_by_key(|entry| {
            let priority = match entry.policy() {
                Policy::Cluster(cnp) => cnp.priority,
                Policy::Network(_) => 0,
            };
            (priority, entry.policy().reference())
        });
        selected
    }

    fn subject_selects(&self, policy: &Policy, pod: &Pod) -> bool {
        let namespace_labels = self.cluster.namespaces.get(&pod.key.namespace).map(|ns| &ns.labels);
        match policy {
            Policy::Network(np) => pod.key.namespace == np.namespace && np.pod_selector.matches(&pod.labels),
            Policy::Cluster(cnp) => match &cnp.subject {
                CnpSubject::Namespaces(selector) => namespace_labels.is_some_and(|labels| selector.matches(labels)),
                CnpSubject::Pods { namespace_selector, pod_selector } => {
                    namespace_labels.is_some_and(|labels| namespace_selector.matches(labels))
                        && pod_selector.matches(&pod.labels)
                }
                CnpSubject::Invalid(_) => false,
            },
        }
    }

    // --- NetworkPolicy -----------------------------------------------------------------------

    /// An empty peer list means every peer; an empty port list every port of every protocol.
    fn np_rule_matches(&self, np: &NetworkPolicy, rule: &NetworkPolicyRule, peer: IpAddr) -> bool {
        (rule.peers.is_empty() || rule.peers.iter().any(|spec| self.np_peer_matches(np, spec, peer)))
            && (rule.ports.is_empty() || rule.ports.iter().any(|port| self.np_port_matches(port)))
    }

    /// An ipBlock alone, or pods: a missing namespace selector means the policy's own namespace,
    /// a missing pod selector every pod of the selected namespaces.
    fn np_peer_matches(&self, np: &NetworkPolicy, peer: &NetworkPolicyPeer, address: IpAddr) -> bool {
        if let Some(block) = &peer.ip_block {
            return cidr_contains(&block.cidr, address)
                && !block.except.iter().any(|except| cidr_contains(except, address));
        }
        let Some(pod) = endpoint_with_address(self.cluster, address) else { return false };
        let namespace_matches = match &peer.namespace_selector {
            None => pod.key.namespace == np.namespace,
            Some(selector) => self
                .cluster
                .namespaces
                .get(&pod.key.namespace)
                .is_some_and(|namespace| selector.matches(&namespace.labels)),
        };
        let pod_matches = peer.pod_selector.as_ref().is_none_or(|selector| selector.matches(&pod.labels));
        namespace_matches && pod_matches
    }

    /// The protocol defaults to TCP; no port means every port of it; a named port is looked up
    /// on the destination pod with the rule's protocol.
    fn np_port_matches(&self, port: &NetworkPolicyPort) -> bool {
        let protocol = match &port.protocol {
            None => Protocol::Tcp,
            Some(Ok(protocol)) => *protocol,
            Some(Err(_)) => return false,
        };
        if self.flow.protocol != protocol || !protocol.has_ports() {
            return false;
        }
        match &port.port {
            None => true,
            Some(PortValue::Number(first)) => {
                let last = port.end_port.unwrap_or(*first);
                (*first..=last).contains(&i32::from(self.flow.port))
            }
            Some(PortValue::Name(name)) => self.destination_has_named_port(name, Some(protocol)),
        }
    }

    // --- ClusterNetworkPolicy ----------------------------------------------------------------

    /// The rule's action if it matches. Upstream fails closed on what this version cannot read:
    /// an unknown peer or protocol entry makes a Deny or Pass rule deny everything, and matches
    /// nothing in an Accept rule.
    fn cnp_rule_decides(&self, rule: &CnpRule, peer: IpAddr) -> Option<Action> {
        let unreadable = rule.peers.iter().any(|peer| matches!(peer, CnpPeer::Unknown))
            || rule.protocols.iter().flatten().any(|protocol| matches!(protocol, CnpProtocol::Unknown));
        if unreadable && rule.action != CnpAction::Accept {
            return Some(Action::Deny);
        }
        let peer_matches = rule.peers.iter().any(|spec| self.cnp_peer_matches(spec, peer));
        let port_matches = match &rule.protocols {
            None => true,
            Some(protocols) => protocols.iter().any(|protocol| self.cnp_protocol_matches(protocol)),
        };
        (peer_matches && port_matches).then_some(match rule.action {
            CnpAction::Accept => Action::Accept,
            CnpAction::Deny => Action::Deny,
            CnpAction::Pass => Action::Pass,
        })
    }

    fn cnp_peer_matches(&self, peer: &CnpPeer, address: IpAddr) -> bool {
        let pod_in = |namespace_selector: &LabelSelector, pod_selector: &LabelSelector| {
            endpoint_with_address(self.cluster, address).is_some_and(|pod| {
                self.cluster
                    .namespaces
                    .get(&pod.key.namespace)
                    .is_some_and(|namespace| namespace_selector.matches(&namespace.labels))
                    && pod_selector.matches(&pod.labels)
            })
        };
        match peer {
            CnpPeer::Namespaces(selector) => pod_in(selector, &LabelSelector::default()),
            CnpPeer::Pods { namespace_selector, pod_selector } => pod_in(namespace_selector, pod_selector),
            CnpPeer::Networks(cidrs) => cidrs.iter().any(|cidr| cidr_contains(cidr, address)),
            CnpPeer::Nodes(selector) => {
                self.cluster.nodes.values().any(|node| selector.matches(&node.labels) && node.ips.contains(&address))
            }
            // Palisade does not intercept DNS: a domain name peer matches no traffic.
            CnpPeer::DomainNames(_) => false,
            CnpPeer::Unknown => false,
        }
    }

    fn cnp_protocol_matches(&self, protocol: &CnpProtocol) -> bool {
        let flow = self.flow;
        match protocol {
            CnpProtocol::Port { protocol, port } => {
                let (first, last) = match port {
                    CnpPort::Number(number) => (*number, *number),
                    CnpPort::Range { start, end } => (*start, *end),
                };
                flow.protocol == *protocol && protocol.has_ports() && (first..=last).contains(&i32::from(flow.port))
            }
            // A CNP named port takes the container port's own protocol.
            CnpProtocol::NamedPort(name) => self.destination_has_named_port(name, None),
            CnpProtocol::Unknown => false,
        }
    }

    /// A container port of the destination pod with this name, the flow's protocol and port.
    fn destination_has_named_port(&self, name: &str, protocol: Option<Protocol>) -> bool {
        let flow = self.flow;
        flow.protocol.has_ports()
            && protocol.is_none_or(|wanted| wanted == flow.protocol)
            && endpoint_with_address(self.cluster, flow.dst).is_some_and(|pod| {
                pod.named_ports
                    .iter()
                    .any(|named| named.name == name && named.protocol == flow.protocol && named.port == flow.port)
            })
    }
}

fn layer_of(policy: &Policy) -> Layer {
    match policy {
        Policy::Network(_) => Layer::NetworkPolicy,
        Policy::Cluster(cnp) => match cnp.tier {
            Tier::Admin => Layer::Admin,
            Tier::Baseline => Layer::Baseline,
        },
    }
}

/// Whether a policy judges a direction at all.
///
/// - A NetworkPolicy isolates the directions of its `policyTypes`; unset, they default to
///   Ingress, plus Egress when it has egress rules (the API server's defaulting). Its stand-in
///   isolates the same directions, ignoring values it cannot read, and both when none is left.
/// - A ClusterNetworkPolicy takes part in a direction it has rules for; its stand-in in a
///   direction with a Deny or Pass rule (an Accept-only direction can only have allowed).
fn takes_part(entry: &InForce, direction: Direction) -> bool {
    let wanted = match direction {
        Direction::Ingress => PolicyType::Ingress,
        Direction::Egress => PolicyType::Egress,
    };
    match entry {
        InForce::Accepted(Policy::Network(np)) => match &np.policy_types {
            Some(types) => types.contains(&wanted),
            None => direction == Direction::Ingress || !np.egress.is_empty(),
        },
        InForce::Refused(Policy::Network(np)) => {
            let known: Vec<&PolicyType> = match &np.policy_types {
                Some(types) => types.iter().filter(|t| !matches!(t, PolicyType::Unknown(_))).collect(),
                None if np.egress.is_empty() => vec![&PolicyType::Ingress],
                None => vec![&PolicyType::Ingress, &PolicyType::Egress],
            };
            known.is_empty() || known.contains(&&wanted)
        }
        InForce::Accepted(Policy::Cluster(cnp)) => !cnp_rules(cnp, direction).is_empty(),
        InForce::Refused(Policy::Cluster(cnp)) => {
            cnp_rules(cnp, direction).iter().any(|rule| rule.action != CnpAction::Accept)
        }
    }
}

fn np_rules(np: &NetworkPolicy, direction: Direction) -> &[NetworkPolicyRule] {
    match direction {
        Direction::Ingress => &np.ingress,
        Direction::Egress => &np.egress,
    }
}

fn cnp_rules(cnp: &ClusterNetworkPolicy, direction: Direction) -> &[CnpRule] {
    match direction {
        Direction::Ingress => &cnp.ingress,
        Direction::Egress => &cnp.egress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_compare_only_prefix_bits() {
        let address: IpAddr = "10.0.100.7".parse().unwrap();
        assert!(cidr_contains("10.0.100.1/24", address), "host bits are ignored");
        assert!(cidr_contains("0.0.0.0/0", address));
        assert!(!cidr_contains("10.0.101.0/24", address));
        assert!(!cidr_contains("::/0", address), "families never mix");
        assert!(!cidr_contains("10.0.0.0/33", address));
        assert!(cidr_contains("fd00::1:0/120", "fd00::1:4".parse().unwrap()));
        assert!(!cidr_contains("fd00::1:0/126", "fd00::1:4".parse().unwrap()));
    }
}
