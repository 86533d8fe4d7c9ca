//! Reading our chains back from `iptables-save` and computing the smallest restore that makes the
//! kernel match the desired table.
//!
//! Only names starting with [`CHAIN_PREFIX`] and rules carrying a `pal:` comment are looked at; a
//! chain is identified by the ordered list of its rules' `pal:` hashes, so comparing costs no
//! parsing of matches and a flushed, edited or reordered chain shows up as a mismatch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use palisade_engine::plan::Direction;

use crate::ipset::{DesiredIpSets, Member};
use crate::names::{CHAIN_PREFIX, COMMENT_PREFIX, EGRESS_DISPATCH, Family, INGRESS_DISPATCH, isolation_set};
use crate::render::{DesiredTable, Hook};

/// Our part of the kernel's filter table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTable {
    /// Our chains with the `pal:` hash of each rule (`None`: a rule we did not write).
    pub chains: BTreeMap<String, Vec<Option<String>>>,
    /// Rules carrying our comment inside chains we do not own: our hooks, or strays.
    pub marked_foreign_rules: Vec<MarkedRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkedRule {
    pub chain: String,
    pub hash: String,
    /// The rule as saved, after `-A <chain> `: replayed verbatim after `-D <chain> ` to delete it.
    pub spec: String,
    /// Where the rule is in its chain, counting every rule (ours and foreign) from 0.
    pub position: usize,
}

pub fn is_owned_chain(name: &str) -> bool {
    name.starts_with(CHAIN_PREFIX)
}

pub fn parse_save(text: &str) -> KernelTable {
    let mut table = KernelTable::default();
    let mut foreign_rules_seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_filter = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            in_filter = name.trim() == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        if let Some(declaration) = line.strip_prefix(':') {
            let name = declaration.split_whitespace().next().unwrap_or_default();
            if is_owned_chain(name) {
                table.chains.entry(name.to_string()).or_default();
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            let hash = comment_hash(spec);
            if is_owned_chain(chain) {
                table.chains.entry(chain.to_string()).or_default().push(hash);
                continue;
            }
            let seen = foreign_rules_seen.entry(chain.to_string()).or_default();
            let position = *seen;
            *seen += 1;
            if let Some(hash) = hash {
                table.marked_foreign_rules.push(MarkedRule {
                    chain: chain.to_string(),
                    hash,
                    spec: spec.to_string(),
                    position,
                });
            }
        }
    }
    table
}

/// Our part of the table as a sync of `desired` that succeeded left it: every chain as desired,
/// each hook the first rule of its kernel chain, nothing stray. What the applier assumes instead
/// of reading the kernel back, until something fails or drift repair reads it again.
pub fn as_synced(desired: &DesiredTable) -> KernelTable {
    KernelTable {
        chains: desired
            .chains
            .iter()
            .map(|(name, rules)| (name.clone(), rules.iter().map(|rule| Some(rule.hash.clone())).collect()))
            .collect(),
        marked_foreign_rules: desired
            .hooks
            .iter()
            .map(|hook| MarkedRule {
                chain: hook.kernel_chain.to_owned(),
                hash: hook.hash.clone(),
                spec: hook.rule_spec(),
                position: 0,
            })
            .collect(),
    }
}

/// The hash of a `--comment "pal:<hash>"` (quoted or not), if the rule carries one.
fn comment_hash(spec: &str) -> Option<String> {
    let start = spec.find("--comment ")? + "--comment ".len();
    let value = spec[start..].trim_start_matches('"');
    let hash = value.strip_prefix(COMMENT_PREFIX)?;
    Some(hash.chars().take_while(char::is_ascii_alphanumeric).collect())
}

/// The `iptables-restore --noflush` transactions of one family and what they do: `text` runs
/// before the set changes that loosen, `cleanup` after them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableChanges {
    /// Empty when the kernel already matches: no restore is run at all.
    pub text: String,
    /// Removals that nothing the new plan runs can reach: our orphaned chains, and the rewrites
    /// [`rewrites_that_can_wait`] found. Run once the sets loosened, so that a change that only
    /// opens (a policy deleted, a pod no longer selected) opens at the speed of a set change.
    pub cleanup: String,
    /// Lines of both transactions other than `*filter` and `COMMIT`.
    pub lines: usize,
    /// Of which in `cleanup`.
    pub cleanup_lines: usize,
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub hooks_inserted: usize,
    /// Hooks found below a foreign rule, moved back to the top of their chain.
    pub hooks_moved: usize,
    pub marked_rules_deleted: usize,
}

impl TableChanges {
    pub fn repairs(&self) -> usize {
        self.chains_written + self.chains_deleted + self.hooks_inserted + self.hooks_moved + self.marked_rules_deleted
    }
}

