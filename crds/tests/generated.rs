//! The committed manifests under `charts/palisade/crds/` must be exactly what the Rust types generate,
//! and the generated ClusterNetworkPolicy schema must carry every upstream constraint.

use std::path::Path;

use palisade_crds::{ClusterNetworkPolicy, PolicyStatus, crd, openapi_schema};
use serde_json::{Value, json};

#[test]
fn committed_manifests_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/palisade/crds");
    let mut stale = Vec::new();
    for (file_name, expected) in palisade_crds::manifests() {
        let path = dir.join(&file_name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == expected => {}
            Ok(_) => stale.push(format!("{file_name} differs")),
            Err(e) => stale.push(format!("{file_name} cannot be read ({e})")),
        }
    }
    assert!(
        stale.is_empty(),
        "CRD manifests are out of date: {stale:?}; run `make crds` and commit charts/palisade/crds"
    );
}

#[test]
fn manifests_are_deterministic() {
    assert_eq!(palisade_crds::manifests(), palisade_crds::manifests());
}

/// Looks up a dotted path of property names under `openAPIV3Schema`; `[]` steps into `items`.
fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(schema, |node, step| match step {
        "[]" => &node["items"],
        name => &node["properties"][name],
    })
}

#[test]
fn cluster_network_policy_schema_has_upstream_constraints() {
    let crd = crd::<ClusterNetworkPolicy>();
    assert_eq!(crd["metadata"]["name"], "clusternetworkpolicies.policy.networking.k8s.io");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["cnp"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha2");
    assert_eq!(version["subresources"], json!({ "status": {} }));
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Tier", "string", ".spec.tier"),
            ("Priority", "string", ".spec.priority"),
            ("Age", "date", ".metadata.creationTimestamp")
        ]
    );

    let schema = openapi_schema(&crd);
    let expectations: &[(&str, Value)] = &[
        ("spec", json!({ "required": ["priority", "subject", "tier"] })),
        ("spec.tier", json!({ "type": "string", "enum": ["Admin", "Baseline"] })),
        ("spec.priority", json!({ "type": "integer", "format": "int32", "minimum": 0, "maximum": 1000 })),
        ("spec.subject", json!({ "minProperties": 1, "maxProperties": 1 })),
        ("spec.subject.pods", json!({ "required": ["podSelector"] })),
        ("spec.subject.namespaces", json!({ "x-kubernetes-map-type": "atomic" })),
        ("spec.ingress", json!({ "maxItems": 25 })),
        ("spec.ingress.[]", json!({ "required": ["action", "from"] })),
        ("spec.ingress.[].name", json!({ "maxLength": 100 })),
        ("spec.ingress.[].action", json!({ "enum": ["Accept", "Deny", "Pass"] })),
        ("spec.ingress.[].from", json!({ "minItems": 1, "maxItems": 25 })),
        ("spec.ingress.[].from.[]", json!({ "minProperties": 1, "maxProperties": 1 })),
        ("spec.ingress.[].protocols", json!({ "minItems": 1, "maxItems": 25 })),
        ("spec.ingress.[].protocols.[]", json!({ "minProperties": 1, "maxProperties": 1 })),
        ("spec.ingress.[].protocols.[].tcp", json!({ "minProperties": 1 })),
        ("spec.ingress.[].protocols.[].udp.destinationPort", json!({ "minProperties": 1, "maxProperties": 1 })),
        ("spec.ingress.[].protocols.[].sctp.destinationPort.number", json!({ "minimum": 1, "maximum": 65535 })),
        (
            "spec.ingress.[].protocols.[].tcp.destinationPort.range",
            json!({
                "required": ["end", "start"],
                "x-kubernetes-validations": [{ "message": "Start port must be less than End port", "rule": "self.start < self.end" }]
            }),
        ),
        ("spec.ingress.[].protocols.[].destinationNamedPort", json!({ "type": "string" })),
        ("spec.egress", json!({ "maxItems": 25 })),
        ("spec.egress.[]", json!({ "required": ["action", "to"] })),
        ("spec.egress.[].to", json!({ "minItems": 1, "maxItems": 25 })),
        ("spec.egress.[].to.[]", json!({ "minProperties": 1, "maxProperties": 1 })),
        ("spec.egress.[].to.[].pods.namespaceSelector", json!({ "x-kubernetes-map-type": "atomic" })),
        ("spec.egress.[].to.[].nodes", json!({ "x-kubernetes-map-type": "atomic" })),
        ("spec.egress.[].to.[].networks", json!({ "minItems": 1, "maxItems": 25, "x-kubernetes-list-type": "set" })),
        (
            "spec.egress.[].to.[].networks.[]",
            json!({ "maxLength": 43, "x-kubernetes-validations": [{ "message": "Invalid CIDR format provided", "rule": "isCIDR(self)" }] }),
        ),
        ("spec.egress.[].to.[].domainNames", json!({ "minItems": 1, "maxItems": 25, "x-kubernetes-list-type": "set" })),
        ("status", json!({ "required": ["conditions"] })),
        ("status.conditions", json!({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] })),
        ("status.conditions.[].status", json!({ "enum": ["True", "False", "Unknown"] })),
        ("status.conditions.[].reason", json!({ "minLength": 1, "maxLength": 1024 })),
    ];
    for (path, expected) in expectations {
        let node = at(schema, path);
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&node[key], value, "{path}: {key}");
        }
    }
    let egress_rule_rules = &at(schema, "spec.egress.[]")["x-kubernetes-validations"][0]["rule"];
    assert!(egress_rule_rules.as_str().unwrap().contains("has(protocol.destinationNamedPort)"));
    // Upstream's CRD has no defaults and no nullable fields.
    let text = serde_json::to_string(schema).unwrap();
    assert!(!text.contains("\"default\"") && !text.contains("\"nullable\""), "{text}");
}

#[test]
fn policy_status_crd_shape() {
    let crd = crd::<PolicyStatus>();
    assert_eq!(crd["metadata"]["name"], "policystatuses.palisade.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["pst", "pstatus"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"], json!({ "status": {} }));
    let names: Vec<_> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Policy", "Pods", "Nodes-Realized", "Nodes-Desired", "Ready", "Age"]);
    let schema = openapi_schema(&crd);
    assert_eq!(at(schema, "spec")["required"], json!(["policyName", "policyUID"]));
    for field in ["observedGeneration", "selectedPods", "nodesRealized", "nodesDesired", "conditions", "firstErrors"] {
        assert!(at(schema, "status")["properties"].get(field).is_some(), "status.{field}");
    }
    assert_eq!(at(schema, "status.conditions")["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(at(schema, "status.firstErrors.[]")["required"], json!(["message", "node"]));
}
