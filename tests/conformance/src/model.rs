//! The cluster a suite runs against: namespaces, pods, the ports they serve, and the probes a
//! case may send. Names are *logical* (`x`, `network-policy-conformance-gryffindor`); a runner that
//! must give namespaces run-unique names maps them through [`crate::Environment`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// The label the API server puts on every namespace; policies select namespaces by it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Transport protocols the suites probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The spelling of `core/v1` `Protocol` (`TCP`, `UDP`, `SCTP`).
    pub fn as_k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Lower case, as in upstream's container port names (`serve-80-tcp`).
    pub fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_k8s())
    }
}

/// One connection attempt's destination port and protocol; every cell of a grid uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
}

impl Probe {
    pub const fn tcp(port: u16) -> Probe {
        Probe { protocol: Protocol::Tcp, port }
    }

    pub const fn udp(port: u16) -> Probe {
        Probe { protocol: Protocol::Udp, port }
    }

    pub const fn sctp(port: u16) -> Probe {
        Probe { protocol: Protocol::Sctp, port }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// A pod's identity, written `namespace/name` like upstream's `PodString` (`x/a`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
}

impl PodId {
    pub fn new(namespace: &str, name: &str) -> PodId {
        PodId { namespace: namespace.to_owned(), name: name.to_owned() }
    }

    /// Parses `namespace/name`; `None` for anything else.
    pub fn parse(text: &str) -> Option<PodId> {
        let (namespace, name) = text.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then(|| PodId::new(namespace, name))
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container port a pod serves; `name` is what policies' named ports refer to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelNamespace {
    pub name: String,
    /// Every label, `kubernetes.io/metadata.name` included (the API server adds that one itself).
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
    /// Host-network pods answer on their node's address; only `nodes`/`networks` peers reach them.
    pub host_network: bool,
}

impl ModelPod {
    pub fn id(&self) -> PodId {
        PodId::new(&self.namespace, &self.name)
    }
}

/// A node to place pods on. Runners spread the model's pods over the nodes round-robin, in
/// model order, so each namespace has pods on several nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelNode {
    pub name: String,
    pub labels: Labels,
}

/// Everything a suite needs to exist before its first step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub nodes: Vec<ModelNode>,
    pub namespaces: Vec<ModelNamespace>,
    pub pods: Vec<ModelPod>,
}

impl Model {
    /// Pods in row/column order of every grid.
    pub fn pod_ids(&self) -> Vec<PodId> {
        self.pods.iter().map(ModelPod::id).collect()
    }

    pub fn pod(&self, id: &PodId) -> Option<&ModelPod> {
        self.pods.iter().find(|pod| pod.namespace == id.namespace && pod.name == id.name)
    }

    pub fn namespace(&self, name: &str) -> Option<&ModelNamespace> {
        self.namespaces.iter().find(|namespace| namespace.name == name)
    }

    /// The node a pod runs on: round-robin over [`Model::nodes`] in pod order.
    pub fn node_of(&self, id: &PodId) -> Option<&ModelNode> {
        let index = self.pods.iter().position(|pod| pod.namespace == id.namespace && pod.name == id.name)?;
        self.nodes.get(index % self.nodes.len().max(1))
    }
}

/// Namespace labels as the API server shows them: the automatic name label plus `extra`.
pub fn namespace_labels(name: &str, extra: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
    labels
}

/// Labels from literal pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
