//! Upstream's example manifests (`tests/upstream/`, see its README) against our types: every
//! valid one deserializes unchanged, serializes back to the same JSON (no field lost), passes
//! the generated schema and converts to the engine model; every invalid one is rejected with the
//! JSON path of the offending field.

use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_crds::cnp::{ClusterNetworkPolicySpec, RuleAction};
use palisade_crds::{ClusterNetworkPolicy, convert, validate};
use palisade_engine::model as m;
use serde_json::{Value, json};

const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";

fn documents(dir: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream").join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no examples in {}", dir.display());
    paths
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> =
                serde_saphyr::from_str_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.into_iter().filter(|d| !d.is_null()).map(move |d| (path.clone(), d))
        })
        .collect()
}

fn assert_fully_known(path: &Path, policy: &m::ClusterNetworkPolicy) {
    assert!(!matches!(policy.subject, m::CnpSubject::Invalid(_)), "{}: subject", path.display());
    for rule in policy.ingress.iter().chain(&policy.egress) {
        assert!(!rule.peers.contains(&m::CnpPeer::Unknown), "{}: peers {:?}", path.display(), rule.peers);
        let protocols = rule.protocols.iter().flatten();
        assert!(protocols.clone().all(|p| *p != m::CnpProtocol::Unknown), "{}: protocols", path.display());
    }
}

#[test]
fn valid_examples_round_trip_validate_and_convert() {
    let mut count = 0;
    for (path, document) in documents("valid") {
        assert_eq!(document["apiVersion"], API_VERSION, "{}", path.display());
        assert_eq!(document["kind"], "ClusterNetworkPolicy", "{}", path.display());
        let typed: ClusterNetworkPolicy =
            serde_json::from_value(document.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            document,
            "{}: round trip lost or changed fields",
            path.display()
        );
        assert_eq!(validate::cluster_network_policy_value(&document), vec![], "{}", path.display());
        assert_eq!(validate::cluster_network_policy(&typed), vec![], "{}", path.display());
        let converted = convert::cluster_network_policy(&typed).unwrap();
        assert_eq!(converted.name, typed.metadata.name.clone().unwrap());
        assert_fully_known(&path, &converted);
        count += 1;
    }
    assert!(count >= 12, "only {count} valid examples");
}

#[test]
fn omitted_namespace_selector_means_all_namespaces() {
    let (_, document) = documents("valid")
        .into_iter()
        .find(|(p, _)| p.ends_with("conformance-admin-gress-omitted-namespaceselector.yaml"))
        .unwrap();
    let typed: ClusterNetworkPolicy = serde_json::from_value(document).unwrap();
    let converted = convert::cluster_network_policy(&typed).unwrap();
    let m::CnpPeer::Pods { namespace_selector, pod_selector } = &converted.ingress[0].peers[0] else {
        panic!("{:?}", converted.ingress[0].peers)
    };
    assert_eq!(*namespace_selector, m::LabelSelector::default());
    assert_eq!(pod_selector.match_expressions[0].operator, m::SelectorOperator::Exists);
}

#[test]
fn invalid_examples_are_rejected_with_the_field_path() {
    let expected_paths = [
        ("invalid-ingress-action.yaml", "spec.ingress[0].action"),
        ("cidr-invalid.yaml", "spec.egress[0].to[0].networks[0]"),
        ("port-range-invalid-equal.yaml", "spec.egress[0].protocols[0].tcp.destinationPort.range"),
        ("port-range-invalid-greater.yaml", "spec.egress[0].protocols[0].tcp.destinationPort.range"),
        ("invalid-named-port-networks-peer.yaml", "spec.egress[0]"),
    ];
    let documents = documents("invalid");
    assert_eq!(documents.len(), expected_paths.len());
    for (path, document) in documents {
        let file = path.file_name().unwrap().to_str().unwrap();
        let (_, expected_path) = expected_paths.iter().find(|(name, _)| *name == file).unwrap();
        let violations = validate::cluster_network_policy_value(&document);
        assert!(violations.iter().any(|v| v.path == *expected_path), "{file}: {violations:?}");
        // The typed object still deserializes (unknown values are kept), and is still rejected.
        let typed: ClusterNetworkPolicy = serde_json::from_value(document).unwrap();
        assert!(validate::cluster_network_policy(&typed).iter().any(|v| v.path == *expected_path), "{file}");
    }
}

