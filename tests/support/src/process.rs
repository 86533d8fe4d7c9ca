//! Child processes that cannot outlive the test run.
//!
//! Three layers, because each covers a case the others miss:
//! 1. `Drop` kills the whole process group (also on unwinding after a panic);
//! 2. `PR_SET_PDEATHSIG` makes the kernel SIGKILL the child when the spawning thread dies, which covers
//!    a SIGKILLed or aborted test binary (and statics, which are never dropped);
//! 3. a state file per owner in [`state_dir`] records process groups and temp dirs, and the next
//!    run removes whatever a dead owner left behind (e.g. a child that was mid-exec).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result, io_at};

/// Path of a binary of this workspace: `$<env>`, else the one cargo built next to the running
/// executable or one directory up (test executables live in `target/<profile>/deps`, binaries in
/// `target/<profile>`). `cargo test --workspace` builds every binary whose package has integration
/// tests, so nothing is built here: a second build would need its own target dir (the running
/// `cargo test` holds the lock) and doubles the disk a CI run needs.
pub fn workspace_binary(binary: &str, env: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(io_at("current_exe"))?;
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|dir| dir.join(binary)).collect();
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    Err(Error::BinaryMissing {
        binary: binary.to_owned(),
        package: package.to_owned(),
        env: env.to_owned(),
        searched: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// Where owners record what to clean up if they die without running their destructors.
pub(crate) fn state_dir() -> PathBuf {
    std::env::temp_dir().join("palisade-testkit-state")
}

/// True when `pid` names a live process (EPERM still means it exists).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks for existence and permissions.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn process_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// SIGKILLs process group `pgid` (whose leader is `pgid`).
pub(crate) fn kill_group(pgid: u32) {
    signal_group(pgid, libc::SIGKILL);
}

/// Sends `signal` to process group `pgid` (whose leader is `pgid`).
fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: negative pid addresses the process group; pgid > 1 so never "all processes".
        unsafe { libc::kill(-pgid, signal) };
    }
}

/// A record of what one owner (this process, one control plane or cluster) must clean up.
/// Lines: `pgid <pid> <comm>` and `dir <path>`.
pub(crate) struct StateFile {
    path: PathBuf,
}

static STATE_SEQ: AtomicU64 = AtomicU64::new(0);

impl StateFile {
    pub fn create(kind: &str) -> Result<Self> {
        let dir = state_dir();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let seq = STATE_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{seq}-{kind}.state", std::process::id()));
        File::create(&path).map_err(io_at(&path))?;
        Ok(StateFile { path })
    }

    fn append(&self, line: &str) -> Result<()> {
        let mut file = OpenOptions::new().append(true).open(&self.path).map_err(io_at(&self.path))?;
        writeln!(file, "{line}").map_err(io_at(&self.path))
    }

    pub fn record_group(&self, pgid: u32, comm: &str) -> Result<()> {
        self.append(&format!("pgid {pgid} {comm}"))
    }

    pub fn record_dir(&self, dir: &Path) -> Result<()> {
        self.append(&format!("dir {}", dir.display()))
    }
}

impl StateFile {
    /// Removes the record now (for owners that are never dropped, like the shared control plane).
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Kills process groups and removes directories recorded by owners that are no longer alive.
/// Only kills a recorded pid if it still runs the recorded program, so a recycled pid is safe.
pub(crate) fn reap_dead_owners() {
    let Ok(entries) = fs::read_dir(state_dir()) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if owner == std::process::id() || pid_alive(owner) {
            continue;
        }
        let content = fs::read_to_string(&path).unwrap_or_default();
        for line in content.lines() {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("pgid"), Some(pid), Some(comm)) => {
                    if let Ok(pid) = pid.parse::<u32>()
                        && process_name(pid).as_deref() == Some(comm)
                    {
                        kill_group(pid);
                    }
                }
                (Some("dir"), Some(first), rest) => {
                    let dir = match rest {
                        Some(rest) => format!("{first} {rest}"),
                        None => first.to_string(),
                    };
                    let _ = fs::remove_dir_all(dir);
                }
                _ => {}
            }
        }
        let _ = fs::remove_file(&path);
    }
}

/// A child running in its own process group, output appended to a log file. Harnesses built on
/// the testkit (the e2e stack's operators and agents) use it too, so every process a test starts
/// is fenced the same way.
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Spawns `command` in a new process group with PDEATHSIG=SIGKILL and stdout/stderr to `log`.
    /// The fork happens on the keeper thread (see [`crate::keeper`]), so the child lives until it is
    /// dropped or the test process dies, whichever thread asked for it.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).map_err(io_at(log))?;
        let err = out.try_clone().map_err(io_at(log))?;
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
        let spawned = crate::keeper::on_keeper(move || command.spawn());
        let child = spawned.map_err(|source| Error::Spawn { program: program.clone(), source })?;
        Ok(ManagedProcess { name: name.to_string(), child, log: log.to_path_buf() })
    }

    /// The name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The kernel's short name for the program (what `/proc/<pid>/comm` shows after exec).
    pub fn comm(&self) -> String {
        self.name.chars().take(15).collect()
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

    /// An error describing an early exit, with the end of the log.
    pub fn exited_early_error(&mut self, status: ExitStatus) -> Error {
        Error::ExitedEarly {
            what: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// SIGTERM to the group (a graceful stop, as a rollout would send), then SIGKILL if it has not
    /// exited within `grace`.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL to the whole group: a crash, as far as the rest of the cluster can tell.
    pub fn kill(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file (for error messages).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a short command to completion; a non-zero exit becomes an error carrying stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { program: program.to_string(), source })?;
    checked(program, args, output)
}

/// The stdout of a finished command, or an error carrying its stderr.
pub(crate) fn checked(program: &str, args: &[&str], output: std::process::Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}
