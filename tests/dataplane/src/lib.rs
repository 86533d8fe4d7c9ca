//! The real-packet testbed: the testkit's [`NetCluster`] (nodes and pods as network namespaces,
//! probe servers in every pod) enforced by the agent's dataplane, with no API server.
//!
//! [`Testbed::enforce`] does what the operator and the agents do together: describe the cluster
//! to the engine ([`engine_cluster`]), compile the policies into one plan per node, render each
//! plan and apply it with an [`Applier`] inside that node's namespace. [`Testbed::check`] then
//! probes whole matrices and judges every cell with the engine's reference evaluator, so the
//! kernel is held to the specification, not to hand-written expectations.

pub mod policies;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade_agent::{Applier, ApplyConfig, ApplyError, RenderConfig, SyncReport, render};
use palisade_engine::model::{self, Cluster, NamedPort, Namespace, Pod, PodKey, Policy};
use palisade_engine::plan::NodePlan;
use palisade_engine::reference::Reference;
use palisade_engine::verdict::Flow;
use palisade_testkit::{ClusterSpec, Family, MatrixDiff, NetCluster, Port, Protocol};

pub use palisade_testkit;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error(transparent)]
    Testkit(#[from] palisade_testkit::Error),
    #[error("node {node}: {source}")]
    Apply { node: String, source: ApplyError },
    #[error("policy errors: {0}")]
    Policies(String),
}

/// A namespace cluster plus one applier per node.
pub struct Testbed {
    /// Shared so background probers can run while the appliers are busy.
    pub net: Arc<NetCluster>,
    pub cluster: Cluster,
    appliers: BTreeMap<String, Applier>,
    render_configs: BTreeMap<String, RenderConfig>,
    /// The last plan enforced per node (logical node name).
    pub plans: BTreeMap<String, NodePlan>,
}

impl Testbed {
    /// Builds the namespaces and probe servers (blocking, about a second) and the engine's view.
    pub fn build(spec: ClusterSpec) -> Result<Testbed, TestbedError> {
        let namespace_labels = spec.namespace_labels.clone();
        let net = Arc::new(NetCluster::build(spec)?);
        let cluster = engine_cluster(&net, &namespace_labels);
        let mut appliers = BTreeMap::new();
        let mut render_configs = BTreeMap::new();
        for node in net.nodes() {
            appliers.insert(
                node.name.clone(),
                Applier::new(ApplyConfig { netns: Some(node.netns.clone()), ..ApplyConfig::default() }),
            );
            let node_ips = vec![node.ip(Family::V4), node.ip(Family::V6)];
            render_configs.insert(node.name.clone(), RenderConfig { node_ips, ..RenderConfig::default() });
        }
        Ok(Testbed { net, cluster, appliers, render_configs, plans: BTreeMap::new() })
    }

    /// The netpol e2e model: namespaces x, y, z × pods a, b, c on two nodes.
    pub fn netpol_matrix() -> Result<Testbed, TestbedError> {
        Testbed::build(ClusterSpec::netpol_matrix())
    }

    /// Compiles `policies` (refusing invalid ones, which would make a test vacuous) into one
    /// plan per node.
    pub fn compile(&self, policies: &[Policy]) -> Result<BTreeMap<String, NodePlan>, TestbedError> {
        let compiled = palisade_engine::compile(&self.cluster, policies);
        if !compiled.errors.is_empty() {
            return Err(TestbedError::Policies(format!("{:?}", compiled.errors)));
        }
        Ok(compiled.plans)
    }

    /// Compiles and enforces `policies` on every node.
    pub async fn enforce(&mut self, policies: &[Policy]) -> Result<(), TestbedError> {
        let plans = self.compile(policies)?;
        self.enforce_plans(&plans).await
    }

