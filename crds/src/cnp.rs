//! `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy, field for field with the upstream
//! CRD (network-policy-api v0.2.0, experimental channel).
//!
//! Every one-of (subject, peer, protocol, destination port) is a struct of `Option`s plus a
//! `kind()` view, not a Rust enum: an entry whose field this version does not know still
//! deserializes, and `kind()` reports it as `Unknown`, so the operator can fail closed (upstream's
//! rule) instead of dropping the whole object. String enums keep unknown values for the same reason.
//!
//! Differences from upstream's experimental CRD that we accept (`tests/generated.rs` pins the
//! constraints that must match):
//! - descriptions are shorter (and `apiVersion`/`kind` have none);
//! - `metav1.LabelSelector` and `metav1.Condition` come from k8s-openapi; `crate::crd` adds the
//!   atomic markers and the Condition constraints that k8s-openapi's schemas lack.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Declares a string enum that keeps unknown values (`Unknown(String)`) and whose schema is a
/// closed `enum` list, as upstream's.
macro_rules! open_string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($variant,)+
            /// A value this version does not know (a newer CRD, or an object the API server did
            /// not validate). Conversion rejects it with the field's name.
            #[serde(untagged)]
            Unknown(String),
        }

        impl $name {
            /// The values the schema allows.
            pub const KNOWN: &'static [&'static str] = &[$(stringify!($variant)),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                    Self::Unknown(value) => value,
                }
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "enum": [$(stringify!($variant)),+] })
            }
        }
    };
}

open_string_enum! {
    /// The top-level grouping: Admin CNPs come before NetworkPolicies, Baseline CNPs after.
    Tier { Admin, Baseline }
}

open_string_enum! {
    /// What a matching rule does. `Pass` skips the rest of the current tier.
    RuleAction { Accept, Deny, Pass }
}

/// Spec of a ClusterNetworkPolicy: which pods (`subject`) and which rules, at which precedence.
// Repeated `printcolumn(type_ = ...)` entries look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
    kind = "ClusterNetworkPolicy",
    plural = "clusternetworkpolicies",
    shortname = "cnp",
    status = "ClusterNetworkPolicyStatus",
    derive = "PartialEq",
    doc = "ClusterNetworkPolicy is a cluster-wide network policy resource.",
    // The API server refuses CRDs in *.k8s.io groups without an approval annotation; these are
    // upstream's, and the channel tells other tools which field set this CRD carries.
    annotation("api-approved.kubernetes.io", "https://github.com/kubernetes-sigs/network-policy-api/pull/347"),
    annotation("policy.networking.k8s.io/bundle-version", "v0.2.0"),
    annotation("policy.networking.k8s.io/channel", "experimental"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// Admin or Baseline. Admin is evaluated before NetworkPolicies, Baseline after them.
    pub tier: Tier,
    /// 0..=1000; lower values take precedence within a tier. Duplicates are allowed.
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    /// The pods this policy applies to. Exactly one field must be set.
    pub subject: ClusterNetworkPolicySubject,
    /// Ingress rules in precedence order (first match wins). Absent and empty both mean none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub ingress: Vec<ClusterNetworkPolicyIngressRule>,
    /// Egress rules in precedence order (first match wins). Absent and empty both mean none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub egress: Vec<ClusterNetworkPolicyEgressRule>,
}

/// Status written by implementations. Upstream defines no condition types; Palisade's are in
/// the `conditions` module.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = require_conditions)]
pub struct ClusterNetworkPolicyStatus {
    /// Required by the schema whenever `status` is written, so it always serializes; reading
    /// tolerates its absence.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The pods a policy applies to. Exactly one field is set in a valid object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ClusterNetworkPolicySubject {
    /// All pods in the namespaces this selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods matching `podSelector` in namespaces matching `namespaceSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods selected by namespace AND pod labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Missing means `{}` (every namespace): Go clients always send it, others may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Empty selects every pod of the selected namespaces.
    pub pod_selector: LabelSelector,
}

impl NamespacedPod {
    /// The namespace selector with upstream's default applied (missing = all namespaces).
    pub fn effective_namespace_selector(&self) -> LabelSelector {
        self.namespace_selector.clone().unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressRule {
    /// Identifier for observability; at most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
    pub action: RuleAction,
    /// Sources; the rule applies when any of them matches.
    #[schemars(length(min = 1, max = 25))]
    pub from: Vec<ClusterNetworkPolicyIngressPeer>,
    /// `None`: every protocol and port (ICMP included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<ClusterNetworkPolicyProtocol>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames",
    "rule": "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || has(peer.domainNames)) && has(self.protocols) && self.protocols.exists(protocol, has(protocol.destinationNamedPort)))"
}]))]
pub struct ClusterNetworkPolicyEgressRule {
    /// Identifier for observability; at most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
    pub action: RuleAction,
    /// Destinations; the rule applies when any of them matches.
    #[schemars(length(min = 1, max = 25))]
    pub to: Vec<ClusterNetworkPolicyEgressPeer>,
    /// `None`: every protocol and port (ICMP included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<ClusterNetworkPolicyProtocol>>,
}

/// An ingress source. Exactly one field is set in a valid object; none set means a newer CRD
/// added a peer type, and upstream says to fail closed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ClusterNetworkPolicyIngressPeer {
    /// All (non host-network) pods in the matching namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels (host-network pods excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// An egress destination. Exactly one field is set in a valid object; none set means a newer
