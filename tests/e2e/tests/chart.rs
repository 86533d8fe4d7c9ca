//! The chart and the image, as a user meets them: `helm install` on a real cluster (real
//! kubelets, containerd, kube-proxy; `palisade_testkit::RealCluster`), policies enforced on real
//! pods, an upgrade under continuous probing, RBAC exactly as documented, and an uninstall that
//! leaves the nodes as they were.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_testkit::{RealCluster, images_dir, repository_root};

const RELEASE_NAMESPACE: &str = "palisade-system";
/// A fixed address for the plan-stream Service: the test cluster has no DNS.
const OPERATOR_CLUSTER_IP: &str = "operator.clusterIP=198.18.96.10";
const PORT: &str = "8080";

fn chart() -> String {
    repository_root().join("charts/palisade").display().to_string()
}

fn helm_binary() -> PathBuf {
    palisade_testkit::assets_dir().expect("KUBEBUILDER_ASSETS (make test sets it)").join("helm")
}

#[test]
fn the_schema_refuses_bad_values_and_names_them() {
    let chart = chart();
    for (value, path) in [
        ("agent.iptablesBackend=iptables", "/agent/iptablesBackend"),
        ("operator.replicas=0", "/operator/replicas"),
        ("webhook.failurePolicy=Sometimes", "/webhook/failurePolicy"),
        ("operator.clusterIP=not-an-address", "/operator/clusterIP"),
        ("agent.stateDir=relative/dir", "/agent/stateDir"),
        ("certificates.source=vault", "/certificates/source"),
        ("agent.resyncSeconds=0", "/agent/resyncSeconds"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let output =
            Command::new(helm_binary()).args(["template", "t", &chart, "--set", value]).output().expect("helm runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "helm accepted {value}");
        assert!(stderr.contains(path), "helm's refusal of {value} does not name {path}: {stderr}");
    }
    let fine = Command::new(helm_binary()).args(["template", "t", &chart]).output().expect("helm runs");
    assert!(fine.status.success(), "the default values are refused: {}", String::from_utf8_lossy(&fine.stderr));
    let lint = Command::new(helm_binary()).args(["lint", "--strict", &chart]).output().expect("helm runs");
    assert!(lint.status.success(), "helm lint --strict: {}", String::from_utf8_lossy(&lint.stdout));
}

/// The image's root filesystem, unpacked from `target/images/palisade.tar`.
fn unpack_image(into: &Path) -> PathBuf {
    let archive = images_dir().join("palisade.tar");
    assert!(archive.exists(), "{} is missing: run tests/cluster/images.sh (make test does)", archive.display());
    let run = |command: &mut Command| {
        let output = command.output().expect("tar runs");
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(into));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(into.join("manifest.json")).expect("manifest.json")).expect("JSON");
    let root = into.join("root");
    std::fs::create_dir(&root).expect("root dir");
    for layer in manifest[0]["Layers"].as_array().expect("layers") {
        run(Command::new("tar").arg("-xf").arg(into.join(layer.as_str().expect("layer path"))).arg("-C").arg(&root));
    }
    root
}

#[test]
fn the_image_holds_every_file_the_agent_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = unpack_image(dir.path());
    // Every tool the agent executes, run inside the image's own root (its own loader and libraries).
    for tool in [
        "/usr/local/bin/palisade",
        "iptables-nft-restore",
        "iptables-nft-save",
        "ip6tables-nft-restore",
        "ip6tables-nft-save",
        "iptables-legacy-restore",
        "iptables-legacy-save",
        "ip6tables-legacy-restore",
        "ip6tables-legacy-save",
        "iptables-restore",
        "ip6tables-save",
        "ipset",
    ] {
        let path = if tool.starts_with('/') { tool.to_owned() } else { format!("/usr/sbin/{tool}") };
        let version = if tool == "ipset" { "version" } else { "--version" };
        let output = Command::new("chroot").arg(&root).args([&path, version]).output().expect("chroot runs");
        assert!(
            output.status.success(),
            "{tool} does not run in the image: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every xtables module, and every library each one loads, resolves inside the image.
    let modules = root.join("usr/lib/x86_64-linux-gnu/xtables");
    let mut checked = 0;
    for entry in std::fs::read_dir(&modules).expect("the image has the xtables modules") {
        let name = entry.expect("entry").file_name().into_string().expect("UTF-8 name");
        let inside = format!("/usr/lib/x86_64-linux-gnu/xtables/{name}");
        let output = Command::new("chroot")
            .arg(&root)
            .args(["/lib64/ld-linux-x86-64.so.2", "--list", &inside])
            .output()
            .expect("chroot runs");
        let listing = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && !listing.contains("not found"), "{name} in the image: {listing}");
        checked += 1;
    }
    assert!(checked > 50, "only {checked} xtables modules in the image");
    // And they work: the matches the agent renders, restored into a fresh namespace by the image's tools.
    let rules = "*filter\n:PAL-TEST - [0:0]\n-A PAL-TEST -m set --match-set pal4-test src -m comment --comment x -j ACCEPT\n\
                 -A PAL-TEST -p tcp -m multiport --dports 80,443 -m conntrack --ctstate NEW -m mark --mark 0x10000/0x10000 -j DROP\n\
                 COMMIT\n";
    let script = format!(
        "chroot {root} /usr/sbin/ipset create pal4-test hash:net && \
         printf '{rules}' | chroot {root} /usr/sbin/iptables-nft-restore --noflush && \
         printf '{rules}' | chroot {root} /usr/sbin/iptables-legacy-restore --noflush && \
         chroot {root} /usr/sbin/iptables-nft-save | grep -q 'match-set pal4-test'",
        root = root.display()
    );
    let output = Command::new("unshare").args(["--net", "sh", "-c", &script]).output().expect("unshare runs");
    assert!(
        output.status.success(),
        "the image's iptables cannot restore the agent's matches: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `(ServiceAccount, scope, resource, verbs)` rows of the chart README's RBAC table.
fn documented_rbac() -> Vec<(String, String, String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(repository_root().join("charts/palisade/README.md")).expect("chart README");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| ServiceAccount |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [account, scope, resource, verbs] = cells[..] else { panic!("a row of four cells: {line}") };
        if resource == "—" {
            rows.push((account.to_owned(), scope.to_owned(), String::new(), BTreeSet::new()));
            continue;
        }
        rows.push((account.into(), scope.into(), resource.into(), verbs.split(", ").map(str::to_owned).collect()));
    }
    assert!(rows.len() > 10, "the RBAC table was not found in the chart README");
    rows
}

/// What `account` may do in `namespace`, by `kubectl auth can-i --list` as that ServiceAccount,
/// without what every authenticated user may do.
fn granted(cluster: &RealCluster, account: &str, namespace: &str) -> BTreeMap<String, BTreeSet<String>> {
    let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:palisade-{account}");
    let listing = cluster.kubectl_ok(&["auth", "can-i", "--list", "--as", &user, "-n", namespace]).expect("can-i");
    let everyone = ["selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"];
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in listing.lines().skip(1) {
        let Some(resource) = line.split_whitespace().next() else { continue };
        if resource.starts_with('[') || everyone.iter().any(|e| resource.starts_with(e)) {
            continue; // a non-resource URL (discovery), or a self-review
        }
        let verbs = line.rsplit_once('[').map(|(_, verbs)| verbs.trim_end_matches(']')).unwrap_or_default();
        granted.entry(resource.to_owned()).or_default().extend(verbs.split_whitespace().map(str::to_owned));
    }
    granted
}

fn expected(
    rows: &[(String, String, String, BTreeSet<String>)],
    account: &str,
    in_release: bool,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (row_account, scope, resource, verbs) in rows {
        if row_account == account && !resource.is_empty() && (scope == "cluster" || in_release) {
            expected.entry(resource.clone()).or_default().extend(verbs.iter().cloned());
        }
    }
    expected
}

/// Connects from pod `ns/pod` to `ip`:PORT with the image's probe: true when the TCP handshake completes.
fn connects(cluster: &RealCluster, from: &str, ip: &str) -> bool {
    let (namespace, pod) = from.split_once('/').expect("ns/pod");
    cluster
        .kubectl(&[
            "exec",
            "-n",
            namespace,
            pod,
            "--",
            "palisade-probe",
            "connect",
            "--to",
            ip,
            "--tcp",
            PORT,
            "--timeout-ms",
            "1000",
        ])
        .map(|output| output.status.success())
        .unwrap_or(false)
}

fn eventually(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {seconds} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every node's netfilter state apart from counters, both backends, both families, compared in
/// order, except what kube-proxy rewrites whole on each sync as Services come and go: the order in
/// which its chains were created, and the order of rules inside its `KUBE-` chains (each matches a
/// distinct ClusterIP and port). Everything else (any other tool's rules) must keep its order.
fn foreign_rules(cluster: &RealCluster) -> String {
    let mut all = String::new();
    for node in cluster.node_names() {
        for save in ["iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"] {
            let text = cluster.in_node(&node, save, &[]).expect("iptables-save");
            all.push_str(&format!("## {node} {save}\n"));
            let mut run: Vec<String> = Vec::new(); // consecutive lines that may be reordered
            let mut run_key = String::new();
            let flush = |run: &mut Vec<String>, all: &mut String| {
                run.sort();
                for line in run.drain(..) {
                    all.push_str(&line);
                    all.push('\n');
                }
            };
            for line in text.lines().filter(|line| !line.starts_with('#')) {
                // Chain lines carry packet counters: ":KUBE-SERVICES - [12:720]".
                let line = match line.rfind(" [") {
                    Some(at) if line.starts_with(':') => &line[..at],
                    _ => line,
                };
                let key = if line.starts_with(':') {
                    ":".to_owned()
                } else if let Some(chain) = line.strip_prefix("-A KUBE-") {
                    format!("-A KUBE-{}", chain.split_whitespace().next().unwrap_or_default())
                } else {
                    String::new()
                };
                if key != run_key {
                    flush(&mut run, &mut all);
                    run_key = key.clone();
                }
                if key.is_empty() {
                    all.push_str(line);
                    all.push('\n');
                } else {
                    run.push(line.to_owned());
                }
            }
            flush(&mut run, &mut all);
        }
    }
    all
}

fn palisade_leftovers(cluster: &RealCluster) -> Vec<String> {
    let mut left = Vec::new();
    for node in cluster.node_names() {
        for save in ["iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"] {
            let text = cluster.in_node(&node, save, &[]).expect("iptables-save");
            left.extend(text.lines().filter(|l| l.contains("PAL-")).map(|l| format!("{node} {save}: {l}")));
        }
        let sets = cluster.in_node(&node, "ipset", &["list", "-n"]).expect("ipset list");
        left.extend(
            sets.lines()
                .filter(|s| s.starts_with("pal4-") || s.starts_with("pal6-"))
                .map(|s| format!("{node} set {s}")),
        );
    }
    left
}

fn pod_ips(cluster: &RealCluster, namespace: &str, pod: &str) -> Vec<String> {
    let ips = cluster
        .kubectl_ok(&["get", "pod", "-n", namespace, pod, "-o", "jsonpath={.status.podIPs[*].ip}"])
        .expect("pod IPs");
    ips.split_whitespace().map(str::to_owned).collect()
}

fn workloads(nodes: &[String]) -> String {
    let pod = |name: &str, role: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{role: {role}}}}}\n\
             spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: probe\n    \
             image: palisade.dev/probe:dev\n    imagePullPolicy: Never\n    args: [serve, --name, web/{name}, --tcp, \"{PORT}\"]\n---\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: web}}\n---\n{}{}{}{}\
         apiVersion: v1\nkind: Service\nmetadata: {{name: servers, namespace: web}}\n\
         spec: {{selector: {{role: server}}, ipFamilyPolicy: PreferDualStack, ports: [{{port: {PORT}}}]}}\n",
        pod("server-1", "server", &nodes[0]),
        pod("server-2", "server", &nodes[1]),
        pod("client-ok", "client", &nodes[0]),
        pod("client-bad", "other", &nodes[1]),
    )
}

