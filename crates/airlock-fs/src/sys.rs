//! Thin helpers over `rustix` shared by the resolver, the staging store and
//! commit: `openat2` with retry, `statx` into a small metadata record, xattr
//! probes and errno mapping.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

use crate::{FileKind, FsError};

/// Resolution beneath a root: `..` and symlinks may not leave it, magic
/// links (`/proc/self/fd/N`, `/proc/self/root`) are never followed.
pub(crate) const RESOLVE_IN: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// Like [`RESOLVE_IN`], and no symlink may be followed at all.
pub(crate) const RESOLVE_STRICT: ResolveFlags = RESOLVE_IN.union(ResolveFlags::NO_SYMLINKS);

/// How often an `openat2` that failed with `EAGAIN` (a concurrent rename
/// raced a `..` lookup under `RESOLVE_BENEATH`) is retried.
const EAGAIN_RETRIES: usize = 128;

/// `openat2` that retries `EAGAIN`/`EINTR` a bounded number of times.
pub(crate) fn openat2<Fd: AsFd>(
    dirfd: Fd,
    path: &str,
    oflags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let dirfd = dirfd.as_fd();
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dirfd, path, oflags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN) | Err(Errno::INTR) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// The metadata the crate cares about, from `statx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub kind: FileKind,
    pub file_type: FileType,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    pub dev: (u32, u32),
    pub rdev: (u32, u32),
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Meta {
    /// Same inode on the same device.
    pub fn same_inode(&self, other: &Meta) -> bool {
        self.ino == other.ino && self.dev == other.dev
    }
    /// An overlayfs character-device whiteout (0/0).
    pub fn is_chr_whiteout(&self) -> bool {
        self.file_type == FileType::CharacterDevice && self.rdev == (0, 0)
    }
    /// Modification time in nanoseconds since the epoch.
    pub fn mtime_ns(&self) -> i64 {
        self.mtime
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.mtime_nsec))
    }
}

fn kind_of(ft: FileType) -> FileKind {
    match ft {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

const STATX_WANT: StatxFlags = StatxFlags::BASIC_STATS;

fn meta_from(st: rustix::fs::Statx) -> Meta {
    let file_type = FileType::from_raw_mode(u32::from(st.stx_mode));
    Meta {
        kind: kind_of(file_type),
        file_type,
        mode: u32::from(st.stx_mode) & 0o7777,
        size: st.stx_size,
        nlink: u64::from(st.stx_nlink),
        ino: st.stx_ino,
        dev: (st.stx_dev_major, st.stx_dev_minor),
        rdev: (st.stx_rdev_major, st.stx_rdev_minor),
        mtime: st.stx_mtime.tv_sec,
        mtime_nsec: st.stx_mtime.tv_nsec,
    }
}

/// `statx` of an open fd (works on `O_PATH` fds too).
pub(crate) fn fmeta<Fd: AsFd>(fd: Fd) -> Result<Meta, Errno> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        STATX_WANT,
    )
    .map(meta_from)
}

/// `statx` of `name` in `dirfd`, not following a final symlink. `name` must
/// be a single component (no `/`), so no resolution happens.
pub(crate) fn meta_at<Fd: AsFd>(dirfd: Fd, name: &str) -> Result<Meta, Errno> {
    debug_assert!(!name.contains('/'));
    rustix::fs::statx(dirfd, name, AtFlags::SYMLINK_NOFOLLOW, STATX_WANT).map(meta_from)
}

/// Read an xattr from an fd; `None` when absent or unsupported.
pub(crate) fn get_xattr<Fd: AsFd>(fd: Fd, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::fgetxattr(fd.as_fd(), name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(None),
        // Trusted xattrs are invisible (not an error) to the unprivileged,
        // but some kernels answer EPERM.
        Err(Errno::PERM) if name.starts_with("trusted.") => Ok(None),
        Err(Errno::RANGE) => Ok(Some(b"?".to_vec())),
        Err(e) => Err(e),
    }
}

/// Split a `/`-separated relative path into (parent, name); parent is "."
/// for a single component.
pub(crate) fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => (".", rel),
    }
}

/// Join a relative parent and a name (`"."` parent means none).
pub(crate) fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() || parent == "." {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Join an absolute base and a relative path.
pub(crate) fn join_abs(base: &str, rel: &str) -> String {
    if rel == "." || rel.is_empty() {
        base.to_string()
    } else if base == "/" {
        format!("/{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

/// Map an errno to [`FsError::Io`].
pub(crate) fn io(path: &str, e: Errno) -> FsError {
    FsError::Io {
        path: path.to_string(),
        source: std::io::Error::from(e),
    }
}

/// Map a std I/O error to [`FsError::Io`].
pub(crate) fn stdio(path: &str, e: std::io::Error) -> FsError {
    FsError::Io {
        path: path.to_string(),
        source: e,
    }
}

/// A short random hex string (for ids and temp names).
pub(crate) fn random_hex(n: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(n.min(32));
    s
}
