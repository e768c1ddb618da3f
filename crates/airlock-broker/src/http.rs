//! HTTP/1.1 + JSON over the two Unix sockets.
//!
//! Each accepted connection is identified once (SO_PEERCRED, pidfd, start
//! time, ancestry) and served by hyper with a header-read timeout; bodies
//! are read with a size cap and a time limit. Every failure is a JSON
//! `{"error": {...}}` body; the broker keeps serving.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_core::api::{decode, ApiRequest, Route};
use airlock_core::{ApiError, ErrorCode, Manifest};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::peer::Peer;
use crate::{Broker, BrokerError};

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Agent,
    Operator,
}

/// Per-connection facts, attached to every request.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub peer: Arc<Peer>,
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The structured error response.
pub(crate) fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code.http_status(), &e.to_body());
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if e.code == ErrorCode::BodyTooLarge {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

pub(crate) fn result_response(r: Result<(u16, serde_json::Value), ApiError>) -> Response {
    match r {
        Ok((s, v)) => json_response(s, &v),
        Err(e) => error_response(&e),
    }
}

/// A handler step's value, or the handler returns its structured error.
macro_rules! or_respond {
    ($e:expr) => {
        match $e {
            Ok(x) => x,
            Err(e) => return $crate::http::error_response(&e),
        }
    };
}
pub(crate) use or_respond;

/// The body a handler receives, already read in full (and checked against
/// the size cap and time limit) by [`buffer_body`] before routing.
pub(crate) async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    body.collect().await.map(|c| c.to_bytes()).map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!("cannot read the buffered body: {e}"),
        )
    })
}

/// A handler's JSON body, decoded strictly.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    airlock_core::api::decode_json(&read_body(req.into_body()).await?)
}

/// A handler's JSON body where every field is optional: an empty body reads
/// as `{}`.
pub(crate) async fn json_body_or_empty<T: serde::de::DeserializeOwned>(
    req: Request,
) -> Result<T, ApiError> {
    let bytes = read_body(req.into_body()).await?;
    airlock_core::api::decode_json(if bytes.is_empty() { b"{}" } else { &bytes })
}

/// Read a whole body, refusing more than `max_body_bytes` or slower than
/// `body_timeout_ms`. Every request's body is read this way before routing,
/// so no handler can answer with the client's body still unread (closing a
/// Unix socket with unread data makes the client's read fail with a reset
/// instead of showing it the answer).
pub(crate) async fn buffer_body<B>(
    cfg: &crate::config::ServerConfig,
    headers: &HeaderMap,
    body: B,
) -> Result<bytes::Bytes, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = cfg.max_body_bytes;
    let too_large = || {
        ApiError::new(ErrorCode::BodyTooLarge, format!("request body is larger than {limit} bytes"))
            .hint("send smaller requests: read files with offset/length, write large files in a sandboxed command")
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let limited = http_body_util::Limited::new(body, limit as usize);
    let timeout = Duration::from_millis(cfg.body_timeout_ms);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            "request body did not arrive in time",
        )
        .hint("send the whole body promptly after the headers")),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::new(ErrorCode::TokenInvalid, "Authorization header is not ASCII")
            })?;
            match s
                .strip_prefix("Bearer ")
                .or_else(|| s.strip_prefix("bearer "))
            {
                Some(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
                _ => Err(ApiError::new(
                    ErrorCode::TokenInvalid,
                    "Authorization header is not `Bearer <token>`",
                )
                .hint("send `Authorization: Bearer <token>`")),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Agent routes
// ---------------------------------------------------------------------------

async fn health(State(b): State<Broker>) -> Response {
    json_response(
        200,
        &serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "policy_revision": b.inner.policy.revision(),
            "workspaces": b.workspaces(),
        }),
    )
}