/// The chains whose rewrite from `old` (what the last sync left) to `new` may wait until the
/// set changes of the sync have run: dispatch chains that only lose rules sending an address to
/// its pod chain, where `new_sets` no longer isolates that address. Such a rule is reached only
/// by packets of an address still in the isolation set; until the set change lands they meet
/// the old pod chain (kept: orphans wait too), and afterwards nothing reaches the rule. The
/// new plan allows every packet it could judge, so nothing passes that the new plan denies.
pub fn rewrites_that_can_wait(old: &DesiredTable, new: &DesiredTable, new_sets: &DesiredIpSets) -> BTreeSet<String> {
    let mut can_wait = BTreeSet::new();
    for (chain, direction) in [(INGRESS_DISPATCH, Direction::Ingress), (EGRESS_DISPATCH, Direction::Egress)] {
        let (Some(old_rules), Some(new_rules)) = (old.chains.get(chain), new.chains.get(chain)) else { continue };
        let isolated = new_sets.sets.get(&isolation_set(new.family, direction));
        let still_isolated = |ip: &IpAddr| isolated.is_some_and(|set| set.members.contains(&Member::Ip(*ip)));
        // The new rules must be the old ones with some removed, in order.
        let mut kept = new_rules.iter().peekable();
        let mut only_unreachable_removed = true;
        for rule in old_rules {
            if kept.peek().is_some_and(|next| next.hash == rule.hash) {
                kept.next();
                continue;
            }
            let unreachable = old.pod_dispatch.get(&rule.hash).is_some_and(|ip| !still_isolated(ip));
            if !unreachable {
                only_unreachable_removed = false;
                break;
            }
        }
        if only_unreachable_removed && kept.next().is_none() && old_rules.len() != new_rules.len() {
            can_wait.insert(chain.to_owned());
        }
    }
    can_wait
}

/// The transactions that make `kernel` match `desired`. Chains in `can_wait` (see
/// [`rewrites_that_can_wait`]) and the deletion of our orphans go into [`TableChanges::cleanup`].
pub fn plan_changes(desired: &DesiredTable, kernel: &KernelTable, can_wait: &BTreeSet<String>) -> TableChanges {
    let mut changes = TableChanges::default();
    let mut body = Vec::new();
    let mut cleanup = Vec::new();

    let changed: Vec<&String> = desired
        .chains
        .iter()
        .filter(|(name, rules)| {
            kernel.chains.get(*name).is_none_or(|hashes| {
                hashes.len() != rules.len()
                    || hashes.iter().zip(rules.iter()).any(|(hash, rule)| hash.as_deref() != Some(rule.hash.as_str()))
            })
        })
        .map(|(name, _)| name)
        .collect();
    let orphans: Vec<&String> = kernel.chains.keys().filter(|name| !desired.chains.contains_key(*name)).collect();

    // Declaring a chain creates it or flushes it; in each transaction every rewritten or orphaned
    // chain is declared before any rule so references between them resolve inside it.
    let (waiting, now): (Vec<&String>, Vec<&String>) =
        changed.iter().copied().partition(|name| can_wait.contains(*name));
    for name in &now {
        body.push(format!(":{name} - [0:0]"));
    }
    for name in waiting.iter().chain(orphans.iter()) {
        cleanup.push(format!(":{name} - [0:0]"));
    }
    for name in &now {
        body.extend(desired.chains[*name].iter().map(|rule| rule.restore_line(name)));
    }
    for name in &waiting {
        cleanup.extend(desired.chains[*name].iter().map(|rule| rule.restore_line(name)));
    }
    changes.chains_written = changed.len();

    // Each kernel chain has one hook and it must be the chain's first rule: a foreign rule above it
    // (`iptables -I FORWARD 1 -j ACCEPT`, a firewall reload) decides before we do and voids every
    // policy. A hook elsewhere is deleted and inserted at the top again, in the same transaction.
    let mut kept_hooks: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut moved_hooks: Vec<&Hook> = Vec::new();
    for rule in &kernel.marked_foreign_rules {
        let wanted = desired.hooks.iter().find(|hook| hook.kernel_chain == rule.chain && hook.hash == rule.hash);
        let seen = kept_hooks.entry((rule.chain.as_str(), rule.hash.as_str())).or_default();
        *seen += 1;
        match wanted {
            Some(hook) if *seen == 1 && rule.position != 0 => {
                body.push(format!("-D {} {}", rule.chain, rule.spec));
                moved_hooks.push(hook);
            }
            Some(_) if *seen == 1 => {}
            _ => {
                body.push(format!("-D {} {}", rule.chain, rule.spec));
                changes.marked_rules_deleted += 1;
            }
        }
    }
    for hook in &desired.hooks {
        if moved_hooks.contains(&hook) {
            body.push(hook.insert_line());
            changes.hooks_moved += 1;
        } else if !kept_hooks.contains_key(&(hook.kernel_chain, hook.hash.as_str())) {
            body.push(hook.insert_line());
            changes.hooks_inserted += 1;
        }
    }

    for name in &orphans {
        cleanup.push(format!("-X {name}"));
    }
    changes.chains_deleted = orphans.len();

    changes.lines = body.len() + cleanup.len();
    changes.cleanup_lines = cleanup.len();
    if !body.is_empty() {
        changes.text = transaction(&body);
    }
    if !cleanup.is_empty() {
        changes.cleanup = transaction(&cleanup);
    }
    changes
}

/// Removes every rule and chain we own: marked rules in foreign chains first (`text`), then
/// our chains (`cleanup`).
pub fn plan_cleanup(kernel: &KernelTable) -> TableChanges {
    let empty =
        DesiredTable { family: Family::V4, chains: BTreeMap::new(), hooks: Vec::new(), pod_dispatch: BTreeMap::new() };
    plan_changes(&empty, kernel, &BTreeSet::new())
}

fn transaction(body: &[String]) -> String {
    let mut text = String::from("*filter\n");
    for line in body {
        let _ = writeln!(text, "{line}");
    }
    text.push_str("COMMIT\n");
    text
}
