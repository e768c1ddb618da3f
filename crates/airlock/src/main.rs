//! `airlock-full`: the whole CLI over the Airlock libraries. The `airlock`
//! binary (`front.rs`) runs `airlock run` itself and hands every other
//! command to this one.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

// The broker allocates from many threads at once (policy values, JSON,
// tokens); mimalloc keeps that from serialising on the allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd_agent;
mod cmd_audit;
mod cmd_doctor;
mod cmd_hook;
mod cmd_mcp;
mod cmd_mcp_proxy;
mod cmd_operator;
mod cmd_policy;
mod cmd_run;
mod cmd_serve;
mod common;
mod output;

/// Airlock: a local capability broker and sandbox for desktop LLM agents.
#[derive(Parser)]
#[command(name = "airlock", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Cmd {
    /// Run the broker (agent and operator sockets) until SIGTERM/SIGINT.
    Serve(cmd_serve::ServeArgs),
    /// Show the broker, sockets, policy, sessions, approvals, tokens, staged changes, audit head.
    Status(cmd_operator::StatusArgs),
    /// Review and decide pending approvals.
    #[command(subcommand)]
    Approvals(cmd_operator::ApprovalsCmd),
    /// List and revoke capability tokens.
    #[command(subcommand)]
    Tokens(cmd_operator::TokensCmd),
    /// List agent sessions; quarantine one.
    #[command(subcommand)]
    Sessions(cmd_operator::SessionsCmd),
    /// Review, commit or discard staged file changes.
    #[command(subcommand)]
    Staged(cmd_operator::StagedCmd),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(cmd_audit::AuditCmd),
    /// Test, evaluate and reload policy.
    #[command(subcommand)]
    Policy(cmd_policy::PolicyCmd),
    /// Agent side: ask the broker for a capability with a permission manifest.
    Request(cmd_agent::RequestArgs),
    /// Agent side: brokered file operations with a capability token.
    #[command(subcommand)]
    Fs(cmd_agent::FsCmd),
    /// Agent side: run a command in the broker's sandbox with an exec token.
    Exec(cmd_agent::ExecArgs),
    /// Start a program (an agent) as an Airlock session: it and everything
    /// it starts are bound to one session and kept off the operator socket.
    Session(cmd_agent::SessionArgs),
    /// Run a command in the sandbox (no broker needed).
    Run(cmd_run::RunArgs),
    /// Check which sandbox layers work on this machine.
    Doctor(cmd_doctor::DoctorArgs),
    /// Serve MCP (stdio, or Streamable HTTP with --http): the reference filesystem
    /// server's tools plus run_command, fetch and staged_changes, every call brokered.
    Mcp(cmd_mcp::McpArgs),
    /// Put any stdio MCP server behind Airlock: run it in the sandbox, broker
    /// every tool call, hide what policy denies, pin tool definitions.
    McpProxy(cmd_mcp_proxy::ProxyArgs),
    /// Review and approve MCP tools quarantined by `airlock mcp-proxy`.
    #[command(subcommand)]
    McpPins(cmd_mcp_proxy::PinsCmd),
    /// Agent hooks: `airlock hook claude-code` decides Claude Code's built-in
    /// tool calls through the broker; `airlock hook install claude-code` sets it up.
    #[command(subcommand)]
    Hook(cmd_hook::HookCmd),
}

/// Refuse to run for a front of another build: a copied or half-rebuilt
/// pair would run the sandbox of one build and the broker of another.
/// The variable is removed so that nothing started from here inherits it.
fn check_front_build() {
    let Some(front) = std::env::var_os(common::FRONT_BUILD_ENV) else {
        return;
    };
    std::env::remove_var(common::FRONT_BUILD_ENV);
    if front != common::BUILD_ID {
        let me = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "airlock-full".into());
        eprintln!(
            "airlock: the `airlock` that started {me} is from another build ({} against {}); \
             install both binaries from the same build",
            front.to_string_lossy(),
            common::BUILD_ID
        );
        std::process::exit(125);
    }
}

fn main() {
    // First, while this process has one thread.
    check_front_build();
    let cli = Cli::parse();
    let default_level = if matches!(cli.cmd, Cmd::Serve(_) | Cmd::Mcp(_) | Cmd::McpProxy(_)) {
        "info"
    } else {
        "warn"
    };
    common::init_tracing(default_level);
    // One-shot commands stop quietly when their reader goes away
    // (`airlock audit tail | head`); the services, `run` (which passes its
    // child's status on) and the hook (which must always answer) keep
    // seeing EPIPE as an error.
    if !matches!(
        cli.cmd,
        Cmd::Serve(_)
            | Cmd::Mcp(_)
            | Cmd::McpProxy(_)
            | Cmd::Run(_)
            | Cmd::Session(_)
            | Cmd::Hook(_)
    ) {
        airlock_sandbox::default_sigpipe();
    }
    let code = match cli.cmd {
        Cmd::Serve(a) => cmd_serve::serve(a),
        Cmd::Status(a) => cmd_operator::status(a),
        Cmd::Approvals(c) => cmd_operator::approvals(c),
        Cmd::Tokens(c) => cmd_operator::tokens(c),
        Cmd::Sessions(c) => cmd_operator::sessions(c),
        Cmd::Staged(c) => cmd_operator::staged(c),
        Cmd::Audit(c) => cmd_audit::audit(c),
        Cmd::Policy(c) => cmd_policy::policy(c),
        Cmd::Request(a) => cmd_agent::request(a),
        Cmd::Fs(c) => cmd_agent::fs(c),
        Cmd::Exec(a) => cmd_agent::exec(a),
        Cmd::Session(a) => cmd_agent::session(a),
        Cmd::Run(a) => cmd_run::run(a),
        Cmd::Doctor(a) => cmd_doctor::doctor(a),
        Cmd::Mcp(a) => cmd_mcp::mcp(a),
        Cmd::McpProxy(a) => cmd_mcp_proxy::mcp_proxy(a),
        Cmd::McpPins(c) => cmd_mcp_proxy::mcp_pins(c),
        Cmd::Hook(c) => cmd_hook::hook(c),
    };
    common::exit(code)
}

/// The `airlock` binary to name in commands that others run later (hook
/// settings, a sandboxed MCP server's `airlock run`): the front next to this
/// binary when it is there (it starts `airlock run` faster), else this one.
pub fn airlock_exe() -> std::io::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let front = me.with_file_name("airlock");
    Ok(if front.is_file() { front } else { me })
}
