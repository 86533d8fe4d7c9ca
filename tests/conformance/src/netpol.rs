//! kubernetes/kubernetes `test/e2e/network/netpol/network_policy.go` ("Netpol",
//! `[Feature:NetworkPolicy]`), every `f.It`, in upstream order.
//!
//! Ported from the version that probes the full model (namespaces x, y, z × pods a, b, c: every
//! test asserts all 81 cells but loopback). Newer upstream narrows each test to the pods it needs;
//! on the full model those narrowed tests would leave cells unasserted, so this port keeps the
//! full-model expectations (for example `z/a -> x/a` in "Multiple PodSelectors and
//! NamespaceSelectors"). Each expectation is built with the same calls as the Go, in the same order.

use crate::builder::CaseBuilder;
use crate::case::{ObjectRef, Suite};
use crate::k8s::{
    egress_rule, everything, ingress_rule, ip_block, match_expression, match_labels, namespaces, namespaces_and_pods,
    pods, policy, port_named, port_number, port_protocol, with_egress, with_ingress,
};
use crate::model::{
    ContainerPort, Model, ModelNamespace, ModelNode, ModelPod, NAMESPACE_NAME_LABEL, PodId, Probe, Protocol, labels,
    namespace_labels,
};
use crate::reachability::Peer;

const SOURCE: &str = "kubernetes/kubernetes test/e2e/network/netpol/network_policy.go";
const TCP_CONTEXT: &str = "NetworkPolicy between server and client";
const UDP_CONTEXT: &str = "NetworkPolicy between server and client using UDP";
const SCTP_CONTEXT: &str = "NetworkPolicy between server and client using SCTP";

const X: &str = "x";
const Y: &str = "y";
const Z: &str = "z";

/// Upstream's `namespaceLabelKey` (and `v1.LabelMetadataName`).
const NS_KEY: &str = NAMESPACE_NAME_LABEL;

/// The model every Netpol test uses: x, y, z (labelled `ns=<name>`) × a, b, c (labelled
/// `pod=<name>`), each serving 80 and 81 over TCP, UDP and SCTP as `serve-<port>-<proto>`, on two nodes.
pub fn model() -> Model {
    let mut ports = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for port in [80, 81] {
            ports.push(ContainerPort { name: Some(format!("serve-{port}-{}", protocol.as_lower())), protocol, port });
        }
    }
    let namespaces = [X, Y, Z];
    Model {
        nodes: ["n1", "n2"]
            .iter()
            .map(|name| ModelNode {
                name: (*name).to_owned(),
                labels: labels(&[("kubernetes.io/hostname", name), ("kubernetes.io/os", "linux")]),
            })
            .collect(),
        namespaces: namespaces
            .iter()
            .map(|ns| ModelNamespace { name: (*ns).to_owned(), labels: namespace_labels(ns, &[("ns", ns)]) })
            .collect(),
        pods: namespaces
            .iter()
            .flat_map(|ns| ["a", "b", "c"].map(|pod| (ns, pod)))
            .map(|(ns, pod)| ModelPod {
                namespace: (*ns).to_owned(),
                name: pod.to_owned(),
                labels: labels(&[("pod", pod)]),
                ports: ports.clone(),
                host_network: false,
            })
            .collect(),
    }
}

pub fn suite() -> Suite {
    let model = model();
    let pod_ids = model.pod_ids();
    let upstream = CASES.iter().map(|(context, name, write)| (format!("{context} {name}"), SOURCE, write));
    let own = PALISADE_CASES.iter().map(|(name, write)| ((*name).to_owned(), PALISADE_SOURCE, write));
    let cases = upstream.chain(own).map(|(name, source, write)| {
        let mut case = CaseBuilder::new(&name, source, pod_ids.clone(), true);
        write(&mut case);
        case.build()
    });
    Suite { name: "Netpol".to_owned(), model, cases: cases.collect() }
}

const PALISADE_SOURCE: &str = "palisade (not upstream): edges a security review found";

/// Cases upstream does not have, on the same model, for holes found in review.
const PALISADE_CASES: &[(&str, Writer)] = &[(
    "a finished pod's IP reused by a new pod carries the new pod's identity, not the old one's",
    finished_pod_ip_reused,
)];

