//! `airlock mcp` and `airlock mcp-proxy` served inside the broker. The front
//! process hands its stdin and stdout (and, for the proxy, its stderr, which
//! the proxied server's stderr goes to) to the running broker over the
//! attach socket and waits; the broker serves the MCP session on them
//! itself, so a tool call reaches the broker with no process in between,
//! and its decisions are made in-process.
//!
//! The attach connection (a Unix stream socket, identified and checked by
//! the broker like its agent socket):
//! 1. front → broker: one message carrying stdin, stdout (and stderr)
//!    (`SCM_RIGHTS`) and a JSON line, [`AttachRequest`];
//! 2. broker → front: `{"ok": true}` once the client has initialized the
//!    session on the handed-over stdio, or `{"ok": false, "error": "..."}`
//!    (nothing is served);
//! 3. broker → front: `{"done": true}` when the session has ended, then the
//!    broker closes the connection. When the front goes away first (killed
//!    by its client), the broker ends the session.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_client::Client;
use rmcp::ServiceExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::UnixStream;

use crate::pins::PinStore;
use crate::proxy::{ChildSetup, Proxy, ProxyOptions};
use crate::{BrokerLink, FsOptions, FsServer, Refusal};

/// An MCP message stream's reading half.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// An MCP message stream's writing half.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Longest MCP message (one JSON-RPC line) a session served in the broker
/// accepts: a longer one ends that session, so no client can make the
/// broker buffer without bound. Twice the broker's default body limit, so
/// any call the broker could carry out fits.
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// How long the broker waits for the hand-over message after a connect.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest hand-over request (its JSON line, the environment included).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// What a front door asks the broker to serve (`"serve"` names which).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "serve", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AttachRequest {
    /// `airlock mcp`: the filesystem/shell server. Descriptors: stdin, stdout.
    Mcp {
        /// Allowed directories (absolute).
        dirs: Vec<String>,
        /// How long a call waits for a human when policy asks (seconds).
        ask_timeout: u64,
        /// Whether MCP roots from the client replace `dirs`.
        accept_roots: bool,
    },
    /// `airlock mcp-proxy`: a stdio MCP server behind the broker, started
    /// by the broker with the front's environment and working directory.
    /// Descriptors: stdin, stdout, and stderr (the server's stderr).
    McpProxy {
        /// The server's name (policy input, pin file).
        name: String,
        /// The child: normally `airlock run ... -- CMD`.
        argv: Vec<String>,
        /// How long a call waits for a human when policy asks (seconds).
        ask_timeout: u64,
        /// The pin directory.
        pins: PathBuf,
        /// Secret rule files beyond the shipped ones (absolute).
        secret_rules: Vec<PathBuf>,
        /// The front's working directory.
        cwd: PathBuf,
        /// The front's environment.
        env: Vec<(String, String)>,
    },
}

impl AttachRequest {
    /// How many descriptors come with it.
    fn fds(&self) -> usize {
        match self {
            AttachRequest::Mcp { .. } => 2,
            AttachRequest::McpProxy { .. } => 3,
        }
    }

    /// What the front says it is, for messages.
    fn front(&self) -> &'static str {
        match self {
            AttachRequest::Mcp { .. } => "airlock mcp",
            AttachRequest::McpProxy { .. } => "airlock mcp-proxy",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    done: Option<bool>,
}

/// `fd` as an async reader, when it is a pipe or a socket (what MCP clients
/// launch servers with: Python's subprocess uses pipes, Node's socket pairs).
pub fn reader(fd: OwnedFd) -> io::Result<Reader> {
    match kind(&fd)? {
        Kind::Pipe => Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
            fd,
        )?)),
        Kind::Socket => Ok(Box::new(socket(fd)?)),
    }
}

/// `fd` as an async writer, when it is a pipe or a socket.
pub fn writer(fd: OwnedFd) -> io::Result<Writer> {
    match kind(&fd)? {
        Kind::Pipe => Ok(Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?)),
        Kind::Socket => Ok(Box::new(socket(fd)?)),
    }
}

enum Kind {
    Pipe,
    Socket,
}

