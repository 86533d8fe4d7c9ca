//! Rule-level tests against the real kernel, each inside its own network namespace.
mod common;

use common::*;
use palisade_agent::{ApplyError, render};
use palisade_engine::plan::{Action, Group, PeerMatch, PortMatch};

/// kube-proxy- and Docker-like state that must survive everything we do byte for byte.
fn install_foreign_state(netns: &Netns) {
    netns
        .sh("ipset create KUBE-LOOP-BACK hash:ip,port,ip && ipset add KUBE-LOOP-BACK 198.18.9.1,tcp:80,198.18.9.1 && \
         ipset create docker-peers hash:net && ipset add docker-peers 198.18.64.0/18");
    netns.sh(
        "printf '*filter\n:KUBE-SERVICES - [0:0]\n:DOCKER - [0:0]\n\
-A KUBE-SERVICES -d 198.18.100.1/32 -p tcp -m comment --comment \"default/kubernetes:https has no endpoints\" -m tcp --dport 443 -j REJECT --reject-with icmp-port-unreachable\n\
-A DOCKER -d 198.18.64.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n\
-A DOCKER -m set --match-set docker-peers src -j RETURN\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A FORWARD -o docker0 -j DOCKER\n\
-A INPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
COMMIT\n' | iptables-restore --noflush",
    );
    netns.sh(
        "printf '*filter\n:KUBE-SERVICES - [0:0]\n-A FORWARD -j KUBE-SERVICES\nCOMMIT\n' | ip6tables-restore --noflush",
    );
}

#[tokio::test]
async fn rendered_text_passes_iptables_restore_test() {
    let netns = Netns::new();
    let rendered = render(&sample_plan(), &render_config());
    // `-m set` needs its sets to exist even for --test.
    netns.sh(&format!("printf '%s' '{}' | ipset restore", rendered.ipsets.restore_text()));
    for (tool, text) in [("iptables-restore", &rendered.ipv4), ("ip6tables-restore", &rendered.ipv6)] {
        netns.sh(&format!("printf '%s' '{text}' | {tool} --noflush --test"));
    }
}

#[tokio::test]
async fn sync_installs_hooks_chains_and_sets_then_is_idempotent() {
    let netns = Netns::new();
    let rendered = render(&sample_plan(), &render_config());
    let mut applier = netns.applier();

    let first = applier.sync(&rendered).await.expect("first sync");
    assert!(first.iptables_lines > 0 && first.sets_created == rendered.ipsets.sets.len());

    let saved = netns.sh("iptables-save -t filter");
    for (kernel, ours) in [("FORWARD", "PAL-FORWARD"), ("INPUT", "PAL-INPUT"), ("OUTPUT", "PAL-OUTPUT")] {
        let first_rule = saved.lines().find(|line| line.starts_with(&format!("-A {kernel} "))).expect("hook");
        assert!(first_rule.ends_with(&format!("-j {ours}")), "{kernel} starts with {first_rule}");
    }
    for chain in rendered.v4.chains.keys() {
        assert!(saved.contains(&format!(":{chain} - [0:0]")), "chain {chain} missing");
    }
    let owned_rules = saved.lines().filter(|line| line.contains("\"pal:")).count();
    assert_eq!(owned_rules, rendered.v4.rule_count());
    let saved6 = netns.sh("ip6tables-save -t filter");
    assert_eq!(saved6.lines().filter(|line| line.contains("\"pal:")).count(), rendered.v6.rule_count());
    assert!(netns.sh("ipset list -n").contains("pal6-n-000000000000b10c"));

    let before = netns.tables();
    let second = applier.sync(&rendered).await.expect("second sync");
    assert_eq!(second.iptables_lines, 0, "an unchanged plan writes nothing: {second:?}");
    assert_eq!(second.ipset_lines, 0);
    assert_eq!(netns.tables(), before);
}

