//! The seed's workflow end to end: manifest → allow → token → read → staged
//! edit → diff → commit → audit verify.

use serde_json::json;

use crate::common::*;

#[test]
fn seed_workflow_end_to_end() {
    let d = Daemon::start("");
    let report = d.env.ws.join("report.txt");
    let mut agent = d.agent();

    // The seed's manifest, as written, for a file in the workspace.
    let (status, v) = agent.request(json!({
        "action": "edit_files",
        "paths": [p(&report)],
        "duration_seconds": 300,
        "justification": "Summarize and correct the Q4 report"
    }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["policy_id"], "airlock.default");
    let token = v["token"].as_str().unwrap().to_string();
    let request_id = v["request_id"].as_str().unwrap().to_string();
    assert!(v["expires_at"].as_str().is_some());

    let (s, r) = agent.read(&token, &p(&report));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["content"], "Q4 revenue: 100\n");
    assert_eq!(r["encoding"], "utf8");

    let (s, w) = agent.write(&token, &p(&report), "Q4 revenue: 120\n");
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["staged"], true);
    let staging_id = w["staging_id"].as_str().unwrap().to_string();
    // The real file is untouched; the agent reads its own staged edit.
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "Q4 revenue: 100\n"
    );
    let (_, r) = agent.read(&token, &p(&report));
    assert_eq!(
        (r["content"].as_str(), r["staged"].as_bool()),
        (Some("Q4 revenue: 120\n"), Some(true))
    );

    // The human reviews and commits.
    let diff = d.cli_ok(&["staged", "diff", &staging_id]);
    assert!(
        diff.contains("-Q4 revenue: 100") && diff.contains("+Q4 revenue: 120"),
        "{diff}"
    );
    let out = d.cli_ok(&["staged", "commit", &staging_id]);
    assert!(out.contains("committed"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "Q4 revenue: 120\n"
    );

    // The trail: one request record, then fs records under the same request id.
    let out = d.cli_ok(&["audit", "verify"]);
    assert!(out.starts_with("ok:"), "{out}");
    let recs = d.records();
    let mine: Vec<_> = recs
        .iter()
        .filter(|r| r["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(mine[0]["kind"], "request");
    assert_eq!(mine[0]["intent"]["action"], "edit_files");
    assert_eq!(mine[0]["decision"]["allowed"], true);
    assert_eq!(mine[0]["decision"]["policy_id"], "airlock.default");
    assert_eq!(mine[0]["token_id"], v["token_id"]);
    assert_eq!(mine[0]["peer"]["pid"], agent.pid());
    assert!(mine
        .iter()
        .any(|r| r["kind"] == "fs" && r["intent"]["action"] == "read"));
    assert!(mine.iter().any(|r| r["kind"] == "fs"
        && r["intent"]["action"] == "write"
        && r["outcome"]["staging_id"] == staging_id.as_str()));
    let commit = recs.iter().rev().find(|r| r["kind"] == "commit").unwrap();
    assert_eq!(commit["outcome"]["modified_files"], json!([p(&report)]));
    for r in &recs {
        for k in [
            "ts",
            "agent",
            "user",
            "request_id",
            "intent",
            "decision",
            "execution",
            "outcome",
            "prev_hash",
            "hash",
        ] {
            assert!(r.get(k).is_some(), "record lacks {k}: {r}");
        }
    }
    // The CLI shows the request's records.
    let shown = d.cli_ok(&["audit", "show", &request_id]);
    assert!(shown.contains("\"kind\": \"request\""), "{shown}");
}

#[test]
fn deny_carries_rule_reason_and_whether_a_human_could_grant() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let key = d.env.home.join(".ssh/id_rsa");
    let (s, v) = agent.request(manifest("read_files", &[&key], 60));
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], "credential_store");
    assert_eq!(v["grantable"], false);
    assert!(v["reasons"][0].as_str().unwrap().contains(".ssh"), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("never"), "{v}");
    assert!(v.get("token").is_none());
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_every_record() {
    let mut d = Daemon::start("");
    let mut agent = d.agent();
    for _ in 0..5 {
        agent.token(manifest("read_files", &[&d.env.ws], 60));
    }
    let st = d.stop();
    assert!(st.success(), "{st}\n{}", d.log());
    assert!(!d.env.socket().exists(), "agent socket left behind");
    assert!(
        !d.env.operator_socket().exists(),
        "operator socket left behind"
    );
    let recs = d.records();
    assert_eq!(recs.iter().filter(|r| r["kind"] == "request").count(), 5);
    assert_eq!(recs.last().unwrap()["intent"]["action"], "broker_stop");
    let out = d.cli_ok(&["audit", "verify"]);
    assert!(out.starts_with("ok:"), "{out}");
    // State is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.env.state_dir()), 0o700);
    assert_eq!(mode(&d.env.state_dir().join("token.key")), 0o600);
    assert_eq!(mode(&d.env.run.join("airlock")), 0o700);
}

#[test]
fn cli_output_into_a_closed_pipe_ends_quietly() {
    // `airlock audit tail | head -1`: once the reader is gone, the command
    // ends as Unix tools do (SIGPIPE), without a panic on its next write.
    use std::os::unix::process::ExitStatusExt;
    let d = Daemon::start("");
    // Something to print: a request's records, and the output checked
    // non-empty (a command that writes nothing never meets the pipe).
    let (status, _) = d.agent().request(json!({
        "action": "read_files", "paths": [p(&d.env.ws)],
        "duration_seconds": 60, "justification": "records to tail"
    }));
    assert_eq!(status, 200);
    assert!(!d.cli_ok(&["audit", "tail", "-n", "50"]).trim().is_empty());
    // The reader is closed before the command starts. (Dropping a piped
    // stdout after spawning races with other tests' spawns, whose forked
    // children briefly hold a copy of every descriptor: a short output can
    // land in the pipe before that copy is gone.)
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = std::process::Command::new(bin());
    d.env.apply(&mut c);
    c.args(["audit", "tail", "-n", "50"])
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let out = c.spawn().unwrap().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}
