//! Every bad input produces a typed error naming the object and the field; other policies still
//! compile.

mod common;

use common::*;
use palisade_engine::model::*;
use palisade_engine::validate::validate;
use palisade_engine::{Engine, PolicyError, compile};

fn errors(policy: &Policy) -> Vec<PolicyError> {
    validate(policy).err().unwrap_or_default()
}

fn fields(policy: &Policy) -> Vec<String> {
    errors(policy).into_iter().map(|e| e.field).collect()
}

fn np_with_ingress(peers: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> Policy {
    let mut p = np("ns", "bad", LabelSelector::default());
    p.ingress = vec![NetworkPolicyRule { peers, ports }];
    Policy::Network(p)
}

fn block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IpBlock { cidr: cidr.into(), except: except.iter().map(|e| e.to_string()).collect() }),
        ..Default::default()
    }
}

fn port(
    protocol: Option<Result<Protocol, String>>,
    port: Option<PortValue>,
    end_port: Option<i32>,
) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol, port, end_port }
}

#[test]
fn display_names_kind_object_field_and_reason() {
    let policy = np_with_ingress(vec![], vec![port(None, Some(PortValue::Number(80)), Some(79))]);
    let text = errors(&policy)[0].to_string();
    assert_eq!(
        text,
        "NetworkPolicy ns/bad: spec.ingress[0].ports[0].endPort: must be greater than or equal to `port` (80)"
    );
}

#[test]
fn network_policy_bad_inputs_name_their_fields() {
    let cases: Vec<(Policy, &str)> = vec![
        (np_with_ingress(vec![block("10.0.0.0", &[])], vec![]), "spec.ingress[0].from[0].ipBlock.cidr"),
        (np_with_ingress(vec![block("10.0.0.0/33", &[])], vec![]), "spec.ingress[0].from[0].ipBlock.cidr"),
        (
            np_with_ingress(vec![block("10.0.0.0/8", &["11.0.0.0/16"])], vec![]),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            np_with_ingress(vec![block("10.0.0.0/8", &["10.0.0.0/8"])], vec![]),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            np_with_ingress(vec![block("10.0.0.0/8", &["fd00::/64"])], vec![]),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (np_with_ingress(vec![block("10.0.0.0/8", &["nope"])], vec![]), "spec.ingress[0].from[0].ipBlock.except[0]"),
        (
            np_with_ingress(
                vec![NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..block("10.0.0.0/8", &[]) }],
                vec![],
            ),
            "spec.ingress[0].from[0]",
        ),
        (np_with_ingress(vec![NetworkPolicyPeer::default()], vec![]), "spec.ingress[0].from[0]"),
        (
            np_with_ingress(vec![], vec![port(None, Some(PortValue::Number(80)), Some(79))]),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            np_with_ingress(vec![], vec![port(None, Some(PortValue::Name("web".into())), Some(90))]),
            "spec.ingress[0].ports[0].endPort",
        ),
        (np_with_ingress(vec![], vec![port(None, None, Some(90))]), "spec.ingress[0].ports[0].endPort"),
        (np_with_ingress(vec![], vec![port(None, Some(PortValue::Number(0)), None)]), "spec.ingress[0].ports[0].port"),
        (
            np_with_ingress(vec![], vec![port(None, Some(PortValue::Number(65536)), None)]),
            "spec.ingress[0].ports[0].port",
        ),
        (
            np_with_ingress(vec![], vec![port(None, Some(PortValue::Number(80)), Some(70000))]),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            np_with_ingress(vec![], vec![port(None, Some(PortValue::Name("Not_Valid".into())), None)]),
            "spec.ingress[0].ports[0].port",
        ),
        (
            np_with_ingress(vec![], vec![port(Some(Err("ICMP6".into())), None, None)]),
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            np_with_ingress(vec![], vec![port(Some(Ok(Protocol::Icmp)), None, None)]),
            "spec.ingress[0].ports[0].protocol",
        ),
    ];
    for (policy, field) in cases {
        let found = errors(&policy);
        assert!(found.iter().any(|e| e.field == field), "expected an error at {field}, got {found:?}");
        assert!(found.iter().all(|e| e.policy == policy.reference()));
    }

    let mut types = np("ns", "types", LabelSelector::default());
    types.policy_types = Some(vec![PolicyType::Ingress, PolicyType::Unknown("Sideways".into())]);
    assert_eq!(fields(&Policy::Network(types)), ["spec.policyTypes[1]"]);

    let mut selector = np("ns", "selector", LabelSelector::default());
    selector.pod_selector.match_expressions.push(SelectorRequirement {
        key: "app".into(),
        operator: SelectorOperator::Unknown("Gt".into()),
        values: vec!["1".into()],
    });
    assert_eq!(fields(&Policy::Network(selector)), ["spec.podSelector.matchExpressions[0].operator"]);
}

