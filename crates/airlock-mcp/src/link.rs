//! The MCP front door's link to the broker: every tool call becomes a
//! permission manifest, a decision (waiting for a human when policy asks),
//! a capability token and brokered operations with that token.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_client::{Client, ClientError};
use serde_json::{json, Value};

/// Why a tool call could not go ahead, worded for the agent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Policy (or a human) said no.
    #[error("{0}")]
    Denied(String),
    /// The broker could not be reached or answered with an error.
    #[error("{0}")]
    Broker(String),
    /// The request itself was wrong (bad path, bad arguments).
    #[error("{0}")]
    Invalid(String),
    /// The capability was refused (revoked, expired, another session's).
    #[error("{0}")]
    Token(String),
}

/// What the front door tells its caller while a human decides.
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

/// A link to the broker's agent socket.
pub struct BrokerLink {
    client: Client,
    /// A second connection for what nobody waits on (outcome reports), so
    /// a report and its durable write never hold up the next decision.
    aside: Client,
    socket: PathBuf,
    ask_timeout: Duration,
}

impl std::fmt::Debug for BrokerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerLink")
            .field("socket", &self.socket)
            .finish()
    }
}

/// A granted capability.
#[derive(Debug, Clone)]
pub struct Grant {
    pub token: String,
    pub request_id: String,
    /// What policy said to do with secrets found in an MCP call, if it said.
    pub secrets: Option<airlock_core::SecretsTreatment>,
    /// Whether a human approved it (now, or by a standing approval).
    pub approved: bool,
}

impl BrokerLink {
    /// A link to the agent socket at `socket`; an `ask` waits at most `ask_timeout`.
    pub fn new(socket: PathBuf, ask_timeout: Duration) -> BrokerLink {
        BrokerLink::over(Client::new(socket), ask_timeout)
    }

    /// A link through `client` (a socket's, or a broker's in this process).
    pub fn over(client: Client, ask_timeout: Duration) -> BrokerLink {
        BrokerLink {
            aside: client.fresh(),
            socket: client.socket().to_path_buf(),
            client,
            ask_timeout,
        }
    }

    /// The agent socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Value, Refusal> {
        self.client
            .get("/v1/health")
            .await
            .map(|(_, v)| v)
            .map_err(broker_error)
    }

    /// Ask for a capability; wait for a human when policy asks.
    pub async fn grant(&self, manifest: Value, progress: Progress<'_>) -> Result<Grant, Refusal> {
        let what = describe(&manifest);
        let (mut status, mut v) = self.client.request(&manifest).await.map_err(|e| match e {
            ClientError::Api { error, .. } => Refusal::Invalid(format!(
                "Airlock refused the request ({what}): {}{}",
                error.message,
                error
                    .hint
                    .map(|h| format!("\nHint: {h}"))
                    .unwrap_or_default()
            )),
            other => broker_error(other),
        })?;
        if status == 202 {
            let id = v["approval_id"].as_str().unwrap_or_default().to_string();
            let waiting = format!(
                "Waiting for a human to decide approval {id} ({what}). Policy {}: {}. \
                 The user approves or denies it outside the agent: `airlock approvals show {id}`, \
                 then `airlock approvals approve {id}` or `airlock approvals deny {id}`.",
                v["policy_id"].as_str().unwrap_or("?"),
                reasons(&v)
            );
            tracing::info!(approval = %id, "waiting for a human decision");
            progress(waiting.clone());
            // A fresh connection: the long poll must not hold up other calls.
            let poller = self.client.fresh();
            let start = Instant::now();
            while status == 202 {
                let left = self.ask_timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(Refusal::Denied(format!(
                        "Nobody decided approval {id} ({what}) within {} s, so the call was not made. \
                         Ask the user to review it (`airlock approvals show {id}`) and call the tool again.",
                        self.ask_timeout.as_secs()
                    )));
                }
                let wait = left.as_secs().clamp(1, 10);
                (status, v) = poller.approval(&id, wait).await.map_err(broker_error)?;
                if status == 202 {
                    progress(waiting.clone());
                }
            }
        }
        if status == 200 {
            if let Some(t) = v["token"].as_str() {
                return Ok(Grant {
                    token: t.to_string(),
                    request_id: v["request_id"].as_str().unwrap_or_default().to_string(),
                    secrets: v["secrets"]
                        .as_str()
                        .and_then(airlock_core::SecretsTreatment::parse),
                    approved: v["approval_id"].is_string(),
                });
            }
        }
        Err(Refusal::Denied(denial_text(&what, &v)))
    }

    /// A brokered operation (`/v1/fs/...`, `/v1/exec`) with a token.
    pub async fn call(&self, route: &str, token: &str, body: &Value) -> Result<Value, Refusal> {
        match self.client.post_with_token(route, token, body).await {
            Ok((_, v)) => Ok(v),
            Err(ClientError::Api { error, .. }) => {
                let token_refused = serde_json::to_value(error.code)
                    .ok()
                    .and_then(|c| c.as_str().map(|c| c.starts_with("token_")))
                    .unwrap_or(false);
                let text = format!(
                    "{}{}",
                    error.message,
                    error
                        .hint
                        .map(|h| format!(" (hint: {h})"))
                        .unwrap_or_default()
                );
                Err(if token_refused {
                    Refusal::Token(text)
                } else {
                    Refusal::Invalid(text)
                })
            }
            Err(e) => Err(broker_error(e)),
        }
    }

    /// `POST /v1/requests/check`: what policy would decide, with no side effect.
    pub async fn check(&self, manifest: &Value) -> Result<Value, Refusal> {
        self.post("/v1/requests/check", manifest).await
    }

    /// `POST` on the second connection, for reports sent alongside the
    /// answer (the `aside` connection).
    pub async fn post_aside(&self, route: &str, body: &Value) -> Result<Value, Refusal> {
        post_on(&self.aside, route, body).await
    }

    /// `POST` a JSON body on the agent socket (no token).
    pub async fn post(&self, route: &str, body: &Value) -> Result<Value, Refusal> {
        post_on(&self.client, route, body).await
    }

    /// `GET` on the agent socket.
    pub async fn get(&self, route: &str) -> Result<Value, Refusal> {
        self.client
            .get(route)
            .await
            .map(|(_, v)| v)
            .map_err(broker_error)
    }
}

