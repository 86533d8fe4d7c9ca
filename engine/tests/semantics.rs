//! One test per semantic corner. Every case is judged by the reference evaluator and by the
//! compiled plans, which must agree; the assertions then check the reference's answer.

mod common;

use common::*;
use palisade_engine::model::*;
use palisade_engine::plan::Action;
use palisade_engine::reference::verdict;
use palisade_engine::verdict::{Reason, Verdict};
use palisade_engine::{compile, evaluate};

const XA: &str = "10.1.0.1";
const XB: &str = "10.1.0.2";
const YA: &str = "10.1.0.3";
const YB: &str = "10.1.0.4";
const ZC: &str = "10.1.0.5";
const NODE1: &str = "10.0.0.1";
const NODE2: &str = "10.0.0.2";
const EXTERNAL: &str = "192.0.2.1";

/// Namespaces x, y, z; pods x/a, x/b, y/a, y/b, z/c; a host-network pod z/h on node n1.
fn world() -> Cluster {
    let mut xa = pod("x", "a", "n1", &[XA, "fd00::1"], &[("app", "a")]);
    xa.named_ports = vec![NamedPort { name: "web".into(), protocol: Protocol::Tcp, port: 80 }];
    let mut yb = pod("y", "b", "n2", &[YB], &[("app", "b")]);
    yb.named_ports = vec![
        NamedPort { name: "web".into(), protocol: Protocol::Tcp, port: 8080 },
        NamedPort { name: "dns".into(), protocol: Protocol::Udp, port: 53 },
    ];
    let mut host = pod("z", "h", "n1", &[NODE1], &[("app", "a")]);
    host.host_network = true;
    cluster(
        vec![namespace("x", &[("team", "x")]), namespace("y", &[("team", "y")]), namespace("z", &[("team", "z")])],
        vec![node("n1", &[NODE1], &[("role", "a")]), node("n2", &[NODE2], &[("role", "b")])],
        vec![
            xa,
            pod("x", "b", "n2", &[XB], &[("app", "b")]),
            pod("y", "a", "n1", &[YA], &[("app", "a")]),
            yb,
            pod("z", "c", "n2", &[ZC], &[("app", "c")]),
            host,
        ],
    )
}

/// Judges with both evaluators, insists they agree, returns the verdict.
fn judge(cluster: &Cluster, policies: &[Policy], flow: &palisade_engine::verdict::Flow) -> Verdict {
    let expected = verdict(cluster, policies, flow);
    let compiled = compile(cluster, policies);
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    let actual = evaluate(&compiled.plans, &node_ips(cluster), flow);
    assert_eq!(actual, expected, "plans and reference disagree on {flow:?}");
    expected
}

fn allowed(cluster: &Cluster, policies: &[Policy], src: &str, dst: &str, protocol: Protocol, port: u16) -> bool {
    judge(cluster, policies, &flow(src, dst, protocol, port)).allowed
}

fn tcp_allowed(cluster: &Cluster, policies: &[Policy], src: &str, dst: &str, port: u16) -> bool {
    allowed(cluster, policies, src, dst, Protocol::Tcp, port)
}

fn reference(policy: &Policy) -> PolicyRef {
    policy.reference()
}

fn deny_all_ingress(namespace: &str) -> Policy {
    Policy::Network(np(namespace, "deny-all", LabelSelector::default()))
}

fn rule(peers: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyRule {
    NetworkPolicyRule { peers, ports }
}

fn pods_peer(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(selector), ..Default::default() }
}

fn namespaces_peer(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { namespace_selector: Some(selector), ..Default::default() }
}

fn block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IpBlock { cidr: cidr.into(), except: except.iter().map(|e| e.to_string()).collect() }),
        ..Default::default()
    }
}

// --- NetworkPolicy -----------------------------------------------------------------------------

