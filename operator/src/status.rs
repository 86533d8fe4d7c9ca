//! Status: what each policy's state is, written by the Lease leader only.
//!
//! Per policy: Accepted (did the engine take it, and if not, which field is wrong), Realized
//! (of the nodes whose plan carries it, how many enforce its current uid and generation) and, on
//! PolicyStatus, Ready and the counts. NetworkPolicy has no status of its own, so its status lives
//! in a PolicyStatus of the same name, owned by it.
//!
//! Writes happen only on change: every component marks the policies it may have affected dirty,
//! a short periodic flush recomputes those and writes the ones whose status (compared without
//! timestamps) differs from what is stored. What is stored comes from watching ClusterNetworkPolicies
//! and PolicyStatuses (never from periodic LISTs): a status someone else changed, a PolicyStatus
//! deleted, or one whose NetworkPolicy is gone, is noticed at once and repaired or removed.
//! Events of this replica's own writes are recognized by their resource version and cost nothing.
//! A slow full pass compares every policy with that picture again, without reading anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use palisade_crds::conditions::{self, reasons};
use palisade_crds::policy_status::{FIRST_ERRORS_LIMIT, NodeError};
use palisade_crds::{ClusterNetworkPolicy, PolicyEnforcementStatus, PolicyStatus};
use palisade_engine::Enforcement;
use palisade_engine::model::{PolicyKind, PolicyRef};
use palisade_protocol::Backoff;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::distribute::SharedDistribution;
use crate::index::SharedIndex;
use crate::metrics::Metrics;
use crate::realization::RealizationTable;
use crate::writes::{DirtyPolicies, FIELD_MANAGER};

/// Longest condition message we write; the schema allows 32768, people read far less.
const MESSAGE_LIMIT: usize = 2000;
/// At most one Event per policy and reason in this interval.
const EVENT_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct StatusTimings {
    /// How often dirty policies are written (aggregates bursts into one write per policy).
    pub flush_interval: Duration,
    /// How often every policy is compared again with what is stored (the watches keep that
    /// picture current; this pass reads nothing).
    pub full_reconcile_interval: Duration,
}

/// A condition without its transition time: what "changed" is judged on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ConditionState {
    type_: String,
    status: String,
    reason: String,
    message: String,
    observed_generation: Option<i64>,
}

impl ConditionState {
    fn of(condition: &Condition) -> ConditionState {
        ConditionState {
            type_: condition.type_.clone(),
            status: condition.status.clone(),
            reason: condition.reason.clone(),
            message: condition.message.clone(),
            observed_generation: condition.observed_generation,
        }
    }
}

/// The status of one policy as computed (or as found stored), timestamps aside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Summary {
    conditions: Vec<ConditionState>,
    /// PolicyStatus only: (selectedPods, nodesRealized, nodesDesired) and first errors.
    counts: Option<(i32, i32, i32)>,
    first_errors: Vec<(String, String)>,
    /// PolicyStatus only: the NetworkPolicy UID in its spec (and owner reference).
    owner_uid: Option<String>,
}

/// What is stored for a policy: what this replica last wrote, or what the watch last showed.
#[derive(Clone, Debug, Default)]
struct Written {
    summary: Summary,
    conditions: Vec<Condition>,
    /// Resource versions this replica's own writes produced (the newest few): their watch events
    /// say nothing new, even when they arrive after a later write.
    own_versions: Vec<String>,
}

/// How many of its own resource versions are remembered per policy (a PolicyStatus takes two
/// writes: the object, then its status).
const OWN_VERSIONS: usize = 4;

/// A change to what is stored, from one of the two watches. Objects that name no policy (no
/// name or namespace) never become one.
enum StoredEvent {
    /// A relist of this kind begins.
    Relisting(PolicyKind),
    /// An object of the relist.
    Listed(StoredView),
    Changed(StoredView),
    Deleted(StoredView),
    /// The relist of this kind is complete.
    Relisted(PolicyKind),
}

impl StoredEvent {
    fn of<K>(kind: PolicyKind, event: watcher::Event<K>, view: fn(&K) -> Option<StoredView>) -> Option<StoredEvent> {
        match event {
            watcher::Event::Init => Some(StoredEvent::Relisting(kind)),
            watcher::Event::InitApply(object) => view(&object).map(StoredEvent::Listed),
            watcher::Event::Apply(object) => view(&object).map(StoredEvent::Changed),
            watcher::Event::Delete(object) => view(&object).map(StoredEvent::Deleted),
            watcher::Event::InitDone => Some(StoredEvent::Relisted(kind)),
        }
    }
}

