//! The enforcer: the one owner of the [`Applier`]. It turns a plan into kernel state, remembers
//! what is enforced for drift repair, persists it, and publishes metrics and readiness.

use std::sync::Arc;

use palisade_engine::plan::NodePlan;

use crate::apply::{Applier, ApplyError, SyncReport};
use crate::health::Status;
use crate::render::{RenderConfig, Rendered, render};
use crate::state::PlanStore;

pub struct Enforcer {
    applier: Applier,
    render_config: RenderConfig,
    store: PlanStore,
    status: Arc<Status>,
    /// The plan the kernel enforces, rendered: what drift repair restores.
    enforced: Option<(NodePlan, Rendered)>,
}

impl Enforcer {
    pub fn new(applier: Applier, render_config: RenderConfig, store: PlanStore, status: Arc<Status>) -> Enforcer {
        Enforcer { applier, render_config, store, status, enforced: None }
    }

    pub fn enforced_plan(&self) -> Option<&NodePlan> {
        self.enforced.as_ref().map(|(plan, _)| plan)
    }

    /// Applies the persisted plan, if any, so enforcement starts before any operator is reached.
    /// A corrupt or unreadable file is reported and ignored.
    pub async fn restore_persisted(&mut self) -> Option<Result<(), ApplyError>> {
        match self.store.load().await {
            Ok(Some(plan)) => {
                tracing::info!(path = %self.store.path().display(), pods = plan.pods.len(), "enforcing the persisted plan");
                Some(self.enforce(&plan).await)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "ignoring the persisted plan");
                None
            }
        }
    }

    /// Makes the kernel enforce `plan`. On failure the previous rules stay in force, tightened at
    /// most (the applier orders its batches for that; see [`crate::apply`]), and nothing is
    /// persisted.
    pub async fn enforce(&mut self, plan: &NodePlan) -> Result<(), ApplyError> {
        let started = std::time::Instant::now();
        let rendered = render(plan, &self.render_config);
        let rendered_at = started.elapsed();
        let result = self.applier.sync(&rendered).await;
        self.status.publish_metrics(self.applier.metrics());
        let report = result?;
        let synced_at = started.elapsed();
        self.enforced = Some((plan.clone(), rendered));
        self.status.mark_ready();
        // The kernel enforces the plan whether or not it reaches the disk; a failed write only
        // means a restart would start from an older plan, until the operator answers.
        if let Err(error) = self.store.save(plan).await {
            tracing::error!(%error, "the enforced plan was not persisted");
        }
        tracing::info!(
            pods = plan.pods.len(),
            rule_sets = plan.rule_sets.len(),
            differences = report.differences(),
            render_ms = rendered_at.as_secs_f64() * 1e3,
            kernel_ms = (synced_at - rendered_at).as_secs_f64() * 1e3,
            persist_ms = (started.elapsed() - synced_at).as_secs_f64() * 1e3,
            "plan enforced"
        );
        Ok(())
    }

    /// Repairs whatever drifted from the enforced plan; nothing to do before the first sync.
    pub async fn repair(&mut self) -> Result<SyncReport, ApplyError> {
        let Some((_, rendered)) = &self.enforced else {
            return Ok(SyncReport::default());
        };
        let result = self.applier.check_and_repair(rendered).await;
        self.status.publish_metrics(self.applier.metrics());
        result
    }
}
