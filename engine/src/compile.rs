//! The compiler: an [`Engine`] holding the cluster and the policies, answering events with
//! [`Delta`]s and producing one [`NodePlan`] per node.
//!
//! State is kept so that every event touches only what it can change:
//! - groups are content-addressed definitions with counted members; a pod event re-evaluates
//!   that one pod against each group definition and each policy subject, never other pods;
//! - each installed policy knows its subject pods and how many of them run on each node, so
//!   "which nodes use this group" is answered from the group's referring policies;
//! - node plans are kept materialized as views ([`crate::views`]) that each event updates for
//!   the pods it touched; [`Engine::take_plan_changes`] hands out each node's change since the
//!   last take, with group members patched rather than resent. A full compile and any sequence of
//!   events that reaches the same cluster and policies produce the same plans.
//!
//! Ingress from the node's own addresses and loopback are not rules: the dataplane always allows
//! them (see [`crate::plan`]).

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, PolicyWarning};
use crate::groups::{GroupDefinition, Member, rule_set_id};
use crate::index::PodIndex;
use crate::model::{Cluster, Namespace, Node, Pod, PodKey, Policy, PolicyRef, Revision};
use crate::plan::{
    Direction, DirectionPlan, Group, GroupId, GroupPatch, LocalPod, NetEntry, NodePlan, PeerMatch, PortEntry,
    PortMatch, Rule, RuleSet, RuleSetId,
};
use crate::validate::{Layer, PeerSpec, PortSpec, ValidPolicy, ValidRule, validate};
use crate::views::{EngineState, NodeViews, PlanChanges, RuleSetSource};

/// What an event changed, so the operator knows which agents to send which plans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Groups whose members changed, or that were created or garbage-collected.
    pub changed_groups: BTreeSet<GroupId>,
    /// Rule sets whose content changed, or that appeared or disappeared.
    pub changed_rule_sets: BTreeSet<RuleSetId>,
    /// Nodes whose plan may have changed (a superset: never misses one).
    pub affected_nodes: BTreeSet<String>,
}

/// The result of a full compile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// One plan per node known from `cluster.nodes` or from a pod's `node`.
    pub plans: BTreeMap<String, NodePlan>,
    /// Errors of quarantined policies; every other policy compiled.
    pub errors: Vec<PolicyError>,
    pub warnings: Vec<PolicyWarning>,
}

/// Compiles everything from scratch: the same code path as events, applied to an empty engine.
pub fn compile(cluster: &Cluster, policies: &[Policy]) -> Compiled {
    let mut engine = Engine::with_cluster(cluster.clone());
    for policy in policies {
        engine.upsert_policy(policy.clone());
    }
    Compiled { plans: engine.node_plans(), errors: engine.errors(), warnings: engine.warnings() }
}

#[derive(Clone, Debug, Default)]
pub struct Engine {
    cluster: Cluster,
    pods: PodIndex,
    installed: BTreeMap<PolicyRef, Installed>,
    quarantined: BTreeMap<PolicyRef, Vec<PolicyError>>,
    warnings: BTreeMap<PolicyRef, Vec<PolicyWarning>>,
    groups: BTreeMap<GroupId, GroupState>,
    /// The policies whose subject selects each pod.
    subjects_of_pod: BTreeMap<PodKey, BTreeSet<PolicyRef>>,
    /// Every node's plan, materialized.
    views: NodeViews,
    /// Pods whose plan entry may have changed since the views were last refreshed. Refreshing
    /// waits until plans are read, so a burst (the first list: thousands of policies) computes
    /// each pod's entry once, not once per policy that selects it.
    dirty_pods: BTreeSet<PodKey>,
    /// Rule sets whose content changed since the views were last refreshed.
    dirty_rule_sets: BTreeSet<RuleSetId>,
    /// Member changes of each group since the last [`Engine::take_plan_changes`].
    group_patches: BTreeMap<GroupId, GroupPatch>,
    /// Groups created since the last take: every node holding one gets it whole.
    fresh_groups: BTreeSet<GroupId>,
    /// The policy and direction of each installed rule set.
    rule_set_owners: BTreeMap<RuleSetId, (PolicyRef, Direction)>,
}

