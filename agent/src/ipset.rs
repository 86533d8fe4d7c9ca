//! Desired ipsets, reading `ipset save` back, and the `ipset restore` batches that reconcile them.
//!
//! Reconciling never empties a set that rules refer to: missing sets are created and filled, a set
//! whose header (type, family, maxelem) differs is rebuilt in a temporary set and `swap`ped in, and
//! a set whose members differ gets `add`/`del` of the difference in place.
//!
//! The changes come as three batches, so that a rejected iptables transaction loosens nothing (see
//! the ordering in `apply.rs`):
//! - [`IpSetChanges::before`] (before iptables): create and fill missing sets (only new rules refer
//!   to them, so they are inert until iptables commits), and the member changes that can only
//!   tighten under the old rules and the new: additions to sets that only deny (isolation sets,
//!   Deny rules), removals from sets that only allow (Accept rules, network-policy unions);
//! - [`IpSetChanges::after`] (after iptables committed): the other member changes (they can only
//!   tighten against the new rules until they land), swaps of rebuilt sets;
//! - [`IpSetChanges::destroy`]: destroy sets nothing refers to any more.
//!
//! So while rules and members change together, no packet passes that both the old and the new
//! state deny. A set with both roles (Pass, or Accept and Deny at once) gets every change after
//! iptables; there a new rule can briefly see the set's old members.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use palisade_engine::model::Protocol;
use palisade_engine::plan::{Direction, Group};

use crate::names::{Family, isolation_set};

/// Sets grow in powers of two from here; crossing it changes the header and triggers a swap.
const MIN_MAXELEM: u32 = 65536;
/// The kernel raises a smaller `list:set` size to 4; 8 is ipset's default.
const MIN_LIST_SIZE: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    HashIp,
    HashNet,
    HashIpPort,
    /// A union of other sets of one family (`list:set`): a network-policy tier matches all the
    /// peer groups allowed on one port in one rule.
    ListSet,
}

impl SetType {
    pub fn ipset_type(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
            SetType::HashIpPort => "hash:ip,port",
            SetType::ListSet => "list:set",
        }
    }

    /// The letter in our set names, so one group id never maps to two types under one name.
    pub fn letter(self) -> char {
        match self {
            SetType::HashIp => 'a',
            SetType::HashNet => 'n',
            SetType::HashIpPort => 'p',
            SetType::ListSet => 'u',
        }
    }
}

/// One ipset member, typed so that kernel read-back compares equal regardless of formatting.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    Ip(IpAddr),
    Net {
        net: IpNet,
        nomatch: bool,
    },
    IpPort {
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
    },
    /// A member set of a `list:set`, by name.
    Set(String),
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Ip(ip) => write!(f, "{ip}"),
            Member::Net { net, nomatch } => {
                write!(f, "{net}")?;
                if *nomatch { write!(f, " nomatch") } else { Ok(()) }
            }
            Member::IpPort { ip, protocol, port } => {
                write!(f, "{ip},{}:{port}", protocol_text(*protocol))
            }
            Member::Set(name) => write!(f, "{name}"),
        }
    }
}

fn protocol_text(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        Protocol::Icmp => "icmp",
    }
}

/// How a set's members can move a verdict, which decides when a member change is safe to make
/// while the rules referring to the set are being replaced (see [`plan_changes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetRoles {
    /// A member can be allowed by it (Accept rules, network-policy unions, Pass).
    pub allows: bool,
    /// A member can be denied or judged further by it (Deny rules, isolation sets, Pass).
    pub denies: bool,
}

impl SetRoles {
    pub const ALLOWS: SetRoles = SetRoles { allows: true, denies: false };
    pub const DENIES: SetRoles = SetRoles { allows: false, denies: true };
    /// Pass, or a set whose earlier use is not known: any change may loosen something.
    pub const BOTH: SetRoles = SetRoles { allows: true, denies: true };

    pub fn union(self, other: SetRoles) -> SetRoles {
        SetRoles { allows: self.allows || other.allows, denies: self.denies || other.denies }
    }

    /// Adding a member can only deny more.
    fn additions_only_tighten(self) -> bool {
        !self.allows
    }

    /// Removing a member can only allow less: the packets it changes were allowed by the set.
    fn removals_only_tighten(self) -> bool {
        !self.denies
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub set_type: SetType,
    pub family: Family,
    pub maxelem: u32,
    pub members: BTreeSet<Member>,
    /// What the rules of this render use the set for.
    pub roles: SetRoles,
}

impl SetSpec {
    pub fn new(name: String, set_type: SetType, family: Family, members: BTreeSet<Member>) -> SetSpec {
        let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let maxelem = match set_type {
            // A list's members are fixed by its content-addressed name: room for exactly them.
            SetType::ListSet => count.max(MIN_LIST_SIZE),
            _ => count.saturating_mul(2).checked_next_power_of_two().unwrap_or(u32::MAX).max(MIN_MAXELEM),
        };
        SetSpec { name, set_type, family, maxelem, members, roles: SetRoles::default() }
    }

