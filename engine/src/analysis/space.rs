//! Exact descriptions of sets of labels, addresses and ports, closed under the two operations
//! the search needs: intersecting with a constraint and with its negation.
//!
//! A label selector is a conjunction of per-key requirements, and each requirement and its
//! negation constrain one key to "absent, or one of these values" or "absent, or any value but
//! these" (the value universe is infinite). So a conjunction of requirements and negated
//! requirements is again one domain per key, which is emptiness-checked and given a witness
//! exactly. Addresses and ports are interval sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::model::{Labels, Protocol, SelectorOperator, SelectorRequirement};

/// Inclusive intervals over `u128`, sorted and disjoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Intervals(Vec<(u128, u128)>);

impl Intervals {
    pub(crate) fn full(first: u128, last: u128) -> Intervals {
        Intervals(vec![(first, last)])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only `first..=last`.
    pub(crate) fn keep(&mut self, first: u128, last: u128) {
        self.0 = self
            .0
            .iter()
            .filter_map(|&(a, b)| {
                let (lo, hi) = (a.max(first), b.min(last));
                (lo <= hi).then_some((lo, hi))
            })
            .collect();
    }

    /// Removes `first..=last`.
    pub(crate) fn remove(&mut self, first: u128, last: u128) {
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < first || a > last {
                kept.push((a, b));
                continue;
            }
            if a < first {
                kept.push((a, first - 1));
            }
            if b > last {
                kept.push((last + 1, b));
            }
        }
        self.0 = kept;
    }