#[test]
fn no_policy_allows_everything_by_default() {
    let v = judge(&world(), &[], &flow(XA, YB, Protocol::Tcp, 80));
    assert!(v.allowed);
    assert_eq!(v.egress.reason, Reason::Default);
    assert_eq!(v.ingress.reason, Reason::Default);
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
    let w = world();
    // No egress rules: ingress isolation only.
    let ingress_only = deny_all_ingress("x");
    assert!(!tcp_allowed(&w, std::slice::from_ref(&ingress_only), YA, XA, 80));
    assert!(tcp_allowed(&w, &[ingress_only], XA, YA, 80));
    // Egress rules present: egress isolated too, and ingress still isolated (no ingress rules).
    let mut with_egress = np("x", "p", LabelSelector::default());
    with_egress.egress = vec![rule(vec![pods_peer(select(&[("app", "b")]))], vec![])];
    let policies = [Policy::Network(with_egress)];
    let v = judge(&w, &policies, &flow(XA, XB, Protocol::Tcp, 80));
    assert!(v.egress.allowed, "egress to x/b allowed");
    assert!(!v.ingress.allowed, "but x/b is itself ingress-isolated with no rules");
    assert!(!tcp_allowed(&w, &policies, XA, YA, 80), "egress elsewhere denied");
    assert!(!tcp_allowed(&w, &policies, YA, XA, 80), "ingress isolated with no rules");
}

#[test]
fn explicit_egress_only_policy_leaves_ingress_open() {
    let mut p = np("x", "egress-deny", LabelSelector::default());
    p.policy_types = Some(vec![PolicyType::Egress]);
    let policies = [Policy::Network(p)];
    let w = world();
    assert!(tcp_allowed(&w, &policies, YA, XA, 80));
    let v = judge(&w, &policies, &flow(XA, YA, Protocol::Tcp, 80));
    assert_eq!(v.egress.reason, Reason::Isolated { by: vec![reference(&policies[0])] });
    assert!(v.ingress.allowed);
}

#[test]
fn empty_rule_list_denies_and_empty_peers_allow_everyone() {
    let w = world();
    assert!(!tcp_allowed(&w, &[deny_all_ingress("x")], YA, XA, 80));
    let mut allow_all = np("x", "allow-all", LabelSelector::default());
    allow_all.ingress = vec![rule(vec![], vec![])];
    let policies = [Policy::Network(allow_all)];
    assert!(tcp_allowed(&w, &policies, EXTERNAL, XA, 80));
    assert!(allowed(&w, &policies, YA, XA, Protocol::Icmp, 0), "empty ports include ICMP");
}

#[test]
fn absent_namespace_selector_means_own_namespace_and_empty_means_all_namespaces() {
    let w = world();
    let mut own = np("x", "own", LabelSelector::default());
    own.ingress = vec![rule(vec![pods_peer(LabelSelector::default())], vec![])];
    let own = [Policy::Network(own)];
    assert!(tcp_allowed(&w, &own, XB, XA, 80));
    assert!(!tcp_allowed(&w, &own, YA, XA, 80));

    let mut all = np("x", "all", LabelSelector::default());
    all.ingress = vec![rule(vec![namespaces_peer(LabelSelector::default())], vec![])];
    let all = [Policy::Network(all)];
    assert!(tcp_allowed(&w, &all, YA, XA, 80));
    assert!(!tcp_allowed(&w, &all, EXTERNAL, XA, 80), "selectors match pods only");
    assert!(!tcp_allowed(&w, &all, NODE2, XA, 80), "another node is not a pod");
}

#[test]
fn ip_block_with_except_applies_to_pods_too() {
    let mut p = np("x", "block", select(&[("app", "a")]));
    p.ingress = vec![rule(vec![block("10.1.0.0/24", &["10.1.0.4/30"])], vec![])];
    let policies = [Policy::Network(p)];
    let w = world();
    assert!(tcp_allowed(&w, &policies, YA, XA, 80), "10.1.0.3 is in the cidr");
    assert!(!tcp_allowed(&w, &policies, YB, XA, 80), "10.1.0.4 is in the except");
    assert!(!tcp_allowed(&w, &policies, ZC, XA, 80), "10.1.0.5 is in the except");
    assert!(!tcp_allowed(&w, &policies, EXTERNAL, XA, 80));
}

#[test]
fn ip_block_with_host_bits_is_truncated() {
    let mut p = np("x", "block", select(&[("app", "a")]));
    p.ingress = vec![rule(vec![block("10.1.0.77/24", &[])], vec![])];
    assert!(tcp_allowed(&world(), &[Policy::Network(p)], YA, XA, 80));
}