async fn requests(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    req: Request,
) -> Response {
    let bytes = or_respond!(read_body(req.into_body()).await);
    let m = match Manifest::parse(&bytes, &b.inner.cfg.limits) {
        Ok(m) => m,
        Err(e) => {
            b.record_invalid(&c.peer, &e, &bytes).await;
            return error_response(&e);
        }
    };
    match b.request(&c.peer, m).await {
        Ok(a) => {
            let mut r = json_response(a.status, &a.body);
            if let Some(v) = a
                .body
                .retry_after
                .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(e) => error_response(&e),
    }
}

/// `POST /v1/requests/check`: the decision a manifest would get, with no
/// side effect (nothing counted, asked, granted or recorded).
async fn requests_check(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    req: Request,
) -> Response {
    let bytes = or_respond!(read_body(req.into_body()).await);
    match Manifest::parse(&bytes, &b.inner.cfg.limits) {
        Ok(m) => json_response(200, &b.check(&c.peer, &m)),
        Err(e) => error_response(&e),
    }
}

fn parse_wait(q: Option<&str>) -> Result<u64, ApiError> {
    let Some(q) = q else { return Ok(0) };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("wait=") {
            return v.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("wait must be a whole number of seconds, got {v:?}"),
                )
                .field("wait")
                .hint("e.g. ?wait=60")
            });
        }
    }
    Ok(0)
}

async fn approval_poll(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let wait = or_respond!(parse_wait(req.uri().query()));
    match b.poll_approval(&c.peer, &id, wait).await {
        Ok(a) => json_response(a.status, &a.body),
        Err(e) => error_response(&e),
    }
}

async fn fs_op(b: Broker, c: Conn, route: Route, op: &'static str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let token = or_respond!(bearer(&parts.headers));
    let bytes = or_respond!(read_body(body).await);
    let decoded = or_respond!(decode(route, &bytes, &b.inner.cfg.limits));
    let res = match decoded {
        ApiRequest::Exec(x) => b.exec(&c.peer, token.as_deref(), x).await,
        other => b.fs(&c.peer, token.as_deref(), op, other).await,
    };
    result_response(res.map(|v| (200, v)))
}

macro_rules! fs_route {
    ($name:ident, $route:expr, $op:literal) => {
        async fn $name(
            State(b): State<Broker>,
            Extension(c): Extension<Conn>,
            req: Request,
        ) -> Response {
            fs_op(b, c, $route, $op, req).await
        }
    };
}
fs_route!(fs_read, Route::FsRead, "read");
fs_route!(fs_list, Route::FsList, "list");
fs_route!(fs_stat, Route::FsStat, "stat");
fs_route!(fs_write, Route::FsWrite, "write");
fs_route!(fs_delete, Route::FsDelete, "delete");
fs_route!(fs_rename, Route::FsRename, "rename");
fs_route!(fs_mkdir, Route::FsMkdir, "mkdir");
fs_route!(exec_route, Route::Exec, "exec");

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionRegister {
    /// `self` (default), `parent` or `pid:N` (an ancestor): which process holds the session.
    #[serde(default)]
    holder: Option<String>,
    /// A label shown to the human.
    #[serde(default)]
    label: Option<String>,
}

/// `POST /v1/outcomes`: an agent-side front door (e.g. a tool hook)
/// reports how a call it asked about ended. Recorded as an `outcome`
/// record of the caller's session, marked as reported by the agent.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutcomeReport {
    request_id: String,
    status: String,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

