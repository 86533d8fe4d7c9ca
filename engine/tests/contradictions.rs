//! Soundness and completeness of the contradiction analysis, judged by the reference evaluator.
//!
//! - Every conflict the analysis reports carries a witness on which the two policies really
//!   decide differently when their order is swapped, and every rule it calls shadowed or
//!   redundant really decides nothing its earlier rules do not.
//! - Whenever a small random universe holds a flow on which two ClusterNetworkPolicies of one
//!   tier and priority decide differently, the analysis has reported that pair.

mod common;

use common::*;
use palisade_engine::analysis::{Check, Finding, Witness, analyze};
use palisade_engine::model::*;
use palisade_engine::plan::{Action, Direction};
use palisade_engine::reference::Reference;
use palisade_engine::validate::validate;
use palisade_engine::verdict::{Decision, Flow, Reason};
use proptest::prelude::*;

/// What a direction's decision says, without naming the policy: the action of the deciding rule,
/// or `None` when no rule decided (Pass included: it hands the flow on).
fn outcome(decision: &Decision) -> Option<Action> {
    match &decision.reason {
        Reason::Rule { action, .. } => Some(*action),
        _ => None,
    }
}

fn decision(cluster: &Cluster, policies: &[Policy], flow: &Flow, direction: Direction) -> Decision {
    let verdict = Reference::new(cluster, policies).verdict(flow);
    match direction {
        Direction::Ingress => verdict.ingress,
        Direction::Egress => verdict.egress,
    }
}

fn named(policy: &ClusterNetworkPolicy, name: &str) -> Policy {
    Policy::Cluster(ClusterNetworkPolicy { name: name.to_string(), ..policy.clone() })
}

/// The outcomes for a flow with `a` ordered first, then with `b` ordered first (same tier and
/// priority, so the order is by name).
fn both_orders(
    cluster: &Cluster,
    a: &ClusterNetworkPolicy,
    b: &ClusterNetworkPolicy,
    flow: &Flow,
    direction: Direction,
) -> (Option<Action>, Option<Action>) {
    let a_first = [named(a, "first"), named(b, "second")];
    let b_first = [named(a, "second"), named(b, "first")];
    (outcome(&decision(cluster, &a_first, flow, direction)), outcome(&decision(cluster, &b_first, flow, direction)))
}

/// Two ClusterNetworkPolicies of one tier and priority, both valid.
fn arb_tied_pair() -> impl Strategy<Value = (ClusterNetworkPolicy, ClusterNetworkPolicy)> {
    (arb_cluster_policy(), arb_cluster_policy())
        .prop_map(|(a, mut b)| {
            b.tier = a.tier;
            b.priority = a.priority;
            (ClusterNetworkPolicy { name: "a".into(), ..a }, ClusterNetworkPolicy { name: "b".into(), ..b })
        })
        .prop_filter("both valid", |(a, b)| {
            validate(&Policy::Cluster(a.clone())).is_ok() && validate(&Policy::Cluster(b.clone())).is_ok()
        })
}

/// A universe the analysis's model of a cluster covers: every namespace exists and carries its
/// name label (the API server adds it to every namespace).
fn arb_universe() -> impl Strategy<Value = Cluster> {
    arb_cluster().prop_map(|mut cluster| {
        for name in NAMESPACES {
            let namespace = cluster.namespaces.entry(name.to_string()).or_insert_with(|| namespace(name, &[]));
            namespace.labels.insert("kubernetes.io/metadata.name".into(), name.to_string());
        }
        cluster
    })
}

fn conflicts(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|finding| finding.check == Check::Conflict).collect()
}

fn check_witness_is_a_world(witness: &Witness) -> Result<(), TestCaseError> {
    prop_assert_ne!(witness.flow.src, witness.flow.dst);
    let subject = witness.cluster.pods.get(&witness.subject).expect("the witness holds its subject");
    prop_assert!(subject.is_policy_endpoint());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_conflict_witness_decides_differently_in_the_two_orders((a, b) in arb_tied_pair()) {
        let findings = analyze(&[Policy::Cluster(a.clone()), Policy::Cluster(b.clone())], None);
        for finding in conflicts(&findings) {
            let witness = finding.witness.as_ref().expect("a conflict carries a witness");
            check_witness_is_a_world(witness)?;
            let (a_first, b_first) = both_orders(&witness.cluster, &a, &b, &witness.flow, witness.direction);
            prop_assert_ne!(a_first, b_first, "{}\nwitness {:?}", finding.message, witness);
        }
    }

}

