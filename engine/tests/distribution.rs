//! What distribution costs: the change a pod event hands to each node carries the addresses that
//! changed, not the groups or plans they belong to, and one patch is shared by every node.

mod common;

use std::sync::Arc;

use common::*;
use palisade_engine::Engine;
use palisade_engine::model::{NetworkPolicyPeer, NetworkPolicyRule, Policy};
use palisade_engine::plan::GroupPatch;

/// Three nodes with one web pod each, and a policy in x isolating every pod of x and admitting
/// ingress from the web pods.
fn engine() -> Engine {
    let nodes = ["n1", "n2", "n3"].iter().enumerate().map(|(i, n)| node(n, &[&format!("198.19.0.{}", i + 1)], &[]));
    let pods = (1..=3)
        .map(|i| pod("x", &format!("web-{i}"), &format!("n{i}"), &[&format!("198.18.{i}.10")], &[("app", "web")]));
    let mut engine = Engine::with_cluster(cluster(vec![namespace("x", &[])], nodes.collect(), pods.collect()));
    let mut policy = np("x", "from-web", select(&[]));
    policy.ingress = vec![NetworkPolicyRule {
        peers: vec![NetworkPolicyPeer { pod_selector: Some(select(&[("app", "web")])), ..Default::default() }],
        ports: vec![],
    }];
    engine.upsert_policy(Policy::Network(policy));
    engine.take_plan_changes();
    engine
}

#[test]
fn a_new_pod_patches_the_group_on_every_node_with_one_shared_patch_and_is_sent_whole_only_to_its_own() {
    let mut engine = engine();
    engine.upsert_pod(pod("x", "web-4", "n2", &["198.18.2.11"], &[("app", "web")]));
    let changes = engine.take_plan_changes();
    assert_eq!(changes.deltas.keys().collect::<Vec<_>>(), ["n1", "n2", "n3"]);

    let patches: Vec<&Arc<GroupPatch>> =
        changes.deltas.values().flat_map(|delta| delta.patched_groups.values()).collect();
    assert_eq!(patches.len(), 3, "one patched group per node: {changes:?}");
    let expected = GroupPatch::Addresses { added: [ip("198.18.2.11")].into(), removed: Default::default() };
    assert_eq!(*patches[0].as_ref(), expected);
    assert!(patches.iter().all(|patch| Arc::ptr_eq(patch, patches[0])), "the patch is built once and shared");

    for (node, delta) in &changes.deltas {
        assert!(delta.upserted_groups.is_empty(), "{node} keeps the group: only a patch, never the whole group");
        assert!(
            delta.upserted_rule_sets.is_empty() && delta.removed_rule_sets.is_empty(),
            "{node}: rules are unchanged"
        );
        let pods: Vec<String> = delta.upserted_pods.keys().map(ToString::to_string).collect();
        assert_eq!(pods, if node == "n2" { vec!["x/web-4".to_string()] } else { vec![] }, "{node}");
    }
}

#[test]
fn a_pod_that_leaves_and_comes_back_before_the_take_costs_nothing() {
    let mut engine = engine();
    let web_1 = engine.cluster().pods.get(&key("x", "web-1")).cloned().expect("web-1");
    engine.remove_pod(&web_1.key);
    engine.upsert_pod(web_1);
    assert_eq!(engine.take_plan_changes().deltas, Default::default());
}

#[test]
fn spans_count_local_pods_per_node_and_report_their_changes() {
    let mut engine = engine();
    let reference = palisade_engine::model::PolicyRef {
        kind: palisade_engine::model::PolicyKind::NetworkPolicy,
        namespace: Some("x".into()),
        name: "from-web".into(),
    };
    assert_eq!(engine.span(&reference), [("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1)].into());
    engine.upsert_pod(pod("x", "web-4", "n2", &["198.18.2.11"], &[("app", "web")]));
    assert!(engine.take_plan_changes().spans_changed.contains(&reference));
    assert_eq!(engine.span(&reference).get("n2"), Some(&2));
    assert_eq!(engine.policies_on("n1").into_iter().collect::<Vec<_>>(), [reference]);
}
