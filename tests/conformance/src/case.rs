//! The case format: a model, then steps replayed in order. Objects are real API objects, so a
//! runner against an API server applies them as they are (after [`Object::resolve`]) and the pure
//! runner converts them with `palisade_crds::convert`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_crds::ClusterNetworkPolicy;
use serde_json::Value;

use crate::model::{Model, NAMESPACE_NAME_LABEL, PodId, Probe, Protocol};
use crate::reachability::Reachability;

/// One upstream test, with every step it takes.
#[derive(Clone, Debug)]
pub struct Case {
    /// Upstream's test name, verbatim (the `f.It` text, or the conformance `ShortName`).
    pub name: String,
    /// Where it came from: file and, for subtests, what the Go code calls it.
    pub source: String,
    pub steps: Vec<Step>,
}

/// A change to the cluster, or a check of connectivity.
// Objects are stored inline: a case has tens of steps, and `Step::Apply(object)` reads better
// than boxing for a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Step {
    /// Create the object, or replace it entirely if one with its name exists (an update).
    Apply(Object),
    /// Delete an object.
    Delete(ObjectRef),
    /// Merge labels into a namespace; `None` removes the key.
    LabelNamespace { namespace: String, labels: BTreeMap<String, Option<String>> },
    /// Merge labels into a pod; `None` removes the key.
    LabelPod { pod: PodId, labels: BTreeMap<String, Option<String>> },
    /// The pod finishes (phase `Succeeded`) and a new pod, `successor` with `labels`, gets its IP on
    /// the same node, as Kubernetes reuses a finished pod's address. From then on the grid's row and
    /// column of `finished` are that address: the successor's traffic.
    ReusePodIp { finished: PodId, successor: PodId, labels: BTreeMap<String, String> },
    /// Probe every asserted cell of the grid once the cluster has converged.
    Expect(Expectation),
}

#[derive(Clone, Debug)]
pub struct Expectation {
    /// What upstream says it checks (its `ginkgo.By`/`t.Run` text, or a short description).
    pub title: String,
    pub probe: Probe,
    pub reachability: Reachability,
    pub assertion: Assertion,
}

/// How far a real-packet runner can check an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assertion {
    /// Send real packets and compare.
    Packets,
    /// Compare the enforced rules only (plan evaluation); the test kernel cannot carry this
    /// protocol (no SCTP module), so packets would say nothing about the policy.
    RulesOnly,
}

impl Assertion {
    /// SCTP cannot be probed on the test kernel; everything else can.
    pub fn for_probe(probe: Probe) -> Assertion {
        if probe.protocol == Protocol::Sctp { Assertion::RulesOnly } else { Assertion::Packets }
    }
}

/// The API objects the suites create.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    NetworkPolicy(NetworkPolicy),
    ClusterNetworkPolicy(ClusterNetworkPolicy),
}

/// Names an object to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectRef {
    NetworkPolicy { namespace: String, name: String },
    ClusterNetworkPolicy { name: String },
}

/// What a runner knows that a case cannot: the names it gave namespaces and the IPs pods got.
pub trait Environment {
    /// The API-server name of a logical namespace (the identity when they are the same).
    fn namespace_name(&self, logical: &str) -> String;
    /// The address of a pod (for host-network pods, its node's).
    fn pod_ip(&self, pod: &PodId) -> Option<IpAddr>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("placeholder {0:?} names no pod of the model, or the runner knows no IP for it")]
    UnknownPod(String),
    #[error("placeholder {0:?} is not `{{{{podIP ns/name}}}}` or `{{{{hostCIDR ns/name}}}}`")]
    BadPlaceholder(String),
    #[error("object does not round-trip through JSON: {0}")]
    Serde(String),
}

/// Placeholders an object may hold in any string, for values only known at run time:
/// `{{podIP x/b}}` is the pod's address; `{{hostCIDR x/b}}` is that address as a one-host CIDR
/// (`/32` or `/128`, as upstream picks by family).
pub const PLACEHOLDER_HELP: &str = "{{podIP ns/name}}, {{hostCIDR ns/name}}";

impl Object {
    pub fn reference(&self) -> ObjectRef {
        match self {
            Object::NetworkPolicy(np) => ObjectRef::NetworkPolicy {
                namespace: np.metadata.namespace.clone().unwrap_or_default(),
                name: np.metadata.name.clone().unwrap_or_default(),
            },
            Object::ClusterNetworkPolicy(cnp) => {
                ObjectRef::ClusterNetworkPolicy { name: cnp.metadata.name.clone().unwrap_or_default() }
            }
        }
    }