fn kind(fd: &OwnedFd) -> io::Result<Kind> {
    let t = std::fs::File::from(fd.try_clone()?).metadata()?.file_type();
    if t.is_fifo() {
        Ok(Kind::Pipe)
    } else if t.is_socket() {
        Ok(Kind::Socket)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a pipe or a socket",
        ))
    }
}

fn socket(fd: OwnedFd) -> io::Result<UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    UnixStream::from_std(s)
}

/// Whether this process's stdin and stdout can be handed to the broker
/// (both pipes or sockets; a terminal or a file stays with this process).
pub fn stdio_can_attach() -> bool {
    let ok = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .ok()
            .is_some_and(|fd| kind(&fd).is_ok())
    };
    ok(io::stdin().as_fd()) && ok(io::stdout().as_fd())
}

/// How a hand-over went.
#[derive(Debug)]
pub enum HandOver {
    /// The broker served the session, which has ended.
    Served,
    /// The broker served the session but went away before it ended.
    BrokerGone,
    /// No broker takes hand-overs at `socket` (none running, or one that
    /// closed the connection unanswered): serve in this process instead.
    Unavailable(String),
}

/// Hand this process's stdin and stdout (and stderr, for the proxy) to the
/// broker at the attach socket `socket` and wait until the session it
/// serves on them ends. `started` runs once the broker serves.
pub async fn hand_over(
    socket: &Path,
    req: &AttachRequest,
    started: impl FnOnce(),
) -> Result<HandOver, Refusal> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(HandOver::Unavailable(format!(
                "cannot connect to {}: {e}",
                socket.display()
            )))
        }
    };
    let mut line = serde_json::to_vec(req).map_err(|e| Refusal::Invalid(e.to_string()))?;
    line.push(b'\n');
    let (i, o, e) = (io::stdin(), io::stdout(), io::stderr());
    let stdio = [i.as_fd(), o.as_fd(), e.as_fd()];
    let fds = &stdio[..req.fds()];
    // The descriptors travel with the first bytes; a request larger than
    // the socket takes at once (a big environment) follows as plain data.
    let sent = stream
        .async_io(tokio::io::Interest::WRITABLE, || {
            send_with_fds(&stream, &line, fds)
        })
        .await;
    let rest = match sent {
        Ok(n) => &line[n..],
        Err(e) => {
            return Ok(HandOver::Unavailable(format!(
                "handing stdio to the broker: {e}"
            )))
        }
    };
    let mut stream = stream;
    if let Err(e) = stream.write_all(rest).await {
        return Ok(HandOver::Unavailable(format!(
            "handing stdio to the broker: {e}"
        )));
    }
    let mut lines = BufReader::new(stream).lines();
    let first = match lines.next_line().await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Ok(HandOver::Unavailable(
                "the broker closed the attach connection without an answer".into(),
            ))
        }
        Err(e) => {
            return Ok(HandOver::Unavailable(format!(
                "reading the broker's answer: {e}"
            )))
        }
    };
    let a: Answer = serde_json::from_str(&first).map_err(|e| {
        Refusal::Broker(format!(
            "the broker answered the hand-over oddly ({e}): {first}"
        ))
    })?;
    if a.ok != Some(true) {
        return Err(Refusal::Invalid(a.error.unwrap_or_else(|| {
            "the broker refused to serve the session".into()
        })));
    }
    started();
    loop {
        match lines.next_line().await {
            Ok(Some(l)) => {
                if serde_json::from_str::<Answer>(&l).is_ok_and(|a| a.done == Some(true)) {
                    return Ok(HandOver::Served);
                }
            }
            Ok(None) | Err(_) => return Ok(HandOver::BrokerGone),
        }
    }
}

