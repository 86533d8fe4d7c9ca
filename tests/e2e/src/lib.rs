//! # palisade-e2e: Palisade end to end
//!
//! Real components and real packets: a kube-apiserver with our CRDs and RBAC, the conformance
//! model's pods as network namespaces (testkit), two operator replicas and one agent per node as
//! `palisade` processes, and the upstream suites replayed against them.
//!
//! ```no_run
//! # async fn demo() -> palisade_e2e::Result<()> {
//! use palisade_e2e::Stack;
//! let suite = palisade_conformance::netpol::suite();
//! let mut stack = Stack::start(&suite.model).await?;   // apiserver, netns, operators, agents
//! for case in &suite.cases {
//!     let failures = stack.run_case(case).await;        // apply, relabel, probe until converged
//!     assert!(failures.is_empty(), "{failures:?}");
//!     stack.reset().await?;                              // policies gone, labels restored
//! }
//! # Ok(()) }
//! ```
//!
//! What stands in for what a real cluster has:
//! * the operator's Service is [`proxy::ServiceProxy`], a TCP proxy spreading agent connections
//!   over the live replicas;
//! * the agent DaemonSet's pods are Pod objects `palisade-agent-<node>` (host network, on their
//!   node), and each agent's token is a TokenRequest bound to its pod, so the operator's
//!   TokenReview sees the node;
//! * agents run in the root network namespace and program their node's (`--netns`).
//!
//! `palisade` is found as `$PALISADE_BIN` or next to the test executable, where
//! `cargo test --workspace` builds it (see [`process::palisade_binary`]). Needs root, iproute2,
//! iptables and `KUBEBUILDER_ASSETS`, like the testkit.

pub mod cluster;
pub mod error;
pub mod measure;
pub mod peers;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod rbac;
pub mod stack;

pub use cluster::ModelCluster;
pub use error::{Error, Result};
pub use stack::{LEASE_NAME, NodeAgent, OperatorReplica, Stack, StackOptions};
