//! The renderer: a pure function from a [`NodePlan`] to iptables chains and ipsets. No I/O.
//!
//! # Layout (identical for IPv4 and IPv6, filter table)
//!
//! ```text
//! FORWARD -I 1 -j PAL-FORWARD   INPUT -I 1 -j PAL-INPUT   OUTPUT -I 1 -j PAL-OUTPUT   (our only foreign writes)
//!
//! PAL-FORWARD / PAL-INPUT / PAL-OUTPUT
//!   ctstate RELATED,ESTABLISHED -j RETURN     fast path; RETURN (not ACCEPT) so later foreign rules still run
//!   [v6: neighbour discovery -j RETURN]       untracked ND must not hit the INVALID drop
//!   ctstate INVALID -j DROP
//!   -j PAL-EGRESS                             FORWARD, INPUT: egress of the source pod
//!   -j PAL-INGRESS                            FORWARD, OUTPUT: ingress of the destination pod
//!   -j MARK --set-xmark 0/M                   leave the mark bit as we found it for other tools
//! PAL-INGRESS (PAL-EGRESS mirrors it with src)
//!   ! --match-set pal4-iso-in dst -j RETURN    open pods cost one rule
//!   -s <node ip> -j RETURN                     kubelet probes (ingress only)
//!   -d <pod ip> -g PAL-I-<hash(pod)>           goto: a RETURN in the pod chain means "allowed"
//!   -j DROP                                    isolated but not programmed yet: fail closed
//! PAL-I-<pod>
//!   -j MARK --set-xmark 0/M                    M = RenderConfig::mark, the only bit we use
//!   -s <own ip> -j RETURN                      loopback / hairpin
//!   admin:    -j PAL-R-<set> ; mark M -j RETURN      per admin set (or -j PAL-IA-<pod>, see Pass)
//!   NP:       -g PAL-NI-<hash(NP sets)>              when a NetworkPolicy isolates the pod
//!   baseline: -j PAL-R-<set> ; mark M -j RETURN      per baseline set (only when there is no NP tier)
//!   (fall through = RETURN = allowed)
//! PAL-NI-<hash(NP sets)>                       shared by every pod isolated by exactly these sets
//!   <peer union> <ports> -j RETURN                 one rule per distinct port match
//!   -j DROP
//! PAL-R-<rule set>                             shared by every pod the set applies to
//!   <peer ipset> <ports> -j MARK --set-xmark M/M   Accept and Pass
//!   <peer ipset> <ports> -j DROP                   Deny
//!   mark M -j RETURN                               only before a Deny that follows an Accept/Pass
//! ```
//!
//! # Pass with one mark bit
//! A rule set has three non-Deny outcomes (Accept, Pass, no match) but one bit carries two. When an
//! admin set contains Pass rules, the pod's admin tier moves into its own chain `PAL-IA-<pod>`
//! (entered with `-j`). After each set, a set mark ("Accept or Pass decided") does
//! `-g PAL-RP-<set>`: that shared chain replays the set's rules in order with Accept → `RETURN`
//! (mark kept) and Pass → clear the mark. Because it was entered by goto, its RETURN leaves the whole
//! tier: the pod chain then sees mark set = accepted, mark clear = go on to the NP tier. The replay
//! costs only the first packet of flows decided by such a set. The baseline tier needs no replay:
//! Accept, Pass and no match all end in "allowed".
//!
//! # The NetworkPolicy tier is one union
//! NetworkPolicy rules only allow, so their order does not matter. Their (peer, port) terms are
//! bucketed by port match, and each bucket's peer groups are matched at once: one set, or a
//! `list:set` `pal4-u-<hash(members)>` of them (a nomatch in one member does not stop the next
//! from matching, exactly a union). The first packet of a connection then walks one rule per
//! distinct port match instead of three per policy; adding a policy whose ports already have a
//! bucket changes a list, not the pod's chain. Admin and baseline tiers stay ordered chains: there
//! the first match decides.
//!
//! # Peers and ports
//! Groups become content-addressed ipsets named from the [`GroupId`]: `pal4-a-<id>` (`hash:ip`),
//! `pal4-n-<id>` (`hash:net`, excepts as `nomatch`, `/0` split into two `/1`), `pal4-p-<id>`
//! (`hash:ip,port`, matched `dst,dst`). A referenced group gets a set in every family the rule
//! set is rendered for, even an empty one, so a group gaining its first member of a family is a
//! set-only change. Port ranges of one protocol are folded into `multiport` (15 slots per line);
//! a rule expands to the cross product of its peer sets and port lines. `PortEntry::Range` with
//! `Protocol::Icmp` renders as `-p icmp` / `-p ipv6-icmp`.
//!
//! Every owned rule carries `-m comment --comment "pal:<hash>"`, a hash of its chain and text, so
//! the applier can read the kernel back and tell which chains drifted without parsing matches.
//! References to groups or rule sets missing from the plan render as empty (match nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use palisade_engine::model::{PodKey, Protocol};
use palisade_engine::plan::{
    Action, Direction, DirectionPlan, Group, GroupId, NodePlan, PeerMatch, PortEntry, PortMatch,
    Rule, RuleSet, RuleSetId,
};
use sha2::{Digest, Sha256};

