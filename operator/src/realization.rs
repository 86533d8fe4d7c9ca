//! The realization table: what each node's agent last said it enforces.
//!
//! A `Failed` report does not erase what the node realized before: the agent keeps the previous
//! rules in force, so those policies are still realized there. The failure is kept beside them
//! until the next successful report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use palisade_engine::model::{PolicyRef, Revision};
use palisade_protocol::RealizedPolicy;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRealization {
    /// The plan version (of the reporting connection) the last successful report was for.
    pub version: u64,
    /// The policies the kernel enforces, with the revision it enforces.
    pub realized: BTreeMap<PolicyRef, Revision>,
    /// The last failure since the last success: (version, error).
    pub failure: Option<(u64, String)>,
}

#[derive(Default)]
pub struct RealizationTable {
    nodes: Mutex<BTreeMap<String, NodeRealization>>,
}

impl RealizationTable {
    /// Records a successful report. Returns the policies whose realization on `node` changed.
    pub fn realized(&self, node: &str, version: u64, policies: Vec<RealizedPolicy>) -> BTreeSet<PolicyRef> {
        let realized: BTreeMap<PolicyRef, Revision> = policies.into_iter().map(|p| (p.policy, p.revision)).collect();
        let mut nodes = self.lock();
        let entry = nodes.entry(node.to_owned()).or_default();
        let mut changed: BTreeSet<PolicyRef> = BTreeSet::new();
        for (policy, revision) in entry.realized.iter().chain(realized.iter()) {
            if entry.realized.get(policy) != Some(revision) || realized.get(policy) != Some(revision) {
                changed.insert(policy.clone());
            }
        }
        if entry.failure.is_some() {
            changed.extend(realized.keys().cloned());
        }
        *entry = NodeRealization { version, realized, failure: None };
        changed
    }

    /// Records a failed apply. Returns the policies to re-examine (those the node enforces).
    pub fn failed(&self, node: &str, version: u64, error: String) -> BTreeSet<PolicyRef> {
        let mut nodes = self.lock();
        let entry = nodes.entry(node.to_owned()).or_default();
        entry.failure = Some((version, error));
        entry.realized.keys().cloned().collect()
    }

    pub fn get(&self, node: &str) -> Option<NodeRealization> {
        self.lock().get(node).cloned()
    }

    /// Runs `f` over the table without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&BTreeMap<String, NodeRealization>) -> T) -> T {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeRealization>> {
        self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
