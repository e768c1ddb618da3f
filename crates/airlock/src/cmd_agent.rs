//! Agent-side commands: `request`, `fs`, `exec`, `session`. They talk to the
//! agent socket, like any agent would.

use std::io::Read;
use std::path::PathBuf;

use airlock_client::{default_agent_socket, Client};
use anyhow::Context;
use serde_json::{json, Value};

use crate::output::{block_on, print_json, report};

/// Arguments of `airlock request`.
#[derive(clap::Args, Debug)]
pub struct RequestArgs {
    /// Permission manifest (JSON file, or `-` for stdin).
    pub manifest: PathBuf,
    /// When the answer is `ask`, wait for the human's decision.
    #[arg(long)]
    pub wait: bool,
    /// Print only the token (for `TOKEN=$(airlock request ... --token-only)`).
    #[arg(long)]
    pub token_only: bool,
}

fn read_input(p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if p.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v)?;
        Ok(v)
    } else {
        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
    }
}

fn decision_exit(status: u16) -> i32 {
    match status {
        200 => 0,
        202 => 4,
        _ => 3,
    }
}

pub fn request(a: RequestArgs) -> anyhow::Result<i32> {
    let bytes = read_input(&a.manifest)?;
    let manifest: Value =
        serde_json::from_slice(&bytes).context("the manifest is not valid JSON")?;
    let client = Client::new(default_agent_socket());
    block_on(async move {
        let r = if a.wait {
            client.request_and_wait(&manifest, 60).await
        } else {
            client.request(&manifest).await
        };
        match r {
            Ok((status, v)) => {
                if a.token_only {
                    match v["token"].as_str() {
                        Some(t) => println!("{t}"),
                        None => {
                            eprintln!(
                                "airlock: {}: {}",
                                v["decision"].as_str().unwrap_or("?"),
                                crate::output::text(&v["reasons"])
                            );
                            if let Some(id) = v["approval_id"].as_str() {
                                eprintln!(
                                    "  waiting for approval {id}; run with --wait to wait for it"
                                );
                            }
                        }
                    }
                } else {
                    print_json(&v);
                }
                decision_exit(status)
            }
            Err(e) => report(&e),
        }
    })
}

/// `airlock fs ...`.
#[derive(clap::Subcommand, Debug)]
pub enum FsCmd {
    /// Read a file (prints its content; binary files are written raw).
    Read {
        path: String,
        #[arg(long)]
        offset: Option<u64>,
        #[arg(long)]
        length: Option<u64>,
        /// Print the JSON answer instead of the content.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tok: TokenArg,
    },
    /// List a directory.
    List {
        path: String,
        #[command(flatten)]
        tok: TokenArg,
    },
    /// Show a file's metadata.
    Stat {
        path: String,
        #[command(flatten)]
        tok: TokenArg,
    },
    /// Stage new content for a file (from --content, or stdin).
    Write {
        path: String,
        #[arg(long)]
        content: Option<String>,
        #[command(flatten)]
        tok: TokenArg,
    },
    /// Stage a deletion.
    Delete {
        path: String,
        #[command(flatten)]
        tok: TokenArg,
    },
    /// Stage a rename.
    Rename {
        from: String,
        to: String,
        #[command(flatten)]
        tok: TokenArg,
    },
}

/// The capability token.
#[derive(clap::Args, Debug)]
pub struct TokenArg {
    /// Capability token (default: $AIRLOCK_TOKEN).
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true)]
    pub token: String,
}

