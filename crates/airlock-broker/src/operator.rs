//! The operator socket: what only the human may do. Approve or deny,
//! revoke tokens, quarantine sessions, review and commit staged changes,
//! reload policy, see status.
//!
//! Every call is refused when the caller's ancestry (checked through /proc
//! with start times) includes a process that holds an agent session: an
//! agent, and anything it spawns, cannot approve its own requests.

use airlock_audit::RecordBody;
use airlock_core::{ApiError, DecisionKind, ErrorCode};
use axum::extract::{Path as UrlPath, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{
    error_response, json_body_or_empty, json_response, or_respond, result_response, Conn,
};
use crate::{new_id, now_unix, rfc3339, Broker};

/// Refuse agents and their descendants; name the caller otherwise.
fn gate(b: &Broker, c: &Conn) -> Result<String, ApiError> {
    b.operator_gate(&c.peer)
}

async fn status(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    or_respond!(gate(&b, &c));
    result_response(b.status().map(|v| (200, v)))
}

async fn health(State(b): State<Broker>) -> Response {
    json_response(
        200,
        &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "policy_revision": b.inner.policy.revision(), "workspaces": b.workspaces()}),
    )
}

async fn approvals_list(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    or_respond!(gate(&b, &c));
    let v: Vec<Value> = b
        .inner
        .approvals
        .list(now_unix())
        .iter()
        .map(|a| a.view())
        .collect();
    json_response(200, &json!({"approvals": v}))
}

