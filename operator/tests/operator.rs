//! The operator against a real API server: plans reach agents, realization reaches status and
//! Events, only the right agent may subscribe, invalid policies are reported while valid ones keep
//! flowing, only the Lease leader writes status, and it counts agents connected to any replica.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use palisade_crds::conditions::{self, reasons};
use palisade_crds::{ClusterNetworkPolicy, PolicyStatus};
use palisade_engine::model::PolicyKind;
use palisade_engine::plan::NodePlan;
use palisade_protocol::OperatorMessage;
use serde_json::json;

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn has_policy(plan: &NodePlan, kind: PolicyKind, name: &str) -> bool {
    plan.rule_sets.values().any(|set| set.policy.kind == kind && set.policy.name == name)
}

fn policy_generation(plan: &NodePlan, kind: PolicyKind, name: &str) -> Option<i64> {
    plan.rule_sets
        .values()
        .find(|set| set.policy.kind == kind && set.policy.name == name)
        .map(|set| set.revision.generation)
}

async fn create_network_policy(harness: &Harness, namespace: &str, body: serde_json::Value) -> NetworkPolicy {
    let policy: NetworkPolicy = serde_json::from_value(body).expect("network policy");
    Api::<NetworkPolicy>::namespaced(harness.client.clone(), namespace)
        .create(&PostParams::default(), &policy)
        .await
        .expect("create network policy")
}

async fn create_cluster_policy(harness: &Harness, body: serde_json::Value) -> ClusterNetworkPolicy {
    let policy: ClusterNetworkPolicy = serde_json::from_value(body).expect("cluster network policy");
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("create cluster network policy")
}

async fn cnp_condition(harness: &Harness, name: &str, type_: &str) -> Option<Condition> {
    let policy = Api::<ClusterNetworkPolicy>::all(harness.client.clone()).get(name).await.ok()?;
    condition(&policy.status?.conditions, type_).cloned()
}

async fn policy_status(harness: &Harness, namespace: &str, name: &str) -> Option<PolicyStatus> {
    Api::<PolicyStatus>::namespaced(harness.client.clone(), namespace).get_opt(name).await.ok().flatten()
}

/// A namespace with web pods on both nodes and a client pod on n1, plus the agent pods.
struct Scene {
    app: String,
    n1: String,
    n2: String,
    agent_n1: k8s_openapi::api::core::v1::Pod,
    agent_n2: k8s_openapi::api::core::v1::Pod,
}

async fn scene(harness: &Harness) -> Scene {
    let (n1, n2) = ("n1".to_owned(), "n2".to_owned());
    harness.create_node(&n1, "192.0.2.11").await;
    harness.create_node(&n2, "192.0.2.12").await;
    let app = harness.plane.unique_namespace("app").await.expect("namespace");
    harness.create_pod(&app, "web-1", &n1, &[("app", "web")], "10.1.0.1", None).await;
    harness.create_pod(&app, "web-2", &n2, &[("app", "web")], "10.1.0.2", None).await;
    harness.create_pod(&app, "client", &n1, &[("app", "client")], "10.1.0.3", None).await;
    let system = harness.system_namespace.clone();
    harness.service_account(&system, AGENT_SA).await;
    let agent_n1 = harness.create_pod(&system, "agent-n1", &n1, &[("app", "agent")], "10.9.0.1", Some(AGENT_SA)).await;
    let agent_n2 = harness.create_pod(&system, "agent-n2", &n2, &[("app", "agent")], "10.9.0.2", Some(AGENT_SA)).await;
    Scene { app, n1, n2, agent_n1, agent_n2 }
}

fn allow_client(namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "allow-client", "namespace": namespace },
        "spec": {
            "podSelector": { "matchLabels": { "app": "web" } },
            "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }], "ports": [{ "port": 80 }] }],
        },
    })
}

