//! Low-level network namespace helpers: run commands in a namespace, create sockets in one, sweep
//! namespaces left by killed runs. Nothing here touches the root namespace's addresses or routes.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::process::{pid_alive, run};

/// Prefix of every namespace the testkit creates: `pal-<owner pid>-...`.
pub const NETNS_PREFIX: &str = "pal-";

/// Fails with a clear message unless running as root (namespaces, veths and iptables need it).
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    Ok(())
}

/// Runs `args` inside network namespace `netns` (`ip netns exec`), returning stdout.
pub fn exec(netns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", netns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Feeds `commands` (one `ip` command per line, without the leading `ip`) to `ip -batch`, optionally
/// inside `netns` (`ip -n`). One process for many commands keeps cluster builds fast.
pub(crate) fn ip_batch(netns: Option<&str>, commands: &[String]) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if let Some(netns) = netns {
        cmd.args(["-n", netns]);
    }
    cmd.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { program: "ip".into(), source })?;
    let script = commands.join("\n") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|source| Error::Spawn { program: "ip -batch".into(), source })?;
    }
    let output = child.wait_with_output().map_err(|source| Error::Spawn { program: "ip".into(), source })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ip {}-batch:\n{script}", netns.map(|n| format!("-n {n} ")).unwrap_or_default()),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Runs `job` on a fresh thread that has joined network namespace `netns`, and returns its result.
/// Sockets created by `job` stay in that namespace wherever they are used afterwards. A fresh thread
/// each time, because a thread's namespace cannot be shared with tokio's pooled threads safely.
pub fn in_netns<T: Send + 'static>(netns: &str, job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{netns}");
    let name = netns.to_string();
    std::thread::spawn(move || -> Result<T> {
        let file = File::open(&path).map_err(|source| Error::Netns { namespace: name.clone(), source })?;
        // SAFETY: setns on this thread only; the fd is valid for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::Netns { namespace: name, source: std::io::Error::last_os_error() });
        }
        Ok(job())
    })
    .join()
    .map_err(|_| Error::Invalid(format!("thread in netns {netns} panicked")))?
}

/// Async form of [`in_netns`]: the caller's runtime keeps running while `job` blocks.
pub async fn in_netns_async<T: Send + 'static>(netns: &str, job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let netns = netns.to_string();
    std::thread::spawn(move || {
        let _ = sender.send(in_netns(&netns, job));
    });
    receiver.await.map_err(|_| Error::Invalid("netns worker thread vanished".into()))?
}

/// Writes sysctls (`net.ipv4.ip_forward` style keys) inside `netns`, without spawning a process:
/// `/proc/sys/net` shows the namespace of the thread that opens it.
pub(crate) fn sysctl(netns: &str, settings: &[(String, &str)]) -> Result<()> {
    let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    let name = netns.to_string();
    in_netns(netns, move || -> Result<()> {
        for (key, value) in settings {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, &value).map_err(|source| Error::Netns {
                namespace: name.clone(),
                source: std::io::Error::new(source.kind(), format!("sysctl {key}={value}: {source}")),
            })?;
        }
        Ok(())
    })?
}

/// Namespaces named `pal-<pid>-...`.
pub(crate) fn testkit_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .collect()
}

/// Deletes namespaces left by runs whose owner process is dead, killing anything still in them.
pub(crate) fn sweep_dead_namespaces() {
    let dead: Vec<String> = testkit_namespaces()
        .into_iter()
        .filter(|name| {
            name.trim_start_matches(NETNS_PREFIX)
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| pid != std::process::id() && !pid_alive(pid))
        })
        .collect();
    delete_namespaces(&dead);
}

/// Kills processes inside each namespace, then deletes it. Best effort: cleanup must not fail a test.
pub(crate) fn delete_namespaces(names: &[String]) {
    for name in names {
        if let Ok(pids) = run("ip", &["netns", "pids", name]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
                if pid > 1 {
                    // SAFETY: plain kill of a process found inside our own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
    let commands: Vec<String> = names.iter().map(|n| format!("netns del {n}")).collect();
    if ip_batch(None, &commands).is_err() {
        for name in names {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}
