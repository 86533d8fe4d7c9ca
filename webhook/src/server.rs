//! `palisade webhook`: the HTTPS server the API server calls, and its probes and metrics.
//!
//! The admission endpoint serves TLS with the certificate reloaded when its files change
//! ([`palisade_operator::tls::ServingCertificate`], the plan stream's own code). Probes and
//! metrics are plain HTTP on their own port. Every request gets an answer: a body that is not an
//! AdmissionReview, or too large, gets HTTP 400 or 413 (the API server then applies the webhook's
//! `failurePolicy`), and so does any request before the cache has listed the cluster (503).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use palisade_operator::tls::{ReloadCounters, ServingCertificate};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::review::{self, ConflictMode, Outcome};

/// AdmissionReviews of policies are small; the API server's own object limit is 3 MiB.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub kubeconfig: Option<PathBuf>,
    /// Where the admission endpoint (`POST /validate`, TLS) listens.
    pub address: SocketAddr,
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
    /// Where `/healthz`, `/readyz` and `/metrics` listen (plain HTTP).
    pub probe_address: SocketAddr,
    pub conflicts: ConflictMode,
    pub tls_reload: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Operator(#[from] palisade_operator::OperatorError),
    #[error("cannot listen on {address} ({what}): {source}")]
    Listen { address: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What the webhook counts.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<OutcomeLabel, Counter>,
    seconds: Histogram,
    cache_objects: Family<KindLabel, Gauge>,
    tls: ReloadCounters,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            // 100 µs to about 3 s.
            seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            cache_objects: Family::default(),
            tls: ReloadCounters::default(),
        }
    }
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("palisade_webhook");
        registry.register("requests", "Admission requests by outcome", self.requests.clone());
        registry.register("request_seconds", "Time to judge one admission request", self.seconds.clone());
        registry.register("cache_objects", "Objects held by the webhook's cache, by kind", self.cache_objects.clone());
        registry.register("tls_reloads", "Serving certificates reloaded", self.tls.reloads.clone());
        registry.register(
            "tls_reload_failures",
            "Changed serving certificates that did not load",
            self.tls.failures.clone(),
        );
        registry
    }
}

#[derive(Clone)]
struct AppState {
    cache: Arc<Cache>,
    mode: ConflictMode,
    metrics: Metrics,
}

/// The admission router alone (tests and benches serve it on their own listeners).
pub fn admission_router(cache: Arc<Cache>, mode: ConflictMode, metrics: Metrics) -> Router {
    Router::new().route("/validate", post(validate)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(AppState {
        cache,
        mode,
        metrics,
    })
}

async fn validate(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    if !state.cache.is_synced() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the webhook has not listed the cluster yet\n").into_response();
    }
    let request = match review::decode(&body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.requests.get_or_create(&OutcomeLabel { outcome: Outcome::Invalid.as_str() }).inc();
            return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
        }
    };
    let (response, outcome) = state.cache.read(|contents| review::judge(&request, contents, state.mode));
    state.metrics.requests.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
    state.metrics.seconds.observe(started.elapsed().as_secs_f64());
    tracing::info!(kind = %request.kind.kind, name = %request.name, namespace = ?request.namespace,
        operation = ?request.operation, outcome = outcome.as_str(), "admission request judged");
    axum::Json(response.into_review()).into_response()
}

fn probe_router(cache: Arc<Cache>, metrics: Metrics) -> Router {
    let registry = Arc::new(metrics.registry());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get({
                let cache = cache.clone();
                move || async move {
                    if cache.is_synced() {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "the cache has not listed the cluster yet\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                for (kind, count) in cache.sizes() {
                    metrics.cache_objects.get_or_create(&KindLabel { kind }).set(count as i64);
                }
                palisade_operator::metrics::render(&registry)
            }),
        )
}

/// A started webhook: its addresses, and a handle to stop it.
pub struct RunningWebhook {
    pub address: SocketAddr,
    pub probe_address: SocketAddr,
    pub cache: Arc<Cache>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), palisade_operator::OperatorError>>,
}

impl RunningWebhook {
    pub async fn shutdown(mut self) -> Result<(), WebhookError> {
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Err(error)) = joined {
                return Err(error.into());
            }
        }
        Ok(())
    }
}

fn listen(address: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, WebhookError> {
    palisade_operator::server::bind(address).map_err(|source| WebhookError::Listen { address, what, source })
}

/// Starts the cache, the admission server and the probes.
pub async fn start(config: WebhookConfig) -> Result<RunningWebhook, WebhookError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificate = ServingCertificate::load(&config.tls_certificate, &config.tls_key).await?;
    let client = palisade_operator::client(config.kubeconfig.as_deref()).await?;
    let listener = listen(config.address, "admission")?;
    let probe_listener = listen(config.probe_address, "probes")?;
    let address = listener.local_addr().map_err(|source| WebhookError::Listen {
        address: config.address,
        what: "admission",
        source,
    })?;
    let probe_address = probe_listener.local_addr().map_err(|source| WebhookError::Listen {
        address: config.probe_address,
        what: "probes",
        source,
    })?;

    let shutdown = CancellationToken::new();
    let metrics = Metrics::default();
    let cache = Arc::new(Cache::default());
    let mut tasks = JoinSet::new();
    tasks.spawn({
        let (cache, shutdown) = (cache.clone(), shutdown.clone());
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = crate::cache::run_watchers(client, cache) => {}
            }
            Ok(())
        }
    });
    tasks.spawn({
        let (interval, counters, shutdown) = (config.tls_reload, metrics.tls.clone(), shutdown.clone());
        let certificate = certificate.clone();
        async move {
            certificate.watch(interval, counters, shutdown).await;
            Ok(())
        }
    });
    let app = admission_router(cache.clone(), config.conflicts, metrics.clone());
    let handle = axum_server::Handle::new();
    tasks.spawn({
        let (handle, shutdown, tls) = (handle.clone(), shutdown.clone(), certificate.config.clone());
        async move {
            let server = axum_server::from_tcp_rustls(listener, tls)
                .map_err(|source| palisade_operator::OperatorError::Serve { what: "admission", source })?
                .handle(handle.clone());
            palisade_operator::serve_until(server.serve(app.into_make_service()), handle, shutdown, "admission").await
        }
    });
    let probes = probe_router(cache.clone(), metrics);
    let probe_handle = axum_server::Handle::new();
    tasks.spawn({
        let (handle, shutdown) = (probe_handle.clone(), shutdown.clone());
        async move {
            let server = axum_server::from_tcp(probe_listener)
                .map_err(|source| palisade_operator::OperatorError::Serve { what: "probes", source })?
                .handle(handle.clone());
            palisade_operator::serve_until(server.serve(probes.into_make_service()), handle, shutdown, "probes").await
        }
    });
    tracing::info!(%address, %probe_address, "webhook started");
    Ok(RunningWebhook { address, probe_address, cache, shutdown, tasks })
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: WebhookConfig) -> Result<(), WebhookError> {
    let running = start(config).await?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(WebhookError::Signal)?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await
}
