//! API objects into `palisade_engine::model`, field by field.
//!
//! Conversion is structural: CIDRs, port numbers and ranges pass through as written, because
//! the engine's validation is the one place that judges them and names the field. Conversion
//! fails only for what the model cannot hold (a missing name, a tier or action it has no variant
//! for). `None` stays distinct from empty wherever the model documents a difference.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1 as netv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use palisade_engine::model as m;

use crate::cnp::{self, ClusterNetworkPolicy, PeerKind, PortKind, PortProtocol, ProtocolKind, SubjectKind};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{kind} {object}: required field {field} is missing")]
    MissingField { kind: &'static str, object: String, field: &'static str },
    #[error("{kind} {object}: {field} has value {value:?}, which this version cannot represent")]
    UnsupportedValue { kind: &'static str, object: String, field: String, value: String },
}

impl ConvertError {
    /// The field path the error is about.
    pub fn field(&self) -> String {
        match self {
            ConvertError::MissingField { field, .. } => (*field).to_owned(),
            ConvertError::UnsupportedValue { field, .. } => field.clone(),
        }
    }
}

/// `namespace/name` (or what is known of it) for error messages.
fn describe(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn required<'a>(
    kind: &'static str,
    meta: &ObjectMeta,
    value: &'a Option<String>,
    field: &'static str,
) -> Result<&'a str, ConvertError> {
    value.as_deref().ok_or_else(|| ConvertError::MissingField { kind, object: describe(meta), field })
}

fn revision(meta: &ObjectMeta) -> m::Revision {
    m::Revision { uid: meta.uid.clone().unwrap_or_default(), generation: meta.generation.unwrap_or(0) }
}

