//! Evaluating node plans for a flow exactly as the dataplane does, so that plans can be checked
//! against the reference evaluator. Egress is judged with the source pod's node plan, ingress
//! with the destination pod's; loopback and ingress from the node's own addresses are allowed
//! before any rule, as the agent's fixed rules do.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::PodKey;
use crate::plan::{Action, DirectionPlan, Group, GroupId, LocalPod, NodePlan, PeerMatch, PortEntry, PortMatch, Rule};
use crate::verdict::{Decision, Flow, Reason, Verdict};

/// Plans of every node plus the nodes' own addresses, indexed by pod address.
pub struct PlanEvaluator<'a> {
    plans: &'a BTreeMap<String, NodePlan>,
    node_ips: &'a BTreeMap<String, Vec<IpAddr>>,
    pods_by_ip: BTreeMap<IpAddr, (&'a NodePlan, &'a PodKey, &'a LocalPod)>,
}

/// Judges one flow; see [`PlanEvaluator`] to judge many.
pub fn evaluate(plans: &BTreeMap<String, NodePlan>, node_ips: &BTreeMap<String, Vec<IpAddr>>, flow: &Flow) -> Verdict {
    PlanEvaluator::new(plans, node_ips).verdict(flow)
}

impl<'a> PlanEvaluator<'a> {
    pub fn new(plans: &'a BTreeMap<String, NodePlan>, node_ips: &'a BTreeMap<String, Vec<IpAddr>>) -> Self {
        let mut pods_by_ip = BTreeMap::new();
        for plan in plans.values() {
            for (key, pod) in &plan.pods {
                for ip in &pod.ips {
                    pods_by_ip.entry(*ip).or_insert((plan, key, pod));
                }
            }
        }
        PlanEvaluator { plans, node_ips, pods_by_ip }
    }

    pub fn plans(&self) -> &BTreeMap<String, NodePlan> {
        self.plans
    }

    pub fn verdict(&self, flow: &Flow) -> Verdict {
        if flow.src == flow.dst {
            let loopback = Decision { allowed: true, reason: Reason::Loopback };
            return Verdict { allowed: true, egress: loopback.clone(), ingress: loopback };
        }
        let egress = match self.pods_by_ip.get(&flow.src) {
            None => Decision { allowed: true, reason: Reason::NotAPod },
            Some((plan, _, pod)) => judge(plan, &pod.egress, flow.dst, flow),
        };
        let ingress = match self.pods_by_ip.get(&flow.dst) {
            None => Decision { allowed: true, reason: Reason::NotAPod },
            Some((plan, _, _)) if self.node_ips.get(&plan.node).is_some_and(|ips| ips.contains(&flow.src)) => {
                Decision { allowed: true, reason: Reason::FromOwnNode }
            }
            Some((plan, _, pod)) => judge(plan, &pod.ingress, flow.src, flow),
        };
        Verdict { allowed: egress.allowed && ingress.allowed, egress, ingress }
    }
}

/// The plan's evaluation order (see [`crate::plan`]). A rule set id missing from the plan has no
/// rules; plans built by this crate never miss one.
fn judge(plan: &NodePlan, direction: &DirectionPlan, peer: IpAddr, flow: &Flow) -> Decision {
    if let Some(decision) = judge_tier(plan, &direction.admin, peer, flow) {
        return decision;
    }
    if let Some(ids) = &direction.network_policy {
        for rule_set in ids.iter().filter_map(|id| plan.rule_sets.get(id)) {
            if let Some(rule) = rule_set.rules.iter().find(|rule| rule_matches(plan, rule, peer, flow)) {
                let reason = Reason::Rule { policy: rule_set.policy.clone(), rule: rule.index, action: Action::Accept };
                return Decision { allowed: true, reason };
            }
        }
        let by = ids.iter().filter_map(|id| plan.rule_sets.get(id)).map(|rule_set| rule_set.policy.clone()).collect();
        return Decision { allowed: false, reason: Reason::Isolated { by } };
    }
    if let Some(decision) = judge_tier(plan, &direction.baseline, peer, flow) {
        return decision;
    }
    Decision { allowed: true, reason: Reason::Default }
}

fn judge_tier(plan: &NodePlan, ids: &[crate::plan::RuleSetId], peer: IpAddr, flow: &Flow) -> Option<Decision> {
    for rule_set in ids.iter().filter_map(|id| plan.rule_sets.get(id)) {
        if let Some(rule) = rule_set.rules.iter().find(|rule| rule_matches(plan, rule, peer, flow)) {
            let reason = Reason::Rule { policy: rule_set.policy.clone(), rule: rule.index, action: rule.action };
            return match rule.action {
                Action::Accept => Some(Decision { allowed: true, reason }),
                Action::Deny => Some(Decision { allowed: false, reason }),
                Action::Pass => None,
            };
        }
    }
    None
}

fn rule_matches(plan: &NodePlan, rule: &Rule, peer: IpAddr, flow: &Flow) -> bool {
    let peer_matches = match &rule.peers {
        PeerMatch::Any => true,
        PeerMatch::AnyOf(ids) => ids.iter().any(|id| group(plan, id).is_some_and(|group| group.contains_address(peer))),
    };
    let port_matches = match &rule.ports {
        PortMatch::Any => true,
        PortMatch::AnyOf(entries) => entries.iter().any(|entry| match entry {
            PortEntry::Range { protocol, first, last } => {
                flow.protocol == *protocol && protocol.has_ports() && (*first..=*last).contains(&flow.port)
            }
            PortEntry::Named(id) => group(plan, id).is_some_and(|group| group.contains_ip_port(flow.dst, flow)),
        }),
    };
    peer_matches && port_matches
}

fn group<'p>(plan: &'p NodePlan, id: &GroupId) -> Option<&'p Group> {
    plan.groups.get(id)
}

impl Group {
    /// Membership as ipset tests it: `hash:ip` exact, `hash:net` longest prefix with `nomatch`.
    pub fn contains_address(&self, address: IpAddr) -> bool {
        match self {
            Group::Addresses(set) => set.contains(&address),
            Group::Networks(entries) => entries
                .iter()
                .filter(|entry| entry.net.contains(&address))
                .max_by_key(|entry| (entry.net.prefix_len(), entry.nomatch))
                .is_some_and(|entry| !entry.nomatch),
            Group::IpPorts(_) => false,
        }
    }

    /// `hash:ip,port` membership of the flow's destination, protocol and port.
    pub fn contains_ip_port(&self, address: IpAddr, flow: &Flow) -> bool {
        match self {
            Group::IpPorts(set) => set.contains(&(address, flow.protocol, flow.port)),
            _ => false,
        }
    }
}
