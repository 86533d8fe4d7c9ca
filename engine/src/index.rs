//! Indexes over the cluster's pods, so that resolving a selector touches candidate pods only,
//! not every pod (the full compile resolves thousands of selectors over thousands of pods).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Cluster, Pod, PodKey};
use crate::validate::{NamespaceMatch, PodSelection};

#[derive(Clone, Debug, Default)]
pub(crate) struct PodIndex {
    by_namespace: BTreeMap<String, BTreeSet<PodKey>>,
    by_node: BTreeMap<String, BTreeSet<PodKey>>,
    /// label key → label value → pods.
    by_label: BTreeMap<String, BTreeMap<String, BTreeSet<PodKey>>>,
    /// container port name → pods.
    by_port_name: BTreeMap<String, BTreeSet<PodKey>>,
}

static EMPTY: BTreeSet<PodKey> = BTreeSet::new();

impl PodIndex {
    pub fn insert(&mut self, pod: &Pod) {
        let key = &pod.key;
        self.by_namespace.entry(key.namespace.clone()).or_default().insert(key.clone());
        if let Some(node) = &pod.node {
            self.by_node.entry(node.clone()).or_default().insert(key.clone());
        }
        for (label, value) in &pod.labels {
            self.by_label.entry(label.clone()).or_default().entry(value.clone()).or_default().insert(key.clone());
        }
        for port in &pod.named_ports {
            self.by_port_name.entry(port.name.clone()).or_default().insert(key.clone());
        }
    }

    pub fn remove(&mut self, pod: &Pod) {
        let key = &pod.key;
        remove_from(&mut self.by_namespace, &key.namespace, key);
        if let Some(node) = &pod.node {
            remove_from(&mut self.by_node, node, key);
        }
        for (label, value) in &pod.labels {
            if let Some(values) = self.by_label.get_mut(label) {
                remove_from(values, value, key);
                if values.is_empty() {
                    self.by_label.remove(label);
                }
            }
        }
        for port in &pod.named_ports {
            remove_from(&mut self.by_port_name, &port.name, key);
        }
    }

    pub fn in_namespace(&self, namespace: &str) -> &BTreeSet<PodKey> {
        self.by_namespace.get(namespace).unwrap_or(&EMPTY)
    }

    pub fn with_port_name(&self, name: &str) -> &BTreeSet<PodKey> {
        self.by_port_name.get(name).unwrap_or(&EMPTY)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        self.by_node.keys()
    }

    /// A superset of the pods `selection` selects: the smallest of the namespace's pods, the
    /// pods carrying one of the required labels, or the pods of the matching namespaces.
    pub fn candidates<'a>(&'a self, selection: &PodSelection, cluster: &'a Cluster) -> Vec<&'a PodKey> {
        let mut smallest: Option<&BTreeSet<PodKey>> = None;
        let mut consider = |set: &'a BTreeSet<PodKey>| {
            if smallest.is_none_or(|current| set.len() < current.len()) {
                smallest = Some(set);
            }
        };
        for (label, value) in &selection.pods.match_labels {
            consider(self.by_label.get(label).and_then(|values| values.get(value)).unwrap_or(&EMPTY));
        }
        match &selection.namespaces {
            NamespaceMatch::Named(namespace) => consider(self.in_namespace(namespace)),
            NamespaceMatch::Selector(selector) => {
                let namespaces: Vec<&BTreeSet<PodKey>> = cluster
                    .namespaces
                    .values()
                    .filter(|namespace| selector.matches(&namespace.labels))
                    .map(|namespace| self.in_namespace(&namespace.name))
                    .collect();
                let total: usize = namespaces.iter().map(|set| set.len()).sum();
                if smallest.is_none_or(|current| total < current.len()) {
                    return namespaces.into_iter().flatten().collect();
                }
            }
        }
        match smallest {
            Some(set) => set.iter().collect(),
            None => cluster.pods.keys().collect(),
        }
    }
}

fn remove_from(map: &mut BTreeMap<String, BTreeSet<PodKey>>, at: &str, key: &PodKey) {
    if let Some(set) = map.get_mut(at) {
        set.remove(key);
        if set.is_empty() {
            map.remove(at);
        }
    }
}
