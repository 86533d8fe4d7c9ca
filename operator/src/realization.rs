//! The realization table: what each node's agent last said it enforces, shared by all replicas
//! through the API server.
//!
//! Every replica serves agents, but only the Lease leader writes status, so a report must reach
//! the leader whatever replica the agent talks to. Whichever replica receives a node's report
//! records it in its own table at once (the fast path) and, only when the node's realization
//! changed, server-side-applies it to the ConfigMap `palisade-realization-<node>` in the
//! operator's own namespace (labelled `palisade.dev/realization: "true"`). Every replica watches
//! those ConfigMaps and feeds them into its table, so the ConfigMaps alone are enough for the
//! leader to count every node. Writes are one small object per node whose realization changed,
//! never per policy; the content is plan-independent (policies with their uid and generation,
//! and the last error), never a connection's plan version.
//!
//! A `Failed` report does not erase what the node realized before: the agent keeps the previous
//! rules in force, so those policies are still realized there. The failure is kept beside them
//! until the next successful report. Likewise a disconnected agent keeps enforcing its last plan
//! (fail static), so its last realization stays valid and is not cleared on disconnect. The
//! Lease leader deletes a node's ConfigMap once the Node is gone.
//!
//! RBAC, in the operator's namespace: `configmaps` get, list, watch, create, patch, delete (the
//! Lease needs `leases` get, create, patch, update, delete there too).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use palisade_engine::model::{PolicyRef, Revision};
use palisade_protocol::RealizedPolicy;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::index::SharedIndex;
use crate::writes::{DirtyPolicies, FIELD_MANAGER};

/// The label every realization ConfigMap carries (value `"true"`).
pub const LABEL: &str = "palisade.dev/realization";
/// Name prefix of the realization ConfigMaps; the node name follows.
pub const CONFIG_MAP_PREFIX: &str = "palisade-realization-";
const DATA_NODE: &str = "node";
const DATA_REALIZATION: &str = "realization";
/// A ConfigMap of a node the index does not know is deleted only once it is this old, so a
/// report that outruns our Node watch is not thrown away.
const ORPHAN_GRACE: Duration = Duration::from_secs(30);
const ORPHAN_CHECK: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRealization {
    /// The policies the kernel enforces, with the revision it enforces.
    pub realized: BTreeMap<PolicyRef, Revision>,
    /// The last failure since the last success.
    pub failure: Option<String>,
}

