//! The time bound and evaluation errors: both deny, with a reason code.

mod common;

use airlock_core::DecisionKind::Deny;
use airlock_policy::{PolicyConfig, PolicyEngine};
use common::{input, write};

const SLOW: &str = r#"package team.slow

import rego.v1

# Nine million iterations: far beyond any time budget used here.
n := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i != j])

deny contains "too many" if n < 0
"#;

#[test]
fn a_slow_policy_is_cut_off_and_denies() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "slow.rego", SLOW);
    let cfg = PolicyConfig {
        dir: Some(dir.path().to_path_buf()),
        include_default: true,
        timeout_ms: 20,
    };
    let e = PolicyEngine::load(&cfg).expect("loads");
    let d = e.evaluate(&input("read_files", &["/home/u/proj/a"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.rule, "policy_timeout");
    assert_eq!(d.reason_code.as_deref(), Some("policy_timeout"));
    assert!(!d.grantable);
    // The engine keeps working afterwards (and stays bounded).
    let d = e.evaluate(&input("read_files", &["/home/u/proj/b"]));
    assert_eq!(d.reason_code.as_deref(), Some("policy_timeout"));
}

#[test]
fn an_erroring_decision_denies_with_policy_error() {
    let dir = tempfile::tempdir().expect("tmp");
    // Division by zero is an evaluation error: the decision is not made.
    write(
        dir.path(),
        "div.rego",
        "package team.div\n\nimport rego.v1\n\ndecision := {\"decision\": \"allow\", \"reasons\": [sprintf(\"%v\", [1 / input.zero])]}\n",
    );
    let cfg = PolicyConfig {
        dir: Some(dir.path().to_path_buf()),
        include_default: false,
        timeout_ms: 50,
    };
    let e = PolicyEngine::load(&cfg).expect("loads");
    let mut inp = input("read_files", &["/home/u/proj/a"]);
    inp["zero"] = serde_json::json!(1);
    assert_eq!(
        e.evaluate(&inp).decision,
        airlock_core::DecisionKind::Allow,
        "the policy works when it can"
    );
    inp["zero"] = serde_json::json!(0);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.reason_code.as_deref(), Some("policy_error"), "{d:?}");
    assert!(!d.grantable);
}
