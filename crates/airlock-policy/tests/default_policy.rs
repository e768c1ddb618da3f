//! Decisions of the embedded default policy, evaluated through the compiled
//! engine exactly as the broker calls it.

mod common;

use airlock_core::DecisionKind::{Allow, Ask, Deny};
use common::{default_engine, input, WS};
use serde_json::json;

#[test]
fn workspace_read_list_edit_allowed() {
    let (_d, e) = default_engine();
    for action in ["read_files", "list_files", "edit_files", "commit"] {
        let d = e.evaluate(&input(action, &["/home/u/proj/src/main.rs"]));
        assert_eq!(d.decision, Allow, "{action}: {d:?}");
        assert_eq!(d.policy_id, "airlock.default");
        assert_eq!(d.rule, "workspace");
        assert!(
            d.reasons[0].contains("inside your workspace /home/u/proj"),
            "{d:?}"
        );
    }
    // The workspace root itself.
    assert_eq!(e.evaluate(&input("list_files", &[WS])).decision, Allow);
}

#[test]
fn sibling_prefix_is_outside_and_asks() {
    let (_d, e) = default_engine();
    let d = e.evaluate(&input("read_files", &["/home/u/proj-evil/secret.txt"]));
    assert_eq!(d.decision, Ask, "{d:?}");
    assert!(d.grantable);
    assert_eq!(d.rule, "outside_workspace");
    assert_eq!(
        d.reasons,
        vec!["/home/u/proj-evil/secret.txt is outside your workspaces (/home/u/proj)".to_string()]
    );
    let d = e.evaluate(&input("read_files", &["/etc/hosts"]));
    assert_eq!(d.decision, Ask);
    assert_eq!(
        d.reasons,
        vec!["/etc/hosts is outside your workspaces (/home/u/proj)".to_string()]
    );
}

#[test]
fn ssh_key_inside_workspace_is_denied_and_not_grantable() {
    let (_d, e) = default_engine();
    let d = e.evaluate(&input("read_files", &["/home/u/proj/.ssh/id_rsa"]));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert!(!d.grantable);
    assert_eq!(d.rule, "credential_store");
    assert!(d.reasons.iter().any(|r| r.contains(".ssh")), "{d:?}");
}

#[test]
fn env_files_are_denied() {
    let (_d, e) = default_engine();
    for p in [
        "/home/u/proj/.env",
        "/home/u/proj/.env.local",
        "/home/u/proj/app/.env.production",
    ] {
        let d = e.evaluate(&input("read_files", &[p]));
        assert_eq!(d.decision, Deny, "{p}: {d:?}");
        assert!(!d.grantable);
    }
    // Templates are not secrets.
    assert_eq!(
        e.evaluate(&input("read_files", &["/home/u/proj/.env.example"]))
            .decision,
        Allow
    );
    // Nor is a file merely starting with ".env".
    assert_eq!(
        e.evaluate(&input("read_files", &["/home/u/proj/.envrc.md"]))
            .decision,
        Allow
    );
}

#[test]
fn credential_stores_denied_wherever_they_appear() {
    let (_d, e) = default_engine();
    for p in [
        "/home/u/.aws/credentials",
        "/home/u/proj/vendor/.aws",
        "/home/u/.kube/config",
        "/home/u/.gnupg/private-keys-v1.d/x.key",
        "/home/u/.docker/config.json",
        "/home/u/.netrc",
        "/home/u/.git-credentials",
        "/home/u/.config/gh/hosts.yml",
        "/home/u/.config/gcloud/credentials.db",
        "/home/u/.azure/msal_token_cache.json",
        "/home/u/.password-store/bank.gpg",
        "/home/u/.local/share/keyrings/login.keyring",
        "/home/u/.mozilla/firefox/abc.default/logins.json",
        "/home/u/.config/google-chrome/Default/Login Data",
        "/home/u/.config/chromium/Default/Cookies",
        "/home/u/.config/BraveSoftware/Brave-Browser/Default",
        "/home/u/.config/microsoft-edge/Default",
        "/home/u/snap/firefox/common/.mozilla",
        "/Users/u/Library/Application Support/Google/Chrome/Default/Cookies",
        "/Users/u/Library/Keychains/login.keychain-db",
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/etc/sudoers.d/90-cloud",
        "/proc/1/environ",
        "/proc/self/mem",
        "/proc/42/task/43/environ",
        "/mnt/backup/home/u/.ssh/authorized_keys",
        "/home/u/proj/deploy/id_ed25519",
        "/home/u/proj/.SSH/config",
    ] {
        let d = e.evaluate(&input("read_files", &[p]));
        assert_eq!(d.decision, Deny, "{p}: {d:?}");
        assert!(!d.grantable, "{p}");
        assert_eq!(d.rule, "credential_store", "{p}");
        assert!(d.reasons.iter().all(|r| r.contains(p)), "{p}: {d:?}");
    }
}

#[test]
fn look_alikes_are_not_credentials() {
    let (_d, e) = default_engine();
    for p in [
        "/home/u/proj/docs/ssh.md",
        "/home/u/proj/.sshrc-notes",
        "/home/u/proj/src/aws.rs",
        "/home/u/proj/docker/config.json",
        "/home/u/proj/id_rsa.pub.txt",
        "/home/u/proj/proc/1/environ",
        "/home/u/proj/etc/hosts",
    ] {
        let d = e.evaluate(&input("read_files", &[p]));
        assert_eq!(d.decision, Allow, "{p}: {d:?}");
    }
}

