//! What the webhook knows of the cluster: every policy, and the namespaces, pods and nodes the
//! analysis compares them with, in the engine's small model (labels, addresses, named ports), so
//! memory stays proportional to what the analysis reads, not to the API objects.
//!
//! Filled by watchers that follow the API server through outages
//! ([`palisade_operator::watch::follow`]). A re-list replaces a kind's objects wholesale, so
//! whatever was deleted while a watch was down disappears. Until every kind has been listed the
//! webhook does not answer (it cannot compare a policy with ones it has not seen; the API server
//! then applies the webhook's `failurePolicy`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{RwLock, RwLockReadGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use palisade_crds::{ClusterNetworkPolicy, convert};
use palisade_engine::model::{self, Cluster, Policy, PolicyKind, PolicyRef, Tier};

/// The objects the analysis reads.
#[derive(Clone, Debug, Default)]
pub struct Contents {
    policies: BTreeMap<PolicyRef, Policy>,
    /// The policies a new policy can be compared with, by what they share with it: a request is
    /// judged against a handful of policies, not all of them.
    neighbours: BTreeMap<Neighbourhood, BTreeSet<PolicyRef>>,
    pub cluster: Cluster,
}

/// What makes two policies comparable: a tie (one tier and priority), the Admin tier (which can
/// override a NetworkPolicy), one namespace (NetworkPolicies side by side).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Neighbourhood {
    Tie(Tier, i32),
    AdminTier,
    Namespace(String),
}

impl Neighbourhood {
    /// Where a policy lives.
    fn homes(policy: &Policy) -> Vec<Neighbourhood> {
        match policy {
            Policy::Cluster(cnp) => {
                let mut homes = vec![Neighbourhood::Tie(cnp.tier, cnp.priority)];
                if cnp.tier == Tier::Admin {
                    homes.push(Neighbourhood::AdminTier);
                }
                homes
            }
            Policy::Network(np) => vec![Neighbourhood::Namespace(np.namespace.clone())],
        }
    }

    /// Where the policies a candidate is compared with live (what `analysis::admission` reads).
    fn visited_by(candidate: &Policy) -> Vec<Neighbourhood> {
        match candidate {
            Policy::Cluster(cnp) => vec![Neighbourhood::Tie(cnp.tier, cnp.priority)],
            Policy::Network(np) => vec![Neighbourhood::AdminTier, Neighbourhood::Namespace(np.namespace.clone())],
        }
    }
}

impl Contents {
    pub fn insert_policy(&mut self, policy: Policy) {
        let reference = policy.reference();
        self.remove_policy(&reference);
        for home in Neighbourhood::homes(&policy) {
            self.neighbours.entry(home).or_default().insert(reference.clone());
        }
        self.policies.insert(reference, policy);
    }

    pub fn remove_policy(&mut self, reference: &PolicyRef) {
        let Some(old) = self.policies.remove(reference) else { return };
        for home in Neighbourhood::homes(&old) {
            if let Some(members) = self.neighbours.get_mut(&home) {
                members.remove(reference);
                if members.is_empty() {
                    self.neighbours.remove(&home);
                }
            }
        }
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// The policies `candidate` may be compared with; a superset of what the analysis reads.
    pub fn neighbours_of<'a>(&'a self, candidate: &Policy) -> impl Iterator<Item = &'a Policy> + 'a {
        let homes = Neighbourhood::visited_by(candidate);
        let members: BTreeSet<&PolicyRef> =
            homes.iter().filter_map(|home| self.neighbours.get(home)).flatten().collect();
        members.into_iter().filter_map(|reference| self.policies.get(reference))
    }
}

/// One object of a watched kind, converted.
enum Item {
    Policy(Policy),
    Namespace(model::Namespace),
    Pod(model::Pod),
    Node(model::Node),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    NetworkPolicies,
    ClusterNetworkPolicies,
    Namespaces,
    Pods,
    Nodes,
}

const KINDS: usize = 5;

#[derive(Default)]
struct State {
    contents: Contents,
    /// Objects seen since the current re-list of each kind began.
    relisting: BTreeMap<Kind, Vec<Item>>,
    listed: [bool; KINDS],
}

#[derive(Default)]
pub struct Cache {
    state: RwLock<State>,
}

impl Cache {
    /// A cache that holds `contents` and counts as listed: for judging without an API server
    /// (benchmarks, tests of the server alone).
    pub fn preloaded(contents: Contents) -> Cache {
        Cache { state: RwLock::new(State { contents, relisting: BTreeMap::new(), listed: [true; KINDS] }) }
    }

