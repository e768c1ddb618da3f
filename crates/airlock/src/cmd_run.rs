//! `airlock run`: one command in the sandbox, without a broker.

use std::path::{Path, PathBuf};

use airlock_sandbox::{Layer, Outcome, SandboxSpec, WorkspaceMode, WorkspaceMount};
use anyhow::{bail, Context};
use serde::Serialize;

/// The sandbox's options, shared by `airlock run` and `airlock mcp-proxy`
/// (which passes them on to `airlock run`, see [`SandboxArgs::run_flags`]).
#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Directory visible read-write, with writes staged for review
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Write to the workspace directly instead of staging (protected paths
    /// stay read-only).
    #[arg(long)]
    pub write_through: bool,
    /// Extra path visible read-only (repeatable).
    #[arg(long = "allow-read", value_name = "PATH")]
    pub allow_read: Vec<PathBuf>,
    /// Extra path visible read-write, not staged (repeatable).
    #[arg(long = "allow-write", value_name = "PATH")]
    pub allow_write: Vec<PathBuf>,
    /// Allow TCP to HOST[:PORT] (repeatable). Without it there is no
    /// network at all.
    #[arg(long = "allow-net", value_name = "HOST[:PORT]")]
    pub allow_net: Vec<String>,
    /// Memory limit, e.g. 512M, 2G.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Limit on processes and threads.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// CPU time limit per process, e.g. 30s.
    #[arg(long = "cpu-time", value_name = "DUR")]
    pub cpu_time: Option<String>,
    /// Cap on the size of a written file and of the staged changes, e.g. 1G.
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Pass NAME from the environment, or set NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Named profile: read-only, workspace-write, build, or one from
    /// `[profiles.NAME]` in $XDG_CONFIG_HOME/airlock/config.toml.
    #[arg(long, value_name = "NAME", default_value = "workspace-write")]
    pub profile: String,
    /// Run without this layer (landlock, seccomp, overlay, protected-paths,
    /// limits) if it cannot be applied; printed and recorded.
    #[arg(long = "allow-degraded", value_name = "LAYER")]
    pub allow_degraded: Vec<Layer>,
}

impl SandboxArgs {
    /// The same options as `airlock run` flags, paths made absolute (the
    /// sandboxed process may start elsewhere).
    pub fn run_flags(&self) -> anyhow::Result<Vec<String>> {
        let path = |p: &PathBuf| -> anyhow::Result<String> {
            Ok(std::fs::canonicalize(p)
                .with_context(|| format!("{}", p.display()))?
                .to_string_lossy()
                .into_owned())
        };
        let mut v: Vec<String> = vec![];
        if let Some(w) = &self.workspace {
            v.extend(["--workspace".into(), path(w)?]);
        }
        if self.write_through {
            v.push("--write-through".into());
        }
        for p in &self.allow_read {
            v.extend(["--allow-read".into(), path(p)?]);
        }
        for p in &self.allow_write {
            v.extend(["--allow-write".into(), path(p)?]);
        }
        for (flag, vals) in [("--allow-net", &self.allow_net), ("--env", &self.env)] {
            for x in vals {
                v.extend([flag.to_string(), x.clone()]);
            }
        }
        for l in &self.allow_degraded {
            v.extend(["--allow-degraded".to_string(), l.as_str().to_string()]);
        }
        for (flag, val) in [
            ("--memory", &self.memory),
            ("--cpu-time", &self.cpu_time),
            ("--disk", &self.disk),
        ] {
            if let Some(x) = val {
                v.extend([flag.to_string(), x.clone()]);
            }
        }
        if let Some(p) = self.pids {
            v.extend(["--pids".into(), p.to_string()]);
        }
        v.extend(["--profile".into(), self.profile.clone()]);
        Ok(v)
    }
}

/// Arguments of `airlock run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Apply the staged changes when the command exits 0 (same checks as
    /// `airlock staged commit`).
    #[arg(long, conflicts_with = "write_through")]
    pub commit: bool,
    /// Wall-clock limit for the whole run, e.g. 10m.
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// Print the execution record as JSON on the last line of stderr.
    #[arg(long)]
    pub json: bool,
    /// Write the execution record as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Command and arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

