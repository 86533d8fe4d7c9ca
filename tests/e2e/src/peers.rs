//! The peer enforcers `make bench` measures next to Palisade, on the same harness: one real
//! kube-apiserver, the model's nodes and pods as network namespaces, and each enforcer's node
//! agents programming their node's namespace.
//!
//! * **kube-router** (firewall only, iptables + ipset, unmodified) and **kube-network-policies**
//!   (nftables + NFQUEUE, patched for a `--kubeconfig` flag and for the xtables NFQUEUE target,
//!   because this kernel has no nft_queue) are built from Go modules by
//!   `tests/tools/build-peers.sh`. Each runs in its node's namespace (`ip netns exec`) with the
//!   admin kubeconfig, reaching the apiserver at the in-cluster address the testkit relays
//!   ([`palisade_testkit::NetCluster::expose_apiserver`]).
//! * **Palisade** is the e2e [`Stack`] with one operator replica (the peers have no central
//!   process, so a second replica would only add to its side of the footprint).
//!
//! What is measured is the same for all three and lives in the bench; this module only starts
//! and exposes them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kube::Client;
use palisade_conformance::Model;
use palisade_testkit::{ControlPlane, SERVICE_CIDR, write_private};

use crate::cluster::ModelCluster;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::stack::{Stack, StackOptions};

/// An enforcer the bench can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcer {
    KubeRouter,
    KubeNetworkPolicies,
    Palisade,
}

impl Enforcer {
    pub const ALL: [Enforcer; 3] = [Enforcer::KubeRouter, Enforcer::KubeNetworkPolicies, Enforcer::Palisade];

    /// The short name used in tables and in `PEERS_ENFORCERS`.
    pub fn name(self) -> &'static str {
        match self {
            Enforcer::KubeRouter => "kube-router",
            Enforcer::KubeNetworkPolicies => "knp",
            Enforcer::Palisade => "palisade",
        }
    }

    pub fn parse(name: &str) -> Result<Enforcer> {
        Enforcer::ALL
            .into_iter()
            .find(|enforcer| enforcer.name() == name)
            .ok_or_else(|| Error::Setup(format!("unknown enforcer {name:?}: one of kube-router, knp, palisade")))
    }
}