/// How a [`NodeRealization`] is stored in its ConfigMap.
#[derive(Serialize, Deserialize)]
struct Stored {
    realized: Vec<RealizedPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl NodeRealization {
    fn to_json(&self) -> String {
        let stored = Stored {
            realized: self
                .realized
                .iter()
                .map(|(policy, revision)| RealizedPolicy { policy: policy.clone(), revision: revision.clone() })
                .collect(),
            error: self.failure.clone(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    fn from_json(text: &str) -> Result<NodeRealization, serde_json::Error> {
        let stored: Stored = serde_json::from_str(text)?;
        Ok(NodeRealization {
            realized: stored.realized.into_iter().map(|p| (p.policy, p.revision)).collect(),
            failure: stored.error,
        })
    }
}

#[derive(Default)]
pub struct RealizationTable {
    nodes: Mutex<BTreeMap<String, NodeRealization>>,
}

impl RealizationTable {
    /// Records a successful report. Returns the policies whose realization on `node` changed.
    pub fn realized(&self, node: &str, policies: Vec<RealizedPolicy>) -> BTreeSet<PolicyRef> {
        let realized = policies.into_iter().map(|p| (p.policy, p.revision)).collect();
        self.set(node, NodeRealization { realized, failure: None })
    }

    /// Records a failed apply (what was realized stays). Returns the policies to re-examine
    /// (those the node enforces).
    pub fn failed(&self, node: &str, error: String) -> BTreeSet<PolicyRef> {
        let mut entry = self.get(node).unwrap_or_default();
        entry.failure = Some(error);
        let realized: BTreeSet<PolicyRef> = entry.realized.keys().cloned().collect();
        let mut changed = self.set(node, entry);
        changed.extend(realized);
        changed
    }

    /// Replaces `node`'s realization. Returns the policies whose realization or failure on
    /// `node` changed.
    pub fn set(&self, node: &str, new: NodeRealization) -> BTreeSet<PolicyRef> {
        let mut nodes = self.lock();
        let entry = nodes.entry(node.to_owned()).or_default();
        let mut changed: BTreeSet<PolicyRef> = BTreeSet::new();
        for (policy, revision) in entry.realized.iter().chain(new.realized.iter()) {
            if entry.realized.get(policy) != Some(revision) || new.realized.get(policy) != Some(revision) {
                changed.insert(policy.clone());
            }
        }
        if entry.failure != new.failure {
            changed.extend(entry.realized.keys().chain(new.realized.keys()).cloned());
        }
        *entry = new;
        changed
    }

    /// Forgets `node`. Returns the policies it realized.
    pub fn remove(&self, node: &str) -> BTreeSet<PolicyRef> {
        self.lock().remove(node).map(|entry| entry.realized.into_keys().collect()).unwrap_or_default()
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

/// Realizations reported to this replica, waiting to be written to their ConfigMaps (only the
/// newest per node is kept).
#[derive(Default)]
pub struct Outbox {
    pending: Mutex<BTreeMap<String, NodeRealization>>,
    notify: Notify,
}

impl Outbox {
    pub fn publish(&self, node: &str, realization: NodeRealization) {
        self.lock().insert(node.to_owned(), realization);
        self.notify.notify_one();
    }

    fn take(&self) -> BTreeMap<String, NodeRealization> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts a failed write back unless a newer report arrived meanwhile.
    fn retry(&self, node: String, realization: NodeRealization) {
        self.lock().entry(node).or_insert(realization);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeRealization>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn config_map_name(node: &str) -> String {
    format!("{CONFIG_MAP_PREFIX}{node}")
}

/// Everything [`run_sharing`] needs.
pub struct Sharing {
    pub client: Client,
    /// The operator's own namespace (the Lease's).
    pub namespace: String,
    pub table: Arc<RealizationTable>,
    pub outbox: Arc<Outbox>,
    pub dirty: Arc<DirtyPolicies>,
    pub index: Arc<SharedIndex>,
    pub is_leader: watch::Receiver<bool>,
    pub retry_interval: Duration,
}

/// Writes this replica's reports to the ConfigMaps, feeds every ConfigMap into the table, and
/// (leader only) deletes the ConfigMaps of deleted Nodes, until `shutdown`.
pub async fn run_sharing(sharing: Sharing, shutdown: CancellationToken) {
    let Sharing { client, namespace, table, outbox, dirty, index, is_leader, retry_interval } = sharing;
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let watched = api.clone();
    let mut events = std::pin::pin!(crate::watch::follow("realization ConfigMaps", move || {
        watcher(watched.clone(), watcher::Config::default().labels(&format!("{LABEL}=true"))).boxed()
    }));
    // The nodes that have a ConfigMap (from the watch), with its creation time; and what this
    // replica last wrote that the watch has not contradicted: a report equal to it needs no write.
    let mut seen: BTreeMap<String, Option<k8s_openapi::jiff::Timestamp>> = BTreeMap::new();
    let mut relisted: Option<BTreeSet<String>> = None;
    let mut written: BTreeMap<String, NodeRealization> = BTreeMap::new();
    let mut retry = tokio::time::interval(retry_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut orphans = tokio::time::interval(ORPHAN_CHECK);
    orphans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Marks what a change of `node`'s realization may affect: what it realized before and after,
    // and on a failure change every policy of its plan (they may now show the error).
    let apply = |node: &str, new: Option<NodeRealization>| {
        let before = table.get(node);
        let failure_changed =
            before.as_ref().and_then(|b| b.failure.as_ref()) != new.as_ref().and_then(|n| n.failure.as_ref());
        let mut changed = match new {
            Some(new) => table.set(node, new),
            None => table.remove(node),
        };
        if failure_changed {
            changed.extend(index.lock().engine().policies_on(node));
        }
        dirty.mark(changed);
    };

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                None => return,
                Some(Event::Init) => relisted = Some(BTreeSet::new()),
                Some(Event::InitApply(object) | Event::Apply(object)) => {
                    let Some((node, realization)) = parse(&object) else { continue };
                    if let Some(listed) = relisted.as_mut() {
                        listed.insert(node.clone());
                    }
                    if written.get(&node) != Some(&realization) {
                        written.remove(&node);
                    }
                    apply(&node, Some(realization));
                    seen.insert(node, object.metadata.creation_timestamp.as_ref().map(|t| t.0));
                }
                Some(Event::Delete(object)) => {
                    let Some((node, _)) = parse(&object) else { continue };
                    written.remove(&node);
                    if seen.remove(&node).is_some() {
                        apply(&node, None);
                    }
                }
                Some(Event::InitDone) => {
                    // Deleted while the watch was down.
                    let listed = relisted.take().unwrap_or_default();
                    let gone: Vec<String> = seen.keys().filter(|node| !listed.contains(*node)).cloned().collect();
                    for node in gone {
                        seen.remove(&node);
                        written.remove(&node);
                        apply(&node, None);
                    }
                }
            },
            _ = outbox.notify.notified() => write_pending(&api, &outbox, &mut written).await,
            _ = retry.tick() => write_pending(&api, &outbox, &mut written).await,
            _ = orphans.tick() => {
                if !*is_leader.borrow() || !*index.synced().borrow() {
                    continue;
                }
                let known: BTreeSet<String> = index.lock().engine().cluster().nodes.keys().cloned().collect();
                let now = k8s_openapi::jiff::Timestamp::now();
                for (node, created) in &seen {
                    let old_enough = created.is_some_and(|at| now.duration_since(at).unsigned_abs() >= ORPHAN_GRACE);
                    if known.contains(node) || !old_enough {
                        continue;
                    }
                    match api.delete(&config_map_name(node), &DeleteParams::default()).await {
                        Ok(_) => tracing::info!(%node, "deleted the realization of a deleted node"),
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(error) => tracing::warn!(%node, %error, "cannot delete a deleted node's realization"),
                    }
                }
            }
        }
    }
}

/// Writes every pending realization that differs from what this replica last wrote.
async fn write_pending(api: &Api<ConfigMap>, outbox: &Outbox, written: &mut BTreeMap<String, NodeRealization>) {
    for (node, realization) in outbox.take() {
        if written.get(&node) == Some(&realization) {
            continue;
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": config_map_name(&node), "labels": { LABEL: "true" } },
            "data": { DATA_NODE: node, DATA_REALIZATION: realization.to_json() },
        });
        match api.patch(&config_map_name(&node), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await
        {
            Ok(_) => {
                written.insert(node, realization);
            }
            Err(error) => {
                tracing::warn!(%node, %error, "cannot share a node's realization; will retry");
                outbox.retry(node, realization);
            }
        }
    }
}

fn parse(object: &ConfigMap) -> Option<(String, NodeRealization)> {
    let data = object.data.as_ref()?;
    let node = data.get(DATA_NODE)?.clone();
    match data.get(DATA_REALIZATION).map(|text| NodeRealization::from_json(text)) {
        Some(Ok(realization)) => Some((node, realization)),
        Some(Err(error)) => {
            tracing::warn!(%node, %error, "ignoring an unreadable realization ConfigMap");
            None
        }
        None => Some((node, NodeRealization::default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::model::PolicyKind;

    fn policy(name: &str) -> PolicyRef {
        PolicyRef { kind: PolicyKind::NetworkPolicy, namespace: Some("ns".into()), name: name.into() }
    }

    fn revision(generation: i64) -> Revision {
        Revision { uid: "u".into(), generation }
    }

    #[test]
    fn the_stored_form_round_trips_and_changes_are_per_policy() {
        let table = RealizationTable::default();
        let report = vec![RealizedPolicy { policy: policy("a"), revision: revision(1) }];
        assert_eq!(table.realized("n1", report.clone()), BTreeSet::from([policy("a")]));
        assert!(table.realized("n1", report).is_empty(), "the same report changes nothing");
        let failed = table.failed("n1", "boom".into());
        assert_eq!(failed, BTreeSet::from([policy("a")]));
        let entry = table.get("n1").expect("entry");
        assert_eq!(entry.realized.get(&policy("a")), Some(&revision(1)), "a failure keeps what was realized");
        let back = NodeRealization::from_json(&entry.to_json()).expect("parses");
        assert_eq!(back, entry);
        assert!(table.set("n1", back).is_empty(), "the shared copy of our own report changes nothing");
        assert_eq!(table.remove("n1"), BTreeSet::from([policy("a")]));
    }
}
