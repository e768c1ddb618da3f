//! The staging store: per (session, base) areas in overlayfs upper-dir
//! layout.
//!
//! ```text
//! <store>/                 0700
//!   <id>/                  0700   id = "st-" + 4 hex of (session, base) + 6 random hex
//!     upper/               overlayfs upperdir, mirrors the base tree
//!     work/                overlayfs workdir
//!     tmp/                 files are built here, then renamed into place
//!     meta.json            0600   {id, session, base, created, bases: {rel: fingerprint}}
//! ```
//!
//! Every open inside `upper/` goes through `openat2` beneath the upper dir
//! with `RESOLVE_NO_SYMLINKS`: a sandboxed command may have planted
//! symlinks there, and they must never be followed. Concurrent users of
//! one area (threads or processes) serialise on an `flock` of the area
//! directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_core::path::{check_abs_normalised, is_within};
use rustix::fs::{AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::resolve::GrantRoot;
use crate::sys::{self, fmeta, get_xattr, meta_at, Meta, RESOLVE_STRICT};
use crate::{AreaInfo, Change, ChangeKind, FileKind, FsError};

pub(crate) const XATTR_WHITEOUT: &str = "user.overlay.whiteout";
pub(crate) const XATTR_OPAQUE: &str = "user.overlay.opaque";
const TRUSTED_WHITEOUT: &str = "trusted.overlay.whiteout";
const TRUSTED_OPAQUE: &str = "trusted.overlay.opaque";

/// Largest file `rename` copies through memory.
const MAX_RENAME_BYTES: u64 = 1 << 30;

/// The state of a path in the real tree when it was first staged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFingerprint {
    pub existed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mtime_ns: i64,
    #[serde(default)]
    pub ino: u64,
    #[serde(default)]
    pub mode: u32,
    /// Target, when the entry was a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl BaseFingerprint {
    /// Same existence, type and content (inode, mtime and mode may differ:
    /// an editor's atomic save of identical content is not a conflict).
    pub fn same_state(&self, other: &BaseFingerprint) -> bool {
        if self.existed != other.existed {
            return false;
        }
        if !self.existed {
            return true;
        }
        self.kind == other.kind
            && self.sha256 == other.sha256
            && self.size == other.size
            && self.link == other.link
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AreaMeta {
    pub id: String,
    pub session: String,
    pub base: String,
    pub created: i64,
    #[serde(default)]
    pub bases: BTreeMap<String, BaseFingerprint>,
}

/// What finding an area needs of its `meta.json`: the fingerprints (one
/// per staged path) are skipped, not built.
#[derive(Deserialize)]
struct AreaHead {
    id: String,
    session: String,
    base: String,
    created: i64,
}

/// SHA-256 (hex) and length of everything `r` yields.
pub fn sha256_reader<R: Read>(mut r: R) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

/// SHA-256 (hex) of a resolved regular file, with the same checks as
/// [`crate::read`] (regular file, single link, the inode resolved).
pub fn sha256_file(p: &crate::ResolvedPath) -> Result<String, FsError> {
    let fd = crate::resolve::open_for_read(p)?;
    sha256_reader(File::from(fd))
        .map(|(h, _)| h)
        .map_err(|e| sys::stdio(p.requested(), e))
}

/// What a path is in the real tree, opened without following anything.
pub(crate) enum Probe {
    Missing,
    /// A parent component is not a directory.
    NotDir,
    /// A parent component is a symlink.
    SymlinkOnPath,
    Found(OwnedFd, Meta),
}

/// A staged directory its owner cannot read (a sandboxed command, running
/// as that owner, may leave one mode 300): said as such, with what to do,
/// rather than as an internal error.
fn unreadable(e: FsError, id: &str) -> FsError {
    match e {
        FsError::Io { path, source } if source.raw_os_error() == Some(Errno::ACCESS.raw_os_error()) => {
            FsError::Invalid {
                path,
                why: format!(
                    "a staged directory cannot be read (a sandboxed command made it unreadable); the staged changes cannot be reviewed or committed: discard them (airlock staged discard {id})"
                ),
            }
        }
        e => e,
    }
}

/// The longest path below the base a staged entry may have (`PATH_MAX`
/// less its NUL): longer ones cannot be opened beneath the base.
const MAX_STAGED_PATH: usize = 4095;

/// What the real tree has at a staged directory, as far as looking up
/// its entries there goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BaseAt {
    Dir,
    Missing,
    NotDir,
    SymlinkOnPath,
}

impl BaseAt {
    /// From the probe of the directory itself.
    fn of(p: &Probe) -> BaseAt {
        match p {
            Probe::Found(_, m) if m.kind == FileKind::Dir => BaseAt::Dir,
            Probe::Found(_, m) if m.kind == FileKind::Symlink => BaseAt::SymlinkOnPath,
            Probe::Found(..) | Probe::NotDir => BaseAt::NotDir,
            Probe::Missing => BaseAt::Missing,
            Probe::SymlinkOnPath => BaseAt::SymlinkOnPath,
        }
    }
}

/// Look at `rel` beneath `dir` without following any symlink.
pub(crate) fn probe<Fd: AsFd>(dir: Fd, rel: &str) -> Result<Probe, FsError> {
    match sys::openat2(
        dir,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW,
        Mode::empty(),
        RESOLVE_STRICT,
    ) {
        Ok(fd) => {
            let m = fmeta(&fd).map_err(|e| sys::io(rel, e))?;
            Ok(Probe::Found(fd, m))
        }
        Err(Errno::NOENT) => Ok(Probe::Missing),
        Err(Errno::NOTDIR) => Ok(Probe::NotDir),
        Err(Errno::LOOP) | Err(Errno::XDEV) => Ok(Probe::SymlinkOnPath),
        Err(e) => Err(sys::io(rel, e)),
    }
}

/// Fingerprint `rel` beneath `dir` (the base root or a parent dir), never
/// following symlinks. `shown` names the path in errors.
pub(crate) fn fingerprint<Fd: AsFd>(
    dir: Fd,
    rel: &str,
    shown: &str,
) -> Result<BaseFingerprint, FsError> {
    let dir = dir.as_fd();
    match probe(dir, rel)? {
        Probe::Missing | Probe::NotDir => Ok(BaseFingerprint::default()),
        Probe::SymlinkOnPath => Err(FsError::Escape {
            path: shown.to_string(),
            why: "a directory on the path is a symlink in the real tree; use the real path".into(),
        }),
        Probe::Found(fd, m) => {
            let mut fp = BaseFingerprint {
                existed: true,
                kind: Some(m.kind),
                size: m.size,
                mtime_ns: m.mtime_ns(),
                ino: m.ino,
                mode: m.mode,
                ..Default::default()
            };
            match m.kind {
                FileKind::File => {
                    let f = sys::openat2(
                        dir,
                        rel,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
                        Mode::empty(),
                        RESOLVE_STRICT,
                    )
                    .map_err(|e| crate::resolve::map_open_err(shown, e))?;
                    let got = fmeta(&f).map_err(|e| sys::io(shown, e))?;
                    if !got.same_inode(&m) || got.kind != FileKind::File {
                        return Err(FsError::Conflict {
                            path: shown.to_string(),
                        });
                    }
                    let (h, n) = sha256_reader(File::from(f)).map_err(|e| sys::stdio(shown, e))?;
                    fp.sha256 = Some(h);
                    fp.size = n;
                }
                FileKind::Symlink => {
                    let t = rustix::fs::readlinkat(&fd, "", Vec::new())
                        .map_err(|e| sys::io(shown, e))?;
                    fp.link = Some(String::from_utf8_lossy(t.as_bytes()).into_owned());
                }
                _ => {}
            }
            Ok(fp)
        }
    }
}

/// What an entry in the upper dir is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UKind {
    File(Meta),
    Dir { opaque: bool },
    Symlink(String),
    Whiteout,
    Other(Meta),
}

