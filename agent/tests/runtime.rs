//! The agent runtime against a stand-in operator: a tiny in-test WebSocket server over TLS that
//! speaks the plan stream, to check the client's protocol handling with real kernel state in a
//! throwaway network namespace. (The real operator end to end is tested with the operator.)
mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{SinkExt as _, StreamExt as _};
use palisade_agent::{Agent, AgentConfig, Binaries};
use palisade_engine::plan::{Group, NodePlan};
use palisade_protocol::{AgentMessage, OperatorMessage, StreamVersion, encode, policies_in};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Long enough for a slow shared machine; only a bound on waiting for something that must happen.
const PATIENCE: Duration = Duration::from_secs(60);

type OperatorSide = WebSocketStream<TlsStream<TcpStream>>;

/// One accepted plan stream with what the agent presented.
struct Subscription {
    socket: OperatorSide,
    path: String,
    authorization: Option<String>,
}

impl Subscription {
    async fn send(&mut self, message: OperatorMessage) {
        self.socket.send(Message::text(encode(&message))).await.expect("send to agent");
    }

    async fn reply(&mut self) -> AgentMessage {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the agent answers")
                .expect("stream open")
                .expect("frame");
            if let Message::Text(text) = frame {
                return AgentMessage::decode(text.as_str()).expect("agent message");
            }
        }
    }

    /// True once the agent closed this stream (what it does on a base mismatch).
    async fn closed_by_agent(&mut self) -> bool {
        loop {
            match tokio::time::timeout(PATIENCE, self.socket.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The stand-in operator: TLS with a self-signed certificate for 127.0.0.1, the v1 subprotocol.
struct FakeOperator {
    addr: SocketAddr,
    ca_file: PathBuf,
    subscriptions: mpsc::Receiver<Subscription>,
}

impl FakeOperator {
    async fn start(dir: &Path) -> FakeOperator {
        FakeOperator::start_with(dir, None, 0).await
    }

    /// `refusal`: answer every subscription with HTTP 403 and this body, as the real operator
    /// does for a token bound to another node.
    ///
    /// `muted`: the first this many connections are accepted and then never answered (not even
    /// the TLS handshake), as when the path to the operator drops packets.
    async fn start_with(dir: &Path, refusal: Option<&'static str>, muted: usize) -> FakeOperator {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("test certificate");
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, certified.cert.pem()).expect("write CA");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (found, subscriptions) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                if held.len() < muted {
                    held.push(tcp);
                    continue;
                }
                let (acceptor, found) = (acceptor.clone(), found.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let mut seen = (String::new(), None);
                    // The callback's error type is tungstenite's, not ours to shrink.
                    #[allow(clippy::result_large_err)]
                    let callback = |request: &Request, mut response: Response| {
                        seen.0 = request.uri().path().to_string();
                        seen.1 = request
                            .headers()
                            .get("authorization")
                            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
                        let offered = request
                            .headers()
                            .get("sec-websocket-protocol")
                            // As an operator of the previous release: it speaks V1 only, and
                            // agrees when V1 is among the offered versions.
                            .and_then(|value| value.to_str().ok())
                            .is_some_and(|value| {
                                value.split(',').any(|offer| offer.trim() == StreamVersion::V1.subprotocol())
                            });
                        if let Some(reason) = refusal {
                            let mut refused =
                                tokio_tungstenite::tungstenite::http::Response::new(Some(reason.to_owned()));
                            *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
                            return Err(refused);
                        }
                        if offered {
                            response.headers_mut().insert(
                                "sec-websocket-protocol",
                                HeaderValue::from_static(StreamVersion::V1.subprotocol()),
                            );
                        }
                        Ok(response)
                    };
                    if let Ok(socket) = tokio_tungstenite::accept_hdr_async(tls, callback).await {
                        let _ = found.send(Subscription { socket, path: seen.0, authorization: seen.1 }).await;
                    }
                });
            }
        });
        FakeOperator { addr, ca_file, subscriptions }
    }

    async fn next_subscription(&mut self) -> Subscription {
        tokio::time::timeout(PATIENCE, self.subscriptions.recv())
            .await
            .expect("the agent subscribes")
            .expect("operator running")
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pal-runtime-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn agent_config(netns: &Netns, dir: &Path, operator: SocketAddr, ca_file: &Path) -> AgentConfig {
    let token_file = dir.join("token");
    if !token_file.exists() {
        std::fs::write(&token_file, "token-1\n").expect("write token");
    }
    AgentConfig {
        token_file,
        ca_file: ca_file.to_path_buf(),
        state_dir: dir.join("state"),
        node_ips: render_config().node_ips,
        netns: Some(netns.name.clone()),
        health_addr: "127.0.0.1:0".parse().expect("addr"),
        max_backoff: Duration::from_millis(500),
        ..AgentConfig::new("node-a", operator.to_string())
    }
}

/// A minimal HTTP/1.0 GET: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to health");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes()).await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// Polls the health endpoint until it reports ready; false if it never does.
async fn becomes_ready(agent: &Agent) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if http_get(agent.health_addr(), "/readyz").await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn owned_chains(netns: &Netns) -> BTreeSet<String> {
    netns
        .sh("iptables-save -t filter")
        .lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("PAL-"))
        .map(str::to_string)
        .collect()
}

