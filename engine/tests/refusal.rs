//! A refused policy fails closed: an invalid edit keeps the last accepted version in force, and
//! a policy never accepted enforces its fail-closed stand-in (Deny for its subjects where it has
//! Deny or Pass rules; isolation for a NetworkPolicy), judged by the plans and the reference.

mod common;

use std::collections::BTreeMap;

use common::*;
use palisade_engine::model::*;
use palisade_engine::reference::verdict;
use palisade_engine::{Enforcement, Engine, PlanEvaluator};

const XA: &str = "10.1.0.1";
const YA: &str = "10.1.0.2";
const EXTERNAL: &str = "192.0.2.1";

fn world() -> Cluster {
    cluster(
        vec![namespace("x", &[("team", "x")]), namespace("y", &[("team", "y")])],
        vec![node("n1", &["10.0.0.1"], &[])],
        vec![pod("x", "a", "n1", &[XA], &[("app", "a")]), pod("y", "a", "n1", &[YA], &[("app", "a")])],
    )
}

fn revision(generation: i64) -> Revision {
    Revision { uid: "uid-1".into(), generation }
}

/// Admin Deny of ingress to team x from team y.
fn admin_deny(generation: i64) -> ClusterNetworkPolicy {
    let mut policy = cnp("deny-y", Tier::Admin, 10, CnpSubject::Namespaces(select(&[("team", "x")])));
    policy.revision = revision(generation);
    policy.ingress = vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(select(&[("team", "y")]))], None)];
    policy
}

/// The same policy edited with a mistake validation refuses: a CIDR that does not parse.
fn with_bad_cidr(mut policy: ClusterNetworkPolicy, generation: i64) -> ClusterNetworkPolicy {
    policy.revision = revision(generation);
    policy.egress = vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Networks(vec!["10.0.0.0/33".into()])], None)];
    policy
}

/// Whether the engine's plans allow TCP/80 from `src` to `dst`.
fn allowed(engine: &mut Engine, src: &str, dst: &str) -> bool {
    let node_ips: BTreeMap<String, Vec<std::net::IpAddr>> = node_ips(engine.cluster());
    PlanEvaluator::new(&engine.node_plans(), &node_ips).verdict(&flow(src, dst, Protocol::Tcp, 80)).allowed
}

#[test]
fn an_invalid_edit_keeps_the_last_accepted_version_in_force() {
    let mut engine = Engine::with_cluster(world());
    let reference = Policy::Cluster(admin_deny(1)).reference();
    engine.upsert_policy(Policy::Cluster(admin_deny(1)));
    assert!(!allowed(&mut engine, YA, XA), "the Admin Deny denies y -> x");
    assert_eq!(engine.enforcement(&reference), Some(Enforcement::Current(revision(1))));

    engine.upsert_policy(Policy::Cluster(with_bad_cidr(admin_deny(1), 2)));
    assert!(!engine.errors_of(&reference).is_empty(), "generation 2 is refused with its field");
    assert!(engine.errors_of(&reference)[0].field.contains("networks"), "{:?}", engine.errors_of(&reference));
    assert!(!allowed(&mut engine, YA, XA), "an invalid edit must not lift the Deny");
    assert_eq!(engine.enforcement(&reference), Some(Enforcement::LastAccepted(revision(1))));

    engine.upsert_policy(Policy::Cluster(admin_deny(3)));
    assert!(engine.errors_of(&reference).is_empty());
    assert_eq!(engine.enforcement(&reference), Some(Enforcement::Current(revision(3))));

    engine.remove_policy(&reference);
    assert!(allowed(&mut engine, YA, XA), "deleting the policy lifts it");
    assert_eq!(engine.enforcement(&reference), None);
}

#[test]
fn a_policy_never_accepted_denies_everything_its_deny_rules_could_for_its_subjects() {
    let cluster = world();
    let invalid = Policy::Cluster(with_bad_cidr(admin_deny(1), 1));
    let mut engine = Engine::with_cluster(cluster.clone());
    engine.upsert_policy(invalid.clone());
    assert_eq!(engine.enforcement(&invalid.reference()), Some(Enforcement::FailClosed(revision(1))));
    // Ingress had a Deny rule: every ingress to the subjects (team x) is denied, from anywhere.
    assert!(!allowed(&mut engine, YA, XA));
    assert!(!allowed(&mut engine, EXTERNAL, XA));
    // Egress had a Deny rule too: x/a reaches nothing; pods outside the subject are untouched.
    assert!(!allowed(&mut engine, XA, YA));
    assert!(allowed(&mut engine, YA, EXTERNAL));
    // The reference evaluator says the same.
    for (src, dst) in [(YA, XA), (EXTERNAL, XA), (XA, YA), (YA, EXTERNAL)] {
        let reference = verdict(&cluster, std::slice::from_ref(&invalid), &flow(src, dst, Protocol::Tcp, 80));
        assert_eq!(reference.allowed, allowed(&mut engine, src, dst), "{src} -> {dst}");
    }
}

#[test]
fn a_refused_policy_with_only_accept_rules_stands_in_with_nothing_to_deny() {
    let mut policy = with_bad_cidr(admin_deny(1), 1);
    policy.ingress[0].action = CnpAction::Accept;
    policy.egress[0].action = CnpAction::Accept;
    let mut engine = Engine::with_cluster(world());
    engine.upsert_policy(Policy::Cluster(policy));
    assert!(allowed(&mut engine, YA, XA) && allowed(&mut engine, XA, YA), "Accept rules never deny");
}

#[test]
fn a_network_policy_never_accepted_isolates_its_pods() {
    let mut policy = np("x", "web", select(&[("app", "a")]));
    policy.ingress = vec![NetworkPolicyRule {
        peers: vec![NetworkPolicyPeer {
            ip_block: Some(IpBlock { cidr: "not-a-cidr".into(), except: vec![] }),
            ..NetworkPolicyPeer::default()
        }],
        ports: vec![],
    }];
    let mut engine = Engine::with_cluster(world());
    engine.upsert_policy(Policy::Network(policy.clone()));
    assert!(!engine.errors().is_empty());
    assert!(!allowed(&mut engine, YA, XA), "x/a is isolated for ingress and allows nothing");
    assert!(allowed(&mut engine, XA, YA), "egress was not a policy type: untouched");
}

#[test]
fn a_refusal_from_conversion_keeps_the_last_accepted_version_too() {
    let mut engine = Engine::with_cluster(world());
    let policy = Policy::Cluster(admin_deny(1));
    let reference = policy.reference();
    engine.upsert_policy(policy);
    let error = palisade_engine::PolicyError {
        policy: reference.clone(),
        field: "spec.ingress[0].action".into(),
        message: "unknown action \"Dney\"".into(),
    };
    engine.refuse_policy(reference.clone(), vec![error], None);
    assert!(!allowed(&mut engine, YA, XA));
    assert_eq!(engine.enforcement(&reference), Some(Enforcement::LastAccepted(revision(1))));

    // Never accepted and no stand-in readable: nothing is in force, and the engine says so.
    let other = PolicyRef { kind: PolicyKind::ClusterNetworkPolicy, namespace: None, name: "unreadable".into() };
    engine.refuse_policy(other.clone(), Vec::new(), None);
    assert_eq!(engine.enforcement(&other), Some(Enforcement::Nothing));
}
