//! Safe file access beneath a grant, and the staging store.
//!
//! CONTRACT (used by airlock-broker and airlock-sandbox; keep these signatures):
//!
//! Resolution. [`GrantRoot::open`] opens a granted path from `/` with
//! `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: the path policy
//! approved must be the literal path on disk. [`GrantRoot::resolve`] then
//! resolves a path lexically within the grant with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the root's fd, so
//! `..`, symlinks (planted or swapped in concurrently) and `/proc/self/root`
//! cannot leave the grant. Regular files with more than one hard link are
//! refused (`PathEscape`): a hard link planted in a grant can name a file
//! outside it. A grant that names a file (not a directory) admits exactly
//! that file.
//!
//! Staging. A [`StagingArea`] belongs to one (session, base directory) pair
//! and stores changes in overlayfs upper-dir layout under
//! `<store>/<id>/upper` (with `<store>/<id>/work` beside it for the overlay
//! work dir): changed files as files, deleted files as whiteouts. Whiteouts
//! written by Airlock are the xattr form (an empty regular file with
//! `user.overlay.whiteout`, its parent marked `user.overlay.opaque="x"`),
//! which overlayfs mounted with `userxattr` inside a user namespace honours
//! and which needs no CAP_MKNOD; character-device 0/0 whiteouts (created by
//! the kernel when a sandboxed command deletes a file) are read too.
//! Opaque directories are `user.overlay.opaque="y"`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use airlock_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: resolves outside the grant ({why})")]
    Escape { path: String, why: String },
    #[error("{path}: protected path ({why})")]
    Protected { path: String, why: String },
    #[error("{path}: changed on disk since it was staged")]
    Conflict { path: String },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
    #[error("staging area {id} not found")]
    StagedNotFound { id: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl FsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FsError::NotFound { .. } => ErrorCode::NotFound,
            FsError::Escape { .. } => ErrorCode::PathEscape,
            FsError::Protected { .. } => ErrorCode::ProtectedPath,
            FsError::Conflict { .. } => ErrorCode::Conflict,
            FsError::Invalid { .. } => ErrorCode::InvalidValue,
            FsError::StagedNotFound { .. } => ErrorCode::StagedNotFound,
            FsError::Io { .. } => ErrorCode::Internal,
        }
    }
}

/// File type as reported by stat/list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    /// Unix seconds.
    pub modified: i64,
    /// True when the metadata comes from a staged (not yet committed) change.
    #[serde(default)]
    pub staged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
}

/// An opened grant root. Cheap to keep in a cache keyed by path.
pub struct GrantRoot {
    // implementation-defined (holds an O_PATH fd)
}

/// A path the resolver has checked, holding an fd to it (or to its parent
/// plus the final name when the file does not exist yet). Only
/// [`GrantRoot::resolve`] makes one.
pub struct ResolvedPath {
    // implementation-defined
}

impl ResolvedPath {
    /// The absolute path as requested (lexical).
    pub fn requested(&self) -> &str {
        todo!()
    }
    /// Where the fd really points (from /proc/self/fd), when it exists. Differs
    /// from `requested` when an in-grant symlink was followed; the broker
    /// re-checks policy on it.
    pub fn real_path(&self) -> Option<String> {
        todo!()
    }
    pub fn exists(&self) -> bool {
        todo!()
    }
}

impl GrantRoot {
    pub fn open(grant: &str) -> Result<GrantRoot, FsError> {
        let _ = grant;
        todo!()
    }
    pub fn path(&self) -> &str {
        todo!()
    }
    /// Resolve `path` (absolute, lexically within the grant). The target need
    /// not exist (its parent must).
    pub fn resolve(&self, path: &str) -> Result<ResolvedPath, FsError> {
        let _ = path;
        todo!()
    }
}

/// Read up to `len` bytes (all when `None`, capped at `max`) from `offset`.
pub fn read(p: &ResolvedPath, offset: u64, len: Option<u64>, max: u64) -> Result<Vec<u8>, FsError> {
    let _ = (p, offset, len, max);
    todo!()
}
pub fn list(p: &ResolvedPath) -> Result<Vec<DirEntry>, FsError> {
    let _ = p;
    todo!()
}
pub fn stat(p: &ResolvedPath) -> Result<FileStat, FsError> {
    let _ = p;
    todo!()
}

/// Paths that are never written by commit and are read-only in the sandbox.
/// Patterns are globs relative to a workspace root, matched at any depth
/// where they start with `**/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtectedPaths {
    pub patterns: Vec<String>,
}

