//! The engine's analysis ([`palisade_engine::analysis`]) where users meet it: at the API
//! server's door as a validating admission webhook, and in CI as `palisade lint`.
//!
//! Both read objects the same way ([`objects`]) and ask the same questions, so a manifest that
//! lint passes is one the webhook admits, and a refusal reads the same in both.
//!
//! - [`objects`]: Kubernetes objects (JSON or YAML values) into the engine model, with
//!   field-path errors; the schema check for ClusterNetworkPolicies.
//! - [`lint`]: files, directories and stdin into findings with file and line; human, JSON and
//!   SARIF reports; exit codes.
//! - [`review`]: one AdmissionReview in, one decision out (pure).
//! - [`cache`]: the policies and objects the webhook compares a request with, from watches.
//! - [`server`]: `palisade webhook`: the TLS admission endpoint, probes and metrics.

pub mod cache;
pub mod lint;
pub mod objects;
pub mod review;
pub mod server;
