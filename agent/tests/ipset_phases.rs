//! Which set changes run before the iptables transaction (only tightening) and which after it.

use std::collections::{BTreeMap, BTreeSet};

use palisade_agent::ipset::{self, DesiredIpSets, KernelSet, Member, SetRoles, SetSpec, SetType};
use palisade_agent::names::Family;

fn ip(text: &str) -> Member {
    Member::Ip(text.parse().unwrap())
}

fn spec(name: &str, members: &[&str]) -> SetSpec {
    SetSpec::new(name.to_string(), SetType::HashIp, Family::V4, members.iter().map(|member| ip(member)).collect())
}

fn kernel(spec: &SetSpec, members: &[&str]) -> KernelSet {
    KernelSet {
        set_type: "hash:ip".to_string(),
        family: "inet".to_string(),
        maxelem: Some(spec.maxelem),
        members: members.iter().map(|member| ip(member)).collect::<BTreeSet<_>>(),
        parsed_all_members: true,
    }
}

#[test]
fn only_tightening_changes_run_before_iptables() {
    let iso = spec("pal4-iso-in", &["10.0.0.1", "10.0.0.2"]);
    let peers = spec("pal4-a-peers", &["10.0.1.1", "10.0.1.2"]);
    let new = spec("pal4-a-new", &["10.0.2.1"]);
    let mut desired = DesiredIpSets::default();
    for set in [&iso, &peers, &new] {
        desired.insert(set.clone());
    }
    let mut current = BTreeMap::new();
    current.insert(iso.name.clone(), kernel(&iso, &["10.0.0.2", "10.0.0.3"]));
    current.insert(peers.name.clone(), kernel(&peers, &["10.0.1.2", "10.0.1.3"]));
    current.insert("pal4-a-old".to_string(), kernel(&peers, &["10.0.3.1"]));

    let changes = ipset::plan_changes(&desired, &current, &BTreeMap::new());
    assert_eq!(
        changes.before,
        "create pal4-a-new hash:ip family inet maxelem 65536\nflush pal4-a-new\n\
         add pal4-a-new 10.0.2.1\nadd pal4-iso-in 10.0.0.1\n"
    );
    assert_eq!(changes.after, "add pal4-a-peers 10.0.1.1\ndel pal4-a-peers 10.0.1.3\ndel pal4-iso-in 10.0.0.3\n");
    assert_eq!(changes.destroy, "destroy pal4-a-old\n");
    assert_eq!((changes.members_added, changes.members_removed), (2, 2));
    assert_eq!(changes.update_lines(), 7);
}

#[test]
fn a_rebuilt_isolation_set_isolates_new_members_before_iptables() {
    let iso = spec("pal4-iso-eg", &["10.0.0.1", "10.0.0.2"]);
    let mut desired = DesiredIpSets::default();
    desired.insert(iso.clone());
    let mut stale = kernel(&iso, &["10.0.0.2", "10.0.0.3"]);
    stale.maxelem = Some(1024);
    let current = BTreeMap::from([(iso.name.clone(), stale)]);

    let changes = ipset::plan_changes(&desired, &current, &BTreeMap::new());
    assert_eq!(changes.sets_swapped, 1);
    assert_eq!(changes.before, "add pal4-iso-eg 10.0.0.1\n");
    assert!(changes.after.contains("swap pal4-tmpiso-eg pal4-iso-eg\n"), "{}", changes.after);
}

/// Under the old rules and the new, every change made early only tightens, and every change made
/// late only tightens until it lands.
#[test]
fn member_changes_are_ordered_by_what_the_set_does() {
    let allows = spec("pal4-a-allow", &["10.0.1.1", "10.0.1.2"]).with_roles(SetRoles::ALLOWS);
    let denies = spec("pal4-a-deny", &["10.0.2.1", "10.0.2.2"]).with_roles(SetRoles::DENIES);
    let passes = spec("pal4-a-pass", &["10.0.3.1", "10.0.3.2"]).with_roles(SetRoles::BOTH);
    let mut desired = DesiredIpSets::default();
    let mut current = BTreeMap::new();
    let mut previous = BTreeMap::new();
    for set in [&allows, &denies, &passes] {
        desired.insert(set.clone());
        let old_members =
            [set.members.iter().next().map(ToString::to_string).unwrap_or_default(), "10.0.9.9".to_string()];
        let old_members: Vec<&str> = old_members.iter().map(String::as_str).collect();
        current.insert(set.name.clone(), kernel(set, &old_members));
        previous.insert(set.name.clone(), set.roles);
    }

    let changes = ipset::plan_changes(&desired, &current, &previous);
    assert_eq!(changes.before, "del pal4-a-allow 10.0.9.9\nadd pal4-a-deny 10.0.2.2\n");
    assert_eq!(
        changes.after,
        "add pal4-a-allow 10.0.1.2\ndel pal4-a-deny 10.0.9.9\nadd pal4-a-pass 10.0.3.2\ndel pal4-a-pass 10.0.9.9\n"
    );

    // A set that denied under the old rules and allows under the new has both roles.
    previous.insert(allows.name.clone(), SetRoles::DENIES);
    let changes = ipset::plan_changes(&desired, &current, &previous);
    assert!(!changes.before.contains("pal4-a-allow"), "{}", changes.before);

    // Unknown old roles (the first sync after a start): everything waits for iptables.
    let changes = ipset::plan_changes(&desired, &current, &BTreeMap::new());
    assert_eq!(changes.before, "");
}
