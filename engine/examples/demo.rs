//! A small cluster (namespaces x, y, z; pods a, b, c in each), a few policies, each node's plan
//! summary and the verdict matrix of the reference evaluator. `make demo` runs it.

use std::net::IpAddr;

use palisade_engine::compile;
use palisade_engine::model::*;
use palisade_engine::reference::Reference;
use palisade_engine::verdict::Flow;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn select(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: labels(pairs), match_expressions: vec![] }
}

fn main() {
    let mut cluster = Cluster::default();
    for (i, ns) in ["x", "y", "z"].into_iter().enumerate() {
        cluster.namespaces.insert(ns.into(), Namespace { name: ns.into(), labels: labels(&[("ns", ns)]) });
        for (j, name) in ["a", "b", "c"].into_iter().enumerate() {
            let ip: IpAddr = format!("10.1.{i}.{}", j + 1).parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let pod = Pod {
                key: PodKey { namespace: ns.into(), name: name.into() },
                labels: labels(&[("pod", name)]),
                node: Some(format!("node{}", j % 2)),
                ips: vec![ip],
                named_ports: vec![NamedPort { name: "web".into(), protocol: Protocol::Tcp, port: 80 }],
                host_network: false,
                terminated: false,
            };
            cluster.pods.insert(pod.key.clone(), pod);
        }
    }
    for n in 0..2 {
        let name = format!("node{n}");
        let ips = vec![format!("10.0.0.{}", n + 1).parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))];
        cluster.nodes.insert(name.clone(), Node { name, labels: Labels::new(), ips });
    }

    let policies = vec![
        // x/a accepts only from pods labelled pod=b (any namespace), on the port named "web".
        Policy::Network(NetworkPolicy {
            namespace: "x".into(),
            name: "allow-b-to-a".into(),
            revision: Revision::default(),
            pod_selector: select(&[("pod", "a")]),
            policy_types: None,
            ingress: vec![NetworkPolicyRule {
                peers: vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    pod_selector: Some(select(&[("pod", "b")])),
                    ip_block: None,
                }],
                ports: vec![NetworkPolicyPort {
                    protocol: None,
                    port: Some(PortValue::Name("web".into())),
                    end_port: None,
                }],
            }],
            egress: vec![],
        }),
        // Admin: nothing in z may be reached from y.
        Policy::Cluster(ClusterNetworkPolicy {
            name: "protect-z".into(),
            revision: Revision::default(),
            tier: Tier::Admin,
            priority: 10,
            subject: CnpSubject::Namespaces(select(&[("ns", "z")])),
            ingress: vec![CnpRule {
                name: None,
                action: CnpAction::Deny,
                peers: vec![CnpPeer::Namespaces(select(&[("ns", "y")]))],
                protocols: None,
            }],
            egress: vec![],
        }),
        // Baseline: by default, y does not talk to x (overridable by NetworkPolicies in x).
        Policy::Cluster(ClusterNetworkPolicy {
            name: "baseline-x".into(),
            revision: Revision::default(),
            tier: Tier::Baseline,
            priority: 0,
            subject: CnpSubject::Namespaces(select(&[("ns", "x")])),
            ingress: vec![CnpRule {
                name: None,
                action: CnpAction::Deny,
                peers: vec![CnpPeer::Namespaces(select(&[("ns", "y")]))],
                protocols: None,
            }],
            egress: vec![],
        }),
    ];

    let compiled = compile(&cluster, &policies);
    for (node, plan) in &compiled.plans {
        let isolated = plan.pods.values().filter(|p| !p.ingress.is_open() || !p.egress.is_open()).count();
        println!(
            "{node}: {} pods ({isolated} with policy), {} rule sets, {} groups",
            plan.pods.len(),
            plan.rule_sets.len(),
            plan.groups.len()
        );
    }

    let reference = Reference::new(&cluster, &policies);
    let pods: Vec<&Pod> = cluster.pods.values().collect();
    println!("\nTCP/80 verdicts (rows = from, cols = to; . allowed, X denied)");
    print!("{:>5}", "");
    for to in &pods {
        print!(" {:>4}", to.key.to_string());
    }
    println!();
    for from in &pods {
        print!("{:>5}", from.key.to_string());
        for to in &pods {
            let flow = Flow { src: from.ips[0], dst: to.ips[0], protocol: Protocol::Tcp, port: 80 };
            print!(" {:>4}", if reference.verdict(&flow).allowed { "." } else { "X" });
        }
        println!();
    }
}