#[test]
fn named_port_resolves_on_the_destination_pod_with_its_protocol() {
    let w = world();
    // Ingress to x/a on "web": x/a's web is TCP 80.
    let mut ingress = np("x", "web", select(&[("app", "a")]));
    ingress.ingress = vec![rule(
        vec![],
        vec![NetworkPolicyPort { protocol: None, port: Some(PortValue::Name("web".into())), end_port: None }],
    )];
    let policies = [Policy::Network(ingress)];
    assert!(tcp_allowed(&w, &policies, YA, XA, 80));
    assert!(!tcp_allowed(&w, &policies, YA, XA, 8080));
    assert!(!allowed(&w, &policies, YA, XA, Protocol::Udp, 80), "protocol must match");

    // Egress from x/a on "web": resolved on each destination (y/b's web is 8080).
    let mut egress = np("x", "to-web", select(&[("app", "a")]));
    egress.policy_types = Some(vec![PolicyType::Egress]);
    egress.egress = vec![rule(
        vec![],
        vec![NetworkPolicyPort { protocol: None, port: Some(PortValue::Name("web".into())), end_port: None }],
    )];
    let policies = [Policy::Network(egress)];
    assert!(tcp_allowed(&w, &policies, XA, YB, 8080));
    assert!(!tcp_allowed(&w, &policies, XA, YB, 80));
    assert!(!tcp_allowed(&w, &policies, XA, EXTERNAL, 80), "a non-pod has no named ports");
    // UDP "dns" rule against a pod whose dns port is UDP 53.
    let mut dns = np("x", "dns", select(&[("app", "a")]));
    dns.policy_types = Some(vec![PolicyType::Egress]);
    dns.egress = vec![rule(
        vec![],
        vec![NetworkPolicyPort {
            protocol: Some(Ok(Protocol::Udp)),
            port: Some(PortValue::Name("dns".into())),
            end_port: None,
        }],
    )];
    let policies = [Policy::Network(dns)];
    assert!(allowed(&w, &policies, XA, YB, Protocol::Udp, 53));
    assert!(!tcp_allowed(&w, &policies, XA, YB, 53));
}

#[test]
fn end_port_makes_a_range_and_missing_port_means_all_ports() {
    let w = world();
    let mut p = np("x", "range", select(&[("app", "a")]));
    p.ingress = vec![rule(
        vec![],
        vec![
            NetworkPolicyPort { protocol: None, port: Some(PortValue::Number(8000)), end_port: Some(8010) },
            NetworkPolicyPort { protocol: Some(Ok(Protocol::Udp)), port: None, end_port: None },
        ],
    )];
    let policies = [Policy::Network(p)];
    assert!(tcp_allowed(&w, &policies, YA, XA, 8000));
    assert!(tcp_allowed(&w, &policies, YA, XA, 8010));
    assert!(!tcp_allowed(&w, &policies, YA, XA, 8011));
    assert!(allowed(&w, &policies, YA, XA, Protocol::Udp, 12345));
    assert!(!allowed(&w, &policies, YA, XA, Protocol::Icmp, 0), "a port list excludes ICMP");
}

#[test]
fn sctp_is_its_own_protocol() {
    let w = world();
    let mut p = np("x", "sctp", select(&[("app", "a")]));
    p.ingress = vec![rule(
        vec![],
        vec![NetworkPolicyPort {
            protocol: Some(Ok(Protocol::Sctp)),
            port: Some(PortValue::Number(9003)),
            end_port: None,
        }],
    )];
    let policies = [Policy::Network(p)];
    assert!(allowed(&w, &policies, YA, XA, Protocol::Sctp, 9003));
    assert!(!tcp_allowed(&w, &policies, YA, XA, 9003));
}

