//! Judging policies and normalizing them into the one form the compiler reads. The reference
//! evaluator reads the raw model instead and asks this module only whether a policy is valid.
//!
//! NetworkPolicy checks mirror the Kubernetes API server, so a policy the cluster accepted is
//! never rejected here for a different reason. ClusterNetworkPolicy checks mirror the CRD schema
//! and CEL rules (the operator cannot assume the CRD it runs against is the one it was built for).
//! Normalization resolves every default: policy types, "own namespace", TCP, "all ports", and the
//! fail-closed meaning of fields this version does not know.

use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, PolicyWarning};
use crate::model::{
    ClusterNetworkPolicy, CnpAction, CnpPeer, CnpPort, CnpProtocol, CnpRule, CnpSubject, LabelSelector, Namespace,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule, Pod, Policy, PolicyRef, PolicyType,
    PortValue, Protocol, Revision, Tier,
};
use crate::plan::{Action, Direction};

/// CRD `maxItems` for rules, peers, protocols and networks.
const MAX_ITEMS: usize = 25;

/// A policy that passed validation, with every default resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPolicy {
    pub reference: PolicyRef,
    pub revision: Revision,
    pub layer: Layer,
    /// CNP `spec.priority`; 0 for NetworkPolicies, whose order is by reference.
    pub priority: i32,
    /// The pods the policy applies to.
    pub subject: PodSelection,
    /// `Some` iff the policy takes part in judging ingress (NetworkPolicy: its policy types;
    /// ClusterNetworkPolicy: it has ingress rules).
    pub ingress: Option<Vec<ValidRule>>,
    pub egress: Option<Vec<ValidRule>>,
}

impl ValidPolicy {
    pub fn rules(&self, direction: Direction) -> Option<&[ValidRule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Evaluation order within a layer: `(priority, name)` for CNPs (ties broken by name, so every
    /// node and every restart decides alike), `(namespace, name)` for NetworkPolicies.
    pub fn order_key(&self) -> (i32, &PolicyRef) {
        (self.priority, &self.reference)
    }
}

/// The three tiers of evaluation, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Layer {
    Admin,
    NetworkPolicy,
    Baseline,
}

/// Pods chosen by a namespace condition and a pod label selector.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodSelection {
    pub namespaces: NamespaceMatch,
    pub pods: LabelSelector,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NamespaceMatch {
    /// Exactly this namespace (a NetworkPolicy's own namespace).
    Named(String),
    /// Namespaces whose labels match; a namespace the engine does not know matches nothing.
    Selector(LabelSelector),
}

impl PodSelection {
    /// Host-network and unscheduled pods are never selected (see [`Pod::is_policy_endpoint`]).
    pub fn selects(&self, pod: &Pod, namespace: Option<&Namespace>) -> bool {
        pod.is_policy_endpoint()
            && self.selects_namespace(&pod.key.namespace, namespace)
            && self.pods.matches(&pod.labels)
    }

    pub fn selects_namespace(&self, name: &str, namespace: Option<&Namespace>) -> bool {
        match &self.namespaces {
            NamespaceMatch::Named(wanted) => wanted == name,
            NamespaceMatch::Selector(selector) => namespace.is_some_and(|ns| selector.matches(&ns.labels)),
        }
    }

    /// Canonical form, so equal selections hash equal.
    pub fn normalized(&self) -> PodSelection {
        let namespaces = match &self.namespaces {
            NamespaceMatch::Named(name) => NamespaceMatch::Named(name.clone()),
            NamespaceMatch::Selector(selector) => NamespaceMatch::Selector(selector.normalized()),
        };
        PodSelection { namespaces, pods: self.pods.normalized() }
    }
}

/// One rule, NetworkPolicy or ClusterNetworkPolicy alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRule {
    /// Position in the policy's ingress or egress list.
    pub index: usize,
    pub name: Option<String>,
    pub action: Action,
    /// `None`: every address. `Some(list)`: any entry matches (an empty list matches nothing).
    pub peers: Option<Vec<PeerSpec>>,
    /// `None`: every protocol and port, ICMP included.
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// Addresses of the selected pods.
    Pods(PodSelection),
    /// NetworkPolicy ipBlock: in `cidr` and in no `except` (host bits already truncated).
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
    /// CNP `networks`: in any of these.
    Networks(Vec<IpNet>),
    /// CNP `nodes`: any address of a selected node.
    Nodes(LabelSelector),
    /// Matches no address: `domainNames`, or an unknown peer of an Accept rule (fail closed).
    Nothing,
    /// Matches every address: an unknown peer of a Deny or Pass rule (fail closed).
    Everything,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Destination port in `first..=last` of `protocol`.
    Range { protocol: Protocol, first: u16, last: u16 },
    /// A container port of the destination pod with this name; `protocol: None` (CNP) takes the
    /// container port's own protocol, `Some` (NetworkPolicy) must equal it.
    Named { name: String, protocol: Option<Protocol> },
    /// Every protocol and port: an unknown protocol entry of a Deny or Pass rule (fail closed).
    Everything,
}

