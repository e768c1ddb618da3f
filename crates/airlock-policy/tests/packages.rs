//! User packages: the seed's v0 policy, the decision contract, combining
//! packages, replacing or dropping the default.

mod common;

use std::path::Path;

use airlock_core::DecisionKind::{Allow, Ask, Deny};
use airlock_policy::{PolicyConfig, PolicyEngine, PolicyError};
use common::{engine_in, input, write};
use serde_json::json;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn seed_policy_loads_verbatim_as_rego_v0() {
    let text = std::fs::read_to_string(fixtures().join("seed/agent_policy.rego")).expect("fixture");
    assert!(
        text.contains("allow {"),
        "the fixture is the seed's v0 text"
    );
    let e = engine_in(&fixtures().join("seed"), false);
    let d = e.evaluate(&json!({"action": "read", "path": "/Users/alice/notes.txt"}));
    assert_eq!(d.decision, Allow, "{d:?}");
    assert_eq!(d.policy_id, "agent.policy");
    let d = e.evaluate(&json!({"action": "read", "path": "/Users/alice/.ssh/id_rsa"}));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.reasons, vec!["not allowed by agent.policy".to_string()]);
    // Per-path evaluation feeds the seed's `input.path` from `paths`.
    let d = e.evaluate(
        &json!({"action": "read", "paths": ["/Users/alice/a.txt", "/Users/alice/.ssh/config"]}),
    );
    assert_eq!(d.decision, Deny, "{d:?}");
    assert!(d.reasons[0].contains("/Users/alice/.ssh/config"), "{d:?}");
}

#[test]
fn v0_and_v1_modules_load_together_with_the_default() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        fixtures().join("seed/agent_policy.rego"),
        dir.path().join("seed.rego"),
    )
    .expect("copy");
    write(
        dir.path(),
        "v1.rego",
        "package team.v1\n\ndeny contains \"no pdfs\" if endswith(input.path, \".pdf\")\n",
    );
    let e = engine_in(dir.path(), true);
    let pkgs: Vec<String> = e.modules().into_iter().map(|m| m.package).collect();
    assert_eq!(pkgs, vec!["airlock.default", "agent.policy", "team.v1"]);
    // The seed package allows only action "read"; the default denies nothing here,
    // so the combination is deny (the seed's allow is false for read_files).
    let d = e.evaluate(&input("read_files", &["/home/u/proj/a.txt"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.policy_id, "agent.policy");
}

#[test]
fn deny_from_any_package_wins_over_the_default_allow() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "pdf.rego",
        "package team.pdf\n\nimport rego.v1\n\ndeny contains msg if {\n\tendswith(input.path, \".pdf\")\n\tmsg := \"PDFs stay here\"\n}\n",
    );
    let e = engine_in(dir.path(), true);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/report.pdf"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.policy_id, "team.pdf");
    assert_eq!(d.rule, "deny");
    assert_eq!(d.reasons, vec!["PDFs stay here".to_string()]);
    // A deny-only package that does not object leaves the default in charge.
    let d = e.evaluate(&input("read_files", &["/home/u/proj/report.txt"]));
    assert_eq!(d.decision, Allow, "{d:?}");
    assert_eq!(d.policy_id, "airlock.default");
}

#[test]
fn ask_from_a_package_turns_an_allow_into_ask() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "a.rego", "package team.ask\n\nask contains {\"msg\": \"big files need a look\"} if input.path == \"/home/u/proj/big.bin\"\n");
    let e = engine_in(dir.path(), true);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/big.bin"]));
    assert_eq!(d.decision, Ask, "{d:?}");
    assert_eq!(d.reasons, vec!["big files need a look".to_string()]);
}

#[test]
fn no_package_can_override_a_never_deny() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "yes.rego",
        "package team.yes\n\nimport rego.v1\n\ndecision := {\"decision\": \"allow\", \"rule\": \"everything\", \"reasons\": [\"all fine\"]}\nallow := true\n",
    );
    let e = engine_in(dir.path(), true);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/.ssh/id_ed25519"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert!(!d.grantable);
    assert_eq!(d.policy_id, "airlock.default");
    assert_eq!(d.rule, "credential_store");
}

#[test]
fn allow_only_package_false_or_undefined_denies() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "only.rego",
        "package team.only\n\nallow if input.action == \"list_files\"\n",
    );
    let e = engine_in(dir.path(), true);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/a"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.policy_id, "team.only");
    assert_eq!(d.reasons, vec!["not allowed by team.only".to_string()]);
    assert_eq!(
        e.evaluate(&input("list_files", &["/home/u/proj"])).decision,
        Allow
    );
}

#[test]
fn decision_object_and_policy_id_are_honoured() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "d.rego",
        r#"package team.hours

import rego.v1

