//! `airlock mcp`: the brokered MCP filesystem/shell server.

use std::path::PathBuf;
use std::time::Duration;

use airlock_broker::{Broker, Config};
use airlock_mcp::attach::{self, AttachRequest, HandOver};
use airlock_mcp::http::{self, HttpOptions};
use airlock_mcp::{BrokerLink, FsOptions, FsServer, Refusal};
use anyhow::Context;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

/// How an MCP front door serves and reaches the broker (`airlock mcp`,
/// `airlock mcp-proxy`).
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp (loopback only) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// With --http: accept requests without the bearer token (for tools that cannot send headers).
    #[arg(long, requires = "http")]
    pub no_auth: bool,
    /// The broker's agent socket (default: AIRLOCK_SOCKET, else the per-user default).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// How long a call waits for a human when policy asks (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub ask_timeout: u64,
    /// Serve the session in this process, calling the running broker over
    /// its agent socket, instead of handing stdio to the broker to serve
    /// (the default on stdio when the broker takes hand-overs).
    #[arg(long)]
    pub own_process: bool,
}

impl ServeArgs {
    /// The broker's agent socket.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(airlock_client::default_agent_socket)
    }
}

/// Arguments of `airlock mcp`.
#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// Allowed directories, as for the reference filesystem server. They must lie within the
    /// running broker's workspaces; with no broker running, an embedded one serves them as its workspaces.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Ignore MCP roots sent by the client (keep the DIR arguments).
    #[arg(long)]
    pub no_roots: bool,
    /// Never start an embedded broker: fail when none is running.
    #[arg(long)]
    pub no_embedded: bool,
    /// Config file for an embedded broker.
    #[arg(long, env = "AIRLOCK_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The process's stdin and stdout for MCP. When they are pipes or sockets
/// (as MCP clients launch servers), they are read and written through the
/// runtime's event loop; tokio's own stdin and stdout hand every read and
/// write to a blocking thread, which costs thread switches on every
/// message. Anything else (a terminal, a file) keeps tokio's.
fn stdio() -> (attach::Reader, attach::Writer) {
    use std::os::fd::AsFd;
    let (stdin, stdout) = rmcp::transport::stdio();
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
    let reader = dup(std::io::stdin().as_fd())
        .and_then(attach::reader)
        .unwrap_or_else(|_| Box::new(stdin));
    let writer = dup(std::io::stdout().as_fd())
        .and_then(attach::writer)
        .unwrap_or_else(|_| Box::new(stdout));
    (reader, writer)
}

/// On stdio, unless `--own-process`: hand stdin and stdout to the running
/// broker to serve the session `req` describes, and wait for its end
/// (`Some(exit code)`). `None`: serve it in this process (the broker does
/// not take hand-overs, or none runs).
pub(crate) async fn hand_over(
    serve: &ServeArgs,
    req: &AttachRequest,
) -> anyhow::Result<Option<i32>> {
    if serve.http.is_some() || serve.own_process || !attach::stdio_can_attach() {
        return Ok(None);
    }
    let at = airlock_client::attach_socket_for(&serve.socket());
    let started = || {
        tracing::info!(socket = %at.display(), "the running broker serves this MCP session");
    };
    let handed = tokio::select! {
        h = attach::hand_over(&at, req, started) => h,
        _ = terminated() => return Ok(Some(0)),
    };
    match handed.map_err(|e| anyhow::anyhow!("{e}"))? {
        HandOver::Served => Ok(Some(0)),
        HandOver::BrokerGone => {
            anyhow::bail!("the broker stopped during the MCP session; the session has ended")
        }
        HandOver::Unavailable(why) => {
            tracing::info!(%why, "the broker did not take the session; serving it in this process");
            Ok(None)
        }
    }
}

/// SIGTERM or SIGINT (never, when they cannot be caught).
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

fn canonical_dirs(dirs: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    dirs.iter()
        .map(|d| {
            let c = std::fs::canonicalize(d)
                .with_context(|| format!("allowed directory {}", d.display()))?;
            anyhow::ensure!(c.is_dir(), "{} is not a directory", d.display());
            Ok(c.to_string_lossy().into_owned())
        })
        .collect()
}

