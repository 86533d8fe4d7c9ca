//! Typed problems found in a policy. Every problem names the policy and the field, so the
//! operator's status and the future admission webhook can point the user at the exact spot.

use thiserror::Error;

use crate::model::PolicyRef;

/// A policy the engine refuses to enforce. Validation returns all of them, not just the first.
#[derive(Clone, Debug, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
#[error("{policy}: {field}: {message}")]
pub struct PolicyError {
    pub policy: PolicyRef,
    /// JSON-path-like location, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    pub message: String,
}

/// A valid policy that will not do what it seems to say (for example `domainNames`, which
/// Palisade cannot enforce and which therefore matches nothing).
#[derive(Clone, Debug, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
#[error("{policy}: {field}: {message}")]
pub struct PolicyWarning {
    pub policy: PolicyRef,
    pub field: String,
    pub message: String,
}
