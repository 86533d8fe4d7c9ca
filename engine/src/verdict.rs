//! Flows and verdicts: the common language of the reference evaluator and the plan evaluator.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{PolicyRef, Protocol};
use crate::plan::Action;

/// One new connection as the dataplane sees it: addresses after any service DNAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Destination port; 0 for `Protocol::Icmp`.
    pub port: u16,
}

/// The answer for a flow: both directions must allow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// Judged at the source pod's node.
    pub egress: Decision,
    /// Judged at the destination pod's node.
    pub ingress: Decision,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

/// Why one direction was decided the way it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The endpoint on this side is not a (non-host-network) pod of the cluster, so nothing applies.
    NotAPod,
    /// A pod talking to its own address never leaves its network namespace.
    Loopback,
    /// Ingress from an address of the destination pod's own node (kubelet probes) is always allowed.
    FromOwnNode,
    /// This rule matched and decided (Accept or Deny; an Accept of a NetworkPolicy allows).
    Rule { policy: PolicyRef, rule: usize, action: Action },
    /// The pod is isolated by these NetworkPolicies and none of their rules matched.
    Isolated { by: Vec<PolicyRef> },
    /// Nothing matched (or only Pass rules): Kubernetes' default allows.
    Default,
}
