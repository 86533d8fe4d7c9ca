//! The `palisade` processes a stack runs (operator replicas, agents): the binary located
//! once, and spawned as testkit [`Process`]es (own process group, `PDEATHSIG`, killed on drop;
//! `terminate` for a graceful stop, `kill` for a crash).

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::Result;

/// The e2e stack's processes are the testkit's: own process group, PDEATHSIG, killed on drop.
pub use palisade_testkit::{ManagedProcess as Process, log_tail};

/// Path of the `palisade` binary: `$PALISADE_BIN`, else the one `cargo test --workspace` built
/// next to the running test executable.
pub fn palisade_binary() -> Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(found.clone());
    }
    let found = palisade_testkit::workspace_binary("palisade", "PALISADE_BIN", "palisade-cli")?;
    Ok(FOUND.get_or_init(|| found).clone())
}