    /// The object as the runner must send it: placeholders replaced, logical namespace names
    /// (in `metadata.namespace` and in selectors on `kubernetes.io/metadata.name`) mapped.
    pub fn resolve(&self, env: &dyn Environment) -> Result<Object, ResolveError> {
        let serde = |e: serde_json::Error| ResolveError::Serde(e.to_string());
        let mut value = match self {
            Object::NetworkPolicy(np) => serde_json::to_value(np).map_err(serde)?,
            Object::ClusterNetworkPolicy(cnp) => serde_json::to_value(cnp).map_err(serde)?,
        };
        if let Some(namespace) = value.pointer_mut("/metadata/namespace")
            && let Some(logical) = namespace.as_str()
        {
            *namespace = Value::String(env.namespace_name(logical));
        }
        rename_namespaces_in_selectors(&mut value, env);
        substitute_placeholders(&mut value, env)?;
        Ok(match self {
            Object::NetworkPolicy(_) => Object::NetworkPolicy(serde_json::from_value(value).map_err(serde)?),
            Object::ClusterNetworkPolicy(_) => {
                Object::ClusterNetworkPolicy(serde_json::from_value(value).map_err(serde)?)
            }
        })
    }

    /// The object as YAML, for logs and for runners that shell out to kubectl.
    pub fn to_yaml(&self) -> String {
        let rendered = match self {
            Object::NetworkPolicy(np) => serde_saphyr::to_string(np),
            Object::ClusterNetworkPolicy(cnp) => serde_saphyr::to_string(cnp),
        };
        rendered.unwrap_or_else(|e| format!("# serialization failed: {e}\n"))
    }
}

fn rename_namespaces_in_selectors(value: &mut Value, env: &dyn Environment) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(labels)) = map.get_mut("matchLabels")
                && let Some(Value::String(name)) = labels.get_mut(NAMESPACE_NAME_LABEL)
            {
                *name = env.namespace_name(name);
            }
            if let Some(Value::Array(expressions)) = map.get_mut("matchExpressions") {
                for expression in expressions {
                    if expression.get("key").and_then(Value::as_str) == Some(NAMESPACE_NAME_LABEL)
                        && let Some(Value::Array(values)) = expression.get_mut("values")
                    {
                        for name in values.iter_mut() {
                            if let Value::String(text) = name {
                                *text = env.namespace_name(text);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(|child| rename_namespaces_in_selectors(child, env));
        }
        Value::Array(items) => items.iter_mut().for_each(|child| rename_namespaces_in_selectors(child, env)),
        _ => {}
    }
}

fn substitute_placeholders(value: &mut Value, env: &dyn Environment) -> Result<(), ResolveError> {
    match value {
        Value::String(text) if text.contains("{{") => *text = substitute(text, env)?,
        Value::Object(map) => map.values_mut().try_for_each(|child| substitute_placeholders(child, env))?,
        Value::Array(items) => items.iter_mut().try_for_each(|child| substitute_placeholders(child, env))?,
        _ => {}
    }
    Ok(())
}

/// Replaces every `{{podIP ns/name}}` and `{{hostCIDR ns/name}}` in `text`.
pub fn substitute(text: &str, env: &dyn Environment) -> Result<String, ResolveError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| ResolveError::BadPlaceholder(rest[start..].to_owned()))?;
        let inner = after[..end].trim();
        let (function, argument) =
            inner.split_once(' ').ok_or_else(|| ResolveError::BadPlaceholder(inner.to_owned()))?;
        let pod = PodId::parse(argument.trim()).ok_or_else(|| ResolveError::BadPlaceholder(inner.to_owned()))?;
        let ip = env.pod_ip(&pod).ok_or_else(|| ResolveError::UnknownPod(inner.to_owned()))?;
        match function {
            "podIP" => out.push_str(&ip.to_string()),
            "hostCIDR" => out.push_str(&format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })),
            _ => return Err(ResolveError::BadPlaceholder(inner.to_owned())),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A suite: one model shared by its cases (upstream builds it once and resets it between tests:
/// every case starts from the model as written, with no policies).
#[derive(Clone, Debug)]
pub struct Suite {
    pub name: String,
    pub model: Model,
    pub cases: Vec<Case>,
}

impl Suite {
    /// Counts for reports: (cases, steps, asserted cells).
    pub fn size(&self) -> (usize, usize, usize) {
        let steps = self.cases.iter().map(|case| case.steps.len()).sum();
        let cells = self
            .cases
            .iter()
            .flat_map(|case| &case.steps)
            .map(|step| match step {
                Step::Expect(expectation) => expectation.reachability.cells().len(),
                _ => 0,
            })
            .sum();
        (self.cases.len(), steps, cells)
    }
}
