//! Connectivity matrices: what every pod could reach, printed as a grid and diffed against an
//! expectation.

use std::fmt::{self, Write as _};

use crate::cluster::{Family, Pod, Port};
use crate::probe::ProbeOutcome;

/// A row/column header: the pod a cell is about.
#[derive(Clone, Debug)]
pub struct ReachabilityCell {
    pub pod: Pod,
}

impl From<Pod> for ReachabilityCell {
    fn from(pod: Pod) -> Self {
        ReachabilityCell { pod }
    }
}

/// Outcomes of probing `port` over `family` from every pod (rows) to every pod (columns).
#[derive(Clone, Debug)]
pub struct Reachability {
    pub port: Port,
    pub family: Family,
    pods: Vec<ReachabilityCell>,
    cells: Vec<Vec<ProbeOutcome>>,
}

/// One cell whose observation differs from the expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub from: String,
    pub to: String,
    pub expected_connected: bool,
    pub observed: ProbeOutcome,
}

/// The comparison of a [`Reachability`] with an expectation. `Display` shows the observed grid with
/// mismatched cells marked, then one line per mismatch.
#[derive(Clone, Debug)]
pub struct MatrixDiff {
    pub mismatches: Vec<Mismatch>,
    rendered: String,
}

impl MatrixDiff {
    pub fn is_match(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Mismatched cells as `(from, to)` ids, for asserting exactly which cells changed.
    pub fn mismatched_cells(&self) -> Vec<(String, String)> {
        self.mismatches.iter().map(|m| (m.from.clone(), m.to.clone())).collect()
    }
}

impl fmt::Display for MatrixDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl Reachability {
    pub(crate) fn new(port: Port, family: Family, pods: Vec<ReachabilityCell>, cells: Vec<Vec<ProbeOutcome>>) -> Self {
        Reachability { port, family, pods, cells }
    }

    /// The outcome from pod `from` to pod `to` (ids like `x/a`).
    pub fn get(&self, from: &str, to: &str) -> Option<&ProbeOutcome> {
        let row = self.pods.iter().position(|c| c.pod.id() == from)?;
        let column = self.pods.iter().position(|c| c.pod.id() == to)?;
        Some(&self.cells[row][column])
    }

    /// Pod ids in row/column order.
    pub fn pod_ids(&self) -> Vec<String> {
        self.pods.iter().map(|c| c.pod.id()).collect()
    }

    /// Compares with `expect(from, to)` (true = should connect). Any non-connected outcome counts
    /// as blocked; the grid still shows which kind.
    pub fn compare(&self, expect: impl Fn(&Pod, &Pod) -> bool) -> MatrixDiff {
        let mut mismatches = Vec::new();
        let mut marks = vec![vec![false; self.pods.len()]; self.pods.len()];
        for (row, from) in self.pods.iter().enumerate() {
            for (column, to) in self.pods.iter().enumerate() {
                let expected = expect(&from.pod, &to.pod);
                let observed = &self.cells[row][column];
                if observed.is_connected() != expected {
                    marks[row][column] = true;
                    mismatches.push(Mismatch {
                        from: from.pod.id(),
                        to: to.pod.id(),
                        expected_connected: expected,
                        observed: observed.clone(),
                    });
                }
            }
        }
        let mut rendered = self.render(Some(&marks));
        if mismatches.is_empty() {
            rendered.push_str("matches the expectation\n");
        } else {
            let _ = writeln!(rendered, "{} cell(s) differ from the expectation:", mismatches.len());
            for m in &mismatches {
                let expected = if m.expected_connected { "connected" } else { "blocked" };
                let _ = writeln!(rendered, "  {} -> {}: expected {expected}, observed {}", m.from, m.to, m.observed);
            }
        }
        MatrixDiff { mismatches, rendered }
    }

    /// Panics with the rendered diff unless every cell matches `expect`.
    #[track_caller]
    pub fn assert_matches(&self, expect: impl Fn(&Pod, &Pod) -> bool) {
        let diff = self.compare(expect);
        assert!(diff.is_match(), "reachability differs from the expectation\n{diff}");
    }

    /// The grid alone.
    pub fn grid(&self) -> String {
        self.render(None)
    }

    fn render(&self, marks: Option<&Vec<Vec<bool>>>) -> String {
        let ids = self.pod_ids();
        let width = ids.iter().map(String::len).max().unwrap_or(1).max(3);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} (rows: from, columns: to; . connected, X dropped, R refused, U unreachable, E error{})",
            self.port,
            self.family,
            if marks.is_some() { "; *c* = differs from expected" } else { "" }
        );
        let _ = write!(out, "{:width$}", "");
        for id in &ids {
            let _ = write!(out, " {id:^width$}");
        }
        out.push('\n');
        for (row, id) in ids.iter().enumerate() {
            let _ = write!(out, "{id:<width$}");
            for column in 0..ids.len() {
                let symbol = self.cells[row][column].symbol();
                let marked = marks.is_some_and(|m| m[row][column]);
                let cell = if marked { format!("*{symbol}*") } else { symbol.to_string() };
                let _ = write!(out, " {cell:^width$}");
            }
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.grid())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::probe::Protocol;

    fn pod(namespace: &str, name: &str) -> ReachabilityCell {
        ReachabilityCell::from(Pod {
            namespace: namespace.into(),
            name: name.into(),
            node: "n1".into(),
            netns: String::new(),
            host_veth: String::new(),
            labels: BTreeMap::new(),
            ports: vec![],
            ipv4: Ipv4Addr::LOCALHOST,
            ipv6: Ipv6Addr::LOCALHOST,
        })
    }

    #[test]
    fn diff_marks_exactly_the_differing_cells() {
        let ok = ProbeOutcome::Connected { peer: String::new() };
        let cells = vec![vec![ok.clone(), ProbeOutcome::Dropped], vec![ProbeOutcome::Refused, ok]];
        let matrix = Reachability::new(
            Port { protocol: Protocol::Tcp, number: 80 },
            Family::V4,
            vec![pod("x", "a"), pod("y", "b")],
            cells,
        );
        // Expect only y/b -> x/a blocked: x/a -> y/b is a surprise drop, y/b -> x/a matches.
        let diff = matrix.compare(|from, to| !(from.id() == "y/b" && to.id() == "x/a"));
        assert_eq!(diff.mismatched_cells(), vec![("x/a".to_string(), "y/b".to_string())]);
        let text = diff.to_string();
        assert!(text.contains("*X*"), "{text}");
        assert!(!text.contains("*R*"), "{text}");
        assert!(text.contains("x/a -> y/b: expected connected, observed dropped (timeout)"), "{text}");
        assert_eq!(matrix.get("y/b", "x/a"), Some(&ProbeOutcome::Refused));
    }
}
