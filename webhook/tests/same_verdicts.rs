//! Lint and the webhook give the same verdicts on the same objects: over the lint corpus, each
//! policy is refused by the webhook (created after the policies before it) exactly when lint
//! reports an error for it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use palisade_webhook::cache::Contents;
use palisade_webhook::lint::{self, Document};
use palisade_webhook::objects::{self, Object};
use palisade_webhook::review::{ConflictMode, Outcome, decode, judge};
use serde_json::{Value, json};

fn create(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "same", "operation": "CREATE", "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "kind": { "group": "", "version": "", "kind": object["kind"] },
            "resource": { "group": "", "version": "", "resource": "" },
            "userInfo": { "username": "test" }, "object": object, "oldObject": null, "dryRun": false,
        },
    }))
    .expect("serializable")
}

#[test]
fn lint_errors_and_webhook_refusals_name_the_same_objects() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let sources = lint::sources(&[dir]).expect("the corpus reads");
    let report = lint::lint(&sources);
    let linted: BTreeSet<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == palisade_engine::analysis::Severity::Error)
        .map(|d| d.object.clone())
        .collect();

    let (documents, unparsable) = lint::parse(&sources);
    assert!(unparsable.is_empty(), "the corpus parses");
    let values: Vec<&Value> = documents
        .iter()
        .flat_map(|Document { value, .. }| match value["items"].as_array() {
            Some(items) if objects::is_list(value) => items.iter().collect(),
            _ => vec![value],
        })
        .collect();
    let mut contents = Contents::default();
    for value in &values {
        match objects::read(value, "default") {
            Ok(Object::Namespace(namespace)) => {
                contents.cluster.namespaces.insert(namespace.name.clone(), namespace);
            }
            Ok(Object::Pod(pod)) => {
                contents.cluster.pods.insert(pod.key.clone(), pod);
            }
            _ => {}
        }
    }
    let mut refused = BTreeSet::new();
    let mut judged = 0;
    for value in &values {
        let kind = value["kind"].as_str().unwrap_or_default();
        if kind != "NetworkPolicy" && kind != "ClusterNetworkPolicy" {
            continue;
        }
        judged += 1;
        let request = decode(&create(value)).expect("a review");
        let (_, outcome) = judge(&request, &contents, ConflictMode::Reject);
        if outcome == Outcome::Denied {
            refused.insert(objects::describe(value));
        }
        // Admitted or not, the next policies are judged against it, as lint reads them in order.
        if let Ok(Object::Policy(policy)) = objects::read(value, "default") {
            contents.insert_policy(policy);
        }
    }
    assert!(judged >= 10 && refused.len() >= 5, "the corpus must hold refusals: {refused:?}");
    assert_eq!(refused, linted);
}
