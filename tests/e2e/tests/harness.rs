//! The runner itself: a wrong expectation must fail with the cell named (for packets and for
//! rule-level checks), and SCTP policies must reach the kernel as `-p sctp` rules.

mod common;

use std::time::Duration;

use common::*;
use palisade_conformance::k8s::{ingress_rule, match_labels, policy, port_number, with_ingress};
use palisade_conformance::{Assertion, Expectation, Object, Probe, Protocol, Reachability};
use palisade_e2e::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expectations_fail_and_sctp_reaches_the_kernel() {
    let model = palisade_conformance::netpol::model();
    let options = StackOptions { converge_timeout: Duration::from_secs(4), ..StackOptions::default() };
    let mut stack = Stack::start_with(&model, options).await.unwrap_or_else(|e| panic!("stack start: {e}"));

    stack.apply(&deny_all_ingress("x", "deny-all")).await.expect("apply");
    let right = cells(&stack, "x is closed", &[("y/a", "x/a", false), ("x/a", "y/a", true)]);
    stack.expect(&right).await.unwrap_or_else(|e| panic!("{e}"));
    let wrong = cells(&stack, "x is open (wrong on purpose)", &[("y/a", "x/a", true), ("x/a", "y/a", true)]);
    let error = stack.expect(&wrong).await.expect_err("a wrong expectation must fail");
    assert!(error.contains("y/a -> x/a: expected connected, got blocked"), "{error}");
    assert!(!error.contains("x/a -> y/a"), "only the wrong cell is reported: {error}");
    stack.reset().await.expect("reset");

    // SCTP: x/a accepts only SCTP 80, judged on the agents' enforced plans.
    let rule = ingress_rule(vec![], vec![port_number(80, Some(Protocol::Sctp))]);
    let mut np = with_ingress(policy("sctp-80-only", match_labels(&[("pod", "a")])), vec![rule]);
    np.metadata.namespace = Some("x".into());
    stack.apply(&Object::NetworkPolicy(np)).await.expect("apply");
    let sctp = |port: u16, connected_81: bool| {
        let mut reachability = Reachability::unasserted(&stack.cluster().model.pod_ids());
        reachability.expect(&pod("y/b"), &pod("x/a"), port == 80 || connected_81);
        reachability.expect(&pod("y/b"), &pod("x/b"), true);
        Expectation {
            title: format!("SCTP {port}"),
            probe: Probe::sctp(port),
            reachability,
            assertion: Assertion::RulesOnly,
        }
    };
    stack.expect(&sctp(80, false)).await.unwrap_or_else(|e| panic!("{e}"));
    stack.expect(&sctp(81, false)).await.unwrap_or_else(|e| panic!("{e}"));
    let error = stack.expect(&sctp(81, true)).await.expect_err("a wrong rule-level expectation must fail");
    assert!(error.contains("y/b -> x/a: expected connected, got blocked"), "{error}");
    let node = stack.cluster().node_of(&pod("x/a")).expect("node");
    let rules = stack.node_rules(&node).expect("iptables-save");
    assert!(rules.contains("-p sctp"), "x/a's node must carry an SCTP rule:\n{rules}");
    // TCP is really closed too (same policy, real packets).
    let tcp = cells(&stack, "TCP to x/a is closed", &[("y/b", "x/a", false), ("y/b", "x/b", true)]);
    stack.expect(&tcp).await.unwrap_or_else(|e| panic!("{e}"));
}
