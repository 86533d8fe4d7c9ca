//! `make demo`: Palisade enforcing policies live on a local control plane with namespace-built
//! nodes.
//!
//! It starts a real kube-apiserver and etcd, builds namespaces x, y, z with pods a, b, c on two
//! nodes (each a network namespace), runs two operator replicas and one agent per node as
//! `palisade` processes, then applies policies with `kubectl` one at a time. After each, it waits
//! until the policies' status says every node realizes them and prints the real TCP/80
//! reachability grid, probed with packets. `--hold` keeps everything up until Ctrl-C.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_conformance::model::{PodId, Protocol};
use palisade_crds::conditions;
use palisade_e2e::Stack;

/// One demo step: what it shows and the manifest, with `{x}`/`{y}`/`{z}` for the real namespace names.
struct Step {
    title: &'static str,
    /// The policy this step applies: `(Some(logical namespace), name)` or `(None, name)` for a CNP.
    policy: (Option<&'static str>, &'static str),
    manifest: &'static str,
}

const STEPS: &[Step] = &[
    Step {
        title: "NetworkPolicy x/deny-ingress: pods in x accept no ingress",
        policy: (Some("x"), "deny-ingress"),
        manifest: r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: "{x}"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#,
    },
    Step {
        title: "NetworkPolicy x/allow-from-y: ...except from namespace y",
        policy: (Some("x"), "allow-from-y"),
        manifest: r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-y, namespace: "{x}"}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
"#,
    },
    Step {
        title: "ClusterNetworkPolicy (Admin) isolate-z-a: nobody reaches z/a, whatever namespaces allow",
        policy: (None, "isolate-z-a"),
        manifest: r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: isolate-z-a}
spec:
  tier: Admin
  priority: 10
  subject:
    pods:
      namespaceSelector: {matchLabels: {ns: "z"}}
      podSelector: {matchLabels: {pod: a}}
  ingress:
  - name: deny-all
    action: Deny
    from: [{namespaces: {}}]
"#,
    },
    Step {
        title: "ClusterNetworkPolicy (Baseline) default-deny: where no NetworkPolicy selects a pod, only y gets in",
        policy: (None, "default-deny"),
        manifest: r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default-deny}
spec:
  tier: Baseline
  priority: 100
  subject: {namespaces: {}}
  ingress:
  - name: same-namespace-only
    action: Deny
    from: [{namespaces: {matchExpressions: [{key: ns, operator: NotIn, values: ["y"]}]}}]
"#,
    },
];

#[tokio::main]
async fn main() {
    let hold = std::env::args().any(|arg| arg == "--hold");
    if let Err(error) = run(hold).await {
        eprintln!("demo failed: {error}");
        std::process::exit(1);
    }
}

async fn run(hold: bool) -> Result<(), String> {
    let suite = palisade_conformance::netpol::suite();
    println!("Starting a control plane, 2 namespace-built nodes with 9 pods, 2 operator replicas and 2 agents...");
    let started = Instant::now();
    let stack = Stack::start(&suite.model).await.map_err(|e| e.to_string())?;
    let kubeconfig = stack.plane().kubeconfig_path().to_path_buf();
    println!("Up in {:.1} s. kubeconfig: {}", started.elapsed().as_secs_f64(), kubeconfig.display());
    for agent in stack.agents() {
        println!("  agent for node {} (pid {:?})", agent.node, agent.pid());
    }

    let pods: Vec<PodId> = suite.model.pods.iter().map(|pod| pod.id()).collect();
    println!("\nBefore any policy, TCP/80 (rows: from, columns: to; . connects, X is dropped):");
    print_grid(&stack, &pods).await?;

    let names: BTreeMap<&str, String> =
        ["x", "y", "z"].into_iter().map(|ns| (ns, stack.cluster().k8s_namespace(ns))).collect();
    for step in STEPS {
        let manifest = names
            .iter()
            .fold(step.manifest.to_owned(), |text, (logical, real)| text.replace(&format!("{{{logical}}}"), real));
        println!("\n== {}\n$ kubectl apply -f -", step.title);
        let applied = Instant::now();
        kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifest))?;
        if let Err(error) = wait_realized(&stack, step.policy).await {
            kubectl(&kubeconfig, &["get", "policystatuses,clusternetworkpolicies,configmaps", "-A"], None)?;
            for replica in stack.operators() {
                let log = std::fs::read_to_string(replica.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                println!("--- {} (last lines)", replica.identity);
                tail.iter().rev().for_each(|line| println!("{line}"));
            }
            return Err(error);
        }
        println!("realized on every node {:.2} s after apply", applied.elapsed().as_secs_f64());
        print_grid(&stack, &pods).await?;
    }

    println!("\n$ kubectl get clusternetworkpolicies,policystatuses -A");
    kubectl(&kubeconfig, &["get", "clusternetworkpolicies,policystatuses", "-A"], None)?;

    if hold {
        println!(
            "\nEverything stays up: KUBECONFIG={} kubectl get pods -A. Ctrl-C to tear down.",
            kubeconfig.display()
        );
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    }
    println!("\nTearing down.");
    Ok(())
}

