//! [`Stack`]: everything Palisade needs, for real, around one conformance model: an apiserver with
//! our CRDs and RBAC, the model's pods as network namespaces, operator replicas and one agent per
//! node as `palisade` processes, and the means to change policies and check packets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use palisade_conformance::{Assertion, Case, Expectation, Model, Object, ObjectRef, PodId, Protocol, Step};
use palisade_crds::{ClusterNetworkPolicy, PolicyStatus};
use palisade_engine::PlanEvaluator;
use palisade_engine::model as m;
use palisade_engine::plan::{NodePlan, PortEntry, PortMatch};
use palisade_engine::verdict::Flow;
use palisade_testkit::{ControlPlane, ProbeOutcome};
use serde_json::json;

use crate::cluster::{ModelCluster, from_json};
use crate::error::{Error, Result};
use crate::pki::OperatorTls;
use crate::process::{Process, log_tail, palisade_binary};
use crate::proxy::ServiceProxy;
use crate::rbac;
use palisade_testkit::write_private;

/// The Lease the operator replicas elect a status writer with.
pub const LEASE_NAME: &str = "palisade-operator";

/// Knobs; `Default` suits the conformance suites on 2 cores.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub operator_replicas: usize,
    /// Short, so a killed leader is replaced within seconds.
    pub lease_duration_seconds: u64,
    /// How long [`Stack::expect`] keeps probing before it reports the difference.
    pub converge_timeout: Duration,
    /// How long a probe waits for an answer; a denied cell costs this much.
    pub probe_timeout: Duration,
    /// Probes in flight at once.
    pub probe_parallelism: usize,
    /// `PALISADE_LOG` of every process: the test's own `PALISADE_LOG` if set, else `info`.
    pub log_filter: String,
    /// The plan stream's idle timeout (agents and operators; operators ping at a third of it).
    /// `None` keeps the binaries' defaults.
    pub stream_idle_timeout_seconds: Option<u64>,
}

impl Default for StackOptions {
    fn default() -> StackOptions {
        StackOptions {
            operator_replicas: 2,
            lease_duration_seconds: 4,
            converge_timeout: Duration::from_secs(15),
            probe_timeout: Duration::from_millis(400),
            probe_parallelism: 12,
            log_filter: std::env::var("PALISADE_LOG").unwrap_or_else(|_| "info".to_owned()),
            stream_idle_timeout_seconds: None,
        }
    }
}

/// One operator replica process and where it listens.
pub struct OperatorReplica {
    pub identity: String,
    pub stream_address: SocketAddr,
    pub probe_address: SocketAddr,
    process: Option<Process>,
    log: PathBuf,
}

impl OperatorReplica {
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// One node agent process.
pub struct NodeAgent {
    /// Logical node name (`n1`).
    pub node: String,
    /// The Node object's name, which is also the node's network namespace.
    pub node_object: String,
    pub health_address: SocketAddr,
    pub state_dir: PathBuf,
    token_file: PathBuf,
    process: Option<Process>,
    log: PathBuf,
    starts: usize,
}

impl NodeAgent {
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// A running Palisade installation around a conformance model. Dropping it (also while a test
/// panics) kills every process and removes every namespace and file it made.
pub struct Stack {
    // Field order is drop order: processes before the namespaces they program and the apiserver.
    agents: Vec<NodeAgent>,
    operators: Vec<OperatorReplica>,
    proxy: ServiceProxy,
    cluster: Arc<ModelCluster>,
    plane: ControlPlane,
    files: tempfile::TempDir,
    client: Client,
    options: StackOptions,
    system_namespace: String,
    operator_kubeconfig: PathBuf,
    tls_dir: PathBuf,
    /// Policies applied since the last reset, so a reset deletes exactly those.
    applied: BTreeSet<PolicyKey>,
    /// Namespaces and pods whose labels a case changed.
    relabeled_namespaces: BTreeSet<String>,
    relabeled_pods: BTreeSet<PodId>,
    /// Finished pods whose IP a successor took, with the successor, so a reset undoes both.
    reused_pod_ips: Vec<(PodId, PodId)>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PolicyKey {
    Network { namespace: String, name: String },
    Cluster { name: String },
}

impl From<&ObjectRef> for PolicyKey {
    fn from(reference: &ObjectRef) -> PolicyKey {
        match reference {
            ObjectRef::NetworkPolicy { namespace, name } => {
                PolicyKey::Network { namespace: namespace.clone(), name: name.clone() }
            }
            ObjectRef::ClusterNetworkPolicy { name } => PolicyKey::Cluster { name: name.clone() },
        }
    }
}

impl Stack {
    pub async fn start(model: &Model) -> Result<Stack> {
        Stack::start_with(model, StackOptions::default()).await
    }

