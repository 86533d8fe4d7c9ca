//! Label selectors: a witness for every selector that can match, and field-path errors for
//! those that cannot.
//!
//! A selector that no labels can satisfy (`team: web` together with `team NotIn [web]`) passes
//! the schema and silently selects nothing, so the policy looks enforced and is not.

use std::collections::BTreeSet;

use super::space::{LabelSpace, Literal};
use crate::error::PolicyError;
use crate::model::{CnpPeer, CnpSubject, LabelSelector, Labels, Policy, SelectorOperator};

/// Why no labels satisfy a selector: the first key whose requirements exclude each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsatisfiable {
    pub key: String,
    pub reason: String,
}

/// The selector's requirements as literals: `matchLabels` first, then the expressions.
pub(crate) fn literals(selector: &LabelSelector) -> Vec<Literal> {
    let mut all: Vec<Literal> = selector.match_labels.iter().map(|(key, value)| Literal::equals(key, value)).collect();
    all.extend(selector.match_expressions.iter().map(Literal::of));
    all
}

/// Labels that the selector matches, or the key that makes that impossible. The labels carry
/// only the keys the selector requires (a key that only `NotIn` or `DoesNotExist` names is left out).
///
/// A selector with an `Unknown` operator matches nothing (validation rejects it anyway).
pub fn selector_witness(selector: &LabelSelector) -> Result<Labels, Unsatisfiable> {
    let mut space = LabelSpace::default();
    for literal in literals(selector) {
        if !space.restrict(&literal) {
            return Err(Unsatisfiable { reason: why_unsatisfiable(selector, &literal), key: literal.key });
        }
    }
    Ok(space.witness())
}

