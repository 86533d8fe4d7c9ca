//! Kubernetes objects, as JSON values, into what the analysis reads.
//!
//! A ClusterNetworkPolicy is checked against the CRD's own schema first (a manifest that the API
//! server would refuse must not reach the analysis as if it were valid); then every policy
//! converts field by field ([`palisade_crds::convert`]). Objects of other kinds are skipped,
//! except Namespaces, Pods and Nodes, which tell the "matches nothing" checks what exists.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_crds::{ClusterNetworkPolicy, convert};
use palisade_engine::model;
use serde_json::Value;

pub const NETWORK_POLICY_API: &str = "networking.k8s.io/v1";
pub const CLUSTER_NETWORK_POLICY_API: &str = "policy.networking.k8s.io/v1alpha2";

/// One object, read.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Policy(model::Policy),
    Namespace(model::Namespace),
    Pod(model::Pod),
    Node(model::Node),
    /// A kind the analysis does not read (a Deployment, a Service, …).
    Skipped {
        kind: String,
    },
}

/// Why an object could not be read; `field` is a path inside it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ObjectError {
    /// `Kind namespace/name`, or what is known of it.
    pub object: String,
    pub field: String,
    pub message: String,
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |value, key| value.get(key))?.as_str()
}

/// `Kind namespace/name` for messages, from whatever the object has.
pub fn describe(value: &Value) -> String {
    let kind = text(value, &["kind"]).unwrap_or("object");
    let name = text(value, &["metadata", "name"]).unwrap_or("<unnamed>");
    match text(value, &["metadata", "namespace"]) {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// `kind: List` (and `*List` kinds from `kubectl get -o yaml`) holds its objects in `items`.
pub fn is_list(value: &Value) -> bool {
    text(value, &["kind"]).is_some_and(|kind| kind == "List" || kind.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
}

/// Reads one object (not a List). `default_namespace` is used for a namespaced policy without
/// `metadata.namespace`, as `kubectl apply` would use the context's namespace.
pub fn read(value: &Value, default_namespace: &str) -> Result<Object, ObjectError> {
    let error =
        |field: &str, message: String| ObjectError { object: describe(value), field: field.to_string(), message };
    let Some(kind) = text(value, &["kind"]) else {
        return Err(error("kind", "every object needs a kind".into()));
    };
    let api_version = text(value, &["apiVersion"]).unwrap_or_default();
    let decode = |message: serde_json::Error| error("", format!("cannot be read: {message}"));
    match (kind, api_version) {
        ("NetworkPolicy", NETWORK_POLICY_API) => {
            let mut np: NetworkPolicy = serde_json::from_value(value.clone()).map_err(decode)?;
            np.metadata.namespace.get_or_insert_with(|| default_namespace.to_string());
            let converted = convert::network_policy(&np).map_err(|e| error(&e.field(), e.to_string()))?;
            Ok(Object::Policy(model::Policy::Network(converted)))
        }
        ("ClusterNetworkPolicy", CLUSTER_NETWORK_POLICY_API) => {
            if let Some(violation) = palisade_crds::validate::cluster_network_policy_value(value).into_iter().next() {
                return Err(error(&violation.path, violation.message));
            }
            let cnp: ClusterNetworkPolicy = serde_json::from_value(value.clone()).map_err(decode)?;
            let converted = convert::cluster_network_policy(&cnp).map_err(|e| error(&e.field(), e.to_string()))?;
            Ok(Object::Policy(model::Policy::Cluster(converted)))
        }
        ("NetworkPolicy" | "ClusterNetworkPolicy", other) => Err(error(
            "apiVersion",
            format!(
                "{kind} {other:?} is not a version Palisade reads (it reads {NETWORK_POLICY_API} NetworkPolicy and {CLUSTER_NETWORK_POLICY_API} ClusterNetworkPolicy)"
            ),
        )),
        ("Namespace", "v1") => {
            let namespace: Namespace = serde_json::from_value(value.clone()).map_err(decode)?;
            let mut converted = convert::namespace(&namespace).map_err(|e| error(&e.field(), e.to_string()))?;
            // The API server labels every namespace with its name; a manifest does not say so.
            converted.labels.insert("kubernetes.io/metadata.name".into(), converted.name.clone());
            Ok(Object::Namespace(converted))
        }
        ("Pod", "v1") => {
            let mut pod: Pod = serde_json::from_value(value.clone()).map_err(decode)?;
            pod.metadata.namespace.get_or_insert_with(|| default_namespace.to_string());
            Ok(Object::Pod(convert::pod(&pod).map_err(|e| error(&e.field(), e.to_string()))?))
        }
        ("Node", "v1") => {
            let node: Node = serde_json::from_value(value.clone()).map_err(decode)?;
            Ok(Object::Node(convert::node(&node).map_err(|e| error(&e.field(), e.to_string()))?))
        }
        (kind, _) => Ok(Object::Skipped { kind: kind.to_string() }),
    }
}
