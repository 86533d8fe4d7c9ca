//! Smoke tests of the control plane: the real apiserver answers, CRDs install, RBAC is enforced.

use std::time::Instant;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use palisade_testkit::ControlPlane;

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testkit.palisade.dev
spec:
  group: testkit.palisade.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let version = plane.admin_client().expect("client").apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, "v1.34.4");
    assert!(plane.apiserver_url().starts_with("https://127.0.0.1:"));
    assert!(plane.ca_pem().contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn inline_crd_becomes_established_and_serves_objects() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let names = plane.install_crds(&[WIDGET_CRD]).await.expect("install CRD");
    assert_eq!(names, vec!["widgets.testkit.palisade.dev".to_string()]);

    let namespace = plane.unique_namespace("crd").await.expect("namespace");
    let resource = ApiResource {
        group: "testkit.palisade.dev".into(),
        version: "v1".into(),
        api_version: "testkit.palisade.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(plane.admin_client().expect("client"), &namespace, &resource);
    let widget: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "testkit.palisade.dev/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    }))
    .expect("widget");
    widgets.create(&PostParams::default(), &widget).await.expect("create widget");
    let read = widgets.get("w1").await.expect("get widget");
    assert_eq!(read.data["spec"]["size"], 3);
}

/// The project's generated CRDs, when they exist, must install too.
#[tokio::test]
async fn project_crds_install_when_generated() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/palisade/crds");
    let mut texts = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                texts.push(std::fs::read_to_string(&path).expect("read CRD manifest"));
            }
        }
    }
    if texts.is_empty() {
        eprintln!("no CRD manifests under {} yet; nothing to install", dir.display());
        return;
    }
    let plane = ControlPlane::shared().await.expect("control plane");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let names = plane.install_crds(&refs).await.expect("install project CRDs");
    assert!(!names.is_empty(), "manifests under {} held no CRD", dir.display());
}

#[tokio::test]
async fn rbac_denies_a_fresh_service_account_until_a_role_is_bound() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let namespace = plane.unique_namespace("rbac").await.expect("namespace");
    let token = plane.service_account_token(&namespace, "agent", &[]).await.expect("TokenRequest");

    let as_agent = plane.client_for_token(&token).expect("token client");
    let review: SelfSubjectReview = Api::all(as_agent.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("the token authenticates");
    let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(user.as_deref(), Some(format!("system:serviceaccount:{namespace}:agent").as_str()));

    let pods: Api<Pod> = Api::namespaced(as_agent, &namespace);
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "expected Forbidden, got {status:?}"),
        other => panic!("listing pods without a role must be forbidden, got {other:?}"),
    }

    let admin = plane.admin_client().expect("admin");
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}]
    }))
    .expect("binding");
    Api::<Role>::namespaced(admin.clone(), &namespace).create(&PostParams::default(), &role).await.expect("role");
    Api::<RoleBinding>::namespaced(admin, &namespace).create(&PostParams::default(), &binding).await.expect("binding");
    // The RBAC authorizer reads from an informer: allow it a moment to see the binding.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                assert!(list.items.is_empty());
                break;
            }
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("still denied after binding a role: {error}"),
        }
    }
}

#[tokio::test]
async fn kubeconfig_works_for_other_processes_and_user_certificates_are_subject_to_rbac() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let path = tempfile::NamedTempFile::new().expect("temp file");
    plane.write_kubeconfig(path.path()).expect("write kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(path.path()).expect("parse kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(config).expect("client");
    Api::<Pod>::all(client).list(&ListParams::default()).await.expect("admin lists pods via the kubeconfig");

    let user = plane.client_for_user("someone", Some("some-group")).expect("user client");
    match Api::<Pod>::all(user).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("an unbound user must be forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn private_control_plane_starts_and_cleans_up_on_drop() {
    let started = Instant::now();
    let plane = ControlPlane::start().await.expect("private control plane");
    eprintln!("private control plane ready in {:.2?}", started.elapsed());
    let client = plane.admin_client().expect("client");
    client.apiserver_version().await.expect("version");
    let dir = plane.data_dir().to_path_buf();
    assert!(dir.join("apiserver.log").is_file());
    drop(plane);
    assert!(!dir.exists(), "temp dir {} must be removed on drop", dir.display());
    assert!(client.apiserver_version().await.is_err(), "apiserver must be gone after drop");
}
