//! The pure runner: replays every case against Palisade's engine and checks every asserted cell
//! twice, with the reference evaluator (the specification) and with the compiled node plans
//! (what the agents enforce). Both must agree with upstream's expectation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use palisade_conformance::{Case, Environment, Expectation, Model, Object, ObjectRef, PodId, Protocol, Step, Suite};
use palisade_crds::convert;
use palisade_engine::model as m;
use palisade_engine::reference::Reference;
use palisade_engine::verdict::{Flow, Verdict};
use palisade_engine::{Engine, PlanEvaluator};

/// Cases the engine is known to get wrong: `(case name, expectation title, what is wrong)`.
/// Listing one does not make the suite pass: it only labels the failure, so nobody re-triages it.
/// A listed defect that no longer fails also fails the suite, so the list stays true.
const KNOWN_ENGINE_DEFECTS: &[(&str, &str, &str)] = &[];

#[test]
fn netpol_suite_against_engine() {
    run_suite(&palisade_conformance::netpol::suite());
}

#[test]
fn cluster_network_policy_suite_against_engine() {
    run_suite(&palisade_conformance::cnp::suite());
}

fn run_suite(suite: &Suite) {
    let mut report = String::new();
    let mut failed_cases = 0;
    let mut seen_defects = Vec::new();
    for case in &suite.cases {
        let failures = run_case(&suite.model, case);
        for failure in &failures {
            let defect =
                KNOWN_ENGINE_DEFECTS.iter().find(|(name, title, _)| *name == case.name && *title == failure.title);
            if let Some((_, title, why)) = defect {
                seen_defects.push((case.name.clone(), title.to_string()));
                let _ = writeln!(report, "KNOWN ENGINE DEFECT ({why}):");
            }
            let _ = writeln!(report, "{}\n", failure.text);
        }
        if !failures.is_empty() {
            failed_cases += 1;
        }
    }
    for (name, title, why) in KNOWN_ENGINE_DEFECTS {
        let listed_for_this_suite = suite.cases.iter().any(|case| case.name == *name);
        if listed_for_this_suite && !seen_defects.iter().any(|(n, t)| n == name && t == title) {
            let _ = writeln!(
                report,
                "known defect no longer fails, remove it from KNOWN_ENGINE_DEFECTS: {name} / {title} ({why})"
            );
            failed_cases += 1;
        }
    }
    let (cases, steps, cells) = suite.size();
    eprintln!("{}: {cases} cases, {steps} steps, {cells} asserted cells", suite.name);
    assert!(failed_cases == 0, "{} suite: {failed_cases} of {cases} cases failed\n\n{report}", suite.name);
}

struct Failure {
    title: String,
    text: String,
}

/// The model on the engine: pods get 198.18.1.x in model order, nodes 198.18.0.x; host-network
/// pods answer on their node's address.
struct PureCluster {
    engine: Engine,
    policies: BTreeMap<m::PolicyRef, m::Policy>,
    pod_ips: BTreeMap<PodId, IpAddr>,
    node_ips: BTreeMap<String, Vec<IpAddr>>,
}

impl Environment for PureCluster {
    fn namespace_name(&self, logical: &str) -> String {
        logical.to_owned()
    }

    fn pod_ip(&self, pod: &PodId) -> Option<IpAddr> {
        self.pod_ips.get(pod).copied()
    }
}

