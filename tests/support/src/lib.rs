//! # palisade-testkit: the test platform
//!
//! Three pieces that later tests (agent dataplane, operator end-to-end, the netpol matrix,
//! `make demo`) are built on:
//!
//! * [`ControlPlane`]: a real etcd + kube-apiserver (envtest model) with RBAC on, certificates made
//!   in-process, admin/token/user clients, kubeconfigs, TokenRequest and CRD installation.
//! * [`NetCluster`]: nodes and pods as network namespaces, wired like Calico (veth per pod, /32 and
//!   /128 routes, proxy ARP, link-local gateways), every pod running `palisade-probe` servers, with a
//!   concurrent connectivity [`Reachability`] matrix and an optional kube-proxy-like ClusterIP DNAT.
//!   [`NetCluster::register`] mirrors it into an apiserver as Node and Pod objects, and
//!   [`NetCluster::expose_apiserver`] makes the apiserver reachable from inside node and pod
//!   namespaces at [`APISERVER_SERVICE_IP`], for agents run with `ip netns exec`.
//! * [`RealCluster`]: the real cluster of `make cluster` (kubelets, containerd, kube-proxy; nodes
//!   as namespaces), for what only real pods show: the chart, images, Services, upgrades.
//!
//! ```no_run
//! # async fn demo() -> palisade_testkit::Result<()> {
//! use palisade_testkit::{ClusterSpec, ControlPlane, Family, NetCluster, Port};
//! let plane = ControlPlane::shared().await?;          // one per test binary
//! let cluster = NetCluster::build(ClusterSpec::netpol_matrix())?; // x,y,z × a,b,c on 2 nodes
//! cluster.register(&plane.admin_client()?).await?;
//! let matrix = cluster.probe_matrix(Port::tcp(80), Family::V4).await?;
//! matrix.assert_matches(|_from, _to| true);
//! # Ok(()) }
//! ```
//!
//! ## What an apiserver-only cluster does not do
//! There is no controller-manager, scheduler or kubelet, and the testkit does not pretend otherwise:
//! * **Namespaces never finish terminating** (no namespace controller), and a name cannot be reused:
//!   use [`ControlPlane::unique_namespace`]; [`NetCluster`] names its namespaces
//!   `<logical>-<pid>-<run>` (see [`NetCluster::k8s_namespace`]) and labels them `ns=<logical>`.
//! * **No `default` ServiceAccount** and no token controller: the `ServiceAccount` admission plugin is
//!   disabled so pods can be created; [`ControlPlane::service_account_token`] creates the SA and
//!   uses the TokenRequest API.
//! * **Pods are never scheduled or started**: set `spec.nodeName` yourself; [`mark_pod_running`]
//!   patches the status subresource (Running, Ready, podIP(s), hostIP(s)) as a kubelet would.
//! * **No garbage collection**: ownerReferences never cascade; delete children explicitly and assert
//!   on ownerRefs, not on deletion.
//! * No EndpointSlice controller (Services get ClusterIPs from [`SERVICE_CIDR`], no endpoints), and
//!   the aggregated `admin`/`edit`/`view` ClusterRoles are empty: bind explicit roles.
//!
//! ## Lifetimes and cleanup
//! Child processes are forked from one long-lived keeper thread with `PDEATHSIG=SIGKILL`, in their
//! own process group, killed on `Drop` (also while unwinding from a panic). Temp dirs and process
//! groups are recorded under `$TMPDIR/palisade-testkit-state`, and namespaces are named
//! `pal-<pid>-...`; the next start removes whatever a dead process left behind.
//! `kube::Client`s are bound to the runtime that created them, so the client constructors return a
//! fresh client per call.
//!
//! ## Locating `palisade-probe`
//! See [`probe_binary`]: `$PALISADE_PROBE_BIN`, else next to the test executable (cargo builds the
//! package's binaries for its integration tests and for `cargo test --workspace`); see
//! [`workspace_binary`].
//!
//! ## Requirements
//! Network-namespace features need root, `ip` (iproute2) and `iptables`; they fail with
//! [`Error::NotRoot`] rather than skipping. The control plane needs `KUBEBUILDER_ASSETS`
//! (`make test-assets`).

mod cluster;
mod control_plane;
mod error;
mod keeper;
mod matrix;
pub mod netns;
mod pki;
pub mod probe;
mod process;
mod real_cluster;

pub use cluster::{
    ClusterSpec, Family, NetCluster, Node, NodeSpec, POD_GATEWAY_V4, POD_GATEWAY_V6, Pod, PodSpec, Port,
    mark_pod_running, probe_binary,
};
pub use control_plane::{
    APISERVER_SERVICE_IP, ControlPlane, ControlPlaneOptions, PlaneProcess, SERVICE_CIDR, assets_dir, write_private,
};
pub use error::{Error, Result};
pub use matrix::{MatrixDiff, Mismatch, Reachability};
pub use pki::serving_certificate;
pub use probe::{DEFAULT_PROBE_TIMEOUT, ProbeOutcome, Protocol, connection_rate_blocking};
pub use process::{ManagedProcess, log_tail, workspace_binary};
pub use real_cluster::{IMAGES, RealCluster, images_dir, repository_root};
