//! The per-node plan: what one node must enforce, and the contract between the engine and the agent.
//!
//! A plan is semantic, not iptables text: the agent's renderer decides chains and ipsets. Its shape
//! keeps rules O(policies x ports): pods live inside content-addressed [`Group`]s, so pod churn
//! changes group members and nothing else. Rule sets are shared by every local pod a policy selects.
//!
//! How one pod's traffic in one direction is judged (the same order as the reference evaluator):
//! 1. `admin` rule sets in order, each rule in order; the first matching rule decides:
//!    Accept allows, Deny denies, Pass skips the rest of the admin tier.
//! 2. If `network_policy` is `Some`, the pod is isolated: allowed iff some rule of those sets matches
//!    (their actions are all Accept), otherwise denied.
//! 3. `baseline` rule sets like the admin tier; Pass skips to step 4.
//! 4. Allowed.
//!
//! Before any of this, the dataplane always allows ingress from the node's own addresses (kubelet
//! probes), and loopback (a pod talking to its own address). These are fixed rules of the agent,
//! never rules of a plan.
//!
//! "Peer" is the source address for ingress and the destination address for egress.
//! Named ports always resolve on the destination: [`PortEntry::Named`] tests `(dst, protocol, port)`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{PodKey, PolicyRef, Protocol, Revision};

/// Version of the plan format, carried on the wire so agents can refuse what they cannot read.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// A content address: a stable 16-hex-digit hash of a group's or rule set's definition. Stable
/// across processes and releases of the same format version, so ipset and chain names derived
/// from it survive restarts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub String);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleSetId(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub node: String,
    /// The node's own addresses (its Node's InternalIP and ExternalIP): the agent always allows
    /// ingress from them (kubelet probes). Part of the plan so no agent flag can forget them.
    #[serde(default)]
    pub node_ips: Vec<IpAddr>,
    /// Pods scheduled on this node that are not host-network, with their addresses.
    pub pods: BTreeMap<PodKey, LocalPod>,
    /// Only the rule sets some local pod refers to.
    pub rule_sets: BTreeMap<RuleSetId, RuleSet>,
    /// Only the groups some rule set of this plan refers to.
    pub groups: BTreeMap<GroupId, Group>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPod {
    pub ips: Vec<IpAddr>,
    pub ingress: DirectionPlan,
    pub egress: DirectionPlan,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionPlan {
    /// Admin-tier ClusterNetworkPolicies selecting the pod, by (priority, name).
    pub admin: Vec<RuleSetId>,
    /// `Some` iff a NetworkPolicy isolates the pod in this direction; sets sorted by (namespace, name).
    pub network_policy: Option<Vec<RuleSetId>>,
    /// Baseline-tier ClusterNetworkPolicies selecting the pod, by (priority, name).
    pub baseline: Vec<RuleSetId>,
}

impl DirectionPlan {
    /// True when nothing can deny this pod's traffic in this direction.
    pub fn is_open(&self) -> bool {
        self.admin.is_empty() && self.network_policy.is_none() && self.baseline.is_empty()
    }
}

/// The rules of one policy in one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    pub policy: PolicyRef,
    pub revision: Revision,
    pub direction: Direction,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Position of the rule in the policy's ingress or egress list.
    pub index: usize,
    /// The rule's `name` (ClusterNetworkPolicy only).
    pub name: Option<String>,
    pub action: Action,
    pub peers: PeerMatch,
    pub ports: PortMatch,
}

