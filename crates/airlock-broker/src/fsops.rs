//! Brokered file operations: verify the token for the exact verb and path,
//! re-check the policy's never-list and labels on the concrete path, resolve
//! beneath the granted root, read the merged (staged over real) view, stage
//! writes, and record every operation.

use std::collections::BTreeMap;

use airlock_audit::RecordBody;
use airlock_core::api::{ApiRequest, Encoding};
use airlock_core::{Action, ApiError, DecisionKind, ErrorCode, Verb};
use airlock_fs::{ChangeKind, FileKind, FsError, GrantRoot};
use airlock_token::{Access, Capability, TokenError};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::peer::Peer;
use crate::session::Session;
use crate::{now_unix, Broker};

/// API error for a token failure, with a hint on what to do.
pub(crate) fn token_error(e: &TokenError) -> ApiError {
    let hint = match e {
        TokenError::Invalid => "the token is malformed, tampered with or not issued by this broker; request a new capability with POST /v1/requests",
        TokenError::Expired { .. } => "the capability has expired; request a new one with POST /v1/requests",
        TokenError::Revoked { .. } => "a human revoked this capability; do not retry without asking the user",
        TokenError::WrongSession => "tokens are bound to the session (process tree) that requested them; request your own capability",
        TokenError::Scope { .. } => "request a capability that covers this path and operation (read_files to read, list_files to list, edit_files to write, delete or rename)",
        _ => "retry later",
    };
    ApiError::new(e.code(), e.to_string()).hint(hint)
}

pub(crate) fn fs_error(e: FsError) -> ApiError {
    let hint = match &e {
        FsError::NotFound { .. } => Some("check the path; list its directory to see what exists"),
        FsError::Escape { .. } => Some("name the real path inside your grant; symlinks, hard links and '..' out of a grant are refused"),
        FsError::Protected { .. } => Some("this path is protected (hooks, shell rc files, agent config); it can only be changed by the user"),
        FsError::Conflict { .. } => Some("the file changed on disk; read it again and redo the edit"),
        _ => None,
    };
    let mut a = ApiError::new(e.code(), e.to_string());
    if let Some(h) = hint {
        a = a.hint(h);
    }
    a
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// The directory staged writes under `root` are kept against: the root when
/// it is a directory, else its nearest existing ancestor directory (a
/// single-file grant, existing or not, or a directory still to be made).
pub(crate) fn staging_base(root: &str) -> String {
    let mut cur = root;
    loop {
        match GrantRoot::open(cur) {
            Ok(g) if !g.is_file() => return cur.to_string(),
            _ if cur == "/" => return "/".to_string(),
            _ => cur = parent(cur),
        }
    }
}

fn encode(data: &[u8]) -> (Encoding, String) {
    match std::str::from_utf8(data) {
        Ok(s) => (Encoding::Utf8, s.to_string()),
        Err(_) => (
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(data),
        ),
    }
}

/// The parts of one `fs` or `exec` audit record.
pub(crate) struct FsRecord<'a> {
    pub kind: &'static str,
    pub request_id: &'a str,
    pub token_id: Option<&'a str>,
    pub intent: Value,
    pub decision: Value,
    pub execution: Value,
    pub outcome: Value,
}

/// One checked access.
struct Checked {
    cap: Capability,
    root: String,
}

impl Checked {
    /// The `fs` record of an access this capability allowed.
    fn record(&self, intent: Value, execution: Value, outcome: Value) -> FsRecord<'_> {
        FsRecord {
            kind: "fs",
            request_id: self.cap.request_id(),
            token_id: Some(self.cap.token_id()),
            intent,
            decision: json!({"allowed": true, "token_id": self.cap.token_id(), "verb": self.cap.verb()}),
            execution,
            outcome,
        }
    }
}

/// What a blocking operation returns: the response body and audit details.
struct Done {
    body: Value,
    execution: Value,
    outcome: Value,
    read_bytes: Option<u64>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("file operation failed: {e}")))?
}

