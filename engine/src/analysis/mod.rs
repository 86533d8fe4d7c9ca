//! Analysis for admission and `palisade lint`: facts about policies that hold in every possible
//! cluster, not only in today's objects, each with something a person can check.
//!
//! Validation ([`crate::validate`]) asks what the API server would ask: is each field well formed?
//! Analysis asks whether policies can mean what they say:
//!
//! - **Errors** (the webhook refuses them): an invalid policy; a selector nothing can satisfy;
//!   two ClusterNetworkPolicies of one tier and priority that decide some flow differently
//!   (upstream leaves the order of such a tie to the implementation, so what they do is an
//!   accident).
//! - **Warnings** (admitted, and shown): a rule that can never apply because earlier rules of its
//!   policy with another action decide everything it matches (upstream defines what it does:
//!   nothing, as the first matching rule decides; its own conformance suite writes such policies
//!   before reordering their rules, so refusing them would refuse conformant policies); a rule
//!   that earlier rules with its own action make redundant; a NetworkPolicy rule whose every flow the Admin tier denies; egress isolation
//!   that leaves pods no DNS; a direction isolated without rules next to one with rules; CIDRs
//!   with host bits; and, when today's objects are known, selectors and named ports that match
//!   nothing and ipBlocks that cover pod addresses.
//!
//! Every contradiction comes with a [`Witness`]: a small concrete cluster and one flow on which
//! the claim can be checked. The checks reason over the normalized policies the compiler
//! enforces, so what analysis says and what the dataplane does cannot drift apart; the property
//! tests judge each witness with the independent reference evaluator.

mod search;
mod selectors;
mod space;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;

pub use search::Witness;
use search::{Formula, Outcome, rule_formula, solve, solve_borrowed, subject_formula};
pub use selectors::{Unsatisfiable, selector_witness, unsatisfiable_selectors};

use crate::model::{Cluster, CnpPeer, Labels, PodKey, Policy, PolicyKind, PolicyRef, PolicyType, Protocol};
use crate::plan::{Action, Direction};
use crate::validate::{Layer, NamespaceMatch, PeerSpec, PodSelection, PortSpec, ValidPolicy, ValidRule, validate};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What was found; its id is stable (SARIF rule ids, JSON output, documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    Invalid,
    UnsatisfiableSelector,
    Conflict,
    ShadowedRule,
    RedundantRule,
    Unenforceable,
    AdminDenyOverrides,
    NoDns,
    IsolatedWithoutRules,
    CidrHostBits,
    MatchesNothing,
    IpBlockCoversPods,
    Duplicate,
}

impl Check {
    pub const ALL: [Check; 13] = [
        Check::Invalid,
        Check::UnsatisfiableSelector,
        Check::Conflict,
        Check::ShadowedRule,
        Check::RedundantRule,
        Check::Unenforceable,
        Check::AdminDenyOverrides,
        Check::NoDns,
        Check::IsolatedWithoutRules,
        Check::CidrHostBits,
        Check::MatchesNothing,
        Check::IpBlockCoversPods,
        Check::Duplicate,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Check::Invalid => "invalid",
            Check::UnsatisfiableSelector => "unsatisfiable-selector",
            Check::Conflict => "conflict",
            Check::ShadowedRule => "shadowed-rule",
            Check::RedundantRule => "redundant-rule",
            Check::Unenforceable => "unenforceable",
            Check::AdminDenyOverrides => "admin-deny-overrides",
            Check::NoDns => "no-dns",
            Check::IsolatedWithoutRules => "isolated-without-rules",
            Check::CidrHostBits => "cidr-host-bits",
            Check::MatchesNothing => "matches-nothing",
            Check::IpBlockCoversPods => "ipblock-covers-pods",
            Check::Duplicate => "duplicate",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Check::Invalid => "The policy is not valid; Palisade would refuse it.",
            Check::UnsatisfiableSelector => "A label selector that no labels can satisfy selects nothing.",
            Check::Conflict => "Two ClusterNetworkPolicies of one tier and priority decide some traffic differently.",
            Check::ShadowedRule => "Earlier rules with another action decide everything this rule matches.",
            Check::RedundantRule => "Earlier rules with the same action already match everything this rule matches.",
            Check::Unenforceable => "A field Palisade cannot enforce; it matches no traffic.",
            Check::AdminDenyOverrides => "The Admin tier denies every flow this NetworkPolicy rule allows.",
            Check::NoDns => "Egress isolation leaves some selected pods no way to reach DNS (UDP 53).",
            Check::IsolatedWithoutRules => "A direction is isolated without rules while the other has rules.",
            Check::CidrHostBits => "A CIDR has host bits set; Kubernetes ignores them.",
            Check::MatchesNothing => "A subject, peer, node selector or named port matches no known object.",
            Check::IpBlockCoversPods => "An ipBlock covers pod addresses, which change as pods come and go.",
            Check::Duplicate => "The same policy is defined twice; the later definition replaces the earlier one.",
        }
    }
}

impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.id())
    }
}

/// The other policy a finding is about, and where in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Related {
    pub policy: PolicyRef,
    pub field: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: Check,
    pub policy: PolicyRef,
    /// Field path in `policy`, e.g. `spec.ingress[1]`.
    pub field: String,
    pub message: String,
    pub related: Option<Related>,
    #[serde(skip)]
    pub witness: Option<Box<Witness>>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: {}: {}: {} [{}]", self.policy, self.field, self.message, self.check.id())
    }
}

/// Findings for a set of policies as a whole (`palisade lint`, the operator's leader).
/// `objects` are today's namespaces, pods and nodes, when known; without them the checks that
/// compare policies with objects are skipped.
pub fn analyze(policies: &[Policy], objects: Option<&Cluster>) -> Vec<Finding> {
    let prepared: Vec<Prepared> = policies.iter().map(Prepared::new).collect();
    // Only ClusterNetworkPolicies of one tier and priority can conflict: compare within groups.
    let mut tied: BTreeMap<(Layer, i32), Vec<usize>> = BTreeMap::new();
    for (i, policy) in prepared.iter().enumerate() {
        if let Some(valid) = policy.valid.as_ref().filter(|valid| valid.layer != Layer::NetworkPolicy) {
            tied.entry((valid.layer, valid.priority)).or_default().push(i);
        }
    }
    let mut findings = Vec::new();
    for (i, policy) in prepared.iter().enumerate() {
        findings.extend(own_findings(policy, objects));
        let group = policy.valid.as_ref().and_then(|valid| tied.get(&(valid.layer, valid.priority)));
        for &earlier in group.into_iter().flatten().take_while(|&&earlier| earlier < i) {
            findings.extend(conflict(policy, &prepared[earlier]));
        }
        findings.extend(cross_findings(policy, &prepared));
    }
    findings
}

/// Findings that admitting `candidate` would add, given the policies already in the cluster
/// (`existing` may hold the candidate's own older version, which it is never compared with).
/// A conflict that `previous` (the version being replaced) already had with the same policy is
/// reported as a warning: an update that adds no conflict is admitted.
///
/// Only the policies that can matter are validated: for a ClusterNetworkPolicy those of its tier
/// and priority; for a NetworkPolicy the Admin tier and the NetworkPolicies of its namespace.
pub fn admission<'a>(
    candidate: &Policy,
    previous: Option<&Policy>,
    existing: impl IntoIterator<Item = &'a Policy>,
    objects: Option<&Cluster>,
) -> Vec<Finding> {
    let own = candidate.reference();
    let relevant = |policy: &&Policy| -> bool {
        let may_matter = match (candidate, policy) {
            (Policy::Cluster(c), Policy::Cluster(other)) => c.tier == other.tier && c.priority == other.priority,
            (Policy::Network(_), Policy::Cluster(other)) => other.tier == crate::model::Tier::Admin,
            (Policy::Network(np), Policy::Network(other)) => np.namespace == other.namespace,
            (Policy::Cluster(_), Policy::Network(_)) => false,
        };
        may_matter && policy.reference() != own
    };
    let others: Vec<Prepared> = existing.into_iter().filter(relevant).map(Prepared::new).collect();
    let candidate = Prepared::new(candidate);
    let previous = previous.map(Prepared::new);
    let mut findings = own_findings(&candidate, objects);
    for other in &others {
        if let Some(mut conflicting) = conflict(&candidate, other) {
            let old = previous.as_ref().is_some_and(|previous| conflict(previous, other).is_some());
            if old {
                conflicting.severity = Severity::Warning;
                conflicting.message.push_str(" This conflict was there before this update.");
            }
            findings.push(conflicting);
        }
    }
    let mut all = others;
    all.push(candidate.clone());
    findings.extend(cross_findings(&candidate, &all));
    findings
}