#[test]
fn invalid_action_is_kept_and_refused_by_conversion() {
    let (_, document) =
        documents("invalid").into_iter().find(|(p, _)| p.ends_with("invalid-ingress-action.yaml")).unwrap();
    // `namespaces.namespaceSelector` is not a LabelSelector field: the API server would prune it
    // (and so does deserialization into the typed object).
    let violations = validate::cluster_network_policy_value(&document);
    let typed: ClusterNetworkPolicy = serde_json::from_value(document).unwrap();
    assert_eq!(typed.spec.ingress[0].action, RuleAction::Unknown("Invalid".into()));
    let error = convert::cluster_network_policy(&typed).unwrap_err();
    assert!(error.to_string().contains("spec.ingress[0].action"), "{error}");
    assert!(
        violations.iter().any(|v| v.path == "spec.ingress[0].from[0].namespaces.namespaceSelector"),
        "{violations:?}"
    );
}

#[test]
fn v1beta1_examples_have_the_same_spec_schema() {
    let mut policies = 0;
    for (path, mut document) in documents("v1beta1") {
        match document["kind"].as_str() {
            Some("ClusterNetworkPolicy") => {
                assert_eq!(document["apiVersion"], "policy.networking.k8s.io/v1beta1");
                let spec: ClusterNetworkPolicySpec = serde_json::from_value(document["spec"].clone()).unwrap();
                assert_eq!(serde_json::to_value(&spec).unwrap(), document["spec"], "{}", path.display());
                document["apiVersion"] = json!(API_VERSION);
                assert_eq!(validate::cluster_network_policy_value(&document), vec![], "{}", path.display());
                let typed: ClusterNetworkPolicy = serde_json::from_value(document).unwrap();
                assert_fully_known(&path, &convert::cluster_network_policy(&typed).unwrap());
                policies += 1;
            }
            Some("NetworkPolicy") => {
                let np: NetworkPolicy = serde_json::from_value(document).unwrap();
                let converted = convert::network_policy(&np).unwrap();
                // `podSelector:` with no value selects every pod; policyTypes were written out.
                assert_eq!(converted.pod_selector, m::LabelSelector::default());
                assert_eq!(converted.policy_types, Some(vec![m::PolicyType::Ingress, m::PolicyType::Egress]));
                let peer = &converted.ingress[0].peers[0];
                assert_eq!(peer.namespace_selector.as_ref().unwrap().match_labels["conformance-house"], "slytherin");
                assert_eq!(peer.pod_selector, None);
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
    assert!(policies >= 4);
}

#[test]
fn typed_objects_are_checked_for_bounds_and_counts() {
    let rule = json!({ "action": "Deny", "name": "x".repeat(101), "from": [] });
    let document = json!({
        "apiVersion": API_VERSION, "kind": "ClusterNetworkPolicy", "metadata": { "name": "bounds" },
        "spec": {
            "tier": "Middle", "priority": 1001,
            "subject": { "namespaces": {}, "pods": { "podSelector": {} } },
            "ingress": vec![rule; 26],
            "egress": [{ "action": "Accept", "to": [{ "networks": ["10.0.0.0/8", "10.0.0.0/8"] }],
                         "protocols": [{ "tcp": { "destinationPort": { "number": 0 } } }] }],
        },
    });
    let typed: ClusterNetworkPolicy = serde_json::from_value(document).unwrap();
    let paths: Vec<String> = validate::cluster_network_policy(&typed).into_iter().map(|v| v.path).collect();
    for expected in [
        "spec.tier",
        "spec.priority",
        "spec.subject",
        "spec.ingress",
        "spec.ingress[25].name",
        "spec.ingress[0].from",
        "spec.egress[0].to[0].networks[1]",
        "spec.egress[0].protocols[0].tcp.destinationPort.number",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}");
    }
}