use crate::ipset::{DesiredIpSets, Member, SetRoles, SetSpec, SetType};

/// Every chain we own starts with this; nothing else is ever touched except our hook rules.
pub const CHAIN_PREFIX: &str = "PAL-";
/// Comment prefix carried by every rule we write (including hook rules in kernel chains).
pub const COMMENT_PREFIX: &str = "pal:";
/// A bit unused by kube-proxy (0x4000, 0x8000) and common CNIs.
pub const DEFAULT_MARK: u32 = 0x10000;

const MAX_MULTIPORT_SLOTS: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// The single mark bit carrying "accepted" between chains; cleared before every use.
    pub mark: u32,
    /// The node's own addresses: ingress from them (kubelet probes) is always allowed.
    pub node_ips: Vec<IpAddr>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            mark: DEFAULT_MARK,
            node_ips: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// Prefix of every ipset we own in this family.
    pub fn set_prefix(self) -> &'static str {
        match self {
            Family::V4 => "pal4-",
            Family::V6 => "pal6-",
        }
    }

    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    fn icmp_protocol(self) -> &'static str {
        match self {
            Family::V4 => "icmp",
            Family::V6 => "ipv6-icmp",
        }
    }
}

/// One rule in one of our chains. `spec` is everything after `-A <chain>` except the comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRule {
    pub hash: String,
    pub spec: String,
}

impl OwnedRule {
    fn new(chain: &str, spec: String) -> OwnedRule {
        OwnedRule {
            hash: short_hash(&format!("{chain}\n{spec}")),
            spec,
        }
    }

    pub fn restore_line(&self, chain: &str) -> String {
        format!(
            "-A {chain} -m comment --comment \"{COMMENT_PREFIX}{}\" {}",
            self.hash, self.spec
        )
    }
}

/// Our single jump from a kernel chain (FORWARD, INPUT, OUTPUT) into our own chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub kernel_chain: &'static str,
    pub target: String,
    pub hash: String,
}

impl Hook {
    fn new(kernel_chain: &'static str, target: &str) -> Hook {
        let hash = short_hash(&format!("hook\n{kernel_chain}\n{target}"));
        Hook {
            kernel_chain,
            target: target.to_string(),
            hash,
        }
    }

    pub fn insert_line(&self) -> String {
        format!(
            "-I {} 1 -m comment --comment \"{COMMENT_PREFIX}{}\" -j {}",
            self.kernel_chain, self.hash, self.target
        )
    }
}

/// The desired content of our chains in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTable {
    pub family: Family,
    pub chains: BTreeMap<String, Vec<OwnedRule>>,
    pub hooks: Vec<Hook>,
}