/// A policy with its validation outcome, computed once.
#[derive(Clone)]
struct Prepared<'a> {
    policy: &'a Policy,
    valid: Option<ValidPolicy>,
    validation: Vec<Finding>,
}

impl<'a> Prepared<'a> {
    fn new(policy: &'a Policy) -> Prepared<'a> {
        let finding = |severity, check, policy: &PolicyRef, field: &str, message: &str| Finding {
            severity,
            check,
            policy: policy.clone(),
            field: field.to_string(),
            message: message.to_string(),
            related: None,
            witness: None,
        };
        match validate(policy) {
            Ok(validated) => Prepared {
                policy,
                validation: validated
                    .warnings
                    .iter()
                    .map(|w| finding(Severity::Warning, Check::Unenforceable, &w.policy, &w.field, &w.message))
                    .collect(),
                valid: Some(validated.policy),
            },
            Err(errors) => Prepared {
                policy,
                valid: None,
                validation: errors
                    .iter()
                    .map(|e| finding(Severity::Error, Check::Invalid, &e.policy, &e.field, &e.message))
                    .collect(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Describing rules and witnesses
// ---------------------------------------------------------------------------------------------

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn rule_field(direction: Direction, rule: &ValidRule) -> String {
    format!("spec.{}[{}]", direction_name(direction), rule.index)
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Accept => "Accept",
        Action::Deny => "Deny",
        Action::Pass => "Pass",
    }
}

/// `ingress rule "a" (Deny)` or `ingress rule 2 (Deny)`.
fn rule_label(direction: Direction, rule: &ValidRule) -> String {
    let name = match &rule.name {
        Some(name) => format!("{name:?}"),
        None => rule.index.to_string(),
    };
    format!("{} rule {name} ({})", direction_name(direction), action_name(rule.action))
}

fn quoted(policy: &PolicyRef) -> String {
    let kind = match policy.kind {
        PolicyKind::NetworkPolicy => "NetworkPolicy",
        PolicyKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
    };
    match &policy.namespace {
        Some(namespace) => format!("{kind} \"{namespace}/{}\"", policy.name),
        None => format!("{kind} {:?}", policy.name),
    }
}

fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .filter(|(key, _)| key.as_str() != search::NAMESPACE_NAME_LABEL)
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        Protocol::Icmp => "ICMP",
    }
}

impl Witness {
    /// One endpoint in words: `a pod labelled app=a in a namespace labelled env=prod`.
    fn endpoint(&self, address: IpAddr) -> String {
        if let Some(pod) = self.cluster.pods.values().find(|pod| pod.ips.contains(&address)) {
            let mut text = String::from("a pod");
            let labels = labels_text(&pod.labels);
            if !labels.is_empty() {
                text.push_str(&format!(" labelled {labels}"));
            }
            if let Some(named) = pod.named_ports.first() {
                text.push_str(&format!(" with port {:?} = {}", named.name, named.port));
            }
            if !space::is_preferred_address(address) {
                // A CIDR chose this address: it is part of what the rules match.
                text.push_str(&format!(" at {address}"));
            }
            let namespace = self.cluster.namespaces.get(&pod.key.namespace);
            let generic = search::is_witness_namespace(&pod.key.namespace);
            let namespace_labels = namespace.map(|ns| labels_text(&ns.labels)).unwrap_or_default();
            match (generic, namespace_labels.is_empty()) {
                (true, true) => text.push_str(" in any namespace"),
                (true, false) => text.push_str(&format!(" in a namespace labelled {namespace_labels}")),
                (false, true) => text.push_str(&format!(" in namespace {:?}", pod.key.namespace)),
                (false, false) => {
                    text.push_str(&format!(" in namespace {:?} labelled {namespace_labels}", pod.key.namespace))
                }
            }
            return text;
        }
        if let Some(node) = self.cluster.nodes.values().find(|node| node.ips.contains(&address)) {
            let labels = labels_text(&node.labels);
            if labels.is_empty() {
                return format!("a node ({address})");
            }
            return format!("a node labelled {labels} ({address})");
        }
        format!("address {address}")
    }

    /// The flow in words: `TCP 80 from … to …`.
    pub fn describe(&self) -> String {
        let what = match self.flow.protocol {
            Protocol::Icmp => "ICMP".to_string(),
            protocol => format!("{} {}", protocol_name(protocol), self.flow.port),
        };
        format!("{what} from {} to {}", self.endpoint(self.flow.src), self.endpoint(self.flow.dst))
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// Above this many Admin rules that can apply to a NetworkPolicy's pods, the "Admin denies
/// everything it allows" check is skipped (it is a warning; its formula grows quadratically).
const MAX_ADMIN_RULES: usize = 64;

fn found(outcome: Outcome) -> Option<Box<Witness>> {
    match outcome {
        Outcome::Found(witness) => Some(witness),
        Outcome::Impossible | Outcome::GaveUp => None,
    }
}

/// Each rule's formula and its negation, built once for every search over the rules.
fn built_rules(rules: &[ValidRule], direction: Direction) -> Vec<(Formula, Formula)> {
    rules
        .iter()
        .map(|rule| {
            let formula = rule_formula(rule, direction);
            let negated = formula.negated();
            (formula, negated)
        })
        .collect()
}

/// The flow is decided by rule `index` of the policy: the rule matches and no earlier one does.
fn decided_by(built: &[(Formula, Formula)], index: usize) -> impl Iterator<Item = &Formula> {
    std::iter::once(&built[index].0).chain(built[..index].iter().map(|(_, negated)| negated))
}

/// Two ClusterNetworkPolicies of one tier and priority, and the first flow (if any) on which the
/// rule that decides for one has another action than the rule that decides for the other.
fn conflict(policy: &Prepared, other: &Prepared) -> Option<Finding> {
    conflict_between(policy.valid.as_ref()?, other.valid.as_ref()?)
}

/// The first conflict between two valid policies (see [`conflict`]); `a` is the one reported.
/// The operator's leader asks this of the policies in force, for their `Conflicting` condition.
pub fn conflict_between(a: &ValidPolicy, b: &ValidPolicy) -> Option<Finding> {
    if a.layer == Layer::NetworkPolicy || a.layer != b.layer || a.priority != b.priority {
        return None;
    }
    let subjects = [subject_formula(&a.subject), subject_formula(&b.subject)];
    found(solve_borrowed(Direction::Ingress, &subjects.iter().collect::<Vec<_>>(), search::BUDGET))?;
    for direction in DIRECTIONS {
        let (Some(rules_a), Some(rules_b)) = (a.rules(direction), b.rules(direction)) else { continue };
        let (built_a, built_b) = (built_rules(rules_a, direction), built_rules(rules_b, direction));
        for (i, rule_a) in rules_a.iter().enumerate() {
            for (j, rule_b) in rules_b.iter().enumerate().filter(|(_, rule_b)| rule_b.action != rule_a.action) {
                let mut formulas: Vec<&Formula> = subjects.iter().collect();
                formulas.extend(decided_by(&built_a, i));
                formulas.extend(decided_by(&built_b, j));
                let Some(witness) = found(solve_borrowed(direction, &formulas, search::BUDGET)) else { continue };
                let tier = if a.layer == Layer::Admin { "Admin" } else { "Baseline" };
                let message = format!(
                    "{} {} and {} {} have the same tier ({tier}) and priority ({}), and both match {}. Give one of them another priority.",
                    quoted(&a.reference),
                    rule_label(direction, rule_a),
                    quoted(&b.reference),
                    rule_label(direction, rule_b),
                    a.priority,
                    witness.describe(),
                );
                return Some(Finding {
                    severity: Severity::Error,
                    check: Check::Conflict,
                    policy: a.reference.clone(),
                    field: rule_field(direction, rule_a),
                    message,
                    related: Some(Related { policy: b.reference.clone(), field: rule_field(direction, rule_b) }),
                    witness: Some(witness),
                });
            }
        }
    }
    None
}

/// Findings about one policy on its own.
fn own_findings(policy: &Prepared, objects: Option<&Cluster>) -> Vec<Finding> {
    let mut findings = policy.validation.clone();
    let Some(valid) = &policy.valid else { return findings };
    let unsatisfiable = unsatisfiable_selectors(policy.policy);
    findings.extend(unsatisfiable.iter().map(|error| Finding {
        severity: Severity::Error,
        check: Check::UnsatisfiableSelector,
        policy: error.policy.clone(),
        field: error.field.clone(),
        message: error.message.clone(),
        related: None,
        witness: None,
    }));
    findings.extend(rule_order_findings(valid));
    findings.extend(isolated_without_rules(policy.policy));
    findings.extend(host_bits(policy.policy));
    if let Some(objects) = objects {
        findings.extend(matches_nothing(policy.policy, valid, objects));
        findings.extend(ip_block_covers_pods(policy.policy, objects));
    }
    findings
}

/// Rules that can never decide anything: shadowed by earlier rules with another action (an
/// error), or made redundant by earlier rules with the same action (a warning).
fn rule_order_findings(valid: &ValidPolicy) -> Vec<Finding> {
    let mut findings = Vec::new();
    let subject = subject_formula(&valid.subject);
    for direction in DIRECTIONS {
        let Some(rules) = valid.rules(direction) else { continue };
        let built = built_rules(rules, direction);
        let search = |formulas: &[&Formula]| solve_borrowed(direction, formulas, search::BUDGET);
        for (j, rule) in rules.iter().enumerate().skip(1) {
            if found(search(&[&subject, &built[j].0])).is_none() {
                continue; // it matches nothing by itself: other checks say why
            }
            let reachable: Vec<&Formula> = std::iter::once(&subject).chain(decided_by(&built, j)).collect();
            if !matches!(search(&reachable), Outcome::Impossible) {
                continue;
            }
            // Proved: every flow of the rule is decided earlier. By another action somewhere?
            let overriding =
                rules[..j].iter().enumerate().filter(|(_, earlier)| earlier.action != rule.action).find_map(
                    |(k, earlier)| {
                        let formulas: Vec<&Formula> =
                            [&subject, &built[j].0].into_iter().chain(decided_by(&built, k)).collect();
                        found(search(&formulas)).map(|witness| (earlier, witness))
                    },
                );
            let covering: Vec<String> = rules[..j]
                .iter()
                .enumerate()
                .filter(|(k, _)| found(search(&[&subject, &built[j].0, &built[*k].0])).is_some())
                .map(|(_, earlier)| rule_label(direction, earlier))
                .collect();
            let finding = match overriding {
                Some((earlier, witness)) => Finding {
                    severity: Severity::Warning,
                    check: Check::ShadowedRule,
                    policy: valid.reference.clone(),
                    field: rule_field(direction, rule),
                    message: format!(
                        "{} can never apply: earlier rules ({}) match everything it matches, and {} decides otherwise, for example for {}. Remove it or move it before them.",
                        rule_label(direction, rule),
                        covering.join(", "),
                        rule_label(direction, earlier),
                        witness.describe()
                    ),
                    related: None,
                    witness: Some(witness),
                },
                None => Finding {
                    severity: Severity::Warning,
                    check: Check::RedundantRule,
                    policy: valid.reference.clone(),
                    field: rule_field(direction, rule),
                    message: format!(
                        "{} is redundant: earlier rules with the same action ({}) already match everything it matches.",
                        rule_label(direction, rule),
                        covering.join(", ")
                    ),
                    related: None,
                    witness: None,
                },
            };
            findings.push(finding);
        }
    }
    findings
}

/// `policyTypes` isolating a direction that has no rules, while the other direction has rules:
/// a deny-all of that direction that was probably not meant.
fn isolated_without_rules(policy: &Policy) -> Vec<Finding> {
    let Policy::Network(np) = policy else { return Vec::new() };
    let Some(types) = &np.policy_types else { return Vec::new() };
    let mut findings = Vec::new();
    for (policy_type, rules, other_rules, name) in [
        (PolicyType::Ingress, &np.ingress, &np.egress, "Ingress"),
        (PolicyType::Egress, &np.egress, &np.ingress, "Egress"),
    ] {
        if types.contains(&policy_type) && rules.is_empty() && !other_rules.is_empty() {
            findings.push(Finding {
                severity: Severity::Warning,
                check: Check::IsolatedWithoutRules,
                policy: policy.reference(),
                field: "spec.policyTypes".into(),
                message: format!(
                    "policyTypes names {name} but the policy has no {} rule, so it denies all {} of the pods it selects. If a deny-all is meant, a separate policy says so more clearly; otherwise remove {name} or add rules.",
                    name.to_lowercase(),
                    name.to_lowercase()
                ),
                related: None,
                witness: None,
            });
        }
    }
    findings
}

/// The CIDRs of a policy, with their field paths.
fn cidrs_of(policy: &Policy) -> Vec<(String, &str)> {
    let mut found = Vec::new();
    match policy {
        Policy::Network(np) => {
            for (list, peers_field, rules) in [("ingress", "from", &np.ingress), ("egress", "to", &np.egress)] {
                for (i, rule) in rules.iter().enumerate() {
                    for (j, peer) in rule.peers.iter().enumerate() {
                        let Some(block) = &peer.ip_block else { continue };
                        let at = format!("spec.{list}[{i}].{peers_field}[{j}].ipBlock");
                        found.push((format!("{at}.cidr"), block.cidr.as_str()));
                        for (k, except) in block.except.iter().enumerate() {
                            found.push((format!("{at}.except[{k}]"), except.as_str()));
                        }
                    }
                }
            }
        }
        Policy::Cluster(cnp) => {
            for (i, rule) in cnp.egress.iter().enumerate() {
                for (j, peer) in rule.peers.iter().enumerate() {
                    let CnpPeer::Networks(nets) = peer else { continue };
                    for (k, net) in nets.iter().enumerate() {
                        found.push((format!("spec.egress[{i}].to[{j}].networks[{k}]"), net.as_str()));
                    }
                }
            }
        }
    }
    found
}

fn host_bits(policy: &Policy) -> Vec<Finding> {
    cidrs_of(policy)
        .into_iter()
        .filter_map(|(field, text)| {
            let net = IpNet::from_str(text).ok()?;
            (net.trunc() != net).then(|| Finding {
                severity: Severity::Warning,
                check: Check::CidrHostBits,
                policy: policy.reference(),
                field,
                message: format!("{text} has host bits set; it means {}", net.trunc()),
                related: None,
                witness: None,
            })
        })
        .collect()
}

/// Selectors and named ports that no current object matches.
fn matches_nothing(policy: &Policy, valid: &ValidPolicy, objects: &Cluster) -> Vec<Finding> {
    let mut findings = Vec::new();
    let endpoints = || objects.pods.values().filter(|pod| pod.is_policy_endpoint());
    let no_pods = endpoints().next().is_none();
    let warn = |field: String, message: String| Finding {
        severity: Severity::Warning,
        check: Check::MatchesNothing,
        policy: valid.reference.clone(),
        field,
        message,
        related: None,
        witness: None,
    };
    if !no_pods {
        let selects_any = selects_any_pod(&valid.subject, objects);
        if !selects_any {
            let field = match policy {
                Policy::Network(_) => "spec.podSelector",
                Policy::Cluster(_) => "spec.subject",
            };
            findings.push(warn(field.into(), "selects none of the known pods".into()));
        }
    }
    for direction in DIRECTIONS {
        let Some(rules) = valid.rules(direction) else { continue };
        for rule in rules {
            for (k, port) in rule.ports.iter().flatten().enumerate() {
                let PortSpec::Named { name, .. } = port else { continue };
                let known = endpoints().any(|pod| pod.named_ports.iter().any(|named| &named.name == name));
                if !no_pods && !known {
                    let field = match policy {
                        Policy::Network(_) => format!("{}.ports[{k}].port", rule_field(direction, rule)),
                        Policy::Cluster(_) => {
                            format!("{}.protocols[{k}].destinationNamedPort", rule_field(direction, rule))
                        }
                    };
                    findings.push(warn(field, format!("none of the known pods has a port named {name:?}")));
                }
            }
            let peers_field = if direction == Direction::Ingress { "from" } else { "to" };
            for (j, peer) in rule.peers.iter().flatten().enumerate() {
                let PeerSpec::Pods(selection) = peer else { continue };
                if !no_pods && !selects_any_pod(selection, objects) {
                    let field = format!("{}.{peers_field}[{j}]", rule_field(direction, rule));
                    findings.push(warn(field, "selects none of the known pods".into()));
                }
            }
        }
    }
    if let Policy::Cluster(cnp) = policy {
        for (i, rule) in cnp.egress.iter().enumerate() {
            for (j, peer) in rule.peers.iter().enumerate() {
                let CnpPeer::Nodes(selector) = peer else { continue };
                if !objects.nodes.is_empty() && !objects.nodes.values().any(|node| selector.matches(&node.labels)) {
                    findings.push(warn(
                        format!("spec.egress[{i}].to[{j}].nodes"),
                        "selects none of the known nodes".into(),
                    ));
                }
            }
        }
    }
    findings
}

/// Whether any pod of `objects` is selected, looking only in the namespaces that match: a
/// selector that matches nothing must not cost a scan of every pod.
fn selects_any_pod(selection: &PodSelection, objects: &Cluster) -> bool {
    let in_namespace = |name: &str| {
        let first = PodKey { namespace: name.to_string(), name: String::new() };
        objects
            .pods
            .range(first..)
            .take_while(|(key, _)| key.namespace == name)
            .any(|(_, pod)| pod.is_policy_endpoint() && selection.pods.matches(&pod.labels))
    };
    match &selection.namespaces {
        NamespaceMatch::Named(name) => in_namespace(name),
        NamespaceMatch::Selector(selector) => objects
            .namespaces
            .values()
            .filter(|namespace| selector.matches(&namespace.labels))
            .any(|namespace| in_namespace(&namespace.name)),
    }
}

/// ipBlocks (NetworkPolicy) that hold addresses of today's pods: they are meant for addresses
/// outside the cluster, and a pod's address goes to another pod when it ends.
fn ip_block_covers_pods(policy: &Policy, objects: &Cluster) -> Vec<Finding> {
    let Policy::Network(_) = policy else { return Vec::new() };
    cidrs_of(policy)
        .into_iter()
        .filter(|(field, _)| field.ends_with(".cidr"))
        .filter_map(|(field, text)| {
            let net = IpNet::from_str(text).ok()?.trunc();
            let pod = objects
                .pods
                .values()
                .filter(|pod| pod.is_policy_endpoint())
                .find(|pod| pod.ips.iter().any(|ip| net.contains(ip)))?;
            Some(Finding {
                severity: Severity::Warning,
                check: Check::IpBlockCoversPods,
                policy: policy.reference(),
                field,
                message: format!(
                    "{text} covers the address of pod {} (and maybe others): ipBlock is meant for addresses outside the cluster, and pod addresses move to other pods; select pods by label instead",
                    pod.key
                ),
                related: None,
                witness: None,
            })
        })
        .collect()
}

/// Findings about one policy in the light of the others: Admin-tier denies that override every
/// flow of a NetworkPolicy rule, and egress isolation without DNS.
fn cross_findings(policy: &Prepared, all: &[Prepared]) -> Vec<Finding> {
    let Some(valid) = &policy.valid else { return Vec::new() };
    if valid.layer != Layer::NetworkPolicy {
        return Vec::new();
    }
    // Only policies that can select one of the same pods take part, and only a bounded number:
    // the Admin tier's order makes the formula grow with the square of its rules.
    let meets = |other: &ValidPolicy| {
        let subjects = vec![subject_formula(&valid.subject), subject_formula(&other.subject)];
        found(solve(Direction::Ingress, subjects, search::BUDGET)).is_some()
    };
    let valid_all: Vec<&ValidPolicy> = all
        .iter()
        .filter_map(|p| p.valid.as_ref())
        .filter(|other| other.layer != Layer::Baseline && meets(other))
        .collect();
    let admin_rule_count: usize = valid_all
        .iter()
        .filter(|p| p.layer == Layer::Admin)
        .map(|p| p.ingress.iter().chain(p.egress.iter()).map(Vec::len).sum::<usize>())
        .sum();
    let mut findings =
        if admin_rule_count <= MAX_ADMIN_RULES { admin_overrides(valid, &valid_all) } else { Vec::new() };
    findings.extend(no_dns(valid, &valid_all));
    findings
}

/// The Admin tier's rules in evaluation order for a direction: by priority, then name.
fn admin_rules<'a>(all: &[&'a ValidPolicy], direction: Direction) -> Vec<(&'a ValidPolicy, &'a ValidRule)> {
    let mut admin: Vec<&ValidPolicy> = all.iter().copied().filter(|p| p.layer == Layer::Admin).collect();
    admin.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    admin
        .into_iter()
        .flat_map(|policy| policy.rules(direction).unwrap_or(&[]).iter().map(move |rule| (policy, rule)))
        .collect()
}

/// The flow is matched by the admin rule: its policy selects the subject and the rule matches.
fn admin_rule_formula(policy: &ValidPolicy, rule: &ValidRule, direction: Direction) -> Formula {
    Formula::All(vec![subject_formula(&policy.subject), rule_formula(rule, direction)])
}

fn admin_overrides(np: &ValidPolicy, all: &[&ValidPolicy]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for direction in DIRECTIONS {
        let Some(rules) = np.rules(direction) else { continue };
        let admin = admin_rules(all, direction);
        if !admin.iter().any(|(_, rule)| rule.action == Action::Deny) {
            continue;
        }
        // Not denied by the Admin tier: decided there by an Accept or Pass, or matched by no rule.
        let mut not_denied = Vec::new();
        for (k, (policy, rule)) in admin.iter().enumerate().filter(|(_, (_, rule))| rule.action != Action::Deny) {
            let mut parts = vec![admin_rule_formula(policy, rule, direction)];
            parts.extend(admin[..k].iter().map(|(p, r)| admin_rule_formula(p, r, direction).negated()));
            not_denied.push(Formula::All(parts));
        }
        not_denied
            .push(Formula::All(admin.iter().map(|(p, r)| admin_rule_formula(p, r, direction).negated()).collect()));
        for rule in rules {
            let flows = vec![subject_formula(&np.subject), rule_formula(rule, direction)];
            let Some(witness) = found(solve(direction, flows.clone(), search::BUDGET)) else { continue };
            let mut escaping = flows;
            escaping.push(Formula::Any(not_denied.clone()));
            if !matches!(solve(direction, escaping, search::BUDGET), Outcome::Impossible) {
                continue;
            }
            findings.push(Finding {
                severity: Severity::Warning,
                check: Check::AdminDenyOverrides,
                policy: np.reference.clone(),
                field: rule_field(direction, rule),
                message: format!(
                    "the Admin tier denies every flow this {} rule allows, for example {}",
                    direction_name(direction),
                    witness.describe()
                ),
                related: None,
                witness: Some(witness),
            });
        }
    }
    findings
}

/// Whether a rule can carry DNS (UDP 53) to some peer.
fn carries_dns(rule: &ValidRule) -> bool {
    rule.peers.as_ref().is_none_or(|peers| !peers.is_empty())
        && rule.ports.as_ref().is_none_or(|ports| {
            ports.iter().any(|port| match port {
                PortSpec::Range { protocol, first, last } => {
                    *protocol == Protocol::Udp && (*first..=*last).contains(&53)
                }
                PortSpec::Named { protocol, .. } => protocol.is_none_or(|p| p == Protocol::Udp),
                PortSpec::Everything => true,
            })
        })
}

fn no_dns(np: &ValidPolicy, all: &[&ValidPolicy]) -> Vec<Finding> {
    if np.egress.is_none() {
        return Vec::new();
    }
    // A selected pod that no egress-isolating NetworkPolicy of its namespace and no Admin Accept
    // lets out on UDP 53 to any peer.
    let mut formulas = vec![subject_formula(&np.subject)];
    for other in all {
        let allows_dns = match other.layer {
            Layer::NetworkPolicy => other.egress.iter().flatten().any(carries_dns),
            Layer::Admin => {
                other.egress.iter().flatten().any(|rule| rule.action == Action::Accept && carries_dns(rule))
            }
            Layer::Baseline => false,
        };
        if allows_dns {
            formulas.push(subject_formula(&other.subject).negated());
        }
    }
    let Some(witness) = found(solve(Direction::Egress, formulas, search::BUDGET)) else { return Vec::new() };
    let pod = witness.cluster.pods.get(&witness.subject).map(|pod| witness.endpoint(pod.ips[0]));
    vec![Finding {
        severity: Severity::Warning,
        check: Check::NoDns,
        policy: np.reference.clone(),
        field: "spec.egress".into(),
        message: format!(
            "egress is isolated and no policy lets {} reach DNS (UDP 53); name resolution will fail. Add an egress rule for UDP and TCP 53 to the cluster DNS",
            pod.unwrap_or_else(|| "the selected pods".into())
        ),
        related: None,
        witness: Some(witness),
    }]
}
