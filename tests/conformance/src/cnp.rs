//! kubernetes-sigs/network-policy-api `conformance/` (ClusterNetworkPolicy v1alpha2).
//!
//! Upstream probes chosen pairs (`PokeServer(client, server, protocol, port, expectConnection)`),
//! not grids, so each expectation asserts only the cells upstream probes. Subtests run in order
//! and mutate the live policy cumulatively; here every mutation is an [`crate::Step::Apply`] of
//! the whole mutated object, computed from the previous one exactly as the Go code does.
//!
//! Manifests live in `manifests/` in upstream's layout (`admin_tier/…`), at apiVersion
//! `policy.networking.k8s.io/v1alpha2`.

use palisade_crds::ClusterNetworkPolicy;
use palisade_crds::cnp::{ClusterNetworkPolicyEgressRule, ClusterNetworkPolicyIngressRule};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_crds::cnp::RuleAction;
use serde_json::Value;

use crate::builder::CaseBuilder;
use crate::case::{Object, ObjectRef, Suite};
use crate::model::{
    labels, namespace_labels, ContainerPort, Model, ModelNamespace, ModelNode, ModelPod, PodId, Probe, Protocol,
};

const SOURCE: &str = "kubernetes-sigs/network-policy-api conformance/tests";

/// `(house, StatefulSet)`: the namespaces are `network-policy-conformance-<house>`, labelled
/// `conformance-house: <house>`, and each StatefulSet runs pods `<sts>-0` and `<sts>-1`.
pub const HOUSES: [(&str, &str); 4] = [
    ("gryffindor", "harry-potter"),
    ("slytherin", "draco-malfoy"),
    ("hufflepuff", "cedric-diggory"),
    ("ravenclaw", "luna-lovegood"),
];

/// The host-network house: `centaur-0/1` answer on their node's address.
pub const FORBIDDEN_FORREST: (&str, &str) = ("forbidden-forrest", "centaur");

/// First of the eight host ports centaur serves (upstream's `HostNetworkPortRangeStart`).
pub const HOST_NETWORK_PORT_RANGE_START: u16 = 34345;

pub fn namespace_of(house: &str) -> String {
    format!("network-policy-conformance-{house}")
}

/// `harry-potter-0` → its pod id. A name no StatefulSet produces lands in namespace
/// `network-policy-conformance-unknown`, which `tests/format.rs` rejects.
pub fn pod(name: &str) -> PodId {
    let (stateful_set, _) = name.rsplit_once('-').unwrap_or((name, ""));
    let house = HOUSES
        .iter()
        .chain([&FORBIDDEN_FORREST])
        .find(|(_, sts)| *sts == stateful_set)
        .map(|(house, _)| *house)
        .unwrap_or("unknown");
    PodId::new(&namespace_of(house), name)
}