fn deny_evil(namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": { "name": format!("deny-evil-{namespace}") },
        "spec": {
            "tier": "Admin", "priority": 10,
            "subject": { "pods": {
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": namespace } },
                "podSelector": { "matchLabels": { "app": "web" } },
            } },
            "ingress": [{ "name": "no-evil", "action": "Deny", "from": [{ "namespaces": { "matchLabels": { "team": "evil" } } }] }],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_reach_agents_and_realization_reaches_status() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let operator = harness.start_operator("operator-0").await;

    let np = create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;
    let cnp = create_cluster_policy(harness, deny_evil(&scene.app)).await;
    let cnp_name = cnp.metadata.name.clone().expect("name");
    let cnp_name = cnp_name.as_str();

    // The agent of n1 gets a snapshot first, then whatever changed, as deltas.
    let token_n1 = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;
    let mut agent1 = harness.connect(&operator, &scene.n1, Some(&token_n1), true).await.expect("n1 agent accepted");
    let first = agent1.next_message().await;
    assert!(matches!(first, OperatorMessage::Snapshot { .. }), "the first message is a snapshot: {first:?}");
    agent1
        .until("carry both policies", |plan| {
            has_policy(plan, PolicyKind::NetworkPolicy, "allow-client")
                && has_policy(plan, PolicyKind::ClusterNetworkPolicy, cnp_name)
        })
        .await;
    let plan = agent1.plan.clone().expect("plan");
    assert_eq!(plan.node, scene.n1);
    let local: Vec<String> = plan.pods.keys().map(ToString::to_string).collect();
    assert!(
        local.contains(&format!("{}/web-1", scene.app)) && local.contains(&format!("{}/client", scene.app)),
        "{local:?}"
    );
    assert!(!local.contains(&format!("{}/web-2", scene.app)), "pods of n2 are not in n1's plan: {local:?}");
    agent1.report_realized().await;

    // n1 alone realizes 1 of the 2 nodes that host selected pods.
    eventually("the CNP to be realized on 1 of 2 nodes", || async move {
        cnp_condition(harness, cnp_name, conditions::REALIZED)
            .await
            .is_some_and(|c| c.message == "realized on 1 of 2 nodes" && c.status == "False")
    })
    .await;

    let token_n2 = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n2)).await;
    let mut agent2 = harness.connect(&operator, &scene.n2, Some(&token_n2), true).await.expect("n2 agent accepted");
    agent2.next_message().await;
    agent2.until("carry the CNP", |plan| has_policy(plan, PolicyKind::ClusterNetworkPolicy, cnp_name)).await;
    agent2.report_realized().await;

    eventually("the CNP to be realized on 2 of 2 nodes at generation 1", || async move {
        cnp_condition(harness, cnp_name, conditions::REALIZED).await.is_some_and(|c| {
            c.status == "True" && c.message == "realized on 2 of 2 nodes" && c.observed_generation == Some(1)
        })
    })
    .await;
    let accepted = cnp_condition(harness, cnp_name, conditions::ACCEPTED).await.expect("Accepted condition");
    assert_eq!((accepted.status.as_str(), accepted.reason.as_str()), ("True", reasons::ACCEPTED));

    eventually("the NetworkPolicy's PolicyStatus to show 2 of 2 nodes", || async move {
        policy_status(harness, &scene.app, "allow-client").await.and_then(|s| s.status).is_some_and(|s| {
            s.nodes_realized == 2
                && s.nodes_desired == 2
                && s.selected_pods == 2
                && s.observed_generation == Some(1)
                && condition(&s.conditions, conditions::READY).is_some_and(|c| c.status == "True")
        })
    })
    .await;
    // NetworkPolicies have no status of their own: `kubectl describe` shows an Event instead.
    eventually("a Realized Event on the NetworkPolicy", || async move {
        let events = Api::<K8sEvent>::namespaced(harness.client.clone(), &scene.app)
            .list(&Default::default())
            .await
            .expect("list events");
        events.items.iter().any(|event| {
            let regarding = event.regarding.as_ref();
            event.reason.as_deref() == Some(reasons::REALIZED)
                && event.type_.as_deref() == Some("Normal")
                && regarding.and_then(|r| r.kind.as_deref()) == Some("NetworkPolicy")
                && regarding.and_then(|r| r.name.as_deref()) == Some("allow-client")
                && event.note.as_deref() == Some("realized on 2 of 2 nodes")
        })
    })
    .await;
    let stored = policy_status(harness, &scene.app, "allow-client").await.expect("PolicyStatus");
    let owner = &stored.metadata.owner_references.as_ref().expect("owner references")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("NetworkPolicy", "allow-client", Some(true))
    );
    assert_eq!(Some(&owner.uid), np.metadata.uid.as_ref());
    assert_eq!(stored.spec.policy_uid, np.metadata.uid.clone().expect("uid"));

    // A policy change arrives as a delta; the status follows the new generation once both
    // agents report it.
    let change = json!({ "spec": { "priority": 20 } });
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .patch(cnp_name, &PatchParams::default(), &Patch::Merge(change))
        .await
        .expect("patch CNP");
    let message = agent1.next_message().await;
    assert!(matches!(message, OperatorMessage::Delta { .. }), "a change comes as a delta: {message:?}");
    agent1
        .until("carry generation 2", |plan| {
            policy_generation(plan, PolicyKind::ClusterNetworkPolicy, cnp_name) == Some(2)
        })
        .await;
    agent1.report_realized().await;
    eventually("the CNP to be pending at generation 2", || async move {
        cnp_condition(harness, cnp_name, conditions::REALIZED)
            .await
            .is_some_and(|c| c.observed_generation == Some(2) && c.status == "False")
    })
    .await;
    agent2
        .until("carry generation 2", |plan| {
            policy_generation(plan, PolicyKind::ClusterNetworkPolicy, cnp_name) == Some(2)
        })
        .await;
    agent2.report_realized().await;
    eventually("the CNP to be realized at generation 2", || async move {
        cnp_condition(harness, cnp_name, conditions::REALIZED).await.is_some_and(|c| {
            c.status == "True" && c.observed_generation == Some(2) && c.message == "realized on 2 of 2 nodes"
        })
    })
    .await;

    // A failed apply shows in firstErrors. Changing the NetworkPolicy makes it pending on n1.
    let change = json!({ "spec": { "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }], "ports": [{ "port": 8080 }] }] } });
    Api::<NetworkPolicy>::namespaced(harness.client.clone(), &scene.app)
        .patch("allow-client", &PatchParams::default(), &Patch::Merge(change))
        .await
        .expect("patch NP");
    agent1
        .until("carry NP generation 2", |plan| {
            policy_generation(plan, PolicyKind::NetworkPolicy, "allow-client") == Some(2)
        })
        .await;
    agent1.report_failed("iptables-restore: line 3 failed").await;
    eventually("the failure to show in the PolicyStatus", || async move {
        policy_status(harness, &scene.app, "allow-client").await.and_then(|s| s.status).is_some_and(|s| {
            s.first_errors.iter().any(|e| e.node == scene.n1 && e.message.contains("iptables-restore"))
                && condition(&s.conditions, conditions::REALIZED).is_some_and(|c| c.reason == reasons::FAILED)
        })
    })
    .await;

    // A deleted NetworkPolicy loses its PolicyStatus (there is no garbage collector here).
    Api::<NetworkPolicy>::namespaced(harness.client.clone(), &scene.app)
        .delete("allow-client", &DeleteParams::default())
        .await
        .expect("delete NP");
    eventually("the PolicyStatus to be deleted", || async move {
        policy_status(harness, &scene.app, "allow-client").await.is_none()
    })
    .await;
    agent1.until("drop the deleted policy", |plan| !has_policy(plan, PolicyKind::NetworkPolicy, "allow-client")).await;

    assert!(operator_metric(&operator, "palisade_operator_plan_sends_total").await >= 4.0);
    assert_eq!(operator_metric(&operator, "palisade_operator_connected_agents").await, 2.0);
    agent1.close().await;
    agent2.close().await;
    operator.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agent_of_the_node_may_subscribe() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let operator = harness.start_operator("operator-0").await;
    let system = harness.system_namespace.clone();

    // The node-name extra: a token bound to the agent pod on n1 opens n1 ...
    let token_n1 = harness.token(&system, AGENT_SA, Some(&scene.agent_n1)).await;
    let agent = harness.connect(&operator, &scene.n1, Some(&token_n1), true).await.expect("n1's agent may read n1");
    agent.close().await;
    // ... but not n2.
    assert_eq!(harness.connect(&operator, &scene.n2, Some(&token_n1), true).await.err(), Some(403));
    // A token of n2's agent for n1 is refused too.
    let token_n2 = harness.token(&system, AGENT_SA, Some(&scene.agent_n2)).await;
    assert_eq!(harness.connect(&operator, &scene.n1, Some(&token_n2), true).await.err(), Some(403));
    // Another ServiceAccount, even bound to a pod on n1, is refused.
    let intruder_pod = harness.create_pod(&system, "intruder", &scene.n1, &[], "10.9.0.9", Some("intruder")).await;
    let intruder = harness.token(&system, "intruder", Some(&intruder_pod)).await;
    assert_eq!(harness.connect(&operator, &scene.n1, Some(&intruder), true).await.err(), Some(403));
    // The agent's ServiceAccount with an unbound token names no node.
    let unbound = harness.token(&system, AGENT_SA, None).await;
    assert_eq!(harness.connect(&operator, &scene.n1, Some(&unbound), true).await.err(), Some(403));
    // No token, or a token the API server does not know: 401.
    assert_eq!(harness.connect(&operator, &scene.n1, None, true).await.err(), Some(401));
    assert_eq!(harness.connect(&operator, &scene.n1, Some("not-a-token"), true).await.err(), Some(401));
    // Without the subprotocol there is no agreement on the messages.
    assert_eq!(harness.connect(&operator, &scene.n1, Some(&token_n1), false).await.err(), Some(400));

    assert!(operator_metric(&operator, "palisade_operator_refused_subscriptions_total").await >= 7.0);
    operator.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_agent_audience_only_tokens_made_for_it_subscribe() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let audience = "palisade.dev/plan-stream";
    let config = palisade_operator::OperatorConfig {
        agent_token_audience: Some(audience.into()),
        ..harness.config("operator-audience")
    };
    let operator = harness.start_operator_with(config).await;
    let system = harness.system_namespace.clone();

    // A token for the plan stream's audience, bound to the agent pod on n1, opens n1 ...
    let for_stream = harness.token_for(&system, AGENT_SA, Some(&scene.agent_n1), &[audience]).await;
    let agent = harness.connect(&operator, &scene.n1, Some(&for_stream), true).await.expect("n1's agent may read n1");
    agent.close().await;
    // ... but the same pod's token for the API server (what a leaked kubelet-mounted token is) does not,
    let for_api = harness.token(&system, AGENT_SA, Some(&scene.agent_n1)).await;
    assert_eq!(harness.connect(&operator, &scene.n1, Some(&for_api), true).await.err(), Some(401));
    // nor one made for some other audience.
    let for_other = harness.token_for(&system, AGENT_SA, Some(&scene.agent_n1), &["elsewhere"]).await;
    assert_eq!(harness.connect(&operator, &scene.n1, Some(&for_other), true).await.err(), Some(401));
    operator.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_is_reported_while_valid_ones_keep_flowing() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let operator = harness.start_operator("operator-0").await;
    let token_n1 = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;
    let mut agent = harness.connect(&operator, &scene.n1, Some(&token_n1), true).await.expect("accepted");
    agent.next_message().await;

    // The API server already refuses NetworkPolicies the engine would call invalid (an except
    // outside its cidr gets a 422), so the invalid policy here is a ClusterNetworkPolicy whose
    // selector the CRD schema cannot judge: `In` with no values.
    let bad_name = format!("bad-selector-{}", scene.app);
    let bad_name = bad_name.as_str();
    let bad = |values: serde_json::Value| {
        json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": { "name": bad_name },
            "spec": {
                "tier": "Admin", "priority": 5,
                "subject": { "pods": {
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": scene.app } },
                    "podSelector": { "matchExpressions": [{ "key": "app", "operator": "In", "values": values }] },
                } },
                "ingress": [{ "action": "Deny", "from": [{ "namespaces": { "matchLabels": { "team": "evil" } } }] }],
            },
        })
    };
    create_cluster_policy(harness, bad(json!([]))).await;
    create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;

    agent.until("carry the valid policy", |plan| has_policy(plan, PolicyKind::NetworkPolicy, "allow-client")).await;
    agent.report_realized().await;
    eventually("the invalid policy's error in its status", || async move {
        cnp_condition(harness, bad_name, conditions::ACCEPTED).await.is_some_and(|c| {
            c.status == "False" && c.reason == reasons::INVALID && c.message.contains("matchExpressions")
        }) && cnp_condition(harness, bad_name, conditions::REALIZED).await.is_some_and(|c| c.status == "False")
    })
    .await;
    assert!(
        !has_policy(agent.plan.as_ref().expect("plan"), PolicyKind::ClusterNetworkPolicy, bad_name),
        "the invalid policy is quarantined"
    );
    eventually("the valid policy realized on n1 (1 of 2 nodes)", || async move {
        policy_status(harness, &scene.app, "allow-client").await.and_then(|s| s.status).is_some_and(|s| {
            s.nodes_realized == 1
                && s.nodes_desired == 2
                && condition(&s.conditions, conditions::ACCEPTED).is_some_and(|c| c.status == "True")
        })
    })
    .await;

    // Fixing the invalid policy brings it into the plan and its status to Accepted.
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .patch(bad_name, &PatchParams::apply("test").force(), &Patch::Apply(bad(json!(["web"]))))
        .await
        .expect("fix");
    agent
        .until("carry the fixed policy", |plan| {
            policy_generation(plan, PolicyKind::ClusterNetworkPolicy, bad_name) == Some(2)
        })
        .await;
    eventually("the fixed policy to be accepted", || async move {
        cnp_condition(harness, bad_name, conditions::ACCEPTED)
            .await
            .is_some_and(|c| c.status == "True" && c.observed_generation == Some(2))
    })
    .await;

    // Breaking it again must not lift its Deny: generation 2 stays in force while 3 is refused,
    // and status says which generation the nodes enforce.
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .patch(bad_name, &PatchParams::apply("test").force(), &Patch::Apply(bad(json!([]))))
        .await
        .expect("break");
    eventually("the broken edit refused, generation 2 named as enforced", || async move {
        let accepted = cnp_condition(harness, bad_name, conditions::ACCEPTED).await;
        let realized = cnp_condition(harness, bad_name, conditions::REALIZED).await;
        accepted.is_some_and(|c| c.status == "False" && c.observed_generation == Some(3))
            && realized.is_some_and(|c| c.message.contains("enforcing generation 2, the last accepted"))
    })
    .await;
    // Plan messages arrive in order: once a later change is in the agent's plan, a withdrawal of
    // generation 2 would have arrived before it.
    let sentinel = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "sentinel" },
        "spec": { "podSelector": {}, "policyTypes": ["Egress"] },
    });
    create_network_policy(harness, &scene.app, sentinel).await;
    agent.until("carry the sentinel policy", |plan| has_policy(plan, PolicyKind::NetworkPolicy, "sentinel")).await;
    assert_eq!(
        policy_generation(agent.plan.as_ref().expect("plan"), PolicyKind::ClusterNetworkPolicy, bad_name),
        Some(2),
        "the agent still enforces the last accepted generation"
    );
    agent.close().await;
    operator.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_leader_writes_status_and_a_follower_takes_over() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let (leader, follower) = harness.start_leader_and_follower().await;

    let cnp = create_cluster_policy(harness, deny_evil(&scene.app)).await;
    let name = cnp.metadata.name.clone().expect("name");
    let name = name.as_str();
    eventually("the leader to write the CNP's status", || async move {
        cnp_condition(harness, name, conditions::ACCEPTED)
            .await
            .is_some_and(|c| c.status == "True" && c.observed_generation == Some(1))
    })
    .await;
    let stored = Api::<ClusterNetworkPolicy>::all(harness.client.clone()).get(name).await.expect("CNP");
    let managers: Vec<String> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| entry.subresource.as_deref() == Some("status"))
        .filter_map(|entry| entry.manager)
        .collect();
    assert_eq!(managers, vec![palisade_operator::FIELD_MANAGER.to_owned()], "status has one field manager");
    assert!(operator_metric(&leader, "palisade_operator_status_writes_total").await >= 1.0);
    assert_eq!(
        operator_metric(&follower, "palisade_operator_status_writes_total").await,
        0.0,
        "the follower writes nothing"
    );

    // Both replicas serve streams, whoever leads.
    let token = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;
    let mut agent = harness.connect(&follower, &scene.n1, Some(&token), true).await.expect("the follower serves plans");
    agent.next_message().await;
    agent.until("carry the CNP", |plan| has_policy(plan, PolicyKind::ClusterNetworkPolicy, name)).await;
    agent.report_realized().await;

    // The leader goes away; the follower takes the Lease and writes the next change.
    leader.shutdown().await.expect("leader shuts down");
    let follower_ref = &follower;
    eventually("the follower to lead", || async move {
        operator_metric(follower_ref, "palisade_operator_leader").await == 1.0
    })
    .await;
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "priority": 30 } })))
        .await
        .expect("patch CNP");
    eventually("the new leader to write generation 2", || async move {
        cnp_condition(harness, name, conditions::ACCEPTED).await.is_some_and(|c| c.observed_generation == Some(2))
    })
    .await;
    assert!(operator_metric(&follower, "palisade_operator_status_writes_total").await >= 1.0);
    agent.close().await;
    follower.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_counts_agents_connected_to_a_follower() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let (leader, follower) = harness.start_leader_and_follower().await;

    create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;
    let cnp = create_cluster_policy(harness, deny_evil(&scene.app)).await;
    let cnp_name = cnp.metadata.name.clone().expect("name");
    let cnp_name = cnp_name.as_str();
    let carries_both = |plan: &NodePlan| {
        has_policy(plan, PolicyKind::NetworkPolicy, "allow-client")
            && has_policy(plan, PolicyKind::ClusterNetworkPolicy, cnp_name)
    };

    // n1's agent talks to the leader, n2's to the follower.
    let token_n1 = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;
    let mut agent1 = harness.connect(&leader, &scene.n1, Some(&token_n1), true).await.expect("n1 agent accepted");
    agent1.next_message().await;
    agent1.until("carry both policies", carries_both).await;
    agent1.report_realized().await;
    let token_n2 = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n2)).await;
    let mut agent2 = harness.connect(&follower, &scene.n2, Some(&token_n2), true).await.expect("n2 agent accepted");
    agent2.next_message().await;
    agent2.until("carry both policies", carries_both).await;
    agent2.report_realized().await;

    eventually("the CNP to be realized on 2 of 2 nodes", || async move {
        cnp_condition(harness, cnp_name, conditions::REALIZED)
            .await
            .is_some_and(|c| c.status == "True" && c.message == "realized on 2 of 2 nodes")
    })
    .await;
    eventually("the NetworkPolicy to be realized on 2 of 2 nodes", || async move {
        policy_status(harness, &scene.app, "allow-client")
            .await
            .and_then(|s| s.status)
            .is_some_and(|s| s.nodes_realized == 2 && s.nodes_desired == 2)
    })
    .await;
    assert_eq!(
        operator_metric(&follower, "palisade_operator_status_writes_total").await,
        0.0,
        "the follower writes no status"
    );

    // The follower shared n2's realization in one ConfigMap, labelled, in the operator's namespace.
    let config_maps =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(harness.client.clone(), &harness.system_namespace);
    let shared =
        config_maps.get(&format!("palisade-realization-{}", scene.n2)).await.expect("n2's realization ConfigMap");
    assert_eq!(
        shared.metadata.labels.unwrap_or_default().get("palisade.dev/realization").map(String::as_str),
        Some("true")
    );
    assert_eq!(shared.data.unwrap_or_default().get("node"), Some(&scene.n2));

    // A disconnected agent keeps enforcing its last plan: its realization stays.
    agent2.close().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let status = policy_status(harness, &scene.app, "allow-client").await.and_then(|s| s.status).expect("status");
    assert_eq!((status.nodes_realized, status.nodes_desired), (2, 2));

    agent1.close().await;
    leader.shutdown().await.expect("clean shutdown");
    follower.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_serving_certificate_is_served_without_a_restart() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let operator = harness.start_operator("operator-0").await;
    let token = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;
    let mut connected = harness.connect(&operator, &scene.n1, Some(&token), true).await.expect("agent accepted");
    connected.next_message().await;

    // Rotate to a certificate from another CA, as cert-manager would, key first.
    let (new_ca, new_cert, new_key) = serving_certificate();
    std::fs::write(&harness.key, new_key).expect("write key");
    std::fs::write(&harness.cert, new_cert).expect("write cert");
    let (operator, token, new_ca) = (&operator, &token, &new_ca);
    eventually("new connections to be served the rotated certificate", || async move {
        harness.connect_trusting(new_ca, operator, &scene.n1, Some(token), true).await.is_ok()
    })
    .await;
    let old_ca_refused = harness.connect_trusting(&harness.ca_pem, operator, &scene.n1, Some(token), true).await;
    assert!(old_ca_refused.is_err(), "a client trusting only the old CA must be refused");
    assert!(operator_metric(operator, "palisade_operator_tls_reloads_total").await >= 1.0);

    // The stream opened before the rotation keeps flowing.
    create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;
    connected.until("carry the new policy", |plan| has_policy(plan, PolicyKind::NetworkPolicy, "allow-client")).await;

    // A broken pair is refused and the rotated certificate stays in use.
    std::fs::write(&harness.cert, "not a certificate").expect("write cert");
    eventually("the broken certificate to be counted as a failed reload", || async move {
        operator_metric(operator, "palisade_operator_tls_reload_failures_total").await >= 1.0
    })
    .await;
    assert!(harness.connect_trusting(new_ca, operator, &scene.n1, Some(token), true).await.is_ok());
    connected.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_pinged_then_dropped() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let operator = harness.start_operator("operator-0").await;
    let token_n1 = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;

    // A live agent reads (and so answers pings): it stays connected across several idle timeouts.
    let mut live = harness.connect(&operator, &scene.n1, Some(&token_n1), true).await.expect("accepted");
    live.next_message().await;
    let pings = live.read_for(Duration::from_secs(7)).await;
    assert!(pings >= 3, "the operator pings an agent that has nothing to receive ({pings} pings in 7 s)");
    assert_eq!(operator_metric(&operator, "palisade_operator_connected_agents").await, 1.0);
    live.close().await;

    // A silent agent (connected, reading nothing, answering nothing: what a half-open connection
    // looks like from the operator) must be dropped, not kept as connected forever.
    let mut silent = harness.connect(&operator, &scene.n1, Some(&token_n1), true).await.expect("accepted");
    silent.next_message().await;
    eventually("the silent agent to be dropped", || async {
        operator_metric(&operator, "palisade_operator_connected_agents").await == 0.0
    })
    .await;
    assert!(silent.closed_by_operator().await, "the operator closed the silent stream");
    operator.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_agents_cannot_be_authenticated() {
    init_logging();
    let harness = &Harness::start().await;
    // An operator identity with every right it needs but `tokenreviews create`.
    let groups =
        ["", "networking.k8s.io", "policy.networking.k8s.io", "palisade.dev", "coordination.k8s.io", "events.k8s.io"];
    let kubeconfig = limited_identity(
        harness,
        "operator-without-tokenreviews",
        json!([{
            "apiGroups": groups, "resources": ["*"], "verbs": ["*"],
        }]),
    )
    .await;
    let config =
        palisade_operator::OperatorConfig { kubeconfig: Some(kubeconfig), ..harness.config("operator-limited") };
    let operator = palisade_operator::start(config).await.expect("operator starts");
    let probe = operator.probe_address;
    eventually("/readyz to name the missing TokenReview permission", || async move {
        http_get(probe, "/readyz").await.is_some_and(|(status, body)| status == 503 && body.contains("tokenreviews"))
    })
    .await;
    operator.shutdown().await.expect("clean shutdown");
}

