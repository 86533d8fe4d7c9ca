//! The case data itself: what any runner relies on before it sends a packet.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use palisade_conformance::{Environment, PodId, Step};

/// Resolves every placeholder to a fixed address per pod (distinct pods, distinct addresses, as
/// `networks` is a set), as a runner would with real pod IPs.
struct FixedAddresses;

impl Environment for FixedAddresses {
    fn namespace_name(&self, logical: &str) -> String {
        format!("{logical}-run1")
    }

    fn pod_ip(&self, pod: &PodId) -> Option<IpAddr> {
        // FNV-1a over `ns/name`, folded into 10.0.0.0/16.
        let hash = pod.to_string().bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        let [.., high, low] = hash.to_be_bytes();
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, high, low)))
    }
}

#[test]
fn every_case_is_well_formed() {
    for suite in palisade_conformance::suites() {
        let pods: BTreeSet<PodId> = suite.model.pod_ids().into_iter().collect();
        let mut names = BTreeSet::new();
        for case in &suite.cases {
            assert!(names.insert(case.name.clone()), "{}: duplicate case name {:?}", suite.name, case.name);
            assert!(case.steps.iter().any(|s| matches!(s, Step::Expect(_))), "{}: no expectation", case.name);
            for step in &case.steps {
                match step {
                    Step::Expect(expectation) => {
                        let cells = expectation.reachability.cells();
                        assert!(!cells.is_empty(), "{}: {:?} asserts nothing", case.name, expectation.title);
                        for (from, to, _) in cells {
                            assert!(
                                pods.contains(&from) && pods.contains(&to),
                                "{}: {from} -> {to} not in model",
                                case.name
                            );
                        }
                    }
                    Step::Apply(object) => {
                        let resolved = object.resolve(&FixedAddresses).unwrap_or_else(|e| panic!("{}: {e}", case.name));
                        assert!(!resolved.to_yaml().contains("{{"), "{}: unresolved placeholder", case.name);
                        assert!(!resolved.to_yaml().contains("serialization failed"), "{}", case.name);
                    }
                    Step::LabelPod { pod, .. } => assert!(pods.contains(pod), "{}: no pod {pod}", case.name),
                    Step::ReusePodIp { finished, successor, .. } => {
                        assert!(pods.contains(finished), "{}: no pod {finished}", case.name);
                        assert!(!pods.contains(successor), "{}: successor {successor} already in the model", case.name);
                        assert!(
                            suite.model.namespace(&successor.namespace).is_some(),
                            "{}: no namespace {}",
                            case.name,
                            successor.namespace
                        );
                    }
                    Step::LabelNamespace { namespace, .. } => {
                        assert!(suite.model.namespace(namespace).is_some(), "{}: no namespace {namespace}", case.name)
                    }
                    Step::Delete(_) => {}
                }
            }
        }
    }
}

/// ClusterNetworkPolicies must pass the CRD's schema, or a real API server would refuse them.
/// They are checked as a runner sends them: placeholders (`{{hostCIDR x/b}}` in `networks`)
/// resolved first.
#[test]
fn cluster_network_policies_pass_the_crd_schema() {
    for suite in palisade_conformance::suites() {
        for case in &suite.cases {
            for step in &case.steps {
                if let Step::Apply(object) = step
                    && let palisade_conformance::Object::ClusterNetworkPolicy(cnp) =
                        object.resolve(&FixedAddresses).unwrap_or_else(|e| panic!("{}: {e}", case.name))
                {
                    let violations = palisade_crds::validate::cluster_network_policy(&cnp);
                    assert!(violations.is_empty(), "{}: {violations:?}", case.name);
                }
            }
        }
    }
}

/// Namespace names in selectors follow the runner's names; other labels do not.
#[test]
fn resolve_renames_namespaces_and_fills_placeholders() {
    use palisade_conformance::k8s::*;
    let np = with_egress(
        policy("p", match_labels(&[("pod", "a")])),
        vec![egress_rule(
            vec![namespaces(match_labels(&[("kubernetes.io/metadata.name", "y")])), ip_block("{{hostCIDR x/b}}", &[])],
            vec![],
        )],
    );
    let mut np = np;
    np.metadata.namespace = Some("x".into());
    let yaml = palisade_conformance::Object::NetworkPolicy(np).resolve(&FixedAddresses).unwrap().to_yaml();
    assert!(yaml.contains("namespace: x-run1"), "{yaml}");
    assert!(yaml.contains("kubernetes.io/metadata.name: y-run1"), "{yaml}");
    assert!(yaml.contains("pod: a"), "{yaml}");
    let ip = FixedAddresses.pod_ip(&PodId::new("x", "b")).unwrap();
    assert!(yaml.contains(&format!("{ip}/32")), "{yaml}");
}
