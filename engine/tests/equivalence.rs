//! Properties: the compiled plans judge every flow exactly as the reference evaluator does, and
//! any sequence of events leaves the engine with the plans a fresh full compile produces.

mod common;

use std::collections::BTreeMap;

use common::*;
use palisade_engine::model::{Cluster, Policy, PolicyRef};
use palisade_engine::plan::NodePlan;
use palisade_engine::reference::Reference;
use palisade_engine::validate::validate;
use palisade_engine::{Engine, PlanEvaluator, compile};
use proptest::prelude::*;

fn assert_plans_match_reference(cluster: &Cluster, policies: &[Policy]) -> Result<(), TestCaseError> {
    let compiled = compile(cluster, policies);
    let node_ips = node_ips(cluster);
    let plans = PlanEvaluator::new(&compiled.plans, &node_ips);
    let reference = Reference::new(cluster, policies);
    for flow in flows(cluster) {
        let expected = reference.verdict(&flow);
        let actual = plans.verdict(&flow);
        prop_assert_eq!(&actual, &expected, "flow {:?}\ncluster {:#?}\npolicies {:#?}", flow, cluster, policies);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn compiled_plans_agree_with_reference(seed in any::<u64>()) {
        let mut rng = Seeded::new(seed);
        let cluster = random_cluster(&mut rng);
        let policies = random_policies(&mut rng);
        assert_plans_match_reference(&cluster, &policies)?;
    }
}

/// One change to the world, as the operator's watchers would report it.
#[derive(Debug, Clone)]
enum Event {
    UpsertPod(palisade_engine::model::Pod),
    RemovePod(palisade_engine::model::PodKey),
    UpsertNamespace(palisade_engine::model::Namespace),
    RemoveNamespace(String),
    UpsertNode(palisade_engine::model::Node),
    RemoveNode(String),
    UpsertPolicy(Policy),
    RemovePolicy(PolicyRef),
}

fn random_event(
    rng: &mut Seeded,
    cluster: &Cluster,
    policies: &BTreeMap<PolicyRef, Policy>,
    next_pod: &mut usize,
) -> Event {
    let nodes: Vec<_> = cluster.nodes.values().cloned().collect();
    match rng.below(10) {
        0 | 1 if !nodes.is_empty() => {
            // A new pod, or an existing pod changed (labels, node, ports) under the same key.
            *next_pod += 1;
            let mut pod = random_pod(rng, *next_pod, &nodes);
            if let Some(existing) = cluster.pods.keys().nth(rng.below(cluster.pods.len().max(1)))
                && rng.chance(2)
            {
                pod.key = existing.clone();
            }
            Event::UpsertPod(pod)
        }
        2 if !cluster.pods.is_empty() => {
            Event::RemovePod(cluster.pods.keys().nth(rng.below(cluster.pods.len())).unwrap().clone())
        }
        3 => {
            let name = *rng.pick(&["x", "y", "z"]);
            if rng.chance(4) {
                Event::RemoveNamespace(name.into())
            } else {
                Event::UpsertNamespace(random_namespace(rng, name))
            }
        }
        4 => {
            let index = rng.below(5);
            if rng.chance(4) {
                Event::RemoveNode(format!("n{index}"))
            } else {
                Event::UpsertNode(random_node(rng, index))
            }
        }
        5 if !policies.is_empty() => {
            Event::RemovePolicy(policies.keys().nth(rng.below(policies.len())).unwrap().clone())
        }
        _ => Event::UpsertPolicy(random_policy(rng)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn incremental_events_match_full_compile(seed in any::<u64>()) {
        let mut rng = Seeded::new(seed);
        let mut cluster = random_cluster(&mut rng);
        let mut policies: BTreeMap<PolicyRef, Policy> =
            random_policies(&mut rng).into_iter().map(|p| (p.reference(), p)).collect();
        // What a fresh compile must reproduce: for a policy whose newest version is refused, the
        // last accepted version stays in force (the engine fails closed), so history matters.
        let mut in_force = policies.clone();
        let mut engine = Engine::with_cluster(cluster.clone());
        for policy in policies.values() {
            engine.upsert_policy(policy.clone());
        }
        let mut next_pod = 100;
        for _ in 0..1 + rng.below(12) {
            let event = random_event(&mut rng, &cluster, &policies, &mut next_pod);
            let before: BTreeMap<String, NodePlan> = engine.node_plans();
            let delta = match event.clone() {
                Event::UpsertPod(pod) => { cluster.pods.insert(pod.key.clone(), pod.clone()); engine.upsert_pod(pod) }
                Event::RemovePod(key) => { cluster.pods.remove(&key); engine.remove_pod(&key) }
                Event::UpsertNamespace(ns) => { cluster.namespaces.insert(ns.name.clone(), ns.clone()); engine.upsert_namespace(ns) }
                Event::RemoveNamespace(name) => { cluster.namespaces.remove(&name); engine.remove_namespace(&name) }
                Event::UpsertNode(node) => { cluster.nodes.insert(node.name.clone(), node.clone()); engine.upsert_node(node) }
                Event::RemoveNode(name) => { cluster.nodes.remove(&name); engine.remove_node(&name) }
                Event::UpsertPolicy(policy) => {
                    let reference = policy.reference();
                    let keeps_accepted = validate(&policy).is_err()
                        && in_force.get(&reference).is_some_and(|held| validate(held).is_ok());
                    if !keeps_accepted {
                        in_force.insert(reference.clone(), policy.clone());
                    }
                    policies.insert(reference, policy.clone());
                    engine.upsert_policy(policy)
                }
                Event::RemovePolicy(reference) => {
                    policies.remove(&reference);
                    in_force.remove(&reference);
                    engine.remove_policy(&reference)
                }
            };
            let held: Vec<Policy> = in_force.values().cloned().collect();
            let fresh = compile(&cluster, &held);
            let after = engine.node_plans();
            prop_assert_eq!(&after, &fresh.plans, "after {:?}", event);
            // The errors are those of the newest versions, whatever stays in force.
            let newest: Vec<Policy> = policies.values().cloned().collect();
            let mut errors = engine.errors();
            let mut fresh_errors = compile(&cluster, &newest).errors;
            errors.sort_by_key(|e| e.to_string());
            fresh_errors.sort_by_key(|e| e.to_string());
            prop_assert_eq!(errors, fresh_errors);
            // The delta names every node whose plan changed, and every rule set and group that changed.
            for node in before.keys().chain(after.keys()) {
                let (old, new) = (before.get(node), after.get(node));
                let old = old.cloned().unwrap_or_else(|| NodePlan { node: node.clone(), ..NodePlan::default() });
                let new = new.cloned().unwrap_or_else(|| NodePlan { node: node.clone(), ..NodePlan::default() });
                let diff = NodePlan::diff(&old, &new);
                if !diff.is_empty() {
                    prop_assert!(delta.affected_nodes.contains(node), "node {} changed but not in {:?} after {:?}", node, delta, event);
                }
                for id in diff.upserted_groups.keys().chain(&diff.removed_groups) {
                    // A group can enter a node's plan without changing (a new subject pod there).
                    if old.groups.contains_key(id) && new.groups.contains_key(id) {
                        prop_assert!(delta.changed_groups.contains(id));
                    }
                }
                for id in diff.upserted_rule_sets.keys() {
                    if old.rule_sets.contains_key(id) {
                        prop_assert!(delta.changed_rule_sets.contains(id));
                    }
                }
                let mut patched = old.clone();
                diff.apply(&mut patched);
                prop_assert_eq!(&patched, &new);
            }
        }
    }
}