fn open_dir_strict<Fd: AsFd>(dir: Fd, name: &str) -> Result<OwnedFd, Errno> {
    // RESOLVE_NO_SYMLINKS refuses a final symlink too (ELOOP).
    sys::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
        RESOLVE_STRICT,
    )
}

fn is_opaque<Fd: AsFd>(dirfd: Fd) -> Result<bool, Errno> {
    let fd = dirfd.as_fd();
    Ok(get_xattr(fd, XATTR_OPAQUE)?.as_deref() == Some(b"y")
        || get_xattr(fd, TRUSTED_OPAQUE)?.as_deref() == Some(b"y"))
}

/// Classify `name` in the upper directory `dirfd`.
pub(crate) fn upper_entry<Fd: AsFd>(dirfd: Fd, name: &str) -> Result<Option<UKind>, Errno> {
    let dirfd = dirfd.as_fd();
    let m = match meta_at(dirfd, name) {
        Ok(m) => m,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    if m.is_chr_whiteout() {
        return Ok(Some(UKind::Whiteout));
    }
    Ok(Some(match m.kind {
        FileKind::File => {
            if m.size == 0 {
                let fd = sys::openat2(
                    dirfd,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                    RESOLVE_STRICT,
                )?;
                if get_xattr(&fd, XATTR_WHITEOUT)?.is_some()
                    || get_xattr(&fd, TRUSTED_WHITEOUT)?.is_some()
                {
                    return Ok(Some(UKind::Whiteout));
                }
            }
            UKind::File(m)
        }
        FileKind::Dir => {
            let fd = open_dir_strict(dirfd, name)?;
            UKind::Dir {
                opaque: is_opaque(&fd)?,
            }
        }
        FileKind::Symlink => {
            let t = rustix::fs::readlinkat(dirfd, name, Vec::new())?;
            UKind::Symlink(String::from_utf8_lossy(t.as_bytes()).into_owned())
        }
        FileKind::Other => UKind::Other(m),
    }))
}

/// Result of looking a path up in the upper dir, as overlayfs would.
pub(crate) enum Lookup {
    /// Nothing staged: the merged view shows the real file (if any).
    Absent,
    /// Deleted (whited out, or hidden by an opaque or non-directory
    /// ancestor): the merged view has nothing here.
    Hidden,
    /// Something is staged here.
    Found { kind: UKind, parent: OwnedFd },
}

fn dir_names<Fd: AsFd>(fd: Fd, shown: &str) -> Result<Vec<String>, FsError> {
    let dir = Dir::read_from(fd).map_err(|e| sys::io(shown, e))?;
    let mut names = Vec::new();
    for ent in dir {
        let ent = ent.map_err(|e| sys::io(shown, e))?;
        let b = ent.file_name().to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        match std::str::from_utf8(b) {
            Ok(s) => names.push(s.to_string()),
            Err(_) => {
                tracing::warn!(dir = shown, name = %String::from_utf8_lossy(b), "skipping entry whose name is not UTF-8");
            }
        }
    }
    names.sort();
    Ok(names)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An exclusive `flock` held until drop (a fresh open file description, so
/// it also excludes other threads of this process).
struct Lock {
    _fd: OwnedFd,
}

fn lock_dir(dir: &OwnedFd, shown: &str) -> Result<Lock, FsError> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys::io(shown, e))?;
    loop {
        match rustix::fs::flock(&fd, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(Lock { _fd: fd }),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys::io(shown, e)),
        }
    }
}

fn write_file_at(
    dir: &OwnedFd,
    name: &str,
    data: &[u8],
    mode: u32,
    shown: &str,
) -> Result<(), FsError> {
    let fd = sys::openat2(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
        RESOLVE_STRICT,
    )
    .map_err(|e| sys::io(shown, e))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| sys::io(shown, e))?;
    let mut f = File::from(fd);
    f.write_all(data).map_err(|e| sys::stdio(shown, e))?;
    f.sync_all().map_err(|e| sys::stdio(shown, e))?;
    Ok(())
}

/// All staging areas under one directory (`$XDG_STATE_HOME/airlock/staging`).
#[derive(Clone)]
pub struct StagingStore {
    dir: PathBuf,
    fd: Arc<OwnedFd>,
}

