//! Pending approvals: created when policy says `ask`, bound to the exact
//! manifest (its canonical hash) and to the asking session, resolved by a
//! human on the operator socket, or lapsing after a timeout.
//!
//! A human may approve "for" a duration: identical manifests (same hash)
//! from the same session are then allowed without asking again until it
//! ends ("standing approval"). Policy still runs first every time, so a
//! standing approval never overrides a deny.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_core::{Decision, Manifest};
use serde::Serialize;
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What became of an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved {
        token: String,
        token_id: String,
        /// Unix seconds.
        expires_at: u64,
        by: String,
        /// Standing approval end (unix seconds), when approved `--for`.
        standing_until: Option<u64>,
    },
    Denied {
        reason: String,
        by: String,
    },
    Expired,
}

impl ApprovalState {
    pub fn name(&self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved { .. } => "approved",
            ApprovalState::Denied { .. } => "denied",
            ApprovalState::Expired => "expired",
        }
    }
}

/// One approval.
#[derive(Debug)]
pub struct Approval {
    pub id: String,
    pub request_id: String,
    pub session: String,
    pub agent: String,
    pub manifest: Manifest,
    pub manifest_hash: String,
    /// Policy's `ask` decision (rule and reasons shown to the human).
    pub decision: Decision,
    pub policy_revision: String,
    pub labels: Vec<String>,
    pub peer: serde_json::Value,
    /// The policy input it was decided on (re-evaluated at approval time).
    pub input: serde_json::Value,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; pending past this lapses.
    pub expires: u64,
    state: watch::Sender<ApprovalState>,
}

impl Approval {
    pub fn state(&self) -> ApprovalState {
        self.state.borrow().clone()
    }

    /// Wait until the state is no longer `Pending` (or `timeout` passes).
    pub async fn wait(&self, timeout: std::time::Duration) -> ApprovalState {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| *s != ApprovalState::Pending)).await;
        self.state()
    }

    /// Move from `Pending` to `next`; false when already decided.
    pub fn settle(&self, next: ApprovalState) -> bool {
        self.state.send_if_modified(|s| {
            if *s == ApprovalState::Pending {
                *s = next;
                true
            } else {
                false
            }
        })
    }

    /// The view shown by `airlock approvals list|show`.
    pub fn view(&self) -> serde_json::Value {
        let state = self.state();
        let mut v = serde_json::json!({
            "approval_id": self.id,
            "request_id": self.request_id,
            "session": self.session,
            "agent": self.agent,
            "state": state.name(),
            "manifest": self.manifest,
            "manifest_hash": self.manifest_hash,
            "policy_id": self.decision.policy_id,
            "rule": self.decision.rule,
            "reasons": self.decision.reasons,
            "labels": self.labels,
            "policy_revision": self.policy_revision,
            "peer": self.peer,
            "created": crate::rfc3339(self.created),
            "expires": crate::rfc3339(self.expires),
        });
        match state {
            ApprovalState::Approved {
                token_id,
                by,
                standing_until,
                ..
            } => {
                v["token_id"] = token_id.into();
                v["by"] = by.into();
                v["standing_until"] = standing_until.map(crate::rfc3339).into();
            }
            ApprovalState::Denied { reason, by } => {
                v["reason"] = reason.into();
                v["by"] = by.into();
            }
            _ => {}
        }
        v
    }
}

/// The set of approvals, plus standing approvals.
#[derive(Debug, Default)]
pub struct Approvals {
    map: Mutex<HashMap<String, Arc<Approval>>>,
    /// (session, manifest hash) → (approval id, until).
    standing: Mutex<HashMap<(String, String), (String, u64)>>,
}

/// Fields of a new approval.
pub struct NewApproval {
    pub id: String,
    pub request_id: String,
    pub session: String,
    pub agent: String,
    pub manifest: Manifest,
    pub manifest_hash: String,
    pub decision: Decision,
    pub policy_revision: String,
    pub labels: Vec<String>,
    pub peer: serde_json::Value,
    pub input: serde_json::Value,
    pub created: u64,
    pub expires: u64,
}

impl Approvals {
    pub fn pending_count(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|a| a.state() == ApprovalState::Pending)
            .count()
    }

    pub fn insert(&self, n: NewApproval) -> Arc<Approval> {
        let (tx, _rx) = watch::channel(ApprovalState::Pending);
        let a = Arc::new(Approval {
            id: n.id,
            request_id: n.request_id,
            session: n.session,
            agent: n.agent,
            manifest: n.manifest,
            manifest_hash: n.manifest_hash,
            decision: n.decision,
            policy_revision: n.policy_revision,
            labels: n.labels,
            peer: n.peer,
            input: n.input,
            created: n.created,
            expires: n.expires,
            state: tx,
        });
        {
            let mut m = lock(&self.map);
            // Decided approvals stay an hour after they lapse, for late polls.
            let now = a.created;
            m.retain(|_, old| old.state() == ApprovalState::Pending || old.expires + 3600 > now);
            m.insert(a.id.clone(), a.clone());
        }
        a
    }

    /// Remove an approval that was never announced (its audit record failed).
    pub fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Approval>> {
        lock(&self.map).get(id).cloned()
    }

    /// All approvals (pending first, then newest first); decided ones are
    /// kept for an hour after they lapse so agents can still poll them.
    pub fn list(&self, now: u64) -> Vec<Arc<Approval>> {
        let mut m = lock(&self.map);
        m.retain(|_, a| a.state() == ApprovalState::Pending || a.expires + 3600 > now);
        let mut v: Vec<Arc<Approval>> = m.values().cloned().collect();
        drop(m);
        v.sort_by(|a, b| {
            (a.state() != ApprovalState::Pending)
                .cmp(&(b.state() != ApprovalState::Pending))
                .then(b.created.cmp(&a.created))
        });
        v
    }

    pub fn add_standing(&self, session: &str, hash: &str, approval_id: &str, until: u64) {
        lock(&self.standing).insert(
            (session.to_string(), hash.to_string()),
            (approval_id.to_string(), until),
        );
    }

    /// The standing approval covering this exact manifest for this session.
    pub fn standing(&self, session: &str, hash: &str, now: u64) -> Option<String> {
        let mut s = lock(&self.standing);
        let key = (session.to_string(), hash.to_string());
        match s.get(&key) {
            Some((id, until)) if *until > now => Some(id.clone()),
            Some(_) => {
                s.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Withdraw standing approvals of a session (quarantine, revocation).
    pub fn clear_standing(&self, session: Option<&str>) {
        let mut s = lock(&self.standing);
        match session {
            Some(sess) => s.retain(|(k, _), _| k != sess),
            None => s.clear(),
        }
    }
}
