//! The engine's picture of a cluster and of its policies, with no Kubernetes types.
//!
//! Policies are kept in the shape the user wrote them (CIDRs and ports as given), so that
//! [`crate::validate`] is the one place that judges them and can name the offending field.
//! Adapters (the `crds` crate, the operator) translate API objects into these types field by field,
//! keeping `None` distinct from empty wherever Kubernetes gives them different meanings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Labels of a pod, namespace or node.
pub type Labels = BTreeMap<String, String>;

/// `metav1.LabelSelector`. An empty selector (no labels, no expressions) selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Selector operators. `Unknown` keeps a newer API's operator visible so validation can reject it
/// with the field's name instead of a parse failure.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Unknown(String),
}

/// Transport protocols policies can name. `Icmp` stands for every protocol without ports: a rule
/// with no port list matches it, a rule with ports never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

impl Protocol {
    /// The protocols that carry ports, in a fixed order.
    pub const WITH_PORTS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub fn has_ports(self) -> bool {
        self != Protocol::Icmp
    }
}

/// A pod's identity: namespace and name. It serializes as `namespace/name`, so maps keyed by
/// pods stay valid JSON objects on the wire and on disk.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl From<PodKey> for String {
    fn from(key: PodKey) -> String {
        key.to_string()
    }
}

impl TryFrom<String> for PodKey {
    type Error = String;

    fn try_from(text: String) -> Result<PodKey, String> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(PodKey { namespace: namespace.to_string(), name: name.to_string() })
            }
            _ => Err(format!("pod key {text:?} is not of the form namespace/name")),
        }
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A named container port, which policies can refer to by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub key: PodKey,
    pub labels: Labels,
    /// `spec.nodeName`; a pod that is not scheduled yet has none and is enforced nowhere.
    pub node: Option<String>,
    /// `status.podIPs`, at most one per family.
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// Host-network pods share their node's addresses; pod selectors never select them.
    pub host_network: bool,
    /// The pod has finished (phase `Succeeded` or `Failed`, or it is being deleted and none of its
    /// containers runs). Kubernetes hands its IP to the next pod, so a finished pod must give up
    /// every group its labels select: otherwise the new pod on that IP inherits its identity.
    #[serde(default)]
    pub terminated: bool,
}

impl Pod {
    /// Whether policies can select this pod and judge its traffic: not host-network (those share
    /// the node's addresses), scheduled (an unscheduled pod is enforced nowhere) and not finished
    /// (its IP may already belong to another pod). The reference evaluator and the compiler both
    /// use this one definition.
    pub fn is_policy_endpoint(&self) -> bool {
        !self.host_network && self.node.is_some() && !self.terminated
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    /// The addresses from `status.addresses` (InternalIP and ExternalIP).
    pub ips: Vec<IpAddr>,
}

/// Everything the engine knows about the cluster apart from policies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<PodKey, Pod>,
    pub nodes: BTreeMap<String, Node>,
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// Which API object a policy came from; used in errors, plans and status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` NetworkPolicy (namespaced).
    NetworkPolicy,
    /// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy (cluster-scoped).
    ClusterNetworkPolicy,
}

/// Names one policy object. `namespace` is `None` for cluster-scoped policies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// The version of a policy object that was compiled, so agents can report what they enforce.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision {
    pub uid: String,
    pub generation: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    Network(NetworkPolicy),
    Cluster(ClusterNetworkPolicy),
}

impl Policy {
    pub fn reference(&self) -> PolicyRef {
        match self {
            Policy::Network(p) => PolicyRef {
                kind: PolicyKind::NetworkPolicy,
                namespace: Some(p.namespace.clone()),
                name: p.name.clone(),
            },
            Policy::Cluster(p) => {
                PolicyRef { kind: PolicyKind::ClusterNetworkPolicy, namespace: None, name: p.name.clone() }
            }
        }
    }

    pub fn revision(&self) -> &Revision {
        match self {
            Policy::Network(p) => &p.revision,
            Policy::Cluster(p) => &p.revision,
        }
    }

