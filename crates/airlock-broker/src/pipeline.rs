//! The request pipeline: manifest → policy → consent → token → audit.

use std::sync::Arc;
use std::time::Duration;

use airlock_audit::RecordBody;
use airlock_core::{ApiError, Decision, DecisionKind, DecisionResponse, ErrorCode, Manifest};
use airlock_token::Grant;
use serde_json::{json, Value};

use crate::approvals::{Approval, ApprovalState, NewApproval};
use crate::peer::Peer;
use crate::session::Session;
use crate::{new_id, now_unix, rfc3339, Broker};

/// What [`Broker::decide`] found.
#[derive(Debug)]
pub struct Decided {
    pub session: Arc<Session>,
    pub decision: Decision,
    /// The policy input the decision was made on.
    pub input: Value,
    pub labels: Vec<String>,
    /// Canonical hash of the manifest.
    pub hash: String,
    /// Standing approval that turned an `ask` into `allow`.
    pub approval_id: Option<String>,
    /// Unix seconds of the decision.
    pub now: u64,
}

/// A pipeline answer: HTTP status and body.
pub(crate) struct Answer {
    pub status: u16,
    pub body: DecisionResponse,
}

impl Broker {
    /// The policy input for a manifest (see docs/policy.md).
    pub(crate) fn policy_input(
        &self,
        m: &Manifest,
        session: &Session,
        peer: &Peer,
        usage: Value,
    ) -> (Value, Vec<String>) {
        let mut union: Vec<String> = Vec::new();
        let infos: Vec<Value> = m
            .paths
            .iter()
            .map(|p| {
                let labels = self.inner.classifier.labels(p);
                union.extend(labels.iter().cloned());
                let ws = self
                    .inner
                    .workspaces
                    .iter()
                    .find(|w| airlock_core::path::is_within(p, w));
                json!({"path": p, "labels": labels, "workspace": ws})
            })
            .collect();
        union.sort();
        union.dedup();
        let input = json!({
            "action": m.action.as_str(),
            "paths": m.paths,
            "path_infos": infos,
            "labels": union,
            "hosts": m.hosts,
            "commands": m.commands,
            "duration_seconds": m.duration_seconds,
            "justification": m.justification,
            "agent": m.agent.clone().unwrap_or_else(|| peer.exe_name()),
            "model": m.model,
            "session": session.id,
            "session_label": m.session,
            "mcp": m.mcp,
            "workspaces": self.inner.workspaces,
            "broker_paths": self.inner.broker_paths,
            "usage": usage,
            "user": self.inner.user,
            "peer": {"uid": peer.uid, "pid": peer.pid, "exe": peer.exe},
        });
        (input, union)
    }

    fn agent_name(&self, m: &Manifest, session: &Session) -> String {
        m.agent.clone().unwrap_or_else(|| session.agent_name())
    }

    /// A record for a rejected manifest (validation error).
    pub(crate) async fn record_invalid(&self, peer: &Peer, err: &ApiError, body: &[u8]) {
        let preview: String = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        let rec = RecordBody {
            kind: "request".into(),
            agent: Some(peer.exe_name()),
            user: Some(self.inner.user.clone()),
            request_id: new_id("r"),
            intent: json!({"invalid": true, "body_bytes": body.len(), "body_preview": preview}),
            decision: json!({"allowed": false, "decision": "deny", "error": err}),
            peer: peer.to_json(),
            ..Default::default()
        };
        if let Err(e) = self.inner.audit.append(rec).await {
            tracing::warn!(error = %e, "cannot record a rejected request");
        }
    }

    /// The decision for a validated manifest from `peer`: session, quota
    /// usage, classification, policy, standing approvals. No I/O beyond
    /// `/proc` for a new session; nothing is recorded or granted yet.
    pub fn decide(&self, peer: &Peer, m: &Manifest) -> Decided {
        self.decide_counting(peer, m, true)
    }

    /// What `POST /v1/requests` would decide for `m` now, without counting
    /// it against a quota, asking, granting or recording anything
    /// (`POST /v1/requests/check`).
    pub(crate) fn check(&self, peer: &Peer, m: &Manifest) -> Value {
        let d = self.decide_counting(peer, m, false);
        let mut v = json!({
            "decision": d.decision.decision.as_str(),
            "policy_id": d.decision.policy_id,
            "rule": d.decision.rule,
            "reasons": d.decision.reasons,
            "grantable": d.decision.grantable,
            "reason_code": d.decision.reason_code,
            "policy_revision": self.inner.policy.revision(),
            "session": d.session.id,
        });
        if let Some(t) = d.decision.secrets {
            v["secrets"] = json!(t);
        }
        v
    }

