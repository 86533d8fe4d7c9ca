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
//!   -j PAL-INGRESS                            FORWARD: ingress of the destination pod (OUTPUT
//!                                             is the node's own traffic, always allowed)
//!   -j MARK --set-xmark 0/M                   leave the mark bit as we found it for other tools
//! PAL-INGRESS (PAL-EGRESS mirrors it with src)
//!   ! --match-set pal4-iso-in dst -j RETURN    open pods cost one rule
//!   -s <node ip> -j RETURN                     the plan's node addresses (ingress only)
//!   -d <pod ip> -g PAL-I-<hash(pod)>           goto: a RETURN in the pod chain means "allowed"
//!   -j DROP                                    isolated but not programmed yet: fail closed
//! PAL-I-<pod>
//!   -j MARK --set-xmark 0/M                    M = RenderConfig::mark, the only bit we use
//!   -s <own ip> -j RETURN                      loopback / hairpin
//!   -j PAL-AI-<hash(admin sets)>               admin tier, when any; returns marked = accepted
//!   mark M -j RETURN
//!   -g PAL-NI-<hash(NP sets)>                  when a NetworkPolicy isolates the pod, else
//!   -g PAL-BI-<hash(baseline sets)>            the baseline tier, when any
//!   (fall through = RETURN = allowed)
//! PAL-AI-<sets>   (entered by jump)            per run of one action, per port match:
//!   <peer union> <ports> -g PAL-ACCEPT             Accept: mark and leave the tier
//!   <peer union> <ports> -j DROP                   Deny
//!   <peer union> <ports> -j RETURN                 Pass: back unmarked, on to the next tier
//! PAL-NI-<sets>   (entered by goto)
//!   <peer union> <ports> -j RETURN                 allowed
//!   -j DROP                                        isolated: nothing matched
//! PAL-BI-<sets>   (entered by goto)
//!   <peer union> <ports> -j RETURN | -j DROP       Accept and Pass allow, Deny denies
//! PAL-ACCEPT
//!   -j MARK --set-xmark M/M                        falls off: back to the pod chain, marked
//! ```
//!
//! # Tiers are runs of unions
//! A tier chain is shared by every pod with the same rule sets in that tier. Its rules, in
//! evaluation order, fall into runs of one action, and inside a run the order cannot matter: any
//! match has the same outcome. So each run is bucketed by port match, and each bucket's peer groups
//! are matched at once: one set, or a `list:set` `pal4-u-<hash(members)>` of them (a nomatch in one
//! member does not stop the next from matching, exactly a union). The first packet of a connection
//! walks one rule per run and port match, not one per policy: a NetworkPolicy tier is a single
//! run of Accept, and a thousand admin Deny policies in a row are one rule per port. Admin tiers
//! need three outcomes (accepted, denied, on to the next tier); the one mark bit carries
//! "accepted", Pass returns unmarked.
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

use ipnet::IpNet;
use palisade_engine::model::{PodKey, Protocol};
use palisade_engine::plan::{
    Action, Direction, DirectionPlan, Group, GroupId, NodePlan, PeerMatch, PortEntry, PortMatch, RuleSet, RuleSetId,
};
use sha2::{Digest, Sha256};

use crate::ipset::{DesiredIpSets, Member, SetRoles, SetSpec, SetType};
use crate::names::{
    ACCEPT_CHAIN, COMMENT_PREFIX, EGRESS_DISPATCH, FORWARD_CHAIN, Family, INGRESS_DISPATCH, INPUT_CHAIN, OUTPUT_CHAIN,
    isolation_set,
};

/// A bit unused by kube-proxy (0x4000, 0x8000) and common CNIs.
pub const DEFAULT_MARK: u32 = 0x10000;

