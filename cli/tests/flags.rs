//! Bad flags are refused by the real binary before anything runs, with an error on stderr that
//! names the flag (the parsers themselves are unit-tested next to the flag definitions).
//!
//! These run the real binary, which also makes `cargo test --workspace` build `palisade` for the
//! end-to-end tests that spawn it.

use std::process::{Command, Output};

/// Runs `palisade` with only `env` set: flags have environment fallbacks, and the caller's
/// environment must not fill them in.
fn palisade(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the palisade binary runs")
}

fn assert_refused(args: &[&str], expected: &[&str]) {
    assert_refused_with_env(args, &[], expected);
}

fn assert_refused_with_env(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let output = palisade(args, env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} was accepted; stderr: {stderr}");
    for fragment in expected {
        assert!(stderr.contains(fragment), "{args:?}: stderr lacks {fragment:?}:\n{stderr}");
    }
}

const AGENT: &[&str] = &["agent", "run", "--node", "node-a", "--operator", "operator:8443"];

#[test]
fn a_mark_with_more_than_one_bit_is_refused() {
    assert_refused(&[AGENT, &["--mark", "0x3"]].concat(), &["--mark", "exactly one bit"]);
    assert_refused(&[AGENT, &["--mark", "lots"]].concat(), &["--mark", "not a number"]);
}

#[test]
fn a_missing_required_flag_is_named() {
    assert_refused(&["agent", "run", "--operator", "operator:8443"], &["--node"]);
}

#[test]
fn a_bad_value_from_the_environment_names_its_flag() {
    assert_refused_with_env(AGENT, &[("PALISADE_MARK", "0x3")], &["--mark", "exactly one bit"]);
}

#[test]
fn an_invalid_log_filter_is_refused() {
    assert_refused(&["--log", "palisade=[", "agent", "cleanup"], &["--log"]);
}
