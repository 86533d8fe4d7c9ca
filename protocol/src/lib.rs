//! The plan stream: how the operator tells each node agent what to enforce, and how the agent
//! reports what it enforces. Versions 1 and 2 are specified in `docs/protocol.md`; this crate is
//! their only implementation, used by both ends.
//!
//! Transport: one WebSocket per agent over TLS, at [`stream_path`], with a WebSocket subprotocol
//! naming the version ([`StreamVersion`]; the agent offers every version it speaks, the operator
//! picks the newest it speaks too) and the agent's ServiceAccount token as a Bearer credential.
//! Each message is one JSON text frame. The operator sends a [`OperatorMessage::Snapshot`] first,
//! then [`OperatorMessage::Delta`]s; the agent answers each version it applied with
//! [`AgentMessage::Realized`] or [`AgentMessage::Failed`].

use palisade_engine::model::{PolicyRef, Revision};
use palisade_engine::plan::{NodePlan, PLAN_FORMAT_VERSION, PlanDelta};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A version of the plan stream, negotiated as the WebSocket subprotocol. A peer that offers
/// none this build speaks is refused.
///
/// - V1: deltas replace changed groups whole.
/// - V2: deltas patch the members of groups the node keeps (`PlanDelta::patched_groups`), and
///   each plan message carries the time it was sent (`sent_at_us`), for stage timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamVersion {
    V1,
    V2,
}

impl StreamVersion {
    /// Newest first: what an agent offers, and the operator's order of preference.
    pub const ALL: [StreamVersion; 2] = [StreamVersion::V2, StreamVersion::V1];

    pub fn subprotocol(self) -> &'static str {
        match self {
            StreamVersion::V1 => "palisade.dev.plan-stream.v1",
            StreamVersion::V2 => "palisade.dev.plan-stream.v2",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<StreamVersion> {
        StreamVersion::ALL.into_iter().find(|version| version.subprotocol() == name.trim())
    }

    /// The newest of `offered` (subprotocol names, in any order) that this build speaks.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<StreamVersion> {
        offered.into_iter().filter_map(StreamVersion::from_subprotocol).max()
    }
}

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
    Snapshot {
        format: u32,
        version: u64,
        plan: NodePlan,
        /// V2: when the operator sent it, in microseconds since the Unix epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_at_us: Option<u64>,
    },
    /// Turns the plan at `base` into the plan at `version`. An agent whose plan is not at `base`
    /// reconnects to get a snapshot.
    Delta {
        format: u32,
        base: u64,
        version: u64,
        delta: PlanDelta,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_at_us: Option<u64>,
    },
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
        OperatorMessage::Snapshot { format: PLAN_FORMAT_VERSION, version, plan, sent_at_us: None }
    }

    pub fn delta(base: u64, version: u64, delta: PlanDelta) -> Self {
        OperatorMessage::Delta { format: PLAN_FORMAT_VERSION, base, version, delta, sent_at_us: None }
    }

    /// Stamps the message with the time it is sent (V2).
    pub fn sent_now(mut self) -> Self {
        let now = unix_micros();
        match &mut self {
            OperatorMessage::Snapshot { sent_at_us, .. } | OperatorMessage::Delta { sent_at_us, .. } => {
                *sent_at_us = Some(now)
            }
        }
        self
    }

    pub fn sent_at_us(&self) -> Option<u64> {
        match self {
            OperatorMessage::Snapshot { sent_at_us, .. } | OperatorMessage::Delta { sent_at_us, .. } => *sent_at_us,
        }
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

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
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
    fn the_newest_version_both_ends_speak_is_chosen() {
        let v1 = StreamVersion::V1.subprotocol();
        let v2 = StreamVersion::V2.subprotocol();
        assert_eq!(StreamVersion::negotiate([v1, v2]), Some(StreamVersion::V2));
        assert_eq!(StreamVersion::negotiate([v1]), Some(StreamVersion::V1));
        assert_eq!(StreamVersion::negotiate(["palisade.dev.plan-stream.v9", v1]), Some(StreamVersion::V1));
        assert_eq!(StreamVersion::negotiate(["chat"]), None);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), std::time::Duration::from_millis(100));
    }
}