impl DesiredTable {
    /// A complete `iptables-restore --noflush` input installing everything from scratch.
    pub fn restore_text(&self) -> String {
        let mut text = String::from("*filter\n");
        for name in self.chains.keys() {
            let _ = writeln!(text, ":{name} - [0:0]");
        }
        for (name, rules) in &self.chains {
            for rule in rules {
                text.push_str(&rule.restore_line(name));
                text.push('\n');
            }
        }
        for hook in &self.hooks {
            text.push_str(&hook.insert_line());
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text
    }

    /// Rules we own in this family (hooks included), the figure kept under the per-node budget.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum::<usize>() + self.hooks.len()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `iptables-restore --noflush` text for a fresh install (the applier writes only diffs).
    pub ipv4: String,
    pub ipv6: String,
    pub ipsets: DesiredIpSets,
    pub v4: DesiredTable,
    pub v6: DesiredTable,
}

impl Rendered {
    pub fn table(&self, family: Family) -> &DesiredTable {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

pub fn render(plan: &NodePlan, cfg: &RenderConfig) -> Rendered {
    let mut ipsets = DesiredIpSets::default();
    let v4 = render_family(plan, cfg, Family::V4, &mut ipsets);
    let v6 = render_family(plan, cfg, Family::V6, &mut ipsets);
    Rendered {
        ipv4: v4.restore_text(),
        ipv6: v6.restore_text(),
        ipsets,
        v4,
        v6,
    }
}

// ---- names ------------------------------------------------------------------------------------

pub const FORWARD_CHAIN: &str = "PAL-FORWARD";
pub const INPUT_CHAIN: &str = "PAL-INPUT";
pub const OUTPUT_CHAIN: &str = "PAL-OUTPUT";
pub const INGRESS_DISPATCH: &str = "PAL-INGRESS";
pub const EGRESS_DISPATCH: &str = "PAL-EGRESS";

fn pod_chain(pod: &PodKey, direction: Direction) -> String {
    let letter = direction_letter(direction);
    format!(
        "PAL-{letter}-{}",
        short_hash(&format!("{}/{}", pod.namespace, pod.name))
    )
}

fn admin_tier_chain(pod: &PodKey, direction: Direction) -> String {
    let letter = direction_letter(direction);
    format!(
        "PAL-{letter}A-{}",
        short_hash(&format!("{}/{}", pod.namespace, pod.name))
    )
}

fn direction_letter(direction: Direction) -> char {
    match direction {
        Direction::Ingress => 'I',
        Direction::Egress => 'E',
    }
}

fn rule_set_chain(id: &RuleSetId) -> String {
    format!("PAL-R-{}", id16(&id.0))
}

fn network_policy_tier_chain(sets: &[RuleSetId], direction: Direction) -> String {
    let letter = direction_letter(direction);
    let ids: Vec<&str> = sets.iter().map(|id| id.0.as_str()).collect();
    format!("PAL-N{letter}-{}", short_hash(&ids.join(",")))
}

/// A union is named by its members, so its membership never changes: a different union is a
/// different set.
fn union_set_name(family: Family, members: &BTreeSet<Member>) -> String {
    let names: Vec<String> = members.iter().map(Member::to_string).collect();
    format!("{}{}-{}", family.set_prefix(), SetType::ListSet.letter(), short_hash(&names.join(",")))
}

fn pass_replay_chain(id: &RuleSetId) -> String {
    format!("PAL-RP-{}", id16(&id.0))
}

/// Name of the isolation set gating dispatch for one direction.
pub fn isolation_set(family: Family, direction: Direction) -> String {
    let suffix = match direction {
        Direction::Ingress => "iso-in",
        Direction::Egress => "iso-eg",
    };
    format!("{}{suffix}", family.set_prefix())
}

fn group_set_name(family: Family, set_type: SetType, id: &GroupId) -> String {
    format!(
        "{}{}-{}",
        family.set_prefix(),
        set_type.letter(),
        id16(&id.0)
    )
}

/// Content addresses are 16 hex digits already; anything else is hashed to fit name limits.
fn id16(id: &str) -> String {
    if id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        id.to_string()
    } else {
        short_hash(id)
    }
}

pub(crate) fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest
        .iter()
        .take(8)
        .fold(String::with_capacity(16), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

// ---- rendering --------------------------------------------------------------------------------

struct FamilyRenderer<'a> {
    plan: &'a NodePlan,
    family: Family,
    mark: String,
    clear_mark: String,
    chains: BTreeMap<String, Vec<OwnedRule>>,
    ipsets: &'a mut DesiredIpSets,
}

fn render_family(
    plan: &NodePlan,
    cfg: &RenderConfig,
    family: Family,
    ipsets: &mut DesiredIpSets,
) -> DesiredTable {
    let mut renderer = FamilyRenderer {
        plan,
        family,
        mark: format!("{:#x}/{:#x}", cfg.mark, cfg.mark),
        clear_mark: format!("0x0/{:#x}", cfg.mark),
        chains: BTreeMap::new(),
        ipsets,
    };
    renderer.render_hook_chains();
    for direction in [Direction::Ingress, Direction::Egress] {
        renderer.render_dispatch(direction, cfg);
    }
    let hooks = vec![
        Hook::new("FORWARD", FORWARD_CHAIN),
        Hook::new("INPUT", INPUT_CHAIN),
        Hook::new("OUTPUT", OUTPUT_CHAIN),
    ];
    DesiredTable {
        family,
        chains: renderer.chains,
        hooks,
    }
}

impl FamilyRenderer<'_> {
    fn push(&mut self, chain: &str, spec: impl Into<String>) {
        let rule = OwnedRule::new(chain, spec.into());
        self.chains.entry(chain.to_string()).or_default().push(rule);
    }

