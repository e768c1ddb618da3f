//! A client for Airlock's sockets: the agent socket (requests, approvals,
//! file operations, exec) and the operator socket (approvals, tokens,
//! staging, status). HTTP/1.1 + JSON over a Unix socket; one connection is
//! kept and reused (keep-alive) and re-opened when the broker closed it.
//!
//! A broker running in the same process can be reached without a socket
//! ([`Client::local`]): the same requests and answers, handed to it as
//! values.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use airlock_core::ApiError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::Mutex;

/// What can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {socket}: {source} (is the broker running? start it with `airlock serve`)")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to {socket}: {message}")]
    Http { socket: PathBuf, message: String },
    /// The broker answered with a structured error.
    #[error("{status}: {error}")]
    Api { status: u16, error: ApiError },
    /// The broker's answer was not the JSON expected.
    #[error("unexpected answer ({status}): {message}")]
    Decode { status: u16, message: String },
}

/// A raw answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
            status: self.status,
            message: format!("{e}: {}", String::from_utf8_lossy(&self.body)),
        })
    }
}

/// An endpoint in this process that answers requests as a socket's
/// server would: a broker library serving one peer (see
/// `airlock_broker::Broker::local_agent`).
pub trait Local: Send + Sync {
    /// Answer one request (its body already complete).
    fn call(
        &self,
        req: hyper::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'static>>;
}

/// A client for one socket, or for a broker in this process.
pub struct Client {
    /// The socket, or what names the in-process endpoint in messages.
    socket: PathBuf,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
    local: Option<Arc<dyn Local>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .finish()
    }
}