/// What the engine enforces for one policy ([`Engine::enforcement`]), with the revision in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enforcement {
    /// The newest version, accepted.
    Current(Revision),
    /// The newest version is refused; this earlier, accepted revision stays in force.
    LastAccepted(Revision),
    /// Refused and never accepted: the fail-closed stand-in of this revision is in force.
    FailClosed(Revision),
    /// Refused, never accepted, and no stand-in could be read: nothing is in force.
    Nothing,
}

impl Enforcement {
    /// The revision whose rules are in force, if any.
    pub fn revision(&self) -> Option<&Revision> {
        match self {
            Enforcement::Current(revision)
            | Enforcement::LastAccepted(revision)
            | Enforcement::FailClosed(revision) => Some(revision),
            Enforcement::Nothing => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstalledAs {
    Accepted,
    FailClosedStandIn,
}

/// A valid policy in force, with its compiled rule sets and its resolved subject.
#[derive(Clone, Debug)]
struct Installed {
    policy: ValidPolicy,
    installed_as: InstalledAs,
    rule_sets: BTreeMap<Direction, CompiledRuleSet>,
    subject_pods: BTreeSet<PodKey>,
    /// Number of subject pods per node: the nodes whose plans use this policy's rule sets and groups.
    subject_nodes: BTreeMap<String, usize>,
}

#[derive(Clone, Debug)]
struct CompiledRuleSet {
    id: RuleSetId,
    rule_set: RuleSet,
    groups: BTreeSet<GroupId>,
}

#[derive(Clone, Debug)]
struct GroupState {
    definition: GroupDefinition,
    counts: BTreeMap<Member, u32>,
    /// The members as the plan carries them, kept in step with `counts`.
    members: Group,
    /// Policies whose rule sets refer to this group; the group is dropped when none is left.
    referrers: BTreeSet<PolicyRef>,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// An engine that starts from a known cluster and no policies.
    pub fn with_cluster(cluster: Cluster) -> Engine {
        let mut pods = PodIndex::default();
        for pod in cluster.pods.values() {
            pods.insert(pod);
        }
        let dirty_pods = cluster.pods.keys().cloned().collect();
        Engine { cluster, pods, dirty_pods, ..Engine::default() }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Errors of every quarantined policy, by policy.
    pub fn errors(&self) -> Vec<PolicyError> {
        self.quarantined.values().flatten().cloned().collect()
    }

    /// Errors of one policy; empty when it is in force or unknown.
    pub fn errors_of(&self, policy: &PolicyRef) -> &[PolicyError] {
        self.quarantined.get(policy).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn warnings(&self) -> Vec<PolicyWarning> {
        self.warnings.values().flatten().cloned().collect()
    }

    /// Nodes that get a plan: the known nodes and any node a pod is scheduled on.
    pub fn node_names(&self) -> BTreeSet<String> {
        self.cluster.nodes.keys().chain(self.pods.nodes()).cloned().collect()
    }

    pub fn node_plans(&mut self) -> BTreeMap<String, NodePlan> {
        self.node_names().into_iter().map(|node| (node.clone(), self.node_plan(&node))).collect()
    }

    // -----------------------------------------------------------------------------------------
    // Cluster events
    // -----------------------------------------------------------------------------------------

    pub fn upsert_pod(&mut self, pod: Pod) -> Delta {
        let old = self.cluster.pods.get(&pod.key).cloned();
        if old.as_ref() == Some(&pod) {
            return Delta::default();
        }
        if let Some(old) = &old {
            self.pods.remove(old);
        }
        self.pods.insert(&pod);
        self.cluster.pods.insert(pod.key.clone(), pod.clone());
        self.dirty_pods.insert(pod.key.clone());

        let mut delta = Delta::default();
        delta.affected_nodes.extend(old.iter().chain([&pod]).filter_map(|p| p.node.clone()));
        let namespace = self.cluster.namespaces.get(&pod.key.namespace).cloned();
        self.reevaluate_pod(
            old.as_ref().map(|old| (old, namespace.as_ref())),
            Some((&pod, namespace.as_ref())),
            &mut delta,
        );
        self.finish(delta)
    }

    pub fn remove_pod(&mut self, key: &PodKey) -> Delta {
        let Some(old) = self.cluster.pods.remove(key) else { return Delta::default() };
        self.pods.remove(&old);
        self.dirty_pods.insert(key.clone());
        let mut delta = Delta::default();
        delta.affected_nodes.extend(old.node.clone());
        let namespace = self.cluster.namespaces.get(&key.namespace).cloned();
        self.reevaluate_pod(Some((&old, namespace.as_ref())), None, &mut delta);
        self.finish(delta)
    }

    pub fn upsert_namespace(&mut self, namespace: Namespace) -> Delta {
        let old = self.cluster.namespaces.insert(namespace.name.clone(), namespace.clone());
        self.namespace_changed(&namespace.name, old.as_ref(), Some(&namespace))
    }

    pub fn remove_namespace(&mut self, name: &str) -> Delta {
        let old = self.cluster.namespaces.remove(name);
        self.namespace_changed(name, old.as_ref(), None)
    }

    /// Namespace labels feed namespace selectors: re-evaluate the namespace's pods only.
    fn namespace_changed(&mut self, name: &str, old: Option<&Namespace>, new: Option<&Namespace>) -> Delta {
        let mut delta = Delta::default();
        if old == new {
            return delta;
        }
        let keys: Vec<PodKey> = self.pods.in_namespace(name).iter().cloned().collect();
        for key in keys {
            if let Some(pod) = self.cluster.pods.get(&key).cloned() {
                self.reevaluate_pod(Some((&pod, old)), Some((&pod, new)), &mut delta);
            }
        }
        self.finish(delta)
    }

    pub fn upsert_node(&mut self, node: Node) -> Delta {
        let old = self.cluster.nodes.insert(node.name.clone(), node.clone());
        self.node_changed(&node.name, old.as_ref(), Some(&node))
    }

    pub fn remove_node(&mut self, name: &str) -> Delta {
        let old = self.cluster.nodes.remove(name);
        self.node_changed(name, old.as_ref(), None)
    }

    /// Node labels and addresses feed `nodes` peers. The node itself is reported too: its agent
    /// allows ingress from the node's own addresses, which may just have changed.
    fn node_changed(&mut self, name: &str, old: Option<&Node>, new: Option<&Node>) -> Delta {
        let mut delta = Delta::default();
        if old == new {
            return delta;
        }
        delta.affected_nodes.insert(name.to_string());
        if old.map(|node| &node.ips) != new.map(|node| &node.ips) {
            self.views.node_ips_changed(name);
        }
        for (id, group) in &mut self.groups {
            let before = old.map(|node| group.definition.node_members(node)).unwrap_or_default();
            let after = new.map(|node| group.definition.node_members(node)).unwrap_or_default();
            if group.replace(before, after, self.group_patches.entry(id.clone())) {
                delta.changed_groups.insert(id.clone());
            }
        }
        self.finish(delta)
    }

    // -----------------------------------------------------------------------------------------
    // Policy events
    // -----------------------------------------------------------------------------------------

    /// Installs or replaces a policy. An invalid policy is refused (see [`Engine::refuse_policy`]):
    /// its errors are reported by [`Engine::errors`], and what stays in force fails closed.
    pub fn upsert_policy(&mut self, policy: Policy) -> Delta {
        match validate(&policy) {
            Ok(validated) => {
                let reference = policy.reference();
                let mut delta = Delta::default();
                let old = self.uninstall(&reference, &mut delta);
                if !validated.warnings.is_empty() {
                    self.warnings.insert(reference.clone(), validated.warnings);
                }
                self.install(validated.policy, InstalledAs::Accepted, &mut delta);
                self.settle_policy_change(&reference, old, delta)
            }
            Err(errors) => {
                let stand_in = policy.fail_closed_stand_in();
                self.refuse_policy(policy.reference(), errors, Some(stand_in))
            }
        }
    }

    /// Refuses the newest version of a policy (invalid, or unreadable by the caller's conversion)
    /// and fails closed: an accepted earlier version stays in force until a valid one arrives (an
    /// Admin Deny with a typo must not start allowing what it denied); a policy never accepted
    /// enforces `stand_in` ([`Policy::fail_closed_stand_in`]) if that validates, else nothing.
    pub fn refuse_policy(&mut self, reference: PolicyRef, errors: Vec<PolicyError>, stand_in: Option<Policy>) -> Delta {
        let mut delta = Delta::default();
        if self.installed.get(&reference).is_some_and(|installed| installed.installed_as == InstalledAs::Accepted) {
            self.quarantined.insert(reference, errors);
            return delta;
        }
        let old = self.uninstall(&reference, &mut delta);
        if let Some(Ok(validated)) = stand_in.as_ref().map(validate)
            && validated.policy.reference == reference
        {
            self.install(validated.policy, InstalledAs::FailClosedStandIn, &mut delta);
        }
        self.quarantined.insert(reference.clone(), errors);
        self.settle_policy_change(&reference, old, delta)
    }

    /// The policies in force as their own accepted versions (stand-ins excluded), normalized.
    pub fn accepted_policies(&self) -> impl Iterator<Item = &ValidPolicy> {
        self.installed
            .values()
            .filter(|installed| installed.installed_as == InstalledAs::Accepted)
            .map(|installed| &installed.policy)
    }

    /// What is in force for a policy the engine has seen, and of which revision.
    pub fn enforcement(&self, reference: &PolicyRef) -> Option<Enforcement> {
        let refused = self.quarantined.contains_key(reference);
        match self.installed.get(reference) {
            Some(installed) => Some(match (installed.installed_as, refused) {
                (InstalledAs::Accepted, false) => Enforcement::Current(installed.policy.revision.clone()),
                (InstalledAs::Accepted, true) => Enforcement::LastAccepted(installed.policy.revision.clone()),
                (InstalledAs::FailClosedStandIn, _) => Enforcement::FailClosed(installed.policy.revision.clone()),
            }),
            None if refused => Some(Enforcement::Nothing),
            None => None,
        }
    }

    pub fn remove_policy(&mut self, reference: &PolicyRef) -> Delta {
        let mut delta = Delta::default();
        let old = self.uninstall(reference, &mut delta);
        self.settle_policy_change(reference, old, delta)
    }

    /// Drops a policy's subject and group references (groups are collected later, so a group
    /// the new version uses again is never dropped and recreated).
    fn uninstall(&mut self, reference: &PolicyRef, delta: &mut Delta) -> Option<Installed> {
        self.quarantined.remove(reference);
        self.warnings.remove(reference);
        let old = self.installed.remove(reference)?;
        delta.affected_nodes.extend(old.subject_nodes.keys().cloned());
        self.dirty_pods.extend(old.subject_pods.iter().cloned());
        for compiled in old.rule_sets.values() {
            self.rule_set_owners.remove(&compiled.id);
        }
        for key in &old.subject_pods {
            if let Some(policies) = self.subjects_of_pod.get_mut(key) {
                policies.remove(reference);
                if policies.is_empty() {
                    self.subjects_of_pod.remove(key);
                }
            }
        }
        for compiled in old.rule_sets.values() {
            for id in &compiled.groups {
                if let Some(group) = self.groups.get_mut(id) {
                    group.referrers.remove(reference);
                }
            }
        }
        Some(old)
    }

    fn install(&mut self, policy: ValidPolicy, installed_as: InstalledAs, delta: &mut Delta) {
        let reference = policy.reference.clone();
        let mut rule_sets = BTreeMap::new();
        for direction in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = policy.rules(direction) else { continue };
            let (rule_set, definitions) = compile_rule_set(&policy, direction, rules);
            let mut groups = BTreeSet::new();
            for definition in definitions {
                let id = definition.id();
                let group = self.groups.entry(id.clone()).or_insert_with(|| {
                    delta.changed_groups.insert(id.clone());
                    self.fresh_groups.insert(id.clone());
                    GroupState::resolve(definition, &self.cluster, &self.pods)
                });
                group.referrers.insert(reference.clone());
                groups.insert(id);
            }
            let id = rule_set_id(&reference, direction);
            self.rule_set_owners.insert(id.clone(), (reference.clone(), direction));
            rule_sets.insert(direction, CompiledRuleSet { id, rule_set, groups });
        }

        let mut installed = Installed {
            policy,
            installed_as,
            rule_sets,
            subject_pods: BTreeSet::new(),
            subject_nodes: BTreeMap::new(),
        };
        for key in self.pods.candidates(&installed.policy.subject, &self.cluster) {
            let Some(pod) = self.cluster.pods.get(key) else { continue };
            if installed.policy.subject.selects(pod, self.cluster.namespaces.get(&key.namespace)) {
                installed.add_subject(pod, &mut self.subjects_of_pod);
            }
        }
        delta.affected_nodes.extend(installed.subject_nodes.keys().cloned());
        self.dirty_pods.extend(installed.subject_pods.iter().cloned());
        self.installed.insert(reference, installed);
    }

    /// Records changed rule sets, collects groups nobody refers to any more, and completes the delta.
    fn settle_policy_change(&mut self, reference: &PolicyRef, old: Option<Installed>, mut delta: Delta) -> Delta {
        let new = self.installed.get(reference);
        for direction in [Direction::Ingress, Direction::Egress] {
            let before = old.as_ref().and_then(|installed| installed.rule_sets.get(&direction));
            let after = new.and_then(|installed| installed.rule_sets.get(&direction));
            if before.map(|c| &c.rule_set) != after.map(|c| &c.rule_set) {
                delta.changed_rule_sets.extend(before.or(after).map(|c| c.id.clone()));
            }
        }
        for compiled in old.iter().flat_map(|installed| installed.rule_sets.values()) {
            for id in &compiled.groups {
                if self.groups.get(id).is_some_and(|group| group.referrers.is_empty()) {
                    self.groups.remove(id);
                    self.group_patches.remove(id);
                    delta.changed_groups.insert(id.clone());
                }
            }
        }
        self.finish(delta)
    }

    // -----------------------------------------------------------------------------------------
    // Shared steps
    // -----------------------------------------------------------------------------------------

    /// Moves one pod's contributions to groups and subjects from its old state to its new one.
    fn reevaluate_pod(
        &mut self,
        old: Option<(&Pod, Option<&Namespace>)>,
        new: Option<(&Pod, Option<&Namespace>)>,
        delta: &mut Delta,
    ) {
        for (id, group) in &mut self.groups {
            if !group.definition.depends_on_pods() {
                continue;
            }
            let before = old.map(|(pod, ns)| group.definition.pod_members(pod, ns)).unwrap_or_default();
            let after = new.map(|(pod, ns)| group.definition.pod_members(pod, ns)).unwrap_or_default();
            if group.replace(before, after, self.group_patches.entry(id.clone())) {
                delta.changed_groups.insert(id.clone());
            }
        }
        for installed in self.installed.values_mut() {
            let subject = &installed.policy.subject;
            let was = old.filter(|(pod, ns)| subject.selects(pod, *ns)).map(|(pod, _)| pod);
            let is = new.filter(|(pod, ns)| subject.selects(pod, *ns)).map(|(pod, _)| pod);
            if was.is_some() != is.is_some() {
                self.dirty_pods.extend(was.or(is).map(|pod| pod.key.clone()));
            }
            if let Some(pod) = was {
                installed.remove_subject(pod, &mut self.subjects_of_pod);
                delta.affected_nodes.extend(pod.node.clone());
            }
            if let Some(pod) = is {
                installed.add_subject(pod, &mut self.subjects_of_pod);
                delta.affected_nodes.extend(pod.node.clone());
            }
        }
    }

    /// Adds the nodes whose plans use a changed group, and notes changed rule sets for the views.
    fn finish(&mut self, mut delta: Delta) -> Delta {
        for id in &delta.changed_groups {
            let Some(group) = self.groups.get(id) else { continue };
            for reference in &group.referrers {
                if let Some(installed) = self.installed.get(reference) {
                    delta.affected_nodes.extend(installed.subject_nodes.keys().cloned());
                }
            }
        }
        self.dirty_rule_sets.extend(delta.changed_rule_sets.iter().cloned());
        delta
    }

    /// Recomputes the plan entries of the dirty pods, then re-describes changed rule sets to the
    /// views that hold them.
    fn refresh_views(&mut self) {
        for key in std::mem::take(&mut self.dirty_pods) {
            let entry = self
                .cluster
                .pods
                .get(&key)
                .filter(|pod| pod.is_policy_endpoint())
                .and_then(|pod| Some((pod.node.clone()?, self.local_pod(pod))));
            let sources = RuleSetSources { installed: &self.installed, owners: &self.rule_set_owners };
            self.views.set_pod(&key, entry, |id| sources.get(id));
        }
        let sources = RuleSetSources { installed: &self.installed, owners: &self.rule_set_owners };
        for id in std::mem::take(&mut self.dirty_rule_sets) {
            if let Some(source) = sources.get(&id) {
                self.views.rule_set_changed(&id, source);
            }
        }
    }

    /// Every node's plan change since the last call (none at first for a node never taken: its
    /// agent starts from a snapshot, [`Engine::node_plan`]), and the policies whose span changed.
    pub fn take_plan_changes(&mut self) -> PlanChanges {
        self.refresh_views();
        let patches = std::mem::take(&mut self.group_patches);
        let fresh = std::mem::take(&mut self.fresh_groups);
        let mut views = std::mem::take(&mut self.views);
        let changes = views.take(&State { engine: self }, patches, &fresh);
        self.views = views;
        changes
    }

    /// Local pods per node of a policy: where its rules are enforced, as of the last take of
    /// changes (or plan read), which is what agents were last handed.
    pub fn span(&self, policy: &PolicyRef) -> BTreeMap<String, usize> {
        self.views.span(policy).cloned().unwrap_or_default()
    }

    /// The policies with rules in `node`'s plan, as of the last take of changes (or plan read).
    pub fn policies_on(&self, node: &str) -> BTreeSet<PolicyRef> {
        self.views.policies_on(node)
    }

    // -----------------------------------------------------------------------------------------
    // Plans
    // -----------------------------------------------------------------------------------------

    /// What `node` must enforce now. Pods are those scheduled there that are policy endpoints.
    pub fn node_plan(&mut self, node: &str) -> NodePlan {
        self.refresh_views();
        let state = State { engine: self };
        let mut plan = NodePlan { node: node.to_string(), node_ips: state.node_ips(node), ..NodePlan::default() };
        plan.pods = self.views.pods(node).map(|(key, entry)| (key.clone(), entry.clone())).collect();
        for (id, source) in self.views.rule_sets(node) {
            if let Some(rule_set) = state.rule_set(&source.policy, source.direction) {
                plan.rule_sets.insert(id.clone(), rule_set.clone());
            }
        }
        for id in self.views.groups(node) {
            if let Some(group) = state.group(id) {
                plan.groups.insert(id.clone(), group.clone());
            }
        }
        plan
    }

    /// A pod's plan entry: the rule sets of the policies selecting it, in evaluation order.
    fn local_pod(&self, pod: &Pod) -> LocalPod {
        let mut policies: Vec<&Installed> = self
            .subjects_of_pod
            .get(&pod.key)
            .into_iter()
            .flatten()
            .filter_map(|reference| self.installed.get(reference))
            .collect();
        policies.sort_by(|a, b| a.policy.order_key().cmp(&b.policy.order_key()));
        LocalPod {
            ips: pod.ips.clone(),
            ingress: direction_plan(&policies, Direction::Ingress),
            egress: direction_plan(&policies, Direction::Egress),
        }
    }
}

/// A pod's rule sets for one direction, its policies already in evaluation order.
fn direction_plan(policies: &[&Installed], direction: Direction) -> DirectionPlan {
    let mut result = DirectionPlan::default();
    let mut network_policy = Vec::new();
    for installed in policies {
        let Some(compiled) = installed.rule_sets.get(&direction) else { continue };
        match installed.policy.layer {
            Layer::Admin => result.admin.push(compiled.id.clone()),
            Layer::NetworkPolicy => network_policy.push(compiled.id.clone()),
            Layer::Baseline => result.baseline.push(compiled.id.clone()),
        }
    }
    result.network_policy = (!network_policy.is_empty()).then_some(network_policy);
    result
}

/// Describes installed rule sets by id for the views.
struct RuleSetSources<'a> {
    installed: &'a BTreeMap<PolicyRef, Installed>,
    owners: &'a BTreeMap<RuleSetId, (PolicyRef, Direction)>,
}

impl RuleSetSources<'_> {
    fn get(&self, id: &RuleSetId) -> Option<RuleSetSource> {
        let (policy, direction) = self.owners.get(id)?;
        let compiled = self.installed.get(policy)?.rule_sets.get(direction)?;
        Some(RuleSetSource { policy: policy.clone(), direction: *direction, groups: compiled.groups.clone() })
    }
}

/// The engine as the views read it.
struct State<'a> {
    engine: &'a Engine,
}

impl EngineState for State<'_> {
    fn rule_set(&self, policy: &PolicyRef, direction: Direction) -> Option<&RuleSet> {
        self.engine.installed.get(policy)?.rule_sets.get(&direction).map(|compiled| &compiled.rule_set)
    }