policy_id := "office-hours"

default decision := {"decision": "allow"}

decision := {"decision": "deny", "rule": "weekend", "reasons": ["no agent work on weekends"], "grantable": true, "reason_code": "outside_hours"} if input.weekend
"#,
    );
    let e = engine_in(dir.path(), false);
    let mut inp = input("read_files", &["/home/u/proj/a"]);
    inp["weekend"] = json!(true);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.policy_id, "office-hours");
    assert_eq!(d.rule, "weekend");
    assert!(d.grantable);
    assert_eq!(d.reason_code.as_deref(), Some("outside_hours"));
    assert_eq!(d.reasons, vec!["no agent work on weekends".to_string()]);
    inp["weekend"] = json!(false);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Allow, "{d:?}");
    assert_eq!(d.reasons.len(), 1, "a reason is always given: {d:?}");
}

#[test]
fn malformed_or_conflicting_decisions_deny() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "bad.rego",
        "package team.bad\n\ndecision := \"maybe\"\n",
    );
    let e = engine_in(dir.path(), false);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/a"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.reason_code.as_deref(), Some("policy_error"));

    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "conflict.rego",
        "package team.conflict\n\ndecision := \"allow\" if input.action == \"read_files\"\n\ndecision := \"deny\" if startswith(input.path, \"/home\")\n",
    );
    let e = engine_in(dir.path(), false);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/a"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.reason_code.as_deref(), Some("policy_error"), "{d:?}");
}

#[test]
fn library_packages_do_not_vote_and_no_voter_means_default_deny() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "lib.rego",
        "package team.lib\n\nis_pdf(p) if endswith(p, \".pdf\")\n\ntest_pdf if is_pdf(\"a.pdf\")\n",
    );
    let e = engine_in(dir.path(), false);
    let d = e.evaluate(&input("read_files", &["/home/u/proj/a"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.rule, "default_deny");
    assert!(!d.reasons.is_empty());
}

#[test]
fn a_user_airlock_default_package_replaces_the_embedded_one() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "mine.rego",
        "package airlock.default\n\ndecision := {\"decision\": \"ask\", \"reasons\": [\"I review everything\"]}\n",
    );
    let e = engine_in(dir.path(), true);
    let m = e.modules();
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].source.ends_with("mine.rego"));
    let d = e.evaluate(&input("read_files", &["/home/u/proj/.ssh/id_rsa"]));
    assert_eq!(d.decision, Ask, "the replacement decides alone: {d:?}");
}

#[test]
fn include_default_false_drops_it() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "all.rego",
        "package team.all\n\nallow := true\n",
    );
    let e = engine_in(dir.path(), false);
    assert!(e.modules().iter().all(|m| m.package != "airlock.default"));
    assert_eq!(
        e.evaluate(&input("read_files", &["/etc/hosts"])).decision,
        Allow
    );
    let e = engine_in(dir.path(), true);
    assert_eq!(
        e.evaluate(&input("read_files", &["/etc/hosts"])).decision,
        Ask
    );
}

#[test]
fn test_files_and_hidden_files_are_not_loaded_for_decisions() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "x_test.rego",
        "package team.x_test\n\ndeny := true\n",
    );
    write(
        dir.path(),
        ".#x.rego",
        "package team.hidden\n\ndeny := true\n",
    );
    write(dir.path(), "notes.txt", "deny := true\n");
    let e = engine_in(dir.path(), true);
    assert_eq!(e.modules().len(), 1);
    assert_eq!(
        e.evaluate(&input("read_files", &["/home/u/proj/a"]))
            .decision,
        Allow
    );
}

#[test]
fn a_module_that_does_not_compile_is_rejected_with_file_and_message() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "broken.rego",
        "package team.broken\n\nallow if {\n",
    );
    let cfg = PolicyConfig {
        dir: Some(dir.path().to_path_buf()),
        include_default: true,
        timeout_ms: 50,
    };
    match PolicyEngine::load(&cfg) {
        Err(PolicyError::Compile { path, message }) => {
            assert!(path.ends_with("broken.rego"), "{path:?}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    // Reserved package names are refused.
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "r.rego",
        "package airlock.internal.votes\n\nresult := []\n",
    );
    let cfg = PolicyConfig {
        dir: Some(dir.path().to_path_buf()),
        include_default: true,
        timeout_ms: 50,
    };
    assert!(matches!(
        PolicyEngine::load(&cfg),
        Err(PolicyError::Compile { .. })
    ));
}

#[test]
fn a_configured_directory_must_exist() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = PolicyConfig {
        dir: Some(dir.path().join("missing")),
        include_default: true,
        timeout_ms: 50,
    };
    assert!(matches!(
        PolicyEngine::load(&cfg),
        Err(PolicyError::Io { .. })
    ));
}

