//! Figures for `make bench` (printed, never asserted):
//!
//! - admission latency with 5,000 ClusterNetworkPolicies and 10,000 pods in the cache, p50 and
//!   p99 over one kept-alive TLS connection (as the API server calls), against a no-op handler
//!   on the same TLS stack in the same run;
//! - `palisade lint` over 5,000 policies against parsing the same files alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use palisade_engine::model::*;
use palisade_webhook::cache::{Cache, Contents};
use palisade_webhook::lint::{self, Source};
use palisade_webhook::review::ConflictMode;
use palisade_webhook::server::{Metrics, admission_router};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const POLICIES: usize = 5_000;
const PODS: usize = 10_000;
const REQUESTS: usize = 1_000;

fn selector(key: &str, value: String) -> LabelSelector {
    LabelSelector { match_labels: [(key.to_string(), value)].into(), match_expressions: vec![] }
}

/// Policy `i` of the benchmark: both tiers, priorities spread over 0–1000 (so a few share each),
/// subjects and peers over a few dozen label values, one to three rules.
fn cluster_policy(i: usize) -> ClusterNetworkPolicy {
    let rule = |action: CnpAction, port: usize| CnpRule {
        name: None,
        action,
        peers: vec![CnpPeer::Namespaces(selector("env", format!("e{}", (i + port) % 7)))],
        protocols: Some(vec![CnpProtocol::Port {
            protocol: Protocol::Tcp,
            port: CnpPort::Number(8000 + (i % 20 + port) as i32),
        }]),
    };
    ClusterNetworkPolicy {
        name: format!("bench-{i:05}"),
        revision: Revision::default(),
        tier: if i.is_multiple_of(2) { Tier::Admin } else { Tier::Baseline },
        priority: (i % 1000) as i32,
        subject: CnpSubject::Namespaces(selector("team", format!("t{}", i % 50))),
        ingress: (0..1 + i % 3)
            .map(|k| rule(if k % 2 == 0 { CnpAction::Deny } else { CnpAction::Accept }, k))
            .collect(),
        egress: vec![],
    }
}

fn contents() -> Contents {
    let mut contents = Contents::default();
    for i in 0..POLICIES {
        let policy = Policy::Cluster(cluster_policy(i));
        contents.insert_policy(policy);
    }
    for n in 0..100 {
        let name = format!("ns-{n}");
        let labels: Labels =
            [("team".to_string(), format!("t{}", n % 50)), ("kubernetes.io/metadata.name".to_string(), name.clone())]
                .into();
        contents.cluster.namespaces.insert(name.clone(), Namespace { name: name.clone(), labels });
    }
    for p in 0..PODS {
        let key = PodKey { namespace: format!("ns-{}", p % 100), name: format!("pod-{p}") };
        let pod = Pod {
            key: key.clone(),
            labels: [("app".to_string(), format!("a{}", p % 10))].into(),
            node: Some(format!("node-{}", p % 20)),
            ips: vec![std::net::IpAddr::from([10, (p >> 16) as u8, (p >> 8) as u8, p as u8])],
            named_ports: vec![],
            host_network: false,
            terminated: false,
        };
        contents.cluster.pods.insert(key, pod);
    }
    contents
}

/// A request to create one more policy at a priority other policies already hold.
fn review_body() -> Vec<u8> {
    let candidate = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": { "name": "candidate" },
        "spec": {
            "tier": "Admin", "priority": 500,
            "subject": { "namespaces": { "matchLabels": { "team": "t0" } } },
            "ingress": [
                { "action": "Deny", "from": [{ "namespaces": { "matchLabels": { "env": "e3" } } }],
                  "protocols": [{ "tcp": { "destinationPort": { "number": 9100 } } }] },
                { "action": "Accept", "from": [{ "namespaces": {} }] },
            ],
        },
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "operation": "CREATE", "name": "candidate",
            "kind": { "group": "policy.networking.k8s.io", "version": "v1alpha2", "kind": "ClusterNetworkPolicy" },
            "resource": { "group": "policy.networking.k8s.io", "version": "v1alpha2", "resource": "clusternetworkpolicies" },
            "userInfo": { "username": "bench" }, "object": candidate, "oldObject": null, "dryRun": false,
        },
    }))
    .expect("serializable")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Serves `app` over TLS on a loopback port and sends `REQUESTS` requests over one connection.
