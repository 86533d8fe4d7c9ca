//! Palisade's policy engine: the exact semantics of NetworkPolicy v1 and ClusterNetworkPolicy
//! v1alpha2, with no I/O, no async and no Kubernetes types.
//!
//! Read top-down:
//! - [`model`]: the cluster and the policies as the adapters hand them in.
//! - [`error`]: typed policy errors and warnings that name the object and the field.
//! - [`selector`]: label selector matching and validation (Kubernetes semantics).
//! - [`validate`]: judging a policy and normalizing it (defaults, CIDRs, ports, fail-closed).
//! - [`verdict`]: flows and verdicts, shared by the reference evaluator and the plan evaluator.
//! - [`analysis`]: what holds for a policy in every possible cluster (for admission and lint).
//! - [`reference`]: the plain evaluator written from the specification on the raw model, the yardstick.
//! - [`plan`]: what one node must enforce; the contract with the agent, and plan deltas.
//! - [`groups`]: content-addressed group definitions and their ids.
//! - [`compile`]: the [`compile::Engine`] (incremental) and [`compile::compile`] (full).
//! - [`views`]: node plans kept materialized, and the per-node changes handed to distribution.
//! - [`evaluate`]: judging a flow with node plans, as the dataplane does.
//!
//! The engine's contract is `evaluate(compile(cluster, policies)) == reference::verdict(...)`
//! for every flow, which the property tests check.

pub mod analysis;
pub mod compile;
pub mod error;
pub mod evaluate;
pub mod groups;
mod index;
pub mod model;
pub mod plan;
pub mod reference;
pub mod selector;
pub mod validate;
pub mod verdict;
pub mod views;

pub use compile::{Compiled, Delta, Enforcement, Engine, compile};
pub use error::{PolicyError, PolicyWarning};
pub use evaluate::{PlanEvaluator, evaluate};
pub use views::PlanChanges;