    /// Renders and applies each node's plan in that node's namespace, all nodes concurrently.
    pub async fn enforce_plans(&mut self, plans: &BTreeMap<String, NodePlan>) -> Result<(), TestbedError> {
        let mut syncs = Vec::new();
        for (node, applier) in &mut self.appliers {
            let plan =
                plans.get(node).cloned().unwrap_or_else(|| NodePlan { node: node.clone(), ..NodePlan::default() });
            let rendered = render(&plan, &self.render_configs[node]);
            let node = node.clone();
            syncs.push(async move {
                let result = applier.sync(&rendered).await;
                (node, plan, result)
            });
        }
        let mut first_error = None;
        for (node, plan, result) in join_all(syncs).await {
            match result {
                Ok(_) => {
                    self.plans.insert(node, plan);
                }
                Err(source) => {
                    first_error.get_or_insert(TestbedError::Apply { node, source });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn applier(&mut self, node: &str) -> Option<&mut Applier> {
        self.appliers.get_mut(node)
    }

    /// Drift repair on one node against the plan last enforced there.
    pub async fn repair(&mut self, node: &str) -> Result<SyncReport, TestbedError> {
        let plan = self.plans.get(node).cloned().unwrap_or_default();
        let rendered = render(&plan, &self.render_configs[node]);
        let applier = self.appliers.get_mut(node).ok_or_else(|| missing_node(node))?;
        applier.check_and_repair(&rendered).await.map_err(|source| TestbedError::Apply { node: node.into(), source })
    }

    /// Syncs one node's last plan again after `fault` is injected into its next restore.
    pub async fn enforce_with_fault(
        &mut self,
        plans: &BTreeMap<String, NodePlan>,
        fault: &str,
    ) -> Result<(), TestbedError> {
        for applier in self.appliers.values_mut() {
            applier.inject_iptables_fault(fault);
        }
        self.enforce_plans(plans).await
    }

    pub async fn cleanup(&mut self) -> Result<(), TestbedError> {
        for (node, applier) in &mut self.appliers {
            applier.cleanup().await.map_err(|source| TestbedError::Apply { node: node.clone(), source })?;
        }
        Ok(())
    }

    /// Probes the whole matrix on `port` over `family` and compares every cell with the
    /// reference verdict for the same flow under `policies`.
    pub async fn check(&self, policies: &[Policy], port: Port, family: Family) -> Result<MatrixDiff, TestbedError> {
        let reference = Reference::new(&self.cluster, policies);
        let matrix = self.net.probe_matrix(port, family).await?;
        Ok(matrix.compare(|from, to| {
            let flow = Flow {
                src: from.ip(family),
                dst: to.ip(family),
                protocol: engine_protocol(port.protocol),
                port: port.number,
            };
            reference.verdict(&flow).allowed
        }))
    }

    /// [`Testbed::check`] for each `(port, family)`; the diffs that do not match, printed.
    pub async fn mismatches(
        &self,
        policies: &[Policy],
        probes: &[(Port, Family)],
    ) -> Result<Vec<String>, TestbedError> {
        let mut failures = Vec::new();
        for (port, family) in probes {
            let diff = self.check(policies, *port, *family).await?;
            if !diff.is_match() {
                failures.push(format!("{port} {family}:\n{diff}"));
            }
        }
        Ok(failures)
    }

    /// The reference verdict of one flow between two pods (ids like `x/a`).
    pub fn reference_allows(
        &self,
        policies: &[Policy],
        from: &str,
        to: &str,
        port: Port,
        family: Family,
    ) -> Result<bool, TestbedError> {
        let (src, dst) = (self.net.pod(from)?.ip(family), self.net.pod(to)?.ip(family));
        let flow = Flow { src, dst, protocol: engine_protocol(port.protocol), port: port.number };
        Ok(Reference::new(&self.cluster, policies).verdict(&flow).allowed)
    }

    /// Whether a fresh connection from pod `from` to `to:port` succeeds now.
    pub async fn connects(&self, from: &str, to: IpAddr, port: Port) -> Result<bool, TestbedError> {
        connects(&self.net, from, to, port, palisade_testkit::DEFAULT_PROBE_TIMEOUT).await
    }
}

/// Whether a fresh connection (TCP) or exchange (UDP) from pod `from` to `to:port` succeeds.
pub async fn connects(
    net: &NetCluster,
    from: &str,
    to: IpAddr,
    port: Port,
    timeout: Duration,
) -> Result<bool, TestbedError> {
    Ok(net.probe(from, to, port.protocol, port.number, timeout).await?.is_connected())
}

fn missing_node(node: &str) -> TestbedError {
    TestbedError::Testkit(palisade_testkit::Error::Invalid(format!("no node {node}")))
}

/// Runs futures concurrently on the current task (enough for a handful of node syncs).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

pub fn engine_protocol(protocol: Protocol) -> model::Protocol {
    match protocol {
        Protocol::Tcp => model::Protocol::Tcp,
        Protocol::Udp => model::Protocol::Udp,
    }
}

/// The engine's picture of a namespace cluster, as the operator would build it from the API:
/// logical namespaces labelled `ns=<name>`, pods with both addresses and their named ports,
/// nodes with both addresses. Logical names are used throughout (`x/a` on `n1`).
pub fn engine_cluster(net: &NetCluster, namespace_labels: &BTreeMap<String, BTreeMap<String, String>>) -> Cluster {
    let mut cluster = Cluster::default();
    for namespace in net.namespaces() {
        let mut labels = namespace_labels.get(&namespace).cloned().unwrap_or_default();
        labels.insert("ns".into(), namespace.clone());
        cluster.namespaces.insert(namespace.clone(), Namespace { name: namespace, labels });
    }
    for node in net.nodes() {
        cluster.nodes.insert(
            node.name.clone(),
            model::Node {
                name: node.name.clone(),
                labels: node.labels.clone(),
                ips: vec![node.ip(Family::V4), node.ip(Family::V6)],
            },
        );
    }
    for pod in net.pods() {
        let key = PodKey { namespace: pod.namespace.clone(), name: pod.name.clone() };
        let named_ports = pod
            .ports
            .iter()
            .map(|port| NamedPort { name: port.name(), protocol: engine_protocol(port.protocol), port: port.number })
            .collect();
        cluster.pods.insert(
            key.clone(),
            Pod {
                key,
                labels: pod.labels.clone(),
                node: Some(pod.node.clone()),
                ips: vec![pod.ip(Family::V4), pod.ip(Family::V6)],
                named_ports,
                host_network: false,
                terminated: false,
            },
        );
    }
    cluster
}
