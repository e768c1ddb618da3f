//! `run_tests` (what `airlock policy test DIR` prints): passing, failing and
//! erroring `test_*` rules, and the embedded default policy's own tests.

use std::path::Path;

use airlock_policy::run_tests;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn embedded_default_policy_tests_pass() {
    let dir = tempfile::tempdir().expect("tmp");
    let report = run_tests(dir.path(), true).expect("tests run");
    assert!(report.results.len() >= 15, "{report:?}");
    let failures: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failures.is_empty(), "failing default tests: {failures:#?}");
    assert!(report
        .results
        .iter()
        .all(|r| r.package == "airlock.default_test"));
    assert_eq!(report.failed(), 0);
}

#[test]
fn failing_and_erroring_tests_are_reported() {
    let report = run_tests(&fixtures().join("failing_tests"), false).expect("tests run");
    let by_name = |n: &str| {
        report
            .results
            .iter()
            .find(|r| r.name == n)
            .unwrap_or_else(|| panic!("no {n}: {report:?}"))
    };
    assert!(by_name("test_pdf_denied").passed);
    assert!(by_name("test_txt_not_denied").passed);
    let wrong = by_name("test_txt_denied_wrongly");
    assert!(!wrong.passed);
    assert!(
        wrong
            .error
            .as_deref()
            .is_some_and(|e| e.contains("test failed")),
        "{wrong:?}"
    );
    let err = by_name("test_errors");
    assert!(!err.passed);
    assert!(
        err.error.as_deref().is_some_and(|e| e.contains("errored")),
        "{err:?}"
    );
    assert_eq!(report.failed(), 2);
    assert_eq!(report.results.len(), 4);
}

#[test]
fn the_seed_policy_can_be_tested_and_defaults_can_be_included() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        fixtures().join("seed/agent_policy.rego"),
        dir.path().join("agent.rego"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("agent_test.rego"),
        "package agent.policy_test\n\ntest_notes_allowed {\n  data.agent.policy.allow with input as {\"action\": \"read\", \"path\": \"/Users/a/n.txt\"}\n}\n\ntest_ssh_denied {\n  not data.agent.policy.allow with input as {\"action\": \"read\", \"path\": \"/Users/a/.ssh/id_rsa\"}\n}\n",
    )
    .expect("write");
    let report = run_tests(dir.path(), true).expect("tests run");
    assert_eq!(report.failed(), 0, "{report:#?}");
    assert!(report
        .results
        .iter()
        .any(|r| r.package == "agent.policy_test" && r.name == "test_ssh_denied"));
    assert!(report
        .results
        .iter()
        .any(|r| r.package == "airlock.default_test"));
}

#[test]
fn a_missing_test_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    assert!(run_tests(&dir.path().join("nope"), true).is_err());
}
