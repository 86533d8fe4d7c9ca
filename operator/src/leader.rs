//! Leader election on a coordination.k8s.io Lease (kube-lease-manager).
//!
//! Only status writes need a single writer; streams are served by every replica, so losing the
//! Lease only stops [`crate::status::StatusWriter`], never the agents' plans.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// How long a holder's claim lasts without renewal; a dead leader is replaced after this.
    pub duration: Duration,
    /// How long before expiry the holder renews (also the clock skew tolerated).
    pub grace: Duration,
}

impl LeaseConfig {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        }
    }
}

/// Campaigning for the Lease. Dropping it (or [`Campaign::resign`]) releases the Lease, so a
/// replica that shuts down hands over at once instead of after `duration`.
pub struct Campaign {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Campaign {
    pub async fn start(client: Client, config: &LeaseConfig, identity: &str) -> Result<Campaign, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(identity)
            .with_duration(config.duration.as_secs().max(2))
            .with_grace(config.grace.as_secs().max(1))
            .with_field_manager(format!("palisade-operator-lease-{identity}"))
            .build()
            .await?;
        let (is_leader, task) = manager.watch().await;
        Ok(Campaign { is_leader, task })
    }

    /// Gives the Lease up and waits (briefly) for the release to reach the API server.
    pub async fn resign(self) {
        let Campaign { is_leader, task } = self;
        let held = *is_leader.borrow();
        drop(is_leader);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) if held => tracing::info!("lease released"),
            Ok(Ok(Ok(_))) => tracing::info!("stopped campaigning for the lease (never held it)"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "lease release failed"),
            Ok(Err(error)) => tracing::warn!(%error, "lease task failed"),
            Err(_) => tracing::warn!("lease release timed out"),
        }
    }
}