/// The outcome of validating one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub policy: ValidPolicy,
    pub warnings: Vec<PolicyWarning>,
}

/// Validates and normalizes a policy, returning every error found.
pub fn validate(policy: &Policy) -> Result<Validated, Vec<PolicyError>> {
    let mut report = Report { policy: policy.reference(), errors: Vec::new(), warnings: Vec::new() };
    let valid = match policy {
        Policy::Network(np) => validate_network_policy(np, &mut report),
        Policy::Cluster(cnp) => validate_cluster_policy(cnp, &mut report),
    };
    if report.errors.is_empty() {
        Ok(Validated { policy: valid, warnings: report.warnings })
    } else {
        Err(report.errors)
    }
}

/// Collects problems for one policy while validation walks it.
struct Report {
    policy: PolicyRef,
    errors: Vec<PolicyError>,
    warnings: Vec<PolicyWarning>,
}

impl Report {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError { policy: self.policy.clone(), field: field.into(), message: message.into() });
    }

    fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(PolicyWarning { policy: self.policy.clone(), field: field.into(), message: message.into() });
    }

    fn selector(&mut self, selector: &LabelSelector, field: &str) {
        for (field, message) in selector.problems(field) {
            self.error(field, message);
        }
    }

    /// Parses a CIDR as Kubernetes does: a prefix is required, host bits are accepted and truncated.
    fn cidr(&mut self, text: &str, field: &str) -> Option<IpNet> {
        match IpNet::from_str(text) {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                self.error(field, format!("must be a valid CIDR, got {text:?}"));
                None
            }
        }
    }

    fn port_number(&mut self, value: i32, field: &str) -> Option<u16> {
        match u16::try_from(value) {
            Ok(port) if port >= 1 => Some(port),
            _ => {
                self.error(field, format!("must be between 1 and 65535, inclusive (got {value})"));
                None
            }
        }
    }

    fn port_name(&mut self, name: &str, field: &str) {
        if let Some(problem) = iana_service_name_problem(name) {
            self.error(field, problem);
        }
    }

    fn list_size(&mut self, len: usize, min: usize, field: &str) {
        if len < min {
            self.error(field, format!("must have at least {min} item(s)"));
        }
        if len > MAX_ITEMS {
            self.error(field, format!("must have at most {MAX_ITEMS} items (got {len})"));
        }
    }
}

/// Kubernetes' `IsValidPortName`: 1-15 lowercase alphanumerics or '-', at least one letter, no
/// leading, trailing or doubled '-'.
fn iana_service_name_problem(name: &str) -> Option<String> {
    let problem = if name.is_empty() || name.len() > 15 {
        "must be no more than 15 characters and not empty"
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        "must contain only lowercase alphanumeric characters or '-'"
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain at least one letter"
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        "must not begin or end with '-' or contain '--'"
    } else {
        return None;
    };
    Some(format!("{problem} (got {name:?})"))
}

// ---------------------------------------------------------------------------------------------
// NetworkPolicy
// ---------------------------------------------------------------------------------------------

fn validate_network_policy(np: &NetworkPolicy, report: &mut Report) -> ValidPolicy {
    report.selector(&np.pod_selector, "spec.podSelector");
    let (ingress_applies, egress_applies) = network_policy_directions(np, report);
    let ingress = rules_of_network_policy(np, &np.ingress, "ingress", "from", report);
    let egress = rules_of_network_policy(np, &np.egress, "egress", "to", report);
    ValidPolicy {
        reference: report.policy.clone(),
        revision: np.revision.clone(),
        layer: Layer::NetworkPolicy,
        priority: 0,
        subject: PodSelection {
            namespaces: NamespaceMatch::Named(np.namespace.clone()),
            pods: np.pod_selector.clone(),
        },
        ingress: ingress_applies.then_some(ingress),
        egress: egress_applies.then_some(egress),
    }
}