    pub fn is_synced(&self) -> bool {
        self.read_state().listed.iter().all(|listed| *listed)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // Every update completes before it could panic, so a poisoned lock still holds a consistent state.
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `read` on the contents under the read lock (the analysis is synchronous and short).
    pub fn read<T>(&self, read: impl FnOnce(&Contents) -> T) -> T {
        read(&self.read_state().contents)
    }

    /// Object counts by kind, for metrics.
    pub fn sizes(&self) -> [(&'static str, usize); 4] {
        let state = self.read_state();
        let contents = &state.contents;
        [
            ("policies", contents.policy_count()),
            ("namespaces", contents.cluster.namespaces.len()),
            ("pods", contents.cluster.pods.len()),
            ("nodes", contents.cluster.nodes.len()),
        ]
    }

    fn apply<K>(&self, kind: Kind, event: Event<K>, convert: fn(&K) -> Option<Item>, key: fn(&K) -> Option<String>) {
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            Event::Init => {
                state.relisting.insert(kind, Vec::new());
            }
            Event::InitApply(object) => {
                if let Some(item) = convert(&object) {
                    state.relisting.entry(kind).or_default().push(item);
                }
            }
            Event::InitDone => {
                let items = state.relisting.remove(&kind).unwrap_or_default();
                replace_kind(&mut state.contents, kind, items);
                state.listed[kind as usize] = true;
            }
            Event::Apply(object) => match convert(&object) {
                Some(item) => insert(&mut state.contents, item),
                // It no longer converts: the analysis cannot read it, so it must not hold the old version.
                None => remove(&mut state.contents, kind, key(&object)),
            },
            Event::Delete(object) => remove(&mut state.contents, kind, key(&object)),
        }
    }
}

fn insert(contents: &mut Contents, item: Item) {
    match item {
        Item::Policy(policy) => contents.insert_policy(policy),
        Item::Namespace(namespace) => {
            contents.cluster.namespaces.insert(namespace.name.clone(), namespace);
        }
        Item::Pod(pod) => {
            contents.cluster.pods.insert(pod.key.clone(), pod);
        }
        Item::Node(node) => {
            contents.cluster.nodes.insert(node.name.clone(), node);
        }
    }
}

fn policy_kind(kind: Kind) -> Option<PolicyKind> {
    match kind {
        Kind::NetworkPolicies => Some(PolicyKind::NetworkPolicy),
        Kind::ClusterNetworkPolicies => Some(PolicyKind::ClusterNetworkPolicy),
        _ => None,
    }
}

fn replace_kind(contents: &mut Contents, kind: Kind, items: Vec<Item>) {
    match kind {
        Kind::NetworkPolicies | Kind::ClusterNetworkPolicies => {
            let wanted = policy_kind(kind);
            let gone: Vec<PolicyRef> = contents
                .policies
                .keys()
                .filter(|reference| Some(&reference.kind) == wanted.as_ref())
                .cloned()
                .collect();
            for reference in &gone {
                contents.remove_policy(reference);
            }
        }
        Kind::Namespaces => contents.cluster.namespaces.clear(),
        Kind::Pods => contents.cluster.pods.clear(),
        Kind::Nodes => contents.cluster.nodes.clear(),
    }
    for item in items {
        insert(contents, item);
    }
}

/// Keys are `namespace/name` for namespaced kinds, `name` otherwise.
fn remove(contents: &mut Contents, kind: Kind, key: Option<String>) {
    let Some(key) = key else { return };
    match kind {
        Kind::NetworkPolicies | Kind::ClusterNetworkPolicies => {
            let (namespace, name) = match key.split_once('/') {
                Some((namespace, name)) => (Some(namespace.to_string()), name.to_string()),
                None => (None, key),
            };
            if let Some(kind) = policy_kind(kind) {
                contents.remove_policy(&PolicyRef { kind, namespace, name });
            }
        }
        Kind::Namespaces => {
            contents.cluster.namespaces.remove(&key);
        }
        Kind::Pods => {
            if let Ok(pod) = model::PodKey::try_from(key) {
                contents.cluster.pods.remove(&pod);
            }
        }
        Kind::Nodes => {
            contents.cluster.nodes.remove(&key);
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    let name = meta.name.clone()?;
    Some(match &meta.namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name,
    })
}

/// Follows the five kinds into `cache` until the returned future is dropped.
pub async fn run_watchers(client: Client, cache: std::sync::Arc<Cache>) {
    macro_rules! follow {
        ($type:ty, $kind:expr, $what:literal, $convert:expr) => {{
            let api = Api::<$type>::all(client.clone());
            let cache = cache.clone();
            async move {
                let mut events = std::pin::pin!(palisade_operator::watch::follow($what, move || {
                    watcher(api.clone(), watcher::Config::default()).boxed()
                }));
                while let Some(event) = events.next().await {
                    cache.apply($kind, event, $convert, |object: &$type| key_of(&object.metadata));
                }
            }
        }};
    }
    let network_policies = follow!(NetworkPolicy, Kind::NetworkPolicies, "networkpolicies", |np| {
        convert::network_policy(np).ok().map(|np| Item::Policy(Policy::Network(np)))
    });
    let cluster_policies =
        follow!(ClusterNetworkPolicy, Kind::ClusterNetworkPolicies, "clusternetworkpolicies", |cnp| {
            convert::cluster_network_policy(cnp).ok().map(|cnp| Item::Policy(Policy::Cluster(cnp)))
        });
    let namespaces =
        follow!(Namespace, Kind::Namespaces, "namespaces", |ns| convert::namespace(ns).ok().map(Item::Namespace));
    let pods = follow!(Pod, Kind::Pods, "pods", |pod| convert::pod(pod).ok().map(Item::Pod));
    let nodes = follow!(Node, Kind::Nodes, "nodes", |node| convert::node(node).ok().map(Item::Node));
    tokio::join!(network_policies, cluster_policies, namespaces, pods, nodes);
}
