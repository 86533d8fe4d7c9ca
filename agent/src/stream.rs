//! The agent's end of the plan stream (`docs/protocol.md`): connecting to the operator over TLS
//! with the node's ServiceAccount token, and following the operator's versions.
//!
//! [`PlanSession`] is the protocol state of one connection without I/O: a snapshot replaces the
//! plan, a delta must start from the version we hold. [`connect`] opens the WebSocket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_engine::plan::NodePlan;
use palisade_protocol::{OperatorMessage, ProtocolError, StreamVersion, stream_path};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream, tungstenite};

pub type PlanStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("operator address {0:?} is not usable: {1}")]
    Address(String, String),
    #[error("cannot read the ServiceAccount token {path}: {source}")]
    Token { path: PathBuf, source: std::io::Error },
    #[error("cannot use the CA bundle {path}: {reason}")]
    CertificateAuthority { path: PathBuf, reason: String },
    #[error("operator refused the plan stream with HTTP {status}: {reason}")]
    Refused { status: u16, reason: String },
    #[error("operator did not agree on a plan-stream subprotocol this agent offered (answered {answered:?})")]
    Subprotocol { answered: Option<String> },
    #[error("plan stream: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    #[error("operator closed the plan stream")]
    Closed,
    #[error("the operator did not answer a connection attempt within {seconds} s")]
    Unanswered { seconds: u64 },
    #[error("the plan stream was silent for {seconds} s (no ping, no message, or a send that did not complete)")]
    Silent { seconds: u64 },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("delta from version {base} but this agent holds {held:?}; reconnecting for a snapshot")]
    BaseMismatch { base: u64, held: Option<u64> },
    #[error("the delta does not fit the plan held ({0}); reconnecting for a snapshot")]
    DeltaMismatch(#[from] palisade_engine::plan::PlanDeltaError),
}

/// `wss://<operator>/v1/nodes/<node>/plan`. `operator` is `host:port` or a `wss://`/`https://` URL;
/// plain-text schemes are refused because the stream carries a credential.
pub fn stream_url(operator: &str, node: &str) -> Result<String, StreamError> {
    let refuse = |reason: &str| StreamError::Address(operator.to_string(), reason.to_string());
    let authority = match operator.split_once("://") {
        None => operator,
        Some(("wss" | "https", rest)) => rest,
        Some((scheme, _)) => return Err(refuse(&format!("scheme {scheme} is not TLS; use wss:// or https://"))),
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(refuse("expected host[:port] with no path"));
    }
    if node.is_empty() || node.contains('/') {
        return Err(StreamError::Address(
            operator.to_string(),
            format!("node name {node:?} is not a valid path segment"),
        ));
    }
    Ok(format!("wss://{authority}{}", stream_path(node)))
}

/// Where and how to reach the operator. The token and the CA bundle are read at every connect:
/// projected ServiceAccount tokens rotate, and so may the CA.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

/// Opens the plan stream: TLS trusting only `ca_file`, Bearer token, offering `versions` (newest
/// first); returns the stream and the version the operator chose.
pub async fn connect(
    endpoint: &Endpoint,
    versions: &[StreamVersion],
) -> Result<(PlanStream, StreamVersion), StreamError> {
    let token = read_token(&endpoint.token_file).await?;
    let tls = client_tls(&endpoint.ca_file)?;
    let mut request = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(|error| StreamError::Address(endpoint.url.clone(), error.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| StreamError::Token {
        path: endpoint.token_file.clone(),
        source: std::io::Error::other("the token is not a valid header value"),
    })?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    let offered: Vec<&str> = versions.iter().map(|version| version.subprotocol()).collect();
    let offered = HeaderValue::from_str(&offered.join(", "))
        .map_err(|error| StreamError::Address(endpoint.url.clone(), error.to_string()))?;
    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, offered);

    let limits = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(palisade_protocol::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(palisade_protocol::MAX_FRAME_BYTES));
    let connected =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(limits), true, Some(Connector::Rustls(tls)))
            .await;
    let (stream, response) = match connected {
        Ok(connected) => connected,
        Err(tungstenite::Error::Http(response)) => {
            // The operator says why in the body (wrong node, an unbound token, no TokenReview).
            let reason = response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).trim().chars().take(512).collect::<String>())
                .filter(|reason| !reason.is_empty())
                .unwrap_or_else(|| "no reason given".to_owned());
            return Err(StreamError::Refused { status: response.status().as_u16(), reason });
        }
        Err(error) => return Err(StreamError::WebSocket(Box::new(error))),
    };
    let answered = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    match answered.as_deref().and_then(StreamVersion::from_subprotocol).filter(|chosen| versions.contains(chosen)) {
        Some(chosen) => Ok((stream, chosen)),
        None => Err(StreamError::Subprotocol { answered }),
    }
}

