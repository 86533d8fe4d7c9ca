//! A search for one concrete flow that satisfies a formula over flows, or a proof that none
//! exists.
//!
//! A formula is built from rules and subjects ([`crate::validate`]'s normalized form, the one the
//! compiler enforces) and their negations. Its atoms constrain the subject pod, the peer (a pod,
//! a node or an outside address), the protocol and port, or the destination's named ports; each
//! atom narrows an exact description ([`super::space`]), so a conjunction of atoms is decided
//! exactly and the only branching is over disjunctions. The search explores every branch, so
//! "impossible" is a proof; it stops after a step budget and then says it gave up, which callers
//! treat as "nothing to report" (a false rejection is worse than a missed one).
//!
//! The model of a cluster the search assumes, and the witness it builds, hold for every real
//! cluster: every pod lives in an existing namespace labelled `kubernetes.io/metadata.name`; pod,
//! node and outside addresses are distinct; a pod gives one port one name at most.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;

use ipnet::IpNet;

use super::space::{AddressSpace, LabelSpace, Literal, PortSpace};
use crate::model::{Cluster, LabelSelector, Labels, NamedPort, Namespace, Node, Pod, PodKey, Protocol};
use crate::plan::Direction;
use crate::validate::{NamespaceMatch, PeerSpec, PodSelection, PortSpec, ValidRule};
use crate::verdict::Flow;

/// The label every namespace carries, with its name as the value.
pub(crate) const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The names witness namespaces get when no selector pins them.
const SUBJECT_NAMESPACE: &str = "subject-ns";
const PEER_NAMESPACE: &str = "peer-ns";

/// Whether a witness namespace's name was picked freely (so only its labels matter to a reader).
pub(crate) fn is_witness_namespace(name: &str) -> bool {
    name.starts_with(SUBJECT_NAMESPACE) || name.starts_with(PEER_NAMESPACE)
}

/// What the other end of a flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerKind {
    Pod,
    Node,
    Outside,
}

const PEER_KINDS: [PeerKind; 3] = [PeerKind::Pod, PeerKind::Outside, PeerKind::Node];

#[derive(Clone, Debug)]
pub(crate) enum Atom {
    SubjectNamespace(Literal),
    SubjectPod(Literal),
    PeerNamespace(Literal),
    PeerPod(Literal),
    PeerNode(Literal),
    PeerIs(PeerKind),
    PeerIsNot(PeerKind),
    PeerIn(IpNet),
    PeerNotIn(IpNet),
    Port { protocol: Protocol, first: u16, last: u16 },
    NotPort { protocol: Protocol, first: u16, last: u16 },
    Named { name: String, protocol: Option<Protocol> },
    NotNamed { name: String, protocol: Option<Protocol> },
}

impl Atom {
    /// Exact negation; `None` when the atom matches nothing (its negation is "true").
    fn negated(&self) -> Formula {
        let literal = |make: fn(Literal) -> Atom, literal: &Literal| match literal.negated() {
            Some(negated) => Formula::Atom(make(negated)),
            None => Formula::truth(),
        };
        match self.clone() {
            Atom::SubjectNamespace(l) => literal(Atom::SubjectNamespace, &l),
            Atom::SubjectPod(l) => literal(Atom::SubjectPod, &l),
            Atom::PeerNamespace(l) => literal(Atom::PeerNamespace, &l),
            Atom::PeerPod(l) => literal(Atom::PeerPod, &l),
            Atom::PeerNode(l) => literal(Atom::PeerNode, &l),
            Atom::PeerIs(kind) => Formula::Atom(Atom::PeerIsNot(kind)),
            Atom::PeerIsNot(kind) => Formula::Atom(Atom::PeerIs(kind)),
            Atom::PeerIn(net) => Formula::Atom(Atom::PeerNotIn(net)),
            Atom::PeerNotIn(net) => Formula::Atom(Atom::PeerIn(net)),
            Atom::Port { protocol, first, last } => Formula::Atom(Atom::NotPort { protocol, first, last }),
            Atom::NotPort { protocol, first, last } => Formula::Atom(Atom::Port { protocol, first, last }),
            Atom::Named { name, protocol } => Formula::Atom(Atom::NotNamed { name, protocol }),
            Atom::NotNamed { name, protocol } => Formula::Atom(Atom::Named { name, protocol }),
        }
    }
}

