//! Palisade next to its peers, measured the same way in one run: kube-router v2.1.0 (iptables +
//! ipset) and kube-network-policies v0.8.0 (nftables + NFQUEUE), built by
//! `tests/tools/build-peers.sh`, and Palisade, each in turn on a fresh apiserver and a fresh
//! 2-node namespace cluster (see `palisade_e2e::peers`).
//!
//! The workload, for each enforcer:
//! * 4 wired pods, x/a and y/a on n1, x/b and y/b on n2 (TCP 80), and 200 API-only pods in
//!   namespaces s0–s9 (Running, addresses in their node's pod CIDR that nothing routes, hostIP
//!   their node's), labelled `app=a<i%20>` and `role=r<i%10>`.
//! * Policy levels (`PEERS_POLICIES`, default 0,500): at N, N NetworkPolicies select x/a: one
//!   admits namespace y on TCP 80, the others admit `role=r<j%10>` pods of namespace s<j%10>, so
//!   every new connection y/b -> x/a is judged against N rules whose sets hold real members.
//! * At each level, once every node's tables stop changing for 3 s: the lines and sets each node
//!   holds, the agents' (and Palisade's operator's) RSS, the new-connection rate y/b -> x/a
//!   (median of 5 runs of 2 s) and `PEERS_SAMPLES` (default 20) programming-latency samples:
//!   POST of a policy isolating x/b -> y/a's probes to x/b blocked (3 in a row), DELETE ->
//!   connected again. A blocked probe costs 10 ms: the resolution of the "connects" direction
//!   (an answer takes well under 1 ms here; a slow one only delays the streak).
//!
//! Printed as one table, with each peer's figure as a ratio to Palisade's. Timings on a shared
//! machine are noisy: compare columns of one run. `PEERS_ENFORCERS` picks a subset
//! (`kube-router,knp,palisade`); `PEERS_KEEP_LOGS=DIR` copies every agent's log there.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use palisade_conformance::PodId;
use palisade_e2e::measure::{
    Footprint, KernelFigures, connection_rate, flip_time, percentile, settled_kernels, wired_model,
};
use palisade_e2e::peers::{Enforced, Enforcer, peer_binaries};
use serde_json::json;

const API_ONLY_PODS: usize = 200;
const LOAD_NAMESPACES: usize = 10;
const PROBE_TIMEOUT: Duration = Duration::from_millis(10);
const STREAK: usize = 3;
const FLIP_DEADLINE: Duration = Duration::from_secs(60);
const RATE_RUN: Duration = Duration::from_secs(2);
const RATE_ROUNDS: usize = 5;

/// What one enforcer showed at one policy level.
struct Level {
    policies: usize,
    settled_after: Duration,
    kernels: Vec<KernelFigures>,
    agents: Vec<Option<Footprint>>,
    central: Vec<(String, Option<Footprint>)>,
    /// New connections per second y/b -> x/a, median of the rounds, and failed attempts.
    rate: f64,
    rate_failed: u64,
    apply: Vec<Duration>,
    delete: Vec<Duration>,
}

struct Outcome {
    enforcer: Enforcer,
    wall: Duration,
    levels: Vec<Level>,
    error: Option<String>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(bench());
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name).unwrap_or_else(|_| default.to_owned()).split(',').map(|s| s.trim().to_owned()).collect()
}

async fn bench() {
    let enforcers: Vec<Enforcer> = env_list("PEERS_ENFORCERS", "kube-router,knp,palisade")
        .iter()
        .map(|name| Enforcer::parse(name).unwrap_or_else(|e| panic!("PEERS_ENFORCERS: {e}")))
        .collect();
    let mut levels: Vec<usize> = env_list("PEERS_POLICIES", "0,500")
        .iter()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("PEERS_POLICIES {n:?}: {e}")))
        .collect();
    levels.sort_unstable();
    let samples: usize = std::env::var("PEERS_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let peers = if enforcers.iter().any(|e| *e != Enforcer::Palisade) {
        peer_binaries().unwrap_or_else(|e| panic!("peer binaries: {e}"))
    } else {
        std::path::PathBuf::new()
    };

    let mut outcomes = Vec::new();
    for enforcer in enforcers {
        println!("peers: running {} ...", enforcer.name());
        let started = Instant::now();
        let mut levels_seen = Vec::new();
        let error = run(enforcer, &peers, &levels, samples, &mut levels_seen).await.err();
        if let Some(error) = &error {
            println!("peers: {} failed: {error}", enforcer.name());
        }
        outcomes.push(Outcome { enforcer, wall: started.elapsed(), levels: levels_seen, error });
    }
    print_table(&outcomes, &levels, samples);
}