#[test]
fn all_errors_of_a_policy_are_reported_not_just_the_first() {
    let mut p = np("ns", "many", LabelSelector::default());
    p.ingress = vec![NetworkPolicyRule {
        peers: vec![block("bogus", &[])],
        ports: vec![port(None, Some(PortValue::Number(0)), None), port(Some(Err("HTTP".into())), None, None)],
    }];
    p.egress = vec![NetworkPolicyRule { peers: vec![block("10.0.0.0/8", &["192.168.0.0/16"])], ports: vec![] }];
    assert_eq!(
        fields(&Policy::Network(p)),
        [
            "spec.ingress[0].from[0].ipBlock.cidr",
            "spec.ingress[0].ports[0].port",
            "spec.ingress[0].ports[1].protocol",
            "spec.egress[0].to[0].ipBlock.except[0]",
        ]
    );
}

fn admin_with_egress(rules: Vec<CnpRule>) -> Policy {
    let mut p = cnp("bad", Tier::Admin, 1, CnpSubject::Namespaces(LabelSelector::default()));
    p.egress = rules;
    Policy::Cluster(p)
}

fn any_peer() -> Vec<CnpPeer> {
    vec![CnpPeer::Namespaces(LabelSelector::default())]
}

fn tcp_port(port: CnpPort) -> Option<Vec<CnpProtocol>> {
    Some(vec![CnpProtocol::Port { protocol: Protocol::Tcp, port }])
}

#[test]
fn cluster_policy_bad_inputs_name_their_fields() {
    let mut priority = cnp("bad", Tier::Admin, 1001, CnpSubject::Namespaces(LabelSelector::default()));
    assert_eq!(fields(&Policy::Cluster(priority.clone())), ["spec.priority"]);
    priority.priority = -1;
    assert_eq!(fields(&Policy::Cluster(priority)), ["spec.priority"]);

    let subject = cnp("bad", Tier::Admin, 1, CnpSubject::Invalid("both namespaces and pods are set".into()));
    assert_eq!(fields(&Policy::Cluster(subject)), ["spec.subject"]);

    let cases: Vec<(Policy, &str)> = vec![
        (
            admin_with_egress(vec![cnp_rule(
                CnpAction::Deny,
                any_peer(),
                tcp_port(CnpPort::Range { start: 80, end: 80 }),
            )]),
            "spec.egress[0].protocols[0].tcp.destinationPort.range",
        ),
        (
            admin_with_egress(vec![cnp_rule(
                CnpAction::Deny,
                any_peer(),
                tcp_port(CnpPort::Range { start: 90, end: 80 }),
            )]),
            "spec.egress[0].protocols[0].tcp.destinationPort.range",
        ),
        (
            admin_with_egress(vec![cnp_rule(
                CnpAction::Deny,
                any_peer(),
                tcp_port(CnpPort::Range { start: 0, end: 80 }),
            )]),
            "spec.egress[0].protocols[0].tcp.destinationPort.range.start",
        ),
        (
            admin_with_egress(vec![cnp_rule(CnpAction::Deny, any_peer(), tcp_port(CnpPort::Number(65536)))]),
            "spec.egress[0].protocols[0].tcp.destinationPort.number",
        ),
        (
            admin_with_egress(vec![cnp_rule(
                CnpAction::Deny,
                vec![CnpPeer::Networks(vec!["10.0.0.0/40".into()])],
                None,
            )]),
            "spec.egress[0].to[0].networks[0]",
        ),
        (
            admin_with_egress(vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Networks(vec![])], None)]),
            "spec.egress[0].to[0].networks",
        ),
        (admin_with_egress(vec![cnp_rule(CnpAction::Deny, vec![], None)]), "spec.egress[0].to"),
        (
            admin_with_egress(vec![cnp_rule(
                CnpAction::Deny,
                vec![CnpPeer::Namespaces(LabelSelector::default()); 26],
                None,
            )]),
            "spec.egress[0].to",
        ),
        (admin_with_egress(vec![cnp_rule(CnpAction::Deny, any_peer(), Some(vec![]))]), "spec.egress[0].protocols"),
        (
            admin_with_egress(vec![cnp_rule(CnpAction::Deny, any_peer(), Some(vec![CnpProtocol::Unknown; 26]))]),
            "spec.egress[0].protocols",
        ),
        (admin_with_egress(vec![cnp_rule(CnpAction::Deny, any_peer(), None); 26]), "spec.egress"),
        (
            admin_with_egress(vec![cnp_rule(
                CnpAction::Accept,
                vec![CnpPeer::DomainNames(vec!["not a name".into()])],
                None,
            )]),
            "spec.egress[0].to[0].domainNames[0]",
        ),
    ];
    for (policy, field) in cases {
        let found = errors(&policy);
        assert!(found.iter().any(|e| e.field == field), "expected an error at {field}, got {found:?}");
    }

    let mut ingress_networks = cnp("bad", Tier::Admin, 1, CnpSubject::Namespaces(LabelSelector::default()));
    ingress_networks.ingress =
        vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Networks(vec!["10.0.0.0/8".into()])], None)];
    assert_eq!(fields(&Policy::Cluster(ingress_networks)), ["spec.ingress[0].from[0].networks"]);
}

