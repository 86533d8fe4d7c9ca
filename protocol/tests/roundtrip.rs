use palisade_engine::model::PodKey;
use palisade_engine::plan::{LocalPod, NodePlan};
use palisade_protocol::{OperatorMessage, encode};

#[test]
fn a_snapshot_with_pods_survives_the_wire() {
    let mut plan = NodePlan { node: "n1".into(), ..NodePlan::default() };
    plan.pods.insert(
        PodKey { namespace: "x".into(), name: "a".into() },
        LocalPod { ips: vec!["198.18.1.2".parse().unwrap()], ..LocalPod::default() },
    );
    let message = OperatorMessage::snapshot(7, plan);
    let text = encode(&message);
    assert!(text.contains("198.18.1.2"), "{text}");
    assert_eq!(OperatorMessage::decode(&text).unwrap(), message);
}

#[test]
fn an_unknown_plan_format_is_refused_by_name() {
    let text = encode(&OperatorMessage::snapshot(1, NodePlan::default())).replace("\"format\":1", "\"format\":99");
    let error = OperatorMessage::decode(&text).unwrap_err().to_string();
    assert!(error.contains("plan format 99"), "{error}");
}