async fn run(
    enforcer: Enforcer,
    peers: &std::path::Path,
    levels: &[usize],
    samples: usize,
    seen: &mut Vec<Level>,
) -> Result<(), String> {
    let enforced = Enforced::start(enforcer, &wired_model(2), peers).await.map_err(|e| format!("start: {e}"))?;
    let measured = measure(&enforced, levels, samples, seen).await;
    if let Some(dir) = std::env::var_os("PEERS_KEEP_LOGS") {
        let dir = std::path::PathBuf::from(dir).join(enforcer.name());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for log in enforced.logs() {
            // Agents' logs share a file name in per-agent directories.
            let parent = log.parent().and_then(|p| p.file_name()).unwrap_or_default().to_string_lossy();
            let target = dir.join(format!("{parent}-{}", log.file_name().unwrap_or_default().to_string_lossy()));
            std::fs::copy(&log, &target).map_err(|e| format!("{}: {e}", log.display()))?;
        }
    }
    measured
}

async fn measure(enforced: &Enforced, levels: &[usize], samples: usize, seen: &mut Vec<Level>) -> Result<(), String> {
    let logs = || enforced.logs().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let client = enforced.client().map_err(|e| e.to_string())?;
    let cluster = enforced.cluster().clone();
    create_api_only_pods(&client, &cluster).await.map_err(|e| format!("API-only pods: {e}"))?;
    let x = cluster.k8s_namespace("x");
    let nodes: Vec<String> = cluster.model.nodes.iter().map(|n| n.name.clone()).collect();
    let (ya, xb) = (PodId::new("y", "a"), PodId::new("x", "b"));
    let (yb, xa) = (PodId::new("y", "b"), PodId::new("x", "a"));
    let flip = |connected: bool, since: Instant| {
        let cluster = cluster.clone();
        let (from, to) = (ya.clone(), xb.clone());
        async move { flip_time(&cluster, (&from, &to), 80, connected, since, (PROBE_TIMEOUT, STREAK, FLIP_DEADLINE)).await }
    };
    // The agents are up and synced once the open flow connects.
    flip(true, Instant::now()).await.map_err(|e| format!("{e} (logs: {})", logs()))?;

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &x);
    let mut created = 0;
    for &level in levels {
        for index in created..level {
            policies.create(&PostParams::default(), &scale_policy(index)).await.map_err(|e| format!("policy: {e}"))?;
        }
        created = level.max(created);
        let (kernels, settled_after) =
            settled_kernels(&cluster, &nodes, Duration::from_secs(3), Duration::from_secs(300))
                .await
                .map_err(|e| e.to_string())?;
        let agents = enforced.agent_pids().iter().map(|(_, pid)| Footprint::of(*pid)).collect();
        let central = enforced.central_pids().into_iter().map(|(name, pid)| (name, Footprint::of(pid))).collect();

        connection_rate(&cluster, (&yb, &xa), 80, Duration::from_millis(300)).await.map_err(|e| e.to_string())?;
        let mut rates = Vec::new();
        let mut rate_failed = 0;
        for _ in 0..RATE_ROUNDS {
            let (rate, failed) =
                connection_rate(&cluster, (&yb, &xa), 80, RATE_RUN).await.map_err(|e| e.to_string())?;
            rates.push(rate);
            rate_failed += failed;
        }
        rates.sort_by(f64::total_cmp);

        let isolate = isolate_policy();
        let (mut apply, mut delete) = (Vec::new(), Vec::new());
        for sample in 0..=samples {
            let posted = Instant::now();
            policies.create(&PostParams::default(), &isolate).await.map_err(|e| format!("isolate: {e}"))?;
            let blocked = flip(false, posted).await.map_err(|e| format!("{e} (logs: {})", logs()))?;
            let deleted = Instant::now();
            policies
                .delete("peer-bench-isolate", &DeleteParams::default())
                .await
                .map_err(|e| format!("delete: {e}"))?;
            let opened = flip(true, deleted).await.map_err(|e| format!("{e} (logs: {})", logs()))?;
            // The first round warms caches and connections up; it is not counted.
            if sample > 0 {
                apply.push(blocked);
                delete.push(opened);
            }
        }
        apply.sort();
        delete.sort();
        seen.push(Level {
            policies: level,
            settled_after,
            kernels,
            agents,
            central,
            rate: rates[rates.len() / 2],
            rate_failed,
            apply,
            delete,
        });
    }
    Ok(())
}

