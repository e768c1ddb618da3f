//! `airlock serve`.

use std::path::PathBuf;

use airlock_broker::{Broker, Config};
use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// Arguments of `airlock serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Config file (TOML). Default: `$XDG_CONFIG_HOME/airlock/config.toml` if it exists, else built-in defaults.
    #[arg(long, env = "AIRLOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Add a workspace root (repeatable): reads and staged edits beneath it are allowed by the default policy.
    #[arg(long = "workspace", value_name = "DIR")]
    pub workspaces: Vec<PathBuf>,
    /// Print the resolved configuration and paths, then exit.
    #[arg(long)]
    pub print_config: bool,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<i32> {
    let cfg = Config::load_or_default(a.config.as_deref())?;
    if a.print_config {
        let paths = cfg.paths()?;
        println!(
            "{}",
            toml::to_string_pretty(&cfg).context("serialising config")?
        );
        println!(
            "# resolved paths\n{}",
            serde_json::to_string_pretty(&paths)?
        );
        return Ok(0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let broker = Broker::open(cfg, &a.workspaces)?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let b = broker.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match b.reload_policy("SIGHUP").await {
                    Ok(rev) => tracing::info!(revision = %rev, "policy reloaded on SIGHUP"),
                    Err(e) => tracing::error!(error = %e, "policy reload on SIGHUP rejected; the last good policy stays active"),
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        // `airlock mcp` hands its stdio over the attach socket; the session
        // is served here, with calls reaching the broker in-process.
        let attach: airlock_broker::Attach = std::sync::Arc::new(|peer, stream, client| {
            let who = format!("pid {} ({})", peer.pid, peer.exe_name());
            Box::pin(airlock_mcp::attach::serve_attached(stream, client, who))
        });
        broker.serve_with(shutdown, Some(attach)).await?;
        anyhow::Ok(0)
    })
}
