//! Analysis for admission and `palisade lint`: facts about a policy that hold in every possible
//! cluster, not only in today's objects, each with something a person can check.
//!
//! Validation ([`crate::validate`]) asks what the API server would ask: is each field well formed?
//! Analysis asks whether the policy can mean what it says. It starts here with label selectors:
//! a selector that no labels can satisfy (`team: web` together with `team NotIn [web]`) passes
//! the schema and silently selects nothing, so the policy looks enforced and is not. When a
//! selector can be satisfied, [`selector_witness`] gives the labels that prove it; they are the
//! building block of every witness flow the contradiction checks will print.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::PolicyError;
use crate::model::{CnpPeer, CnpSubject, LabelSelector, Labels, Policy, SelectorOperator};

/// Why no labels satisfy a selector: the first key whose requirements exclude each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsatisfiable {
    pub key: String,
    pub reason: String,
}

/// What a selector requires of one key, gathered from `matchLabels` and every expression.
#[derive(Default)]
struct KeyRequirements {
    /// `matchLabels`, `In` and `Exists` need the key; `DoesNotExist` forbids it.
    must_exist: bool,
    must_not_exist: bool,
    /// The intersection of `matchLabels` and every `In` list; `None` while nothing restricts it.
    one_of: Option<BTreeSet<String>>,
    /// The union of every `NotIn` list.
    none_of: BTreeSet<String>,
}

/// Labels that the selector matches, or the key that makes that impossible. The labels carry
/// only the keys the selector names (a key that only `NotIn` or `DoesNotExist` names is left out).
///
/// A selector with an `Unknown` operator matches nothing (validation rejects it anyway).
pub fn selector_witness(selector: &LabelSelector) -> Result<Labels, Unsatisfiable> {
    let mut keys: BTreeMap<&str, KeyRequirements> = BTreeMap::new();
    for (key, value) in &selector.match_labels {
        let requirements = keys.entry(key).or_default();
        requirements.must_exist = true;
        restrict(&mut requirements.one_of, std::iter::once(value));
    }
    for requirement in &selector.match_expressions {
        let requirements = keys.entry(&requirement.key).or_default();
        match &requirement.operator {
            SelectorOperator::In => {
                requirements.must_exist = true;
                restrict(&mut requirements.one_of, requirement.values.iter());
            }
            SelectorOperator::NotIn => requirements.none_of.extend(requirement.values.iter().cloned()),
            SelectorOperator::Exists => requirements.must_exist = true,
            SelectorOperator::DoesNotExist => requirements.must_not_exist = true,
            SelectorOperator::Unknown(operator) => {
                return Err(Unsatisfiable {
                    key: requirement.key.clone(),
                    reason: format!("operator {operator:?} matches nothing"),
                });
            }
        }
    }
    let mut labels = Labels::new();
    for (key, requirements) in keys {
        let unsatisfiable = |reason: String| Unsatisfiable { key: key.to_string(), reason };
        if requirements.must_not_exist {
            if requirements.must_exist {
                return Err(unsatisfiable(
                    "it must exist (matchLabels, In or Exists) and must not exist (DoesNotExist)".into(),
                ));
            }
            continue;
        }
        if !requirements.must_exist {
            // Only NotIn names it: leaving the key out satisfies NotIn.
            continue;
        }
        let value = match &requirements.one_of {
            Some(allowed) => {
                let Some(value) = allowed.iter().find(|value| !requirements.none_of.contains(*value)) else {
                    return Err(unsatisfiable(if allowed.is_empty() {
                        "matchLabels and In require values that exclude each other".into()
                    } else {
                        format!(
                            "every value it may have ({}) is excluded by NotIn",
                            allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    }));
                };
                value.clone()
            }
            None => fresh_value(&requirements.none_of),
        };
        labels.insert(key.to_string(), value);
    }
    Ok(labels)
}

/// Narrows the allowed values of a key to those also in `values`.
fn restrict<'a>(one_of: &mut Option<BTreeSet<String>>, values: impl Iterator<Item = &'a String>) {
    let values: BTreeSet<String> = values.cloned().collect();
    *one_of = Some(match one_of.take() {
        None => values,
        Some(allowed) => allowed.intersection(&values).cloned().collect(),
    });
}

/// A label value outside `excluded`: `any`, then `any-1`, `any-2`, … (valid label values all).
/// Of the first `excluded.len() + 1` candidates one is always free, so the loop ends.
fn fresh_value(excluded: &BTreeSet<String>) -> String {
    let mut n = 0;
    loop {
        let candidate = if n == 0 { "any".to_string() } else { format!("any-{n}") };
        if !excluded.contains(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// Every label selector of a policy, with its field path.
fn selectors_of(policy: &Policy) -> Vec<(String, &LabelSelector)> {
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
