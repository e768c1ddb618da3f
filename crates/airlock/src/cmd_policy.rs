//! `airlock policy test|eval|reload`.

use std::path::PathBuf;

use airlock_broker::Config;
use airlock_policy::{PolicyConfig, PolicyEngine};
use anyhow::Context;

use crate::output::{block_on, print_json, report};

/// `airlock policy ...`.
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCmd {
    /// Run every `test_*` rule in the directory's `*.rego` files (like `opa test`).
    Test {
        dir: PathBuf,
        /// Leave out the embedded default policy and its tests.
        #[arg(long)]
        no_default: bool,
        /// Print every test, not only failures.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print the decision for a policy input (JSON file, `-` for stdin).
    Eval {
        #[arg(long)]
        input: PathBuf,
        /// Policy directory (default: the configured one).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        no_default: bool,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running broker to reload its policy (same as SIGHUP).
    Reload,
}

pub fn policy(c: PolicyCmd) -> anyhow::Result<i32> {
    match c {
        PolicyCmd::Test {
            dir,
            no_default,
            verbose,
        } => {
            let rep = airlock_policy::run_tests(&dir, !no_default)?;
            for r in &rep.results {
                if !r.passed {
                    println!(
                        "FAIL {}.{}: {}",
                        r.package,
                        r.name,
                        r.error.as_deref().unwrap_or("evaluated to false")
                    );
                } else if verbose {
                    println!("PASS {}.{} ({} µs)", r.package, r.name, r.duration_us);
                }
            }
            let failed = rep.failed();
            println!("{} passed, {} failed", rep.results.len() - failed, failed);
            Ok(if failed > 0 || rep.results.is_empty() {
                1
            } else {
                0
            })
        }
        PolicyCmd::Eval {
            input,
            dir,
            no_default,
            config,
        } => {
            let mut pc: PolicyConfig = Config::load_or_default(config.as_deref())?.policy;
            if dir.is_some() {
                pc.dir = dir;
            }
            if no_default {
                pc.include_default = false;
            }
            let engine = PolicyEngine::load(&pc)?;
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&input)
                    .with_context(|| format!("reading {}", input.display()))?
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).context("the input is not valid JSON")?;
            let d = engine.evaluate(&v);
            let mut out = serde_json::to_value(&d)?;
            out["policy_revision"] = engine.revision().into();
            print_json(&out);
            Ok(match d.decision {
                airlock_core::DecisionKind::Allow => 0,
                airlock_core::DecisionKind::Ask => 4,
                airlock_core::DecisionKind::Deny => 3,
            })
        }
        PolicyCmd::Reload => {
            let op = airlock_client::Client::new(airlock_client::default_operator_socket());
            block_on(async move {
                match op.post("/v1/policy/reload", &serde_json::json!({})).await {
                    Ok((_, v)) => {
                        println!(
                            "policy reloaded: revision {}",
                            v["revision"].as_str().unwrap_or("?")
                        );
                        0
                    }
                    Err(e) => report(&e),
                }
            })
        }
    }
}