    fn group(&self, id: &GroupId) -> Option<&Group> {
        self.engine.groups.get(id).map(|group| &group.members)
    }

    fn node_ips(&self, node: &str) -> Vec<IpAddr> {
        self.engine.cluster.nodes.get(node).map(|known| known.ips.clone()).unwrap_or_default()
    }
}

impl Installed {
    fn add_subject(&mut self, pod: &Pod, subjects_of_pod: &mut BTreeMap<PodKey, BTreeSet<PolicyRef>>) {
        if self.subject_pods.insert(pod.key.clone()) {
            if let Some(node) = &pod.node {
                *self.subject_nodes.entry(node.clone()).or_default() += 1;
            }
            subjects_of_pod.entry(pod.key.clone()).or_default().insert(self.policy.reference.clone());
        }
    }

    fn remove_subject(&mut self, pod: &Pod, subjects_of_pod: &mut BTreeMap<PodKey, BTreeSet<PolicyRef>>) {
        if self.subject_pods.remove(&pod.key) {
            if let Some(node) = &pod.node
                && let Some(count) = self.subject_nodes.get_mut(node)
            {
                *count -= 1;
                if *count == 0 {
                    self.subject_nodes.remove(node);
                }
            }
            if let Some(policies) = subjects_of_pod.get_mut(&pod.key) {
                policies.remove(&self.policy.reference);
                if policies.is_empty() {
                    subjects_of_pod.remove(&pod.key);
                }
            }
        }
    }
}