/// The directory holding the peer binaries: `$PALISADE_PEERS_DIR`, else what
/// `tests/tools/build-peers.sh` builds (or finds in its cache) and prints.
pub fn peer_binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PALISADE_PEERS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = palisade_testkit::repository_root().join("tests/tools/build-peers.sh");
    let output = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::io(script.display(), e))?;
    if !output.status.success() {
        return Err(Error::Setup(format!("{} failed ({})", script.display(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().ok_or_else(|| Error::Setup(format!("{} printed nothing", script.display())))?;
    Ok(PathBuf::from(dir.trim()))
}

/// One enforcer running over the model.
pub enum Enforced {
    Peer(Box<PeerRun>),
    Palisade(Box<Stack>),
}

/// A peer's control plane, cluster and one agent process per node.
pub struct PeerRun {
    plane: ControlPlane,
    cluster: Arc<ModelCluster>,
    agents: Vec<Process>,
    _files: tempfile::TempDir,
}

impl Enforced {
    /// Starts the apiserver, the namespaces and `enforcer`'s agents. `peers` is the directory of
    /// [`peer_binaries`] (unused for Palisade).
    pub async fn start(enforcer: Enforcer, model: &Model, peers: &Path) -> Result<Enforced> {
        match enforcer {
            Enforcer::Palisade => {
                let options = StackOptions { operator_replicas: 1, ..StackOptions::default() };
                Ok(Enforced::Palisade(Box::new(Stack::start_with(model, options).await?)))
            }
            peer => Ok(Enforced::Peer(Box::new(PeerRun::start(peer, model, peers).await?))),
        }
    }

    pub fn client(&self) -> Result<Client> {
        match self {
            Enforced::Peer(run) => Ok(run.plane.admin_client()?),
            Enforced::Palisade(stack) => Ok(stack.client()),
        }
    }

    pub fn cluster(&self) -> &Arc<ModelCluster> {
        match self {
            Enforced::Peer(run) => &run.cluster,
            Enforced::Palisade(stack) => stack.cluster(),
        }
    }

    /// The per-node agent processes, by node (logical name).
    pub fn agent_pids(&self) -> Vec<(String, u32)> {
        match self {
            Enforced::Peer(run) => {
                let nodes = run.cluster.model.nodes.iter().map(|node| node.name.clone());
                nodes.zip(run.agents.iter().map(Process::pid)).collect()
            }
            Enforced::Palisade(stack) => {
                stack.agents().iter().filter_map(|a| Some((a.node.clone(), a.pid()?))).collect()
            }
        }
    }

    /// Processes that serve every node (Palisade's operator), with a name each.
    pub fn central_pids(&self) -> Vec<(String, u32)> {
        match self {
            Enforced::Peer(_) => Vec::new(),
            Enforced::Palisade(stack) => {
                stack.operators().iter().filter_map(|r| Some(("operator".to_owned(), r.pid()?))).collect()
            }
        }
    }

    /// Log files, for a failure message.
    pub fn logs(&self) -> Vec<PathBuf> {
        match self {
            Enforced::Peer(run) => run.agents.iter().map(|a| a.log_path().to_path_buf()).collect(),
            Enforced::Palisade(stack) => {
                let operators = stack.operators().iter().map(|r| r.log_path().to_path_buf());
                operators.chain(stack.agents().iter().map(|a| a.log_path().to_path_buf())).collect()
            }
        }
    }
}

impl PeerRun {
    async fn start(enforcer: Enforcer, model: &Model, peers: &Path) -> Result<PeerRun> {
        let plane = ControlPlane::start().await?;
        let client = plane.admin_client()?;
        let model_for_build = model.clone();
        let mut cluster = tokio::task::spawn_blocking(move || ModelCluster::build(&model_for_build))
            .await
            .map_err(|e| Error::Setup(format!("cluster build task: {e}")))??;
        cluster.register(&client).await?;
        let server = cluster.net.expose_apiserver(&plane)?;
        let files =
            tempfile::Builder::new().prefix("palisade-peer-").tempdir().map_err(|e| Error::io("temp dir", e))?;
        let kubeconfig = files.path().join("admin.kubeconfig");
        write_private(&kubeconfig, &plane.kubeconfig_for(&server, None))?;

        let mut agents = Vec::new();
        for node in cluster.net.nodes() {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &node.netns]);
            let kubeconfig_flag = format!("--kubeconfig={}", kubeconfig.display());
            let hostname_flag = format!("--hostname-override={}", node.netns);
            match enforcer {
                Enforcer::KubeRouter => {
                    command.arg(peers.join("kube-router")).args([
                        "--run-firewall=true",
                        "--run-router=false",
                        "--run-service-proxy=false",
                        &kubeconfig_flag,
                        &hostname_flag,
                        &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                        "--metrics-port=0",
                        "--v=1",
                    ]);
                }
                Enforcer::KubeNetworkPolicies => {
                    command.arg(peers.join("kube-network-policies")).args([
                        &kubeconfig_flag,
                        &hostname_flag,
                        "--disable-nri",
                        "--nfqueue-id=100",
                        "--metrics-bind-address=127.0.0.1:9080",
                        "--v=1",
                    ]);
                }
                Enforcer::Palisade => return Err(Error::Setup("Palisade runs as a Stack, not as a peer".into())),
            }
            let name = format!("{} {}", enforcer.name(), node.name);
            let log = files.path().join(format!("{}-{}.log", enforcer.name(), node.name));
            agents.push(Process::spawn(&name, command, &log)?);
        }
        Ok(PeerRun { plane, cluster: Arc::new(cluster), agents, _files: files })
    }
}
