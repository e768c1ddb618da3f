//! `airlock hook claude-code`: Claude Code's built-in tools (Read, Write,
//! Edit, Bash, WebFetch, …) never pass through MCP, so a PreToolUse hook
//! turns each call into a broker manifest and answers with the broker's
//! decision; PostToolUse records the outcome. Fail closed: no broker, bad
//! input or an unknown tool is a deny with the reason.
//!
//! `airlock hook install claude-code` merges the hook entries into Claude
//! Code's settings.json.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_client::Client;
use airlock_mcp::link::{self, Refusal};
use airlock_mcp::paths;
use anyhow::Context;
use serde_json::{json, Value};

/// `airlock hook ...`.
#[derive(clap::Subcommand, Debug)]
pub enum HookCmd {
    /// Answer one Claude Code hook call: JSON on stdin, decision on stdout.
    ClaudeCode(ClaudeCodeArgs),
    /// Add the hook to Claude Code's settings.json (or print the entries).
    Install(InstallArgs),
}

/// Arguments of `airlock hook claude-code`.
#[derive(clap::Args, Debug)]
pub struct ClaudeCodeArgs {
    /// Run allowed Bash commands under `airlock run` (confined, writes staged), not only approve them.
    #[arg(long)]
    pub sandbox_bash: bool,
    /// How long a call waits for a human when policy asks (seconds).
    #[arg(long, default_value_t = 540, value_name = "SECS")]
    pub ask_timeout: u64,
    /// The broker's agent socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Arguments of `airlock hook install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Which agent: `claude-code`.
    #[arg(value_parser = ["claude-code"])]
    pub agent: String,
    /// This project's `.claude/settings.json` (the default).
    #[arg(long, conflicts_with = "user")]
    pub project: bool,
    /// Your user settings, `~/.claude/settings.json`.
    #[arg(long)]
    pub user: bool,
    /// Print the entries instead of writing them.
    #[arg(long)]
    pub print: bool,
    /// Also pass --sandbox-bash to the hook.
    #[arg(long)]
    pub sandbox_bash: bool,
}

/// Tools that touch nothing outside the agent itself.
const INERT: &[&str] = &[
    "TodoWrite",
    "TodoRead",
    "Task",
    "ExitPlanMode",
    "BashOutput",
    "KillShell",
    "KillBash",
    "SlashCommand",
    "AskUserQuestion",
];

/// The manifest for one tool call, or why there is none.
enum Plan {
    Ask(Value),
    /// Nothing to broker (an inert tool).
    Pass,
    Refuse(String),
}

fn abs(p: &str, cwd: &str) -> Option<String> {
    if p.starts_with('/') {
        paths::normalise(p)
    } else {
        paths::normalise(&format!("{cwd}/{p}"))
    }
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
    (!auth.is_empty()).then(|| auth.to_ascii_lowercase())
}

