//! Policy programming latency end to end, and the operator's footprint at scale.
//!
//! 1. A 4-node stack with 4 real pods (x/a, x/b, y/a, y/b, one per node) plus API-only pods (fake
//!    addresses from 198.19.0.0/17, never wired) up to 1,000 pods, and 500 NetworkPolicies over
//!    them, so every plan and every agent carries real weight.
//! 2. 50 times: apply a policy isolating x/a → time until y/b's probes to x/a fail; delete it →
//!    time until they connect again. Then, with a policy admitting only `role=friend` pods into
//!    x/a, 50 times: label y/b a friend → time until it connects; remove the label → time until
//!    it is blocked. Printed as p50/p99/max per change.
//! 3. The stages of those changes from the operators' and agents' histograms
//!    (`palisade_operator_stage_seconds`, `palisade_agent_stage_seconds`): p50 and p99 of each.
//! 4. More API-only pods up to 10,000; once the operators settle, each replica's RSS (VmRSS,
//!    VmHWM) and CPU time (utime + stime) from /proc.
//!
//! Run: `cargo bench -p palisade-e2e --bench latency` (root, KUBEBUILDER_ASSETS; set PALISADE_BIN to a
//! release build of `palisade`, or the figures describe a debug build). `E2E_BENCH_ITERATIONS`
//! overrides 50.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, PostParams};
use palisade_conformance::k8s::{policy, with_ingress};
use palisade_conformance::{Object, ObjectRef, PodId};
use palisade_e2e::Stack;
use palisade_e2e::measure::{Footprint, flip_time, percentile, settle_cpu, wired_model};
use serde_json::json;

const WIRED_PODS: usize = 4;
const PODS_FOR_LATENCY: usize = 1_000;
const POLICIES: usize = 500;
const PODS_FOR_FOOTPRINT: usize = 10_000;
const LOAD_NAMESPACES: usize = 50;
/// A denied probe costs this; it bounds the resolution of the "connects again" direction.
const PROBE_TIMEOUT: Duration = Duration::from_millis(30);
const FLIP_DEADLINE: Duration = Duration::from_secs(30);

/// The `index`-th API-only pod's address: 198.19.0.0/17, which nothing routes.
fn fake_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, (index / 250) as u8, (index % 250 + 1) as u8))
}

struct Load {
    namespaces: Vec<String>,
    nodes: Vec<String>,
    created_pods: usize,
}

impl Load {
    async fn create_namespaces(client: &Client, run: &str, nodes: Vec<String>) -> Load {
        let api: Api<Namespace> = Api::all(client.clone());
        let mut namespaces = Vec::new();
        for i in 0..LOAD_NAMESPACES {
            let name = format!("load-{i}-{run}");
            let object: Namespace = serde_json::from_value(json!({
                "metadata": { "name": name, "labels": { "team": format!("t{}", i % 5) } }
            }))
            .expect("namespace");
            api.create(&PostParams::default(), &object).await.expect("create load namespace");
            namespaces.push(name);
        }
        Load { namespaces, nodes, created_pods: 0 }
    }

    /// Creates API-only pods (Running, fake IPs, spread over the nodes) until `total` exist.
    async fn grow_pods(&mut self, client: &Client, total: usize) {
        let limit = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        for index in self.created_pods..total {
            let namespace = self.namespaces[index % self.namespaces.len()].clone();
            let node = self.nodes[index % self.nodes.len()].clone();
            let (client, limit) = (client.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let name = format!("load-{index}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": { "name": name, "namespace": namespace,
                                  "labels": { "app": format!("app{}", index % 10), "tier": format!("tier{}", index % 3) } },
                    "spec": { "nodeName": node, "containers": [{ "name": "c", "image": "palisade.invalid/load",
                              "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }] }] },
                }))
                .expect("pod");
                Api::<Pod>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &pod).await.expect("create pod");
                palisade_testkit::mark_pod_running(&client, &namespace, &name, &[fake_ip(index)], &[IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11))])
                    .await
                    .expect("mark running");
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("pod task");
        }
        self.created_pods = total;
    }

    /// `count` NetworkPolicies spread over the load namespaces: app-selected pods accept port
    /// 8080 from one team's namespaces and one tier.
    async fn create_policies(&self, client: &Client, count: usize) {
        for index in 0..count {
            let namespace = &self.namespaces[index % self.namespaces.len()];
            let np: NetworkPolicy = serde_json::from_value(json!({
                "metadata": { "name": format!("load-{index}"), "namespace": namespace },
                "spec": {
                    "podSelector": { "matchLabels": { "app": format!("app{}", index % 10) } },
                    "policyTypes": ["Ingress"],
                    "ingress": [{
                        "from": [{ "namespaceSelector": { "matchLabels": { "team": format!("t{}", index % 5) } },
                                   "podSelector": { "matchLabels": { "tier": format!("tier{}", index % 3) } } }],
                        "ports": [{ "protocol": "TCP", "port": 8080 }],
                    }],
                },
            }))
            .expect("policy");
            Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
                .create(&PostParams::default(), &np)
                .await
                .expect("create load policy");
        }
    }
}

