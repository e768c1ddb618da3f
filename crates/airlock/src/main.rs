//! `airlock`: thin CLI over the Airlock libraries.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod cmd_doctor;
mod cmd_run;

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
    /// Run a command in the sandbox (no broker needed).
    Run(cmd_run::RunArgs),
    /// Check which sandbox layers work on this machine.
    Doctor(cmd_doctor::DoctorArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(a) => cmd_run::run(a),
        Cmd::Doctor(a) => cmd_doctor::doctor(a),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("airlock: {e:#}");
            std::process::exit(125);
        }
    }
}