async fn latencies(app: Router, body: &[u8]) -> Vec<Duration> {
    let (ca, cert, key) = palisade_testkit::serving_certificate().expect("certificate");
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await.expect("tls");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    let server = axum_server::from_tcp_rustls(listener, tls).expect("server");
    tokio::spawn(server.serve(app.into_make_service()));

    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(der.expect("ca")).expect("root");
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let stream = connector.connect("localhost".try_into().expect("name"), tcp).await.expect("handshake");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("http1");
    tokio::spawn(connection);
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS + REQUESTS / 10 {
        let request = hyper::Request::post("/validate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let started = Instant::now();
        sender.ready().await.expect("the connection stays open");
        let response = sender.send_request(request).await.expect("response");
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.into_body().collect().await.expect("body");
        // The first tenth warms up connections and caches.
        if i >= REQUESTS / 10 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    times
}

/// Where one request's time goes, without HTTP and TLS.
fn breakdown(contents: &Contents, body: &[u8]) {
    let runs = 300;
    let started = Instant::now();
    for _ in 0..runs {
        let _ = palisade_webhook::review::decode(body).expect("a review");
    }
    let decode = started.elapsed() / runs;
    let request = palisade_webhook::review::decode(body).expect("a review");
    let started = Instant::now();
    for _ in 0..runs {
        let _ = palisade_webhook::review::judge(&request, contents, ConflictMode::Reject);
    }
    let judge = started.elapsed() / runs;
    let object = serde_json::to_value(request.object.as_ref().expect("object")).expect("json");
    let started = Instant::now();
    for _ in 0..runs {
        let _ = palisade_webhook::objects::read(&object, "default");
    }
    let read = started.elapsed() / runs;
    let Ok(palisade_webhook::objects::Object::Policy(candidate)) = palisade_webhook::objects::read(&object, "default")
    else {
        panic!("the candidate reads")
    };
    let time = |existing: bool, objects: bool| {
        let started = Instant::now();
        for _ in 0..runs {
            let policies: Vec<&Policy> =
                if existing { contents.neighbours_of(&candidate).collect() } else { Vec::new() };
            let _ =
                palisade_engine::analysis::admission(&candidate, None, policies, objects.then_some(&contents.cluster));
        }
        started.elapsed() / runs
    };
    println!(
        "  one request without HTTP: decode {decode:?}, judge {judge:?} (reading the object {read:?}; analysis alone {:?}, with the policies {:?}, with the objects {:?})",
        time(false, false),
        time(true, false),
        time(false, true)
    );
}

/// Resident memory of this process, in MiB (Linux).
fn resident_mib() -> f64 {
    let pages: f64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1).and_then(|field| field.parse().ok()))
        .unwrap_or(f64::NAN);
    pages * 4096.0 / (1024.0 * 1024.0)
}

async fn admission_figures() {
    let body = review_body();
    let before = resident_mib();
    let contents = contents();
    println!(
        "  the cache with {POLICIES} ClusterNetworkPolicies and {PODS} pods: about {:.0} MiB resident",
        resident_mib() - before
    );
    breakdown(&contents, &body);
    let cache = Arc::new(Cache::preloaded(contents));
    let webhook = latencies(admission_router(cache, ConflictMode::Reject, Metrics::default()), &body).await;
    let canned: Value = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": { "uid": "bench", "allowed": true },
    });
    let noop = Router::new().route("/validate", post(move || async move { axum::Json(canned.clone()) }));
    let baseline = latencies(noop, &body).await;
    let (p50, p99) = (percentile(&webhook, 0.5), percentile(&webhook, 0.99));
    let (b50, b99) = (percentile(&baseline, 0.5), percentile(&baseline, 0.99));
    println!(
        "webhook admission, {POLICIES} ClusterNetworkPolicies and {PODS} pods cached, {REQUESTS} requests over one TLS connection:\n  \
         palisade p50 {p50:?} p99 {p99:?}; no-op handler p50 {b50:?} p99 {b99:?}; p99 ratio {:.2}x (goal <= 2x)",
        p99.as_secs_f64() / b99.as_secs_f64()
    );
}

fn lint_figures() {
    let sources: Vec<Source> = (0..50)
        .map(|file| {
            let text: String = (0..POLICIES / 50)
                .map(|k| {
                    let policy = cluster_policy(file * (POLICIES / 50) + k);
                    let rules: Vec<Value> = policy
                        .ingress
                        .iter()
                        .map(|rule| {
                            let CnpPeer::Namespaces(peer) = &rule.peers[0] else {
                                unreachable!("benchmark rules name namespaces")
                            };
                            let port = match &rule.protocols.as_ref().expect("ports")[0] {
                                CnpProtocol::Port { port: CnpPort::Number(number), .. } => *number,
                                _ => unreachable!("benchmark rules name one port"),
                            };
                            json!({
                                "action": format!("{:?}", rule.action),
                                "from": [{ "namespaces": { "matchLabels": peer.match_labels } }],
                                "protocols": [{ "tcp": { "destinationPort": { "number": port } } }],
                            })
                        })
                        .collect();
                    let CnpSubject::Namespaces(subject) = &policy.subject else {
                        unreachable!("benchmark subjects are namespaces")
                    };
                    let manifest = json!({
                        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                        "metadata": { "name": policy.name },
                        "spec": {
                            "tier": format!("{:?}", policy.tier), "priority": policy.priority,
                            "subject": { "namespaces": { "matchLabels": subject.match_labels } },
                            "ingress": rules,
                        },
                    });
                    format!("---\n{}", serde_saphyr::to_string(&manifest).expect("yaml"))
                })
                .collect();
            Source { name: format!("policies-{file}.yaml"), text }
        })
        .collect();
    let time = |f: &dyn Fn() -> usize| {
        let mut best = Duration::MAX;
        let mut count = 0;
        for _ in 0..3 {
            let started = Instant::now();
            count = f();
            best = best.min(started.elapsed());
        }
        (best, count)
    };
    let (parse, documents) = time(&|| lint::parse(&sources).0.len());
    let (linted, diagnostics) = time(&|| lint::lint(&sources).diagnostics.len());
    println!(
        "palisade lint, {POLICIES} policies in 50 files: lint {linted:?} ({diagnostics} findings), parsing alone {parse:?} ({documents} documents); ratio {:.2}x (goal <= 3x)",
        linted.as_secs_f64() / parse.as_secs_f64()
    );
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // For profiling: only the request without HTTP, many times.
    if std::env::var_os("PALISADE_BENCH_JUDGE_ONLY").is_some() {
        let (contents, body) = (contents(), review_body());
        let request = palisade_webhook::review::decode(&body).expect("a review");
        for _ in 0..5000 {
            let _ = palisade_webhook::review::judge(&request, &contents, ConflictMode::Reject);
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(admission_figures());
    lint_figures();
}
