//! Helpers shared by the status and failover tests.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use palisade_conformance::k8s::{everything, ingress_rule, match_labels, namespaces, policy, with_ingress};
use palisade_conformance::{Assertion, Expectation, Object, PodId, Probe, Reachability};
use palisade_e2e::Stack;

pub const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

pub fn pod(id: &str) -> PodId {
    PodId::parse(id).expect("ns/name")
}

/// An expectation over chosen TCP/80 cells only: `(from, to, connected)`.
pub fn cells(stack: &Stack, title: &str, cells: &[(&str, &str, bool)]) -> Expectation {
    let mut reachability = Reachability::unasserted(&stack.cluster().model.pod_ids());
    for (from, to, connected) in cells {
        reachability.expect(&pod(from), &pod(to), *connected);
    }
    Expectation { title: title.to_owned(), probe: Probe::tcp(80), reachability, assertion: Assertion::Packets }
}

/// NetworkPolicy in logical namespace `namespace`: pod `a` isolated for ingress, allowing only
/// namespaces whose `ns` label is in `allowed` (none: deny all ingress to it).
pub fn isolate_pod_a(namespace: &str, name: &str, allowed: &[&str]) -> Object {
    let rules = if allowed.is_empty() {
        vec![]
    } else {
        let peers = allowed.iter().map(|ns| namespaces(match_labels(&[("ns", ns)]))).collect();
        vec![ingress_rule(peers, vec![])]
    };
    let mut np = with_ingress(policy(name, match_labels(&[("pod", "a")])), rules);
    np.metadata.namespace = Some(namespace.to_owned());
    Object::NetworkPolicy(np)
}

/// Every pod of logical namespace `namespace` isolated for ingress with no rule.
pub fn deny_all_ingress(namespace: &str, name: &str) -> Object {
    let mut np = with_ingress(policy(name, everything()), vec![]);
    np.metadata.namespace = Some(namespace.to_owned());
    Object::NetworkPolicy(np)
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn describe(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .map(|c| format!("{}={} ({}; gen {:?}): {}", c.type_, c.status, c.reason, c.observed_generation, c.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the PolicyStatus of `namespace/name` says Ready with every desired node realized
/// at the policy's current generation; returns (nodesRealized, nodesDesired).
pub async fn wait_network_policy_realized(stack: &Stack, namespace: &str, name: &str) -> (i32, i32) {
    let what = format!("PolicyStatus {namespace}/{name} to be realized on every desired node");
    stack
        .eventually(&what, STATUS_TIMEOUT, || async {
            let generation = stack.network_policy(namespace, name).await?.and_then(|np| np.metadata.generation);
            let Some(status) = stack.policy_status(namespace, name).await?.and_then(|ps| ps.status) else {
                return Ok(Err("no PolicyStatus (or no status) yet".to_owned()));
            };
            let ready = condition(&status.conditions, palisade_crds::conditions::READY)
                .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
            if ready
                && status.observed_generation == generation
                && status.nodes_desired > 0
                && status.nodes_realized == status.nodes_desired
            {
                Ok(Ok((status.nodes_realized, status.nodes_desired)))
            } else {
                Ok(Err(format!(
                    "generation {generation:?}; status: observedGeneration {:?}, nodes {}/{}, selected pods {}\n{}",
                    status.observed_generation,
                    status.nodes_realized,
                    status.nodes_desired,
                    status.selected_pods,
                    describe(&status.conditions)
                )))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