    fn render_hook_chains(&mut self) {
        let layout: [(&str, &[&str]); 3] = [
            (FORWARD_CHAIN, &[EGRESS_DISPATCH, INGRESS_DISPATCH]),
            (INPUT_CHAIN, &[EGRESS_DISPATCH]),
            (OUTPUT_CHAIN, &[INGRESS_DISPATCH]),
        ];
        for (chain, dispatches) in layout {
            self.push(
                chain,
                "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
            );
            if self.family == Family::V6 {
                for icmp_type in [133, 134, 135, 136] {
                    self.push(
                        chain,
                        format!("-p ipv6-icmp -m icmp6 --icmpv6-type {icmp_type} -j RETURN"),
                    );
                }
            }
            self.push(chain, "-m conntrack --ctstate INVALID -j DROP");
            for dispatch in dispatches {
                self.push(chain, format!("-j {dispatch}"));
            }
            let clear = format!("-j MARK --set-xmark {}", self.clear_mark);
            self.push(chain, clear);
        }
    }

    fn render_dispatch(&mut self, direction: Direction, cfg: &RenderConfig) {
        let (dispatch, side, flag) = match direction {
            Direction::Ingress => (INGRESS_DISPATCH, "dst", "-d"),
            Direction::Egress => (EGRESS_DISPATCH, "src", "-s"),
        };
        let isolation = isolation_set(self.family, direction);
        let mut isolated_ips = BTreeSet::new();
        self.push(
            dispatch,
            format!("-m set ! --match-set {isolation} {side} -j RETURN"),
        );
        if direction == Direction::Ingress {
            let node_ips: BTreeSet<&IpAddr> = cfg
                .node_ips
                .iter()
                .filter(|ip| Family::of(ip) == self.family)
                .collect();
            for ip in node_ips {
                self.push(dispatch, format!("-s {} -j RETURN", host(ip)));
            }
        }
        let plan = self.plan;
        for (pod, local) in &plan.pods {
            let plan_for = match direction {
                Direction::Ingress => &local.ingress,
                Direction::Egress => &local.egress,
            };
            let own_ips: BTreeSet<IpAddr> = local
                .ips
                .iter()
                .copied()
                .filter(|ip| Family::of(ip) == self.family)
                .collect();
            if plan_for.is_open() || own_ips.is_empty() {
                continue;
            }
            let chain = pod_chain(pod, direction);
            self.render_pod_chain(pod, &chain, direction, plan_for, &own_ips);
            for ip in &own_ips {
                if isolated_ips.insert(*ip) {
                    self.push(dispatch, format!("{flag} {} -g {chain}", host(ip)));
                }
            }
        }
        self.push(dispatch, "-j DROP");
        // A member is isolated: judged further instead of returned, so the set only denies.
        self.ipsets.insert(
            SetSpec::new(isolation, SetType::HashIp, self.family, isolated_ips.into_iter().map(Member::Ip).collect())
                .with_roles(SetRoles::DENIES),
        );
    }