/// Upstream's `base/manifests.yaml`: four houses of two pods (TCP 80 `web`, TCP 8080, UDP 5353,
/// UDP 53 `dns`, SCTP 9003 and 9005), plus the host-network centaurs, on two Linux nodes.
pub fn model() -> Model {
    let house_ports = vec![
        ContainerPort { name: Some("web".into()), protocol: Protocol::Tcp, port: 80 },
        ContainerPort { name: None, protocol: Protocol::Tcp, port: 8080 },
        ContainerPort { name: None, protocol: Protocol::Udp, port: 5353 },
        ContainerPort { name: Some("dns".into()), protocol: Protocol::Udp, port: 53 },
        ContainerPort { name: None, protocol: Protocol::Sctp, port: 9003 },
        ContainerPort { name: None, protocol: Protocol::Sctp, port: 9005 },
    ];
    // Host ports [0],[1] TCP `web-<p>`; [2],[4] UDP `dns-<p>` (netexec, which also serves HTTP
    // on [3],[5]); [6],[7] SCTP.
    let hp = |i: u16| HOST_NETWORK_PORT_RANGE_START + i;
    let centaur_ports = vec![
        ContainerPort { name: Some(format!("web-{}", hp(0))), protocol: Protocol::Tcp, port: hp(0) },
        ContainerPort { name: Some(format!("web-{}", hp(1))), protocol: Protocol::Tcp, port: hp(1) },
        ContainerPort { name: Some(format!("dns-{}", hp(2))), protocol: Protocol::Udp, port: hp(2) },
        ContainerPort { name: None, protocol: Protocol::Tcp, port: hp(3) },
        ContainerPort { name: Some(format!("dns-{}", hp(4))), protocol: Protocol::Udp, port: hp(4) },
        ContainerPort { name: None, protocol: Protocol::Tcp, port: hp(5) },
        ContainerPort { name: None, protocol: Protocol::Sctp, port: hp(6) },
        ContainerPort { name: None, protocol: Protocol::Sctp, port: hp(7) },
    ];
    let mut namespaces = Vec::new();
    let mut pods = Vec::new();
    for (house, stateful_set) in HOUSES.iter().chain([&FORBIDDEN_FORREST]) {
        let namespace = namespace_of(house);
        namespaces.push(ModelNamespace {
            name: namespace.clone(),
            labels: namespace_labels(&namespace, &[("conformance-house", house)]),
        });
        let host_network = *house == FORBIDDEN_FORREST.0;
        for index in 0..2 {
            pods.push(ModelPod {
                namespace: namespace.clone(),
                name: format!("{stateful_set}-{index}"),
                labels: labels(&[("conformance-house", house)]),
                ports: if host_network { centaur_ports.clone() } else { house_ports.clone() },
                host_network,
            });
        }
    }
    Model {
        nodes: ["n1", "n2"]
            .iter()
            .map(|name| ModelNode {
                name: (*name).to_owned(),
                labels: labels(&[("kubernetes.io/hostname", name), ("kubernetes.io/os", "linux")]),
            })
            .collect(),
        namespaces,
        pods,
    }
}

pub fn suite() -> Suite {
    let model = model();
    let pod_ids = model.pod_ids();
    let mut cases: Vec<_> = ORDERED_RULE_CASES
        .iter()
        .map(|spec| {
            let mut case = CaseBuilder::new(spec.short_name, &format!("{SOURCE}/{}", spec.source), pod_ids.clone(), false);
            write_ordered_rules_case(&mut case, spec);
            case.build()
        })
        .collect();
    for (short_name, source, write) in SCRIPTED_CASES {
        let mut case = CaseBuilder::new(short_name, &format!("{SOURCE}/{source}"), pod_ids.clone(), false);
        if let Err(error) = write(&mut case) {
            manifest_failure(&mut case, &error);
        }
        cases.push(case.build());
    }
    Suite { name: "ClusterNetworkPolicy".to_owned(), model, cases }
}

/// Parses a manifest shipped in `manifests/`.
pub fn manifest(yaml: &str) -> Result<ClusterNetworkPolicy, serde_saphyr::Error> {
    serde_saphyr::from_str(yaml)
}

/// Every document of a multi-document manifest, by `kind`.
pub fn objects(yaml: &str) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    for document in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let value: Value = serde_saphyr::from_str(document).map_err(|e| e.to_string())?;
        let object = match value.get("kind").and_then(Value::as_str) {
            Some("ClusterNetworkPolicy") => {
                Object::ClusterNetworkPolicy(serde_json::from_value(value).map_err(|e| e.to_string())?)
            }
            Some("NetworkPolicy") => Object::NetworkPolicy(serde_json::from_value(value).map_err(|e| e.to_string())?),
            other => return Err(format!("unexpected kind {other:?} in manifest")),
        };
        objects.push(object);
    }
    Ok(objects)
}

/// A manifest that does not parse must fail the suite loudly: an expectation no runner can meet.
fn manifest_failure(case: &mut CaseBuilder, error: &str) {
    let mut impossible = case.probes();
    let nobody = PodId::new("manifest-does-not-parse", error);
    impossible.expect(&nobody, &nobody, true);
    case.expect(&format!("manifest parses: {error}"), Probe::tcp(1), impossible);
}

