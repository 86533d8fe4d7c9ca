//! The webhook behind a real kube-apiserver: registered with a ValidatingWebhookConfiguration
//! (TLS, CA bundle), judged through `kubectl apply`, as a user meets it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use palisade_testkit::ControlPlane;
use palisade_webhook::review::ConflictMode;
use palisade_webhook::server::{self, RunningWebhook, WebhookConfig};
use serde_json::json;

struct Setup {
    plane: ControlPlane,
    webhook: RunningWebhook,
    _dir: tempfile::TempDir,
}

async fn setup(mode: ConflictMode) -> Setup {
    let plane = ControlPlane::start().await.expect("control plane starts (is KUBEBUILDER_ASSETS set?)");
    let manifests: Vec<String> = palisade_crds::manifests().into_iter().map(|(_, yaml)| yaml).collect();
    let docs: Vec<&str> = manifests.iter().map(String::as_str).collect();
    plane.install_crds(&docs).await.expect("CRDs install");
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = palisade_testkit::serving_certificate().expect("certificate");
    std::fs::write(dir.path().join("tls.crt"), cert).expect("write cert");
    std::fs::write(dir.path().join("tls.key"), key).expect("write key");
    let webhook = server::start(WebhookConfig {
        kubeconfig: Some(plane.kubeconfig_path().to_path_buf()),
        address: "127.0.0.1:0".parse().expect("address"),
        tls_certificate: dir.path().join("tls.crt"),
        tls_key: dir.path().join("tls.key"),
        probe_address: "127.0.0.1:0".parse().expect("address"),
        conflicts: mode,
        tls_reload: Duration::from_secs(10),
    })
    .await
    .expect("webhook starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !webhook.cache.is_synced() {
        assert!(Instant::now() < deadline, "the webhook's cache never listed the cluster");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = plane.admin_client().expect("client");
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": "palisade" },
        "webhooks": [{
            "name": "policies.palisade.dev",
            "clientConfig": {
                "url": format!("https://127.0.0.1:{}/validate", webhook.address.port()),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca),
            },
            "rules": [
                { "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"], "resources": ["networkpolicies"],
                  "operations": ["CREATE", "UPDATE", "DELETE"] },
                { "apiGroups": ["policy.networking.k8s.io"], "apiVersions": ["v1alpha2"], "resources": ["clusternetworkpolicies"],
                  "operations": ["CREATE", "UPDATE", "DELETE"] },
            ],
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .expect("configuration");
    Api::<ValidatingWebhookConfiguration>::all(client)
        .create(&PostParams::default(), &configuration)
        .await
        .expect("register the webhook");
    Setup { plane, webhook, _dir: dir }
}

struct Applied {
    ok: bool,
    output: String,
}

fn kubectl(kubeconfig: &Path, args: &[&str], manifest: &str) -> Applied {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write manifest");
    let output = child.wait_with_output().expect("kubectl finishes");
    Applied {
        ok: output.status.success(),
        output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    }
}

fn apply(plane: &ControlPlane, manifest: &str) -> Applied {
    kubectl(plane.kubeconfig_path(), &["apply", "-f", "-"], manifest)
}

const ALLOW_WEB: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: allow-web
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces:
      matchLabels: {team: web}
  ingress:
  - name: a
    action: Accept
    from:
    - namespaces:
        matchLabels: {env: prod}
    protocols:
    - tcp:
        destinationPort: {number: 80}
"#;

const DENY_WEB: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: deny-web
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces:
      matchLabels: {team: web}
  ingress:
  - name: d
    action: Deny
    from:
    - namespaces: {}
"#;

const REDUNDANT: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: default
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {}
  - from:
    - namespaceSelector:
        matchLabels: {env: prod}
"#;

/// Applies with `--dry-run=server` until the webhook's cache has seen what came before and the
/// answer is `wanted` (the API server and the cache learn of changes a moment later).
fn wait_for_dry_run(plane: &ControlPlane, manifest: &str, wanted_ok: bool) -> Applied {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = kubectl(plane.kubeconfig_path(), &["apply", "--dry-run=server", "-f", "-"], manifest);
        if applied.ok == wanted_ok || Instant::now() > deadline {
            return applied;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_a_contradictory_pair_refuses_the_second_with_the_explanation() {
    let setup = setup(ConflictMode::Reject).await;
    let plane = &setup.plane;
    let first = apply(plane, ALLOW_WEB);
    assert!(first.ok, "{}", first.output);

    let dry = wait_for_dry_run(plane, DENY_WEB, false);
    assert!(!dry.ok, "the contradictory policy was admitted: {}", dry.output);
    let refused = apply(plane, DENY_WEB);
    println!("kubectl apply of the second policy:\n{}", refused.output);
    assert!(!refused.ok, "{}", refused.output);
    assert!(refused.output.contains("denied the request"), "{}", refused.output);
    assert!(
        refused.output.contains(
            "ClusterNetworkPolicy \"deny-web\" ingress rule \"d\" (Deny) and ClusterNetworkPolicy \"allow-web\" ingress rule \"a\" (Accept) have the same tier (Admin) and priority (10)"
        ),
        "{}",
        refused.output
    );
    let listed = kubectl(plane.kubeconfig_path(), &["get", "clusternetworkpolicies", "-o", "name"], "");
    assert!(!listed.output.contains("deny-web"), "{}", listed.output);

    // Re-applying the admitted policy, unchanged or edited without a new conflict, is admitted:
    // it is never compared with its own older version.
    let again = apply(plane, ALLOW_WEB);
    assert!(again.ok, "{}", again.output);
    let edited = apply(plane, &ALLOW_WEB.replace("number: 80", "number: 8080"));
    assert!(edited.ok, "{}", edited.output);

    // At another priority the pair is fine.
    let elsewhere = apply(plane, &DENY_WEB.replace("priority: 10", "priority: 11"));
    assert!(elsewhere.ok, "{}", elsewhere.output);

    // DELETE is always admitted.
    let deleted = kubectl(plane.kubeconfig_path(), &["delete", "clusternetworkpolicy", "allow-web"], "");
    assert!(deleted.ok, "{}", deleted.output);
    setup.webhook.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_policy_is_admitted_and_kubectl_prints_its_warnings() {
    let setup = setup(ConflictMode::Reject).await;
    let applied = apply(&setup.plane, REDUNDANT);
    assert!(applied.ok, "{}", applied.output);
    assert!(applied.output.contains("Warning:"), "{}", applied.output);
    assert!(applied.output.contains("ingress rule 1 (Accept) is redundant"), "{}", applied.output);
    setup.webhook.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_warn_mode_a_contradiction_is_admitted_with_a_warning() {
    let setup = setup(ConflictMode::Warn).await;
    let plane = &setup.plane;
    assert!(apply(plane, ALLOW_WEB).ok);
    // Wait until the webhook has seen the first policy: the dry run then warns.
    let deadline = Instant::now() + Duration::from_secs(30);
    let warned = loop {
        let dry = kubectl(plane.kubeconfig_path(), &["apply", "--dry-run=server", "-f", "-"], DENY_WEB);
        if dry.output.contains("would be refused") || Instant::now() > deadline {
            break dry;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(warned.ok && warned.output.contains("would be refused"), "{}", warned.output);
    setup.webhook.shutdown().await.expect("clean shutdown");
}