    fn render_pod_chain(
        &mut self,
        pod: &PodKey,
        chain: &str,
        direction: Direction,
        plan_for: &DirectionPlan,
        own_ips: &BTreeSet<IpAddr>,
    ) {
        let accepted_return = format!("-m mark --mark {} -j RETURN", self.mark);
        self.push(chain, format!("-j MARK --set-xmark {}", self.clear_mark));
        let own_flag = match direction {
            Direction::Ingress => "-s",
            Direction::Egress => "-d",
        };
        for ip in own_ips {
            self.push(chain, format!("{own_flag} {} -j RETURN", host(ip)));
        }

        if !plan_for.admin.is_empty() {
            let needs_replay = plan_for.admin.iter().any(|id| self.rule_set_has_pass(id));
            if needs_replay {
                let tier = admin_tier_chain(pod, direction);
                for id in &plan_for.admin {
                    let target = self.ensure_rule_set(id);
                    self.push(&tier, format!("-j {target}"));
                    if self.rule_set_has_pass(id) {
                        let replay = self.ensure_pass_replay(id);
                        self.push(&tier, format!("-m mark --mark {} -g {replay}", self.mark));
                    } else {
                        self.push(&tier, accepted_return.clone());
                    }
                }
                self.push(chain, format!("-j {tier}"));
                self.push(chain, accepted_return.clone());
            } else {
                self.push_tier_inline(chain, &plan_for.admin, &accepted_return);
            }
        }
        match &plan_for.network_policy {
            Some(sets) => {
                let tier = self.ensure_network_policy_tier(sets, direction);
                self.push(chain, format!("-g {tier}"));
            }
            None => self.push_tier_inline(chain, &plan_for.baseline, &accepted_return),
        }
    }

    fn push_tier_inline(&mut self, chain: &str, sets: &[RuleSetId], accepted_return: &str) {
        for id in sets {
            let target = self.ensure_rule_set(id);
            self.push(chain, format!("-j {target}"));
            self.push(chain, accepted_return.to_string());
        }
    }

    fn rule_set(&self, id: &RuleSetId) -> Option<&RuleSet> {
        let found = self.plan.rule_sets.get(id);
        if found.is_none() {
            tracing::warn!(rule_set = %id.0, "plan refers to a missing rule set; rendering it empty");
        }
        found
    }

    fn rule_set_has_pass(&self, id: &RuleSetId) -> bool {
        self.plan
            .rule_sets
            .get(id)
            .is_some_and(|set| set.rules.iter().any(|rule| rule.action == Action::Pass))
    }

    /// Renders the shared chain of a rule set once per family; returns its name.
    fn ensure_rule_set(&mut self, id: &RuleSetId) -> String {
        let chain = rule_set_chain(id);
        if self.chains.contains_key(&chain) {
            return chain;
        }
        self.chains.insert(chain.clone(), Vec::new());
        let Some(set) = self.rule_set(id) else {
            return chain;
        };
        let set = set.clone();
        let decided_return = format!("-m mark --mark {} -j RETURN", self.mark);
        let mut mark_may_be_set = false;
        for rule in &set.rules {
            let lines = self.expand_rule(rule, set.direction);
            if lines.is_empty() {
                continue;
            }
            let target = match rule.action {
                Action::Accept | Action::Pass => format!("-j MARK --set-xmark {}", self.mark),
                Action::Deny => "-j DROP".to_string(),
            };
            if rule.action == Action::Deny && mark_may_be_set {
                // An earlier Accept/Pass already decided; this Deny must not see the packet.
                self.push(&chain, decided_return.clone());
                mark_may_be_set = false;
            }
            if rule.action != Action::Deny {
                mark_may_be_set = true;
            }
            for matches in lines {
                self.push(&chain, join_spec(&matches, &target));
            }
        }
        chain
    }