async fn outcome_report(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    req: Request,
) -> Response {
    let r: OutcomeReport = or_respond!(json_body(req).await);
    let bad = |field: &str, msg: &str| {
        error_response(&ApiError::new(ErrorCode::InvalidValue, msg.to_string()).field(field))
    };
    if r.request_id.is_empty()
        || r.request_id.len() > 64
        || r.request_id.chars().any(char::is_control)
    {
        return bad(
            "request_id",
            "request_id must be 1 to 64 printable characters",
        );
    }
    if !matches!(r.status.as_str(), "success" | "error") {
        return bad("status", "status must be `success` or `error`");
    }
    if r.tool.as_deref().is_some_and(|t| t.len() > 256) {
        return bad("tool", "tool is longer than 256 bytes");
    }
    if r.detail
        .as_ref()
        .is_some_and(|d| d.to_string().len() > 4096)
    {
        return bad(
            "detail",
            "detail is larger than 4096 bytes of JSON; summarise it",
        );
    }
    let Some(session) = b.inner.sessions.find(&c.peer) else {
        return error_response(
            &ApiError::new(
                ErrorCode::NotFound,
                "this process holds no session, so it made no request to report on",
            )
            .hint("report outcomes from the session that made the request"),
        );
    };
    let rec = crate::fsops::FsRecord {
        kind: "outcome",
        request_id: &r.request_id,
        token_id: None,
        intent: serde_json::json!({"reported_by": "agent", "tool": r.tool}),
        decision: serde_json::Value::Null,
        execution: serde_json::Value::Null,
        outcome: serde_json::json!({"status": r.status, "detail": r.detail}),
    };
    // Reported after the action: nothing waits on it to act, so it may
    // share the next decision's sync.
    match b
        .record_deferred(b.access_body(&c.peer, &session, rec))
        .await
    {
        Ok(_) => json_response(
            200,
            &serde_json::json!({"recorded": true, "request_id": r.request_id}),
        ),
        Err(e) => error_response(&e),
    }
}

fn proc_uid(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

async fn session_register(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    req: Request,
) -> Response {
    let r: SessionRegister = or_respond!(json_body_or_empty(req).await);
    if r.label
        .as_deref()
        .is_some_and(|l| l.len() > 256 || l.chars().any(char::is_control))
    {
        return error_response(
            &ApiError::new(
                ErrorCode::InvalidValue,
                "label is longer than 256 bytes or has control characters",
            )
            .field("label"),
        );
    }
    let peer = &c.peer;
    let holder = match r.holder.as_deref().unwrap_or("self") {
        "self" => peer.id(),
        "parent" => match peer.ancestry.get(1) {
            Some(p) => *p,
            None => {
                return error_response(
                    &ApiError::new(
                        ErrorCode::InvalidValue,
                        "this process has no parent to register",
                    )
                    .field("holder"),
                )
            }
        },
        // An ancestor of the caller, by pid: a hook or tool started by an
        // agent through a shell names the agent itself. Registering only
        // ever takes rights away from the holder, and only the caller's own
        // ancestors of its own uid can be named.
        other if other.starts_with("pid:") => {
            let named = other[4..].parse::<u32>().ok();
            match peer
                .ancestry
                .iter()
                .skip(1)
                .find(|p| Some(p.pid) == named)
                .filter(|p| proc_uid(p.pid) == Some(peer.uid))
            {
                Some(p) => *p,
                None => {
                    return error_response(
                        &ApiError::new(
                            ErrorCode::InvalidValue,
                            format!("{other} is not an ancestor of the caller running as its uid"),
                        )
                        .field("holder")
                        .hint("name one of your own ancestors, e.g. `pid:1234` for the agent that started you"),
                    )
                }
            }
        }
        other => {
            return error_response(
                &ApiError::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "holder must be `self`, `parent` or `pid:N` (an ancestor), got {other:?}"
                    ),
                )
                .field("holder"),
            )
        }
    };
    // An existing session among the holder's ancestors already covers it.
    let s = match b.inner.sessions.find(peer).filter(|s| {
        peer.ancestry
            .iter()
            .skip_while(|p| **p != holder)
            .any(|p| *p == s.holder)
    }) {
        Some(s) => s,
        None => {
            let exe = std::fs::read_link(format!("/proc/{}/exe", holder.pid))
                .ok()
                .and_then(|p| p.to_str().map(str::to_owned));
            b.inner
                .sessions
                .register(holder, peer.uid, exe, r.label.as_deref(), true)
        }
    };
    json_response(200, &*s)
}

async fn session_current(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    match b.inner.sessions.find(&c.peer) {
        Some(s) => json_response(200, &*s),
        None => error_response(
            &ApiError::new(ErrorCode::NotFound, "this process holds no session yet").hint(
                "a session starts with your first request, or register one with POST /v1/sessions",
            ),
        ),
    }
}