fn cluster_network_policy<'a>(objects: &'a mut [Object], name: &str) -> Result<&'a mut ClusterNetworkPolicy, String> {
    objects
        .iter_mut()
        .find_map(|object| match object {
            Object::ClusterNetworkPolicy(cnp) if cnp.metadata.name.as_deref() == Some(name) => Some(cnp),
            _ => None,
        })
        .ok_or_else(|| format!("manifest has no ClusterNetworkPolicy {name}"))
}

// --- the rule-ordering pattern (the per-protocol Admin and Baseline tests) ---------------------

/// What a subtest does to the live policy before probing.
#[derive(Clone, Copy, Debug)]
pub enum Mutation {
    /// Probe the policy as it is.
    None,
    /// Swap two rules of `spec.ingress` or `spec.egress` (upstream's `mutate.Spec.Ingress[i], [j] = …`).
    SwapRules(usize, usize),
}

/// One `PokeServer` call: `client` connects to `server`.
#[derive(Clone, Copy, Debug)]
pub struct Poke {
    pub client: &'static str,
    pub server: &'static str,
    pub probe: Probe,
    pub connected: bool,
}

/// One `t.Run`.
#[derive(Clone, Copy, Debug)]
pub struct Subtest {
    pub title: &'static str,
    pub mutation: Mutation,
    pub pokes: &'static [Poke],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// A test that applies one manifest and runs subtests that reorder its rules.
pub struct OrderedRulesCase {
    pub short_name: &'static str,
    pub source: &'static str,
    pub manifest: &'static str,
    pub direction: Direction,
    pub subtests: &'static [Subtest],
}

fn write_ordered_rules_case(case: &mut CaseBuilder, spec: &OrderedRulesCase) {
    let mut cnp = match manifest(spec.manifest) {
        Ok(cnp) => cnp,
        Err(error) => return manifest_failure(case, &error.to_string()),
    };
    case.apply_cluster_network_policy(&cnp);
    for subtest in spec.subtests {
        if let Mutation::SwapRules(i, j) = subtest.mutation {
            match spec.direction {
                Direction::Ingress => swap::<ClusterNetworkPolicyIngressRule>(&mut cnp.spec.ingress, i, j),
                Direction::Egress => swap::<ClusterNetworkPolicyEgressRule>(&mut cnp.spec.egress, i, j),
            }
            case.apply_cluster_network_policy(&cnp);
        }
        poke(case, subtest.title, subtest.pokes);
    }
}

fn swap<T>(rules: &mut [T], i: usize, j: usize) {
    if i < rules.len() && j < rules.len() {
        rules.swap(i, j);
    }
}

/// One expectation per probe (a grid is per probe), holding exactly the probed cells.
fn poke(case: &mut CaseBuilder, title: &str, pokes: &[Poke]) {
    let mut probes: Vec<Probe> = pokes.iter().map(|p| p.probe).collect();
    probes.dedup();
    for probe in probes {
        let mut reachability = case.probes();
        for p in pokes.iter().filter(|p| p.probe == probe) {
            reachability.expect(&pod(p.client), &pod(p.server), p.connected);
        }
        case.expect(title, probe, reachability);
    }
}

const fn poke_tcp(client: &'static str, server: &'static str, port: u16, connected: bool) -> Poke {
    Poke { client, server, probe: Probe::tcp(port), connected }
}

const fn poke_udp(client: &'static str, server: &'static str, port: u16, connected: bool) -> Poke {
    Poke { client, server, probe: Probe::udp(port), connected }
}

const fn poke_sctp(client: &'static str, server: &'static str, port: u16, connected: bool) -> Poke {
    Poke { client, server, probe: Probe::sctp(port), connected }
}

const SWAP_ALLOW_DENY: Mutation = Mutation::SwapRules(0, 1);
const SWAP_DENY_PASS: Mutation = Mutation::SwapRules(0, 2);
const SWAP_PORT_DENY_PASS: Mutation = Mutation::SwapRules(3, 4);

pub const ORDERED_RULE_CASES: &[OrderedRulesCase] = &[
    OrderedRulesCase {
        short_name: "CNPAdminTierIngressTCP",
        source: "admin-network-policy-standard-ingress-tcp-rules.go",
        manifest: include_str!("../manifests/admin_tier/standard-ingress-tcp-rules.yaml"),
        direction: Direction::Ingress,
        subtests: &[
            Subtest {
                title: "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("luna-lovegood-0", "harry-potter-0", 80, true),
                    poke_tcp("luna-lovegood-1", "harry-potter-0", 8080, true),
                ],
            },
            Subtest {
                title: "Should support an 'allow-ingress' policy for TCP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("cedric-diggory-0", "harry-potter-1", 80, true),
                    poke_tcp("cedric-diggory-1", "harry-potter-1", 8080, false),
                ],
            },
            Subtest {
                title: "Should not affect egress traffic when only ingress rules are specified",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("harry-potter-0", "luna-lovegood-0", 80, true),
                    poke_tcp("harry-potter-1", "draco-malfoy-0", 80, true),
                ],
            },
            Subtest {
                title: "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected",
                mutation: SWAP_ALLOW_DENY,
                pokes: &[
                    poke_tcp("luna-lovegood-0", "harry-potter-1", 80, false),
                    poke_tcp("luna-lovegood-1", "harry-potter-1", 8080, false),
                ],
            },
            Subtest {
                title: "Should support a 'deny-ingress' policy for TCP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("draco-malfoy-0", "harry-potter-0", 80, false),
                    poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, true),
                ],
            },
            Subtest {
                title: "Should support an 'pass-ingress' policy for TCP protocol; ensure rule ordering is respected",
                mutation: SWAP_DENY_PASS,
                pokes: &[
                    poke_tcp("luna-lovegood-0", "harry-potter-0", 80, true),
                    poke_tcp("luna-lovegood-1", "harry-potter-0", 8080, true),
                ],
            },
            Subtest {
                title: "Should support a 'pass-ingress' policy for TCP protocol at the specified port",
                mutation: SWAP_PORT_DENY_PASS,
                pokes: &[
                    poke_tcp("draco-malfoy-0", "harry-potter-0", 80, true),
                    poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, true),
                ],
            },
        ],
    },
    OrderedRulesCase {
        short_name: "CNPAdminTierIngressUDP",
        source: "admin-network-policy-standard-ingress-udp-rules.go",
        manifest: include_str!("../manifests/admin_tier/standard-ingress-udp-rules.yaml"),
        direction: Direction::Ingress,
        subtests: &[
            Subtest {
                title: "Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected",
                mutation: Mutation::None,
                pokes: &[
                    poke_udp("luna-lovegood-0", "cedric-diggory-0", 53, true),
                    poke_udp("luna-lovegood-1", "cedric-diggory-0", 5353, true),
                ],
            },
            Subtest {
                title: "Should support an 'allow-ingress' policy for UDP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_udp("harry-potter-0", "cedric-diggory-1", 53, true),
                    poke_udp("harry-potter-1", "cedric-diggory-1", 5353, false),
                ],
            },
            Subtest {
                title: "Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected",
                mutation: SWAP_ALLOW_DENY,
                pokes: &[
                    poke_udp("luna-lovegood-0", "cedric-diggory-1", 53, false),
                    poke_udp("luna-lovegood-1", "cedric-diggory-1", 5353, false),
                ],
            },
            Subtest {
                title: "Should support a 'deny-ingress' policy for UDP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_udp("draco-malfoy-0", "cedric-diggory-0", 5353, false),
                    poke_udp("draco-malfoy-1", "cedric-diggory-0", 53, true),
                ],
            },
            Subtest {
                title: "Should support an 'pass-ingress' policy for UDP protocol; ensure rule ordering is respected",
                mutation: SWAP_DENY_PASS,
                pokes: &[
                    poke_udp("luna-lovegood-0", "cedric-diggory-1", 5353, true),
                    poke_udp("luna-lovegood-1", "cedric-diggory-1", 53, true),
                ],
            },
            Subtest {
                title: "Should support a 'pass-ingress' policy for UDP protocol at the specified port",
                mutation: SWAP_PORT_DENY_PASS,
                pokes: &[
                    poke_udp("draco-malfoy-0", "cedric-diggory-0", 5353, true),
                    poke_udp("draco-malfoy-1", "cedric-diggory-0", 53, true),
                ],
            },
        ],
    },
    OrderedRulesCase {
        short_name: "CNPAdminTierIngressSCTP",
        source: "admin-network-policy-standard-ingress-sctp-rules.go",
        manifest: include_str!("../manifests/admin_tier/standard-ingress-sctp-rules.yaml"),
        direction: Direction::Ingress,
        subtests: &[
            Subtest {
                title: "Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is respected",
                mutation: Mutation::None,
                pokes: &[
                    poke_sctp("harry-potter-0", "luna-lovegood-0", 9003, true),
                    poke_sctp("harry-potter-1", "luna-lovegood-0", 9005, true),
                ],
            },
            Subtest {
                title: "Should support an 'allow-ingress' policy for SCTP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_sctp("cedric-diggory-0", "luna-lovegood-1", 9003, true),
                    poke_sctp("cedric-diggory-1", "luna-lovegood-1", 9005, false),
                ],
            },
            Subtest {
                title: "Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected",
                mutation: SWAP_ALLOW_DENY,
                pokes: &[
                    poke_sctp("harry-potter-0", "luna-lovegood-1", 9003, false),
                    poke_sctp("harry-potter-1", "luna-lovegood-1", 9005, false),
                ],
            },
            Subtest {
                title: "Should support a 'deny-ingress' policy for SCTP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_sctp("draco-malfoy-0", "luna-lovegood-0", 9003, false),
                    poke_sctp("draco-malfoy-1", "luna-lovegood-0", 9005, true),
                ],
            },
            Subtest {
                title: "Should support an 'pass-ingress' policy for SCTP protocol; ensure rule ordering is respected",
                mutation: SWAP_DENY_PASS,
                pokes: &[
                    poke_sctp("harry-potter-0", "luna-lovegood-1", 9003, true),
                    poke_sctp("harry-potter-1", "luna-lovegood-1", 9005, true),
                ],
            },
            Subtest {
                title: "Should support a 'pass-ingress' policy for SCTP protocol at the specified port",
                mutation: SWAP_PORT_DENY_PASS,
                pokes: &[
                    poke_sctp("draco-malfoy-0", "luna-lovegood-0", 9003, true),
                    poke_sctp("draco-malfoy-1", "luna-lovegood-0", 9005, true),
                ],
            },
        ],
    },
    OrderedRulesCase {
        short_name: "CNPAdminTierEgressTCP",
        source: "admin-network-policy-standard-egress-tcp-rules.go",
        manifest: include_str!("../manifests/admin_tier/standard-egress-tcp-rules.yaml"),
        direction: Direction::Egress,
        subtests: &[
            Subtest {
                title: "Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("harry-potter-0", "luna-lovegood-0", 80, true),
                    poke_tcp("harry-potter-1", "luna-lovegood-0", 8080, true),
                ],
            },
            Subtest {
                title: "Should support an 'allow-egress' policy for TCP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("harry-potter-0", "cedric-diggory-1", 8080, true),
                    poke_tcp("harry-potter-1", "cedric-diggory-1", 80, false),
                ],
            },
            Subtest {
                title: "Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected",
                mutation: SWAP_ALLOW_DENY,
                pokes: &[
                    poke_tcp("harry-potter-0", "luna-lovegood-1", 80, false),
                    poke_tcp("harry-potter-1", "luna-lovegood-1", 8080, false),
                ],
            },
            Subtest {
                title: "Should support a 'deny-egress' policy for TCP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_tcp("harry-potter-0", "draco-malfoy-0", 80, false),
                    poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, true),
                ],
            },
            Subtest {
                title: "Should support an 'pass-egress' policy for TCP protocol; ensure rule ordering is respected",
                mutation: SWAP_DENY_PASS,
                pokes: &[
                    poke_tcp("harry-potter-0", "luna-lovegood-0", 80, true),
                    poke_tcp("harry-potter-1", "luna-lovegood-0", 8080, true),
                ],
            },
            Subtest {
                title: "Should support a 'pass-egress' policy for TCP protocol at the specified port",
                mutation: SWAP_PORT_DENY_PASS,
                pokes: &[
                    poke_tcp("harry-potter-0", "draco-malfoy-0", 80, true),
                    poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, true),
                ],
            },
        ],
    },
    OrderedRulesCase {
        short_name: "CNPAdminTierEgressUDP",
        source: "admin-network-policy-standard-egress-udp-rules.go",
        manifest: include_str!("../manifests/admin_tier/standard-egress-udp-rules.yaml"),
        direction: Direction::Egress,
        subtests: &[
            Subtest {
                title: "Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected",
                mutation: Mutation::None,
                pokes: &[
                    poke_udp("cedric-diggory-0", "luna-lovegood-0", 53, true),
                    poke_udp("cedric-diggory-1", "luna-lovegood-0", 5353, true),
                ],
            },
            Subtest {
                title: "Should support an 'allow-egress' policy for UDP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_udp("cedric-diggory-0", "harry-potter-1", 53, true),
                    poke_udp("cedric-diggory-1", "harry-potter-1", 5353, false),
                ],
            },
            Subtest {
                title: "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected",
                mutation: SWAP_ALLOW_DENY,
                pokes: &[
                    poke_udp("cedric-diggory-0", "luna-lovegood-1", 53, false),
                    poke_udp("cedric-diggory-1", "luna-lovegood-1", 5353, false),
                ],
            },
            Subtest {
                title: "Should support a 'deny-egress' policy for UDP protocol at the specified port",
                mutation: Mutation::None,
                pokes: &[
                    poke_udp("cedric-diggory-0", "draco-malfoy-0", 5353, false),
                    poke_udp("cedric-diggory-1", "draco-malfoy-0", 53, true),
                ],
            },
            Subtest {
                title: "Should support an 'pass-egress' policy for UDP protocol; ensure rule ordering is respected",
                mutation: SWAP_DENY_PASS,
                pokes: &[
                    poke_udp("cedric-diggory-0", "luna-lovegood-1", 5353, true),
                    poke_udp("cedric-diggory-1", "luna-lovegood-1", 53, true),
                ],
            },
            Subtest {
                title: "Should support a 'pass-egress' policy for UDP protocol at the specified port",
                mutation: SWAP_PORT_DENY_PASS,
                pokes: &[
                    poke_udp("cedric-diggory-0", "draco-malfoy-0", 5353, true),
                    poke_udp("cedric-diggory-1", "draco-malfoy-0", 53, true),
                ],
            },
        ],
    },
];