pub fn mcp(a: McpArgs) -> anyhow::Result<i32> {
    let dirs = canonical_dirs(&a.dirs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = a.serve.socket();
        let opts = FsOptions {
            socket: socket.clone(),
            dirs: dirs.clone(),
            ask_timeout: Duration::from_secs(a.serve.ask_timeout),
            accept_roots: !a.no_roots,
        };
        let stop = CancellationToken::new();
        let req = AttachRequest::Mcp {
            dirs: dirs.clone(),
            ask_timeout: a.serve.ask_timeout,
            accept_roots: !a.no_roots,
        };
        if let Some(code) = hand_over(&a.serve, &req).await? {
            return anyhow::Ok(code);
        }
        let mut embedded = None;
        let server = match FsServer::connect(opts.clone()).await {
            Ok(s) => {
                tracing::info!(socket = %socket.display(), dirs = ?dirs, "connected to the running broker");
                s
            }
            Err(Refusal::Broker(why)) if !a.no_embedded => {
                anyhow::ensure!(
                    !dirs.is_empty(),
                    "no broker is running ({why}) and no DIR was given for an embedded one"
                );
                let cfg = Config::load_or_default(a.config.as_deref())?;
                let paths: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
                let broker = Broker::open(cfg, &paths).context("starting an embedded broker")?;
                let agent_socket = broker.paths().socket.clone();
                tracing::warn!(
                    socket = %agent_socket.display(),
                    operator_socket = %broker.paths().operator_socket.display(),
                    workspaces = ?dirs,
                    "no broker was running ({why}); started an embedded one in this process with these workspaces. \
                     Approve and review from another terminal with `airlock approvals` and `airlock staged`"
                );
                // This process is the peer of every call, reaching the
                // embedded broker in-process; other processes (the user
                // approving, reviewing) use its sockets.
                let me = airlock_broker::peer::Peer::current()
                    .context("identifying this process for the embedded broker")?;
                let link = BrokerLink::over(broker.local_agent(me), opts.ask_timeout);
                let s = stop.clone();
                embedded = Some(tokio::spawn(
                    broker.serve(async move { s.cancelled_owned().await }),
                ));
                let opts = FsOptions {
                    socket: agent_socket,
                    ..opts
                };
                FsServer::over(link, opts)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
            Err(e) => anyhow::bail!("{e}"),
        };
        let s = server.clone();
        let res = serve_mcp("airlock mcp", move || s.clone(), a.serve.http, a.serve.no_auth, stop.clone()).await;
        stop.cancel();
        if let Some(h) = embedded {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "embedded broker"),
                Err(e) => tracing::error!(error = %e, "embedded broker task"),
            }
        }
        res.map(|()| 0)
    })
}

/// Serve the MCP handlers `factory` makes on stdio or, with `http`, over
/// Streamable HTTP (a bearer token unless `no_auth`; `AIRLOCK_MCP_TOKEN`
/// sets it), until the client leaves, SIGTERM/SIGINT, or `stop`.
pub(crate) async fn serve_mcp<S, F>(
    prog: &str,
    factory: F,
    http: Option<std::net::SocketAddr>,
    no_auth: bool,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    S: rmcp::ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let run = async {
        match http {
            Some(addr) => {
                let bearer = (!no_auth).then(|| {
                    std::env::var("AIRLOCK_MCP_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(http::new_bearer)
                });
                let shown = bearer.clone();
                http::serve(
                    factory,
                    HttpOptions { addr, bearer },
                    stop.clone(),
                    |bound| {
                        eprintln!("{prog}: serving MCP at http://{bound}/mcp");
                        match &shown {
                            Some(t) => eprintln!("{prog}: bearer token: {t}"),
                            None => eprintln!(
                                "{prog}: --no-auth: no bearer token is required (loopback only)"
                            ),
                        }
                    },
                )
                .await?;
            }
            None => {
                let svc = factory()
                    .serve(stdio())
                    .await
                    .context("starting MCP on stdio")?;
                tokio::select! {
                    r = svc.waiting() => { r.context("MCP session")?; }
                    _ = stop.cancelled() => {}
                }
            }
        }
        anyhow::Ok(())
    };
    let signals = async {
        tokio::select! {
            _ = terminated() => {}
            _ = stop.cancelled() => {}
        }
        anyhow::Ok(())
    };
    let res = tokio::select! {
        r = run => r,
        r = signals => r,
    };
    stop.cancel();
    res
}
