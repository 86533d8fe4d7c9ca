//! Node plans kept materialized as the engine changes, and what changed in each node's plan since
//! the changes were last taken ([`crate::Engine::take_plan_changes`]).
//!
//! Why: rebuilding a node's whole plan after every batch costs O(plan) per affected node, and a
//! pod that joins a group used on every node would rebuild every node's plan. A view holds a
//! node's pods (each with its rule set lists) and counts which rule sets and groups they use;
//! rule set contents and group members stay once in the engine. Taking the changes yields, per
//! touched node, a [`PlanDelta`] with what entered or left the node whole, and member patches
//! for the groups it kept, each patch built once and shared by every node through an `Arc`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{PodKey, PolicyRef};
use crate::plan::{Direction, Group, GroupId, GroupPatch, LocalPod, PlanDelta, RuleSet, RuleSetId};

/// Where a rule set comes from and which groups it refers to: what a view needs to count it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleSetSource {
    pub policy: PolicyRef,
    pub direction: Direction,
    pub groups: BTreeSet<GroupId>,
}

/// What the engine holds, as the views need to read it when changes are taken.
pub(crate) trait EngineState {
    fn rule_set(&self, policy: &PolicyRef, direction: Direction) -> Option<&RuleSet>;
    fn group(&self, id: &GroupId) -> Option<&Group>;
    fn node_ips(&self, node: &str) -> Vec<IpAddr>;
}

#[derive(Clone, Debug, Default)]
pub(crate) struct NodeViews {
    views: BTreeMap<String, NodeView>,
    /// The node whose view holds each pod.
    pod_nodes: BTreeMap<PodKey, String>,
    /// The nodes whose view holds each group.
    group_nodes: BTreeMap<GroupId, BTreeSet<String>>,
    /// The nodes whose view holds each rule set.
    rule_set_nodes: BTreeMap<RuleSetId, BTreeSet<String>>,
    /// Local pods per node of each policy: where it is enforced (its span).
    spans: BTreeMap<PolicyRef, BTreeMap<String, usize>>,
    /// What changed in each node's view since the last take.
    touched: BTreeMap<String, Touched>,
    spans_changed: BTreeSet<PolicyRef>,
}

#[derive(Clone, Debug, Default)]
struct NodeView {
    pods: BTreeMap<PodKey, LocalPod>,
    rule_sets: BTreeMap<RuleSetId, RuleSetUse>,
    /// Rule sets of this view that refer to each group.
    groups: BTreeMap<GroupId, usize>,
}

#[derive(Clone, Debug)]
struct RuleSetUse {
    /// (pod, direction) entries that list the rule set.
    uses: usize,
    source: RuleSetSource,
}

#[derive(Clone, Debug, Default)]
struct Touched {
    node_ips: bool,
    pods: BTreeSet<PodKey>,
    rule_sets: BTreeSet<RuleSetId>,
    /// Groups that entered or left the view, with whether the view held them at the last take.
    groups: BTreeMap<GroupId, bool>,
}

/// Every node's changes of one take, and the policies whose span changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanChanges {
    /// Only nodes whose plan changed.
    pub deltas: BTreeMap<String, PlanDelta>,
    pub spans_changed: BTreeSet<PolicyRef>,
}

impl NodeViews {
    pub fn pods(&self, node: &str) -> impl Iterator<Item = (&PodKey, &LocalPod)> {
        self.views.get(node).into_iter().flat_map(|view| view.pods.iter())
    }

    pub fn rule_sets(&self, node: &str) -> impl Iterator<Item = (&RuleSetId, &RuleSetSource)> {
        self.views.get(node).into_iter().flat_map(|view| view.rule_sets.iter().map(|(id, used)| (id, &used.source)))
    }

    pub fn groups(&self, node: &str) -> impl Iterator<Item = &GroupId> {
        self.views.get(node).into_iter().flat_map(|view| view.groups.keys())
    }

    pub fn span(&self, policy: &PolicyRef) -> Option<&BTreeMap<String, usize>> {
        self.spans.get(policy)
    }