impl std::fmt::Debug for StagingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 13 && id.starts_with("st-") && id[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// How many of an area id's 10 hex digits are its key (see [`area_key`]).
const AREA_KEY_HEX: usize = 4;

/// The first hex digits of the id of the area of (`session`, `base`): from
/// a hash of both, so that finding an area reads the metadata of the few
/// areas whose ids share them instead of every area's.
fn area_key(session: &str, base: &str) -> String {
    let mut h = Sha256::new();
    h.update(session.as_bytes());
    h.update([0]);
    h.update(base.as_bytes());
    hex::encode(&h.finalize()[..AREA_KEY_HEX / 2])
}

impl StagingStore {
    /// Open (creating it 0700 if needed) the store directory. It must be a
    /// directory owned by the effective user; group/other permissions are
    /// removed.
    pub fn open(dir: &Path) -> Result<StagingStore, FsError> {
        let shown = dir.display().to_string();
        let dir = std::path::absolute(dir).map_err(|e| sys::stdio(&shown, e))?;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| sys::stdio(&shown, e))?;
        }
        let fd = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => FsError::Invalid {
                path: shown.clone(),
                why: "staging store must be a real directory, not a symlink".into(),
            },
            other => sys::io(&shown, other),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| sys::io(&shown, e))?;
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return Err(FsError::Invalid {
                path: shown,
                why: "staging store is owned by another user; choose a directory you own".into(),
            });
        }
        if st.st_mode & 0o077 != 0 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| sys::io(&shown, e))?;
        }
        Ok(StagingStore {
            dir,
            fd: Arc::new(fd),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&self, id: &str) -> Result<StagingArea, FsError> {
        if !valid_id(id) {
            return Err(FsError::StagedNotFound { id: id.to_string() });
        }
        let fd = match open_dir_strict(&*self.fd, id) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(FsError::StagedNotFound { id: id.to_string() })
            }
            Err(e) => return Err(sys::io(id, e)),
        };
        let area = StagingArea {
            id: id.to_string(),
            session: String::new(),
            base: String::new(),
            created: 0,
            dir: self.dir.join(id),
            fd: Arc::new(fd),
        };
        let meta: AreaHead = area.read_meta()?;
        if meta.id != id {
            return Err(FsError::Invalid {
                path: area.dir.display().to_string(),
                why: "meta.json names another id".into(),
            });
        }
        Ok(StagingArea {
            session: meta.session,
            base: meta.base,
            created: meta.created,
            ..area
        })
    }

    fn ids(&self) -> Result<Vec<String>, FsError> {
        Ok(dir_names(&*self.fd, &self.dir.display().to_string())?
            .into_iter()
            .filter(|n| valid_id(n))
            .collect())
    }

    /// The area for (session, base), created on first use. `base` must be
    /// an absolute, normalised path to a directory with no symlink on it.
    pub fn area(&self, session: &str, base: &str) -> Result<StagingArea, FsError> {
        if session.is_empty() {
            return Err(FsError::Invalid {
                path: base.to_string(),
                why: "session id is empty".into(),
            });
        }
        let root = GrantRoot::open(base)?;
        if root.is_file() {
            return Err(FsError::Invalid {
                path: base.to_string(),
                why: "staging base must be a directory".into(),
            });
        }
        let _lock = lock_dir(&self.fd, &self.dir.display().to_string())?;
        // Areas whose id carries this (session, base)'s key come first:
        // the one sought is among them unless it predates keyed ids. The
        // others are read only when none of those is it, which is when
        // the area is made (once per session and base).
        let key = area_key(session, base);
        let (keyed, rest): (Vec<String>, Vec<String>) = self
            .ids()?
            .into_iter()
            .partition(|id| id[3..].starts_with(&key));
        for id in keyed.into_iter().chain(rest) {
            match self.load(&id) {
                Ok(a) if a.session == session && a.base == base => return Ok(a),
                Ok(_) => {}
                Err(e) => tracing::warn!(id = %id, error = %e, "skipping unreadable staging area"),
            }
        }
        let mut tries = 0;
        let (id, shown) = loop {
            let id = format!("st-{key}{}", sys::random_hex(10 - AREA_KEY_HEX));
            let shown = self.dir.join(&id).display().to_string();
            match rustix::fs::mkdirat(&*self.fd, id.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => break (id, shown),
                Err(Errno::EXIST) if tries < 8 => tries += 1,
                Err(e) => return Err(sys::io(&shown, e)),
            }
        };
        let fd = open_dir_strict(&*self.fd, &id).map_err(|e| sys::io(&shown, e))?;
        // The upper dir is the root of the merged view: give it the base's mode.
        let base_mode = fmeta(&**root.dir_fd())
            .map(|m| m.mode & 0o777)
            .unwrap_or(0o755);
        for (name, mode) in [("upper", base_mode), ("work", 0o700), ("tmp", 0o700)] {
            rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(mode))
                .map_err(|e| sys::io(&shown, e))?;
            let d = open_dir_strict(&fd, name).map_err(|e| sys::io(&shown, e))?;
            rustix::fs::fchmod(&d, Mode::from_raw_mode(mode)).map_err(|e| sys::io(&shown, e))?;
        }
        let area = StagingArea {
            id: id.clone(),
            session: session.to_string(),
            base: base.to_string(),
            created: now_unix(),
            dir: self.dir.join(&id),
            fd: Arc::new(fd),
        };
        let meta = AreaMeta {
            id,
            session: area.session.clone(),
            base: area.base.clone(),
            created: area.created,
            bases: BTreeMap::new(),
        };
        area.write_meta(&meta)?;
        tracing::debug!(id = %area.id, session, base, "created staging area");
        Ok(area)
    }

    /// The area with this id.
    pub fn get(&self, id: &str) -> Result<StagingArea, FsError> {
        self.load(id)
    }

    /// Every area in the store (unreadable ones are skipped with a warning).
    pub fn list(&self) -> Result<Vec<AreaInfo>, FsError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let a = match self.load(&id) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "skipping unreadable staging area");
                    continue;
                }
            };
            let (changes, error) = match a.changes() {
                Ok(c) => (Some(c.len()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            out.push(AreaInfo {
                id: a.id.clone(),
                session: a.session.clone(),
                base: a.base.clone(),
                created: a.created,
                changes,
                error,
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Remove an area and everything staged in it.
    pub fn remove(&self, id: &str) -> Result<(), FsError> {
        let area = self.load(id)?;
        let _lock = lock_dir(&self.fd, &self.dir.display().to_string())?;
        remove_tree(&*self.fd, id, &area.dir.display().to_string())
    }
}

/// Remove `name` in `dir` and everything below it, never following
/// symlinks, at any width and depth (see [`crate::walk_dirs`]).
pub(crate) fn remove_tree<Fd: AsFd>(dir: Fd, name: &str, shown: &str) -> Result<(), FsError> {
    let dir = dir.as_fd();
    let m = match meta_at(dir, name) {
        Ok(m) => m,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(sys::io(shown, e)),
    };
    if m.kind != FileKind::Dir {
        return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(sys::io(shown, e)),
        };
    }
    make_walkable(dir, name, m.mode).map_err(|e| sys::io(shown, e))?;
    let sub = open_dir_strict(dir, name).map_err(|e| sys::io(shown, e))?;
    let at = |rel: &Path| format!("{shown}/{}", rel.display());
    crate::walk_dirs_then(
        sub,
        (),
        |fd, rel, ()| {
            // Every entry but the subdirectories goes now; those once
            // emptied (below).
            let mut subdirs = vec![];
            let d = Dir::read_from(fd).map_err(|e| sys::io(&at(rel), e))?;
            for ent in d {
                let ent = ent.map_err(|e| sys::io(&at(rel), e))?;
                let n = ent.file_name();
                if n == c"." || n == c".." {
                    continue;
                }
                let name =
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n.to_bytes());
                let mode = match rustix::fs::statat(fd, n, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st.st_mode,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(sys::io(&at(&rel.join(name)), e)),
                };
                if FileType::from_raw_mode(mode) == FileType::Directory {
                    make_walkable(fd, n, mode).map_err(|e| sys::io(&at(&rel.join(name)), e))?;
                    subdirs.push((name.to_owned(), ()));
                } else {
                    match rustix::fs::unlinkat(fd, n, AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(e) => return Err(sys::io(&at(&rel.join(name)), e)),
                    }
                }
            }
            Ok(subdirs)
        },
        |parent, name, rel| {
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|e| sys::io(&at(rel), e))
        },
        |rel, e| Err(sys::stdio(&at(rel), e)),
    )?;
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| sys::io(shown, e))
}

/// Give the directory `name` in `dir` (ours: a sandboxed command may have
/// left it 000) the permissions a walk needs, without following a
/// symbolic link. `mode` is what a stat of it just gave: nothing is done
/// when it already has them.
fn make_walkable<Fd: AsFd, P: rustix::path::Arg>(dir: Fd, name: P, mode: u32) -> Result<(), Errno> {
    if mode & 0o700 == 0o700 {
        return Ok(());
    }
    let p = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // fchmod refuses an O_PATH descriptor (EBADF); its /proc/self/fd link
    // names exactly this inode.
    use std::os::fd::AsRawFd;
    rustix::fs::chmod(
        format!("/proc/self/fd/{}", p.as_raw_fd()).as_str(),
        Mode::from_raw_mode(0o700),
    )
}

/// One session's staged changes over one base directory.
#[derive(Clone)]
pub struct StagingArea {
    id: String,
    session: String,
    base: String,
    created: i64,
    dir: PathBuf,
    fd: Arc<OwnedFd>,
}

impl std::fmt::Debug for StagingArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingArea")
            .field("id", &self.id)
            .field("session", &self.session)
            .field("base", &self.base)
            .finish()
    }
}

/// A staged change as found by walking the upper dir.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub rel: String,
    pub kind: ChangeKind,
    pub size: u64,
    /// The upper entry, `None` for deletes implied by an opaque directory.
    pub upper: Option<UKind>,
}

/// Content to stage at a path.
pub(crate) enum Content<'a> {
    Bytes(&'a [u8]),
    Symlink(&'a str),
}

/// Per-operation state, created under the area lock.
pub(crate) struct Ctx<'a> {
    pub area: &'a StagingArea,
    _lock: Lock,
    pub meta: AreaMeta,
    pub dirty: bool,
    pub upper: OwnedFd,
    tmp: OwnedFd,
    base: Option<GrantRoot>,
}

