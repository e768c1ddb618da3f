//! `airlock mcp`: the brokered MCP filesystem/shell server.

use std::path::PathBuf;
use std::time::Duration;

use airlock_broker::{Broker, Config};
use airlock_mcp::http::{self, HttpOptions};
use airlock_mcp::{FsOptions, FsServer, Refusal};
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

type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The process's stdin and stdout for MCP. When they are pipes or sockets
/// (as MCP clients launch servers: Python's subprocess uses pipes, Node's
/// socket pairs), they are read and written through the runtime's event
/// loop; tokio's own stdin and stdout hand every read and write to a
/// blocking thread, which costs thread switches on every message.
/// Anything else (a terminal, a file) keeps tokio's.
fn stdio() -> (Reader, Writer) {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    use tokio::net::unix::pipe;
    enum Kind {
        Pipe(std::os::fd::OwnedFd),
        Socket(std::os::unix::net::UnixStream),
    }
    let kind = |fd: std::os::fd::BorrowedFd<'_>| -> Option<Kind> {
        let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
        let t = file.metadata().ok()?.file_type();
        if t.is_fifo() {
            Some(Kind::Pipe(file.into()))
        } else if t.is_socket() {
            let s = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(file));
            s.set_nonblocking(true).ok()?;
            Some(Kind::Socket(s))
        } else {
            None
        }
    };
    let socket = |s| tokio::net::UnixStream::from_std(s).ok();
    let (stdin, stdout) = rmcp::transport::stdio();
    let reader = match kind(std::io::stdin().as_fd()) {
        Some(Kind::Pipe(fd)) => pipe::Receiver::from_owned_fd(fd)
            .ok()
            .map(|r| Box::new(r) as Reader),
        Some(Kind::Socket(s)) => socket(s).map(|r| Box::new(r) as Reader),
        None => None,
    }
    .unwrap_or_else(|| Box::new(stdin));
    let writer = match kind(std::io::stdout().as_fd()) {
        Some(Kind::Pipe(fd)) => pipe::Sender::from_owned_fd(fd)
            .ok()
            .map(|w| Box::new(w) as Writer),
        Some(Kind::Socket(s)) => socket(s).map(|w| Box::new(w) as Writer),
        None => None,
    }
    .unwrap_or_else(|| Box::new(stdout));
    (reader, writer)
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
                let s = stop.clone();
                embedded = Some(tokio::spawn(
                    broker.serve(async move { s.cancelled_owned().await }),
                ));
                let opts = FsOptions {
                    socket: agent_socket,
                    ..opts
                };
                let mut tries = 0;
                loop {
                    match FsServer::connect(opts.clone()).await {
                        Ok(s) => break s,
                        Err(Refusal::Broker(_)) if tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => anyhow::bail!("{e}"),
                    }
                }
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
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
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
