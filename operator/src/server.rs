//! The plan stream server (`docs/protocol.md`), and the plain-HTTP probes and metrics.
//!
//! Every replica serves streams: plans come from the replica's own index, so an agent can use
//! any replica. Per connection: one Snapshot, then Deltas computed between what this connection
//! last sent and the newest plan, so whatever the agent missed while busy is folded into one
//! message. Realization reports go to the realization table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use palisade_engine::plan::NodePlan;
use palisade_protocol::{AgentMessage, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, OperatorMessage, SUBPROTOCOL};
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator};
use crate::distribute::SharedDistribution;
use crate::metrics::{Metrics, render};
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
    let offers_protocol = upgrade
        .requested_protocols()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == SUBPROTOCOL);
    if !offers_protocol {
        state.metrics.refused_subscriptions.inc();
        return (StatusCode::BAD_REQUEST, format!("the WebSocket subprotocol {SUBPROTOCOL} is required\n"))
            .into_response();
    }
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
    upgrade.protocols([SUBPROTOCOL]).on_upgrade(move |socket| async move {
        state.metrics.connected_agents.inc();
        tracing::info!(%node, "agent connected");
        if let Err(error) = serve_agent(socket, &node, &state).await {
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
}

/// Streams `node`'s plan until the agent leaves, falls silent, or the operator shuts down.
async fn serve_agent(mut socket: WebSocket, node: &str, state: &StreamState) -> Result<(), StreamEnd> {
    // A plan from an incomplete index could drop rules or peers; wait for the first full sync.
    let mut ready = state.distribution.ready();
    let became_ready = tokio::select! {
        _ = state.shutdown.cancelled() => false,
        result = ready.wait_for(|ready| *ready) => result.is_ok(),
    };
    if !became_ready {
        return Ok(socket.send(Message::Close(None)).await?);
    }
    let mut plans = state.distribution.subscribe(node, &state.dirty);
    let mut sent: Arc<NodePlan> = plans.borrow_and_update().clone();
    let mut version: u64 = 1;
    send(&mut socket, &OperatorMessage::snapshot(version, (*sent).clone()), state).await?;
    // After a failed apply the agent's plan is not at our last version: the next change goes
    // out as a snapshot, which the agent can always apply from.
    let mut snapshot_next = false;
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
            changed = plans.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let newest = plans.borrow_and_update().clone();
                if snapshot_next {
                    version += 1;
                    send(&mut socket, &OperatorMessage::snapshot(version, (*newest).clone()), state).await?;
                    snapshot_next = false;
                } else {
                    let delta = NodePlan::diff(&sent, &newest);
                    if delta.is_empty() {
                        continue;
                    }
                    let base = version;
                    version += 1;
                    send(&mut socket, &OperatorMessage::delta(base, version, delta), state).await?;
                }
                sent = newest;
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
                        changed.extend(sent.rule_sets.values().map(|set| set.policy.clone()));
                        state.dirty.mark(changed);
                        share(node, state);
                        snapshot_next = true;
                    }
                    Err(error) => tracing::warn!(%node, %error, "ignoring an unreadable agent message"),
                },
                // Pongs prove liveness (counted below); binary frames are not part of v1.
                Some(Ok(_)) => {}
            },
        }
    }
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