    /// Starts everything and returns once every agent is Ready and connected.
    pub async fn start_with(model: &Model, options: StackOptions) -> Result<Stack> {
        let binary = palisade_binary()?;
        let plane = ControlPlane::start().await?;
        let client = plane.admin_client()?;
        let manifests = crds_manifests()?;
        let manifest_refs: Vec<&str> = manifests.iter().map(String::as_str).collect();
        plane.install_crds(&manifest_refs).await?;

        let model_for_build = model.clone();
        let cluster = tokio::task::spawn_blocking(move || ModelCluster::build(&model_for_build))
            .await
            .map_err(|e| Error::Setup(format!("cluster build task: {e}")))??;
        cluster.register(&client).await?;
        let cluster = Arc::new(cluster);

        let files = tempfile::Builder::new().prefix("palisade-e2e-").tempdir().map_err(|e| Error::io("temp dir", e))?;
        let suffix = cluster.net.run_id().trim_start_matches("pal-").to_owned();
        let system_namespace = format!("palisade-system-{suffix}");
        plane.create_namespace(&system_namespace, &BTreeMap::new()).await?;
        rbac::install(&client, &system_namespace, &suffix).await?;

        let tls = OperatorTls::generate()?;
        let tls_dir = files.path().join("tls");
        std::fs::create_dir_all(&tls_dir).map_err(|e| Error::io(tls_dir.display(), e))?;
        for (name, content) in [("ca.crt", &tls.ca_pem), ("tls.crt", &tls.cert_pem), ("tls.key", &tls.key_pem)] {
            write_private(&tls_dir.join(name), content)?;
        }
        let operator_token = rbac::token(&client, &system_namespace, rbac::OPERATOR_ACCOUNT, None).await?;
        let operator_kubeconfig = files.path().join("operator.kubeconfig");
        write_private(&operator_kubeconfig, &plane.kubeconfig_for_token(&operator_token))?;

        let proxy = ServiceProxy::start().await?;
        let mut stack = Stack {
            agents: Vec::new(),
            operators: Vec::new(),
            proxy,
            cluster,
            plane,
            files,
            client,
            options,
            system_namespace,
            operator_kubeconfig,
            tls_dir,
            applied: BTreeSet::new(),
            relabeled_namespaces: BTreeSet::new(),
            relabeled_pods: BTreeSet::new(),
            reused_pod_ips: Vec::new(),
        };
        for index in 0..stack.options.operator_replicas {
            let replica = stack.spawn_operator(&binary, &format!("palisade-operator-{index}"))?;
            stack.operators.push(replica);
        }
        stack.update_service();
        for index in 0..stack.operators.len() {
            stack.wait_operator_ready(index).await?;
        }
        let nodes: Vec<String> = stack.cluster.model.nodes.iter().map(|n| n.name.clone()).collect();
        for node in &nodes {
            let agent = stack.create_agent(&binary, node).await?;
            stack.agents.push(agent);
        }
        for node in &nodes {
            stack.wait_agent_ready(node).await?;
        }
        Ok(stack)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// For outages: stopping and starting the API server or etcd under the running stack.
    pub fn plane_mut(&mut self) -> &mut ControlPlane {
        &mut self.plane
    }

    pub fn cluster(&self) -> &Arc<ModelCluster> {
        &self.cluster
    }

    pub fn options(&self) -> &StackOptions {
        &self.options
    }

    /// The namespace of the operator's Lease, ServiceAccounts and the agent pods.
    pub fn system_namespace(&self) -> &str {
        &self.system_namespace
    }

    pub fn operators(&self) -> &[OperatorReplica] {
        &self.operators
    }

    pub fn agents(&self) -> &[NodeAgent] {
        &self.agents
    }

    /// Temp dir with every process log, TLS material and agent state.
    pub fn files_dir(&self) -> &Path {
        self.files.path()
    }

    // ----- operators -----

    fn spawn_operator(&self, binary: &Path, identity: &str) -> Result<OperatorReplica> {
        let stream_address = free_local_address()?;
        let probe_address = free_local_address()?;
        // A restarted replica gets a fresh log; the old one stays for the post-mortem.
        let mut log = self.files.path().join(format!("{identity}.log"));
        for attempt in 1.. {
            if !log.exists() {
                break;
            }
            log = self.files.path().join(format!("{identity}.{attempt}.log"));
        }
        let mut command = Command::new(binary);
        command
            .arg("operator")
            .arg("--kubeconfig")
            .arg(&self.operator_kubeconfig)
            .args(["--stream-address", &stream_address.to_string()])
            .arg("--tls-cert")
            .arg(self.tls_dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(self.tls_dir.join("tls.key"))
            .args(["--probe-address", &probe_address.to_string()])
            .args(["--agent-service-account", &format!("{}/{}", self.system_namespace, rbac::AGENT_ACCOUNT)])
            .args(["--lease-name", LEASE_NAME, "--lease-namespace", &self.system_namespace])
            .args(["--lease-duration-seconds", &self.options.lease_duration_seconds.to_string()])
            .args(["--identity", identity])
            .env("PALISADE_LOG", &self.options.log_filter)
            .env_remove("KUBECONFIG");
        if let Some(idle) = self.options.stream_idle_timeout_seconds {
            let ping = (idle / 3).max(1);
            command.args(["--stream-ping-interval-seconds", &ping.to_string()]);
            command.args(["--stream-idle-timeout-seconds", &idle.max(2 * ping).to_string()]);
        }
        let process = Process::spawn(identity, command, &log)?;
        Ok(OperatorReplica {
            identity: identity.to_owned(),
            stream_address,
            probe_address,
            process: Some(process),
            log,
        })
    }

    /// Points the Service proxy at the running replicas.
    fn update_service(&self) {
        let live = self.operators.iter().filter(|r| r.is_running()).map(|r| r.stream_address).collect();
        self.proxy.set_backends(live);
    }

    /// Waits for replica `index`'s `/readyz` (its index has synced).
    pub async fn wait_operator_ready(&mut self, index: usize) -> Result<()> {
        let replica = &mut self.operators[index];
        let what = format!("operator {} /readyz on {}", replica.identity, replica.probe_address);
        wait_for_readyz(&mut replica.process, replica.probe_address, &replica.log, what).await
    }

    /// SIGKILLs replica `index`: a crash (the Lease is not released; it must expire).
    pub fn kill_operator(&mut self, index: usize) {
        if let Some(mut process) = self.operators[index].process.take() {
            process.kill();
        }
        self.update_service();
    }

    /// Stops replica `index` gracefully (SIGTERM), as a rollout does.
    pub fn stop_operator(&mut self, index: usize) {
        if let Some(mut process) = self.operators[index].process.take() {
            process.terminate(Duration::from_secs(15));
        }
        self.update_service();
    }

    /// Starts replica `index` again (same identity and ports) and waits until it is ready.
    pub async fn restart_operator(&mut self, index: usize) -> Result<()> {
        let binary = palisade_binary()?;
        let identity = self.operators[index].identity.clone();
        self.operators[index] = self.spawn_operator(&binary, &identity)?;
        self.update_service();
        self.wait_operator_ready(index).await
    }

    /// The Lease's current holder, if any.
    pub async fn lease_holder(&self) -> Result<Option<String>> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.system_namespace);
        Ok(leases.get_opt(LEASE_NAME).await?.and_then(|lease| lease.spec).and_then(|spec| spec.holder_identity))
    }

