//! What the benches measure, one way each: how long until a flow flips, how many new connections
//! a second get through, what a node's kernel holds, and what a process costs. The benches print
//! these figures; nothing here asserts a time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use palisade_conformance::model::{labels, namespace_labels};
use palisade_conformance::{ContainerPort, Model, ModelNamespace, ModelNode, ModelPod, PodId, Protocol};

use crate::cluster::ModelCluster;
use crate::error::{Error, Result};

/// The benches' wired pods: x/a, x/b, y/a, y/b (labelled `pod=<name>`, serving TCP 80) over
/// `nodes` nodes `n1`… (round robin in that order), namespaces labelled `ns=<name>`.
pub fn wired_model(nodes: usize) -> Model {
    let ports = vec![ContainerPort { name: Some("serve-80-tcp".into()), protocol: Protocol::Tcp, port: 80 }];
    Model {
        nodes: (1..=nodes)
            .map(|i| ModelNode {
                name: format!("n{i}"),
                labels: labels(&[("kubernetes.io/hostname", &format!("n{i}")), ("kubernetes.io/os", "linux")]),
            })
            .collect(),
        namespaces: ["x", "y"]
            .iter()
            .map(|ns| ModelNamespace { name: (*ns).into(), labels: namespace_labels(ns, &[("ns", ns)]) })
            .collect(),
        pods: [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b")]
            .iter()
            .map(|(ns, name)| ModelPod {
                namespace: (*ns).into(),
                name: (*name).into(),
                labels: labels(&[("pod", name)]),
                ports: ports.clone(),
                host_network: false,
            })
            .collect(),
    }
}

/// Probes `from -> to` on TCP `port` back to back until `streak` probes in a row see
/// `connected`; returns the time from `since` to the start of the first probe of that streak.
/// A streak, not one probe, so that a flow that flickers while an enforcer rewrites its rules
/// counts only once it holds. `timeout` is what one probe waits (the resolution of the
/// "connects" direction when the flow was dropped).
pub async fn flip_time(
    cluster: &ModelCluster,
    (from, to): (&PodId, &PodId),
    port: u16,
    connected: bool,
    since: Instant,
    (timeout, streak, deadline): (Duration, usize, Duration),
) -> Result<Duration> {
    let mut first_of_streak: Option<Instant> = None;
    let mut seen = 0;
    loop {
        let started = Instant::now();
        let outcome = cluster
            .probe(from, to, Protocol::Tcp, port, timeout)
            .await?
            .ok_or_else(|| Error::Setup("TCP probes are always possible".into()))?;
        if outcome.is_connected() == connected {
            let first = *first_of_streak.get_or_insert(started);
            seen += 1;
            if seen >= streak {
                return Ok(first.saturating_duration_since(since));
            }
        } else {
            first_of_streak = None;
            seen = 0;
        }
        if since.elapsed() > deadline {
            return Err(Error::Timeout {
                what: format!("{from} -> {to}:{port} to become connected={connected}"),
                seconds: deadline.as_secs(),
                detail: format!("the last probe saw {outcome:?}"),
            });
        }
    }
}

/// New TCP connections completed per second (connect, read the probe server's greeting to EOF,
/// close) from `from` to `to:port` during `run`, one thread in `from`'s namespace; and how many
/// attempts failed.
pub async fn connection_rate(
    cluster: &ModelCluster,
    (from, to): (&PodId, &PodId),
    port: u16,
    run: Duration,
) -> Result<(f64, u64)> {
    let netns = cluster.netns_of(from)?;
    let target = cluster
        .pod_ips(to)?
        .into_iter()
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| Error::Setup(format!("{to} has no IPv4")))?;
    let target = SocketAddr::new(target, port);
    let (completed, failed, elapsed) = palisade_testkit::netns::in_netns_async(&netns, move || {
        palisade_testkit::connection_rate_blocking(target, run)
    })
    .await?;
    Ok((completed as f64 / elapsed.as_secs_f64(), failed))
}

/// What a node's network namespace holds, as `iptables-save`, `ip6tables-save`, `ipset` and
/// `nft` print it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFigures {
    pub iptables_lines: usize,
    pub ip6tables_lines: usize,
    pub ipsets: usize,
    pub ipset_members: usize,
    /// Lines of nftables tables that are not iptables-nft's own (`ip filter`, `ip6 nat`, …).
    pub nft_lines: usize,
    /// Everything read, packet counters removed: equal dumps mean nothing was rewritten.
    pub dump: String,
}

