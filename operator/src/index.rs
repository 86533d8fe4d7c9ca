//! The index: kube-runtime watchers on Pods, Namespaces, Nodes, NetworkPolicies and
//! ClusterNetworkPolicies feed one [`Engine`].
//!
//! Objects are converted into the engine model as they arrive and never stored whole, so the
//! operator's memory is the engine's (labels, addresses, policies as written), not the API's
//! (managedFields, annotations, container specs). One object that cannot be converted is recorded
//! with its error and skipped; the watch goes on. What each event changed is left behind as dirty
//! nodes (for [`crate::distribute`]) and dirty policies (for [`crate::status`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use palisade_crds::ClusterNetworkPolicy;
use palisade_crds::convert::{self, ConvertError};
use palisade_engine::model::{PodKey, Policy, PolicyKind, PolicyRef, Revision};
use palisade_engine::{Delta, Engine, PolicyError};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::distribute::IndexEvent;
use crate::metrics::{KindLabel, Metrics};

/// The resources the index watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Pod,
    Namespace,
    Node,
    NetworkPolicy,
    ClusterNetworkPolicy,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Pod,
        ResourceKind::Namespace,
        ResourceKind::Node,
        ResourceKind::NetworkPolicy,
        ResourceKind::ClusterNetworkPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Pod => "Pod",
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Node => "Node",
            ResourceKind::NetworkPolicy => "NetworkPolicy",
            ResourceKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }
}

/// `namespace/name` of a watched object; `namespace` is `None` for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What the operator knows about one policy object, valid or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRecord {
    pub revision: Revision,
    /// Set when the object could not be converted into the engine model (then the engine does
    /// not hold it, and it enforces nothing).
    pub conversion_error: Option<String>,
}

/// The engine plus the bookkeeping that watch semantics need.
#[derive(Default)]
pub struct Index {
    engine: Engine,
    /// Keys held for each kind, so a re-list can remove what disappeared while the watch was down.
    known: BTreeMap<ResourceKind, BTreeSet<ObjectKey>>,
    /// Keys seen since the current re-list of each kind began (`Init` to `InitDone`).
    relisting: BTreeMap<ResourceKind, BTreeSet<ObjectKey>>,
    /// Kinds whose first list completed.
    synced: BTreeSet<ResourceKind>,
    policies: BTreeMap<PolicyRef, PolicyRecord>,
    /// Objects that could not be converted, with the error naming the object and the field.
    conversion_errors: BTreeMap<(ResourceKind, ObjectKey), String>,
    dirty_policies: BTreeSet<PolicyRef>,
}

impl Index {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// For the engine thread, and for reads that bring the engine's plan views up to date.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Every policy object currently known.
    pub fn policies(&self) -> &BTreeMap<PolicyRef, PolicyRecord> {
        &self.policies
    }

    pub fn policy(&self, reference: &PolicyRef) -> Option<&PolicyRecord> {
        self.policies.get(reference)
    }

    pub fn conversion_errors(&self) -> &BTreeMap<(ResourceKind, ObjectKey), String> {
        &self.conversion_errors
    }

    /// True once every watched kind has been listed completely at least once.
    pub fn is_synced(&self) -> bool {
        ResourceKind::ALL.iter().all(|kind| self.synced.contains(kind))
    }

    pub fn take_dirty_policies(&mut self) -> BTreeSet<PolicyRef> {
        std::mem::take(&mut self.dirty_policies)
    }