impl PureCluster {
    fn new(model: &Model) -> PureCluster {
        let mut cluster = m::Cluster::default();
        let mut node_ips = BTreeMap::new();
        for (index, node) in model.nodes.iter().enumerate() {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1 + index as u8));
            node_ips.insert(node.name.clone(), vec![ip]);
            cluster.nodes.insert(
                node.name.clone(),
                m::Node { name: node.name.clone(), labels: node.labels.clone(), ips: vec![ip] },
            );
        }
        for namespace in &model.namespaces {
            cluster.namespaces.insert(
                namespace.name.clone(),
                m::Namespace { name: namespace.name.clone(), labels: namespace.labels.clone() },
            );
        }
        let mut pod_ips = BTreeMap::new();
        for (index, pod) in model.pods.iter().enumerate() {
            let node = model.node_of(&pod.id()).expect("model has nodes").name.clone();
            let ip = if pod.host_network {
                node_ips[&node][0]
            } else {
                IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1 + index as u8))
            };
            pod_ips.insert(pod.id(), ip);
            let key = m::PodKey { namespace: pod.namespace.clone(), name: pod.name.clone() };
            cluster.pods.insert(
                key.clone(),
                m::Pod {
                    key,
                    labels: pod.labels.clone(),
                    node: Some(node),
                    ips: vec![ip],
                    named_ports: pod
                        .ports
                        .iter()
                        .filter_map(|port| {
                            Some(m::NamedPort {
                                name: port.name.clone()?,
                                protocol: engine_protocol(port.protocol),
                                port: port.port,
                            })
                        })
                        .collect(),
                    host_network: pod.host_network,
                    terminated: false,
                },
            );
        }
        PureCluster { engine: Engine::with_cluster(cluster), policies: BTreeMap::new(), pod_ips, node_ips }
    }

    fn apply(&mut self, object: &Object) -> Result<(), String> {
        let resolved = object.resolve(self).map_err(|e| e.to_string())?;
        let policy = match &resolved {
            Object::NetworkPolicy(np) => m::Policy::Network(convert::network_policy(np).map_err(|e| e.to_string())?),
            Object::ClusterNetworkPolicy(cnp) => {
                m::Policy::Cluster(convert::cluster_network_policy(cnp).map_err(|e| e.to_string())?)
            }
        };
        let reference = policy.reference();
        self.engine.upsert_policy(policy.clone());
        self.policies.insert(reference.clone(), policy);
        let errors = self.engine.errors_of(&reference);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("the engine rejected {reference}: {errors:?}\n{}", resolved.to_yaml()))
        }
    }

    fn delete(&mut self, object: &ObjectRef) {
        let reference = match object {
            ObjectRef::NetworkPolicy { namespace, name } => m::PolicyRef {
                kind: m::PolicyKind::NetworkPolicy,
                namespace: Some(namespace.clone()),
                name: name.clone(),
            },
            ObjectRef::ClusterNetworkPolicy { name } => {
                m::PolicyRef { kind: m::PolicyKind::ClusterNetworkPolicy, namespace: None, name: name.clone() }
            }
        };
        self.engine.remove_policy(&reference);
        self.policies.remove(&reference);
    }

    fn label_namespace(&mut self, name: &str, changes: &BTreeMap<String, Option<String>>) -> Result<(), String> {
        let mut namespace =
            self.engine.cluster().namespaces.get(name).cloned().ok_or_else(|| format!("no namespace {name}"))?;
        merge_labels(&mut namespace.labels, changes);
        self.engine.upsert_namespace(namespace);
        Ok(())
    }

    fn label_pod(&mut self, id: &PodId, changes: &BTreeMap<String, Option<String>>) -> Result<(), String> {
        let key = m::PodKey { namespace: id.namespace.clone(), name: id.name.clone() };
        let mut pod = self.engine.cluster().pods.get(&key).cloned().ok_or_else(|| format!("no pod {id}"))?;
        merge_labels(&mut pod.labels, changes);
        self.engine.upsert_pod(pod);
        Ok(())
    }

    /// The finished pod and its successor go through conversion as the API server would show
    /// them (phase `Succeeded`, then a `Running` pod on the same IP), so the runner sees what the
    /// operator would.
    fn reuse_pod_ip(&mut self, finished: &PodId, successor: &PodId, labels: &m::Labels) -> Result<(), String> {
        let key = m::PodKey { namespace: finished.namespace.clone(), name: finished.name.clone() };
        let old = self.engine.cluster().pods.get(&key).cloned().ok_or_else(|| format!("no pod {finished}"))?;
        let as_api = |id: &PodId, labels: &m::Labels, phase: &str| -> Result<m::Pod, String> {
            let ips: Vec<_> = old.ips.iter().map(|ip| serde_json::json!({ "ip": ip.to_string() })).collect();
            let object: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
                "metadata": { "name": id.name, "namespace": id.namespace, "labels": labels },
                "spec": { "nodeName": old.node, "containers": [{ "name": "probe" }] },
                "status": { "phase": phase, "podIPs": ips },
            }))
            .map_err(|e| e.to_string())?;
            convert::pod(&object).map_err(|e| e.to_string())
        };
        self.engine.upsert_pod(as_api(finished, &old.labels, "Succeeded")?);
        self.engine.upsert_pod(as_api(successor, labels, "Running")?);
        Ok(())
    }

    /// Judges every asserted cell with the reference evaluator and with the node plans.
    fn check(&mut self, expectation: &Expectation) -> Option<String> {
        let policies: Vec<m::Policy> = self.policies.values().cloned().collect();
        let plans = self.engine.node_plans();
        let reference = Reference::new(self.engine.cluster(), &policies);
        let evaluator = PlanEvaluator::new(&plans, &self.node_ips);
        let flow = |from: &PodId, to: &PodId| Flow {
            src: self.pod_ips[from],
            dst: self.pod_ips[to],
            protocol: engine_protocol(expectation.probe.protocol),
            port: expectation.probe.port,
        };
        let mut text = String::new();
        type Judge<'a> = (&'a str, &'a dyn Fn(&Flow) -> Verdict);
        let judges: [Judge; 2] =
            [("reference evaluator", &|f| reference.verdict(f)), ("compiled node plans", &|f| evaluator.verdict(f))];
        for (judge, verdict) in judges {
            let comparison = expectation.reachability.compare(|from, to| verdict(&flow(from, to)).allowed);
            if comparison.is_match() {
                continue;
            }
            let _ = writeln!(text, "-- {judge} disagrees with upstream --\n{comparison}");
            for mismatch in &comparison.mismatches {
                let v = verdict(&flow(&mismatch.from, &mismatch.to));
                let _ = writeln!(
                    text,
                    "  {} -> {}: egress {:?}; ingress {:?}",
                    mismatch.from, mismatch.to, v.egress.reason, v.ingress.reason
                );
            }
        }
        (!text.is_empty()).then_some(text)
    }
}