/// The default list: `.git/hooks` and `.git/config` at any depth,
/// `.gitmodules`, shell rc files, `.mcp.json`, `.vscode/`, `.idea/`, and agent
/// config dirs (`.claude/`, `.codex/`, `.cursor/`, ...).
pub const DEFAULT_PROTECTED: &[&str] = &[];

impl Default for ProtectedPaths {
    fn default() -> Self {
        ProtectedPaths { patterns: DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect() }
    }
}

impl ProtectedPaths {
    /// `rel` is relative to the workspace root, `/`-separated.
    pub fn matches(&self, rel: &str) -> Option<String> {
        let _ = rel;
        todo!()
    }
}

/// One staged change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Absolute target path in the real tree.
    pub path: String,
    pub kind: ChangeKind,
    /// Size of the staged content (0 for deletes).
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    Symlink,
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AreaInfo {
    pub id: String,
    pub session: String,
    pub base: String,
    pub created: i64,
    pub changes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub protected: ProtectedPaths,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitReport {
    pub committed: Vec<String>,
    pub refused: Vec<Refused>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    pub path: String,
    pub code: ErrorCode,
    pub reason: String,
}

/// All staging areas under one directory (`$XDG_STATE_HOME/airlock/staging`).
#[derive(Clone)]
pub struct StagingStore {
    // implementation-defined
}

impl StagingStore {
    pub fn open(dir: &Path) -> Result<StagingStore, FsError> {
        let _ = dir;
        todo!()
    }
    /// The area for (session, base), created on first use.
    pub fn area(&self, session: &str, base: &str) -> Result<StagingArea, FsError> {
        let _ = (session, base);
        todo!()
    }
    pub fn get(&self, id: &str) -> Result<StagingArea, FsError> {
        let _ = id;
        todo!()
    }
    pub fn list(&self) -> Result<Vec<AreaInfo>, FsError> {
        todo!()
    }
}

/// One session's staged changes over one base directory.
#[derive(Clone)]
pub struct StagingArea {
    // implementation-defined
}

impl StagingArea {
    pub fn id(&self) -> &str {
        todo!()
    }
    pub fn session(&self) -> &str {
        todo!()
    }
    /// The real directory the changes apply to.
    pub fn base(&self) -> &str {
        todo!()
    }
    /// overlayfs upperdir.
    pub fn upper_dir(&self) -> PathBuf {
        todo!()
    }
    /// overlayfs workdir (same filesystem as upper).
    pub fn work_dir(&self) -> PathBuf {
        todo!()
    }
    /// Stage new content for `path` (absolute, within base). Records the
    /// on-disk fingerprint of the original the first time a path is staged.
    pub fn write(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<(), FsError> {
        let _ = (path, data, mode);
        todo!()
    }
    pub fn delete(&self, path: &str) -> Result<(), FsError> {
        let _ = path;
        todo!()
    }
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        let _ = (from, to);
        todo!()
    }
    /// Merged view: staged content if any, `NotFound` if whited out, else `None`
    /// (caller reads the real file).
    pub fn read_staged(&self, path: &str) -> Result<Option<Vec<u8>>, FsError> {
        let _ = path;
        todo!()
    }
    /// Record base fingerprints for upper entries that lack one (after a
    /// sandboxed command wrote the upper dir directly).
    pub fn record_bases(&self) -> Result<(), FsError> {
        todo!()
    }
    pub fn changes(&self) -> Result<Vec<Change>, FsError> {
        todo!()
    }
    /// Unified diff of the staged changes (all, or the named paths).
    pub fn diff(&self, paths: Option<&[String]>) -> Result<String, FsError> {
        let _ = paths;
        todo!()
    }
    /// Apply staged changes to the real tree. Per file and atomic
    /// (write-then-rename); never follows symlinks; strips setuid/setgid;
    /// refuses protected paths and files changed on disk since staging;
    /// refuses staged symlinks that point outside the base. Applied and refused
    /// entries leave the area; refused ones stay staged.
    pub fn commit(&self, paths: Option<&[String]>, opts: &CommitOptions) -> Result<CommitReport, FsError> {
        let _ = (paths, opts);
        todo!()
    }
    /// Drop staged changes (all, or the named paths); returns how many.
    pub fn discard(&self, paths: Option<&[String]>) -> Result<usize, FsError> {
        let _ = paths;
        todo!()
    }
}
