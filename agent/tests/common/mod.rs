//! Shared fixtures: a throwaway network namespace per test and hand-built plans.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_agent::{Applier, ApplyConfig};
use palisade_engine::model::{PodKey, PolicyKind, PolicyRef, Protocol, Revision};
use palisade_engine::plan::{
    Action, Direction, DirectionPlan, Group, GroupId, LocalPod, NetEntry, NodePlan, PeerMatch, PortEntry, PortMatch,
    Rule, RuleSet, RuleSetId,
};

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// A network namespace removed on drop, even when the test panics.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("pal-agt-{}-{}", std::process::id(), NEXT_NETNS.fetch_add(1, Ordering::SeqCst));
        let status = Command::new("ip").args(["netns", "add", &name]).status().expect("run ip netns add");
        assert!(status.success(), "ip netns add {name} failed");
        let netns = Netns { name };
        netns.sh("ip link set lo up");
        netns
    }

    /// Runs a shell command inside the namespace; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("run ip netns exec");
        assert!(
            output.status.success(),
            "`{script}` failed in {}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn try_sh(&self, script: &str) -> Result<String, String> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    pub fn applier(&self) -> Applier {
        Applier::new(ApplyConfig { netns: Some(self.name.clone()), ..ApplyConfig::default() })
    }

    /// `iptables-save` and `ip6tables-save` without comments and counters, which vary per run.
    pub fn tables(&self) -> String {
        let mut text = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            for line in self.sh(tool).lines() {
                if !line.starts_with('#') {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Everything that is not ours: tables minus `PAL-`/`pal:` lines, plus sets minus `pal` sets.
    pub fn foreign_state(&self) -> String {
        let tables: String = self
            .tables()
            .lines()
            .filter(|line| !line.contains("PAL-") && !line.contains("\"pal:"))
            .map(|line| format!("{line}\n"))
            .collect();
        let sets: String = self
            .sh("ipset save")
            .lines()
            .filter(|line| {
                let name = line.split_whitespace().nth(1).unwrap_or_default();
                !name.starts_with("pal4-") && !name.starts_with("pal6-")
            })
            .map(|line| format!("{line}\n"))
            .collect();
        format!("{tables}---\n{sets}")
    }

    pub fn owned_sets(&self) -> String {
        self.sh("ipset save")
            .lines()
            .filter(|line| line.split_whitespace().nth(1).is_some_and(|name| name.starts_with("pal")))
            .map(|line| format!("{line}\n"))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

pub fn pod(namespace: &str, name: &str) -> PodKey {
    PodKey { namespace: namespace.into(), name: name.into() }
}

pub fn gid(id: &str) -> GroupId {
    GroupId(id.into())
}

pub fn rsid(id: &str) -> RuleSetId {
    RuleSetId(id.into())
}

pub fn tcp(first: u16, last: u16) -> PortEntry {
    PortEntry::Range { protocol: Protocol::Tcp, first, last }
}

pub fn rule(index: usize, action: Action, peers: PeerMatch, ports: PortMatch) -> Rule {
    Rule { index, name: None, action, peers, ports }
}

pub fn rule_set(kind: PolicyKind, name: &str, direction: Direction, rules: Vec<Rule>) -> RuleSet {
    let namespace = (kind == PolicyKind::NetworkPolicy).then(|| "default".to_string());
    RuleSet {
        policy: PolicyRef { kind, namespace, name: name.into() },
        revision: Revision { uid: format!("uid-{name}"), generation: 1 },
        direction,
        rules,
    }
}

pub const CLIENTS: &str = "00000000000c1e47";
pub const BLOCK: &str = "000000000000b10c";
pub const NAMED: &str = "00000000000000a0";
pub const ADMIN_EGRESS: &str = "a000000000000001";
pub const NP_INGRESS: &str = "b000000000000001";
pub const BASELINE_INGRESS: &str = "c000000000000001";

/// One node, three pods: `web` isolated for ingress by a NetworkPolicy and for egress by an admin
/// policy (Pass, Deny, Accept); `api` under a baseline policy; `db` open in both directions.
pub fn sample_plan() -> NodePlan {
    let mut groups = BTreeMap::new();
    groups.insert(gid(CLIENTS), Group::Addresses(BTreeSet::from([ip("198.18.2.10"), ip("fd00:198:18:2::10")])));
    groups.insert(
        gid(BLOCK),
        Group::Networks(BTreeSet::from([
            NetEntry { net: "0.0.0.0/0".parse().expect("net"), nomatch: false },
            NetEntry { net: "198.18.0.0/15".parse().expect("net"), nomatch: true },
            NetEntry { net: "fd00:198:18::/48".parse().expect("net"), nomatch: false },
        ])),
    );
    groups.insert(gid(NAMED), Group::IpPorts(BTreeSet::from([(ip("198.18.1.20"), Protocol::Tcp, 8080)])));

    let mut rule_sets = BTreeMap::new();
    rule_sets.insert(
        rsid(ADMIN_EGRESS),
        rule_set(
            PolicyKind::ClusterNetworkPolicy,
            "admin-egress",
            Direction::Egress,
            vec![
                rule(0, Action::Pass, PeerMatch::AnyOf(vec![gid(CLIENTS)]), PortMatch::Any),
                rule(1, Action::Deny, PeerMatch::AnyOf(vec![gid(BLOCK)]), PortMatch::AnyOf(vec![tcp(25, 25)])),
                rule(
                    2,
                    Action::Accept,
                    PeerMatch::Any,
                    PortMatch::AnyOf(vec![
                        PortEntry::Range { protocol: Protocol::Udp, first: 53, last: 53 },
                        tcp(53, 53),
                        PortEntry::Range { protocol: Protocol::Icmp, first: 0, last: 0 },
                    ]),
                ),
            ],
        ),
    );
    rule_sets.insert(
        rsid(NP_INGRESS),
        rule_set(
            PolicyKind::NetworkPolicy,
            "web-ingress",
            Direction::Ingress,
            vec![
                rule(
                    0,
                    Action::Accept,
                    PeerMatch::AnyOf(vec![gid(CLIENTS), gid(BLOCK)]),
                    PortMatch::AnyOf(vec![tcp(80, 80), tcp(443, 443), tcp(8000, 8100)]),
                ),
                rule(1, Action::Accept, PeerMatch::Any, PortMatch::AnyOf(vec![PortEntry::Named(gid(NAMED))])),
            ],
        ),
    );
    rule_sets.insert(
        rsid(BASELINE_INGRESS),
        rule_set(
            PolicyKind::ClusterNetworkPolicy,
            "baseline-ingress",
            Direction::Ingress,
            vec![
                rule(0, Action::Accept, PeerMatch::AnyOf(vec![gid(CLIENTS)]), PortMatch::Any),
                rule(1, Action::Deny, PeerMatch::Any, PortMatch::Any),
            ],
        ),
    );

    let mut pods = BTreeMap::new();
    pods.insert(
        pod("default", "web"),
        LocalPod {
            ips: vec![ip("198.18.1.10"), ip("fd00:198:18:1::10")],
            ingress: DirectionPlan { network_policy: Some(vec![rsid(NP_INGRESS)]), ..DirectionPlan::default() },
            egress: DirectionPlan { admin: vec![rsid(ADMIN_EGRESS)], ..DirectionPlan::default() },
        },
    );
    pods.insert(
        pod("default", "api"),
        LocalPod {
            ips: vec![ip("198.18.1.20")],
            ingress: DirectionPlan { baseline: vec![rsid(BASELINE_INGRESS)], ..DirectionPlan::default() },
            egress: DirectionPlan::default(),
        },
    );
    pods.insert(
        pod("default", "db"),
        LocalPod { ips: vec![ip("198.18.1.30")], ingress: DirectionPlan::default(), egress: DirectionPlan::default() },
    );
    NodePlan { node: "node-a".into(), node_ips: node_ips(), pods, rule_sets, groups }
}

/// The node's addresses, as the operator puts them in the plan.
pub fn node_ips() -> Vec<IpAddr> {
    vec![ip("198.18.0.1"), ip("fd00:198:18::1")]
}

/// No override: the node addresses come from the plan.
pub fn render_config() -> palisade_agent::RenderConfig {
    palisade_agent::RenderConfig::default()
}