/// A kubeconfig for a new ServiceAccount `account` holding exactly `rules` cluster-wide.
async fn limited_identity(harness: &Harness, account: &str, rules: serde_json::Value) -> std::path::PathBuf {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let token = harness.token(&harness.system_namespace, account, None).await;
    let name = format!("{}-{account}", harness.system_namespace);
    let role: ClusterRole =
        serde_json::from_value(json!({ "metadata": { "name": name }, "rules": rules })).expect("role");
    Api::<ClusterRole>::all(harness.client.clone()).create(&PostParams::default(), &role).await.expect("create role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": harness.system_namespace }],
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(harness.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let kubeconfig = harness.dir.path().join(format!("{account}.kubeconfig"));
    std::fs::write(&kubeconfig, harness.plane.kubeconfig_for_token(&token)).expect("write kubeconfig");
    kubeconfig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_status_writes_back_off_per_policy() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    // Everything but writing status: every status write is refused with 403.
    let kubeconfig = limited_identity(harness, "operator-without-status-rights", json!([
        { "apiGroups": ["", "networking.k8s.io", "coordination.k8s.io", "events.k8s.io"], "resources": ["*"], "verbs": ["*"] },
        { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
        { "apiGroups": ["policy.networking.k8s.io", "palisade.dev"], "resources": ["*"], "verbs": ["get", "list", "watch"] },
    ]))
    .await;
    create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;
    let config =
        palisade_operator::OperatorConfig { kubeconfig: Some(kubeconfig), ..harness.config("operator-no-status") };
    let operator = palisade_operator::start(config).await.expect("operator starts");
    eventually("a refused status write", || async {
        operator_metric(&operator, "palisade_operator_status_write_failures_total").await >= 1.0
    })
    .await;
    let first = operator_metric(&operator, "palisade_operator_status_write_failures_total").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = operator_metric(&operator, "palisade_operator_status_write_failures_total").await;
    // Backing off from 200 ms doubling, one policy fails at most 7 times in 10 s; retrying at
    // every 200 ms flush, as before, it failed about 50 times.
    println!("refused status writes in 10 s: {}", later - first);
    assert!(later - first <= 10.0, "{} failed writes in 10 s: no backoff", later - first);
    operator.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_status_that_drifts_is_repaired_from_the_watch() {
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    // No periodic reconcile during the test: only watching what is stored can notice drift.
    let mut config = harness.config("operator-drift");
    config.timings.status_full_reconcile = Duration::from_secs(3600);
    let operator = palisade_operator::start(config).await.expect("operator starts");
    create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;
    let cnp = create_cluster_policy(harness, deny_evil(&scene.app)).await;
    let cnp_name = cnp.metadata.name.clone().expect("name");
    eventually("status on both policies", || async {
        policy_status(harness, &scene.app, "allow-client")
            .await
            .is_some_and(|s| s.status.is_some_and(|status| status.selected_pods == 2))
            && cnp_condition(harness, &cnp_name, conditions::ACCEPTED).await.is_some()
    })
    .await;

    // Someone else rewrites both statuses.
    let tamper = PatchParams::default();
    let statuses = Api::<PolicyStatus>::namespaced(harness.client.clone(), &scene.app);
    statuses
        .patch_status("allow-client", &tamper, &Patch::Merge(json!({ "status": { "selectedPods": 999 } })))
        .await
        .expect("tamper with the PolicyStatus");
    let forged = json!({ "status": { "conditions": [{
        "type": conditions::ACCEPTED, "status": "False", "reason": "Forged", "message": "forged",
        "lastTransitionTime": "2020-01-01T00:00:00Z",
    }] } });
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .patch_status(&cnp_name, &tamper, &Patch::Merge(forged))
        .await
        .expect("tamper with the ClusterNetworkPolicy's status");
    // And leaves a PolicyStatus behind for a NetworkPolicy that does not exist.
    let orphan: PolicyStatus = serde_json::from_value(json!({
        "apiVersion": "palisade.dev/v1alpha1", "kind": "PolicyStatus",
        "metadata": { "name": "gone", "namespace": scene.app },
        "spec": { "policyName": "gone", "policyUID": "0000" },
    }))
    .expect("orphan");
    statuses.create(&PostParams::default(), &orphan).await.expect("create an orphan PolicyStatus");

    eventually("the PolicyStatus to be repaired", || async {
        policy_status(harness, &scene.app, "allow-client")
            .await
            .is_some_and(|s| s.status.is_some_and(|status| status.selected_pods == 2))
    })
    .await;
    eventually("the ClusterNetworkPolicy's status to be repaired", || async {
        cnp_condition(harness, &cnp_name, conditions::ACCEPTED).await.is_some_and(|c| c.status == "True")
    })
    .await;
    eventually("the orphan PolicyStatus to be removed", || async {
        policy_status(harness, &scene.app, "gone").await.is_none()
    })
    .await;
    operator.shutdown().await.expect("clean shutdown");
}

fn tied(name: &str, action: &str, priority: i32) -> serde_json::Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": { "name": name },
        "spec": {
            "tier": "Admin", "priority": priority,
            "subject": { "namespaces": { "matchLabels": { "team": "web" } } },
            "ingress": [{ "name": "r", "action": action, "from": [{ "namespaces": {} }] }],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_pair_that_bypassed_admission_is_flagged_on_both_and_cleared_when_resolved() {
    init_logging();
    let harness = &Harness::start().await;
    // Only the partners' tracking may bring the first policy's condition up to date.
    let mut config = harness.config("operator-conflicts");
    config.timings.status_full_reconcile = Duration::from_secs(3600);
    let operator = palisade_operator::start(config).await.expect("operator starts");
    // No webhook runs here, as when policies predate the install or the webhook is down.
    create_cluster_policy(harness, tied("tie-accept", "Accept", 7)).await;
    eventually("tie-accept to be written without conflicts", || async {
        cnp_condition(harness, "tie-accept", conditions::CONFLICTING).await.is_some_and(|c| c.status == "False")
    })
    .await;
    create_cluster_policy(harness, tied("tie-deny", "Deny", 7)).await;
    for (name, other) in [("tie-accept", "tie-deny"), ("tie-deny", "tie-accept")] {
        eventually(&format!("{name} to be Conflicting"), || async move {
            cnp_condition(harness, name, conditions::CONFLICTING).await.is_some_and(|c| {
                c.status == "True" && c.reason == reasons::CONFLICTING && c.message.contains(&format!("\"{other}\""))
            })
        })
        .await;
    }
    let condition = cnp_condition(harness, "tie-accept", conditions::CONFLICTING).await.expect("condition");
    assert!(condition.message.contains("have the same tier (Admin) and priority (7)"), "{}", condition.message);

    // Another priority resolves the tie: both conditions clear.
    Api::<ClusterNetworkPolicy>::all(harness.client.clone())
        .patch("tie-deny", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "priority": 8 } })))
        .await
        .expect("move the deny to another priority");
    for name in ["tie-accept", "tie-deny"] {
        eventually(&format!("{name} to stop conflicting"), || async move {
            cnp_condition(harness, name, conditions::CONFLICTING)
                .await
                .is_some_and(|c| c.status == "False" && c.reason == reasons::NO_CONFLICT)
        })
        .await;
    }
    operator.shutdown().await.expect("clean shutdown");
}

