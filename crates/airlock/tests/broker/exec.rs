//! Brokered `exec` (policy, consent, token, sandbox, audit) and reviewing
//! `airlock run`'s staged changes without a broker.

use serde_json::json;

use crate::common::*;

/// Ask for `exec` of `command` in `ws` (asked about under the default
/// policy), approve it as the human, and collect the token.
fn approved_exec(d: &Daemon, a: &mut Agent, ws: &str, command: &str, why: &str) -> String {
    let m = json!({"action": "exec", "paths": [ws], "commands": [command], "duration_seconds": 120,
        "justification": why});
    let (s, v) = a.request(m);
    assert_eq!(
        (s, v["rule"].as_str()),
        (202, Some("exec")),
        "exec is asked about: {v}"
    );
    let id = v["approval_id"].as_str().unwrap().to_string();
    d.cli_ok(&["approvals", "approve", &id]);
    let (s, v) = a.call("GET", &format!("/v1/approvals/{id}?wait=5"), None, None);
    assert_eq!(s, 200, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn brokered_exec_is_asked_sandboxed_staged_and_recorded() {
    let d = Daemon::start("");
    let ws = p(&d.env.ws);
    let key = p(&d.env.home.join(".ssh/id_rsa"));
    let mut a = d.agent();
    let token = approved_exec(&d, &mut a, &ws, "sh", "run the build");

    let script = format!("echo built > out.txt; cat report.txt; cat {key} 2>/dev/null || echo no-key; ls /proc | grep -c '^[0-9]'");
    let (s, v) = a.call(
        "POST",
        "/v1/exec",
        Some(&token),
        Some(json!({"argv": ["sh", "-c", script], "cwd": ws})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
    let out = v["stdout"]["content"].as_str().unwrap();
    assert!(
        out.contains("Q4 revenue: 100"),
        "the workspace is visible: {out}"
    );
    assert!(
        out.contains("no-key") && !out.contains("canary"),
        "the home directory is not: {out}"
    );
    assert!(
        !d.env.ws.join("out.txt").exists(),
        "writes are staged, not applied"
    );
    assert_eq!(v["staged_files"], json!([format!("{ws}/out.txt")]), "{v}");
    assert!(v["layers"]["seccomp"].as_bool().unwrap(), "{v}");

    // The record carries the spec, the layers applied and the outcome.
    let recs = d.records();
    let exec: Vec<_> = recs.iter().filter(|r| r["kind"] == "exec").collect();
    assert_eq!(exec.len(), 2, "intent and outcome");
    assert_eq!(exec[0]["intent"]["phase"], "intent");
    let done = exec[1];
    assert_eq!(done["outcome"]["exit_code"], 0);
    assert!(
        done["execution"]["spec"]["hidden"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().contains("airlock")),
        "{done}"
    );
    assert!(
        done["execution"]["layers"]["namespaces"]
            .as_array()
            .unwrap()
            .len()
            >= 6,
        "{done}"
    );
    assert!(done["execution"]["limits_mechanism"].is_string(), "{done}");
    assert!(done["outcome"]["duration_ms"].is_u64());

    // A program the token does not name is refused.
    let (s, v) = a.call(
        "POST",
        "/v1/exec",
        Some(&token),
        Some(json!({"argv": ["python3", "-c", "1"], "cwd": ws})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("token_scope")),
        "{v}"
    );
    // The human commits the staged output.
    d.cli_ok(&["staged", "commit"]);
    assert_eq!(
        std::fs::read_to_string(d.env.ws.join("out.txt")).unwrap(),
        "built\n"
    );
}

#[test]
fn airlock_run_changes_are_reviewed_and_committed_without_a_broker() {
    let env = Env::new();
    let mut run = std::process::Command::new(bin());
    env.apply(&mut run);
    let o = run
        .args(["run", "--workspace"])
        .arg(&env.ws)
        .args([
            "--",
            "sh",
            "-c",
            "echo fresh > new.txt; echo 'Q4 revenue: 130' > report.txt",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("airlock staged"),
        "the run says how to review: {err}"
    );
    assert!(!env.ws.join("new.txt").exists());
    assert!(!health(&env.socket()), "no broker runs");

    let list = env.cli(&["staged", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && text.contains("new.txt") && text.contains("report.txt"),
        "{text}{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let diff = String::from_utf8_lossy(&env.cli(&["staged", "diff"]).stdout).into_owned();
    assert!(diff.contains("+Q4 revenue: 130"), "{diff}");
    let c = env.cli(&["staged", "commit"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(
        std::fs::read_to_string(env.ws.join("new.txt")).unwrap(),
        "fresh\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.ws.join("report.txt")).unwrap(),
        "Q4 revenue: 130\n"
    );
    // The commit is on the record.
    let v = env.cli(&["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("ok:"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let tail = String::from_utf8_lossy(&env.cli(&["audit", "tail", "--json"]).stdout).into_owned();
    assert!(tail.contains("\"kind\":\"commit\""), "{tail}");
}

#[test]
fn staged_changes_that_cannot_be_listed_are_recorded_as_such_and_can_be_discarded() {
    let d = Daemon::start("");
    let ws = p(&d.env.ws);
    let mut a = d.agent();
    let token = approved_exec(&d, &mut a, &ws, "python3", "run a generator");

    // Directories nested deeper than any path may be long: nothing below
    // can be reviewed or committed.
    let script = "import os\nfor _ in range(2100):\n    os.mkdir('d'); os.chdir('d')\nopen('f', 'w').write('x')\n";
    let (s, v) = a.call(
        "POST",
        "/v1/exec",
        Some(&token),
        Some(json!({"argv": ["python3", "-c", script], "cwd": ws})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(v["staged_files"].is_null(), "not an empty list: {v}");
    let why = v["staged_error"].as_str().unwrap_or_default();
    assert!(why.contains("longer than 4095 bytes"), "{v}");
    assert!(
        v["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("airlock staged discard"),
        "{v}"
    );
    let recs = d.records();
    let done = recs.iter().rfind(|r| r["kind"] == "exec").unwrap();
    assert_eq!(done["outcome"]["staged_error"], v["staged_error"], "{done}");
    assert!(done["outcome"]["staged_files"].is_null(), "{done}");

    // The broker keeps serving, and the area can be discarded whole.
    let area = v["staging_id"].as_str().unwrap().to_string();
    d.cli_ok(&["staged", "discard", &area]);
    let (s, _) = a.call("GET", "/v1/health", None, None);
    assert_eq!(s, 200);
}
