//! Palisade's policy engine: the exact semantics of NetworkPolicy v1 and ClusterNetworkPolicy
//! v1alpha2, with no I/O, no async and no Kubernetes types.
//!
//! - [`model`]: the cluster and the policies as the adapters hand them in.
//! - [`plan`]: what one node must enforce; the contract with the agent.
//! - [`verdict`]: flows and verdicts, shared by the reference evaluator and the plan evaluator.

pub mod model;
pub mod plan;
pub mod verdict;
