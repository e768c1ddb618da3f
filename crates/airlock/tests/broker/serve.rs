//! `airlock serve` itself: socket overrides, status, refusing other users,
//! one broker per socket.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A child process that is killed if the test fails before reaping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn airlock_socket_overrides_and_status_reports_everything() {
    let env = Env::new();
    let custom = env.tmp.path().join("elsewhere/agent.sock");
    let mut c = Command::new(bin());
    env.apply(&mut c);
    c.env("AIRLOCK_SOCKET", &custom)
        .args(["serve", "--workspace"])
        .arg(&env.ws)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(c.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health(&custom) {
        assert!(
            Instant::now() < deadline,
            "broker did not listen on AIRLOCK_SOCKET"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!env.socket().exists(), "the default socket is not used");
    let op = custom.with_file_name("operator.sock");
    assert!(
        health(&op),
        "the operator socket sits beside the agent socket"
    );
    let mut s = Command::new(bin());
    env.apply(&mut s);
    let out = s
        .env("AIRLOCK_SOCKET", &custom)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["socket"], custom.display().to_string());
    assert_eq!(v["workspaces"][0], env.ws.display().to_string());
    for k in [
        "policy",
        "sessions",
        "approvals_pending",
        "tokens_active",
        "staged",
        "audit",
    ] {
        assert!(v.get(k).is_some(), "status lacks {k}: {v}");
    }
    assert!(v["audit"]["head_seq"].as_u64().unwrap() >= 1);
    // A second broker on the same socket refuses to start.
    let mut second = Command::new(bin());
    env.apply(&mut second);
    let o = second
        .env("AIRLOCK_SOCKET", &custom)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn peers_running_as_another_user_are_refused() {
    if !is_root() {
        println!("SKIPPED: peers_running_as_another_user_are_refused: needs root to run a client as another user");
        return;
    }
    let d = Daemon::start("");
    // Open the socket's directory and file to everyone, as a careless setup
    // might: the broker must still refuse the other user by SO_PEERCRED.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.env.run.join("airlock"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(d.env.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    for dir in [d.env.tmp.path(), &d.env.run] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1])\ns.sendall(b'GET /v1/health HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n')\nd=b''\nwhile True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\nprint(d.decode())";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(d.env.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 403"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("peer_refused"), "{text}");
}

#[test]
fn tokens_survive_a_restart_and_stay_listed_and_revocable() {
    let mut d = Daemon::start("");
    let mut a = d.agent();
    let (_, v) = a.request(manifest("read_files", &[&d.env.ws], 600));
    let (token, id) = (
        v["token"].as_str().unwrap().to_string(),
        v["token_id"].as_str().unwrap().to_string(),
    );
    let f = p(&d.env.ws.join("report.txt"));
    assert_eq!(d.stop().code(), Some(0));
    d.restart();
    // The agent's session and its token outlive the broker's restart.
    assert_eq!(a.read(&token, &f).0, 200);
    let listed = d.cli_ok(&["tokens", "list"]);
    assert!(listed.contains(&id[..16]), "{listed}");
    d.cli_ok(&["tokens", "revoke", &id[..16]]);
    let (s, v) = a.read(&token, &f);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("token_revoked")),
        "{v}"
    );
}

#[test]
fn policy_test_and_eval_from_the_cli() {
    let env = Env::new();
    let dir = env.tmp.path().join("pol");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("team.rego"),
        "package team\n\nimport rego.v1\n\ndeny contains \"no pdfs\" if endswith(input.path, \".pdf\")\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("team_test.rego"),
        "package team_test\n\nimport rego.v1\n\ntest_pdf if { count(data.team.deny) == 1 with input as {\"path\": \"/a.pdf\"} }\n\ntest_wrong if { count(data.team.deny) == 1 with input as {\"path\": \"/a.txt\"} }\n",
    )
    .unwrap();
    let d = dir.display().to_string();
    let o = env.cli(&["policy", "test", &d]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failing test fails the run: {out}"
    );
    assert!(
        out.contains("FAIL team_test.test_wrong") && out.contains("1 failed"),
        "{out}"
    );
    std::fs::remove_file(dir.join("team_test.rego")).unwrap();
    std::fs::write(dir.join("team_test.rego"), "package team_test\n\nimport rego.v1\n\ntest_pdf if { count(data.team.deny) == 1 with input as {\"path\": \"/a.pdf\"} }\n").unwrap();
    let o = env.cli(&["policy", "test", &d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    let input = env.tmp.path().join("input.json");
    std::fs::write(&input, serde_json::json!({"action": "read_files", "paths": [p(&env.ws.join("x.pdf"))], "workspaces": [p(&env.ws)]}).to_string()).unwrap();
    let o = env.cli(&[
        "policy",
        "eval",
        "--dir",
        &d,
        "--input",
        &input.display().to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            o.status.code(),
            v["decision"].as_str(),
            v["policy_id"].as_str()
        ),
        (Some(3), Some("deny"), Some("team")),
        "{v}"
    );
    std::fs::write(&input, serde_json::json!({"action": "read_files", "paths": [p(&env.ws.join("x.txt"))], "workspaces": [p(&env.ws)]}).to_string()).unwrap();
    let o = env.cli(&[
        "policy",
        "eval",
        "--dir",
        &d,
        "--input",
        &input.display().to_string(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
