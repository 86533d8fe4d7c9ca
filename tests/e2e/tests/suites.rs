//! The upstream suites end to end: every case of the Kubernetes Netpol suite and of the
//! ClusterNetworkPolicy conformance suite, replayed on one shared stack per suite (reset between
//! cases), with real packets (SCTP: at the rule level). `PALISADE_E2E_CASE=<text>` runs only the
//! cases whose name contains the text (for debugging one case).

use std::fmt::Write as _;
use std::time::Instant;

use palisade_conformance::Suite;
use palisade_e2e::Stack;

async fn run_suite(mut suite: Suite) {
    if let Ok(filter) = std::env::var("PALISADE_E2E_CASE") {
        suite.cases.retain(|case| case.name.contains(&filter));
    }
    let started = Instant::now();
    let mut stack = Stack::start(&suite.model).await.unwrap_or_else(|e| panic!("stack start: {e}"));
    eprintln!(
        "{}: stack up in {:.1} s (files in {})",
        suite.name,
        started.elapsed().as_secs_f64(),
        stack.files_dir().display()
    );
    let mut report = String::new();
    let mut failed = 0;
    for case in &suite.cases {
        let case_started = Instant::now();
        let failures = stack.run_case(case).await;
        let verdict = if failures.is_empty() { "ok" } else { "FAILED" };
        eprintln!("  [{verdict}] {} ({:.1} s)", case.name, case_started.elapsed().as_secs_f64());
        if !failures.is_empty() {
            failed += 1;
            let _ = writeln!(report, "=== {} ({})", case.name, case.source);
            for failure in failures {
                let _ = writeln!(report, "{failure}");
            }
        }
        if let Err(error) = stack.reset().await {
            panic!("reset after {:?} failed: {error}\n\nfailures so far:\n{report}", case.name);
        }
    }
    eprintln!("{}: {} cases in {:.1} s", suite.name, suite.cases.len(), started.elapsed().as_secs_f64());
    assert!(failed == 0, "{}: {failed} of {} cases failed\n\n{report}", suite.name, suite.cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netpol_suite_end_to_end() {
    run_suite(palisade_conformance::netpol::suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policy_suite_end_to_end() {
    run_suite(palisade_conformance::cnp::suite()).await;
}
