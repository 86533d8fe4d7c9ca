//! The node agent process: enforce the persisted plan, follow the operator's plan stream, repair
//! drift on a timer, and serve health and metrics.
//!
//! Order at start: bind the health port, enforce the persisted plan (before any network call, so
//! enforcement never depends on the operator), then connect. Every stream error leads to a
//! reconnect with exponential backoff; a plan the kernel rejects is reported as `Failed` and
//! retried with backoff while the previous rules stay in force. Stopping leaves every rule in
//! force (fail static); only `palisade agent cleanup` removes them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use palisade_protocol::{AgentMessage, Backoff, OperatorMessage, StreamVersion, encode, policies_in, unix_micros};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::apply::{Applier, ApplyConfig};
use crate::backend::{self, Backend, Detection};
use crate::enforcer::Enforcer;
use crate::exec::{Binaries, Runner};
use crate::health::{self, Stage, Status};
use crate::render::{DEFAULT_MARK, RenderConfig};
use crate::state::PlanStore;
use crate::stream::{self, Endpoint, PlanSession, PlanStream, StreamError};

/// Everything the agent needs to run on one node.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: String,
    /// `host:port` or `wss://host:port` of the operator's plan-stream service.
    pub operator: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    /// Where the last enforced plan is persisted.
    pub state_dir: PathBuf,
    /// The node's own addresses: ingress from them (kubelet probes) is always allowed.
    pub node_ips: Vec<IpAddr>,
    /// The one mark bit the dataplane uses.
    pub mark: u32,
    /// Program this network namespace instead of the agent's own (`ip netns exec`); tests and the
    /// demo run agents in the root namespace for namespaced nodes. `None` on a real node.
    pub netns: Option<String>,
    /// Program ip6tables as well as iptables.
    pub ipv6: bool,
    pub binaries: Binaries,
    /// `None`: detect the backend the node uses ([`crate::backend`]); `Some`: use this one.
    pub iptables_backend: Option<Backend>,
    pub health_addr: SocketAddr,
    /// How often the kernel is read back and drift repaired.
    pub resync_interval: Duration,
    /// Longest wait between reconnects and between retries of a rejected plan.
    pub max_backoff: Duration,
    /// A plan stream that delivers nothing (not even the operator's pings) for this long is dead:
    /// the agent closes it and reconnects. Also the bound on every send and every connection attempt.
    pub stream_idle_timeout: Duration,
    /// Plan-stream versions offered, newest first (all by default; fewer to test an old agent).
    pub stream_versions: Vec<StreamVersion>,
}

impl AgentConfig {
    /// A configuration with the defaults of everything but the node's identity and its operator.
    pub fn new(node: impl Into<String>, operator: impl Into<String>) -> AgentConfig {
        AgentConfig {
            node: node.into(),
            operator: operator.into(),
            token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            ca_file: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into(),
            state_dir: "/var/lib/palisade".into(),
            node_ips: Vec::new(),
            mark: DEFAULT_MARK,
            netns: None,
            ipv6: true,
            binaries: Binaries::default(),
            iptables_backend: None,
            health_addr: SocketAddr::from(([0, 0, 0, 0], 9102)),
            resync_interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(10),
            stream_idle_timeout: palisade_protocol::DEFAULT_IDLE_TIMEOUT,
            stream_versions: StreamVersion::ALL.to_vec(),
        }
    }

    fn apply_config(&self) -> ApplyConfig {
        ApplyConfig {
            binaries: self.binaries.clone(),
            netns: self.netns.clone(),
            ipv6: self.ipv6,
            ..ApplyConfig::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] StreamError),
    #[error("cannot serve health on {addr}: {source}")]
    Health { addr: SocketAddr, source: std::io::Error },
    #[error("cannot wait for termination signals: {0}")]
    Signal(std::io::Error),
    #[error("agent task failed: {0}")]
    Task(String),
}

/// Runs the agent until SIGTERM or SIGINT, then stops and leaves the rules in force.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let agent = Agent::start(config).await?;
    wait_for_termination().await?;
    tracing::info!("stopping; the rules stay in force");
    agent.shutdown().await
}

async fn wait_for_termination() -> Result<(), AgentError> {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(AgentError::Signal)?;
    tokio::select! {
        _ = terminate.recv() => Ok(()),
        result = tokio::signal::ctrl_c() => result.map_err(AgentError::Signal),
    }
}