    /// Applies one watch event. Returns true when the engine may have changed.
    pub fn apply_event<K: Watched>(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.relisting.insert(K::KIND, BTreeSet::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(key) = K::key_of(&object) {
                    self.relisting.entry(K::KIND).or_default().insert(key);
                }
                self.upsert(&object);
                true
            }
            Event::InitDone => {
                let seen = self.relisting.remove(&K::KIND).unwrap_or_default();
                let gone: Vec<ObjectKey> = self
                    .known
                    .get(&K::KIND)
                    .map(|known| known.difference(&seen).cloned().collect())
                    .unwrap_or_default();
                for key in &gone {
                    self.remove(K::KIND, key);
                }
                self.synced.insert(K::KIND);
                true
            }
            Event::Apply(object) => {
                self.upsert(&object);
                true
            }
            Event::Delete(object) => {
                if let Some(key) = K::key_of(&object) {
                    self.remove(K::KIND, &key);
                }
                true
            }
        }
    }

    fn upsert<K: Watched>(&mut self, object: &K) {
        let Some(key) = K::key_of(object) else {
            tracing::warn!(kind = K::KIND.as_str(), "ignoring an object without a name");
            return;
        };
        self.known.entry(K::KIND).or_default().insert(key.clone());
        match object.index_into(self) {
            Ok(()) => {
                self.conversion_errors.remove(&(K::KIND, key));
            }
            Err(error) => {
                tracing::warn!(kind = K::KIND.as_str(), object = %key, %error, "object cannot be converted; skipped");
                self.conversion_errors.insert((K::KIND, key), error.to_string());
            }
        }
    }

    fn remove(&mut self, kind: ResourceKind, key: &ObjectKey) {
        if let Some(known) = self.known.get_mut(&kind) {
            known.remove(key);
        }
        self.conversion_errors.remove(&(kind, key.clone()));
        // What changed reaches agents through the engine's plan changes, taken after each batch.
        match kind {
            ResourceKind::Pod => match &key.namespace {
                Some(namespace) => {
                    self.engine.remove_pod(&PodKey { namespace: namespace.clone(), name: key.name.clone() })
                }
                None => Delta::default(),
            },
            ResourceKind::Namespace => self.engine.remove_namespace(&key.name),
            ResourceKind::Node => self.engine.remove_node(&key.name),
            ResourceKind::NetworkPolicy | ResourceKind::ClusterNetworkPolicy => {
                let reference = policy_ref(kind, key);
                self.policies.remove(&reference);
                self.dirty_policies.insert(reference.clone());
                self.engine.remove_policy(&reference)
            }
        };
    }

    /// Installs a policy, or records why it could not be converted and refuses it in the engine,
    /// which fails closed as for an invalid one: the last accepted version stays in force, or
    /// `stand_in` for a policy never accepted ([`Engine::refuse_policy`]).
    fn upsert_policy(
        &mut self,
        reference: PolicyRef,
        revision: Revision,
        converted: Result<Policy, ConvertError>,
        stand_in: impl FnOnce() -> Option<Policy>,
    ) -> Result<(), ConvertError> {
        self.dirty_policies.insert(reference.clone());
        match converted {
            Ok(policy) => {
                self.policies.insert(reference, PolicyRecord { revision, conversion_error: None });
                self.engine.upsert_policy(policy);
                Ok(())
            }
            Err(error) => {
                self.policies
                    .insert(reference.clone(), PolicyRecord { revision, conversion_error: Some(error.to_string()) });
                let refusal =
                    PolicyError { policy: reference.clone(), field: error.field(), message: error.to_string() };
                self.engine.refuse_policy(reference, vec![refusal], stand_in());
                Err(error)
            }
        }
    }
}

