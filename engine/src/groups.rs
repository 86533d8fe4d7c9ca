//! Content-addressed group definitions: what a group means, its stable id, and which members a
//! pod or node contributes to it. Ids hash the definition, never the members, so pod churn
//! changes members and leaves every rule (and every chain name derived from an id) alone.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{LabelSelector, Namespace, Node, Pod, PolicyRef, Protocol};
use crate::plan::{Direction, GroupId, NetEntry, RuleSetId};
use crate::validate::PodSelection;

/// What a group stands for. Its canonical JSON serialization is what the id hashes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum GroupDefinition {
    /// Addresses of the selected pods (NetworkPolicy "own namespace" is an exact namespace name).
    Pods(PodSelection),
    /// An ipBlock (cidr plus nomatch excepts) or a CNP `networks` peer (all entries match).
    Networks(BTreeSet<NetEntry>),
    /// Addresses of the nodes whose labels match.
    Nodes(LabelSelector),
    /// `(address, protocol, port)` of every pod's container port with this name; a NetworkPolicy
    /// rule fixes the protocol, a CNP takes each container port's own.
    NamedPort { name: String, protocol: Option<Protocol> },
}

/// One entry a pod or node contributes to a group. Contributions are counted, so two pods that
/// briefly share an address (IP reuse before the old pod's delete event) do not drop it early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    Address(IpAddr),
    IpPort(IpAddr, Protocol, u16),
}

impl GroupDefinition {
    /// Builds the canonical definition (selectors normalized).
    pub fn canonical(self) -> GroupDefinition {
        match self {
            GroupDefinition::Pods(selection) => GroupDefinition::Pods(selection.normalized()),
            GroupDefinition::Nodes(selector) => GroupDefinition::Nodes(selector.normalized()),
            other => other,
        }
    }

    pub fn id(&self) -> GroupId {
        GroupId(content_address(&("group", self)))
    }

    /// Whether members come from pods (and so must be re-evaluated on pod and namespace events).
    pub fn depends_on_pods(&self) -> bool {
        matches!(self, GroupDefinition::Pods(_) | GroupDefinition::NamedPort { .. })
    }

    /// What `pod` contributes, given its namespace as the engine knows it.
    pub fn pod_members(&self, pod: &Pod, namespace: Option<&Namespace>) -> Vec<Member> {
        match self {
            GroupDefinition::Pods(selection) if selection.selects(pod, namespace) => {
                pod.ips.iter().copied().map(Member::Address).collect()
            }
            GroupDefinition::NamedPort { name, protocol } if pod.is_policy_endpoint() => pod
                .named_ports
                .iter()
                .filter(|port| &port.name == name && port.protocol.has_ports())
                .filter(|port| protocol.is_none_or(|wanted| wanted == port.protocol))
                .flat_map(|port| pod.ips.iter().map(|ip| Member::IpPort(*ip, port.protocol, port.port)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What `node` contributes.
    pub fn node_members(&self, node: &Node) -> Vec<Member> {
        match self {
            GroupDefinition::Nodes(selector) if selector.matches(&node.labels) => {
                node.ips.iter().copied().map(Member::Address).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Rule sets are named by policy and direction only, so edits of a policy keep its chain names.
pub fn rule_set_id(policy: &PolicyRef, direction: Direction) -> RuleSetId {
    RuleSetId(content_address(&("rule-set", policy, direction)))
}

/// First 16 hex digits of the SHA-256 of the value's JSON (struct fields and maps serialize in a
/// fixed order, so the text is canonical).
fn content_address<T: Serialize>(value: &T) -> String {
    // Serializing these plain data types cannot fail; an empty input would still hash stably.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}
