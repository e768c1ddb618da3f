//! `airlock mcp-proxy`: any stdio MCP server behind Airlock.
//!
//! The proxy speaks MCP to the client (stdio or Streamable HTTP) and to one
//! child server per client session (normally `airlock run ... -- CMD`, so
//! the server runs in the sandbox). Messages pass through unchanged except:
//!
//! - `tools/call`, `resources/read`, `prompts/get` become broker requests
//!   (actions `mcp_tool`, `mcp_resource`, `mcp_prompt`, with `mcp.server`,
//!   the name and the arguments in the policy input). A denial is a tool
//!   error (or a JSON-RPC error for resources and prompts) saying what,
//!   why, which policy and how a human can grant it; an `ask` waits with
//!   progress notifications. Consent never travels over MCP.
//! - `tools/list`, `resources/list`, `prompts/list` leave out what policy
//!   would deny outright (asked with `POST /v1/requests/check`, which grants,
//!   asks and records nothing) and tools quarantined by the pin store
//!   (see [`crate::pins`]).
//! - Secrets (see [`crate::secrets`]) in tool arguments are named, never
//!   shown, to policy, which may have them redacted before the server sees
//!   them (`mcp_secrets := "redact"`). A result holding secrets is asked
//!   about again (a result check, `mcp.result_secrets`): redacted unless
//!   policy passes it (`mcp_secrets := "allow"`, or a human's approval) or
//!   withholds it (deny).
//! - Progress tokens are mapped between the two sides, since each side of
//!   the proxy numbers its own requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use airlock_core::SecretsTreatment;
use rmcp::model::{
    CallToolResult, ClientNotification, ClientRequest, ClientResult, ContentBlock, ErrorData,
    InitializeRequestParams, InitializeResult, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, ServerNotification, ServerRequest, ServerResult,
};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestContext, RunningService, ServiceError,
};
use rmcp::{Peer, RoleClient, RoleServer, Service};
use serde_json::{json, Value};

use crate::link::{self, BrokerLink, Refusal};
use crate::pins::{PinStore, Verdict};
use crate::secrets;

/// How `airlock mcp-proxy` runs.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The broker's agent socket.
    pub socket: std::path::PathBuf,
    /// The server's name (policy input `mcp.server`, the pin file).
    pub name: String,
    /// The child: program and arguments (normally `airlock run ... -- CMD`).
    pub argv: Vec<String>,
    /// How long a call waits for a human when policy asks.
    pub ask_timeout: Duration,
    /// The pin store.
    pub pins: PinStore,
    /// The secret rules arguments and results are scanned with.
    pub secrets: Arc<secrets::Scanner>,
    /// Where and how the child starts when that is not this process's own
    /// (a proxy session served in the broker for an `airlock mcp-proxy`).
    pub child: ChildSetup,
}

/// The child's environment, working directory and stderr; `None` inherits
/// this process's.
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    pub env: Option<Vec<(String, String)>>,
    pub cwd: Option<std::path::PathBuf>,
    pub stderr: Option<Arc<std::os::fd::OwnedFd>>,
}

struct Shared {
    opts: ProxyOptions,
    link: BrokerLink,
    /// Outcome reports still on their way to the broker.
    reports: tokio_util::task::TaskTracker,
}

/// The proxy; one [`ProxySession`] per client session.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy over the broker at `opts.socket`; checks the broker answers.
    pub async fn connect(opts: ProxyOptions) -> Result<Proxy, Refusal> {
        let link = BrokerLink::new(opts.socket.clone(), opts.ask_timeout);
        Proxy::over(link, opts).await
    }

    /// A proxy over `link` (`opts.socket` is not used); checks the broker answers.
    pub async fn over(link: BrokerLink, opts: ProxyOptions) -> Result<Proxy, Refusal> {
        link.health().await?;
        Ok(Proxy {
            shared: Arc::new(Shared {
                opts,
                link,
                reports: Default::default(),
            }),
        })
    }

    /// Wait (at most `within`) for outcome reports still on their way to
    /// the broker; false if some did not make it in time.
    pub async fn flush(&self, within: Duration) -> bool {
        self.shared.reports.close();
        tokio::time::timeout(within, self.shared.reports.wait())
            .await
            .is_ok()
    }

    /// A handler for one client session (its child starts on `initialize`).
    pub fn session(&self) -> ProxySession {
        ProxySession {
            shared: self.shared.clone(),
            child: Arc::new(tokio::sync::OnceCell::new()),
            version: Arc::new(OnceLock::new()),
            verdicts: Arc::new(Mutex::new(BTreeMap::new())),
            inflight: Default::default(),
        }
    }
}