    /// Index of the replica holding the Lease, waiting up to `timeout` for one to hold it.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(holder) = self.lease_holder().await?
                && let Some(index) = self.operators.iter().position(|r| r.identity == holder && r.is_running())
            {
                return Ok(index);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "a running operator replica to hold the Lease".into(),
                    seconds: timeout.as_secs(),
                    detail: format!("holder: {:?}", self.lease_holder().await?),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // ----- agents -----

    /// What the agent DaemonSet gives an agent on `node_object` (a Node in the API): its pod
    /// (host network, on that node) and a ServiceAccount token bound to the pod, so the
    /// operator's TokenReview sees the node. Returns the token.
    async fn agent_pod_token(&self, node_object: &str, pod_name: &str, node_ips: &[IpAddr]) -> Result<String> {
        let pod: K8sPod = from_json(json!({
            "metadata": { "name": pod_name, "namespace": self.system_namespace, "labels": { "app": "palisade-agent" } },
            "spec": {
                "nodeName": node_object,
                "hostNetwork": true,
                "serviceAccountName": rbac::AGENT_ACCOUNT,
                "containers": [{ "name": "agent", "image": "palisade.invalid/palisade" }],
            },
        }))?;
        let pods: Api<K8sPod> = Api::namespaced(self.client.clone(), &self.system_namespace);
        let created = pods.create(&PostParams::default(), &pod).await?;
        let uid = created.metadata.uid.clone().ok_or_else(|| Error::Setup("agent pod without uid".into()))?;
        palisade_testkit::mark_pod_running(&self.client, &self.system_namespace, pod_name, node_ips, node_ips).await?;
        rbac::token(&self.client, &self.system_namespace, rbac::AGENT_ACCOUNT, Some((pod_name, &uid))).await
    }

    /// The plan stream endpoint of an agent this process runs itself (a simulated node in a
    /// bench): the agent pod and bound token of a real one, on `node_object` (a Node the caller
    /// created), through the operators' Service.
    pub async fn agent_endpoint(
        &self,
        node_object: &str,
        node_ips: &[IpAddr],
    ) -> Result<palisade_agent::stream::Endpoint> {
        let token = self.agent_pod_token(node_object, &format!("palisade-agent-{node_object}"), node_ips).await?;
        let token_file = self.files.path().join(format!("token-{node_object}"));
        write_private(&token_file, &token)?;
        let url = palisade_agent::stream::stream_url(&self.proxy.address().to_string(), node_object)
            .map_err(|e| Error::Setup(format!("stream url of {node_object}: {e}")))?;
        Ok(palisade_agent::stream::Endpoint { url, token_file, ca_file: self.tls_dir.join("ca.crt") })
    }

    async fn create_agent(&self, binary: &Path, node: &str) -> Result<NodeAgent> {
        let net_node = self.cluster.net.node(node)?.clone();
        let node_ips = vec![IpAddr::V4(net_node.ipv4), IpAddr::V6(net_node.ipv6)];
        let token = self.agent_pod_token(&net_node.netns, &format!("palisade-agent-{node}"), &node_ips).await?;

        let dir = self.files.path().join(format!("agent-{node}"));
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).map_err(|e| Error::io(state_dir.display(), e))?;
        let token_file = dir.join("token");
        write_private(&token_file, &token)?;
        let mut agent = NodeAgent {
            node: node.to_owned(),
            node_object: net_node.netns.clone(),
            health_address: free_local_address()?,
            state_dir,
            token_file,
            process: None,
            log: dir.join("agent.log"),
            starts: 0,
        };
        agent.process = Some(self.spawn_agent(binary, &mut agent)?);
        Ok(agent)
    }

