//! The `palisade` processes a stack runs (operator replicas, agents): located or built once,
//! spawned in their own process group with `PDEATHSIG`, killed on drop.
//!
//! The testkit's process handling is private to it, so this is a small copy with what the stack
//! needs in addition: stopping gracefully (SIGTERM, as a rollout would) and crashing (SIGKILL).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A child process in its own process group, output appended to a log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdout and stderr to `log`. The fork happens on one long-lived thread:
    /// `PDEATHSIG` fires when the *forking thread* exits, and a tokio blocking thread may retire
    /// at any moment, which would kill the child with it.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process> {
        let out = File::create(log).map_err(|e| Error::io(log.display(), e))?;
        let err = out.try_clone().map_err(|e| Error::io(log.display(), e))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let child = on_spawner(move || command.spawn()).map_err(|e| Error::io(&program, e))?;
        Ok(Process { name: name.to_owned(), child, log: log.to_path_buf() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL to the whole group: a crash, as far as the rest of the cluster can tell.
    pub fn kill(&mut self) {
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: a negative pid addresses our child's own process group; pgid > 1.
        unsafe { libc::kill(-pgid, signal) };
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the process-lifetime spawner thread.
fn on_spawner<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        std::thread::Builder::new()
            .name("palisade-e2e-spawner".into())
            .spawn(move || {
                for job in receiver {
                    job();
                }
            })
            .expect("spawner thread");
        Mutex::new(sender)
    });
    let (result_sender, result_receiver) = channel();
    let job: Job = Box::new(move || {
        let _ = result_sender.send(job());
    });
    let guard = sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.send(job).expect("palisade-e2e-spawner thread is gone");
    drop(guard);
    result_receiver.recv().expect("palisade-e2e-spawner thread died")
}

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