fn merge_labels(labels: &mut m::Labels, changes: &BTreeMap<String, Option<String>>) {
    for (key, value) in changes {
        match value {
            Some(value) => labels.insert(key.clone(), value.clone()),
            None => labels.remove(key),
        };
    }
}

fn engine_protocol(protocol: Protocol) -> m::Protocol {
    match protocol {
        Protocol::Tcp => m::Protocol::Tcp,
        Protocol::Udp => m::Protocol::Udp,
        Protocol::Sctp => m::Protocol::Sctp,
    }
}

fn run_case(model: &Model, case: &Case) -> Vec<Failure> {
    let mut cluster = PureCluster::new(model);
    let mut failures = Vec::new();
    for (index, step) in case.steps.iter().enumerate() {
        let header = |title: &str| format!("=== case {:?}\n    step {} ({title})", case.name, index + 1);
        let outcome = match step {
            Step::Apply(object) => cluster.apply(object).map_err(|e| (header("apply"), "apply".to_owned(), e)),
            Step::Delete(object) => {
                cluster.delete(object);
                Ok(())
            }
            Step::LabelNamespace { namespace, labels } => {
                cluster.label_namespace(namespace, labels).map_err(|e| (header("label namespace"), String::new(), e))
            }
            Step::LabelPod { pod, labels } => {
                cluster.label_pod(pod, labels).map_err(|e| (header("label pod"), String::new(), e))
            }
            Step::ReusePodIp { finished, successor, labels } => cluster
                .reuse_pod_ip(finished, successor, labels)
                .map_err(|e| (header("reuse pod IP"), String::new(), e)),
            Step::Expect(expectation) => match cluster.check(expectation) {
                None => Ok(()),
                Some(text) => Err((
                    header(&format!("expect {:?}, probe {}", expectation.title, expectation.probe)),
                    expectation.title.clone(),
                    text,
                )),
            },
        };
        if let Err((header, title, text)) = outcome {
            failures.push(Failure { title, text: format!("{header}\n{text}") });
        }
    }
    failures
}

/// The runner itself: a wrong expectation must be reported, by both judges, with the cell named.
#[test]
fn runner_reports_a_wrong_expectation() {
    use palisade_conformance::Probe;
    use palisade_conformance::builder::CaseBuilder;
    use palisade_conformance::k8s::{everything, policy, with_ingress};

    let model = palisade_conformance::netpol::model();
    let mut case = CaseBuilder::new("deny-all, expected open", "self-test", model.pod_ids(), true);
    case.apply_network_policy("x", with_ingress(policy("deny-all", everything()), vec![]));
    let wrong = case.reachability(true);
    case.expect("everything connects (wrong on purpose)", Probe::tcp(80), wrong);
    let failures = run_case(&model, &case.build());
    assert_eq!(failures.len(), 1);
    let text = &failures[0].text;
    assert!(text.contains("reference evaluator") && text.contains("compiled node plans"), "{text}");
    assert!(text.contains("y/a -> x/b: expected connected, got blocked"), "{text}");
}