    /// What Palisade enforces for a policy that is refused and never had an accepted version:
    /// the closed side of everything it could have said, for the pods it names.
    ///
    /// - A ClusterNetworkPolicy keeps its tier, priority and subject; each direction with a Deny or
    ///   Pass rule becomes one Deny of every peer, port and protocol (Pass may end in a deny below
    ///   it, so denying is the superset of both); Accept rules are dropped.
    /// - A NetworkPolicy keeps its pod selector and isolates those pods in the directions it
    ///   names (or would default to), allowing nothing: its rules only ever allow.
    ///
    /// A stand-in that itself fails validation (the subject or the selector is what is wrong)
    /// enforces nothing: the pods it would cover cannot be known, and denying every pod of the
    /// cluster for one typo would be an outage, not a safe default.
    pub fn fail_closed_stand_in(&self) -> Policy {
        match self {
            Policy::Network(np) => {
                let mut directions = Vec::new();
                match &np.policy_types {
                    Some(types) => {
                        directions.extend(types.iter().filter(|t| !matches!(t, PolicyType::Unknown(_))).cloned())
                    }
                    None => {
                        directions.push(PolicyType::Ingress);
                        if !np.egress.is_empty() {
                            directions.push(PolicyType::Egress);
                        }
                    }
                }
                if directions.is_empty() {
                    directions = vec![PolicyType::Ingress, PolicyType::Egress];
                }
                Policy::Network(NetworkPolicy {
                    policy_types: Some(directions),
                    ingress: Vec::new(),
                    egress: Vec::new(),
                    ..np.clone()
                })
            }
            Policy::Cluster(cnp) => {
                let deny_all = |rules: &[CnpRule]| -> Vec<CnpRule> {
                    if rules.iter().any(|rule| rule.action != CnpAction::Accept) {
                        vec![CnpRule {
                            name: Some("palisade-fail-closed".into()),
                            action: CnpAction::Deny,
                            peers: vec![CnpPeer::Unknown],
                            protocols: None,
                        }]
                    } else {
                        Vec::new()
                    }
                };
                Policy::Cluster(ClusterNetworkPolicy {
                    ingress: deny_all(&cnp.ingress),
                    egress: deny_all(&cnp.egress),
                    ..cnp.clone()
                })
            }
        }
    }
}

/// `networking.k8s.io/v1` NetworkPolicy, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub revision: Revision,
    /// `spec.podSelector`; an empty selector selects every pod of the namespace.
    pub pod_selector: LabelSelector,
    /// `spec.policyTypes` as written; `None` means "defaulted" (Ingress, plus Egress when egress rules exist).
    pub policy_types: Option<Vec<PolicyType>>,
    /// `spec.ingress`; `None` and empty both mean "no rule" (isolation without allowances).
    pub ingress: Vec<NetworkPolicyRule>,
    pub egress: Vec<NetworkPolicyRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
    /// A value the API does not define; rejected by validation with the field's name.
    Unknown(String),
}

/// One ingress or egress rule of a NetworkPolicy. For ingress `peers` is `from`, for egress `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyRule {
    /// Empty means every peer (every address, in or out of the cluster).
    pub peers: Vec<NetworkPolicyPeer>,
    /// Empty means every port of every protocol.
    pub ports: Vec<NetworkPolicyPort>,
}

/// `NetworkPolicyPeer`. The combinations follow the API: `ip_block` alone, or selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyPeer {
    /// `None`: pods of the policy's own namespace; `Some(empty)`: every namespace.
    pub namespace_selector: Option<LabelSelector>,
    /// `None` with a namespace selector: every pod of the selected namespaces.
    pub pod_selector: Option<LabelSelector>,
    pub ip_block: Option<IpBlock>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: String,
    pub except: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyPort {
    /// `None` defaults to TCP. `Err` keeps an unknown protocol string for validation to report.
    pub protocol: Option<Result<Protocol, String>>,
    /// `None`: every port of the protocol.
    pub port: Option<PortValue>,
    pub end_port: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortValue {
    Number(i32),
    Name(String),
}

/// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetworkPolicy {
    pub name: String,
    pub revision: Revision,
    pub tier: Tier,
    pub priority: i32,
    pub subject: CnpSubject,
    pub ingress: Vec<CnpRule>,
    pub egress: Vec<CnpRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    Admin,
    Baseline,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CnpSubject {
    Namespaces(LabelSelector),
    Pods {
        namespace_selector: LabelSelector,
        pod_selector: LabelSelector,
    },
    /// Neither or both set, or a field this version does not know: the policy is invalid.
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CnpAction {
    Accept,
    Deny,
    Pass,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnpRule {
    pub name: Option<String>,
    pub action: CnpAction,
    /// `from` (ingress) or `to` (egress).
    pub peers: Vec<CnpPeer>,
    /// `None`: every protocol and port. `Some` is never empty in a valid policy.
    pub protocols: Option<Vec<CnpProtocol>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CnpPeer {
    Namespaces(LabelSelector),
    Pods {
        namespace_selector: LabelSelector,
        pod_selector: LabelSelector,
    },
    /// Egress only: CIDRs, matching any destination address, pods included.
    Networks(Vec<String>),
    /// Egress only: the addresses of the selected nodes.
    Nodes(LabelSelector),
    /// Egress only. Palisade does not intercept DNS, so such a peer matches no traffic; a
    /// validation warning says so.
    DomainNames(Vec<String>),
    /// No field this version knows. Upstream says to fail closed: an Accept rule matches nothing,
    /// a Deny or Pass rule matches everything.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CnpProtocol {
    Port {
        protocol: Protocol,
        port: CnpPort,
    },
    NamedPort(String),
    /// An entry with no field this version knows; treated like an unknown peer (fail closed).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CnpPort {
    Number(i32),
    Range { start: i32, end: i32 },
}
