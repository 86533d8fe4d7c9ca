//! Shared setup for the operator's integration tests: a private real API server per test (each
//! test's operators watch the whole cluster and would otherwise write each other's status), the
//! CRDs, a serving certificate, an agent ServiceAccount, Nodes and Pods, and a WebSocket client
//! that speaks the plan stream as an agent would.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use palisade_engine::plan::NodePlan;
use palisade_operator::{LeaseConfig, OperatorConfig, RunningOperator, ServiceAccountRef, Timings};
use palisade_protocol::{AgentMessage, OperatorMessage, StreamVersion};
use palisade_testkit::{ControlPlane, mark_pod_running};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub const AGENT_SA: &str = "palisade-agent";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn init_logging() {
    // Every test calls this; only the first succeeds. Shown only for failing tests.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_TEST_LOG")
                .unwrap_or_else(|_| "palisade_operator=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Harness {
    pub plane: ControlPlane,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Namespace of the agent ServiceAccount and of the Lease.
    pub system_namespace: String,
}

impl Harness {
    pub async fn start() -> Harness {
        let plane = ControlPlane::start().await.expect("control plane starts (is KUBEBUILDER_ASSETS set?)");
        let client = plane.admin_client().expect("admin client");
        let manifests: Vec<String> = palisade_crds::manifests().into_iter().map(|(_, yaml)| yaml).collect();
        let docs: Vec<&str> = manifests.iter().map(String::as_str).collect();
        plane.install_crds(&docs).await.expect("CRDs install");
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_pem, cert_pem, key_pem) = serving_certificate();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, key_pem).expect("write key");
        let system_namespace = plane.unique_namespace("palisade-system").await.expect("namespace");
        Harness { plane, client, dir, ca_pem, cert, key, system_namespace }
    }

    pub fn config(&self, identity: &str) -> OperatorConfig {
        let mut lease = LeaseConfig::new("palisade-operator", &self.system_namespace);
        lease.duration = Duration::from_secs(6);
        lease.grace = Duration::from_secs(2);
        OperatorConfig {
            kubeconfig: Some(self.plane.kubeconfig_path().to_path_buf()),
            stream_address: "127.0.0.1:0".parse().expect("address"),
            tls_certificate: self.cert.clone(),
            tls_key: self.key.clone(),
            probe_address: "127.0.0.1:0".parse().expect("address"),
            agent_service_account: ServiceAccountRef {
                namespace: self.system_namespace.clone(),
                name: AGENT_SA.into(),
            },
            agent_token_audience: None,
            lease,
            identity: identity.to_owned(),
            timings: Timings {
                status_full_reconcile: Duration::from_secs(10),
                tls_reload: Duration::from_millis(100),
                // Short liveness bounds, so a silent agent is dropped within seconds.
                stream_ping_interval: Duration::from_secs(1),
                stream_idle_timeout: Duration::from_secs(3),
                ..Timings::default()
            },
        }
    }

    pub async fn start_operator(&self, identity: &str) -> RunningOperator {
        self.start_operator_with(self.config(identity)).await
    }

    pub async fn start_operator_with(&self, config: OperatorConfig) -> RunningOperator {
        let operator = palisade_operator::start(config).await.expect("operator starts");
        let probe = operator.probe_address;
        eventually("the operator to become ready", || async move {
            http_get(probe, "/readyz").await.is_some_and(|(status, _)| status == 200)
        })
        .await;
        operator
    }

    /// Two replicas, returned as (leader, follower) once exactly one holds the Lease.
    pub async fn start_leader_and_follower(&self) -> (RunningOperator, RunningOperator) {
        let first = self.start_operator("operator-a").await;
        let second = self.start_operator("operator-b").await;
        let (a, b) = (&first, &second);
        eventually("one replica to lead", || async move {
            operator_metric(a, "palisade_operator_leader").await + operator_metric(b, "palisade_operator_leader").await
                == 1.0
        })
        .await;
        if operator_metric(&first, "palisade_operator_leader").await == 1.0 { (first, second) } else { (second, first) }
    }

    pub async fn create_node(&self, name: &str, ip: &str) {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        }))
        .expect("node");
        let nodes = Api::<Node>::all(self.client.clone());
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        let status = json!({ "status": { "addresses": [{ "type": "InternalIP", "address": ip }] } });
        nodes.patch_status(name, &Default::default(), &kube::api::Patch::Merge(status)).await.expect("node status");
    }

    /// A running pod on `node` with `labels`, address `ip`, and (optionally) a ServiceAccount.
    pub async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        ip: &str,
        service_account: Option<&str>,
    ) -> Pod {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let mut spec = json!({
            "nodeName": node,
            "containers": [{ "name": "main", "image": "example/none", "ports": [{ "name": "http", "containerPort": 80 }] }],
        });
        if let Some(account) = service_account {
            spec["serviceAccountName"] = json!(account);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace, "labels": labels },
            "spec": spec,
        }))
        .expect("pod");
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        let ip: IpAddr = ip.parse().expect("pod ip");
        mark_pod_running(&self.client, namespace, name, &[ip], &["192.0.2.1".parse().expect("host ip")])
            .await
            .expect("pod status")
    }

    /// Ensures ServiceAccount `namespace/name` exists.
    pub async fn service_account(&self, namespace: &str, name: &str) {
        let account: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": name, "namespace": namespace } })).expect("sa");
        match Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &account)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create service account: {error}"),
        }
    }

    /// A token of `namespace/account` bound to `pod` (as a kubelet-projected token is), or
    /// unbound when `pod` is `None`.
    pub async fn token(&self, namespace: &str, account: &str, pod: Option<&Pod>) -> String {
        self.token_for(namespace, account, pod, &[]).await
    }

    /// As [`Harness::token`], for `audiences` (empty: the API server's own).
    pub async fn token_for(&self, namespace: &str, account: &str, pod: Option<&Pod>, audiences: &[&str]) -> String {
        self.service_account(namespace, account).await;
        let bound = pod.map(|pod| BoundObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
        });
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(3600),
                bound_object_ref: bound,
            },
            ..TokenRequest::default()
        };
        let issued: TokenRequest = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .expect("TokenRequest");
        issued.status.expect("token status").token
    }

    /// A TLS client trusting only `ca_pem`.
    pub fn tls_connector(ca_pem: &str) -> Connector {
        let mut roots = rustls::RootCertStore::empty();
        for der in pem_der_blocks(ca_pem) {
            roots.add(rustls::pki_types::CertificateDer::from(der)).expect("CA cert");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Connector::Rustls(Arc::new(config))
    }

    /// Subscribes to `node`'s plan at `operator` with `token`. `Err` carries the HTTP status of
    /// a refusal.
    pub async fn connect(
        &self,
        operator: &RunningOperator,
        node: &str,
        token: Option<&str>,
        offer_protocol: bool,
    ) -> Result<Agent, u16> {
        match self.connect_trusting(&self.ca_pem, operator, node, token, offer_protocol).await {
            Ok(agent) => Ok(agent),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(error) => panic!("unexpected connection error: {error}"),
        }
    }

    /// Like [`Harness::connect`], trusting `ca_pem`, with any failure returned. An agent that
    /// offers the protocol offers every version, as the agent of this build does.
    pub async fn connect_trusting(
        &self,
        ca_pem: &str,
        operator: &RunningOperator,
        node: &str,
        token: Option<&str>,
        offer_protocol: bool,
    ) -> Result<Agent, tungstenite::Error> {
        let versions: &[StreamVersion] = if offer_protocol { &StreamVersion::ALL } else { &[] };
        self.connect_offering(ca_pem, operator, node, token, versions).await
    }

    /// An agent offering exactly `versions` (an agent of the previous release offers V1 only).
    pub async fn connect_offering(
        &self,
        ca_pem: &str,
        operator: &RunningOperator,
        node: &str,
        token: Option<&str>,
        versions: &[StreamVersion],
    ) -> Result<Agent, tungstenite::Error> {
        let url = format!("wss://127.0.0.1:{}{}", operator.stream_address.port(), palisade_protocol::stream_path(node));
        let mut request = url.into_client_request().expect("request");
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
        }
        if !versions.is_empty() {
            let offered: Vec<&str> = versions.iter().map(|version| version.subprotocol()).collect();
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&offered.join(", ")).expect("header"));
        }
        let connector = Harness::tls_connector(ca_pem);
        let (socket, response) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector)).await?;
        let protocol =
            response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let expected = versions.iter().max().map(|version| version.subprotocol());
        assert_eq!(protocol.as_deref(), expected, "the operator agrees on the newest offered subprotocol");
        Ok(Agent { socket, plan: None, version: 0 })
    }
}