impl Client {
    /// A client for the socket at `socket` (connects lazily).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            conn: Mutex::new(None),
            local: None,
        }
    }

    /// A client for an endpoint in this process; `name` (the socket the
    /// same broker listens on) names it in messages.
    pub fn local(name: impl Into<PathBuf>, endpoint: Arc<dyn Local>) -> Client {
        Client {
            socket: name.into(),
            conn: Mutex::new(None),
            local: Some(endpoint),
        }
    }

    /// Another client for the same broker: its own connection to the same
    /// socket (so a long poll on it holds up nothing else), or the same
    /// in-process endpoint.
    pub fn fresh(&self) -> Client {
        Client {
            socket: self.socket.clone(),
            conn: Mutex::new(None),
            local: self.local.clone(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http {
                socket: self.socket.clone(),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Send one request; `body` is sent as is (JSON when `Some`).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        if let Some(local) = &self.local {
            return self
                .send_local(local.as_ref(), method, path, token, body)
                .await;
        }
        let mut guard = self.conn.lock().await;
        for attempt in 0..2 {
            let mut send = match guard.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            if send.ready().await.is_err() {
                if attempt == 0 {
                    continue;
                }
                return Err(ClientError::Http {
                    socket: self.socket.clone(),
                    message: "connection closed".into(),
                });
            }
            let req = request(method, path, token, body.is_some())
                .body(Full::new(body.clone().unwrap_or_default()))
                .map_err(|e| ClientError::Http {
                    socket: self.socket.clone(),
                    message: e.to_string(),
                })?;
            match send.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| ClientError::Http {
                            socket: self.socket.clone(),
                            message: e.to_string(),
                        })?
                        .to_bytes();
                    let keep = !headers
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    if keep {
                        *guard = Some(send);
                    }
                    return Ok(Answer {
                        status,
                        headers,
                        body,
                    });
                }
                // A keep-alive connection the broker closed meanwhile: retry once on a new one.
                Err(e) if attempt == 0 && (e.is_closed() || e.is_incomplete_message()) => continue,
                Err(e) => {
                    return Err(ClientError::Http {
                        socket: self.socket.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
        Err(ClientError::Http {
            socket: self.socket.clone(),
            message: "connection closed".into(),
        })
    }

    async fn send_local(
        &self,
        local: &dyn Local,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        let http_err = |message: String| ClientError::Http {
            socket: self.socket.clone(),
            message,
        };
        let req = request(method, path, token, body.is_some())
            .body(body.unwrap_or_default())
            .map_err(|e| http_err(e.to_string()))?;
        local.call(req).await.map_err(http_err)
    }

    /// Send JSON, get JSON; any 4xx/5xx with an error body becomes [`ClientError::Api`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let a = self.send(method, path, token, bytes).await?;
        let v = a.json()?;
        if a.status >= 400 {
            if let Some(err) = v
                .get("error")
                .and_then(|e| serde_json::from_value::<ApiError>(e.clone()).ok())
            {
                return Err(ClientError::Api {
                    status: a.status,
                    error: err,
                });
            }
        }
        Ok((a.status, v))
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> Result<(u16, Value), ClientError> {
        self.call("GET", path, None, None).await
    }

    /// `POST` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        self.call("POST", path, None, Some(body)).await
    }

    /// `POST` with a bearer token.
    pub async fn post_with_token(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Result<(u16, Value), ClientError> {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// `POST /v1/requests`: the decision (allow 200, deny 403, ask 202 all
    /// come back as `Ok`; validation errors as [`ClientError::Api`]).
    pub async fn request(&self, manifest: &Value) -> Result<(u16, Value), ClientError> {
        let bytes = Bytes::from(serde_json::to_vec(manifest).unwrap_or_default());
        let a = self.send("POST", "/v1/requests", None, Some(bytes)).await?;
        let v = a.json()?;
        if v.get("error").is_some() {
            if let Ok(err) = serde_json::from_value::<ApiError>(v["error"].clone()) {
                return Err(ClientError::Api {
                    status: a.status,
                    error: err,
                });
            }
        }
        Ok((a.status, v))
    }

    /// `GET /v1/approvals/{id}?wait=N`.
    pub async fn approval(&self, id: &str, wait: u64) -> Result<(u16, Value), ClientError> {
        let a = self
            .send(
                "GET",
                &format!("/v1/approvals/{id}?wait={wait}"),
                None,
                None,
            )
            .await?;
        let v = a.json()?;
        if v.get("error").is_some() {
            if let Ok(err) = serde_json::from_value::<ApiError>(v["error"].clone()) {
                return Err(ClientError::Api {
                    status: a.status,
                    error: err,
                });
            }
        }
        Ok((a.status, v))
    }

    /// Request, and when the answer is `ask`, wait for the human (polling
    /// in `wait`-second long polls until the approval is decided).
    pub async fn request_and_wait(
        &self,
        manifest: &Value,
        wait: u64,
    ) -> Result<(u16, Value), ClientError> {
        let (mut status, mut v) = self.request(manifest).await?;
        while status == 202 {
            let id = v["approval_id"].as_str().unwrap_or_default().to_string();
            (status, v) = self.approval(&id, wait).await?;
        }
        Ok((status, v))
    }
}

/// The agent socket clients should use: `AIRLOCK_SOCKET`, else
/// `$XDG_RUNTIME_DIR/airlock/broker.sock`, else `/tmp/airlock-$UID/broker.sock`.
pub fn default_agent_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("AIRLOCK_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        Some(d) => d.join("airlock/broker.sock"),
        None => PathBuf::from(format!("/tmp/airlock-{}/broker.sock", uid())),
    }
}

/// A request's head as both transports send it: the bearer token when
/// given, and the JSON content type when there is a body.
fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    has_body: bool,
) -> hyper::http::request::Builder {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "airlock");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if has_body {
        req = req.header("content-type", "application/json");
    }
    req
}

/// The attach socket beside the agent socket `agent`
/// (`broker.sock` → `broker.attach.sock`): where `airlock mcp` hands its
/// stdio to the broker, which then serves the MCP session itself.
pub fn attach_socket_for(agent: &Path) -> PathBuf {
    let stem = agent
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "broker".into());
    agent.with_file_name(format!("{stem}.attach.sock"))
}

/// The operator socket: `AIRLOCK_OPERATOR_SOCKET`, else `operator.sock`
/// beside the agent socket.
pub fn default_operator_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("AIRLOCK_OPERATOR_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    let a = default_agent_socket();
    a.parent()
        .map(|d| d.join("operator.sock"))
        .unwrap_or_else(|| PathBuf::from("operator.sock"))
}

fn uid() -> u32 {
    // The owner of /proc/self is this process's uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}
