//! `airlock mcp-proxy`: put any stdio MCP server behind Airlock, and
//! `airlock mcp-pins`: review and approve changed tool definitions.

use std::path::PathBuf;
use std::time::Duration;

use airlock_mcp::attach::AttachRequest;
use airlock_mcp::pins::{self, PinStore};
use airlock_mcp::{Proxy, ProxyOptions};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Arguments of `airlock mcp-proxy`.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The server's name: in policy input (`mcp.server`), the audit log and
    /// the pin file (default: derived from CMD).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub serve: crate::cmd_mcp::ServeArgs,
    /// Directory of tool pins (default: $XDG_STATE_HOME/airlock/mcp-pins).
    #[arg(long, value_name = "DIR")]
    pub pins: Option<PathBuf>,
    /// Run the server without the sandbox (printed; the server then runs with all your rights).
    #[arg(long)]
    pub no_sandbox: bool,
    /// More secret rules in gitleaks' TOML format, scanned with the shipped
    /// gitleaks and Airlock rules (repeatable).
    #[arg(long = "secret-rules", value_name = "FILE")]
    pub secret_rules: Vec<PathBuf>,
    #[command(flatten, next_help_heading = "Sandbox options (as for `airlock run`)")]
    pub sandbox: crate::cmd_run::SandboxArgs,
    /// The MCP server: command and arguments (it speaks MCP on stdin/stdout).
    #[arg(
        last = true,
        required = true,
        value_name = "CMD",
        help_heading = "Arguments"
    )]
    pub argv: Vec<String>,
}

/// A pin name from the command: `npx -y @scope/server-x` → `server-x`.
pub fn derive_name(argv: &[String]) -> String {
    let base = |s: &str| {
        let s = s.rsplit('/').next().unwrap_or(s);
        let s = s.split('@').find(|p| !p.is_empty()).unwrap_or(s);
        s.trim_end_matches(".js")
            .trim_end_matches(".mjs")
            .trim_end_matches(".py")
            .trim_end_matches(".ts")
            .to_string()
    };
    let runners = [
        "node", "npx", "python", "python3", "uv", "uvx", "deno", "bun", "bunx", "sh", "bash",
        "pipx", "docker",
    ];
    let first = base(&argv[0]);
    let name = if runners.contains(&first.as_str()) {
        argv[1..]
            .iter()
            .find(|a| !a.starts_with('-') && !["run", "x", "exec"].contains(&a.as_str()))
            .map(|a| base(a))
            .unwrap_or(first)
    } else {
        first
    };
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if pins::valid_name(&clean) {
        clean
    } else {
        "mcp-server".into()
    }
}

/// `airlock run OPTS -- CMD ARGS`, or CMD ARGS itself with --no-sandbox.
fn child_argv(a: &ProxyArgs) -> anyhow::Result<Vec<String>> {
    if a.no_sandbox {
        return Ok(a.argv.clone());
    }
    let me = crate::airlock_exe().context("finding the airlock binary")?;
    let mut v = vec![me.to_string_lossy().into_owned(), "run".into()];
    v.extend(a.sandbox.run_flags()?);
    v.push("--".into());
    v.extend(a.argv.iter().cloned());
    Ok(v)
}

