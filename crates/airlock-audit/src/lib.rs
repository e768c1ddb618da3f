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
//!
//! # Record format
//!
//! Each segment `audit-NNNNNN.jsonl` (numbered from `000001`, no gaps) holds
//! one record per line, UTF-8, `\n`-terminated, keys in this fixed order:
//!
//! ```text
//! {"seq":1,"ts":"2026-01-12T14:03:22.123Z","kind":"request","agent":"…","user":"…",
//!  "request_id":"r-9a2b3c","intent":{…},"decision":{…},"execution":{…},"outcome":{…},
//!  "policy_revision":null,"token_id":null,"approval_id":null,"peer":{…},
//!  "prev_hash":"000…000","hash":"5e1f…"}
//! ```
//!
//! (one line on disk). `seq` counts from 1 with no gaps across segments; `ts`
//! is RFC 3339 UTC with milliseconds; absent optional fields are `null`.
//!
//! # Hash chain (how to verify without Airlock)
//!
//! - Every line ends with exactly `,"hash":"` + 64 lower-case hex digits + `"}`.
//! - `hash` = lower-case hex SHA-256 of the line's bytes **up to, not
//!   including, that final `,"hash":"`**. That prefix contains every other
//!   field, including `seq` and `prev_hash`, exactly as written.
//! - `prev_hash` = the previous record's `hash` (the previous line, or the
//!   last line of the previous segment); 64 `0`s for seq 1.
//! - A verifier hashes bytes, never re-serialised JSON, so it is fast and
//!   independent of any JSON library's formatting. The crate README has a
//!   20-line Python verifier.
//!
//! # Head anchor
//!
//! After every durable batch the writer rewrites `head.json` in place
//! (`{"seq":N,"hash":"…","segment":"audit-000003.jsonl"}`, space-padded to a
//! fixed 192 bytes). It is written only after the records it names are
//! fdatasync'd (in the segment or the write-ahead file), so it can lag the
//! log but never lead it; it is fsynced on rotation and on close, not per
//! batch, because a stale anchor only weakens (never falsifies) the
//! truncation check and a per-batch fsync would halve throughput.
//! [`verify`] fails when the log ends before the anchor's seq or the record
//! at that seq has another hash: whole records cut from the end.
//! Someone able to rewrite both the log and the anchor (recomputing every
//! hash) is caught only by a copy held elsewhere (SIEM export).
//!
//! # Durability
//!
//! A record is acknowledged only after its batch is written with one
//! `pwrite` and one `fdatasync`: into the preallocated write-ahead file
//! (`audit.wal`, see the `wal` module), then into its segment's page cache,
//! or, without a write-ahead file, into the segment itself. Open writes the
//! write-ahead file's current entries back into the segment first. The
//! reverse does not hold: after a crash between sync and acknowledgement,
//! a failed write whose entry was not yet retired, or a rollback whose
//! truncation was not yet persisted, the log can hold valid records whose
//! callers saw an error.
//! On open, a torn last line (no `\n`, or unparsable) is cut off with a
//! warning; any other damage is [`AuditError::Corrupt`]. Open checks only the
//! tail of the newest segment; [`verify`] checks everything.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

mod format;
mod query;
mod verify;
mod wal;
mod writer;

pub use format::MAX_RECORD_BYTES;
pub use wal::DEFAULT_WAL_BYTES;

/// A record's sequence number; only the writer hands these out.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct AuditSeq(u64);

impl AuditSeq {
    /// The number itself.
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
    /// Agent identity as the broker established it (client name and version).
    pub agent: Option<String>,
    /// The desktop user the agent acts for.
    pub user: Option<String>,
    /// Correlates every record of one request.
    pub request_id: String,
    /// What the agent asked for (the manifest).
    pub intent: serde_json::Value,
    /// What policy and the human decided.
    pub decision: serde_json::Value,
    /// What actually ran (sandbox, paths, hosts).
    pub execution: serde_json::Value,
    /// What changed (files modified, commits applied).
    pub outcome: serde_json::Value,
    /// Revision of the policy bundle that decided.
    pub policy_revision: Option<String>,
    /// Capability token minted or used.
    pub token_id: Option<String>,
    /// Approval that granted this, if a human was asked.
    pub approval_id: Option<String>,
    /// `{"uid", "gid", "pid", "exe", "start_time"}`.
    pub peer: serde_json::Value,
}

/// A record as stored: body plus chain fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Position in the log, from 1.
    pub seq: u64,
    #[serde(flatten)]
    pub body: RecordBody,
    /// `hash` of the previous record (64 `0`s for seq 1).
    pub prev_hash: String,
    /// SHA-256 over this record's line up to `,"hash":"` (see crate docs).
    pub hash: String,
}

/// Returned once a record is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReceipt {
    /// The record's sequence number.
    pub seq: AuditSeq,
    /// The record's hash.
    pub hash: String,
}

/// Everything that can go wrong writing or reading the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A write, sync or segment creation failed; the record is not durable
    /// and the chain head did not move. Later appends retry.
    #[error("audit log {path} cannot be written: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The directory or a file could not be opened or read, or another
    /// writer holds the log.
    #[error("audit log {path} cannot be opened: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The log is damaged beyond a torn last line; run `airlock audit verify`.
    #[error("audit log is corrupt at {location}: {reason}")]
    Corrupt { location: String, reason: String },
    /// The writer was closed or has stopped.
    #[error("audit writer has stopped")]
    Closed,
}

impl AuditError {
    /// The API error code: every audit failure makes the broker fail closed.
    pub fn code(&self) -> airlock_core::ErrorCode {
        airlock_core::ErrorCode::AuditUnavailable
    }
}

