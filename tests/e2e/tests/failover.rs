//! Failover end to end: the status writer moves with the Lease when the leader crashes, and
//! enforcement survives losing every operator and restarting an agent.

mod common;

use std::time::Duration;

use common::*;
use palisade_e2e::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_and_operator_loss() {
    let model = palisade_conformance::netpol::model();
    let mut stack = Stack::start(&model).await.unwrap_or_else(|e| panic!("stack start: {e}"));
    let lease_wait = Duration::from_secs(stack.options().lease_duration_seconds * 3 + 20);

    stack.apply(&isolate_pod_a("x", "e2e-failover", &["y"])).await.expect("apply");
    wait_network_policy_realized(&stack, "x", "e2e-failover").await;
    let only_y =
        cells(&stack, "only y reaches x/a", &[("y/b", "x/a", true), ("z/b", "x/a", false), ("z/c", "x/a", false)]);
    stack.expect(&only_y).await.unwrap_or_else(|e| panic!("{e}"));

    // Crash the leader: the other replica must take the Lease and write status from then on.
    let leader = stack.wait_leader(lease_wait).await.expect("a leader");
    let old_identity = stack.operators()[leader].identity.clone();
    stack.kill_operator(leader);
    let new_leader = stack.wait_leader(lease_wait).await.expect("a new leader");
    assert_ne!(stack.operators()[new_leader].identity, old_identity, "the Lease must move to the surviving replica");

    stack.apply(&isolate_pod_a("x", "e2e-failover", &["y", "z"])).await.expect("update");
    let generation =
        stack.network_policy("x", "e2e-failover").await.expect("get").and_then(|np| np.metadata.generation);
    assert_eq!(generation, Some(2));
    wait_network_policy_realized(&stack, "x", "e2e-failover").await;
    let y_and_z =
        cells(&stack, "y and z reach x/a", &[("y/b", "x/a", true), ("z/b", "x/a", true), ("x/b", "x/a", false)]);
    stack.expect(&y_and_z).await.unwrap_or_else(|e| panic!("{e}"));

    // No operator at all, then an agent restart: it must come up Ready from its persisted plan
    // and the kernel must keep enforcing exactly the same.
    for index in 0..stack.operators().len() {
        stack.stop_operator(index);
    }
    stack.expect(&y_and_z).await.unwrap_or_else(|e| panic!("without operators: {e}"));
    stack.restart_agent("n1").await.expect("restart agent");
    stack.wait_agent_ready("n1").await.expect("agent Ready without any operator");
    stack.expect(&y_and_z).await.unwrap_or_else(|e| panic!("after the agent restart: {e}"));
    let plan = stack.persisted_plan("n1").await.expect("plan").expect("a persisted plan");
    assert!(!plan.rule_sets.is_empty(), "the restarted agent must still hold the policy's rule sets");
}