pub fn mcp_proxy(a: ProxyArgs) -> anyhow::Result<i32> {
    let name = a.name.clone().unwrap_or_else(|| derive_name(&a.argv));
    anyhow::ensure!(
        pins::valid_name(&name),
        "--name {name:?}: use letters, digits, '.', '-', '_' (at most 128, not starting with '.')"
    );
    let argv = child_argv(&a)?;
    if a.no_sandbox {
        eprintln!("airlock mcp-proxy: --no-sandbox: the MCP server {name} runs with all your rights; only its calls are brokered");
    }
    let pin_dir = match &a.pins {
        Some(d) => d.clone(),
        None => pins::default_dir()
            .context("neither XDG_STATE_HOME nor HOME is set; give --pins DIR")?,
    };
    let socket = a.serve.socket();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // On stdio the running broker serves the session itself, starting
        // the server with this process's environment, working directory
        // and stderr.
        let req = AttachRequest::McpProxy {
            name: name.clone(),
            argv: argv.clone(),
            ask_timeout: a.serve.ask_timeout,
            pins: std::path::absolute(&pin_dir).context("the pin directory")?,
            secret_rules: a
                .secret_rules
                .iter()
                .map(std::path::absolute)
                .collect::<Result<_, _>>()
                .context("a secret rules file")?,
            cwd: std::env::current_dir().context("the working directory")?,
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        };
        if let Some(code) = crate::cmd_mcp::hand_over(&a.serve, &req).await? {
            return Ok(code);
        }
        // Compiled only here: a session handed over is scanned by the broker.
        let secrets = airlock_mcp::secrets::Scanner::with_files(&a.secret_rules)?;
        let proxy = Proxy::connect(ProxyOptions {
            socket: socket.clone(),
            name: name.clone(),
            argv,
            ask_timeout: Duration::from_secs(a.serve.ask_timeout),
            pins: PinStore::new(pin_dir),
            secrets,
            child: Default::default(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nairlock mcp-proxy needs a running broker (`airlock serve`)"))?;
        tracing::info!(server = %name, socket = %socket.display(), "proxying an MCP server through the broker");
        let stop = CancellationToken::new();
        eprintln!("airlock mcp-proxy: MCP server {name}");
        let p = proxy.clone();
        let res = crate::cmd_mcp::serve_mcp(
            "airlock mcp-proxy",
            move || p.session(),
            a.serve.http,
            a.serve.no_auth,
            stop.clone(),
        )
        .await;
        stop.cancel();
        if !proxy.flush(Duration::from_secs(5)).await {
            tracing::warn!("some outcome records did not reach the broker before the proxy stopped");
        }
        res.map(|()| 0)
    })
}

/// `airlock mcp-pins`.
#[derive(clap::Subcommand, Debug)]
pub enum PinsCmd {
    /// Servers with pins, or one server's pinned and quarantined tools.
    List {
        name: Option<String>,
        #[arg(long, value_name = "DIR")]
        pins: Option<PathBuf>,
    },
    /// A tool's pinned definition and the one waiting for approval.
    Show {
        name: String,
        tool: String,
        #[arg(long, value_name = "DIR")]
        pins: Option<PathBuf>,
    },
    /// Accept a quarantined tool's new definition (or its name shadowing another server's).
    Approve {
        name: String,
        tool: String,
        #[arg(long, value_name = "DIR")]
        pins: Option<PathBuf>,
    },
}

fn store(d: &Option<PathBuf>) -> anyhow::Result<PinStore> {
    Ok(PinStore::new(match d {
        Some(d) => d.clone(),
        None => pins::default_dir()
            .context("neither XDG_STATE_HOME nor HOME is set; give --pins DIR")?,
    }))
}

pub fn mcp_pins(c: PinsCmd) -> anyhow::Result<i32> {
    match c {
        PinsCmd::List { name: None, pins } => {
            let s = store(&pins)?;
            for n in s.servers()? {
                let p = s.load(&n)?;
                println!(
                    "{n}\t{} pinned\t{} quarantined",
                    p.tools.len(),
                    p.pending.len()
                );
            }
        }
        PinsCmd::List {
            name: Some(n),
            pins,
        } => {
            let p = store(&pins)?.load(&n)?;
            for (t, pin) in &p.tools {
                let q = p
                    .pending
                    .get(t)
                    .map(|q| format!("\tQUARANTINED ({})", q.reason))
                    .unwrap_or_default();
                println!("{t}\tpinned {}{q}", &pin.hash[..12]);
            }
            for (t, q) in p.pending.iter().filter(|(t, _)| !p.tools.contains_key(*t)) {
                let other = q
                    .other
                    .as_deref()
                    .map(|o| format!(" by {o}"))
                    .unwrap_or_default();
                println!("{t}\tQUARANTINED ({}{other})", q.reason);
            }
        }
        PinsCmd::Show { name, tool, pins } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&store(&pins)?.show(&name, &tool)?)?
            );
        }
        PinsCmd::Approve { name, tool, pins } => {
            let pin = store(&pins)?.approve(&name, &tool)?;
            println!("approved {tool} of {name} (pinned {})", &pin.hash[..12]);
        }
    }
    Ok(0)
}