impl GroupState {
    /// A new group with its members resolved from the whole cluster (through the indexes).
    fn resolve(definition: GroupDefinition, cluster: &Cluster, pods: &PodIndex) -> GroupState {
        let members = match &definition {
            GroupDefinition::Pods(_) | GroupDefinition::Nodes(_) => Group::Addresses(BTreeSet::new()),
            GroupDefinition::Networks(entries) => Group::Networks(entries.clone()),
            GroupDefinition::NamedPort { .. } => Group::IpPorts(BTreeSet::new()),
        };
        let mut group = GroupState { definition, counts: BTreeMap::new(), members, referrers: BTreeSet::new() };
        let candidates: Vec<&PodKey> = match &group.definition {
            GroupDefinition::Pods(selection) => pods.candidates(selection, cluster),
            GroupDefinition::NamedPort { name, .. } => pods.with_port_name(name).iter().collect(),
            GroupDefinition::Networks(_) | GroupDefinition::Nodes(_) => Vec::new(),
        };
        for key in candidates {
            if let Some(pod) = cluster.pods.get(key) {
                let added = group.definition.pod_members(pod, cluster.namespaces.get(&key.namespace));
                group.swap(Vec::new(), added);
            }
        }
        if matches!(group.definition, GroupDefinition::Nodes(_)) {
            for node in cluster.nodes.values() {
                let added = group.definition.node_members(node);
                group.swap(Vec::new(), added);
            }
        }
        group
    }

