//! The reference evaluator: the specification written as plainly as possible, to judge the
//! compiler against. It shares only selector matching and validation with the compiler, and it
//! is slow on purpose (it scans everything for every flow).

use std::net::IpAddr;

use crate::model::{Cluster, Pod, Policy, PolicyRef, Protocol};
use crate::plan::{Action, Direction};
use crate::validate::{Layer, PeerSpec, PortSpec, ValidPolicy, ValidRule, validate, validate_all};
use crate::verdict::{Decision, Flow, Reason, Verdict};

/// Judges one flow against the cluster and the policies. An invalid policy enforces its
/// fail-closed stand-in ([`Policy::fail_closed_stand_in`]) if that is valid, else nothing.
pub fn verdict(cluster: &Cluster, policies: &[Policy], flow: &Flow) -> Verdict {
    Reference::new(cluster, policies).verdict(flow)
}

/// The reference evaluator with the policies validated once, to judge many flows.
pub struct Reference<'a> {
    cluster: &'a Cluster,
    policies: Vec<ValidPolicy>,
}

impl<'a> Reference<'a> {
    pub fn new(cluster: &'a Cluster, policies: &[Policy]) -> Self {
        // The list may hold several versions of one policy, oldest first. In force is the newest
        // valid version; when there is none, the newest version's fail-closed stand-in.
        let mut versions: Vec<(PolicyRef, Vec<&Policy>)> = Vec::new();
        for policy in policies {
            let reference = policy.reference();
            match versions.iter_mut().find(|(seen, _)| *seen == reference) {
                Some((_, list)) => list.push(policy),
                None => versions.push((reference, vec![policy])),
            }
        }
        let in_force: Vec<Policy> = versions
            .into_iter()
            .filter_map(|(_, list)| {
                let newest_valid = list.iter().rev().find(|policy| validate(policy).is_ok());
                match newest_valid {
                    Some(policy) => Some((*policy).clone()),
                    None => list.last().map(|policy| policy.fail_closed_stand_in()),
                }
            })
            .collect();
        let (valid, _errors, _warnings) = validate_all(&in_force);
        Reference { cluster, policies: valid }
    }

    pub fn verdict(&self, flow: &Flow) -> Verdict {
        judge_flow(self.cluster, &self.policies, flow)
    }
}

fn judge_flow(cluster: &Cluster, valid: &[ValidPolicy], flow: &Flow) -> Verdict {
    if flow.src == flow.dst {
        let loopback = Decision { allowed: true, reason: Reason::Loopback };
        return Verdict { allowed: true, egress: loopback.clone(), ingress: loopback };
    }
    let judge = Judge { cluster, policies: valid, flow };
    let egress = match pod_with_address(cluster, flow.src) {
        None => Decision { allowed: true, reason: Reason::NotAPod },
        Some(pod) => judge.decide(pod, Direction::Egress, flow.dst),
    };
    let ingress = match pod_with_address(cluster, flow.dst) {
        None => Decision { allowed: true, reason: Reason::NotAPod },
        Some(pod) if own_node_addresses(cluster, pod).contains(&flow.src) => {
            Decision { allowed: true, reason: Reason::FromOwnNode }
        }
        Some(pod) => judge.decide(pod, Direction::Ingress, flow.src),
    };
    Verdict { allowed: egress.allowed && ingress.allowed, egress, ingress }
}

/// The pod (never host-network, always scheduled) that owns an address.
fn pod_with_address(cluster: &Cluster, address: IpAddr) -> Option<&Pod> {
    cluster.pods.values().find(|pod| pod.is_policy_endpoint() && pod.ips.contains(&address))
}

fn own_node_addresses<'a>(cluster: &'a Cluster, pod: &Pod) -> &'a [IpAddr] {
    pod.node.as_ref().and_then(|node| cluster.nodes.get(node)).map(|node| node.ips.as_slice()).unwrap_or(&[])
}

struct Judge<'a> {
    cluster: &'a Cluster,
    policies: &'a [ValidPolicy],
    flow: &'a Flow,
}