#[tokio::test]
async fn foreign_rules_and_sets_stay_byte_identical() {
    let netns = Netns::new();
    install_foreign_state(&netns);
    let pristine_tables = netns.tables();
    let pristine_foreign = netns.foreign_state();
    let mut applier = netns.applier();

    applier.sync(&render(&sample_plan(), &render_config())).await.expect("install");
    assert_eq!(netns.foreign_state(), pristine_foreign, "install changed foreign state");

    let mut plan = sample_plan();
    plan.pods.remove(&pod("default", "web"));
    plan.rule_sets.remove(&rsid(ADMIN_EGRESS));
    plan.rule_sets.remove(&rsid(NP_INGRESS));
    let report = applier.sync(&render(&plan, &render_config())).await.expect("update");
    assert!(report.chains_deleted > 0 && report.sets_destroyed > 0, "{report:?}");
    assert_eq!(netns.foreign_state(), pristine_foreign, "update changed foreign state");

    applier.cleanup().await.expect("cleanup");
    assert_eq!(netns.tables(), pristine_tables, "cleanup must leave exactly the foreign tables");
    assert_eq!(netns.owned_sets(), "", "cleanup must destroy our sets");
    assert_eq!(netns.foreign_state(), pristine_foreign);
}

#[tokio::test]
async fn check_and_repair_fixes_flushed_chains_hooks_and_strays() {
    let netns = Netns::new();
    install_foreign_state(&netns);
    let rendered = render(&sample_plan(), &render_config());
    let mut applier = netns.applier();
    applier.sync(&rendered).await.expect("install");
    let installed = netns.tables();
    let installed_sets = netns.owned_sets();

    let clean = applier.check_and_repair(&rendered).await.expect("no drift");
    assert_eq!(clean.differences(), 0);
    assert_eq!(applier.metrics().repairs, 0);

    let baseline_tier =
        rendered.v4.chains.keys().find(|name| name.starts_with("PAL-BI-")).expect("a baseline tier chain").clone();
    netns.sh(&format!("iptables -F {baseline_tier}"));
    netns.sh("iptables -D FORWARD 1"); // our hook
    netns.sh("ip6tables -A PAL-INGRESS -j ACCEPT");
    netns.sh("iptables -N PAL-STRAY && iptables -A PAL-STRAY -j ACCEPT");
    netns.sh("iptables -A OUTPUT -m comment --comment pal:0123456789abcdef -j ACCEPT");
    netns.sh("ipset create pal4-stray hash:ip && ipset del pal4-iso-in 198.18.1.10");

    let report = applier.check_and_repair(&rendered).await.expect("repair");
    assert_eq!(report.chains_written, 2, "{report:?}");
    assert_eq!(report.hooks_inserted, 1);
    assert_eq!(report.chains_deleted, 1);
    assert_eq!(report.marked_rules_deleted, 1);
    assert_eq!(report.members_added, 1);
    assert_eq!(report.sets_destroyed, 1);
    assert_eq!(applier.metrics().repairs, 7);
    assert_eq!(netns.tables(), installed);
    assert_eq!(netns.owned_sets(), installed_sets);
}

#[tokio::test]
async fn rejected_restore_keeps_previous_state_and_names_the_line() {
    let netns = Netns::new();
    install_foreign_state(&netns);
    let mut applier = netns.applier();
    applier.sync(&render(&sample_plan(), &render_config())).await.expect("install");
    let before = netns.tables();
    let sets_before = netns.owned_sets();

    let mut plan = sample_plan();
    if let Some(set) = plan.rule_sets.get_mut(&rsid(NP_INGRESS)) {
        set.rules.push(rule(
            2,
            Action::Accept,
            PeerMatch::AnyOf(vec![gid(CLIENTS)]),
            PortMatch::AnyOf(vec![tcp(9000, 9000)]),
        ));
    }
    applier.inject_iptables_fault("-A PAL-FORWARD --no-such-option 1 -j RETURN");
    let error = applier.sync(&render(&plan, &render_config())).await.expect_err("restore must fail");
    match &error {
        ApplyError::Restore { line: Some(line), offending: Some(offending), stderr, .. } => {
            assert!(*line > 1, "line number {line}");
            assert_eq!(offending, "-A PAL-FORWARD --no-such-option 1 -j RETURN", "stderr: {stderr}");
        }
        other => panic!("expected a Restore error with a line, got {other:?}"),
    }
    assert_eq!(applier.metrics().restore_errors, 2, "both families' transactions carried the fault");
    assert_eq!(netns.tables(), before, "a rejected transaction must change nothing");
    assert_eq!(netns.owned_sets(), sets_before);

    // The retry without the fault goes through.
    let report = applier.sync(&render(&plan, &render_config())).await.expect("retry");
    assert_eq!(report.chains_written, 2, "the rule set chain, once per family: {report:?}");
}