/// z/c admits only pods `pod=b` of namespace y, and y/b admits only y/a. Then y/b finishes and a
/// new pod x/reused (labels `pod=reused`, another namespace) gets its IP: that address must lose
/// y/b's way into z/c and must no longer be isolated by y/b's policy.
fn finished_pod_ip_reused(c: &mut CaseBuilder) {
    let from_y_b =
        ingress_rule(vec![namespaces_and_pods(match_labels(&[("ns", Y)]), match_labels(&pod_label("b")))], vec![]);
    c.apply_network_policy(
        Z,
        with_ingress(policy("database-admits-y-b", match_labels(&pod_label("c"))), vec![from_y_b]),
    );
    let from_y_a = ingress_rule(vec![pods(match_labels(&pod_label("a")))], vec![]);
    c.apply_network_policy(Y, with_ingress(policy("y-b-admits-y-a", match_labels(&pod_label("b"))), vec![from_y_a]));
    let mut before = c.reachability(true);
    before.expect_all_ingress(&pod(Z, "c"), false);
    before.expect(&pod(Y, "b"), &pod(Z, "c"), true);
    before.expect_all_ingress(&pod(Y, "b"), false);
    before.expect(&pod(Y, "a"), &pod(Y, "b"), true);
    c.expect("only y/b reaches z/c, and only y/a reaches y/b", Probe::tcp(80), before);

    c.reuse_pod_ip(&pod(Y, "b"), &pod(X, "reused"), &[("pod", "reused")]);
    let mut after = c.reachability(true);
    after.expect_all_ingress(&pod(Z, "c"), false);
    c.expect("y/b's address, now x/reused's, neither reaches z/c nor is isolated", Probe::tcp(80), after);
}

type Writer = fn(&mut CaseBuilder);

/// `(ginkgo.Context, f.It, steps)`, in upstream order.
const CASES: &[(&str, &str, Writer)] = &[
    (TCP_CONTEXT, "should support a 'default-deny-ingress' policy", default_deny_ingress_tcp),
    (TCP_CONTEXT, "should support a 'default-deny-all' policy", default_deny_all),
    (
        TCP_CONTEXT,
        "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
        allow_from_pods_within_namespace,
    ),
    (TCP_CONTEXT, "should enforce policy to allow ingress traffic for a target", allow_ingress_for_target),
    (
        TCP_CONTEXT,
        "should enforce policy to allow ingress traffic from pods in all namespaces",
        allow_ingress_from_all_namespaces,
    ),
    (
        TCP_CONTEXT,
        "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
        allow_only_from_other_namespace,
    ),
    (TCP_CONTEXT, "should enforce policy based on PodSelector with MatchExpressions", pod_selector_match_expressions),
    (
        TCP_CONTEXT,
        "should enforce policy based on NamespaceSelector with MatchExpressions",
        namespace_selector_match_expressions,
    ),
    (
        TCP_CONTEXT,
        "should enforce policy based on PodSelector or NamespaceSelector",
        pod_selector_or_namespace_selector,
    ),
    (
        TCP_CONTEXT,
        "should enforce policy based on PodSelector and NamespaceSelector",
        pod_selector_and_namespace_selector,
    ),
    (
        TCP_CONTEXT,
        "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
        multiple_pod_and_namespace_selectors,
    ),
    (TCP_CONTEXT, "should enforce policy based on any PodSelectors", any_pod_selectors),
    (
        TCP_CONTEXT,
        "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        only_from_pod_in_other_namespace_tcp,
    ),
    (TCP_CONTEXT, "should enforce policy based on Ports", ports_tcp),
    (TCP_CONTEXT, "should enforce multiple, stacked policies with overlapping podSelectors", stacked_policies),
    (TCP_CONTEXT, "should support allow-all policy", allow_all),
    (TCP_CONTEXT, "should allow ingress access on one named port", ingress_on_one_named_port),
    (TCP_CONTEXT, "should allow ingress access from namespace on one named port", ingress_from_namespace_on_named_port),
    (TCP_CONTEXT, "should allow egress access on one named port", egress_on_one_named_port),
    (TCP_CONTEXT, "should enforce updated policy", updated_policy),
    (TCP_CONTEXT, "should allow ingress access from updated namespace", ingress_from_updated_namespace),
    (TCP_CONTEXT, "should allow ingress access from updated pod", ingress_from_updated_pod),
    (TCP_CONTEXT, "should deny ingress from pods on other namespaces", deny_ingress_from_other_namespaces),
    (TCP_CONTEXT, "should deny ingress access to updated pod", deny_ingress_to_updated_pod),
    (TCP_CONTEXT, "should deny egress from pods based on PodSelector", deny_egress_by_pod_selector),
    (TCP_CONTEXT, "should deny egress from all pods in a namespace", deny_egress_from_namespace),
    (TCP_CONTEXT, "should work with Ingress, Egress specified together", ingress_and_egress_together),
    (
        TCP_CONTEXT,
        "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
        egress_denied_client_side,
    ),
    (
        TCP_CONTEXT,
        "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
        egress_to_pod_in_other_namespace,
    ),
    (
        TCP_CONTEXT,
        "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
        ingress_any_port_one_protocol,
    ),
    (
        TCP_CONTEXT,
        "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
        ingress_allow_all_precedence,
    ),
    (
        TCP_CONTEXT,
        "should enforce multiple egress policies with egress allow-all policy taking precedence",
        egress_allow_all_precedence,
    ),
    (TCP_CONTEXT, "should stop enforcing policies after they are deleted", stop_enforcing_after_delete),
    (TCP_CONTEXT, "should allow egress access to server in CIDR block", egress_to_cidr),
    (TCP_CONTEXT, "should enforce except clause while egress access to server in CIDR block", egress_cidr_except),
    (
        TCP_CONTEXT,
        "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        egress_cidr_and_except_overlap,
    ),
    (
        TCP_CONTEXT,
        "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
        ingress_egress_independent,
    ),
    (
        TCP_CONTEXT,
        "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
        sctp_is_not_tcp,
    ),
    (
        TCP_CONTEXT,
        "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
        sctp_policy_isolates,
    ),
    (TCP_CONTEXT, "should not allow access by TCP when a policy specifies only UDP", udp_policy_blocks_tcp),
    (
        TCP_CONTEXT,
        "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
        default_ns_label_match_labels,
    ),
    (
        TCP_CONTEXT,
        "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
        default_ns_label_match_expressions,
    ),
    (UDP_CONTEXT, "should support a 'default-deny-ingress' policy", default_deny_ingress_udp),
    (UDP_CONTEXT, "should enforce policy based on Ports", ports_udp),
    (
        UDP_CONTEXT,
        "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        only_from_pod_in_other_namespace_udp,
    ),
    (SCTP_CONTEXT, "should support a 'default-deny-ingress' policy", default_deny_ingress_sctp),
    (SCTP_CONTEXT, "should enforce policy based on Ports", ports_sctp),
    (
        SCTP_CONTEXT,
        "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        only_from_pod_in_other_namespace_sctp,
    ),
];

