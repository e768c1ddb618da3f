//! The Airlock broker: a library first, so the daemon (`airlock serve`),
//! tests and other front doors embed the same pipeline.
//!
//! ```text
//! agent ─► agent socket ─► validate manifest → policy → consent → token ─► fs / exec
//!                           └──────── every step appends to the audit chain ───┘
//! human ─► operator socket ─► approvals, tokens, staging, policy reload, status
//! ```
//!
//! Invariants:
//! - Nothing is granted before its audit record is durable; if the audit
//!   log cannot be written, requests are refused (`audit_unavailable`).
//! - Every file operation presents a token; the token's authority-granted
//!   path is the root the path is resolved beneath (`openat2`
//!   `RESOLVE_BENEATH`), and the policy's never-list is checked again on
//!   the concrete path (and on a followed symlink's target).
//! - Writes land in the staging store; only a human commit (operator
//!   socket) touches the real tree.
//! - The agent socket has no route that approves, changes policy or turns
//!   enforcement off; the operator socket refuses any process whose
//!   ancestry holds an agent session.
#![forbid(unsafe_code)]

pub mod approvals;
pub mod classify;
pub mod config;
mod exec;
mod fsops;
mod http;
mod operator;
pub mod peer;
mod pipeline;
pub mod quota;
pub mod session;

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_audit::{AuditLog, RecordBody};
use airlock_core::{ApiError, ErrorCode};
use airlock_fs::{StagingArea, StagingStore};
use airlock_policy::PolicyEngine;
use airlock_token::TokenAuthority;

pub use config::{Config, Paths};
pub use http::{agent_route_list, Attach, ServeHandle};
pub use operator::operator_route_list;
pub use pipeline::Decided;

/// Errors that stop the broker from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("policy: {0}")]
    Policy(#[from] airlock_policy::PolicyError),
    #[error("audit log: {0}")]
    Audit(#[from] airlock_audit::AuditError),
    #[error("tokens: {0}")]
    Token(#[from] airlock_token::TokenError),
    #[error("staging: {0}")]
    Staging(#[from] airlock_fs::FsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    AlreadyRunning(String),
}

impl BrokerError {
    fn io(what: impl Into<String>, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC of unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `prefix-` + 16 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}-{n:016x}")
}

/// Shared state of a running broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    paths: Paths,
    policy: PolicyEngine,
    tokens: TokenAuthority,
    audit: AuditLog,
    staging: StagingStore,
    areas: Mutex<HashMap<(String, String), StagingArea>>,
    sessions: session::Sessions,
    approvals: approvals::Approvals,
    quotas: quota::Quotas,
    classifier: classify::Classifier,
    workspaces: Vec<String>,
    broker_paths: Vec<String>,
    user: String,
    protected: airlock_fs::ProtectedPaths,
    started: u64,
    pid: u32,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("paths", &self.inner.paths)
            .finish()
    }
}

fn private_dir(dir: &Path) -> Result<(), BrokerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| BrokerError::io(format!("cannot create {}", dir.display()), e))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| BrokerError::io(format!("{}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(BrokerError::Config(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(BrokerError::Config(format!(
            "{} is owned by uid {}, not by this user; choose a directory you own",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| BrokerError::io(format!("cannot make {} private", dir.display()), e))?;
    }
    Ok(())
}

/// The login name of `uid` from `/etc/passwd`, else `uid:N`.
fn login_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid:{uid}"))
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
}

