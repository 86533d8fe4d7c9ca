//! `metav1.LabelSelector` matching and validation with Kubernetes semantics.

use crate::model::{LabelSelector, Labels, SelectorOperator};

impl LabelSelector {
    /// All `matchLabels` and all expressions must hold; an empty selector matches everything.
    /// `NotIn` and `DoesNotExist` match when the key is absent. An `Unknown` operator matches
    /// nothing (validation rejects such selectors before they are ever matched).
    pub fn matches(&self, labels: &Labels) -> bool {
        let labels_match = self.match_labels.iter().all(|(key, value)| labels.get(key) == Some(value));
        labels_match
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match &requirement.operator {
                    SelectorOperator::In => value.is_some_and(|v| requirement.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !requirement.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                    SelectorOperator::Unknown(_) => false,
                }
            })
    }

    /// The same selector in canonical form (expressions sorted, values sorted and deduplicated),
    /// so that equal selectors hash to the same group id.
    pub fn normalized(&self) -> LabelSelector {
        let mut match_expressions = self.match_expressions.clone();
        for requirement in &mut match_expressions {
            requirement.values.sort();
            requirement.values.dedup();
        }
        match_expressions.sort();
        match_expressions.dedup();
        LabelSelector { match_labels: self.match_labels.clone(), match_expressions }
    }

    /// Problems as `(field, message)`, with fields below `field` (the selector's own path).
    pub fn problems(&self, field: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (i, requirement) in self.match_expressions.iter().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            if requirement.key.is_empty() {
                problems.push((format!("{at}.key"), "must not be empty".to_string()));
            }
            match &requirement.operator {
                SelectorOperator::In | SelectorOperator::NotIn if requirement.values.is_empty() => problems
                    .push((format!("{at}.values"), "must be specified when `operator` is 'In' or 'NotIn'".to_string())),
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if !requirement.values.is_empty() => problems
                    .push((
                        format!("{at}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'".to_string(),
                    )),
                SelectorOperator::Unknown(operator) => {
                    problems.push((format!("{at}.operator"), format!("not a valid selector operator: {operator:?}")))
                }
                _ => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expression(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![SelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("a", "1")])));
    }

    #[test]
    fn operators_follow_kubernetes() {
        let pod = labels(&[("app", "web")]);
        assert!(expression("app", SelectorOperator::In, &["web", "db"]).matches(&pod));
        assert!(!expression("app", SelectorOperator::In, &["db"]).matches(&pod));
        assert!(!expression("tier", SelectorOperator::In, &["x"]).matches(&pod));
        assert!(expression("tier", SelectorOperator::NotIn, &["x"]).matches(&pod), "NotIn matches an absent key");
        assert!(!expression("app", SelectorOperator::NotIn, &["web"]).matches(&pod));
        assert!(expression("app", SelectorOperator::Exists, &[]).matches(&pod));
        assert!(expression("tier", SelectorOperator::DoesNotExist, &[]).matches(&pod));
        assert!(!expression("app", SelectorOperator::Unknown("Gt".into()), &[]).matches(&pod));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let mut selector = expression("tier", SelectorOperator::Exists, &[]);
        selector.match_labels = labels(&[("app", "web")]);
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "1")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("tier", "1")])));
    }

    #[test]
    fn validation_names_the_field() {
        let problems = expression("a", SelectorOperator::In, &[]).problems("spec.podSelector");
        assert_eq!(problems[0].0, "spec.podSelector.matchExpressions[0].values");
        let problems = expression("a", SelectorOperator::Exists, &["x"]).problems("s");
        assert_eq!(problems[0].0, "s.matchExpressions[0].values");
        let problems = expression("a", SelectorOperator::Unknown("Gt".into()), &["1"]).problems("s");
        assert_eq!(problems[0].0, "s.matchExpressions[0].operator");
    }
}