#[test]
fn unknown_entries_and_domain_names_are_valid() {
    let policy = admin_with_egress(vec![
        cnp_rule(CnpAction::Deny, vec![CnpPeer::Unknown], Some(vec![CnpProtocol::Unknown])),
        cnp_rule(CnpAction::Accept, vec![CnpPeer::DomainNames(vec!["*.example.com".into()])], None),
    ]);
    let validated = validate(&policy).expect("valid");
    assert_eq!(validated.warnings.len(), 1);
    assert_eq!(validated.warnings[0].field, "spec.egress[1].to[0].domainNames");
}

#[test]
fn invalid_policies_are_quarantined_and_the_rest_still_compile() {
    let w = cluster(
        vec![namespace("ns", &[])],
        vec![node("n1", &["10.0.0.1"], &[])],
        vec![pod("ns", "a", "n1", &["10.1.0.1"], &[])],
    );
    let good = Policy::Network(np("ns", "good", LabelSelector::default()));
    let bad = np_with_ingress(vec![block("nope", &[])], vec![]);
    let compiled = compile(&w, &[bad.clone(), good.clone()]);
    assert_eq!(compiled.errors.len(), 1);
    assert_eq!(compiled.errors[0].policy, bad.reference());
    let plan = &compiled.plans["n1"];
    // The good policy compiled; the bad one, never accepted, enforces its fail-closed stand-in
    // (isolation with no allowance), which carries no rule of its own.
    let by_policy: Vec<_> = plan.rule_sets.values().map(|rule_set| rule_set.policy.clone()).collect();
    assert!(by_policy.contains(&good.reference()), "{by_policy:?}");
    let stand_in = plan.rule_sets.values().find(|rule_set| rule_set.policy == bad.reference()).expect("a stand-in");
    assert!(stand_in.rules.is_empty(), "{stand_in:?}");

    // A valid version replaced by an invalid one stays in force (fail closed); the error says why.
    let mut engine = Engine::with_cluster(w);
    let mut version = np("ns", "bad", LabelSelector::default());
    engine.upsert_policy(Policy::Network(version.clone()));
    let accepted = engine.node_plan("n1");
    assert_eq!(accepted.rule_sets.len(), 1);
    version.policy_types = Some(vec![PolicyType::Unknown("x".into())]);
    version.revision.generation = 2;
    let delta = engine.upsert_policy(Policy::Network(version.clone()));
    assert!(delta.affected_nodes.is_empty(), "nothing in force changed: {delta:?}");
    assert_eq!(engine.node_plan("n1"), accepted);
    assert_eq!(engine.errors_of(&Policy::Network(version).reference()).len(), 1);
}
