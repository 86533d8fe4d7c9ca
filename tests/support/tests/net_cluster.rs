//! Smoke tests of the network-namespace cluster: real packets between pod namespaces across nodes,
//! the API server's view matching the wires, the matrix diff, refused vs dropped, ClusterIP DNAT.
//! These need root (CI is root) and fail with a clear message otherwise.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as K8sNode, Pod as K8sPod};
use kube::api::Api;
use palisade_testkit::{
    ClusterSpec, ControlPlane, DEFAULT_PROBE_TIMEOUT, Family, NetCluster, Port, ProbeOutcome, Protocol,
};

fn build(spec: ClusterSpec) -> NetCluster {
    palisade_testkit::netns::require_root().expect("network-namespace tests must run as root");
    let started = Instant::now();
    let cluster = NetCluster::build(spec).expect("build the namespace cluster");
    eprintln!(
        "built {} nodes / {} pods in {:.2?} (run {})",
        cluster.nodes().len(),
        cluster.pods().len(),
        started.elapsed(),
        cluster.run_id()
    );
    cluster
}

/// Two nodes, one pod each, serving TCP and UDP 80.
fn two_pods() -> ClusterSpec {
    let ports = [Port::tcp(80), Port::udp(80)];
    ClusterSpec::new().node("n1").node("n2").pod("x", "a", "n1", &ports).pod("y", "b", "n2", &ports)
}

#[tokio::test]
async fn probes_cross_nodes_over_tcp_and_udp_on_both_families() {
    let cluster = build(two_pods());
    let (a, b) = (cluster.pod("x/a").expect("x/a"), cluster.pod("y/b").expect("y/b"));
    assert_ne!(a.node, b.node, "the pods must sit on different nodes");
    for family in [Family::V4, Family::V6] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let outcome = cluster.probe("x/a", b.ip(family), protocol, 80, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
            assert_eq!(outcome, ProbeOutcome::Connected { peer: "y/b".into() }, "{protocol} {family} x/a -> y/b");
            let back = cluster.probe("y/b", a.ip(family), protocol, 80, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
            assert_eq!(back, ProbeOutcome::Connected { peer: "x/a".into() }, "{protocol} {family} y/b -> x/a");
        }
        // Pods reach their node's address too (the hostIP).
        let node = cluster.node(&a.node).expect("node");
        let to_node =
            cluster.probe("x/a", node.ip(family), Protocol::Tcp, 9, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
        assert_eq!(to_node, ProbeOutcome::Refused, "{family}: the node answers (with a RST) for its own address");
    }
}

#[tokio::test]
async fn refused_and_dropped_are_distinguished() {
    let cluster = build(two_pods());
    let b = cluster.pod("y/b").expect("y/b");
    for family in [Family::V4, Family::V6] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let outcome =
                cluster.probe("x/a", b.ip(family), protocol, 9999, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
            assert_eq!(outcome, ProbeOutcome::Refused, "{protocol} {family} to a closed port");
        }
    }
    let tool = |family| if family == Family::V4 { "iptables" } else { "ip6tables" };
    for family in [Family::V4, Family::V6] {
        let dst = b.ip(family).to_string();
        cluster.node_exec("n1", &[tool(family), "-w", "-I", "FORWARD", "-d", &dst, "-j", "DROP"]).expect("iptables");
    }
    for family in [Family::V4, Family::V6] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let started = Instant::now();
            let outcome = cluster.probe("x/a", b.ip(family), protocol, 80, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
            assert_eq!(outcome, ProbeOutcome::Dropped, "{protocol} {family} through a DROP rule");
            assert!(started.elapsed() >= DEFAULT_PROBE_TIMEOUT, "a drop is only known after the timeout");
        }
    }
}