fn send_with_fds(
    sock: &UnixStream,
    data: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    Ok(rustix::net::sendmsg(
        sock,
        &[io::IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// The hand-over message: its JSON line and the descriptors it carried.
fn recv_with_fds(sock: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = rustix::net::recvmsg(
        sock,
        &mut [io::IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if r.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "more descriptors than stdin and stdout",
        ));
    }
    buf.truncate(r.bytes);
    Ok((buf, fds))
}

/// Serve one hand-over in the broker: `stream` is the attach connection of
/// `peer` (for logs), `client` reaches this broker in-process as that peer.
pub async fn serve_attached(stream: UnixStream, client: Client, peer: String) {
    let mut stream = stream;
    let got = tokio::time::timeout(HANDOVER_TIMEOUT, async {
        let (mut line, fds) = loop {
            stream.readable().await?;
            match stream.try_io(tokio::io::Interest::READABLE, || recv_with_fds(&stream)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break r?,
            }
        };
        // The rest of the line, when it did not come in the first message.
        while !line.ends_with(b"\n") {
            if line.len() > MAX_REQUEST_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the request is longer than {MAX_REQUEST_BYTES} bytes"),
                ));
            }
            let mut more = [0u8; 16 * 1024];
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut more).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the request ended before its end of line",
                ));
            }
            line.extend_from_slice(&more[..n]);
        }
        Ok((line, fds))
    })
    .await;
    let (mut read_half, mut write_half) = stream.into_split();
    // The front sends nothing more; EOF (or an error) means it is gone.
    // Watched from the start: the session begins only once the client has
    // initialized it, and a front killed before then ends it too.
    let front_gone = async move {
        let mut b = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut read_half, &mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::pin!(front_gone);
    let result = match got {
        Err(_) => Err("no hand-over message arrived in time".to_string()),
        Ok(Err(e)) => Err(format!("cannot read the hand-over: {e}")),
        Ok(Ok((line, fds))) => tokio::select! {
            // (Logged first: the client's `initialize` may take a while.)
            r = async {
                tracing::info!(%peer, "stdio handed over; waiting for the client to initialize");
                start(&line, fds, client).await
            } => r,
            () = &mut front_gone => {
                tracing::info!(%peer, "the front went away before its MCP session began");
                return;
            }
        },
    };
    let (front, running) = match result {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(%peer, error = %why, "refused an MCP session handed over to the broker");
            let a = serde_json::json!({"ok": false, "error": why});
            let _ = write_half.write_all(format!("{a}\n").as_bytes()).await;
            return;
        }
    };
    tracing::info!(%peer, "serving an MCP session handed over by {front}");
    if write_half.write_all(b"{\"ok\":true}\n").await.is_err() {
        running.cancel.cancel();
        return;
    }
    let Running { cancel, mut done } = running;
    tokio::select! {
        () = &mut done => {
            let _ = write_half.write_all(b"{\"done\":true}\n").await;
        }
        () = front_gone => {
            cancel.cancel();
            tracing::info!(%peer, "{front} went away; MCP session ended");
            // Let the session wind down (a proxy sends its last outcome reports).
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
    }
}

