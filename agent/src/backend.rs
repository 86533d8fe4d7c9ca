//! Which iptables backend the node uses. iptables-legacy and iptables-nft program different kernel
//! tables; rules written with one are invisible to the other's tools, and a node whose kubelet and
//! kube-proxy use legacy while we write nft (or the reverse) would keep packets away from our
//! rules while every tool says they are installed.
//!
//! Detection follows kube-proxy's iptables wrapper and Calico: the backend holding kubelet's
//! canary chains (`KUBE-IPTABLES-HINT`, `KUBE-KUBELET-CANARY`) wins; otherwise the one holding
//! more rules that are not ours; on a tie (an empty node), nft.

use std::fmt;
use std::path::PathBuf;

use crate::exec::{Binaries, Runner};
use crate::names::COMMENT_PREFIX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    /// `binaries` with this backend's restore and save tools in place of the backend-neutral
    /// defaults (`iptables-restore` and so on, whichever the system's alternatives point at). A
    /// tool the caller named explicitly is kept: an explicit path is a choice, not a default.
    pub fn binaries(self, binaries: Binaries) -> Binaries {
        let neutral = Binaries::default();
        let tool = |current: PathBuf, default: &PathBuf, family: &str, verb: &str| {
            if &current == default { PathBuf::from(format!("{family}-{}-{verb}", self.as_str())) } else { current }
        };
        Binaries {
            iptables_restore: tool(binaries.iptables_restore, &neutral.iptables_restore, "iptables", "restore"),
            iptables_save: tool(binaries.iptables_save, &neutral.iptables_save, "iptables", "save"),
            ip6tables_restore: tool(binaries.ip6tables_restore, &neutral.ip6tables_restore, "ip6tables", "restore"),
            ip6tables_save: tool(binaries.ip6tables_save, &neutral.ip6tables_save, "ip6tables", "save"),
            ..binaries
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What detection saw on the node, to log and to show on `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    pub backend: Backend,
    pub why: String,
}

/// What one backend's save tools show: kubelet's hint chains, and foreign rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub hinted: bool,
    pub foreign_rules: usize,
}

impl Observed {
    /// Reads `iptables-save` output (any table).
    pub fn of_save(text: &str) -> Observed {
        let hinted = text
            .lines()
            .any(|line| line.starts_with(":KUBE-IPTABLES-HINT ") || line.starts_with(":KUBE-KUBELET-CANARY "));
        let foreign_rules = text
            .lines()
            .filter(|line| line.starts_with("-A ") && !line.contains(&format!("\"{COMMENT_PREFIX}")))
            .count();
        Observed { hinted, foreign_rules }
    }

    fn add(self, other: Observed) -> Observed {
        Observed { hinted: self.hinted || other.hinted, foreign_rules: self.foreign_rules + other.foreign_rules }
    }
}

/// The decision, from what each backend shows.
pub fn choose(legacy: Observed, nft: Observed) -> Detection {
    let (backend, why) = match (legacy.hinted, nft.hinted) {
        (true, false) => (Backend::Legacy, "kubelet's canary chains are in the legacy tables".to_owned()),
        (false, true) => (Backend::Nft, "kubelet's canary chains are in the nft tables".to_owned()),
        _ if legacy.foreign_rules > nft.foreign_rules => {
            (Backend::Legacy, format!("{} rules in legacy tables, {} in nft", legacy.foreign_rules, nft.foreign_rules))
        }
        _ => (Backend::Nft, format!("{} rules in nft tables, {} in legacy", nft.foreign_rules, legacy.foreign_rules)),
    };
    Detection { backend, why }
}

/// Looks at the node (through `runner`, so inside its network namespace when there is one).
/// A backend whose tools fail (its kernel module is missing, say) shows nothing.
pub async fn detect(runner: &Runner) -> Detection {
    let mut observed = [Observed::default(); 2];
    for (slot, backend) in [Backend::Legacy, Backend::Nft].into_iter().enumerate() {
        let tools = backend.binaries(Binaries::default());
        for save in [&tools.iptables_save, &tools.ip6tables_save] {
            if let Ok(text) = runner.run(save, &[], None).await {
                observed[slot] = observed[slot].add(Observed::of_save(&text));
            }
        }
    }
    choose(observed[0], observed[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_win_then_foreign_rule_counts_then_nft() {
        let rules = |n| Observed { hinted: false, foreign_rules: n };
        assert_eq!(choose(rules(0), rules(0)).backend, Backend::Nft);
        assert_eq!(choose(rules(12), rules(3)).backend, Backend::Legacy);
        assert_eq!(choose(rules(3), rules(12)).backend, Backend::Nft);
        let hinted = Observed { hinted: true, foreign_rules: 0 };
        assert_eq!(choose(hinted, rules(50)).backend, Backend::Legacy);
        assert_eq!(choose(rules(50), hinted).backend, Backend::Nft);
    }

    #[test]
    fn our_own_rules_do_not_count() {
        let saved = "*filter\n:KUBE-KUBELET-CANARY - [0:0]\n-A FORWARD -m comment --comment \"pal:abc\" -j PAL-FORWARD\n-A FORWARD -j ACCEPT\nCOMMIT\n";
        assert_eq!(Observed::of_save(saved), Observed { hinted: true, foreign_rules: 1 });
    }

    #[test]
    fn backend_tools_are_named_as_debian_installs_them() {
        let tools = Backend::Legacy.binaries(Binaries::default());
        assert_eq!(tools.iptables_restore, PathBuf::from("iptables-legacy-restore"));
        assert_eq!(tools.ip6tables_save, PathBuf::from("ip6tables-legacy-save"));
        assert_eq!(tools.ipset, PathBuf::from("ipset"));
        let explicit = Binaries { iptables_restore: "/bin/false".into(), ..Binaries::default() };
        assert_eq!(Backend::Nft.binaries(explicit).iptables_restore, PathBuf::from("/bin/false"));
    }
}
