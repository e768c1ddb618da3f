//! Opening, recovery and the group-commit writer thread.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::format::{
    self, build_line, check_line, complete_len, last_line_before, list_segments, read_anchor,
    segment_name, Anchor, EncodedBody, ANCHOR_FILE, GENESIS, LOCK_FILE, MAX_RECORD_BYTES,
};
use crate::wal::{self, Wal};
use crate::{AuditError, AuditReceipt, AuditSeq};

/// Where an acknowledgement goes.
pub(crate) enum Reply {
    Async(tokio::sync::oneshot::Sender<Result<AuditReceipt, AuditError>>),
    Blocking(mpsc::Sender<Result<AuditReceipt, AuditError>>),
}

impl Reply {
    fn send(self, r: Result<AuditReceipt, AuditError>) {
        // A waiter that has gone away (cancelled future) is not an error.
        match self {
            Reply::Async(tx) => drop(tx.send(r)),
            Reply::Blocking(tx) => drop(tx.send(r)),
        }
    }
}

pub(crate) struct Pending {
    pub enc: EncodedBody,
    pub reply: Reply,
    /// May wait up to [`DEFER_WINDOW`] for another record to share its sync.
    pub deferred: bool,
}

/// How long a batch of deferred records waits for company.
pub(crate) const DEFER_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

pub(crate) enum Msg {
    Append(Pending),
    Close(mpsc::Sender<()>),
}

/// The durable head shared with [`crate::AuditLog::head`].
pub(crate) type SharedHead = Arc<Mutex<Option<(u64, String)>>>;

/// Counters behind [`crate::AuditLog::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub records: AtomicU64,
    pub syncs: AtomicU64,
    pub failed_syncs: AtomicU64,
}

/// Same OS error, for each waiter of a failed batch.
fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> AuditError {
    AuditError::Corrupt {
        location: location.into(),
        reason: reason.into(),
    }
}

pub(crate) struct Writer {
    dir: PathBuf,
    max_segment_bytes: u64,
    /// Current segment number (0 before the first segment exists).
    seg_no: u64,
    seg_path: PathBuf,
    file: Option<File>,
    /// Length of the current segment that is acknowledged (durable in the
    /// segment, or in the write-ahead file).
    durable_len: u64,
    /// The write-ahead file (`None`: every batch is synced in its segment).
    wal: Option<Wal>,
    /// Segment bytes written since the last checkpoint: the last
    /// `unsynced.len()` bytes before `durable_len`.
    unsynced: Vec<u8>,
    /// A segment write failed after its entry was durable: checkpoint (and
    /// so retire that entry) before the next one.
    needs_checkpoint: bool,
    /// The last idle checkpoint failed: wait for the next write to retry.
    idle_checkpoint_failed: bool,
    /// A rollback (`set_len`) failed; redo it before writing again.
    needs_repair: bool,
    head_seq: u64,
    head_hash: [u8; 64],
    anchor: File,
    anchor_dirty: bool,
    shared_head: SharedHead,
    counters: Arc<Counters>,
    /// Held for the writer's lifetime: one writer per directory.
    _lock: File,
}