impl StagingArea {
    /// The area id (`st-` + 10 hex).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The session the area belongs to.
    pub fn session(&self) -> &str {
        &self.session
    }
    /// The real directory the changes apply to.
    pub fn base(&self) -> &str {
        &self.base
    }
    /// Unix seconds when the area was made.
    pub fn created(&self) -> i64 {
        self.created
    }
    /// overlayfs upperdir.
    pub fn upper_dir(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// overlayfs workdir (same filesystem as upper).
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    fn shown(&self) -> String {
        self.dir.display().to_string()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self) -> Result<T, FsError> {
        let shown = format!("{}/meta.json", self.shown());
        let fd = sys::openat2(
            &*self.fd,
            "meta.json",
            OFlags::RDONLY | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE_STRICT,
        )
        .map_err(|e| match e {
            Errno::NOENT => FsError::StagedNotFound {
                id: self.id.clone(),
            },
            other => sys::io(&shown, other),
        })?;
        let mut s = String::new();
        File::from(fd)
            .read_to_string(&mut s)
            .map_err(|e| sys::stdio(&shown, e))?;
        serde_json::from_str(&s).map_err(|e| FsError::Invalid {
            path: shown,
            why: format!("corrupt staging metadata: {e}"),
        })
    }

    fn write_meta(&self, meta: &AreaMeta) -> Result<(), FsError> {
        let shown = format!("{}/meta.json", self.shown());
        let data = serde_json::to_vec_pretty(meta).map_err(|e| FsError::Invalid {
            path: shown.clone(),
            why: format!("cannot encode metadata: {e}"),
        })?;
        let tmp = format!("meta.json.{}", sys::random_hex(8));
        write_file_at(&self.fd, &tmp, &data, 0o600, &shown)?;
        if let Err(e) = rustix::fs::renameat(&*self.fd, tmp.as_str(), &*self.fd, "meta.json") {
            let _ = rustix::fs::unlinkat(&*self.fd, tmp.as_str(), AtFlags::empty());
            return Err(sys::io(&shown, e));
        }
        rustix::fs::fsync(&*self.fd).map_err(|e| sys::io(&shown, e))
    }

    pub(crate) fn ctx(&self) -> Result<Ctx<'_>, FsError> {
        let lock = lock_dir(&self.fd, &self.shown())?;
        let meta = self.read_meta()?;
        let upper = open_dir_strict(&*self.fd, "upper")
            .map_err(|e| sys::io(&self.upper_dir().display().to_string(), e))?;
        let tmp = open_dir_strict(&*self.fd, "tmp")
            .map_err(|e| sys::io(&format!("{}/tmp", self.shown()), e))?;
        Ok(Ctx {
            area: self,
            _lock: lock,
            meta,
            dirty: false,
            upper,
            tmp,
            base: None,
        })
    }

    /// Relative form of an absolute path inside the base (not the base
    /// itself).
    pub(crate) fn rel(&self, path: &str) -> Result<String, FsError> {
        check_abs_normalised(path).map_err(|p| FsError::Invalid {
            path: path.to_string(),
            why: p.describe(),
        })?;
        if !is_within(path, &self.base) {
            return Err(FsError::Escape {
                path: path.to_string(),
                why: format!(
                    "outside the staging base {}; ask for a path under it",
                    self.base
                ),
            });
        }
        if path == self.base {
            return Err(FsError::Invalid {
                path: path.to_string(),
                why: "names the staging base itself".into(),
            });
        }
        Ok(if self.base == "/" {
            path[1..].to_string()
        } else {
            path[self.base.len() + 1..].to_string()
        })
    }

    /// Stage new content for `path` (absolute, within base). Records the
    /// on-disk fingerprint of the original the first time a path is staged.
    /// The staged mode is `mode`, else the staged or real file's, else
    /// 0644, always without setuid/setgid/sticky bits.
    pub fn write(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        let mut c = self.ctx()?;
        c.stage(&rel, Content::Bytes(data), mode)?;
        c.finish()
    }