async fn create_api_only_pods(client: &Client, cluster: &palisade_e2e::ModelCluster) -> palisade_e2e::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for k in 0..LOAD_NAMESPACES {
        let object: Namespace = serde_json::from_value(
            json!({ "metadata": { "name": format!("s{k}"), "labels": { "load": format!("s{k}") } } }),
        )
        .map_err(|e| palisade_e2e::Error::json("namespace", e))?;
        namespaces.create(&PostParams::default(), &object).await?;
    }
    let nodes = cluster.net.nodes();
    for index in 0..API_ONLY_PODS {
        let node = &nodes[index % nodes.len()];
        let namespace = format!("s{}", index % LOAD_NAMESPACES);
        let name = format!("load-{index}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": namespace,
                          "labels": { "app": format!("a{}", index % 20), "role": format!("r{}", index % 10) } },
            "spec": { "nodeName": node.netns, "containers": [{ "name": "c", "image": "palisade.invalid/load" }] },
        }))
        .map_err(|e| palisade_e2e::Error::json("pod", e))?;
        Api::<Pod>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &pod).await?;
        // In the node's pod CIDR, above the wired pods' addresses; nothing routes them.
        let node_index = (index % nodes.len()) as u8 + 1;
        let address = IpAddr::V4(Ipv4Addr::new(198, 18, node_index, 100 + (index / nodes.len()) as u8));
        palisade_testkit::mark_pod_running(client, &namespace, &name, &[address], &[IpAddr::V4(node.ipv4)]).await?;
    }
    Ok(())
}

/// The `index`-th policy selecting x/a: the first admits namespace y, the others pods of one
/// load namespace and role, all on TCP 80.
fn scale_policy(index: usize) -> NetworkPolicy {
    let from = if index == 0 {
        json!([{ "namespaceSelector": { "matchLabels": { "ns": "y" } } }])
    } else {
        json!([{ "namespaceSelector": { "matchLabels": { "load": format!("s{}", index % LOAD_NAMESPACES) } },
                 "podSelector": { "matchLabels": { "role": format!("r{}", index % 10) } } }])
    };
    serde_json::from_value(json!({
        "metadata": { "name": if index == 0 { "allow-from-y".to_owned() } else { format!("scale-{index}") } },
        "spec": {
            "podSelector": { "matchLabels": { "pod": "a" } },
            "policyTypes": ["Ingress"],
            "ingress": [{ "from": from, "ports": [{ "protocol": "TCP", "port": 80 }] }],
        },
    }))
    .expect("a static policy")
}

/// Isolates x/b for ingress: no rule admits anything.
fn isolate_policy() -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": { "name": "peer-bench-isolate" },
        "spec": { "podSelector": { "matchLabels": { "pod": "b" } }, "policyTypes": ["Ingress"] },
    }))
    .expect("a static policy")
}

// ----- the table -----

/// One row: a label and, per enforcer, the text and the number its ratio to Palisade is taken of.
type Row = (String, Vec<Option<Cell>>);
/// A figure as printed, and the number its ratio is taken of.
type Cell = (String, f64);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_node<T>(values: &[T], show: impl Fn(&T) -> String) -> String {
    values.iter().map(show).collect::<Vec<_>>().join("/")
}

