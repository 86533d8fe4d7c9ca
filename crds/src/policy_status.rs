//! `palisade.dev/v1alpha1` PolicyStatus: enforcement status for a `networking.k8s.io/v1`
//! NetworkPolicy, which has no status of its own. One object per NetworkPolicy, with the same
//! name and namespace, so `kubectl get pst` lines up with `kubectl get netpol`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many node errors are kept in `status.firstErrors`, so one bad rollout cannot
/// grow the object without bound.
pub const FIRST_ERRORS_LIMIT: usize = 10;

/// Which NetworkPolicy this status describes. The UID tells a recreated policy of the same name
/// from the old one, so stale status is never shown for it.
// Repeated `printcolumn(type_ = ...)` entries look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "PolicyStatus",
    plural = "policystatuses",
    namespaced,
    shortname = "pst",
    shortname = "pstatus",
    status = "PolicyEnforcementStatus",
    derive = "PartialEq",
    doc = "Palisade's enforcement status of the NetworkPolicy of the same name and namespace.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyName"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.selectedPods"),
    printcolumn(name = "Nodes-Realized", type_ = "integer", json_path = ".status.nodesRealized"),
    printcolumn(name = "Nodes-Desired", type_ = "integer", json_path = ".status.nodesDesired"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatusSpec {
    /// Name of the NetworkPolicy (same namespace).
    pub policy_name: String,
    /// `metadata.uid` of the NetworkPolicy this status was computed for.
    #[serde(rename = "policyUID")]
    pub policy_uid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEnforcementStatus {
    /// `metadata.generation` of the NetworkPolicy the counts below refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// Pods the policy selects.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub selected_pods: i32,
    /// Nodes that enforce the observed generation.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub nodes_realized: i32,
    /// Nodes that host selected pods and so must enforce it.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub nodes_desired: i32,
    /// Accepted, Realized and Ready (which summarises the other two).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The first node errors, at most 10 (FIRST_ERRORS_LIMIT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub first_errors: Vec<NodeError>,
}

/// An enforcement error one node reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeError {
    pub node: String,
    pub message: String,
}
