//! The plan stream: how the operator tells each node agent what to enforce, and how the agent
//! reports what it enforces. Version 1 is specified in `docs/protocol.md`; this crate is its only
//! implementation, used by both ends.
//!
//! Transport: one WebSocket per agent over TLS, at [`stream_path`], with the WebSocket
//! subprotocol [`SUBPROTOCOL`] and the agent's ServiceAccount token as a Bearer credential.
//! Each message is one JSON text frame. The operator sends a [`OperatorMessage::Snapshot`] first,
//! then [`OperatorMessage::Delta`]s; the agent answers each version it applied with
//! [`AgentMessage::Realized`] or [`AgentMessage::Failed`].

use palisade_engine::model::{PolicyRef, Revision};
use palisade_engine::plan::{NodePlan, PLAN_FORMAT_VERSION, PlanDelta};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The WebSocket subprotocol; a peer that does not offer it is refused.
pub const SUBPROTOCOL: &str = "palisade.dev.plan-stream.v1";

/// How often the operator pings each agent when it has nothing else to send, by default.
pub const DEFAULT_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long either end waits without receiving a frame (a ping, its pong, or a message) before
/// it takes the connection for dead and closes it, by default: three missed pings. The agent then
/// reconnects; the same bound caps every send, so a stuck peer never blocks the other end.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest message either end accepts: a node plan with tens of thousands of rules and members
/// fits many times over; anything larger is a bug or an attack and ends the connection.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Largest single WebSocket frame either end accepts.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Doubling delays between `initial` and `max`; [`Backoff::reset`] starts over. Both ends of the
/// stream retry with it: the agent's reconnects and plan retries, the operator's watches and
/// status writes.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: std::time::Duration,
    max: std::time::Duration,
    next: std::time::Duration,
}

impl Backoff {
    /// `initial` is capped at `max`.
    pub fn new(initial: std::time::Duration, max: std::time::Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff { initial, max, next: initial }
    }

    /// The delay before the next attempt; each call doubles the one after, up to the cap.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Where an agent subscribes for its node.
pub fn stream_path(node: &str) -> String {
    format!("/v1/nodes/{node}/plan")
}

/// Operator to agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OperatorMessage {
    /// The whole plan. Sent first on every connection, and whenever the operator cannot send a
    /// delta from what the agent has (for example after the agent failed to apply one).
    Snapshot { format: u32, version: u64, plan: NodePlan },
    /// Turns the plan at `base` into the plan at `version`. An agent whose plan is not at `base`
    /// reconnects to get a snapshot.
    Delta { format: u32, base: u64, version: u64, delta: PlanDelta },
}

/// Agent to operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AgentMessage {
    /// The kernel now enforces plan `version`; these are the policies in it.
    Realized { version: u64, policies: Vec<RealizedPolicy> },
    /// Plan `version` could not be applied; the previous rules stay in force.
    Failed { version: u64, error: String },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RealizedPolicy {
    pub policy: PolicyRef,
    pub revision: Revision,
}

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("message is not valid plan-stream JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("plan format {got} is not supported (this build reads format {supported})")]
    UnsupportedFormat { got: u32, supported: u32 },
}

impl OperatorMessage {
    pub fn snapshot(version: u64, plan: NodePlan) -> Self {
        OperatorMessage::Snapshot { format: PLAN_FORMAT_VERSION, version, plan }
    }

    pub fn delta(base: u64, version: u64, delta: PlanDelta) -> Self {
        OperatorMessage::Delta { format: PLAN_FORMAT_VERSION, base, version, delta }
    }

    /// Parses a frame and refuses plan formats this build does not understand.
    pub fn decode(text: &str) -> Result<Self, ProtocolError> {
        let message: OperatorMessage = serde_json::from_str(text)?;
        let format = match &message {
            OperatorMessage::Snapshot { format, .. } | OperatorMessage::Delta { format, .. } => *format,
        };
        if format != PLAN_FORMAT_VERSION {
            return Err(ProtocolError::UnsupportedFormat { got: format, supported: PLAN_FORMAT_VERSION });
        }
        Ok(message)
    }
}

impl AgentMessage {
    pub fn decode(text: &str) -> Result<Self, ProtocolError> {
        Ok(serde_json::from_str(text)?)
    }
}

/// Serializes any message of the protocol as one text frame.
pub fn encode<T: Serialize>(message: &T) -> String {
    // The protocol's types are plain data whose map keys all serialize as strings (pod keys as
    // `namespace/name`), so serialization cannot fail; the fallback keeps a bug from panicking.
    serde_json::to_string(message).unwrap_or_else(|error| format!("{{\"type\":\"EncodeError\",\"error\":\"{error}\"}}"))
}

/// The policies a plan enforces, for the agent's realization report.
pub fn policies_in(plan: &NodePlan) -> Vec<RealizedPolicy> {
    let mut policies: Vec<RealizedPolicy> = plan
        .rule_sets
        .values()
        .map(|set| RealizedPolicy { policy: set.policy.clone(), revision: set.revision.clone() })
        .collect();
    policies.sort();
    policies.dedup();
    policies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), std::time::Duration::from_millis(100));
    }
}
