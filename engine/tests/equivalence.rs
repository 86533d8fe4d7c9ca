//! Properties: the compiled plans judge every flow exactly as the reference evaluator does, and
//! any sequence of events leaves the engine with the plans a fresh full compile produces.

mod common;

use std::collections::BTreeMap;

use common::*;
use palisade_engine::model::{Cluster, Namespace, Node, Pod, PodKey, Policy, PolicyRef};
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
    fn compiled_plans_agree_with_reference(cluster in arb_cluster(), policies in arb_policies()) {
        assert_plans_match_reference(&cluster, &policies)?;
    }
}

/// One change to the world, as the operator's watchers would report it.
#[derive(Debug, Clone)]
enum Event {
    UpsertPod(Pod),
    RemovePod(PodKey),
    UpsertNamespace(Namespace),
    RemoveNamespace(String),
    UpsertNode(Node),
    RemoveNode(String),
    UpsertPolicy(Policy),
    RemovePolicy(PolicyRef),
}

/// A random [`Event`]. Indices pick among the objects that exist when the event is applied, so a
/// shrunk sequence stays meaningful.
#[derive(Debug, Clone)]
enum EventSketch {
    /// A new pod, or (with `replacing`) an existing pod changed under the same key.
    UpsertPod {
        sketch: PodSketch,
        replacing: Option<prop::sample::Index>,
    },
    RemovePod(prop::sample::Index),
    UpsertNamespace(Namespace),
    RemoveNamespace(&'static str),
    UpsertNode(Node),
    RemoveNode(usize),
    UpsertPolicy(Policy),
    RemovePolicy(prop::sample::Index),
}

fn arb_event() -> impl Strategy<Value = EventSketch> {
    let namespace = prop::sample::select(&NAMESPACES[..]);
    prop_oneof![
        2 => (arb_pod_sketch(), prop::option::of(any::<prop::sample::Index>()))
            .prop_map(|(sketch, replacing)| EventSketch::UpsertPod { sketch, replacing }),
        1 => any::<prop::sample::Index>().prop_map(EventSketch::RemovePod),
        3 => namespace.clone().prop_flat_map(arb_namespace).prop_map(EventSketch::UpsertNamespace),
        1 => namespace.prop_map(EventSketch::RemoveNamespace),
        3 => (0..5usize).prop_flat_map(arb_node).prop_map(EventSketch::UpsertNode),
        1 => (0..5usize).prop_map(EventSketch::RemoveNode),
        1 => any::<prop::sample::Index>().prop_map(EventSketch::RemovePolicy),
        4 => arb_policy().prop_map(EventSketch::UpsertPolicy),
    ]
}

/// The event a sketch stands for in the current world, if it can happen there.
fn resolve(
    sketch: &EventSketch,
    cluster: &Cluster,
    policies: &BTreeMap<PolicyRef, Policy>,
    next_pod: &mut usize,
) -> Option<Event> {
    let pod_keys: Vec<&PodKey> = cluster.pods.keys().collect();
    let policy_refs: Vec<&PolicyRef> = policies.keys().collect();
    let event = match sketch {
        EventSketch::UpsertPod { sketch, replacing } => {
            let nodes: Vec<Node> = cluster.nodes.values().cloned().collect();
            if nodes.is_empty() {
                return None;
            }
            *next_pod += 1;
            let mut pod = sketch.place(*next_pod, &nodes);
            if let Some(index) = replacing.filter(|_| !pod_keys.is_empty()) {
                pod.key = (*index.get(&pod_keys)).clone();
            }
            Event::UpsertPod(pod)
        }
        EventSketch::RemovePod(index) if !pod_keys.is_empty() => Event::RemovePod((*index.get(&pod_keys)).clone()),
        EventSketch::RemovePod(_) => return None,
        EventSketch::UpsertNamespace(namespace) => Event::UpsertNamespace(namespace.clone()),
        EventSketch::RemoveNamespace(name) => Event::RemoveNamespace(name.to_string()),
        EventSketch::UpsertNode(node) => Event::UpsertNode(node.clone()),
        EventSketch::RemoveNode(index) => Event::RemoveNode(format!("n{index}")),
        EventSketch::UpsertPolicy(policy) => Event::UpsertPolicy(policy.clone()),
        EventSketch::RemovePolicy(index) if !policy_refs.is_empty() => {
            Event::RemovePolicy((*index.get(&policy_refs)).clone())
        }
        EventSketch::RemovePolicy(_) => return None,
    };
    Some(event)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn incremental_events_match_full_compile(
        mut cluster in arb_cluster(),
        initial in arb_policies(),
        sketches in prop::collection::vec(arb_event(), 1..=12),
    ) {
        let mut policies: BTreeMap<PolicyRef, Policy> = initial.into_iter().map(|p| (p.reference(), p)).collect();
        // What a fresh compile must reproduce: for a policy whose newest version is refused, the
        // last accepted version stays in force (the engine fails closed), so history matters.
        let mut in_force = policies.clone();
        let mut engine = Engine::with_cluster(cluster.clone());
        for policy in policies.values() {
            engine.upsert_policy(policy.clone());
        }
        let mut next_pod = 100;
        // The plans as of the last take: the changes taken since must lead from them to the plans now.
        engine.take_plan_changes();
        let mut taken: BTreeMap<String, NodePlan> = engine.node_plans();
        for (step, sketch) in sketches.iter().enumerate() {
            let Some(event) = resolve(sketch, &cluster, &policies, &mut next_pod) else { continue };
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
                prop_assert_eq!(diff.apply(&mut patched), Ok(()));
                prop_assert_eq!(&patched, &new);
            }
            // Changes are taken after some events only, so they must also fold several events.
            if step % 3 != 1 || step + 1 == sketches.len() {
                let changes = engine.take_plan_changes();
                for (node, delta) in &changes.deltas {
                    let plan = taken.entry(node.clone()).or_insert_with(|| NodePlan { node: node.clone(), ..NodePlan::default() });
                    prop_assert_eq!(delta.apply(plan), Ok(()), "delta {:?} after {:?}", delta, event);
                }
                for node in taken.keys().chain(after.keys()).cloned().collect::<std::collections::BTreeSet<_>>() {
                    let empty = NodePlan { node: node.clone(), ..NodePlan::default() };
                    let expected = after.get(&node).unwrap_or(&empty);
                    let held = taken.get(&node).unwrap_or(&empty);
                    prop_assert_eq!(held, expected, "node {} after taking changes {:?} (event {:?})", node, changes, event);
                }
                for delta in changes.deltas.values() {
                    for id in delta.patched_groups.keys() {
                        prop_assert!(!delta.upserted_groups.contains_key(id));
                    }
                }
            }
        }
    }
}

