//! Palisade's operator: the cluster goes into the engine, node plans go out to agents, and
//! enforcement status comes back onto the policies.
//!
//! Read top-down:
//! - [`index`]: watchers on Pods, Namespaces, Nodes, NetworkPolicies and ClusterNetworkPolicies
//!   feed one [`palisade_engine::Engine`], converting each object as it arrives.
//! - [`distribute`]: the engine on its own thread, fed by the watchers, and one feed per node of
//!   the plan changes it takes after each batch (no fixed debounce).
//! - [`server`]: the plan stream (`docs/protocol.md`) over TLS, and probes and metrics over HTTP.
//! - [`auth`]: TokenReview-based authorization of agents for their own node.
//! - [`realization`]: what each agent reports it enforces, shared between replicas through one
//!   ConfigMap per node, so the leader counts agents connected to any replica.
//! - [`status`]: per-policy conditions and PolicyStatus objects, written only on change.
//! - [`leader`]: the Lease that decides which replica writes status.
//! - [`writes`]: the field manager and the dirty-policy set the writers share.
//! - [`watch`]: following the API server through outages (fresh list on 410, capped retries).
//!
//! RBAC the operator needs. Cluster-wide: `pods`, `namespaces`, `nodes`, `networkpolicies`,
//! `clusternetworkpolicies` list/watch; `clusternetworkpolicies/status` patch; `policystatuses`
//! list/watch/create/patch/delete and `policystatuses/status` patch; `tokenreviews` create;
//! `events.k8s.io` `events` create/patch. In its own namespace (the Lease's): `leases`
//! get/create/patch/update/delete and `configmaps` get/list/watch/create/patch/delete (the
//! realization ConfigMaps).
//!
//! [`run`] wires them together until SIGTERM; [`start`] does the same and hands back a
//! [`RunningOperator`] (tests run several in one process).

pub mod auth;
pub mod distribute;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod realization;
pub mod server;
pub mod status;
pub mod tls;
pub mod watch;
pub mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use leader::LeaseConfig;
pub use writes::FIELD_MANAGER;

/// Everything the operator needs to run.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// A kubeconfig file; `None` infers (in-cluster ServiceAccount, then `$KUBECONFIG` / `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Where the plan stream listens (TLS).
    pub stream_address: SocketAddr,
    /// PEM certificate chain and private key of the plan stream.
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
    /// Where `/healthz`, `/readyz` and `/metrics` listen (plain HTTP).
    pub probe_address: SocketAddr,
    /// The agents' ServiceAccount: only its tokens may subscribe.
    pub agent_service_account: ServiceAccountRef,
    /// The audience agent tokens must carry (a projected token made for the plan stream, useless
    /// against the API server). `None`: the API server's own audience.
    pub agent_token_audience: Option<String>,
    pub lease: LeaseConfig,
    /// This replica's name in the Lease and in Events (the pod name).
    pub identity: String,
    pub timings: Timings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// How often the operator re-checks that it may create TokenReviews (readiness depends on it).
const PERMISSION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Tuning knobs; the defaults suit production, tests shorten some.
#[derive(Clone, Debug)]
pub struct Timings {
    /// How long the distributor waits after a change for the rest of a burst.

    /// How often dirty policies' status is written.
    pub status_flush: Duration,
    /// How often every policy's status is compared again with what is stored (watched, not read).
    pub status_full_reconcile: Duration,
    /// How often the serving certificate's files are checked for a rotation.
    pub tls_reload: Duration,
    /// How often each agent is pinged (its pongs prove the connection alive).
    pub stream_ping_interval: Duration,
    /// An agent connection that delivered nothing for this long is closed; also the bound on
    /// every send to an agent.
    pub stream_idle_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            status_flush: Duration::from_millis(200),
            status_full_reconcile: Duration::from_secs(30),
            tls_reload: Duration::from_secs(10),
            stream_ping_interval: palisade_protocol::DEFAULT_PING_INTERVAL,
            stream_idle_timeout: palisade_protocol::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot start the engine thread: {0}")]
    EngineThread(std::io::Error),
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(String),
    #[error("cannot load the TLS certificate {certificate} / key {key}: {source}")]
    Tls { certificate: PathBuf, key: PathBuf, source: std::io::Error },
    #[error("cannot listen on {address} ({what}): {source}")]
    Listen { address: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("the {what} server failed: {source}")]
    Serve { what: &'static str, source: std::io::Error },
    #[error("leader election on Lease {namespace}/{name} failed: {message}")]
    Lease { namespace: String, name: String, message: String },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
}

/// Runs the operator until SIGTERM or SIGINT, then shuts down gracefully (agents get a close
/// frame, the Lease is released so another replica takes over at once).
pub async fn run(config: OperatorConfig) -> Result<(), OperatorError> {
    let running = start(config).await?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(OperatorError::Signal)?;
    let failed = running.shutdown.clone();
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = failed.cancelled() => tracing::error!("a server failed: shutting down"),
    }
    running.shutdown().await
}

