//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`)
//! against `airlock mcp --http`. The scenarios listed here are the ones
//! that apply to a server with our tools; the rest call fixed test tools,
//! resources and prompts that only the suite's own test server has (see
//! docs/mcp.md for the list and why).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::*;
use crate::python::fixture;
use crate::typescript::node_modules;

/// Scenarios `airlock mcp` must pass.
pub const APPLICABLE: &[&str] = &[
    "server-initialize",
    "ping",
    "logging-set-level",
    "tools-list",
    "server-sse-multiple-streams",
    "resources-list",
    "prompts-list",
    "dns-rebinding-protection",
];

/// A child killed on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `argv` and wait for its "serving MCP at URL" line on stderr.
pub fn serve_http(env: &Env, argv: &[&str], vars: &[(&str, &str)]) -> (Reaped, String) {
    let mut c = Command::new(argv[0]);
    env.apply(&mut c);
    c.envs(vars.iter().copied());
    let mut child = c
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    let mut seen = String::new();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                seen.push_str(&l);
                seen.push('\n');
                if let Some(u) = l.split("serving MCP at ").nth(1) {
                    break u.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("{argv:?} did not start serving:\n{seen}");
            }
        }
    };
    // Keep draining, so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Reaped(child), url)
}

/// Run one scenario; the checks it recorded.
pub fn scenario(nm: &std::path::Path, url: &str, name: &str, out: &std::path::Path) -> Vec<Value> {
    let dir = out.join(name);
    let o = Command::new("node")
        .arg(nm.join("@modelcontextprotocol/conformance/dist/index.js"))
        .args(["server", "--url", url, "--scenario", name, "-o"])
        .arg(&dir)
        .output()
        .unwrap();
    let mut checks = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("checks.json")) {
            if let Ok(Value::Array(a)) = serde_json::from_str(&s) {
                checks.extend(a);
            }
        }
    }
    assert!(
        !checks.is_empty(),
        "scenario {name} recorded no checks:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    checks
}

pub fn passed(checks: &[Value]) -> bool {
    checks.iter().all(|c| c["status"] == "SUCCESS")
}

#[test]
fn conformance_suite_passes_the_applicable_scenarios() {
    let nm = or_skip!(node_modules());
    if !nm
        .join("@modelcontextprotocol/conformance/dist/index.js")
        .exists()
    {
        println!(
            "SKIPPED: the conformance suite is not installed; `bash scripts/test.sh` installs it"
        );
        return;
    }
    let d = Daemon::start("");
    fixture(&d.env);
    let ws = p(&d.env.ws);
    let (_srv, url) = serve_http(
        &d.env,
        &[
            bin(),
            "mcp",
            "--no-embedded",
            "--http",
            "127.0.0.1:0",
            "--no-auth",
            &ws,
        ],
        &[],
    );
    let out = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for s in APPLICABLE {
        let checks = scenario(&nm, &url, s, out.path());
        println!("{s}: {}", if passed(&checks) { "passed" } else { "FAILED" });
        if !passed(&checks) {
            failed.push(format!("{s}: {checks:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}

#[test]
fn the_bearer_token_is_required_unless_no_auth() {
    let d = Daemon::start("");
    let ws = p(&d.env.ws);
    let token = "7f3c0d2e9a8b4c6d1e0f2a3b4c5d6e7f";
    let (_srv, url) = serve_http(
        &d.env,
        &[bin(), "mcp", "--no-embedded", "--http", "127.0.0.1:0", &ws],
        &[("AIRLOCK_MCP_TOKEN", token)],
    );
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let post = |auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &url,
        ])
        .args([
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
        ])
        .args(["--data", init]);
        if let Some(a) = auth {
            c.args(["-H", &format!("authorization: Bearer {a}")]);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    assert_eq!(post(None), "401", "no token");
    assert_eq!(post(Some("wrong")), "401", "wrong token");
    assert_eq!(post(Some(token)), "200", "the right token");
    // Non-loopback addresses are refused outright.
    let o = d.cli(&["mcp", "--no-embedded", "--http", "0.0.0.0:0", &ws]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a loopback address"));
}
