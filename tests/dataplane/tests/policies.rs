//! Every cell of the connectivity matrix, probed with real packets through the nodes' kernels,
//! against the engine's reference evaluator for the same flow. One namespace cluster per test:
//! namespaces x, y, z × pods a, b, c on two nodes, each pod serving TCP and UDP on 80 and 81.

use palisade_dataplane_tests::Testbed;
use palisade_dataplane_tests::palisade_testkit::{Family, Port};
use palisade_dataplane_tests::policies::*;
use palisade_engine::model::{CnpAction, CnpPeer, Policy, PolicyType, Protocol, Tier};

const TCP_80: Port = Port { protocol: palisade_dataplane_tests::palisade_testkit::Protocol::Tcp, number: 80 };
const TCP_81: Port = Port { protocol: palisade_dataplane_tests::palisade_testkit::Protocol::Tcp, number: 81 };
const UDP_80: Port = Port { protocol: palisade_dataplane_tests::palisade_testkit::Protocol::Udp, number: 80 };
const UDP_81: Port = Port { protocol: palisade_dataplane_tests::palisade_testkit::Protocol::Udp, number: 81 };

/// Enforces `policies` and requires every probed cell to match the reference; prints the grids
/// of every mismatching matrix.
async fn enforce_and_compare(policies: &[Policy], probes: &[(Port, Family)]) {
    let mut testbed = Testbed::netpol_matrix().expect("build the namespace cluster");
    testbed.enforce(policies).await.expect("enforce the plans");
    let failures = testbed.mismatches(policies, probes).await.expect("probe");
    assert!(failures.is_empty(), "the kernel disagrees with the reference:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_deny_all_then_allow_from_a_namespace() {
    let policies = [
        network_policy("x", "deny-all", everything(), &[PolicyType::Ingress], vec![], vec![]),
        network_policy(
            "x",
            "allow-from-y",
            everything(),
            &[PolicyType::Ingress],
            vec![np_rule(vec![from_namespaces(labels(&[("ns", "y")]))], vec![])],
            vec![],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_80, Family::V6), (UDP_80, Family::V4)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_restricted_to_one_pod_and_port() {
    let policies = [network_policy(
        "x",
        "a-talks-to-b-on-80",
        labels(&[("pod", "a")]),
        &[PolicyType::Egress],
        vec![],
        vec![np_rule(vec![from_pods(everything(), labels(&[("pod", "b")]))], vec![port(Protocol::Tcp, 80)])],
    )];
    enforce_and_compare(
        &policies,
        &[(TCP_80, Family::V4), (TCP_81, Family::V4), (UDP_80, Family::V4), (TCP_80, Family::V6)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_block_with_except_in_both_families() {
    // Pods of node n1 live in 198.18.1.0/24 and fd00:198:18:1::/64: the excepts carve them out.
    let policies = [network_policy(
        "y",
        "from-cidr-but-not-n1",
        everything(),
        &[PolicyType::Ingress],
        vec![np_rule(
            vec![ip_block("198.18.0.0/16", &["198.18.1.0/24"]), ip_block("fd00:198:18::/48", &["fd00:198:18:1::/64"])],
            vec![],
        )],
        vec![],
    )];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_80, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_policies_on_one_pod_allow_their_union() {
    // The agent folds these into one rule per port: x/a (on n1) is carved out of the ipBlock by
    // its except, yet still allowed by the pod selector of another policy on the same port.
    let selects_y_a = || labels(&[("pod", "a")]);
    let policies = [
        network_policy(
            "y",
            "cidr-except-n1",
            selects_y_a(),
            &[PolicyType::Ingress],
            vec![np_rule(vec![ip_block("198.18.0.0/16", &["198.18.1.0/24"])], vec![port(Protocol::Tcp, 80)])],
            vec![],
        ),
        network_policy(
            "y",
            "from-x-a",
            selects_y_a(),
            &[PolicyType::Ingress],
            vec![np_rule(
                vec![from_pods(labels(&[("ns", "x")]), labels(&[("pod", "a")]))],
                vec![port(Protocol::Tcp, 80)],
            )],
            vec![],
        ),
        network_policy(
            "y",
            "from-z-on-both-ports",
            selects_y_a(),
            &[PolicyType::Ingress],
            vec![np_rule(
                vec![from_namespaces(labels(&[("ns", "z")]))],
                vec![port(Protocol::Tcp, 80), port(Protocol::Tcp, 81)],
            )],
            vec![],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_81, Family::V4), (TCP_80, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_ports_for_ingress_and_egress() {
    let policies = [
        network_policy(
            "x",
            "ingress-on-serve-81",
            labels(&[("pod", "a")]),
            &[PolicyType::Ingress],
            vec![np_rule(vec![], vec![named_port(Protocol::Tcp, "serve-81-tcp")])],
            vec![],
        ),
        network_policy(
            "z",
            "egress-to-serve-80",
            everything(),
            &[PolicyType::Egress],
            vec![],
            vec![np_rule(vec![], vec![named_port(Protocol::Tcp, "serve-80-tcp")])],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_81, Family::V4), (TCP_81, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_ranges_with_end_port() {
    let policies = [network_policy(
        "y",
        "range-81-to-90",
        everything(),
        &[PolicyType::Ingress],
        vec![np_rule(vec![from_namespaces(everything())], vec![port_range(Protocol::Tcp, 81, 90)])],
        vec![],
    )];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_81, Family::V4), (TCP_81, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_only_on_the_allowed_port() {
    let policies = [network_policy(
        "y",
        "udp-81-only",
        everything(),
        &[PolicyType::Ingress],
        vec![np_rule(vec![from_namespaces(labels(&[("ns", "x")]))], vec![port(Protocol::Udp, 81)])],
        vec![],
    )];
    enforce_and_compare(
        &policies,
        &[(UDP_80, Family::V4), (UDP_81, Family::V4), (UDP_81, Family::V6), (TCP_81, Family::V4)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_only_peer_leaves_ipv4_denied() {
    let policies = [network_policy(
        "z",
        "from-n2-over-ipv6",
        everything(),
        &[PolicyType::Ingress],
        vec![np_rule(vec![ip_block("fd00:198:18:2::/64", &[])], vec![])],
        vec![],
    )];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_80, Family::V6), (UDP_80, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_deny_wins_over_a_network_policy_allow() {
    let policies = [
        network_policy("x", "allow-all", everything(), &[PolicyType::Ingress], vec![np_rule(vec![], vec![])], vec![]),
        cluster_policy(
            "deny-y-to-x",
            Tier::Admin,
            10,
            labels(&[("ns", "x")]),
            vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(labels(&[("ns", "y")]))], None)],
            vec![],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_80, Family::V6), (UDP_81, Family::V4)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_default_deny_overridden_by_a_network_policy() {
    let policies = [
        cluster_policy(
            "baseline-deny-all",
            Tier::Baseline,
            10,
            everything(),
            vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(everything())], None)],
            vec![],
        ),
        network_policy(
            "z",
            "allow-from-x",
            everything(),
            &[PolicyType::Ingress],
            vec![np_rule(vec![from_namespaces(labels(&[("ns", "x")]))], vec![])],
            vec![],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_80, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_runs_keep_their_order_across_policies() {
    // The agent folds consecutive rules of one action into one rule per port. An Accept between
    // two Denies must stay between them: z/a is accepted by the second policy before the third
    // denies namespace z, while x/a is denied by the first.
    let from_pod_a = || CnpPeer::Pods { namespace_selector: everything(), pod_selector: labels(&[("pod", "a")]) };
    let policies = [
        cluster_policy(
            "deny-x",
            Tier::Admin,
            10,
            labels(&[("ns", "y")]),
            vec![cnp_rule(
                CnpAction::Deny,
                vec![CnpPeer::Namespaces(labels(&[("ns", "x")]))],
                Some(vec![cnp_port(Protocol::Tcp, 80)]),
            )],
            vec![],
        ),
        cluster_policy(
            "accept-pod-a",
            Tier::Admin,
            20,
            labels(&[("ns", "y")]),
            vec![cnp_rule(CnpAction::Accept, vec![from_pod_a()], Some(vec![cnp_port(Protocol::Tcp, 80)]))],
            vec![],
        ),
        cluster_policy(
            "deny-z",
            Tier::Admin,
            30,
            labels(&[("ns", "y")]),
            vec![
                cnp_rule(
                    CnpAction::Deny,
                    vec![CnpPeer::Namespaces(labels(&[("ns", "z")]))],
                    Some(vec![cnp_port(Protocol::Tcp, 80)]),
                ),
                cnp_rule(
                    CnpAction::Deny,
                    vec![CnpPeer::Namespaces(labels(&[("ns", "x")]))],
                    Some(vec![cnp_port(Protocol::Tcp, 81)]),
                ),
            ],
            vec![],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_81, Family::V4), (TCP_80, Family::V6)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_skips_the_rest_of_the_admin_tier() {
    let policies = [
        cluster_policy(
            "pass-y-to-x",
            Tier::Admin,
            1,
            labels(&[("ns", "x")]),
            vec![cnp_rule(
                CnpAction::Pass,
                vec![CnpPeer::Namespaces(labels(&[("ns", "y")]))],
                Some(vec![cnp_port(Protocol::Tcp, 80)]),
            )],
            vec![],
        ),
        cluster_policy(
            "deny-all-to-x",
            Tier::Admin,
            2,
            labels(&[("ns", "x")]),
            vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(everything())], None)],
            vec![],
        ),
        network_policy(
            "x",
            "a-from-y-b",
            labels(&[("pod", "a")]),
            &[PolicyType::Ingress],
            vec![np_rule(vec![from_pods(labels(&[("ns", "y")]), labels(&[("pod", "b")]))], vec![])],
            vec![],
        ),
    ];
    enforce_and_compare(&policies, &[(TCP_80, Family::V4), (TCP_80, Family::V6), (TCP_81, Family::V4)]).await;
}
