//! Distribution: one `watch` channel per node holding that node's newest plan (linkerd style).
//!
//! A `watch` keeps only the newest value, so a slow agent is never sent a queue of stale plans,
//! and a burst of events becomes one plan: the distributor waits a short debounce after the
//! first change, then recomputes only the nodes the engine reported as affected and publishes a
//! plan only when it differs from the one published before.
//!
//! The distributor also keeps, per policy, how many local pods of each node its rule sets apply
//! to (its span), updated from each plan change. Status reads that instead of scanning every
//! plan, so its work is O(policies changed), never O(policies x nodes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use palisade_engine::model::PolicyRef;
use palisade_engine::plan::NodePlan;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::index::SharedIndex;
use crate::metrics::Metrics;
use crate::writes::DirtyPolicies;

/// Where a policy is enforced: selected local pods per node (only nodes with at least one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySpan {
    pub pods_per_node: BTreeMap<String, usize>,
}

impl PolicySpan {
    pub fn selected_pods(&self) -> usize {
        self.pods_per_node.values().sum()
    }

    /// Nodes whose plan carries this policy's rule sets.
    pub fn desired_nodes(&self) -> impl Iterator<Item = &String> {
        self.pods_per_node.keys()
    }
}

#[derive(Default)]
pub struct Distribution {
    plans: BTreeMap<String, watch::Sender<Arc<NodePlan>>>,
    spans: BTreeMap<PolicyRef, PolicySpan>,
}

impl Distribution {
    pub fn span(&self, policy: &PolicyRef) -> Option<&PolicySpan> {
        self.spans.get(policy)
    }

    pub fn plan(&self, node: &str) -> Option<Arc<NodePlan>> {
        self.plans.get(node).map(|sender| sender.borrow().clone())
    }

    /// Publishes `plan` for `node` when it differs from the current one. Returns the policies
    /// whose span or rules on this node may have changed, or `None` when nothing changed.
    fn publish(&mut self, node: &str, plan: NodePlan) -> Option<BTreeSet<PolicyRef>> {
        let old = match self.plans.get(node) {
            Some(sender) if **sender.borrow() == plan => return None,
            Some(sender) => Some(sender.borrow().clone()),
            None => None,
        };
        let old_pods = old.as_deref().map(pods_per_policy).unwrap_or_default();
        let new_pods = pods_per_policy(&plan);
        for policy in old_pods.keys() {
            if let Some(span) = self.spans.get_mut(policy) {
                span.pods_per_node.remove(node);
                if span.pods_per_node.is_empty() {
                    self.spans.remove(policy);
                }
            }
        }
        for (policy, count) in &new_pods {
            self.spans.entry(policy.clone()).or_default().pods_per_node.insert(node.to_owned(), *count);
        }
        let plan = Arc::new(plan);
        match self.plans.get(node) {
            Some(sender) => {
                sender.send_replace(plan);
            }
            None => {
                self.plans.insert(node.to_owned(), watch::Sender::new(plan));
            }
        }
        Some(old_pods.into_keys().chain(new_pods.into_keys()).collect())
    }
}

/// Local pods per policy in one plan: a pod counts for a policy when any of its directions
/// refers to one of the policy's rule sets.
fn pods_per_policy(plan: &NodePlan) -> BTreeMap<PolicyRef, usize> {
    let mut counts: BTreeMap<PolicyRef, usize> = BTreeMap::new();
    for pod in plan.pods.values() {
        let mut policies = BTreeSet::new();
        for direction in [&pod.ingress, &pod.egress] {
            let ids = direction
                .admin
                .iter()
                .chain(direction.network_policy.iter().flatten())
                .chain(direction.baseline.iter());
            policies.extend(ids.filter_map(|id| plan.rule_sets.get(id)).map(|set| &set.policy));
        }
        for policy in policies {
            *counts.entry(policy.clone()).or_default() += 1;
        }
    }
    counts
}

/// The per-node channels, shared by the distributor task and the stream server.
pub struct SharedDistribution {
    distribution: Mutex<Distribution>,
    index: Arc<SharedIndex>,
    /// True once a complete index has been distributed: before that a plan could be missing
    /// policies or peers, and an agent must not enforce it.
    ready: watch::Sender<bool>,
}

impl SharedDistribution {
    pub fn new(index: Arc<SharedIndex>) -> Arc<SharedDistribution> {
        Arc::new(SharedDistribution {
            distribution: Mutex::new(Distribution::default()),
            index,
            ready: watch::Sender::new(false),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Distribution> {
        self.distribution.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The plan channel of `node`, created from the engine if no plan was published yet.
    /// Lock order everywhere: index, then distribution.
    pub fn subscribe(&self, node: &str, dirty: &DirtyPolicies) -> watch::Receiver<Arc<NodePlan>> {
        let index = self.index.lock();
        let mut distribution = self.lock();
        if let Some(sender) = distribution.plans.get(node) {
            return sender.subscribe();
        }
        let plan = index.engine().node_plan(node);
        drop(index);
        if let Some(policies) = distribution.publish(node, plan) {
            dirty.mark(policies);
        }
        match distribution.plans.get(node) {
            Some(sender) => sender.subscribe(),
            // `publish` always creates the channel for a node it has not seen.
            None => watch::Sender::new(Arc::new(NodePlan { node: node.to_owned(), ..NodePlan::default() })).subscribe(),
        }
    }
}

/// Recomputes and publishes the plans of affected nodes, a debounce after each change, until
/// `shutdown`.
pub async fn run_distributor(
    distribution: Arc<SharedDistribution>,
    dirty: Arc<DirtyPolicies>,
    metrics: Metrics,
    debounce: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = distribution.index.changed.notified() => {}
        }
        // Let the rest of a burst arrive; the next notification (if any) is kept as a permit.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(debounce) => {}
        }
        let mut index = distribution.index.lock();
        let synced = index.is_synced();
        let nodes = index.take_dirty_nodes();
        let plans: Vec<(String, NodePlan)> = nodes
            .into_iter()
            .map(|node| {
                let plan = index.engine().node_plan(&node);
                (node, plan)
            })
            .collect();
        let mut changed_policies = index.take_dirty_policies();
        drop(index);
        let mut shared = distribution.lock();
        for (node, plan) in plans {
            if let Some(policies) = shared.publish(&node, plan) {
                metrics.plans_published.inc();
                changed_policies.extend(policies);
            }
        }
        drop(shared);
        dirty.mark(changed_policies);
        if synced && !*distribution.ready.borrow() {
            tracing::info!("index synced and distributed; serving plans");
            distribution.ready.send_replace(true);
        }
    }
}