/// The sample plan with one more client address in the NetworkPolicy's peer group.
fn plan_with_extra_client() -> NodePlan {
    let mut plan = sample_plan();
    if let Some(Group::Addresses(members)) = plan.groups.get_mut(&gid(CLIENTS)) {
        members.insert(ip("198.18.2.99"));
    }
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_snapshots_and_deltas_and_resubscribes_on_a_base_mismatch() {
    let netns = Netns::new();
    let dir = temp_dir("stream");
    let mut operator = FakeOperator::start(&dir).await;
    let agent = Agent::start(agent_config(&netns, &dir, operator.addr, &operator.ca_file)).await.expect("start");

    let mut first = operator.next_subscription().await;
    assert_eq!(first.path, "/v1/nodes/node-a/plan");
    assert_eq!(first.authorization.as_deref(), Some("Bearer token-1"));

    first.send(OperatorMessage::snapshot(1, sample_plan())).await;
    assert_eq!(first.reply().await, AgentMessage::Realized { version: 1, policies: policies_in(&sample_plan()) });
    assert!(owned_chains(&netns).contains("PAL-INGRESS"), "snapshot enforced:\n{}", netns.sh("iptables-save"));
    assert!(!netns.owned_sets().contains("198.18.2.99"));

    let delta = NodePlan::diff(&sample_plan(), &plan_with_extra_client());
    first.send(OperatorMessage::delta(1, 2, delta)).await;
    assert!(matches!(first.reply().await, AgentMessage::Realized { version: 2, .. }));
    assert!(netns.owned_sets().contains("198.18.2.99"), "delta enforced:\n{}", netns.owned_sets());

    // Tokens rotate: the next connection must present the new one.
    std::fs::write(dir.join("token"), "token-2").expect("rotate token");
    let stale = NodePlan::diff(&plan_with_extra_client(), &sample_plan());
    first.send(OperatorMessage::delta(7, 8, stale)).await;
    assert!(first.closed_by_agent().await, "a delta from an unknown base closes the stream");

    let mut second = operator.next_subscription().await;
    assert_eq!(second.authorization.as_deref(), Some("Bearer token-2"));
    second.send(OperatorMessage::snapshot(1, sample_plan())).await;
    assert!(matches!(second.reply().await, AgentMessage::Realized { version: 1, .. }));
    assert!(!netns.owned_sets().contains("198.18.2.99"), "the fresh snapshot replaced the plan");

    let (_, metrics) = http_get(agent.health_addr(), "/metrics").await;
    assert!(metrics.contains("palisade_agent_connected 1"), "{metrics}");
    assert!(metrics.contains("palisade_agent_syncs_total 3"), "{metrics}");
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_a_sync_and_the_persisted_plan_is_enforced_with_the_operator_down() {
    let netns = Netns::new();
    let dir = temp_dir("persist");
    let mut operator = FakeOperator::start(&dir).await;
    let config = agent_config(&netns, &dir, operator.addr, &operator.ca_file);
    let agent = Agent::start(config.clone()).await.expect("start");

    let mut subscription = operator.next_subscription().await;
    assert_eq!(http_get(agent.health_addr(), "/healthz").await.0, 200);
    assert_eq!(http_get(agent.health_addr(), "/readyz").await.0, 503, "no plan enforced yet");
    subscription.send(OperatorMessage::snapshot(5, sample_plan())).await;
    assert!(matches!(subscription.reply().await, AgentMessage::Realized { version: 5, .. }));
    assert_eq!(http_get(agent.health_addr(), "/readyz").await.0, 200);
    let enforced = netns.tables();

    // Stopping fails static: the rules stay.
    agent.shutdown().await.expect("shutdown");
    assert_eq!(netns.tables(), enforced, "stopping the agent must not touch the rules");

    // Wipe the kernel so only the persisted plan can bring the rules back, and take the operator down.
    netns.applier().cleanup().await.expect("cleanup");
    assert!(owned_chains(&netns).is_empty());
    drop(subscription);
    drop(operator);
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let restarted = Agent::start(AgentConfig { operator: unreachable.to_string(), ..config }).await.expect("restart");
    assert!(becomes_ready(&restarted).await, "the persisted plan makes the agent ready without an operator");
    assert_eq!(netns.tables(), enforced, "the persisted plan is enforced again");
    let (_, metrics) = http_get(restarted.health_addr(), "/metrics").await;
    assert!(metrics.contains("palisade_agent_connected 0"), "{metrics}");
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_persisted_plan_is_ignored_and_a_rejected_plan_is_reported_failed() {
    let netns = Netns::new();
    let dir = temp_dir("failed");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state/plan.json"), b"{\"format\": 1, \"plan\": tru").expect("corrupt plan");
    let mut operator = FakeOperator::start(&dir).await;
    // A restore tool that always fails stands in for a kernel rejecting the plan.
    let binaries = Binaries { iptables_restore: "/bin/false".into(), ..Binaries::default() };
    let config = AgentConfig { binaries, ..agent_config(&netns, &dir, operator.addr, &operator.ca_file) };
    let agent = Agent::start(config).await.expect("start despite the corrupt file");

    let mut subscription = operator.next_subscription().await;
    subscription.send(OperatorMessage::snapshot(1, sample_plan())).await;
    match subscription.reply().await {
        AgentMessage::Failed { version: 1, error } => assert!(error.contains("/bin/false"), "{error}"),
        other => panic!("expected Failed for version 1, got {other:?}"),
    }
    // The rejected plan is retried with backoff and reported again.
    assert!(matches!(subscription.reply().await, AgentMessage::Failed { version: 1, .. }));
    assert_eq!(http_get(agent.health_addr(), "/readyz").await.0, 503);
    assert!(owned_chains(&netns).is_empty(), "nothing half-applied");
    let (_, metrics) = http_get(agent.health_addr(), "/metrics").await;
    assert!(!metrics.contains("palisade_agent_restore_errors_total 0"), "{metrics}");
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_operator_is_left_and_the_agent_reconnects() {
    let netns = Netns::new();
    let dir = temp_dir("silent");
    let mut operator = FakeOperator::start(&dir).await;
    let config = AgentConfig {
        stream_idle_timeout: Duration::from_secs(2),
        ..agent_config(&netns, &dir, operator.addr, &operator.ca_file)
    };
    let agent = Agent::start(config).await.expect("start");

    let mut first = operator.next_subscription().await;
    first.send(OperatorMessage::snapshot(1, sample_plan())).await;
    assert!(matches!(first.reply().await, AgentMessage::Realized { version: 1, .. }));

    // The operator side now says nothing and reads nothing, while the connection stays open:
    // from the agent, exactly a half-open connection (no FIN, no RST, no pings). The agent must
    // take it for dead and subscribe again, keeping its rules in force meanwhile.
    let mut second = operator.next_subscription().await;
    assert!(owned_chains(&netns).contains("PAL-INGRESS"), "the rules stayed in force");
    second.send(OperatorMessage::snapshot(1, plan_with_extra_client())).await;
    assert!(matches!(second.reply().await, AgentMessage::Realized { version: 1, .. }));
    assert!(netns.owned_sets().contains("198.18.2.99"), "the new connection's plan is enforced");
    drop(first);
    agent.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_legacy_node_the_rules_go_where_the_kernel_path_looks() {
    let netns = Netns::new();
    // A node whose other tools (kube-proxy, say) use iptables-legacy.
    netns.sh("iptables-legacy -N KUBE-KUBELET-CANARY && iptables-legacy -A FORWARD -j ACCEPT && \
         iptables-legacy -A INPUT -j ACCEPT");
    let dir = temp_dir("legacy");
    let mut operator = FakeOperator::start(&dir).await;
    let agent = Agent::start(agent_config(&netns, &dir, operator.addr, &operator.ca_file)).await.expect("start");
    let mut stream = operator.next_subscription().await;
    stream.send(OperatorMessage::snapshot(1, sample_plan())).await;
    assert!(matches!(stream.reply().await, AgentMessage::Realized { version: 1, .. }));

    let legacy = netns.sh("iptables-legacy-save -t filter");
    let forward: Vec<&str> = legacy.lines().filter(|line| line.starts_with("-A FORWARD ")).collect();
    assert!(forward.first().is_some_and(|line| line.ends_with("-j PAL-FORWARD")), "legacy FORWARD: {forward:?}");
    let nft = netns.sh("iptables-nft-save -t filter 2>/dev/null");
    assert!(!nft.contains("PAL-"), "nothing of ours in the nft tables the kernel path does not use:\n{nft}");
    let (_, ready) = http_get(agent.health_addr(), "/readyz").await;
    assert!(ready.contains("iptables backend: legacy"), "{ready}");
    let (_, metrics) = http_get(agent.health_addr(), "/metrics").await;
    assert!(metrics.contains("palisade_agent_iptables_backend{backend=\"legacy\"} 1"), "{metrics}");
    agent.shutdown().await.expect("shutdown");
    netns.sh("iptables-legacy -F && iptables-legacy -X && ip6tables-legacy -F && ip6tables-legacy -X");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_carries_the_operators_reason() {
    let dir = temp_dir("refused");
    let reason = "the token is bound to a pod on node node-b, not on node node-a";
    let operator = FakeOperator::start_with(&dir, Some(reason), 0).await;
    std::fs::write(dir.join("token"), "token-1").expect("write token");
    let endpoint = palisade_agent::stream::Endpoint {
        url: palisade_agent::stream::stream_url(&operator.addr.to_string(), "node-a").expect("url"),
        token_file: dir.join("token"),
        ca_file: operator.ca_file.clone(),
    };
    let error = palisade_agent::stream::connect(&endpoint, &StreamVersion::ALL).await.expect_err("refused").to_string();
    assert!(error.contains("HTTP 403") && error.contains(reason), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_attempt_that_is_never_answered_is_abandoned() {
    let netns = Netns::new();
    let dir = temp_dir("unanswered");
    // The first connection is accepted and never answered: without a bound on connecting, the
    // agent would wait on it forever (or for the kernel's connect timeout on a dropped SYN).
    let mut operator = FakeOperator::start_with(&dir, None, 1).await;
    let config = AgentConfig {
        stream_idle_timeout: Duration::from_secs(2),
        ..agent_config(&netns, &dir, operator.addr, &operator.ca_file)
    };
    let agent = Agent::start(config).await.expect("start");
    let mut subscription = operator.next_subscription().await;
    subscription.send(OperatorMessage::snapshot(1, sample_plan())).await;
    assert!(matches!(subscription.reply().await, AgentMessage::Realized { version: 1, .. }));
    agent.shutdown().await.expect("shutdown");
}
