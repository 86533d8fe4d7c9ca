//! Distribution at cluster scale: one operator, a real kube-apiserver holding `SCALE_PODS`
//! pods (default 50,000) and `SCALE_POLICIES` NetworkPolicies (30,000), and `SCALE_NODES`
//! simulated agents (1,000): real plan-stream clients (TLS, a token bound to their agent pod,
//! the negotiated protocol) run as tasks of this process, each folding the frames it receives
//! into its plan and answering Realized, as an agent does, with no kernel behind it.
//!
//! The workload: pods spread over the simulated nodes and over 500 namespaces (labels `app`,
//! `tier`; namespaces labelled `team`), and in each namespace policies selecting one `app`
//! and admitting one `tier` of the same namespace, every tenth also one `tier` of a team's
//! namespaces, on TCP 8080. Then `SCALE_EVENTS` (default 50) times: a pod is added that joins
//! groups those policies admit, and later deleted. For each, the time from the API call until
//! every simulated agent whose plan admits the pod holds it (and later no longer does), and how
//! many agents that was: work should follow what changed, not the size of the cluster.
//!
//! Printed: setup times, the p50/p99/max of "every affected agent holds it" and of each
//! agent's own arrival, the operator's RSS and CPU. Run: `cargo bench -p palisade-e2e --bench
//! scale` (root, KUBEBUILDER_ASSETS; PALISADE_BIN a release build).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use palisade_conformance::model::{labels, namespace_labels};
use palisade_conformance::{ContainerPort, Model, ModelNamespace, ModelNode, ModelPod, Protocol};
use palisade_e2e::measure::{Footprint, percentile, settle_cpu};
use palisade_e2e::{Stack, StackOptions};
use palisade_engine::plan::{Group, NodePlan};
use palisade_protocol::{AgentMessage, OperatorMessage, StreamVersion, encode, policies_in};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const NAMESPACES: usize = 500;
const TEAMS: usize = 50;
const APPS: usize = 50;
const TIERS: usize = 5;
const CREATE_CONCURRENCY: usize = 32;
const SETTLE: Duration = Duration::from_secs(3);
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One real node (the stack needs one agent) with one pod; the rest is simulated.
fn model() -> Model {
    Model {
        nodes: vec![ModelNode { name: "n1".into(), labels: labels(&[("kubernetes.io/os", "linux")]) }],
        namespaces: vec![ModelNamespace { name: "x".into(), labels: namespace_labels("x", &[("ns", "x")]) }],
        pods: vec![ModelPod {
            namespace: "x".into(),
            name: "a".into(),
            labels: labels(&[("pod", "a")]),
            ports: vec![ContainerPort { name: None, protocol: Protocol::Tcp, port: 80 }],
            host_network: false,
        }],
    }
}

fn namespace_name(index: usize) -> String {
    format!("scale-{index}")
}

/// The `index`-th simulated pod's address: 198.18.128.0/17, then 198.19.0.0/17 (65,536 in all;
/// the stack's own nodes and pods live in 198.18.0.0/17, the simulated nodes above).
fn pod_ip(index: usize) -> IpAddr {
    let (base, offset) = if index < 32_768 { (0xc612_8000u32, index) } else { (0xc613_0000, index - 32_768) };
    IpAddr::V4(Ipv4Addr::from(base + offset as u32))
}

/// 198.19.200.0/22, 1,000 nodes.
fn node_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 200 + (index / 250) as u8, (index % 250 + 1) as u8))
}

fn node_name(index: usize) -> String {
    format!("sim-{index}")
}

