//! Running the dataplane tools, optionally inside a network namespace (`ip netns exec <ns>`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Where the tools live and which namespace they act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    pub iptables_restore: PathBuf,
    pub iptables_save: PathBuf,
    pub ip6tables_restore: PathBuf,
    pub ip6tables_save: PathBuf,
    pub ipset: PathBuf,
    /// `ip`, used only to enter [`Runner::netns`].
    pub ip: PathBuf,
}

impl Default for Binaries {
    fn default() -> Self {
        Binaries {
            iptables_restore: "iptables-restore".into(),
            iptables_save: "iptables-save".into(),
            ip6tables_restore: "ip6tables-restore".into(),
            ip6tables_save: "ip6tables-save".into(),
            ipset: "ipset".into(),
            ip: "ip".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} exited with {status:?}: {stderr}")]
    Failed { program: String, status: Option<i32>, stderr: String, stdout: String },
}

/// Builds and runs commands, prefixing `ip netns exec <ns>` when a namespace is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runner {
    pub ip: PathBuf,
    pub netns: Option<String>,
}

impl Runner {
    pub fn command(&self, program: &Path) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new(&self.ip);
                command.args(["netns", "exec", netns]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.kill_on_drop(true);
        command
    }

    /// Runs `program args`, feeding `stdin`; returns stdout, or the failure with its stderr.
    pub async fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, ExecError> {
        let name = program.display().to_string();
        let mut command = self.command(program);
        command
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| ExecError::Spawn { program: name.clone(), source })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that rejects its input early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(input.as_bytes()).await;
            drop(pipe);
        }
        let output =
            child.wait_with_output().await.map_err(|source| ExecError::Spawn { program: name.clone(), source })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(ExecError::Failed {
                program: name,
                status: output.status.code(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                stdout,
            })
        }
    }
}

/// The input line a restore tool blamed: iptables-restore says "Error occurred at line: N",
/// ipset "Error in line N:".
pub fn blamed_line(stderr: &str) -> Option<usize> {
    ["Error occurred at line: ", "Error in line ", "line "].iter().find_map(|marker| {
        let start = stderr.find(marker)? + marker.len();
        let digits: String = stderr[start..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::blamed_line;

    #[test]
    fn finds_the_line_each_tool_blames() {
        let iptables = "iptables-restore v1.8.9 (nf_tables): Bad argument `bogus'\nError occurred at line: 5\nTry ...";
        assert_eq!(blamed_line(iptables), Some(5));
        assert_eq!(blamed_line("ipset v7.17: Error in line 2: The value of the CIDR parameter"), Some(2));
        assert_eq!(blamed_line("permission denied"), None);
    }
}
