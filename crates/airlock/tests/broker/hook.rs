//! `airlock hook claude-code` fed recorded Claude Code hook inputs, run as
//! the child of a stand-in agent process (as Claude Code runs its hooks):
//! the JSON it prints, and the audit records it leaves.

use serde_json::{json, Value};

use crate::common::*;

fn pre(tool: &str, input: Value, cwd: &str, id: &str) -> String {
    json!({"session_id": "0e5f1c2a-cc11-4c3e-9a55-6d2c1f0b7a11", "transcript_path": "/tmp/t.jsonl",
        "cwd": cwd, "permission_mode": "default", "hook_event_name": "PreToolUse",
        "tool_name": tool, "tool_input": input, "tool_use_id": id})
    .to_string()
}

fn run_hook(a: &mut Agent, input: &str, extra: &[&str]) -> Value {
    let mut argv = vec![bin(), "hook", "claude-code"];
    argv.extend_from_slice(extra);
    let (code, out, err) = a.spawn_with_input(&argv, input);
    assert_eq!(code, 0, "the hook always answers in JSON: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("hook printed {out:?}: {e}\n{err}"))
}

fn decision(v: &Value) -> (&str, &str) {
    (
        v["hookSpecificOutput"]["permissionDecision"]
            .as_str()
            .unwrap_or("none"),
        v["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap_or(""),
    )
}

#[test]
fn built_in_tool_calls_are_decided_by_the_broker_and_audited() {
    let d = Daemon::start("");
    let ws = p(&d.env.ws);
    let key = p(&d.env.home.join(".ssh/id_rsa"));
    let mut a = d.agent();

    // Read inside the workspace: allowed, with the policy's reason.
    let v = run_hook(
        &mut a,
        &pre(
            "Read",
            json!({"file_path": format!("{ws}/report.txt")}),
            &ws,
            "toolu_01",
        ),
        &[],
    );
    let (dec, why) = decision(&v);
    assert_eq!(dec, "allow", "{v}");
    assert!(
        why.contains("read_files of") && why.contains("report.txt"),
        "{why}"
    );

    // PostToolUse records the outcome against the same request.
    let post = json!({"session_id": "s", "cwd": ws, "hook_event_name": "PostToolUse", "tool_name": "Read",
        "tool_input": {"file_path": format!("{ws}/report.txt")}, "tool_use_id": "toolu_01",
        "tool_response": {"type": "text", "file": {"content": "Q4 revenue: 100\n"}}});
    let v = run_hook(&mut a, &post.to_string(), &[]);
    assert_eq!(v, json!({}), "PostToolUse has nothing to decide");

    // The other file tools, inside the workspace.
    for (tool, input, action) in [
        (
            "Write",
            json!({"file_path": format!("{ws}/new.md"), "content": "x"}),
            "edit_files of",
        ),
        (
            "Edit",
            json!({"file_path": format!("{ws}/report.txt"), "old_string": "100", "new_string": "120"}),
            "edit_files of",
        ),
        (
            "MultiEdit",
            json!({"file_path": format!("{ws}/report.txt"), "edits": []}),
            "edit_files of",
        ),
        ("Glob", json!({"pattern": "**/*.rs"}), "list_files of"),
        ("LS", json!({"path": ws}), "list_files of"),
        (
            "Grep",
            json!({"pattern": "revenue", "path": ws}),
            "read_files of",
        ),
    ] {
        let v = run_hook(&mut a, &pre(tool, input, &ws, "toolu_x"), &[]);
        let (dec, why) = decision(&v);
        assert_eq!(dec, "allow", "{tool}: {v}");
        assert!(why.contains(action), "{tool}: {why}");
    }
    // An edit of a credential store is denied like a read.
    let v = run_hook(
        &mut a,
        &pre(
            "Write",
            json!({"file_path": format!("{ws}/.env"), "content": "K=1"}),
            &ws,
            "toolu_y",
        ),
        &[],
    );
    assert_eq!(decision(&v).0, "deny", "{v}");

    // A credential: denied whatever the human would say, with the rule.
    let v = run_hook(
        &mut a,
        &pre("Read", json!({"file_path": key}), &ws, "toolu_02"),
        &[],
    );
    let (dec, why) = decision(&v);
    assert_eq!(dec, "deny", "{v}");
    assert!(
        why.contains("Policy: airlock.default") && why.contains("cannot be granted"),
        "{why}"
    );
    // Relative paths are taken against cwd, and `..` cannot hide the target.
    let v = run_hook(
        &mut a,
        &pre(
            "Read",
            json!({"file_path": "../.ssh/id_rsa"}),
            &ws,
            "toolu_03",
        ),
        &[],
    );
    assert_eq!(decision(&v).0, "deny", "{v}");

    // Bash is asked about; the human approves out of band; with
    // --sandbox-bash the command is rewritten to run under `airlock run`.
    let human = decide_when_asked(&d, "approve");
    let v = run_hook(
        &mut a,
        &pre(
            "Bash",
            json!({"command": "make test", "description": "run tests"}),
            &ws,
            "toolu_04",
        ),
        &["--sandbox-bash"],
    );
    human.join().unwrap();
    let (dec, _) = decision(&v);
    assert_eq!(dec, "allow", "{v}");
    let cmd = v["hookSpecificOutput"]["updatedInput"]["command"]
        .as_str()
        .unwrap();
    assert!(
        cmd.contains(" run --workspace ") && cmd.ends_with("-- /bin/sh -c 'make test'"),
        "{cmd}"
    );
    // The front binary runs it (it starts faster than the full CLI).
    assert!(
        cmd.contains(bin()) && !cmd.contains("airlock-full"),
        "{cmd}"
    );
    assert_eq!(
        v["hookSpecificOutput"]["updatedInput"]["description"],
        "run tests"
    );

    // An MCP tool by name is asked about like a command.
    let human = decide_when_asked(&d, "approve");
    let v = run_hook(
        &mut a,
        &pre(
            "mcp__github__create_issue",
            json!({"title": "t"}),
            &ws,
            "toolu_09",
        ),
        &[],
    );
    let id = human.join().unwrap();
    assert_eq!(decision(&v).0, "allow", "{v}");
    let shown = d.cli_ok(&["approvals", "show", &id]);
    assert!(shown.contains("mcp__github__create_issue"), "{shown}");

    // WebFetch is asked about; the human denies.
    let human = decide_when_asked(&d, "deny");
    let v = run_hook(
        &mut a,
        &pre(
            "WebFetch",
            json!({"url": "https://example.org/x", "prompt": "p"}),
            &ws,
            "toolu_05",
        ),
        &[],
    );
    human.join().unwrap();
    let (dec, why) = decision(&v);
    assert_eq!(dec, "deny", "{v}");
    assert!(
        why.contains("A human denied") && why.contains("host example.org"),
        "{why}"
    );

    // Inert tools pass; unknown ones and bad input are refused.
    let v = run_hook(
        &mut a,
        &pre("TodoWrite", json!({"todos": []}), &ws, "toolu_06"),
        &[],
    );
    assert_eq!(v, json!({}));
    let v = run_hook(&mut a, &pre("Teleport", json!({}), &ws, "toolu_07"), &[]);
    assert!(decision(&v).1.contains("unknown tool Teleport"), "{v}");
    assert_eq!(decision(&v).0, "deny");
    let v = run_hook(&mut a, "{not json", &[]);
    assert_eq!(decision(&v).0, "deny", "{v}");

    // The audit log holds each decision and the reported outcome.
    let recs = d.records();
    let req_of = |needle: &str| {
        recs.iter()
            .find(|r| r["kind"] == "request" && r.to_string().contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no request record for {needle}"))
    };
    let read = req_of("Claude Code Read");
    assert_eq!(read["decision"]["allowed"], true, "{read}");
    let outcome = recs
        .iter()
        .find(|r| r["kind"] == "outcome")
        .expect("an outcome record");
    assert_eq!(outcome["request_id"], read["request_id"], "{outcome}");
    assert_eq!(outcome["outcome"]["status"], "success");
    assert!(
        !outcome.to_string().contains("Q4 revenue"),
        "the data itself is never recorded"
    );
    assert_eq!(req_of("id_rsa")["decision"]["allowed"], false);
    assert!(req_of("Claude Code Bash").to_string().contains("make test"));

    // The agent that ran the hook holds the session: it is kept off the
    // operator socket like any agent.
    let (code, _, err) = a.spawn(&[bin(), "approvals", "list"]);
    assert_ne!(code, 0, "the agent's children cannot approve: {err}");

    // Broker down: fail closed.
    drop(a);
    let mut d = d;
    d.stop();
    let mut c = std::process::Command::new(bin());
    d.env.apply(&mut c);
    let out = c
        .args(["hook", "claude-code"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(
                pre(
                    "Read",
                    json!({"file_path": format!("{ws}/report.txt")}),
                    &ws,
                    "toolu_08",
                )
                .as_bytes(),
            )?;
            ch.wait_with_output()
        })
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (dec, why) = decision(&v);
    assert_eq!(dec, "deny", "{v}");
    assert!(why.contains("not reachable"), "{why}");
}

#[test]
fn install_merges_into_settings_without_clobbering() {
    let env = Env::new();
    let settings = env.home.join(".claude/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    std::fs::write(
        &settings,
        r#"{"permissions": {"allow": ["Read"]}, "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "my-linter"}]}]}}"#,
    )
    .unwrap();
    let out = env.cli(&["hook", "install", "claude-code", "--user"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(v["permissions"]["allow"], json!(["Read"]));
    let pre = v["hooks"]["PreToolUse"].as_array().unwrap();
    assert_eq!(pre.len(), 2, "{v}");
    assert_eq!(pre[0]["hooks"][0]["command"], "my-linter");
    let installed = pre[1]["hooks"][0]["command"].as_str().unwrap();
    assert!(installed.ends_with("hook claude-code"), "{installed}");
    assert!(
        installed.contains(bin()) && !installed.contains("airlock-full"),
        "{installed}"
    );
    assert_eq!(v["hooks"]["PostToolUse"].as_array().unwrap().len(), 1);
    // Again: nothing changes.
    let before = std::fs::read_to_string(&settings).unwrap();
    assert!(env
        .cli(&["hook", "install", "claude-code", "--user"])
        .status
        .success());
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), before);
    // --print writes nothing and shows the entries.
    let out = env.cli(&[
        "hook",
        "install",
        "claude-code",
        "--print",
        "--sandbox-bash",
    ]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .ends_with("hook claude-code --sandbox-bash"));
    // Broken settings are left alone.
    std::fs::write(&settings, "{broken").unwrap();
    let out = env.cli(&["hook", "install", "claude-code", "--user"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), "{broken");
}