type TokenMap = Arc<Mutex<HashMap<ProgressToken, ProgressToken>>>;

/// The child server, as the proxy's client side sees it.
struct Child {
    service: RunningService<RoleClient, Downstream>,
    /// Progress tokens of requests forwarded to the child → the client's.
    tokens: TokenMap,
}

/// One client session.
#[derive(Clone)]
pub struct ProxySession {
    shared: Arc<Shared>,
    child: Arc<tokio::sync::OnceCell<Child>>,
    version: Arc<OnceLock<ProtocolVersion>>,
    /// Pin verdicts of the tools the child listed, by name.
    verdicts: Arc<Mutex<BTreeMap<String, Verdict>>>,
    /// Client requests now forwarded to the child, oldest first.
    inflight: Inflight,
}

type Inflight = Arc<Mutex<Vec<rmcp::model::RequestId>>>;

/// Marks a client request as in flight to the child while it lives.
struct InflightGuard(Inflight, rmcp::model::RequestId);

impl InflightGuard {
    fn new(list: &Inflight, id: rmcp::model::RequestId) -> InflightGuard {
        list.lock().expect("lock").push(id.clone());
        InflightGuard(list.clone(), id)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut l = self.0.lock().expect("lock");
        if let Some(i) = l.iter().rposition(|x| *x == self.1) {
            l.remove(i);
        }
    }
}

/// The proxy's client side: forwards the child's requests and
/// notifications to the client.
struct Downstream {
    client: Peer<RoleServer>,
    info: InitializeRequestParams,
    /// Tokens of the child's requests to the client → the child's.
    up_tokens: TokenMap,
    /// Tokens of the client's requests to the child → the client's.
    down_tokens: TokenMap,
    /// The client requests in flight to the child.
    inflight: Inflight,
}

fn service_error(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(format!("the proxied MCP server: {other}"), None),
    }
}

/// Send `req` through `peer`, mapping the caller's progress token to the
/// one the peer's side assigns, and cancelling when `ct` is cancelled.
async fn forward<R: rmcp::service::ServiceRole>(
    peer: &Peer<R>,
    req: R::Req,
    caller_token: Option<ProgressToken>,
    tokens: &TokenMap,
    ct: &tokio_util::sync::CancellationToken,
) -> Result<R::PeerResp, ServiceError> {
    let handle = peer
        .send_request_with_option(req, PeerRequestOptions::no_options())
        .await?;
    let ours = handle.progress_token.clone();
    let id = handle.id.clone();
    if let Some(t) = caller_token {
        tokens.lock().expect("lock").insert(ours.clone(), t);
    }
    let rx_done = async {
        let r = handle.await_response().await;
        tokens.lock().expect("lock").remove(&ours);
        r
    };
    tokio::select! {
        r = rx_done => r,
        _ = ct.cancelled() => {
            tokens.lock().expect("lock").remove(&ours);
            let reason = "cancelled by the client".to_string();
            let cancel: Option<rmcp::model::CancelledNotification> = serde_json::from_value(json!({
                "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": reason},
            }))
            .ok();
            if let Some(cancel) = cancel {
                let _ = peer.send_notification(cancel.into()).await;
            }
            Err(ServiceError::Cancelled { reason: Some(reason) })
        }
    }
}

fn map_progress(p: &mut ProgressNotificationParam, tokens: &TokenMap) -> bool {
    match tokens.lock().expect("lock").get(&p.progress_token) {
        Some(t) => {
            p.progress_token = t.clone();
            true
        }
        None => false,
    }
}