/// The property above proves little on worlds where every flow is allowed (or every one denied):
/// most generated worlds must hold both, and some must hold refused policies.
#[test]
fn generated_worlds_mostly_hold_allowed_and_denied_flows() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (arb_cluster(), arb_policies());
    let cases = 1000;
    let (mut both, mut no_denied, mut no_allowed, mut refused) = (0, 0, 0, 0);
    for _ in 0..cases {
        let (cluster, policies) = strategy.new_tree(&mut runner).expect("a generated world").current();
        let reference = Reference::new(&cluster, &policies);
        let verdicts: Vec<bool> = flows(&cluster).iter().map(|flow| reference.verdict(flow).allowed).collect();
        let allowed = verdicts.iter().filter(|allowed| **allowed).count();
        match (allowed, verdicts.len() - allowed) {
            (0, _) => no_allowed += 1,
            (_, 0) => no_denied += 1,
            _ => both += 1,
        }
        if policies.iter().any(|policy| validate(policy).is_err()) {
            refused += 1;
        }
    }
    let share = |count: i32| f64::from(count) / f64::from(cases);
    println!(
        "of {cases} generated worlds: {:.0}% hold both allowed and denied flows, {:.0}% no denied flow, \
         {:.0}% no allowed flow, {:.0}% a refused policy",
        100.0 * share(both),
        100.0 * share(no_denied),
        100.0 * share(no_allowed),
        100.0 * share(refused),
    );
    assert!(share(both) >= 0.75, "only {both} of {cases} worlds hold both allowed and denied flows");
    assert!(share(refused) >= 0.1, "only {refused} of {cases} worlds hold a refused policy");
}
