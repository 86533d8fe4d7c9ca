//! Prometheus metrics, one registry per operator (no globals, so tests can run several
//! operators in one process and read each one's numbers).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// The operator's stages of a change, from the watch event to the frame an agent is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A watch event waiting for the engine thread.
    Queued,
    /// One engine batch: applying its events, taking each node's change, publishing it.
    Engine,
    /// A published change until its frame is written to an agent's connection.
    Sent,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Engine => "engine",
            Stage::Sent => "sent",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

/// Stage durations from 50 µs to about 1.6 s, doubling.
fn stage_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

/// Everything the operator counts. Cheap to clone (the metrics are shared handles).
#[derive(Clone)]
pub struct Metrics {
    /// Watch events applied to the index, by resource kind.
    pub events_processed: Family<KindLabel, Counter>,
    /// Objects whose conversion into the engine model failed, by kind (currently held).
    pub conversion_errors: Family<KindLabel, Gauge>,
    /// Snapshot and Delta messages sent to agents.
    pub plan_sends: Counter,
    /// Node plans that changed and were published to their watch channel.
    pub plans_published: Counter,
    /// Agents connected to this replica.
    pub connected_agents: Gauge,
    /// Stream subscriptions refused (authentication or authorization).
    pub refused_subscriptions: Counter,
    /// Writes to the API server made for status: applies, status patches and deletions.
    pub status_writes: Counter,
    /// How long each policy's status write took (successful or not), in seconds.
    pub status_write_seconds: WriteSeconds,
    /// Status writes that failed or timed out (each is retried with per-policy backoff).
    pub status_write_failures: Counter,
    /// Whether this replica holds the Lease (1) or not (0).
    pub leader: Gauge,
    /// Duration of each stage of a change ([`Stage`]), in seconds.
    pub stage_seconds: Family<
        StageLabel,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
    /// Serving certificates reloaded after their files changed.
    pub tls_reloads: Counter,
    /// Changed serving certificates that did not load (the previous one stays in use).
    pub tls_reload_failures: Counter,
}

/// A histogram of write durations from 5 ms to about 20 s.
#[derive(Clone)]
pub struct WriteSeconds(pub prometheus_client::metrics::histogram::Histogram);

impl Default for WriteSeconds {
    fn default() -> WriteSeconds {
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 13);
        WriteSeconds(prometheus_client::metrics::histogram::Histogram::new(buckets))
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            events_processed: Family::default(),
            conversion_errors: Family::default(),
            plan_sends: Counter::default(),
            plans_published: Counter::default(),
            connected_agents: Gauge::default(),
            refused_subscriptions: Counter::default(),
            status_writes: Counter::default(),
            status_write_seconds: WriteSeconds::default(),
            status_write_failures: Counter::default(),
            leader: Gauge::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            tls_reloads: Counter::default(),
            tls_reload_failures: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn observe(&self, stage: Stage, took: std::time::Duration) {
        self.stage_seconds.get_or_create(&StageLabel { stage: stage.as_str() }).observe(took.as_secs_f64());
    }

    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("palisade_operator");
        registry.register("events_processed", "Watch events applied to the index", self.events_processed.clone());
        registry.register(
            "conversion_errors",
            "Objects that could not be converted into the engine model",
            self.conversion_errors.clone(),
        );
        registry.register("plan_sends", "Plan messages (snapshots and deltas) sent to agents", self.plan_sends.clone());
        registry.register(
            "plans_published",
            "Changed node plans published to subscribers",
            self.plans_published.clone(),
        );
        registry.register("connected_agents", "Agents connected to this replica", self.connected_agents.clone());
        registry.register(
            "refused_subscriptions",
            "Plan stream subscriptions refused",
            self.refused_subscriptions.clone(),
        );
        registry.register("status_writes", "Status writes to the API server", self.status_writes.clone());
        registry.register(
            "status_write_seconds",
            "Duration of each policy's status write",
            self.status_write_seconds.0.clone(),
        );
        registry.register(
            "status_write_failures",
            "Status writes that failed or timed out",
            self.status_write_failures.clone(),
        );
        registry.register("leader", "1 while this replica holds the Lease", self.leader.clone());
        registry.register(
            "stage_seconds",
            "Duration of each stage of a plan change: queued (watch event to engine), engine (one batch), sent (published to written to an agent)",
            self.stage_seconds.clone(),
        );
        registry.register(
            "tls_reloads",
            "Serving certificates reloaded after their files changed",
            self.tls_reloads.clone(),
        );
        registry.register(
            "tls_reload_failures",
            "Changed serving certificates that did not load (the previous one stays in use)",
            self.tls_reload_failures.clone(),
        );
        registry
    }
}

/// The OpenMetrics text of a registry.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = encode(&mut text, registry) {
        text = format!("# encoding failed: {error}\n");
    }
    text
}
