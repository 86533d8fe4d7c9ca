//! Properties of the analysis: a selector's witness really is matched by it, and a selector
//! called unsatisfiable really matches no labels at all (checked exhaustively over a universe
//! that holds every value the selector names plus one it does not).

mod common;

use common::*;
use palisade_engine::analysis::{selector_witness, unsatisfiable_selectors};
use palisade_engine::model::*;
use proptest::prelude::*;

/// The vocabulary of [`arb_requirement`].
const KEYS: [&str; 2] = ["app", "tier"];
const VALUES: [&str; 3] = ["a", "b", "c"];

/// Selectors with up to four expressions over two keys, so contradictions are common.
fn arb_dense_selector() -> impl Strategy<Value = LabelSelector> {
    let value = prop::sample::select(&VALUES[..]).prop_map(str::to_string);
    let labels = prop::collection::btree_map(prop::sample::select(&KEYS[..]).prop_map(str::to_string), value, 0..=2);
    (labels, prop::collection::vec(arb_requirement(), 0..=4))
        .prop_map(|(match_labels, match_expressions)| LabelSelector { match_labels, match_expressions })
}

/// Every label set over the keys, each absent or one of the values or a value none names.
fn universe() -> Vec<Labels> {
    let choices: Vec<Option<&str>> =
        [None].into_iter().chain(VALUES.iter().copied().map(Some)).chain([Some("other")]).collect();
    let mut all = Vec::new();
    for app in &choices {
        for tier in &choices {
            let mut labels = Labels::new();
            labels.extend(app.map(|value| ("app".to_string(), value.to_string())));
            labels.extend(tier.map(|value| ("tier".to_string(), value.to_string())));
            all.push(labels);
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn witnesses_match_and_unsatisfiable_selectors_match_nothing(selector in arb_dense_selector()) {
        match selector_witness(&selector) {
            Ok(witness) => prop_assert!(selector.matches(&witness), "witness {:?} of {:?}", witness, selector),
            Err(why) => {
                let matched = universe().into_iter().find(|labels| selector.matches(labels));
                prop_assert!(matched.is_none(), "{:?} matches {:?}, yet called unsatisfiable: {:?}", selector, matched, why);
            }
        }
    }
}

#[test]
fn a_contradictory_selector_is_an_error_at_its_field() {
    let mut contradictory = select(&[("team", "web")]);
    contradictory.match_expressions.push(SelectorRequirement {
        key: "team".into(),
        operator: SelectorOperator::NotIn,
        values: vec!["web".into()],
    });
    let mut policy = cnp("deny-web", Tier::Admin, 10, CnpSubject::Namespaces(LabelSelector::default()));
    policy.ingress.push(cnp_rule(CnpAction::Deny, vec![CnpPeer::Namespaces(select(&[("env", "prod")]))], None));
    policy.ingress.push(cnp_rule(
        CnpAction::Deny,
        vec![CnpPeer::Pods { namespace_selector: LabelSelector::default(), pod_selector: contradictory }],
        None,
    ));
    let errors = unsatisfiable_selectors(&Policy::Cluster(policy));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.ingress[1].from[0].pods.podSelector");
    assert!(errors[0].message.contains("\"team\""), "{}", errors[0].message);
}