// --- scripted tests (tiers, priorities, NetworkPolicy integration) ------------------------------

type Script = fn(&mut CaseBuilder) -> Result<(), String>;

/// `(ShortName, file, steps)` for tests whose subtests do more than reorder rules.
const SCRIPTED_CASES: &[(&str, &str, Script)] = &[
    ("CNPAdminTierPriorityField", "admin-network-policy-standard-priority.go", priority_field),
    ("CNPAdminTierIntegration", "admin-network-policy-standard-integration.go", admin_tier_integration),
];

fn apply_all(case: &mut CaseBuilder, objects: &[Object]) {
    for object in objects {
        case.apply(object.clone());
    }
}

/// Deny at priority 50 beats Pass at 60; moving the Pass to 40 hands both directions to the
/// Baseline Accept.
fn priority_field(case: &mut CaseBuilder) -> Result<(), String> {
    let mut objects = objects(include_str!("../manifests/admin_tier/standard-priority-field.yaml"))?;
    apply_all(case, &objects);
    poke(
        case,
        "Should Deny traffic from slytherin to gryffindor respecting admin CNP",
        &[poke_tcp("draco-malfoy-0", "harry-potter-0", 80, false), poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, false)],
    );
    poke(
        case,
        "Should Deny traffic to slytherin from gryffindor respecting admin CNP",
        &[poke_tcp("harry-potter-0", "draco-malfoy-0", 80, false), poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, false)],
    );
    let cnp = cluster_network_policy(&mut objects, "old-priority-60-new-priority-40-example")?;
    cnp.spec.priority = 40;
    let cnp = cnp.clone();
    case.apply_cluster_network_policy(&cnp);
    poke(
        case,
        "Should respect admin CNP priority field; thus passing both ingress and egress traffic over to baseline CNP",
        &[
            poke_tcp("draco-malfoy-0", "harry-potter-0", 80, true),
            poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, true),
            poke_tcp("harry-potter-0", "draco-malfoy-0", 80, true),
            poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, true),
        ],
    );
    Ok(())
}

