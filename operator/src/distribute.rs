//! Distribution: the engine on its own thread, and one feed per node of the changes it produces.
//!
//! Watchers hand each event to the engine thread through a channel and return at once, so no
//! engine work runs on an async worker. The thread applies events as they come: the first event
//! after a quiet period at once (no fixed debounce), and every event that arrived meanwhile in
//! the next batch, so a burst costs one plan change per node and a lone event costs no wait.
//! A batch holds the index lock for a bounded number of events, so readers (status, snapshots)
//! never wait long.
//!
//! After each batch the engine hands out each node's [`PlanDelta`] ([`Engine::take_plan_changes`]):
//! member patches of groups are built once and shared by every node through an `Arc`. Each node's
//! feed keeps its newest version and a short log of recent deltas; every connection of that node
//! sends the deltas after what it sent last, and a connection that fell behind the log gets one
//! snapshot instead of a backlog.
//!
//! [`Engine::take_plan_changes`]: palisade_engine::Engine::take_plan_changes

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;

use palisade_engine::plan::{NodePlan, PlanDelta};
use tokio::sync::watch;

use crate::index::{Index, SharedIndex};
use crate::metrics::{Metrics, Stage};
use crate::writes::DirtyPolicies;

/// Deltas a feed keeps; a connection further behind is sent a snapshot.
pub const FEED_LOG: usize = 64;

/// At most this many events are applied under one hold of the index lock.
const EVENTS_PER_LOCK: usize = 512;

/// One published change of a node's plan.
#[derive(Clone, Debug)]
pub struct FeedEntry {
    /// The version this delta leads to; the one before is `version - 1`.
    pub version: u64,
    pub delta: Arc<PlanDelta>,
    /// When the engine thread published it (for the "sent" stage).
    pub published: Instant,
}

/// The newest version of one node's plan on this replica, and the recent deltas that lead to it.
#[derive(Clone, Debug, Default)]
pub struct NodeFeed {
    pub version: u64,
    pub recent: VecDeque<FeedEntry>,
}

impl NodeFeed {
    /// The deltas after `version`, oldest first; `None` when the log no longer reaches back to it.
    pub fn since(&self, version: u64) -> Option<Vec<FeedEntry>> {
        if version == self.version {
            return Some(Vec::new());
        }
        let first = self.recent.front()?;
        if first.version > version + 1 || version > self.version {
            return None;
        }
        Some(self.recent.iter().filter(|entry| entry.version > version).cloned().collect())
    }
}

/// An event for the engine thread: a change to apply to the index, stamped when it arrived.
pub struct IndexEvent {
    pub received: Instant,
    pub apply: Box<dyn FnOnce(&mut Index) + Send>,
}

/// The per-node feeds, shared by the engine thread, the stream server, status and realization.
pub struct SharedDistribution {
    feeds: Mutex<BTreeMap<String, watch::Sender<Arc<NodeFeed>>>>,
    index: Arc<SharedIndex>,
    /// True once a complete index has been distributed: before that a plan could be missing
    /// policies or peers, and an agent must not enforce it.
    ready: watch::Sender<bool>,
}

impl SharedDistribution {
    pub fn new(index: Arc<SharedIndex>) -> Arc<SharedDistribution> {
        Arc::new(SharedDistribution { feeds: Mutex::new(BTreeMap::new()), index, ready: watch::Sender::new(false) })
    }

    fn feeds(&self) -> MutexGuard<'_, BTreeMap<String, watch::Sender<Arc<NodeFeed>>>> {
        self.feeds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn index(&self) -> &Arc<SharedIndex> {
        &self.index
    }

    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// `node`'s feed and its plan at the feed's current version, read together under the index
    /// lock (the engine thread publishes under it too, so the two agree). Assembling a plan is
    /// engine work: callers run this in `spawn_blocking`.
    pub fn snapshot(&self, node: &str) -> (watch::Receiver<Arc<NodeFeed>>, u64, NodePlan) {
        let mut index = self.index.lock();
        let plan = index.engine_mut().node_plan(node);
        let mut feeds = self.feeds();
        let sender = feeds.entry(node.to_owned()).or_insert_with(|| watch::Sender::new(Arc::new(NodeFeed::default())));
        let receiver = sender.subscribe();
        let version = receiver.borrow().version;
        (receiver, version, plan)
    }