/// Upstream's `NewPodString(ns, pod)`.
fn pod(namespace: &str, name: &str) -> PodId {
    PodId::new(namespace, name)
}

fn pod_label(name: &str) -> [(&'static str, &str); 1] {
    [("pod", name)]
}

// --- default deny ------------------------------------------------------------------------------

fn default_deny_ingress(c: &mut CaseBuilder, name: &str, probe: Probe) {
    c.apply_network_policy(X, with_ingress(policy(name, everything()), vec![]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    c.expect("namespace x denies all ingress", probe, r);
}

fn default_deny_ingress_tcp(c: &mut CaseBuilder) {
    default_deny_ingress(c, "deny-ingress", Probe::tcp(80));
}

fn default_deny_ingress_udp(c: &mut CaseBuilder) {
    default_deny_ingress(c, "deny-all", Probe::udp(80));
}

fn default_deny_ingress_sctp(c: &mut CaseBuilder) {
    default_deny_ingress(c, "deny-all", Probe::sctp(80));
}

fn default_deny_all(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_egress(with_ingress(policy("deny-all", everything()), vec![]), vec![]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    r.expect_peer(&Peer::namespace(X), &Peer::any(), false);
    c.expect("namespace x denies all ingress and egress", Probe::tcp(80), r);
}

// --- pod and namespace selectors ---------------------------------------------------------------

fn allow_from_pods_within_namespace(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![pods(match_labels(&pod_label("b")))], vec![]);
    c.apply_network_policy(X, with_ingress(policy("x-a-allows-x-b", match_labels(&pod_label("a"))), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    r.expect(&pod(X, "b"), &pod(X, "a"), true);
    c.expect("only x/b reaches x/a", Probe::tcp(80), r);
}

fn allow_ingress_for_target(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_ingress(policy("deny-all", everything()), vec![]));
    let rule = ingress_rule(vec![namespaces_and_pods(everything(), everything())], vec![]);
    c.apply_network_policy(X, with_ingress(policy("allow-all-to-a", match_labels(&pod_label("a"))), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), true);
    r.expect_all_ingress(&pod(X, "b"), false);
    r.expect_all_ingress(&pod(X, "c"), false);
    c.expect("x/a open to all, rest of x closed", Probe::tcp(80), r);
}

fn allow_ingress_from_all_namespaces(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![namespaces(match_labels(&[]))], vec![]);
    c.apply_network_policy(X, with_ingress(policy("allow-from-another-ns", match_labels(&pod_label("a"))), vec![rule]));
    let r = c.reachability(true);
    c.expect("every pod reaches x/a", Probe::tcp(80), r);
}

fn allow_only_from_other_namespace(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![namespaces(match_labels(&[(NS_KEY, Y)]))], vec![]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-ns-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("only namespace y reaches x/a", Probe::tcp(80), r);
}

fn pod_selector_match_expressions(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![pods(match_expression("pod", "In", &["b"]))], vec![]);
    c.apply_network_policy(X, with_ingress(policy("x-a-allows-x-b", match_labels(&pod_label("a"))), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    r.expect(&pod(X, "b"), &pod(X, "a"), true);
    c.expect("only x/b reaches x/a", Probe::tcp(80), r);
}

fn namespace_selector_match_expressions(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![namespaces(match_expression(NS_KEY, "In", &[Y]))], vec![]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ns-y-match-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("only namespace y reaches x/a", Probe::tcp(80), r);
}

fn pod_selector_or_namespace_selector(c: &mut CaseBuilder) {
    let rule = ingress_rule(
        vec![namespaces(match_expression(NS_KEY, "NotIn", &[X])), pods(match_labels(&pod_label("b")))],
        vec![],
    );
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ns-y-match-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect(&pod(X, "a"), &pod(X, "a"), false);
    r.expect(&pod(X, "c"), &pod(X, "a"), false);
    c.expect("other namespaces or x/b reach x/a", Probe::tcp(80), r);
}

fn pod_selector_and_namespace_selector(c: &mut CaseBuilder) {
    let rule = ingress_rule(
        vec![namespaces_and_pods(match_expression(NS_KEY, "NotIn", &[X]), match_labels(&pod_label("b")))],
        vec![],
    );
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ns-y-podselector-and-nsselector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    r.expect(&pod(Y, "b"), &pod(X, "a"), true);
    r.expect(&pod(Z, "b"), &pod(X, "a"), true);
    c.expect("only y/b and z/b reach x/a", Probe::tcp(80), r);
}

fn multiple_pod_and_namespace_selectors(c: &mut CaseBuilder) {
    let rule = ingress_rule(
        vec![namespaces_and_pods(match_expression(NS_KEY, "NotIn", &[X]), match_expression("pod", "In", &["b", "c"]))],
        vec![],
    );
    c.apply_network_policy(X, with_ingress(policy("allow-ns-y-z-pod-b-c", match_labels(&pod_label("a"))), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect(&pod(Y, "a"), &pod(X, "a"), false);
    r.expect(&pod(Z, "a"), &pod(X, "a"), false);
    c.expect("only pods b and c of y and z reach x/a", Probe::tcp(80), r);
}

fn any_pod_selectors(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![pods(match_labels(&pod_label("b"))), pods(match_labels(&pod_label("c")))], vec![]);
    c.apply_network_policy(X, with_ingress(policy("allow-ns-x-pod-b-c", match_labels(&pod_label("a"))), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    r.expect(&pod(X, "b"), &pod(X, "a"), true);
    r.expect(&pod(X, "c"), &pod(X, "a"), true);
    c.expect("only x/b and x/c reach x/a", Probe::tcp(80), r);
}

fn only_from_pod_in_other_namespace(c: &mut CaseBuilder, probe: Probe) {
    let rule =
        ingress_rule(vec![namespaces_and_pods(match_labels(&[(NS_KEY, Y)]), match_labels(&pod_label("a")))], vec![]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ns-y-pod-a-via-namespace-pod-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    r.expect(&pod(Y, "a"), &pod(X, "a"), true);
    c.expect("only y/a reaches x/a", probe, r);
}

fn only_from_pod_in_other_namespace_tcp(c: &mut CaseBuilder) {
    only_from_pod_in_other_namespace(c, Probe::tcp(80));
}

fn only_from_pod_in_other_namespace_udp(c: &mut CaseBuilder) {
    only_from_pod_in_other_namespace(c, Probe::udp(80));
}

fn only_from_pod_in_other_namespace_sctp(c: &mut CaseBuilder) {
    only_from_pod_in_other_namespace(c, Probe::sctp(80));
}

// --- ports -------------------------------------------------------------------------------------

fn ports_tcp(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![namespaces(match_labels(&[(NS_KEY, Y)]))], vec![port_number(81, Some(Protocol::Tcp))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-ns-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect_peer(&Peer::namespace(Y), &Peer::pod(X, "a"), true);
    r.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("only namespace y reaches x/a on 81", Probe::tcp(81), r);
}

fn ports_other_protocol(c: &mut CaseBuilder, protocol: Protocol) {
    let rule = ingress_rule(vec![namespaces(match_labels(&[(NS_KEY, Y)]))], vec![port_number(81, Some(protocol))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ingress-on-port-81-ns-x", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("only namespace y reaches x/a on 81", Probe { protocol, port: 81 }, r);
}

fn ports_udp(c: &mut CaseBuilder) {
    ports_other_protocol(c, Protocol::Udp);
}

fn ports_sctp(c: &mut CaseBuilder) {
    ports_other_protocol(c, Protocol::Sctp);
}

fn stacked_policies(c: &mut CaseBuilder) {
    let ns_y = || vec![namespaces(match_labels(&[(NS_KEY, Y)]))];
    let rule = ingress_rule(ns_y(), vec![port_number(81, Some(Protocol::Tcp))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-ns-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut allow = c.reachability(true);
    allow.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    allow.expect_peer(&Peer::namespace(Y), &Peer::pod(X, "a"), true);
    allow.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("Verifying traffic on port 81.", Probe::tcp(81), allow.clone());
    let mut deny = c.reachability(true);
    deny.expect_all_ingress(&pod(X, "a"), false);
    c.expect("Verifying traffic on port 80.", Probe::tcp(80), deny);
    let rule = ingress_rule(ns_y(), vec![port_number(80, Some(Protocol::Tcp))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-ns-selector-80", match_labels(&pod_label("a"))), vec![rule]),
    );
    c.expect("Verifying that we can add a policy to unblock port 80", Probe::tcp(80), allow);
}

fn allow_all(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_ingress(policy("allow-all", match_labels(&[])), vec![ingress_rule(vec![], vec![])]));
    let r = c.reachability(true);
    c.expect(
        "Testing pods can connect to both ports when an 'allow-all' policy is present. (80)",
        Probe::tcp(80),
        r.clone(),
    );
    c.expect("Testing pods can connect to both ports when an 'allow-all' policy is present. (81)", Probe::tcp(81), r);
}

fn ingress_on_one_named_port(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![], vec![port_named("serve-81-tcp", None)]);
    c.apply_network_policy(X, with_ingress(policy("allow-all", match_labels(&[])), vec![rule]));
    c.expect(
        "Blocking all ports other then 81 in the entire namespace (81 open)",
        Probe::tcp(81),
        c.reachability(true),
    );
    let mut port80 = c.reachability(true);
    port80.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    c.expect("Blocking all ports other then 81 in the entire namespace (80 closed)", Probe::tcp(80), port80);
}

fn ingress_from_namespace_on_named_port(c: &mut CaseBuilder) {
    let rule = ingress_rule(
        vec![namespaces(match_labels(&[(NS_KEY, Y)]))],
        vec![port_named("serve-80-tcp", Some(Protocol::Tcp))],
    );
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-ns-selector-80", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("Verify that port 80 is allowed for namespace y", Probe::tcp(80), r);
    let mut fail = c.reachability(true);
    fail.expect_all_ingress(&pod(X, "a"), false);
    c.expect("Verify that port 81 is blocked for all namespaces including y", Probe::tcp(81), fail);
}

fn egress_on_one_named_port(c: &mut CaseBuilder) {
    let rule = egress_rule(vec![], vec![port_named("serve-80-tcp", None)]);
    c.apply_network_policy(X, with_egress(policy("allow-egress", match_labels(&[])), vec![rule]));
    c.expect("validating egress from port 81 to port 80 (80 open)", Probe::tcp(80), c.reachability(true));
    let mut port81 = c.reachability(true);
    port81.expect_peer(&Peer::namespace(X), &Peer::any(), false);
    c.expect("no traffic over 81 should work, since our egress policy is on 80", Probe::tcp(81), port81);
}

// --- updates -----------------------------------------------------------------------------------

fn updated_policy(c: &mut CaseBuilder) {
    let name = "allow-all-mutate-to-deny-all";
    c.apply_network_policy(X, with_ingress(policy(name, match_labels(&[])), vec![ingress_rule(vec![], vec![])]));
    c.expect("part 1) allow all", Probe::tcp(81), c.reachability(true));
    // `policy.Spec.Ingress = []` keeps `policyTypes: [Ingress]`: the pods stay isolated with no rule.
    c.apply_network_policy(X, with_ingress(policy(name, match_labels(&[])), vec![]));
    let mut deny = c.reachability(true);
    deny.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    c.expect("part 2) update the policy to deny all", Probe::tcp(81), deny);
}

fn ingress_from_updated_namespace(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![namespaces(match_labels(&[("ns2", "updated")]))], vec![]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-ns-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    c.expect("nothing reaches x/a before the label", Probe::tcp(80), r);
    c.label_namespace(Y, &[("ns2", Some("updated"))]);
    let mut with_label = c.reachability(true);
    with_label.expect_all_ingress(&pod(X, "a"), false);
    with_label.expect_peer(&Peer::namespace(Y), &Peer::any(), true);
    c.expect("anything from namespace 'y' should be able to get to x/a", Probe::tcp(80), with_label);
}

fn ingress_from_updated_pod(c: &mut CaseBuilder) {
    let match_set = [("pod", "b"), ("pod2", "updated")];
    let rule = ingress_rule(vec![pods(match_labels(&match_set))], vec![]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-client-a-via-pod-selector", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    c.expect("nothing reaches x/a before the label", Probe::tcp(80), r);
    c.label_pod(&pod(X, "b"), &[("pod", Some("b")), ("pod2", Some("updated"))]);
    let mut with_label = c.reachability(true);
    with_label.expect_all_ingress(&pod(X, "a"), false);
    with_label.expect(&pod(X, "b"), &pod(X, "a"), true);
    c.expect("x/b is able to reach x/a when label is updated", Probe::tcp(80), with_label);
}

fn deny_ingress_from_other_namespaces(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![pods(match_labels(&[]))], vec![]);
    c.apply_network_policy(X, with_ingress(policy("deny-empty-policy", everything()), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(Y), &Peer::namespace(X), false);
    r.expect_peer(&Peer::namespace(Z), &Peer::namespace(X), false);
    c.expect("only namespace x reaches namespace x", Probe::tcp(80), r);
}

fn deny_ingress_to_updated_pod(c: &mut CaseBuilder) {
    c.apply_network_policy(
        X,
        with_ingress(policy("deny-ingress-via-label-selector", match_labels(&[("target", "isolated")])), vec![]),
    );
    c.expect("Verify that everything can reach x/a", Probe::tcp(80), c.reachability(true));
    c.label_pod(&pod(X, "a"), &[("target", Some("isolated"))]);
    let mut isolated = c.reachability(true);
    isolated.expect_all_ingress(&pod(X, "a"), false);
    c.expect("x/a is isolated once labelled", Probe::tcp(80), isolated);
}

// --- egress ------------------------------------------------------------------------------------

fn deny_egress_by_pod_selector(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_egress(policy("deny-egress-pod-a", match_labels(&pod_label("a"))), vec![]));
    let mut r = c.reachability(true);
    r.expect_all_egress(&pod(X, "a"), false);
    c.expect("x/a reaches nothing", Probe::tcp(80), r);
}

fn deny_egress_from_namespace(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_egress(policy("deny-egress-ns-x", everything()), vec![]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::any(), false);
    c.expect("namespace x reaches nothing", Probe::tcp(80), r);
}

fn ingress_and_egress_together(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![pods(match_labels(&pod_label("b")))], vec![]);
    let mut np = with_ingress(policy("allow-client-a-via-pod-selector", match_labels(&pod_label("a"))), vec![rule]);
    if let Some(spec) = np.spec.as_mut() {
        // Upstream sets these fields directly rather than through SetSpecEgressRules.
        spec.egress = Some(vec![egress_rule(vec![], vec![port_number(80, None)])]);
        spec.policy_types = Some(vec!["Egress".to_owned(), "Ingress".to_owned()]);
    }
    c.apply_network_policy(X, np);
    let mut port80 = c.reachability(true);
    port80.expect_all_ingress(&pod(X, "a"), false);
    port80.expect(&pod(X, "b"), &pod(X, "a"), true);
    c.expect("port 80: only x/b reaches x/a", Probe::tcp(80), port80);
    let mut port81 = c.reachability(true);
    port81.expect_all_ingress(&pod(X, "a"), false);
    port81.expect_all_egress(&pod(X, "a"), false);
    port81.expect(&pod(X, "b"), &pod(X, "a"), true);
    c.expect("validating that port 81 doesn't work", Probe::tcp(81), port81);
}

fn egress_denied_client_side(c: &mut CaseBuilder) {
    let egress =
        egress_rule(vec![namespaces_and_pods(match_labels(&[(NS_KEY, Y)]), match_labels(&pod_label("a")))], vec![]);
    c.apply_network_policy(X, with_egress(policy("allow-to-ns-y-pod-a", match_labels(&pod_label("a"))), vec![egress]));
    let ingress =
        || ingress_rule(vec![namespaces_and_pods(match_labels(&[(NS_KEY, X)]), match_labels(&pod_label("a")))], vec![]);
    c.apply_network_policy(
        Y,
        with_ingress(policy("allow-from-xa-on-ya-match-selector", match_labels(&pod_label("a"))), vec![ingress()]),
    );
    c.apply_network_policy(
        Y,
        with_ingress(policy("allow-from-xa-on-yb-match-selector", match_labels(&pod_label("b"))), vec![ingress()]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::pod(X, "a"), &Peer::any(), false);
    r.expect_peer(&Peer::any(), &Peer::pod(Y, "a"), false);
    r.expect_peer(&Peer::pod(X, "a"), &Peer::pod(Y, "a"), true);
    r.expect_peer(&Peer::any(), &Peer::pod(Y, "b"), false);
    c.expect("x/a reaches only y/a; y/a and y/b admit only x/a", Probe::tcp(80), r);
}

fn egress_to_pod_in_other_namespace(c: &mut CaseBuilder) {
    let rule =
        egress_rule(vec![namespaces_and_pods(match_labels(&[(NS_KEY, Y)]), match_labels(&pod_label("a")))], vec![]);
    c.apply_network_policy(X, with_egress(policy("allow-to-ns-y-pod-a", match_labels(&pod_label("a"))), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_all_egress(&pod(X, "a"), false);
    r.expect(&pod(X, "a"), &pod(Y, "a"), true);
    c.expect("x/a reaches only y/a", Probe::tcp(80), r);
}

fn ingress_any_port_one_protocol(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![], vec![port_protocol(Protocol::Tcp)]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ingress-by-proto", match_labels(&pod_label("a"))), vec![rule]),
    );
    c.expect("TCP reaches x/a", Probe::tcp(80), c.reachability(true));
    let mut udp = c.reachability(true);
    udp.expect_peer(&Peer::any(), &Peer::pod(X, "a"), false);
    c.expect("UDP does not reach x/a", Probe::udp(80), udp);
}

fn ingress_allow_all_precedence(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![], vec![port_number(80, None)]);
    c.apply_network_policy(X, with_ingress(policy("allow-ingress-port-80", match_labels(&[])), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    c.expect("The policy targets port 80 -- so let's make sure traffic on port 81 is blocked", Probe::tcp(81), r);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-ingress", match_labels(&[])), vec![ingress_rule(vec![], vec![])]),
    );
    c.expect("Allowing all ports", Probe::tcp(81), c.reachability(true));
}

fn egress_allow_all_precedence(c: &mut CaseBuilder) {
    let rule = egress_rule(vec![], vec![port_number(80, None)]);
    c.apply_network_policy(X, with_egress(policy("allow-egress-port-80", match_labels(&[])), vec![rule]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::any(), false);
    c.expect("Making sure ingress doesn't work other than port 80", Probe::tcp(81), r);
    c.apply_network_policy(
        X,
        with_egress(policy("allow-egress", match_labels(&[])), vec![egress_rule(vec![], vec![])]),
    );
    c.expect("Allowing all ports", Probe::tcp(81), c.reachability(true));
}

fn stop_enforcing_after_delete(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_egress(with_ingress(policy("deny-all", everything()), vec![]), vec![]));
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::any(), false);
    r.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    c.expect("all traffic into and out of x is blocked", Probe::tcp(80), r);
    // Upstream's `cleanNetworkPolicies` deletes every policy of the test's namespaces: only this one.
    c.delete(ObjectRef::NetworkPolicy { namespace: X.to_owned(), name: "deny-all".to_owned() });
    c.expect(
        "Now the policy is deleted, we expect all connectivity to work again.",
        Probe::tcp(80),
        c.reachability(true),
    );
}

// --- ipBlock -----------------------------------------------------------------------------------

fn egress_to_cidr(c: &mut CaseBuilder) {
    let rule = egress_rule(vec![ip_block("{{hostCIDR y/b}}", &[])], vec![]);
    c.apply_network_policy(
        X,
        with_egress(policy("allow-client-a-via-cidr-egress-rule", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_egress(&pod(X, "a"), false);
    r.expect(&pod(X, "a"), &pod(Y, "b"), true);
    c.expect("x/a reaches only y/b's address", Probe::tcp(80), r);
}

/// Upstream writes the allowed block as x/a's address with a /4 prefix (host bits set, which
/// Kubernetes accepts and truncates) and excepts x/b's address.
fn cidr_except_policy() -> k8s_openapi::api::networking::v1::NetworkPolicy {
    let rule = egress_rule(vec![ip_block("{{podIP x/a}}/4", &["{{hostCIDR x/b}}"])], vec![]);
    with_egress(policy("allow-client-a-via-cidr-egress-rule", match_labels(&pod_label("a"))), vec![rule])
}

fn egress_cidr_except(c: &mut CaseBuilder) {
    c.apply_network_policy(X, cidr_except_policy());
    let mut r = c.reachability(true);
    r.expect(&pod(X, "a"), &pod(X, "b"), false);
    c.expect("x/a reaches everything but x/b", Probe::tcp(80), r);
}

fn egress_cidr_and_except_overlap(c: &mut CaseBuilder) {
    c.apply_network_policy(X, cidr_except_policy());
    let mut r = c.reachability(true);
    r.expect(&pod(X, "a"), &pod(X, "b"), false);
    c.expect("x/a reaches everything but x/b", Probe::tcp(80), r);
    // Same name: upstream's UpdatePolicy replaces the first policy.
    let rule = egress_rule(vec![ip_block("{{hostCIDR x/b}}", &[])], vec![]);
    c.apply_network_policy(
        X,
        with_egress(policy("allow-client-a-via-cidr-egress-rule", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut allow = c.reachability(true);
    allow.expect_all_egress(&pod(X, "a"), false);
    allow.expect(&pod(X, "a"), &pod(X, "b"), true);
    c.expect("x/a reaches only x/b once the policy names its address", Probe::tcp(80), allow);
}

fn ingress_egress_independent(c: &mut CaseBuilder) {
    let target = match_labels(&pod_label("a"));
    c.apply_network_policy(
        X,
        with_egress(policy("allow-egress-for-target", target.clone()), vec![egress_rule(vec![], vec![])]),
    );
    c.expect(
        "Creating a network policy for pod-a which allows Egress traffic to pod-b.",
        Probe::tcp(80),
        c.reachability(true),
    );
    c.apply_network_policy(X, with_ingress(policy("deny-ingress-via-label-selector", target), vec![]));
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    c.expect("Creating a network policy for pod-a that denies traffic from pod-b.", Probe::tcp(80), r);
}

// --- protocols ---------------------------------------------------------------------------------

fn sctp_is_not_tcp(c: &mut CaseBuilder) {
    c.apply_network_policy(X, with_ingress(policy("deny-ingress", everything()), vec![]));
    let rule = ingress_rule(vec![], vec![port_number(81, Some(Protocol::Sctp))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-only-sctp-ingress-on-port-81", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::any(), &Peer::namespace(X), false);
    c.expect(
        "Trying to connect to TCP port 81, which should be blocked by the deny-ingress policy.",
        Probe::tcp(81),
        r,
    );
}

fn sctp_policy_isolates(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![], vec![port_number(80, Some(Protocol::Sctp))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-only-sctp-ingress-on-port-80", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    c.expect("Trying to connect to TCP port 81, which should be blocked by implicit isolation.", Probe::tcp(81), r);
}

fn udp_policy_blocks_tcp(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![], vec![port_number(81, Some(Protocol::Udp))]);
    c.apply_network_policy(
        X,
        with_ingress(policy("allow-only-udp-ingress-on-port-81", match_labels(&pod_label("a"))), vec![rule]),
    );
    let mut r = c.reachability(true);
    r.expect_all_ingress(&pod(X, "a"), false);
    c.expect("Probing with TCP, so all traffic should be dropped.", Probe::tcp(81), r);
}

// --- the automatic namespace name label --------------------------------------------------------

fn default_ns_label_match_labels(c: &mut CaseBuilder) {
    let rule = ingress_rule(vec![namespaces(match_labels(&[(NAMESPACE_NAME_LABEL, Y)]))], vec![]);
    c.apply_network_policy(
        X,
        with_ingress(
            policy("allow-client-a-via-ns-selector-for-immutable-ns-label", match_labels(&pod_label("a"))),
            vec![rule],
        ),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::namespace(X), &Peer::pod(X, "a"), false);
    r.expect_peer(&Peer::namespace(Z), &Peer::pod(X, "a"), false);
    c.expect("only namespace y reaches x/a", Probe::tcp(80), r);
}

fn default_ns_label_match_expressions(c: &mut CaseBuilder) {
    let rule = egress_rule(vec![namespaces(match_expression(NAMESPACE_NAME_LABEL, "NotIn", &[Y]))], vec![]);
    c.apply_network_policy(
        X,
        with_egress(
            policy("allow-ns-y-match-selector-for-immutable-ns-label", match_labels(&pod_label("a"))),
            vec![rule],
        ),
    );
    let mut r = c.reachability(true);
    r.expect_peer(&Peer::pod(X, "a"), &Peer::namespace(Y), false);
    c.expect("x/a reaches everything but namespace y", Probe::tcp(80), r);
}
