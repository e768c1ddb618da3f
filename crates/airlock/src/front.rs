//! `airlock`: runs `airlock run` itself and hands every other command to
//! `airlock-full`, installed next to it.
//!
//! `airlock run` is started for every sandboxed command, so its start-up
//! counts. This binary holds only the sandbox and the staging store: it
//! starts in a fraction of the time of the whole CLI (no broker, policy
//! engine, MCP or HTTP to map and relocate). Every other command costs one
//! `exec` more, under the same pid, arguments and environment.
#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;

use clap::{Parser, Subcommand};

// `run_flags` is for `airlock mcp-proxy`, which lives in the full binary.
#[allow(dead_code)]
mod cmd_run;
mod common;

/// Airlock: a local capability broker and sandbox for desktop LLM agents.
#[derive(Parser)]
#[command(name = "airlock", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command in the sandbox (no broker needed).
    Run(cmd_run::RunArgs),
}

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "airlock".into());
    if args.next().as_deref() != Some(std::ffi::OsStr::new("run")) {
        hand_over(argv0);
    }
    let Cmd::Run(a) = Cli::parse().cmd;
    common::init_tracing("warn");
    common::exit(cmd_run::run(a))
}

/// Replace this process with `airlock-full` and the same arguments.
fn hand_over(argv0: std::ffi::OsString) -> ! {
    let full = std::env::current_exe()
        .map(|me| me.with_file_name("airlock-full"))
        .unwrap_or_else(|_| "airlock-full".into());
    let err = std::process::Command::new(&full)
        .arg0(argv0)
        .args(std::env::args_os().skip(1))
        .env(common::FRONT_BUILD_ENV, common::BUILD_ID)
        .exec();
    eprintln!(
        "airlock: cannot start {} ({err}); it is installed next to airlock, reinstall both",
        full.display()
    );
    std::process::exit(125)
}
