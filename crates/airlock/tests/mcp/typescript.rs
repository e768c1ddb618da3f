//! The official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`) as the
//! agent's client, over stdio.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use crate::python::{fixture, support};

/// `node_modules` with the SDK, the conformance suite and the reference
/// servers, as `scripts/test.sh` installs them.
pub fn node_modules() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("AIRLOCK_TEST_NODE_MODULES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("no HOME")?)
            .join(".cache/airlock-node/node_modules"),
    };
    if !dir.join("@modelcontextprotocol/sdk/package.json").exists() {
        return Err(format!(
            "{} has no @modelcontextprotocol/sdk; `bash scripts/test.sh` installs it",
            dir.display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.map(|o| o.status.success()).unwrap_or(false) {
        return Err("node is not installed".into());
    }
    Ok(dir)
}

#[test]
fn typescript_sdk_client_end_to_end() {
    let nm = or_skip!(node_modules());
    let d = Daemon::start("");
    fixture(&d.env);
    let mut c = Command::new("node");
    d.env.apply(&mut c);
    let out = c
        .env("NODE_PATH", &nm)
        .arg(support("mcp_client_ts.mjs"))
        .arg(bin())
        .arg(&d.env.ws)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "MCP TypeScript client checks failed:\n{stdout}\n--- stderr\n{}\n--- broker\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}
