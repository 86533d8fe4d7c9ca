//! Writing cases step by step, in the order upstream's Go performs them.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_crds::ClusterNetworkPolicy;

use crate::case::{Assertion, Case, Expectation, Object, ObjectRef, Step};
use crate::model::{PodId, Probe};
use crate::reachability::Reachability;

pub struct CaseBuilder {
    name: String,
    source: String,
    pods: Vec<PodId>,
    steps: Vec<Step>,
    ignore_loopback: bool,
}

impl CaseBuilder {
    /// `pods` fixes the grid's rows and columns; `ignore_loopback` drops the diagonal of every
    /// expectation (the Netpol suite's rule).
    pub fn new(name: &str, source: &str, pods: Vec<PodId>, ignore_loopback: bool) -> CaseBuilder {
        CaseBuilder { name: name.to_owned(), source: source.to_owned(), pods, steps: Vec::new(), ignore_loopback }
    }

    /// A grid with every cell `default` (upstream's `NewReachability(k8s.AllPodStrings(), default)`).
    pub fn reachability(&self, default: bool) -> Reachability {
        Reachability::new(&self.pods, default)
    }

    /// A grid with no cell asserted, for suites that probe chosen pairs.
    pub fn probes(&self) -> Reachability {
        Reachability::unasserted(&self.pods)
    }

    /// Upstream's `CreatePolicy` and `UpdatePolicy` (same thing to a declarative runner).
    pub fn apply_network_policy(&mut self, namespace: &str, mut np: NetworkPolicy) -> &mut Self {
        np.metadata.namespace = Some(namespace.to_owned());
        self.steps.push(Step::Apply(Object::NetworkPolicy(np)));
        self
    }

    /// Any object, as it stands (namespace already set).
    pub fn apply(&mut self, object: Object) -> &mut Self {
        self.steps.push(Step::Apply(object));
        self
    }

    pub fn apply_cluster_network_policy(&mut self, cnp: &ClusterNetworkPolicy) -> &mut Self {
        self.steps.push(Step::Apply(Object::ClusterNetworkPolicy(cnp.clone())));
        self
    }

    pub fn delete(&mut self, object: ObjectRef) -> &mut Self {
        self.steps.push(Step::Delete(object));
        self
    }

    /// Sets (`Some`) or removes (`None`) namespace labels.
    pub fn label_namespace(&mut self, namespace: &str, labels: &[(&str, Option<&str>)]) -> &mut Self {
        self.steps.push(Step::LabelNamespace { namespace: namespace.to_owned(), labels: label_changes(labels) });
        self
    }

    /// Sets (`Some`) or removes (`None`) pod labels.
    pub fn label_pod(&mut self, pod: &PodId, labels: &[(&str, Option<&str>)]) -> &mut Self {
        self.steps.push(Step::LabelPod { pod: pod.clone(), labels: label_changes(labels) });
        self
    }

    /// `finished` finishes and `successor` (a new pod with `labels`) takes over its IP.
    pub fn reuse_pod_ip(&mut self, finished: &PodId, successor: &PodId, labels: &[(&str, &str)]) -> &mut Self {
        self.steps.push(Step::ReusePodIp {
            finished: finished.clone(),
            successor: successor.clone(),
            labels: crate::model::labels(labels),
        });
        self
    }

    /// Upstream's `ValidateOrFail` (or one `PokeServer` group).
    pub fn expect(&mut self, title: &str, probe: Probe, mut reachability: Reachability) -> &mut Self {
        if self.ignore_loopback {
            reachability.ignore_loopback();
        }
        self.steps.push(Step::Expect(Expectation {
            title: title.to_owned(),
            probe,
            reachability,
            assertion: Assertion::for_probe(probe),
        }));
        self
    }

    pub fn build(self) -> Case {
        Case { name: self.name, source: self.source, steps: self.steps }
    }
}

fn label_changes(labels: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    labels.iter().map(|(key, value)| ((*key).to_owned(), value.map(str::to_owned))).collect()
}
