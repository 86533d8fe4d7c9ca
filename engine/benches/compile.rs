//! Compile-time figures at production scale: 10,000 pods, 2,000 policies, 100 nodes.
//! Prints numbers only; no assertions.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use palisade_engine::model::*;
use palisade_engine::{Engine, compile};

const NODES: usize = 100;
const NAMESPACES: usize = 200;
const PODS: usize = 10_000;
const POLICIES: usize = 2_000;
const APPS: usize = 25;

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn select(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector { match_labels: labels(pairs), match_expressions: vec![] }
}

/// A cheap deterministic scramble, so labels and choices do not line up on shared moduli.
fn mix(i: usize, salt: usize) -> usize {
    let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (salt as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 29)) as usize
}

fn pod(i: usize) -> Pod {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1));
    Pod {
        key: PodKey { namespace: format!("ns{}", mix(i, 1) % NAMESPACES), name: format!("pod{i}") },
        labels: labels(&[
            ("app", format!("app{}", mix(i, 2) % APPS)),
            ("tier", ["web", "api", "db"][mix(i, 3) % 3].to_string()),
        ]),
        node: Some(format!("node{}", i % NODES)),
        ips: vec![ip],
        named_ports: vec![NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
        host_network: false,
        terminated: false,
    }
}

fn cluster() -> Cluster {
    let namespaces = (0..NAMESPACES)
        .map(|i| {
            let name = format!("ns{i}");
            let ns = Namespace {
                name: name.clone(),
                labels: labels(&[("team", format!("team{}", i % 20)), ("kubernetes.io/metadata.name", name.clone())]),
            };
            (name, ns)
        })
        .collect();
    let nodes = (0..NODES)
        .map(|i| {
            let node = Node {
                name: format!("node{i}"),
                labels: labels(&[("zone", format!("z{}", i % 3))]),
                ips: vec![IpAddr::V4(Ipv4Addr::new(192, 168, (i / 250) as u8, (i % 250) as u8 + 1))],
            };
            (node.name.clone(), node)
        })
        .collect();
    let pods = (0..PODS).map(pod).map(|p| (p.key.clone(), p)).collect();
    Cluster { namespaces, pods, nodes }
}

fn port(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: None, port: Some(PortValue::Number(number)), end_port: None }
}

/// 85% NetworkPolicies (app-to-app, namespace allow-lists, ipBlocks, named ports), 15% CNPs.
fn policies() -> Vec<Policy> {
    (0..POLICIES)
        .map(|i| {
            let namespace = format!("ns{}", mix(i, 4) % NAMESPACES);
            if i % 20 < 17 {
                let peer = match mix(i, 5) % 4 {
                    0 => NetworkPolicyPeer {
                        pod_selector: Some(select(&[("app", format!("app{}", mix(i, 6) % APPS))])),
                        ..Default::default()
                    },
                    1 => NetworkPolicyPeer {
                        namespace_selector: Some(select(&[("team", format!("team{}", mix(i, 7) % 20))])),
                        ..Default::default()
                    },
                    2 => NetworkPolicyPeer {
                        ip_block: Some(IpBlock {
                            cidr: format!("172.{}.0.0/16", i % 200),
                            except: vec![format!("172.{}.1.0/24", i % 200)],
                        }),
                        ..Default::default()
                    },
                    _ => NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        pod_selector: Some(select(&[("tier", "web".to_string())])),
                        ip_block: None,
                    },
                };
                let ports = if i % 5 == 0 {
                    vec![NetworkPolicyPort {
                        protocol: None,
                        port: Some(PortValue::Name("http".into())),
                        end_port: None,
                    }]
                } else {
                    vec![port(80 + (i % 10) as i32), port(443)]
                };
                Policy::Network(NetworkPolicy {
                    namespace,
                    name: format!("np{i}"),
                    revision: Revision::default(),
                    pod_selector: select(&[("app", format!("app{}", mix(i, 8) % APPS))]),
                    policy_types: if i % 3 == 0 { Some(vec![PolicyType::Ingress, PolicyType::Egress]) } else { None },
                    ingress: vec![NetworkPolicyRule { peers: vec![peer.clone()], ports: ports.clone() }],
                    egress: if i % 3 == 0 { vec![NetworkPolicyRule { peers: vec![peer], ports }] } else { vec![] },
                })
            } else {
                let team = select(&[("team", format!("team{}", mix(i, 9) % 20))]);
                Policy::Cluster(ClusterNetworkPolicy {
                    name: format!("cnp{i}"),
                    revision: Revision::default(),
                    tier: if i % 2 == 0 { Tier::Admin } else { Tier::Baseline },
                    priority: (i % 50) as i32,
                    subject: CnpSubject::Namespaces(team.clone()),
                    ingress: vec![CnpRule {
                        name: None,
                        action: CnpAction::Pass,
                        peers: vec![CnpPeer::Namespaces(team)],
                        protocols: None,
                    }],
                    egress: vec![
                        CnpRule {
                            name: None,
                            action: CnpAction::Accept,
                            peers: vec![CnpPeer::Pods {
                                namespace_selector: select(&[("kubernetes.io/metadata.name", "ns0".to_string())]),
                                pod_selector: select(&[("app", "app0".to_string())]),
                            }],
                            protocols: Some(vec![CnpProtocol::Port {
                                protocol: Protocol::Udp,
                                port: CnpPort::Number(53),
                            }]),
                        },
                        CnpRule {
                            name: None,
                            action: CnpAction::Deny,
                            peers: vec![CnpPeer::Networks(vec!["0.0.0.0/0".into()])],
                            protocols: Some(vec![CnpProtocol::Port {
                                protocol: Protocol::Tcp,
                                port: CnpPort::Range { start: 1, end: 1024 },
                            }]),
                        },
                    ],
                })
            }
        })
        .collect()
}