/// Which directions the policy isolates. Unset policy types default to Ingress, plus Egress when
/// there are egress rules (the API server's defaulting).
fn network_policy_directions(np: &NetworkPolicy, report: &mut Report) -> (bool, bool) {
    let Some(types) = &np.policy_types else {
        return (true, !np.egress.is_empty());
    };
    if types.len() > 2 {
        report.error("spec.policyTypes", format!("may not specify more than two policyTypes (got {})", types.len()));
    }
    for (i, policy_type) in types.iter().enumerate() {
        if let PolicyType::Unknown(value) = policy_type {
            report.error(
                format!("spec.policyTypes[{i}]"),
                format!("Unsupported value: {value:?}: supported values: \"Ingress\", \"Egress\""),
            );
        }
    }
    (types.contains(&PolicyType::Ingress), types.contains(&PolicyType::Egress))
}

fn rules_of_network_policy(
    np: &NetworkPolicy,
    rules: &[NetworkPolicyRule],
    direction: &str,
    peers_field: &str,
    report: &mut Report,
) -> Vec<ValidRule> {
    let mut valid = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let at = format!("spec.{direction}[{index}]");
        let peers = rule
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, peer)| network_policy_peer(np, peer, &format!("{at}.{peers_field}[{i}]"), report))
            .collect::<Vec<_>>();
        let ports = rule
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, port)| network_policy_port(port, &format!("{at}.ports[{i}]"), report))
            .collect::<Vec<_>>();
        valid.push(ValidRule {
            index,
            name: None,
            action: Action::Accept,
            peers: (!rule.peers.is_empty()).then_some(peers),
            ports: (!rule.ports.is_empty()).then_some(ports),
        });
    }
    valid
}

fn network_policy_peer(
    np: &NetworkPolicy,
    peer: &NetworkPolicyPeer,
    at: &str,
    report: &mut Report,
) -> Option<PeerSpec> {
    if let Some(block) = &peer.ip_block {
        if peer.namespace_selector.is_some() || peer.pod_selector.is_some() {
            report.error(at.to_string(), "may not specify more than 1 peer: ipBlock cannot be combined with selectors");
            return None;
        }
        let cidr = report.cidr(&block.cidr, &format!("{at}.ipBlock.cidr"));
        let mut except = Vec::with_capacity(block.except.len());
        for (i, text) in block.except.iter().enumerate() {
            let field = format!("{at}.ipBlock.except[{i}]");
            let (Some(net), Some(cidr)) = (report.cidr(text, &field), cidr) else { continue };
            if net.prefix_len() <= cidr.prefix_len() || !cidr.contains(&net) {
                report.error(field, format!("must be a strict subset of `cidr` ({cidr}), got {net}"));
            } else {
                except.push(net);
            }
        }
        return cidr.map(|cidr| PeerSpec::IpBlock { cidr, except });
    }
    if let Some(selector) = &peer.namespace_selector {
        report.selector(selector, &format!("{at}.namespaceSelector"));
    }
    if let Some(selector) = &peer.pod_selector {
        report.selector(selector, &format!("{at}.podSelector"));
    }
    let namespaces = match &peer.namespace_selector {
        None if peer.pod_selector.is_none() => {
            report.error(at.to_string(), "must specify a peer");
            return None;
        }
        None => NamespaceMatch::Named(np.namespace.clone()),
        Some(selector) => NamespaceMatch::Selector(selector.clone()),
    };
    Some(PeerSpec::Pods(PodSelection { namespaces, pods: peer.pod_selector.clone().unwrap_or_default() }))
}

