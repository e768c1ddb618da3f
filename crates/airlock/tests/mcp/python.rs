//! The official MCP Python SDK (PyPI `mcp`) as the agent's client, over
//! stdio: allowed and denied reads, symlink and prefix tricks, staged
//! writes committed by the human, an `ask` resolved with `airlock approvals
//! approve` while the call waits, sandboxed `run_command`, bad arguments.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// The Python with the `mcp` SDK that `scripts/test.sh` installs.
fn python() -> Result<PathBuf, String> {
    let py = std::env::var_os("AIRLOCK_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/airlock-py/bin/python"))
        })
        .ok_or("no HOME")?;
    let ok = Command::new(&py)
        .args(["-c", "import mcp"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import the MCP Python SDK; `bash scripts/test.sh` installs it",
            py.display()
        ))
    }
}

pub fn support(name: &str) -> PathBuf {
    match std::env::var_os("AIRLOCK_TEST_SUPPORT") {
        Some(d) => PathBuf::from(d).join(name),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(name),
    }
}

/// The workspace every client test uses.
pub fn fixture(env: &Env) {
    let ws = &env.ws;
    std::fs::write(ws.join(".env"), "API_KEY=canary-env\n").unwrap();
    std::fs::write(ws.join("lines.txt"), "one\ntwo\nthree\n").unwrap();
    symlink(env.home.join(".ssh/id_rsa"), ws.join("innocent.txt")).unwrap();
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::create_dir_all(ws.join("node_modules")).unwrap();
    std::fs::write(ws.join("node_modules/x.js"), "x\n").unwrap();
    std::fs::write(ws.join("pixel.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let evil = ws.with_file_name("proj-evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("secret.txt"), "canary-evil\n").unwrap();
}

/// The broker's log line for a session `airlock mcp` handed over to it.
const HANDED_OVER: &str = "serving an MCP session handed over by airlock mcp";

#[test]
fn python_sdk_client_end_to_end() {
    // By default `airlock mcp` hands its stdio to the running broker, which
    // serves the session itself.
    let py = or_skip!(python());
    let d = client_end_to_end(py, &[]);
    // (The broker's log is written by a background thread.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.log().contains(HANDED_OVER) {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker served the session: {}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn python_sdk_client_end_to_end_with_the_server_in_its_own_process() {
    // With --own-process the session stays in `airlock mcp`, which calls
    // the broker over its agent socket: the same checks hold.
    let py = or_skip!(python());
    let d = client_end_to_end(py, &["--own-process"]);
    assert!(
        !d.log().contains(HANDED_OVER),
        "no session was handed over: {}",
        d.log()
    );
}

fn client_end_to_end(py: PathBuf, extra: &[&str]) -> Daemon {
    let d = Daemon::start("");
    fixture(&d.env);
    let mut c = Command::new(py);
    d.env.apply(&mut c);
    let out = c
        .env("AIRLOCK_MCP_ARGS", extra.join(" "))
        .arg(support("mcp_client.py"))
        .arg(bin())
        .arg(&d.env.ws)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "MCP Python client checks failed:\n{stdout}\n--- stderr\n{stderr}\n--- broker\n{}",
        d.log()
    );
    // Every call left its decision in the audit log, the denials included.
    let recs = d.records();
    let denied_env = recs.iter().any(|r| {
        r["kind"] == "request"
            && r.to_string().contains("/.env")
            && r["decision"]["allowed"] == false
    });
    assert!(denied_env, "the denied .env read is audited");
    assert!(
        recs.iter().any(|r| r.to_string().contains("airlock-mcp/")),
        "records name the MCP front door and its client"
    );
    d
}

#[test]
fn with_no_broker_running_an_embedded_one_serves_the_directories() {
    let py = or_skip!(python());
    let env = Env::new();
    let script = r#"
import asyncio, os, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
async def main():
    env = {k: os.environ[k] for k in ("HOME", "XDG_RUNTIME_DIR")}
    p = StdioServerParameters(command=sys.argv[1], args=["mcp", sys.argv[2]], env=env)
    async with stdio_client(p) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            res = await s.call_tool("read_text_file", {"path": sys.argv[2] + "/report.txt"})
            print("READ:" + res.content[0].text, flush=True)
            # The human's side reaches the embedded broker's operator socket.
            st = os.popen(sys.argv[1] + " status --json").read()
            print("STATUS:" + str("\"broker\"" in st), flush=True)
asyncio.run(main())
"#;
    let mut c = Command::new(py);
    env.apply(&mut c);
    let out = c
        .args(["-c", script])
        .arg(bin())
        .arg(&env.ws)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("READ:Q4 revenue: 100"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("STATUS:True"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("started an embedded one"),
        "the log says an embedded broker serves: {stderr}"
    );
    assert!(
        !env.socket().exists(),
        "the embedded broker removed its socket when the client left"
    );
}