    /// Policies with at least one local pod on `node`.
    pub fn policies_on(&self, node: &str) -> BTreeSet<PolicyRef> {
        self.rule_sets(node).map(|(_, source)| source.policy.clone()).collect()
    }

    /// Puts a pod's entry where it now belongs (`None`: in no plan). `source` describes each rule
    /// set the new entry lists. Only the rule sets the entry gained or lost are counted again, so
    /// a policy change costs its subject pods, not every policy of each of them.
    pub fn set_pod(
        &mut self,
        key: &PodKey,
        new: Option<(String, LocalPod)>,
        source: impl Fn(&RuleSetId) -> Option<RuleSetSource>,
    ) {
        let old_node = self.pod_nodes.get(key).cloned();
        let old_entry = match &old_node {
            Some(node) => self.views.get(node).and_then(|view| view.pods.get(key)),
            None => None,
        };
        let same_node = old_node.as_deref() == new.as_ref().map(|(node, _)| node.as_str());
        let (old_ids, new_ids) = match (&new, old_entry) {
            (Some((_, entry)), Some(old)) if same_node => {
                if old == entry {
                    return;
                }
                (rule_set_ids(old), rule_set_ids(entry))
            }
            _ => {
                if let Some(node) = &old_node {
                    self.remove_pod(node, key);
                }
                if let Some((node, entry)) = new {
                    let ids = rule_set_ids(&entry);
                    self.add_rule_sets(&node, &ids, &BTreeSet::new(), &source);
                    self.views.entry(node.clone()).or_default().pods.insert(key.clone(), entry);
                    self.pod_nodes.insert(key.clone(), node.clone());
                    self.touch(&node).pods.insert(key.clone());
                }
                return;
            }
        };
        // Same node, another entry: count the difference only.
        let Some((node, entry)) = new else { return };
        let old_policies = self.policies_of(&node, &old_ids);
        let (old_set, new_set): (BTreeSet<&RuleSetId>, BTreeSet<&RuleSetId>) =
            (old_ids.iter().collect(), new_ids.iter().collect());
        let gained: Vec<RuleSetId> = new_set.difference(&old_set).map(|id| (*id).clone()).collect();
        let lost: Vec<RuleSetId> = old_set.difference(&new_set).map(|id| (*id).clone()).collect();
        self.add_rule_sets(&node, &gained, &old_policies, &source);
        for id in &lost {
            self.release_rule_set(&node, id);
        }
        let new_policies = self.policies_of(&node, &new_ids);
        for policy in old_policies.difference(&new_policies) {
            self.count_span(policy, &node, false);
        }
        if let Some(view) = self.views.get_mut(&node) {
            view.pods.insert(key.clone(), entry);
        }
        self.touch(&node).pods.insert(key.clone());
    }

    /// The policies of these rule sets, as this node's view describes them.
    fn policies_of(&self, node: &str, ids: &[RuleSetId]) -> BTreeSet<PolicyRef> {
        let Some(view) = self.views.get(node) else { return BTreeSet::new() };
        ids.iter().filter_map(|id| view.rule_sets.get(id)).map(|used| used.source.policy.clone()).collect()
    }

    /// Counts a pod's new rule sets, and its span in policies it had none of (`already`) before.
    fn add_rule_sets(
        &mut self,
        node: &str,
        ids: &[RuleSetId],
        already: &BTreeSet<PolicyRef>,
        source: &impl Fn(&RuleSetId) -> Option<RuleSetSource>,
    ) {
        let mut policies = BTreeSet::new();
        for id in ids {
            if let Some(used) = self.views.get_mut(node).and_then(|view| view.rule_sets.get_mut(id)) {
                used.uses += 1;
                if !already.contains(&used.source.policy) {
                    policies.insert(used.source.policy.clone());
                }
                continue;
            }
            // A rule set the engine cannot describe is one it no longer holds: the entry is
            // recomputed when that policy's change is refreshed.
            let Some(source) = source(id) else { continue };
            if !already.contains(&source.policy) {
                policies.insert(source.policy.clone());
            }
            self.use_rule_set(node, id, source);
        }
        for policy in policies {
            self.count_span(&policy, node, true);
        }
    }

