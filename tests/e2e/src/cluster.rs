//! A conformance [`Model`] made real: its pods as network namespaces (testkit [`NetCluster`]), its
//! host-network pods as probe servers in their node's namespace, and all of it as API objects.
//!
//! Two testkit gaps are covered here by wrapping rather than editing it: the testkit's pods serve
//! TCP and UDP only and its [`NetCluster::register`] declares only the ports it serves, while the
//! suites' named ports include SCTP ones (`serve-80-sctp`) that policies resolve; and the testkit
//! has no host-network pods. So registration is done here, from the model.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod as K8sPod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use palisade_conformance::{Environment, Model, ModelPod, PodId, Protocol};
use palisade_testkit::probe::probe_blocking;
use palisade_testkit::{ClusterSpec, NetCluster, NodeSpec, PodSpec, Port, ProbeOutcome, mark_pod_running};
use serde_json::json;

use crate::error::{Error, Result};
use crate::process::Process;

/// The model on network namespaces, with the run-unique names the API objects got.
pub struct ModelCluster {
    pub model: Model,
    pub net: NetCluster,
    /// Probe servers standing in for host-network pods, in their node's namespace.
    host_servers: Vec<Process>,
}

impl ModelCluster {
    /// Builds the namespaces (blocking, about a second) and starts every probe server. Pods go to
    /// nodes round-robin in model order, as [`Model::node_of`] says.
    pub fn build(model: &Model) -> Result<ModelCluster> {
        let mut spec = ClusterSpec::new();
        for node in &model.nodes {
            spec.nodes.push(NodeSpec { name: node.name.clone(), labels: node.labels.clone() });
        }
        for pod in model.pods.iter().filter(|pod| !pod.host_network) {
            spec = spec.pod_spec(PodSpec {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                node: node_name(model, pod)?,
                labels: pod.labels.clone(),
                ports: servable_ports(pod),
            });
        }
        let net = NetCluster::build(spec)?;
        let mut cluster = ModelCluster { model: model.clone(), net, host_servers: Vec::new() };
        cluster.start_host_network_servers()?;
        Ok(cluster)
    }