    /// Stage the deletion of `path` (a file or symlink): a whiteout, so the
    /// real file disappears in the overlay.
    pub fn delete(&self, path: &str) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        let mut c = self.ctx()?;
        c.delete(&rel)?;
        c.finish()
    }

    /// Stage a new directory at `path` and any missing parents (like
    /// `mkdir -p`). A directory that already exists, really or staged, is
    /// left as it is; a file in the way is an error.
    pub fn mkdir(&self, path: &str) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        let mut c = self.ctx()?;
        let fd = c.ensure_upper_dirs(&rel)?;
        rustix::fs::fsync(&fd).map_err(|e| sys::io(path, e))?;
        c.finish()
    }

    /// Stage `to` with `from`'s content (merged view) and delete `from`.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        let from_rel = self.rel(from)?;
        let to_rel = self.rel(to)?;
        if from_rel == to_rel {
            return Err(FsError::Invalid {
                path: to.to_string(),
                why: "source and destination are the same".into(),
            });
        }
        if is_within(&to_rel, &from_rel) {
            return Err(FsError::Invalid {
                path: to.to_string(),
                why: "destination is inside the source".into(),
            });
        }
        let mut c = self.ctx()?;
        match c.lookup(&from_rel)? {
            Lookup::Hidden => {
                return Err(FsError::NotFound {
                    path: from.to_string(),
                })
            }
            Lookup::Found {
                kind: UKind::File(m),
                parent,
            } => {
                let (_, name) = sys::split_parent(&from_rel);
                let data = read_upper_file(&parent, name, from)?;
                c.stage(&to_rel, Content::Bytes(&data), Some(m.mode))?;
            }
            Lookup::Found {
                kind: UKind::Symlink(t),
                ..
            } => {
                c.stage(&to_rel, Content::Symlink(&t), None)?;
            }
            Lookup::Found { .. } => {
                return Err(FsError::Invalid {
                    path: from.to_string(),
                    why: "only files and symlinks can be renamed; move directories file by file"
                        .into(),
                })
            }
            Lookup::Absent => {
                let root = c.base()?.clone();
                let rp = root.resolve(from)?;
                match rp.kind() {
                    None => {
                        return Err(FsError::NotFound {
                            path: from.to_string(),
                        })
                    }
                    Some(FileKind::File) => {
                        let st = crate::resolve::stat(&rp)?;
                        if st.size > MAX_RENAME_BYTES {
                            return Err(FsError::Invalid {
                                path: from.to_string(),
                                why: format!("larger than {MAX_RENAME_BYTES} bytes; rename it in a sandboxed command"),
                            });
                        }
                        let data = crate::resolve::read(&rp, 0, None, MAX_RENAME_BYTES)?;
                        c.stage(&to_rel, Content::Bytes(&data), Some(st.mode))?;
                    }
                    Some(FileKind::Symlink) => {
                        let (_, name) = sys::split_parent(&from_rel);
                        let parent_rel = sys::split_parent(&from_rel).0;
                        let pfd = open_dir_strict(&**root.dir_fd(), parent_rel)
                            .map_err(|e| crate::resolve::map_open_err(from, e))?;
                        let t = rustix::fs::readlinkat(&pfd, name, Vec::new())
                            .map_err(|e| sys::io(from, e))?;
                        let t = String::from_utf8_lossy(t.as_bytes()).into_owned();
                        c.stage(&to_rel, Content::Symlink(&t), None)?;
                    }
                    Some(_) => return Err(FsError::Invalid {
                        path: from.to_string(),
                        why:
                            "only files and symlinks can be renamed; move directories file by file"
                                .into(),
                    }),
                }
            }
        }
        c.delete(&from_rel)?;
        c.finish()
    }

    /// Merged view: staged content if any, `NotFound` if whited out, else `None`
    /// (caller reads the real file).
    pub fn read_staged(&self, path: &str) -> Result<Option<Vec<u8>>, FsError> {
        let rel = self.rel(path)?;
        let c = self.ctx()?;
        match c.lookup(&rel)? {
            Lookup::Absent => Ok(None),
            Lookup::Hidden => Err(FsError::NotFound {
                path: path.to_string(),
            }),
            Lookup::Found {
                kind: UKind::File(_),
                parent,
            } => {
                let (_, name) = sys::split_parent(&rel);
                read_upper_file(&parent, name, path).map(Some)
            }
            Lookup::Found {
                kind: UKind::Dir { .. },
                ..
            } => Err(FsError::Invalid {
                path: path.to_string(),
                why: "is a directory".into(),
            }),
            Lookup::Found {
                kind: UKind::Symlink(t),
                ..
            } => Err(FsError::Invalid {
                path: path.to_string(),
                why: format!("is a staged symlink to {t}; read its target"),
            }),
            Lookup::Found { .. } => Err(FsError::Invalid {
                path: path.to_string(),
                why: "not a regular file".into(),
            }),
        }
    }

    /// Record base fingerprints for upper entries that lack one (after a
    /// sandboxed command wrote the upper dir directly), and return the
    /// staged changes ([`StagingArea::changes`]) found by the same walk.
    pub fn record_bases(&self) -> Result<Vec<Change>, FsError> {
        let mut c = self.ctx()?;
        let items = c.walk()?;
        for it in &items {
            match c.ensure_base(&it.rel) {
                Ok(()) => {}
                // Commit will refuse it, naming the reason.
                Err(e @ FsError::Escape { .. }) => {
                    tracing::warn!(error = %e, "cannot fingerprint the real entry of a staged change");
                }
                Err(e) => return Err(e),
            }
        }
        c.finish()?;
        Ok(self.as_changes(items))
    }

    /// The staged changes, sorted by path. Entries whose staged content
    /// equals the real file (an overlay copy-up without a change) are left
    /// out; so are FIFOs, sockets and devices a sandboxed command made.
    pub fn changes(&self) -> Result<Vec<Change>, FsError> {
        let items = self.ctx()?.walk()?;
        Ok(self.as_changes(items))
    }

    fn as_changes(&self, items: Vec<Item>) -> Vec<Change> {
        items
            .into_iter()
            .map(|it| Change {
                path: sys::join_abs(&self.base, &it.rel),
                kind: it.kind,
                size: it.size,
            })
            .collect()
    }

    /// Unified diff of the staged changes (all, or the named paths).
    pub fn diff(&self, paths: Option<&[String]>) -> Result<String, FsError> {
        let mut c = self.ctx()?;
        crate::diff::diff(&mut c, paths)
    }

    /// Apply staged changes to the real tree. Per file and atomic
    /// (write-then-rename); never follows symlinks; strips setuid/setgid;
    /// refuses protected paths and files changed on disk since staging;
    /// refuses staged symlinks that point outside the base. Applied entries
    /// leave the area; refused ones stay staged and are reported.
    pub fn commit(
        &self,
        paths: Option<&[String]>,
        opts: &crate::CommitOptions,
    ) -> Result<crate::CommitReport, FsError> {
        if crate::volatile_state(&self.work_dir()) == crate::VolatileState::EarlierBoot {
            return Err(FsError::Invalid {
                path: self.dir.display().to_string(),
                why: format!(
                    "a sandbox was writing these staged changes when the machine went down; they may be incomplete. Review them (airlock staged diff {id}) and discard them (airlock staged discard {id}), or accept them as they are by removing {}",
                    self.work_dir().join("work/incompat").display(),
                    id = self.id
                ),
            });
        }
        let mut c = self.ctx()?;
        let report = crate::commit::commit(&mut c, paths, opts)?;
        c.finish()?;
        Ok(report)
    }

    /// Drop staged changes (all, or the named paths); returns how many.
    pub fn discard(&self, paths: Option<&[String]>) -> Result<usize, FsError> {
        let mut c = self.ctx()?;
        let items = c.walk()?;
        let n = match paths {
            None => {
                let upper = c.area.upper_dir().display().to_string();
                for name in dir_names(&c.upper, &upper)? {
                    remove_tree(&c.upper, &name, &format!("{upper}/{name}"))?;
                }
                // Nothing is left that a crash could have cut short.
                crate::close_volatile(&c.area.upper_dir(), &c.area.work_dir(), true)
                    .map_err(|e| sys::stdio(&upper, e))?;
                c.meta.bases.clear();
                c.dirty = true;
                items.len()
            }
            Some(paths) => {
                let mut n = 0;
                for p in paths {
                    let rel = self.rel(p)?;
                    let selected: Vec<&Item> =
                        items.iter().filter(|it| is_within(&it.rel, &rel)).collect();
                    if selected.is_empty() {
                        continue;
                    }
                    for it in &selected {
                        if it.upper.is_none() {
                            // A delete implied by an opaque parent: turn the
                            // parent into an explicit merge first.
                            c.deopaque(sys::split_parent(&it.rel).0)?;
                        }
                    }
                    c.remove_upper(&rel)?;
                    n += selected.len();
                }
                n
            }
        };
        c.finish()?;
        Ok(n)
    }
}

fn read_upper_file(parent: &OwnedFd, name: &str, shown: &str) -> Result<Vec<u8>, FsError> {
    let fd = sys::openat2(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        RESOLVE_STRICT,
    )
    .map_err(|e| sys::io(shown, e))?;
    let m = fmeta(&fd).map_err(|e| sys::io(shown, e))?;
    if m.kind != FileKind::File {
        return Err(FsError::Invalid {
            path: shown.to_string(),
            why: "staged entry is not a regular file".into(),
        });
    }
    let mut v = Vec::with_capacity(usize::try_from(m.size.min(1 << 24)).unwrap_or(0));
    File::from(fd)
        .read_to_end(&mut v)
        .map_err(|e| sys::stdio(shown, e))?;
    Ok(v)
}

impl<'a> Ctx<'a> {
    /// Save the metadata if it changed.
    pub fn finish(self) -> Result<(), FsError> {
        if self.dirty {
            self.area.write_meta(&self.meta)?;
        }
        Ok(())
    }

    pub fn abs(&self, rel: &str) -> String {
        sys::join_abs(&self.area.base, rel)
    }

    /// The base directory, opened without following symlinks.
    pub fn base(&mut self) -> Result<&GrantRoot, FsError> {
        if self.base.is_none() {
            self.base = Some(GrantRoot::open(&self.area.base)?);
        }
        match &self.base {
            Some(b) => Ok(b),
            None => Err(FsError::Invalid {
                path: self.area.base.clone(),
                why: "base not open".into(),
            }),
        }
    }

    fn base_fd(&mut self) -> Result<Arc<OwnedFd>, FsError> {
        Ok(self.base()?.dir_fd().clone())
    }

    /// Probe `rel` in the real tree.
    pub fn probe_base(&mut self, rel: &str) -> Result<Probe, FsError> {
        let fd = self.base_fd()?;
        probe(&*fd, rel)
    }

    /// Record the real file's fingerprint the first time `rel` is staged.
    pub fn ensure_base(&mut self, rel: &str) -> Result<(), FsError> {
        if self.meta.bases.contains_key(rel) {
            return Ok(());
        }
        let fd = self.base_fd()?;
        let fp = fingerprint(&*fd, rel, &self.abs(rel))?;
        self.meta.bases.insert(rel.to_string(), fp);
        self.dirty = true;
        Ok(())
    }