/// Tokens minted before a restart are still valid until they expire; read
/// their grants back from the end of the audit log so `tokens list` and
/// `tokens revoke --session` cover them. Returns how many were live.
fn remember_tokens(tokens: &TokenAuthority, audit_dir: &Path) -> usize {
    // Tokens live at most `max_duration_seconds` (an hour by default); the
    // last 50,000 records cover far more than that at any realistic rate.
    let Ok(recs) = airlock_audit::tail(audit_dir, 50_000) else {
        return 0;
    };
    let mut n = 0;
    for r in recs {
        let b = &r.body;
        let (Some(id), granted) = (b.token_id.as_deref(), &b.execution["granted"]) else {
            continue;
        };
        if !matches!(b.kind.as_str(), "request" | "approval") || !granted.is_object() {
            continue;
        }
        let strs = |k: &str| -> Vec<String> {
            granted[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let info = airlock_token::TokenInfo {
            id: id.to_string(),
            request_id: b.request_id.clone(),
            session: b.execution["session"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            verbs: strs("verbs")
                .iter()
                .filter_map(|v| airlock_core::Verb::parse(v))
                .collect(),
            paths: strs("paths"),
            hosts: strs("hosts"),
            commands: strs("commands"),
            issued_at: parse_rfc3339(&b.ts).unwrap_or(0),
            expires_at: granted["expires_at"]
                .as_str()
                .and_then(parse_rfc3339)
                .unwrap_or(0),
            revoked: false,
        };
        if tokens.remember(info) {
            n += 1;
        }
    }
    n
}

/// Workspaces as absolute, symlink-free, normalised strings.
fn resolve_workspaces(list: &[PathBuf]) -> Result<Vec<String>, BrokerError> {
    let mut out = Vec::new();
    for w in list {
        let canon = std::fs::canonicalize(w)
            .map_err(|e| BrokerError::Config(format!("workspace {}: {e}", w.display())))?;
        if !canon.is_dir() {
            return Err(BrokerError::Config(format!(
                "workspace {} is not a directory",
                w.display()
            )));
        }
        let s = canon
            .to_str()
            .ok_or_else(|| {
                BrokerError::Config(format!("workspace {} is not valid UTF-8", w.display()))
            })?
            .to_string();
        if canon != *w {
            tracing::info!(given = %w.display(), resolved = %s, "workspace resolved to its real path");
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn audit_unavailable(e: airlock_audit::AuditError) -> ApiError {
    tracing::error!(error = %e, "audit log unavailable; refusing the request");
    ApiError::new(
        ErrorCode::AuditUnavailable,
        format!("the audit log cannot be written ({e}); Airlock refuses actions it cannot record"),
    )
    .hint("retry later; the user must fix the audit log location (disk full or read-only?)")
}

impl Broker {
    /// Open everything the broker needs (state dir, audit log, keys, policy,
    /// staging store). Fails, naming the piece, when any cannot be opened.
    pub fn open(cfg: Config, extra_workspaces: &[PathBuf]) -> Result<Broker, BrokerError> {
        let paths = cfg.paths()?;
        cfg.limits.validate().map_err(BrokerError::Config)?;
        for s in [&paths.socket, &paths.operator_socket] {
            if std::os::unix::net::UnixStream::connect(s).is_ok() {
                return Err(BrokerError::AlreadyRunning(format!(
                    "another broker is already listening on {}; stop it first, or choose another socket (AIRLOCK_SOCKET) and state directory",
                    s.display()
                )));
            }
        }
        private_dir(&paths.state_dir)?;
        let audit = AuditLog::open_with(
            &paths.audit_dir,
            cfg.audit.max_segment_bytes,
            cfg.audit.wal_bytes,
        )?;
        let tokens = TokenAuthority::load_or_create(&paths.state_dir)?;
        let policy = PolicyEngine::load(&cfg.policy)?;
        let staging = StagingStore::open(&paths.staging_dir)?;
        let mut ws: Vec<PathBuf> = cfg.workspaces.clone();
        ws.extend(extra_workspaces.iter().cloned());
        let workspaces = resolve_workspaces(&ws)?;
        let classifier = classify::Classifier::new(&cfg.classify)?;
        let protected = cfg.staging.protected_paths();
        protected
            .validate()
            .map_err(|e| BrokerError::Config(format!("staging.protected: {e}")))?;
        let sessions = session::Sessions::open(Some(paths.state_dir.join("sessions.json")));
        let mut areas = HashMap::new();
        for info in staging.list()? {
            if let Ok(a) = staging.get(&info.id) {
                areas.insert((info.session.clone(), info.base.clone()), a);
            }
        }
        let remembered = remember_tokens(&tokens, &paths.audit_dir);
        if remembered > 0 {
            tracing::info!(
                tokens = remembered,
                "live tokens from before the restart are listed again"
            );
        }
        let user = cfg
            .user
            .clone()
            .unwrap_or_else(|| login_name(rustix::process::getuid().as_raw()));
        let broker_paths = paths.broker_paths();
        Ok(Broker {
            inner: Arc::new(Inner {
                quotas: quota::Quotas::new(cfg.quotas.clone()),
                cfg,
                paths,
                policy,
                tokens,
                audit,
                staging,
                areas: Mutex::new(areas),
                sessions,
                approvals: approvals::Approvals::default(),
                classifier,
                workspaces,
                broker_paths,
                user,
                protected,
                started: now_unix(),
                pid: std::process::id(),
            }),
        })
    }

    /// Resolved locations.
    pub fn paths(&self) -> &Paths {
        &self.inner.paths
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Workspace roots in effect.
    pub fn workspaces(&self) -> &[String] {
        &self.inner.workspaces
    }

    /// The policy engine (reload, revision).
    pub fn policy(&self) -> &PolicyEngine {
        &self.inner.policy
    }

    /// Reload policy, recording the outcome in the audit log.
    pub async fn reload_policy(&self, why: &str) -> Result<String, String> {
        let before = self.inner.policy.revision();
        let res = self.inner.policy.reload().map_err(|e| e.to_string());
        let body = RecordBody {
            kind: "policy".into(),
            request_id: new_id("p"),
            user: Some(self.inner.user.clone()),
            intent: serde_json::json!({"action": "policy_reload", "trigger": why}),
            decision: serde_json::json!({"allowed": res.is_ok(), "error": res.as_ref().err()}),
            outcome: serde_json::json!({"revision_before": before, "revision": self.inner.policy.revision()}),
            policy_revision: Some(self.inner.policy.revision()),
            ..Default::default()
        };
        if let Err(e) = self.inner.audit.append(body).await {
            tracing::error!(error = %e, "cannot record the policy reload");
        }
        res
    }

    /// Record that the active policy changed (by the watcher, or any reload).
    async fn record_policy_change(&self, before: &str, after: &str) {
        let body = RecordBody {
            kind: "policy".into(),
            request_id: new_id("p"),
            user: Some(self.inner.user.clone()),
            intent: serde_json::json!({"action": "policy_change", "trigger": "active policy revision changed"}),
            decision: serde_json::json!({"allowed": true}),
            outcome: serde_json::json!({"revision_before": before, "revision": after}),
            policy_revision: Some(after.to_string()),
            ..Default::default()
        };
        if let Err(e) = self.inner.audit.append(body).await {
            tracing::error!(error = %e, "cannot record a policy change");
        }
    }

    /// Append a broker lifecycle record.
    async fn lifecycle(&self, what: &str) {
        let body = RecordBody {
            kind: "broker".into(),
            request_id: new_id("b"),
            user: Some(self.inner.user.clone()),
            intent: serde_json::json!({"action": what}),
            decision: serde_json::Value::Null,
            execution: serde_json::json!({
                "pid": self.inner.pid,
                "version": env!("CARGO_PKG_VERSION"),
                "socket": self.inner.paths.socket,
                "operator_socket": self.inner.paths.operator_socket,
                "workspaces": self.inner.workspaces,
            }),
            outcome: serde_json::Value::Null,
            policy_revision: Some(self.inner.policy.revision()),
            ..Default::default()
        };
        if let Err(e) = self.inner.audit.append(body).await {
            tracing::error!(error = %e, what, "cannot record broker lifecycle event");
        }
    }

    /// The staging area for (session, base), created on first use.
    fn area(&self, session: &str, base: &str) -> Result<StagingArea, airlock_fs::FsError> {
        let key = (session.to_string(), base.to_string());
        if let Some(a) = self
            .inner
            .areas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(a.clone());
        }
        let a = self.inner.staging.area(session, base)?;
        self.inner
            .areas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, a.clone());
        Ok(a)
    }

    /// The existing staging area for (session, base), if any.
    fn existing_area(&self, session: &str, base: &str) -> Option<StagingArea> {
        self.inner
            .areas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(session.to_string(), base.to_string()))
            .cloned()
    }

    fn forget_area(&self, id: &str) {
        self.inner
            .areas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, a| a.id() != id);
    }

    /// Append a record; map failure to `audit_unavailable`.
    async fn record(&self, body: RecordBody) -> Result<airlock_audit::AuditReceipt, ApiError> {
        self.inner
            .audit
            .append(body)
            .await
            .map_err(audit_unavailable)
    }

    /// [`Broker::record`] for a record reported after its action
    /// ([`AuditLog::append_deferred`]).
    pub(crate) async fn record_deferred(
        &self,
        body: RecordBody,
    ) -> Result<airlock_audit::AuditReceipt, ApiError> {
        self.inner
            .audit
            .append_deferred(body)
            .await
            .map_err(audit_unavailable)
    }

    /// Sweep dead sessions; called periodically.
    fn housekeeping(&self) {
        let n = self.inner.sessions.sweep();
        if n > 0 {
            tracing::debug!(ended = n, "dropped sessions whose holder exited");
        }
    }

    /// Serve on the configured sockets until `shutdown` resolves, then drain
    /// connections, record the stop and close the audit log.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), BrokerError> {
        self.serve_with(shutdown, None).await
    }

    /// A client that reaches this broker's agent routes in this process as
    /// `peer`, with no socket in between (a front door embedding the broker).
    pub fn local_agent(&self, peer: peer::Peer) -> airlock_client::Client {
        http::local_agent(self, peer)
    }

    /// [`Broker::serve`], and with `attach`, also the attach socket, whose
    /// connections are handed to `attach` to be served in this process.
    pub async fn serve_with(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        attach: Option<Attach>,
    ) -> Result<(), BrokerError> {
        let handle = http::start(self.clone(), attach).await?;
        self.lifecycle("broker_start").await;
        tracing::info!(
            socket = %self.inner.paths.socket.display(),
            operator_socket = %self.inner.paths.operator_socket.display(),
            state_dir = %self.inner.paths.state_dir.display(),
            audit_dir = %self.inner.paths.audit_dir.display(),
            staging_dir = %self.inner.paths.staging_dir.display(),
            policy_dir = ?self.inner.paths.policy_dir,
            policy_revision = %self.inner.policy.revision(),
            policy_backend = self.inner.policy.backend(),
            workspaces = ?self.inner.workspaces,
            "airlock broker ready"
        );
        let watch = self.inner.policy.watch(Duration::from_secs(1));
        let hk = {
            let b = self.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(1));
                let mut rev = b.inner.policy.revision();
                let mut tick = 0u64;
                loop {
                    t.tick().await;
                    tick += 1;
                    // A policy change made by the directory watcher is recorded too.
                    let now = b.inner.policy.revision();
                    if now != rev {
                        b.record_policy_change(&rev, &now).await;
                        rev = now;
                    }
                    if tick.is_multiple_of(30) {
                        b.housekeeping();
                    }
                }
            })
        };
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        hk.abort();
        watch.stop();
        handle.shutdown(Duration::from_secs(5)).await;
        self.lifecycle("broker_stop").await;
        self.inner.audit.close();
        tracing::info!("broker stopped; audit log closed");
        Ok(())
    }
}