/// Admin Deny, then Admin Pass to a NetworkPolicy that allows, then (NetworkPolicy deleted) to a
/// Baseline Deny; ingress and egress each.
fn admin_tier_integration(case: &mut CaseBuilder) -> Result<(), String> {
    let mut objects = objects(include_str!("../manifests/api_integration/standard-anp-np-banp.yaml"))?;
    apply_all(case, &objects);
    poke(
        case,
        "Should Deny traffic from slytherin to gryffindor respecting admin CNP",
        &[poke_tcp("draco-malfoy-0", "harry-potter-0", 80, false), poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, false)],
    );
    poke(
        case,
        "Should Deny traffic to slytherin from gryffindor respecting admin CNP",
        &[poke_tcp("harry-potter-0", "draco-malfoy-0", 80, false), poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, false)],
    );
    let pass_example = cluster_network_policy(&mut objects, "pass-example")?;
    let ingress = pass_example.spec.ingress.first_mut().ok_or("pass-example has no ingress rule")?;
    ingress.action = RuleAction::Pass;
    let snapshot = pass_example.clone();
    case.apply_cluster_network_policy(&snapshot);
    poke(
        case,
        "Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy",
        &[poke_tcp("draco-malfoy-0", "harry-potter-0", 80, true), poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, true)],
    );
    let pass_example = cluster_network_policy(&mut objects, "pass-example")?;
    let egress = pass_example.spec.egress.first_mut().ok_or("pass-example has no egress rule")?;
    egress.action = RuleAction::Pass;
    let snapshot = pass_example.clone();
    case.apply_cluster_network_policy(&snapshot);
    poke(
        case,
        "Should support a 'pass-egress' policy for admin CNP and respect the match for network policy",
        &[poke_tcp("harry-potter-0", "draco-malfoy-0", 80, true), poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, true)],
    );
    let np: &NetworkPolicy = objects
        .iter()
        .find_map(|o| match o {
            Object::NetworkPolicy(np) => Some(np),
            _ => None,
        })
        .ok_or("manifest has no NetworkPolicy")?;
    case.delete(ObjectRef::NetworkPolicy {
        namespace: np.metadata.namespace.clone().unwrap_or_default(),
        name: np.metadata.name.clone().unwrap_or_default(),
    });
    poke(
        case,
        "Should support a 'pass-ingress' policy for admin CNP and respect the match for baseline cluster network policy",
        &[poke_tcp("draco-malfoy-0", "harry-potter-0", 80, false), poke_tcp("draco-malfoy-1", "harry-potter-0", 8080, false)],
    );
    poke(
        case,
        "Should support a 'pass-egress' policy for admin CNP and respect the match for baseline cluster network policy",
        &[poke_tcp("harry-potter-0", "draco-malfoy-0", 80, false), poke_tcp("harry-potter-1", "draco-malfoy-0", 8080, false)],
    );
    Ok(())
}