    fn decide_counting(&self, peer: &Peer, m: &Manifest, count: bool) -> Decided {
        let now = now_unix();
        let session = self.inner.sessions.resolve(peer, m.session.as_deref());
        let hash = m.canonical_hash();
        let quota_key = session.agent_key();
        let usage = self.inner.quotas.usage(&quota_key, m.action, now);
        let (input, labels) = self.policy_input(m, &session, peer, usage);
        let mut decision = if session.quarantined {
            Decision {
                decision: DecisionKind::Deny,
                policy_id: "airlock".into(),
                rule: "quarantined".into(),
                reasons: vec![format!("session {} is quarantined by the user", session.id)],
                grantable: false,
                reason_code: Some("quarantined".into()),
                secrets: None,
            }
        } else {
            self.inner.policy.evaluate(&input)
        };
        // A result check (`mcp.result_secrets`) is about a call already
        // counted, so it does not count again.
        let result_check = m.mcp.as_ref().is_some_and(|c| !c.result_secrets.is_empty());
        if count && !result_check {
            self.inner.quotas.count_request(&quota_key, m.action, now);
        }
        let mut approval_id = None;
        if decision.decision == DecisionKind::Ask {
            if let Some(aid) = self.inner.approvals.standing(&session.id, &hash, now) {
                decision.decision = DecisionKind::Allow;
                decision
                    .reasons
                    .push(format!("covered by standing approval {aid}"));
                approval_id = Some(aid);
            }
        }
        Decided {
            session,
            decision,
            input,
            labels,
            hash,
            approval_id,
            now,
        }
    }

    /// `POST /v1/requests`.
    pub(crate) async fn request(&self, peer: &Peer, m: Manifest) -> Result<Answer, ApiError> {
        let Decided {
            session,
            decision,
            input,
            labels,
            hash,
            approval_id,
            now,
        } = self.decide(peer, &m);
        let request_id = new_id("r");
        let agent = self.agent_name(&m, &session);
        let revision = self.inner.policy.revision();

        let retry_after = (decision.reason_code.as_deref() == Some("quota_exceeded")).then(|| {
            input["usage"]
                .as_object()
                .and_then(|u| {
                    u.values()
                        .filter(|v| v["used"].as_u64() >= v["limit"].as_u64())
                        .filter_map(|v| v["retry_after"].as_u64())
                        .max()
                })
                .unwrap_or(60)
        });

        let mut resp = DecisionResponse {
            request_id: request_id.clone(),
            decision: decision.decision,
            reasons: decision.reasons.clone(),
            policy_id: decision.policy_id.clone(),
            rule: decision.rule.clone(),
            policy_revision: revision.clone(),
            grantable: decision.grantable,
            reason_code: decision.reason_code.clone(),
            token: None,
            token_id: None,
            expires_at: None,
            approval_id: approval_id.clone(),
            approval_expires_at: None,
            retry_after,
            secrets: decision.secrets,
            session: session.id.clone(),
            hint: None,
        };
        let mut rec = RecordBody {
            kind: "request".into(),
            agent: Some(agent.clone()),
            user: Some(self.inner.user.clone()),
            request_id: request_id.clone(),
            intent: intent_json(&m, &hash),
            decision: decision_json(&decision, &labels),
            execution: json!({"session": session.id}),
            outcome: Value::Null,
            policy_revision: Some(revision.clone()),
            token_id: None,
            approval_id: approval_id.clone(),
            peer: peer.to_json(),
            ts: String::new(),
        };

        match decision.decision {
            DecisionKind::Allow => {
                let minted = self.mint(&m, &session.id, &request_id, now)?;
                rec.token_id = Some(minted.id.clone());
                rec.execution["granted"] = grant_json(&m, minted.expires_at);
                rec.outcome =
                    json!({"token_id": minted.id, "expires_at": rfc3339(minted.expires_at)});
                self.record(rec).await?;
                resp.token = Some(minted.token);
                resp.token_id = Some(minted.id);
                resp.expires_at = Some(rfc3339(minted.expires_at));
                Ok(Answer {
                    status: 200,
                    body: resp,
                })
            }
            DecisionKind::Deny => {
                rec.outcome = json!({"denied": true});
                self.record(rec).await?;
                resp.hint = Some(deny_hint(&decision));
                Ok(Answer {
                    status: 403,
                    body: resp,
                })
            }
            DecisionKind::Ask => {
                if self.inner.approvals.pending_count() >= self.inner.cfg.approvals.max_pending {
                    return Err(ApiError::new(
                        ErrorCode::Overloaded,
                        "too many approvals are waiting for the user",
                    )
                    .hint("wait for the user to work through pending approvals, then ask again")
                    .retry_after(30));
                }
                let aid = new_id("a");
                let expires = now + self.inner.cfg.approvals.timeout_seconds;
                let approval = self.inner.approvals.insert(NewApproval {
                    id: aid.clone(),
                    request_id: request_id.clone(),
                    session: session.id.clone(),
                    agent,
                    manifest: m.clone(),
                    manifest_hash: hash,
                    decision: decision.clone(),
                    policy_revision: revision,
                    labels,
                    peer: peer.to_json(),
                    input: input.clone(),
                    created: now,
                    expires,
                });
                rec.approval_id = Some(aid.clone());
                rec.outcome = json!({"approval_id": aid, "status": "pending", "expires_at": rfc3339(expires)});
                if let Err(e) = self.record(rec).await {
                    self.inner.approvals.remove(&aid);
                    return Err(e);
                }
                self.schedule_expiry(approval);
                tracing::info!(approval_id = %aid, request_id = %request_id, "approval pending: run `airlock approvals show {aid}`");
                resp.approval_id = Some(aid.clone());
                resp.approval_expires_at = Some(rfc3339(expires));
                resp.hint = Some(format!(
                    "a human must decide; poll GET /v1/approvals/{aid}?wait=60 until the decision is allow or deny"
                ));
                Ok(Answer {
                    status: 202,
                    body: resp,
                })
            }
        }
    }