impl Service<RoleClient> for Downstream {
    async fn handle_request(
        &self,
        mut request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let token = context.meta.get_progress_token();
        // Over stdio the child cannot say which client request its request
        // (sampling, elicitation) belongs to: take the newest one in flight,
        // so that over HTTP it rides that request's stream.
        let newest = self.inflight.lock().expect("lock").last().cloned();
        if let Some(id) = newest {
            use rmcp::model::GetExtensions;
            request
                .extensions_mut()
                .insert(rmcp::service::OriginatingRequestId(id));
        }
        forward(&self.client, request, token, &self.up_tokens, &context.ct)
            .await
            .map_err(service_error)
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), ErrorData> {
        let n = match notification {
            ServerNotification::ProgressNotification(mut p) => {
                if !map_progress(&mut p.params, &self.down_tokens) {
                    return Ok(());
                }
                ServerNotification::ProgressNotification(p)
            }
            // Cancellations name request ids of the child's side; the
            // proxy cancels forwarded requests itself.
            ServerNotification::CancelledNotification(_) => return Ok(()),
            other => other,
        };
        if let Err(e) = self.client.send_notification(n).await {
            tracing::debug!(error = %e, "cannot forward a notification to the client");
        }
        Ok(())
    }

    fn get_info(&self) -> InitializeRequestParams {
        self.info.clone()
    }
}

/// What becomes of a result that holds what looks like a secret.
enum ResultFate {
    /// Passed to the agent unchanged (policy said `mcp_secrets := "allow"`,
    /// or a human approved it).
    Pass,
    /// Secrets replaced by `[REDACTED:RULE]` (the default).
    Redact,
    /// Not passed at all: policy denied it; the text says why.
    Withhold(String),
}

impl ResultFate {
    fn as_str(&self) -> &'static str {
        match self {
            ResultFate::Pass => "passed",
            ResultFate::Redact => "redacted",
            ResultFate::Withhold(_) => "withheld",
        }
    }
}

impl ProxySession {
    fn name(&self) -> &str {
        &self.shared.opts.name
    }

    fn child(&self) -> Result<&Child, ErrorData> {
        self.child.get().ok_or_else(|| {
            ErrorData::invalid_request("initialize the session before anything else", None)
        })
    }

