//! Snapshot tests pinning the rendered text, plus pure properties of the renderer.
mod common;

use common::*;
use palisade_agent::render;
use palisade_engine::plan::Group;

const MORE_CLIENTS: &str = "00000000000c1e48";

#[test]
fn sample_plan_renders_stable_ipv4_text() {
    let rendered = render(&sample_plan(), &render_config());
    insta::assert_snapshot!("sample_ipv4", rendered.ipv4);
}

#[test]
fn sample_plan_renders_stable_ipv6_text() {
    let rendered = render(&sample_plan(), &render_config());
    insta::assert_snapshot!("sample_ipv6", rendered.ipv6);
}

#[test]
fn sample_plan_renders_stable_ipsets() {
    let rendered = render(&sample_plan(), &render_config());
    insta::assert_snapshot!("sample_ipsets", rendered.ipsets.restore_text());
}

#[test]
fn rendering_is_deterministic() {
    let first = render(&sample_plan(), &render_config());
    let second = render(&sample_plan(), &render_config());
    assert_eq!(first, second);
}

#[test]
fn names_fit_kernel_limits() {
    let rendered = render(&sample_plan(), &render_config());
    for table in [&rendered.v4, &rendered.v6] {
        for chain in table.chains.keys() {
            assert!(chain.len() <= 28, "chain name too long: {chain}");
            assert!(chain.starts_with("PAL-"));
        }
    }
    for name in rendered.ipsets.sets.keys() {
        assert!(name.len() + 3 <= 31, "set name leaves no room for its temporary: {name}");
    }
}

#[test]
fn group_membership_changes_only_ipsets() {
    let config = render_config();
    let before = render(&sample_plan(), &config);
    let mut plan = sample_plan();
    if let Some(Group::Addresses(members)) = plan.groups.get_mut(&gid(CLIENTS)) {
        members.insert(ip("198.18.2.11"));
        members.insert(ip("fd00:198:18:2::11"));
    }
    let after = render(&plan, &config);
    assert_eq!(before.v4, after.v4);
    assert_eq!(before.v6, after.v6);
    assert_ne!(before.ipsets, after.ipsets);
}

#[test]
fn open_pods_get_no_chain_and_no_dispatch() {
    let rendered = render(&sample_plan(), &render_config());
    assert!(!rendered.ipv4.contains("198.18.1.30"), "the open pod db must not appear");
    // web's IPv6 address is isolated; api has no IPv6 address, so only web dispatches in v6.
    assert!(rendered.ipv6.contains("-d fd00:198:18:1::10/128 -g PAL-I-"));
}

#[test]
fn empty_plan_renders_only_the_skeleton() {
    let rendered = render(&Default::default(), &Default::default());
    assert!(rendered.ipv4.contains("-j DROP"), "dispatch ends in a fail-closed DROP");
    assert_eq!(rendered.v4.chains.len(), 5);
    assert_eq!(rendered.ipsets.sets.len(), 4, "isolation sets per family and direction");
}

#[test]
fn network_policies_on_the_same_ports_share_one_rule() {
    use palisade_agent::ipset::SetType;
    use palisade_engine::model::PolicyKind;
    use palisade_engine::plan::{Action, Direction, PeerMatch, PortMatch};

    let mut plan = sample_plan();
    let second = rsid("b000000000000002");
    plan.rule_sets.insert(
        second.clone(),
        rule_set(
            PolicyKind::NetworkPolicy,
            "web-ingress-more",
            Direction::Ingress,
            vec![rule(
                0,
                Action::Accept,
                PeerMatch::AnyOf(vec![gid(MORE_CLIENTS)]),
                PortMatch::AnyOf(vec![tcp(80, 80), tcp(443, 443), tcp(8000, 8100)]),
            )],
        ),
    );
    plan.groups.insert(gid(MORE_CLIENTS), Group::Addresses([ip("198.18.3.1")].into()));
    if let Some(web) = plan.pods.get_mut(&pod("default", "web")) {
        web.ingress.network_policy = Some(vec![rsid(NP_INGRESS), second]);
    }
    let rendered = render(&plan, &render_config());
    let tiers: Vec<_> = rendered.v4.chains.iter().filter(|(name, _)| name.starts_with("PAL-NI-")).collect();
    assert_eq!(tiers.len(), 1, "one network-policy tier for web");
    let (_, rules) = tiers[0];
    // The named-port rule, the union for the shared ports, the closing DROP: three, not one per policy.
    assert_eq!(rules.len(), 3, "{rules:?}");
    let union = rules.iter().find(|rule| rule.spec.contains("--dports 80,443,8000:8100")).expect("shared ports rule");
    let list_name = union.spec.split_whitespace().nth(3).expect("set name").to_string();
    let list = &rendered.ipsets.sets[&list_name];
    assert_eq!(list.set_type, SetType::ListSet);
    // Both policies' client addresses merged into one hash:net, and the block with its excepts.
    let members: Vec<String> = list.members.iter().map(ToString::to_string).collect();
    assert_eq!(members.len(), 2, "{members:?}");
    let merged = members.iter().find(|name| name.starts_with("pal4-m-")).expect("a merged set");
    let merged = &rendered.ipsets.sets[merged];
    assert_eq!(merged.set_type, SetType::HashNet);
    let addresses: Vec<String> = merged.members.iter().map(ToString::to_string).collect();
    assert!(addresses.contains(&"198.18.3.1/32".to_string()), "{addresses:?}");
    assert!(members.contains(&"pal4-n-000000000000b10c".to_string()), "{members:?}");
}