    /// Mint the token a manifest grants (expiry: now + its duration).
    pub fn mint(
        &self,
        m: &Manifest,
        session: &str,
        request_id: &str,
        now: u64,
    ) -> Result<airlock_token::MintedToken, ApiError> {
        let grant = Grant {
            request_id: request_id.to_string(),
            session: session.to_string(),
            verbs: m.action.verbs().to_vec(),
            paths: m.paths.clone(),
            hosts: m.hosts.clone(),
            commands: m.commands.clone(),
            expires_at: now + m.duration_seconds,
        };
        self.inner.tokens.mint(&grant).map_err(|e| {
            tracing::error!(error = %e, "cannot mint a token");
            ApiError::new(e.code(), format!("cannot mint the capability: {e}"))
                .hint("ask for fewer or shorter paths")
        })
    }

    fn schedule_expiry(&self, a: Arc<Approval>) {
        let b = self.clone();
        tokio::spawn(async move {
            let wait = a.expires.saturating_sub(now_unix());
            let _ = tokio::time::timeout(
                Duration::from_secs(wait),
                a.wait(Duration::from_secs(wait + 1)),
            )
            .await;
            if a.state() == ApprovalState::Pending {
                b.expire(&a).await;
            }
        });
    }

    async fn expire(&self, a: &Approval) {
        let rec = RecordBody {
            kind: "approval".into(),
            agent: Some(a.agent.clone()),
            user: Some(self.inner.user.clone()),
            request_id: a.request_id.clone(),
            intent: intent_json(&a.manifest, &a.manifest_hash),
            decision: json!({"allowed": false, "decision": "deny", "reason_code": "approval_expired",
                "reasons": ["no one decided before the approval lapsed"]}),
            outcome: json!({"approval_id": a.id, "status": "expired"}),
            policy_revision: Some(a.policy_revision.clone()),
            approval_id: Some(a.id.clone()),
            peer: a.peer.clone(),
            ..Default::default()
        };
        // An expiry grants nothing: settle even if the record fails.
        if let Err(e) = self.inner.audit.append(rec).await {
            tracing::error!(error = %e, approval_id = %a.id, "cannot record an approval expiry");
        }
        a.settle(ApprovalState::Expired);
        tracing::info!(approval_id = %a.id, "approval lapsed");
    }