    async fn start_child(
        &self,
        params: InitializeRequestParams,
        client: Peer<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let argv = &self.shared.opts.argv;
        let setup = &self.shared.opts.child;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if let Some(env) = &setup.env {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        if let Some(cwd) = &setup.cwd {
            cmd.current_dir(cwd);
        }
        let mut builder = rmcp::transport::TokioChildProcess::builder(cmd);
        if let Some(fd) = &setup.stderr {
            let fd = fd.try_clone().map_err(|e| {
                ErrorData::internal_error(
                    format!("cannot pass stderr to the MCP server: {e}"),
                    None,
                )
            })?;
            builder = builder.stderr(std::process::Stdio::from(fd));
        }
        let (transport, _) = builder.spawn().map_err(|e| {
            ErrorData::internal_error(format!("cannot start the MCP server {:?}: {e}", argv), None)
        })?;
        let down_tokens: TokenMap = Default::default();
        let ds = Downstream {
            client,
            info: params,
            up_tokens: Default::default(),
            down_tokens: down_tokens.clone(),
            inflight: self.inflight.clone(),
        };
        let service = rmcp::serve_client(ds, transport).await.map_err(|e| {
            ErrorData::internal_error(
                format!("the MCP server {} did not initialize: {e}", self.name()),
                None,
            )
        })?;
        let info = service.peer_info().ok_or_else(|| {
            ErrorData::internal_error("the MCP server sent no initialize result", None)
        })?;
        let mut v = serde_json::to_value(&*info).unwrap_or(Value::Null);
        if v.get("serverInfo").is_none() {
            v["serverInfo"] = json!({"name": self.name(), "version": "unknown"});
        }
        let result: InitializeResult = serde_json::from_value(v).map_err(|e| {
            ErrorData::internal_error(format!("the MCP server's initialize result: {e}"), None)
        })?;
        let _ = self.version.set(result.protocol_version.clone());
        tracing::info!(server = %self.name(), "proxied MCP server initialized");
        let _ = self.child.set(Child {
            service,
            tokens: down_tokens,
        });
        Ok(result)
    }

    /// Judge listed tools against the pin store.
    fn judge(&self, tools: &[Value]) -> Result<BTreeMap<String, Verdict>, ErrorData> {
        let v = self
            .shared
            .opts
            .pins
            .judge(self.name(), tools)
            .map_err(|e| ErrorData::internal_error(format!("Airlock's pin store: {e}"), None))?;
        self.verdicts
            .lock()
            .expect("lock")
            .extend(v.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(v)
    }

    /// The pin verdict for `tool`, listing the child's tools if it was not seen yet.
    async fn verdict(
        &self,
        tool: &str,
        ct: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Verdict>, ErrorData> {
        if let Some(v) = self.verdicts.lock().expect("lock").get(tool) {
            return Ok(Some(v.clone()));
        }
        let child = self.child()?;
        let mut cursor = None;
        let mut all = Vec::new();
        for _ in 0..100 {
            let req = ClientRequest::ListToolsRequest(rmcp::model::ListToolsRequest {
                method: Default::default(),
                params: cursor
                    .clone()
                    .map(|c| rmcp::model::PaginatedRequestParams::default().with_cursor(Some(c))),
                extensions: Default::default(),
            });
            let r = forward(child.service.peer(), req, None, &child.tokens, ct)
                .await
                .map_err(service_error)?;
            let ServerResult::ListToolsResult(r) = r else {
                break;
            };
            all.extend(r.tools.iter().filter_map(|t| serde_json::to_value(t).ok()));
            cursor = r.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        self.judge(&all)?;
        Ok(self.verdicts.lock().expect("lock").get(tool).cloned())
    }

    fn manifest(
        &self,
        action: &str,
        key: &str,
        name: &str,
        arguments: Option<Value>,
        found: Vec<String>,
    ) -> Value {
        let mut mcp = json!({"server": self.name(), key: link::truncate(name.to_string(), 4096)});
        if let Some(a) = arguments {
            mcp["arguments"] = a;
        }
        if !found.is_empty() {
            mcp["secrets"] = json!(found);
        }
        let what = match action {
            "mcp_tool" => "call tool",
            "mcp_resource" => "read resource",
            _ => "get prompt",
        };
        let agent = format!("airlock-mcp-proxy/{}", self.name());
        json!({
            "action": action,
            "duration_seconds": 60,
            "justification": link::truncate(format!("MCP server {}: {what} {name}", self.name()), 1800),
            "agent": link::truncate(agent, 200),
            "mcp": mcp,
        })
    }

    /// Whether policy would deny `manifest` outright (no side effects).
    async fn denied_outright(&self, manifest: &Value) -> bool {
        match self.shared.link.check(manifest).await {
            Ok(v) => v["decision"] == "deny",
            Err(e) => {
                // Fail closed: what cannot be checked is not shown.
                tracing::warn!(error = %e, "cannot check policy; hiding the entry");
                true
            }
        }
    }

    /// A broker request for one call; waits for a human on `ask`. The grant,
    /// or the refusal's text for the client.
    async fn gate(
        &self,
        manifest: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<link::Grant, String> {
        let notifier = Notifier {
            peer: ctx.peer.clone(),
            token: ctx.meta.get_progress_token(),
            step: Default::default(),
        };
        let progress = |m: String| notifier.send(m);
        let r = tokio::select! {
            r = self.shared.link.grant(manifest, &progress) => r,
            _ = ctx.ct.cancelled() => Err(Refusal::Invalid("the call was cancelled".into())),
        };
        r.map_err(|e| e.to_string())
    }

    /// A result check: may a result holding `found` (secret rule ids) reach
    /// the agent? Policy sees the call again with `mcp.result_secrets`; an
    /// allow that says nothing about secrets redacts them, an allow with
    /// `mcp_secrets := "allow"` or a human's approval passes them, and a
    /// deny withholds the result.
    async fn result_fate(
        &self,
        call: (&str, &str, &str),
        args: Option<Value>,
        found: &[String],
        ctx: &RequestContext<RoleServer>,
    ) -> (ResultFate, Option<String>) {
        let (action, key, name) = call;
        let mut m = self.manifest(action, key, name, args, vec![]);
        m["mcp"]["result_secrets"] = json!(found);
        m["justification"] = json!(link::truncate(
            format!(
                "MCP server {}: the result of {key} {name} holds what looks like a secret ({}); may the agent see it?",
                self.name(),
                found.join(", ")
            ),
            1800
        ));
        match self.gate(m, ctx).await {
            Ok(g) => {
                let default = if g.approved {
                    SecretsTreatment::Allow
                } else {
                    SecretsTreatment::Redact
                };
                let fate = match g.secrets.unwrap_or(default) {
                    SecretsTreatment::Allow => ResultFate::Pass,
                    SecretsTreatment::Redact => ResultFate::Redact,
                };
                (fate, Some(g.request_id))
            }
            Err(why) => (
                ResultFate::Withhold(format!("{}.\n{why}", self.withheld(key, name, found))),
                None,
            ),
        }
    }

    /// Record how a call ended. The request record (intent and decision)
    /// was durable before the call was forwarded; the outcome is sent
    /// alongside the answer rather than before it, so a call costs one
    /// broker round trip, and [`Proxy::flush`] waits for stragglers when
    /// the proxy stops.
    fn report(&self, request_id: &str, what: String, is_error: bool, detail: Value) {
        let body = json!({
            "request_id": request_id,
            "status": if is_error { "error" } else { "success" },
            "tool": link::truncate(what, 250),
            "detail": detail,
        });
        let shared = self.shared.clone();
        self.shared.reports.spawn(async move {
            if let Err(e) = shared.link.post_aside("/v1/outcomes", &body).await {
                tracing::warn!(error = %e, "cannot record the outcome of an MCP call");
            }
        });
    }

    async fn call_tool(
        &self,
        mut req: rmcp::model::CallToolRequest,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let tool = req.params.name.to_string();
        match self.verdict(&tool, &ctx.ct).await? {
            Some(Verdict::Trusted) => {}
            Some(Verdict::Quarantined(why)) => return Ok(refusal(why)),
            None => {
                return Ok(refusal(format!(
                "MCP server {} does not list a tool named {tool}, so Airlock refuses to call it.",
                self.name()
            )))
            }
        }
        let args = req.params.arguments.clone().map(Value::Object);
        let scan = args
            .as_ref()
            .map(|a| self.shared.opts.secrets.scan(a))
            .unwrap_or_default();
        // Policy sees the arguments with any secret redacted.
        let shown = scan.redacted.clone().or(args.clone()).map(clip);
        let m = self.manifest("mcp_tool", "tool", &tool, shown.clone(), scan.rules.clone());
        let grant = match self.gate(m, &ctx).await {
            Ok(g) => g,
            Err(why) => return Ok(refusal(why)),
        };
        let mut detail = json!({});
        if !scan.rules.is_empty() {
            // Policy saw the secrets named and let the call go: the
            // arguments pass unchanged unless it said to redact them.
            let redact = grant.secrets == Some(SecretsTreatment::Redact);
            if redact {
                req.params.arguments = scan.redacted.as_ref().and_then(|a| a.as_object().cloned());
            }
            detail["arguments_secrets"] = json!(scan.rules);
            detail["arguments_secrets_action"] = json!(if redact { "redacted" } else { "passed" });
        }
        let child = self.child()?;
        let token = ctx.meta.get_progress_token();
        let _inflight = InflightGuard::new(&self.inflight, ctx.id.clone());
        let r = forward(
            child.service.peer(),
            ClientRequest::CallToolRequest(req),
            token,
            &child.tokens,
            &ctx.ct,
        )
        .await;
        let what = format!("mcp:{}/{tool}", self.name());
        match r {
            Ok(res) => {
                let is_error =
                    matches!(&res, ServerResult::CallToolResult(r) if r.is_error == Some(true));
                let screened = self
                    .screen(res, ("mcp_tool", "tool", &tool), shown, &ctx, &mut detail)
                    .await;
                self.report(&grant.request_id, what, is_error, detail);
                Ok(screened.unwrap_or_else(refusal))
            }
            Err(e) => {
                detail["error"] = json!(e.to_string());
                self.report(&grant.request_id, what, true, detail);
                Err(service_error(e))
            }
        }
    }

    /// `resources/read` and `prompts/get`: a broker request, then the child.
    async fn gated(
        &self,
        action: &str,
        key: &str,
        name: String,
        args: Option<Value>,
        req: ClientRequest,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let args = args.map(clip);
        let m = self.manifest(action, key, &name, args.clone(), vec![]);
        let request_id = self
            .gate(m, &ctx)
            .await
            .map_err(|why| ErrorData::invalid_request(why, None))?
            .request_id;
        let child = self.child()?;
        let _inflight = InflightGuard::new(&self.inflight, ctx.id.clone());
        let r = forward(
            child.service.peer(),
            req,
            ctx.meta.get_progress_token(),
            &child.tokens,
            &ctx.ct,
        )
        .await;
        let what = format!("mcp:{}/{key}:{name}", self.name());
        match r {
            Ok(res) => {
                let mut detail = json!({});
                let screened = self
                    .screen(res, (action, key, &name), args, &ctx, &mut detail)
                    .await;
                self.report(&request_id, what, false, detail);
                screened.map_err(|why| ErrorData::invalid_request(why, None))
            }
            Err(e) => {
                self.report(&request_id, what, true, json!({"error": e.to_string()}));
                Err(service_error(e))
            }
        }
    }

    /// The start of the text for a withheld result: which call, which
    /// server, which rules.
    fn withheld(&self, key: &str, name: &str, found: &[String]) -> String {
        format!(
            "Airlock withheld the result of {key} {name} from MCP server {}: it holds what looks \
             like a secret ({})",
            self.name(),
            found.join(", ")
        )
    }

    /// Scan a result for secrets and give it the fate policy decides (see
    /// [`Self::result_fate`]); `Err` with the reason when it is withheld.
    /// What was found and done goes into `detail` for the outcome record.
    async fn screen(
        &self,
        res: ServerResult,
        call: (&str, &str, &str),
        args: Option<Value>,
        ctx: &RequestContext<RoleServer>,
        detail: &mut Value,
    ) -> Result<ServerResult, String> {
        let v = serde_json::to_value(&res).unwrap_or(Value::Null);
        let found = self.shared.opts.secrets.scan(&v);
        let Some(red) = found.redacted else {
            return Ok(res);
        };
        let (fate, check) = self.result_fate(call, args, &found.rules, ctx).await;
        detail["result_secrets"] = json!(found.rules);
        detail["result_secrets_action"] = json!(fate.as_str());
        if let Some(id) = check {
            detail["result_check_request_id"] = json!(id);
        }
        match fate {
            ResultFate::Pass => Ok(res),
            ResultFate::Redact => redact_typed(&res, red).ok_or_else(|| {
                detail["result_secrets_action"] = json!("withheld");
                format!(
                    "{} and could not be redacted.",
                    self.withheld(call.1, call.2, &found.rules)
                )
            }),
            ResultFate::Withhold(why) => Err(why),
        }
    }
}

/// A result of the same kind as `r` made from its redacted JSON.
fn redact_typed(r: &ServerResult, v: Value) -> Option<ServerResult> {
    Some(match r {
        ServerResult::CallToolResult(_) => {
            ServerResult::CallToolResult(serde_json::from_value(v).ok()?)
        }
        ServerResult::ReadResourceResult(_) => {
            ServerResult::ReadResourceResult(serde_json::from_value(v).ok()?)
        }
        ServerResult::GetPromptResult(_) => {
            ServerResult::GetPromptResult(serde_json::from_value(v).ok()?)
        }
        // Any other shape is sent as JSON; whichever variant reads it back
        // serializes to the same JSON.
        _ => serde_json::from_value(v).ok()?,
    })
}

/// Arguments as policy sees them: long strings cut to 4096 bytes.
fn clip(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > 4096 => Value::String(link::truncate(s, 4096)),
        Value::Array(a) => Value::Array(a.into_iter().map(clip).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, clip(v))).collect()),
        other => other,
    }
}

fn refusal(why: String) -> ServerResult {
    ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(why)]))
}

