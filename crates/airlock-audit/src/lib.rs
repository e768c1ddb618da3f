//! The tamper-evident audit trail.
//!
//! CONTRACT (used by airlock-broker and the CLI; keep these signatures):
//! - Records are JSON lines in `dir/audit-NNNNNN.jsonl` segments, rotated by
//!   size; the chain (`prev_hash` → `hash`, SHA-256) continues across segments.
//! - [`AuditLog::append`] returns only after the record is durable (written
//!   and fdatasync'd); concurrent appends share one fdatasync (group commit).
//! - If a write or sync fails, the append fails with [`AuditError`], the file
//!   is rolled back to the last durable length, and the chain head does not
//!   move: nothing is acknowledged that is not on disk.
//! - [`verify`] detects edited, deleted, reordered, inserted and truncated
//!   records and names the first bad one.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// A record's sequence number; only the writer hands these out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct AuditSeq(u64);

impl AuditSeq {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What the caller supplies. Field names follow the seed's log record
/// (`ts, agent, user, request_id, intent, decision, execution, outcome`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordBody {
    /// RFC 3339 UTC; filled in by the writer when empty.
    #[serde(default)]
    pub ts: String,
    /// Record kind: `request`, `approval`, `fs`, `exec`, `commit`, `token`, `broker`, ...
    pub kind: String,
    pub agent: Option<String>,
    pub user: Option<String>,
    pub request_id: String,
    pub intent: serde_json::Value,
    pub decision: serde_json::Value,
    pub execution: serde_json::Value,
    pub outcome: serde_json::Value,
    pub policy_revision: Option<String>,
    pub token_id: Option<String>,
    pub approval_id: Option<String>,
    /// `{"uid", "gid", "pid", "exe", "start_time"}`.
    pub peer: serde_json::Value,
}

/// A record as stored: body plus chain fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub seq: u64,
    #[serde(flatten)]
    pub body: RecordBody,
    pub prev_hash: String,
    pub hash: String,
}

/// Returned once a record is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReceipt {
    pub seq: AuditSeq,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path} cannot be written: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("audit log {path} cannot be opened: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("audit log is corrupt at {location}: {reason}")]
    Corrupt { location: String, reason: String },
    #[error("audit writer has stopped")]
    Closed,
}

/// `[audit]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory for segments. Default: `$XDG_STATE_HOME/airlock/audit`.
    pub dir: Option<PathBuf>,
    /// Rotate when a segment reaches this many bytes. Default 64 MiB.
    pub max_segment_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { dir: None, max_segment_bytes: 64 * 1024 * 1024 }
    }
}

/// Handle to the writer; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct AuditLog {
    // implementation-defined
}

impl AuditLog {
    /// Open (creating) the log in `dir`, recover the chain head from the
    /// newest segment (a torn final line left by a crash is cut off and
    /// reported via tracing), and start the writer.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<AuditLog, AuditError> {
        let _ = (dir, max_segment_bytes);
        todo!()
    }

    /// Append one record; resolves when durable.
    pub async fn append(&self, body: RecordBody) -> Result<AuditReceipt, AuditError> {
        let _ = body;
        todo!()
    }

    /// Blocking variant for non-async callers.
    pub fn append_blocking(&self, body: RecordBody) -> Result<AuditReceipt, AuditError> {
        let _ = body;
        todo!()
    }

    /// The last durable record's seq and hash (`None` for an empty log).
    pub fn head(&self) -> Option<(u64, String)> {
        todo!()
    }

    /// Flush and stop the writer (called on shutdown); later appends fail with `Closed`.
    pub fn close(&self) {
        todo!()
    }
}

/// Result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub segments: usize,
    pub head_hash: Option<String>,
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("audit chain broken at {file}:{line} (seq {seq:?}): {reason}")]
pub struct VerifyFailure {
    pub file: String,
    pub line: u64,
    pub seq: Option<u64>,
    pub reason: String,
}

/// Verify every segment in `dir`.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyFailure> {
    let _ = dir;
    todo!()
}

/// Every record with this request id, in order.
pub fn find_request(dir: &Path, request_id: &str) -> Result<Vec<Record>, AuditError> {
    let _ = (dir, request_id);
    todo!()
}

/// The last `n` records, oldest first.
pub fn tail(dir: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    let _ = (dir, n);
    todo!()
}

/// Call `f` for each record appended after `after_seq`, polling until `f` returns false.
pub fn follow(dir: &Path, after_seq: Option<u64>, f: &mut dyn FnMut(&Record) -> bool) -> Result<(), AuditError> {
    let _ = (dir, after_seq, f);
    todo!()
}
