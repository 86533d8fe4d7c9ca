//! Status end to end: what the operator writes on ClusterNetworkPolicies and PolicyStatus objects
//! once real agents report what their kernels enforce.

mod common;

use common::*;
use palisade_conformance::Object;
use palisade_crds::ClusterNetworkPolicy;
use palisade_crds::conditions::{ACCEPTED, REALIZED};
use palisade_e2e::Stack;
use serde_json::json;

fn admin_deny(name: &str, port: Option<u16>) -> Object {
    let mut rule = json!({
        "name": "deny-from-y",
        "action": "Deny",
        "from": [{ "namespaces": { "matchLabels": { "ns": "y" } } }],
    });
    if let Some(port) = port {
        rule["protocols"] = json!([{ "tcp": { "destinationPort": { "number": port } } }]);
    }
    let cnp: ClusterNetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": { "name": name },
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": { "namespaces": { "matchLabels": { "ns": "x" } } },
            "ingress": [rule],
        },
    }))
    .expect("a valid ClusterNetworkPolicy");
    Object::ClusterNetworkPolicy(cnp)
}

/// Realized on 2 of 2 nodes at the policy's current generation, also after an update.
async fn wait_cnp_realized(stack: &Stack, name: &str) -> i64 {
    let what = format!("ClusterNetworkPolicy {name} Realized on 2 of 2 nodes at its generation");
    stack
        .eventually(&what, STATUS_TIMEOUT, || async {
            let Some(cnp) = stack.cluster_network_policy(name).await? else { return Ok(Err("gone".to_owned())) };
            let generation = cnp.metadata.generation;
            let conditions = cnp.status.map(|s| s.conditions).unwrap_or_default();
            let realized = condition(&conditions, REALIZED);
            let accepted = condition(&conditions, ACCEPTED);
            let done = realized.is_some_and(|c| {
                c.status == "True" && c.observed_generation == generation && c.message.contains("2 of 2")
            }) && accepted.is_some_and(|c| c.status == "True" && c.observed_generation == generation);
            if done {
                Ok(Ok(generation.unwrap_or_default()))
            } else {
                Ok(Err(format!("generation {generation:?}\n{}", describe(&conditions))))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_realization_and_field_errors() {
    let model = palisade_conformance::netpol::model();
    let mut stack = Stack::start(&model).await.unwrap_or_else(|e| panic!("stack start: {e}"));

    // A ClusterNetworkPolicy: Realized 2/2 with observedGeneration == generation, then again
    // after an update bumps the generation; and it is enforced.
    stack.apply(&admin_deny("e2e-status-admin", None)).await.expect("apply CNP");
    let first = wait_cnp_realized(&stack, "e2e-status-admin").await;
    let enforced =
        cells(&stack, "y cannot reach x", &[("y/a", "x/a", false), ("y/b", "x/b", false), ("z/a", "x/a", true)]);
    stack.expect(&enforced).await.unwrap_or_else(|e| panic!("{e}"));
    stack.apply(&admin_deny("e2e-status-admin", Some(81))).await.expect("update CNP");
    let second = wait_cnp_realized(&stack, "e2e-status-admin").await;
    assert!(second > first, "the update must bump the generation ({first} -> {second})");
    let updated = cells(&stack, "y reaches x on 80 again", &[("y/a", "x/a", true), ("y/b", "x/b", true)]);
    stack.expect(&updated).await.unwrap_or_else(|e| panic!("{e}"));
    stack.reset().await.expect("reset");

    // A NetworkPolicy: its PolicyStatus counts every desired node as realized.
    stack.apply(&isolate_pod_a("x", "e2e-status-np", &["y"])).await.expect("apply NP");
    let (realized, desired) = wait_network_policy_realized(&stack, "x", "e2e-status-np").await;
    assert_eq!(realized, desired);
    let np_enforced =
        cells(&stack, "only y reaches x/a", &[("y/b", "x/a", true), ("z/b", "x/a", false), ("z/b", "x/b", true)]);
    stack.expect(&np_enforced).await.unwrap_or_else(|e| panic!("{e}"));

    // An invalid NetworkPolicy (an `except` outside its `cidr`). The apiserver validates
    // NetworkPolicies exactly as the engine does, so it refuses this one at admission with the
    // same field path, and the operator never sees it: the PolicyStatus field-error path is only
    // reachable for policies stored by a laxer apiserver. What must hold here: the refusal names
    // the field, no PolicyStatus appears for it, and the valid policy keeps enforcing.
    let mut np = palisade_conformance::k8s::with_ingress(
        palisade_conformance::k8s::policy("e2e-invalid", palisade_conformance::k8s::match_labels(&[("pod", "c")])),
        vec![palisade_conformance::k8s::ingress_rule(
            vec![palisade_conformance::k8s::ip_block("198.18.0.0/24", &["198.19.0.0/24"])],
            vec![],
        )],
    );
    np.metadata.namespace = Some("z".to_owned());
    let refusal = stack.apply(&Object::NetworkPolicy(np)).await.expect_err("the apiserver must refuse it").to_string();
    assert!(refusal.contains("spec.ingress[0].from[0].ipBlock.except[0]") && refusal.contains("422"), "{refusal}");
    assert!(stack.policy_status("z", "e2e-invalid").await.expect("get").is_none(), "no status for a refused policy");
    stack.expect(&np_enforced).await.unwrap_or_else(|e| panic!("the valid policy stopped enforcing: {e}"));
    let (realized, desired) = wait_network_policy_realized(&stack, "x", "e2e-status-np").await;
    assert_eq!(realized, desired);
}