proptest! {
    // Each case judges every flow of a universe four times over; fewer cases keep it quick.
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_tie_that_decides_some_flow_differently_is_reported((a, b) in arb_tied_pair(), universe in arb_universe()) {
        let disagreement = flows(&universe).into_iter().find_map(|flow| {
            [Direction::Ingress, Direction::Egress].into_iter().find_map(|direction| {
                let (a_first, b_first) = both_orders(&universe, &a, &b, &flow, direction);
                (a_first != b_first).then_some((flow, direction, a_first, b_first))
            })
        });
        if let Some(disagreement) = disagreement {
            let findings = analyze(&[Policy::Cluster(a.clone()), Policy::Cluster(b.clone())], None);
            prop_assert!(!conflicts(&findings).is_empty(), "missed: {:?} in {:?}", disagreement, universe);
        }
    }

    #[test]
    fn a_rule_called_shadowed_or_redundant_never_decides(policy in arb_cluster_policy(), universe in arb_universe()) {
        let policy = Policy::Cluster(policy);
        prop_assume!(validate(&policy).is_ok());
        let findings = analyze(std::slice::from_ref(&policy), None);
        let never: Vec<(Direction, usize, &Finding)> = findings
            .iter()
            .filter(|finding| matches!(finding.check, Check::ShadowedRule | Check::RedundantRule))
            .map(|finding| {
                let (list, index) = finding.field.trim_start_matches("spec.").split_once('[').expect("a rule field");
                let index: usize = index.trim_end_matches(']').parse().expect("a rule index");
                let direction = if list == "ingress" { Direction::Ingress } else { Direction::Egress };
                (direction, index, finding)
            })
            .collect();
        let reference = Reference::new(&universe, std::slice::from_ref(&policy));
        for flow in flows(&universe) {
            let verdict = reference.verdict(&flow);
            for (direction, index, finding) in &never {
                let decision = match direction {
                    Direction::Ingress => &verdict.ingress,
                    Direction::Egress => &verdict.egress,
                };
                let decided_by_it = matches!(&decision.reason, Reason::Rule { rule, .. } if rule == index);
                prop_assert!(!decided_by_it, "{} yet it decides {:?}", finding.message, flow);
            }
        }
        for finding in findings.iter().filter(|finding| finding.check == Check::ShadowedRule) {
            let witness = finding.witness.as_ref().expect("a shadowed rule carries a witness");
            check_witness_is_a_world(witness)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

fn named_rule(name: &str, action: CnpAction, peers: Vec<CnpPeer>, protocols: Option<Vec<CnpProtocol>>) -> CnpRule {
    CnpRule { name: Some(name.into()), ..cnp_rule(action, peers, protocols) }
}

fn tcp_port(port: i32) -> Option<Vec<CnpProtocol>> {
    Some(vec![CnpProtocol::Port { protocol: Protocol::Tcp, port: CnpPort::Number(port) }])
}

#[test]
fn two_admin_policies_at_one_priority_that_accept_and_deny_the_same_traffic_conflict() {
    let web = CnpSubject::Namespaces(select(&[("team", "web")]));
    let mut allow = cnp("allow-web", Tier::Admin, 10, web.clone());
    allow.ingress.push(named_rule(
        "a",
        CnpAction::Accept,
        vec![CnpPeer::Namespaces(select(&[("env", "prod")]))],
        tcp_port(80),
    ));
    let mut deny = cnp("deny-web", Tier::Admin, 10, web);
    deny.ingress.push(named_rule("d", CnpAction::Deny, vec![CnpPeer::Namespaces(LabelSelector::default())], None));
    let findings = analyze(&[Policy::Cluster(allow), Policy::Cluster(deny)], None);
    let conflict = conflicts(&findings);
    assert_eq!(conflict.len(), 1, "{findings:#?}");
    assert_eq!(
        conflict[0].message,
        "ClusterNetworkPolicy \"deny-web\" ingress rule \"d\" (Deny) and ClusterNetworkPolicy \"allow-web\" ingress rule \"a\" (Accept) have the same tier (Admin) and priority (10), and both match TCP 80 from a pod in a namespace labelled env=prod to a pod in a namespace labelled team=web. Give one of them another priority."
    );
    assert_eq!(conflict[0].field, "spec.ingress[0]");
}

#[test]
fn the_same_pair_at_different_priorities_or_for_disjoint_traffic_does_not_conflict() {
    let web = CnpSubject::Namespaces(select(&[("team", "web")]));
    let mut allow = cnp("allow-web", Tier::Admin, 10, web.clone());
    allow.ingress.push(cnp_rule(
        CnpAction::Accept,
        vec![CnpPeer::Namespaces(select(&[("env", "prod")]))],
        tcp_port(80),
    ));
    let mut deny = cnp("deny-web", Tier::Admin, 11, web.clone());
    deny.ingress.push(cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(LabelSelector::default())], None));
    let mut deny_other_port = cnp("deny-443", Tier::Admin, 10, web);
    deny_other_port.ingress.push(cnp_rule(
        CnpAction::Deny,
        vec![CnpPeer::Namespaces(LabelSelector::default())],
        tcp_port(443),
    ));
    let findings = analyze(&[Policy::Cluster(allow), Policy::Cluster(deny), Policy::Cluster(deny_other_port)], None);
    assert!(conflicts(&findings).is_empty(), "{findings:#?}");
}

#[test]
fn a_rule_behind_a_wider_rule_with_another_action_is_shadowed_and_with_the_same_action_redundant() {
    let mut policy = cnp("ordered", Tier::Admin, 5, CnpSubject::Namespaces(LabelSelector::default()));
    policy.ingress = vec![
        named_rule("deny-all", CnpAction::Deny, vec![CnpPeer::Namespaces(LabelSelector::default())], None),
        named_rule("allow-web", CnpAction::Accept, vec![CnpPeer::Namespaces(select(&[("team", "web")]))], tcp_port(80)),
        named_rule("deny-web", CnpAction::Deny, vec![CnpPeer::Namespaces(select(&[("team", "web")]))], None),
    ];
    let findings = analyze(&[Policy::Cluster(policy)], None);
    let shadowed: Vec<_> = findings.iter().filter(|f| f.check == Check::ShadowedRule).collect();
    let redundant: Vec<_> = findings.iter().filter(|f| f.check == Check::RedundantRule).collect();
    assert_eq!(shadowed.len(), 1, "{findings:#?}");
    assert_eq!(shadowed[0].field, "spec.ingress[1]");
    assert!(
        shadowed[0].message.contains("ingress rule \"deny-all\" (Deny) decides otherwise"),
        "{}",
        shadowed[0].message
    );
    assert_eq!(redundant.len(), 1, "{findings:#?}");
    assert_eq!(redundant[0].field, "spec.ingress[2]");
}

/// A shadowed rule has a defined meaning upstream (the first matching rule decides, so it decides
/// nothing), and the network-policy-api conformance suite writes such policies on purpose before it
/// reorders their rules: refusing them would refuse valid, conformant policies. Only a tie between
/// policies, whose order upstream leaves to the implementation, is refused.
#[test]
fn a_shadowed_rule_is_admitted_with_a_warning() {
    use palisade_engine::analysis::Severity;
    let mut policy = cnp("default", Tier::Baseline, 0, CnpSubject::Namespaces(LabelSelector::default()));
    let ravenclaw = || vec![CnpPeer::Namespaces(select(&[("house", "ravenclaw")]))];
    policy.ingress = vec![
        named_rule("allow-from-ravenclaw-everything", CnpAction::Accept, ravenclaw(), None),
        named_rule("deny-from-ravenclaw-everything", CnpAction::Deny, ravenclaw(), None),
    ];
    let findings = analyze(&[Policy::Cluster(policy)], None);
    let shadowed: Vec<_> = findings.iter().filter(|f| f.check == Check::ShadowedRule).collect();
    assert_eq!(shadowed.len(), 1, "{findings:#?}");
    assert_eq!(shadowed[0].severity, Severity::Warning, "{:#?}", shadowed[0]);
    assert!(findings.iter().all(|f| f.severity == Severity::Warning), "{findings:#?}");
}

#[test]
fn an_admin_deny_of_everything_a_network_policy_allows_is_a_warning() {
    let mut deny =
        cnp("lockdown", Tier::Admin, 1, CnpSubject::Namespaces(select(&[("kubernetes.io/metadata.name", "shop")])));
    deny.ingress.push(cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(LabelSelector::default())], None));
    let mut allow = np("shop", "allow-all", LabelSelector::default());
    // Every pod of every namespace (outside addresses are not pods, and CNP ingress cannot name them).
    let every_pod = NetworkPolicyPeer { namespace_selector: Some(LabelSelector::default()), ..Default::default() };
    allow.ingress.push(NetworkPolicyRule { peers: vec![every_pod], ports: vec![tcp(80)] });
    let findings = analyze(&[Policy::Cluster(deny.clone()), Policy::Network(allow.clone())], None);
    assert!(findings.iter().any(|f| f.check == Check::AdminDenyOverrides), "{findings:#?}");

    // Denying only pods of other namespaces leaves the NetworkPolicy something to allow.
    deny.ingress[0].peers = vec![CnpPeer::Namespaces(select(&[("env", "prod")]))];
    let findings = analyze(&[Policy::Cluster(deny), Policy::Network(allow)], None);
    assert!(!findings.iter().any(|f| f.check == Check::AdminDenyOverrides), "{findings:#?}");
}