    /// Appends each node's delta to its feed (called by the engine thread, under the index lock).
    /// Only connected nodes have a feed: a connection starts from a [`Self::snapshot`] read under
    /// the same lock, so a delta nobody holds a feed for is already in the next snapshot. A feed
    /// whose connections all ended (or whose Node was deleted) is dropped here, so feeds never
    /// outgrow the agents connected to this replica.
    fn publish(&self, deltas: BTreeMap<String, PlanDelta>, metrics: &Metrics) {
        let published = Instant::now();
        let mut feeds = self.feeds();
        feeds.retain(|_, sender| sender.receiver_count() > 0);
        for (node, delta) in deltas {
            let Some(sender) = feeds.get(&node) else { continue };
            sender.send_modify(|feed| {
                let feed = Arc::make_mut(feed);
                feed.version += 1;
                feed.recent.push_back(FeedEntry { version: feed.version, delta: Arc::new(delta), published });
                while feed.recent.len() > FEED_LOG {
                    feed.recent.pop_front();
                }
            });
            metrics.plans_published.inc();
        }
    }
}

/// Runs the engine until every sender of `events` is gone (the watchers stopped). Blocking: run
/// it on its own thread ([`spawn_engine_thread`]).
fn run_engine(
    events: mpsc::Receiver<IndexEvent>,
    distribution: Arc<SharedDistribution>,
    dirty: Arc<DirtyPolicies>,
    metrics: Metrics,
) {
    let mut waiting: VecDeque<IndexEvent> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match events.recv() {
                Ok(event) => waiting.push_back(event),
                Err(mpsc::RecvError) => return,
            }
        }
        waiting.extend(events.try_iter());
        let started = Instant::now();
        let mut index = distribution.index.lock();
        let mut applied = 0;
        while applied < EVENTS_PER_LOCK {
            let Some(event) = waiting.pop_front() else { break };
            metrics.observe(Stage::Queued, started.saturating_duration_since(event.received));
            (event.apply)(&mut index);
            applied += 1;
        }
        let changes = index.engine_mut().take_plan_changes();
        let synced = index.is_synced();
        let mut changed_policies = index.take_dirty_policies();
        changed_policies.extend(changes.spans_changed);
        distribution.publish(changes.deltas, &metrics);
        drop(index);
        distribution.index.set_synced(synced);
        dirty.mark(changed_policies);
        metrics.observe(Stage::Engine, started.elapsed());
        if synced && !*distribution.ready.borrow() {
            tracing::info!("index synced and distributed; serving plans");
            distribution.ready.send_replace(true);
        }
    }
}

/// Starts the engine thread; returns the sender the watchers feed.
pub fn spawn_engine_thread(
    distribution: Arc<SharedDistribution>,
    dirty: Arc<DirtyPolicies>,
    metrics: Metrics,
) -> std::io::Result<mpsc::Sender<IndexEvent>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("palisade-engine".into())
        .spawn(move || run_engine(receiver, distribution, dirty, metrics))?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::SharedIndex;

    fn entry(version: u64) -> FeedEntry {
        FeedEntry { version, delta: Arc::new(PlanDelta::default()), published: Instant::now() }
    }

    #[test]
    fn a_feed_hands_out_what_came_after_a_version_or_nothing_when_its_log_is_too_short() {
        let mut feed = NodeFeed::default();
        assert_eq!(feed.since(0).map(|entries| entries.len()), Some(0));
        for version in 1..=FEED_LOG as u64 + 3 {
            feed.version = version;
            feed.recent.push_back(entry(version));
            while feed.recent.len() > FEED_LOG {
                feed.recent.pop_front();
            }
        }
        let newest = feed.version;
        assert_eq!(feed.since(newest).map(|entries| entries.len()), Some(0));
        let versions: Option<Vec<u64>> = feed.since(newest - 2).map(|e| e.iter().map(|e| e.version).collect());
        assert_eq!(versions, Some(vec![newest - 1, newest]));
        assert!(feed.since(1).is_none(), "version 2 fell out of the log: a snapshot is needed");
        assert!(feed.since(newest + 1).is_none(), "a version from the future (another replica's) is unknown");
    }

    fn feed_nodes(distribution: &SharedDistribution) -> Vec<String> {
        distribution.feeds().keys().cloned().collect()
    }

    #[test]
    fn a_node_feed_lives_only_while_a_connection_holds_it() {
        let distribution = SharedDistribution::new(SharedIndex::new());
        let metrics = Metrics::default();
        let deltas = |nodes: &[&str]| nodes.iter().map(|n| ((*n).to_owned(), PlanDelta::default())).collect();

        distribution.publish(deltas(&["n1", "n2"]), &metrics);
        assert!(feed_nodes(&distribution).is_empty(), "no agent is connected: nothing to keep for anyone");

        let (connection, version, _plan) = distribution.snapshot("n1");
        assert_eq!(version, 0);
        distribution.publish(deltas(&["n1", "n2"]), &metrics);
        assert_eq!(feed_nodes(&distribution), vec!["n1".to_owned()]);
        assert_eq!(connection.borrow().version, 1, "the connected node got its delta");

        drop(connection);
        distribution.publish(deltas(&["n2"]), &metrics);
        assert!(feed_nodes(&distribution).is_empty(), "the connection ended (or its node was deleted): feed dropped");
    }
}