    pub(crate) fn contains(&self, value: u128) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&value))
    }

    /// `preferred` if it is in the set and not taken, else the smallest member not taken.
    pub(crate) fn pick(&self, preferred: &[u128], taken: &[u128]) -> Option<u128> {
        if let Some(&value) = preferred.iter().find(|value| self.contains(**value) && !taken.contains(value)) {
            return Some(value);
        }
        for &(a, b) in &self.0 {
            // Past the first value (a network's own address) when the interval allows.
            let mut value = if a < b { a + 1 } else { a };
            loop {
                if !taken.contains(&value) {
                    return Some(value);
                }
                if value == b {
                    break;
                }
                value += 1;
            }
            if a < b && !taken.contains(&a) {
                return Some(a);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Labels
// ---------------------------------------------------------------------------------------------

/// The values one key may take. The universe of values is infinite, so `AllBut` is never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Values {
    Only(BTreeSet<String>),
    AllBut(BTreeSet<String>),
}

/// What a label set may hold for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyDomain {
    absent: bool,
    values: Values,
}

impl KeyDomain {
    fn of(operator: &SelectorOperator, values: &[String]) -> Option<KeyDomain> {
        let set = || values.iter().cloned().collect::<BTreeSet<String>>();
        Some(match operator {
            SelectorOperator::In => KeyDomain { absent: false, values: Values::Only(set()) },
            SelectorOperator::NotIn => KeyDomain { absent: true, values: Values::AllBut(set()) },
            SelectorOperator::Exists => KeyDomain { absent: false, values: Values::AllBut(BTreeSet::new()) },
            SelectorOperator::DoesNotExist => KeyDomain { absent: true, values: Values::Only(BTreeSet::new()) },
            SelectorOperator::Unknown(_) => return None,
        })
    }

    fn intersect(&self, other: &KeyDomain) -> KeyDomain {
        let values = match (&self.values, &other.values) {
            (Values::Only(a), Values::Only(b)) => Values::Only(a.intersection(b).cloned().collect()),
            (Values::Only(a), Values::AllBut(b)) | (Values::AllBut(b), Values::Only(a)) => {
                Values::Only(a.difference(b).cloned().collect())
            }
            (Values::AllBut(a), Values::AllBut(b)) => Values::AllBut(a.union(b).cloned().collect()),
        };
        KeyDomain { absent: self.absent && other.absent, values }
    }

    fn is_empty(&self) -> bool {
        !self.absent && matches!(&self.values, Values::Only(values) if values.is_empty())
    }

    /// A value for the key, or `None` to leave it out (preferred whenever absence is allowed).
    fn pick(&self) -> Option<String> {
        if self.absent {
            return None;
        }
        match &self.values {
            Values::Only(values) => values.iter().next().cloned(),
            Values::AllBut(excluded) => Some(fresh_value(excluded)),
        }
    }
}

/// A label value outside `excluded`: `any`, then `any-1`, `any-2`, … (valid label values all).
/// Of the first `excluded.len() + 1` candidates one is always free, so the loop ends.
pub(crate) fn fresh_value(excluded: &BTreeSet<String>) -> String {
    let mut n = 0;
    loop {
        let candidate = if n == 0 { "any".to_string() } else { format!("any-{n}") };
        if !excluded.contains(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// A requirement on one key, or its negation: the atoms of label reasoning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Literal {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

impl Literal {
    pub(crate) fn of(requirement: &SelectorRequirement) -> Literal {
        Literal {
            key: requirement.key.clone(),
            operator: requirement.operator.clone(),
            values: requirement.values.clone(),
        }
    }

    pub(crate) fn equals(key: &str, value: &str) -> Literal {
        Literal { key: key.to_string(), operator: SelectorOperator::In, values: vec![value.to_string()] }
    }

    /// Exact negation: `NotIn` holds when the key is absent, so it is the complement of `In`.
    /// An unknown operator matches nothing, so its negation matches everything (`None`).
    pub(crate) fn negated(&self) -> Option<Literal> {
        let operator = match &self.operator {
            SelectorOperator::In => SelectorOperator::NotIn,
            SelectorOperator::NotIn => SelectorOperator::In,
            SelectorOperator::Exists => SelectorOperator::DoesNotExist,
            SelectorOperator::DoesNotExist => SelectorOperator::Exists,
            SelectorOperator::Unknown(_) => return None,
        };
        Some(Literal { operator, ..self.clone() })
    }
}

/// A set of label maps: one domain per key named so far; other keys are unconstrained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSpace {
    keys: BTreeMap<String, KeyDomain>,
}

impl LabelSpace {
    /// Narrows the space to label sets that satisfy `literal`; `false` if none is left.
    pub(crate) fn restrict(&mut self, literal: &Literal) -> bool {
        let Some(domain) = KeyDomain::of(&literal.operator, &literal.values) else { return false };
        let narrowed = match self.keys.get(&literal.key) {
            Some(current) => current.intersect(&domain),
            None => domain,
        };
        let empty = narrowed.is_empty();
        self.keys.insert(literal.key.clone(), narrowed);
        !empty
    }

    /// The space of both, or `None` if they share no label set.
    pub(crate) fn intersect(&self, other: &LabelSpace) -> Option<LabelSpace> {
        let mut keys = self.keys.clone();
        for (key, domain) in &other.keys {
            let narrowed = match keys.get(key) {
                Some(current) => current.intersect(domain),
                None => domain.clone(),
            };
            if narrowed.is_empty() {
                return None;
            }
            keys.insert(key.clone(), narrowed);
        }
        Some(LabelSpace { keys })
    }

    /// The only values `key` may take, if the space pins it to a finite set and forbids absence.
    pub(crate) fn finite_values(&self, key: &str) -> Option<&BTreeSet<String>> {
        match self.keys.get(key) {
            Some(KeyDomain { absent: false, values: Values::Only(values) }) => Some(values),
            _ => None,
        }
    }

    /// One label set of the space (it must not be empty): only keys the space requires appear.
    pub(crate) fn witness(&self) -> Labels {
        self.keys.iter().filter_map(|(key, domain)| Some((key.clone(), domain.pick()?))).collect()
    }

    /// The same space with `key` pinned to `value` (which the space must allow), or `None`.
    pub(crate) fn with_value(&self, key: &str, value: &str) -> Option<LabelSpace> {
        let mut pinned = self.clone();
        pinned.restrict(&Literal::equals(key, value)).then_some(pinned)
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

/// A set of IPv4 and IPv6 addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddressSpace {
    v4: Intervals,
    v6: Intervals,
}

/// Witness addresses come from the benchmarking range when the space allows.
const PREFERRED_V4: u32 = 0xC612_000A; // 198.18.0.10
const PREFERRED_V6: u128 = 0xfd00_0198_0000_0000_0000_0000_0000_000a; // fd00:198::a

/// Whether the address lies in the ranges witnesses prefer (198.18.0.0/15, fd00:198::/32): an
/// address outside them was forced by a rule's CIDR, so it is part of what a witness shows.
pub(crate) fn is_preferred_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => u32::from(v4) >> 17 == PREFERRED_V4 >> 17,
        IpAddr::V6(v6) => u128::from(v6) >> 96 == PREFERRED_V6 >> 96,
    }
}

impl Default for AddressSpace {
    fn default() -> Self {
        AddressSpace { v4: Intervals::full(0, u128::from(u32::MAX)), v6: Intervals::full(0, u128::MAX) }
    }
}

fn net_bounds(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(net) => (true, u128::from(u32::from(net.network())), u128::from(u32::from(net.broadcast()))),
        IpNet::V6(net) => (false, u128::from(net.network()), u128::from(net.broadcast())),
    }
}

impl AddressSpace {
    pub(crate) fn keep_net(&mut self, net: &IpNet) -> bool {
        let (v4, first, last) = net_bounds(net);
        if v4 {
            self.v4.keep(first, last);
            self.v6 = Intervals(Vec::new());
        } else {
            self.v6.keep(first, last);
            self.v4 = Intervals(Vec::new());
        }
        !self.is_empty()
    }

    pub(crate) fn remove_net(&mut self, net: &IpNet) -> bool {
        let (v4, first, last) = net_bounds(net);
        if v4 {
            self.v4.remove(first, last)
        } else {
            self.v6.remove(first, last)
        }
        !self.is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether the space holds addresses of the family.
    pub(crate) fn has_family(&self, v4: bool) -> bool {
        if v4 { !self.v4.is_empty() } else { !self.v6.is_empty() }
    }

    /// An address of the family not in `taken`, near the preferred range if the space allows.
    pub(crate) fn pick(&self, v4: bool, taken: &[IpAddr]) -> Option<IpAddr> {
        if v4 {
            let taken: Vec<u128> = taken
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(ip) => Some(u128::from(u32::from(*ip))),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let preferred: Vec<u128> = (0..16).map(|i| u128::from(PREFERRED_V4) + i).collect();
            let value = self.v4.pick(&preferred, &taken)?;
            Some(IpAddr::V4(Ipv4Addr::from(u32::try_from(value).ok()?)))
        } else {
            let taken: Vec<u128> = taken
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V6(ip) => Some(u128::from(*ip)),
                    IpAddr::V4(_) => None,
                })
                .collect();
            let preferred: Vec<u128> = (0..16).map(|i| PREFERRED_V6 + i).collect();
            Some(IpAddr::V6(Ipv6Addr::from(self.v6.pick(&preferred, &taken)?)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Protocols in the order witnesses prefer them; `Icmp` stands for every protocol without ports.
const PROTOCOLS: [Protocol; 4] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp];

/// Protocol and destination port of a flow, with the named-port facts the destination pod must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortSpace {
    /// Per protocol, the destination ports still possible (`Icmp` uses port 0).
    ports: BTreeMap<Protocol, Intervals>,
    /// The destination pod has a container port with this name, on the flow's protocol and port.
    /// Two different names for one port are not assumed possible, so at most one name is required.
    named: Option<String>,
    /// Names the destination pod must not have on the flow's port, each with its protocol (`None`: any).
    not_named: Vec<(String, Option<Protocol>)>,
}

impl Default for PortSpace {
    fn default() -> Self {
        let ports = PROTOCOLS
            .iter()
            .map(|&protocol| {
                let range = if protocol.has_ports() { Intervals::full(0, 65535) } else { Intervals::full(0, 0) };
                (protocol, range)
            })
            .collect();
        PortSpace { ports, named: None, not_named: Vec::new() }
    }
}

impl PortSpace {
    fn only_protocol(&mut self, protocol: Protocol) {
        for (other, ports) in self.ports.iter_mut() {
            if *other != protocol {
                *ports = Intervals(Vec::new());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.ports.values().all(Intervals::is_empty)
    }

    pub(crate) fn keep_range(&mut self, protocol: Protocol, first: u16, last: u16) -> bool {
        self.only_protocol(protocol);
        if let Some(ports) = self.ports.get_mut(&protocol) {
            ports.keep(u128::from(first), u128::from(last));
        }
        !self.is_empty()
    }

    pub(crate) fn remove_range(&mut self, protocol: Protocol, first: u16, last: u16) -> bool {
        if let Some(ports) = self.ports.get_mut(&protocol) {
            ports.remove(u128::from(first), u128::from(last));
        }
        !self.is_empty()
    }

    pub(crate) fn require_name(&mut self, name: &str, protocol: Option<Protocol>) -> bool {
        if self.named.as_deref().is_some_and(|named| named != name) {
            return false;
        }
        self.named = Some(name.to_string());
        self.only_protocol_with_ports();
        if let Some(protocol) = protocol {
            self.only_protocol(protocol);
        }
        self.reconcile()
    }

    pub(crate) fn forbid_name(&mut self, name: &str, protocol: Option<Protocol>) -> bool {
        self.not_named.push((name.to_string(), protocol));
        self.reconcile()
    }

    /// Named ports only exist on protocols with ports.
    fn only_protocol_with_ports(&mut self) {
        if let Some(ports) = self.ports.get_mut(&Protocol::Icmp) {
            *ports = Intervals(Vec::new());
        }
    }

    /// A required name that is also forbidden: on any protocol, impossible; on one protocol,
    /// the flow must use another.
    fn reconcile(&mut self) -> bool {
        let Some(named) = self.named.clone() else { return !self.is_empty() };
        for (name, protocol) in self.not_named.clone() {
            if name != named {
                continue;
            }
            match protocol {
                None => return false,
                Some(protocol) => {
                    if let Some(ports) = self.ports.get_mut(&protocol) {
                        *ports = Intervals(Vec::new());
                    }
                }
            }
        }
        !self.is_empty()
    }

    pub(crate) fn required_name(&self) -> Option<&str> {
        self.named.as_deref()
    }

    /// A protocol and port of the space: TCP first, port 80 when allowed.
    pub(crate) fn pick(&self) -> Option<(Protocol, u16)> {
        PROTOCOLS.iter().find_map(|protocol| {
            let ports = self.ports.get(protocol)?;
            let port = ports.pick(&[80, 53, 443], &[0]).or_else(|| ports.pick(&[], &[]))?;
            Some((*protocol, u16::try_from(port).ok()?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_remove_splits_and_keep_narrows() {
        let mut set = Intervals::full(0, 10);
        set.remove(3, 4);
        assert_eq!(set, Intervals(vec![(0, 2), (5, 10)]));
        set.keep(2, 6);
        assert_eq!(set, Intervals(vec![(2, 2), (5, 6)]));
        assert_eq!(set.pick(&[6], &[]), Some(6));
        assert_eq!(set.pick(&[], &[2]), Some(6));
    }

    #[test]
    fn a_negated_in_allows_absence() {
        let mut space = LabelSpace::default();
        let literal = Literal::equals("team", "web");
        assert!(space.restrict(&literal.negated().expect("negatable")));
        assert!(space.witness().is_empty());
        assert!(!space.restrict(&literal));
    }

    #[test]
    fn a_port_named_on_one_protocol_and_forbidden_on_it_moves_to_another() {
        let mut ports = PortSpace::default();
        assert!(ports.require_name("web", None));
        assert!(ports.forbid_name("web", Some(Protocol::Tcp)));
        assert_eq!(ports.pick().map(|(protocol, _)| protocol), Some(Protocol::Udp));
        assert!(!ports.forbid_name("web", None));
    }
}