/// Runs `count` jobs, `CREATE_CONCURRENCY` at a time.
async fn in_parallel<F, Fut>(count: usize, job: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(CREATE_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let future = job(index);
        tasks.spawn(async move {
            future.await;
            drop(permit);
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a create task");
    }
}

fn sim_pod(index: usize, nodes: usize) -> (String, Pod) {
    let namespace = namespace_name(index % NAMESPACES);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": format!("p{index}"), "namespace": namespace,
                      "labels": { "app": format!("a{}", (index / NAMESPACES) % APPS),
                                  "tier": format!("t{}", (index / NAMESPACES / 10) % TIERS) } },
        "spec": { "nodeName": node_name(index % nodes), "containers": [{ "name": "c", "image": "palisade.invalid/load",
                  "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }] }] },
    }))
    .expect("a static pod");
    (namespace, pod)
}

async fn create_pod(client: Client, index: usize, nodes: usize) {
    let (namespace, pod) = sim_pod(index, nodes);
    let name = pod.metadata.name.clone().unwrap_or_default();
    Api::<Pod>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &pod).await.expect("create pod");
    let node = node_ip(index % nodes);
    palisade_testkit::mark_pod_running(&client, &namespace, &name, &[pod_ip(index)], &[node])
        .await
        .expect("mark the pod running");
}

fn policy(index: usize) -> (String, NetworkPolicy) {
    let namespace_index = index % NAMESPACES;
    let namespace = namespace_name(namespace_index);
    let tier = format!("t{}", (index / NAMESPACES) % TIERS);
    let mut from = vec![json!({ "podSelector": { "matchLabels": { "tier": tier } } })];
    if index.is_multiple_of(10) {
        from.push(json!({
            "namespaceSelector": { "matchLabels": { "team": format!("team{}", index % TEAMS) } },
            "podSelector": { "matchLabels": { "tier": format!("t{}", (index / 10) % TIERS) } },
        }));
    }
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": { "name": format!("np{index}"), "namespace": namespace },
        "spec": {
            "podSelector": { "matchLabels": { "app": format!("a{}", (index / NAMESPACES) % APPS) } },
            "policyTypes": ["Ingress"],
            "ingress": [{ "from": from, "ports": [{ "protocol": "TCP", "port": 8080 }] }],
        },
    }))
    .expect("a static policy");
    (namespace, np)
}

/// When each simulated agent first held (or stopped holding) the marker address.
#[derive(Default)]
struct Recorder {
    marker: Option<(IpAddr, bool)>,
    /// Agent index → when its plan first matched the marker's expectation.
    arrivals: BTreeMap<usize, Instant>,
    frames: u64,
    snapshots: u64,
    bytes: u64,
}

fn holds(plan: &NodePlan, address: &IpAddr) -> bool {
    plan.groups.values().any(|group| matches!(group, Group::Addresses(members) if members.contains(address)))
}