fn plan(tool: &str, input: &Value, cwd: &str) -> Plan {
    let s = |k: &str| input.get(k).and_then(Value::as_str);
    let path_of = |k: &str| -> Result<String, String> {
        let raw = s(k).ok_or_else(|| format!("{tool} call has no `{k}`"))?;
        abs(raw, cwd).ok_or_else(|| format!("{tool}: {raw} climbs above /"))
    };
    let m = |action: &str, paths: Vec<String>, why: String| {
        Plan::Ask(link::manifest(action, paths, why, "claude-code"))
    };
    let r = match tool {
        "Read" => path_of("file_path").map(|p| {
            m(
                "read_files",
                vec![p.clone()],
                format!("Claude Code Read {p}"),
            )
        }),
        "Write" | "Edit" | "MultiEdit" => path_of("file_path").map(|p| {
            m(
                "edit_files",
                vec![p.clone()],
                format!("Claude Code {tool} {p}"),
            )
        }),
        "NotebookEdit" => path_of("notebook_path").map(|p| {
            m(
                "edit_files",
                vec![p.clone()],
                format!("Claude Code NotebookEdit {p}"),
            )
        }),
        "NotebookRead" => path_of("notebook_path").map(|p| {
            m(
                "read_files",
                vec![p.clone()],
                format!("Claude Code NotebookRead {p}"),
            )
        }),
        "Glob" | "LS" => {
            let p = s("path")
                .map(|p| abs(p, cwd))
                .unwrap_or_else(|| abs(cwd, "/"));
            p.ok_or_else(|| "bad path".to_string()).map(|p| {
                m(
                    "list_files",
                    vec![p.clone()],
                    format!("Claude Code {tool} in {p}: {}", s("pattern").unwrap_or("")),
                )
            })
        }
        "Grep" => {
            let p = s("path")
                .map(|p| abs(p, cwd))
                .unwrap_or_else(|| abs(cwd, "/"));
            p.ok_or_else(|| "bad path".to_string()).map(|p| {
                m(
                    "read_files",
                    vec![p.clone()],
                    format!("Claude Code Grep in {p}: {}", s("pattern").unwrap_or("")),
                )
            })
        }
        "Bash" => match s("command") {
            Some(c) if !c.trim().is_empty() => {
                let first = c.split_whitespace().next().unwrap_or("sh");
                let program = first.rsplit('/').next().unwrap_or(first).to_string();
                let mut v = link::manifest(
                    "exec",
                    vec![cwd.to_string()],
                    format!("Claude Code Bash in {cwd}: {c}"),
                    "claude-code",
                );
                v["commands"] = json!([program]);
                Ok(Plan::Ask(v))
            }
            _ => Err("Bash call has no command".into()),
        },
        "WebFetch" | "WebSearch" => {
            let host = if tool == "WebFetch" {
                s("url").and_then(host_of)
            } else {
                Some("web-search.claude.ai".to_string())
            };
            match host {
                Some(h) => {
                    let mut v = link::manifest(
                        "network",
                        vec![],
                        format!(
                            "Claude Code {tool}: {}",
                            s("url").or(s("query")).unwrap_or("")
                        ),
                        "claude-code",
                    );
                    v["hosts"] = json!([h]);
                    Ok(Plan::Ask(v))
                }
                None => Err(format!("{tool} call has no usable url")),
            }
        }
        t if t.starts_with("mcp__") => {
            // An MCP tool, by name: policy sees it as a command to run.
            let mut v = link::manifest(
                "exec",
                vec![cwd.to_string()],
                format!(
                    "Claude Code MCP tool {t}: {}",
                    link::truncate(input.to_string(), 1200)
                ),
                "claude-code",
            );
            v["commands"] = json!([t]);
            Ok(Plan::Ask(v))
        }
        t if INERT.contains(&t) => Ok(Plan::Pass),
        t => Err(format!(
            "unknown tool {t}: Airlock cannot tell what it touches, so it is refused (fail closed)"
        )),
    };
    r.unwrap_or_else(Plan::Refuse)
}

fn answer(decision: &str, reason: &str, updated: Option<Value>) -> Value {
    let mut o = json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    });
    if let Some(u) = updated {
        o["hookSpecificOutput"]["updatedInput"] = u;
    }
    o
}

/// The agent process the hook was started for: the nearest ancestor that
/// is not a shell.
fn agent_pid() -> Option<u32> {
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..8 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim();
        if !matches!(
            comm,
            "sh" | "bash" | "dash" | "zsh" | "fish" | "env" | "timeout"
        ) {
            return Some(pid);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        pid = after.split_whitespace().nth(1)?.parse().ok()?;
        if pid <= 1 {
            return None;
        }
    }
    None
}

