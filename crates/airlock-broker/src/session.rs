//! Agent sessions. A session is held by one process, named by (pid, start
//! time). A peer belongs to the session of the nearest holder in its
//! ancestry; a peer with none becomes the holder of a new session. Tokens
//! are bound to the session, so a token carried to an unrelated process (or
//! to a later process reusing a PID) is refused.
//!
//! Holding a session only ever takes rights away: the operator socket
//! refuses every process whose ancestry includes a holder, so an agent and
//! everything it spawns cannot approve its own requests. That is why any
//! process may register itself (or its parent) as a holder.
//!
//! The registry is persisted to `sessions.json` in the state directory so a
//! broker restart neither orphans live tokens nor lets a live agent past the
//! operator check; holders that have exited are dropped on load and by a
//! periodic sweep.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::peer::{alive, Peer, ProcId};

/// One session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `s-` + 16 hex digits, derived from the boot id and the holder.
    pub id: String,
    /// The holding process.
    pub holder: ProcId,
    pub uid: u32,
    /// The holder's executable.
    pub exe: Option<String>,
    /// Label the agent gave (manifest `session`, or at registration).
    pub label: Option<String>,
    /// Registered explicitly (`POST /v1/sessions`, `airlock session`) rather
    /// than on first request.
    pub explicit: bool,
    /// Unix seconds.
    pub created: u64,
    /// Set by `airlock sessions quarantine`: every request is denied.
    #[serde(default)]
    pub quarantined: bool,
}

impl Session {
    /// Quota key: the agent program (for a session started with `airlock
    /// session --label L -- PROGRAM`, the label; the holder is Airlock itself).
    pub fn agent_key(&self) -> String {
        match (&self.label, self.explicit) {
            (Some(l), true) => format!("label:{l}"),
            _ => self
                .exe
                .clone()
                .unwrap_or_else(|| format!("uid:{}", self.uid)),
        }
    }

    /// The agent as audit records name it: the label of an explicit
    /// session, else the holder's executable name.
    pub fn agent_name(&self) -> String {
        match (&self.label, self.explicit) {
            (Some(l), true) => l.clone(),
            _ => self
                .exe
                .as_deref()
                .and_then(|e| e.rsplit('/').next())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("pid:{}", self.holder.pid)),
        }
    }
}

/// The registry.
pub struct Sessions {
    boot_id: String,
    path: Option<PathBuf>,
    map: Mutex<HashMap<ProcId, Arc<Session>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("path", &self.path)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    /// Load the registry from `path` (missing = empty), dropping sessions
    /// whose holder has exited.
    pub fn open(path: Option<PathBuf>) -> Sessions {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mut map = HashMap::new();
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<Vec<Session>>(&bytes) {
                    Ok(list) => {
                        for s in list {
                            if alive(s.holder) {
                                map.insert(s.holder, Arc::new(s));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "ignoring unreadable session registry")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot read session registry")
                }
            }
        }
        Sessions {
            boot_id,
            path,
            map: Mutex::new(map),
        }
    }

    fn id_for(&self, holder: ProcId) -> String {
        let mut h = Sha256::new();
        h.update(self.boot_id.as_bytes());
        h.update(holder.pid.to_le_bytes());
        h.update(holder.start_time.to_le_bytes());
        format!("s-{}", &hex::encode(h.finalize())[..16])
    }

    /// The session holding the nearest ancestor of `peer` (itself included).
    pub fn find(&self, peer: &Peer) -> Option<Arc<Session>> {
        let map = lock(&self.map);
        peer.ancestry.iter().find_map(|p| map.get(p).cloned())
    }

    /// The peer's session, making the peer a holder when it has none.
    pub fn resolve(&self, peer: &Peer, label: Option<&str>) -> Arc<Session> {
        if let Some(s) = self.find(peer) {
            return s;
        }
        self.register(peer.id(), peer.uid, peer.exe.clone(), label, false)
    }

    /// Register `holder` (the peer or one of its ancestors). Idempotent.
    pub fn register(
        &self,
        holder: ProcId,
        uid: u32,
        exe: Option<String>,
        label: Option<&str>,
        explicit: bool,
    ) -> Arc<Session> {
        let (s, snapshot) = {
            let mut map = lock(&self.map);
            if let Some(s) = map.get(&holder) {
                return s.clone();
            }
            let s = Arc::new(Session {
                id: self.id_for(holder),
                holder,
                uid,
                exe,
                label: label.map(str::to_owned),
                explicit,
                created: crate::now_unix(),
                quarantined: false,
            });
            map.insert(holder, s.clone());
            (
                s,
                self.path
                    .as_ref()
                    .map(|_| map.values().map(|s| (**s).clone()).collect::<Vec<_>>()),
            )
        };
        tracing::info!(session = %s.id, pid = holder.pid, exe = ?s.exe, explicit, "session opened");
        if let Some(list) = snapshot {
            self.persist(&list);
        }
        s
    }

    fn persist(&self, list: &[Session]) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_data()?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "cannot persist session registry");
        }
    }

    /// Drop sessions whose holder has exited; returns how many.
    pub fn sweep(&self) -> usize {
        let (n, snapshot) = {
            let mut map = lock(&self.map);
            let before = map.len();
            map.retain(|id, _| alive(*id));
            let n = before - map.len();
            (
                n,
                (n > 0).then(|| map.values().map(|s| (**s).clone()).collect::<Vec<_>>()),
            )
        };
        if let Some(list) = snapshot {
            self.persist(&list);
        }
        n
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<Session> {
        let mut v: Vec<Session> = lock(&self.map).values().map(|s| (**s).clone()).collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.map).values().find(|s| s.id == id).cloned()
    }

    /// Quarantine a session (incident response): every later request
    /// from it is denied. The holder stays registered, so the agent stays
    /// off the operator socket. Returns the session, or `None` if unknown.
    pub fn quarantine(&self, id: &str) -> Option<Session> {
        let (updated, snapshot) = {
            let mut map = lock(&self.map);
            let key = map.iter().find(|(_, s)| s.id == id).map(|(k, _)| *k)?;
            let mut s = (*map[&key]).clone();
            s.quarantined = true;
            map.insert(key, Arc::new(s.clone()));
            (s, map.values().map(|s| (**s).clone()).collect::<Vec<_>>())
        };
        self.persist(&snapshot);
        Some(updated)
    }
}
