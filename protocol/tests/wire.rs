//! Golden wire fixtures: one message of each kind and version, as bytes on the wire
//! (`tests/wire/*.json`). A change to any field of the plan or of a message changes these bytes
//! and fails here: then the change needs a new stream version (a new subprotocol, new fixtures),
//! and the fixtures of every version still served stay as they are, so agents of the previous
//! release keep reading what they are sent. `PALISADE_WRITE_WIRE_FIXTURES=1` writes fixtures that
//! are missing (never overwrites one).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use palisade_engine::model::{PodKey, PolicyKind, PolicyRef, Protocol, Revision};
use palisade_engine::plan::{
    Action, Direction, DirectionPlan, Group, GroupId, GroupPatch, LocalPod, NetEntry, NodePlan, PeerMatch, PlanDelta,
    PortEntry, PortMatch, Rule, RuleSet, RuleSetId,
};
use palisade_protocol::{AgentMessage, OperatorMessage, RealizedPolicy, encode};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn policy() -> PolicyRef {
    PolicyRef { kind: PolicyKind::ClusterNetworkPolicy, namespace: None, name: "deny-evil".into() }
}

fn revision() -> Revision {
    Revision { uid: "0b7e0d8c-1f4e-4c56-9d0e-3b1c2a4f5e6d".into(), generation: 3 }
}

/// A plan with one of everything: both directions and all tiers, every group kind, both port
/// entry kinds, the three actions.
fn plan() -> NodePlan {
    let pods_group = GroupId("00c0ffee00c0ffee".into());
    let nets_group = GroupId("0123456789abcdef".into());
    let named_group = GroupId("fedcba9876543210".into());
    let admin = RuleSetId("aaaaaaaaaaaaaaaa".into());
    let network_policy = RuleSetId("bbbbbbbbbbbbbbbb".into());
    let rule = |index, action, peers, ports| Rule { index, name: Some(format!("rule-{index}")), action, peers, ports };
    NodePlan {
        node: "n1".into(),
        node_ips: vec![ip("198.18.0.11"), ip("fd00:198::11")],
        pods: BTreeMap::from([(
            PodKey { namespace: "shop".into(), name: "database".into() },
            LocalPod {
                ips: vec![ip("198.18.128.5"), ip("fd00:198:8000::5")],
                ingress: DirectionPlan {
                    admin: vec![admin.clone()],
                    network_policy: Some(vec![network_policy.clone()]),
                    baseline: vec![],
                },
                egress: DirectionPlan::default(),
            },
        )]),
        rule_sets: BTreeMap::from([
            (
                admin,
                RuleSet {
                    policy: policy(),
                    revision: revision(),
                    direction: Direction::Ingress,
                    rules: vec![
                        rule(0, Action::Deny, PeerMatch::AnyOf(vec![nets_group.clone()]), PortMatch::Any),
                        rule(
                            1,
                            Action::Pass,
                            PeerMatch::Any,
                            PortMatch::AnyOf(vec![PortEntry::Named(named_group.clone())]),
                        ),
                    ],
                },
            ),
            (
                network_policy,
                RuleSet {
                    policy: PolicyRef {
                        kind: PolicyKind::NetworkPolicy,
                        namespace: Some("shop".into()),
                        name: "db".into(),
                    },
                    revision: revision(),
                    direction: Direction::Ingress,
                    rules: vec![Rule {
                        index: 0,
                        name: None,
                        action: Action::Accept,
                        peers: PeerMatch::AnyOf(vec![pods_group.clone()]),
                        ports: PortMatch::AnyOf(vec![PortEntry::Range {
                            protocol: Protocol::Tcp,
                            first: 5432,
                            last: 5432,
                        }]),
                    }],
                },
            ),
        ]),
        groups: BTreeMap::from([
            (pods_group, Group::Addresses(BTreeSet::from([ip("198.18.129.7")]))),
            (
                nets_group,
                Group::Networks(BTreeSet::from([
                    NetEntry { net: "198.18.0.0/15".parse().expect("net"), nomatch: false },
                    NetEntry { net: "198.18.96.0/24".parse().expect("net"), nomatch: true },
                ])),
            ),
            (named_group, Group::IpPorts(BTreeSet::from([(ip("198.18.128.5"), Protocol::Udp, 53)]))),
        ]),
    }
}