#[test]
fn engines_are_shared_across_threads() {
    let (_d, e) = common::default_engine();
    std::thread::scope(|s| {
        for t in 0..8 {
            let e = e.clone();
            s.spawn(move || {
                for i in 0..200 {
                    let inside = format!("/home/u/proj/t{t}/f{i}.rs");
                    let outside = format!("/srv/t{t}/f{i}.rs");
                    assert_eq!(e.evaluate(&input("read_files", &[&inside])).decision, Allow);
                    assert_eq!(e.evaluate(&input("read_files", &[&outside])).decision, Ask);
                    assert_eq!(
                        e.evaluate(&input("read_files", &["/home/u/proj/.env"]))
                            .decision,
                        Deny
                    );
                }
            });
        }
    });
}

#[test]
fn path_facts_are_supplied_for_every_path() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "facts.rego",
        r#"package team.facts

import rego.v1

deny contains msg if {
	".git" in input.path_info.component_set
	input.path_info.extension == ".lock"
	"/home/u/proj" in input.path_info.ancestors
	input.path_info.components[0] == "home"
	input.path_info.basename == "index.lock"
	"/home/u/proj" in input.workspace_set
	msg := "no lock files"
}
"#,
    );
    let e = engine_in(dir.path(), true);
    let d = e.evaluate(&input("edit_files", &["/home/u/proj/.GIT/Index.LOCK"]));
    assert_eq!(
        (d.decision, d.reasons.clone()),
        (Deny, vec!["no lock files".to_string()]),
        "{d:?}"
    );
    assert_eq!(
        e.evaluate(&input("edit_files", &["/home/u/proj/src/a.rs"]))
            .decision,
        Allow
    );
}

/// A result check of an MCP call (`airlock mcp-proxy` asks once a result
/// holds what looks like a secret).
fn result_check(tool: &str) -> serde_json::Value {
    let mut i = input("mcp_tool", &[]);
    i["mcp"] = json!({"server": "s", "tool": tool, "result_secrets": ["aws-access-token"]});
    i
}

#[test]
fn policies_say_what_becomes_of_secrets_in_mcp_calls() {
    use airlock_core::SecretsTreatment::{Allow as Pass, Redact};
    let dir = tempfile::tempdir().expect("tmp");
    // The rule form, and the decision-object field.
    write(
        dir.path(),
        "pass.rego",
        "package team.pass\n\nimport rego.v1\n\nmcp_secrets := \"allow\" if input.mcp.tool in {\"vault_read\", \"both\"}\n",
    );
    write(
        dir.path(),
        "redact.rego",
        r#"package team.redact

import rego.v1

decision := {"decision": "allow", "mcp_secrets": "redact"} if {
	input.mcp.tool in {"shell", "both"}
} else := "allow"
"#,
    );
    let e = engine_in(dir.path(), true);

    // The default policy allows a result check and says nothing, so the
    // proxy's default (redact) applies.
    let d = e.evaluate(&result_check("other"));
    assert_eq!(
        (d.decision, d.rule.as_str(), d.secrets),
        (Allow, "mcp_result", None),
        "{d:?}"
    );
    let d = e.evaluate(&result_check("vault_read"));
    assert_eq!((d.decision, d.secrets), (Allow, Some(Pass)), "{d:?}");
    let d = e.evaluate(&result_check("shell"));
    assert_eq!((d.decision, d.secrets), (Allow, Some(Redact)), "{d:?}");
    // Two packages disagree: the more restrictive treatment wins.
    let d = e.evaluate(&result_check("both"));
    assert_eq!(d.secrets, Some(Redact), "{d:?}");
    // Nothing about secrets outside MCP calls.
    assert_eq!(
        e.evaluate(&input("read_files", &["/home/u/proj/a.txt"]))
            .secrets,
        None
    );
}

#[test]
fn a_malformed_secrets_treatment_fails_closed() {
    for (file, text) in [
        (
            "rule.rego",
            "package team.bad\n\nimport rego.v1\n\nmcp_secrets := \"maybe\" if input.action == \"mcp_tool\"\n",
        ),
        (
            "field.rego",
            "package team.bad\n\nimport rego.v1\n\ndecision := {\"decision\": \"allow\", \"mcp_secrets\": true} if input.action == \"mcp_tool\"\n",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), file, text);
        let e = engine_in(dir.path(), true);
        let d = e.evaluate(&result_check("t"));
        assert_eq!(d.decision, Deny, "{file}: {d:?}");
        assert_eq!(d.reason_code.as_deref(), Some("policy_error"), "{file}: {d:?}");
        assert!(
            d.reasons.iter().any(|r| r.contains("mcp_secrets") && r.contains("\"allow\" or \"redact\"")),
            "{file}: {d:?}"
        );
    }
}