    /// The response shape for an approval's current state.
    pub(crate) fn approval_answer(&self, a: &Approval) -> Answer {
        let mut body = DecisionResponse {
            request_id: a.request_id.clone(),
            decision: DecisionKind::Ask,
            reasons: a.decision.reasons.clone(),
            policy_id: a.decision.policy_id.clone(),
            rule: a.decision.rule.clone(),
            policy_revision: a.policy_revision.clone(),
            grantable: true,
            reason_code: None,
            token: None,
            token_id: None,
            expires_at: None,
            approval_id: Some(a.id.clone()),
            approval_expires_at: Some(rfc3339(a.expires)),
            retry_after: None,
            secrets: a.decision.secrets,
            session: a.session.clone(),
            hint: None,
        };
        let status = match a.state() {
            ApprovalState::Pending => {
                body.hint = Some(format!(
                    "still waiting for a human; poll again with ?wait=60 (lapses at {})",
                    rfc3339(a.expires)
                ));
                202
            }
            ApprovalState::Approved {
                token,
                token_id,
                expires_at,
                by,
                ..
            } => {
                body.decision = DecisionKind::Allow;
                body.reasons.push(format!("approved by {by}"));
                body.token = Some(token);
                body.token_id = Some(token_id);
                body.expires_at = Some(rfc3339(expires_at));
                200
            }
            ApprovalState::Denied { reason, by } => {
                body.decision = DecisionKind::Deny;
                body.reasons = vec![format!("denied by {by}: {reason}")];
                body.reason_code = Some("denied_by_user".into());
                body.grantable = false;
                body.hint = Some(
                    "the user said no; do not ask again for the same thing without new information"
                        .into(),
                );
                403
            }
            ApprovalState::Expired => {
                body.decision = DecisionKind::Deny;
                body.reasons = vec!["no one decided before the approval lapsed".into()];
                body.reason_code = Some("approval_expired".into());
                body.hint = Some("ask again when the user is present".into());
                403
            }
        };
        Answer { status, body }
    }

    /// `GET /v1/approvals/{id}?wait=N` from an agent.
    pub(crate) async fn poll_approval(
        &self,
        peer: &Peer,
        id: &str,
        wait: u64,
    ) -> Result<Answer, ApiError> {
        let not_found = || {
            ApiError::new(
                ErrorCode::ApprovalNotFound,
                format!("no approval {id} for this session"),
            )
            .field("approval_id")
            .hint("use the approval_id returned by POST /v1/requests, from the same session")
        };
        let a = self.inner.approvals.get(id).ok_or_else(not_found)?;
        // Only the session that asked may see the outcome (and its token).
        match self.inner.sessions.find(peer) {
            Some(s) if s.id == a.session => {}
            _ => return Err(not_found()),
        }
        let wait = wait.min(self.inner.cfg.approvals.max_wait_seconds);
        if wait > 0 && a.state() == ApprovalState::Pending {
            a.wait(Duration::from_secs(wait)).await;
        }
        Ok(self.approval_answer(&a))
    }