/// The time from `since` until `from -> to` on TCP/80 holds `connected` (3 probes in a row).
async fn time_until(stack: &Stack, from: &PodId, to: &PodId, connected: bool, since: Instant) -> Duration {
    flip_time(stack.cluster(), (from, to), 80, connected, since, (PROBE_TIMEOUT, 3, FLIP_DEADLINE))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Cumulative bucket counts per stage of one histogram family, summed over every endpoint.
type Buckets = BTreeMap<String, Vec<(f64, u64)>>;

/// Reads `<family>_bucket{stage="…",le="…"} n` lines of every endpoint and sums them.
async fn stage_buckets(addresses: &[std::net::SocketAddr], family: &str) -> Buckets {
    let mut sums: BTreeMap<String, BTreeMap<String, (f64, u64)>> = BTreeMap::new();
    for address in addresses {
        let Some((_, text)) = palisade_e2e::stack::http_get(*address, "/metrics").await else { continue };
        for line in text.lines().filter(|line| line.starts_with(&format!("{family}_bucket{{"))) {
            let Some((labels, count)) = line.rsplit_once(' ') else { continue };
            let label = |name: &str| {
                let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
                labels[start..].split('"').next().map(str::to_owned)
            };
            let (Some(stage), Some(le), Ok(count)) = (label("stage"), label("le"), count.parse::<f64>()) else {
                continue;
            };
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            let entry = sums.entry(stage).or_default().entry(le).or_insert((bound, 0));
            entry.1 += count as u64;
        }
    }
    sums.into_iter()
        .map(|(stage, buckets)| {
            let mut buckets: Vec<(f64, u64)> = buckets.into_values().collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            (stage, buckets)
        })
        .collect()
}

/// The quantile of the observations between two readings: the upper bound of the first bucket
/// that holds it (a histogram's resolution).
fn bucket_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<(f64, u64)> {
    let counts: Vec<(f64, u64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before.iter().find(|(b, _)| b == bound).map_or(0, |(_, c)| *c);
            (*bound, count.saturating_sub(earlier))
        })
        .collect();
    let total = counts.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil() as u64;
    counts.iter().find(|(_, count)| *count >= rank).map(|(bound, _)| (*bound, total))
}

fn print_stages(label: &str, before: &Buckets, after: &Buckets) {
    for (stage, buckets) in after {
        let earlier = before.get(stage).map(Vec::as_slice).unwrap_or(&[]);
        let (Some((p50, count)), Some((p99, _))) =
            (bucket_quantile(earlier, buckets, 0.5), bucket_quantile(earlier, buckets, 0.99))
        else {
            continue;
        };
        let ms = |seconds: f64| {
            if seconds.is_finite() { format!("≤{:.2} ms", seconds * 1e3) } else { "above 1.6 s".into() }
        };
        println!("  {label} {stage:<8} n={count:<5} p50 {:<10} p99 {}", ms(p50), ms(p99));
    }
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms min={:.1} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
        ms(*samples.first().unwrap_or(&Duration::ZERO)),
    );
}