/// A fake agent: keeps the plan as the protocol defines it.
pub struct Agent {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    pub plan: Option<NodePlan>,
    pub version: u64,
}

impl Agent {
    /// Receives the next plan message, applies it, and returns it.
    pub async fn next_message(&mut self) -> OperatorMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a plan message within the timeout")
                .expect("the stream is open")
                .expect("a readable frame");
            let Message::Text(text) = frame else { continue };
            let message = OperatorMessage::decode(text.as_str()).expect("a valid operator message");
            match &message {
                OperatorMessage::Snapshot { version, plan, .. } => {
                    self.plan = Some(plan.clone());
                    self.version = *version;
                }
                OperatorMessage::Delta { base, version, delta, .. } => {
                    assert_eq!(*base, self.version, "a delta applies to the version we have");
                    assert!(*version > *base, "versions increase");
                    let plan = self.plan.as_mut().expect("a snapshot came first");
                    delta.apply(plan).expect("the delta fits the plan held");
                    self.version = *version;
                }
            }
            return message;
        }
    }

    /// Reads every frame for `duration` (answering pings, as any reader does); returns how many
    /// pings came.
    pub async fn read_for(&mut self, duration: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + duration;
        let mut pings = 0;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await {
            match frame {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => panic!("the stream ended while the agent was reading"),
            }
        }
        pings
    }

    /// True once the operator closed the stream (reading whatever comes until then).
    pub async fn closed_by_operator(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Receives messages until the plan satisfies `condition`.
    pub async fn until(&mut self, what: &str, condition: impl Fn(&NodePlan) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !self.plan.as_ref().is_some_and(&condition) {
            assert!(Instant::now() < deadline, "timed out waiting for the plan to {what}");
            self.next_message().await;
        }
    }

    /// Reports the current plan as realized, as a real agent does after applying it.
    pub async fn report_realized(&mut self) {
        let plan = self.plan.as_ref().expect("a plan");
        let message = AgentMessage::Realized { version: self.version, policies: palisade_protocol::policies_in(plan) };
        self.socket.send(Message::Text(palisade_protocol::encode(&message).into())).await.expect("send report");
    }

    pub async fn report_failed(&mut self, error: &str) {
        let message = AgentMessage::Failed { version: self.version, error: error.into() };
        self.socket.send(Message::Text(palisade_protocol::encode(&message).into())).await.expect("send report");
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Polls `check` until it holds, panicking with `what` after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal HTTP/1.0 GET (probes and metrics are plain HTTP): (status, body).
pub async fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The value of an unlabelled metric in an OpenMetrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

pub async fn operator_metric(operator: &RunningOperator, name: &str) -> f64 {
    let (_, body) = http_get(operator.probe_address, "/metrics").await.expect("metrics answer");
    metric(&body, name).unwrap_or(0.0)
}

/// A CA and a serving certificate for 127.0.0.1 and localhost: (ca, cert, key) PEM.
pub fn serving_certificate() -> (String, String, String) {
    palisade_testkit::serving_certificate().expect("a serving certificate")
}

fn pem_der_blocks(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect()
}
