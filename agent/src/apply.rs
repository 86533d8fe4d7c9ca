//! The applier: makes the kernel match a [`Rendered`] plan with the fewest writes.
//!
//! Each sync compares the desired state with the kernel's, read back (the first sync, drift
//! repair, and any sync after a failure) or as the last successful sync left it, and runs in
//! this order:
//! 1. one `ipset restore -exist` batch that can only tighten: create and fill missing sets, add
//!    members to sets that only deny (isolation sets, Deny rules), remove members from sets that
//!    only allow (Accept rules, network-policy unions);
//! 2. one `iptables-restore --noflush` transaction per family, declaring only our chains, rewriting
//!    only chains whose `pal:` hashes differ, deleting our orphans and fixing our hook rules;
//! 3. only once every family committed: one batch with the rest of the set changes (additions to
//!    sets that allow, removals from sets that deny, swaps of rebuilt sets);
//! 4. one transaction per family removing what nothing reaches any more: our orphaned chains,
//!    and dispatch rules of addresses that left isolation in 3 ([`drift::rewrites_that_can_wait`]);
//! 5. one batch destroying our sets nothing refers to any more.
//!
//! When step 2 has nothing to write (pod churn; a pod that no policy isolates any more, say its
//! last policy was deleted), 1 and 3 are one batch, sent over netlink: a change that only opens
//! is in force before any process is forked, and step 4 tidies up behind it. Not reading back
//! is safe because drift repair always reads the kernel (a foreign change is found within the
//! resync period), and a restore that fails on state that drifted forgets what was assumed, so
//! the retry reads ([`Applier::sync`]).
//!
//! # Why this order
//! A failed `iptables-restore` changes nothing in that table (it commits a transaction atomically).
//! `ipset restore` is not atomic: a batch rejected at line 5 has applied lines 1 to 4, which is why
//! every batch is ordered so that any prefix of it is safe on its own (step 1 only tightens, a
//! swap temporary is filled before it is swapped in), and why each sync first destroys any swap
//! temporary an interrupted run left behind. The error names the rejected line and the caller
//! retries with backoff. A rejected sync stops after step 2,
//! so what stays in force is the previous plan's rules, tightened by step 1:
//! - new sets: referenced only by the rejected rules (names are content-addressed by the group
//!   definition), so nothing matches them: inert;
//! - extra isolation members: a newly isolated pod has no `PAL-I-` chain in the old rules, so its
//!   dispatch reaches the final `-j DROP`: that pod fails closed (loses traffic the old plan
//!   allowed) until a sync succeeds. Never open;
//! - fewer members in sets that only allow, more in sets that only deny: less is allowed.
//!
//! If one family commits and the other is rejected, step 3 is skipped too: the committed family runs
//! the new rules against members that are, again, only tighter than the new plan's. A rejected
//! step 4 leaves the new plan in force with unreachable leftovers; the retry reads the kernel.
//!
//! On the success path, while the old rules run (before step 2) every set change made so far can
//! only tighten them, and while the new rules run (until step 3 lands) every change still missing
//! can only tighten them. So no packet passes that both the old and the new plan deny. A set's
//! roles are those of the old rules and the new together ([`SetRoles`]); a set with both roles
//! (Pass, or Accept and Deny at once), or whose old role is unknown (the first sync after a
//! start), gets every member change in step 3, and there new rules can briefly (one `ipset
//! restore` round trip) see its old members.
//!
//! Dropping the applier or stopping the agent leaves every rule in force: the node fails static,
//! never open. Only [`Applier::cleanup`] removes what we own.

use std::collections::{BTreeMap, BTreeSet};

