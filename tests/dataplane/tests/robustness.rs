//! The dataplane under stress and interference, with real packets: back-to-back plan updates
//! under continuous probing, foreign kube-proxy- and Docker-like rules (with a real ClusterIP
//! DNAT in the path), a foreign flush of our chains, and a restore the kernel rejects.
//!
//! Pod placement in the netpol model: n1 runs x/a x/c y/b z/a z/c, n2 runs x/b y/a y/c z/b.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_dataplane_tests::palisade_testkit::{Family, Port};
use palisade_dataplane_tests::policies::*;
use palisade_dataplane_tests::{Testbed, connects};
use palisade_engine::model::{CnpAction, CnpPeer, Policy, PolicyType, Protocol, Tier};

const TCP_80: Port = Port { protocol: palisade_dataplane_tests::palisade_testkit::Protocol::Tcp, number: 80 };

/// x accepts ingress from y only.
fn x_only_from(namespace: &str) -> Vec<Policy> {
    vec![network_policy(
        "x",
        &format!("allow-from-{namespace}"),
        everything(),
        &[PolicyType::Ingress],
        vec![np_rule(vec![from_namespaces(labels(&[("ns", namespace)]))], vec![])],
        vec![],
    )]
}

/// Another plan with the same verdicts for z→x and y→x but different rule sets and groups: a port
/// range instead of any port, an admin Deny of z, and y isolated as well.
fn x_only_from_y_rewritten() -> Vec<Policy> {
    vec![
        network_policy(
            "x",
            "allow-y-80-81",
            everything(),
            &[PolicyType::Ingress],
            vec![np_rule(
                vec![from_pods(labels(&[("ns", "y")]), everything())],
                vec![port_range(Protocol::Tcp, 80, 81)],
            )],
            vec![],
        ),
        cluster_policy(
            "deny-z-to-x",
            Tier::Admin,
            5,
            labels(&[("ns", "x")]),
            vec![cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(labels(&[("ns", "z")]))], None)],
            vec![],
        ),
        network_policy(
            "y",
            "y-from-x",
            everything(),
            &[PolicyType::Ingress],
            vec![np_rule(vec![from_namespaces(labels(&[("ns", "x")]))], vec![])],
            vec![],
        ),
    ]
}