/// Explains, in the selector's own terms, why the requirements on `failed.key` exclude each other.
fn why_unsatisfiable(selector: &LabelSelector, failed: &Literal) -> String {
    if let SelectorOperator::Unknown(operator) = &failed.operator {
        return format!("operator {operator:?} matches nothing");
    }
    let on_key: Vec<Literal> = literals(selector).into_iter().filter(|literal| literal.key == failed.key).collect();
    let has = |operator: SelectorOperator| on_key.iter().any(|literal| literal.operator == operator);
    let needed = has(SelectorOperator::In) || has(SelectorOperator::Exists);
    if has(SelectorOperator::DoesNotExist) && needed {
        return "it must exist (matchLabels, In or Exists) and must not exist (DoesNotExist)".into();
    }
    let mut allowed: Option<BTreeSet<&String>> = None;
    for literal in on_key.iter().filter(|literal| literal.operator == SelectorOperator::In) {
        let values: BTreeSet<&String> = literal.values.iter().collect();
        allowed = Some(match allowed {
            None => values,
            Some(previous) => previous.intersection(&values).copied().collect(),
        });
    }
    match allowed {
        Some(allowed) if !allowed.is_empty() => format!(
            "every value it may have ({}) is excluded by NotIn",
            allowed.into_iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => "matchLabels and In require values that exclude each other".into(),
    }
}

/// Every label selector of a policy, with its field path.
pub(crate) fn selectors_of(policy: &Policy) -> Vec<(String, &LabelSelector)> {
    let mut found = Vec::new();
    match policy {
        Policy::Network(np) => {
            found.push(("spec.podSelector".to_string(), &np.pod_selector));
            for (list, peers_field, rules) in [("ingress", "from", &np.ingress), ("egress", "to", &np.egress)] {
                for (i, rule) in rules.iter().enumerate() {
                    for (j, peer) in rule.peers.iter().enumerate() {
                        let at = format!("spec.{list}[{i}].{peers_field}[{j}]");
                        if let Some(selector) = &peer.namespace_selector {
                            found.push((format!("{at}.namespaceSelector"), selector));
                        }
                        if let Some(selector) = &peer.pod_selector {
                            found.push((format!("{at}.podSelector"), selector));
                        }
                    }
                }
            }
        }
        Policy::Cluster(cnp) => {
            match &cnp.subject {
                CnpSubject::Namespaces(selector) => found.push(("spec.subject.namespaces".to_string(), selector)),
                CnpSubject::Pods { namespace_selector, pod_selector } => {
                    found.push(("spec.subject.pods.namespaceSelector".to_string(), namespace_selector));
                    found.push(("spec.subject.pods.podSelector".to_string(), pod_selector));
                }
                CnpSubject::Invalid(_) => {}
            }
            for (list, peers_field, rules) in [("ingress", "from", &cnp.ingress), ("egress", "to", &cnp.egress)] {
                for (i, rule) in rules.iter().enumerate() {
                    for (j, peer) in rule.peers.iter().enumerate() {
                        let at = format!("spec.{list}[{i}].{peers_field}[{j}]");
                        match peer {
                            CnpPeer::Namespaces(selector) => found.push((format!("{at}.namespaces"), selector)),
                            CnpPeer::Pods { namespace_selector, pod_selector } => {
                                found.push((format!("{at}.pods.namespaceSelector"), namespace_selector));
                                found.push((format!("{at}.pods.podSelector"), pod_selector));
                            }
                            CnpPeer::Nodes(selector) => found.push((format!("{at}.nodes"), selector)),
                            CnpPeer::Networks(_) | CnpPeer::DomainNames(_) | CnpPeer::Unknown => {}
                        }
                    }
                }
            }
        }
    }
    found
}

/// Errors for every selector of the policy that no labels can satisfy, naming its field and the
/// key. Selectors that validation already rejects (an unknown operator, `In` without values)
/// are left to validation, so each problem is reported once.
pub fn unsatisfiable_selectors(policy: &Policy) -> Vec<PolicyError> {
    let reference = policy.reference();
    selectors_of(policy)
        .into_iter()
        .filter(|(field, selector)| selector.problems(field).is_empty())
        .filter_map(|(field, selector)| {
            let why = selector_witness(selector).err()?;
            Some(PolicyError {
                policy: reference.clone(),
                field,
                message: format!("no labels can satisfy this selector: key {:?}: {}", why.key, why.reason),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SelectorRequirement;

    fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|value| value.to_string()).collect(),
        }
    }

    fn selector(labels: &[(&str, &str)], expressions: Vec<SelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            match_expressions: expressions,
        }
    }

    #[test]
    fn a_label_and_its_own_exclusion_cannot_both_hold() {
        let contradictory = selector(&[("team", "web")], vec![requirement("team", SelectorOperator::NotIn, &["web"])]);
        let why = selector_witness(&contradictory).expect_err("unsatisfiable");
        assert_eq!(why.key, "team");
        assert!(why.reason.contains("excluded by NotIn"), "{}", why.reason);
    }

    #[test]
    fn exists_and_does_not_exist_exclude_each_other() {
        let contradictory = selector(
            &[],
            vec![
                requirement("a", SelectorOperator::Exists, &[]),
                requirement("a", SelectorOperator::DoesNotExist, &[]),
            ],
        );
        assert_eq!(selector_witness(&contradictory).expect_err("unsatisfiable").key, "a");
    }

    #[test]
    fn a_witness_avoids_every_excluded_value() {
        let satisfiable = selector(
            &[],
            vec![
                requirement("a", SelectorOperator::Exists, &[]),
                requirement("a", SelectorOperator::NotIn, &["any", "any-1"]),
                requirement("b", SelectorOperator::In, &["x", "y"]),
                requirement("b", SelectorOperator::NotIn, &["x"]),
            ],
        );
        let witness = selector_witness(&satisfiable).expect("satisfiable");
        assert_eq!(witness.get("a").map(String::as_str), Some("any-2"));
        assert_eq!(witness.get("b").map(String::as_str), Some("y"));
        assert!(satisfiable.matches(&witness));
    }
}