use crate::drift::{self, TableChanges};
use crate::exec::{Binaries, ExecError, Runner, blamed_line};
use crate::ipset::{self, DesiredIpSets, IpSetChanges, SetRoles};
use crate::ipset_netlink::{self, IpsetSocket, MemberOp, NetlinkIpsetError};
use crate::names::Family;
use crate::render::{DesiredTable, Rendered};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyConfig {
    pub binaries: Binaries,
    /// Run every tool inside this network namespace (`ip netns exec <ns>`).
    pub netns: Option<String>,
    /// How long iptables-restore waits for the xtables lock.
    pub wait_seconds: u32,
    /// Program ip6tables too; off on single-stack IPv4 nodes without IPv6 support.
    pub ipv6: bool,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig { binaries: Binaries::default(), netns: None, wait_seconds: 10, ipv6: true }
    }
}

/// Counters exported by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub syncs: u64,
    /// Rejected restores and netlink batches, each family's transaction counted on its own.
    pub restore_errors: u64,
    /// Drifted objects fixed by [`Applier::check_and_repair`].
    pub repairs: u64,
    /// iptables lines written (declarations, rules, deletes), all families.
    pub lines_written: u64,
    pub ipset_lines_written: u64,
}

/// What one reconcile wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub iptables_lines: usize,
    /// Of which written once the sets loosened: removals nothing could reach any more.
    pub iptables_cleanup_lines: usize,
    pub ipset_lines: usize,
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub hooks_inserted: usize,
    pub hooks_moved: usize,
    pub marked_rules_deleted: usize,
    pub sets_created: usize,
    pub sets_swapped: usize,
    pub members_added: usize,
    pub members_removed: usize,
    pub sets_destroyed: usize,
}

impl SyncReport {
    /// Kernel objects that differed from the desired state.
    pub fn differences(&self) -> usize {
        self.chains_written
            + self.chains_deleted
            + self.hooks_inserted
            + self.hooks_moved
            + self.marked_rules_deleted
            + self.sets_created
            + self.sets_swapped
            + self.members_added
            + self.members_removed
            + self.sets_destroyed
    }

    fn add_table(&mut self, changes: &TableChanges) {
        self.iptables_lines += changes.lines;
        self.iptables_cleanup_lines += changes.cleanup_lines;
        self.chains_written += changes.chains_written;
        self.chains_deleted += changes.chains_deleted;
        self.hooks_inserted += changes.hooks_inserted;
        self.hooks_moved += changes.hooks_moved;
        self.marked_rules_deleted += changes.marked_rules_deleted;
    }