impl Broker {
    fn verify(
        &self,
        token: &str,
        session: &Session,
        verb: Verb,
        path: &str,
    ) -> Result<Checked, ApiError> {
        let cap = self
            .inner
            .tokens
            .verify(
                token,
                &Access {
                    session: &session.id,
                    verb,
                    path: Some(path),
                    host: None,
                    command: None,
                    now: now_unix(),
                },
            )
            .map_err(|e| token_error(&e))?;
        let root = cap
            .grant_root()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TokenScope,
                    format!("the token grants no path covering {path}"),
                )
            })?
            .to_string();
        Ok(Checked { cap, root })
    }

    /// Policy on the concrete path: the never-list (deny) always applies,
    /// and a path may not carry sensitivity labels its grant root lacked.
    pub(crate) fn access_check(
        &self,
        action: Action,
        path: &str,
        root: &str,
    ) -> Result<(), ApiError> {
        let labels = self.inner.classifier.labels(path);
        if !labels.is_empty() {
            let covered = self.inner.classifier.labels(root);
            let extra: Vec<&String> = labels.iter().filter(|l| !covered.contains(l)).collect();
            if !extra.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::PolicyDenied,
                    format!("{path} is labelled {} but the capability was granted for {root}, which is not", join(&extra)),
                )
                .hint(format!("request {path} by name so the user can decide on the labelled data")));
            }
        }
        let ws = self
            .inner
            .workspaces
            .iter()
            .find(|w| airlock_core::path::is_within(path, w));
        let input = json!({
            "action": action.as_str(),
            "paths": [path],
            "path_infos": [{"path": path, "labels": labels, "workspace": ws}],
            "labels": labels,
            "workspaces": self.inner.workspaces,
            "broker_paths": self.inner.broker_paths,
            "usage": {},
            "access": true,
            "grant_root": root,
        });
        let d = self.inner.policy.evaluate(&input);
        if d.decision == DecisionKind::Deny {
            let code = if d.reason_code.as_deref() == Some("policy_timeout") {
                ErrorCode::PolicyTimeout
            } else {
                ErrorCode::PolicyDenied
            };
            return Err(ApiError::new(
                code,
                format!(
                    "{} (rule {} of {})",
                    d.reasons.join("; "),
                    d.rule,
                    d.policy_id
                ),
            )
            .hint("this path is never shared, whatever the capability; choose another path"));
        }
        Ok(())
    }

    pub(crate) async fn record_access(
        &self,
        peer: &Peer,
        session: &Session,
        r: FsRecord<'_>,
    ) -> Result<(), ApiError> {
        self.record(self.access_body(peer, session, r))
            .await
            .map(|_| ())
    }

    /// The audit record of an access by `session`'s `peer`.
    pub(crate) fn access_body(
        &self,
        peer: &Peer,
        session: &Session,
        r: FsRecord<'_>,
    ) -> RecordBody {
        let FsRecord {
            kind,
            request_id,
            token_id,
            intent,
            decision,
            execution,
            outcome,
        } = r;
        RecordBody {
            kind: kind.into(),
            agent: Some(session.agent_name()),
            user: Some(self.inner.user.clone()),
            request_id: request_id.to_string(),
            intent,
            decision,
            execution,
            outcome,
            policy_revision: Some(self.inner.policy.revision()),
            token_id: token_id.map(str::to_owned),
            approval_id: None,
            peer: peer.to_json(),
            ts: String::new(),
        }
    }

    /// `POST /v1/fs/*`.
    pub(crate) async fn fs(
        &self,
        peer: &Peer,
        token: Option<&str>,
        op: &'static str,
        req: ApiRequest,
    ) -> Result<Value, ApiError> {
        let session = self.inner.sessions.resolve(peer, None);
        let intent = fs_intent(op, &req);
        let res = self.fs_inner(peer, &session, token, op, req).await;
        if let Err(e) = &res {
            if e.code != ErrorCode::AuditUnavailable {
                // Refusals are recorded too: security teams look for them.
                let _ = self
                    .record_access(
                        peer,
                        &session,
                        FsRecord {
                            kind: "fs",
                            request_id: &crate::new_id("r"),
                            token_id: None,
                            intent,
                            decision: json!({"allowed": false, "error": e}),
                            execution: Value::Null,
                            outcome: Value::Null,
                        },
                    )
                    .await;
            }
        }
        res
    }

    async fn fs_inner(
        &self,
        peer: &Peer,
        session: &Session,
        token: Option<&str>,
        op: &'static str,
        req: ApiRequest,
    ) -> Result<Value, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::new(ErrorCode::TokenMissing, "no capability token presented")
                .hint("send `Authorization: Bearer <token>` with a token from POST /v1/requests")
        })?;
        if session.quarantined {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("session {} is quarantined by the user", session.id),
            )
            .hint("stop and tell the user"));
        }
        let intent = fs_intent(op, &req);
        let max_read = self.inner.cfg.server.max_read_bytes;
        let sid = session.id.clone();
        match req {
            ApiRequest::Read(r) => {
                let c = self.verify(token, session, Verb::Read, &r.path)?;
                self.access_check(Action::ReadFiles, &r.path, &c.root)?;
                let qkey = session.agent_key();
                self.inner.quotas.check_read(&qkey, now_unix())?;
                let area = self.existing_area(&sid, &staging_base(&c.root));
                let root = c.root.clone();
                let path = r.path.clone();
                let (data, size, staged, real) = blocking(move || {
                    if let Some(area) = area {
                        match area.read_staged(&path) {
                            Ok(Some(bytes)) => {
                                return Ok((
                                    slice(&bytes, r.offset, r.length, max_read),
                                    bytes.len() as u64,
                                    true,
                                    None,
                                ))
                            }
                            Ok(None) => {}
                            Err(e) => return Err(fs_error(e)),
                        }
                    }
                    let g = GrantRoot::open(&root).map_err(fs_error)?;
                    let rp = g.resolve(&path).map_err(fs_error)?;
                    let real = rp.real_path();
                    let data =
                        airlock_fs::read(&rp, r.offset, r.length, max_read).map_err(fs_error)?;
                    let size = airlock_fs::stat(&rp)
                        .map(|s| s.size)
                        .unwrap_or(data.len() as u64);
                    Ok((data, size, false, real))
                })
                .await?;
                if let Some(real) = real.as_deref().filter(|p| *p != r.path) {
                    self.access_check(Action::ReadFiles, real, &c.root)?;
                }
                let n = data.len() as u64;
                let (encoding, content) = encode(&data);
                let eof = r.offset + n >= size;
                let body = json!({"path": r.path, "encoding": encoding, "content": content, "offset": r.offset,
                    "length": n, "size": size, "eof": eof, "staged": staged});
                let done = Done {
                    execution: json!({"grant_root": c.root, "resolved": real, "staged": staged}),
                    outcome: json!({"bytes_read": n, "files_read": [r.path]}),
                    body,
                    read_bytes: Some(n),
                };
                self.finish(peer, session, &c, intent, done).await
            }
            ApiRequest::Stat(r) => {
                let c = self.verify(token, session, Verb::Stat, &r.path)?;
                self.access_check(Action::ListFiles, &r.path, &c.root)?;
                let area = self.existing_area(&sid, &staging_base(&c.root));
                let root = c.root.clone();
                let path = r.path.clone();
                let st = blocking(move || stat_merged(area, &root, &path)).await?;
                let done = Done {
                    execution: json!({"grant_root": c.root}),
                    outcome: Value::Null,
                    body: st,
                    read_bytes: None,
                };
                self.finish(peer, session, &c, intent, done).await
            }
            ApiRequest::List(r) => {
                let c = self.verify(token, session, Verb::List, &r.path)?;
                self.access_check(Action::ListFiles, &r.path, &c.root)?;
                let area = self.existing_area(&sid, &staging_base(&c.root));
                let root = c.root.clone();
                let path = r.path.clone();
                let (entries, real) = blocking(move || list_merged(area, &root, &path)).await?;
                if let Some(real) = real.as_deref().filter(|p| *p != r.path) {
                    self.access_check(Action::ListFiles, real, &c.root)?;
                }
                let n = entries.len();
                let done = Done {
                    execution: json!({"grant_root": c.root, "resolved": real}),
                    outcome: json!({"entries": n}),
                    body: json!({"path": r.path, "entries": entries}),
                    read_bytes: None,
                };
                self.finish(peer, session, &c, intent, done).await
            }
            ApiRequest::Write(w) => {
                let c = self.verify(token, session, Verb::Write, &w.path)?;
                self.access_check(Action::EditFiles, &w.path, &c.root)?;
                let data = match w.encoding {
                    Encoding::Utf8 => w.content.into_bytes(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(w.content.as_bytes()).map_err(|e| {
                        ApiError::new(ErrorCode::InvalidValue, format!("content is not valid base64: {e}"))
                            .field("content")
                            .hint("send standard base64 with padding, or use \"encoding\": \"utf8\" for text")
                    })?,
                };
                let n = data.len();
                let (path, mode) = (w.path.clone(), w.mode);
                let base = staging_base(&c.root);
                self.stage(
                    peer,
                    session,
                    &c,
                    intent,
                    base,
                    json!({"path": w.path, "bytes": n}),
                    move |a| a.write(&path, &data, mode),
                )
                .await
            }
            ApiRequest::Delete(d) => {
                let c = self.verify(token, session, Verb::Delete, &d.path)?;
                self.access_check(Action::EditFiles, &d.path, &c.root)?;
                let path = d.path.clone();
                let base = staging_base(&c.root);
                self.stage(
                    peer,
                    session,
                    &c,
                    intent,
                    base,
                    json!({"path": d.path, "deleted": true}),
                    move |a| a.delete(&path),
                )
                .await
            }
            ApiRequest::Mkdir(d) => {
                let c = self.verify(token, session, Verb::Write, &d.path)?;
                self.access_check(Action::EditFiles, &d.path, &c.root)?;
                let path = d.path.clone();
                let base = staging_base(&c.root);
                self.stage(
                    peer,
                    session,
                    &c,
                    intent,
                    base,
                    json!({"path": d.path, "directory": true}),
                    move |a| a.mkdir(&path),
                )
                .await
            }
            ApiRequest::Rename(r) => {
                let from = self.verify(token, session, Verb::Delete, &r.from)?;
                let to = self.verify(token, session, Verb::Write, &r.to)?;
                self.access_check(Action::EditFiles, &r.from, &from.root)?;
                self.access_check(Action::EditFiles, &r.to, &to.root)?;
                let base = staging_base(&from.root);
                if staging_base(&to.root) != base {
                    return Err(ApiError::new(ErrorCode::InvalidValue, "source and destination lie under different grants")
                        .field("to")
                        .hint("rename within one granted directory, or write the new file and delete the old one"));
                }
                let (f, t) = (r.from.clone(), r.to.clone());
                self.stage(
                    peer,
                    session,
                    &from,
                    intent,
                    base,
                    json!({"from": r.from, "to": r.to}),
                    move |a| a.rename(&f, &t),
                )
                .await
            }
            ApiRequest::Manifest(_) | ApiRequest::Exec(_) => {
                Err(ApiError::new(ErrorCode::Internal, "not a file operation"))
            }
        }
    }

    /// Record a read-side operation, count read quota, return its body.
    async fn finish(
        &self,
        peer: &Peer,
        session: &Session,
        c: &Checked,
        intent: Value,
        done: Done,
    ) -> Result<Value, ApiError> {
        self.record_access(
            peer,
            session,
            c.record(intent, done.execution, done.outcome),
        )
        .await?;
        if let Some(n) = done.read_bytes {
            self.inner
                .quotas
                .count_read(&session.agent_key(), n, now_unix());
        }
        Ok(done.body)
    }

    /// A staged mutation: its intent record (durable before anything
    /// changes), the change in the session's staging area over `base`, then
    /// its outcome record (also when the change failed).
    #[allow(clippy::too_many_arguments)]
    async fn stage(
        &self,
        peer: &Peer,
        session: &Session,
        c: &Checked,
        intent: Value,
        base: String,
        what: Value,
        op: impl FnOnce(&airlock_fs::StagingArea) -> Result<(), FsError> + Send + 'static,
    ) -> Result<Value, ApiError> {
        self.intent_record(peer, session, c, intent.clone()).await?;
        let b = self.clone();
        let sid = session.id.clone();
        let area_id = blocking(move || {
            let area = b.area(&sid, &base).map_err(fs_error)?;
            op(&area).map_err(fs_error)?;
            Ok(area.id().to_string())
        })
        .await;
        self.mutation_outcome(peer, session, c, intent, area_id, what)
            .await
    }

    /// The durable "about to change" record of a mutation.
    async fn intent_record(
        &self,
        peer: &Peer,
        session: &Session,
        c: &Checked,
        mut intent: Value,
    ) -> Result<(), ApiError> {
        intent["phase"] = "intent".into();
        self.record_access(
            peer,
            session,
            c.record(intent, json!({"grant_root": c.root}), Value::Null),
        )
        .await
    }

    /// The outcome record of a mutation (also when it failed).
    async fn mutation_outcome(
        &self,
        peer: &Peer,
        session: &Session,
        c: &Checked,
        mut intent: Value,
        res: Result<String, ApiError>,
        what: Value,
    ) -> Result<Value, ApiError> {
        intent["phase"] = "outcome".into();
        let (outcome, ret) = match res {
            Ok(area_id) => {
                let mut body = what.clone();
                body["staged"] = true.into();
                body["staging_id"] = area_id.clone().into();
                body["hint"] = format!(
                    "staged for review; the user applies it with `airlock staged commit {area_id}`"
                )
                .into();
                (json!({"staged": what, "staging_id": area_id}), Ok(body))
            }
            Err(e) => (json!({"error": e}), Err(e)),
        };
        self.record_access(
            peer,
            session,
            c.record(intent, json!({"grant_root": c.root}), outcome),
        )
        .await?;
        ret
    }
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

