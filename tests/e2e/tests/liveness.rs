//! The plan stream through a blackhole: the operators' Service swallows every byte both ways
//! while the connections stay open (a network path that drops packets without a reset). Agents
//! must notice within their idle timeout, keep enforcing what they have (fail static), keep
//! trying, and be back on a fresh stream once the path heals: a policy created after that is
//! enforced with real packets. A connection attempt made into the blackhole must not wedge the
//! agent after the path heals.

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_conformance::Object;
use palisade_conformance::k8s::{match_labels, policy as k8s_policy, with_ingress};
use palisade_e2e::{Stack, StackOptions};

const IDLE_TIMEOUT_SECONDS: u64 = 3;

async fn every_agent_connected(stack: &Stack, connected: bool, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut states = Vec::new();
        for agent in stack.agents() {
            states.push(stack.agent_connected(&agent.node).await.expect("agent metrics"));
        }
        if states.iter().all(|state| *state == connected) {
            return;
        }
        assert!(Instant::now() < deadline, "agents connected: {states:?} after {within:?}; wanted all {connected}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_leave_a_blackholed_stream_and_come_back_when_it_heals() {
    let model = palisade_conformance::netpol::model();
    let options = StackOptions { stream_idle_timeout_seconds: Some(IDLE_TIMEOUT_SECONDS), ..StackOptions::default() };
    let mut stack = Stack::start_with(&model, options).await.unwrap_or_else(|e| panic!("stack start: {e}"));
    stack.apply(&isolate_pod_a("x", "e2e-blackhole", &["y"])).await.expect("apply");
    wait_network_policy_realized(&stack, "x", "e2e-blackhole").await;
    let before = cells(&stack, "only y reaches x/a", &[("y/b", "x/a", true), ("z/b", "x/a", false)]);
    stack.expect(&before).await.unwrap_or_else(|e| panic!("before the blackhole: {e}"));
    every_agent_connected(&stack, true, Duration::from_secs(10)).await;

    let blackholed = Instant::now();
    stack.blackhole_operators(true);
    // Silent for the idle timeout: every agent drops its stream (and the operators theirs).
    every_agent_connected(&stack, false, Duration::from_secs(4 * IDLE_TIMEOUT_SECONDS)).await;
    let noticed = blackholed.elapsed();
    stack.expect(&before).await.unwrap_or_else(|e| panic!("fail static during the blackhole: {e}"));
    // Long enough for reconnect attempts to be made into the blackhole.
    tokio::time::sleep(Duration::from_secs(2 * IDLE_TIMEOUT_SECONDS)).await;

    stack.blackhole_operators(false);
    let healed = Instant::now();
    let mut np = with_ingress(k8s_policy("after-blackhole", match_labels(&[("pod", "b")])), vec![]);
    np.metadata.namespace = Some("x".to_owned());
    stack.apply(&Object::NetworkPolicy(np)).await.expect("apply after healing");
    let after = cells(&stack, "the new policy isolates x/b", &[("y/a", "x/b", false), ("y/b", "x/a", true)]);
    stack.expect(&after).await.unwrap_or_else(|e| panic!("after the path healed: {e}"));
    println!(
        "blackhole: agents noticed after {:.1} s (idle timeout {IDLE_TIMEOUT_SECONDS} s); a policy created after healing \
         was enforced (real packets) {:.1} s after it",
        noticed.as_secs_f64(),
        healed.elapsed().as_secs_f64()
    );
}