/// What one watched object says about a policy's stored status.
struct StoredView {
    policy: PolicyRef,
    summary: Summary,
    conditions: Vec<Condition>,
    resource_version: Option<String>,
}

impl StoredView {
    fn of_cluster_policy(object: &ClusterNetworkPolicy) -> Option<StoredView> {
        let name = object.metadata.name.clone()?;
        let conditions: Vec<Condition> = object
            .status
            .iter()
            .flat_map(|status| status.conditions.iter())
            .filter(|c| {
                [conditions::ACCEPTED, conditions::REALIZED, conditions::CONFLICTING].contains(&c.type_.as_str())
            })
            .cloned()
            .collect();
        Some(StoredView {
            policy: PolicyRef { kind: PolicyKind::ClusterNetworkPolicy, namespace: None, name },
            summary: summarize_stored(&conditions, None),
            conditions,
            resource_version: object.metadata.resource_version.clone(),
        })
    }

    fn of_policy_status(object: &PolicyStatus) -> Option<StoredView> {
        let (name, namespace) = (object.metadata.name.clone()?, object.metadata.namespace.clone()?);
        let status = object.status.clone().unwrap_or_default();
        let mut summary = summarize_stored(&status.conditions, Some(&status));
        summary.owner_uid = Some(object.spec.policy_uid.clone());
        Some(StoredView {
            policy: PolicyRef { kind: PolicyKind::NetworkPolicy, namespace: Some(namespace), name },
            summary,
            conditions: status.conditions,
            resource_version: object.metadata.resource_version.clone(),
        })
    }
}

/// The two watches of stored status: which have listed everything once, and what the current
/// relist of each has shown so far (to drop what disappeared while a watch was down).
#[derive(Default)]
struct StoredSync {
    listed: BTreeSet<PolicyKind>,
    relisting: BTreeMap<PolicyKind, BTreeSet<PolicyRef>>,
}

/// The facts status is computed from, gathered under the locks and then released.
struct Facts {
    uid: String,
    generation: i64,
    conversion_error: Option<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
    /// What is in force: the newest version, the last accepted one, a stand-in, or nothing.
    enforcement: Enforcement,
    selected_pods: usize,
    nodes_desired: usize,
    nodes_realized: usize,
    failures: Vec<NodeError>,
    /// ClusterNetworkPolicies only: the policies in force it conflicts with, and why.
    conflicts: Vec<(PolicyRef, String)>,
}