/// What `--json` / `--report` print.
#[derive(Serialize)]
struct Record<'a> {
    argv: &'a [String],
    profile: &'a str,
    spec: &'a SandboxSpec,
    outcome: &'a Outcome,
    exit_code: i32,
    reason: Option<String>,
    blocked: Option<String>,
    staged: Option<Staged>,
}

#[derive(Serialize, Clone)]
struct Staged {
    id: String,
    /// How many changes are staged (none when they cannot be listed).
    changes: Option<usize>,
    /// Why they cannot be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    committed: Vec<String>,
    refused: Vec<airlock_fs::Refused>,
}

fn xdg(var: &str, home_rel: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME").map(|h| Path::new(&h).join(home_rel)),
    }
}

/// `$XDG_STATE_HOME/airlock/staging`, else `~/.local/state/airlock/staging`.
pub fn staging_dir() -> anyhow::Result<PathBuf> {
    xdg("XDG_STATE_HOME", ".local/state")
        .map(|d| d.join("airlock/staging"))
        .context("neither XDG_STATE_HOME nor HOME is set; cannot find the staging store")
}

/// `$XDG_CONFIG_HOME/airlock/config.toml`, else `~/.config/airlock/config.toml`.
pub fn config_file() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("airlock/config.toml"))
}

/// Airlock's own directories: never visible inside the sandbox.
fn hidden_paths() -> Vec<PathBuf> {
    let mut v = vec![];
    for (var, rel) in [
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
    ] {
        if let Some(d) = xdg(var, rel) {
            v.push(d.join("airlock"));
        }
    }
    if let Some(h) = std::env::var_os("HOME") {
        for rel in [
            ".local/state/airlock",
            ".config/airlock",
            ".local/share/airlock",
        ] {
            v.push(Path::new(&h).join(rel));
        }
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(Path::new(&r).join("airlock"));
    }
    v.sort();
    v.dedup();
    v
}

fn parse_limits(
    args: &RunArgs,
    mut l: airlock_sandbox::Limits,
) -> anyhow::Result<airlock_sandbox::Limits> {
    use airlock_sandbox::limits::{parse_duration, parse_size};
    if let Some(m) = &args.sandbox.memory {
        l.memory = Some(
            parse_size(m)
                .map_err(anyhow::Error::msg)
                .context("--memory")?,
        );
    }
    if let Some(p) = args.sandbox.pids {
        if p == 0 {
            bail!("--pids must be at least 1");
        }
        l.pids = Some(p);
    }
    if let Some(c) = &args.sandbox.cpu_time {
        l.cpu_time = Some(
            parse_duration(c)
                .map_err(anyhow::Error::msg)
                .context("--cpu-time")?,
        );
    }
    if let Some(t) = &args.timeout {
        l.timeout = Some(
            parse_duration(t)
                .map_err(anyhow::Error::msg)
                .context("--timeout")?,
        );
    }
    if let Some(d) = &args.sandbox.disk {
        l.disk = Some(
            parse_size(d)
                .map_err(anyhow::Error::msg)
                .context("--disk")?,
        );
    }
    Ok(l)
}

