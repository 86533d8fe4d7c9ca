//! Condition types and reasons Palisade writes, on ClusterNetworkPolicy `status.conditions` and
//! on PolicyStatus. Shared by the operator and the tests so both spell them the same way.
//!
//! Types on the upstream-owned CNP carry our domain prefix: upstream defines no condition types,
//! and other implementations may write theirs on the same object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The policy was read, validated and compiled (False: the message names the offending field).
pub const ACCEPTED: &str = "palisade.dev/Accepted";
/// Every node that must enforce the policy enforces its current generation.
pub const REALIZED: &str = "palisade.dev/Realized";
/// ClusterNetworkPolicy only: it ties (same tier and priority) with another one in force and
/// the two decide some traffic differently; the message is the admission webhook's explanation.
/// The dataplane still decides such a tie the same way everywhere: by name.
pub const CONFLICTING: &str = "palisade.dev/Conflicting";
/// PolicyStatus only: Accepted and Realized are both True. Unprefixed, as kstatus-style tools
/// and the `Ready` printer column expect.
pub const READY: &str = "Ready";

pub const STATUS_TRUE: &str = "True";
pub const STATUS_FALSE: &str = "False";
pub const STATUS_UNKNOWN: &str = "Unknown";

pub mod reasons {
    //! Reasons (CamelCase, as the Condition schema requires).

    /// Accepted=True.
    pub const ACCEPTED: &str = "Accepted";
    /// Accepted=False: a field is invalid (the message names it).
    pub const INVALID: &str = "Invalid";
    /// Accepted=False: a value this version does not know (newer CRD); enforced fail-closed.
    pub const UNSUPPORTED: &str = "Unsupported";
    /// Accepted=True with a caveat, e.g. `domainNames` peers, which match no traffic here.
    pub const PARTIALLY_SUPPORTED: &str = "PartiallySupported";
    /// Realized=True / Ready=True.
    pub const REALIZED: &str = "Realized";
    /// Realized=False: some nodes have not reported the current generation yet.
    pub const PENDING: &str = "Pending";
    /// Realized=False: some nodes failed to enforce it (see `firstErrors`).
    pub const FAILED: &str = "Failed";
    /// Conflicting=True.
    pub const CONFLICTING: &str = "Conflicting";
    /// Conflicting=False.
    pub const NO_CONFLICT: &str = "NoConflict";
    /// Realized=True: no pod is selected, so there is nothing to enforce.
    pub const NO_SELECTED_PODS: &str = "NoSelectedPods";
}

/// Builds a condition. `now` is the transition time; callers keep the old condition's time when
/// the status did not change, as the Condition contract asks.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { STATUS_TRUE } else { STATUS_FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}