/// Progress while a human decides.
struct Notifier {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    step: std::sync::atomic::AtomicU64,
}

impl Notifier {
    fn send(&self, msg: String) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let n = self.step.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let peer = self.peer.clone();
        tokio::spawn(async move {
            let _ = peer
                .notify_progress(ProgressNotificationParam::new(token, n as f64).with_message(msg))
                .await;
        });
    }
}

impl ProxySession {
    /// One client request: gated, filtered or forwarded.
    async fn dispatch(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        match request {
            ClientRequest::InitializeRequest(r) => {
                if self.child.get().is_some() {
                    return Err(ErrorData::invalid_request("already initialized", None));
                }
                let r = self.start_child(r.params, context.peer.clone()).await?;
                Ok(ServerResult::InitializeResult(r))
            }
            ClientRequest::CallToolRequest(r) => self.call_tool(r, context).await,
            ClientRequest::ReadResourceRequest(r) => {
                let uri = r.params.uri.clone();
                self.gated(
                    "mcp_resource",
                    "resource",
                    uri,
                    None,
                    ClientRequest::ReadResourceRequest(r),
                    context,
                )
                .await
            }
            ClientRequest::GetPromptRequest(r) => {
                let name = r.params.name.clone();
                let args = r.params.arguments.clone().map(Value::Object);
                self.gated(
                    "mcp_prompt",
                    "prompt",
                    name,
                    args,
                    ClientRequest::GetPromptRequest(r),
                    context,
                )
                .await
            }
            other => {
                let child = self.child()?;
                let token = context.meta.get_progress_token();
                let _inflight = InflightGuard::new(&self.inflight, context.id.clone());
                let res = forward(
                    child.service.peer(),
                    other,
                    token,
                    &child.tokens,
                    &context.ct,
                )
                .await
                .map_err(service_error)?;
                self.filter(res).await
            }
        }
    }