    fn start_host_network_servers(&mut self) -> Result<()> {
        let probe = palisade_testkit::probe_binary()?;
        for pod in self.model.pods.iter().filter(|pod| pod.host_network) {
            let node = self.net.node(&node_name(&self.model, pod)?)?.clone();
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &node.netns]).arg(&probe).args(["serve", "--name", &pod.id().to_string()]);
            for port in servable_ports(pod) {
                command.args([format!("--{}", port.protocol), port.number.to_string()]);
            }
            let log = self.net.data_dir().join(format!("probe-host-{}-{}.log", pod.namespace, pod.name));
            self.host_servers.push(Process::spawn(&format!("host-network probe {}", pod.id()), command, &log)?);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for server in &mut self.host_servers {
            while !std::fs::read_to_string(server.log_path()).unwrap_or_default().contains("listening") {
                if let Some(status) = server.exited() {
                    return Err(Error::ExitedEarly {
                        what: server.name().to_owned(),
                        status: status.to_string(),
                        log: server.log_path().display().to_string(),
                        tail: server.log_tail(10),
                    });
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: server.name().to_owned(),
                        seconds: 15,
                        detail: server.log_tail(10),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// The API name of a logical namespace.
    pub fn k8s_namespace(&self, logical: &str) -> String {
        self.net.k8s_namespace(logical)
    }

    /// The Node object's name (and network namespace) of logical node `node`.
    pub fn node_object_name(&self, node: &str) -> Result<String> {
        Ok(self.net.node(node)?.netns.clone())
    }

    /// The node (logical name) a model pod runs on.
    pub fn node_of(&self, pod: &PodId) -> Result<String> {
        let model_pod = self.model.pod(pod).ok_or_else(|| Error::Setup(format!("no pod {pod} in the model")))?;
        node_name(&self.model, model_pod)
    }

    /// Every address of a model pod (a host-network pod has its node's).
    pub fn pod_ips(&self, pod: &PodId) -> Result<Vec<IpAddr>> {
        let model_pod = self.model.pod(pod).ok_or_else(|| Error::Setup(format!("no pod {pod} in the model")))?;
        if model_pod.host_network {
            let node = self.net.node(&node_name(&self.model, model_pod)?)?;
            Ok(vec![IpAddr::V4(node.ipv4), IpAddr::V6(node.ipv6)])
        } else {
            let pod = self.net.pod(&pod.to_string())?;
            Ok(vec![IpAddr::V4(pod.ipv4), IpAddr::V6(pod.ipv6)])
        }
    }

    /// `finished` ends (phase `Succeeded`) and `successor`, a new pod with `labels` on the same node,
    /// takes its IP, as Kubernetes reuses a finished pod's address. Packets from and to that address
    /// keep leaving from and arriving at the finished pod's network namespace.
    pub async fn reuse_pod_ip(
        &self,
        client: &Client,
        finished: &PodId,
        successor: &PodId,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let namespace = self.k8s_namespace(&finished.namespace);
        let status = json!({ "status": { "phase": "Succeeded" } });
        Api::<K8sPod>::namespaced(client.clone(), &namespace)
            .patch_status(&finished.name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        let model_pod =
            self.model.pod(finished).ok_or_else(|| Error::Setup(format!("no pod {finished} in the model")))?;
        let node = self.net.node(&node_name(&self.model, model_pod)?)?;
        let successor_namespace = self.k8s_namespace(&successor.namespace);
        let object: K8sPod = from_json(json!({
            "metadata": { "name": successor.name, "namespace": successor_namespace, "labels": labels },
            "spec": { "nodeName": node.netns, "containers": [{ "name": "probe", "image": "palisade.invalid/probe" }] },
        }))?;
        Api::<K8sPod>::namespaced(client.clone(), &successor_namespace).create(&PostParams::default(), &object).await?;
        let host_ips = [IpAddr::V4(node.ipv4), IpAddr::V6(node.ipv6)];
        mark_pod_running(client, &successor_namespace, &successor.name, &self.pod_ips(finished)?, &host_ips).await?;
        Ok(())
    }

    /// Undoes [`ModelCluster::reuse_pod_ip`]: the successor is deleted and the finished pod is
    /// created again as the model has it (a pod cannot go back from `Succeeded` to `Running`).
    pub async fn restore_reused_pod_ip(&self, client: &Client, finished: &PodId, successor: &PodId) -> Result<()> {
        let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        for pod in [successor, finished] {
            let api = Api::<K8sPod>::namespaced(client.clone(), &self.k8s_namespace(&pod.namespace));
            match api.delete(&pod.name, &now).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        let model_pod =
            self.model.pod(finished).ok_or_else(|| Error::Setup(format!("no pod {finished} in the model")))?;
        self.register_pod(client, model_pod).await
    }

    /// The network namespace a pod's packets leave from.
    pub fn netns_of(&self, pod: &PodId) -> Result<String> {
        let model_pod = self.model.pod(pod).ok_or_else(|| Error::Setup(format!("no pod {pod} in the model")))?;
        if model_pod.host_network {
            Ok(self.net.node(&node_name(&self.model, model_pod)?)?.netns.clone())
        } else {
            Ok(self.net.pod(&pod.to_string())?.netns.clone())
        }
    }

    /// Every node's addresses, keyed by Node object name (what agents and plans call nodes).
    pub fn node_ips(&self) -> BTreeMap<String, Vec<IpAddr>> {
        self.net.nodes().iter().map(|n| (n.netns.clone(), vec![IpAddr::V4(n.ipv4), IpAddr::V6(n.ipv6)])).collect()
    }

    /// Creates the Namespaces, Nodes and Pods of the model (Pods marked Running with their real
    /// addresses, every container port of the model declared, SCTP included).
    pub async fn register(&self, client: &Client) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for namespace in &self.model.namespaces {
            let name = self.k8s_namespace(&namespace.name);
            let mut labels = namespace.labels.clone();
            // The apiserver sets this one itself, to the real name.
            labels.remove(palisade_conformance::model::NAMESPACE_NAME_LABEL);
            let object: Namespace = from_json(json!({ "metadata": { "name": name, "labels": labels } }))?;
            namespaces.create(&PostParams::default(), &object).await?;
        }
        self.net.register_nodes(client).await?;
        for pod in &self.model.pods {
            self.register_pod(client, pod).await?;
        }
        Ok(())
    }

    async fn register_pod(&self, client: &Client, pod: &ModelPod) -> Result<()> {
        let namespace = self.k8s_namespace(&pod.namespace);
        let node = self.net.node(&node_name(&self.model, pod)?)?;
        let ports: Vec<_> = pod
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({ "containerPort": p.port, "protocol": p.protocol.as_k8s() });
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                port
            })
            .collect();
        let object: K8sPod = from_json(json!({
            "metadata": { "name": pod.name, "namespace": namespace, "labels": pod.labels },
            "spec": {
                "nodeName": node.netns,
                "hostNetwork": pod.host_network,
                "containers": [{ "name": "probe", "image": "palisade.invalid/probe", "ports": ports }],
            },
        }))?;
        Api::<K8sPod>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &object).await?;
        let host_ips = [IpAddr::V4(node.ipv4), IpAddr::V6(node.ipv6)];
        mark_pod_running(client, &namespace, &pod.name, &self.pod_ips(&pod.id())?, &host_ips).await?;
        Ok(())
    }

    /// One probe from `from` to `to` (IPv4), `None` for protocols the test kernel cannot carry.
    pub async fn probe(
        &self,
        from: &PodId,
        to: &PodId,
        protocol: Protocol,
        port: u16,
        timeout: Duration,
    ) -> Result<Option<ProbeOutcome>> {
        let Some(protocol) = testkit_protocol(protocol) else { return Ok(None) };
        let netns = self.netns_of(from)?;
        let target = self
            .pod_ips(to)?
            .into_iter()
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| Error::Setup(format!("{to} has no IPv4")))?;
        let outcome = palisade_testkit::netns::in_netns_async(&netns, move || {
            probe_blocking(SocketAddr::new(target, port), protocol, timeout)
        })
        .await?;
        Ok(Some(outcome))
    }

