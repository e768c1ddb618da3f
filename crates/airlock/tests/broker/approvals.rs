//! Consent: ask → pending approval bound to the exact manifest → a human
//! decides on the operator socket → the agent's long poll gets the outcome.

use serde_json::json;

use crate::common::*;

fn approval_id(v: &serde_json::Value) -> String {
    v["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no approval id: {v}"))
        .to_string()
}

#[test]
fn ask_then_approve_then_token_works_only_for_that_manifest() {
    let d = Daemon::start("");
    let secret = d.env.outside.join("secret.txt");
    let mut agent = d.agent();
    let (s, v) = agent.request(manifest("read_files", &[&secret], 120));
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["decision"], "ask");
    assert_eq!(v["rule"], "outside_workspace");
    let id = approval_id(&v);

    // Still pending after a short poll.
    let (s, v) = agent.call("GET", &format!("/v1/approvals/{id}?wait=1"), None, None);
    assert_eq!((s, v["decision"].as_str()), (202, Some("ask")), "{v}");

    let listed = d.cli_ok(&["approvals", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("pending"),
        "{listed}"
    );
    let shown = d.cli_ok(&["approvals", "show", &id]);
    assert!(
        shown.contains(&p(&secret)) && shown.contains("integration test"),
        "{shown}"
    );
    d.cli_ok(&["approvals", "approve", &id]);

    let (s, v) = agent.call("GET", &format!("/v1/approvals/{id}?wait=5"), None, None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"], "allow");
    let token = v["token"].as_str().unwrap().to_string();
    let (s, r) = agent.read(&token, &p(&secret));
    assert_eq!(
        (s, r["content"].as_str()),
        (200, Some("canary-outside\n")),
        "{r}"
    );
    // The approval covers that manifest only: not a sibling, not a write.
    std::fs::write(d.env.outside.join("other.txt"), "x").unwrap();
    let (s, r) = agent.read(&token, &p(&d.env.outside.join("other.txt")));
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (403, Some("token_scope")),
        "{r}"
    );
    let (s, r) = agent.write(&token, &p(&secret), "y");
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (403, Some("token_scope")),
        "{r}"
    );
    // A second, different manifest is asked about again.
    let (s, _) = agent.request(manifest(
        "read_files",
        &[&d.env.outside.join("other.txt")],
        120,
    ));
    assert_eq!(s, 202);
    // Records: the ask, then the approval with its token.
    let recs = d.records();
    let appr = recs
        .iter()
        .find(|r| r["kind"] == "approval" && r["approval_id"] == id.as_str())
        .unwrap();
    assert_eq!(appr["decision"]["allowed"], true);
    assert!(appr["token_id"].as_str().is_some());
}

#[test]
fn another_session_cannot_collect_the_approval() {
    let d = Daemon::start("");
    let mut a = d.agent();
    let mut b = d.agent();
    let (_, v) = a.request(manifest("read_files", &[&d.env.outside], 60));
    let id = approval_id(&v);
    d.cli_ok(&["approvals", "approve", &id]);
    let (s, v) = b.call("GET", &format!("/v1/approvals/{id}"), None, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("approval_not_found")),
        "{v}"
    );
    let (s, _) = a.call("GET", &format!("/v1/approvals/{id}"), None, None);
    assert_eq!(s, 200);
}

#[test]
fn deny_and_expiry() {
    let d = Daemon::start("[approvals]\ntimeout_seconds = 2\n");
    let mut agent = d.agent();
    let (_, v) = agent.request(manifest("read_files", &[&d.env.outside], 60));
    let id = approval_id(&v);
    d.cli_ok(&["approvals", "deny", &id, "--reason", "not today"]);
    let (s, v) = agent.call("GET", &format!("/v1/approvals/{id}?wait=5"), None, None);
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (403, Some("denied_by_user")),
        "{v}"
    );
    assert!(v["reasons"][0].as_str().unwrap().contains("not today"));

    let (_, v) = agent.request(manifest("list_files", &[&d.env.outside], 60));
    let id = approval_id(&v);
    let (s, v) = agent.call("GET", &format!("/v1/approvals/{id}?wait=10"), None, None);
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (403, Some("approval_expired")),
        "{v}"
    );
    let o = d.cli(&["approvals", "approve", &id]);
    assert!(!o.status.success(), "approving a lapsed approval must fail");
    assert!(d
        .records()
        .iter()
        .any(|r| r["kind"] == "approval" && r["outcome"]["status"] == "expired"));
}

#[test]
fn standing_approval_covers_identical_requests_only() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let m = manifest("read_files", &[&d.env.outside], 60);
    let (_, v) = agent.request(m.clone());
    let id = approval_id(&v);
    d.cli_ok(&["approvals", "approve", &id, "--for", "10m"]);
    let (s, v) = agent.request(m.clone());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval_id"], id.as_str());
    let mut m2 = m.clone();
    m2["duration_seconds"] = json!(61);
    assert_eq!(
        agent.request(m2).0,
        202,
        "a different manifest is asked again"
    );
    // Another session is not covered.
    let mut other = d.agent();
    assert_eq!(other.request(m).0, 202);
}

#[test]
fn agents_and_their_children_cannot_use_the_operator_socket() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let (_, v) = agent.request(manifest("read_files", &[&d.env.outside], 60));
    let id = approval_id(&v);
    // The agent runs the CLI itself, directly and through a shell.
    let (code, _, err) = agent.spawn(&[bin(), "approvals", "approve", &id]);
    assert_ne!(code, 0);
    assert!(
        err.contains("forbidden") && err.contains("descends from agent session"),
        "{err}"
    );
    let (code, _, err) = agent.spawn(&["sh", "-c", &format!("{} approvals approve {id}", bin())]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = agent.spawn(&[bin(), "status"]);
    assert_ne!(code, 0, "{err}");
    let (s, v) = agent.call("GET", &format!("/v1/approvals/{id}"), None, None);
    assert_eq!(
        (s, v["decision"].as_str()),
        (202, Some("ask")),
        "still pending: {v}"
    );
    // The agent socket has no route that approves.
    let (s, v) = agent.call(
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        None,
        Some(json!({})),
    );
    assert!(s == 404 || s == 405, "{s} {v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    // The human can.
    d.cli_ok(&["approvals", "approve", &id]);
    assert_eq!(
        agent
            .call("GET", &format!("/v1/approvals/{id}"), None, None)
            .0,
        200
    );
}