fn delta_v1() -> PlanDelta {
    let mut delta = NodePlan::diff(&NodePlan { node: "n1".into(), ..NodePlan::default() }, &plan());
    delta.removed_pods.insert(PodKey { namespace: "shop".into(), name: "old".into() });
    delta.removed_groups.insert(GroupId("1111111111111111".into()));
    delta
}

fn delta_v2() -> PlanDelta {
    let patch = GroupPatch::Addresses {
        added: BTreeSet::from([ip("198.18.129.8")]),
        removed: BTreeSet::from([ip("198.18.129.7")]),
    };
    let named = GroupPatch::IpPorts {
        added: BTreeSet::from([(ip("198.18.128.6"), Protocol::Tcp, 8080)]),
        removed: BTreeSet::new(),
    };
    PlanDelta {
        node: "n1".into(),
        patched_groups: BTreeMap::from([
            (GroupId("00c0ffee00c0ffee".into()), Arc::new(patch)),
            (GroupId("fedcba9876543210".into()), Arc::new(named)),
        ]),
        ..PlanDelta::default()
    }
}

fn operator_messages() -> Vec<(&'static str, OperatorMessage)> {
    let stamped = |message: OperatorMessage| match message {
        OperatorMessage::Snapshot { format, version, plan, .. } => {
            OperatorMessage::Snapshot { format, version, plan, sent_at_us: Some(1_796_256_000_000_000) }
        }
        OperatorMessage::Delta { format, base, version, delta, .. } => {
            OperatorMessage::Delta { format, base, version, delta, sent_at_us: Some(1_796_256_000_000_000) }
        }
    };
    vec![
        ("v1-snapshot", OperatorMessage::snapshot(7, plan())),
        ("v1-delta", OperatorMessage::delta(7, 8, delta_v1())),
        ("v2-snapshot", stamped(OperatorMessage::snapshot(7, plan()))),
        ("v2-delta", stamped(OperatorMessage::delta(8, 9, delta_v2()))),
    ]
}

fn agent_messages() -> Vec<(&'static str, AgentMessage)> {
    let policies = vec![RealizedPolicy { policy: policy(), revision: revision() }];
    vec![
        ("v1-realized", AgentMessage::Realized { version: 8, policies }),
        ("v1-failed", AgentMessage::Failed { version: 9, error: "iptables-restore rejected line 3".into() }),
    ]
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/wire").join(format!("{name}.json"))
}

/// The fixture's text, written first when asked to and missing.
fn golden(name: &str, encoded: &str) -> String {
    let path = fixture(name);
    if !path.exists() && std::env::var_os("PALISADE_WRITE_WIRE_FIXTURES").is_some() {
        std::fs::write(&path, format!("{encoded}\n")).expect("write fixture");
    }
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!("{}: {error} (PALISADE_WRITE_WIRE_FIXTURES=1 writes a missing one)", path.display())
    })
}

#[test]
fn operator_messages_are_byte_for_byte_the_fixtures_of_their_version() {
    for (name, message) in operator_messages() {
        let encoded = encode(&message);
        let expected = golden(name, &encoded);
        assert_eq!(encoded, expected.trim_end(), "{name}: the wire changed; a field change needs a new stream version");
        let decoded = OperatorMessage::decode(expected.trim_end()).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(decoded, message, "{name} reads back as written");
    }
}

#[test]
fn agent_messages_are_byte_for_byte_the_fixtures() {
    for (name, message) in agent_messages() {
        let encoded = encode(&message);
        let expected = golden(name, &encoded);
        assert_eq!(encoded, expected.trim_end(), "{name}: the wire changed; a field change needs a new stream version");
        assert_eq!(AgentMessage::decode(expected.trim_end()).expect(name), message);
    }
}

#[test]
fn v1_messages_carry_nothing_a_v1_reader_would_skip() {
    // serde skips unknown fields, so a V1 agent would silently ignore a patch or a stamp: V1
    // fixtures must not contain them.
    for name in ["v1-snapshot", "v1-delta"] {
        let text = std::fs::read_to_string(fixture(name)).expect("fixture");
        assert!(!text.contains("patched_groups") && !text.contains("sent_at_us"), "{name}: {text}");
    }
}