/// `GET /v1/staged`: what the caller's own session has staged, and how a
/// human reviews it. Read-only; reviewing and applying stay on the
/// operator socket.
async fn staged_own(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    let Some(s) = b.inner.sessions.find(&c.peer) else {
        return json_response(200, &serde_json::json!({"session": null, "areas": []}));
    };
    match b.own_staged(s.id.clone()).await {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}

async fn manifest_schema() -> Response {
    json_response(200, &Manifest::json_schema())
}

pub(crate) async fn no_route(req: Request) -> Response {
    error_response(
        &ApiError::new(
            ErrorCode::NotFoundRoute,
            format!("no route {} {}", req.method(), req.uri().path()),
        )
        .hint("see docs/openapi.yaml (agent socket) and docs/openapi-operator.yaml (operator socket) for the routes"),
    )
}

pub(crate) async fn bad_method(req: Request) -> Response {
    error_response(
        &ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {}", req.method(), req.uri().path()),
        )
        .hint("see docs/openapi.yaml (agent socket) and docs/openapi-operator.yaml (operator socket) for each route's method"),
    )
}

type RouteTable = Vec<(
    &'static str,
    &'static str,
    axum::routing::MethodRouter<Broker>,
)>;

fn agent_routes() -> RouteTable {
    vec![
        ("GET", "/v1/health", get(health)),
        ("POST", "/v1/requests", post(requests)),
        ("POST", "/v1/requests/check", post(requests_check)),
        ("GET", "/v1/approvals/{id}", get(approval_poll)),
        ("POST", "/v1/fs/read", post(fs_read)),
        ("POST", "/v1/fs/list", post(fs_list)),
        ("POST", "/v1/fs/stat", post(fs_stat)),
        ("POST", "/v1/fs/write", post(fs_write)),
        ("POST", "/v1/fs/delete", post(fs_delete)),
        ("POST", "/v1/fs/rename", post(fs_rename)),
        ("POST", "/v1/fs/mkdir", post(fs_mkdir)),
        ("POST", "/v1/exec", post(exec_route)),
        ("POST", "/v1/sessions", post(session_register)),
        ("GET", "/v1/session", get(session_current)),
        ("GET", "/v1/staged", get(staged_own)),
        ("POST", "/v1/outcomes", post(outcome_report)),
        ("GET", "/v1/schema/manifest", get(manifest_schema)),
        ("GET", "/v1/public-key", get(public_key)),
    ]
}

/// Build a router from a route table, with JSON 404/405 answers.
pub(crate) fn build(table: RouteTable, b: Broker) -> Router {
    let mut r = Router::new();
    for (_, path, m) in table {
        r = r.route(path, m);
    }
    r.fallback(no_route)
        .method_not_allowed_fallback(bad_method)
        .with_state(b)
}

fn agent_router(b: Broker) -> Router {
    build(agent_routes(), b)
}

