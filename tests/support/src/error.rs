use std::path::PathBuf;

/// Everything the testkit can fail with. Messages say what to do, because the reader is usually
/// someone whose test just failed for an environmental reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "KUBEBUILDER_ASSETS is not set or does not hold {missing}: run `make test-assets` \
         (or `tests/tools/build-assets.sh`) and export KUBEBUILDER_ASSETS=<the directory it prints>"
    )]
    AssetsMissing { missing: String },

    #[error("this needs root (network namespaces, veths, iptables); run the tests as root, as CI does")]
    NotRoot,

    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },

    #[error("could not start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },

    #[error("{what} did not become ready within {seconds}s; last log lines of {log}:\n{tail}")]
    NotReady { what: String, seconds: u64, log: PathBuf, tail: String },

    #[error("{what} exited early ({status}); last log lines of {log}:\n{tail}")]
    ExitedEarly { what: String, status: String, log: PathBuf, tail: String },

    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("YAML: {0}")]
    Yaml(String),

    #[error("{0}")]
    Invalid(String),

    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },

    #[error("I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("network namespace {namespace}: {source}")]
    Netns { namespace: String, source: std::io::Error },

    #[error(
        "{binary} not found (looked in {searched}); build it with `cargo build -p {package} --bin {binary}` \
         (`make test` does) or set {env}"
    )]
    BinaryMissing { binary: String, package: String, env: String, searched: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error, so "No such file" says which file.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
