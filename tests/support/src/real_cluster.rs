//! [`RealCluster`]: the real cluster of `make cluster` (`tests/cluster/cluster.sh`) for tests:
//! kubelets, containerd, kube-proxy and the controllers, nodes as network namespaces, pods from the
//! images in `target/images` (`tests/cluster/images.sh`, which `make test` runs first).
//!
//! Each cluster gets its own name (namespaces, cgroups, state directory) and its own loopback port
//! for the API server, so tests can run side by side; `Drop` removes everything, also on panic.
//! Binaries come from `KUBEBUILDER_ASSETS` when it holds them, else from the asset cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::process::{checked, run};

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// The images every real-cluster test imports, as `tests/cluster/images.sh` writes them.
pub const IMAGES: [&str; 3] = ["pause.tar", "probe.tar", "palisade.tar"];

pub struct RealCluster {
    name: String,
    dir: PathBuf,
    script: PathBuf,
    assets: PathBuf,
    nodes: usize,
}

/// The repository root (tests/support is two levels below it).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/images`, where `tests/cluster/images.sh` writes the images.
pub fn images_dir() -> PathBuf {
    repository_root().join("target/images")
}

impl RealCluster {
    /// Starts a cluster of `nodes` nodes, dual stack, with every image of [`IMAGES`] imported.
    pub fn start(nodes: usize) -> Result<RealCluster> {
        crate::netns::require_root()?;
        remove_abandoned();
        let images: Vec<PathBuf> = IMAGES.iter().map(|image| images_dir().join(image)).collect();
        if let Some(missing) = images.iter().find(|image| !image.exists()) {
            return Err(Error::Invalid(format!(
                "{} is missing: build the images first with tests/cluster/images.sh (make test does)",
                missing.display()
            )));
        }
        let name = format!("t{}x{}", std::process::id() % 100_000, CLUSTERS.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join("palisade-cluster").join(&name);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| Error::Invalid(format!("no free loopback port: {error}")))?
            .port();
        let script = repository_root().join("tests/cluster/cluster.sh");
        let mut cluster = RealCluster { name, dir, script, assets: PathBuf::new(), nodes };
        let up = cluster
            .command()
            .arg("up")
            .env("PALISADE_CLUSTER_NODES", nodes.to_string())
            .env("PALISADE_API_PORT", port.to_string())
            .env("PALISADE_IMAGES", images.iter().map(|i| i.display().to_string()).collect::<Vec<_>>().join(" "))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| Error::Spawn { program: cluster.script.display().to_string(), source })?;
        checked(&format!("{}", cluster.script.display()), &["up"], up)?;
        let assets = std::fs::read_to_string(cluster.dir.join("assets"))
            .map_err(|error| Error::Invalid(format!("the cluster wrote no assets file: {error}")))?;
        cluster.assets = PathBuf::from(assets.trim());
        Ok(cluster)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.script);
        command.env("PALISADE_CLUSTER", &self.name).env("PALISADE_CLUSTER_DIR", &self.dir);
        command
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kubeconfig for the root namespace (through the cluster's loopback forwarder).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Node names, `<cluster>-n1` …
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(|k| format!("{}-n{k}", self.name)).collect()
    }

    /// A binary of the cluster's assets (`kubectl`, `helm`, …).
    pub fn asset(&self, binary: &str) -> PathBuf {
        self.assets.join(binary)
    }

    /// Runs `kubectl ARGS` against the cluster; the output, whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.tool("kubectl", args, None)
    }

    /// `kubectl ARGS` with `stdin` as input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<Output> {
        self.tool("kubectl", args, Some(stdin))
    }

    /// Runs `helm ARGS` against the cluster; the output, whatever the exit status.
    pub fn helm(&self, args: &[&str]) -> Result<Output> {
        self.tool("helm", args, None)
    }

    /// `kubectl ARGS`, failing unless it succeeds; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        checked("kubectl", args, self.kubectl(args)?)
    }

    /// `helm ARGS`, failing unless it succeeds; its stdout.
    pub fn helm_ok(&self, args: &[&str]) -> Result<String> {
        checked("helm", args, self.helm(args)?)
    }

    fn tool(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut command = Command::new(self.asset(binary));
        command.args(args).env("KUBECONFIG", self.kubeconfig()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.spawn().map_err(|source| Error::Spawn { program: binary.into(), source })?;
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().ok_or_else(|| Error::Invalid(format!("{binary}: no stdin")))?;
            pipe.write_all(input.as_bytes()).map_err(|source| Error::Spawn { program: binary.into(), source })?;
        }
        child.wait_with_output().map_err(|source| Error::Spawn { program: binary.into(), source })
    }

    /// Runs `program ARGS` inside node `node`'s network namespace; its stdout, failing unless it succeeds.
    pub fn in_node(&self, node: &str, program: &str, args: &[&str]) -> Result<String> {
        let netns = format!("--net=/run/netns/{node}");
        let mut all = vec![netns.as_str(), program];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }
}

/// Clusters of test processes that died without dropping them (`t<pid>x<n>`, the pid gone).
fn remove_abandoned() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir().join("palisade-cluster")) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix('t').and_then(|rest| rest.split_once('x')).map(|(pid, _)| pid.to_owned())
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(&pid).exists() {
            continue;
        }
        let script = repository_root().join("tests/cluster/cluster.sh");
        let _ = Command::new(&script)
            .arg("down")
            .env("PALISADE_CLUSTER", &name)
            .env("PALISADE_CLUSTER_DIR", entry.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        match self.command().arg("down").stdout(Stdio::null()).stderr(Stdio::piped()).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "removing cluster {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
            ),
            Err(error) => eprintln!("removing cluster {} failed: {error}", self.name),
        }
    }
}
