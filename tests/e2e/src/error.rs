//! One error type for the harness; tests print it with `{}` and get the whole story.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Testkit(#[from] palisade_testkit::Error),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("setting up the stack: {0}")]
    Setup(String),
    #[error("{0}")]
    Resolve(#[from] palisade_conformance::ResolveError),
    #[error("timed out after {seconds} s waiting for {what}\n{detail}")]
    Timeout { what: String, seconds: u64, detail: String },
    #[error("{what} exited early ({status}); log {log}:\n{tail}")]
    ExitedEarly { what: String, status: String, log: String, tail: String },
    #[error("TLS material: {0}")]
    Tls(#[from] rcgen::Error),
}

impl Error {
    pub fn io(what: impl Display, source: std::io::Error) -> Error {
        Error::Io { what: what.to_string(), source }
    }

    pub fn json(what: impl Display, source: serde_json::Error) -> Error {
        Error::Setup(format!("{what}: {source}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