fn canonical(p: &Path, what: &str) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("{what} {}", p.display()))
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| Path::new(h).is_absolute());
    let t0 = std::time::Instant::now();
    let profile =
        airlock_sandbox::profile::find_profile(&args.sandbox.profile, config_file().as_deref())?;
    let limits = parse_limits(&args, profile.limits.clone())?;
    let cwd = std::env::current_dir().context("current directory")?;
    let ws = canonical(
        args.sandbox.workspace.as_deref().unwrap_or(&cwd),
        "--workspace",
    )?;
    if !ws.is_dir() {
        bail!("--workspace {} is not a directory", ws.display());
    }

    let mut spec = SandboxSpec::new(args.argv.clone(), ws.clone());
    spec.env = airlock_sandbox::scrub_env(
        std::env::vars(),
        &[profile.env.clone(), args.sandbox.env.clone()].concat(),
    );
    spec.limits = limits;
    spec.hidden = hidden_paths();
    let expand = |p: &str, flag: &str| -> anyhow::Result<PathBuf> {
        airlock_sandbox::Profile::expand(p, home.as_deref()).with_context(|| {
            format!(
                "profile {}: {flag} {p}: HOME is not set",
                args.sandbox.profile
            )
        })
    };
    for p in &profile.allow_read {
        let p = expand(p, "allow_read")?;
        if p.exists() {
            spec.allow_read.push(p);
        }
    }
    for p in &profile.allow_write {
        let p = expand(p, "allow_write")?;
        if p.exists() {
            spec.allow_write.push(p);
        }
    }
    for p in &args.sandbox.allow_read {
        spec.allow_read.push(canonical(p, "--allow-read")?);
    }
    for p in &args.sandbox.allow_write {
        spec.allow_write.push(canonical(p, "--allow-write")?);
    }
    spec.allow_net = [profile.allow_net.clone(), args.sandbox.allow_net.clone()].concat();
    spec.allow_degraded = [
        profile.allow_degraded.clone(),
        args.sandbox.allow_degraded.clone(),
    ]
    .concat();

    // Workspace mode; the staging area is the one the broker would use.
    let staged_mode = !args.sandbox.write_through
        && profile.workspace == airlock_sandbox::profile::WorkspaceAccess::Staged;
    let mut area = None;
    let mode = if args.sandbox.write_through
        || profile.workspace == airlock_sandbox::profile::WorkspaceAccess::WriteThrough
    {
        WorkspaceMode::WriteThrough
    } else if staged_mode {
        let store_dir = staging_dir()?;
        let store = airlock_fs::StagingStore::open(&store_dir)
            .with_context(|| format!("opening the staging store {}", store_dir.display()))?;
        let uid = rustix::process::geteuid().as_raw();
        let base = ws.to_str().context("workspace path is not UTF-8")?;
        let a = store
            .area(&format!("run-{uid}"), base)
            .context("staging area")?;
        let m = WorkspaceMode::Staged {
            upper: a.upper_dir(),
            work: a.work_dir(),
        };
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "staging area open");
        area = Some(a);
        m
    } else {
        if args.commit {
            bail!(
                "--commit needs a staged workspace (profile {} mounts it read-only)",
                args.sandbox.profile
            );
        }
        WorkspaceMode::ReadOnly
    };
    spec.workspace = Some(WorkspaceMount {
        base: ws.clone(),
        mode,
    });
    let cwd_c = std::fs::canonicalize(&cwd).unwrap_or(cwd);
    let visible = |p: &Path| {
        p.starts_with(&ws)
            || spec
                .allow_read
                .iter()
                .chain(&spec.allow_write)
                .any(|g| p.starts_with(g))
    };
    spec.cwd = if visible(&cwd_c) { cwd_c } else { ws.clone() };

    // Ctrl-C and friends go to the command (which may handle them), not to
    // us. They are held back from here on, so one that comes while the
    // sandbox starts, or once the command runs but before the wait below, is
    // forwarded then rather than killing this process and, with it, the
    // sandbox. They stay held back until this function returns: a commit is
    // never cut short.
    let forwarded = airlock_sandbox::ForwardedSignals::block(&FORWARDED)?;
    let running = airlock_sandbox::spawn(&spec)?;
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "sandbox started");
    for (layer, why) in &running.report().degraded {
        eprintln!("airlock: degraded: running without full {layer}: {why}");
    }
    // The staged changes are listed (and committed) while the kernel tears
    // the sandbox down: nothing of it runs any more. At the end, this
    // process, about to exit, leaves the rest of the teardown to the kernel
    // (see Ended::finish_leaving); dropping `ended` on any other way out of
    // this function waits for the teardown and cleans up.
    let ended = running.end_forwarding(&forwarded)?;
    let outcome = ended.outcome();
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "sandbox ended");

    let code = outcome.status.exit_code();
    let reason = outcome.status.describe(&spec.limits);
    if let Some(r) = &reason {
        eprintln!("airlock: {r} (exit {code})");
    }
    let blocked = airlock_sandbox::summarize_violations(&outcome.violations);
    if let Some(b) = &blocked {
        eprintln!("airlock: {b}");
    }

    let mut staged = None;
    let mut code = code;
    if let Some(a) = &area {
        // The sandbox has just read the whole upper dir: when it held
        // nothing, there is nothing to list nor to record a base for.
        let listed = if outcome.nothing_staged {
            Ok(vec![])
        } else {
            a.record_bases()
        };
        staged = Some(match listed {
            Ok(changes) => staged_summary(a, changes, args.commit, code == 0, &spec, &ws)?,
            Err(e) => {
                // Nothing is committed. The command's own end (a limit, a
                // failure) stays the exit status; a success becomes ours.
                let e = e.to_string();
                let hint = format!("airlock staged discard {}", a.id());
                if e.contains(&hint) {
                    eprintln!("airlock: cannot list the staged changes: {e}");
                } else {
                    eprintln!("airlock: cannot list the staged changes: {e}; discard them: {hint}");
                }
                if code == 0 {
                    code = 125;
                }
                Staged {
                    id: a.id().to_string(),
                    changes: None,
                    error: Some(e),
                    committed: vec![],
                    refused: vec![],
                }
            }
        });
    }

    tracing::debug!(
        us = t0.elapsed().as_micros() as u64,
        "staged changes summarised"
    );
    if args.json || args.report.is_some() {
        let rec = Record {
            argv: &args.argv,
            profile: &args.sandbox.profile,
            spec: &spec,
            outcome,
            exit_code: code,
            reason,
            blocked,
            staged,
        };
        let line = serde_json::to_string(&rec)?;
        if let Some(f) = &args.report {
            std::fs::write(f, format!("{line}\n"))
                .with_context(|| format!("--report {}", f.display()))?;
        }
        if args.json {
            eprintln!("{line}");
        }
    }
    ended.finish_leaving();
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "sandbox closed");
    Ok(code)
}