    /// Swaps one contributor's members; true if the materialized members changed, each change
    /// also recorded in `journal` (the group's patch since the last take). Adds go first so that
    /// an entry present before and after is never dropped in between.
    fn replace(
        &mut self,
        before: Vec<Member>,
        after: Vec<Member>,
        journal: btree_map::Entry<'_, GroupId, GroupPatch>,
    ) -> bool {
        let toggled = self.swap(before, after);
        if toggled.is_empty() {
            return false;
        }
        let patch = journal.or_insert_with(|| match self.members {
            Group::IpPorts(_) => GroupPatch::IpPorts { added: BTreeSet::new(), removed: BTreeSet::new() },
            Group::Addresses(_) | Group::Networks(_) => {
                GroupPatch::Addresses { added: BTreeSet::new(), removed: BTreeSet::new() }
            }
        });
        for (member, present) in toggled {
            match (&mut *patch, member) {
                (GroupPatch::Addresses { added, removed }, Member::Address(ip)) => record(added, removed, ip, present),
                (GroupPatch::IpPorts { added, removed }, Member::IpPort(ip, protocol, port)) => {
                    record(added, removed, (ip, protocol, port), present)
                }
                // `materialize` only toggles members of the group's own kind.
                _ => {}
            }
        }
        true
    }