fn broker_error(e: ClientError) -> Refusal {
    match e {
        ClientError::Api { error, .. } => Refusal::Broker(format!(
            "the Airlock broker refused: {}{}",
            error.message,
            error
                .hint
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default()
        )),
        other => Refusal::Broker(format!(
            "the Airlock broker is not reachable, so nothing was done: {other}"
        )),
    }
}

fn reasons(v: &Value) -> String {
    v["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no reason given".into())
}

async fn post_on(client: &Client, route: &str, body: &Value) -> Result<Value, Refusal> {
    client
        .post(route, body)
        .await
        .map(|(_, v)| v)
        .map_err(broker_error)
}

/// `read_files of /a, /b` for messages.
pub fn describe(manifest: &Value) -> String {
    let action = manifest["action"].as_str().unwrap_or("?");
    let mut what: Vec<String> = manifest["paths"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(c) = manifest["commands"].as_array() {
        what.extend(
            c.iter()
                .filter_map(|x| x.as_str().map(|s| format!("command {s}"))),
        );
    }
    if let Some(h) = manifest["hosts"].as_array() {
        what.extend(
            h.iter()
                .filter_map(|x| x.as_str().map(|s| format!("host {s}"))),
        );
    }
    let mcp = &manifest["mcp"];
    if let Some(server) = mcp["server"].as_str() {
        for key in ["tool", "resource", "prompt"] {
            if let Some(n) = mcp[key].as_str() {
                what.push(format!("{key} {n} of MCP server {server}"));
            }
        }
        if let Some(found) = mcp["result_secrets"].as_array().filter(|a| !a.is_empty()) {
            let ids: Vec<&str> = found.iter().filter_map(Value::as_str).collect();
            return format!(
                "{action} of {}: passing its result, which holds what looks like a secret ({}), to the agent",
                what.join(", "),
                ids.join(", ")
            );
        }
    }
    format!("{action} of {}", what.join(", "))
}

/// The text of a denial: what, why, which policy and rule, and whether and
/// how a human could grant it.
pub fn denial_text(what: &str, v: &Value) -> String {
    let code = v["reason_code"].as_str().unwrap_or("");
    let by = match code {
        "denied_by_user" => "A human denied",
        "approval_expired" => "Nobody approved in time, so Airlock denied",
        _ => "Airlock denied",
    };
    let mut s = format!(
        "{by} this request ({what}).\nWhy: {}.\nPolicy: {}, rule {}{}.",
        reasons(v),
        v["policy_id"].as_str().unwrap_or("?"),
        v["rule"].as_str().unwrap_or("?"),
        if code.is_empty() {
            String::new()
        } else {
            format!(" ({code})")
        }
    );
    if v["grantable"].as_bool() == Some(true) {
        s.push_str(
            "\nA human can grant this: they can approve it when asked, or a security team can allow it \
             in the policy directory (`airlock policy reload`). Ask the user; do not try to work around it.",
        );
    } else {
        s.push_str("\nThis cannot be granted by an approval; do not retry it.");
    }
    if let Some(h) = v["hint"].as_str() {
        s.push_str(&format!("\nHint: {h}"));
    }
    if let Some(r) = v["retry_after"].as_u64() {
        s.push_str(&format!("\nRetry after {r} s."));
    }
    s
}

/// A manifest for one tool call.
pub fn manifest(action: &str, paths: Vec<String>, justification: String, agent: &str) -> Value {
    let justification = truncate(justification, 1800);
    let agent = truncate(agent.to_string(), 200);
    json!({
        "action": action,
        "paths": paths,
        "duration_seconds": crate::server::GRANT_SECONDS,
        "justification": justification,
        "agent": agent,
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