    /// The approval `id`, if it is still waiting for a human.
    fn pending_approval(&self, id: &str) -> Result<Arc<Approval>, ApiError> {
        let a = self.inner.approvals.get(id).ok_or_else(|| {
            ApiError::new(ErrorCode::ApprovalNotFound, format!("no approval {id}"))
                .hint("see `airlock approvals list`")
        })?;
        match a.state() {
            ApprovalState::Pending => Ok(a),
            other => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("approval {id} is already {}", other.name()),
            )),
        }
    }

    /// Approve (operator). `standing` keeps identical manifests from this
    /// session allowed for that long.
    pub(crate) async fn approve(
        &self,
        id: &str,
        by: &str,
        standing: Option<u64>,
    ) -> Result<Value, ApiError> {
        let a = self.pending_approval(id)?;
        let now = now_unix();
        if now > a.expires {
            self.expire(&a).await;
            return Err(ApiError::new(
                ErrorCode::ApprovalExpired,
                format!("approval {id} has lapsed"),
            ));
        }
        // Policy may have changed since the agent asked: a deny now wins.
        let again = self.inner.policy.evaluate(&a.input);
        if again.decision == DecisionKind::Deny {
            let reason = format!(
                "policy now denies it ({}: {})",
                again.rule,
                again.reasons.join("; ")
            );
            self.deny(id, "policy", Some(reason.clone())).await?;
            return Err(ApiError::new(ErrorCode::PolicyDenied, reason)
                .hint("the policy changed since the agent asked; this can no longer be approved"));
        }
        let standing = standing.map(|s| s.min(self.inner.cfg.approvals.max_standing_seconds));
        let minted = self.mint(&a.manifest, &a.session, &a.request_id, now)?;
        let until = standing.map(|s| now + s);
        let rec = RecordBody {
            kind: "approval".into(),
            agent: Some(a.agent.clone()),
            user: Some(self.inner.user.clone()),
            request_id: a.request_id.clone(),
            intent: intent_json(&a.manifest, &a.manifest_hash),
            decision: json!({"allowed": true, "decision": "allow", "by": by, "policy_id": a.decision.policy_id,
                "rule": a.decision.rule, "reasons": a.decision.reasons, "standing_until": until.map(rfc3339)}),
            execution: json!({"session": a.session, "granted": grant_json(&a.manifest, minted.expires_at)}),
            outcome: json!({"approval_id": a.id, "status": "approved", "token_id": minted.id, "expires_at": rfc3339(minted.expires_at)}),
            policy_revision: Some(a.policy_revision.clone()),
            token_id: Some(minted.id.clone()),
            approval_id: Some(a.id.clone()),
            peer: a.peer.clone(),
            ts: String::new(),
        };
        self.record(rec).await?;
        let settled = a.settle(ApprovalState::Approved {
            token: minted.token,
            token_id: minted.id.clone(),
            expires_at: minted.expires_at,
            by: by.to_string(),
            standing_until: until,
        });
        if !settled {
            // Raced with another decision or the expiry: take the token back.
            let _ = self.inner.tokens.revoke(&minted.id);
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("approval {id} was decided meanwhile"),
            ));
        }
        if let Some(u) = until {
            self.inner
                .approvals
                .add_standing(&a.session, &a.manifest_hash, &a.id, u);
        }
        tracing::info!(approval_id = %id, token_id = %minted.id, by, "approved");
        Ok(a.view())
    }

    /// Deny (operator).
    pub(crate) async fn deny(
        &self,
        id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Value, ApiError> {
        let a = self.pending_approval(id)?;
        let reason = reason.unwrap_or_else(|| "denied by the user".into());
        let rec = RecordBody {
            kind: "approval".into(),
            agent: Some(a.agent.clone()),
            user: Some(self.inner.user.clone()),
            request_id: a.request_id.clone(),
            intent: intent_json(&a.manifest, &a.manifest_hash),
            decision: json!({"allowed": false, "decision": "deny", "by": by, "reason_code": "denied_by_user", "reasons": [reason]}),
            outcome: json!({"approval_id": a.id, "status": "denied"}),
            policy_revision: Some(a.policy_revision.clone()),
            approval_id: Some(a.id.clone()),
            peer: a.peer.clone(),
            ..Default::default()
        };
        self.record(rec).await?;
        a.settle(ApprovalState::Denied {
            reason,
            by: by.to_string(),
        });
        tracing::info!(approval_id = %id, by, "denied");
        Ok(a.view())
    }
}

pub(crate) fn intent_json(m: &Manifest, hash: &str) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    v["manifest_hash"] = hash.into();
    v
}

pub(crate) fn decision_json(d: &Decision, labels: &[String]) -> Value {
    let mut v = json!({
        "allowed": d.decision == DecisionKind::Allow,
        "decision": d.decision.as_str(),
        "policy_id": d.policy_id,
        "rule": d.rule,
        "reasons": d.reasons,
        "grantable": d.grantable,
        "reason_code": d.reason_code,
        "labels": labels,
    });
    if let Some(t) = d.secrets {
        v["secrets"] = json!(t);
    }
    v
}

fn grant_json(m: &Manifest, expires_at: u64) -> Value {
    json!({
        "verbs": m.action.verbs(),
        "paths": m.paths,
        "hosts": m.hosts,
        "commands": m.commands,
        "expires_at": rfc3339(expires_at),
    })
}

fn deny_hint(d: &Decision) -> String {
    match d.reason_code.as_deref() {
        Some("quota_exceeded") => "a quota is used up; wait for retry_after seconds before asking again".into(),
        Some("policy_timeout") | Some("policy_error") => {
            "the policy could not decide in time; retry, and tell the user if it persists".into()
        }
        Some("quarantined") => "this session is quarantined; stop and tell the user".into(),
        _ if d.grantable => {
            "a human could grant this: narrow the request (fewer paths, a shorter duration) or ask the user".into()
        }
        _ => format!(
            "rule `{}` of policy `{}` never grants this; do not retry, choose other paths or ask the user",
            d.rule, d.policy_id
        ),
    }
}