    fn spawn_agent(&self, binary: &Path, agent: &mut NodeAgent) -> Result<Process> {
        agent.starts += 1;
        agent.log = agent.state_dir.with_file_name(format!("agent.{}.log", agent.starts));
        let mut command = Command::new(binary);
        command
            .args(["agent", "run", "--node", &agent.node_object])
            .args(["--operator", &self.proxy.address().to_string()])
            .arg("--token-file")
            .arg(&agent.token_file)
            .arg("--ca-file")
            .arg(self.tls_dir.join("ca.crt"))
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .args(["--netns", &agent.node_object])
            .args(["--health-address", &agent.health_address.to_string()])
            .env("PALISADE_LOG", &self.options.log_filter);
        if let Some(idle) = self.options.stream_idle_timeout_seconds {
            command.args(["--stream-idle-timeout-seconds", &idle.to_string()]);
        }
        // No --node-ip: the node's addresses reach the agent in its plan, from the Node object.
        Ok(Process::spawn(&format!("agent {}", agent.node), command, &agent.log)?)
    }

    fn agent_index(&self, node: &str) -> Result<usize> {
        self.agents.iter().position(|a| a.node == node).ok_or_else(|| Error::Setup(format!("no agent on node {node}")))
    }

    /// True when the agent on `node` answers `/readyz` with 200.
    pub async fn agent_ready(&self, node: &str) -> Result<bool> {
        let agent = &self.agents[self.agent_index(node)?];
        Ok(http_get_status(agent.health_address, "/readyz").await == Some(200))
    }

    /// Whether the agent on `node` says (in its metrics) that its plan stream is open.
    pub async fn agent_connected(&self, node: &str) -> Result<bool> {
        let agent = &self.agents[self.agent_index(node)?];
        let (_, metrics) = http_get(agent.health_address, "/metrics")
            .await
            .ok_or_else(|| Error::Setup(format!("agent {node} serves no metrics on {}", agent.health_address)))?;
        Ok(metrics.lines().any(|line| line.trim() == "palisade_agent_connected 1"))
    }

    /// Makes the operators' Service swallow every byte both ways (connections stay open), or
    /// pass them again: a network path that drops packets without a reset.
    pub fn blackhole_operators(&self, blackholed: bool) {
        self.proxy.set_blackholed(blackholed);
    }