const MAX_MULTIPORT_SLOTS: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// The single mark bit carrying "accepted" between chains; cleared before every use.
    pub mark: u32,
    /// Overrides the plan's node addresses ([`NodePlan::node_ips`]) when not empty: ingress
    /// from them (kubelet probes) is always allowed.
    pub node_ips: Vec<IpAddr>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig { mark: DEFAULT_MARK, node_ips: Vec::new() }
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
        OwnedRule { hash: short_hash(&format!("{chain}\n{spec}")), spec }
    }

    pub fn restore_line(&self, chain: &str) -> String {
        format!("-A {chain} -m comment --comment \"{COMMENT_PREFIX}{}\" {}", self.hash, self.spec)
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
        Hook { kernel_chain, target: target.to_string(), hash }
    }

    pub fn insert_line(&self) -> String {
        format!("-I {} 1 {}", self.kernel_chain, self.rule_spec())
    }

    /// The rule after `-A <chain> ` as `iptables-save` shows it (what `-D <chain>` takes).
    pub fn rule_spec(&self) -> String {
        format!("-m comment --comment \"{COMMENT_PREFIX}{}\" -j {}", self.hash, self.target)
    }
}

/// The desired content of our chains in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTable {
    pub family: Family,
    pub chains: BTreeMap<String, Vec<OwnedRule>>,
    pub hooks: Vec<Hook>,
    /// The hash of each dispatch rule that sends one isolated pod address to its pod chain, and
    /// that address: a rule only its address's isolation-set membership can reach, which the
    /// applier may therefore remove after the set changes ([`crate::drift::rewrites_that_can_wait`]).
    pub pod_dispatch: BTreeMap<String, IpAddr>,
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
    Rendered { ipv4: v4.restore_text(), ipv6: v6.restore_text(), ipsets, v4, v6 }
}

// ---- names ------------------------------------------------------------------------------------

fn pod_chain(pod: &PodKey, direction: Direction) -> String {
    let letter = direction_letter(direction);
    format!("PAL-{letter}-{}", short_hash(&format!("{}/{}", pod.namespace, pod.name)))
}

fn direction_letter(direction: Direction) -> char {
    match direction {
        Direction::Ingress => 'I',
        Direction::Egress => 'E',
    }
}

/// A tier chain is named by its tier, direction and rule sets: pods with the same policies in a
/// tier share it. `PAL-AI-`, `PAL-NI-`, `PAL-BI-` (and `E` for egress).
fn tier_chain(tier: Tier, sets: &[RuleSetId], direction: Direction) -> String {
    let ids: Vec<&str> = sets.iter().map(|id| id.0.as_str()).collect();
    format!("PAL-{}{}-{}", tier.letter(), direction_letter(direction), short_hash(&ids.join(",")))
}

/// A union is named by its members, so its membership never changes: a different union is a
/// different set.
fn union_set_name(family: Family, members: &BTreeSet<Member>) -> String {
    let names: Vec<String> = members.iter().map(Member::to_string).collect();
    format!("{}{}-{}", family.set_prefix(), SetType::ListSet.letter(), short_hash(&names.join(",")))
}

/// A merged union is named by the groups it merges, never their members, so pod churn changes
/// members only.
fn merged_set_name(family: Family, groups: &[String]) -> String {
    format!("{}m-{}", family.set_prefix(), short_hash(&groups.join(",")))
}

fn group_set_name(family: Family, set_type: SetType, id: &GroupId) -> String {
    format!("{}{}-{}", family.set_prefix(), set_type.letter(), id16(&id.0))
}

/// Content addresses are 16 hex digits already; anything else is hashed to fit name limits.
fn id16(id: &str) -> String {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        id.to_string()
    } else {
        short_hash(id)
    }
}