#[tokio::test]
async fn an_iptables_drop_flips_exactly_one_matrix_cell() {
    let ports = [Port::tcp(80)];
    let cluster = build(ClusterSpec::grid(&["x", "y"], &["a", "b"], 2, &ports));
    for family in [Family::V4, Family::V6] {
        let before = cluster.probe_matrix(Port::tcp(80), family).await.expect("matrix");
        before.assert_matches(|_, _| true);

        let (from, to) = (cluster.pod("x/a").expect("x/a"), cluster.pod("y/b").expect("y/b"));
        let (src, dst) = (from.ip(family).to_string(), to.ip(family).to_string());
        let tool = if family == Family::V4 { "iptables" } else { "ip6tables" };
        // Only new connections, so replies of y/b -> x/a are untouched.
        cluster
            .node_exec(
                &from.node,
                &[
                    tool,
                    "-w",
                    "-I",
                    "FORWARD",
                    "-s",
                    &src,
                    "-d",
                    &dst,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW",
                    "-j",
                    "DROP",
                ],
            )
            .expect("iptables");

        let after = cluster.probe_matrix(Port::tcp(80), family).await.expect("matrix");
        let diff = after.compare(|_, _| true);
        println!("{diff}");
        assert_eq!(diff.mismatched_cells(), vec![("x/a".to_string(), "y/b".to_string())], "{diff}");
        assert_eq!(after.get("x/a", "y/b"), Some(&ProbeOutcome::Dropped));
        assert!(diff.to_string().contains("*X*"), "the grid marks the changed cell:\n{diff}");
        // With the expectation updated, the matrix matches again.
        after.assert_matches(|f, t| !(f.id() == "x/a" && t.id() == "y/b"));
    }
}

/// The 3 namespaces × 3 pods model on 2 nodes, registered in the apiserver: every Pod object's IP is
/// really configured in that pod's namespace, and everything reaches everything on all four ports.
#[tokio::test]
async fn netpol_model_matches_the_apiserver_and_is_fully_connected() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let cluster = build(ClusterSpec::netpol_matrix());
    assert_eq!((cluster.nodes().len(), cluster.pods().len()), (2, 9));
    let client = plane.admin_client().expect("client");
    let started = Instant::now();
    cluster.register(&client).await.expect("register nodes and pods");
    eprintln!("registered in {:.2?}", started.elapsed());

    for pod in cluster.pods() {
        let namespace = cluster.k8s_namespace(&pod.namespace);
        let object = Api::<K8sPod>::namespaced(client.clone(), &namespace).get(&pod.name).await.expect("get pod");
        let status = object.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let pod_ip: IpAddr = status.pod_ip.expect("podIP").parse().expect("podIP parses");
        let configured = cluster.exec(&pod.netns, &["ip", "-o", "addr", "show", "dev", "eth0"]).expect("ip addr");
        assert!(
            configured.contains(&format!(" {pod_ip}/")),
            "{} has podIP {pod_ip} but eth0 holds:\n{configured}",
            pod.id()
        );
        let all_ips: Vec<String> = status.pod_ips.unwrap_or_default().into_iter().map(|p| p.ip).collect();
        assert_eq!(all_ips, vec![pod.ipv4.to_string(), pod.ipv6.to_string()]);

        let node_name = object.spec.and_then(|s| s.node_name).expect("nodeName");
        let node = Api::<K8sNode>::all(client.clone()).get(&node_name).await.expect("get node");
        let internal: Vec<String> = node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect();
        assert_eq!(status.host_ip.as_deref(), internal.first().map(String::as_str));
        let node_addrs = cluster.exec(&node_name, &["ip", "-o", "addr", "show", "dev", "fab0"]).expect("node addr");
        assert!(node_addrs.contains(&format!(" {}/", internal[0])), "node {node_name} lacks {}", internal[0]);
    }

    for port in [Port::tcp(80), Port::tcp(81), Port::udp(80), Port::udp(81)] {
        let started = Instant::now();
        let matrix = cluster.probe_matrix(port, Family::V4).await.expect("matrix");
        eprintln!("9x9 {port} matrix in {:.2?}", started.elapsed());
        matrix.assert_matches(|_, _| true);
    }
}