#[tokio::test]
async fn peer_churn_changes_only_ipset_members() {
    let netns = Netns::new();
    let mut applier = netns.applier();
    applier.sync(&render(&sample_plan(), &render_config())).await.expect("install");
    let tables_before = netns.tables();
    let lines_before = applier.metrics().lines_written;

    let mut plan = sample_plan();
    if let Some(Group::Addresses(members)) = plan.groups.get_mut(&gid(CLIENTS)) {
        members.remove(&ip("198.18.2.10"));
        members.insert(ip("198.18.2.11"));
        members.insert(ip("fd00:198:18:2::11"));
    }
    if let Some(Group::Networks(entries)) = plan.groups.get_mut(&gid(BLOCK)) {
        entries.insert(palisade_engine::plan::NetEntry { net: "198.18.3.0/24".parse().expect("net"), nomatch: false });
    }
    let report = applier.sync(&render(&plan, &render_config())).await.expect("churn");
    assert_eq!(report.iptables_lines, 0, "{report:?}");
    assert_eq!(applier.metrics().lines_written, lines_before);
    // Two IPv4 and one IPv6 address in the clients' set, and the IPv6 one again in the IPv6 union
    // that merges the clients with the (except-free) IPv6 block.
    assert_eq!((report.members_added, report.members_removed), (4, 1));
    assert_eq!(netns.tables(), tables_before);
    let sets = netns.owned_sets();
    assert!(sets.contains("add pal4-a-00000000000c1e47 198.18.2.11\n"));
    assert!(!sets.contains("198.18.2.10\n"));
    assert!(sets.contains("add pal4-n-000000000000b10c 198.18.3.0/24\n"));
}

#[tokio::test]
async fn changed_set_header_is_swapped_not_flushed() {
    let netns = Netns::new();
    let mut applier = netns.applier();
    let rendered = render(&sample_plan(), &render_config());
    applier.sync(&rendered).await.expect("install");
    // Someone recreated our set smaller: the header differs, so it is rebuilt and swapped in.
    netns
        .sh("ipset create pal4-tmpx hash:ip maxelem 16 && ipset swap pal4-tmpx pal4-iso-in && ipset destroy pal4-tmpx");
    let report = applier.check_and_repair(&rendered).await.expect("repair");
    assert_eq!(report.sets_swapped, 1, "{report:?}");
    assert!(netns.sh("ipset save pal4-iso-in").contains("maxelem 65536"));
    assert!(netns.sh("ipset save pal4-iso-in").contains("add pal4-iso-in 198.18.1.10"));
}

#[tokio::test]
async fn nomatch_flag_flip_updates_in_place() {
    let netns = Netns::new();
    let mut applier = netns.applier();
    // A second except keeps the block out of merged unions whichever way the first one flips, so
    // the flip is a member change only.
    let mut base = sample_plan();
    if let Some(Group::Networks(entries)) = base.groups.get_mut(&gid(BLOCK)) {
        entries.insert(palisade_engine::plan::NetEntry { net: "198.19.0.0/16".parse().expect("net"), nomatch: true });
    }
    applier.sync(&render(&base, &render_config())).await.expect("install");
    let mut plan = base.clone();
    if let Some(Group::Networks(entries)) = plan.groups.get_mut(&gid(BLOCK)) {
        let except = palisade_engine::plan::NetEntry { net: "198.18.0.0/15".parse().expect("net"), nomatch: true };
        entries.remove(&except);
        entries.insert(palisade_engine::plan::NetEntry { nomatch: false, ..except });
    }
    let report = applier.sync(&render(&plan, &render_config())).await.expect("flip");
    assert_eq!((report.members_added, report.members_removed, report.iptables_lines), (1, 0, 0), "{report:?}");
    let sets = netns.owned_sets();
    assert!(sets.contains("add pal4-n-000000000000b10c 198.18.0.0/15\n"), "{sets}");
    assert!(!sets.contains("198.18.0.0/15 nomatch"));
}