/// `[audit]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory for segments. Default: `$XDG_STATE_HOME/airlock/audit`.
    pub dir: Option<PathBuf>,
    /// Rotate when a segment reaches this many bytes. Default 64 MiB.
    pub max_segment_bytes: u64,
    /// Size of the write-ahead file (`audit.wal`) that makes a batch
    /// durable before its segment is synced. Default 1 MiB; below 16 KiB
    /// (0 included) there is none and every batch is synced in its segment.
    pub wal_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: None,
            max_segment_bytes: 64 * 1024 * 1024,
            wal_bytes: DEFAULT_WAL_BYTES,
        }
    }
}

/// Handle to the writer; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<writer::Msg>>>,
    head: writer::SharedHead,
    counters: Arc<writer::Counters>,
    closed: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .field("head", &self.head())
            .finish()
    }
}

impl AuditLog {
    /// Open (creating) the log in `dir`, recover the chain head from the
    /// newest segment (a torn final line left by a crash is cut off and
    /// reported via tracing), and start the writer.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, max_segment_bytes, DEFAULT_WAL_BYTES)
    }

    /// [`AuditLog::open`] with a write-ahead file of `wal_bytes` (see
    /// [`AuditConfig::wal_bytes`]).
    pub fn open_with(
        dir: &Path,
        max_segment_bytes: u64,
        wal_bytes: u64,
    ) -> Result<AuditLog, AuditError> {
        let head: writer::SharedHead = Arc::new(Mutex::new(None));
        let counters = Arc::new(writer::Counters::default());
        let w = writer::Writer::open(
            dir,
            max_segment_bytes,
            wal_bytes,
            head.clone(),
            counters.clone(),
        )?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("airlock-audit-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|source| AuditError::Open {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                head,
                counters,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Open with an [`AuditConfig`]; `default_dir` is used when `cfg.dir` is unset.
    pub fn open_config(cfg: &AuditConfig, default_dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(
            cfg.dir.as_deref().unwrap_or(default_dir),
            cfg.max_segment_bytes,
            cfg.wal_bytes,
        )
    }

    /// The directory this log writes to.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn send(
        &self,
        body: &RecordBody,
        reply: writer::Reply,
        deferred: bool,
    ) -> Result<(), AuditError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        let enc = format::encode_body(body).map_err(|e| AuditError::Write {
            path: self.inner.dir.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match tx {
            Some(tx) => tx
                .send(writer::Msg::Append(writer::Pending {
                    enc,
                    reply,
                    deferred,
                }))
                .map_err(|_| AuditError::Closed),
            None => Err(AuditError::Closed),
        }
    }

    /// Append one record; resolves when durable.
    ///
    /// If the future is dropped after the record was queued, the record is
    /// still written; only the receipt is lost.
    pub async fn append(&self, body: RecordBody) -> Result<AuditReceipt, AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(&body, writer::Reply::Async(tx), false)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Append a record nobody is waiting on to act (how an action ended,
    /// reported after it): as durable as [`AuditLog::append`] when it
    /// resolves, but the writer may hold it up to 5 ms so that the next
    /// record, usually the next request's decision, carries it in the same
    /// sync instead of each paying for one.
    pub async fn append_deferred(&self, body: RecordBody) -> Result<AuditReceipt, AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(&body, writer::Reply::Async(tx), true)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Blocking variant for non-async callers.
    pub fn append_blocking(&self, body: RecordBody) -> Result<AuditReceipt, AuditError> {
        let (tx, rx) = mpsc::channel();
        self.send(&body, writer::Reply::Blocking(tx), false)?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// The last durable record's seq and hash (`None` for an empty log).
    pub fn head(&self) -> Option<(u64, String)> {
        self.inner
            .head
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters since open: how well group commit is batching.
    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        AuditStats {
            records: c.records.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            failed_syncs: c.failed_syncs.load(Ordering::Relaxed),
        }
    }

    /// Flush and stop the writer (called on shutdown); later appends fail with `Closed`.
    ///
    /// Records queued before the call are written (or failed) first; the
    /// call returns once the writer thread has exited.
    pub fn close(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let (ack_tx, ack_rx) = mpsc::channel();
            if tx.send(writer::Msg::Close(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "audit writer thread panicked");
            }
        }
    }
}

/// Dropping the last handle closes the log: the writer finishes what is
/// queued and releases the directory lock before the drop returns.
impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writer counters, from [`AuditLog::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AuditStats {
    /// Records made durable since open.
    pub records: u64,
    /// Successful write+fdatasync commits (each covers one or more records).
    pub syncs: u64,
    /// Commits that failed and were rolled back.
    pub failed_syncs: u64,
}

/// Result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Segment files checked.
    pub segments: usize,
    /// Hash of the last record (`None` for an empty log).
    pub head_hash: Option<String>,
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("audit chain broken at {file}:{line} (seq {seq:?}): {reason}")]
pub struct VerifyFailure {
    /// Path of the segment (or anchor) where the problem is.
    pub file: String,
    /// 1-based line within `file` (0 when the whole file is at fault).
    pub line: u64,
    /// The record's `seq`, where one could be read.
    pub seq: Option<u64>,
    /// What is wrong, in words.
    pub reason: String,
}

/// Verify every segment in `dir`.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify::verify(dir)
}

/// Every record with this request id, in order.
pub fn find_request(dir: &Path, request_id: &str) -> Result<Vec<Record>, AuditError> {
    query::find_request(dir, request_id)
}

/// The last `n` records, oldest first.
pub fn tail(dir: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    query::tail(dir, n)
}

/// Call `f` for each record appended after `after_seq`, polling until `f` returns false.
pub fn follow(
    dir: &Path,
    after_seq: Option<u64>,
    f: &mut dyn FnMut(&Record) -> bool,
) -> Result<(), AuditError> {
    query::follow(dir, after_seq, f)
}