#[tokio::test]
async fn cluster_ip_dnat_reaches_the_backend_and_policy_applies_after_dnat() {
    let ports = [Port::tcp(80)];
    let cluster =
        build(ClusterSpec::new().node("n1").node("n2").pod("x", "a", "n1", &ports).pod("y", "b", "n2", &ports));
    let vip: IpAddr = "198.19.255.100".parse().expect("vip");
    cluster.add_cluster_ip_service(vip, Port::tcp(8080), &[("y/b", 80)]).expect("service");
    let outcome = cluster.probe("x/a", vip, Protocol::Tcp, 8080, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
    assert_eq!(outcome, ProbeOutcome::Connected { peer: "y/b".into() });

    // A rule on the backend's address and real port (as a NetworkPolicy would be) catches VIP traffic.
    let b = cluster.pod("y/b").expect("y/b").ipv4.to_string();
    cluster
        .node_exec("n1", &["iptables", "-w", "-I", "FORWARD", "-d", &b, "-p", "tcp", "--dport", "80", "-j", "DROP"])
        .expect("iptables");
    let outcome = cluster.probe("x/a", vip, Protocol::Tcp, 8080, DEFAULT_PROBE_TIMEOUT).await.expect("probe");
    assert_eq!(outcome, ProbeOutcome::Dropped);
}

#[tokio::test]
async fn namespaces_are_removed_on_drop_and_leftovers_of_dead_runs_are_swept() {
    // A namespace that looks like it was left by a process that no longer exists.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead_pid = child.id();
    child.wait().expect("wait");
    let leftover = format!("pal-{dead_pid}-1-n1");
    palisade_testkit::netns::require_root().expect("network-namespace tests must run as root");
    std::process::Command::new("ip").args(["netns", "add", &leftover]).status().expect("ip netns add");

    let cluster = build(ClusterSpec::new().node("n1").pod("x", "a", "n1", &[Port::tcp(80)]));
    assert!(!std::path::Path::new(&format!("/run/netns/{leftover}")).exists(), "leftover {leftover} was not swept");

    let names: Vec<String> =
        cluster.nodes().iter().map(|n| n.netns.clone()).chain(cluster.pods().iter().map(|p| p.netns.clone())).collect();
    for name in &names {
        assert!(std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
    drop(cluster);
    tokio::time::sleep(Duration::from_millis(10)).await;
    for name in &names {
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists(), "{name} survived drop");
    }
}

/// Agents run inside node namespaces, where the root namespace's loopback is out of reach: the
/// relay makes the apiserver answer at the `kubernetes` Service address from nodes and pods.
#[tokio::test]
async fn apiserver_is_reachable_from_node_and_pod_namespaces() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let mut cluster = build(ClusterSpec::new().node("n1").pod("x", "a", "n1", &[Port::tcp(80)]));
    let url = cluster.expose_apiserver(plane).expect("relay");
    assert_eq!(url, "https://198.19.255.1:443");
    let kubeconfig = plane.kubeconfig_for(&url, None);
    assert!(kubeconfig.contains("server: https://198.19.255.1:443"));

    for netns in [cluster.node("n1").expect("n1").netns.clone(), cluster.pod("x/a").expect("x/a").netns.clone()] {
        // Plain HTTP to the TLS port: only a Go TLS server answers with this exact complaint.
        let answer = palisade_testkit::netns::in_netns_async(&netns, || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect_timeout(
                &"198.19.255.1:443".parse().expect("addr"),
                Duration::from_secs(2),
            )?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET /version HTTP/1.0\r\n\r\n")?;
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            Ok::<_, std::io::Error>(reply)
        })
        .await
        .expect("thread in netns")
        .expect("connect through the relay");
        assert!(answer.contains("HTTP request to an HTTPS server"), "{netns}: {answer}");
    }
}