#[test]
fn egress_isolation_without_dns_is_a_warning_unless_some_policy_allows_it() {
    let mut isolate = np("shop", "egress-web-only", LabelSelector::default());
    isolate.policy_types = Some(vec![PolicyType::Egress]);
    isolate.egress.push(NetworkPolicyRule { peers: vec![], ports: vec![tcp(80)] });
    let findings = analyze(&[Policy::Network(isolate.clone())], None);
    assert!(findings.iter().any(|f| f.check == Check::NoDns), "{findings:#?}");

    let mut dns = np("shop", "dns", LabelSelector::default());
    dns.policy_types = Some(vec![PolicyType::Egress]);
    dns.egress.push(NetworkPolicyRule {
        peers: vec![],
        ports: vec![NetworkPolicyPort {
            protocol: Some(Ok(Protocol::Udp)),
            port: Some(PortValue::Number(53)),
            end_port: None,
        }],
    });
    let findings = analyze(&[Policy::Network(isolate), Policy::Network(dns)], None);
    assert!(!findings.iter().any(|f| f.check == Check::NoDns), "{findings:#?}");
}

#[test]
fn host_bits_and_a_direction_isolated_without_rules_are_warnings() {
    let mut policy = np("shop", "odd", LabelSelector::default());
    policy.policy_types = Some(vec![PolicyType::Ingress, PolicyType::Egress]);
    policy.ingress.push(NetworkPolicyRule {
        peers: vec![NetworkPolicyPeer {
            ip_block: Some(IpBlock { cidr: "10.0.0.1/8".into(), except: vec![] }),
            ..Default::default()
        }],
        ports: vec![],
    });
    let findings = analyze(&[Policy::Network(policy)], None);
    let checks: Vec<Check> = findings.iter().map(|f| f.check).collect();
    assert!(checks.contains(&Check::CidrHostBits), "{findings:#?}");
    assert!(checks.contains(&Check::IsolatedWithoutRules), "{findings:#?}");
    assert!(findings.iter().all(|f| f.severity == palisade_engine::analysis::Severity::Warning), "{findings:#?}");
}