    /// Swaps one contributor's members in the counts; returns the materialized members that
    /// appeared (true) or disappeared (false).
    fn swap(&mut self, before: Vec<Member>, after: Vec<Member>) -> Vec<(Member, bool)> {
        let mut toggled = Vec::new();
        if before == after {
            return toggled;
        }
        for member in after {
            let count = self.counts.entry(member).or_default();
            *count += 1;
            if *count == 1 && self.materialize(member, true) {
                toggled.push((member, true));
            }
        }
        for member in before {
            if let Some(count) = self.counts.get_mut(&member) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&member);
                    if self.materialize(member, false) {
                        toggled.push((member, false));
                    }
                }
            }
        }
        toggled
    }

    fn materialize(&mut self, member: Member, present: bool) -> bool {
        match (&mut self.members, member) {
            (Group::Addresses(set), Member::Address(ip)) => toggle(set, ip, present),
            (Group::IpPorts(set), Member::IpPort(ip, protocol, port)) => toggle(set, (ip, protocol, port), present),
            _ => false,
        }
    }
}

fn toggle<T: Ord>(set: &mut BTreeSet<T>, value: T, present: bool) -> bool {
    if present { set.insert(value) } else { set.remove(&value) }
}

/// Folds one member change into a patch: adding what the patch removed (or the reverse) cancels.
fn record<T: Ord>(added: &mut BTreeSet<T>, removed: &mut BTreeSet<T>, value: T, present: bool) {
    let (gain, loss) = if present { (added, removed) } else { (removed, added) };
    if !loss.remove(&value) {
        gain.insert(value);
    }
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// One policy's rules for one direction, with the group definitions they refer to. Rules hold
/// group ids and port entries only, so their size is O(peers + ports), never O(pods).
fn compile_rule_set(
    policy: &ValidPolicy,
    direction: Direction,
    rules: &[ValidRule],
) -> (RuleSet, Vec<GroupDefinition>) {
    let mut definitions = Vec::new();
    let rules = rules
        .iter()
        .map(|rule| Rule {
            index: rule.index,
            name: rule.name.clone(),
            action: rule.action,
            peers: compile_peers(rule.peers.as_deref(), &mut definitions),
            ports: compile_ports(rule.ports.as_deref(), &mut definitions),
        })
        .collect();
    let rule_set = RuleSet { policy: policy.reference.clone(), revision: policy.revision.clone(), direction, rules };
    (rule_set, definitions)
}

fn compile_peers(peers: Option<&[PeerSpec]>, definitions: &mut Vec<GroupDefinition>) -> PeerMatch {
    let Some(peers) = peers else { return PeerMatch::Any };
    if peers.contains(&PeerSpec::Everything) {
        return PeerMatch::Any;
    }
    let mut ids = Vec::new();
    for peer in peers {
        let definition = match peer {
            PeerSpec::Pods(selection) => GroupDefinition::Pods(selection.clone()),
            PeerSpec::IpBlock { cidr, except } => GroupDefinition::Networks(
                std::iter::once(NetEntry { net: *cidr, nomatch: false })
                    .chain(except.iter().map(|net| NetEntry { net: *net, nomatch: true }))
                    .collect(),
            ),
            PeerSpec::Networks(nets) => {
                GroupDefinition::Networks(nets.iter().map(|net| NetEntry { net: *net, nomatch: false }).collect())
            }
            PeerSpec::Nodes(selector) => GroupDefinition::Nodes(selector.clone()),
            PeerSpec::Nothing | PeerSpec::Everything => continue,
        };
        push_group(definition, &mut ids, definitions);
    }
    PeerMatch::AnyOf(ids)
}

fn compile_ports(ports: Option<&[PortSpec]>, definitions: &mut Vec<GroupDefinition>) -> PortMatch {
    let Some(ports) = ports else { return PortMatch::Any };
    if ports.contains(&PortSpec::Everything) {
        return PortMatch::Any;
    }
    let mut entries = Vec::new();
    for port in ports {
        let entry = match port {
            PortSpec::Range { protocol, first, last } => {
                PortEntry::Range { protocol: *protocol, first: *first, last: *last }
            }
            PortSpec::Named { name, protocol } => PortEntry::Named(register(
                GroupDefinition::NamedPort { name: name.clone(), protocol: *protocol },
                definitions,
            )),
            PortSpec::Everything => continue,
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    PortMatch::AnyOf(entries)
}

/// Appends a group's id unless the rule already has it.
fn push_group(definition: GroupDefinition, ids: &mut Vec<GroupId>, definitions: &mut Vec<GroupDefinition>) {
    let id = register(definition, definitions);
    if !ids.contains(&id) {
        ids.push(id);
    }
}

/// Canonicalizes a definition and records it for the installer; returns its id.
fn register(definition: GroupDefinition, definitions: &mut Vec<GroupDefinition>) -> GroupId {
    let definition = definition.canonical();
    let id = definition.id();
    definitions.push(definition);
    id
}
