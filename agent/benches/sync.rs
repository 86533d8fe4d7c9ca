//! Sync cost for one node of a synthetic 10k-pod / 1k-policy cluster. Prints figures, asserts nothing.
//!
//! Cluster model: 100 nodes, 100 namespaces of 100 pods, 10 NetworkPolicies per namespace (1k in
//! all, each isolating ~30% of its namespace for ingress, every 4th also for egress), 4 admin and 2
//! baseline ClusterNetworkPolicies selecting every pod. This node hosts 100 pods, one per namespace.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-agent cargo bench -p palisade-agent --bench sync` (root).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Netns, pod, rsid, rule, rule_set, tcp};
use palisade_agent::{RenderConfig, render};
use palisade_engine::model::{PolicyKind, Protocol};
use palisade_engine::plan::{
    Action, Direction, DirectionPlan, Group, GroupId, LocalPod, NetEntry, NodePlan, PeerMatch, PortEntry, PortMatch,
};

const NAMESPACES: u32 = 100;
const PODS_PER_NAMESPACE: u32 = 100;
const POLICIES_PER_NAMESPACE: u32 = 10;
const ROUNDS: usize = 3;

/// Cluster pod `index` (0..10k) lives at 198.18.<index/256>.<index%256>... spread over 198.18.0.0/15.
fn pod_ip(namespace: u32, index: u32) -> IpAddr {
    let n = namespace * PODS_PER_NAMESPACE + index + 256;
    IpAddr::V4(Ipv4Addr::new(198, 18 + (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(bound)) as u32
    }
}

fn id(kind: char, n: u32) -> String {
    format!("{kind}{n:015x}")
}

fn synthetic_plan() -> NodePlan {
    let mut random = Lcg(42);
    let mut groups = BTreeMap::new();
    let mut rule_sets = BTreeMap::new();
    let mut pods: BTreeMap<_, LocalPod> = BTreeMap::new();

    // Cluster-wide groups: all pods of half the namespaces ("env=prod", 5k members) and monitoring.
    let prod: BTreeSet<IpAddr> =
        (0..NAMESPACES).step_by(2).flat_map(|ns| (0..PODS_PER_NAMESPACE).map(move |i| pod_ip(ns, i))).collect();
    groups.insert(GroupId(id('a', 0xffff0)), Group::Addresses(prod));
    groups.insert(
        GroupId(id('a', 0xffff1)),
        Group::Addresses((0..20).map(|i| pod_ip(99, i)).collect()), // monitoring
    );
    groups.insert(
        GroupId(id('n', 0xffff2)),
        Group::Networks(BTreeSet::from([
            NetEntry { net: "0.0.0.0/0".parse().expect("net"), nomatch: false },
            NetEntry { net: "198.18.0.0/15".parse().expect("net"), nomatch: true },
            NetEntry { net: "10.0.0.0/8".parse().expect("net"), nomatch: true },
        ])),
    );
    let admin_egress = rsid(&id('e', 1));
    rule_sets.insert(
        admin_egress.clone(),
        rule_set(
            PolicyKind::ClusterNetworkPolicy,
            "admin-egress",
            Direction::Egress,
            vec![
                rule(
                    0,
                    Action::Accept,
                    PeerMatch::Any,
                    PortMatch::AnyOf(vec![
                        PortEntry::Range { protocol: Protocol::Udp, first: 53, last: 53 },
                        tcp(53, 53),
                    ]),
                ),
                rule(
                    1,
                    Action::Deny,
                    PeerMatch::AnyOf(vec![GroupId(id('n', 0xffff2))]),
                    PortMatch::AnyOf(vec![tcp(25, 25)]),
                ),
                rule(2, Action::Pass, PeerMatch::AnyOf(vec![GroupId(id('a', 0xffff0))]), PortMatch::Any),
            ],
        ),
    );
    let admin_ingress: Vec<_> = (0..3)
        .map(|n| {
            let set_id = rsid(&id('f', n));
            rule_sets.insert(
                set_id.clone(),
                rule_set(
                    PolicyKind::ClusterNetworkPolicy,
                    &format!("admin-in-{n}"),
                    Direction::Ingress,
                    vec![
                        rule(
                            0,
                            Action::Accept,
                            PeerMatch::AnyOf(vec![GroupId(id('a', 0xffff1))]),
                            PortMatch::AnyOf(vec![tcp(9100 + n as u16, 9100 + n as u16)]),
                        ),
                        rule(1, Action::Deny, PeerMatch::AnyOf(vec![GroupId(id('n', 0xffff2))]), PortMatch::Any),
                    ],
                ),
            );
            set_id
        })
        .collect();
    let baseline: Vec<_> = (0..2)
        .map(|n| {
            let set_id = rsid(&id('d', n));
            rule_sets.insert(
                set_id.clone(),
                rule_set(
                    PolicyKind::ClusterNetworkPolicy,
                    &format!("baseline-{n}"),
                    Direction::Ingress,
                    vec![
                        rule(0, Action::Accept, PeerMatch::AnyOf(vec![GroupId(id('a', 0xffff0))]), PortMatch::Any),
                        rule(1, Action::Deny, PeerMatch::Any, PortMatch::Any),
                    ],
                ),
            );
            set_id
        })
        .collect();

    for namespace in 0..NAMESPACES {
        // The local pod of this namespace is pod 0; policies select ~30% of the namespace.
        let local_ip = pod_ip(namespace, 0);
        let mut ingress_sets = Vec::new();
        let mut egress_sets = Vec::new();
        for policy in 0..POLICIES_PER_NAMESPACE {
            let number = namespace * POLICIES_PER_NAMESPACE + policy;
            let peers: Vec<GroupId> = (0..2)
                .map(|peer| {
                    let group_id = GroupId(id('a', number * 4 + peer));
                    let size = 5 + random.next(60);
                    let peer_namespace = random.next(NAMESPACES);
                    let members = (0..size).map(|_| pod_ip(peer_namespace, random.next(PODS_PER_NAMESPACE))).collect();
                    groups.insert(group_id.clone(), Group::Addresses(members));
                    group_id
                })
                .collect();
            let port = 8000 + (number % 50) as u16;
            let ingress_id = rsid(&id('b', number));
            rule_sets.insert(
                ingress_id.clone(),
                rule_set(
                    PolicyKind::NetworkPolicy,
                    &format!("np-{number}"),
                    Direction::Ingress,
                    vec![
                        rule(
                            0,
                            Action::Accept,
                            PeerMatch::AnyOf(peers.clone()),
                            PortMatch::AnyOf(vec![tcp(port, port), tcp(443, 443)]),
                        ),
                        rule(
                            1,
                            Action::Accept,
                            PeerMatch::AnyOf(vec![GroupId(id('a', 0xffff1))]),
                            PortMatch::AnyOf(vec![tcp(9090, 9090)]),
                        ),
                    ],
                ),
            );
            let selects_local = random.next(10) < 3;
            if selects_local {
                ingress_sets.push(ingress_id);
            }
            if policy % 4 == 0 {
                let egress_id = rsid(&id('c', number));
                let block = GroupId(id('n', number));
                groups.insert(
                    block.clone(),
                    Group::Networks(BTreeSet::from([
                        NetEntry { net: format!("198.18.{}.0/24", namespace).parse().expect("net"), nomatch: false },
                        NetEntry { net: format!("198.18.{}.128/25", namespace).parse().expect("net"), nomatch: true },
                    ])),
                );
                let named = GroupId(id('p', number));
                groups.insert(
                    named.clone(),
                    Group::IpPorts((0..10).map(|i| (pod_ip(namespace, i), Protocol::Tcp, 8080)).collect()),
                );
                rule_sets.insert(
                    egress_id.clone(),
                    rule_set(
                        PolicyKind::NetworkPolicy,
                        &format!("np-eg-{number}"),
                        Direction::Egress,
                        vec![
                            rule(
                                0,
                                Action::Accept,
                                PeerMatch::AnyOf(peers),
                                PortMatch::AnyOf(vec![PortEntry::Named(named)]),
                            ),
                            rule(
                                1,
                                Action::Accept,
                                PeerMatch::AnyOf(vec![block]),
                                PortMatch::AnyOf(vec![tcp(5432, 5432), tcp(6379, 6379)]),
                            ),
                        ],
                    ),
                );
                if selects_local {
                    egress_sets.push(egress_id);
                }
            }
        }
        pods.insert(
            pod(&format!("ns-{namespace}"), "pod-0"),
            LocalPod {
                ips: vec![local_ip],
                ingress: DirectionPlan {
                    admin: admin_ingress.clone(),
                    network_policy: (!ingress_sets.is_empty()).then_some(ingress_sets),
                    baseline: baseline.clone(),
                },
                egress: DirectionPlan {
                    admin: vec![admin_egress.clone()],
                    network_policy: (!egress_sets.is_empty()).then_some(egress_sets),
                    baseline: Vec::new(),
                },
            },
        );
    }
    // A plan only carries what its local pods refer to; the renderer renders only that anyway,
    // but trim the groups so the ipset figures are honest.
    let mut plan = NodePlan { node: "node-0".into(), node_ips: Vec::new(), pods, rule_sets, groups };
    let used_sets: BTreeSet<_> = plan
        .pods
        .values()
        .flat_map(|p| [&p.ingress, &p.egress])
        .flat_map(|d| d.admin.iter().chain(d.network_policy.iter().flatten()).chain(d.baseline.iter()))
        .cloned()
        .collect();
    plan.rule_sets.retain(|id, _| used_sets.contains(id));
    let used_groups: BTreeSet<GroupId> = plan
        .rule_sets
        .values()
        .flat_map(|set| &set.rules)
        .flat_map(|rule| {
            let peers = match &rule.peers {
                PeerMatch::AnyOf(groups) => groups.clone(),
                PeerMatch::Any => Vec::new(),
            };
            let named = match &rule.ports {
                PortMatch::AnyOf(entries) => entries
                    .iter()
                    .filter_map(|e| if let PortEntry::Named(g) = e { Some(g.clone()) } else { None })
                    .collect(),
                PortMatch::Any => Vec::new(),
            };
            peers.into_iter().chain(named)
        })
        .collect();
    plan.groups.retain(|id, _| used_groups.contains(id));
    plan
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn raw_install(netns: &Netns, ipsets: &str, ipv4: &str, ipv6: &str) -> Duration {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        assert!(child.wait().expect("wait").success(), "{args:?} failed");
    };
    let start = Instant::now();
    run(&["ipset", "restore", "-exist"], ipsets);
    run(&["iptables-restore", "--noflush", "--wait=10"], ipv4);
    run(&["ip6tables-restore", "--noflush", "--wait=10"], ipv6);
    start.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let plan = synthetic_plan();
    let config = RenderConfig { node_ips: vec!["198.18.0.1".parse().expect("ip")], ..RenderConfig::default() };

    let render_start = Instant::now();
    let rendered = render(&plan, &config);
    let render_time = render_start.elapsed();
    let members: usize = rendered.ipsets.sets.values().map(|set| set.members.len()).sum();
    println!("plan: {} local pods, {} rule sets, {} groups", plan.pods.len(), plan.rule_sets.len(), plan.groups.len());
    println!(
        "iptables lines per node: {} (ipv4 {} + ipv6 {}), {} chains; goal <= 20000",
        rendered.v4.rule_count() + rendered.v6.rule_count(),
        rendered.v4.rule_count(),
        rendered.v6.rule_count(),
        rendered.v4.chains.len() + rendered.v6.chains.len()
    );
    println!("ipsets: {} sets, {} members; render time {:?}", rendered.ipsets.sets.len(), members, render_time);

    let ipset_text = rendered.ipsets.restore_text();
    let mut raw = Vec::new();
    let mut applier_times = Vec::new();
    for _ in 0..ROUNDS {
        let netns = Netns::new();
        raw.push(raw_install(&netns, &ipset_text, &rendered.ipv4, &rendered.ipv6));
        drop(netns);

        let netns = Netns::new();
        let mut applier = netns.applier();
        let start = Instant::now();
        runtime.block_on(applier.sync(&rendered)).expect("applier sync");
        applier_times.push(start.elapsed());
    }
    let (raw, through_applier) = (median(raw), median(applier_times));
    println!(
        "full sync (median of {ROUNDS}): applier {:?} vs raw ipset+iptables restore {:?}: ratio {:.2}x (goal <= 1.25x)",
        through_applier,
        raw,
        through_applier.as_secs_f64() / raw.as_secs_f64()
    );

    let netns = Netns::new();
    let mut applier = netns.applier();
    runtime.block_on(applier.sync(&rendered)).expect("install");
    let start = Instant::now();
    let noop = runtime.block_on(applier.sync(&rendered)).expect("no-op sync");
    println!(
        "no-op sync: {:?}, {} iptables lines, {} ipset lines",
        start.elapsed(),
        noop.iptables_lines,
        noop.ipset_lines
    );

    // Pod churn: a pod of a peer namespace is replaced (one IP leaves, another joins every group it was in).
    let mut churned = plan.clone();
    let (leaving, joining) = (pod_ip(7, 3), pod_ip(7, 99));
    for group in churned.groups.values_mut() {
        if let Group::Addresses(members) = group
            && members.remove(&leaving)
        {
            members.insert(joining);
        }
    }
    let start = Instant::now();
    let rendered_churn = render(&churned, &config);
    let churn = runtime.block_on(applier.sync(&rendered_churn)).expect("churn sync");
    println!(
        "pod churn event: {} iptables lines rewritten (goal 0), {} ipset lines ({} added, {} removed), {:?} render+sync",
        churn.iptables_lines,
        churn.ipset_lines,
        churn.members_added,
        churn.members_removed,
        start.elapsed()
    );

    // A new local pod under existing policies: its dispatch rule and per-pod chains only.
    let mut grown = churned.clone();
    let template = grown.pods.values().next().cloned().expect("a pod");
    grown.pods.insert(pod("ns-0", "pod-new"), LocalPod { ips: vec![pod_ip(0, 98)], ..template });
    let start = Instant::now();
    let added = runtime.block_on(applier.sync(&render(&grown, &config))).expect("new pod sync");
    println!(
        "new local pod: {} iptables lines in {} chains, {} ipset lines, {:?}",
        added.iptables_lines,
        added.chains_written,
        added.ipset_lines,
        start.elapsed()
    );
    println!("metrics: {:?}", applier.metrics());
}
