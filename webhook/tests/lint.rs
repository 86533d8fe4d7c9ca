//! `palisade lint` over a corpus of manifests: golden reports in the three formats, the SARIF
//! report valid against the SARIF 2.1.0 schema, exit codes, and inputs it must not choke on.

use std::path::PathBuf;

use palisade_webhook::lint::{Source, lint, sources};
use serde_json::Value;

fn corpus() -> Vec<Source> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut found = sources(std::slice::from_ref(&dir)).expect("the corpus reads");
    // Names relative to the crate, so the golden files do not depend on the checkout's path.
    for source in &mut found {
        let relative = PathBuf::from(&source.name).strip_prefix(&dir).map(|p| p.display().to_string());
        source.name = format!("corpus/{}", relative.expect("a corpus file"));
    }
    found
}

#[test]
fn human_report_reads_like_a_compiler() {
    let report = lint(&corpus());
    insta::assert_snapshot!("human", report.human());
    assert_eq!(report.exit_code(false), 2, "the corpus holds errors");
}

#[test]
fn json_report() {
    insta::assert_snapshot!("json", lint(&corpus()).json());
}

#[test]
fn sarif_report_is_valid_sarif_2_1_0() {
    let sarif = lint(&corpus()).sarif();
    let schema: Value = serde_json::from_str(include_str!("data/sarif-2.1.0-rtm.5.json")).expect("the schema parses");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let log: Value = serde_json::from_str(&sarif).expect("SARIF is JSON");
    let errors: Vec<String> =
        validator.iter_errors(&log).map(|error| format!("{}: {error}", error.instance_path)).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And it must say something: one result per diagnostic, each with a rule the driver declares.
    let results = log["runs"][0]["results"].as_array().expect("results");
    assert!(results.len() >= 10, "{results:#?}");
    let rules: Vec<&str> = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|rule| rule["id"].as_str())
        .collect();
    assert!(results.iter().all(|result| rules.contains(&result["ruleId"].as_str().unwrap_or_default())));
    insta::assert_snapshot!("sarif", sarif);
}

fn text(name: &str, text: &str) -> Source {
    Source { name: name.into(), text: text.into() }
}

#[test]
fn exit_codes_are_0_clean_1_strict_warnings_2_errors() {
    let clean = text(
        "clean.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: a}\nspec: {podSelector: {}}\n",
    );
    assert_eq!(lint(std::slice::from_ref(&clean)).exit_code(true), 0, "{}", lint(&[clean]).human());

    let warning = text(
        "warn.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: hosts, namespace: a}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.1/8}\n",
    );
    let report = lint(&[warning]);
    assert_eq!((report.exit_code(false), report.exit_code(true)), (0, 1), "{}", report.human());

    let error = text(
        "error.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: a}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 90, endPort: 80}\n",
    );
    assert_eq!(lint(&[error]).exit_code(false), 2);
}

#[test]
fn garbage_is_an_error_with_a_line_not_a_crash() {
    let inputs = [
        text("tabs.yaml", "a: b\n---\n\t- : : [\n"),
        text("nokind.yaml", "apiVersion: v1\nmetadata: {name: x}\n"),
        text(
            "wrongtype.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: a}\nspec: {podSelector: 7}\n",
        ),
        text(
            "oldversion.yaml",
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: ClusterNetworkPolicy\nmetadata: {name: x}\nspec: {}\n",
        ),
        text("scalar.yaml", "just a string\n"),
        text("empty.yaml", ""),
    ];
    let report = lint(&inputs);
    let files: Vec<(&str, usize)> = report.diagnostics.iter().map(|d| (d.file.as_str(), d.line)).collect();
    assert!(files.contains(&("tabs.yaml", 3)), "{}", report.human());
    for name in ["nokind.yaml", "wrongtype.yaml", "oldversion.yaml", "scalar.yaml"] {
        assert!(files.iter().any(|(file, _)| *file == name), "{name}: {}", report.human());
    }
    assert_eq!(report.exit_code(false), 2);
}