/// What a matching rule does. NetworkPolicy rules are always `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMatch {
    /// Every address.
    Any,
    /// The peer address is in one of these groups; an empty list matches nothing.
    AnyOf(Vec<GroupId>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortMatch {
    /// Every protocol and port, ICMP included.
    Any,
    /// One of these entries matches; an empty list matches nothing.
    AnyOf(Vec<PortEntry>),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortEntry {
    /// Destination port in `first..=last` for this protocol.
    Range { protocol: Protocol, first: u16, last: u16 },
    /// `(destination address, protocol, destination port)` is a member of this `IpPorts` group.
    Named(GroupId),
}

/// Members of a content-addressed group. Each kind maps onto one ipset type per address family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Group {
    /// Single addresses (`hash:ip`): pods chosen by selectors, node addresses.
    Addresses(BTreeSet<IpAddr>),
    /// Networks with ipset `hash:net` semantics: the longest prefix that contains an address
    /// decides, and a `nomatch` entry excludes it. An ipBlock is its CIDR plus its excepts as nomatch.
    Networks(BTreeSet<NetEntry>),
    /// `(address, protocol, port)` triples (`hash:ip,port`): resolved named ports.
    IpPorts(BTreeSet<(IpAddr, Protocol, u16)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetEntry {
    pub net: IpNet,
    pub nomatch: bool,
}

/// The members a group gained and lost, for a node that already holds the group: pod churn costs
/// the addresses that changed, not the group's size. Networks groups never change members (their
/// id is their content), so they are never patched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupPatch {
    Addresses { added: BTreeSet<IpAddr>, removed: BTreeSet<IpAddr> },
    IpPorts { added: BTreeSet<(IpAddr, Protocol, u16)>, removed: BTreeSet<(IpAddr, Protocol, u16)> },
}

impl GroupPatch {
    pub fn is_empty(&self) -> bool {
        match self {
            GroupPatch::Addresses { added, removed } => added.is_empty() && removed.is_empty(),
            GroupPatch::IpPorts { added, removed } => added.is_empty() && removed.is_empty(),
        }
    }

    /// Applies the patch; `None` when the group is of another kind (the patch was made for
    /// another group: a bug or a corrupt stream, never something to apply halfway).
    fn apply(&self, group: &mut Group) -> Option<()> {
        match (self, group) {
            (GroupPatch::Addresses { added, removed }, Group::Addresses(members)) => patch_set(members, added, removed),
            (GroupPatch::IpPorts { added, removed }, Group::IpPorts(members)) => patch_set(members, added, removed),
            _ => return None,
        }
        Some(())
    }
}

fn patch_set<T: Ord + Clone>(members: &mut BTreeSet<T>, added: &BTreeSet<T>, removed: &BTreeSet<T>) {
    for member in removed {
        members.remove(member);
    }
    members.extend(added.iter().cloned());
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanDeltaError {
    #[error("the delta patches group {0}, which the plan does not hold")]
    PatchOfMissingGroup(String),
    #[error("the delta patches group {0} with members of another kind")]
    PatchOfOtherKind(String),
}

/// The change from one plan of a node to the next, for streaming to the agent. Pods, rule sets
/// and groups new to the node are sent whole; groups the node keeps are patched by member
/// ([`GroupPatch`], shared through an `Arc` by every node that holds the group). Applying it to
/// the old plan ([`PlanDelta::apply`]) yields the new one exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDelta {
    pub node: String,
    /// The node's addresses, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ips: Option<Vec<IpAddr>>,
    pub upserted_pods: BTreeMap<PodKey, LocalPod>,
    pub removed_pods: BTreeSet<PodKey>,
    pub upserted_rule_sets: BTreeMap<RuleSetId, RuleSet>,
    pub removed_rule_sets: BTreeSet<RuleSetId>,
    pub upserted_groups: BTreeMap<GroupId, Group>,
    pub removed_groups: BTreeSet<GroupId>,
    /// Member changes of groups the node keeps (plan stream v2; a v1 peer gets them as
    /// `upserted_groups`, see [`PlanDelta::without_patches`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub patched_groups: BTreeMap<GroupId, Arc<GroupPatch>>,
}

impl NodePlan {
    /// What turns `old` into `new`.
    pub fn diff(old: &NodePlan, new: &NodePlan) -> PlanDelta {
        let (upserted_pods, removed_pods) = diff_maps(&old.pods, &new.pods);
        let (upserted_rule_sets, removed_rule_sets) = diff_maps(&old.rule_sets, &new.rule_sets);
        let (upserted_groups, removed_groups) = diff_maps(&old.groups, &new.groups);
        PlanDelta {
            node: new.node.clone(),
            node_ips: (old.node_ips != new.node_ips).then(|| new.node_ips.clone()),
            upserted_pods,
            removed_pods,
            upserted_rule_sets,
            removed_rule_sets,
            upserted_groups,
            removed_groups,
            patched_groups: BTreeMap::new(),
        }
    }
}

impl PlanDelta {
    pub fn is_empty(&self) -> bool {
        self.node_ips.is_none()
            && self.upserted_pods.is_empty()
            && self.removed_pods.is_empty()
            && self.upserted_rule_sets.is_empty()
            && self.removed_rule_sets.is_empty()
            && self.upserted_groups.is_empty()
            && self.removed_groups.is_empty()
            && self.patched_groups.is_empty()
    }

    /// Turns `plan` into the next plan. A patch of a group the plan lacks, or of another kind, is
    /// refused before anything changes: `plan` is then untouched.
    pub fn apply(&self, plan: &mut NodePlan) -> Result<(), PlanDeltaError> {
        for (id, patch) in &self.patched_groups {
            let Some(group) = plan.groups.get(id).filter(|_| !self.removed_groups.contains(id)) else {
                return Err(PlanDeltaError::PatchOfMissingGroup(id.0.clone()));
            };
            let kinds_match = matches!(
                (patch.as_ref(), group),
                (GroupPatch::Addresses { .. }, Group::Addresses(_)) | (GroupPatch::IpPorts { .. }, Group::IpPorts(_))
            );
            if !kinds_match {
                return Err(PlanDeltaError::PatchOfOtherKind(id.0.clone()));
            }
        }
        plan.node.clone_from(&self.node);
        if let Some(node_ips) = &self.node_ips {
            plan.node_ips.clone_from(node_ips);
        }
        apply_to_map(&mut plan.pods, &self.upserted_pods, &self.removed_pods);
        apply_to_map(&mut plan.rule_sets, &self.upserted_rule_sets, &self.removed_rule_sets);
        apply_to_map(&mut plan.groups, &self.upserted_groups, &self.removed_groups);
        for (id, patch) in &self.patched_groups {
            if let Some(group) = plan.groups.get_mut(id) {
                // Kinds were checked above.
                let _ = patch.apply(group);
            }
        }
        Ok(())
    }

    /// The same change for a peer that reads no patches (plan stream v1): each patched group is
    /// sent whole, as it is in `after`, the plan this delta leads to.
    pub fn without_patches(&self, after: &NodePlan) -> PlanDelta {
        let mut delta = PlanDelta { patched_groups: BTreeMap::new(), ..self.clone() };
        for id in self.patched_groups.keys() {
            if let Some(group) = after.groups.get(id) {
                delta.upserted_groups.insert(id.clone(), group.clone());
            }
        }
        delta
    }
}

fn diff_maps<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (BTreeMap<K, V>, BTreeSet<K>) {
    let upserted = new
        .iter()
        .filter(|(key, value)| old.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let removed = old.keys().filter(|key| !new.contains_key(*key)).cloned().collect();
    (upserted, removed)
}

fn apply_to_map<K: Ord + Clone, V: Clone>(map: &mut BTreeMap<K, V>, upserted: &BTreeMap<K, V>, removed: &BTreeSet<K>) {
    for key in removed {
        map.remove(key);
    }
    for (key, value) in upserted {
        map.insert(key.clone(), value.clone());
    }
}