/// Waits until every policy's status reports all desired nodes realizing its current generation.
async fn wait_realized(stack: &Stack, policy: (Option<&str>, &str)) -> Result<(), String> {
    let cluster_policies: kube::Api<palisade_crds::ClusterNetworkPolicy> = kube::Api::all(stack.client());
    stack
        .eventually("policies realized on every node", Duration::from_secs(30), || async {
            let applied_has_status = match policy {
                (Some(namespace), name) => {
                    let generation = stack.network_policy(namespace, name).await?.and_then(|np| np.metadata.generation);
                    stack.policy_status(namespace, name).await?.and_then(|s| s.status).is_some_and(|s| {
                        s.observed_generation == generation
                            && s.nodes_desired > 0
                            && s.nodes_realized == s.nodes_desired
                    })
                }
                (None, name) => stack.cluster_network_policy(name).await?.is_some_and(|cnp| cnp.status.is_some()),
            };
            if !applied_has_status {
                return Ok(Err(format!("{policy:?} has no realized status yet")));
            }
            let pending_network: Vec<String> = stack
                .all_policy_statuses()
                .await?
                .iter()
                .filter(|status| {
                    !status.status.as_ref().is_some_and(|s| s.nodes_desired > 0 && s.nodes_realized == s.nodes_desired)
                })
                .map(|status| status.metadata.name.clone().unwrap_or_default())
                .collect();
            let pending_cluster: Vec<String> = cluster_policies
                .list(&Default::default())
                .await?
                .items
                .iter()
                .filter(|cnp| {
                    let generation = cnp.metadata.generation;
                    !cnp.status.as_ref().is_some_and(|status| {
                        status.conditions.iter().any(|condition| {
                            condition.type_ == conditions::REALIZED
                                && condition.status == conditions::STATUS_TRUE
                                && condition.observed_generation == generation
                        })
                    })
                })
                .map(|cnp| cnp.metadata.name.clone().unwrap_or_default())
                .collect();
            Ok(if pending_network.is_empty() && pending_cluster.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet realized: {pending_network:?} {pending_cluster:?}"))
            })
        })
        .await
        .map_err(|e| e.to_string())
}

async fn print_grid(stack: &Stack, pods: &[PodId]) -> Result<(), String> {
    let cells: Vec<(PodId, PodId)> =
        pods.iter().flat_map(|from| pods.iter().map(move |to| (from.clone(), to.clone()))).collect();
    let outcomes = stack
        .cluster()
        .probe_cells(&cells, Protocol::Tcp, 80, Duration::from_millis(400), 12)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::from("      ");
    for to in pods {
        out.push_str(&format!("{:<5}", to.to_string()));
    }
    out.push('\n');
    for from in pods {
        out.push_str(&format!("{:<6}", from.to_string()));
        for to in pods {
            let mark = match outcomes.get(&(from.clone(), to.clone())) {
                Some(outcome) if outcome.is_connected() => ".",
                Some(_) => "X",
                None => "?",
            };
            out.push_str(&format!("{mark:<5}"));
        }
        out.push('\n');
    }
    print!("{out}");
    std::io::stdout().flush().map_err(|e| e.to_string())
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .map_err(|e| format!("kubectl could not start (is it installed?): {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("kubectl stdin: {e}"))?;
    }
    let status = child.wait().map_err(|e| format!("kubectl: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("kubectl {} failed: {status}", args.join(" "))) }
}