pub struct StatusWriter {
    client: Client,
    index: Arc<SharedIndex>,
    distribution: Arc<SharedDistribution>,
    realization: Arc<RealizationTable>,
    dirty: Arc<DirtyPolicies>,
    metrics: Metrics,
    recorder: Recorder,
    written: BTreeMap<PolicyRef, Written>,
    events_sent: HashMap<(PolicyRef, &'static str), Instant>,
    /// Policies whose last write failed: when to try again, and the backoff that says so.
    retrying: HashMap<PolicyRef, (Instant, Backoff)>,
    stored: StoredSync,
    /// The conflict partners each ClusterNetworkPolicy was last written with: when one side's
    /// partners change, the other side is compared again too.
    partners: BTreeMap<PolicyRef, BTreeSet<PolicyRef>>,
}

/// Per-policy retry delays after a failed write.
const RETRY_INITIAL: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// No status write may take longer; a write that does is retried like a failed one.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl StatusWriter {
    pub fn new(
        client: Client,
        identity: &str,
        index: Arc<SharedIndex>,
        distribution: Arc<SharedDistribution>,
        realization: Arc<RealizationTable>,
        dirty: Arc<DirtyPolicies>,
        metrics: Metrics,
    ) -> StatusWriter {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.to_owned()) };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            index,
            distribution,
            realization,
            dirty,
            metrics,
            written: BTreeMap::new(),
            events_sent: HashMap::new(),
            retrying: HashMap::new(),
            stored: StoredSync::default(),
            partners: BTreeMap::new(),
        }
    }

    /// Writes status while `leader` is true, until `shutdown`.
    pub async fn run(mut self, mut leader: watch::Receiver<bool>, timings: StatusTimings, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(timings.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full: Option<Instant> = None;
        let mut ready = self.distribution.ready();
        let mut stored = std::pin::pin!(self.watch_stored());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = flush.tick() => {}
                changed = leader.changed() => if changed.is_err() { return },
                Some(event) = stored.next() => {
                    self.observe(event);
                    continue;
                }
            }
            let is_leader = *leader.borrow_and_update();
            // One line whenever this replica gains or loses the Lease (the metric says it too).
            if (self.metrics.leader.get() == 1) != is_leader {
                if is_leader {
                    tracing::info!("this replica holds the lease: it writes status");
                } else {
                    tracing::warn!("this replica lost the lease: it stops writing status");
                }
            }
            self.metrics.leader.set(i64::from(is_leader));
            if !is_leader {
                // Another replica writes now; the watches keep showing what it writes.
                self.retrying.clear();
                last_full = None;
                continue;
            }
            // Write only against a complete picture of what is stored.
            let listed = [PolicyKind::ClusterNetworkPolicy, PolicyKind::NetworkPolicy]
                .iter()
                .all(|kind| self.stored.listed.contains(kind));
            if !*ready.borrow_and_update() || !listed {
                continue;
            }
            if last_full.is_none_or(|at| at.elapsed() >= timings.full_reconcile_interval) {
                self.mark_everything();
                last_full = Some(Instant::now());
            }
            // A failed write only comes back after its backoff.
            for policy in self.dirty.take() {
                let waiting = self.retrying.get(&policy).is_some_and(|(at, _)| Instant::now() < *at);
                if shutdown.is_cancelled() || !*leader.borrow() || waiting {
                    self.dirty.mark([policy]);
                    continue;
                }
                let started = Instant::now();
                let outcome = bounded(self.write(&policy)).await;
                self.metrics.status_write_seconds.0.observe(started.elapsed().as_secs_f64());
                match outcome {
                    Ok(()) => {
                        if self.retrying.remove(&policy).is_some() {
                            tracing::info!(%policy, "status write recovered");
                        }
                    }
                    Err(error) => {
                        self.metrics.status_write_failures.inc();
                        let first = !self.retrying.contains_key(&policy);
                        let (at, backoff) = self
                            .retrying
                            .entry(policy.clone())
                            .or_insert_with(|| (Instant::now(), Backoff::new(RETRY_INITIAL, RETRY_MAX)));
                        let delay = backoff.next_delay();
                        *at = Instant::now() + delay;
                        if first {
                            tracing::warn!(%policy, %error, "status write failed; retrying with backoff");
                        } else {
                            tracing::debug!(%policy, %error, retry_in = ?delay, "status write still failing");
                        }
                        self.dirty.mark([policy]);
                    }
                }
            }
        }
    }

    /// Every policy the index knows and every one with stored status (a PolicyStatus whose
    /// NetworkPolicy is gone is removed by its write), marked to be compared again.
    fn mark_everything(&self) {
        let mut all: BTreeSet<PolicyRef> = self.written.keys().cloned().collect();
        all.extend(self.index.lock().policies().keys().cloned());
        self.dirty.mark(all);
    }

    /// Both watches of stored status as one stream; they follow the API server through outages
    /// like every other watch of the operator ([`crate::watch::follow`]).
    fn watch_stored(&self) -> impl futures::Stream<Item = StoredEvent> + Send + 'static {
        let cluster_policies = Api::<ClusterNetworkPolicy>::all(self.client.clone());
        let statuses = Api::<PolicyStatus>::all(self.client.clone());
        let cluster_policies = crate::watch::follow("ClusterNetworkPolicy status", move || {
            watcher(cluster_policies.clone(), watcher::Config::default()).boxed()
        })
        .filter_map(|event| {
            let kind = PolicyKind::ClusterNetworkPolicy;
            std::future::ready(StoredEvent::of(kind, event, StoredView::of_cluster_policy))
        });
        let statuses =
            crate::watch::follow("PolicyStatus", move || watcher(statuses.clone(), watcher::Config::default()).boxed())
                .filter_map(|event| {
                    std::future::ready(StoredEvent::of(PolicyKind::NetworkPolicy, event, StoredView::of_policy_status))
                });
        futures::stream::select(cluster_policies, statuses)
    }

    /// Takes in one change to what is stored. A change this replica did not write makes the
    /// policy dirty, so the next flush compares it with what it should be.
    fn observe(&mut self, event: StoredEvent) {
        match event {
            StoredEvent::Relisting(kind) => {
                self.stored.relisting.insert(kind, BTreeSet::new());
            }
            StoredEvent::Listed(view) => {
                self.stored.relisting.entry(view.policy.kind.clone()).or_default().insert(view.policy.clone());
                self.take_in(view);
            }
            StoredEvent::Changed(view) => self.take_in(view),
            StoredEvent::Deleted(view) => {
                self.written.remove(&view.policy);
                self.dirty.mark([view.policy]);
            }
            StoredEvent::Relisted(kind) => {
                let Some(seen) = self.stored.relisting.remove(&kind) else {
                    tracing::error!(?kind, "bug: a relist of stored status ended that never began");
                    return;
                };
                let gone: Vec<PolicyRef> = self
                    .written
                    .keys()
                    .filter(|policy| policy.kind == kind && !seen.contains(*policy))
                    .cloned()
                    .collect();
                for policy in &gone {
                    self.written.remove(policy);
                }
                self.dirty.mark(gone);
                self.stored.listed.insert(kind);
            }
        }
    }

    fn take_in(&mut self, view: StoredView) {
        if let Some(known) = self.written.get_mut(&view.policy) {
            let own = view.resource_version.as_ref().is_some_and(|version| known.own_versions.contains(version));
            if own || known.summary == view.summary {
                return;
            }
        }
        self.dirty.mark([view.policy.clone()]);
        self.written.insert(
            view.policy,
            Written { summary: view.summary, conditions: view.conditions, own_versions: Vec::new() },
        );
    }

    /// Brings one policy's stored status to what it should be, writing only on change.
    async fn write(&mut self, policy: &PolicyRef) -> Result<(), kube::Error> {
        let Some(facts) = self.facts(policy) else {
            self.track_partners(policy, &[]);
            return self.forget(policy).await;
        };
        self.track_partners(policy, &facts.conflicts);
        let desired = desired_conditions(policy, &facts);
        let is_network_policy = policy.kind == PolicyKind::NetworkPolicy;
        let counts = is_network_policy
            .then(|| (clamp(facts.selected_pods), clamp(facts.nodes_realized), clamp(facts.nodes_desired)));
        let first_errors: Vec<(String, String)> =
            facts.failures.iter().map(|e| (e.node.clone(), e.message.clone())).collect();
        let mut summary = Summary {
            conditions: desired.iter().map(ConditionState::of).collect(),
            counts,
            first_errors: if is_network_policy { first_errors } else { Vec::new() },
            owner_uid: is_network_policy.then(|| facts.uid.clone()),
        };
        summary.conditions.sort();
        let previous = self.written.get(policy).cloned().unwrap_or_default();
        if previous.summary == summary {
            return Ok(());
        }
        // Keep the transition time of every condition whose status did not flip.
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let conditions: Vec<Condition> = desired
            .into_iter()
            .map(|mut condition| {
                condition.last_transition_time = previous
                    .conditions
                    .iter()
                    .find(|old| old.type_ == condition.type_ && old.status == condition.status)
                    .map(|old| old.last_transition_time.clone())
                    .unwrap_or_else(|| now.clone());
                condition
            })
            .collect();
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let mut own_versions = previous.own_versions.clone();
        match policy.kind {
            PolicyKind::ClusterNetworkPolicy => {
                let body = json!({
                    "apiVersion": "policy.networking.k8s.io/v1alpha2",
                    "kind": "ClusterNetworkPolicy",
                    "metadata": { "name": policy.name },
                    "status": { "conditions": conditions },
                });
                let api = Api::<ClusterNetworkPolicy>::all(self.client.clone());
                match api.patch_status(&policy.name, &apply, &Patch::Apply(&body)).await {
                    Ok(object) => own_versions.extend(object.metadata.resource_version),
                    // Deleted meanwhile: its removal event will come through the index.
                    Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
                    Err(error) => return Err(error),
                }
                self.metrics.status_writes.inc();
            }
            PolicyKind::NetworkPolicy => {
                let namespace = policy.namespace.clone().unwrap_or_default();
                let api = Api::<PolicyStatus>::namespaced(self.client.clone(), &namespace);
                if previous.summary.owner_uid.as_deref() != Some(facts.uid.as_str()) {
                    let object = json!({
                        "apiVersion": "palisade.dev/v1alpha1",
                        "kind": "PolicyStatus",
                        "metadata": {
                            "name": policy.name,
                            "namespace": namespace,
                            "ownerReferences": [{
                                "apiVersion": "networking.k8s.io/v1",
                                "kind": "NetworkPolicy",
                                "name": policy.name,
                                "uid": facts.uid,
                                "controller": true,
                                "blockOwnerDeletion": false,
                            }],
                        },
                        "spec": { "policyName": policy.name, "policyUID": facts.uid },
                    });
                    let object = api.patch(&policy.name, &apply, &Patch::Apply(&object)).await?;
                    own_versions.extend(object.metadata.resource_version);
                    self.metrics.status_writes.inc();
                }
                let (selected_pods, nodes_realized, nodes_desired) = counts.unwrap_or_default();
                let status = PolicyEnforcementStatus {
                    observed_generation: Some(facts.generation),
                    selected_pods,
                    nodes_realized,
                    nodes_desired,
                    conditions: conditions.clone(),
                    first_errors: facts.failures.clone(),
                };
                let body = json!({
                    "apiVersion": "palisade.dev/v1alpha1",
                    "kind": "PolicyStatus",
                    "metadata": { "name": policy.name, "namespace": namespace },
                    "status": status,
                });
                let object = api.patch_status(&policy.name, &apply, &Patch::Apply(&body)).await?;
                own_versions.extend(object.metadata.resource_version);
                self.metrics.status_writes.inc();
                self.announce(policy, &facts, &previous.conditions, &conditions).await;
            }
        }
        let surplus = own_versions.len().saturating_sub(OWN_VERSIONS);
        own_versions.drain(..surplus);
        self.written.insert(policy.clone(), Written { summary, conditions, own_versions });
        Ok(())
    }

    /// The policy is gone: drop its PolicyStatus (there may be no garbage collector, and a
    /// status for a policy that does not exist misleads).
    async fn forget(&mut self, policy: &PolicyRef) -> Result<(), kube::Error> {
        let previous = self.written.remove(policy);
        if policy.kind != PolicyKind::NetworkPolicy || previous.is_none() {
            return Ok(());
        }
        let namespace = policy.namespace.clone().unwrap_or_default();
        let api = Api::<PolicyStatus>::namespaced(self.client.clone(), &namespace);
        match api.delete(&policy.name, &DeleteParams::default()).await {
            Ok(_) => {
                self.metrics.status_writes.inc();
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => {
                self.written.insert(policy.clone(), previous.unwrap_or_default());
                Err(error)
            }
        }
    }

    fn facts(&self, policy: &PolicyRef) -> Option<Facts> {
        let index = self.index.lock();
        let record = index.policy(policy)?.clone();
        let errors: Vec<String> =
            index.engine().errors_of(policy).iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        let warnings: Vec<String> = index
            .engine()
            .warnings()
            .into_iter()
            .filter(|w| &w.policy == policy)
            .map(|w| format!("{}: {}", w.field, w.message))
            .collect();
        let Some(enforcement) = index.engine().enforcement(policy) else {
            tracing::error!(%policy, "bug: a known policy the engine has never seen; status not written");
            return None;
        };
        let conflicts = conflicts_of(index.engine(), policy);
        // Local pods per node: where the policy is enforced.
        let span = index.engine().span(policy);
        drop(index);
        let enforced_revision = enforcement.revision().cloned();
        let (nodes_realized, failures) = self.realization.with(|table| {
            let mut realized = 0;
            let mut failures = Vec::new();
            for node in span.keys() {
                let Some(entry) = table.get(node) else { continue };
                if enforced_revision.is_some() && entry.realized.get(policy) == enforced_revision.as_ref() {
                    realized += 1;
                } else if let Some(error) = &entry.failure
                    && failures.len() < FIRST_ERRORS_LIMIT
                {
                    failures.push(NodeError { node: node.clone(), message: error.clone() });
                }
            }
            (realized, failures)
        });
        Some(Facts {
            uid: record.revision.uid.clone(),
            generation: record.revision.generation,
            conversion_error: record.conversion_error.clone(),
            errors,
            warnings,
            enforcement,
            selected_pods: span.values().sum(),
            nodes_desired: span.len(),
            nodes_realized,
            failures,
            conflicts,
        })
    }

    /// Records a policy's conflict partners; the policies that join or leave them are compared
    /// again, so both sides of a conflict say so (and stop saying so) together.
    fn track_partners(&mut self, policy: &PolicyRef, conflicts: &[(PolicyRef, String)]) {
        let now: BTreeSet<PolicyRef> = conflicts.iter().map(|(other, _)| other.clone()).collect();
        let before = self.partners.get(policy).cloned().unwrap_or_default();
        let mut recheck: BTreeSet<PolicyRef> = now.symmetric_difference(&before).cloned().collect();
        recheck.extend(
            self.partners
                .iter()
                .filter(|(other, theirs)| theirs.contains(policy) != now.contains(*other))
                .map(|(other, _)| other.clone()),
        );
        recheck.remove(policy);
        if now.is_empty() {
            self.partners.remove(policy);
        } else {
            self.partners.insert(policy.clone(), now);
        }
        if !recheck.is_empty() {
            self.dirty.mark(recheck);
        }
    }

    /// Events on a NetworkPolicy when it becomes invalid or realized, at most one per policy and
    /// reason a minute.
    async fn announce(&mut self, policy: &PolicyRef, facts: &Facts, before: &[Condition], after: &[Condition]) {
        let status_of = |conditions: &[Condition], type_: &str| {
            conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
        };
        let mut events = Vec::new();
        if status_of(after, conditions::ACCEPTED).as_deref() == Some(conditions::STATUS_FALSE)
            && status_of(before, conditions::ACCEPTED).as_deref() != Some(conditions::STATUS_FALSE)
        {
            let message = after.iter().find(|c| c.type_ == conditions::ACCEPTED).map(|c| c.message.clone());
            events.push((reasons::INVALID, EventType::Warning, message));
        }
        if status_of(after, conditions::REALIZED).as_deref() == Some(conditions::STATUS_TRUE)
            && status_of(before, conditions::REALIZED).as_deref() != Some(conditions::STATUS_TRUE)
        {
            let message = after.iter().find(|c| c.type_ == conditions::REALIZED).map(|c| c.message.clone());
            events.push((reasons::REALIZED, EventType::Normal, message));
        }
        for (reason, type_, note) in events {
            let key = (policy.clone(), reason);
            if self.events_sent.get(&key).is_some_and(|at| at.elapsed() < EVENT_INTERVAL) {
                continue;
            }
            self.events_sent.retain(|_, at| at.elapsed() < EVENT_INTERVAL);
            self.events_sent.insert(key, Instant::now());
            let reference = ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("NetworkPolicy".into()),
                name: Some(policy.name.clone()),
                namespace: policy.namespace.clone(),
                uid: Some(facts.uid.clone()),
                ..ObjectReference::default()
            };
            let event = Event { type_, reason: reason.into(), note, action: "Enforce".into(), secondary: None };
            if let Err(error) = self.recorder.publish(&event, &reference).await {
                tracing::debug!(%policy, %error, "could not record an event");
            }
        }
    }
}