/// `metav1.LabelSelector`; absent `matchLabels`/`matchExpressions` are the same as empty.
pub fn label_selector(selector: &LabelSelector) -> m::LabelSelector {
    m::LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions: selector
            .match_expressions
            .iter()
            .flatten()
            .map(|requirement| m::SelectorRequirement {
                key: requirement.key.clone(),
                operator: match requirement.operator.as_str() {
                    "In" => m::SelectorOperator::In,
                    "NotIn" => m::SelectorOperator::NotIn,
                    "Exists" => m::SelectorOperator::Exists,
                    "DoesNotExist" => m::SelectorOperator::DoesNotExist,
                    other => m::SelectorOperator::Unknown(other.to_owned()),
                },
                values: requirement.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// NetworkPolicy
// ---------------------------------------------------------------------------------------------

const NETWORK_POLICY: &str = "NetworkPolicy";

pub fn network_policy(np: &netv1::NetworkPolicy) -> Result<m::NetworkPolicy, ConvertError> {
    let meta = &np.metadata;
    let name = required(NETWORK_POLICY, meta, &meta.name, "metadata.name")?;
    let namespace = required(NETWORK_POLICY, meta, &meta.namespace, "metadata.namespace")?;
    let spec = np.spec.clone().unwrap_or_default();
    Ok(m::NetworkPolicy {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        revision: revision(meta),
        // An omitted podSelector (e.g. `podSelector: null`) selects every pod, as `{}` does.
        pod_selector: spec.pod_selector.as_ref().map(label_selector).unwrap_or_default(),
        policy_types: spec.policy_types.map(|types| {
            types
                .into_iter()
                .map(|t| match t.as_str() {
                    "Ingress" => m::PolicyType::Ingress,
                    "Egress" => m::PolicyType::Egress,
                    _ => m::PolicyType::Unknown(t),
                })
                .collect()
        }),
        ingress: spec
            .ingress
            .iter()
            .flatten()
            .map(|rule| np_rule(rule.from.as_deref(), rule.ports.as_deref()))
            .collect(),
        egress: spec.egress.iter().flatten().map(|rule| np_rule(rule.to.as_deref(), rule.ports.as_deref())).collect(),
    })
}

fn np_rule(
    peers: Option<&[netv1::NetworkPolicyPeer]>,
    ports: Option<&[netv1::NetworkPolicyPort]>,
) -> m::NetworkPolicyRule {
    m::NetworkPolicyRule {
        peers: peers.unwrap_or_default().iter().map(np_peer).collect(),
        ports: ports.unwrap_or_default().iter().map(np_port).collect(),
    }
}

fn np_peer(peer: &netv1::NetworkPolicyPeer) -> m::NetworkPolicyPeer {
    m::NetworkPolicyPeer {
        namespace_selector: peer.namespace_selector.as_ref().map(label_selector),
        pod_selector: peer.pod_selector.as_ref().map(label_selector),
        ip_block: peer
            .ip_block
            .as_ref()
            .map(|block| m::IpBlock { cidr: block.cidr.clone(), except: block.except.clone().unwrap_or_default() }),
    }
}

fn np_port(port: &netv1::NetworkPolicyPort) -> m::NetworkPolicyPort {
    m::NetworkPolicyPort {
        protocol: port.protocol.as_deref().map(|p| protocol(p).ok_or_else(|| p.to_owned())),
        port: port.port.as_ref().map(|value| match value {
            IntOrString::Int(number) => m::PortValue::Number(*number),
            IntOrString::String(name) => m::PortValue::Name(name.clone()),
        }),
        end_port: port.end_port,
    }
}

/// The Kubernetes protocol names that carry ports.
fn protocol(name: &str) -> Option<m::Protocol> {
    match name {
        "TCP" => Some(m::Protocol::Tcp),
        "UDP" => Some(m::Protocol::Udp),
        "SCTP" => Some(m::Protocol::Sctp),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// ClusterNetworkPolicy
// ---------------------------------------------------------------------------------------------

const CLUSTER_NETWORK_POLICY: &str = "ClusterNetworkPolicy";

pub fn cluster_network_policy(cnp: &ClusterNetworkPolicy) -> Result<m::ClusterNetworkPolicy, ConvertError> {
    convert_cluster_network_policy(cnp, UnknownAction::Refuse)
}

/// What to enforce for a ClusterNetworkPolicy that [`cluster_network_policy`] refuses and that was
/// never accepted: its fail-closed stand-in ([`m::Policy::fail_closed_stand_in`]), reading an
/// action this version does not know as Deny (the closed side). `None` when even that cannot be
/// read (an unknown tier, a missing name): then nothing is enforced and status says so.
pub fn cluster_network_policy_stand_in(cnp: &ClusterNetworkPolicy) -> Option<m::Policy> {
    let read = convert_cluster_network_policy(cnp, UnknownAction::ReadAsDeny).ok()?;
    Some(m::Policy::Cluster(read).fail_closed_stand_in())
}

#[derive(Clone, Copy)]
enum UnknownAction {
    Refuse,
    ReadAsDeny,
}

fn convert_cluster_network_policy(
    cnp: &ClusterNetworkPolicy,
    unknown_action: UnknownAction,
) -> Result<m::ClusterNetworkPolicy, ConvertError> {
    let meta = &cnp.metadata;
    let name = required(CLUSTER_NETWORK_POLICY, meta, &meta.name, "metadata.name")?;
    let unsupported = |field: String, value: &str| ConvertError::UnsupportedValue {
        kind: CLUSTER_NETWORK_POLICY,
        object: name.to_owned(),
        field,
        value: value.to_owned(),
    };
    let spec = &cnp.spec;
    let tier = match &spec.tier {
        cnp::Tier::Admin => m::Tier::Admin,
        cnp::Tier::Baseline => m::Tier::Baseline,
        cnp::Tier::Unknown(value) => return Err(unsupported("spec.tier".into(), value)),
    };
    let action = |direction: &str, index: usize, action: &cnp::RuleAction| match action {
        cnp::RuleAction::Accept => Ok(m::CnpAction::Accept),
        cnp::RuleAction::Deny => Ok(m::CnpAction::Deny),
        cnp::RuleAction::Pass => Ok(m::CnpAction::Pass),
        cnp::RuleAction::Unknown(value) => match unknown_action {
            UnknownAction::Refuse => Err(unsupported(format!("spec.{direction}[{index}].action"), value)),
            UnknownAction::ReadAsDeny => Ok(m::CnpAction::Deny),
        },
    };
    let ingress = spec
        .ingress
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            Ok(m::CnpRule {
                name: rule.name.clone(),
                action: action("ingress", index, &rule.action)?,
                peers: rule.from.iter().map(|peer| cnp_peer(peer.kind())).collect(),
                protocols: cnp_protocols(rule.protocols.as_deref()),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let egress = spec
        .egress
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            Ok(m::CnpRule {
                name: rule.name.clone(),
                action: action("egress", index, &rule.action)?,
                peers: rule.to.iter().map(|peer| cnp_peer(peer.kind())).collect(),
                protocols: cnp_protocols(rule.protocols.as_deref()),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(m::ClusterNetworkPolicy {
        name: name.to_owned(),
        revision: revision(meta),
        tier,
        priority: spec.priority,
        subject: match spec.subject.kind() {
            SubjectKind::Namespaces(selector) => m::CnpSubject::Namespaces(label_selector(selector)),
            SubjectKind::Pods(pods) => {
                namespaced_pods(pods, |ns, pods| m::CnpSubject::Pods { namespace_selector: ns, pod_selector: pods })
            }
            SubjectKind::Unknown => {
                m::CnpSubject::Invalid("spec.subject must set exactly one of namespaces, pods".into())
            }
        },
        ingress,
        egress,
    })
}

/// Applies upstream's default: a missing `namespaceSelector` means every namespace.
fn namespaced_pods<T>(pods: &cnp::NamespacedPod, build: impl FnOnce(m::LabelSelector, m::LabelSelector) -> T) -> T {
    build(pods.namespace_selector.as_ref().map(label_selector).unwrap_or_default(), label_selector(&pods.pod_selector))
}

fn cnp_peer(kind: PeerKind<'_>) -> m::CnpPeer {
    match kind {
        PeerKind::Namespaces(selector) => m::CnpPeer::Namespaces(label_selector(selector)),
        PeerKind::Pods(pods) => {
            namespaced_pods(pods, |ns, pods| m::CnpPeer::Pods { namespace_selector: ns, pod_selector: pods })
        }
        PeerKind::Networks(cidrs) => m::CnpPeer::Networks(cidrs.to_vec()),
        PeerKind::Nodes(selector) => m::CnpPeer::Nodes(label_selector(selector)),
        PeerKind::DomainNames(names) => m::CnpPeer::DomainNames(names.to_vec()),
        PeerKind::Unknown => m::CnpPeer::Unknown,
    }
}

fn cnp_protocols(protocols: Option<&[cnp::ClusterNetworkPolicyProtocol]>) -> Option<Vec<m::CnpProtocol>> {
    protocols.map(|entries| {
        entries
            .iter()
            .map(|entry| match entry.kind() {
                ProtocolKind::Port { protocol, port } => m::CnpProtocol::Port {
                    protocol: match protocol {
                        PortProtocol::Tcp => m::Protocol::Tcp,
                        PortProtocol::Udp => m::Protocol::Udp,
                        PortProtocol::Sctp => m::Protocol::Sctp,
                    },
                    port: match port {
                        PortKind::Number(number) => m::CnpPort::Number(number),
                        PortKind::Range(range) => m::CnpPort::Range { start: range.start, end: range.end },
                    },
                },
                ProtocolKind::NamedPort(name) => m::CnpProtocol::NamedPort(name.to_owned()),
                ProtocolKind::Unknown => m::CnpProtocol::Unknown,
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Pods, namespaces, nodes
// ---------------------------------------------------------------------------------------------

/// A pod. Unparsable IPs and named ports the model cannot hold (an unknown protocol, a number
/// outside 1..=65535) are skipped: they can match no policy anyway.
pub fn pod(pod: &Pod) -> Result<m::Pod, ConvertError> {
    let meta = &pod.metadata;
    let name = required("Pod", meta, &meta.name, "metadata.name")?;
    let namespace = required("Pod", meta, &meta.namespace, "metadata.namespace")?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|pod_ip| pod_ip.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    let named_ports = spec
        .into_iter()
        .flat_map(|s| &s.containers)
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            Some(m::NamedPort {
                name: port.name.clone()?,
                protocol: protocol(port.protocol.as_deref().unwrap_or("TCP"))?,
                port: u16::try_from(port.container_port).ok().filter(|p| *p != 0)?,
            })
        })
        .collect();
    Ok(m::Pod {
        key: m::PodKey { namespace: namespace.to_owned(), name: name.to_owned() },
        labels: pod.labels().clone(),
        node: spec.and_then(|s| s.node_name.clone()),
        ips,
        named_ports,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        terminated: pod_has_finished(pod),
    })
}

/// Whether the pod has finished and may already have lent its IP to another pod: phase
/// `Succeeded` or `Failed`, or deleting with no container left running (every reported container
/// status is terminated, or none is reported). A deleting pod with a running container keeps its
/// identity until it stops: its IP is not free yet.
fn pod_has_finished(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
        return true;
    }
    if pod.metadata.deletion_timestamp.is_none() {
        return false;
    }
    status
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
        .all(|container| container.state.as_ref().is_some_and(|state| state.terminated.is_some()))
}

pub fn namespace(namespace: &Namespace) -> Result<m::Namespace, ConvertError> {
    let meta = &namespace.metadata;
    let name = required("Namespace", meta, &meta.name, "metadata.name")?;
    Ok(m::Namespace { name: name.to_owned(), labels: namespace.labels().clone() })
}

/// A node with its InternalIP and ExternalIP addresses (the ones upstream's `nodes` peer
/// matches, as kube-network-policies does), deduplicated, unparsable ones skipped.
pub fn node(node: &Node) -> Result<m::Node, ConvertError> {
    let meta = &node.metadata;
    let name = required("Node", meta, &meta.name, "metadata.name")?;
    let mut ips: Vec<IpAddr> = Vec::new();
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref()).into_iter().flatten();
    for address in addresses.filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")) {
        if let Ok(ip) = address.address.parse::<IpAddr>()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    Ok(m::Node { name: name.to_owned(), labels: node.labels().clone(), ips })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn np(spec: serde_json::Value) -> netv1::NetworkPolicy {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": "np", "namespace": "ns", "uid": "u1", "generation": 3 },
            "spec": spec,
        }))
        .expect("the test input converts")
    }

    #[test]
    fn network_policy_keeps_absent_and_empty_namespace_selector_apart() {
        let converted = network_policy(&np(json!({
            "podSelector": {},
            "ingress": [{ "from": [
                { "podSelector": { "matchLabels": { "app": "a" } } },
                { "namespaceSelector": {} },
                { "namespaceSelector": { "matchLabels": { "team": "x" } }, "podSelector": {} },
            ]}],
        })))
        .expect("the test input converts");
        let peers = &converted.ingress[0].peers;
        assert_eq!(peers[0].namespace_selector, None);
        assert_eq!(peers[0].pod_selector.as_ref().expect("the test input converts").match_labels["app"], "a");
        assert_eq!(peers[1].namespace_selector, Some(m::LabelSelector::default()));
        assert_eq!(peers[1].pod_selector, None);
        assert_eq!(peers[2].pod_selector, Some(m::LabelSelector::default()));
        assert_eq!(converted.revision, m::Revision { uid: "u1".into(), generation: 3 });
    }

    #[test]
    fn network_policy_keeps_absent_and_present_policy_types_apart() {
        let absent = network_policy(&np(json!({ "podSelector": {} }))).expect("the test input converts");
        assert_eq!(absent.policy_types, None);
        let empty =
            network_policy(&np(json!({ "podSelector": {}, "policyTypes": [] }))).expect("the test input converts");
        assert_eq!(empty.policy_types, Some(vec![]));
        let set = network_policy(&np(json!({ "podSelector": {}, "policyTypes": ["Egress", "Sideways"] })))
            .expect("the test input converts");
        assert_eq!(set.policy_types, Some(vec![m::PolicyType::Egress, m::PolicyType::Unknown("Sideways".into())]));
    }

    #[test]
    fn network_policy_ports_keep_unknown_protocols_and_defaults() {
        let converted = network_policy(&np(json!({
            "podSelector": null,
            "egress": [{ "ports": [
                { "port": 53, "protocol": "UDP" },
                { "port": "dns" },
                { "protocol": "ICMP" },
                { "port": 1000, "endPort": 900 },
            ]}],
        })))
        .expect("the test input converts");
        assert_eq!(converted.pod_selector, m::LabelSelector::default());
        let ports = &converted.egress[0].ports;
        assert_eq!(ports[0].protocol, Some(Ok(m::Protocol::Udp)));
        assert_eq!(ports[1].protocol, None);
        assert_eq!(ports[1].port, Some(m::PortValue::Name("dns".into())));
        assert_eq!(ports[2].protocol, Some(Err("ICMP".into())));
        assert_eq!(ports[2].port, None);
        // An inverted range is the engine's to reject, not conversion's.
        assert_eq!((ports[3].port.clone(), ports[3].end_port), (Some(m::PortValue::Number(1000)), Some(900)));
        assert!(converted.egress[0].peers.is_empty());
        assert!(converted.ingress.is_empty());
    }

    #[test]
    fn network_policy_ip_block_and_selector_operators() {
        let converted = network_policy(&np(json!({
            "podSelector": { "matchExpressions": [
                { "key": "a", "operator": "In", "values": ["x"] },
                { "key": "b", "operator": "Exists" },
                { "key": "c", "operator": "Near", "values": [] },
            ]},
            "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.0.0.0/8" } }] }],
        })))
        .expect("the test input converts");
        let ops: Vec<_> = converted.pod_selector.match_expressions.iter().map(|r| r.operator.clone()).collect();
        assert_eq!(
            ops,
            vec![m::SelectorOperator::In, m::SelectorOperator::Exists, m::SelectorOperator::Unknown("Near".into())]
        );
        let block = converted.ingress[0].peers[0].ip_block.clone().expect("the test input converts");
        assert_eq!(block, m::IpBlock { cidr: "10.0.0.0/8".into(), except: vec![] });
    }

    #[test]
    fn network_policy_without_namespace_is_a_typed_error() {
        let mut policy = np(json!({ "podSelector": {} }));
        policy.metadata.namespace = None;
        let error = network_policy(&policy).unwrap_err();
        assert_eq!(
            error,
            ConvertError::MissingField { kind: "NetworkPolicy", object: "np".into(), field: "metadata.namespace" }
        );
        assert!(error.to_string().contains("metadata.namespace"));
    }

    fn cnp_from(spec: serde_json::Value) -> ClusterNetworkPolicy {
        serde_json::from_value(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": { "name": "c" }, "spec": spec,
        }))
        .expect("the test input converts")
    }

    #[test]
    fn cnp_unknown_one_of_entries_fail_closed() {
        let converted = cluster_network_policy(&cnp_from(json!({
            "tier": "Admin", "priority": 1,
            "subject": { "pods": { "podSelector": {} } },
            "egress": [{
                "action": "Deny",
                "to": [{ "services": ["x"] }, { "networks": ["10.0.0.0/8"], "nodes": {} }],
                "protocols": [{ "icmp": { "type": 3 } }, { "tcp": {} }, { "udp": { "destinationPort": { "number": 53 } } }],
            }],
        })))
        .expect("the test input converts");
        assert_eq!(
            converted.subject,
            m::CnpSubject::Pods {
                namespace_selector: m::LabelSelector::default(),
                pod_selector: m::LabelSelector::default()
            }
        );
        let rule = &converted.egress[0];
        assert_eq!(rule.peers, vec![m::CnpPeer::Unknown, m::CnpPeer::Unknown]);
        assert_eq!(
            rule.protocols,
            Some(vec![
                m::CnpProtocol::Unknown,
                m::CnpProtocol::Unknown,
                m::CnpProtocol::Port { protocol: m::Protocol::Udp, port: m::CnpPort::Number(53) },
            ])
        );
    }

    #[test]
    fn cnp_absent_protocols_stay_none_and_empty_subject_is_invalid() {
        let converted = cluster_network_policy(&cnp_from(json!({
            "tier": "Baseline", "priority": 0, "subject": {},
            "ingress": [{ "action": "Pass", "from": [{ "namespaces": {} }] }],
        })))
        .expect("the test input converts");
        assert!(matches!(converted.subject, m::CnpSubject::Invalid(_)));
        assert_eq!(converted.ingress[0].protocols, None);
        assert_eq!(converted.ingress[0].peers, vec![m::CnpPeer::Namespaces(m::LabelSelector::default())]);
    }

    #[test]
    fn cnp_unknown_action_and_tier_name_the_field() {
        let error = cluster_network_policy(&cnp_from(json!({
            "tier": "Admin", "priority": 0, "subject": { "namespaces": {} },
            "egress": [{ "action": "Accept", "to": [{ "namespaces": {} }] }, { "action": "Log", "to": [{ "namespaces": {} }] }],
        })))
        .unwrap_err();
        assert!(error.to_string().contains("spec.egress[1].action"), "{error}");
        let error = cluster_network_policy(&cnp_from(json!({
            "tier": "Developer", "priority": 0, "subject": { "namespaces": {} },
        })))
        .unwrap_err();
        assert!(matches!(error, ConvertError::UnsupportedValue { ref field, .. } if field == "spec.tier"));
    }

    #[test]
    fn pod_conversion_reads_ips_ports_and_host_network() {
        let pod_json = json!({
            "metadata": { "name": "p", "namespace": "ns", "labels": { "app": "web" } },
            "spec": {
                "nodeName": "n1", "hostNetwork": true,
                "containers": [{ "name": "c", "ports": [
                    { "name": "web", "containerPort": 80 },
                    { "name": "dns", "containerPort": 53, "protocol": "UDP" },
                    { "containerPort": 8080 },
                    { "name": "odd", "containerPort": 70000 },
                ]}],
            },
            "status": { "podIP": "10.0.0.9", "podIPs": [{ "ip": "10.0.0.1" }, { "ip": "fd00::1" }, { "ip": "bogus" }] },
        });
        let converted =
            pod(&serde_json::from_value(pod_json).expect("the test input converts")).expect("the test input converts");
        assert_eq!(
            converted.ips,
            vec![
                "10.0.0.1".parse::<IpAddr>().expect("the test input converts"),
                "fd00::1".parse().expect("the test input converts")
            ]
        );
        assert_eq!(converted.node.as_deref(), Some("n1"));
        assert!(converted.host_network);
        assert_eq!(
            converted.named_ports,
            vec![
                m::NamedPort { name: "web".into(), protocol: m::Protocol::Tcp, port: 80 },
                m::NamedPort { name: "dns".into(), protocol: m::Protocol::Udp, port: 53 },
            ]
        );

        let fallback = json!({ "metadata": { "name": "p", "namespace": "ns" }, "status": { "podIP": "10.0.0.9" } });
        let converted =
            pod(&serde_json::from_value(fallback).expect("the test input converts")).expect("the test input converts");
        assert_eq!(converted.ips, vec!["10.0.0.9".parse::<IpAddr>().expect("the test input converts")]);
        assert_eq!((converted.node, converted.host_network), (None, false));
    }

    #[test]
    fn finished_pods_are_terminated_and_running_ones_are_not() {
        let converted = |extra: serde_json::Value| {
            let mut pod_json = json!({
                "metadata": { "name": "p", "namespace": "ns" },
                "spec": { "nodeName": "n1", "containers": [{ "name": "c" }] },
                "status": { "podIP": "10.0.0.9" },
            });
            merge(&mut pod_json, extra);
            pod(&serde_json::from_value(pod_json).expect("the test input is a Pod")).expect("the test input converts")
        };
        let running = json!({ "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } } });
        let exited = json!({ "state": { "terminated": { "exitCode": 0 } } });
        let deleting = json!("2026-01-01T00:00:00Z");
        let cases = [
            (json!({ "status": { "phase": "Running" } }), false),
            (json!({ "status": { "phase": "Pending" } }), false),
            (json!({ "status": { "phase": "Succeeded" } }), true),
            (json!({ "status": { "phase": "Failed" } }), true),
            (
                json!({ "metadata": { "deletionTimestamp": deleting }, "status": { "phase": "Running",
                "containerStatuses": [running.clone(), exited.clone()] } }),
                false,
            ),
            (
                json!({ "metadata": { "deletionTimestamp": deleting }, "status": { "phase": "Running",
                "containerStatuses": [exited.clone(), exited.clone()] } }),
                true,
            ),
            (json!({ "metadata": { "deletionTimestamp": deleting }, "status": { "phase": "Running" } }), true),
            (json!({ "status": { "phase": "Running", "containerStatuses": [exited] } }), false),
        ];
        for (extra, terminated) in cases {
            let pod = converted(extra.clone());
            assert_eq!(pod.terminated, terminated, "{extra}");
            assert_eq!(pod.is_policy_endpoint(), !terminated, "{extra}");
        }
    }

    fn merge(target: &mut serde_json::Value, extra: serde_json::Value) {
        match (target, extra) {
            (serde_json::Value::Object(target), serde_json::Value::Object(extra)) => {
                for (key, value) in extra {
                    merge(target.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (target, extra) => *target = extra,
        }
    }

    #[test]
    fn node_conversion_keeps_internal_and_external_addresses_only() {
        let node_json = json!({
            "metadata": { "name": "n1", "labels": { "kubernetes.io/os": "linux" } },
            "status": { "addresses": [
                { "type": "Hostname", "address": "n1" },
                { "type": "InternalIP", "address": "192.168.0.2" },
                { "type": "ExternalIP", "address": "not-an-ip" },
                { "type": "ExternalIP", "address": "2001:db8::2" },
                { "type": "InternalIP", "address": "192.168.0.2" },
            ]},
        });
        let converted = node(&serde_json::from_value(node_json).expect("the test input converts"))
            .expect("the test input converts");
        assert_eq!(
            converted.ips,
            vec![
                "192.168.0.2".parse::<IpAddr>().expect("the test input converts"),
                "2001:db8::2".parse().expect("the test input converts")
            ]
        );
        assert_eq!(converted.labels["kubernetes.io/os"], "linux");
        assert!(node(&Node::default()).is_err());
        assert!(namespace(&Namespace::default()).is_err());
    }
}