    pub fn with_roles(mut self, roles: SetRoles) -> SetSpec {
        self.roles = roles;
        self
    }

    fn create_line(&self, name: &str) -> String {
        if self.set_type == SetType::ListSet {
            return format!("create {name} list:set size {}", self.maxelem);
        }
        format!(
            "create {name} {} family {} maxelem {}",
            self.set_type.ipset_type(),
            self.family.ipset_family(),
            self.maxelem
        )
    }

    /// The set as `ipset save` shows it once the kernel holds exactly this spec.
    pub fn as_kernel_set(&self) -> KernelSet {
        KernelSet {
            set_type: self.set_type.ipset_type().to_owned(),
            family: self.family.ipset_family().to_owned(),
            maxelem: Some(self.maxelem),
            members: self.members.clone(),
            parsed_all_members: true,
        }
    }

    fn header_matches(&self, kernel: &KernelSet) -> bool {
        // `ipset save` shows no family for a list (its members carry it) and calls maxelem "size".
        kernel.set_type == self.set_type.ipset_type()
            && (self.set_type == SetType::ListSet || kernel.family == self.family.ipset_family())
            && kernel.maxelem == Some(self.maxelem)
            && kernel.parsed_all_members
    }
}

/// The ipsets one plan needs, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredIpSets {
    pub sets: BTreeMap<String, SetSpec>,
}

impl DesiredIpSets {
    pub fn contains(&self, name: &str) -> bool {
        self.sets.contains_key(name)
    }

    pub fn insert(&mut self, spec: SetSpec) {
        self.sets.insert(spec.name.clone(), spec);
    }

    /// Records one more use of a set already inserted.
    pub fn add_roles(&mut self, name: &str, roles: SetRoles) {
        if let Some(spec) = self.sets.get_mut(name) {
            spec.roles = spec.roles.union(roles);
        }
    }

    /// The roles of every set, remembered by the applier for the next reconcile.
    pub fn roles(&self) -> BTreeMap<String, SetRoles> {
        self.sets.iter().map(|(name, spec)| (name.clone(), spec.roles)).collect()
    }

    /// Every set, lists after the sets they hold: a list can only be filled with sets that exist.
    pub fn in_creation_order(&self) -> impl Iterator<Item = &SetSpec> {
        let (lists, plain): (Vec<&SetSpec>, Vec<&SetSpec>) =
            self.sets.values().partition(|spec| spec.set_type == SetType::ListSet);
        plain.into_iter().chain(lists)
    }

    /// `ipset restore` text creating and filling every set (what a from-scratch install writes).
    pub fn restore_text(&self) -> String {
        let mut text = String::new();
        for spec in self.in_creation_order() {
            text.push_str(&spec.create_line(&spec.name));
            text.push('\n');
            for member in &spec.members {
                text.push_str(&format!("add {} {member}\n", spec.name));
            }
        }
        text
    }
}

/// The members of a group in one family, in ipset's terms.
pub fn group_members(group: &Group, family: Family) -> BTreeSet<Member> {
    match group {
        Group::Addresses(ips) => ips.iter().filter(|ip| Family::of(ip) == family).map(|ip| Member::Ip(*ip)).collect(),
        Group::Networks(entries) => {
            // An explicit entry wins over one produced by splitting a /0 into two /1.
            let mut members: BTreeMap<IpNet, bool> = BTreeMap::new();
            let mut split: Vec<(IpNet, bool)> = Vec::new();
            for entry in entries.iter().filter(|entry| Family::of(&entry.net.addr()) == family) {
                let net = entry.net.trunc();
                if net.prefix_len() == 0 {
                    split.extend(halves(net).into_iter().map(|half| (half, entry.nomatch)));
                } else {
                    members.insert(net, entry.nomatch);
                }
            }
            for (net, nomatch) in split {
                members.entry(net).or_insert(nomatch);
            }
            members.into_iter().map(|(net, nomatch)| Member::Net { net, nomatch }).collect()
        }
        Group::IpPorts(triples) => triples
            .iter()
            .filter(|(ip, protocol, _)| Family::of(ip) == family && protocol.has_ports())
            .map(|(ip, protocol, port)| Member::IpPort { ip: *ip, protocol: *protocol, port: *port })
            .collect(),
    }
}