#[tokio::test]
async fn a_foreign_rule_above_our_hook_is_drift_and_the_hook_goes_back_first() {
    let netns = Netns::new();
    install_foreign_state(&netns);
    let rendered = render(&sample_plan(), &render_config());
    let mut applier = netns.applier();
    applier.sync(&rendered).await.expect("install");

    // What a firewalld reload or an admin's quick fix does: an ACCEPT before everything.
    netns.sh("iptables -I FORWARD 1 -j ACCEPT");
    let report = applier.check_and_repair(&rendered).await.expect("repair");
    assert_eq!(report.hooks_moved, 1, "{report:?}");
    assert_eq!(report.differences(), 1, "{report:?}");

    let saved = netns.sh("iptables-save -t filter");
    let forward: Vec<&str> = saved.lines().filter(|line| line.starts_with("-A FORWARD ")).collect();
    assert!(forward[0].ends_with("-j PAL-FORWARD"), "FORWARD starts with {:?}", forward[0]);
    assert_eq!(forward[1], "-A FORWARD -j ACCEPT", "the foreign rule stays, after our hook: {forward:?}");
    assert_eq!(forward.iter().filter(|line| line.ends_with("-j PAL-FORWARD")).count(), 1);

    let again = applier.check_and_repair(&rendered).await.expect("second check");
    assert_eq!(again.differences(), 0, "{again:?}");
}

#[tokio::test]
async fn a_leftover_temporary_set_with_another_header_does_not_wedge_sync() {
    let netns = Netns::new();
    let mut applier = netns.applier();
    let rendered = render(&sample_plan(), &render_config());
    applier.sync(&rendered).await.expect("install");
    // A crash between two ipset batches: the live set was recreated with another header (so the
    // next sync swaps it), and the temporary of that swap was left behind with yet another header.
    netns.sh(
        "ipset create pal4-tmpx hash:ip maxelem 16 && ipset swap pal4-tmpx pal4-iso-in && ipset destroy pal4-tmpx && \
         ipset create pal4-tmpiso-in hash:net maxelem 8 && ipset add pal4-tmpiso-in 198.18.200.0/24",
    );
    let report = applier.check_and_repair(&rendered).await.expect("a stale temporary must not fail the sync");
    assert_eq!(report.sets_swapped, 1, "{report:?}");
    let sets = netns.sh("ipset list -n");
    assert!(!sets.contains("tmp"), "no temporary is left: {sets}");
    let live = netns.sh("ipset save pal4-iso-in");
    assert!(live.contains("maxelem 65536") && live.contains("add pal4-iso-in 198.18.1.10"), "{live}");
    assert!(!live.contains("198.18.200.0"), "nothing of the stale temporary leaks in: {live}");
    assert_eq!(applier.check_and_repair(&rendered).await.expect("second check").differences(), 0);
}

/// Wrappers around the tools that log each run to `log`, then run the real tool.
fn logging_binaries(dir: &std::path::Path, log: &std::path::Path) -> palisade_agent::Binaries {
    let wrap = |tool: &str| {
        let path = dir.join(tool);
        let script = format!("#!/bin/sh\necho {tool} >> {}\nexec {tool} \"$@\"\n", log.display());
        std::fs::write(&path, script).expect("wrapper");
        std::process::Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
        path
    };
    palisade_agent::Binaries {
        iptables_restore: wrap("iptables-restore"),
        iptables_save: wrap("iptables-save"),
        ip6tables_restore: wrap("ip6tables-restore"),
        ip6tables_save: wrap("ip6tables-save"),
        ipset: wrap("ipset"),
        ..palisade_agent::Binaries::default()
    }
}

