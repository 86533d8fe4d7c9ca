//! The `palisade` processes a stack runs (operator replicas, agents): the binary located or built
//! once, and spawned as testkit [`Process`]es (own process group, `PDEATHSIG`, killed on drop;
//! `terminate` for a graceful stop, `kill` for a crash).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The e2e stack's processes are the testkit's: own process group, PDEATHSIG, killed on drop.
pub use palisade_testkit::{ManagedProcess as Process, log_tail};

/// Path of the `palisade` binary: `$PALISADE_BIN`, else next to the running executable or one
/// directory up (where `cargo build` puts it), else built with `cargo build -p palisade-cli` into
/// `<target>/palisade-cli-e2e` (a separate target dir, so it never waits on the lock of the
/// `cargo test` that runs us).
pub fn palisade_binary() -> Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(found.clone());
    }
    let found = locate_or_build("palisade", "palisade-cli")?;
    Ok(FOUND.get_or_init(|| found).clone())
}

fn locate_or_build(binary: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PALISADE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut candidates = Vec::new();
    let mut dir = exe.parent();
    for _ in 0..2 {
        if let Some(d) = dir {
            candidates.push(d.join(binary));
            dir = d.parent();
        }
    }
    let profile_dir = exe.parent().and_then(|d| if d.ends_with("deps") { d.parent() } else { Some(d) });
    let fallback = profile_dir.and_then(Path::parent).map(|target| target.join("palisade-cli-e2e"));
    // A fallback build may be stale; prefer it only when nothing fresher sits next to us.
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let Some(fallback) = fallback else {
        return Err(Error::Setup(format!("cannot find {binary}: looked at {candidates:?}")));
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", binary, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&fallback)
        .status();
    let built = fallback.join("debug").join(binary);
    match status {
        Ok(status) if status.success() && built.is_file() => Ok(built),
        other => Err(Error::Setup(format!(
            "cannot find {binary} (looked at {candidates:?}) and `cargo build -p {package}` failed: {other:?}; \
             set PALISADE_BIN"
        ))),
    }
}