/// One simulated agent: connects, folds every frame into its plan, answers Realized, and
/// records when its plan starts (or stops) holding the marker.
async fn simulated_agent(
    index: usize,
    endpoint: palisade_agent::stream::Endpoint,
    recorder: Arc<Mutex<Recorder>>,
    ready: tokio::sync::mpsc::UnboundedSender<usize>,
) {
    let mut announced = false;
    loop {
        let connected = palisade_agent::stream::connect(&endpoint, &StreamVersion::ALL).await;
        let Ok((mut stream, _version)) = connected else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut session = palisade_agent::stream::PlanSession::default();
        while let Some(Ok(frame)) = stream.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(message) = OperatorMessage::decode(text.as_str()) else { break };
            let is_snapshot = matches!(message, OperatorMessage::Snapshot { .. });
            let Ok(version) = session.receive(message) else { break };
            let Some((_, plan)) = session.plan() else { continue };
            {
                let mut recorder = recorder.lock().expect("recorder");
                recorder.frames += 1;
                recorder.bytes += text.len() as u64;
                recorder.snapshots += u64::from(is_snapshot);
                if let Some((address, wanted)) = recorder.marker
                    && holds(plan, &address) == wanted
                    && !recorder.arrivals.contains_key(&index)
                {
                    recorder.arrivals.insert(index, Instant::now());
                }
            }
            let reply = AgentMessage::Realized { version, policies: policies_in(plan) };
            if stream.send(Message::text(encode(&reply))).await.is_err() {
                break;
            }
            if !announced {
                announced = true;
                let _ = ready.send(index);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(bench());
}

fn show(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {label}: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

async fn bench() {
    let nodes = env_usize("SCALE_NODES", 1_000);
    let pods = env_usize("SCALE_PODS", 50_000);
    let policies = env_usize("SCALE_POLICIES", 30_000);
    let events = env_usize("SCALE_EVENTS", 50);
    println!("scale: {nodes} simulated agents, {pods} pods, {policies} NetworkPolicies, {events} pod adds and deletes");

    let started = Instant::now();
    let options = StackOptions { operator_replicas: 1, ..StackOptions::default() };
    let stack = Stack::start_with(&model(), options).await.unwrap_or_else(|e| panic!("stack start: {e}"));
    let client = stack.client();
    let operator = stack.operators().first().and_then(|r| r.pid()).expect("an operator process");
    println!("stack up in {:.1} s", started.elapsed().as_secs_f64());

    let phase = Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for index in 0..NAMESPACES {
        let object: Namespace = serde_json::from_value(json!({
            "metadata": { "name": namespace_name(index), "labels": { "team": format!("team{}", index % TEAMS) } }
        }))
        .expect("namespace");
        namespaces.create(&PostParams::default(), &object).await.expect("create namespace");
    }
    let client_for = client.clone();
    in_parallel(nodes, move |index| {
        let client = client_for.clone();
        async move {
            let node: Node = serde_json::from_value(json!({
                "metadata": { "name": node_name(index), "labels": { "kubernetes.io/hostname": node_name(index) } },
                "status": { "addresses": [{ "type": "InternalIP", "address": node_ip(index).to_string() }],
                            "conditions": [{ "type": "Ready", "status": "True" }] },
            }))
            .expect("node");
            Api::<Node>::all(client).create(&PostParams::default(), &node).await.expect("create node");
        }
    })
    .await;
    println!("{NAMESPACES} namespaces and {nodes} Nodes in {:.1} s", phase.elapsed().as_secs_f64());

    let phase = Instant::now();
    let client_for = client.clone();
    in_parallel(policies, move |index| {
        let client = client_for.clone();
        async move {
            let (namespace, np) = policy(index);
            Api::<NetworkPolicy>::namespaced(client, &namespace)
                .create(&PostParams::default(), &np)
                .await
                .expect("create policy");
        }
    })
    .await;
    println!("{policies} NetworkPolicies in {:.1} s", phase.elapsed().as_secs_f64());
    let phase = Instant::now();
    let client_for = client.clone();
    in_parallel(pods, move |index| create_pod(client_for.clone(), index, nodes)).await;
    println!("{pods} pods in {:.1} s", phase.elapsed().as_secs_f64());
    let digested = settle_cpu(&[operator], Duration::from_secs(1800)).await;
    println!("the operator went quiet {:.1} s after the last pod", digested.as_secs_f64());
    let footprint = Footprint::of(operator);
    if let Some(f) = footprint {
        println!(
            "operator after the load: VmRSS {:.0} MiB, VmHWM {:.0} MiB, CPU {:.1} s",
            f.rss_mib(),
            f.hwm_mib(),
            f.cpu_seconds
        );
    }

    // The simulated agents: pods and tokens as the DaemonSet would have them, then the streams.
    let phase = Instant::now();
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut agents = tokio::task::JoinSet::new();
    for index in 0..nodes {
        let endpoint = stack.agent_endpoint(&node_name(index), &[node_ip(index)]).await.expect("agent endpoint");
        agents.spawn(simulated_agent(index, endpoint, recorder.clone(), ready_tx.clone()));
    }
    let mut connected = 0;
    while connected < nodes {
        match tokio::time::timeout(Duration::from_secs(600), ready_rx.recv()).await {
            Ok(Some(_)) => connected += 1,
            _ => panic!("only {connected} of {nodes} simulated agents got a plan"),
        }
    }
    {
        let recorder = recorder.lock().expect("recorder");
        println!(
            "{nodes} simulated agents connected and holding a plan in {:.1} s ({} snapshots, {:.1} MiB received)",
            phase.elapsed().as_secs_f64(),
            recorder.snapshots,
            recorder.bytes as f64 / 1048576.0
        );
    }
    let digested = settle_cpu(&[operator], Duration::from_secs(600)).await;
    println!("the operator went quiet {:.1} s after the agents connected", digested.as_secs_f64());
    let cpu_before = Footprint::of(operator).map_or(0.0, |f| f.cpu_seconds);

    // The events: a pod joins the groups of its namespace's policies, then leaves.
    let mut everyone_added = Vec::new();
    let mut everyone_deleted = Vec::new();
    let mut each_added = Vec::new();
    let mut affected = Vec::new();
    let frames_before = recorder.lock().expect("recorder").frames;
    for event in 0..events {
        let index = pods + event;
        let address = pod_ip(index);
        let (namespace, pod) = sim_pod(index, nodes);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api = Api::<Pod>::namespaced(client.clone(), &namespace);
        api.create(&PostParams::default(), &pod).await.expect("create the event's pod");
        {
            let mut recorder = recorder.lock().expect("recorder");
            recorder.arrivals.clear();
            recorder.marker = Some((address, true));
        }
        let posted = Instant::now();
        palisade_testkit::mark_pod_running(&client, &namespace, &name, &[address], &[node_ip(index % nodes)])
            .await
            .expect("mark running");
        let arrivals = wait_quiet(&recorder).await;
        let count = arrivals.len();
        affected.push(count);
        if let Some(last) = arrivals.values().max() {
            everyone_added.push(last.saturating_duration_since(posted));
        }
        each_added.extend(arrivals.values().map(|at| at.saturating_duration_since(posted)));

        {
            let mut recorder = recorder.lock().expect("recorder");
            recorder.arrivals.clear();
            recorder.marker = Some((address, false));
        }
        let deleted = Instant::now();
        api.delete(&name, &DeleteParams::default()).await.expect("delete the event's pod");
        let removals = wait_quiet(&recorder).await;
        // Any agent's next frame "does not hold it"; only those that held it count.
        let holders: Vec<Instant> = arrivals.keys().filter_map(|agent| removals.get(agent).copied()).collect();
        if holders.len() < count {
            println!(
                "  event {event}: {} of {count} agents still hold {address} after the delete",
                count - holders.len()
            );
        }
        if let Some(last) = holders.iter().max() {
            everyone_deleted.push(last.saturating_duration_since(deleted));
        }
        if count == 0 {
            println!("  event {event}: no agent admits {address}");
        }
    }
    let frames = recorder.lock().expect("recorder").frames - frames_before;
    affected.sort_unstable();
    println!(
        "pod add -> agents holding it: affected agents per event p50 {} max {} of {nodes}; {frames} frames in all",
        affected.get(affected.len() / 2).copied().unwrap_or(0),
        affected.last().copied().unwrap_or(0),
    );
    show("API call -> every affected agent holds the new pod", everyone_added);
    show("API call -> each affected agent holds it", each_added);
    show("delete -> every agent that held it no longer does", everyone_deleted);
    if let Some(f) = Footprint::of(operator) {
        println!(
            "operator: VmRSS {:.0} MiB, VmHWM {:.0} MiB, CPU {:.1} s in all, {:.2} s for the {events} events",
            f.rss_mib(),
            f.hwm_mib(),
            f.cpu_seconds,
            f.cpu_seconds - cpu_before
        );
    }
    agents.abort_all();
    drop(stack);
}

/// The arrivals once none came for [`SETTLE`] (at most [`EVENT_DEADLINE`]).
async fn wait_quiet(recorder: &Arc<Mutex<Recorder>>) -> BTreeMap<usize, Instant> {
    let started = Instant::now();
    let mut seen = 0;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let count = recorder.lock().expect("recorder").arrivals.len();
        if count != seen {
            seen = count;
            last_change = Instant::now();
        }
        if last_change.elapsed() >= SETTLE || started.elapsed() > EVENT_DEADLINE {
            let mut recorder = recorder.lock().expect("recorder");
            recorder.marker = None;
            return std::mem::take(&mut recorder.arrivals);
        }
    }
}