async fn read_token(path: &Path) -> Result<String, StreamError> {
    let token = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| StreamError::Token { path: path.to_path_buf(), source })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(StreamError::Token {
            path: path.to_path_buf(),
            source: std::io::Error::other("the file is empty"),
        });
    }
    Ok(token.to_string())
}

/// A rustls client that trusts exactly the certificates in `ca_file` (PEM), with the ring provider.
pub fn client_tls(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, StreamError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let failure = |reason: String| StreamError::CertificateAuthority { path: ca_file.to_path_buf(), reason };
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .map_err(|error| failure(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failure(error.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(failure("no usable certificate in the bundle".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| failure(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The plan one connection has told us about. Versions count per connection, so a new
/// connection starts a new session that must begin with a snapshot.
#[derive(Debug, Default)]
pub struct PlanSession {
    current: Option<(u64, NodePlan)>,
}

impl PlanSession {
    /// Folds a message into the session's plan and returns the version now held.
    pub fn receive(&mut self, message: OperatorMessage) -> Result<u64, StreamError> {
        match message {
            OperatorMessage::Snapshot { version, plan, .. } => {
                self.current = Some((version, plan));
                Ok(version)
            }
            OperatorMessage::Delta { base, version, delta, .. } => match &mut self.current {
                Some((held, plan)) if *held == base => {
                    delta.apply(plan)?;
                    *held = version;
                    Ok(version)
                }
                other => Err(StreamError::BaseMismatch { base, held: other.as_ref().map(|(held, _)| *held) }),
            },
        }
    }

    pub fn plan(&self) -> Option<(u64, &NodePlan)> {
        self.current.as_ref().map(|(version, plan)| (*version, plan))
    }
}

#[cfg(test)]
mod tests {
    use palisade_engine::plan::PlanDelta;

    use super::*;

    #[test]
    fn urls_require_tls_and_a_plain_node_name() {
        assert_eq!(stream_url("op.svc:8443", "n1").ok().as_deref(), Some("wss://op.svc:8443/v1/nodes/n1/plan"));
        assert_eq!(stream_url("https://op:1/", "n1").ok().as_deref(), Some("wss://op:1/v1/nodes/n1/plan"));
        assert!(matches!(stream_url("ws://op:1", "n1"), Err(StreamError::Address(..))));
        assert!(matches!(stream_url("op:1", "a/b"), Err(StreamError::Address(..))));
    }

    #[test]
    fn deltas_must_start_from_the_held_version() {
        let mut session = PlanSession::default();
        let delta = |base, version| {
            OperatorMessage::delta(base, version, PlanDelta { node: "n1".into(), ..PlanDelta::default() })
        };
        assert!(matches!(session.receive(delta(0, 1)), Err(StreamError::BaseMismatch { base: 0, held: None })));
        let snapshot = OperatorMessage::snapshot(3, NodePlan { node: "n1".into(), ..NodePlan::default() });
        assert_eq!(session.receive(snapshot).ok(), Some(3));
        assert_eq!(session.receive(delta(3, 4)).ok(), Some(4));
        assert!(matches!(session.receive(delta(3, 5)), Err(StreamError::BaseMismatch { base: 3, held: Some(4) })));
    }
}
