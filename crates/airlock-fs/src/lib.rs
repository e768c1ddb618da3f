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
//! written by Airlock are character devices 0/0, the form the kernel itself
//! writes and honours in both lookup and readdir; Linux (5.8+) lets an
//! unprivileged user create them. Where `mknod` of a whiteout is refused,
//! the xattr form is written instead (an empty regular file with
//! `user.overlay.whiteout`, its parent marked `user.overlay.opaque="x"`);
//! overlayfs mounted with `userxattr` honours it on lookup, but (as of
//! Linux 6.18) still lists its name in readdir of an upper layer. Both
//! forms are read. Opaque directories are `user.overlay.opaque="y"`.
//! Every open inside the upper dir uses `RESOLVE_NO_SYMLINKS` beneath it: a
//! sandboxed command may have planted symlinks there.
//!
//! Each staged path records a [`BaseFingerprint`] of the real entry the
//! first time it is staged (or by [`StagingArea::record_bases`] after a
//! sandboxed run wrote the upper dir); commit refuses an entry whose real
//! counterpart no longer matches, or that has no fingerprint.
#![forbid(unsafe_code)]

mod commit;
mod diff;
mod protected;
mod resolve;
mod staging;
mod sys;
mod tree;
mod volatile;

use airlock_core::ErrorCode;

pub use diff::MAX_DIFF_BYTES;
pub use tree::{walk_dirs, walk_dirs_then};
pub use volatile::{
    boot_id, close_dead_runs, close_volatile, record_boot, sweep_closed, volatile_state,
    RunWorkDir, VolatileState, BOOT_ID_FILE,
};

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
    Io {
        path: String,
        source: std::io::Error,
    },
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

pub use protected::ProtectedMatcher;
pub use resolve::{list, read, stat, GrantRoot, ResolvedPath};
pub use staging::{sha256_file, sha256_reader, BaseFingerprint, StagingArea, StagingStore};

/// Paths that are never written by commit and are read-only in the sandbox.
/// Patterns are globs relative to a workspace root, matched at any depth
/// where they start with `**/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtectedPaths {
    pub patterns: Vec<String>,
}

pub use protected::DEFAULT_PROTECTED;

impl Default for ProtectedPaths {
    fn default() -> Self {
        ProtectedPaths {
            patterns: DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl ProtectedPaths {
    /// `rel` is relative to the workspace root, `/`-separated.
    /// Returns the pattern that matched (the first in list order), also
    /// when an ancestor directory of `rel` matches. A list that does not
    /// compile protects everything (see [`ProtectedPaths::validate`]).
    pub fn matches(&self, rel: &str) -> Option<String> {
        protected::matches_or_all(&self.patterns, rel)
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
    /// How many changes are staged; `None` when they cannot be listed.
    pub changes: Option<usize>,
    /// Why they cannot be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
