//! The plan stream server (`docs/protocol.md`), and the plain-HTTP probes and metrics.
//!
//! Every replica serves streams: plans come from the replica's own index, so an agent can use
//! any replica. Per connection: one Snapshot, then the node feed's deltas after what this
//! connection sent last ([`crate::distribute`]), shared with every other connection of the node;
//! a connection that fell behind the feed's log gets one Snapshot instead. A V1 agent (an agent
//! not yet upgraded) is sent the same deltas with patched groups replaced whole, from a copy of
//! its plan this connection keeps. Realization reports go to the realization table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use palisade_engine::plan::{NodePlan, PlanDelta};
use palisade_protocol::{AgentMessage, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, OperatorMessage, StreamVersion};
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator};
use crate::distribute::{NodeFeed, SharedDistribution};
use crate::metrics::{Metrics, Stage, render};
use crate::realization::{Outbox, RealizationTable};
use crate::writes::DirtyPolicies;

/// What the stream handlers share.
#[derive(Clone)]
pub struct StreamState {
    pub distribution: Arc<SharedDistribution>,
    pub realization: Arc<RealizationTable>,
    /// Reports to share with the other replicas (the leader writes status from them).
    pub outbox: Arc<Outbox>,
    pub dirty: Arc<DirtyPolicies>,
    pub authenticator: Arc<Authenticator>,
    pub metrics: Metrics,
    /// Liveness (`docs/protocol.md`): ping this often, drop a connection silent for `idle_timeout`.
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub shutdown: CancellationToken,
}

pub fn stream_router(state: StreamState) -> Router {
    Router::new().route("/v1/nodes/{node}/plan", get(subscribe)).with_state(state)
}

async fn subscribe(
    Path(node): Path<String>,
    headers: HeaderMap,
    State(state): State<StreamState>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let offered: Vec<String> = upgrade
        .requested_protocols()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|protocol| protocol.trim().to_owned())
        .collect();
    let Some(version) = StreamVersion::negotiate(offered.iter().map(String::as_str)) else {
        state.metrics.refused_subscriptions.inc();
        let known: Vec<&str> = StreamVersion::ALL.iter().map(|version| version.subprotocol()).collect();
        return (StatusCode::BAD_REQUEST, format!("a WebSocket subprotocol of {known:?} is required\n"))
            .into_response();
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if let Err(error) = state.authenticator.authorize(authorization, &node).await {
        state.metrics.refused_subscriptions.inc();
        tracing::info!(%node, %error, "plan subscription refused");
        let status = match error {
            AuthError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        return (status, format!("{error}\n")).into_response();
    }
    let upgrade = upgrade.max_message_size(MAX_MESSAGE_BYTES).max_frame_size(MAX_FRAME_BYTES);
    upgrade.protocols([version.subprotocol()]).on_upgrade(move |socket| async move {
        state.metrics.connected_agents.inc();
        tracing::info!(%node, protocol = version.subprotocol(), "agent connected");
        if let Err(error) = serve_agent(socket, &node, version, &state).await {
            tracing::info!(%node, %error, "agent stream ended");
        }
        state.metrics.connected_agents.dec();
    })
}

/// Why an agent's stream ended, other than the agent leaving.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error(transparent)]
    Socket(#[from] axum::Error),
    #[error("nothing received for {0:?} (no pong, no report): the connection is dead or the agent is stuck")]
    Silent(Duration),
    #[error("a send did not complete within {0:?}: the agent does not read")]
    SendTimedOut(Duration),
    #[error("assembling the node's plan failed: {0}")]
    Internal(String),
}

/// Streams `node`'s plan until the agent leaves, falls silent, or the operator shuts down.
async fn serve_agent(
    mut socket: WebSocket,
    node: &str,
    version: StreamVersion,
    state: &StreamState,
) -> Result<(), StreamEnd> {
    // A plan from an incomplete index could drop rules or peers; wait for the first full sync.
    let mut ready = state.distribution.ready();
    let became_ready = tokio::select! {
        _ = state.shutdown.cancelled() => false,
        result = ready.wait_for(|ready| *ready) => result.is_ok(),
    };
    if !became_ready {
        return Ok(socket.send(Message::Close(None)).await?);
    }
    let (mut stream, plan) = NodeStream::open(node, version, state).await?;
    stream.send_snapshot(&mut socket, Some(plan), state).await?;
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + state.ping_interval, state.ping_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_received = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(socket.send(Message::Close(None)).await?),
            _ = tokio::time::sleep_until(last_received + state.idle_timeout) => {
                let _ = tokio::time::timeout(state.ping_interval, socket.send(Message::Close(None))).await;
                return Err(StreamEnd::Silent(state.idle_timeout));
            }
            _ = pings.tick() => send_frame(&mut socket, Message::Ping(Default::default()), state).await?,
            changed = stream.feed.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                stream.send_news(&mut socket, state).await?;
            }
            message = socket.recv() => match message.inspect(|_| last_received = tokio::time::Instant::now()) {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Text(text))) => match AgentMessage::decode(text.as_str()) {
                    Ok(AgentMessage::Realized { policies, .. }) => {
                        let changed = state.realization.realized(node, policies);
                        state.dirty.mark(changed);
                        share(node, state);
                    }
                    Ok(AgentMessage::Failed { version: reported, error }) => {
                        tracing::warn!(%node, version = reported, %error, "agent failed to apply a plan");
                        let mut changed = state.realization.failed(node, error);
                        changed.extend(state.distribution.index().lock().engine().policies_on(node));
                        state.dirty.mark(changed);
                        share(node, state);
                        // The agent's plan is not at our last version: the next change goes out
                        // as a snapshot, which the agent can always apply from.
                        stream.snapshot_next = true;
                    }
                    Err(error) => tracing::warn!(%node, %error, "ignoring an unreadable agent message"),
                },
                // Pongs prove liveness (counted below); binary frames are not part of the protocol.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One connection's place in its node's feed.