fn network_policy_port(port: &NetworkPolicyPort, at: &str, report: &mut Report) -> Option<PortSpec> {
    let protocol = match &port.protocol {
        None => Some(Protocol::Tcp),
        Some(Ok(protocol)) if protocol.has_ports() => Some(*protocol),
        Some(Ok(_)) => {
            report.error(
                format!("{at}.protocol"),
                "Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
            );
            None
        }
        Some(Err(other)) => {
            report.error(
                format!("{at}.protocol"),
                format!("Unsupported value: {other:?}: supported values: \"TCP\", \"UDP\", \"SCTP\""),
            );
            None
        }
    };
    let end_field = format!("{at}.endPort");
    match (&port.port, port.end_port) {
        (None, Some(_)) => {
            report.error(end_field, "may not be specified when `port` is not specified");
            None
        }
        (None, None) => protocol.map(|protocol| PortSpec::Range { protocol, first: u16::MIN, last: u16::MAX }),
        (Some(PortValue::Name(name)), end_port) => {
            report.port_name(name, &format!("{at}.port"));
            if end_port.is_some() {
                report.error(end_field, "may not be specified when `port` is non-numeric");
            }
            protocol.map(|protocol| PortSpec::Named { name: name.clone(), protocol: Some(protocol) })
        }
        (Some(PortValue::Number(number)), end_port) => {
            let first = report.port_number(*number, &format!("{at}.port"));
            let last = match end_port {
                None => first,
                Some(end) => match (report.port_number(end, &end_field), first) {
                    (Some(last), Some(first)) if last < first => {
                        report.error(end_field, format!("must be greater than or equal to `port` ({first})"));
                        None
                    }
                    (last, _) => last,
                },
            };
            match (protocol, first, last) {
                (Some(protocol), Some(first), Some(last)) => Some(PortSpec::Range { protocol, first, last }),
                _ => None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ClusterNetworkPolicy
// ---------------------------------------------------------------------------------------------

fn validate_cluster_policy(cnp: &ClusterNetworkPolicy, report: &mut Report) -> ValidPolicy {
    if !(0..=1000).contains(&cnp.priority) {
        report.error("spec.priority", format!("must be between 0 and 1000, inclusive (got {})", cnp.priority));
    }
    let subject = match &cnp.subject {
        CnpSubject::Namespaces(selector) => {
            report.selector(selector, "spec.subject.namespaces");
            PodSelection { namespaces: NamespaceMatch::Selector(selector.clone()), pods: LabelSelector::default() }
        }
        CnpSubject::Pods { namespace_selector, pod_selector } => {
            report.selector(namespace_selector, "spec.subject.pods.namespaceSelector");
            report.selector(pod_selector, "spec.subject.pods.podSelector");
            PodSelection {
                namespaces: NamespaceMatch::Selector(namespace_selector.clone()),
                pods: pod_selector.clone(),
            }
        }
        CnpSubject::Invalid(why) => {
            report.error("spec.subject", format!("must set exactly one of `namespaces` or `pods`: {why}"));
            PodSelection {
                namespaces: NamespaceMatch::Selector(LabelSelector::default()),
                pods: LabelSelector::default(),
            }
        }
    };
    let ingress = rules_of_cluster_policy(&cnp.ingress, Direction::Ingress, report);
    let egress = rules_of_cluster_policy(&cnp.egress, Direction::Egress, report);
    ValidPolicy {
        reference: report.policy.clone(),
        revision: cnp.revision.clone(),
        layer: match cnp.tier {
            Tier::Admin => Layer::Admin,
            Tier::Baseline => Layer::Baseline,
        },
        priority: cnp.priority,
        subject,
        ingress: (!ingress.is_empty()).then_some(ingress),
        egress: (!egress.is_empty()).then_some(egress),
    }
}

fn rules_of_cluster_policy(rules: &[CnpRule], direction: Direction, report: &mut Report) -> Vec<ValidRule> {
    let (list, peers_field) = match direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    if rules.len() > MAX_ITEMS {
        report.error(format!("spec.{list}"), format!("must have at most {MAX_ITEMS} items (got {})", rules.len()));
    }
    let mut valid = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let at = format!("spec.{list}[{index}]");
        if rule.name.as_ref().is_some_and(|name| name.len() > 100) {
            report.error(format!("{at}.name"), "must be no more than 100 characters");
        }
        let action = match rule.action {
            CnpAction::Accept => Action::Accept,
            CnpAction::Deny => Action::Deny,
            CnpAction::Pass => Action::Pass,
        };
        // Fail closed (cnp-api §4): what this version cannot read matches nothing in an Accept
        // rule and everything in a Deny or Pass rule.
        let unknown_peer = if action == Action::Accept { PeerSpec::Nothing } else { PeerSpec::Everything };
        let unknown_port = (action != Action::Accept).then_some(PortSpec::Everything);

        let peers_at = format!("{at}.{peers_field}");
        report.list_size(rule.peers.len(), 1, &peers_at);
        let mut peers = Vec::with_capacity(rule.peers.len());
        for (i, peer) in rule.peers.iter().enumerate() {
            let field = format!("{peers_at}[{i}]");
            let egress_only = |report: &mut Report, what: &str| {
                if direction == Direction::Ingress {
                    report.error(format!("{field}.{what}"), "is only allowed in egress rules");
                }
            };
            let spec = match peer {
                CnpPeer::Namespaces(selector) => {
                    report.selector(selector, &format!("{field}.namespaces"));
                    PeerSpec::Pods(PodSelection {
                        namespaces: NamespaceMatch::Selector(selector.clone()),
                        pods: LabelSelector::default(),
                    })
                }
                CnpPeer::Pods { namespace_selector, pod_selector } => {
                    report.selector(namespace_selector, &format!("{field}.pods.namespaceSelector"));
                    report.selector(pod_selector, &format!("{field}.pods.podSelector"));
                    PeerSpec::Pods(PodSelection {
                        namespaces: NamespaceMatch::Selector(namespace_selector.clone()),
                        pods: pod_selector.clone(),
                    })
                }
                CnpPeer::Networks(cidrs) => {
                    egress_only(report, "networks");
                    report.list_size(cidrs.len(), 1, &format!("{field}.networks"));
                    let mut nets = Vec::with_capacity(cidrs.len());
                    for (j, text) in cidrs.iter().enumerate() {
                        let net_field = format!("{field}.networks[{j}]");
                        if text.len() > 43 {
                            report.error(net_field.clone(), "must be no more than 43 characters");
                        }
                        nets.extend(report.cidr(text, &net_field));
                    }
                    PeerSpec::Networks(nets)
                }
                CnpPeer::Nodes(selector) => {
                    egress_only(report, "nodes");
                    report.selector(selector, &format!("{field}.nodes"));
                    PeerSpec::Nodes(selector.clone())
                }
                CnpPeer::DomainNames(names) => {
                    egress_only(report, "domainNames");
                    report.list_size(names.len(), 1, &format!("{field}.domainNames"));
                    for (j, name) in names.iter().enumerate() {
                        if !is_domain_name_pattern(name) {
                            report.error(
                                format!("{field}.domainNames[{j}]"),
                                format!("not a valid domain name: {name:?}"),
                            );
                        }
                    }
                    report.warning(
                        format!("{field}.domainNames"),
                        "Palisade does not intercept DNS: this peer matches no traffic",
                    );
                    PeerSpec::Nothing
                }
                CnpPeer::Unknown => unknown_peer.clone(),
            };
            peers.push(spec);
        }

        let ports = rule.protocols.as_ref().map(|protocols| {
            let protocols_at = format!("{at}.protocols");
            report.list_size(protocols.len(), 1, &protocols_at);
            let mut ports = Vec::with_capacity(protocols.len());
            for (i, protocol) in protocols.iter().enumerate() {
                let field = format!("{protocols_at}[{i}]");
                match protocol {
                    CnpProtocol::Port { protocol, port } => {
                        let field = format!("{field}.{}.destinationPort", protocol_field(*protocol));
                        if !protocol.has_ports() {
                            report.error(field, "only tcp, udp and sctp carry ports");
                            continue;
                        }
                        let range = match port {
                            CnpPort::Number(number) => {
                                report.port_number(*number, &format!("{field}.number")).map(|p| (p, p))
                            }
                            CnpPort::Range { start, end } => {
                                let first = report.port_number(*start, &format!("{field}.range.start"));
                                let last = report.port_number(*end, &format!("{field}.range.end"));
                                match (first, last) {
                                    (Some(first), Some(last)) if first >= last => {
                                        report.error(format!("{field}.range"), "Start port must be less than End port");
                                        None
                                    }
                                    (Some(first), Some(last)) => Some((first, last)),
                                    _ => None,
                                }
                            }
                        };
                        if let Some((first, last)) = range {
                            ports.push(PortSpec::Range { protocol: *protocol, first, last });
                        }
                    }
                    CnpProtocol::NamedPort(name) => {
                        report.port_name(name, &format!("{field}.destinationNamedPort"));
                        ports.push(PortSpec::Named { name: name.clone(), protocol: None });
                    }
                    CnpProtocol::Unknown => ports.extend(unknown_port.clone()),
                }
            }
            ports
        });
        // Upstream's fail-closed rule, literally: a Deny or Pass rule with a peer or protocol
        // entry this version cannot read is a "Deny all" rule, so a newer CRD can never widen access.
        let unreadable = rule.peers.iter().any(|peer| matches!(peer, CnpPeer::Unknown))
            || rule.protocols.iter().flatten().any(|protocol| matches!(protocol, CnpProtocol::Unknown));
        if unreadable && action != Action::Accept {
            valid.push(ValidRule {
                index,
                name: rule.name.clone(),
                action: Action::Deny,
                peers: Some(vec![PeerSpec::Everything]),
                ports: None,
            });
            continue;
        }
        valid.push(ValidRule { index, name: rule.name.clone(), action, peers: Some(peers), ports });
    }
    valid
}

fn protocol_field(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        Protocol::Icmp => "icmp",
    }
}

/// The CRD's domain-name pattern, minus its `A-z` typo: optional `*.` prefix, then dot-separated
/// labels of alphanumerics, '-' and '_' that start and end alphanumeric, at least two labels.
fn is_domain_name_pattern(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    first.is_ascii_alphanumeric()
                        && last.is_ascii_alphanumeric()
                        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                }
                _ => false,
            }
        })
}