    /// Look `rel` up in the upper dir as overlayfs would.
    pub fn lookup(&self, rel: &str) -> Result<Lookup, FsError> {
        let shown = self.abs(rel);
        let comps: Vec<&str> = rel.split('/').collect();
        let mut cur = rustix::fs::openat(
            &self.upper,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys::io(&shown, e))?;
        let mut under_opaque = false;
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let e = upper_entry(&cur, comp).map_err(|e| sys::io(&shown, e))?;
            match (e, last) {
                (None, _) => {
                    return Ok(if under_opaque {
                        Lookup::Hidden
                    } else {
                        Lookup::Absent
                    })
                }
                (Some(UKind::Whiteout), _) => return Ok(Lookup::Hidden),
                (Some(kind), true) => return Ok(Lookup::Found { kind, parent: cur }),
                (Some(UKind::Dir { opaque }), false) => {
                    under_opaque |= opaque;
                    cur = open_dir_strict(&cur, comp).map_err(|e| sys::io(&shown, e))?;
                }
                (Some(_), false) => return Ok(Lookup::Hidden),
            }
        }
        Ok(Lookup::Absent)
    }

    fn set_opaque(&self, dir: &OwnedFd, value: &[u8], shown: &str) -> Result<(), FsError> {
        rustix::fs::fsetxattr(dir, XATTR_OPAQUE, value, XattrFlags::empty()).map_err(|e| match e {
            Errno::NOTSUP | Errno::PERM => FsError::Invalid {
                path: shown.to_string(),
                why: "the staging store's filesystem does not accept user.* xattrs; put the store on ext4, xfs, btrfs or tmpfs (Linux 6.6+)".into(),
            },
            other => sys::io(shown, other),
        })
    }

    /// Make sure the directories of `parent_rel` exist in upper, mirroring
    /// the real tree; returns an fd on the innermost one.
    fn ensure_upper_dirs(&mut self, parent_rel: &str) -> Result<OwnedFd, FsError> {
        let mut cur = rustix::fs::openat(
            &self.upper,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys::io(&self.abs("."), e))?;
        if parent_rel == "." || parent_rel.is_empty() {
            return Ok(cur);
        }
        let mut prefix = String::new();
        for comp in parent_rel.split('/') {
            prefix = sys::join_rel(&prefix, comp);
            let shown = self.abs(&prefix);
            match upper_entry(&cur, comp).map_err(|e| sys::io(&shown, e))? {
                Some(UKind::Dir { .. }) => {}
                Some(UKind::Whiteout) => {
                    // The real entry was deleted: a new directory replaces it.
                    self.ensure_base(&prefix)?;
                    rustix::fs::unlinkat(&cur, comp, AtFlags::empty())
                        .map_err(|e| sys::io(&shown, e))?;
                    rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755))
                        .map_err(|e| sys::io(&shown, e))?;
                    let d = open_dir_strict(&cur, comp).map_err(|e| sys::io(&shown, e))?;
                    self.set_opaque(&d, b"y", &shown)?;
                }
                Some(_) => {
                    return Err(FsError::Invalid {
                        path: shown,
                        why: "is staged as a file, not a directory".into(),
                    })
                }
                None => {
                    let (mode, opaque) = match self.probe_base(&prefix)? {
                        Probe::Found(_, m) if m.kind == FileKind::Dir => (m.mode & 0o777, false),
                        Probe::Found(_, m) if m.kind == FileKind::Symlink => {
                            return Err(FsError::Escape {
                                path: shown,
                                why: "is a symlink in the real tree; use the real path".into(),
                            })
                        }
                        Probe::Found(..) | Probe::NotDir => {
                            return Err(FsError::Invalid { path: shown, why: "is not a directory in the real tree".into() })
                        }
                        Probe::SymlinkOnPath => {
                            return Err(FsError::Escape {
                                path: shown,
                                why: "a directory on the path is a symlink in the real tree; use the real path".into(),
                            })
                        }
                        Probe::Missing => (0o755, true),
                    };
                    rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(mode))
                        .map_err(|e| sys::io(&shown, e))?;
                    if opaque {
                        self.ensure_base(&prefix)?;
                        let d = open_dir_strict(&cur, comp).map_err(|e| sys::io(&shown, e))?;
                        self.set_opaque(&d, b"y", &shown)?;
                    }
                }
            }
            cur = open_dir_strict(&cur, comp).map_err(|e| sys::io(&shown, e))?;
        }
        Ok(cur)
    }

    fn tmp_name(&self) -> String {
        format!("t-{}", sys::random_hex(16))
    }

    /// Stage `content` at `rel`.
    pub fn stage(
        &mut self,
        rel: &str,
        content: Content<'_>,
        mode: Option<u32>,
    ) -> Result<(), FsError> {
        let shown = self.abs(rel);
        self.ensure_base(rel)?;
        let fp = self.meta.bases.get(rel).cloned().unwrap_or_default();
        let look = self.lookup(rel)?;
        let staged_mode = match &look {
            Lookup::Found {
                kind: UKind::Dir { .. },
                ..
            } => {
                return Err(FsError::Invalid {
                    path: shown,
                    why: "is a directory".into(),
                })
            }
            Lookup::Found {
                kind: UKind::File(m),
                ..
            } => Some(m.mode),
            Lookup::Absent => match fp.kind {
                Some(FileKind::Dir) => {
                    return Err(FsError::Invalid {
                        path: shown,
                        why: "is a directory".into(),
                    })
                }
                Some(FileKind::Symlink) => {
                    return Err(FsError::Invalid {
                        path: shown,
                        why: format!(
                            "is a symlink in the real tree (to {}); write to its target instead",
                            fp.link.as_deref().unwrap_or("?")
                        ),
                    })
                }
                Some(FileKind::File) => Some(fp.mode),
                _ => None,
            },
            _ => None,
        };
        let mode = mode.or(staged_mode).unwrap_or(0o644) & 0o777;
        let (parent_rel, name) = sys::split_parent(rel);
        let parent = self.ensure_upper_dirs(parent_rel)?;
        let tmp = self.tmp_name();
        match content {
            Content::Bytes(data) => write_file_at(&self.tmp, &tmp, data, mode, &shown)?,
            Content::Symlink(target) => rustix::fs::symlinkat(target, &self.tmp, tmp.as_str())
                .map_err(|e| sys::io(&shown, e))?,
        }
        if let Err(e) = rustix::fs::renameat(&self.tmp, tmp.as_str(), &parent, name) {
            let _ = rustix::fs::unlinkat(&self.tmp, tmp.as_str(), AtFlags::empty());
            return Err(match e {
                Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => FsError::Invalid {
                    path: shown,
                    why: "is a directory".into(),
                },
                other => sys::io(&shown, other),
            });
        }
        rustix::fs::fsync(&parent).map_err(|e| sys::io(&shown, e))?;
        Ok(())
    }

    /// Put a whiteout at `name` in `parent` (replacing what is there).
    fn whiteout(&mut self, parent: &OwnedFd, name: &str, shown: &str) -> Result<(), FsError> {
        let tmp = self.tmp_name();
        // A 0/0 character device is the whiteout every overlayfs honours in
        // lookups and readdir; Linux lets unprivileged users make it.
        match rustix::fs::mknodat(
            &self.tmp,
            tmp.as_str(),
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        ) {
            Ok(()) => {}
            Err(Errno::PERM) | Err(Errno::NOTSUP) | Err(Errno::ACCESS) => {
                tracing::info!(
                    path = shown,
                    "cannot make a 0/0 whiteout here; using the xattr form"
                );
                let fd = sys::openat2(
                    &self.tmp,
                    &tmp,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(0o600),
                    RESOLVE_STRICT,
                )
                .map_err(|e| sys::io(shown, e))?;
                let marked = rustix::fs::fsetxattr(&fd, XATTR_WHITEOUT, b"", XattrFlags::empty())
                    .map_err(|e| sys::io(shown, e))
                    .and_then(|()| self.set_opaque(parent, b"x", shown));
                if let Err(e) = marked {
                    let _ = rustix::fs::unlinkat(&self.tmp, tmp.as_str(), AtFlags::empty());
                    return Err(e);
                }
            }
            Err(e) => return Err(sys::io(shown, e)),
        }
        if let Err(e) = rustix::fs::renameat(&self.tmp, tmp.as_str(), parent, name) {
            let _ = rustix::fs::unlinkat(&self.tmp, tmp.as_str(), AtFlags::empty());
            return Err(sys::io(shown, e));
        }
        rustix::fs::fsync(parent).map_err(|e| sys::io(shown, e))
    }

    /// Stage the deletion of `rel`.
    pub fn delete(&mut self, rel: &str) -> Result<(), FsError> {
        let shown = self.abs(rel);
        self.ensure_base(rel)?;
        let fp = self.meta.bases.get(rel).cloned().unwrap_or_default();
        let (parent_rel, name) = sys::split_parent(rel);
        let base_visible;
        match self.lookup(rel)? {
            Lookup::Hidden => return Err(FsError::NotFound { path: shown }),
            Lookup::Found {
                kind: UKind::Dir { .. },
                ..
            } => {
                return Err(FsError::Invalid {
                    path: shown,
                    why: "deleting directories is not supported here; delete the files inside"
                        .into(),
                })
            }
            Lookup::Found { parent, .. } => {
                // Does the real entry show through once the staged one is gone?
                base_visible = fp.existed && !self.parent_opaque(parent_rel)?;
                if !base_visible {
                    rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                        .map_err(|e| sys::io(&shown, e))?;
                    self.meta.bases.remove(rel);
                    self.dirty = true;
                    return Ok(());
                }
            }
            Lookup::Absent => {
                if !fp.existed {
                    return Err(FsError::NotFound { path: shown });
                }
                if fp.kind == Some(FileKind::Dir) {
                    return Err(FsError::Invalid {
                        path: shown,
                        why: "deleting directories is not supported here; delete the files inside"
                            .into(),
                    });
                }
            }
        }
        let parent = self.ensure_upper_dirs(parent_rel)?;
        self.whiteout(&parent, name, &shown)
    }

    /// Whether any upper directory on `parent_rel` (inclusive) is opaque.
    fn parent_opaque(&self, parent_rel: &str) -> Result<bool, FsError> {
        if parent_rel == "." {
            return Ok(false);
        }
        let shown = self.abs(parent_rel);
        let mut cur = rustix::fs::openat(
            &self.upper,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys::io(&shown, e))?;
        for comp in parent_rel.split('/') {
            cur = match open_dir_strict(&cur, comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(false),
                Err(e) => return Err(sys::io(&shown, e)),
            };
            if is_opaque(&cur).map_err(|e| sys::io(&shown, e))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Remove whatever is staged at `rel` (and below), and its fingerprints.
    pub fn remove_upper(&mut self, rel: &str) -> Result<(), FsError> {
        let shown = self.abs(rel);
        if let Lookup::Found { parent, .. } = self.lookup(rel)? {
            remove_tree(&parent, sys::split_parent(rel).1, &shown)?;
        } else {
            // Also remove a whiteout (lookup reports it as Hidden).
            let (parent_rel, name) = sys::split_parent(rel);
            if let Ok(p) = self.open_upper_dir(parent_rel) {
                if let Ok(Some(UKind::Whiteout)) = upper_entry(&p, name) {
                    rustix::fs::unlinkat(&p, name, AtFlags::empty())
                        .map_err(|e| sys::io(&shown, e))?;
                }
            }
        }
        let gone: Vec<String> = self
            .meta
            .bases
            .keys()
            .filter(|k| is_within(k, rel))
            .cloned()
            .collect();
        for k in gone {
            self.meta.bases.remove(&k);
            self.dirty = true;
        }
        Ok(())
    }

    /// Open an existing directory in upper (no creation).
    pub fn open_upper_dir(&self, rel: &str) -> Result<OwnedFd, FsError> {
        let shown = self.abs(rel);
        if rel == "." || rel.is_empty() {
            return rustix::fs::openat(
                &self.upper,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| sys::io(&shown, e));
        }
        sys::openat2(
            &self.upper,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE_STRICT,
        )
        .map_err(|e| sys::io(&shown, e))
    }

    /// Before the staged entry at `rel` is dropped (it was committed), make
    /// sure no opaque ancestor in upper hides the real entry that replaces
    /// it.
    pub fn unshadow(&mut self, rel: &str) -> Result<(), FsError> {
        let mut prefix = String::new();
        let parent_rel = sys::split_parent(rel).0;
        if parent_rel == "." {
            return Ok(());
        }
        for comp in parent_rel.split('/') {
            prefix = sys::join_rel(&prefix, comp);
            self.deopaque(&prefix)?;
        }
        Ok(())
    }

    /// Turn an opaque upper directory whose real counterpart exists into a
    /// plain merge directory with explicit whiteouts for the real entries it
    /// hid.
    pub fn deopaque(&mut self, dir_rel: &str) -> Result<(), FsError> {
        let shown = self.abs(dir_rel);
        let up = self.open_upper_dir(dir_rel)?;
        if !is_opaque(&up).map_err(|e| sys::io(&shown, e))? {
            return Ok(());
        }
        let in_upper: BTreeSet<String> = dir_names(&up, &shown)?.into_iter().collect();
        if let Probe::Found(_, m) = self.probe_base(dir_rel)? {
            if m.kind == FileKind::Dir {
                let bfd = self.base_fd()?;
                let real = open_dir_strict(&*bfd, dir_rel).map_err(|e| sys::io(&shown, e))?;
                for name in dir_names(&real, &shown)? {
                    if !in_upper.contains(&name) {
                        let child = sys::join_rel(dir_rel, &name);
                        self.ensure_base(&child)?;
                        let cshown = self.abs(&child);
                        self.whiteout(&up, &name, &cshown)?;
                    }
                }
            }
        }
        match rustix::fs::fremovexattr(&up, XATTR_OPAQUE) {
            Ok(()) | Err(Errno::NODATA) => Ok(()),
            Err(e) => Err(sys::io(&shown, e)),
        }
    }

    /// Walk the upper dir and classify every staged change against the
    /// real tree. Sorted by path.
    ///
    /// Any width and depth (see [`crate::walk_dirs`]). Nothing beneath a
    /// directory the real tree lacks is looked up in the real tree.
    pub fn walk(&mut self) -> Result<Vec<Item>, FsError> {
        let mut out = Vec::new();
        let root = rustix::fs::openat(
            &self.upper,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys::io(&self.abs("."), e))?;
        let base = self.area.base.clone();
        let id = self.area.id.clone();
        crate::walk_dirs(
            root,
            BaseAt::Dir,
            |fd, rel, at| {
                // Names are UTF-8 (see dir_names), so their paths are.
                let prefix = rel.to_str().unwrap_or_default();
                let subs = self.walk_dir(fd, prefix, at, &mut out)?;
                Ok(subs.into_iter().map(|(n, at)| (n.into(), at)).collect())
            },
            |rel, e| Err(sys::stdio(&sys::join_abs(&base, &rel.to_string_lossy()), e)),
        )
        .map_err(|e| unreadable(e, &id))?;
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// Classify the entries of the upper directory `fd` (at `prefix`),
    /// where the real tree has `parent`, into `out`; return its
    /// subdirectories with what the real tree has at each.
    fn walk_dir(
        &mut self,
        fd: &OwnedFd,
        prefix: &str,
        parent: BaseAt,
        out: &mut Vec<Item>,
    ) -> Result<Vec<(String, BaseAt)>, FsError> {
        let mut subdirs = vec![];
        let shown_dir = self.abs(if prefix.is_empty() { "." } else { prefix });
        for name in dir_names(fd, &shown_dir)? {
            let rel = sys::join_rel(prefix, &name);
            if rel.len() > MAX_STAGED_PATH {
                // Bounds the walk's time and memory whatever the command
                // nested; nothing that deep could be committed anyway.
                let head: String = rel.chars().take(120).collect();
                return Err(FsError::Invalid {
                    path: format!("{}…", self.abs(&head)),
                    why: format!(
                        "a staged path is longer than {MAX_STAGED_PATH} bytes; it cannot be reviewed or committed: discard the area (airlock staged discard {})",
                        self.area.id
                    ),
                });
            }
            let shown = self.abs(&rel);
            let Some(e) = upper_entry(fd, &name).map_err(|e| sys::io(&shown, e))? else {
                continue;
            };
            let base = match parent {
                BaseAt::Dir => self.probe_base(&rel)?,
                BaseAt::Missing => Probe::Missing,
                BaseAt::NotDir => Probe::NotDir,
                BaseAt::SymlinkOnPath => Probe::SymlinkOnPath,
            };
            let base_meta = match &base {
                Probe::Found(_, m) => Some(*m),
                _ => None,
            };
            match &e {
                UKind::Whiteout => {
                    if base_meta.is_some() {
                        out.push(Item {
                            rel,
                            kind: ChangeKind::Deleted,
                            size: 0,
                            upper: Some(e),
                        });
                    }
                }
                UKind::File(m) => {
                    let kind = match base_meta {
                        None => Some(ChangeKind::Added),
                        Some(bm) if bm.kind == FileKind::File => {
                            if bm.size == m.size
                                && (bm.mode & 0o777) == (m.mode & 0o777)
                                && self.same_content(fd, &name, &rel)?
                            {
                                None
                            } else {
                                Some(ChangeKind::Modified)
                            }
                        }
                        Some(_) => Some(ChangeKind::Modified),
                    };
                    if let Some(kind) = kind {
                        out.push(Item {
                            rel,
                            kind,
                            size: m.size,
                            upper: Some(e.clone()),
                        });
                    }
                }
                UKind::Symlink(t) => {
                    let same = match &base {
                        Probe::Found(bfd, bm) if bm.kind == FileKind::Symlink => {
                            rustix::fs::readlinkat(bfd, "", Vec::new())
                                .map(|x| x.as_bytes() == t.as_bytes())
                                .unwrap_or(false)
                        }
                        _ => false,
                    };
                    if !same {
                        out.push(Item {
                            rel,
                            kind: ChangeKind::Symlink,
                            size: t.len() as u64,
                            upper: Some(e.clone()),
                        });
                    }
                }
                UKind::Dir { opaque } => {
                    let real_is_dir = base_meta.map(|m| m.kind == FileKind::Dir).unwrap_or(false);
                    if !real_is_dir {
                        out.push(Item {
                            rel: rel.clone(),
                            kind: ChangeKind::Dir,
                            size: 0,
                            upper: Some(e.clone()),
                        });
                    }
                    if *opaque && real_is_dir {
                        // Everything in the real dir that upper does not
                        // shadow is deleted.
                        let sub = open_dir_strict(fd, &name).map_err(|e| sys::io(&shown, e))?;
                        let bfd = self.base_fd()?;
                        let real = open_dir_strict(&*bfd, &rel).map_err(|e| sys::io(&shown, e))?;
                        let shadow: BTreeSet<String> =
                            dir_names(&sub, &shown)?.into_iter().collect();
                        for child in dir_names(&real, &shown)? {
                            if !shadow.contains(&child) {
                                out.push(Item {
                                    rel: sys::join_rel(&rel, &child),
                                    kind: ChangeKind::Deleted,
                                    size: 0,
                                    upper: None,
                                });
                            }
                        }
                    }
                    subdirs.push((name, BaseAt::of(&base)));
                }
                UKind::Other(_) => {
                    tracing::warn!(path = %shown, "ignoring a staged FIFO, socket or device; only files, symlinks and directories are committed");
                }
            }
        }
        Ok(subdirs)
    }

    fn same_content(
        &mut self,
        upper_dir: &OwnedFd,
        name: &str,
        rel: &str,
    ) -> Result<bool, FsError> {
        let shown = self.abs(rel);
        let fd = sys::openat2(
            upper_dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
            RESOLVE_STRICT,
        )
        .map_err(|e| sys::io(&shown, e))?;
        let (a, _) = sha256_reader(File::from(fd)).map_err(|e| sys::stdio(&shown, e))?;
        let bfd = self.base_fd()?;
        let fp = fingerprint(&*bfd, rel, &shown)?;
        Ok(fp.sha256.as_deref() == Some(a.as_str()))
    }

    /// Read the staged regular file at `rel`.
    pub fn read_upper(&self, rel: &str) -> Result<Vec<u8>, FsError> {
        let (parent_rel, name) = sys::split_parent(rel);
        let p = self.open_upper_dir(parent_rel)?;
        read_upper_file(&p, name, &self.abs(rel))
    }

    /// Remove empty upper directories whose real counterpart exists and that
    /// hide nothing, bottom-up.
    pub fn prune(&mut self) -> Result<(), FsError> {
        let root = self.open_upper_dir(".")?;
        self.prune_dir(&root, "")?;
        Ok(())
    }

    fn prune_dir(&mut self, fd: &OwnedFd, prefix: &str) -> Result<bool, FsError> {
        let shown = self.abs(if prefix.is_empty() { "." } else { prefix });
        let mut empty = true;
        for name in dir_names(fd, &shown)? {
            let rel = sys::join_rel(prefix, &name);
            match upper_entry(fd, &name).map_err(|e| sys::io(&shown, e))? {
                Some(UKind::Dir { opaque }) => {
                    let sub = open_dir_strict(fd, &name).map_err(|e| sys::io(&shown, e))?;
                    let sub_empty = self.prune_dir(&sub, &rel)?;
                    let removable = sub_empty
                        && match self.probe_base(&rel)? {
                            Probe::Found(bfd, m) if m.kind == FileKind::Dir => {
                                !opaque || {
                                    let real = open_dir_strict(&bfd, ".")
                                        .map_err(|e| sys::io(&shown, e))?;
                                    dir_names(&real, &shown)?.is_empty()
                                }
                            }
                            _ => false,
                        };
                    if removable {
                        rustix::fs::unlinkat(fd, name.as_str(), AtFlags::REMOVEDIR)
                            .map_err(|e| sys::io(&shown, e))?;
                    } else {
                        empty = false;
                    }
                }
                Some(_) => empty = false,
                None => {}
            }
        }
        Ok(empty)
    }
}
