//! The last applied plan on disk, so a restarted agent enforces it before it reaches any operator
//! and enforcement never depends on the operator being up.
//!
//! The file is replaced atomically (temporary file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old or the new plan. A file that cannot be read as a plan is reported
//! and ignored: the agent then starts with whatever the kernel still holds and waits for a snapshot.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use palisade_engine::plan::{NodePlan, PLAN_FORMAT_VERSION};
use serde::{Deserialize, Serialize};

const PLAN_FILE: &str = "plan.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the persisted plan {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the persisted plan {path} is not a plan: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("the persisted plan {path} has format {found}; this build reads format {supported}")]
    UnsupportedFormat { path: PathBuf, found: u32, supported: u32 },
    #[error("cannot persist the plan to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What is written: the plan with its format, so a newer file is refused instead of misread.
#[derive(Serialize, Deserialize)]
struct PersistedPlan {
    format: u32,
    plan: NodePlan,
}

/// The plan file inside the agent's state directory.
#[derive(Clone, Debug)]
pub struct PlanStore {
    dir: PathBuf,
}

impl PlanStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> PlanStore {
        PlanStore { dir: state_dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(PLAN_FILE)
    }

    /// The persisted plan; `Ok(None)` when none was ever written.
    pub async fn load(&self) -> Result<Option<NodePlan>, StoreError> {
        let path = self.path();
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let persisted: PersistedPlan =
            serde_json::from_slice(&text).map_err(|source| StoreError::Corrupt { path: path.clone(), source })?;
        if persisted.format != PLAN_FORMAT_VERSION {
            return Err(StoreError::UnsupportedFormat {
                path,
                found: persisted.format,
                supported: PLAN_FORMAT_VERSION,
            });
        }
        Ok(Some(persisted.plan))
    }

    /// Replaces the persisted plan atomically.
    pub async fn save(&self, plan: &NodePlan) -> Result<(), StoreError> {
        let path = self.path();
        let persisted = PersistedPlan { format: PLAN_FORMAT_VERSION, plan: plan.clone() };
        let dir = self.dir.clone();
        let target = path.clone();
        // Blocking file I/O with fsyncs: keep it off the runtime's worker threads.
        tokio::task::spawn_blocking(move || write_atomically(&dir, &target, &persisted))
            .await
            .map_err(|join| std::io::Error::other(join.to_string()))
            .and_then(|result| result)
            .map_err(|source| StoreError::Write { path, source })
    }
}

fn write_atomically(dir: &Path, target: &Path, persisted: &PersistedPlan) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{PLAN_FILE}.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec(persisted).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, target)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pal-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn missing_file_is_no_plan_and_saved_plan_round_trips() {
        let store = PlanStore::new(temp_dir("roundtrip"));
        assert!(matches!(store.load().await, Ok(None)));
        let plan = NodePlan { node: "n1".into(), ..NodePlan::default() };
        store.save(&plan).await.expect("save");
        assert_eq!(store.load().await.expect("load"), Some(plan));
    }

    #[tokio::test]
    async fn corrupt_and_future_files_are_reported_not_misread() {
        let dir = temp_dir("corrupt");
        let store = PlanStore::new(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(store.path(), b"{not json").expect("write");
        assert!(matches!(store.load().await, Err(StoreError::Corrupt { .. })));
        std::fs::write(
            store.path(),
            br#"{"format": 99, "plan": {"node": "n1", "pods": {}, "rule_sets": {}, "groups": {}}}"#,
        )
        .expect("write");
        assert!(matches!(store.load().await, Err(StoreError::UnsupportedFormat { found: 99, .. })));
    }
}