    fn remove_pod(&mut self, node: &str, key: &PodKey) {
        self.pod_nodes.remove(key);
        let Some(view) = self.views.get_mut(node) else { return };
        let Some(entry) = view.pods.remove(key) else { return };
        let ids = rule_set_ids(&entry);
        for policy in self.policies_of(node, &ids) {
            self.count_span(&policy, node, false);
        }
        for id in ids {
            self.release_rule_set(node, &id);
        }
        self.touch(node).pods.insert(key.clone());
    }

    /// A rule set's content changed: every view that holds it sends it again, and counts the
    /// groups it now refers to (new ones first, so a group it keeps never leaves a view).
    pub fn rule_set_changed(&mut self, id: &RuleSetId, source: RuleSetSource) {
        let nodes: Vec<String> = self.rule_set_nodes.get(id).into_iter().flatten().cloned().collect();
        for node in nodes {
            let Some(used) = self.views.get_mut(&node).and_then(|view| view.rule_sets.get_mut(id)) else { continue };
            let old = std::mem::replace(&mut used.source, source.clone());
            for group in source.groups.difference(&old.groups) {
                self.use_group(&node, group);
            }
            for group in old.groups.difference(&source.groups) {
                self.release_group(&node, group);
            }
            self.touch(&node).rule_sets.insert(id.clone());
        }
    }

    pub fn node_ips_changed(&mut self, node: &str) {
        self.touch(node).node_ips = true;
    }

    fn use_rule_set(&mut self, node: &str, id: &RuleSetId, source: RuleSetSource) {
        let view = self.views.entry(node.to_owned()).or_default();
        if let Some(used) = view.rule_sets.get_mut(id) {
            used.uses += 1;
            return;
        }
        let groups = source.groups.clone();
        view.rule_sets.insert(id.clone(), RuleSetUse { uses: 1, source });
        self.rule_set_nodes.entry(id.clone()).or_default().insert(node.to_owned());
        for group in &groups {
            self.use_group(node, group);
        }
        self.touch(node).rule_sets.insert(id.clone());
    }

    fn release_rule_set(&mut self, node: &str, id: &RuleSetId) {
        let Some(view) = self.views.get_mut(node) else { return };
        let Some(used) = view.rule_sets.get_mut(id) else { return };
        used.uses -= 1;
        if used.uses > 0 {
            return;
        }
        let groups = view.rule_sets.remove(id).map(|used| used.source.groups).unwrap_or_default();
        remove_from(&mut self.rule_set_nodes, id, node);
        for group in &groups {
            self.release_group(node, group);
        }
        self.touch(node).rule_sets.insert(id.clone());
    }

    fn use_group(&mut self, node: &str, id: &GroupId) {
        let view = self.views.entry(node.to_owned()).or_default();
        let uses = view.groups.entry(id.clone()).or_default();
        *uses += 1;
        if *uses == 1 {
            self.group_nodes.entry(id.clone()).or_default().insert(node.to_owned());
            self.touch(node).groups.entry(id.clone()).or_insert(false);
        }
    }

    fn release_group(&mut self, node: &str, id: &GroupId) {
        let Some(view) = self.views.get_mut(node) else { return };
        let Some(uses) = view.groups.get_mut(id) else { return };
        *uses -= 1;
        if *uses == 0 {
            view.groups.remove(id);
            remove_from(&mut self.group_nodes, id, node);
            self.touch(node).groups.entry(id.clone()).or_insert(true);
        }
    }