#[tokio::test]
async fn after_a_successful_sync_nothing_is_read_back_until_a_failure_or_a_repair() {
    let netns = Netns::new();
    let dir = std::env::temp_dir().join(format!("palisade-tools-{}-{}", std::process::id(), netns.name));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("runs.log");
    let config = palisade_agent::ApplyConfig {
        netns: Some(netns.name.clone()),
        binaries: logging_binaries(&dir, &log),
        ..palisade_agent::ApplyConfig::default()
    };
    let mut applier = palisade_agent::Applier::new(config);
    applier.sync(&render(&sample_plan(), &render_config())).await.expect("install");
    std::fs::write(&log, "").expect("truncate");

    let mut plan = sample_plan();
    if let Some(Group::Addresses(members)) = plan.groups.get_mut(&gid(CLIENTS)) {
        members.insert(ip("198.18.2.12"));
    }
    let report = applier.sync(&render(&plan, &render_config())).await.expect("churn");
    assert_eq!(report.members_added, 1, "{report:?}");
    let runs = std::fs::read_to_string(&log).expect("log");
    assert_eq!(runs, "", "a members-only change forks no process: it goes over ipset netlink");
    assert!(netns.owned_sets().contains("add pal4-a-00000000000c1e47 198.18.2.12\n"));

    // A rule change writes one transaction per family and still reads nothing back.
    std::fs::write(&log, "").expect("truncate");
    if let Some(rule_set) = plan.rule_sets.get_mut(&rsid(ADMIN_EGRESS)) {
        rule_set.rules[1].ports = PortMatch::AnyOf(vec![tcp(25, 26)]);
    }
    let report = applier.sync(&render(&plan, &render_config())).await.expect("rule change");
    assert!(report.chains_written > 0, "{report:?}");
    let runs = std::fs::read_to_string(&log).expect("log");
    assert!(!runs.contains("save"), "nothing is read back: {runs}");
    assert!(netns.sh("iptables-save -t filter").contains("--dport 25:26"));

    // After a failed sync nothing is assumed: the next one reads the kernel, and so finds a
    // member removed behind the agent's back.
    if let Some(Group::Addresses(members)) = plan.groups.get_mut(&gid(CLIENTS)) {
        members.insert(ip("198.18.2.13"));
    }
    let rendered = render(&plan, &render_config());
    applier.inject_iptables_fault("-A PAL-NO-SUCH-CHAIN -j ACCEPT");
    assert!(applier.sync(&rendered).await.is_err(), "the injected line is rejected");
    netns.sh("ipset del pal4-a-00000000000c1e47 198.18.2.12");
    std::fs::write(&log, "").expect("truncate");
    let report = applier.sync(&rendered).await.expect("the retry");
    assert!(std::fs::read_to_string(&log).expect("log").contains("iptables-save"), "the retry reads the kernel");
    assert!(report.members_added >= 1, "{report:?}");
    assert!(netns.owned_sets().contains("add pal4-a-00000000000c1e47 198.18.2.12\n"));

    // Drift repair still reads the kernel: a member removed behind the agent's back comes back.
    netns.sh("ipset del pal4-a-00000000000c1e47 198.18.2.12");
    let repaired = applier.check_and_repair(&render(&plan, &render_config())).await.expect("repair");
    assert_eq!(repaired.members_added, 1, "{repaired:?}");
    assert!(netns.owned_sets().contains("add pal4-a-00000000000c1e47 198.18.2.12\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn netlink_member_changes_match_what_ipset_restore_would_leave() {
    use palisade_agent::ipset_netlink::{IpsetSocket, NetlinkIpsetError, member_ops};
    let netns = Netns::new();
    netns.sh("ipset create t-ip hash:ip family inet && ipset create t-net hash:net family inet \
         && ipset create t-port hash:ip,port family inet6 && ipset add t-ip 198.18.0.9");
    let mut socket = IpsetSocket::open(Some(&netns.name)).expect("a netlink socket in the namespace");
    let batch = "add t-ip 198.18.0.1\nadd t-ip 198.18.0.1\ndel t-ip 198.18.0.9\ndel t-ip 198.18.0.77\n\
                 add t-net 198.18.0.0/16\nadd t-net 198.18.4.0/24 nomatch\n\
                 add t-port fd00:198::5,tcp:8080\nadd t-port fd00:198::5,udp:53\n";
    let ops = member_ops(batch).expect("member lines");
    socket.apply(&ops).expect("the kernel takes the batch (-exist: repeats and absent deletes are fine)");
    let saved = netns.sh("ipset save");
    for line in [
        "add t-ip 198.18.0.1\n",
        "add t-net 198.18.0.0/16\n",
        "add t-net 198.18.4.0/24 nomatch\n",
        "add t-port fd00:198::5,tcp:8080\n",
        "add t-port fd00:198::5,udp:53\n",
    ] {
        assert!(saved.contains(line), "missing {line:?} in:\n{saved}");
    }
    assert!(!saved.contains("198.18.0.9"), "deleted:\n{saved}");

    // Re-adding without nomatch clears the flag, as `ipset restore -exist` does.
    socket.apply(&member_ops("add t-net 198.18.4.0/24\n").expect("ops")).expect("flag update");
    assert!(netns.sh("ipset save t-net").contains("add t-net 198.18.4.0/24\n"));

    // A refusal names the operation; the others of the batch still apply.
    let refused = socket.apply(&member_ops("add t-ip 198.18.0.2\nadd no-such-set 198.18.0.3\n").expect("ops"));
    match refused {
        Err(NetlinkIpsetError::Refused { index, errno }) => {
            assert_eq!((index, errno), (1, libc::ENOENT), "the second operation, no such set");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(netns.sh("ipset save t-ip").contains("add t-ip 198.18.0.2\n"));
}

/// The kernel state a fresh agent would leave for `plan`: our rules and sets, sorted (chains may
/// be listed in a different order after incremental changes).
async fn fresh_install_of(plan: &palisade_engine::plan::NodePlan) -> (Vec<String>, Vec<String>) {
    let fresh = Netns::new();
    fresh.applier().sync(&render(plan, &render_config())).await.expect("fresh install");
    owned_state(&fresh)
}

fn owned_state(netns: &Netns) -> (Vec<String>, Vec<String>) {
    let mut rules: Vec<String> = netns
        .tables()
        .lines()
        .filter(|line| line.contains("PAL-") || line.contains("\"pal:"))
        .map(str::to_owned)
        .collect();
    // `initval` is the hash seed the kernel picks at random for each set.
    let mut sets: Vec<String> =
        netns.owned_sets().lines().map(|line| line.split(" initval ").next().unwrap_or(line).to_owned()).collect();
    rules.sort();
    sets.sort();
    (rules, sets)
}

#[tokio::test]
async fn a_pod_no_policy_isolates_any_more_opens_before_any_iptables_line_is_written() {
    let netns = Netns::new();
    let mut applier = netns.applier();
    applier.sync(&render(&sample_plan(), &render_config())).await.expect("install");

    // web's only ingress policy is gone: its pod chain and NetworkPolicy tier chain are orphans,
    // and the dispatch chains lose its addresses.
    let mut open = sample_plan();
    open.pods.get_mut(&pod("default", "web")).expect("web").ingress = Default::default();
    let report = applier.sync(&render(&open, &render_config())).await.expect("open web");
    assert!(report.iptables_lines > 0 && report.chains_deleted > 0, "{report:?}");
    assert_eq!(
        report.iptables_cleanup_lines, report.iptables_lines,
        "every iptables line waits until the isolation sets let web's traffic through: {report:?}"
    );
    assert_eq!(report.members_removed, 2, "web's IPv4 and IPv6 addresses leave pal4-iso-in and pal6-iso-in");
    assert_eq!(owned_state(&netns), fresh_install_of(&open).await, "the leftovers are gone after the sync");

    // Isolating it again writes its rules before the sets isolate it, as always.
    let report = applier.sync(&render(&sample_plan(), &render_config())).await.expect("isolate web again");
    assert_eq!(report.iptables_cleanup_lines, 0, "{report:?}");
    assert_eq!(owned_state(&netns), fresh_install_of(&sample_plan()).await);
}

#[tokio::test]
async fn an_address_still_isolated_gets_its_new_rules_before_the_sets_change() {
    let netns = Netns::new();
    let mut applier = netns.applier();
    applier.sync(&render(&sample_plan(), &render_config())).await.expect("install");

    // web's IPv4 address now belongs to another pod with the same policies: the dispatch rule for
    // it changes target, which must be in force before anything loosens.
    let mut moved = sample_plan();
    let web = moved.pods.remove(&pod("default", "web")).expect("web");
    moved.pods.insert(pod("default", "web-2"), web);
    let report = applier.sync(&render(&moved, &render_config())).await.expect("move the address");
    assert!(report.iptables_lines > report.iptables_cleanup_lines, "{report:?}");
    assert!(report.iptables_cleanup_lines > 0, "the old pod chains are deleted afterwards: {report:?}");
    assert_eq!(owned_state(&netns), fresh_install_of(&moved).await);
}