/// A session being served: how to stop it, and what ends with it.
struct Running {
    cancel: rmcp::service::RunningServiceCancellationToken,
    done: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

async fn start(
    line: &[u8],
    fds: Vec<OwnedFd>,
    client: Client,
) -> Result<(&'static str, Running), String> {
    let req: AttachRequest = serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(line))
        .map_err(|e| format!("bad hand-over request: {e}"))?;
    if fds.len() != req.fds() {
        return Err(format!(
            "{} hands over {} descriptors, got {}",
            req.front(),
            req.fds(),
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("counted");
    let reader = reader(next()).map_err(|e| format!("stdin: {e}"))?;
    let writer = writer(next()).map_err(|e| format!("stdout: {e}"))?;
    // One message may not make the broker buffer without bound.
    let reader: Reader = Box::new(LineLimit::new(reader, MAX_MESSAGE_BYTES));
    let front = req.front();
    let running = match req {
        AttachRequest::Mcp {
            dirs: raw,
            ask_timeout,
            accept_roots,
        } => {
            let mut dirs = Vec::with_capacity(raw.len());
            for d in &raw {
                let c =
                    std::fs::canonicalize(d).map_err(|e| format!("allowed directory {d}: {e}"))?;
                if !c.is_dir() {
                    return Err(format!("{d} is not a directory"));
                }
                dirs.push(c.to_string_lossy().into_owned());
            }
            let opts = FsOptions {
                socket: client.socket().to_path_buf(),
                dirs,
                ask_timeout: Duration::from_secs(ask_timeout),
                accept_roots,
            };
            let server = FsServer::over(BrokerLink::over(client, opts.ask_timeout), opts)
                .await
                .map_err(|e| e.to_string())?;
            serve(server, reader, writer, async {}).await?
        }
        AttachRequest::McpProxy {
            name,
            argv,
            ask_timeout,
            pins,
            secret_rules,
            cwd,
            env,
        } => {
            if argv.is_empty() {
                return Err("no MCP server command".into());
            }
            if !crate::pins::valid_name(&name) {
                return Err(format!("invalid server name {name:?}"));
            }
            let secrets =
                crate::secrets::Scanner::with_files(&secret_rules).map_err(|e| e.to_string())?;
            let ask_timeout = Duration::from_secs(ask_timeout);
            let opts = ProxyOptions {
                socket: client.socket().to_path_buf(),
                name: name.clone(),
                argv,
                ask_timeout,
                pins: PinStore::new(pins),
                secrets,
                child: ChildSetup {
                    env: Some(env),
                    cwd: Some(cwd),
                    stderr: Some(Arc::new(next())),
                },
            };
            let proxy = Proxy::over(BrokerLink::over(client, ask_timeout), opts)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(server = %name, "proxying an MCP server in the broker");
            let session = proxy.session();
            let after = async move {
                if !proxy.flush(Duration::from_secs(5)).await {
                    tracing::warn!(server = %name, "some outcome records did not reach the audit log before the session ended");
                }
            };
            serve(session, reader, writer, after).await?
        }
    };
    Ok((front, running))
}

/// Serve `handler` on the handed-over stdio (once the client has
/// initialized the session); `after` runs when the session has ended.
async fn serve<S: rmcp::ServerHandler>(
    handler: S,
    reader: Reader,
    writer: Writer,
    after: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, String> {
    let rs = handler
        .serve((reader, writer))
        .await
        .map_err(|e| format!("starting MCP on the handed-over stdio: {e}"))?;
    Ok(Running {
        cancel: rs.cancellation_token(),
        done: Box::pin(async move {
            if let Err(e) = rs.waiting().await {
                tracing::debug!(error = %e, "MCP session task");
            }
            after.await;
        }),
    })
}

/// A reader that fails once a line (an MCP message) grows past `max` bytes.
pub struct LineLimit<R> {
    inner: R,
    max: usize,
    /// Bytes since the last newline.
    run: usize,
}

impl<R> LineLimit<R> {
    pub fn new(inner: R, max: usize) -> LineLimit<R> {
        LineLimit { inner, max, run: 0 }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineLimit<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let filled = buf.filled().len();
            for i in before..filled {
                let b = buf.filled()[i];
                if b == b'\n' {
                    this.run = 0;
                } else {
                    this.run += 1;
                    if this.run > this.max {
                        // A failed read hands back nothing.
                        buf.set_filled(before);
                        return std::task::Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("an MCP message is longer than {} bytes", this.max),
                        )));
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_line_longer_than_the_limit_fails_the_read() {
        let data = b"short\nthis line is too long\nok\n".to_vec();
        let mut r = LineLimit::new(&data[..], 10);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("longer than 10 bytes"), "{e}");

        let data = b"0123456789\n0123456789\n".to_vec();
        let mut r = LineLimit::new(&data[..], 10);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn descriptors_and_request_cross_the_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pr, pw) = std::io::pipe().unwrap();
        let line = b"{\"x\":1}\n";
        let n = a
            .async_io(tokio::io::Interest::WRITABLE, || {
                send_with_fds(&a, line, &[pr.as_fd(), pw.as_fd()])
            })
            .await
            .unwrap();
        assert_eq!(n, line.len());
        b.readable().await.unwrap();
        let (got, fds) = recv_with_fds(&b).unwrap();
        assert_eq!(got, line);
        assert_eq!(fds.len(), 2);
        // The received write end feeds the original read end.
        let mut w = std::fs::File::from(fds.into_iter().nth(1).unwrap());
        std::io::Write::write_all(&mut w, b"through").unwrap();
        drop(w);
        drop(pw);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(OwnedFd::from(pr)), &mut s).unwrap();
        assert_eq!(s, "through");
    }
}