fn state_dir() -> PathBuf {
    airlock_client::default_agent_socket()
        .parent()
        .map(|d| d.join("hook"))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn state_file(tool_use_id: &str) -> Option<PathBuf> {
    let ok = !tool_use_id.is_empty()
        && tool_use_id.len() <= 128
        && tool_use_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ok.then(|| state_dir().join(tool_use_id))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn decide(a: &ClaudeCodeArgs, input: &Value, client: &Client) -> Value {
    let tool = input["tool_name"].as_str().unwrap_or("");
    let cwd = input["cwd"]
        .as_str()
        .and_then(paths::normalise)
        .unwrap_or_else(|| "/".into());
    let manifest = match plan(tool, &input["tool_input"], &cwd) {
        Plan::Pass => return json!({}),
        Plan::Refuse(why) => return answer("deny", &format!("Airlock: {why}"), None),
        Plan::Ask(m) => m,
    };
    // Bind the calls to the agent's session, so its descendants (the
    // commands it runs) share it and stay off the operator socket.
    if let Some(pid) = agent_pid() {
        let label = format!(
            "claude-code {}",
            input["session_id"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(12)
                .collect::<String>()
        );
        if let Err(e) = client
            .post(
                "/v1/sessions",
                &json!({"holder": format!("pid:{pid}"), "label": label}),
            )
            .await
        {
            return answer(
                "deny",
                &format!("Airlock: the broker is not reachable, so nothing is allowed: {e}"),
                None,
            );
        }
    }
    let link = link::BrokerLink::new(
        client.socket().to_path_buf(),
        Duration::from_secs(a.ask_timeout),
    );
    match link.grant(manifest.clone(), &|msg| eprintln!("airlock: {msg}")).await {
        Ok(g) => {
            if let Some(f) = input["tool_use_id"].as_str().and_then(state_file) {
                let _ = std::fs::create_dir_all(state_dir());
                let _ = std::fs::write(f, &g.request_id);
            }
            let mut updated = None;
            let mut reason = format!("Airlock allowed {} (request {})", link::describe(&manifest), g.request_id);
            if a.sandbox_bash && tool == "Bash" {
                let cmd = input["tool_input"]["command"].as_str().unwrap_or("");
                let exe = crate::airlock_exe()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "airlock".into());
                let mut u = input["tool_input"].clone();
                u["command"] = format!(
                    "{} run --workspace {} -- /bin/sh -c {}",
                    shell_quote(&exe),
                    shell_quote(&cwd),
                    shell_quote(cmd)
                )
                .into();
                updated = Some(u);
                reason.push_str("; the command runs in Airlock's sandbox and its writes are staged for review");
            }
            answer("allow", &reason, updated)
        }
        Err(Refusal::Denied(why)) | Err(Refusal::Invalid(why)) | Err(Refusal::Token(why)) => {
            answer("deny", &why, None)
        }
        Err(Refusal::Broker(why)) => answer(
            "deny",
            &format!("Airlock: {why}. Nothing is allowed while the broker is down (start it with `airlock serve`)."),
            None,
        ),
    }
}

async fn record_outcome(input: &Value, client: &Client) -> Value {
    let tool = input["tool_name"].as_str().unwrap_or("");
    let Some(f) = input["tool_use_id"].as_str().and_then(state_file) else {
        return json!({});
    };
    let Ok(request_id) = std::fs::read_to_string(&f) else {
        return json!({});
    };
    let _ = std::fs::remove_file(&f);
    let resp = &input["tool_response"];
    let failed = resp.get("error").is_some_and(|e| !e.is_null())
        || resp["is_error"] == true
        || resp["interrupted"] == true
        || resp["success"] == false;
    // Sizes only: the audit log never holds the data itself.
    let detail = json!({
        "tool_use_id": input["tool_use_id"],
        "response_bytes": resp.to_string().len(),
        "exit_code": resp.get("exit_code").or(resp.get("exitCode")).cloned().unwrap_or(Value::Null),
    });
    let body = json!({"request_id": request_id.trim(), "status": if failed { "error" } else { "success" },
        "tool": format!("claude-code:{tool}"), "detail": detail});
    if let Err(e) = client.post("/v1/outcomes", &body).await {
        eprintln!("airlock: could not record the outcome of {tool}: {e}");
    }
    json!({})
}

pub fn claude_code(a: ClaudeCodeArgs) -> anyhow::Result<i32> {
    let mut raw = String::new();
    let read = std::io::stdin().read_to_string(&mut raw);
    let input: Result<Value, String> = read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str(&raw).map_err(|e| e.to_string()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        let input = match input {
            Ok(v) if v.is_object() => v,
            Ok(_) => return answer("deny", "Airlock: the hook input is not a JSON object", None),
            Err(e) => {
                return answer(
                    "deny",
                    &format!("Airlock: the hook input is not JSON: {e}"),
                    None,
                )
            }
        };
        let client = Client::new(
            a.socket
                .clone()
                .unwrap_or_else(airlock_client::default_agent_socket),
        );
        match input["hook_event_name"].as_str() {
            Some("PreToolUse") => decide(&a, &input, &client).await,
            Some("PostToolUse") => record_outcome(&input, &client).await,
            _ => json!({}),
        }
    });
    println!("{out}");
    Ok(0)
}

fn settings_path(a: &InstallArgs) -> anyhow::Result<PathBuf> {
    if a.user {
        let home = std::env::var_os("HOME").context("HOME is not set")?;
        Ok(Path::new(&home).join(".claude/settings.json"))
    } else {
        Ok(std::env::current_dir()?.join(".claude/settings.json"))
    }
}

/// Add our entries to `settings` unless they are there; true when changed.
pub fn merge_hooks(settings: &mut Value, command: &str) -> anyhow::Result<bool> {
    anyhow::ensure!(settings.is_object(), "settings.json is not a JSON object");
    let hooks = settings
        .as_object_mut()
        .expect("object")
        .entry("hooks")
        .or_insert_with(|| json!({}));
    anyhow::ensure!(hooks.is_object(), "settings.json: `hooks` is not an object");
    let mut changed = false;
    for event in ["PreToolUse", "PostToolUse"] {
        let list = hooks
            .as_object_mut()
            .expect("object")
            .entry(event)
            .or_insert_with(|| json!([]));
        let arr = list
            .as_array_mut()
            .with_context(|| format!("settings.json: hooks.{event} is not a list"))?;
        let present = arr.iter().any(|m| {
            m["hooks"].as_array().is_some_and(|h| {
                h.iter().any(|x| {
                    x["command"]
                        .as_str()
                        .is_some_and(|c| c.contains("hook claude-code"))
                })
            })
        });
        if !present {
            arr.push(json!({"matcher": "*", "hooks": [{"type": "command", "command": command, "timeout": 600}]}));
            changed = true;
        }
    }
    Ok(changed)
}

pub fn install(a: InstallArgs) -> anyhow::Result<i32> {
    let exe = crate::airlock_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "airlock".into());
    let command = format!(
        "{} hook claude-code{}",
        shell_quote(&exe),
        if a.sandbox_bash {
            " --sandbox-bash"
        } else {
            ""
        }
    );
    if a.print {
        let mut v = json!({});
        merge_hooks(&mut v, &command)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let path = settings_path(&a)?;
    let mut settings = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => serde_json::from_str(&s).with_context(|| {
            format!(
                "{} is not valid JSON; fix it first, nothing was changed",
                path.display()
            )
        })?,
        Ok(_) => json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !merge_hooks(&mut settings, &command)? {
        println!(
            "{} already runs the Airlock hook; nothing changed",
            path.display()
        );
        return Ok(0);
    }
    let dir = path.parent().context("settings path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(
        &mut tmp,
        serde_json::to_string_pretty(&settings)?.as_bytes(),
    )?;
    std::io::Write::write_all(&mut tmp, b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path)?;
    println!(
        "added the Airlock hook (PreToolUse and PostToolUse) to {}",
        path.display()
    );
    Ok(0)
}

pub fn hook(c: HookCmd) -> anyhow::Result<i32> {
    match c {
        HookCmd::ClaudeCode(a) => claude_code(a),
        HookCmd::Install(a) => install(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_what_is_there_and_is_idempotent() {
        let mut s = json!({"model": "x", "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "mine"}]}]}});
        assert!(merge_hooks(&mut s, "/bin/airlock hook claude-code").unwrap());
        assert_eq!(s["model"], "x");
        assert_eq!(s["hooks"]["PreToolUse"].as_array().unwrap().len(), 2);
        assert_eq!(s["hooks"]["PreToolUse"][0]["hooks"][0]["command"], "mine");
        assert!(!merge_hooks(&mut s, "/bin/airlock hook claude-code").unwrap());
        assert_eq!(s["hooks"]["PostToolUse"].as_array().unwrap().len(), 1);
        assert!(merge_hooks(&mut json!([]), "x").is_err());
    }

    #[test]
    fn tools_map_to_actions() {
        let act = |t: &str, i: Value| match plan(t, &i, "/w") {
            Plan::Ask(m) => m["action"].as_str().unwrap().to_string(),
            Plan::Pass => "pass".into(),
            Plan::Refuse(_) => "refuse".into(),
        };
        assert_eq!(act("Read", json!({"file_path": "/w/a"})), "read_files");
        assert_eq!(act("Edit", json!({"file_path": "a"})), "edit_files");
        assert_eq!(act("Bash", json!({"command": "ls"})), "exec");
        assert_eq!(
            act("WebFetch", json!({"url": "https://x.org/a"})),
            "network"
        );
        assert_eq!(act("mcp__fs__read", json!({})), "exec");
        assert_eq!(act("TodoWrite", json!({})), "pass");
        assert_eq!(act("Frobnicate", json!({})), "refuse");
        assert_eq!(act("Read", json!({})), "refuse");
        assert_eq!(
            host_of("https://user:pw@Example.org:8443/x?y").as_deref(),
            Some("example.org:8443")
        );
    }
}