/// A condition on flows. `All(vec![])` is true, `Any(vec![])` is false.
#[derive(Clone, Debug)]
pub(crate) enum Formula {
    Atom(Atom),
    All(Vec<Formula>),
    Any(Vec<Formula>),
}

impl Formula {
    pub(crate) fn truth() -> Formula {
        Formula::All(Vec::new())
    }

    pub(crate) fn falsity() -> Formula {
        Formula::Any(Vec::new())
    }

    /// De Morgan, down to the atoms.
    pub(crate) fn negated(&self) -> Formula {
        match self {
            Formula::Atom(atom) => atom.negated(),
            Formula::All(parts) => Formula::Any(parts.iter().map(Formula::negated).collect()),
            Formula::Any(parts) => Formula::All(parts.iter().map(Formula::negated).collect()),
        }
    }
}

/// Which end of the flow a selector speaks about.
#[derive(Clone, Copy)]
enum End {
    Subject,
    Peer,
}

/// Wraps a literal into the atom for one end of the flow.
type MakeAtom = fn(Literal) -> Atom;

fn selector_formula(selector: &LabelSelector, make: MakeAtom) -> Formula {
    let mut parts: Vec<Formula> =
        selector.match_labels.iter().map(|(key, value)| Formula::Atom(make(Literal::equals(key, value)))).collect();
    parts.extend(selector.match_expressions.iter().map(|requirement| Formula::Atom(make(Literal::of(requirement)))));
    Formula::All(parts)
}

fn selection_formula(selection: &PodSelection, end: End) -> Formula {
    let (namespace_atom, pod_atom): (MakeAtom, MakeAtom) = match end {
        End::Subject => (Atom::SubjectNamespace, Atom::SubjectPod),
        End::Peer => (Atom::PeerNamespace, Atom::PeerPod),
    };
    let namespaces = match &selection.namespaces {
        NamespaceMatch::Named(name) => Formula::Atom(namespace_atom(Literal::equals(NAMESPACE_NAME_LABEL, name))),
        NamespaceMatch::Selector(selector) => selector_formula(selector, namespace_atom),
    };
    let mut parts = vec![namespaces, selector_formula(&selection.pods, pod_atom)];
    if let End::Peer = end {
        parts.insert(0, Formula::Atom(Atom::PeerIs(PeerKind::Pod)));
    }
    Formula::All(parts)
}

/// The subject pod is one the policy applies to.
pub(crate) fn subject_formula(subject: &PodSelection) -> Formula {
    selection_formula(subject, End::Subject)
}

fn peer_formula(peer: &PeerSpec) -> Formula {
    match peer {
        PeerSpec::Pods(selection) => selection_formula(selection, End::Peer),
        PeerSpec::IpBlock { cidr, except } => {
            let mut parts = vec![Formula::Atom(Atom::PeerIn(*cidr))];
            parts.extend(except.iter().map(|net| Formula::Atom(Atom::PeerNotIn(*net))));
            Formula::All(parts)
        }
        PeerSpec::Networks(nets) => Formula::Any(nets.iter().map(|net| Formula::Atom(Atom::PeerIn(*net))).collect()),
        PeerSpec::Nodes(selector) => {
            Formula::All(vec![Formula::Atom(Atom::PeerIs(PeerKind::Node)), selector_formula(selector, Atom::PeerNode)])
        }
        PeerSpec::Nothing => Formula::falsity(),
        PeerSpec::Everything => Formula::truth(),
    }
}

fn port_formula(port: &PortSpec, direction: Direction) -> Formula {
    match port {
        PortSpec::Range { protocol, first, last } => {
            Formula::Atom(Atom::Port { protocol: *protocol, first: *first, last: *last })
        }
        PortSpec::Named { name, protocol } => {
            let named = Formula::Atom(Atom::Named { name: name.clone(), protocol: *protocol });
            match direction {
                // Named ports are looked up on the destination: for egress, the peer.
                Direction::Egress => Formula::All(vec![Formula::Atom(Atom::PeerIs(PeerKind::Pod)), named]),
                Direction::Ingress => named,
            }
        }
        PortSpec::Everything => Formula::truth(),
    }
}