    /// Waits (60 s) for the agent on `node` to be Ready.
    pub async fn wait_agent_ready(&mut self, node: &str) -> Result<()> {
        let index = self.agent_index(node)?;
        let agent = &mut self.agents[index];
        let what = format!("agent {node} /readyz on {}", agent.health_address);
        wait_for_readyz(&mut agent.process, agent.health_address, &agent.log, what).await
    }

    /// Stops the agent on `node` (SIGTERM: rules stay in force) and starts it again, same state dir.
    pub async fn restart_agent(&mut self, node: &str) -> Result<()> {
        let index = self.agent_index(node)?;
        if let Some(mut process) = self.agents[index].process.take() {
            process.terminate(Duration::from_secs(10));
        }
        let binary = palisade_binary()?;
        let mut agent = std::mem::replace(&mut self.agents[index], placeholder_agent());
        let spawned = self.spawn_agent(&binary, &mut agent).map(|process| agent.process = Some(process));
        self.agents[index] = agent;
        spawned
    }

    /// The plan the agent on `node` last applied and persisted.
    pub async fn persisted_plan(&self, node: &str) -> Result<Option<NodePlan>> {
        let agent = &self.agents[self.agent_index(node)?];
        palisade_agent::state::PlanStore::new(&agent.state_dir)
            .load()
            .await
            .map_err(|e| Error::Setup(format!("agent {node}'s persisted plan: {e}")))
    }

    /// `iptables-save` (and `ip6tables-save`) of the node's network namespace.
    pub fn node_rules(&self, node: &str) -> Result<String> {
        let mut text = self.cluster.net.node_exec(node, &["iptables-save"])?;
        text.push_str(&self.cluster.net.node_exec(node, &["ip6tables-save"])?);
        Ok(text)
    }

    // ----- API changes -----

    /// Creates the object, or replaces it entirely when it exists (an update), after mapping
    /// logical namespaces and placeholders to this run.
    pub async fn apply(&mut self, object: &Object) -> Result<()> {
        let resolved = object.resolve(self.cluster.as_ref())?;
        let key = match &resolved {
            Object::NetworkPolicy(policy) => PolicyKey::Network {
                namespace: policy.metadata.namespace.clone().unwrap_or_default(),
                name: policy.metadata.name.clone().unwrap_or_default(),
            },
            Object::ClusterNetworkPolicy(policy) => {
                PolicyKey::Cluster { name: policy.metadata.name.clone().unwrap_or_default() }
            }
        };
        // The operator's status writes bump the resourceVersion between our read and our
        // replace; a conflict only means "read again", as kubectl does.
        let mut attempt = 0;
        loop {
            let outcome = match &resolved {
                Object::NetworkPolicy(policy) => {
                    let api: Api<NetworkPolicy> =
                        Api::namespaced(self.client.clone(), policy.metadata.namespace.as_deref().unwrap_or_default());
                    create_or_replace(&api, policy.clone()).await
                }
                Object::ClusterNetworkPolicy(policy) => {
                    create_or_replace(&Api::<ClusterNetworkPolicy>::all(self.client.clone()), policy.clone()).await
                }
            };
            match outcome {
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < 10 => attempt += 1,
                Err(error) => return Err(error.into()),
                Ok(()) => break,
            }
        }
        self.applied.insert(key);
        Ok(())
    }

    /// Deletes a policy (logical namespace); a missing one is not an error.
    pub async fn delete(&mut self, reference: &ObjectRef) -> Result<()> {
        let key = match reference {
            ObjectRef::NetworkPolicy { namespace, name } => {
                PolicyKey::Network { namespace: self.cluster.k8s_namespace(namespace), name: name.clone() }
            }
            ObjectRef::ClusterNetworkPolicy { name } => PolicyKey::Cluster { name: name.clone() },
        };
        self.delete_key(&key).await?;
        self.applied.remove(&key);
        Ok(())
    }