/// `(method, path)` of every route of the agent socket.
pub fn agent_route_list() -> Vec<(&'static str, &'static str)> {
    agent_routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

async fn public_key(State(b): State<Broker>) -> Response {
    json_response(
        200,
        &serde_json::json!({"algorithm": "ed25519", "public_key": b.inner.tokens.public_key_hex()}),
    )
}

/// A router answering every request with `peer_refused`.
fn refused_router(why: String) -> Router {
    Router::new().fallback(move || {
        let why = why.clone();
        async move {
            error_response(
                &ApiError::new(ErrorCode::PeerRefused, why)
                    .hint("connect as the user the broker runs as"),
            )
        }
    })
}

// ---------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------

/// The agent socket's routes served in this process to one peer: what a
/// front door running inside the broker (or embedding it) talks to.
/// Requests go through the same routes, body limits and checks as on the
/// socket; only the socket and HTTP framing are skipped.
struct LocalAgent {
    router: Router,
    conn: Conn,
    cfg: crate::config::ServerConfig,
}

impl airlock_client::Local for LocalAgent {
    fn call(
        &self,
        req: hyper::Request<bytes::Bytes>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<airlock_client::Answer, String>> + Send>,
    > {
        let router = self.router.clone();
        let conn = self.conn.clone();
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(conn);
            let resp =
                match buffer_body(&cfg, &parts.headers, http_body_util::Full::new(body)).await {
                    Ok(bytes) => match router
                        .oneshot(axum::http::Request::from_parts(parts, Body::from(bytes)))
                        .await
                    {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    Err(e) => error_response(&e),
                };
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading the broker's answer: {e}"))?
                .to_bytes();
            Ok(airlock_client::Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        })
    }
}

/// A client reaching `b`'s agent routes in this process as `peer`.
pub(crate) fn local_agent(b: &Broker, peer: Peer) -> airlock_client::Client {
    let endpoint = LocalAgent {
        router: agent_router(b.clone()),
        conn: Conn {
            peer: Arc::new(peer),
        },
        cfg: b.inner.cfg.server.clone(),
    };
    airlock_client::Client::local(b.inner.paths.socket.clone(), Arc::new(endpoint))
}

/// A front door served inside the broker process. Each connection on the
/// attach socket (`airlock_client::attach_socket_for` the agent socket)
/// whose peer may use the agent socket is handed over with that peer and a
/// client reaching this broker in-process as that peer. The future runs
/// until the front door is done, and is dropped when the broker stops.
pub type Attach = Arc<
    dyn Fn(
            Peer,
            tokio::net::UnixStream,
            airlock_client::Client,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/// Running listeners; stop them with [`ServeHandle::shutdown`].
pub struct ServeHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    graceful: Arc<tokio::sync::Mutex<Option<GracefulShutdown>>>,
    sockets: Vec<PathBuf>,
}

impl ServeHandle {
    /// Stop accepting, wait up to `grace` for open requests, remove the sockets.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(g) = self.graceful.lock().await.take() {
            if tokio::time::timeout(grace, g.shutdown()).await.is_err() {
                tracing::warn!("connections still open after {grace:?}; closing them");
            }
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, BrokerError> {
    if let Some(dir) = path.parent() {
        crate::private_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BrokerError::AlreadyRunning(format!(
                    "another broker is already listening on {}; stop it first or choose another socket (AIRLOCK_SOCKET)",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| {
                BrokerError::io(format!("cannot remove stale socket {}", path.display()), e)
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BrokerError::io(format!("{}", path.display()), e)),
    }
    let l = UnixListener::bind(path)
        .map_err(|e| BrokerError::io(format!("cannot listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| BrokerError::io(format!("cannot chmod {}", path.display()), e))?;
    Ok(l)
}

/// Many concurrent clients need many descriptors: raise the soft limit to the hard one.
fn raise_nofile() {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if lim.current < lim.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
}

pub(crate) async fn start(b: Broker, attach: Option<Attach>) -> Result<ServeHandle, BrokerError> {
    raise_nofile();
    let agent = bind(&b.inner.paths.socket)?;
    let operator = match bind(&b.inner.paths.operator_socket) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&b.inner.paths.socket);
            return Err(e);
        }
    };
    let attach_path = airlock_client::attach_socket_for(&b.inner.paths.socket);
    let attach = match attach {
        Some(f) => match bind(&attach_path) {
            Ok(l) => Some((l, f)),
            Err(e) => {
                let _ = std::fs::remove_file(&b.inner.paths.socket);
                let _ = std::fs::remove_file(&b.inner.paths.operator_socket);
                return Err(e);
            }
        },
        None => None,
    };
    let (stop, _) = watch::channel(false);
    let graceful = Arc::new(tokio::sync::Mutex::new(Some(GracefulShutdown::new())));
    let mut sockets = vec![
        b.inner.paths.socket.clone(),
        b.inner.paths.operator_socket.clone(),
    ];
    let mut tasks = vec![
        tokio::spawn(accept_loop(
            agent,
            SocketKind::Agent,
            b.clone(),
            stop.subscribe(),
            graceful.clone(),
        )),
        tokio::spawn(accept_loop(
            operator,
            SocketKind::Operator,
            b.clone(),
            stop.subscribe(),
            graceful.clone(),
        )),
    ];
    if let Some((listener, f)) = attach {
        tasks.push(tokio::spawn(attach_loop(
            listener,
            f,
            b.clone(),
            stop.subscribe(),
        )));
        sockets.push(attach_path);
    }
    Ok(ServeHandle {
        stop,
        tasks,
        graceful,
        sockets,
    })
}

/// Whether a peer running as `uid` may use a socket of `kind`: the broker's
/// own user, and for the agent socket (and the attach socket, which serves
/// agents) the users in `allow_uids`.
fn may_use(b: &Broker, kind: SocketKind, uid: u32) -> bool {
    uid == rustix::process::getuid().as_raw()
        || (kind == SocketKind::Agent && b.inner.cfg.allow_uids.contains(&uid))
}

/// The next connection within the connection limit, with its peer
/// identified; `None` once the broker stops. A connection whose peer
/// cannot be identified is closed and skipped.
async fn next_peer(
    listener: &UnixListener,
    sem: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::UnixStream,
    Peer,
)> {
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => return None,
            p = sem.clone().acquire_owned() => p.ok()?,
        };
        let stream = tokio::select! {
            _ = stop.changed() => return None,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match Peer::of_socket(&stream) {
            Ok(peer) => return Some((permit, stream, peer)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot identify the peer; closing the connection");
            }
        }
    }
}

/// Accept on the attach socket: identify and check each peer as the agent
/// socket does, then hand the connection to the front door.
async fn attach_loop(
    listener: UnixListener,
    attach: Attach,
    b: Broker,
    mut stop: watch::Receiver<bool>,
) {
    let sem = Arc::new(Semaphore::new(b.inner.cfg.server.max_connections.max(1)));
    while let Some((permit, stream, peer)) = next_peer(&listener, &sem, &mut stop).await {
        if !may_use(&b, SocketKind::Agent, peer.uid) {
            // Closed unanswered: the front door falls back to the agent
            // socket, which tells it why in a structured error.
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                "refusing a peer running as another user on the attach socket"
            );
            continue;
        }
        let fut = attach(peer.clone(), stream, local_agent(&b, peer));
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = stop.changed() => {}
            }
            drop(permit);
        });
    }
}

