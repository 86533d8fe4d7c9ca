//! `palisade-testkit-up`: starts a control plane and the 3×3 netpol model (namespaces x, y, z × pods
//! a, b, c on 2 nodes), registers it, prints how to reach everything, and keeps it up until Ctrl-C.
//!
//! ```text
//! sudo KUBEBUILDER_ASSETS=$(tests/tools/build-assets.sh | tail -n1) \
//!   cargo run -p palisade-testkit --bin palisade-testkit-up [-- --no-control-plane]
//! ```

use std::process::ExitCode;

use palisade_testkit::{ClusterSpec, ControlPlane, NetCluster, probe_binary};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("palisade-testkit-up: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> palisade_testkit::Result<()> {
    let with_control_plane = !std::env::args().any(|a| a == "--no-control-plane");
    let started = std::time::Instant::now();
    let plane = if with_control_plane { Some(ControlPlane::start().await?) } else { None };
    let plane_time = started.elapsed();
    let started = std::time::Instant::now();
    let cluster = NetCluster::build(ClusterSpec::netpol_matrix())?;
    let cluster_time = started.elapsed();
    if let Some(plane) = &plane {
        cluster.register(&plane.admin_client()?).await?;
        println!("control plane ready in {plane_time:.2?}: {}", plane.apiserver_url());
        println!("  export KUBECONFIG={}", plane.kubeconfig_path().display());
        println!("  logs: {}", plane.data_dir().display());
    }
    println!("cluster built in {cluster_time:.2?}; fabric netns {}", cluster.fabric_netns());
    for node in cluster.nodes() {
        println!("node {} netns {}  {} {}", node.name, node.netns, node.ipv4, node.ipv6);
    }
    for pod in cluster.pods() {
        println!(
            "pod {:5} netns {:28} {:13} {:20} on {} (host veth {}), k8s namespace {}",
            pod.id(),
            pod.netns,
            pod.ipv4,
            pod.ipv6,
            pod.node,
            pod.host_veth,
            cluster.k8s_namespace(&pod.namespace)
        );
    }
    let probe = probe_binary()?;
    if let (Some(from), Some(to)) = (cluster.pods().first(), cluster.pods().last()) {
        println!("try: ip netns exec {} {} connect --to {} --tcp 80", from.netns, probe.display(), to.ipv4);
    }
    println!("Ctrl-C tears everything down.");
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
