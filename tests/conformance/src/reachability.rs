//! Expected connectivity between pods for one probe, built the way upstream builds it
//! (`NewReachability`, `Expect`, `ExpectAllIngress`, `ExpectAllEgress`, `ExpectPeer`), so a ported
//! case reads like the Go it came from. Cells nobody asserts (loopback in the Netpol suite, pairs
//! the ClusterNetworkPolicy suite never probes) are absent, and runners must not probe-and-judge them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::model::PodId;

/// Matches pods by namespace and/or name; an empty field matches everything (upstream's `Peer`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl Peer {
    /// Every pod.
    pub fn any() -> Peer {
        Peer::default()
    }

    /// Every pod of a namespace.
    pub fn namespace(namespace: &str) -> Peer {
        Peer { namespace: Some(namespace.to_owned()), pod: None }
    }

    /// One pod.
    pub fn pod(namespace: &str, pod: &str) -> Peer {
        Peer { namespace: Some(namespace.to_owned()), pod: Some(pod.to_owned()) }
    }

    pub fn matches(&self, id: &PodId) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == id.namespace) && self.pod.as_ref().is_none_or(|p| *p == id.name)
    }
}

/// `from -> to -> connected` over a fixed list of pods. Only asserted cells are stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    pods: Vec<PodId>,
    expected: BTreeMap<PodId, BTreeMap<PodId, bool>>,
}

/// One cell where what was observed differs from what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub from: PodId,
    pub to: PodId,
    pub expected: bool,
    pub observed: bool,
}

impl Reachability {
    /// Every cell asserted, all `default` (upstream's `NewReachability(pods, default)`).
    pub fn new(pods: &[PodId], default: bool) -> Reachability {
        let mut reachability = Reachability::unasserted(pods);
        for from in pods {
            for to in pods {
                reachability.expect(from, to, default);
            }
        }
        reachability
    }

    /// No cell asserted yet; for suites that probe chosen pairs only.
    pub fn unasserted(pods: &[PodId]) -> Reachability {
        Reachability { pods: pods.to_vec(), expected: BTreeMap::new() }
    }

    pub fn pods(&self) -> &[PodId] {
        &self.pods
    }

    /// Asserts one cell (upstream's `Expect`).
    pub fn expect(&mut self, from: &PodId, to: &PodId, connected: bool) -> &mut Self {
        self.expected.entry(from.clone()).or_default().insert(to.clone(), connected);
        self
    }

    /// Every pod to `to` (upstream's `ExpectAllIngress`).
    pub fn expect_all_ingress(&mut self, to: &PodId, connected: bool) -> &mut Self {
        for from in self.pods.clone() {
            self.expect(&from, to, connected);
        }
        self
    }

    /// `from` to every pod (upstream's `ExpectAllEgress`).
    pub fn expect_all_egress(&mut self, from: &PodId, connected: bool) -> &mut Self {
        for to in self.pods.clone() {
            self.expect(from, &to, connected);
        }
        self
    }

    /// Every matching pair (upstream's `ExpectPeer`).
    pub fn expect_peer(&mut self, from: &Peer, to: &Peer, connected: bool) -> &mut Self {
        let pods = self.pods.clone();
        for source in pods.iter().filter(|pod| from.matches(pod)) {
            for target in pods.iter().filter(|pod| to.matches(pod)) {
                self.expect(source, target, connected);
            }
        }
        self
    }

    /// Drops the diagonal: upstream never judges a pod talking to itself (`ignoreLoopback`),
    /// because CNIs disagree on it.
    pub fn ignore_loopback(&mut self) -> &mut Self {
        for (from, row) in &mut self.expected {
            row.remove(from);
        }
        self
    }

    /// The expected value of a cell, `None` when the cell is not asserted.
    pub fn get(&self, from: &PodId, to: &PodId) -> Option<bool> {
        self.expected.get(from)?.get(to).copied()
    }

    /// Asserted cells in row-major pod order.
    pub fn cells(&self) -> Vec<(PodId, PodId, bool)> {
        let mut cells = Vec::new();
        for from in &self.pods {
            for to in &self.pods {
                if let Some(connected) = self.get(from, to) {
                    cells.push((from.clone(), to.clone(), connected));
                }
            }
        }
        cells
    }

    /// Compares every asserted cell with `observe(from, to)`.
    pub fn compare(&self, mut observe: impl FnMut(&PodId, &PodId) -> bool) -> Comparison {
        let mut observed = BTreeMap::new();
        let mut mismatches = Vec::new();
        for (from, to, expected) in self.cells() {
            let got = observe(&from, &to);
            if got != expected {
                mismatches.push(Mismatch { from: from.clone(), to: to.clone(), expected, observed: got });
            }
            observed.insert((from, to), got);
        }
        Comparison { pods: self.pods.clone(), expected: self.clone(), observed, mismatches }
    }

    /// The grid: rows are sources, columns destinations; `.` connected, `X` blocked, blank not asserted.
    pub fn render(&self) -> String {
        render_grid(&self.pods, |from, to| match self.get(from, to) {
            Some(true) => ".".to_owned(),
            Some(false) => "X".to_owned(),
            None => String::new(),
        })
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// An expectation judged against observations.
#[derive(Clone, Debug)]
pub struct Comparison {
    pods: Vec<PodId>,
    expected: Reachability,
    observed: BTreeMap<(PodId, PodId), bool>,
    pub mismatches: Vec<Mismatch>,
}

impl Comparison {
    pub fn is_match(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl fmt::Display for Comparison {
    /// Expected grid, observed grid with mismatches in `*stars*`, then one line per mismatch.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "expected:\n{}", self.expected.render())?;
        let observed = render_grid(&self.pods, |from, to| {
            let Some(got) = self.observed.get(&(from.clone(), to.clone())) else { return String::new() };
            let mark = if *got { "." } else { "X" };
            if self.expected.get(from, to) == Some(*got) { mark.to_owned() } else { format!("*{mark}*") }
        });
        writeln!(f, "observed (mismatches in *stars*):\n{observed}")?;
        for mismatch in &self.mismatches {
            let word = |connected: bool| if connected { "connected" } else { "blocked" };
            writeln!(
                f,
                "  {} -> {}: expected {}, got {}",
                mismatch.from,
                mismatch.to,
                word(mismatch.expected),
                word(mismatch.observed)
            )?;
        }
        Ok(())
    }
}

fn render_grid(pods: &[PodId], cell: impl Fn(&PodId, &PodId) -> String) -> String {
    let names: Vec<String> = pods.iter().map(PodId::to_string).collect();
    let width = names.iter().map(String::len).max().unwrap_or(1).max(3) + 1;
    let mut out = String::new();
    let _ = write!(out, "{:width$}", "-");
    for name in &names {
        let _ = write!(out, "{name:>width$}");
    }
    out.push('\n');
    for (from, from_name) in pods.iter().zip(&names) {
        let _ = write!(out, "{from_name:width$}");
        for to in pods {
            let _ = write!(out, "{:>width$}", cell(from, to));
        }
        out.push('\n');
    }
    out
}