/// The rule matches the flow (the subject is a separate condition).
pub(crate) fn rule_formula(rule: &ValidRule, direction: Direction) -> Formula {
    let peers = match &rule.peers {
        None => Formula::truth(),
        Some(peers) => Formula::Any(peers.iter().map(peer_formula).collect()),
    };
    let ports = match &rule.ports {
        None => Formula::truth(),
        Some(ports) => Formula::Any(ports.iter().map(|port| port_formula(port, direction)).collect()),
    };
    Formula::All(vec![peers, ports])
}

// ---------------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------------

/// A concrete world and flow that satisfy a formula: a person can check it, and the property
/// tests judge it with the reference evaluator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    pub direction: Direction,
    pub cluster: Cluster,
    pub flow: Flow,
    /// The pod the policies apply to (the destination for ingress, the source for egress).
    pub subject: PodKey,
}

pub(crate) enum Outcome {
    Found(Box<Witness>),
    Impossible,
    GaveUp,
}

/// Steps (atoms applied) one search may take. Real policies need a few hundred.
pub(crate) const BUDGET: usize = 200_000;

/// What the flow may still be. The spaces are shared between branches and copied only when a
/// branch narrows one (`Rc::make_mut`): most branches touch one or two of them.
#[derive(Clone)]
struct State {
    subject_namespace: Rc<LabelSpace>,
    subject_pod: Rc<LabelSpace>,
    peer_namespace: Rc<LabelSpace>,
    peer_pod: Rc<LabelSpace>,
    peer_node: Rc<LabelSpace>,
    kinds: [bool; 3],
    address: Rc<AddressSpace>,
    ports: Rc<PortSpace>,
}

fn kind_index(kind: PeerKind) -> usize {
    match kind {
        PeerKind::Pod => 0,
        PeerKind::Node => 1,
        PeerKind::Outside => 2,
    }
}

impl State {
    fn new() -> State {
        let named_namespace = || {
            let mut space = LabelSpace::default();
            let exists = Literal {
                key: NAMESPACE_NAME_LABEL.to_string(),
                operator: crate::model::SelectorOperator::Exists,
                values: Vec::new(),
            };
            space.restrict(&exists);
            space
        };
        State {
            subject_namespace: Rc::new(named_namespace()),
            subject_pod: Rc::default(),
            peer_namespace: Rc::new(named_namespace()),
            peer_pod: Rc::default(),
            peer_node: Rc::default(),
            kinds: [true; 3],
            address: Rc::default(),
            ports: Rc::default(),
        }
    }

    /// Applies one atom; `false` if nothing is left.
    fn apply(&mut self, atom: &Atom) -> bool {
        match atom {
            Atom::SubjectNamespace(l) => Rc::make_mut(&mut self.subject_namespace).restrict(l),
            Atom::SubjectPod(l) => Rc::make_mut(&mut self.subject_pod).restrict(l),
            Atom::PeerNamespace(l) => Rc::make_mut(&mut self.peer_namespace).restrict(l),
            Atom::PeerPod(l) => Rc::make_mut(&mut self.peer_pod).restrict(l),
            Atom::PeerNode(l) => Rc::make_mut(&mut self.peer_node).restrict(l),
            Atom::PeerIs(kind) => {
                let keep = kind_index(*kind);
                for (i, allowed) in self.kinds.iter_mut().enumerate() {
                    *allowed &= i == keep;
                }
                self.kinds.iter().any(|allowed| *allowed)
            }
            Atom::PeerIsNot(kind) => {
                self.kinds[kind_index(*kind)] = false;
                self.kinds.iter().any(|allowed| *allowed)
            }
            Atom::PeerIn(net) => Rc::make_mut(&mut self.address).keep_net(net),
            Atom::PeerNotIn(net) => Rc::make_mut(&mut self.address).remove_net(net),
            Atom::Port { protocol, first, last } => Rc::make_mut(&mut self.ports).keep_range(*protocol, *first, *last),
            Atom::NotPort { protocol, first, last } => {
                Rc::make_mut(&mut self.ports).remove_range(*protocol, *first, *last)
            }
            Atom::Named { name, protocol } => Rc::make_mut(&mut self.ports).require_name(name, *protocol),
            Atom::NotNamed { name, protocol } => Rc::make_mut(&mut self.ports).forbid_name(name, *protocol),
        }
    }
}

