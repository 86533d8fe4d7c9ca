//! The AdmissionReview decoder and judge on bad and arbitrary input: every request gets an
//! answer, nothing panics (a fuzz-style property over arbitrary bytes and arbitrary JSON).

use kube::core::admission::Operation;
use palisade_webhook::cache::Contents;
use palisade_webhook::review::{ConflictMode, Outcome, decode, judge};
use proptest::prelude::*;
use serde_json::{Value, json};

fn review(operation: &str, object: Value, old_object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "policy.networking.k8s.io", "version": "v1alpha2", "kind": "ClusterNetworkPolicy" },
            "resource": { "group": "policy.networking.k8s.io", "version": "v1alpha2", "resource": "clusternetworkpolicies" },
            "name": "p",
            "operation": operation,
            "userInfo": { "username": "admin" },
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
        },
    }))
    .expect("serializable")
}

fn cnp(name: &str, action: &str) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": { "name": name },
        "spec": {
            "tier": "Admin", "priority": 3,
            "subject": { "namespaces": {} },
            "ingress": [{ "action": action, "from": [{ "namespaces": {} }] }],
        },
    })
}

fn contents_with(policies: &[Value]) -> Contents {
    let mut contents = Contents::default();
    for value in policies {
        if let Ok(palisade_webhook::objects::Object::Policy(policy)) = palisade_webhook::objects::read(value, "default")
        {
            contents.insert_policy(policy);
        }
    }
    contents
}

#[test]
fn delete_is_always_admitted_and_a_conflict_is_refused_with_403() {
    let contents = contents_with(&[cnp("accept-all", "Accept")]);
    let request = decode(&review("DELETE", Value::Null, cnp("deny-all", "Deny"))).expect("a review");
    assert_eq!(request.operation, Operation::Delete);
    assert_eq!(judge(&request, &contents, ConflictMode::Reject).1, Outcome::Allowed);

    let request = decode(&review("CREATE", cnp("deny-all", "Deny"), Value::Null)).expect("a review");
    let (response, outcome) = judge(&request, &contents, ConflictMode::Reject);
    assert_eq!(outcome, Outcome::Denied);
    assert!(!response.allowed);
    assert_eq!(response.result.code, 403);
    assert!(response.result.message.contains("\"accept-all\""), "{}", response.result.message);

    // The same policy against itself (an update of the conflicting one) is no conflict.
    let request = decode(&review("UPDATE", cnp("accept-all", "Accept"), cnp("accept-all", "Accept"))).expect("review");
    assert_eq!(judge(&request, &contents, ConflictMode::Reject).1, Outcome::Allowed);
}

#[test]
fn malformed_reviews_are_errors_not_panics() {
    for body in [&b""[..], b"{", b"[]", b"{\"kind\":\"AdmissionReview\"}", b"\xff\xfe", b"{\"request\": 7}"] {
        assert!(decode(body).is_err(), "{:?} decoded", String::from_utf8_lossy(body));
    }
}

#[test]
fn an_unreadable_policy_is_refused_with_its_field() {
    let mut broken = cnp("broken", "Deny");
    broken["spec"]["priority"] = json!(5000);
    let request = decode(&review("CREATE", broken, Value::Null)).expect("a review");
    let (response, outcome) = judge(&request, &Contents::default(), ConflictMode::Reject);
    assert_eq!(outcome, Outcome::Denied);
    assert!(response.result.message.contains("spec.priority"), "{}", response.result.message);
}

/// JSON shaped like policies: keys from the fields the decoder reads, values of any type.
fn arb_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "spec",
        "tier",
        "priority",
        "subject",
        "namespaces",
        "pods",
        "podSelector",
        "namespaceSelector",
        "matchLabels",
        "matchExpressions",
        "key",
        "operator",
        "values",
        "ingress",
        "egress",
        "from",
        "to",
        "action",
        "protocols",
        "tcp",
        "destinationPort",
        "number",
        "range",
        "networks",
        "nodes",
        "ports",
        "port",
        "endPort",
        "protocol",
        "ipBlock",
        "cidr",
        "except",
        "policyTypes",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "Admin",
            "Baseline",
            "Accept",
            "Deny",
            "Pass",
            "In",
            "NotIn",
            "Exists",
            "10.0.0.0/8",
            "::/0",
            "TCP",
            "web",
            "policy.networking.k8s.io/v1alpha2",
            "ClusterNetworkPolicy",
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "",
        ])
        .prop_map(|text| json!(text)),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(str::to_string), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&body);
    }

    #[test]
    fn arbitrary_objects_get_an_answer(spec in arb_json(), kind in 0..3usize) {
        let (api_version, kind) = [
            ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("v1", "ConfigMap"),
        ][kind];
        let object = json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": { "name": "fuzzed", "namespace": "default" },
            "spec": spec,
        });
        let contents = contents_with(&[cnp("accept-all", "Accept")]);
        let request = decode(&review("CREATE", object, Value::Null));
        prop_assert!(request.is_ok(), "{:?}", request.err());
        let (response, _) = judge(&request.expect("checked"), &contents, ConflictMode::Reject);
        prop_assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    }
}