fn rows(outcomes: &[Outcome], levels: &[usize]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for &n in levels {
        let mut row = |label: String, cell: &dyn Fn(&Outcome, &Level) -> Option<Cell>| {
            let cells =
                outcomes.iter().map(|o| o.levels.iter().find(|l| l.policies == n).and_then(|l| cell(o, l))).collect();
            rows.push((label, cells));
        };
        row(format!("N={n} apply -> blocked p50 / p99 ms"), &|_, l| {
            let (p50, p99) = (percentile(&l.apply, 50.0), percentile(&l.apply, 99.0));
            Some((format!("{:.1} / {:.1}", ms(p50), ms(p99)), ms(p50)))
        });
        row(format!("N={n} delete -> connects p50 / p99 ms"), &|_, l| {
            let (p50, p99) = (percentile(&l.delete, 50.0), percentile(&l.delete, 99.0));
            Some((format!("{:.1} / {:.1}", ms(p50), ms(p99)), ms(p50)))
        });
        row(format!("N={n} rules settled after s"), &|_, l| {
            Some((format!("{:.1}", l.settled_after.as_secs_f64()), l.settled_after.as_secs_f64()))
        });
        let kernel_row = |field: fn(&KernelFigures) -> usize| {
            move |_: &Outcome, l: &Level| {
                let total: usize = l.kernels.iter().map(field).sum();
                Some((per_node(&l.kernels, |k| field(k).to_string()), total as f64))
            }
        };
        row(format!("N={n} iptables-save lines n1/n2"), &kernel_row(|k| k.iptables_lines));
        row(format!("N={n} ip6tables-save lines n1/n2"), &kernel_row(|k| k.ip6tables_lines));
        row(format!("N={n} ipsets n1/n2"), &kernel_row(|k| k.ipsets));
        row(format!("N={n} ipset members n1/n2"), &kernel_row(|k| k.ipset_members));
        row(format!("N={n} nft lines (not iptables') n1/n2"), &kernel_row(|k| k.nft_lines));
        row(format!("N={n} new connections/s y/b -> x/a"), &|o, l| {
            let none = o.levels.first().map(|first| first.rate).filter(|rate| *rate > 0.0);
            let share =
                none.map(|none| format!(" ({:.0}% of N={})", 100.0 * l.rate / none, levels[0])).unwrap_or_default();
            let failed = if l.rate_failed > 0 { format!(", {} failed", l.rate_failed) } else { String::new() };
            Some((format!("{:.0}{share}{failed}", l.rate), l.rate))
        });
        row(format!("N={n} node agent VmRSS MiB n1/n2"), &|_, l| {
            let total: f64 = l.agents.iter().flatten().map(Footprint::rss_mib).sum();
            Some((per_node(&l.agents, |f| f.map_or("-".into(), |f| format!("{:.0}", f.rss_mib()))), total))
        });
        row(format!("N={n} central process VmRSS MiB"), &|_, l| {
            if l.central.is_empty() {
                return None;
            }
            let text = l
                .central
                .iter()
                .map(|(name, f)| format!("{name} {}", f.map_or("-".into(), |f| format!("{:.0}", f.rss_mib()))))
                .collect::<Vec<_>>()
                .join(", ");
            Some((text, 0.0))
        });
    }
    rows
}

fn print_table(outcomes: &[Outcome], levels: &[usize], samples: usize) {
    let palisade = outcomes.iter().position(|o| o.enforcer == Enforcer::Palisade);
    let rows = rows(outcomes, levels);
    let cell_text = |row: &Row, column: usize| -> String {
        let Some((text, value)) = &row.1[column] else { return "-".into() };
        let Some(base) = palisade.filter(|p| *p != column).and_then(|p| row.1[p].as_ref().map(|c| c.1)) else {
            return text.clone();
        };
        if base > 0.0 && *value > 0.0 { format!("{text} (x{:.1})", value / base) } else { text.clone() }
    };
    let label_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..outcomes.len())
        .map(|c| {
            rows.iter()
                .map(|r| cell_text(r, c).chars().count())
                .chain([outcomes[c].enforcer.name().len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    println!(
        "side by side, one run (2 nodes, 4 wired + {API_ONLY_PODS} API-only pods, {samples} latency samples per level); \
         (xR) = this figure / Palisade's"
    );
    let mut header = format!("{:<label_width$}", "");
    for (c, outcome) in outcomes.iter().enumerate() {
        header.push_str(&format!("  {:>w$}", outcome.enforcer.name(), w = widths[c]));
    }
    println!("{header}");
    let mut line = format!("{:<label_width$}", "run");
    for (c, outcome) in outcomes.iter().enumerate() {
        let status = if outcome.error.is_some() { "failed" } else { "ok" };
        line.push_str(&format!("  {:>w$}", format!("{status}, {:.0} s", outcome.wall.as_secs_f64()), w = widths[c]));
    }
    println!("{line}");
    for row in &rows {
        let mut line = format!("{:<label_width$}", row.0);
        for (c, width) in widths.iter().enumerate() {
            line.push_str(&format!("  {:>width$}", cell_text(row, c)));
        }
        println!("{line}");
    }
    for outcome in outcomes {
        if let Some(error) = &outcome.error {
            println!("{} failed: {error}", outcome.enforcer.name());
        }
    }
}
