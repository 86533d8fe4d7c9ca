//! Palisade's node agent dataplane: a per-node [`NodePlan`](palisade_engine::plan::NodePlan)
//! becomes iptables chains and ipsets.
//!
//! - [`names`]: families, chain and set names: what both the renderer and the ipset code name.
//! - [`render`]: pure rendering of a plan into chains (per family) and ipsets; the chain layout is
//!   documented there.
//! - [`ipset`]: desired sets, reading `ipset save` back, and the member-level diff.
//! - [`drift`]: reading our chains back from `iptables-save` and the minimal restore transaction.
//! - [`apply`]: the [`Applier`] running those batches in order, with metrics and cleanup.
//! - [`exec`]: running the tools, optionally inside a network namespace.
//! - [`backend`]: which iptables backend (legacy or nft) the node uses.
//!
//! The agent process on top of the dataplane:
//! - [`runtime`]: [`run`] and [`Agent`]: persisted plan first, then the operator's stream, drift
//!   repair on a timer, health and metrics.
//! - [`stream`]: the agent's end of the plan stream (TLS, token, versions).
//! - [`enforcer`]: the single owner of the [`Applier`]: render, sync, persist, publish status.
//! - [`state`]: the persisted plan.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//!
//! Everything we own is named `PAL-*` (chains) or `pal4-*`/`pal6-*` (sets) and every rule we write
//! carries a `pal:<hash>` comment; nothing else is ever modified.

pub mod apply;
pub mod backend;
pub mod drift;
pub mod enforcer;
pub mod exec;
pub mod health;
pub mod ipset;
pub mod ipset_netlink;
pub mod names;
pub mod render;
pub mod runtime;
pub mod state;
pub mod stream;

pub use apply::{Applier, ApplyConfig, ApplyError, Metrics, SyncReport};
pub use exec::Binaries;
pub use ipset::DesiredIpSets;
pub use names::Family;
pub use render::{RenderConfig, Rendered, render};
pub use runtime::{Agent, AgentConfig, AgentError, run};