/// CRD added a peer type, and upstream says to fail closed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ClusterNetworkPolicyEgressPeer {
    /// All (non host-network) pods in the matching namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels (host-network pods excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// IPv4/IPv6 CIDRs; they match pod IPs too. Kept as strings: parsing is the engine's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "networks_schema")]
    pub networks: Option<Vec<String>>,
    /// The addresses in `status.addresses` of the matching nodes (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// DNS names, optionally with a `*.` prefix (experimental channel, Accept rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "domain_names_schema")]
    pub domain_names: Option<Vec<String>>,
}

/// One protocol match. Exactly one field is set in a valid object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ClusterNetworkPolicyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolMatch>,
    /// A container port name on the destination pod; never matches non-pod destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// Port match of one transport protocol. `{}` is invalid: there is no "protocol only" match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct ProtocolMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<DestinationPort>,
}

/// A single port or a range. Exactly one field is set in a valid object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct DestinationPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// An inclusive port range with `start < end` (a one-port range must use `number`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "Start port must be less than End port",
    "rule": "self.start < self.end"
}]))]
pub struct PortRange {
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}

/// `#[serde(default)]` makes schemars drop `conditions` from `required`; upstream requires it.
fn require_conditions(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        object.insert("required".into(), serde_json::json!(["conditions"]));
    }
}

fn networks_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "maxLength": 43,
            "x-kubernetes-validations": [{ "message": "Invalid CIDR format provided", "rule": "isCIDR(self)" }]
        },
        "minItems": 1,
        "maxItems": 25,
        "x-kubernetes-list-type": "set"
    })
}

/// Upstream's pattern as of the newest schema we read (the `A-z` typo of v0.2.0 fixed).
pub const DOMAIN_NAME_PATTERN: &str =
    r"^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$";

fn domain_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": DOMAIN_NAME_PATTERN },
        "minItems": 1,
        "maxItems": 25,
        "x-kubernetes-list-type": "set"
    })
}

// ---------------------------------------------------------------------------------------------
// One-of views
// ---------------------------------------------------------------------------------------------

/// What a subject selects, once exactly one field is known to be set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SubjectKind<'a> {
    Namespaces(&'a LabelSelector),
    Pods(&'a NamespacedPod),
    /// None or several fields set.
    Unknown,
}

impl ClusterNetworkPolicySubject {
    pub fn kind(&self) -> SubjectKind<'_> {
        match (&self.namespaces, &self.pods) {
            (Some(namespaces), None) => SubjectKind::Namespaces(namespaces),
            (None, Some(pods)) => SubjectKind::Pods(pods),
            _ => SubjectKind::Unknown,
        }
    }
}

/// What a peer selects, once exactly one field is known to be set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PeerKind<'a> {
    Namespaces(&'a LabelSelector),
    Pods(&'a NamespacedPod),
    Networks(&'a [String]),
    Nodes(&'a LabelSelector),
    DomainNames(&'a [String]),
    /// None or several fields set: fail closed.
    Unknown,
}

fn exactly_one<T>(candidates: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut set = candidates.into_iter().flatten();
    match (set.next(), set.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

impl ClusterNetworkPolicyIngressPeer {
    pub fn kind(&self) -> PeerKind<'_> {
        exactly_one([self.namespaces.as_ref().map(PeerKind::Namespaces), self.pods.as_ref().map(PeerKind::Pods)])
            .unwrap_or(PeerKind::Unknown)
    }
}

impl ClusterNetworkPolicyEgressPeer {
    pub fn kind(&self) -> PeerKind<'_> {
        exactly_one([
            self.namespaces.as_ref().map(PeerKind::Namespaces),
            self.pods.as_ref().map(PeerKind::Pods),
            self.networks.as_deref().map(PeerKind::Networks),
            self.nodes.as_ref().map(PeerKind::Nodes),
            self.domain_names.as_deref().map(PeerKind::DomainNames),
        ])
        .unwrap_or(PeerKind::Unknown)
    }
}

/// The transport protocols a CNP protocol entry can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

/// A destination port, once exactly one field is known to be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    Number(i32),
    Range(PortRange),
}

/// What a protocol entry matches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProtocolKind<'a> {
    Port {
        protocol: PortProtocol,
        port: PortKind,
    },
    NamedPort(&'a str),
    /// None or several fields set, `tcp: {}`, or a port with none or both of number/range:
    /// fail closed.
    Unknown,
}

impl DestinationPort {
    pub fn kind(&self) -> Option<PortKind> {
        exactly_one([self.number.map(PortKind::Number), self.range.map(PortKind::Range)])
    }
}

impl ClusterNetworkPolicyProtocol {
    pub fn kind(&self) -> ProtocolKind<'_> {
        let port = |protocol, m: &ProtocolMatch| match m.destination_port.as_ref().and_then(DestinationPort::kind) {
            Some(port) => ProtocolKind::Port { protocol, port },
            None => ProtocolKind::Unknown,
        };
        exactly_one([
            self.tcp.as_ref().map(|m| port(PortProtocol::Tcp, m)),
            self.udp.as_ref().map(|m| port(PortProtocol::Udp, m)),
            self.sctp.as_ref().map(|m| port(PortProtocol::Sctp, m)),
            self.destination_named_port.as_deref().map(ProtocolKind::NamedPort),
        ])
        .unwrap_or(ProtocolKind::Unknown)
    }
}