pub fn fs(c: FsCmd) -> anyhow::Result<i32> {
    let client = Client::new(default_agent_socket());
    let (route, token, body, raw) = match c {
        FsCmd::Read {
            path,
            offset,
            length,
            json,
            tok,
        } => {
            let mut b = json!({"path": path});
            if let Some(o) = offset {
                b["offset"] = o.into();
            }
            if let Some(l) = length {
                b["length"] = l.into();
            }
            ("/v1/fs/read", tok.token, b, !json)
        }
        FsCmd::List { path, tok } => ("/v1/fs/list", tok.token, json!({"path": path}), false),
        FsCmd::Stat { path, tok } => ("/v1/fs/stat", tok.token, json!({"path": path}), false),
        FsCmd::Write { path, content, tok } => {
            let data = match content {
                Some(c) => c.into_bytes(),
                None => {
                    let mut v = Vec::new();
                    std::io::stdin().read_to_end(&mut v)?;
                    v
                }
            };
            let body = match String::from_utf8(data) {
                Ok(s) => json!({"path": path, "content": s}),
                Err(e) => {
                    use base64::Engine as _;
                    json!({"path": path, "content": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()), "encoding": "base64"})
                }
            };
            ("/v1/fs/write", tok.token, body, false)
        }
        FsCmd::Delete { path, tok } => ("/v1/fs/delete", tok.token, json!({"path": path}), false),
        FsCmd::Rename { from, to, tok } => (
            "/v1/fs/rename",
            tok.token,
            json!({"from": from, "to": to}),
            false,
        ),
    };
    block_on(async move {
        match client.post_with_token(route, &token, &body).await {
            Ok((_, v)) => {
                if raw {
                    use std::io::Write;
                    let content = v["content"].as_str().unwrap_or_default();
                    let bytes = if v["encoding"] == "base64" {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(content)
                            .unwrap_or_default()
                    } else {
                        content.as_bytes().to_vec()
                    };
                    let _ = std::io::stdout().write_all(&bytes);
                } else {
                    print_json(&v);
                }
                0
            }
            Err(e) => report(&e),
        }
    })
}

/// Arguments of `airlock exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Working directory (must lie under the token's paths). Default: the current directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Pass NAME=VALUE into the sandbox (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub tok: TokenArg,
    /// Command and arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

pub fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let cwd = match a.cwd {
        Some(c) => c,
        None => std::env::current_dir()?,
    };
    let mut body = json!({"argv": a.argv, "cwd": cwd, "env": a.env});
    if let Some(t) = a.timeout {
        body["timeout_seconds"] = t.into();
    }
    let client = Client::new(default_agent_socket());
    block_on(async move {
        match client
            .post_with_token("/v1/exec", &a.tok.token, &body)
            .await
        {
            Ok((_, v)) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(
                    v["stdout"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes(),
                );
                let _ = std::io::stderr().write_all(
                    v["stderr"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes(),
                );
                if let Some(b) = v["blocked"].as_str() {
                    eprintln!("airlock: {b}");
                }
                if let Some(r) = v["reason"].as_str() {
                    eprintln!("airlock: {r}");
                }
                if let Some(h) = v["hint"].as_str() {
                    eprintln!("airlock: {h}");
                }
                v["exit_code"].as_i64().unwrap_or(125) as i32
            }
            Err(e) => report(&e),
        }
    })
}

/// Arguments of `airlock session`.
#[derive(clap::Args, Debug)]
pub struct SessionArgs {
    /// A label shown to the human (e.g. the agent's name).
    #[arg(long)]
    pub label: Option<String>,
    /// The program to start, and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

pub fn session(a: SessionArgs) -> anyhow::Result<i32> {
    let client = Client::new(default_agent_socket());
    // The label names the agent in approvals, audit records and quotas.
    let label = a
        .label
        .clone()
        .or_else(|| a.argv[0].rsplit('/').next().map(str::to_owned));
    let s = block_on(async move {
        client
            .post("/v1/sessions", &json!({"holder": "self", "label": label}))
            .await
    })?;
    let s = match s {
        Ok((_, v)) => v,
        Err(e) => return Ok(report(&e)),
    };
    let id = s["id"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "airlock: session {id} started; everything `{}` starts belongs to it",
        a.argv[0]
    );
    let argv = a.argv.clone();
    block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Holding signal handlers keeps this process (the session holder)
        // alive while the agent runs: if it died first, the agent would be
        // reparented out of the session.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("AIRLOCK_SESSION", &id)
            .spawn()
            .with_context(|| format!("cannot start {}", argv[0]))?;
        let pid = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32));
        let forward = |sig: rustix::process::Signal| {
            if let Some(p) = pid {
                let _ = rustix::process::kill_process(p, sig);
            }
        };
        let status = loop {
            tokio::select! {
                s = child.wait() => break s?,
                // Ctrl-C reaches the child through the terminal's process group.
                _ = int.recv() => {}
                _ = term.recv() => forward(rustix::process::Signal::TERM),
                _ = hup.recv() => forward(rustix::process::Signal::HUP),
            }
        };
        use std::os::unix::process::ExitStatusExt;
        anyhow::Ok(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        )
    })?
}