    async fn delete_key(&self, key: &PolicyKey) -> Result<()> {
        let deleted = match key {
            PolicyKey::Network { namespace, name } => Api::<NetworkPolicy>::namespaced(self.client.clone(), namespace)
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            PolicyKey::Cluster { name } => Api::<ClusterNetworkPolicy>::all(self.client.clone())
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
        };
        match deleted {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Merges labels into a namespace (logical name); `None` removes the key.
    pub async fn label_namespace(&mut self, namespace: &str, labels: &BTreeMap<String, Option<String>>) -> Result<()> {
        let name = self.cluster.k8s_namespace(namespace);
        Api::<Namespace>::all(self.client.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": labels } })))
            .await?;
        self.relabeled_namespaces.insert(namespace.to_owned());
        Ok(())
    }

    /// Merges labels into a pod; `None` removes the key.
    pub async fn label_pod(&mut self, pod: &PodId, labels: &BTreeMap<String, Option<String>>) -> Result<()> {
        let namespace = self.cluster.k8s_namespace(&pod.namespace);
        Api::<K8sPod>::namespaced(self.client.clone(), &namespace)
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": labels } })))
            .await?;
        self.relabeled_pods.insert(pod.clone());
        Ok(())
    }

    /// `finished` finishes and `successor` takes its IP (see [`ModelCluster::reuse_pod_ip`]).
    pub async fn reuse_pod_ip(
        &mut self,
        finished: &PodId,
        successor: &PodId,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.reused_pod_ips.push((finished.clone(), successor.clone()));
        self.cluster.reuse_pod_ip(&self.client, finished, successor, labels).await
    }

    /// Back to the model as written: every policy applied since the last reset deleted, every
    /// changed label restored; then waits until every agent enforces a plan with no rule sets,
    /// so the next case starts from a converged, open cluster.
    pub async fn reset(&mut self) -> Result<()> {
        for key in std::mem::take(&mut self.applied) {
            self.delete_key(&key).await?;
        }
        for namespace in std::mem::take(&mut self.relabeled_namespaces) {
            let name = self.cluster.k8s_namespace(&namespace);
            let api = Api::<Namespace>::all(self.client.clone());
            let current = api.get(&name).await?.metadata.labels.unwrap_or_default();
            let wanted = self.cluster.model.namespace(&namespace).map(|n| n.labels.clone()).unwrap_or_default();
            let mut patch: BTreeMap<String, Option<String>> = current.keys().map(|k| (k.clone(), None)).collect();
            patch.extend(wanted.into_iter().map(|(k, v)| (k, Some(v))));
            patch.remove(palisade_conformance::model::NAMESPACE_NAME_LABEL);
            api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": patch } })))
                .await?;
        }
        for (finished, successor) in std::mem::take(&mut self.reused_pod_ips) {
            self.relabeled_pods.remove(&finished);
            self.cluster.restore_reused_pod_ip(&self.client, &finished, &successor).await?;
        }
        for pod in std::mem::take(&mut self.relabeled_pods) {
            let namespace = self.cluster.k8s_namespace(&pod.namespace);
            let api = Api::<K8sPod>::namespaced(self.client.clone(), &namespace);
            let current = api.get(&pod.name).await?.metadata.labels.unwrap_or_default();
            let wanted = self.cluster.model.pod(&pod).map(|p| p.labels.clone()).unwrap_or_default();
            let mut patch: BTreeMap<String, Option<String>> = current.keys().map(|k| (k.clone(), None)).collect();
            patch.extend(wanted.into_iter().map(|(k, v)| (k, Some(v))));
            api.patch(&pod.name, &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": patch } })))
                .await?;
        }
        self.wait_plans(Duration::from_secs(30), "every agent to enforce a plan without policies", |plan| {
            plan.rule_sets.is_empty()
        })
        .await
    }

    /// Waits until every running agent's persisted plan satisfies `condition`.
    pub async fn wait_plans(&self, timeout: Duration, what: &str, condition: impl Fn(&NodePlan) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut pending = Vec::new();
            for agent in &self.agents {
                match self.persisted_plan(&agent.node).await {
                    Ok(Some(plan)) if condition(&plan) => {}
                    _ => pending.push(agent.node.clone()),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    seconds: timeout.as_secs(),
                    detail: format!("nodes not there yet: {pending:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // ----- expectations -----

    /// Checks an expectation against the real cluster, polling until it holds or
    /// [`StackOptions::converge_timeout`] passes: real packets for [`Assertion::Packets`], the
    /// agents' enforced plans and kernel rules for [`Assertion::RulesOnly`].
    pub async fn expect(&self, expectation: &Expectation) -> Result<(), String> {
        match expectation.assertion {
            Assertion::Packets => self.expect_packets(expectation).await,
            Assertion::RulesOnly => self.expect_rules(expectation).await,
        }
    }

    async fn expect_packets(&self, expectation: &Expectation) -> Result<(), String> {
        let cells: Vec<(PodId, PodId)> =
            expectation.reachability.cells().into_iter().map(|(from, to, _)| (from, to)).collect();
        let deadline = Instant::now() + self.options.converge_timeout;
        loop {
            let observed = self
                .cluster
                .probe_cells(
                    &cells,
                    expectation.probe.protocol,
                    expectation.probe.port,
                    self.options.probe_timeout,
                    self.options.probe_parallelism,
                )
                .await
                .map_err(|e| format!("probing failed: {e}"))?;
            let connected = |from: &PodId, to: &PodId| {
                observed.get(&(from.clone(), to.clone())).is_some_and(ProbeOutcome::is_connected)
            };
            let comparison = expectation.reachability.compare(connected);
            if comparison.is_match() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut text = format!(
                    "{:?} ({}): packets still differ after {} s\n{comparison}",
                    expectation.title,
                    expectation.probe,
                    self.options.converge_timeout.as_secs()
                );
                for mismatch in &comparison.mismatches {
                    if let Some(outcome) = observed.get(&(mismatch.from.clone(), mismatch.to.clone())) {
                        text.push_str(&format!("  {} -> {}: probe saw {outcome}\n", mismatch.from, mismatch.to));
                    }
                }
                return Err(text);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The plans the agents persisted (they persist only what the kernel took), judged with the
    /// engine's plan evaluator; and where those plans need SCTP port matches, the node's kernel
    /// rules must carry `-p sctp`.
    async fn expect_rules(&self, expectation: &Expectation) -> Result<(), String> {
        let node_ips = self.cluster.node_ips();
        let protocol = engine_protocol(expectation.probe.protocol);
        let deadline = Instant::now() + self.options.converge_timeout;
        loop {
            let mut plans = BTreeMap::new();
            for agent in &self.agents {
                if let Ok(Some(plan)) = self.persisted_plan(&agent.node).await {
                    plans.insert(plan.node.clone(), plan);
                }
            }
            let evaluator = PlanEvaluator::new(&plans, &node_ips);
            let ip = |pod: &PodId| self.cluster.pod_ips(pod).ok().and_then(|ips| ips.into_iter().find(IpAddr::is_ipv4));
            let comparison = expectation.reachability.compare(|from, to| match (ip(from), ip(to)) {
                (Some(src), Some(dst)) => {
                    evaluator.verdict(&Flow { src, dst, protocol, port: expectation.probe.port }).allowed
                }
                _ => false,
            });
            let mut missing_sctp = Vec::new();
            if comparison.is_match() && protocol == m::Protocol::Sctp {
                for agent in &self.agents {
                    let Some(plan) = plans.get(&agent.node_object) else { continue };
                    if plan_has_port_protocol(plan, m::Protocol::Sctp) {
                        match self.node_rules(&agent.node) {
                            Ok(rules) if rules.contains("-p sctp") => {}
                            Ok(_) => missing_sctp
                                .push(format!("{}: plan has SCTP ports, kernel has no `-p sctp` rule", agent.node)),
                            Err(error) => missing_sctp.push(format!("{}: iptables-save failed: {error}", agent.node)),
                        }
                    }
                }
                if missing_sctp.is_empty() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} ({}, rules only): enforced plans still differ after {} s\n{comparison}{}",
                    expectation.title,
                    expectation.probe,
                    self.options.converge_timeout.as_secs(),
                    missing_sctp.join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs every step of a case; returns the failures (an empty list is a pass). A failing
    /// expectation does not stop the case: later steps may still tell something.
    pub async fn run_case(&mut self, case: &Case) -> Vec<String> {
        let mut failures = Vec::new();
        for (index, step) in case.steps.iter().enumerate() {
            let outcome = match step {
                Step::Apply(object) => {
                    self.apply(object).await.map_err(|e| format!("apply failed: {e}\n{}", object.to_yaml()))
                }
                Step::Delete(reference) => self.delete(reference).await.map_err(|e| format!("delete failed: {e}")),
                Step::LabelNamespace { namespace, labels } => {
                    self.label_namespace(namespace, labels).await.map_err(|e| format!("label namespace failed: {e}"))
                }
                Step::LabelPod { pod, labels } => {
                    self.label_pod(pod, labels).await.map_err(|e| format!("label pod failed: {e}"))
                }
                Step::ReusePodIp { finished, successor, labels } => self
                    .reuse_pod_ip(finished, successor, labels)
                    .await
                    .map_err(|e| format!("reuse pod IP failed: {e}")),
                Step::Expect(expectation) => self.expect(expectation).await,
            };
            if let Err(text) = outcome {
                failures.push(format!("step {}: {text}", index + 1));
                if !matches!(step, Step::Expect(_)) {
                    break;
                }
            }
        }
        failures
    }

    // ----- status -----

    pub async fn cluster_network_policy(&self, name: &str) -> Result<Option<ClusterNetworkPolicy>> {
        Ok(Api::<ClusterNetworkPolicy>::all(self.client.clone()).get_opt(name).await?)
    }

    /// The PolicyStatus of NetworkPolicy `name` in logical namespace `namespace`.
    pub async fn policy_status(&self, namespace: &str, name: &str) -> Result<Option<PolicyStatus>> {
        let namespace = self.cluster.k8s_namespace(namespace);
        Ok(Api::<PolicyStatus>::namespaced(self.client.clone(), &namespace).get_opt(name).await?)
    }

    pub async fn network_policy(&self, namespace: &str, name: &str) -> Result<Option<NetworkPolicy>> {
        let namespace = self.cluster.k8s_namespace(namespace);
        Ok(Api::<NetworkPolicy>::namespaced(self.client.clone(), &namespace).get_opt(name).await?)
    }

    /// Polls `check` every 200 ms until it returns `Some` or `timeout` passes; the error carries
    /// `describe()`'s view of the last state.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, String>>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last = check().await?;
            match last {
                Ok(value) => return Ok(value),
                Err(detail) if Instant::now() > deadline => {
                    return Err(Error::Timeout { what: what.to_owned(), seconds: timeout.as_secs(), detail });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Lists every PolicyStatus in the cluster (for diagnostics).
    pub async fn all_policy_statuses(&self) -> Result<Vec<PolicyStatus>> {
        Ok(Api::<PolicyStatus>::all(self.client.clone()).list(&ListParams::default()).await?.items)
    }
}

/// Creates `object`, or replaces the stored one of the same name (keeping its resourceVersion).
async fn create_or_replace<K>(api: &Api<K>, mut object: K) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        Some(existing) => {
            object.meta_mut().resource_version = existing.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &object).await.map(|_| ())
        }
        None => api.create(&PostParams::default(), &object).await.map(|_| ()),
    }
}

fn placeholder_agent() -> NodeAgent {
    NodeAgent {
        node: String::new(),
        node_object: String::new(),
        health_address: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: PathBuf::new(),
        token_file: PathBuf::new(),
        process: None,
        log: PathBuf::new(),
        starts: 0,
    }
}

fn plan_has_port_protocol(plan: &NodePlan, protocol: m::Protocol) -> bool {
    plan.rule_sets.values().flat_map(|set| &set.rules).any(|rule| match &rule.ports {
        PortMatch::Any => false,
        PortMatch::AnyOf(entries) => {
            entries.iter().any(|entry| matches!(entry, PortEntry::Range { protocol: p, .. } if *p == protocol))
        }
    })
}

pub(crate) fn engine_protocol(protocol: Protocol) -> m::Protocol {
    match protocol {
        Protocol::Tcp => m::Protocol::Tcp,
        Protocol::Udp => m::Protocol::Udp,
        Protocol::Sctp => m::Protocol::Sctp,
    }
}

/// Polls `address`'s `/readyz` for 60 s; fails early, with its log, if the process exits.
async fn wait_for_readyz(process: &mut Option<Process>, address: SocketAddr, log: &Path, what: String) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(process) = process.as_mut()
            && let Some(status) = process.exited()
        {
            return Err(exited_early(process, status));
        }
        if http_get_status(address, "/readyz").await == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout { what, seconds: 60, detail: log_tail(log, 30) });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn exited_early(process: &Process, status: std::process::ExitStatus) -> Error {
    Error::ExitedEarly {
        what: process.name().to_owned(),
        status: status.to_string(),
        log: process.log_path().display().to_string(),
        tail: process.log_tail(30),
    }
}

/// The CRD manifests shipped in `charts/palisade/crds/`.
fn crds_manifests() -> Result<Vec<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/palisade/crds");
    let mut texts = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(dir.display(), e))?;
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
    paths.sort();
    for path in paths {
        texts.push(std::fs::read_to_string(&path).map_err(|e| Error::io(path.display(), e))?);
    }
    Ok(texts)
}

/// A loopback address with a port free right now (the process binding it next wins any race
/// that matters here: nothing else on the host picks ports from this range on purpose).
fn free_local_address() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind 127.0.0.1:0", e))?;
    listener.local_addr().map_err(|e| Error::io("local_addr", e))
}

/// The status code of a plain-HTTP GET, `None` when nothing answers (1 s budget).
pub(crate) async fn http_get_status(address: SocketAddr, path: &str) -> Option<u16> {
    http_get(address, path).await.map(|(status, _)| status)
}

/// A plain-HTTP GET: the status code and the body, `None` when nothing answers (1 s budget).
/// One plain-HTTP GET to a probe port: the status and the body, or `None` if unanswered.
pub async fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten()
}