/// The properties above prove little if conflicts, disagreements and shadowed rules are rare
/// among generated cases: count them.
#[test]
fn generated_pairs_often_conflict_and_often_do_not() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (arb_tied_pair(), arb_universe());
    let cases = 300;
    let (mut reported, mut disagreeing, mut ordered) = (0, 0, 0);
    for _ in 0..cases {
        let ((a, b), universe) = strategy.new_tree(&mut runner).expect("a generated pair").current();
        let findings = analyze(&[Policy::Cluster(a.clone()), Policy::Cluster(b.clone())], None);
        if !conflicts(&findings).is_empty() {
            reported += 1;
        }
        if findings.iter().any(|f| matches!(f.check, Check::ShadowedRule | Check::RedundantRule)) {
            ordered += 1;
        }
        let disagrees = flows(&universe).into_iter().any(|flow| {
            [Direction::Ingress, Direction::Egress].into_iter().any(|direction| {
                let (a_first, b_first) = both_orders(&universe, &a, &b, &flow, direction);
                a_first != b_first
            })
        });
        if disagrees {
            disagreeing += 1;
        }
    }
    let share = |count: i32| f64::from(count) / f64::from(cases);
    println!(
        "of {cases} tied pairs: {:.0}% reported as conflicting, {:.0}% disagree on a flow of their universe, {:.0}% hold a shadowed or redundant rule",
        100.0 * share(reported),
        100.0 * share(disagreeing),
        100.0 * share(ordered),
    );
    assert!((0.2..=0.8).contains(&share(reported)), "{reported} of {cases} pairs conflict");
    assert!(share(disagreeing) >= 0.1, "only {disagreeing} of {cases} universes show a disagreement");
    assert!(share(ordered) >= 0.05, "only {ordered} of {cases} pairs hold a shadowed or redundant rule");
}

#[test]
fn with_known_objects_a_peer_or_subject_that_selects_no_pod_is_a_warning() {
    let mut objects = cluster(
        vec![namespace("shop", &[("kubernetes.io/metadata.name", "shop")])],
        vec![node("n1", &["10.0.100.1"], &[])],
        vec![pod("shop", "web-0", "n1", &["10.1.0.1"], &[("app", "web")])],
    );
    objects.pods.values_mut().for_each(|pod| pod.named_ports.clear());
    let mut policy = np("shop", "web", select(&[("app", "web")]));
    policy.ingress.push(NetworkPolicyRule {
        peers: vec![
            NetworkPolicyPeer { pod_selector: Some(select(&[("app", "web")])), ..Default::default() },
            NetworkPolicyPeer { pod_selector: Some(select(&[("app", "ghost")])), ..Default::default() },
        ],
        ports: vec![],
    });
    let findings = analyze(&[Policy::Network(policy)], Some(&objects));
    let nothing: Vec<&str> =
        findings.iter().filter(|f| f.check == Check::MatchesNothing).map(|f| f.field.as_str()).collect();
    assert_eq!(nothing, ["spec.ingress[0].from[1]"], "{findings:#?}");
}