/// The ClusterNetworkPolicies in force that tie with `policy` (same tier and priority) and
/// decide some traffic differently, with the analysis's explanation. Only accepted versions
/// take part: a refused policy is reported as such, and its stand-in only denies.
fn conflicts_of(engine: &palisade_engine::Engine, policy: &PolicyRef) -> Vec<(PolicyRef, String)> {
    if policy.kind != PolicyKind::ClusterNetworkPolicy {
        return Vec::new();
    }
    let Some(own) = engine.accepted_policies().find(|valid| &valid.reference == policy) else { return Vec::new() };
    engine
        .accepted_policies()
        .filter(|other| other.reference != own.reference && other.layer == own.layer && other.priority == own.priority)
        .filter_map(|other| {
            let finding = palisade_engine::analysis::conflict_between(own, other)?;
            Some((other.reference.clone(), finding.message))
        })
        .collect()
}

/// Runs one API write within [`WRITE_TIMEOUT`]; a write that takes longer counts as failed.
async fn bounded(write: impl std::future::Future<Output = Result<(), kube::Error>>) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(_) => Err(format!("timed out after {WRITE_TIMEOUT:?}")),
    }
}

/// Accepted, Realized and (PolicyStatus only) Ready, with placeholder transition times.
fn desired_conditions(policy: &PolicyRef, facts: &Facts) -> Vec<Condition> {
    let generation = Some(facts.generation);
    let placeholder = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        conditions::condition(type_, status, reason, truncate(message), generation, placeholder.clone())
    };
    let accepted = if let Some(error) = &facts.conversion_error {
        condition(conditions::ACCEPTED, false, reasons::UNSUPPORTED, error.clone())
    } else if !facts.errors.is_empty() {
        condition(conditions::ACCEPTED, false, reasons::INVALID, facts.errors.join("; "))
    } else if !facts.warnings.is_empty() {
        condition(conditions::ACCEPTED, true, reasons::PARTIALLY_SUPPORTED, facts.warnings.join("; "))
    } else {
        condition(conditions::ACCEPTED, true, reasons::ACCEPTED, "the policy is valid and compiled".into())
    };
    let accepted_ok = accepted.status == conditions::STATUS_TRUE;
    // A refused version never lifts what is in force: say which rules the nodes enforce.
    let in_force = match &facts.enforcement {
        Enforcement::Current(_) => String::new(),
        Enforcement::LastAccepted(revision) => {
            format!("generation {} is refused; enforcing generation {}, the last accepted: ", facts.generation, revision.generation)
        }
        Enforcement::FailClosed(_) => {
            "refused and never accepted; enforcing its fail-closed stand-in (Deny for its subjects where it has Deny or Pass rules, isolation for a NetworkPolicy): ".to_owned()
        }
        Enforcement::Nothing => String::new(),
    };
    let (m, n) = (facts.nodes_desired, facts.nodes_realized);
    let realized = if facts.enforcement == Enforcement::Nothing {
        condition(
            conditions::REALIZED,
            false,
            reasons::INVALID,
            "not enforced: the policy is not accepted and no fail-closed stand-in could be read".into(),
        )
    } else if m == 0 {
        condition(
            conditions::REALIZED,
            accepted_ok,
            if accepted_ok { reasons::NO_SELECTED_PODS } else { reasons::INVALID },
            format!("{in_force}no scheduled pod is selected; nothing to enforce"),
        )
    } else if !accepted_ok {
        condition(conditions::REALIZED, false, reasons::INVALID, format!("{in_force}realized on {n} of {m} nodes"))
    } else if n == m {
        condition(conditions::REALIZED, true, reasons::REALIZED, format!("realized on {n} of {m} nodes"))
    } else if !facts.failures.is_empty() {
        let nodes: Vec<&str> = facts.failures.iter().map(|f| f.node.as_str()).collect();
        condition(
            conditions::REALIZED,
            false,
            reasons::FAILED,
            format!("realized on {n} of {m} nodes; failed on {}", nodes.join(", ")),
        )
    } else {
        condition(conditions::REALIZED, false, reasons::PENDING, format!("realized on {n} of {m} nodes"))
    };
    let mut all = vec![accepted, realized];
    if policy.kind == PolicyKind::ClusterNetworkPolicy {
        all.push(if facts.conflicts.is_empty() {
            condition(
                conditions::CONFLICTING,
                false,
                reasons::NO_CONFLICT,
                "no policy in force at its tier and priority decides any traffic differently".into(),
            )
        } else {
            let messages: Vec<&str> = facts.conflicts.iter().map(|(_, message)| message.as_str()).collect();
            condition(conditions::CONFLICTING, true, reasons::CONFLICTING, messages.join("; "))
        });
    }
    if policy.kind == PolicyKind::NetworkPolicy {
        let ready = all.iter().all(|c| c.status == conditions::STATUS_TRUE);
        // Ready repeats the reason of the first condition that is not True.
        let (reason, message) = if ready {
            (reasons::REALIZED.to_owned(), "accepted and realized".to_owned())
        } else if !accepted_ok {
            (all[0].reason.clone(), "the policy is not accepted".to_owned())
        } else {
            (all[1].reason.clone(), all[1].message.clone())
        };
        all.push(condition(conditions::READY, ready, &reason, message));
    }
    all
}

fn summarize_stored(stored: &[Condition], status: Option<&PolicyEnforcementStatus>) -> Summary {
    let mut conditions: Vec<ConditionState> = stored.iter().map(ConditionState::of).collect();
    conditions.sort();
    Summary {
        conditions,
        counts: status.map(|s| (s.selected_pods, s.nodes_realized, s.nodes_desired)),
        first_errors: status
            .map(|s| s.first_errors.iter().map(|e| (e.node.clone(), e.message.clone())).collect())
            .unwrap_or_default(),
        owner_uid: None,
    }
}

fn clamp(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

fn truncate(mut message: String) -> String {
    if message.len() > MESSAGE_LIMIT {
        let mut cut = MESSAGE_LIMIT;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …");
    }
    message
}