/// How long open waits for another writer's lock before refusing.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_private_dir(dir: &Path) -> Result<(), AuditError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(open_err(dir))?;
    let meta = std::fs::metadata(dir).map_err(open_err(dir))?;
    if !meta.is_dir() {
        return Err(AuditError::Open {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "audit directory was readable by others; tightening to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(open_err(dir))?;
    }
    Ok(())
}

pub(crate) fn open_private(path: &Path, create: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "audit file was readable by others; tightening to 0600");
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Recover the head of segment `path`: cut a torn tail (only when
/// `may_cut`), then check the last line. Returns `(len, last (seq, hash))`.
fn recover_segment(
    path: &Path,
    file: &File,
    may_cut: bool,
) -> Result<(u64, Option<CheckedHead>), AuditError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let len = file.metadata().map_err(open_err(path))?.len();
    let mut end = complete_len(file, len).map_err(open_err(path))?;
    if end != len {
        if !may_cut {
            return Err(corrupt(
                name,
                "segment ends with an incomplete line but is not the newest segment",
            ));
        }
        tracing::warn!(segment = %path.display(), cut_bytes = len - end, "audit segment ends with a torn line (crash during write); cutting it off, it was never acknowledged");
        file.set_len(end).map_err(open_err(path))?;
        file.sync_data().map_err(open_err(path))?;
    }
    let Some((start, line)) = last_line_before(file, end).map_err(open_err(path))? else {
        return Ok((end, None));
    };
    match check_line(&line) {
        Ok(c) => {
            return Ok((
                end,
                Some(CheckedHead {
                    seq: c.seq,
                    hash: c.hash,
                }),
            ))
        }
        Err(reason) if may_cut && reason.starts_with("unparsable") => {
            tracing::warn!(segment = %path.display(), offset = start, %reason, "last audit line is unparsable (crash during write); cutting it off, it was never acknowledged");
            file.set_len(start).map_err(open_err(path))?;
            file.sync_data().map_err(open_err(path))?;
            end = start;
        }
        Err(reason) => return Err(corrupt(format!("{name} (last line)"), reason)),
    }
    match last_line_before(file, end).map_err(open_err(path))? {
        None => Ok((end, None)),
        Some((_, line)) => match check_line(&line) {
            Ok(c) => Ok((
                end,
                Some(CheckedHead {
                    seq: c.seq,
                    hash: c.hash,
                }),
            )),
            Err(reason) => Err(corrupt(format!("{name} (last line)"), reason)),
        },
    }
}

/// Put what the write-ahead file holds back into its segment (after a
/// crash, the segment may have lost it or hold a torn copy) and sync it.
fn replay_wal(dir: &Path, segments: &[(u64, PathBuf)]) -> Result<(), AuditError> {
    let wal_path = dir.join(wal::WAL_FILE);
    let pending = wal::read_pending(dir)
        .map_err(|reason| corrupt(wal::WAL_FILE, format!("{reason}; it may hold acknowledged records, so the log is not opened (move it aside to open without them)")))?;
    let Some(p) = pending.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let Some((newest, path)) = segments.last() else {
        return Err(corrupt(
            wal::WAL_FILE,
            format!(
                "holds records for segment {} but there is no segment",
                segment_name(p.seg_no)
            ),
        ));
    };
    if *newest != p.seg_no {
        return Err(corrupt(
            wal::WAL_FILE,
            format!(
                "holds records for {} but the newest segment is {}",
                segment_name(p.seg_no),
                segment_name(*newest)
            ),
        ));
    }
    let f = open_private(path, false).map_err(open_err(path))?;
    let len = f.metadata().map_err(open_err(path))?.len();
    if len < p.start {
        return Err(corrupt(
            segment_name(*newest),
            format!(
                "segment ends at byte {len} but its synced part reached byte {} (records removed)",
                p.start
            ),
        ));
    }
    f.write_all_at(&p.bytes, p.start)
        .and_then(|_| f.set_len(p.end()))
        .and_then(|_| f.sync_data())
        .map_err(open_err(path))?;
    tracing::info!(segment = %path.display(), from = %wal_path.display(), bytes = p.bytes.len(), "audit records of the write-ahead file written back into their segment (the log was not closed cleanly)");
    Ok(())
}

struct CheckedHead {
    seq: u64,
    hash: [u8; 64],
}

impl Writer {
    pub(crate) fn open(
        dir: &Path,
        max_segment_bytes: u64,
        wal_bytes: u64,
        shared_head: SharedHead,
        counters: Arc<Counters>,
    ) -> Result<Writer, AuditError> {
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = open_private(&lock_path, true).map_err(open_err(&lock_path))?;
        // A writer that has just closed can hold the lock a moment longer:
        // a process forked (by any thread) while the log was open shares
        // the lock until it execs. Wait that out, briefly, before refusing.
        let deadline = std::time::Instant::now() + LOCK_GRACE;
        let mut got = lock.try_lock();
        while matches!(got, Err(std::fs::TryLockError::WouldBlock))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
            got = lock.try_lock();
        }
        match got {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Open {
                    path: lock_path,
                    source: io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another writer holds this audit log; stop it or use another directory",
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuditError::Open {
                    path: lock_path,
                    source: e,
                })
            }
        }

        let segments = list_segments(dir).map_err(open_err(dir))?;
        for pair in segments.windows(2) {
            if pair[1].0 != pair[0].0 + 1 {
                return Err(corrupt(
                    segment_name(pair[1].0),
                    format!(
                        "segment numbering jumps from {} to {} (segment removed)",
                        pair[0].0, pair[1].0
                    ),
                ));
            }
        }
        if let Some((first, _)) = segments.first() {
            if *first != 1 {
                return Err(corrupt(
                    segment_name(*first),
                    "first segment is not audit-000001.jsonl (segment removed)",
                ));
            }
        }

        replay_wal(dir, &segments)?;

        let mut file = None;
        let mut seg_no = 0;
        let mut seg_path = dir.join(segment_name(1));
        let mut durable_len = 0;
        let mut head: Option<CheckedHead> = None;
        if let Some((n, path)) = segments.last() {
            let f = open_private(path, false).map_err(open_err(path))?;
            let (len, h) = recover_segment(path, &f, true)?;
            head = h;
            durable_len = len;
            seg_no = *n;
            seg_path = path.clone();
            file = Some(f);
            // An empty newest segment (crash right after rotation): the
            // head is the last line of the segment before it.
            if head.is_none() && segments.len() > 1 {
                let (_, prev_path) = &segments[segments.len() - 2];
                let pf = File::open(prev_path).map_err(open_err(prev_path))?;
                head = recover_segment(prev_path, &pf, false)?.1;
                if head.is_none() {
                    return Err(corrupt(
                        segment_name(n - 1),
                        "segment is empty but is not the newest",
                    ));
                }
            }
        }

        let (head_seq, head_hash) = match &head {
            Some(h) => (h.seq, h.hash),
            None => (0, GENESIS),
        };
        if head.is_some() && head_seq == 0 {
            return Err(corrupt(segment_name(seg_no), "last record has seq 0"));
        }

        let anchor_path = dir.join(ANCHOR_FILE);
        match read_anchor(dir) {
            Err(reason) => return Err(corrupt(ANCHOR_FILE, reason)),
            Ok(Some(a)) if a.seq > head_seq => {
                return Err(corrupt(
                    ANCHOR_FILE,
                    format!(
                        "log ends at seq {head_seq} but head anchor records seq {} (records removed from the end); run `airlock audit verify`",
                        a.seq
                    ),
                ))
            }
            Ok(Some(a)) if a.seq == head_seq && a.hash.as_bytes() != head_hash => {
                return Err(corrupt(
                    ANCHOR_FILE,
                    format!("head anchor hash does not match the record at seq {head_seq} (log rewritten); run `airlock audit verify`"),
                ))
            }
            Ok(_) => {}
        }
        let anchor = open_private(&anchor_path, true).map_err(open_err(&anchor_path))?;

        let head_str = head
            .as_ref()
            .map(|h| (h.seq, String::from_utf8_lossy(&h.hash).into_owned()));
        *shared_head.lock().unwrap_or_else(|e| e.into_inner()) = head_str;

        let wal = if wal_bytes >= wal::MIN_WAL_BYTES {
            match Wal::open(dir, wal_bytes) {
                Ok(w) => Some(w),
                Err(e) => {
                    // Durability does not depend on it: without it every
                    // batch is synced in its segment, only slower.
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot set up the audit write-ahead file; every record is synced in its segment instead");
                    None
                }
            }
        } else {
            let _ = std::fs::remove_file(dir.join(wal::WAL_FILE));
            None
        };

        let mut w = Writer {
            dir: dir.to_path_buf(),
            max_segment_bytes: max_segment_bytes.max(1),
            seg_no,
            seg_path,
            file,
            durable_len,
            wal,
            unsynced: Vec::new(),
            needs_checkpoint: false,
            idle_checkpoint_failed: false,
            needs_repair: false,
            head_seq,
            head_hash,
            anchor,
            anchor_dirty: false,
            shared_head,
            counters,
            _lock: lock,
        };
        if head.is_some() {
            w.write_anchor().map_err(open_err(&anchor_path))?;
            w.anchor.sync_data().map_err(open_err(&anchor_path))?;
        }
        Ok(w)
    }

    /// The writer thread's loop: take everything queued, commit it, repeat.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let due = self.wal.as_ref().is_some_and(|w| w.has_entries()) || self.needs_checkpoint;
            let first = if due && !self.idle_checkpoint_failed {
                match rx.recv_timeout(wal::IDLE_CHECKPOINT) {
                    Ok(m) => Ok(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.checkpoint() {
                            tracing::warn!(segment = %self.seg_path.display(), error = %e, "audit checkpoint failed; the records stay in the write-ahead file and it is retried before the next write");
                            self.needs_checkpoint = true;
                            self.idle_checkpoint_failed = true;
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                }
            } else {
                rx.recv().map_err(|_| ())
            };
            let Ok(first) = first else {
                // Every handle is gone: nothing can be waiting.
                self.shutdown();
                return;
            };
            let mut batch = Vec::new();
            let mut closers = Vec::new();
            let push = |m: Msg, batch: &mut Vec<Pending>, closers: &mut Vec<_>| match m {
                Msg::Append(p) => batch.push(p),
                Msg::Close(ack) => closers.push(ack),
            };
            push(first, &mut batch, &mut closers);
            while let Ok(m) = rx.try_recv() {
                push(m, &mut batch, &mut closers);
            }
            if closers.is_empty() && !batch.is_empty() && batch.iter().all(|p| p.deferred) {
                // Only records that may wait: give the next eager record
                // (usually the next request's decision) the chance to
                // carry them in its sync instead of paying for one more.
                let deadline = std::time::Instant::now() + DEFER_WINDOW;
                loop {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let Ok(m) = rx.recv_timeout(left) else {
                        break;
                    };
                    let eager = !matches!(&m, Msg::Append(p) if p.deferred);
                    push(m, &mut batch, &mut closers);
                    if eager {
                        while let Ok(m) = rx.try_recv() {
                            push(m, &mut batch, &mut closers);
                        }
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.process(batch);
            }
            if !closers.is_empty() {
                self.shutdown();
                for ack in closers {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }

    fn shutdown(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!(segment = %self.seg_path.display(), error = %e, "final audit checkpoint failed; the write-ahead file keeps the records for the next open");
        }
        if let Some(f) = &self.file {
            if let Err(e) = f.sync_all() {
                tracing::warn!(segment = %self.seg_path.display(), error = %e, "final sync of audit segment failed");
            }
        }
        if self.anchor_dirty || self.head_seq > 0 {
            if let Err(e) = self.write_anchor().and_then(|_| self.anchor.sync_data()) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "final write of audit head anchor failed");
            }
        }
    }

    fn write_anchor(&mut self) -> io::Result<()> {
        let a = Anchor {
            seq: self.head_seq,
            hash: String::from_utf8_lossy(&self.head_hash).into_owned(),
            segment: segment_name(self.seg_no),
        };
        self.anchor.write_all_at(&a.to_bytes(), 0)?;
        self.anchor_dirty = false;
        Ok(())
    }

    fn write_error(&self, e: &io::Error) -> AuditError {
        AuditError::Write {
            path: self.seg_path.clone(),
            source: clone_io(e),
        }
    }

    /// Sync the segment and retire the write-ahead entries. The bytes
    /// written since the last checkpoint are written again first: a
    /// failed sync may have dropped them from the page cache.
    fn checkpoint(&mut self) -> io::Result<()> {
        let Some(wal) = &mut self.wal else {
            return Ok(());
        };
        if !wal.has_entries() && !self.needs_checkpoint {
            return Ok(());
        }
        let Some(file) = &self.file else {
            return wal.reset();
        };
        if self.needs_repair {
            file.set_len(self.durable_len)?;
            self.needs_repair = false;
        }
        let synced_len = self.durable_len - self.unsynced.len() as u64;
        file.write_all_at(&self.unsynced, synced_len)?;
        file.sync_data()?;
        wal.reset()?;
        self.unsynced.clear();
        self.needs_checkpoint = false;
        Ok(())
    }

    /// Make `buf` durable at the acknowledged end of the current segment:
    /// through the write-ahead file when there is one and the batch fits,
    /// else written and synced in the segment. On failure nothing of it
    /// is acknowledged and the segment is rolled back.
    fn commit(&mut self, buf: &[u8]) -> io::Result<()> {
        let res = self.commit_inner(buf);
        if res.is_err() {
            self.counters.failed_syncs.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn commit_inner(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some((fits_at_all, fits_now)) = self.wal.as_ref().map(|w| w.fits(buf.len())) else {
            return self.commit_direct(buf);
        };
        if self.needs_checkpoint || !fits_now {
            self.checkpoint()?;
        }
        if !fits_at_all {
            // Larger than the write-ahead file: straight to the segment
            // (the checkpoint above left no entry for it to contradict).
            return self.commit_direct(buf);
        }
        let (Some(wal), Some(file)) = (&mut self.wal, &self.file) else {
            return Err(io::Error::other("no open segment"));
        };
        if let Err(e) = wal.append(self.seg_no, self.durable_len, buf) {
            tracing::error!(file = %wal.path().display(), error = %e, records_bytes = buf.len(), "audit write-ahead write failed; nothing in this batch is acknowledged");
            return Err(e);
        }
        if let Err(e) = file.write_all_at(buf, self.durable_len) {
            // The entry is durable but the batch is refused: retire it now
            // (or before the next one), so that neither a crash nor a
            // verification brings it back.
            tracing::error!(segment = %self.seg_path.display(), error = %e, records_bytes = buf.len(), "audit write failed; rolling back, nothing in this batch is acknowledged");
            if let Err(e2) = file.set_len(self.durable_len) {
                tracing::error!(segment = %self.seg_path.display(), error = %e2, "rolling back the audit segment failed; will retry before the next write");
                self.needs_repair = true;
            }
            self.needs_checkpoint = true;
            if let Err(e3) = self.checkpoint() {
                tracing::warn!(segment = %self.seg_path.display(), error = %e3, "audit checkpoint after a failed write failed; retried before the next write");
            }
            return Err(e);
        }
        self.unsynced.extend_from_slice(buf);
        self.durable_len += buf.len() as u64;
        self.idle_checkpoint_failed = false;
        Ok(())
    }

    /// Write `buf` at the durable end of the current segment and fdatasync;
    /// on failure roll the file back to its durable length.
    fn commit_direct(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Err(io::Error::other("no open segment"));
        };
        if self.needs_repair {
            file.set_len(self.durable_len)?;
            self.needs_repair = false;
        }
        let res = file
            .write_all_at(buf, self.durable_len)
            .and_then(|_| file.sync_data());
        if let Err(e) = res {
            tracing::error!(segment = %self.seg_path.display(), error = %e, records_bytes = buf.len(), "audit write failed; rolling back, nothing in this batch is acknowledged");
            if let Err(e2) = file.set_len(self.durable_len) {
                tracing::error!(segment = %self.seg_path.display(), error = %e2, "rolling back the audit segment failed; will retry before the next write");
                self.needs_repair = true;
            }
            return Err(e);
        }
        self.durable_len += buf.len() as u64;
        Ok(())
    }

    /// Create the next segment (or the first) and make its name durable.
    fn open_next_segment(&mut self) -> io::Result<()> {
        // Entries name one segment: retire them before starting the next.
        self.checkpoint()?;
        let n = self.seg_no + 1;
        let path = self.dir.join(segment_name(n));
        let f = open_private(&path, true)?;
        if f.metadata()?.len() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists and is not empty", path.display()),
            ));
        }
        sync_dir(&self.dir)?;
        if let Some(old) = &self.file {
            old.sync_all()?;
        }
        self.file = Some(f);
        self.seg_no = n;
        self.seg_path = path;
        self.durable_len = 0;
        self.unsynced.clear();
        self.needs_repair = false;
        if self.head_seq > 0 {
            // The anchor names the segment of its record; it moves with the
            // first commit in the new segment.
            let _ = self.anchor.sync_data();
        }
        Ok(())
    }

    fn fail_all(&self, e: &io::Error, replies: impl IntoIterator<Item = Reply>) {
        for r in replies {
            r.send(Err(self.write_error(e)));
        }
    }

    fn process(&mut self, batch: Vec<Pending>) {
        let ts = format::now_ts_json();
        let mut seq = self.head_seq;
        let mut prev = self.head_hash;
        let mut buf: Vec<u8> = Vec::with_capacity(batch.len() * 512);
        let mut waiting: Vec<(Reply, u64, [u8; 64])> = Vec::with_capacity(batch.len());
        let mut committed_any = false;
        let mut it = batch.into_iter();
        while let Some(p) = it.next() {
            let start = buf.len();
            let hash = build_line(
                &mut buf,
                seq + 1,
                p.enc.ts.as_deref().unwrap_or(&ts),
                &p.enc.rest,
                &prev,
            );
            let line_len = buf.len() - start;
            if line_len > MAX_RECORD_BYTES {
                buf.truncate(start);
                p.reply.send(Err(AuditError::Write {
                    path: self.seg_path.clone(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "record of {line_len} bytes exceeds the {MAX_RECORD_BYTES}-byte limit"
                        ),
                    ),
                }));
                continue;
            }
            let used = self.durable_len + start as u64;
            if self.file.is_none() || (used > 0 && used + line_len as u64 > self.max_segment_bytes)
            {
                let line = buf.split_off(start);
                if !buf.is_empty() {
                    if let Err(e) = self.commit(&buf) {
                        self.fail_all(&e, waiting.drain(..).map(|w| w.0));
                        self.fail_all(&e, std::iter::once(p.reply).chain(it.map(|p| p.reply)));
                        self.after_batch(committed_any);
                        return;
                    }
                    committed_any = true;
                    self.acknowledge(&mut waiting);
                    buf.clear();
                }
                if let Err(e) = self.open_next_segment() {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot start the next audit segment");
                    let err_path = self.dir.join(segment_name(self.seg_no + 1));
                    for r in std::iter::once(p.reply).chain(it.map(|p| p.reply)) {
                        r.send(Err(AuditError::Write {
                            path: err_path.clone(),
                            source: clone_io(&e),
                        }));
                    }
                    self.after_batch(committed_any);
                    return;
                }
                buf = line;
            }
            waiting.push((p.reply, seq + 1, hash));
            seq += 1;
            prev = hash;
        }
        if !buf.is_empty() {
            match self.commit(&buf) {
                Ok(()) => {
                    committed_any = true;
                    self.acknowledge(&mut waiting);
                }
                Err(e) => self.fail_all(&e, waiting.drain(..).map(|w| w.0)),
            }
        }
        self.after_batch(committed_any);
    }

    /// Move the head to the last of `waiting` (now durable) and answer them.
    fn acknowledge(&mut self, waiting: &mut Vec<(Reply, u64, [u8; 64])>) {
        let Some(&(_, seq, hash)) = waiting.last() else {
            return;
        };
        self.head_seq = seq;
        self.head_hash = hash;
        *self.shared_head.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((seq, String::from_utf8_lossy(&hash).into_owned()));
        self.anchor_dirty = true;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .records
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        for (reply, seq, hash) in waiting.drain(..) {
            reply.send(Ok(AuditReceipt {
                seq: AuditSeq(seq),
                hash: String::from_utf8_lossy(&hash).into_owned(),
            }));
        }
    }

    fn after_batch(&mut self, committed_any: bool) {
        if committed_any || self.anchor_dirty {
            if let Err(e) = self.write_anchor() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "audit head anchor not updated; will retry after the next batch");
            }
        }
    }
}