#[test]
fn host_network_pods_are_never_selected_and_own_node_ingress_is_allowed() {
    let w = world();
    // Selects every pod in z, including the host-network z/h: it must not be isolated.
    let policies = [deny_all_ingress("z")];
    let v = judge(&w, &policies, &flow(XA, NODE1, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::NotAPod);
    assert!(!tcp_allowed(&w, &policies, XA, ZC, 80));
    // The kubelet (node n2's address) may probe z/c on n2 despite the deny.
    let v = judge(&w, &policies, &flow(NODE2, ZC, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::FromOwnNode);
    assert!(!tcp_allowed(&w, &policies, NODE1, ZC, 80), "another node's address is not exempt");
    let v = judge(&w, &policies, &flow(ZC, ZC, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::Loopback);
}

#[test]
fn isolated_reason_lists_every_isolating_policy_sorted() {
    let w = world();
    let mut second = np("x", "a-second", select(&[("app", "a")]));
    second.ingress = vec![rule(vec![pods_peer(select(&[("app", "none")]))], vec![])];
    let policies = [deny_all_ingress("x"), Policy::Network(second)];
    let v = judge(&w, &policies, &flow(YA, XA, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::Isolated { by: vec![reference(&policies[1]), reference(&policies[0])] });
}

// --- ClusterNetworkPolicy ----------------------------------------------------------------------

fn admin(name: &str, priority: i32, subject: CnpSubject) -> ClusterNetworkPolicy {
    cnp(name, Tier::Admin, priority, subject)
}

fn ns_subject(pairs: &[(&str, &str)]) -> CnpSubject {
    CnpSubject::Namespaces(select(pairs))
}

fn from_namespace(team: &str) -> CnpPeer {
    CnpPeer::Namespaces(select(&[("team", team)]))
}

#[test]
fn admin_beats_network_policy_and_baseline_applies_only_without_network_policy() {
    let w = world();
    let mut deny = admin("deny-y", 10, ns_subject(&[("team", "x")]));
    deny.ingress = vec![cnp_rule(CnpAction::Deny, vec![from_namespace("y")], None)];
    let mut allow_np = np("x", "allow-all", LabelSelector::default());
    allow_np.ingress = vec![rule(vec![], vec![])];
    let policies = [Policy::Cluster(deny.clone()), Policy::Network(allow_np.clone())];
    let v = judge(&w, &policies, &flow(YA, XA, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::Rule { policy: reference(&policies[0]), rule: 0, action: Action::Deny });

    let mut baseline = cnp("baseline", Tier::Baseline, 0, ns_subject(&[("team", "x")]));
    baseline.ingress = vec![cnp_rule(CnpAction::Deny, vec![from_namespace("z")], None)];
    let with_np = [Policy::Network(allow_np), Policy::Cluster(baseline.clone())];
    assert!(tcp_allowed(&w, &with_np, ZC, XA, 80), "the NP decides; baseline is not consulted");
    assert!(!tcp_allowed(&w, &[Policy::Cluster(baseline)], ZC, XA, 80));
}

#[test]
fn admin_pass_hands_over_to_network_policy_and_baseline_pass_to_default() {
    let w = world();
    let mut pass = admin("pass-y", 10, ns_subject(&[("team", "x")]));
    pass.ingress = vec![cnp_rule(CnpAction::Pass, vec![from_namespace("y")], None)];
    let mut deny_later = admin("deny-y", 20, ns_subject(&[("team", "x")]));
    deny_later.ingress = vec![cnp_rule(CnpAction::Deny, vec![from_namespace("y")], None)];
    let mut np_allow = np("x", "allow-y", LabelSelector::default());
    np_allow.ingress = vec![rule(vec![namespaces_peer(select(&[("team", "y")]))], vec![])];
    let policies = [Policy::Cluster(pass.clone()), Policy::Cluster(deny_later), Policy::Network(np_allow)];
    let v = judge(&w, &policies, &flow(YA, XA, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::Rule { policy: reference(&policies[2]), rule: 0, action: Action::Accept });

    let mut base_pass = cnp("b-pass", Tier::Baseline, 1, ns_subject(&[("team", "x")]));
    base_pass.ingress = vec![cnp_rule(CnpAction::Pass, vec![from_namespace("y")], None)];
    let mut base_deny = cnp("b-deny", Tier::Baseline, 2, ns_subject(&[("team", "x")]));
    base_deny.ingress = vec![cnp_rule(CnpAction::Deny, vec![from_namespace("y")], None)];
    let policies = [Policy::Cluster(base_pass), Policy::Cluster(base_deny)];
    let v = judge(&w, &policies, &flow(YA, XA, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::Default);
}

#[test]
fn equal_priorities_are_ordered_by_name_and_rules_by_position() {
    let w = world();
    let mut b = admin("b", 5, ns_subject(&[("team", "x")]));
    b.ingress = vec![cnp_rule(CnpAction::Accept, vec![from_namespace("y")], None)];
    let mut a = admin("a", 5, ns_subject(&[("team", "x")]));
    a.ingress = vec![
        cnp_rule(CnpAction::Deny, vec![from_namespace("z")], None),
        cnp_rule(CnpAction::Deny, vec![from_namespace("y")], None),
        cnp_rule(CnpAction::Accept, vec![from_namespace("y")], None),
    ];
    let policies = [Policy::Cluster(b), Policy::Cluster(a)];
    let v = judge(&w, &policies, &flow(YA, XA, Protocol::Tcp, 80));
    assert_eq!(v.ingress.reason, Reason::Rule { policy: reference(&policies[1]), rule: 1, action: Action::Deny });
}

#[test]
fn a_cluster_policy_does_not_isolate_implicitly() {
    let w = world();
    let mut accept = admin("accept-y", 1, ns_subject(&[("team", "x")]));
    accept.ingress = vec![cnp_rule(CnpAction::Accept, vec![from_namespace("y")], None)];
    let policies = [Policy::Cluster(accept)];
    let v = judge(&w, &policies, &flow(ZC, XA, Protocol::Tcp, 80));
    assert!(v.allowed);
    assert_eq!(v.ingress.reason, Reason::Default);
}

#[test]
fn unknown_peers_fail_closed() {
    let w = world();
    let mut accept_unknown = admin("accept-unknown", 1, ns_subject(&[("team", "x")]));
    accept_unknown.ingress = vec![cnp_rule(CnpAction::Accept, vec![CnpPeer::Unknown], None)];
    let mut deny_y = admin("deny-y", 2, ns_subject(&[("team", "x")]));
    deny_y.ingress = vec![cnp_rule(CnpAction::Deny, vec![from_namespace("y")], None)];
    let policies = [Policy::Cluster(accept_unknown), Policy::Cluster(deny_y)];
    assert!(!tcp_allowed(&w, &policies, YA, XA, 80), "an Accept with an unknown peer matches nothing");

    let mut deny_unknown = admin("deny-unknown", 1, ns_subject(&[("team", "x")]));
    deny_unknown.egress = vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Unknown], None)];
    let policies = [Policy::Cluster(deny_unknown)];
    assert!(!tcp_allowed(&w, &policies, XA, EXTERNAL, 443), "a Deny with an unknown peer matches everything");

    let mut unknown_protocol = admin("deny-unknown-proto", 1, ns_subject(&[("team", "x")]));
    unknown_protocol.egress =
        vec![cnp_rule(CnpAction::Deny, vec![from_namespace("y")], Some(vec![CnpProtocol::Unknown]))];
    assert!(!allowed(&w, &[Policy::Cluster(unknown_protocol)], XA, YA, Protocol::Udp, 1));

    // Upstream: for Deny and Pass rules, fail closed means "Deny all", whatever the other peers
    // and ports say, so a Pass with an unreadable peer cannot hand traffic to a laxer tier.
    let mut pass_unknown = admin("pass-unknown", 1, ns_subject(&[("team", "x")]));
    pass_unknown.egress = vec![cnp_rule(
        CnpAction::Pass,
        vec![from_namespace("y"), CnpPeer::Unknown],
        Some(vec![CnpProtocol::NamedPort("dns".into())]),
    )];
    let policies = [Policy::Cluster(pass_unknown)];
    assert!(!tcp_allowed(&w, &policies, XA, EXTERNAL, 443), "a Pass with an unknown peer denies all");
    assert!(!allowed(&w, &policies, XA, ZC, Protocol::Udp, 9), "on every port");
}

#[test]
fn networks_match_pods_and_nodes_match_node_addresses_and_domain_names_match_nothing() {
    let w = world();
    let mut p = admin("egress", 1, ns_subject(&[("team", "x")]));
    p.egress = vec![
        cnp_rule(CnpAction::Accept, vec![CnpPeer::DomainNames(vec!["example.com".into()])], None),
        cnp_rule(CnpAction::Accept, vec![CnpPeer::Nodes(select(&[("role", "a")]))], None),
        cnp_rule(CnpAction::Deny, vec![CnpPeer::Networks(vec!["10.0.0.0/8".into()])], None),
    ];
    let policies = [Policy::Cluster(p)];
    assert!(!tcp_allowed(&w, &policies, XA, YA, 80), "networks include pod addresses");
    assert!(tcp_allowed(&w, &policies, XA, NODE1, 80));
    assert!(!tcp_allowed(&w, &policies, XA, NODE2, 80));
    assert!(tcp_allowed(&w, &policies, XA, EXTERNAL, 80));
    let compiled = compile(&w, &policies);
    assert_eq!(compiled.warnings.len(), 1, "domainNames is reported as a warning");
}

#[test]
fn cluster_policy_named_port_takes_the_container_ports_protocol() {
    let w = world();
    let mut p = admin("named", 1, ns_subject(&[("team", "x")]));
    p.egress = vec![
        cnp_rule(CnpAction::Accept, vec![from_namespace("y")], Some(vec![CnpProtocol::NamedPort("dns".into())])),
        cnp_rule(CnpAction::Deny, vec![from_namespace("y")], None),
    ];
    let policies = [Policy::Cluster(p)];
    assert!(allowed(&w, &policies, XA, YB, Protocol::Udp, 53));
    assert!(!tcp_allowed(&w, &policies, XA, YB, 53));
}

// --- Upstream e2e netpol cases (test/e2e/network/netpol/network_policy.go), hand-checked ---------

#[test]
fn e2e_should_support_a_default_deny_ingress_policy() {
    // Every pod of x denies all ingress; other namespaces stay open.
    let w = world();
    let policies = [deny_all_ingress("x")];
    for src in [XB, YA, YB, ZC] {
        assert!(!tcp_allowed(&w, &policies, src, XA, 80));
    }
    assert!(tcp_allowed(&w, &policies, XA, YA, 80));
}

#[test]
fn e2e_should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector() {
    // x/a accepts ingress only from pods labelled app=b in its own namespace.
    let mut p = np("x", "allow-client-a-via-pod-selector", select(&[("app", "a")]));
    p.ingress = vec![rule(vec![pods_peer(select(&[("app", "b")]))], vec![])];
    let policies = [Policy::Network(p)];
    let w = world();
    assert!(tcp_allowed(&w, &policies, XB, XA, 80));
    assert!(!tcp_allowed(&w, &policies, YB, XA, 80), "same labels in another namespace do not count");
}

#[test]
fn e2e_should_enforce_policy_based_on_pod_selector_and_namespace_selector_combined() {
    // from: {namespaceSelector: team=y, podSelector: app=b} is an AND, not an OR.
    let mut p = np("x", "allow-ns-y-pod-b", select(&[("app", "a")]));
    p.ingress = vec![rule(
        vec![NetworkPolicyPeer {
            namespace_selector: Some(select(&[("team", "y")])),
            pod_selector: Some(select(&[("app", "b")])),
            ip_block: None,
        }],
        vec![],
    )];
    let policies = [Policy::Network(p)];
    let w = world();
    assert!(tcp_allowed(&w, &policies, YB, XA, 80));
    assert!(!tcp_allowed(&w, &policies, YA, XA, 80));
    assert!(!tcp_allowed(&w, &policies, XB, XA, 80));
}

#[test]
fn e2e_should_allow_ingress_access_on_one_named_port() {
    let mut p = np("x", "allow-all-on-named-port", LabelSelector::default());
    p.ingress = vec![rule(
        vec![],
        vec![NetworkPolicyPort { protocol: None, port: Some(PortValue::Name("web".into())), end_port: None }],
    )];
    let policies = [Policy::Network(p)];
    let w = world();
    assert!(tcp_allowed(&w, &policies, YA, XA, 80));
    assert!(!tcp_allowed(&w, &policies, YA, XA, 81));
    assert!(!tcp_allowed(&w, &policies, YA, XB, 80), "x/b has no port named web");
}

#[test]
fn e2e_should_stop_enforcing_policies_after_they_are_deleted() {
    let w = world();
    let mut engine = palisade_engine::Engine::with_cluster(w.clone());
    let policy = deny_all_ingress("x");
    engine.upsert_policy(policy.clone());
    assert!(engine.node_plan("n1").pods.values().any(|p| p.ingress.network_policy.is_some()));
    let delta = engine.remove_policy(&policy.reference());
    assert!(delta.affected_nodes.contains("n1") && delta.affected_nodes.contains("n2"));
    assert!(engine.node_plan("n1").pods.values().all(|p| p.ingress.is_open()));
}