    /// One client notification, forwarded.
    async fn notify(&self, notification: ClientNotification) {
        let Some(child) = self.child.get() else {
            return;
        };
        let n = match notification {
            // The child was initialized by the proxy's own handshake; the
            // proxy cancels forwarded requests itself.
            ClientNotification::InitializedNotification(_)
            | ClientNotification::CancelledNotification(_) => return,
            ClientNotification::ProgressNotification(mut p) => {
                if !map_progress(&mut p.params, &child.service.service().up_tokens) {
                    return;
                }
                ClientNotification::ProgressNotification(p)
            }
            other => other,
        };
        if let Err(e) = child.service.peer().send_notification(n).await {
            tracing::debug!(error = %e, "cannot forward a notification to the MCP server");
        }
    }
}

fn unexpected(r: ServerResult) -> ErrorData {
    ErrorData::internal_error(
        format!(
            "the proxied MCP server answered with an unexpected result: {}",
            serde_json::to_string(&r).unwrap_or_default()
        ),
        None,
    )
}

macro_rules! forward_req {
    ($self:ident, $ctx:ident, $variant:ident, $params:expr, $res:ident) => {{
        let mut r = rmcp::model::$variant::new($params);
        *rmcp::model::GetExtensions::extensions_mut(&mut r) = $ctx.extensions.clone();
        forward_req!(@go $self, $ctx, ClientRequest::$variant(r), $res)
    }};
    (opt $self:ident, $ctx:ident, $variant:ident, $params:expr, $res:ident) => {
        forward_req!(@go $self, $ctx, ClientRequest::$variant(rmcp::model::$variant {
            method: Default::default(),
            params: $params,
            extensions: $ctx.extensions.clone(),
        }), $res)
    };
    (@go $self:ident, $ctx:ident, $req:expr, EmptyResult) => {
        match $self.dispatch($req, $ctx).await? {
            ServerResult::EmptyResult(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    };
    (@go $self:ident, $ctx:ident, $req:expr, $res:ident) => {
        match $self.dispatch($req, $ctx).await? {
            ServerResult::$res(r) => Ok(r.into()),
            other => Err(unexpected(other)),
        }
    };
}

/// rmcp's HTTP transport takes a `ServerHandler`: every method goes
/// through [`ProxySession::dispatch`], so all requests are treated alike.
#[allow(deprecated)]
impl rmcp::ServerHandler for ProxySession {
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if self.child.get().is_some() {
            return Err(ErrorData::invalid_request("already initialized", None));
        }
        self.start_child(request, context.peer.clone()).await
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        forward_req!(@go self, context, ClientRequest::PingRequest(rmcp::model::PingRequest {
            method: Default::default(),
            extensions: context.extensions.clone(),
        }), EmptyResult)
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, ErrorData> {
        forward_req!(self, context, CompleteRequest, request, CompleteResult)
    }

    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        forward_req!(self, context, SetLevelRequest, request, EmptyResult)
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, ErrorData> {
        forward_req!(self, context, GetPromptRequest, request, GetPromptResult)
    }

    async fn list_prompts(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, ErrorData> {
        forward_req!(opt self, context, ListPromptsRequest, request, ListPromptsResult)
    }

    async fn list_resources(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        forward_req!(opt self, context, ListResourcesRequest, request, ListResourcesResult)
    }

    async fn list_resource_templates(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        forward_req!(opt self, context, ListResourceTemplatesRequest, request, ListResourceTemplatesResult)
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        forward_req!(
            self,
            context,
            ReadResourceRequest,
            request,
            ReadResourceResult
        )
    }

    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        forward_req!(self, context, SubscribeRequest, request, EmptyResult)
    }

    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        forward_req!(self, context, UnsubscribeRequest, request, EmptyResult)
    }

    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        forward_req!(self, context, CallToolRequest, request, CallToolResult)
    }

    async fn list_tools(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        forward_req!(opt self, context, ListToolsRequest, request, ListToolsResult)
    }

    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        forward_req!(@go self, context, ClientRequest::CustomRequest(request), CustomResult)
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        if let Ok(n) = serde_json::from_value::<rmcp::model::ProgressNotification>(
            json!({"method": "notifications/progress", "params": notification}),
        ) {
            self.notify(ClientNotification::ProgressNotification(n))
                .await;
        }
    }

    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        if let Ok(n) = serde_json::from_value::<rmcp::model::RootsListChangedNotification>(
            json!({"method": "notifications/roots/list_changed"}),
        ) {
            self.notify(ClientNotification::RootsListChangedNotification(n))
                .await;
        }
    }

    async fn on_custom_notification(
        &self,
        notification: rmcp::model::CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        self.notify(ClientNotification::CustomNotification(notification))
            .await;
    }

    fn get_info(&self) -> InitializeResult {
        // What the child said, once it has; the proxy's own until then.
        match self.child.get().and_then(|c| c.service.peer_info()) {
            Some(i) => serde_json::to_value(&*i)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            None => InitializeResult::default(),
        }
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        match self.version.get() {
            // Answer with what the child agreed to, not what the client asked.
            Some(v) => std::borrow::Cow::Owned(vec![v.clone()]),
            None => std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
        }
    }
}