#[test]
fn broker_state_is_denied_even_inside_a_workspace() {
    let (_d, e) = default_engine();
    let mut inp = input(
        "edit_files",
        &["/home/u/.config/airlock/policy/allow-all.rego"],
    );
    inp["workspaces"] = json!(["/home/u"]);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.rule, "broker_state");
    assert!(!d.grantable);
    // A directory holding broker state needs approval even inside a workspace.
    let mut inp = input("read_files", &["/home/u/.config"]);
    inp["workspaces"] = json!(["/home/u"]);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Ask, "{d:?}");
    assert_eq!(d.rule, "holds_broker_state");
}

#[test]
fn exec_and_network_ask() {
    let (_d, e) = default_engine();
    let mut inp = input("exec", &[WS]);
    inp["commands"] = json!(["cargo"]);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Ask, "{d:?}");
    assert_eq!(d.rule, "exec");
    assert_eq!(
        d.reasons,
        vec!["running commands (cargo) needs your approval".to_string()]
    );

    let mut inp = input("network", &[]);
    inp["hosts"] = json!(["api.example.com:443"]);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Ask, "{d:?}");
    assert_eq!(
        d.reasons,
        vec!["network access to api.example.com:443 needs your approval".to_string()]
    );
}

#[test]
fn labelled_path_asks() {
    let (_d, e) = default_engine();
    let mut inp = input("read_files", &["/home/u/proj/hr/salaries.xlsx"]);
    inp["path_infos"][0]["labels"] = json!(["confidential"]);
    inp["labels"] = json!(["confidential"]);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Ask, "{d:?}");
    assert_eq!(d.rule, "labelled");
    assert!(d.reasons[0].contains("confidential"), "{d:?}");
}

#[test]
fn misaligned_path_infos_fall_back_to_the_union_of_labels() {
    let (_d, e) = default_engine();
    let mut inp = input("read_files", &["/home/u/proj/a", "/home/u/proj/b"]);
    inp["path_infos"] = json!([]);
    inp["labels"] = json!(["secret"]);
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Ask, "{d:?}");
}

#[test]
fn exhausted_quota_denies_with_reason_code() {
    let (_d, e) = default_engine();
    let mut inp = input("read_files", &["/home/u/proj/a.txt"]);
    inp["usage"]["requests_per_minute"] = json!({"used": 600, "limit": 600, "retry_after": 12});
    let d = e.evaluate(&inp);
    assert_eq!(d.decision, Deny, "{d:?}");
    assert_eq!(d.rule, "quota");
    assert_eq!(d.reason_code.as_deref(), Some("quota_exceeded"));
    assert!(!d.grantable);
    assert_eq!(
        d.reasons,
        vec!["quota requests_per_minute is used up (600 of 600); retry in 12 s".to_string()]
    );
}

#[test]
fn multi_path_takes_the_most_restrictive_and_names_the_path() {
    let (_d, e) = default_engine();
    let d = e.evaluate(&input(
        "read_files",
        &["/home/u/proj/a.txt", "/tmp/x", "/home/u/proj/b.txt"],
    ));
    assert_eq!(d.decision, Ask, "{d:?}");
    assert!(d.reasons.iter().any(|r| r.contains("/tmp/x")), "{d:?}");

    let d = e.evaluate(&input(
        "read_files",
        &["/home/u/proj/a.txt", "/tmp/x", "/home/u/proj/.env"],
    ));
    assert_eq!(d.decision, Deny, "{d:?}");
    assert!(!d.grantable);
    assert_eq!(d.reasons.len(), 1, "{d:?}");
    assert!(d.reasons[0].contains("/home/u/proj/.env"), "{d:?}");
}

#[test]
fn unknown_action_and_missing_paths_are_denied() {
    let (_d, e) = default_engine();
    let d = e.evaluate(&input("format_disk", &[WS]));
    assert_eq!(d.decision, Deny);
    assert_eq!(d.rule, "unknown_action");
    let d = e.evaluate(&input("read_files", &[]));
    assert_eq!(d.decision, Deny);
    assert_eq!(d.rule, "no_paths");
}

#[test]
fn malformed_inputs_fail_closed() {
    let (_d, e) = default_engine();
    for bad in [
        json!("read_files"),
        json!({"action": "read_files", "paths": "/home/u/proj/a"}),
        json!({"action": "read_files", "paths": [1]}),
        json!({"action": "read_files", "paths": ["/home/u/proj/a"], "workspaces": "/home/u/proj"}),
        json!({"action": "read_files", "paths": ["/home/u/proj/a"], "workspaces": ["/home/u/proj"], "broker_paths": [7]}),
    ] {
        let d = e.evaluate(&bad);
        assert_eq!(d.decision, Deny, "{bad}: {d:?}");
        assert_eq!(d.reason_code.as_deref(), Some("policy_error"), "{bad}");
    }
}

#[test]
fn revision_is_stable_and_shaped() {
    let (_d, e) = default_engine();
    let r = e.revision();
    assert!(
        r.starts_with("sha256:") && r.len() == "sha256:".len() + 12,
        "{r}"
    );
    let (_d2, e2) = default_engine();
    assert_eq!(r, e2.revision());
    let m = e.modules();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].package, "airlock.default");
    assert_eq!(m[0].source, "embedded:default.rego");
    assert_eq!(e.backend(), "compiled");
}