/// A running agent: its health address, its status, and a way to stop it.
pub struct Agent {
    health_addr: SocketAddr,
    status: Arc<Status>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Binds the health port and starts the agent's tasks; returns at once.
    pub async fn start(mut config: AgentConfig) -> Result<Agent, AgentError> {
        if config.operator.starts_with("https://") {
            tracing::info!(operator = %config.operator, "the plan stream is a WebSocket over TLS: https:// is used as wss://");
        }
        let endpoint = Endpoint {
            url: stream::stream_url(&config.operator, &config.node)?,
            token_file: config.token_file.clone(),
            ca_file: config.ca_file.clone(),
        };
        let listener = tokio::net::TcpListener::bind(config.health_addr)
            .await
            .map_err(|source| AgentError::Health { addr: config.health_addr, source })?;
        let health_addr =
            listener.local_addr().map_err(|source| AgentError::Health { addr: config.health_addr, source })?;

        let status = Arc::new(Status::default());
        let detection = match config.iptables_backend {
            Some(backend) => Detection { backend, why: "set by --iptables-backend".to_owned() },
            None => backend::detect(&Runner { ip: config.binaries.ip.clone(), netns: config.netns.clone() }).await,
        };
        tracing::info!(backend = %detection.backend, why = %detection.why, "iptables backend");
        config.binaries = detection.backend.binaries(config.binaries.clone());
        status.set_backend(detection);
        let (stop, stopped) = watch::channel(false);
        let render_config = RenderConfig { mark: config.mark, node_ips: config.node_ips.clone() };
        let enforcer = Arc::new(Mutex::new(Enforcer::new(
            Applier::new(config.apply_config()),
            render_config,
            PlanStore::new(&config.state_dir),
            status.clone(),
        )));

        let health = tokio::spawn({
            let (status, stopped) = (status.clone(), stopped.clone());
            async move {
                if let Err(error) = health::serve(listener, status, wait_for_stop(stopped)).await {
                    tracing::error!(%error, "health server stopped");
                }
            }
        });
        let repair = tokio::spawn(repair_drift(enforcer.clone(), config.resync_interval, stopped.clone()));
        let stream = tokio::spawn({
            let status = status.clone();
            let node = config.node.clone();
            let (max_backoff, idle_timeout) = (config.max_backoff, config.stream_idle_timeout);
            let versions = config.stream_versions.clone();
            async move {
                if let Some(Err(error)) = enforcer.lock().await.restore_persisted().await {
                    tracing::error!(%error, "the persisted plan was rejected; waiting for the operator");
                }
                let link = Link { endpoint, versions, max_backoff, idle_timeout };
                follow_operator(link, node, enforcer, status, stopped).await;
            }
        });
        Ok(Agent { health_addr, status, stop, tasks: vec![stream, repair, health] })
    }

    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Stops every task; the kernel keeps enforcing the last plan.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.map_err(|error| AgentError::Task(error.to_string()))?;
        }
        Ok(())
    }
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn repair_drift(enforcer: Arc<Mutex<Enforcer>>, every: Duration, stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = wait_for_stop(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {
                if let Err(error) = enforcer.lock().await.repair().await {
                    tracing::error!(%error, "drift repair failed; retrying at the next interval");
                }
            }
        }
    }
}

/// First delay of reconnects and of retries of a rejected plan; they double up to `max_backoff`.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// How the agent reaches its operator.
struct Link {
    endpoint: Endpoint,
    versions: Vec<StreamVersion>,
    max_backoff: Duration,
    idle_timeout: Duration,
}