async fn accept_loop(
    listener: UnixListener,
    kind: SocketKind,
    b: Broker,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<tokio::sync::Mutex<Option<GracefulShutdown>>>,
) {
    let router = match kind {
        SocketKind::Agent => agent_router(b.clone()),
        SocketKind::Operator => crate::operator::router(b.clone()),
    };
    let sem = Arc::new(Semaphore::new(b.inner.cfg.server.max_connections.max(1)));
    let own_uid = rustix::process::getuid().as_raw();
    let header_timeout = Duration::from_millis(b.inner.cfg.server.header_timeout_ms);
    while let Some((permit, stream, peer)) = next_peer(&listener, &sem, &mut stop).await {
        let svc_router = if may_use(&b, kind, peer.uid) {
            router.clone()
        } else {
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                ?kind,
                "refusing a peer running as another user"
            );
            refused_router(format!(
                "uid {} may not use this socket (the broker runs as uid {own_uid})",
                peer.uid
            ))
        };
        let conn = Conn {
            peer: Arc::new(peer),
        };
        let server_cfg = b.inner.cfg.server.clone();
        let svc = tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(conn.clone());
            let router = svc_router.clone();
            let cfg = server_cfg.clone();
            async move {
                let (parts, body) = req.into_parts();
                match buffer_body(&cfg, &parts.headers, body).await {
                    Ok(bytes) => {
                        router
                            .oneshot(axum::http::Request::from_parts(parts, Body::from(bytes)))
                            .await
                    }
                    Err(e) => Ok(error_response(&e)),
                }
            }
        });
        let http = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let fut = {
            let g = graceful.lock().await;
            match g.as_ref() {
                Some(g) => g.watch(http),
                None => break,
            }
        };
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}