    fn add_ipsets(&mut self, changes: &IpSetChanges) {
        self.ipset_lines += changes.update_lines() + changes.destroy.lines().count();
        self.sets_created += changes.sets_created;
        self.sets_swapped += changes.sets_swapped;
        self.members_added += changes.members_added;
        self.members_removed += changes.members_removed;
        self.sets_destroyed += changes.sets_destroyed;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The tool rejected its input. `iptables-restore` then applied nothing of the batch;
    /// `ipset restore` applied the lines before the refused one, and a netlink batch
    /// ([`crate::ipset_netlink`], tool `ipset (netlink)`) all the others. `line` is the tool's
    /// own blame: parse errors name the bad line, nf_tables commit-time errors (e.g. a missing
    /// jump target) name the `COMMIT` line.
    #[error("{tool} rejected line {line:?} ({offending:?}): {stderr}")]
    Restore { tool: String, line: Option<usize>, offending: Option<String>, stderr: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

pub struct Applier {
    config: ApplyConfig,
    runner: Runner,
    metrics: Metrics,
    injected_fault: Option<String>,
    /// What each set was used for by the rules now in the kernel; empty (unknown) after a start
    /// or a failed reconcile. Decides which member changes may run before iptables.
    set_roles: BTreeMap<String, SetRoles>,
    /// What the last reconcile that succeeded left in the kernel; `None` after a start, a failure
    /// or a cleanup. A sync whose chains equal its chains changes set members only.
    in_sync: Option<Rendered>,
    /// The netlink socket set member changes go through; opened on first use, dropped after a
    /// socket error (and opened again next time).
    netlink: Option<IpsetSocket>,
    /// Opening the socket failed once (logged): `ipset restore` does everything from then on.
    netlink_unavailable: bool,
}

impl Applier {
    pub fn new(config: ApplyConfig) -> Applier {
        let runner = Runner { ip: config.binaries.ip.clone(), netns: config.netns.clone() };
        Applier {
            config,
            runner,
            metrics: Metrics::default(),
            injected_fault: None,
            set_roles: BTreeMap::new(),
            in_sync: None,
            netlink: None,
            netlink_unavailable: false,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn config(&self) -> &ApplyConfig {
        &self.config
    }

    /// Makes the kernel match `desired`. After a sync that succeeded, nothing is read back:
    /// the changes are computed against what that sync left ([`drift::as_synced`]), so a change
    /// of set members only is one `ipset restore` and a change of rules one transaction per
    /// family that changed. A failure forgets that state, and the next sync reads the kernel.
    pub async fn sync(&mut self, desired: &Rendered) -> Result<SyncReport, ApplyError> {
        self.metrics.syncs += 1;
        let assumed = self.in_sync.take();
        let tables = [&desired.v4, &desired.v6];
        let report = self.reconcile(&desired.ipsets, Some(tables), assumed.as_ref()).await?;
        self.in_sync = Some(desired.clone());
        Ok(report)
    }

    /// Reads our chains and sets back and repairs whatever drifted from `desired` (edited or
    /// flushed chains, missing or duplicated hooks, stray `PAL-` chains and `pal` sets, changed
    /// members). Returns what was repaired; also counted in [`Metrics::repairs`].
    pub async fn check_and_repair(&mut self, desired: &Rendered) -> Result<SyncReport, ApplyError> {
        let tables = [&desired.v4, &desired.v6];
        let report = self.reconcile(&desired.ipsets, Some(tables), None).await?;
        self.in_sync = Some(desired.clone());
        self.metrics.repairs += report.differences() as u64;
        if report.differences() > 0 {
            tracing::warn!(repairs = report.differences(), "repaired dataplane drift");
        }
        Ok(report)
    }

    /// Removes every hook, chain and set Palisade owns; foreign rules and sets are not touched.
    pub async fn cleanup(&mut self) -> Result<SyncReport, ApplyError> {
        self.in_sync = None;
        self.reconcile(&DesiredIpSets::default(), None, None).await
    }

    /// Test hook: the next sync's iptables transactions (every family) carry this line (e.g. an
    /// invalid one) before their COMMIT, to exercise the failure path against a real kernel.
    #[doc(hidden)]
    pub fn inject_iptables_fault(&mut self, line: impl Into<String>) {
        self.injected_fault = Some(line.into());
    }

    /// `tables: None` means "own nothing": the cleanup. `assumed`: what the kernel holds, known
    /// from the last sync that succeeded; `None` reads it back.
    async fn reconcile(
        &mut self,
        desired_sets: &DesiredIpSets,
        tables: Option<[&DesiredTable; 2]>,
        assumed: Option<&Rendered>,
    ) -> Result<SyncReport, ApplyError> {
        self.in_sync = None;
        let mut report = SyncReport::default();
        let program_ipv6 = self.config.ipv6;
        let (kernel_sets, kernel_v4, kernel_v6) = match assumed {
            Some(synced) => (
                synced.ipsets.sets.iter().map(|(name, spec)| (name.clone(), spec.as_kernel_set())).collect(),
                drift::as_synced(&synced.v4),
                program_ipv6.then(|| drift::as_synced(&synced.v6)),
            ),
            None => self.read_kernel().await?,
        };

        let previous_roles = std::mem::take(&mut self.set_roles);
        let set_changes = ipset::plan_changes(desired_sets, &kernel_sets, &previous_roles);
        report.add_ipsets(&set_changes);

        let mut transactions: Vec<(Family, String)> = Vec::new();
        let mut cleanups: Vec<(Family, String)> = Vec::new();
        for (family, kernel) in [(Family::V4, Some(kernel_v4)), (Family::V6, kernel_v6)] {
            let Some(kernel) = kernel else { continue };
            let changes = match tables {
                Some([v4, v6]) => {
                    let desired = if family == Family::V4 { v4 } else { v6 };
                    let can_wait = match assumed {
                        Some(synced) => drift::rewrites_that_can_wait(synced.table(family), desired, desired_sets),
                        // Read back: the old rules are known by hash only, so no rewrite waits.
                        None => BTreeSet::new(),
                    };
                    drift::plan_changes(desired, &kernel, &can_wait)
                }
                None => drift::plan_cleanup(&kernel),
            };
            let mut text = changes.text.clone();
            if let Some(fault) = &self.injected_fault {
                if text.is_empty() {
                    text = "*filter\nCOMMIT\n".to_string();
                }
                let commit = text.rfind("COMMIT").unwrap_or(text.len());
                text.insert_str(commit, &format!("{fault}\n"));
            }
            report.add_table(&changes);
            if !text.is_empty() {
                transactions.push((family, text));
            }
            if !changes.cleanup.is_empty() {
                cleanups.push((family, changes.cleanup));
            }
        }
        self.injected_fault = None;

        if transactions.is_empty() {
            // Nothing in iptables must change first (pod churn, a pod leaving isolation): both
            // phases are one batch.
            let update = format!("{}{}", set_changes.before, set_changes.after);
            if !update.is_empty() {
                self.ipset_restore(&update).await?;
            }
        } else {
            if !set_changes.before.is_empty() {
                self.ipset_restore(&set_changes.before).await?;
            }
            // Every family must have committed before the set changes that loosen anything run.
            self.run_transactions(&transactions).await?;
            if !set_changes.after.is_empty() {
                self.ipset_restore(&set_changes.after).await?;
            }
        }
        // What nothing reaches any more, once the new plan is in force.
        self.run_transactions(&cleanups).await?;

        if !set_changes.destroy.is_empty() {
            self.ipset_restore(&set_changes.destroy).await?;
        }
        self.set_roles = desired_sets.roles();
        self.metrics.lines_written += report.iptables_lines as u64;
        self.metrics.ipset_lines_written += report.ipset_lines as u64;
        tracing::debug!(?report, "dataplane reconciled");
        Ok(report)
    }

    /// Runs one `iptables-restore --noflush` transaction per family. IPv4 and IPv6 are separate
    /// tables: their transactions run concurrently, and each is atomic on its own (one family may
    /// apply while the other is rejected; the retry converges). Fails if any was rejected.
    async fn run_transactions(&mut self, transactions: &[(Family, String)]) -> Result<(), ApplyError> {
        let binaries = &self.config.binaries;
        let wait = format!("--wait={}", self.config.wait_seconds);
        let program = |family: Family| match family {
            Family::V4 => binaries.iptables_restore.as_path(),
            Family::V6 => binaries.ip6tables_restore.as_path(),
        };
        let runner = &self.runner;
        let results = match transactions {
            [] => Vec::new(),
            [(family, text)] => vec![run_restore(runner, program(*family), &wait, text).await],
            [(first, first_text), (second, second_text), ..] => {
                let (a, b) = tokio::join!(
                    run_restore(runner, program(*first), &wait, first_text),
                    run_restore(runner, program(*second), &wait, second_text)
                );
                vec![a, b]
            }
        };
        let mut outcome = Ok(());
        for (result, (_, text)) in results.into_iter().zip(transactions) {
            let checked = self.restore_result(result, text);
            if outcome.is_ok() {
                outcome = checked;
            }
        }
        outcome
    }

    /// Our sets and both families' filter tables, read concurrently (the reads dominate a sync
    /// that changes little).
    async fn read_kernel(
        &self,
    ) -> Result<(BTreeMap<String, ipset::KernelSet>, drift::KernelTable, Option<drift::KernelTable>), ApplyError> {
        let binaries = &self.config.binaries;
        let read_v6 = async {
            if self.config.ipv6 {
                self.runner.run(&binaries.ip6tables_save, &["-t", "filter"], None).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (saved_sets, saved_v4, saved_v6) = tokio::join!(
            self.runner.run(&binaries.ipset, &["save"], None),
            self.runner.run(&binaries.iptables_save, &["-t", "filter"], None),
            read_v6,
        );
        let (saved_sets, saved_v4, saved_v6) = (saved_sets?, saved_v4?, saved_v6?);
        Ok((ipset::parse_save(&saved_sets), drift::parse_save(&saved_v4), saved_v6.as_deref().map(drift::parse_save)))
    }

    /// Runs an `ipset restore` batch; one made only of member changes goes over netlink, with
    /// no process ([`crate::ipset_netlink`]).
    async fn ipset_restore(&mut self, text: &str) -> Result<(), ApplyError> {
        if let Some(ops) = ipset_netlink::member_ops(text) {
            match self.netlink_members(ops).await {
                Some(Ok(())) => return Ok(()),
                Some(Err(NetlinkIpsetError::Refused { index, errno })) => {
                    self.metrics.restore_errors += 1;
                    let refused = NetlinkIpsetError::Refused { index, errno }.to_string();
                    let offending = text.lines().filter(|line| !line.trim().is_empty()).nth(index).map(str::to_string);
                    tracing::error!(?offending, %refused, "ipset netlink batch refused; the sync fails and is retried");
                    return Err(ApplyError::Restore {
                        tool: "ipset (netlink)".to_owned(),
                        line: Some(index + 1),
                        offending,
                        stderr: refused,
                    });
                }
                Some(Err(NetlinkIpsetError::Socket(error))) => {
                    // Member changes are idempotent (-exist): restore replays the whole batch.
                    tracing::warn!(%error, "ipset netlink socket failed; this batch goes through ipset restore");
                }
                None => {}
            }
        }
        let program = self.config.binaries.ipset.clone();
        let result = self.runner.run(&program, &["restore", "-exist"], Some(text)).await;
        self.restore_result(result, text)
    }

    /// Sends member changes over the netlink socket (opening it first if needed), off the async
    /// workers. `None` when no socket can be had here.
    async fn netlink_members(&mut self, ops: Vec<MemberOp>) -> Option<Result<(), NetlinkIpsetError>> {
        if self.netlink_unavailable {
            return None;
        }
        let socket = self.netlink.take();
        let netns = self.config.netns.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut socket = match socket {
                Some(socket) => socket,
                None => match IpsetSocket::open(netns.as_deref()) {
                    Ok(socket) => socket,
                    Err(error) => return (None, Err(NetlinkIpsetError::Socket(error)), true),
                },
            };
            let result = socket.apply(&ops);
            let keep = !matches!(result, Err(NetlinkIpsetError::Socket(_)));
            (keep.then_some(socket), result, false)
        })
        .await;
        match joined {
            Ok((socket, result, open_failed)) => {
                self.netlink = socket;
                if open_failed {
                    if let Err(error) = &result {
                        tracing::warn!(%error, "no ipset netlink socket; set members change through ipset restore");
                    }
                    self.netlink_unavailable = true;
                    return None;
                }
                Some(result)
            }
            Err(error) => Some(Err(NetlinkIpsetError::Socket(std::io::Error::other(error.to_string())))),
        }
    }

    fn restore_result(&mut self, result: Result<String, ExecError>, input: &str) -> Result<(), ApplyError> {
        match result {
            Ok(_) => Ok(()),
            Err(ExecError::Failed { program, stderr, .. }) => {
                self.metrics.restore_errors += 1;
                let line = blamed_line(&stderr);
                let offending = line.and_then(|number| input.lines().nth(number.checked_sub(1)?)).map(str::to_string);
                tracing::error!(%program, ?line, ?offending, %stderr, "restore rejected; previous rules stay in force");
                Err(ApplyError::Restore { tool: program, line, offending, stderr })
            }
            Err(other) => {
                self.metrics.restore_errors += 1;
                Err(other.into())
            }
        }
    }
}

async fn run_restore(runner: &Runner, program: &std::path::Path, wait: &str, text: &str) -> Result<String, ExecError> {
    runner.run(program, &["--noflush", wait], Some(text)).await
}
