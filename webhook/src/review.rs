//! One AdmissionReview in, one out: the webhook's decision, with no I/O.
//!
//! - DELETE, kinds other than the two policy kinds, and dry runs of those are judged like any
//!   other request (a dry run must give the same answer as the real one); DELETE is always
//!   admitted.
//! - The candidate is compared with the cluster's other policies, never with its own older
//!   version; on UPDATE a conflict the old version already had is a warning, not a refusal.
//! - Errors refuse the request with HTTP 403 and every error's explanation (in `warn` mode they
//!   become warnings); warnings are returned as admission warnings, which kubectl prints.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use palisade_engine::analysis::{self, Finding, Severity};
use serde_json::Value;

use crate::cache::Contents;
use crate::objects::{self, Object};

/// What to do with contradictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictMode {
    /// Refuse (HTTP 403) a request whose policy has errors.
    Reject,
    /// Admit it, and return the errors as warnings.
    Warn,
}

/// How a request was answered, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Warned,
    Denied,
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A request that is not an AdmissionReview this webhook can answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

/// Decodes a request body into the review's request.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, BadReview> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|error| BadReview(format!("not an AdmissionReview: {error}")))?;
    review.try_into().map_err(|error| BadReview(format!("an AdmissionReview without a usable request: {error}")))
}

/// A finding as one line for kubectl: `spec.ingress[0]: message`.
fn line(finding: &Finding) -> String {
    format!("{}: {}: {}", finding.policy, finding.field, finding.message)
}

/// Judges one request against the cache's contents.
pub fn judge(
    request: &AdmissionRequest<DynamicObject>,
    contents: &Contents,
    mode: ConflictMode,
) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(request);
    if request.operation == Operation::Delete {
        return (response, Outcome::Allowed);
    }
    let Some(object) = &request.object else {
        return (response, Outcome::Allowed);
    };
    let namespace = request.namespace.as_deref().unwrap_or("default");
    let read = |object: &DynamicObject| -> Result<Option<palisade_engine::model::Policy>, String> {
        let value: Value = serde_json::to_value(object).map_err(|error| error.to_string())?;
        match objects::read(&value, namespace) {
            Ok(Object::Policy(policy)) => Ok(Some(policy)),
            Ok(_) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    };
    let candidate = match read(object) {
        Ok(Some(candidate)) => candidate,
        Ok(None) => return (response, Outcome::Allowed),
        Err(message) => return (refuse(response, message, 422, "Invalid"), Outcome::Denied),
    };
    // An old version that cannot be read is no baseline: the update is judged as a creation.
    let previous = request.old_object.as_ref().and_then(|old| read(old).ok().flatten());
    let findings =
        analysis::admission(&candidate, previous.as_ref(), contents.neighbours_of(&candidate), Some(&contents.cluster));
    let errors: Vec<String> = findings.iter().filter(|f| f.severity == Severity::Error).map(line).collect();
    let mut warnings: Vec<String> = findings.iter().filter(|f| f.severity == Severity::Warning).map(line).collect();
    if !errors.is_empty() && mode == ConflictMode::Reject {
        let message = format!("Palisade refuses this policy: {}", errors.join("; "));
        let mut refused = refuse(response, message, 403, "Forbidden");
        refused.warnings = (!warnings.is_empty()).then_some(warnings);
        return (refused, Outcome::Denied);
    }
    warnings.extend(errors.iter().map(|error| format!("would be refused: {error}")));
    if warnings.is_empty() {
        return (response, Outcome::Allowed);
    }
    let mut admitted = response;
    admitted.warnings = Some(warnings);
    (admitted, Outcome::Warned)
}

fn refuse(response: AdmissionResponse, message: String, code: u16, reason: &str) -> AdmissionResponse {
    let mut refused = response.deny(message);
    refused.result.code = code;
    refused.result.reason = reason.to_string();
    refused
}