/// Searches for a flow in `direction` that satisfies every formula.
pub(crate) fn solve(direction: Direction, formulas: Vec<Formula>, budget: usize) -> Outcome {
    solve_borrowed(direction, &formulas.iter().collect::<Vec<_>>(), budget)
}

/// [`solve`] over borrowed formulas, for callers that reuse them across many searches.
pub(crate) fn solve_borrowed(direction: Direction, formulas: &[&Formula], budget: usize) -> Outcome {
    let mut steps = 0;
    search(direction, State::new(), formulas.to_vec(), &mut steps, budget)
}

/// Depth first over the disjunctions; `pending` borrows the formulas (they never change), so a
/// branch costs a copy of the state and of a list of references, not of formula trees.
fn search(
    direction: Direction,
    mut state: State,
    mut pending: Vec<&Formula>,
    steps: &mut usize,
    budget: usize,
) -> Outcome {
    // Conjunctions and atoms first: they only narrow, and an early contradiction prunes the most.
    while let Some(position) = pending.iter().position(|formula| !matches!(formula, Formula::Any(_))) {
        match pending.swap_remove(position) {
            Formula::Atom(atom) => {
                *steps += 1;
                if *steps > budget {
                    return Outcome::GaveUp;
                }
                if !state.apply(atom) {
                    return Outcome::Impossible;
                }
            }
            Formula::All(parts) => pending.extend(parts.iter()),
            Formula::Any(_) => unreachable!("filtered by the position search"),
        }
    }
    // Only choices are left: branch on the one with the fewest alternatives.
    let Some(position) = (0..pending.len()).min_by_key(|&i| match pending[i] {
        Formula::Any(alternatives) => alternatives.len(),
        _ => usize::MAX,
    }) else {
        return match witness(direction, &state) {
            Some(found) => Outcome::Found(Box::new(found)),
            None => Outcome::Impossible,
        };
    };
    let Formula::Any(alternatives) = pending.swap_remove(position) else {
        unreachable!("only disjunctions are pending")
    };
    for alternative in alternatives {
        let mut next = pending.clone();
        next.push(alternative);
        match search(direction, state.clone(), next, steps, budget) {
            Outcome::Found(found) => return Outcome::Found(found),
            Outcome::Impossible => {}
            Outcome::GaveUp => return Outcome::GaveUp,
        }
    }
    Outcome::Impossible
}

// ---------------------------------------------------------------------------------------------
// The witness
// ---------------------------------------------------------------------------------------------

/// A value the space allows for `key`, not in `avoid`: one of its finite values, else
/// `preferred`, `preferred-1`, `preferred-2`, …
fn choose_value(space: &LabelSpace, key: &str, preferred: &str, avoid: &[&str]) -> Option<String> {
    if let Some(values) = space.finite_values(key) {
        return values.iter().find(|value| !avoid.contains(&value.as_str())).cloned();
    }
    (0..1000)
        .map(|n| if n == 0 { preferred.to_string() } else { format!("{preferred}-{n}") })
        .find(|candidate| !avoid.contains(&candidate.as_str()) && space.with_value(key, candidate).is_some())
}

fn namespace(space: &LabelSpace, name: String) -> Option<Namespace> {
    let labels = space.with_value(NAMESPACE_NAME_LABEL, &name)?.witness();
    Some(Namespace { name, labels })
}