pub(crate) fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).fold(String::with_capacity(16), |mut out, byte| {
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
    pod_dispatch: BTreeMap<String, IpAddr>,
    ipsets: &'a mut DesiredIpSets,
}

fn render_family(plan: &NodePlan, cfg: &RenderConfig, family: Family, ipsets: &mut DesiredIpSets) -> DesiredTable {
    let mut renderer = FamilyRenderer {
        plan,
        family,
        mark: format!("{:#x}/{:#x}", cfg.mark, cfg.mark),
        clear_mark: format!("0x0/{:#x}", cfg.mark),
        chains: BTreeMap::new(),
        pod_dispatch: BTreeMap::new(),
        ipsets,
    };
    renderer.render_hook_chains();
    for direction in [Direction::Ingress, Direction::Egress] {
        renderer.render_dispatch(direction, cfg);
    }
    let hooks =
        vec![Hook::new("FORWARD", FORWARD_CHAIN), Hook::new("INPUT", INPUT_CHAIN), Hook::new("OUTPUT", OUTPUT_CHAIN)];
    DesiredTable { family, chains: renderer.chains, hooks, pod_dispatch: renderer.pod_dispatch }
}

impl FamilyRenderer<'_> {
    /// Appends a rule to `chain`; returns its hash.
    fn push(&mut self, chain: &str, spec: impl Into<String>) -> String {
        let rule = OwnedRule::new(chain, spec.into());
        let hash = rule.hash.clone();
        self.chains.entry(chain.to_string()).or_default().push(rule);
        hash
    }

    fn render_hook_chains(&mut self) {
        let layout: [(&str, &[&str]); 3] = [
            (FORWARD_CHAIN, &[EGRESS_DISPATCH, INGRESS_DISPATCH]),
            (INPUT_CHAIN, &[EGRESS_DISPATCH]),
            // Packets in OUTPUT leave a host process: they are the node's, whatever host address
            // they carry (a CNI bridge address, say), and ingress from the node is always allowed.
            // So OUTPUT judges nothing beyond conntrack state.
            (OUTPUT_CHAIN, &[]),
        ];
        for (chain, dispatches) in layout {
            self.push(chain, "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN");
            if self.family == Family::V6 {
                for icmp_type in [133, 134, 135, 136] {
                    self.push(chain, format!("-p ipv6-icmp -m icmp6 --icmpv6-type {icmp_type} -j RETURN"));
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
        self.push(dispatch, format!("-m set ! --match-set {isolation} {side} -j RETURN"));
        if direction == Direction::Ingress {
            let configured = if cfg.node_ips.is_empty() { &self.plan.node_ips } else { &cfg.node_ips };
            let node_ips: BTreeSet<&IpAddr> = configured.iter().filter(|ip| Family::of(ip) == self.family).collect();
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
            let own_ips: BTreeSet<IpAddr> =
                local.ips.iter().copied().filter(|ip| Family::of(ip) == self.family).collect();
            if plan_for.is_open() || own_ips.is_empty() {
                continue;
            }
            let chain = pod_chain(pod, direction);
            self.render_pod_chain(&chain, direction, plan_for, &own_ips);
            for ip in &own_ips {
                if isolated_ips.insert(*ip) {
                    let hash = self.push(dispatch, format!("{flag} {} -g {chain}", host(ip)));
                    self.pod_dispatch.insert(hash, *ip);
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
        chain: &str,
        direction: Direction,
        plan_for: &DirectionPlan,
        own_ips: &BTreeSet<IpAddr>,
    ) {
        self.push(chain, format!("-j MARK --set-xmark {}", self.clear_mark));
        let own_flag = match direction {
            Direction::Ingress => "-s",
            Direction::Egress => "-d",
        };
        for ip in own_ips {
            self.push(chain, format!("{own_flag} {} -j RETURN", host(ip)));
        }
        if !plan_for.admin.is_empty() {
            let tier = self.ensure_tier(Tier::Admin, &plan_for.admin, direction);
            self.push(chain, format!("-j {tier}"));
            self.push(chain, format!("-m mark --mark {} -j RETURN", self.mark));
        }
        let last_tier = match &plan_for.network_policy {
            Some(sets) => Some((Tier::NetworkPolicy, sets.as_slice())),
            None if !plan_for.baseline.is_empty() => Some((Tier::Baseline, plan_for.baseline.as_slice())),
            None => None, // falling off the pod chain allows
        };
        if let Some((tier, sets)) = last_tier {
            let tier = self.ensure_tier(tier, sets, direction);
            self.push(chain, format!("-g {tier}"));
        }
    }

    fn rule_set(&self, id: &RuleSetId) -> Option<&RuleSet> {
        let found = self.plan.rule_sets.get(id);
        if found.is_none() {
            tracing::warn!(rule_set = %id.0, "plan refers to a missing rule set; rendering it empty");
        }
        found
    }

    /// The chain of one tier for every pod with exactly these rule sets in it; returns its name.
    ///
    /// The tier's rules, in evaluation order, fall into runs of one action. Inside a run the order
    /// cannot matter (any match has the same outcome), so a run is bucketed by port match and each
    /// bucket matches the union of its peer groups in a single rule (one `list:set` when there
    /// are several). A new connection then costs one rule per run and port match, not one per
    /// policy. A NetworkPolicy tier is one run of Accept.
    fn ensure_tier(&mut self, tier: Tier, sets: &[RuleSetId], direction: Direction) -> String {
        let chain = tier_chain(tier, sets, direction);
        if self.chains.contains_key(&chain) {
            return chain;
        }
        self.chains.insert(chain.clone(), Vec::new());
        let side = peer_side(direction);
        let mut runs: Vec<(Action, BTreeMap<String, PeerUnion>)> = Vec::new();
        for id in sets {
            let Some(set) = self.rule_set(id).cloned() else {
                continue;
            };
            for rule in &set.rules {
                // NetworkPolicy rules only allow (the plan's contract); anything else allows nothing.
                if tier == Tier::NetworkPolicy && rule.action != Action::Accept {
                    continue;
                }
                if matches!(&rule.peers, PeerMatch::AnyOf(groups) if groups.is_empty()) {
                    continue; // matches nothing, so it cannot split a run either
                }
                let roles = roles_of(rule.action);
                let ports = match &rule.ports {
                    PortMatch::Any => vec![String::new()],
                    PortMatch::AnyOf(entries) => self.port_alternatives(entries, roles),
                };
                if ports.is_empty() {
                    continue;
                }
                if runs.last().map(|(action, _)| *action) != Some(rule.action) {
                    runs.push((rule.action, BTreeMap::new()));
                }
                let Some((_, buckets)) = runs.last_mut() else { continue };
                let mut peers = PeerUnion::default();
                match &rule.peers {
                    PeerMatch::Any => peers.any = true,
                    PeerMatch::AnyOf(groups) => {
                        for id in groups {
                            match self.ensure_group_set(id, roles) {
                                (name, SetType::HashIpPort) => {
                                    peers.separate.insert(format!("-m set --match-set {name} {side},dst"));
                                }
                                (name, _) => {
                                    peers.sets.insert(name);
                                }
                            }
                        }
                    }
                }
                for port in ports {
                    buckets.entry(port).or_default().absorb(&peers);
                }
            }
        }
        for (action, buckets) in runs {
            let target = match (tier, action) {
                (_, Action::Deny) => "-j DROP".to_string(),
                // Entered by jump from the pod chain: mark "accepted" and leave the tier at once.
                (Tier::Admin, Action::Accept) => {
                    self.ensure_accept_chain();
                    format!("-g {ACCEPT_CHAIN}")
                }
                // Back to the pod chain unmarked: on to the next tier.
                (Tier::Admin, Action::Pass) => "-j RETURN".to_string(),
                // Entered by goto: returning allows.
                (Tier::NetworkPolicy | Tier::Baseline, Action::Accept | Action::Pass) => "-j RETURN".to_string(),
            };
            for (port, union) in buckets {
                for peer in self.union_matches(union, side, roles_of(action)) {
                    self.push(&chain, join_matches(&join_matches(&peer, &port), &target));
                }
            }
        }
        if tier == Tier::NetworkPolicy {
            self.push(&chain, "-j DROP");
        }
        chain
    }

    fn ensure_accept_chain(&mut self) {
        if !self.chains.contains_key(ACCEPT_CHAIN) {
            self.push(ACCEPT_CHAIN, format!("-j MARK --set-xmark {}", self.mark));
        }
    }

    /// The peer matches of one bucket: nothing (any peer), or one set matching the union.
    ///
    /// Address groups and networks without excepts are merged into one `hash:net`
    /// (`pal4-m-<hash(groups)>`), so a lookup costs the same for one group or a thousand; a
    /// network group with excepts keeps its own set, since its `nomatch` entries would exclude
    /// addresses the other groups include. Several sets are matched through a `list:set`, which
    /// tries its members in turn.
    fn union_matches(&mut self, union: PeerUnion, side: &str, roles: SetRoles) -> Vec<String> {
        if union.any {
            return vec![String::new()];
        }
        let mut mergeable = Vec::new();
        let mut own_set = Vec::new();
        for name in union.sets {
            let merges = self.ipsets.sets.get(&name).is_some_and(|spec| match spec.set_type {
                SetType::HashIp => true,
                SetType::HashNet => !spec.members.iter().any(|m| matches!(m, Member::Net { nomatch: true, .. })),
                SetType::HashIpPort | SetType::ListSet => false,
            });
            if merges { mergeable.push(name) } else { own_set.push(name) }
        }
        let mut sets = own_set;
        match mergeable.as_slice() {
            [] => {}
            [only] => sets.push(only.clone()),
            groups => {
                let members: BTreeSet<Member> = groups
                    .iter()
                    .filter_map(|name| self.ipsets.sets.get(name))
                    .flat_map(|spec| spec.members.iter().filter_map(as_network))
                    .collect();
                let name = merged_set_name(self.family, groups);
                self.ipsets
                    .insert(SetSpec::new(name.clone(), SetType::HashNet, self.family, members).with_roles(roles));
                sets.push(name);
            }
        }
        sets.sort();
        let mut matches = Vec::with_capacity(1 + union.separate.len());
        match sets.as_slice() {
            [] => {}
            [only] => matches.push(format!("-m set --match-set {only} {side}")),
            _ => {
                let members: BTreeSet<Member> = sets.into_iter().map(Member::Set).collect();
                let name = union_set_name(self.family, &members);
                self.ipsets
                    .insert(SetSpec::new(name.clone(), SetType::ListSet, self.family, members).with_roles(roles));
                matches.push(format!("-m set --match-set {name} {side}"));
            }
        }
        matches.extend(union.separate);
        matches
    }

    /// `roles`: what the rule using these ports does with a match (for named-port sets).
    fn port_alternatives(&mut self, entries: &[PortEntry], roles: SetRoles) -> Vec<String> {
        let mut ranges: BTreeMap<Protocol, BTreeSet<(u16, u16)>> = BTreeMap::new();
        let mut named = BTreeSet::new();
        for entry in entries {
            match entry {
                PortEntry::Range { protocol, first, last } if first <= last => {
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
            if protocol_ranges.iter().any(|&(first, last)| first == 0 && last == u16::MAX) {
                alternatives.push(format!("-p {name}"));
                continue;
            }
            for chunk in multiport_chunks(&protocol_ranges) {
                if let [(first, last)] = chunk.as_slice() {
                    alternatives.push(format!("-p {name} -m {name} --dport {}", port_text(*first, *last)));
                } else {
                    let list: Vec<String> = chunk.iter().map(|&(first, last)| port_text(first, last)).collect();
                    alternatives.push(format!("-p {name} -m multiport --dports {}", list.join(",")));
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
            let members = group.map(|group| crate::ipset::group_members(group, self.family)).unwrap_or_default();
            self.ipsets.insert(SetSpec::new(name.clone(), set_type, self.family, members));
        }
        self.ipsets.add_roles(&name, roles);
        (name, set_type)
    }
}

/// The peers of one run of a tier on one port match.
#[derive(Default)]
struct PeerUnion {
    /// Some rule allows every peer.
    any: bool,
    /// Address and network sets, matched together.
    sets: BTreeSet<String>,
    /// Matches that cannot join a union (`hash:ip,port` peers need two dimensions).
    separate: BTreeSet<String>,
}

impl PeerUnion {
    fn absorb(&mut self, other: &PeerUnion) {
        self.any |= other.any;
        self.sets.extend(other.sets.iter().cloned());
        self.separate.extend(other.separate.iter().cloned());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Admin,
    NetworkPolicy,
    Baseline,
}

impl Tier {
    fn letter(self) -> char {
        match self {
            Tier::Admin => 'A',
            Tier::NetworkPolicy => 'N',
            Tier::Baseline => 'B',
        }
    }
}

/// What a set's members can do to a verdict through a rule with this action.
fn roles_of(action: Action) -> SetRoles {
    match action {
        Action::Accept => SetRoles::ALLOWS,
        Action::Deny => SetRoles::DENIES,
        // Pass skips later Accepts and later Denies alike.
        Action::Pass => SetRoles::BOTH,
    }
}

/// An address or except-free network as a `hash:net` entry.
fn as_network(member: &Member) -> Option<Member> {
    match member {
        Member::Ip(ip) => Some(Member::Net { net: IpNet::from(*ip), nomatch: false }),
        Member::Net { nomatch: false, .. } => Some(member.clone()),
        _ => None,
    }
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
    if first == last { first.to_string() } else { format!("{first}:{last}") }
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