async fn approval_show(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    or_respond!(gate(&b, &c));
    match b.inner.approvals.get(&id) {
        Some(a) => json_response(200, &a.view()),
        None => error_response(
            &ApiError::new(ErrorCode::ApprovalNotFound, format!("no approval {id}"))
                .hint("see `airlock approvals list`"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Keep identical requests from this session allowed for this many seconds.
    #[serde(default)]
    for_seconds: Option<u64>,
}

async fn approve(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let by = or_respond!(gate(&b, &c));
    let body: ApproveBody = or_respond!(json_body_or_empty(req).await);
    result_response(
        b.approve(&id, &by, body.for_seconds)
            .await
            .map(|v| (200, v)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn deny(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let by = or_respond!(gate(&b, &c));
    let body: DenyBody = or_respond!(json_body_or_empty(req).await);
    result_response(b.deny(&id, &by, body.reason).await.map(|v| (200, v)))
}

async fn tokens_list(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    or_respond!(gate(&b, &c));
    let list: Vec<Value> = b
        .inner
        .tokens
        .list(now_unix())
        .into_iter()
        .map(|t| {
            let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
            v["issued"] = rfc3339(t.issued_at).into();
            v["expires"] = rfc3339(t.expires_at).into();
            v
        })
        .collect();
    json_response(200, &json!({"tokens": list}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn tokens_revoke(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    req: Request,
) -> Response {
    let by = or_respond!(gate(&b, &c));
    let body: RevokeBody = or_respond!(json_body_or_empty(req).await);
    let chosen = [body.id.is_some(), body.session.is_some(), body.all]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen != 1 {
        return error_response(
            &ApiError::new(
                ErrorCode::InvalidValue,
                "give exactly one of id, session or all",
            )
            .hint("e.g. {\"id\": \"<token id>\"}"),
        );
    }
    let t = &b.inner.tokens;
    let res = if let Some(id) = &body.id {
        t.revoke(id)
            .map(|known| json!({"revoked": id, "known": known}))
    } else if let Some(s) = &body.session {
        b.inner.approvals.clear_standing(Some(s));
        t.revoke_session(s)
            .map(|n| json!({"revoked_session": s, "count": n}))
    } else {
        b.inner.approvals.clear_standing(None);
        t.revoke_all()
            .map(|n| json!({"revoked_all": true, "count": n}))
    };
    let out = match res {
        Ok(v) => v,
        Err(e) => return error_response(&ApiError::new(e.code(), e.to_string())),
    };
    let rec = RecordBody {
        kind: "token".into(),
        user: Some(b.inner.user.clone()),
        request_id: new_id("t"),
        intent: json!({"action": "revoke", "id": body.id, "session": body.session, "all": body.all}),
        decision: json!({"allowed": true, "by": by}),
        outcome: out.clone(),
        token_id: body.id.clone(),
        peer: c.peer.to_json(),
        ..Default::default()
    };
    // The revocation is in force (and persisted) whatever happens here.
    if let Err(e) = b.record(rec).await {
        return error_response(&e);
    }
    json_response(200, &out)
}

async fn sessions_list(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    or_respond!(gate(&b, &c));
    b.housekeeping();
    json_response(200, &json!({"sessions": b.inner.sessions.list()}))
}

async fn session_quarantine(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let by = or_respond!(gate(&b, &c));
    let Some(s) = b.inner.sessions.quarantine(&id) else {
        return error_response(
            &ApiError::new(ErrorCode::NotFound, format!("no session {id}"))
                .hint("see `airlock sessions list`"),
        );
    };
    b.inner.approvals.clear_standing(Some(&id));
    let revoked = b.inner.tokens.revoke_session(&id).unwrap_or(0);
    let rec = RecordBody {
        kind: "session".into(),
        user: Some(b.inner.user.clone()),
        request_id: new_id("q"),
        intent: json!({"action": "quarantine", "session": id}),
        decision: json!({"allowed": true, "by": by}),
        outcome: json!({"quarantined": true, "tokens_revoked": revoked, "holder": s.holder, "exe": s.exe}),
        peer: c.peer.to_json(),
        ..Default::default()
    };
    if let Err(e) = b.record(rec).await {
        return error_response(&e);
    }
    json_response(200, &json!({"session": s, "tokens_revoked": revoked}))
}

async fn staged_list(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    or_respond!(gate(&b, &c));
    result_response(b.staged_list().await.map(|v| (200, v)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathsBody {
    #[serde(default)]
    paths: Option<Vec<String>>,
}

async fn staged_show(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    or_respond!(gate(&b, &c));
    result_response(b.staged_show(&id).await.map(|v| (200, v)))
}

async fn staged_diff(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    or_respond!(gate(&b, &c));
    let body: PathsBody = or_respond!(json_body_or_empty(req).await);
    result_response(b.staged_diff(&id, body.paths).await.map(|v| (200, v)))
}

async fn staged_commit(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let by = or_respond!(gate(&b, &c));
    let body: PathsBody = or_respond!(json_body_or_empty(req).await);
    result_response(
        b.staged_commit(&c.peer, &id, body.paths, &by)
            .await
            .map(|v| (200, v)),
    )
}

async fn staged_discard(
    State(b): State<Broker>,
    Extension(c): Extension<Conn>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Response {
    let by = or_respond!(gate(&b, &c));
    let body: PathsBody = or_respond!(json_body_or_empty(req).await);
    result_response(
        b.staged_discard(&c.peer, &id, body.paths, &by)
            .await
            .map(|v| (200, v)),
    )
}

async fn policy_reload(State(b): State<Broker>, Extension(c): Extension<Conn>) -> Response {
    or_respond!(gate(&b, &c));
    match b.reload_policy("operator").await {
        Ok(rev) => json_response(
            200,
            &json!({"revision": rev, "backend": b.inner.policy.backend()}),
        ),
        Err(e) => error_response(
            &ApiError::new(
                ErrorCode::InvalidValue,
                format!("policy rejected, the last good policy stays active: {e}"),
            )
            .hint("fix the policy file; `airlock policy test DIR` runs its tests"),
        ),
    }
}

fn routes() -> Vec<(
    &'static str,
    &'static str,
    axum::routing::MethodRouter<Broker>,
)> {
    vec![
        ("GET", "/v1/health", get(health)),
        ("GET", "/v1/status", get(status)),
        ("GET", "/v1/approvals", get(approvals_list)),
        ("GET", "/v1/approvals/{id}", get(approval_show)),
        ("POST", "/v1/approvals/{id}/approve", post(approve)),
        ("POST", "/v1/approvals/{id}/deny", post(deny)),
        ("GET", "/v1/tokens", get(tokens_list)),
        ("POST", "/v1/tokens/revoke", post(tokens_revoke)),
        ("GET", "/v1/sessions", get(sessions_list)),
        (
            "POST",
            "/v1/sessions/{id}/quarantine",
            post(session_quarantine),
        ),
        ("GET", "/v1/staged", get(staged_list)),
        ("GET", "/v1/staged/{id}", get(staged_show)),
        ("POST", "/v1/staged/{id}/diff", post(staged_diff)),
        ("POST", "/v1/staged/{id}/commit", post(staged_commit)),
        ("POST", "/v1/staged/{id}/discard", post(staged_discard)),
        ("POST", "/v1/policy/reload", post(policy_reload)),
    ]
}

pub(crate) fn router(b: Broker) -> Router {
    crate::http::build(routes(), b)
}

/// `(method, path)` of every route of the operator socket.
pub fn operator_route_list() -> Vec<(&'static str, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

impl Broker {
    /// `airlock status`.
    pub(crate) fn status(&self) -> Result<Value, ApiError> {
        let i = &self.inner;
        let now = now_unix();
        let areas = i.staging.list().map_err(crate::fsops::fs_error)?;
        let tokens = i.tokens.list(now);
        let head = i.audit.head();
        Ok(json!({
            "broker": {"pid": i.pid, "version": env!("CARGO_PKG_VERSION"), "started": rfc3339(i.started), "uptime_seconds": now.saturating_sub(i.started)},
            "socket": i.paths.socket,
            "operator_socket": i.paths.operator_socket,
            "state_dir": i.paths.state_dir,
            "workspaces": i.workspaces,
            "policy": {"revision": i.policy.revision(), "backend": i.policy.backend(), "dir": i.policy.dir(), "modules": i.policy.modules()},
            "sessions": i.sessions.list(),
            "approvals_pending": i.approvals.pending_count(),
            "tokens_active": tokens.iter().filter(|t| !t.revoked).count(),
            "staged": areas,
            "audit": {"dir": i.paths.audit_dir, "head_seq": head.as_ref().map(|h| h.0), "head_hash": head.map(|h| h.1), "stats": i.audit.stats()},
        }))
    }

    /// The operator gate: refuse any process whose ancestry holds an agent
    /// session; otherwise name the caller for the audit record.
    pub fn operator_gate(&self, peer: &crate::peer::Peer) -> Result<String, ApiError> {
        if let Some(s) = self.inner.sessions.find(peer) {
            tracing::warn!(pid = peer.pid, exe = ?peer.exe, session = %s.id, holder = s.holder.pid, "operator call from inside an agent session refused");
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this process (pid {}) descends from agent session {} (held by pid {}{}); operator actions are refused to agents and to everything they start",
                    peer.pid,
                    s.id,
                    s.holder.pid,
                    s.exe.as_deref().map(|e| format!(", {e}")).unwrap_or_default()
                ),
            )
            .hint("run this command yourself, from a terminal that is not started by the agent"));
        }
        Ok(format!("{} (pid {})", self.inner.user, peer.pid))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Broker) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let b = self.clone();
        tokio::task::spawn_blocking(move || f(b))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    }

    /// Every staging area: `{"areas": [...]}`.
    pub async fn staged_list(&self) -> Result<Value, ApiError> {
        self.blocking(|b| {
            b.inner
                .staging
                .list()
                .map(|l| json!({"areas": l}))
                .map_err(crate::fsops::fs_error)
        })
        .await
    }

    /// The staging areas of one session, each with its changes and the
    /// commands a human uses to review and apply them.
    pub async fn own_staged(&self, session: String) -> Result<Value, ApiError> {
        self.blocking(move |b| {
            let mut areas = Vec::new();
            for info in b.inner.staging.list().map_err(crate::fsops::fs_error)? {
                if info.session != session {
                    continue;
                }
                let a = b
                    .inner
                    .staging
                    .get(&info.id)
                    .map_err(crate::fsops::fs_error)?;
                let changes = a.changes().map_err(crate::fsops::fs_error)?;
                if changes.is_empty() {
                    continue;
                }
                areas.push(json!({
                    "id": a.id(), "base": a.base(), "created": a.created(), "changes": changes,
                    "review": format!("airlock staged diff {}", a.id()),
                    "apply": format!("airlock staged commit {}", a.id()),
                }));
            }
            Ok(json!({"session": session, "areas": areas}))
        })
        .await
    }

    /// One area and its changes.
    pub async fn staged_show(&self, id: &str) -> Result<Value, ApiError> {
        let id = id.to_string();
        self.blocking(move |b| {
            let a = b.inner.staging.get(&id).map_err(crate::fsops::fs_error)?;
            let changes = a.changes().map_err(crate::fsops::fs_error)?;
            Ok(json!({"id": a.id(), "session": a.session(), "base": a.base(), "created": a.created(), "changes": changes}))
        })
        .await
    }

    /// The unified diff of an area (all of it, or the named paths).
    pub async fn staged_diff(
        &self,
        id: &str,
        paths: Option<Vec<String>>,
    ) -> Result<Value, ApiError> {
        let id = id.to_string();
        self.blocking(move |b| {
            let a = b.inner.staging.get(&id).map_err(crate::fsops::fs_error)?;
            let d = a.diff(paths.as_deref()).map_err(crate::fsops::fs_error)?;
            Ok(json!({"id": id, "diff": d}))
        })
        .await
    }

    /// Drop staged changes (the named paths, or the whole area), recorded.
    pub async fn staged_discard(
        &self,
        peer: &crate::peer::Peer,
        id: &str,
        paths: Option<Vec<String>>,
        by: &str,
    ) -> Result<Value, ApiError> {
        let (id2, p2) = (id.to_string(), paths.clone());
        let out = self
            .blocking(move |b| {
                let a = b.inner.staging.get(&id2).map_err(crate::fsops::fs_error)?;
                match p2 {
                    Some(p) => {
                        let n = a.discard(Some(&p)).map_err(crate::fsops::fs_error)?;
                        Ok(json!({"id": id2, "discarded": n}))
                    }
                    None => {
                        // An area whose changes cannot be listed can still
                        // be removed whole.
                        let n = a.changes().map(|c| c.len()).ok();
                        b.inner
                            .staging
                            .remove(&id2)
                            .map_err(crate::fsops::fs_error)?;
                        b.forget_area(&id2);
                        Ok(json!({"id": id2, "discarded": n, "removed": true}))
                    }
                }
            })
            .await?;
        let rec = RecordBody {
            kind: "staging".into(),
            user: Some(self.inner.user.clone()),
            request_id: new_id("d"),
            intent: json!({"action": "discard", "staging_id": id, "paths": paths}),
            decision: json!({"allowed": true, "by": by}),
            outcome: out.clone(),
            peer: peer.to_json(),
            ..Default::default()
        };
        self.record(rec).await?;
        Ok(out)
    }

    /// Commit staged changes: policy is evaluated again on the final change
    /// set (denied paths stay staged), then each file is applied atomically
    /// with the staging store's checks; intent and outcome are recorded.
    pub async fn staged_commit(
        &self,
        peer: &crate::peer::Peer,
        id: &str,
        paths: Option<Vec<String>>,
        by: &str,
    ) -> Result<Value, ApiError> {
        self.commit(peer, id, paths, by).await
    }

    /// Commit staged changes after re-evaluating policy on the final set.
    async fn commit(
        &self,
        peer: &crate::peer::Peer,
        id: &str,
        paths: Option<Vec<String>>,
        by: &str,
    ) -> Result<Value, ApiError> {
        let b = self.clone();
        let id_s = id.to_string();
        let (area, changes) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let a = b.inner.staging.get(&id_s).map_err(crate::fsops::fs_error)?;
            let ch = a.changes().map_err(crate::fsops::fs_error)?;
            Ok((a, ch))
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
        let selected: Vec<&airlock_fs::Change> = changes
            .iter()
            .filter(|ch| {
                paths.as_ref().is_none_or(|ps| {
                    ps.iter()
                        .any(|p| airlock_core::path::is_within(&ch.path, p))
                })
            })
            .collect();
        let mut denied = Vec::new();
        let mut allowed = Vec::new();
        for ch in &selected {
            let labels = self.inner.classifier.labels(&ch.path);
            let ws = self
                .inner
                .workspaces
                .iter()
                .find(|w| airlock_core::path::is_within(&ch.path, w));
            let input = json!({
                "action": "commit", "paths": [ch.path], "labels": labels,
                "path_infos": [{"path": ch.path, "labels": labels, "workspace": ws}],
                "workspaces": self.inner.workspaces, "broker_paths": self.inner.broker_paths, "usage": {},
                "change": ch.kind, "staging_id": id, "session": area.session(),
            });
            let d = self.inner.policy.evaluate(&input);
            if d.decision == DecisionKind::Deny {
                denied.push(json!({"path": ch.path, "code": "policy_denied", "reason": d.reasons.join("; "), "rule": d.rule}));
            } else {
                allowed.push(ch.path.clone());
            }
        }
        let request_id = new_id("c");
        let intent = json!({"action": "commit", "staging_id": id, "paths": paths, "session": area.session(), "base": area.base(), "phase": "intent"});
        let rec = |phase_intent: Value, outcome: Value| RecordBody {
            kind: "commit".into(),
            user: Some(self.inner.user.clone()),
            request_id: request_id.clone(),
            intent: phase_intent,
            decision: json!({"allowed": true, "by": by, "policy_denied": denied}),
            execution: json!({"to_commit": allowed}),
            outcome,
            policy_revision: Some(self.inner.policy.revision()),
            peer: peer.to_json(),
            ..Default::default()
        };
        self.record(rec(intent.clone(), Value::Null)).await?;
        let report = if allowed.is_empty() {
            airlock_fs::CommitReport::default()
        } else {
            let opts = airlock_fs::CommitOptions {
                protected: self.inner.protected.clone(),
            };
            let a2 = area.clone();
            let list = allowed.clone();
            tokio::task::spawn_blocking(move || a2.commit(Some(&list), &opts))
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(crate::fsops::fs_error)?
        };
        let mut refused = serde_json::to_value(&report.refused).unwrap_or(Value::Null);
        if let Some(arr) = refused.as_array_mut() {
            arr.extend(denied.iter().cloned());
        }
        let mut outcome_intent = intent;
        outcome_intent["phase"] = "outcome".into();
        let outcome = json!({"modified_files": report.committed, "refused": refused});
        self.record(rec(outcome_intent, outcome.clone())).await?;
        let mut out = outcome;
        out["request_id"] = request_id.into();
        out["staging_id"] = id.into();
        Ok(out)
    }
}
