//! Small constructors for NetworkPolicy pieces, named after what upstream's Go writes, so ported
//! cases stay close to the source (`GenNetworkPolicyWithNameAndPodMatchLabel`, `SetSpecIngressRules`).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::Protocol;

/// `metav1.LabelSelector{}`: selects everything.
pub fn everything() -> LabelSelector {
    LabelSelector::default()
}

/// `metav1.LabelSelector{MatchLabels: ...}`.
pub fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    let labels: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    LabelSelector { match_labels: Some(labels), match_expressions: None }
}

/// `metav1.LabelSelector{MatchExpressions: [{key, operator, values}]}`.
pub fn match_expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }]),
    }
}

/// A NetworkPolicy with a name and a pod selector and nothing else; namespace set on creation.
pub fn policy(name: &str, pod_selector: LabelSelector) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        spec: Some(NetworkPolicySpec { pod_selector: Some(pod_selector), ..NetworkPolicySpec::default() }),
    }
}

/// Upstream's `SetSpecIngressRules`: the first call adds `Ingress` to `policyTypes` and makes
/// `ingress` an (possibly empty) list; later calls append rules.
pub fn with_ingress(mut np: NetworkPolicy, rules: Vec<NetworkPolicyIngressRule>) -> NetworkPolicy {
    let spec = np.spec.get_or_insert_with(NetworkPolicySpec::default);
    if spec.ingress.is_none() {
        spec.ingress = Some(Vec::new());
        spec.policy_types.get_or_insert_with(Vec::new).push("Ingress".to_owned());
    }
    spec.ingress.get_or_insert_with(Vec::new).extend(rules);
    np
}

/// Upstream's `SetSpecEgressRules`, the same for egress.
pub fn with_egress(mut np: NetworkPolicy, rules: Vec<NetworkPolicyEgressRule>) -> NetworkPolicy {
    let spec = np.spec.get_or_insert_with(NetworkPolicySpec::default);
    if spec.egress.is_none() {
        spec.egress = Some(Vec::new());
        spec.policy_types.get_or_insert_with(Vec::new).push("Egress".to_owned());
    }
    spec.egress.get_or_insert_with(Vec::new).extend(rules);
    np
}

/// An ingress rule; empty `from` or `ports` are left out (that means "all").
pub fn ingress_rule(from: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule { from: (!from.is_empty()).then_some(from), ports: (!ports.is_empty()).then_some(ports) }
}

/// An egress rule; empty `to` or `ports` are left out (that means "all").
pub fn egress_rule(to: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule { to: (!to.is_empty()).then_some(to), ports: (!ports.is_empty()).then_some(ports) }
}

/// `NetworkPolicyPeer{PodSelector: ...}`.
pub fn pods(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(selector), ..NetworkPolicyPeer::default() }
}

/// `NetworkPolicyPeer{NamespaceSelector: ...}`.
pub fn namespaces(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { namespace_selector: Some(selector), ..NetworkPolicyPeer::default() }
}

/// `NetworkPolicyPeer{NamespaceSelector: ..., PodSelector: ...}` (both must match).
pub fn namespaces_and_pods(namespace_selector: LabelSelector, pod_selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { namespace_selector: Some(namespace_selector), pod_selector: Some(pod_selector), ip_block: None }
}

/// `NetworkPolicyPeer{IPBlock: {CIDR, Except}}`.
pub fn ip_block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: (!except.is_empty()).then(|| except.iter().map(|e| (*e).to_owned()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// A numeric port; `protocol: None` leaves the API default (TCP).
pub fn port_number(port: i32, protocol: Option<Protocol>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: protocol.map(|p| p.as_k8s().to_owned()),
        end_port: None,
    }
}

/// A named port (`serve-80-tcp`); `protocol: None` leaves the API default (TCP).
pub fn port_named(name: &str, protocol: Option<Protocol>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: protocol.map(|p| p.as_k8s().to_owned()),
        end_port: None,
    }
}

/// Every port of one protocol.
pub fn port_protocol(protocol: Protocol) -> NetworkPolicyPort {
    NetworkPolicyPort { port: None, protocol: Some(protocol.as_k8s().to_owned()), end_port: None }
}