fn pod_ip(testbed: &Testbed, id: &str) -> IpAddr {
    testbed.net.pod(id).expect("pod").ip(Family::V4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_plan_updates_never_open_a_denied_flow() {
    const UPDATES: usize = 1000;
    let mut testbed = Testbed::netpol_matrix().expect("build");
    let (plan_a, plan_b) = (x_only_from("y"), x_only_from_y_rewritten());
    let (denied_from, allowed_from, target) = ("z/b", "y/a", "x/a");
    for policies in [&plan_a, &plan_b] {
        assert!(!testbed.reference_allows(policies, denied_from, target, TCP_80, Family::V4).expect("reference"));
        assert!(testbed.reference_allows(policies, allowed_from, target, TCP_80, Family::V4).expect("reference"));
    }
    let plans = [testbed.compile(&plan_a).expect("compile"), testbed.compile(&plan_b).expect("compile")];
    testbed.enforce_plans(&plans[0]).await.expect("first plan");
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let [denied_probes, denied_connected, allowed_probes, allowed_failed] = [0, 1, 2, 3];
    let target_ip = pod_ip(&testbed, target);
    let mut probers = Vec::new();
    for (from, probes, bad) in
        [(denied_from, denied_probes, denied_connected), (allowed_from, allowed_probes, allowed_failed)]
    {
        let (stop, counters, net) = (stop.clone(), counters.clone(), testbed.net.clone());
        let expect_connected = from == allowed_from;
        probers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let outcome = connects(&net, from, target_ip, TCP_80, Duration::from_millis(200)).await.expect("probe");
                counters[probes].fetch_add(1, Ordering::SeqCst);
                if outcome != expect_connected {
                    counters[bad].fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    for update in 0..UPDATES {
        testbed.enforce_plans(&plans[(update + 1) % 2]).await.expect("plan update");
    }
    stop.store(true, Ordering::SeqCst);
    for prober in probers {
        prober.await.expect("prober");
    }
    let count = |index: usize| counters[index].load(Ordering::SeqCst);
    println!(
        "{UPDATES} plan updates: {} probes of the denied flow ({} connected), {} probes of the allowed flow ({} failed: fail-closed blips)",
        count(denied_probes),
        count(denied_connected),
        count(allowed_probes),
        count(allowed_failed)
    );
    assert!(count(denied_probes) > 0 && count(allowed_probes) > 0, "the probers ran");
    assert_eq!(count(denied_connected), 0, "the denied flow connected during plan updates");
}

/// Foreign state: every table of both families and every set, minus what Palisade owns, with
/// counters dropped.
fn foreign_state(testbed: &Testbed, node: &str) -> String {
    let mut text = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        for line in testbed.net.node_exec(node, &[tool]).expect("save").lines() {
            if line.starts_with('#') || line.contains("PAL-") || line.contains("\"pal:") {
                continue;
            }
            let line = match line.rfind(" [") {
                Some(at) if line.starts_with(':') => &line[..at],
                _ => line,
            };
            text.push_str(line);
            text.push('\n');
        }
    }
    for line in testbed.net.node_exec(node, &["ipset", "save"]).expect("ipset save").lines() {
        let name = line.split_whitespace().nth(1).unwrap_or_default();
        if !name.starts_with("pal4-") && !name.starts_with("pal6-") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn install_foreign_rules(testbed: &Testbed, node: &str) {
    let script = [
        // kube-proxy-like
        "iptables -w -N KUBE-FORWARD",
        "iptables -w -A FORWARD -m comment --comment kubernetes-forwarding-rules -j KUBE-FORWARD",
        "iptables -w -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        "iptables -w -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "ip6tables -w -N KUBE-FORWARD",
        "ip6tables -w -A FORWARD -j KUBE-FORWARD",
        "ip6tables -w -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
        // Docker-like
        "iptables -w -N DOCKER-USER",
        "iptables -w -N DOCKER-ISOLATION-STAGE-1",
        "iptables -w -A FORWARD -j DOCKER-USER",
        "iptables -w -A FORWARD -j DOCKER-ISOLATION-STAGE-1",
        "iptables -w -A DOCKER-USER -j RETURN",
        "iptables -w -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j RETURN",
        "iptables -w -t nat -N DOCKER",
        "iptables -w -t nat -A DOCKER -i docker0 -j RETURN",
        "ipset create docker-allow hash:ip",
        "ipset add docker-allow 192.0.2.1",
    ];
    for command in script {
        let args: Vec<&str> = command.split_whitespace().collect();
        testbed.net.node_exec(node, &args).expect(command);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_rules_stay_identical_and_cluster_ip_traffic_is_judged_after_dnat() {
    let mut testbed = Testbed::netpol_matrix().expect("build");
    let vip: IpAddr = "198.19.255.10".parse().expect("vip");
    testbed.net.add_cluster_ip_service(vip, TCP_80, &[("x/a", 80)]).expect("ClusterIP");
    for node in ["n1", "n2"] {
        install_foreign_rules(&testbed, node);
    }
    let before: Vec<String> = ["n1", "n2"].iter().map(|node| foreign_state(&testbed, node)).collect();
    let unchanged = |testbed: &Testbed, step: &str| {
        for (node, expected) in ["n1", "n2"].iter().zip(&before) {
            assert_eq!(&foreign_state(testbed, node), expected, "foreign state of {node} changed after {step}");
        }
    };
    assert!(testbed.connects("z/b", vip, TCP_80).await.expect("probe"), "the ClusterIP works before any policy");

    for (step, allowed, denied) in [("install", "y", "z"), ("update", "z", "y")] {
        let policies = x_only_from(allowed);
        testbed.enforce(&policies).await.expect(step);
        unchanged(&testbed, step);
        for (from_namespace, expected) in [(allowed, true), (denied, false)] {
            let from = format!("{from_namespace}/b");
            let reference = testbed.reference_allows(&policies, &from, "x/a", TCP_80, Family::V4).expect("reference");
            assert_eq!(reference, expected, "the reference judges the flow after DNAT");
            let via_vip = testbed.connects(&from, vip, TCP_80).await.expect("probe");
            assert_eq!(via_vip, expected, "{step}: {from} -> ClusterIP -> x/a");
        }
    }

    testbed.cleanup().await.expect("cleanup");
    unchanged(&testbed, "cleanup");
    for node in ["n1", "n2"] {
        let saved = testbed.net.node_exec(node, &["iptables-save"]).expect("save");
        assert!(!saved.contains("PAL-"), "cleanup left our chains on {node}:\n{saved}");
    }
    assert!(testbed.connects("y/b", vip, TCP_80).await.expect("probe"));
    assert!(testbed.connects("z/b", vip, TCP_80).await.expect("probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_flush_of_our_chains_is_repaired() {
    let mut testbed = Testbed::netpol_matrix().expect("build");
    testbed.enforce(&x_only_from("y")).await.expect("enforce");
    let target = pod_ip(&testbed, "x/a");
    assert!(!testbed.connects("z/b", target, TCP_80).await.expect("probe"), "denied while enforced");

    let saved = testbed.net.node_exec("n1", &["iptables-save", "-t", "filter"]).expect("save");
    let ours: Vec<&str> = saved
        .lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|chain| chain.starts_with("PAL-"))
        .collect();
    assert!(!ours.is_empty());
    for chain in &ours {
        testbed.net.node_exec("n1", &["iptables", "-w", "-F", chain]).expect("foreign flush");
    }
    assert!(testbed.connects("z/b", target, TCP_80).await.expect("probe"), "flushed chains enforce nothing (drift)");

    let report = testbed.repair("n1").await.expect("repair");
    assert!(report.chains_written >= ours.len(), "every flushed chain rewritten: {report:?}");
    assert!(!testbed.connects("z/b", target, TCP_80).await.expect("probe"), "denied again after repair");
    assert!(testbed.connects("y/a", target, TCP_80).await.expect("probe"));
}

/// Whether z/b and y/a (both on n2) reach `target` on TCP 80.
async fn denied_and_allowed(testbed: &Testbed, target: IpAddr) -> (bool, bool) {
    (
        testbed.connects("z/b", target, TCP_80).await.expect("probe"),
        testbed.connects("y/a", target, TCP_80).await.expect("probe"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_restore_leaves_the_previous_enforcement() {
    let mut testbed = Testbed::netpol_matrix().expect("build");
    testbed.enforce(&x_only_from("y")).await.expect("enforce");
    let target = pod_ip(&testbed, "x/a");
    assert_eq!(denied_and_allowed(&testbed, target).await, (false, true));

    // The next plan would flip both flows: x accepts z instead of y (x stays isolated).
    let flipped = testbed.compile(&x_only_from("z")).expect("compile");
    let rejected = testbed.enforce_with_fault(&flipped, "-A PAL-FORWARD -j PAL-DOES-NOT-EXIST").await;
    assert!(rejected.is_err(), "the injected line must be rejected");
    assert_eq!(denied_and_allowed(&testbed, target).await, (false, true), "the previous rules stay in force");

    testbed.enforce_plans(&flipped).await.expect("the retry converges");
    assert_eq!(denied_and_allowed(&testbed, target).await, (true, false));
}

/// Set changes that loosen anything (removals from the isolation sets, peer-set members) run only
/// after the iptables transaction committed, so a rejected plan that un-isolates a pod leaves it
/// isolated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_restore_that_would_unisolate_a_pod_leaves_it_isolated() {
    let mut testbed = Testbed::netpol_matrix().expect("build");
    testbed.enforce(&x_only_from("y")).await.expect("enforce");
    let target = pod_ip(&testbed, "x/a");
    assert_eq!(denied_and_allowed(&testbed, target).await, (false, true));

    let open = testbed.compile(&[]).expect("compile");
    let rejected = testbed.enforce_with_fault(&open, "-A PAL-FORWARD -j PAL-DOES-NOT-EXIST").await;
    assert!(rejected.is_err(), "the injected line must be rejected");
    assert_eq!(denied_and_allowed(&testbed, target).await, (false, true), "the previous rules stay in force");
}