    /// The network-policy tier of every pod isolated by exactly these rule sets; returns its name.
    ///
    /// NetworkPolicy rules only allow, so their order is irrelevant and the tier is one union: the
    /// rules are bucketed by port match, and each bucket matches the union of its peer groups in a
    /// single rule (one `list:set` when there are several). A new connection then costs one rule
    /// per distinct port match, not one per policy. Entered by goto: `RETURN` allows, the final
    /// `DROP` denies.
    fn ensure_network_policy_tier(&mut self, sets: &[RuleSetId], direction: Direction) -> String {
        let chain = network_policy_tier_chain(sets, direction);
        if self.chains.contains_key(&chain) {
            return chain;
        }
        self.chains.insert(chain.clone(), Vec::new());
        let side = peer_side(direction);
        let mut buckets: BTreeMap<String, PeerUnion> = BTreeMap::new();
        for id in sets {
            let Some(set) = self.rule_set(id).cloned() else {
                continue;
            };
            // Only Accept is meaningful here (the plan's contract); anything else allows nothing.
            for rule in set.rules.iter().filter(|rule| rule.action == Action::Accept) {
                let ports = match &rule.ports {
                    PortMatch::Any => vec![String::new()],
                    PortMatch::AnyOf(entries) => self.port_alternatives(entries, SetRoles::ALLOWS),
                };
                for port in ports {
                    let union = buckets.entry(port).or_default();
                    match &rule.peers {
                        PeerMatch::Any => union.any = true,
                        PeerMatch::AnyOf(groups) => {
                            for id in groups {
                                match self.ensure_group_set(id, SetRoles::ALLOWS) {
                                    (name, SetType::HashIpPort) => {
                                        union.separate.insert(format!("-m set --match-set {name} {side},dst"));
                                    }
                                    (name, _) => {
                                        union.sets.insert(name);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (port, union) in buckets {
            for peer in self.union_matches(union, side) {
                self.push(&chain, join_spec(&join_matches(&peer, &port), "-j RETURN"));
            }
        }
        self.push(&chain, "-j DROP");
        chain
    }

    /// The peer matches of one bucket: nothing (any peer), one set, or a list of the sets.
    fn union_matches(&mut self, union: PeerUnion, side: &str) -> Vec<String> {
        if union.any {
            return vec![String::new()];
        }
        let mut matches = Vec::with_capacity(1 + union.separate.len());
        let mut sets = union.sets.into_iter();
        match (sets.next(), sets.next()) {
            (None, _) => {}
            (Some(only), None) => matches.push(format!("-m set --match-set {only} {side}")),
            (Some(first), Some(second)) => {
                let members: BTreeSet<Member> =
                    [first, second].into_iter().chain(sets).map(Member::Set).collect();
                let name = union_set_name(self.family, &members);
                self.ipsets.insert(
                    SetSpec::new(name.clone(), SetType::ListSet, self.family, members).with_roles(SetRoles::ALLOWS),
                );
                matches.push(format!("-m set --match-set {name} {side}"));
            }
        }
        matches.extend(union.separate);
        matches
    }

    /// The Pass replay chain: Accept keeps the mark and leaves, Pass clears it (see module doc).
    fn ensure_pass_replay(&mut self, id: &RuleSetId) -> String {
        let chain = pass_replay_chain(id);
        if self.chains.contains_key(&chain) {
            return chain;
        }
        self.chains.insert(chain.clone(), Vec::new());
        let Some(set) = self.plan.rule_sets.get(id).cloned() else {
            return chain;
        };
        for rule in &set.rules {
            let target = match rule.action {
                Action::Accept => "-j RETURN".to_string(),
                Action::Pass => format!("-j MARK --set-xmark {}", self.clear_mark),
                Action::Deny => continue, // cannot be the first match: the set would have dropped
            };
            for matches in self.expand_rule(rule, set.direction) {
                self.push(&chain, join_spec(&matches, &target));
            }
        }
        chain
    }

    /// The match parts of a rule: cross product of peer alternatives and port alternatives.
    fn expand_rule(&mut self, rule: &Rule, direction: Direction) -> Vec<String> {
        let peer_side = peer_side(direction);
        let roles = match rule.action {
            Action::Accept => SetRoles::ALLOWS,
            Action::Deny => SetRoles::DENIES,
            // Pass skips later Accepts and later Denies alike.
            Action::Pass => SetRoles::BOTH,
        };
        let peers: Vec<String> = match &rule.peers {
            PeerMatch::Any => vec![String::new()],
            PeerMatch::AnyOf(groups) => {
                let mut seen = BTreeSet::new();
                groups
                    .iter()
                    .filter(|id| seen.insert(*id))
                    .map(|id| {
                        let (name, set_type) = self.ensure_group_set(id, roles);
                        match set_type {
                            SetType::HashIpPort => {
                                format!("-m set --match-set {name} {peer_side},dst")
                            }
                            _ => format!("-m set --match-set {name} {peer_side}"),
                        }
                    })
                    .collect()
            }
        };
        let ports = match &rule.ports {
            PortMatch::Any => vec![String::new()],
            PortMatch::AnyOf(entries) => self.port_alternatives(entries, roles),
        };
        let mut lines = Vec::with_capacity(peers.len() * ports.len());
        for peer in &peers {
            for port in &ports {
                lines.push(join_matches(peer, port));
            }
        }
        lines
    }

    /// `roles`: what the rule using these ports does with a match (for named-port sets).
    fn port_alternatives(&mut self, entries: &[PortEntry], roles: SetRoles) -> Vec<String> {
        let mut ranges: BTreeMap<Protocol, BTreeSet<(u16, u16)>> = BTreeMap::new();
        let mut named = BTreeSet::new();
        for entry in entries {
            match entry {
                PortEntry::Range {
                    protocol,
                    first,
                    last,
                } if first <= last => {
                    ranges.entry(*protocol).or_default().insert((*first, *last));
                }
                PortEntry::Range { .. } => {} // empty range: matches nothing
                PortEntry::Named(id) => {
                    named.insert(id.clone());
                }
            }
        }
        let mut alternatives = Vec::new();
        for (protocol, protocol_ranges) in ranges {
            let Some(name) = protocol_name(protocol) else {
                alternatives.push(format!("-p {}", self.family.icmp_protocol()));
                continue;
            };
            if protocol_ranges
                .iter()
                .any(|&(first, last)| first == 0 && last == u16::MAX)
            {
                alternatives.push(format!("-p {name}"));
                continue;
            }
            for chunk in multiport_chunks(&protocol_ranges) {
                if let [(first, last)] = chunk.as_slice() {
                    alternatives.push(format!(
                        "-p {name} -m {name} --dport {}",
                        port_text(*first, *last)
                    ));
                } else {
                    let list: Vec<String> = chunk
                        .iter()
                        .map(|&(first, last)| port_text(first, last))
                        .collect();
                    alternatives.push(format!(
                        "-p {name} -m multiport --dports {}",
                        list.join(",")
                    ));
                }
            }
        }
        for id in named {
            let (name, _) = self.ensure_group_set(&id, roles);
            alternatives.push(format!("-m set --match-set {name} dst,dst"));
        }
        alternatives
    }

    /// Declares the group's set in this family (empty if the group has no such members).
    /// `roles`: what the referring rule does with a match, accumulated over every reference.
    fn ensure_group_set(&mut self, id: &GroupId, roles: SetRoles) -> (String, SetType) {
        let group = self.plan.groups.get(id);
        let set_type = match group {
            Some(Group::Addresses(_)) | None => SetType::HashIp,
            Some(Group::Networks(_)) => SetType::HashNet,
            Some(Group::IpPorts(_)) => SetType::HashIpPort,
        };
        let name = group_set_name(self.family, set_type, id);
        if !self.ipsets.contains(&name) {
            if group.is_none() {
                tracing::warn!(group = %id.0, "plan refers to a missing group; rendering it empty");
            }
            let members = group
                .map(|group| crate::ipset::group_members(group, self.family))
                .unwrap_or_default();
            self.ipsets
                .insert(SetSpec::new(name.clone(), set_type, self.family, members));
        }
        self.ipsets.add_roles(&name, roles);
        (name, set_type)
    }
}

/// The peers allowed on one port match of a network-policy tier.
#[derive(Default)]
struct PeerUnion {
    /// Some rule allows every peer.
    any: bool,
    /// Address and network sets, matched together.
    sets: BTreeSet<String>,
    /// Matches that cannot join a union (`hash:ip,port` peers need two dimensions).
    separate: BTreeSet<String>,
}

/// The packet side a peer is on: the source of ingress, the destination of egress.
fn peer_side(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "src",
        Direction::Egress => "dst",
    }
}

fn protocol_name(protocol: Protocol) -> Option<&'static str> {
    match protocol {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
        Protocol::Icmp => None,
    }
}

fn port_text(first: u16, last: u16) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}:{last}")
    }
}

/// Merges overlapping or adjacent ranges, then packs them into multiport lines of 15 slots
/// (a single port takes one slot, a range two).
fn multiport_chunks(ranges: &BTreeSet<(u16, u16)>) -> Vec<Vec<(u16, u16)>> {
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for &(first, last) in ranges {
        match merged.last_mut() {
            Some((_, previous_last)) if u32::from(first) <= u32::from(*previous_last) + 1 => {
                *previous_last = (*previous_last).max(last);
            }
            _ => merged.push((first, last)),
        }
    }
    let mut chunks: Vec<Vec<(u16, u16)>> = Vec::new();
    let mut slots = 0;
    for range in merged {
        let cost = if range.0 == range.1 { 1 } else { 2 };
        match chunks.last_mut() {
            Some(chunk) if slots + cost <= MAX_MULTIPORT_SLOTS => {
                chunk.push(range);
                slots += cost;
            }
            _ => {
                chunks.push(vec![range]);
                slots = cost;
            }
        }
    }
    chunks
}

fn host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn join_matches(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a} {b}"),
    }
}

fn join_spec(matches: &str, target: &str) -> String {
    join_matches(matches, target)
}