/// The subject's namespace and the peer pod's: two namespaces if their names can differ, else
/// one that satisfies both.
fn namespaces(state: &State) -> Option<(Namespace, Namespace)> {
    let subject_name = choose_value(&state.subject_namespace, NAMESPACE_NAME_LABEL, SUBJECT_NAMESPACE, &[]);
    if let Some(subject_name) = subject_name {
        let peer_name = choose_value(&state.peer_namespace, NAMESPACE_NAME_LABEL, PEER_NAMESPACE, &[&subject_name]);
        if let Some(peer_name) = peer_name {
            let subject = namespace(&state.subject_namespace, subject_name)?;
            return Some((subject, namespace(&state.peer_namespace, peer_name)?));
        }
    }
    let shared = state.subject_namespace.intersect(&state.peer_namespace)?;
    let name = choose_value(&shared, NAMESPACE_NAME_LABEL, SUBJECT_NAMESPACE, &[])?;
    let both = namespace(&shared, name)?;
    Some((both.clone(), both))
}

fn witness(direction: Direction, state: &State) -> Option<Witness> {
    let (protocol, port) = state.ports.pick()?;
    PEER_KINDS
        .iter()
        .filter(|kind| state.kinds[kind_index(**kind)])
        .find_map(|kind| witness_with_peer(direction, state, *kind, protocol, port))
}

fn witness_with_peer(
    direction: Direction,
    state: &State,
    kind: PeerKind,
    protocol: Protocol,
    port: u16,
) -> Option<Witness> {
    let v4 = state.address.has_family(true);
    let peer_address = state.address.pick(v4, &[])?;
    let full = AddressSpace::default();
    let subject_address = full.pick(v4, &[peer_address])?;
    let node_address = full.pick(v4, &[peer_address, subject_address])?;

    let (subject_namespace, peer_namespace) = match kind {
        PeerKind::Pod => namespaces(state)?,
        _ => {
            let name = choose_value(&state.subject_namespace, NAMESPACE_NAME_LABEL, SUBJECT_NAMESPACE, &[])?;
            let subject = namespace(&state.subject_namespace, name)?;
            (subject.clone(), subject)
        }
    };
    let named_port = |pod_is_destination: bool| -> Vec<NamedPort> {
        match (pod_is_destination, state.ports.required_name()) {
            (true, Some(name)) => vec![NamedPort { name: name.to_string(), protocol, port }],
            _ => Vec::new(),
        }
    };
    let pod = |namespace: &str, name: &str, labels: Labels, address: IpAddr, ports: Vec<NamedPort>| Pod {
        key: PodKey { namespace: namespace.to_string(), name: name.to_string() },
        labels,
        node: Some("node-1".to_string()),
        ips: vec![address],
        named_ports: ports,
        host_network: false,
        terminated: false,
    };
    let subject = pod(
        &subject_namespace.name,
        "subject",
        state.subject_pod.witness(),
        subject_address,
        named_port(direction == Direction::Ingress),
    );
    if direction == Direction::Egress && kind != PeerKind::Pod && state.ports.required_name().is_some() {
        return None;
    }
    let mut cluster = Cluster::default();
    cluster
        .nodes
        .insert("node-1".into(), Node { name: "node-1".into(), labels: Labels::new(), ips: vec![node_address] });
    match kind {
        PeerKind::Pod => {
            let peer = pod(
                &peer_namespace.name,
                "peer",
                state.peer_pod.witness(),
                peer_address,
                named_port(direction == Direction::Egress),
            );
            cluster.pods.insert(peer.key.clone(), peer);
        }
        PeerKind::Node => {
            let node = Node { name: "node-2".into(), labels: state.peer_node.witness(), ips: vec![peer_address] };
            cluster.nodes.insert(node.name.clone(), node);
        }
        PeerKind::Outside => {}
    }
    let subject_key = subject.key.clone();
    cluster.pods.insert(subject_key.clone(), subject);
    let mut namespaces = BTreeMap::new();
    for namespace in [subject_namespace, peer_namespace] {
        namespaces.insert(namespace.name.clone(), namespace);
    }
    cluster.namespaces = namespaces;
    let flow = match direction {
        Direction::Ingress => Flow { src: peer_address, dst: subject_address, protocol, port },
        Direction::Egress => Flow { src: subject_address, dst: peer_address, protocol, port },
    };
    Some(Witness { direction, cluster, flow, subject: subject_key })
}