/// hash:net rejects a /0 prefix; two /1 halves cover the same addresses.
fn halves(net: IpNet) -> [IpNet; 2] {
    match net {
        IpNet::V4(_) => [
            IpNet::V4(Ipv4Net::new_assert([0, 0, 0, 0].into(), 1)),
            IpNet::V4(Ipv4Net::new_assert([128, 0, 0, 0].into(), 1)),
        ],
        IpNet::V6(_) => {
            [IpNet::V6(Ipv6Net::new_assert(0u128.into(), 1)), IpNet::V6(Ipv6Net::new_assert((1u128 << 127).into(), 1))]
        }
    }
}

// ---- the kernel's view ------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelSet {
    pub set_type: String,
    pub family: String,
    pub maxelem: Option<u32>,
    pub members: BTreeSet<Member>,
    /// False when some member could not be parsed: the set is then rebuilt rather than patched.
    pub parsed_all_members: bool,
}

/// Our sets as `ipset save` shows them; foreign sets are skipped.
pub fn parse_save(text: &str) -> BTreeMap<String, KernelSet> {
    let mut sets: BTreeMap<String, KernelSet> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("create"), Some(name)) if is_owned_set(name) => {
                let rest: Vec<&str> = words.collect();
                let set_type = rest.first().copied().unwrap_or_default().to_string();
                let option = |key: &str| rest.windows(2).find(|pair| pair[0] == key).map(|pair| pair[1]);
                sets.insert(
                    name.to_string(),
                    KernelSet {
                        set_type,
                        family: option("family").unwrap_or("inet").to_string(),
                        maxelem: option("maxelem").or_else(|| option("size")).and_then(|value| value.parse().ok()),
                        members: BTreeSet::new(),
                        parsed_all_members: true,
                    },
                );
            }
            (Some("add"), Some(name)) => {
                let Some(set) = sets.get_mut(name) else {
                    continue;
                };
                let rest: Vec<&str> = words.collect();
                match parse_member(&set.set_type, &rest) {
                    Some(member) => {
                        set.members.insert(member);
                    }
                    None => set.parsed_all_members = false,
                }
            }
            _ => {}
        }
    }
    sets
}

pub fn is_owned_set(name: &str) -> bool {
    Family::ALL.iter().any(|family| name.starts_with(family.set_prefix()))
}

pub(crate) fn parse_member(set_type: &str, words: &[&str]) -> Option<Member> {
    let first = *words.first()?;
    match set_type {
        "hash:ip" => first.parse().ok().map(Member::Ip),
        "hash:net" => {
            let net = match first.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => IpNet::from(first.parse::<IpAddr>().ok()?),
            };
            Some(Member::Net { net, nomatch: words.contains(&"nomatch") })
        }
        "hash:ip,port" => {
            let (ip, protocol_port) = first.split_once(',')?;
            let (protocol, port) = protocol_port.split_once(':')?;
            let protocol = match protocol {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => return None,
            };
            Some(Member::IpPort { ip: ip.parse().ok()?, protocol, port: port.parse().ok()? })
        }
        "list:set" => Some(Member::Set(first.to_string())),
        _ => None,
    }
}

// ---- reconciling ------------------------------------------------------------------------------

/// What one reconcile does to ipsets, as `ipset restore` batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSetChanges {
    /// Runs before iptables and only tightens: creates (and fills) missing sets, adds members to
    /// the isolation sets.
    pub before: String,
    /// Runs only after iptables committed: member add/del of the other existing sets, swaps of
    /// rebuilt sets, removals from the isolation sets.
    pub after: String,
    /// Destroys of our sets no longer desired; runs after iptables dropped references to them.
    pub destroy: String,
    pub sets_created: usize,
    pub sets_swapped: usize,
    pub members_added: usize,
    pub members_removed: usize,
    pub sets_destroyed: usize,
}

impl IpSetChanges {
    /// Lines of `before` and `after`, the batches that create and update sets.
    pub fn update_lines(&self) -> usize {
        self.before.lines().count() + self.after.lines().count()
    }
}

/// Whether `name` is one of the sets gating dispatch of isolated pods (`pal4-iso-in`, ...): a
/// member there means "isolated", so adding one can only tighten.
pub fn is_isolation_set(name: &str) -> bool {
    Family::ALL.iter().any(|family| {
        [Direction::Ingress, Direction::Egress].into_iter().any(|direction| isolation_set(*family, direction) == name)
    })
}