    /// Probes `cells` concurrently (at most `parallelism` at once) and returns what each saw.
    pub async fn probe_cells(
        self: &Arc<Self>,
        cells: &[(PodId, PodId)],
        protocol: Protocol,
        port: u16,
        timeout: Duration,
        parallelism: usize,
    ) -> Result<BTreeMap<(PodId, PodId), ProbeOutcome>> {
        let limit = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (from, to) in cells.iter().cloned() {
            let (cluster, limit) = (self.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let outcome = cluster.probe(&from, &to, protocol, port, timeout).await;
                ((from, to), outcome)
            });
        }
        let mut outcomes = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (cell, outcome) = joined.map_err(|e| Error::Setup(format!("probe task: {e}")))?;
            if let Some(outcome) = outcome? {
                outcomes.insert(cell, outcome);
            }
        }
        Ok(outcomes)
    }
}

impl Environment for ModelCluster {
    fn namespace_name(&self, logical: &str) -> String {
        self.k8s_namespace(logical)
    }

    fn pod_ip(&self, pod: &PodId) -> Option<IpAddr> {
        self.pod_ips(pod).ok()?.into_iter().find(IpAddr::is_ipv4)
    }
}

fn node_name(model: &Model, pod: &ModelPod) -> Result<String> {
    model.node_of(&pod.id()).map(|n| n.name.clone()).ok_or_else(|| Error::Setup("the model has no nodes".into()))
}

/// The ports a probe server can serve (no SCTP on the test kernel).
fn servable_ports(pod: &ModelPod) -> Vec<Port> {
    let mut ports: Vec<Port> = pod
        .ports
        .iter()
        .filter_map(|p| testkit_protocol(p.protocol).map(|protocol| Port { protocol, number: p.port }))
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

pub(crate) fn testkit_protocol(protocol: Protocol) -> Option<palisade_testkit::Protocol> {
    match protocol {
        Protocol::Tcp => Some(palisade_testkit::Protocol::Tcp),
        Protocol::Udp => Some(palisade_testkit::Protocol::Udp),
        Protocol::Sctp => None,
    }
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::json("building an API object", e))
}