fn print_footprints(stack: &Stack, label: &str) {
    for replica in stack.operators() {
        if let Some(pid) = replica.pid() {
            match Footprint::of(pid) {
                Some(f) => println!(
                    "{label}: operator {} (pid {pid}): VmRSS {:.1} MiB, VmHWM {:.1} MiB, CPU {:.2} s",
                    replica.identity,
                    f.rss_mib(),
                    f.hwm_mib(),
                    f.cpu_seconds
                ),
                None => println!("{label}: operator {} (pid {pid}): /proc unreadable", replica.identity),
            }
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let iterations: usize = std::env::var("E2E_BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let started = Instant::now();
    let mut stack = Stack::start(&wired_model(4)).await.unwrap_or_else(|e| panic!("stack start: {e}"));
    println!("stack: 4 nodes, 2 operator replicas, 4 agents up in {:.1} s", started.elapsed().as_secs_f64());
    let client = stack.client();
    let run = stack.cluster().net.run_id().trim_start_matches("pal-").to_owned();
    let nodes: Vec<String> = stack.cluster().net.nodes().iter().map(|n| n.netns.clone()).collect();
    let mut load = Load::create_namespaces(&client, &run, nodes).await;

    let loading = Instant::now();
    load.grow_pods(&client, PODS_FOR_LATENCY - WIRED_PODS).await;
    load.create_policies(&client, POLICIES).await;
    println!(
        "load: {} pods ({WIRED_PODS} wired, the rest API-only), {POLICIES} NetworkPolicies, created in {:.1} s",
        PODS_FOR_LATENCY,
        loading.elapsed().as_secs_f64()
    );
    let pids: Vec<u32> = stack.operators().iter().filter_map(|r| r.pid()).collect();
    settle_cpu(&pids, Duration::from_secs(300)).await;
    let node_plan = stack.persisted_plan("n1").await.ok().flatten();
    if let Some(plan) = node_plan {
        println!(
            "n1's plan: {} local pods, {} rule sets, {} groups",
            plan.pods.len(),
            plan.rule_sets.len(),
            plan.groups.len()
        );
    }
    print_footprints(&stack, "at 1,000 pods / 500 policies");

    let (from, to) = (PodId::new("y", "b"), PodId::new("x", "a"));
    let mut isolate = policy("bench-isolate", palisade_conformance::k8s::match_labels(&[("pod", "a")]));
    isolate = with_ingress(isolate, vec![]);
    isolate.metadata.namespace = Some("x".into());
    let isolate = Object::NetworkPolicy(isolate);
    let reference = ObjectRef::NetworkPolicy { namespace: "x".into(), name: "bench-isolate".into() };

    let operator_probes: Vec<std::net::SocketAddr> = stack.operators().iter().map(|r| r.probe_address).collect();
    let agent_probes: Vec<std::net::SocketAddr> = stack.agents().iter().map(|a| a.health_address).collect();

    // One warm-up round, not counted.
    stack.apply(&isolate).await.expect("apply");
    time_until(&stack, &from, &to, false, Instant::now()).await;
    stack.delete(&reference).await.expect("delete");
    time_until(&stack, &from, &to, true, Instant::now()).await;

    let operator_before = stage_buckets(&operator_probes, "palisade_operator_stage_seconds").await;
    let agent_before = stage_buckets(&agent_probes, "palisade_agent_stage_seconds").await;
    let mut deny = Vec::new();
    let mut allow = Vec::new();
    for _ in 0..iterations {
        let applied = Instant::now();
        stack.apply(&isolate).await.expect("apply");
        deny.push(time_until(&stack, &from, &to, false, applied).await);
        let deleted = Instant::now();
        stack.delete(&reference).await.expect("delete");
        allow.push(time_until(&stack, &from, &to, true, deleted).await);
    }
    println!("programming latency at 1,000 pods / 500 policies / 4 nodes (y/b on n4 -> x/a on n1, TCP 80):");
    summary("  apply isolating policy -> probe blocked", deny);
    summary(&format!("  delete it -> probe connects (resolution {} ms)", PROBE_TIMEOUT.as_millis()), allow);

    // A pod label change that moves y/b into (and out of) the group a policy admits.
    let mut friends = policy("bench-friends", palisade_conformance::k8s::match_labels(&[("pod", "a")]));
    friends = with_ingress(
        friends,
        vec![palisade_conformance::k8s::ingress_rule(
            vec![palisade_conformance::k8s::namespaces_and_pods(
                palisade_conformance::k8s::everything(),
                palisade_conformance::k8s::match_labels(&[("role", "friend")]),
            )],
            vec![],
        )],
    );
    friends.metadata.namespace = Some("x".into());
    stack.apply(&Object::NetworkPolicy(friends)).await.expect("apply friends");
    time_until(&stack, &from, &to, false, Instant::now()).await;
    let friend = |on: bool| BTreeMap::from([("role".to_owned(), on.then(|| "friend".to_owned()))]);
    let mut joined = Vec::new();
    let mut left = Vec::new();
    for _ in 0..iterations {
        let labeled = Instant::now();
        stack.label_pod(&from, &friend(true)).await.expect("label");
        joined.push(time_until(&stack, &from, &to, true, labeled).await);
        let unlabeled = Instant::now();
        stack.label_pod(&from, &friend(false)).await.expect("unlabel");
        left.push(time_until(&stack, &from, &to, false, unlabeled).await);
    }
    summary(
        &format!("  label y/b into the admitted group -> probe connects (resolution {} ms)", PROBE_TIMEOUT.as_millis()),
        joined,
    );
    summary("  remove the label -> probe blocked", left);
    println!("stages of those changes (histogram bucket bounds; transit needs one clock, as here):");
    print_stages(
        "operator",
        &operator_before,
        &stage_buckets(&operator_probes, "palisade_operator_stage_seconds").await,
    );
    print_stages("agent   ", &agent_before, &stage_buckets(&agent_probes, "palisade_agent_stage_seconds").await);

    let growing = Instant::now();
    load.grow_pods(&client, PODS_FOR_FOOTPRINT - WIRED_PODS).await;
    println!("grew to {PODS_FOR_FOOTPRINT} pods in {:.1} s", growing.elapsed().as_secs_f64());
    settle_cpu(&pids, Duration::from_secs(300)).await;
    print_footprints(&stack, "at 10,000 pods / 500 policies");
    drop(stack);
}
