//! The agent's health endpoint (plain HTTP): `/healthz` (the process serves), `/readyz` (a full
//! sync succeeded, from the persisted plan or from the operator) and `/metrics` (Prometheus text).
//!
//! Handlers read only [`Status`], never the applier, so probes answer at once even while a long
//! sync holds the dataplane.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::apply::Metrics;
use crate::backend::Detection;

/// What the agent publishes about itself; shared by the runtime and the health server.
#[derive(Debug, Default)]
pub struct Status {
    ready: AtomicBool,
    connected: AtomicBool,
    metrics: Mutex<Metrics>,
    /// The iptables backend in use, and why it was chosen.
    backend: Mutex<Option<Detection>>,
    stages: Mutex<BTreeMap<&'static str, StageHistogram>>,
}

/// The agent's stages of a plan change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From the operator's send stamp to the frame's arrival (V2 streams; meaningful where the
    /// two clocks agree, as on one machine or with NTP).
    Transit,
    /// From the frame's arrival to the kernel committing the plan.
    Kernel,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Transit => "transit",
            Stage::Kernel => "kernel",
        }
    }
}

/// Upper bounds of the stage histogram's buckets: 50 µs doubling to about 1.6 s, as the
/// operator's `palisade_operator_stage_seconds`.
fn stage_bounds() -> impl Iterator<Item = f64> {
    (0..16).map(|i| 0.000_05 * f64::from(1u32 << i))
}

#[derive(Clone, Debug, Default)]
struct StageHistogram {
    /// Observations per bucket (not cumulative); the last counts those above every bound.
    buckets: [u64; 17],
    sum: f64,
}

impl Status {
    /// True once the kernel enforced a whole plan; it never goes back (rules stay in force).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// True while a plan stream to an operator is open.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }

    pub fn set_backend(&self, detection: Detection) {
        if let Ok(mut backend) = self.backend.lock() {
            *backend = Some(detection);
        }
    }

    pub fn backend(&self) -> Option<Detection> {
        self.backend.lock().ok().and_then(|backend| backend.clone())
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.lock().map(|metrics| metrics.clone()).unwrap_or_default()
    }

    pub fn publish_metrics(&self, metrics: &Metrics) {
        if let Ok(mut shared) = self.metrics.lock() {
            shared.clone_from(metrics);
        }
    }

    pub fn observe(&self, stage: Stage, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let bucket = stage_bounds().position(|bound| seconds <= bound).unwrap_or(16);
        if let Ok(mut stages) = self.stages.lock() {
            let histogram = stages.entry(stage.as_str()).or_default();
            histogram.buckets[bucket] += 1;
            histogram.sum += seconds;
        }
    }

    /// The Prometheus text exposition of the agent's counters.
    pub fn prometheus_text(&self) -> String {
        let metrics = self.metrics();
        let mut text = String::new();
        let mut family = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(text, "# HELP palisade_agent_{name} {help}");
            let _ = writeln!(text, "# TYPE palisade_agent_{name} {kind}");
            let _ = writeln!(text, "palisade_agent_{name} {value}");
        };
        family("syncs_total", "counter", "Plan syncs attempted.", metrics.syncs);
        family("restore_errors_total", "counter", "Rejected ipset or iptables restores.", metrics.restore_errors);
        family("repairs_total", "counter", "Drifted kernel objects repaired.", metrics.repairs);
        family("lines_written_total", "counter", "iptables lines written, all families.", metrics.lines_written);
        family("ipset_lines_written_total", "counter", "ipset lines written.", metrics.ipset_lines_written);
        family("connected", "gauge", "1 while a plan stream to an operator is open.", u64::from(self.is_connected()));
        family("ready", "gauge", "1 once a whole plan is enforced.", u64::from(self.is_ready()));
        if let Some(detection) = self.backend() {
            let _ = writeln!(text, "# HELP palisade_agent_iptables_backend The iptables backend the agent programs.");
            let _ = writeln!(text, "# TYPE palisade_agent_iptables_backend gauge");
            let _ = writeln!(text, "palisade_agent_iptables_backend{{backend=\"{}\"}} 1", detection.backend);
        }
        let stages = self.stages.lock().map(|stages| stages.clone()).unwrap_or_default();
        if !stages.is_empty() {
            let _ = writeln!(
                text,
                "# HELP palisade_agent_stage_seconds Duration of each stage of a plan change: transit (operator send to arrival), kernel (arrival to committed)."
            );
            let _ = writeln!(text, "# TYPE palisade_agent_stage_seconds histogram");
        }
        for (stage, histogram) in stages {
            let mut cumulative = 0;
            for (bound, count) in stage_bounds().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    text,
                    "palisade_agent_stage_seconds_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += histogram.buckets[16];
            let _ = writeln!(text, "palisade_agent_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(text, "palisade_agent_stage_seconds_sum{{stage=\"{stage}\"}} {}", histogram.sum);
            let _ = writeln!(text, "palisade_agent_stage_seconds_count{{stage=\"{stage}\"}} {cumulative}");
        }
        text
    }
}

/// Serves the health endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let backend = match status.backend() {
        Some(detection) => format!("iptables backend: {} ({})", detection.backend, detection.why),
        None => "iptables backend: not chosen yet".to_owned(),
    };
    if status.is_ready() {
        (StatusCode::OK, format!("ready; {backend}\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("no plan enforced yet; {backend}\n"))
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], status.prometheus_text())
}