    fn count_span(&mut self, policy: &PolicyRef, node: &str, add: bool) {
        let nodes = self.spans.entry(policy.clone()).or_default();
        let count = nodes.entry(node.to_owned()).or_default();
        if add {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                nodes.remove(node);
            }
            if nodes.is_empty() {
                self.spans.remove(policy);
            }
        }
        self.spans_changed.insert(policy.clone());
    }

    fn touch(&mut self, node: &str) -> &mut Touched {
        self.touched.entry(node.to_owned()).or_default()
    }

    /// Every node's change since the last take. `patches` are the member changes of groups since
    /// then, and `fresh` the groups created since then (sent whole wherever they are held).
    pub fn take(
        &mut self,
        state: &impl EngineState,
        patches: BTreeMap<GroupId, GroupPatch>,
        fresh: &BTreeSet<GroupId>,
    ) -> PlanChanges {
        let mut deltas: BTreeMap<String, PlanDelta> = BTreeMap::new();
        for (node, touched) in std::mem::take(&mut self.touched) {
            let view = self.views.get(&node);
            let delta =
                deltas.entry(node.clone()).or_insert_with(|| PlanDelta { node: node.clone(), ..PlanDelta::default() });
            if touched.node_ips {
                delta.node_ips = Some(state.node_ips(&node));
            }
            for key in touched.pods {
                match view.and_then(|view| view.pods.get(&key)) {
                    Some(entry) => {
                        delta.upserted_pods.insert(key, entry.clone());
                    }
                    None => {
                        delta.removed_pods.insert(key);
                    }
                }
            }
            for id in touched.rule_sets {
                let held = view.and_then(|view| view.rule_sets.get(&id));
                match held.and_then(|used| state.rule_set(&used.source.policy, used.source.direction)) {
                    Some(rule_set) => {
                        delta.upserted_rule_sets.insert(id, rule_set.clone());
                    }
                    None => {
                        delta.removed_rule_sets.insert(id);
                    }
                }
            }
            for (id, held_before) in touched.groups {
                let held_now = view.is_some_and(|view| view.groups.contains_key(&id));
                match (held_before, held_now) {
                    (false, true) => {
                        if let Some(group) = state.group(&id) {
                            delta.upserted_groups.insert(id, group.clone());
                        }
                    }
                    (true, false) => {
                        delta.removed_groups.insert(id);
                    }
                    // Kept (members, if changed, are patched below) or never held.
                    _ => {}
                }
            }
        }
        let patches: BTreeMap<GroupId, Arc<GroupPatch>> = patches
            .into_iter()
            .filter(|(_, patch)| !patch.is_empty())
            .map(|(id, patch)| (id, Arc::new(patch)))
            .collect();
        for id in fresh.iter().chain(patches.keys().filter(|id| !fresh.contains(*id))) {
            for node in self.group_nodes.get(id).into_iter().flatten() {
                let delta = deltas
                    .entry(node.clone())
                    .or_insert_with(|| PlanDelta { node: node.clone(), ..PlanDelta::default() });
                if delta.upserted_groups.contains_key(id) {
                    continue;
                }
                if fresh.contains(id) {
                    if let Some(group) = state.group(id) {
                        delta.upserted_groups.insert(id.clone(), group.clone());
                    }
                } else if let Some(patch) = patches.get(id) {
                    delta.patched_groups.insert(id.clone(), patch.clone());
                }
            }
        }
        deltas.retain(|_, delta| !delta.is_empty());
        PlanChanges { deltas, spans_changed: std::mem::take(&mut self.spans_changed) }
    }
}

/// The rule sets a pod's entry lists, once each per direction it appears in.
fn rule_set_ids(entry: &LocalPod) -> Vec<RuleSetId> {
    [&entry.ingress, &entry.egress]
        .into_iter()
        .flat_map(|direction| {
            direction.admin.iter().chain(direction.network_policy.iter().flatten()).chain(direction.baseline.iter())
        })
        .cloned()
        .collect()
}

fn remove_from<K: Ord>(map: &mut BTreeMap<K, BTreeSet<String>>, key: &K, node: &str) {
    if let Some(nodes) = map.get_mut(key) {
        nodes.remove(node);
        if nodes.is_empty() {
            map.remove(key);
        }
    }
}