/// Connects, follows one connection until it fails, and reconnects with backoff, until stopped.
async fn follow_operator(
    link: Link,
    node: String,
    enforcer: Arc<Mutex<Enforcer>>,
    status: Arc<Status>,
    stopped: watch::Receiver<bool>,
) {
    let Link { endpoint, versions, max_backoff, idle_timeout } = link;
    let mut reconnect = Backoff::new(FIRST_RETRY, max_backoff);
    let stop = wait_for_stop(stopped);
    tokio::pin!(stop);
    loop {
        let outcome = tokio::select! {
            _ = &mut stop => return,
            // An attempt the operator never answers (a dropped path) is bounded like a silent stream.
            outcome = tokio::time::timeout(idle_timeout, stream::connect(&endpoint, &versions)) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(StreamError::Unanswered { seconds: idle_timeout.as_secs() }),
            },
        };
        match outcome {
            Ok((mut connection, version)) => {
                status.set_connected(true);
                tracing::info!(url = %endpoint.url, protocol = version.subprotocol(), "plan stream open");
                let mut session = Session {
                    node: &node,
                    enforcer: &enforcer,
                    status: &status,
                    max_backoff,
                    idle_timeout,
                    received_snapshot: false,
                    first_unapplied: None,
                };
                let ended = tokio::select! {
                    _ = &mut stop => None,
                    ended = session.follow(&mut connection) => Some(ended),
                };
                status.set_connected(false);
                if session.received_snapshot {
                    reconnect.reset();
                }
                match ended {
                    None => {
                        let _ = connection.close(None).await;
                        return;
                    }
                    Some(error) => {
                        tracing::warn!(%error, "plan stream ended");
                        let _ = connection.close(None).await;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, url = %endpoint.url, "cannot open the plan stream"),
        }
        let delay = reconnect.next_delay();
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection's loop: fold messages into the plan, enforce it, report, retry rejections.
struct Session<'a> {
    node: &'a str,
    enforcer: &'a Mutex<Enforcer>,
    status: &'a Status,
    max_backoff: Duration,
    idle_timeout: Duration,
    received_snapshot: bool,
    /// When the oldest plan message not yet enforced arrived (for the kernel stage).
    first_unapplied: Option<Instant>,
}

impl Session<'_> {
    /// Runs until the connection fails; the returned error says why.
    async fn follow(&mut self, connection: &mut PlanStream) -> StreamError {
        let mut plans = PlanSession::default();
        let mut retry = Backoff::new(FIRST_RETRY, self.max_backoff);
        let mut retry_at: Option<Instant> = None;
        let mut last_frame = Instant::now();
        loop {
            let version = tokio::select! {
                // Frames first: after a long apply, waiting frames count before the idle check.
                biased;
                frame = connection.next() => match self.receive(frame, &mut plans) {
                    Ok(Some(version)) => version,
                    Ok(None) => continue,
                    Err(error) => return error,
                },
                _ = tokio::time::sleep_until(last_frame + self.idle_timeout) => {
                    return StreamError::Silent { seconds: self.idle_timeout.as_secs() };
                }
                _ = sleep_until_some(retry_at) => match plans.plan() {
                    Some((version, _)) => version,
                    None => { retry_at = None; continue }
                },
            };
            last_frame = Instant::now();
            // Coalesce: fold every frame that is already waiting before touching the kernel.
            let mut version = version;
            while let Some(frame) = connection.next().now_or_never() {
                match self.receive(frame, &mut plans) {
                    Ok(Some(newer)) => version = newer,
                    Ok(None) => {}
                    Err(error) => return error,
                }
            }
            let Some((_, plan)) = plans.plan() else { continue };
            let reply = if plan.node != self.node {
                AgentMessage::Failed {
                    version,
                    error: format!("the plan is for node {:?}, this agent runs on {:?}", plan.node, self.node),
                }
            } else {
                match self.enforcer.lock().await.enforce(plan).await {
                    Ok(()) => {
                        if let Some(arrived) = self.first_unapplied.take() {
                            self.status.observe(Stage::Kernel, arrived.elapsed());
                        }
                        retry.reset();
                        retry_at = None;
                        AgentMessage::Realized { version, policies: policies_in(plan) }
                    }
                    Err(error) => {
                        let delay = retry.next_delay();
                        tracing::error!(%error, version, retry_in = ?delay, "plan rejected; the previous rules stay in force");
                        retry_at = Some(Instant::now() + delay);
                        AgentMessage::Failed { version, error: error.to_string() }
                    }
                }
            };
            match tokio::time::timeout(self.idle_timeout, connection.send(Message::text(encode(&reply)))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return StreamError::WebSocket(Box::new(error)),
                Err(_) => return StreamError::Silent { seconds: self.idle_timeout.as_secs() },
            }
        }
    }

    /// `Ok(Some(version))` when the plan changed, `Ok(None)` for frames that carry no plan.
    fn receive(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        plans: &mut PlanSession,
    ) -> Result<Option<u64>, StreamError> {
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => return Err(StreamError::Closed),
            Some(Err(error)) => return Err(StreamError::WebSocket(Box::new(error))),
            Some(Ok(Message::Text(text))) => text,
            // Pings are answered by the library; nothing else is part of the protocol.
            Some(Ok(_)) => return Ok(None),
        };
        let message = OperatorMessage::decode(text.as_str())?;
        if matches!(message, OperatorMessage::Snapshot { .. }) {
            self.received_snapshot = true;
        }
        if let Some(sent) = message.sent_at_us() {
            self.status.observe(Stage::Transit, Duration::from_micros(unix_micros().saturating_sub(sent)));
        }
        self.first_unapplied.get_or_insert_with(Instant::now);
        plans.receive(message).map(Some)
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