const ONLY_CLIENTS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: servers-from-clients, namespace: web}
spec:
  podSelector: {matchLabels: {role: server}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
      ports: [{protocol: TCP, port: 8080}]
";

#[test]
fn the_chart_installs_enforces_upgrades_without_gaps_and_uninstalls_cleanly() {
    let started = Instant::now();
    let cluster = RealCluster::start(2).expect("a real cluster");
    let nodes = cluster.node_names();
    println!("cluster up in {:.1} s", started.elapsed().as_secs_f64());

    // Workloads first, so kube-proxy's rules for them are part of what must survive unchanged.
    cluster.kubectl_stdin(&["apply", "-f", "-"], &workloads(&nodes)).expect("workloads");
    cluster
        .kubectl_ok(&["wait", "--for=condition=Ready", "pod", "--all", "-n", "web", "--timeout=90s"])
        .expect("pods Ready");
    let service_ip = cluster
        .kubectl_ok(&["get", "svc", "-n", "web", "servers", "-o", "jsonpath={.spec.clusterIP}"])
        .expect("ClusterIP");
    std::thread::sleep(Duration::from_secs(2)); // kube-proxy's sync after the Service appeared
    let before = foreign_rules(&cluster);

    // The chart is accepted by the server as rendered, then installs and becomes ready.
    let chart = chart();
    let rendered = cluster
        .helm_ok(&["template", "palisade", &chart, "--include-crds", "--namespace", RELEASE_NAMESPACE])
        .expect("template");
    cluster.kubectl_ok(&["create", "namespace", RELEASE_NAMESPACE]).expect("release namespace");
    let dry_run = cluster.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered).expect("kubectl runs");
    assert!(
        dry_run.status.success(),
        "the server refuses the rendered chart: {}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    let install = Instant::now();
    cluster
        .helm_ok(&[
            "install",
            "palisade",
            &chart,
            "--namespace",
            RELEASE_NAMESPACE,
            "--set",
            "image.pullPolicy=Never",
            "--set",
            OPERATOR_CLUSTER_IP,
            "--wait",
            "--timeout",
            "180s",
        ])
        .expect("helm install --wait");
    println!("helm install --wait: {:.1} s", install.elapsed().as_secs_f64());

    // The chart's own end-to-end check passes.
    let helm_test = Instant::now();
    cluster.helm_ok(&["test", "palisade", "--namespace", RELEASE_NAMESPACE, "--timeout", "180s"]).expect("helm test");
    println!("helm test: {:.1} s", helm_test.elapsed().as_secs_f64());

    // RBAC exactly as the chart README documents it.
    let rows = documented_rbac();
    for account in ["operator", "agent", "webhook"] {
        assert_eq!(
            granted(&cluster, account, RELEASE_NAMESPACE),
            expected(&rows, account, true),
            "{account} in {RELEASE_NAMESPACE}"
        );
        assert_eq!(granted(&cluster, account, "default"), expected(&rows, account, false), "{account} elsewhere");
    }
    // The uninstall hook's account exists only while the hook runs: its RBAC, rendered alone.
    let hook = cluster
        .helm_ok(&[
            "template",
            "palisade",
            &chart,
            "--namespace",
            RELEASE_NAMESPACE,
            "--set",
            "cleanupOnUninstall=true",
            "--show-only",
            "templates/uninstall.yaml",
        ])
        .expect("the uninstall hook");
    let hook_rbac: Vec<&str> = hook.split("\n---").filter(|doc| !doc.contains("kind: Job")).collect();
    let hook_rbac = hook_rbac.join("\n---");
    cluster.kubectl_stdin(&["apply", "-f", "-"], &hook_rbac).expect("hook RBAC");
    assert_eq!(
        granted(&cluster, "uninstall", RELEASE_NAMESPACE),
        expected(&rows, "uninstall", true),
        "uninstall in {RELEASE_NAMESPACE}"
    );
    assert_eq!(granted(&cluster, "uninstall", "default"), expected(&rows, "uninstall", false), "uninstall elsewhere");
    cluster.kubectl_stdin(&["delete", "-f", "-"], &hook_rbac).expect("hook RBAC removed");

    // Enforcement on real pods: same node and cross node, IPv4 and IPv6, pod IPs and the ClusterIP.
    cluster.kubectl_stdin(&["apply", "-f", "-"], ONLY_CLIENTS).expect("policy");
    let server_ips: Vec<String> = ["server-1", "server-2"].iter().flat_map(|s| pod_ips(&cluster, "web", s)).collect();
    assert_eq!(server_ips.len(), 4, "dual-stack servers: {server_ips:?}");
    let mut targets = server_ips.clone();
    targets.push(service_ip.clone());
    eventually("the policy to be enforced", 60, || {
        targets.iter().all(|ip| connects(&cluster, "web/client-ok", ip) && !connects(&cluster, "web/client-bad", ip))
    });

    // An upgrade that restarts every agent, under continuous probing.
    let agents_before = cluster
        .kubectl_ok(&["get", "pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/component=agent", "-o", "name"])
        .expect("agents");
    let stop = Arc::new(AtomicBool::new(false));
    let cluster = Arc::new(cluster);
    let prober = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        let (allowed, denied) = (server_ips[2].clone(), server_ips[0].clone()); // cross node, same node
        std::thread::spawn(move || {
            let (mut probes, mut leaks, mut blackholes) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                if connects(&cluster, "web/client-bad", &denied) {
                    leaks += 1;
                }
                if !connects(&cluster, "web/client-ok", &allowed) {
                    blackholes += 1;
                }
                probes += 1;
            }
            (probes, leaks, blackholes)
        })
    };
    let upgrade = Instant::now();
    cluster
        .helm_ok(&[
            "upgrade",
            "palisade",
            &chart,
            "--namespace",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "agent.resyncSeconds=45",
            "--wait",
            "--timeout",
            "180s",
        ])
        .expect("helm upgrade --wait");
    cluster
        .kubectl_ok(&["rollout", "status", "-n", RELEASE_NAMESPACE, "daemonset/palisade-agent", "--timeout=120s"])
        .expect("rollout");
    let upgrade_seconds = upgrade.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (probes, leaks, blackholes) = prober.join().expect("prober");
    let agents_after = cluster
        .kubectl_ok(&["get", "pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/component=agent", "-o", "name"])
        .expect("agents");
    println!(
        "helm upgrade (agents restarted): {upgrade_seconds:.1} s, {probes} probe pairs, {leaks} leaks, {blackholes} blackholes"
    );
    assert!(agents_before.lines().all(|pod| !agents_after.contains(pod)), "the upgrade restarted no agent");
    assert!(probes >= 5, "only {probes} probe pairs during the upgrade");
    assert_eq!((leaks, blackholes), (0, 0), "the upgrade opened a denied flow or closed an allowed one");

    // Uninstall: the hook cleans every node, and what was there before is there again, unchanged.
    let uninstall = Instant::now();
    cluster
        .helm_ok(&["uninstall", "palisade", "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "180s"])
        .expect("helm uninstall");
    println!("helm uninstall: {:.1} s", uninstall.elapsed().as_secs_f64());
    let left = palisade_leftovers(&cluster);
    assert!(left.is_empty(), "Palisade left on the nodes after uninstall: {left:#?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = foreign_rules(&cluster);
        if after == before {
            break;
        }
        if Instant::now() > deadline {
            let changed: Vec<&str> = after.lines().filter(|line| !before.contains(line)).collect();
            let lost: Vec<&str> = before.lines().filter(|line| !after.contains(line)).collect();
            panic!("foreign rules changed across install and uninstall: new {changed:#?}, lost {lost:#?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // The policy is no longer enforced: nothing is left in the kernel to enforce it.
    assert!(connects(&cluster, "web/client-bad", &server_ips[0]), "a denied flow stayed denied after uninstall");
}
