//! Upstream network policy conformance suites as data, so the same cases run against Palisade's
//! engine (`tests/engine.rs`, no cluster) and, later, end to end against a real API server and
//! real packets.
//!
//! - [`model`]: the cluster a suite needs (namespaces, pods, ports, nodes) and the probes.
//! - [`reachability`]: expected connectivity grids, built like upstream's `Reachability`.
//! - [`case`]: the case format: [`Suite`] → [`Case`] → [`Step`]s (apply, delete, relabel, expect).
//! - [`netpol`]: kubernetes/kubernetes `test/e2e/network/netpol` ("Netpol").
//! - [`cnp`]: kubernetes-sigs/network-policy-api `conformance/` (ClusterNetworkPolicy v1alpha2).
//!
//! A runner, real or pure, does for each case: create the suite's model with no policies; for
//! each step, in order, change the cluster (resolving objects with [`Object::resolve`]) or, for
//! [`Step::Expect`], wait for convergence and compare every asserted cell. Cases are independent.

pub mod builder;
pub mod case;
pub mod cnp;
pub mod k8s;
pub mod model;
pub mod netpol;
pub mod reachability;

pub use case::{Assertion, Case, Environment, Expectation, Object, ObjectRef, ResolveError, Step, Suite};
pub use model::{ContainerPort, Model, ModelNamespace, ModelNode, ModelPod, PodId, Probe, Protocol};
pub use reachability::{Comparison, Mismatch, Peer, Reachability};

/// Every suite, in a fixed order.
pub fn suites() -> Vec<Suite> {
    vec![netpol::suite(), cnp::suite()]
}