fn fs_intent(op: &str, req: &ApiRequest) -> Value {
    match req {
        ApiRequest::Read(r) => {
            json!({"action": op, "path": r.path, "offset": r.offset, "length": r.length})
        }
        ApiRequest::List(r)
        | ApiRequest::Stat(r)
        | ApiRequest::Delete(r)
        | ApiRequest::Mkdir(r) => {
            json!({"action": op, "path": r.path})
        }
        ApiRequest::Write(w) => {
            json!({"action": op, "path": w.path, "encoding": w.encoding, "content_bytes": w.content.len(), "mode": w.mode})
        }
        ApiRequest::Rename(r) => json!({"action": op, "from": r.from, "to": r.to}),
        ApiRequest::Exec(e) => json!({"action": op, "argv": e.argv, "cwd": e.cwd}),
        ApiRequest::Manifest(m) => json!({"action": op, "manifest": m}),
    }
}

fn slice(bytes: &[u8], offset: u64, len: Option<u64>, max: u64) -> Vec<u8> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let cap = len.map_or(max, |l| l.min(max));
    let end = start
        .saturating_add(usize::try_from(cap).unwrap_or(usize::MAX))
        .min(bytes.len());
    bytes[start..end].to_vec()
}

/// Stat in the merged view.
fn stat_merged(
    area: Option<airlock_fs::StagingArea>,
    root: &str,
    path: &str,
) -> Result<Value, ApiError> {
    if let Some(area) = &area {
        let changes = area.changes().map_err(fs_error)?;
        if let Some(ch) = changes.iter().find(|c| c.path == path) {
            if ch.kind == ChangeKind::Deleted {
                return Err(fs_error(FsError::NotFound {
                    path: path.to_string(),
                }));
            }
            let kind = match ch.kind {
                ChangeKind::Dir => FileKind::Dir,
                ChangeKind::Symlink => FileKind::Symlink,
                _ => FileKind::File,
            };
            return Ok(json!({"path": path, "kind": kind, "size": ch.size, "staged": true}));
        }
        if changes
            .iter()
            .any(|c| c.kind != ChangeKind::Deleted && airlock_core::path::is_within(&c.path, path))
        {
            // A directory that exists only because staged files are in it.
            if GrantRoot::open(root)
                .and_then(|g| g.resolve(path))
                .map(|rp| rp.exists())
                .unwrap_or(false)
            {
                // Real directory: fall through to the real stat.
            } else {
                return Ok(json!({"path": path, "kind": FileKind::Dir, "size": 0, "staged": true}));
            }
        }
    }
    let g = GrantRoot::open(root).map_err(fs_error)?;
    let rp = g.resolve(path).map_err(fs_error)?;
    let st = airlock_fs::stat(&rp).map_err(fs_error)?;
    serde_json::to_value(st).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// List in the merged view: real entries, minus staged deletions, plus
/// staged additions (and directories that exist only through them).
fn list_merged(
    area: Option<airlock_fs::StagingArea>,
    root: &str,
    path: &str,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    let mut real_path = None;
    let mut real_found = false;
    match GrantRoot::open(root).and_then(|g| g.resolve(path)) {
        Ok(rp) if rp.exists() => {
            real_path = rp.real_path();
            for e in airlock_fs::list(&rp).map_err(fs_error)? {
                entries.insert(
                    e.name.clone(),
                    json!({"name": e.name, "kind": e.kind, "size": e.size}),
                );
            }
            real_found = true;
        }
        Ok(_) | Err(FsError::NotFound { .. }) => {}
        Err(e) => return Err(fs_error(e)),
    }
    let mut staged_any = false;
    if let Some(area) = &area {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        for ch in area.changes().map_err(fs_error)? {
            let Some(rest) = ch.path.strip_prefix(&prefix) else {
                continue;
            };
            staged_any = true;
            match rest.split_once('/') {
                None => {
                    if ch.kind == ChangeKind::Deleted {
                        entries.remove(rest);
                    } else {
                        let kind = match ch.kind {
                            ChangeKind::Dir => FileKind::Dir,
                            ChangeKind::Symlink => FileKind::Symlink,
                            _ => FileKind::File,
                        };
                        entries.insert(
                            rest.to_string(),
                            json!({"name": rest, "kind": kind, "size": ch.size, "staged": true}),
                        );
                    }
                }
                Some((dir, _)) if ch.kind != ChangeKind::Deleted => {
                    entries.entry(dir.to_string()).or_insert_with(
                        || json!({"name": dir, "kind": FileKind::Dir, "size": 0, "staged": true}),
                    );
                }
                Some(_) => {}
            }
        }
    }
    if !real_found && !staged_any {
        return Err(fs_error(FsError::NotFound {
            path: path.to_string(),
        }));
    }
    Ok((entries.into_values().collect(), real_path))
}