impl ProxySession {
    /// Leave out of listings what is quarantined or denied outright.
    async fn filter(&self, res: ServerResult) -> Result<ServerResult, ErrorData> {
        Ok(match res {
            ServerResult::ListToolsResult(mut r) => {
                let values: Vec<Value> = r
                    .tools
                    .iter()
                    .filter_map(|t| serde_json::to_value(t).ok())
                    .collect();
                let verdicts = self.judge(&values)?;
                let mut keep = Vec::new();
                for t in r.tools.drain(..) {
                    let name = t.name.to_string();
                    if let Some(Verdict::Quarantined(why)) = verdicts.get(&name) {
                        tracing::warn!(server = %self.name(), tool = %name, "{why}");
                        continue;
                    }
                    if self
                        .denied_outright(&self.manifest("mcp_tool", "tool", &name, None, vec![]))
                        .await
                    {
                        continue;
                    }
                    keep.push(t);
                }
                r.tools = keep;
                ServerResult::ListToolsResult(r)
            }
            ServerResult::ListResourcesResult(mut r) => {
                let mut keep = Vec::new();
                for x in r.resources.drain(..) {
                    let uri = x.uri.clone();
                    if !self
                        .denied_outright(&self.manifest(
                            "mcp_resource",
                            "resource",
                            &uri,
                            None,
                            vec![],
                        ))
                        .await
                    {
                        keep.push(x);
                    }
                }
                r.resources = keep;
                ServerResult::ListResourcesResult(r)
            }
            ServerResult::ListPromptsResult(mut r) => {
                let mut keep = Vec::new();
                for x in r.prompts.drain(..) {
                    let name = x.name.clone();
                    if !self
                        .denied_outright(&self.manifest(
                            "mcp_prompt",
                            "prompt",
                            &name,
                            None,
                            vec![],
                        ))
                        .await
                    {
                        keep.push(x);
                    }
                }
                r.prompts = keep;
                ServerResult::ListPromptsResult(r)
            }
            other => other,
        })
    }
}