/// Commit the staged `changes` (when asked to and the command succeeded)
/// or say how to review them.
fn staged_summary(
    a: &airlock_fs::StagingArea,
    changes: Vec<airlock_fs::Change>,
    commit: bool,
    succeeded: bool,
    spec: &SandboxSpec,
    ws: &Path,
) -> anyhow::Result<Staged> {
    let mut st = Staged {
        id: a.id().to_string(),
        changes: Some(changes.len()),
        error: None,
        committed: vec![],
        refused: vec![],
    };
    if commit && succeeded && !changes.is_empty() {
        let opts = airlock_fs::CommitOptions {
            protected: spec.protected.clone(),
        };
        let rep = a
            .commit(None, &opts)
            .context("committing the staged changes")?;
        st.committed = rep.committed;
        st.refused = rep.refused;
        eprintln!(
            "airlock: committed {} change(s) to {}",
            st.committed.len(),
            ws.display()
        );
        for r in &st.refused {
            eprintln!("airlock: refused {}: {}", r.path, r.reason);
        }
        if !st.refused.is_empty() {
            eprintln!(
                "airlock: {} change(s) left staged in {id}; review: airlock staged diff {id}",
                st.refused.len(),
                id = st.id
            );
        }
    } else if changes.is_empty() {
        eprintln!("airlock: no changes staged");
    } else {
        let (mut add, mut modi, mut del) = (0, 0, 0);
        for c in &changes {
            match c.kind {
                airlock_fs::ChangeKind::Added
                | airlock_fs::ChangeKind::Dir
                | airlock_fs::ChangeKind::Symlink => add += 1,
                airlock_fs::ChangeKind::Modified => modi += 1,
                airlock_fs::ChangeKind::Deleted => del += 1,
            }
        }
        eprintln!(
            "airlock: {} change(s) staged in {id} ({add} added, {modi} modified, {del} deleted); review: airlock staged diff {id}; apply: airlock staged commit {id}{}",
            changes.len(),
            if commit { " (not committed: the command failed)" } else { "" },
            id = st.id
        );
    }
    Ok(st)
}

/// Signals forwarded to the command while it runs.
const FORWARDED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];