/// Whether some group of the plan holds `address`.
fn any_group_holds(plan: &NodePlan, address: &str) -> bool {
    let address: std::net::IpAddr = address.parse().expect("address");
    plan.groups
        .values()
        .any(|group| matches!(group, palisade_engine::plan::Group::Addresses(set) if set.contains(&address)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_the_previous_version_gets_whole_groups_and_ends_with_the_same_plan() {
    use palisade_protocol::StreamVersion;
    init_logging();
    let harness = &Harness::start().await;
    let scene = &scene(harness).await;
    let operator = harness.start_operator("operator-0").await;
    create_network_policy(harness, &scene.app, allow_client(&scene.app)).await;

    let token = harness.token(&harness.system_namespace, AGENT_SA, Some(&scene.agent_n1)).await;
    let (ca, node) = (&harness.ca_pem, &scene.n1);
    let mut old = harness.connect_offering(ca, &operator, node, Some(&token), &[StreamVersion::V1]).await.expect("v1");
    let mut new = harness.connect_offering(ca, &operator, node, Some(&token), &StreamVersion::ALL).await.expect("v2");
    for agent in [&mut old, &mut new] {
        agent.until("carry the policy", |plan| has_policy(plan, PolicyKind::NetworkPolicy, "allow-client")).await;
    }

    // A second client joins the policy's peer group, which both web pods' nodes already hold.
    harness.create_pod(&scene.app, "client-2", &scene.n2, &[("app", "client")], "10.1.0.4", None).await;
    let mut patched = false;
    while !new.plan.as_ref().is_some_and(|plan| any_group_holds(plan, "10.1.0.4")) {
        if let OperatorMessage::Delta { delta, sent_at_us, .. } = new.next_message().await {
            patched |= !delta.patched_groups.is_empty();
            assert!(sent_at_us.is_some(), "V2 messages carry their send time");
        }
    }
    assert!(patched, "V2: the group the node keeps is patched, not resent");
    let mut whole = false;
    while !old.plan.as_ref().is_some_and(|plan| any_group_holds(plan, "10.1.0.4")) {
        if let OperatorMessage::Delta { delta, sent_at_us, .. } = old.next_message().await {
            assert!(delta.patched_groups.is_empty(), "a V1 agent cannot read patches: {delta:?}");
            assert_eq!(sent_at_us, None, "V1 messages are unchanged");
            whole |= !delta.upserted_groups.is_empty();
        }
    }
    assert!(whole, "V1: the changed group is sent whole");
    assert_eq!(old.plan, new.plan, "both versions hold the same plan");
}