struct NodeStream {
    node: String,
    version: StreamVersion,
    feed: tokio::sync::watch::Receiver<Arc<NodeFeed>>,
    /// The feed version this connection sent last.
    sent: u64,
    /// V1 only: the agent's plan as of `sent`, to send patched groups whole.
    v1_plan: Option<NodePlan>,
    snapshot_next: bool,
}

impl NodeStream {
    /// The connection, and the plan its first snapshot sends.
    async fn open(
        node: &str,
        version: StreamVersion,
        state: &StreamState,
    ) -> Result<(NodeStream, NodePlan), StreamEnd> {
        let (feed, sent, plan) = snapshot(node, state).await?;
        let stream = NodeStream { node: node.to_owned(), version, feed, sent, v1_plan: None, snapshot_next: false };
        Ok((stream, plan))
    }

    /// Sends `plan`, or (`None`) the node's plan as it is now.
    async fn send_snapshot(
        &mut self,
        socket: &mut WebSocket,
        plan: Option<NodePlan>,
        state: &StreamState,
    ) -> Result<(), StreamEnd> {
        let plan = match plan {
            Some(plan) => plan,
            None => {
                let (feed, sent, plan) = snapshot(&self.node, state).await?;
                (self.feed, self.sent) = (feed, sent);
                plan
            }
        };
        // Versions already in the feed are in the snapshot.
        self.feed.borrow_and_update();
        if self.version == StreamVersion::V1 {
            self.v1_plan = Some(plan.clone());
        }
        send(socket, &self.stamp(OperatorMessage::snapshot(self.sent, plan)), state).await?;
        self.snapshot_next = false;
        Ok(())
    }

    /// Sends what the feed published after `sent`: its deltas, or one snapshot when the feed's
    /// log no longer reaches back (or the agent failed to apply what it had).
    async fn send_news(&mut self, socket: &mut WebSocket, state: &StreamState) -> Result<(), StreamEnd> {
        let entries = self.feed.borrow_and_update().since(self.sent);
        let Some(entries) = entries.filter(|_| !self.snapshot_next) else {
            return self.send_snapshot(socket, None, state).await;
        };
        for entry in entries {
            let delta = match (&self.version, self.v1_plan.as_mut()) {
                (StreamVersion::V1, Some(plan)) => {
                    if let Err(error) = entry.delta.apply(plan) {
                        tracing::warn!(node = %self.node, %error, "a feed delta does not fit this connection's plan; sending a snapshot");
                        return self.send_snapshot(socket, None, state).await;
                    }
                    entry.delta.without_patches(plan)
                }
                _ => PlanDelta::clone(&entry.delta),
            };
            let message = OperatorMessage::delta(self.sent, entry.version, delta);
            send(socket, &self.stamp(message), state).await?;
            state.metrics.observe(Stage::Sent, entry.published.elapsed());
            self.sent = entry.version;
        }
        Ok(())
    }

    fn stamp(&self, message: OperatorMessage) -> OperatorMessage {
        match self.version {
            StreamVersion::V1 => message,
            StreamVersion::V2 => message.sent_now(),
        }
    }
}

/// The node's feed and plan, assembled off the async workers (it is engine work).
async fn snapshot(
    node: &str,
    state: &StreamState,
) -> Result<(tokio::sync::watch::Receiver<Arc<NodeFeed>>, u64, NodePlan), StreamEnd> {
    let (distribution, node) = (state.distribution.clone(), node.to_owned());
    tokio::task::spawn_blocking(move || distribution.snapshot(&node))
        .await
        .map_err(|error| StreamEnd::Internal(error.to_string()))
}

/// Queues `node`'s realization for its ConfigMap (written only if it changed).
fn share(node: &str, state: &StreamState) {
    if let Some(realization) = state.realization.get(node) {
        state.outbox.publish(node, realization);
    }
}

async fn send(socket: &mut WebSocket, message: &OperatorMessage, state: &StreamState) -> Result<(), StreamEnd> {
    send_frame(socket, Message::Text(palisade_protocol::encode(message).into()), state).await?;
    state.metrics.plan_sends.inc();
    Ok(())
}

/// One frame, bounded by the idle timeout: an agent that stops reading fills its TCP window, and
/// a send must not wait on it forever.
async fn send_frame(socket: &mut WebSocket, frame: Message, state: &StreamState) -> Result<(), StreamEnd> {
    match tokio::time::timeout(state.idle_timeout, socket.send(frame)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StreamEnd::SendTimedOut(state.idle_timeout)),
    }
}

// ---------------------------------------------------------------------------------------------
// Probes and metrics (plain HTTP, separate port)
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct ProbeState {
    distribution: Arc<SharedDistribution>,
    authenticator: Arc<Authenticator>,
    registry: Arc<prometheus_client::registry::Registry>,
}

pub fn probe_router(
    distribution: Arc<SharedDistribution>,
    authenticator: Arc<Authenticator>,
    metrics: &Metrics,
) -> Router {
    let state = ProbeState { distribution, authenticator, registry: Arc::new(metrics.registry()) };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Ready when plans can be served: the index synced, and agents can be authenticated.
async fn readyz(State(state): State<ProbeState>) -> Response {
    if !*state.distribution.ready().borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the index has not synced yet\n").into_response();
    }
    match state.authenticator.unable() {
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
        None => (StatusCode::OK, "ok\n").into_response(),
    }
}

async fn metrics_text(State(state): State<ProbeState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], render(&state.registry))
        .into_response()
}

/// Binds a listener now, so the caller knows the address (port 0 picks a free one) before
/// anything is served.
pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