fn policy_ref(kind: ResourceKind, key: &ObjectKey) -> PolicyRef {
    PolicyRef {
        kind: if kind == ResourceKind::NetworkPolicy {
            PolicyKind::NetworkPolicy
        } else {
            PolicyKind::ClusterNetworkPolicy
        },
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

fn revision_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Revision {
    Revision { uid: meta.uid.clone().unwrap_or_default(), generation: meta.generation.unwrap_or(0) }
}

/// A watched kind: how to name it and how to put it into the index.
pub trait Watched: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static {
    const KIND: ResourceKind;

    fn key_of(object: &Self) -> Option<ObjectKey> {
        Some(ObjectKey { namespace: object.namespace(), name: object.meta().name.clone()? })
    }

    fn index_into(&self, index: &mut Index) -> Result<(), ConvertError>;
}

impl Watched for Pod {
    const KIND: ResourceKind = ResourceKind::Pod;

    fn index_into(&self, index: &mut Index) -> Result<(), ConvertError> {
        let pod = convert::pod(self)?;
        index.engine.upsert_pod(pod);
        Ok(())
    }
}

impl Watched for Namespace {
    const KIND: ResourceKind = ResourceKind::Namespace;

    fn index_into(&self, index: &mut Index) -> Result<(), ConvertError> {
        let namespace = convert::namespace(self)?;
        index.engine.upsert_namespace(namespace);
        Ok(())
    }
}

impl Watched for Node {
    const KIND: ResourceKind = ResourceKind::Node;

    fn index_into(&self, index: &mut Index) -> Result<(), ConvertError> {
        let node = convert::node(self)?;
        index.engine.upsert_node(node);
        Ok(())
    }
}

impl Watched for NetworkPolicy {
    const KIND: ResourceKind = ResourceKind::NetworkPolicy;

    fn index_into(&self, index: &mut Index) -> Result<(), ConvertError> {
        let Some(key) = Self::key_of(self) else { return Ok(()) };
        let converted = convert::network_policy(self).map(Policy::Network);
        // Conversion only fails on missing metadata, which leaves nothing to stand in for.
        index.upsert_policy(policy_ref(Self::KIND, &key), revision_of(&self.metadata), converted, || None)
    }
}

impl Watched for ClusterNetworkPolicy {
    const KIND: ResourceKind = ResourceKind::ClusterNetworkPolicy;

    fn index_into(&self, index: &mut Index) -> Result<(), ConvertError> {
        let Some(key) = Self::key_of(self) else { return Ok(()) };
        let converted = convert::cluster_network_policy(self).map(Policy::Cluster);
        let stand_in = || convert::cluster_network_policy_stand_in(self);
        index.upsert_policy(policy_ref(Self::KIND, &key), revision_of(&self.metadata), converted, stand_in)
    }
}

/// The index shared by the engine thread (the only writer, [`crate::distribute`]), the stream
/// server and the status writer. A plain mutex: nobody holds it across an await, and the engine
/// thread holds it for a bounded batch of events.
pub struct SharedIndex {
    index: Mutex<Index>,
    synced: watch::Sender<bool>,
}

impl SharedIndex {
    pub fn new() -> Arc<SharedIndex> {
        Arc::new(SharedIndex { index: Mutex::new(Index::default()), synced: watch::Sender::new(false) })
    }

    pub fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent engine (each operation completes or
        // panics before mutating), so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Becomes true once every kind has been listed.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    pub(crate) fn set_synced(&self, synced: bool) {
        self.synced.send_if_modified(|current| std::mem::replace(current, synced) != synced);
    }
}

/// Runs all five watchers until `shutdown`, handing every event to the engine thread. Watch
/// errors are retried forever, an expired resource version with a fresh list at once
/// ([`crate::watch::follow`]): the index must never stop following the cluster.
pub async fn run_watchers(
    client: Client,
    engine: mpsc::Sender<IndexEvent>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let pods = watch_kind(Api::<Pod>::all(client.clone()), engine.clone(), metrics.clone());
    let namespaces = watch_kind(Api::<Namespace>::all(client.clone()), engine.clone(), metrics.clone());
    let nodes = watch_kind(Api::<Node>::all(client.clone()), engine.clone(), metrics.clone());
    let network_policies = watch_kind(Api::<NetworkPolicy>::all(client.clone()), engine.clone(), metrics.clone());
    let cluster_policies = watch_kind(Api::<ClusterNetworkPolicy>::all(client), engine, metrics);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = async { tokio::join!(pods, namespaces, nodes, network_policies, cluster_policies) } => {}
    }
}

async fn watch_kind<K: Watched>(api: Api<K>, engine: mpsc::Sender<IndexEvent>, metrics: Metrics) {
    let mut events = std::pin::pin!(crate::watch::follow(K::KIND.as_str(), move || {
        watcher(api.clone(), watcher::Config::default()).boxed()
    }));
    while let Some(event) = events.next().await {
        let metrics = metrics.clone();
        let apply = Box::new(move |index: &mut Index| {
            index.apply_event(event);
            let errors = index.conversion_errors.keys().filter(|(kind, _)| *kind == K::KIND).count();
            metrics.events_processed.get_or_create(&KindLabel { kind: K::KIND.as_str() }).inc();
            metrics.conversion_errors.get_or_create(&KindLabel { kind: K::KIND.as_str() }).set(errors as i64);
        });
        if engine.send(IndexEvent { received: Instant::now(), apply }).is_err() {
            tracing::error!(kind = K::KIND.as_str(), "the engine thread is gone; this watcher stops");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns" },
            "spec": { "nodeName": node, "containers": [] },
            "status": { "podIPs": [{ "ip": "10.0.0.1" }] },
        }))
        .expect("pod")
    }

    fn policy(name: &str, generation: i64) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": generation },
            "spec": { "podSelector": {} },
        }))
        .expect("policy")
    }

    #[test]
    fn a_relist_removes_what_disappeared_while_the_watch_was_down() {
        let mut index = Index::default();
        index.apply_event(Event::<Pod>::Init);
        index.apply_event(Event::InitApply(pod("a", "n1")));
        index.apply_event(Event::InitApply(pod("b", "n2")));
        index.apply_event(Event::<Pod>::InitDone);
        assert_eq!(index.engine().cluster().pods.len(), 2);
        assert!(!index.is_synced(), "other kinds have not been listed yet");
        index.engine_mut().take_plan_changes();

        // The watch restarts; `b` was deleted meanwhile and its Delete event was never seen.
        index.apply_event(Event::<Pod>::Init);
        index.apply_event(Event::InitApply(pod("a", "n1")));
        index.apply_event(Event::<Pod>::InitDone);
        let pods: Vec<String> = index.engine().cluster().pods.keys().map(ToString::to_string).collect();
        assert_eq!(pods, ["ns/a"]);
        assert!(index.engine_mut().take_plan_changes().deltas.contains_key("n2"), "n2's plan must change");
    }

    #[test]
    fn policies_are_tracked_with_their_revision_and_removed_on_relist() {
        let mut index = Index::default();
        index.apply_event(Event::Apply(policy("p", 3)));
        let reference = PolicyRef { kind: PolicyKind::NetworkPolicy, namespace: Some("ns".into()), name: "p".into() };
        assert_eq!(index.policy(&reference).map(|r| r.revision.generation), Some(3));
        assert!(index.take_dirty_policies().contains(&reference));
        index.apply_event(Event::<NetworkPolicy>::Init);
        index.apply_event(Event::<NetworkPolicy>::InitDone);
        assert!(index.policy(&reference).is_none());
        assert!(index.take_dirty_policies().contains(&reference), "status must learn the policy is gone");
    }

    #[test]
    fn an_object_that_cannot_be_converted_is_recorded_and_the_rest_go_on() {
        let mut index = Index::default();
        let mut unknown_tier: ClusterNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": { "name": "future", "uid": "u", "generation": 1 },
            "spec": { "tier": "Developer", "priority": 1, "subject": { "namespaces": {} } },
        }))
        .expect("cnp");
        index.apply_event(Event::Apply(unknown_tier.clone()));
        index.apply_event(Event::Apply(pod("a", "n1")));
        let reference = PolicyRef { kind: PolicyKind::ClusterNetworkPolicy, namespace: None, name: "future".into() };
        let record = index.policy(&reference).expect("still known, for status");
        assert!(record.conversion_error.as_deref().is_some_and(|e| e.contains("spec.tier")), "{record:?}");
        assert_eq!(index.conversion_errors().len(), 1);
        assert_eq!(index.engine().cluster().pods.len(), 1);
        // Fixed: the error goes away.
        unknown_tier.spec.tier = palisade_crds::cnp::Tier::Admin;
        index.apply_event(Event::Apply(unknown_tier));
        assert!(index.conversion_errors().is_empty());
        assert_eq!(index.policy(&reference).and_then(|r| r.conversion_error.clone()), None);
    }
}