/// `previous_roles`: the roles each set had under the rules now in the kernel. A set missing there
/// (the agent's first reconcile) counts as [`SetRoles::BOTH`], except the isolation sets, whose
/// role never changes.
pub fn plan_changes(
    desired: &DesiredIpSets,
    kernel: &BTreeMap<String, KernelSet>,
    previous_roles: &BTreeMap<String, SetRoles>,
) -> IpSetChanges {
    let mut changes = IpSetChanges::default();
    // `ipset restore` is not atomic: a batch that fails at line 5 has applied lines 1 to 4, and a
    // crash can fall between two batches. A temporary left behind that way is referenced by no
    // rule and no list, and its header may differ from the one the next swap creates (then every
    // later `create` of it fails): destroy every leftover temporary before anything else.
    for name in kernel.keys().filter(|name| is_temporary_name(name)) {
        changes.sets_destroyed += 1;
        changes.before.push_str(&format!("destroy {name}\n"));
    }
    for spec in desired.in_creation_order() {
        let name = &spec.name;
        let isolation = is_isolation_set(name);
        let known = if isolation { SetRoles::DENIES } else { SetRoles::BOTH };
        let roles = spec.roles.union(previous_roles.get(name).copied().unwrap_or(known));
        match kernel.get(name) {
            None => {
                changes.sets_created += 1;
                push_create_and_fill(&mut changes.before, spec, name);
            }
            Some(current) if !spec.header_matches(current) => {
                // Fill a temporary set and swap it in: the live set is never observed empty.
                changes.sets_swapped += 1;
                if isolation
                    && current.set_type == spec.set_type.ipset_type()
                    && current.family == spec.family.ipset_family()
                {
                    // Isolate newly isolated pods in the live set already; the swap comes later.
                    for member in spec.members.difference(&current.members) {
                        changes.before.push_str(&format!("add {name} {member}\n"));
                    }
                }
                let temporary = temporary_name(name);
                push_create_and_fill(&mut changes.after, spec, &temporary);
                changes.after.push_str(&format!("swap {temporary} {name}\ndestroy {temporary}\n"));
            }
            Some(current) => {
                let adds = if roles.additions_only_tighten() { &mut changes.before } else { &mut changes.after };
                for member in spec.members.difference(&current.members) {
                    changes.members_added += 1;
                    adds.push_str(&format!("add {name} {member}\n"));
                }
                let desired_keys: BTreeSet<String> = spec.members.iter().map(member_key).collect();
                for member in current.members.difference(&spec.members) {
                    if desired_keys.contains(&member_key(member)) {
                        continue; // only the nomatch flag changed: the add above (with -exist) updated it
                    }
                    changes.members_removed += 1;
                    let removes = if roles.removals_only_tighten() { &mut changes.before } else { &mut changes.after };
                    removes.push_str(&format!("del {name} {}\n", member_key(member)));
                }
            }
        }
    }
    // A set cannot be destroyed while a list holds it: lists go first.
    let (lists, plain): (Vec<_>, Vec<_>) = kernel
        .iter()
        .filter(|(name, _)| !desired.contains(name) && !is_temporary_name(name))
        .partition(|(_, set)| set.set_type == SetType::ListSet.ipset_type());
    for (name, _) in lists.into_iter().chain(plain) {
        changes.sets_destroyed += 1;
        changes.destroy.push_str(&format!("destroy {name}\n"));
    }
    changes
}

fn push_create_and_fill(text: &mut String, spec: &SetSpec, name: &str) {
    text.push_str(&spec.create_line(name));
    text.push('\n');
    // A temporary left over by an interrupted run must not leak stale members into the swap.
    text.push_str(&format!("flush {name}\n"));
    for member in &spec.members {
        text.push_str(&format!("add {name} {member}\n"));
    }
}

/// `del` takes the entry without flags such as `nomatch`.
fn member_key(member: &Member) -> String {
    match member {
        Member::Net { net, .. } => net.to_string(),
        other => other.to_string(),
    }
}

/// The infix that marks a swap temporary, right after the family prefix. Our other names are
/// `pal4-<letter>-…` or `pal4-iso-…`, so none starts with `pal4-tmp`.
const TEMPORARY_INFIX: &str = "tmp";

/// Whether `name` is one of our swap temporaries ([`temporary_name`]).
fn is_temporary_name(name: &str) -> bool {
    Family::ALL
        .iter()
        .any(|family| name.strip_prefix(family.set_prefix()).is_some_and(|rest| rest.starts_with(TEMPORARY_INFIX)))
}

/// Our names are at most 23 characters, so the 3-character infix keeps temporaries within 31.
/// Every name we own starts with a family prefix ([`is_owned_set`]).
fn temporary_name(name: &str) -> String {
    for family in Family::ALL {
        if let Some(rest) = name.strip_prefix(family.set_prefix()) {
            return format!("{}{TEMPORARY_INFIX}{rest}", family.set_prefix());
        }
    }
    format!("{name}-{TEMPORARY_INFIX}")
}
