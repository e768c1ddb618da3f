//! MCP over Streamable HTTP at `/mcp`: loopback by default, a bearer token
//! on every request unless `--no-auth`, and `Host`/`Origin` checked against
//! the address actually served (DNS-rebinding protection).

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServerHandler;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// How the HTTP transport is served.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The bearer token every request must carry; `None` only with `--no-auth` on loopback.
    pub bearer: Option<String>,
}

/// Errors starting the HTTP transport.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{addr} is not a loopback address; Airlock serves MCP over HTTP on 127.0.0.1 or [::1] only"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// A fresh random bearer token (256 bits, hex).
pub fn new_bearer() -> String {
    let b: [u8; 32] = rand::random();
    hex::encode(b)
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

async fn check_bearer(State(want): State<Option<[u8; 32]>>, req: Request, next: Next) -> Response {
    if let Some(want) = want {
        let got = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()));
        // Compare digests: equal length, no early exit on the secret itself.
        if got != Some(want) {
            return (
                http::StatusCode::UNAUTHORIZED,
                [(http::header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": {"code": -32001, "message": "missing or wrong bearer token: send the token `airlock mcp --http` printed at start as `Authorization: Bearer TOKEN`"}
                })),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Serve `factory`'s handlers at `http://ADDR/mcp` until `stop` is cancelled.
/// Calls `ready` with the bound address once listening.
pub async fn serve<S, F>(
    factory: F,
    opts: HttpOptions,
    stop: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), HttpError>
where
    S: ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    if !opts.addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback { addr: opts.addr });
    }
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: opts.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(HttpError::Serve)?;
    let port = addr.port();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts([
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ])
        .with_allowed_origins([
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
        ])
        .with_cancellation_token(stop.child_token());
    let service: StreamableHttpService<S, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(factory()), Default::default(), config);
    let want = opts.bearer.as_deref().map(|b| digest(b.as_bytes()));
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(want, check_bearer));
    ready(addr);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled_owned().await })
        .await
        .map_err(HttpError::Serve)
}