fn main() {
    let cluster = cluster();
    let policies = policies();
    println!("scale: {PODS} pods, {POLICIES} policies, {NODES} nodes, {NAMESPACES} namespaces");

    let started = Instant::now();
    let compiled = compile(&cluster, &policies);
    let full = started.elapsed();
    let rules: usize = compiled.plans.values().map(|p| p.rule_sets.len()).sum();
    let groups: usize = compiled.plans.values().map(|p| p.groups.len()).sum();
    println!(
        "full compile (engine state + all {NODES} node plans): {:.1} ms  (errors: {}, rule sets across plans: {rules}, groups across plans: {groups})",
        full.as_secs_f64() * 1e3,
        compiled.errors.len()
    );

    let started = Instant::now();
    let mut engine = Engine::with_cluster(cluster.clone());
    for policy in &policies {
        engine.upsert_policy(policy.clone());
    }
    let state = started.elapsed();
    println!("engine state only (index + {POLICIES} policies): {:.1} ms", state.as_secs_f64() * 1e3);

    let started = Instant::now();
    let plans: BTreeMap<String, _> = engine.node_plans();
    let all_plans = started.elapsed();
    println!("produce all {} node plans: {:.1} ms", plans.len(), all_plans.as_secs_f64() * 1e3);

    engine.take_plan_changes();
    // Warm: a few pod adds first, each taken, so the figure is one steady event.
    for extra in 0..5 {
        let mut warm = pod(PODS + 10 + extra);
        warm.key.name = format!("warm-{extra}");
        engine.upsert_pod(warm);
        engine.take_plan_changes();
    }
    let mut added = pod(PODS + 1);
    added.key.name = "new-pod".into();
    let started = Instant::now();
    let delta = engine.upsert_pod(added.clone());
    let add = started.elapsed();
    println!(
        "incremental: add one pod: {:.3} ms ({:.3}% of full compile; {} groups changed, {} nodes affected)",
        add.as_secs_f64() * 1e3,
        100.0 * add.as_secs_f64() / full.as_secs_f64(),
        delta.changed_groups.len(),
        delta.affected_nodes.len()
    );
    let started = Instant::now();
    let changes = engine.take_plan_changes();
    let take = started.elapsed();
    let patches: usize = changes.deltas.values().map(|d| d.patched_groups.len()).sum();
    let whole: usize = changes.deltas.values().map(|d| d.upserted_groups.len() + d.upserted_rule_sets.len()).sum();
    println!(
        "  its per-node changes: {:.3} ms for {} nodes ({patches} group patches, shared; {whole} groups or rule sets sent whole)",
        take.as_secs_f64() * 1e3,
        changes.deltas.len(),
    );

    added.labels.insert("app".into(), "app7".into());
    let started = Instant::now();
    let delta = engine.upsert_pod(added);
    engine.take_plan_changes();
    let relabel = started.elapsed();
    println!(
        "incremental: relabel one pod, changes taken: {:.3} ms ({:.3}% of full compile; {} groups changed, {} nodes affected)",
        relabel.as_secs_f64() * 1e3,
        100.0 * relabel.as_secs_f64() / full.as_secs_f64(),
        delta.changed_groups.len(),
        delta.affected_nodes.len()
    );

    let started = Instant::now();
    let plan = engine.node_plan(&format!("node{}", (PODS + 1) % NODES));
    let one_plan = started.elapsed();
    println!(
        "one node plan after the event: {:.3} ms ({} pods, {} rule sets, {} groups)",
        one_plan.as_secs_f64() * 1e3,
        plan.pods.len(),
        plan.rule_sets.len(),
        plan.groups.len()
    );
}
