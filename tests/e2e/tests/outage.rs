//! Control-plane outages end to end: the API server, then etcd, is stopped for a while and started
//! again under two operators and their agents. Enforcement must hold throughout, and a policy
//! created right after the restart must be enforced with real packets within the usual
//! convergence time (an expired resource version must lead straight to a fresh list, never to a
//! retry loop with growing backoff). The time it took is printed; `make bench` is where speed is
//! judged.

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_conformance::Object;
use palisade_conformance::k8s::{match_labels, policy as k8s_policy, with_ingress};
use palisade_e2e::Stack;
use palisade_testkit::PlaneProcess;

const OUTAGE: Duration = Duration::from_secs(20);

async fn outage_then_new_policy(stack: &mut Stack, process: PlaneProcess, policy: &str, isolated: &str) {
    let before =
        cells(stack, "only y reaches x/a", &[("y/b", "x/a", true), ("z/b", "x/a", false), ("z/c", "x/a", false)]);
    stack.expect(&before).await.unwrap_or_else(|e| panic!("before the {process:?} outage: {e}"));

    stack.plane_mut().stop(process);
    tokio::time::sleep(OUTAGE / 2).await;
    stack.expect(&before).await.unwrap_or_else(|e| panic!("during the {process:?} outage: {e}"));
    tokio::time::sleep(OUTAGE / 2).await;
    stack.plane_mut().start_again(process).await.unwrap_or_else(|e| panic!("{process:?} start: {e}"));

    let restarted = Instant::now();
    let (namespace, pod) = isolated.split_once('/').expect("ns/name");
    let mut np = with_ingress(k8s_policy(policy, match_labels(&[("pod", pod)])), vec![]);
    np.metadata.namespace = Some(namespace.to_owned());
    let object = Object::NetworkPolicy(np);
    // The API server answers /readyz before every client reconnected; a create can still fail.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = stack.apply(&object).await {
        assert!(Instant::now() < deadline, "the API server refused the new policy for 30 s: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = restarted.elapsed();
    let isolated_now = cells(
        stack,
        "the new policy isolates its pod",
        &[("y/a", isolated, false), ("z/a", isolated, false), ("y/b", "x/a", true), ("z/b", "x/a", false)],
    );
    stack.expect(&isolated_now).await.unwrap_or_else(|e| panic!("after the {process:?} restart: {e}"));
    println!(
        "{process:?} outage of {} s: new policy created {:.1} s after the restart, enforced (real packets) {:.1} s after it",
        OUTAGE.as_secs(),
        created.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_created_after_an_apiserver_or_etcd_restart_are_enforced() {
    let model = palisade_conformance::netpol::model();
    let mut stack = Stack::start(&model).await.unwrap_or_else(|e| panic!("stack start: {e}"));
    stack.apply(&isolate_pod_a("x", "e2e-outage", &["y"])).await.expect("apply");
    wait_network_policy_realized(&stack, "x", "e2e-outage").await;

    outage_then_new_policy(&mut stack, PlaneProcess::ApiServer, "after-apiserver", "x/b").await;
    outage_then_new_policy(&mut stack, PlaneProcess::Etcd, "after-etcd", "y/b").await;
}