impl KernelFigures {
    /// Reads the node's tables. Blocking (spawns the tools).
    pub fn read(cluster: &ModelCluster, node: &str) -> Result<KernelFigures> {
        let net = &cluster.net;
        let iptables = net.node_exec(node, &["iptables-save"])?;
        let ip6tables = net.node_exec(node, &["ip6tables-save"])?;
        let ipsets = net.node_exec(node, &["ipset", "list", "-t"])?;
        let mut nft = String::new();
        for line in net.node_exec(node, &["nft", "list", "tables"])?.lines() {
            let mut words = line.split_whitespace().skip(1);
            let (Some(family), Some(table)) = (words.next(), words.next()) else { continue };
            let iptables_own = matches!(family, "ip" | "ip6" | "inet" | "arp" | "bridge")
                && matches!(table, "filter" | "nat" | "mangle" | "raw" | "security");
            if !iptables_own {
                nft.push_str(&net.node_exec(node, &["nft", "list", "table", family, table])?);
            }
        }
        let rule_lines = |text: &str| text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
        let members = ipsets
            .lines()
            .filter_map(|l| l.strip_prefix("Number of entries: "))
            .filter_map(|n| n.trim().parse::<usize>().ok())
            .sum();
        let mut dump = String::new();
        for text in [&iptables, &ip6tables, &ipsets, &nft] {
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                // Chain lines carry packet counters (`:FORWARD ACCEPT [12:3456]`); traffic is not a rewrite.
                dump.push_str(line.split(" [").next().unwrap_or(line));
                dump.push('\n');
            }
        }
        Ok(KernelFigures {
            iptables_lines: rule_lines(&iptables),
            ip6tables_lines: rule_lines(&ip6tables),
            ipsets: ipsets.lines().filter(|l| l.starts_with("Name: ")).count(),
            ipset_members: members,
            nft_lines: rule_lines(&nft),
            dump,
        })
    }
}

/// Waits until no node's [`KernelFigures`] change for `quiet` in a row (polling every 250 ms),
/// at most `deadline`; returns the figures per node and how long the rules kept changing.
pub async fn settled_kernels(
    cluster: &std::sync::Arc<ModelCluster>,
    nodes: &[String],
    quiet: Duration,
    deadline: Duration,
) -> Result<(Vec<KernelFigures>, Duration)> {
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last: Vec<KernelFigures> = Vec::new();
    loop {
        let (cluster_now, nodes_now) = (cluster.clone(), nodes.to_vec());
        let now = tokio::task::spawn_blocking(move || {
            nodes_now.iter().map(|node| KernelFigures::read(&cluster_now, node)).collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Setup(format!("reading the kernel tables: {e}")))??;
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            return Ok((last, last_change.saturating_duration_since(started)));
        }
        if started.elapsed() > deadline {
            return Err(Error::Timeout {
                what: "the nodes' rules to stop changing".into(),
                seconds: deadline.as_secs(),
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a process costs, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// utime + stime.
    pub cpu_seconds: f64,
}

impl Footprint {
    /// `None` when the process is gone.
    pub fn of(pid: u32) -> Option<Footprint> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command: state is field 3; utime 14 and stime 15.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(Footprint {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            cpu_seconds: (utime + stime) as f64 / ticks,
        })
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// Waits until none of `pids` gains more than 50 ms of CPU time in a second, 3 seconds in a row
/// (the processes have digested what was sent to them), at most `deadline`; returns how long
/// that took.
pub async fn settle_cpu(pids: &[u32], deadline: Duration) -> Duration {
    let started = Instant::now();
    let cpu = || pids.iter().map(|p| Footprint::of(*p).map_or(0.0, |f| f.cpu_seconds)).collect::<Vec<f64>>();
    let mut last = cpu();
    let mut quiet = 0;
    while quiet < 3 && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu();
        let busy = now.iter().zip(&last).any(|(n, l)| n - l > 0.05);
        quiet = if busy { 0 } else { quiet + 1 };
        last = now;
    }
    started.elapsed()
}

/// The nearest-rank percentile `p` (0–100) of sorted samples; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