/// A started operator. Dropping it aborts every task (as a crash would, except that the Lease
/// is still released when its channel closes).
pub struct RunningOperator {
    /// The bound plan stream address (useful with port 0).
    pub stream_address: SocketAddr,
    /// The bound probe and metrics address.
    pub probe_address: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), OperatorError>>,
    campaign: Option<leader::Campaign>,
}

impl RunningOperator {
    /// Stops serving, closes agent streams, releases the Lease. Returns the first task error.
    pub async fn shutdown(mut self) -> Result<(), OperatorError> {
        self.shutdown.cancel();
        let mut first_error = None;
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(result) = self.tasks.join_next().await {
                if let Ok(Err(error)) = result {
                    first_error.get_or_insert(error);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
        if let Some(campaign) = self.campaign.take() {
            campaign.resign().await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Connects, binds both listeners, starts watchers, distributor, servers, leader election and
/// the status writer, and returns without waiting for the index to sync (`/readyz` tells).
pub async fn start(config: OperatorConfig) -> Result<RunningOperator, OperatorError> {
    // kube and axum-server both use rustls; with only ring compiled in this cannot conflict, and
    // installing it explicitly keeps a future second provider from panicking at the handshake.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = client(config.kubeconfig.as_deref()).await?;
    let serving_certificate = tls::ServingCertificate::load(&config.tls_certificate, &config.tls_key).await?;
    let stream_listener = server::bind(config.stream_address).map_err(|source| OperatorError::Listen {
        address: config.stream_address,
        what: "plan stream",
        source,
    })?;
    let probe_listener = server::bind(config.probe_address).map_err(|source| OperatorError::Listen {
        address: config.probe_address,
        what: "probes",
        source,
    })?;
    let local = |listener: &std::net::TcpListener, address: SocketAddr, what| {
        listener.local_addr().map_err(|source| OperatorError::Listen { address, what, source })
    };
    let stream_address = local(&stream_listener, config.stream_address, "plan stream")?;
    let probe_address = local(&probe_listener, config.probe_address, "probes")?;

    let campaign = leader::Campaign::start(client.clone(), &config.lease, &config.identity).await.map_err(|error| {
        OperatorError::Lease {
            namespace: config.lease.namespace.clone(),
            name: config.lease.name.clone(),
            message: error.to_string(),
        }
    })?;

    let shutdown = CancellationToken::new();
    let metrics = metrics::Metrics::default();
    let index = index::SharedIndex::new();
    let distribution = distribute::SharedDistribution::new(index.clone());
    let realization = Arc::new(realization::RealizationTable::default());
    let outbox = Arc::new(realization::Outbox::default());
    let dirty = Arc::new(writes::DirtyPolicies::default());
    let authenticator = Arc::new(auth::Authenticator::new(
        client.clone(),
        &config.agent_service_account.namespace,
        &config.agent_service_account.name,
        config.agent_token_audience.clone(),
    ));

    let mut tasks = JoinSet::new();
    tasks.spawn({
        let (authenticator, shutdown) = (authenticator.clone(), shutdown.clone());
        async move {
            authenticator.watch_permission(PERMISSION_CHECK_INTERVAL, shutdown).await;
            Ok(())
        }
    });
    // The engine thread ends when the watchers (its only senders) stop.
    let engine = distribute::spawn_engine_thread(distribution.clone(), dirty.clone(), metrics.clone())
        .map_err(OperatorError::EngineThread)?;
    tasks.spawn({
        let (client, metrics, shutdown) = (client.clone(), metrics.clone(), shutdown.clone());
        async move {
            index::run_watchers(client, engine, metrics, shutdown).await;
            Ok(())
        }
    });
    tasks.spawn({
        let writer = status::StatusWriter::new(
            client.clone(),
            &config.identity,
            index.clone(),
            distribution.clone(),
            realization.clone(),
            dirty.clone(),
            metrics.clone(),
        );
        let timings = status::StatusTimings {
            flush_interval: config.timings.status_flush,
            full_reconcile_interval: config.timings.status_full_reconcile,
        };
        let (is_leader, shutdown) = (campaign.is_leader.clone(), shutdown.clone());
        async move {
            writer.run(is_leader, timings, shutdown).await;
            Ok(())
        }
    });

    tasks.spawn({
        let sharing = realization::Sharing {
            client: client.clone(),
            namespace: config.lease.namespace.clone(),
            table: realization.clone(),
            outbox: outbox.clone(),
            dirty: dirty.clone(),
            index: index.clone(),
            is_leader: campaign.is_leader.clone(),
            retry_interval: config.timings.status_flush,
        };
        let shutdown = shutdown.clone();
        async move {
            realization::run_sharing(sharing, shutdown).await;
            Ok(())
        }
    });

    let stream_state = server::StreamState {
        distribution: distribution.clone(),
        realization,
        outbox,
        dirty,
        authenticator: authenticator.clone(),
        metrics: metrics.clone(),
        ping_interval: config.timings.stream_ping_interval,
        idle_timeout: config.timings.stream_idle_timeout,
        shutdown: shutdown.clone(),
    };
    let stream_app = server::stream_router(stream_state);
    let tls = serving_certificate.config.clone();
    tasks.spawn({
        let (interval, metrics, shutdown) = (config.timings.tls_reload, metrics.clone(), shutdown.clone());
        async move {
            let counters = tls::ReloadCounters {
                reloads: metrics.tls_reloads.clone(),
                failures: metrics.tls_reload_failures.clone(),
            };
            serving_certificate.watch(interval, counters, shutdown).await;
            Ok(())
        }
    });
    let stream_handle = axum_server::Handle::new();
    tasks.spawn({
        let (handle, shutdown) = (stream_handle.clone(), shutdown.clone());
        async move {
            let server = axum_server::from_tcp_rustls(stream_listener, tls)
                .map_err(|source| OperatorError::Serve { what: "plan stream", source })?
                .handle(handle);
            serve_until(server.serve(stream_app.into_make_service()), stream_handle, shutdown, "plan stream").await
        }
    });
    let probe_app = server::probe_router(distribution, authenticator, &metrics);
    let probe_handle = axum_server::Handle::new();
    tasks.spawn({
        let (handle, shutdown) = (probe_handle.clone(), shutdown.clone());
        async move {
            let server = axum_server::from_tcp(probe_listener)
                .map_err(|source| OperatorError::Serve { what: "probes", source })?
                .handle(handle);
            serve_until(server.serve(probe_app.into_make_service()), probe_handle, shutdown, "probes").await
        }
    });

    tracing::info!(%stream_address, %probe_address, identity = %config.identity, "operator started");
    Ok(RunningOperator { stream_address, probe_address, shutdown, tasks, campaign: Some(campaign) })
}

/// Serves until `shutdown`, then drains for a few seconds. A server error cancels `shutdown`,
/// so [`run`] exits instead of running without its stream. The webhook serves the same way.
pub async fn serve_until<A: axum_server::Address>(
    serving: impl std::future::Future<Output = std::io::Result<()>>,
    handle: axum_server::Handle<A>,
    shutdown: CancellationToken,
    what: &'static str,
) -> Result<(), OperatorError> {
    tokio::pin!(serving);
    let served = tokio::select! {
        served = &mut serving => {
            // The server stopped by itself: nothing serves agents any more, so stop everything.
            shutdown.cancel();
            served
        }
        _ = shutdown.cancelled() => {
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
            serving.await
        }
    };
    served.map_err(|source| OperatorError::Serve { what, source })
}

/// A client from a kubeconfig file, or inferred (in-cluster ServiceAccount, then `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, OperatorError> {
    let client_config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|error| OperatorError::Kubeconfig { path: path.to_owned(), message: error.to_string() })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|error| OperatorError::Kubeconfig { path: path.to_owned(), message: error.to_string() })?
        }
        None => kube::Config::infer().await.map_err(|error| OperatorError::Client(error.to_string()))?,
    };
    Client::try_from(client_config).map_err(|error| OperatorError::Client(error.to_string()))
}
