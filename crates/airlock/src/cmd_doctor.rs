//! `airlock doctor`: which sandbox layers work on this machine.

/// Arguments of `airlock doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn doctor(args: DoctorArgs) -> anyhow::Result<i32> {
    let p = airlock_sandbox::probe();
    let code = if p.default_profile_runs { 0 } else { 1 };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(code);
    }
    let who = if rustix::process::geteuid().is_root() {
        "root (the sandbox drops to an unprivileged uid inside)".to_string()
    } else {
        format!("uid {}", rustix::process::geteuid().as_raw())
    };
    println!("airlock doctor: checking the sandbox layers as {who}");
    if let Some(env) = &p.environment {
        println!("  note: running inside {env}; its runtime may restrict user namespaces, seccomp or mounts");
    }
    for c in &p.checks {
        println!(
            "{} {}: {}",
            if c.ok { "  ok     " } else { "  MISSING" },
            c.name,
            c.detail
        );
        if !c.ok {
            println!("            costs: {}", c.cost);
            println!("            enable: {}", c.enable);
        }
    }
    if p.default_profile_runs {
        println!("the default profile (workspace-write) runs here.");
    } else {
        let missing: Vec<&str> = p
            .checks
            .iter()
            .filter(|c| {
                !c.ok && !["cgroups", "idmapped mounts", "peer pidfd"].contains(&c.name.as_str())
            })
            .map(|c| c.name.as_str())
            .collect();
        println!(
            "the default profile cannot run here: missing {}; enable it, or accept running without it with --allow-degraded LAYER",
            missing.join(", ")
        );
    }
    Ok(code)
}