impl Judge<'_> {
    /// Admin tier, then NetworkPolicy tier, then Baseline tier, then the default.
    fn decide(&self, pod: &Pod, direction: Direction, peer: IpAddr) -> Decision {
        if let Some(decision) = self.decide_tier(Layer::Admin, pod, direction, peer) {
            return decision;
        }
        let isolating = self.policies_of(Layer::NetworkPolicy, pod, direction);
        if !isolating.is_empty() {
            for (policy, rules) in &isolating {
                if let Some(rule) = rules.iter().find(|rule| self.rule_matches(rule, peer)) {
                    return Decision {
                        allowed: true,
                        reason: Reason::Rule {
                            policy: policy.reference.clone(),
                            rule: rule.index,
                            action: Action::Accept,
                        },
                    };
                }
            }
            let by = isolating.iter().map(|(policy, _)| policy.reference.clone()).collect();
            return Decision { allowed: false, reason: Reason::Isolated { by } };
        }
        if let Some(decision) = self.decide_tier(Layer::Baseline, pod, direction, peer) {
            return decision;
        }
        Decision { allowed: true, reason: Reason::Default }
    }

    /// First matching rule of the tier's policies in order; `None` if nothing matched or a Pass did.
    fn decide_tier(&self, layer: Layer, pod: &Pod, direction: Direction, peer: IpAddr) -> Option<Decision> {
        for (policy, rules) in self.policies_of(layer, pod, direction) {
            if let Some(rule) = rules.iter().find(|rule| self.rule_matches(rule, peer)) {
                let reason = Reason::Rule { policy: policy.reference.clone(), rule: rule.index, action: rule.action };
                return match rule.action {
                    Action::Accept => Some(Decision { allowed: true, reason }),
                    Action::Deny => Some(Decision { allowed: false, reason }),
                    Action::Pass => None,
                };
            }
        }
        None
    }

    /// The layer's policies that select the pod and have rules for the direction, in evaluation order.
    fn policies_of(&self, layer: Layer, pod: &Pod, direction: Direction) -> Vec<(&ValidPolicy, &[ValidRule])> {
        let namespace = self.cluster.namespaces.get(&pod.key.namespace);
        let mut selected: Vec<(&ValidPolicy, &[ValidRule])> = self
            .policies
            .iter()
            .filter(|policy| policy.layer == layer && policy.subject.selects(pod, namespace))
            .filter_map(|policy| policy.rules(direction).map(|rules| (policy, rules)))
            .collect();
        selected.sort_by(|a, b| a.0.order_key().cmp(&b.0.order_key()));
        selected
    }

    fn rule_matches(&self, rule: &ValidRule, peer: IpAddr) -> bool {
        let peer_matches = match &rule.peers {
            None => true,
            Some(peers) => peers.iter().any(|spec| self.peer_matches(spec, peer)),
        };
        let port_matches = match &rule.ports {
            None => true,
            Some(ports) => ports.iter().any(|spec| self.port_matches(spec)),
        };
        peer_matches && port_matches
    }

    fn peer_matches(&self, spec: &PeerSpec, address: IpAddr) -> bool {
        match spec {
            PeerSpec::Pods(selection) => pod_with_address(self.cluster, address)
                .is_some_and(|pod| selection.selects(pod, self.cluster.namespaces.get(&pod.key.namespace))),
            PeerSpec::IpBlock { cidr, except } => {
                cidr.contains(&address) && !except.iter().any(|net| net.contains(&address))
            }
            PeerSpec::Networks(nets) => nets.iter().any(|net| net.contains(&address)),
            PeerSpec::Nodes(selector) => {
                self.cluster.nodes.values().any(|node| selector.matches(&node.labels) && node.ips.contains(&address))
            }
            PeerSpec::Nothing => false,
            PeerSpec::Everything => true,
        }
    }

    /// Named ports resolve on the destination pod, by name and protocol.
    fn port_matches(&self, spec: &PortSpec) -> bool {
        let flow = self.flow;
        match spec {
            PortSpec::Range { protocol, first, last } => {
                flow.protocol == *protocol && protocol.has_ports() && (*first..=*last).contains(&flow.port)
            }
            PortSpec::Named { name, protocol } => {
                protocol.is_none_or(|wanted| wanted == flow.protocol)
                    && flow.protocol != Protocol::Icmp
                    && pod_with_address(self.cluster, flow.dst).is_some_and(|pod| {
                        pod.named_ports.iter().any(|named| {
                            &named.name == name && named.protocol == flow.protocol && named.port == flow.port
                        })
                    })
            }
            PortSpec::Everything => true,
        }
    }
}
