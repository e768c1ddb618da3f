//! Resolution of agent-supplied paths beneath a grant, and the read-side
//! operations (`read`, `list`, `stat`) on what was resolved.
//!
//! Every open goes through `openat2` from the grant's directory fd with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, so `..`, symlinks (also ones
//! swapped in between two calls) and `/proc/self/root` cannot leave the
//! grant. Operations re-open by path beneath the root rather than through
//! `/proc/self/fd` (a magic link), and check that they reached the inode the
//! resolver saw.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use airlock_core::path::{check_abs_normalised, is_within};
use rustix::fs::{Dir, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::sys::{self, fmeta, meta_at, Meta, RESOLVE_IN};
use crate::{DirEntry, FileKind, FileStat, FsError};

/// An opened grant root. Cheap to keep in a cache keyed by path.
#[derive(Clone)]
pub struct GrantRoot {
    path: String,
    /// The grant directory, or the parent directory when the grant is a file.
    dir: Arc<OwnedFd>,
    /// Set when the grant names a single regular file: its name in `dir`.
    file: Option<String>,
}

impl std::fmt::Debug for GrantRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantRoot")
            .field("path", &self.path)
            .field("file", &self.file.is_some())
            .finish()
    }
}

enum State {
    Existing {
        /// `O_PATH | O_NOFOLLOW` fd on the entry itself.
        entry: OwnedFd,
        entry_meta: Meta,
        /// When the entry is a symlink whose target stays inside the grant:
        /// an `O_PATH` fd on the target. `None` for non-symlinks and for
        /// dangling in-grant symlinks.
        target: Option<(OwnedFd, Meta)>,
    },
    Missing {
        parent: OwnedFd,
        name: String,
    },
}

/// A path the resolver has checked, holding an fd to it (or to its parent
/// plus the final name when the file does not exist yet). Only
/// [`GrantRoot::resolve`] makes one.
pub struct ResolvedPath {
    requested: String,
    root: Arc<OwnedFd>,
    /// Relative to `root`; `"."` for the root itself.
    rel: String,
    state: State,
}

impl std::fmt::Debug for ResolvedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedPath")
            .field("requested", &self.requested)
            .field("exists", &self.exists())
            .finish()
    }
}

fn proc_fd_path<Fd: AsFd>(fd: &Fd) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())).ok()?;
    let s = link.to_str()?.to_string();
    if s.ends_with(" (deleted)") || !s.starts_with('/') {
        return None;
    }
    Some(s)
}

impl ResolvedPath {
    /// The absolute path as requested (lexical).
    pub fn requested(&self) -> &str {
        &self.requested
    }
    /// Where the fd really points (from /proc/self/fd), when it exists. Differs
    /// from `requested` when an in-grant symlink was followed; the broker
    /// re-checks policy on it.
    pub fn real_path(&self) -> Option<String> {
        match &self.state {
            State::Existing {
                target: Some((fd, _)),
                ..
            } => proc_fd_path(fd),
            State::Existing { entry, .. } => proc_fd_path(entry),
            State::Missing { parent, name } => {
                proc_fd_path(parent).map(|p| sys::join_abs(&p, name))
            }
        }
    }
    /// True when the path names an existing entry (a dangling in-grant
    /// symlink exists; its target does not).
    pub fn exists(&self) -> bool {
        matches!(self.state, State::Existing { .. })
    }
    /// Kind of the entry itself (a symlink is reported as such), or `None`
    /// when it does not exist.
    pub fn kind(&self) -> Option<FileKind> {
        match &self.state {
            State::Existing { entry_meta, .. } => Some(entry_meta.kind),
            State::Missing { .. } => None,
        }
    }

    /// Metadata of what reads and listings act on: the symlink target when
    /// the entry is an in-grant symlink, else the entry.
    fn followed(&self) -> Result<&Meta, FsError> {
        match &self.state {
            State::Existing {
                entry_meta,
                target: None,
                ..
            } if entry_meta.kind == FileKind::Symlink => Err(FsError::NotFound {
                path: format!("{} (dangling symlink)", self.requested),
            }),
            State::Existing {
                entry_meta,
                target: None,
                ..
            } => Ok(entry_meta),
            State::Existing {
                target: Some((_, m)),
                ..
            } => Ok(m),
            State::Missing { .. } => Err(FsError::NotFound {
                path: self.requested.clone(),
            }),
        }
    }

    fn is_symlink(&self) -> bool {
        matches!(&self.state, State::Existing { entry_meta, .. } if entry_meta.kind == FileKind::Symlink)
    }

    /// Re-open beneath the root with `oflags` and check the inode is the one
    /// resolved.
    fn reopen(&self, oflags: OFlags) -> Result<(OwnedFd, Meta), FsError> {
        let want = *self.followed()?;
        let mut flags = oflags;
        if !self.is_symlink() {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = sys::openat2(&*self.root, &self.rel, flags, Mode::empty(), RESOLVE_IN)
            .map_err(|e| map_open_err(&self.requested, e))?;
        let got = fmeta(&fd).map_err(|e| sys::io(&self.requested, e))?;
        if !got.same_inode(&want) {
            return Err(FsError::Conflict {
                path: self.requested.clone(),
            });
        }
        Ok((fd, got))
    }
}

/// Map an `openat2` error from resolution beneath a root.
pub(crate) fn map_open_err(path: &str, e: Errno) -> FsError {
    match e {
        Errno::NOENT => FsError::NotFound {
            path: path.to_string(),
        },
        Errno::XDEV => FsError::Escape {
            path: path.to_string(),
            why: "a symlink, '..' or /proc magic link on the way leads outside the grant".into(),
        },
        Errno::LOOP => FsError::Escape {
            path: path.to_string(),
            why: "a symlink on the way is not allowed here (or loops); ask for the real path"
                .into(),
        },
        Errno::NOTDIR => FsError::Invalid {
            path: path.to_string(),
            why: "a component of the path is not a directory".into(),
        },
        other => sys::io(path, other),
    }
}

fn hard_link_check(path: &str, m: &Meta) -> Result<(), FsError> {
    if m.kind == FileKind::File && m.nlink > 1 {
        return Err(FsError::Escape {
            path: path.to_string(),
            why: format!(
                "file has {} hard links; one may point outside the grant",
                m.nlink
            ),
        });
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), FsError> {
    check_abs_normalised(path).map_err(|p| FsError::Invalid {
        path: path.to_string(),
        why: p.describe(),
    })
}

/// Best-effort real location of `path`, for error hints only.
fn real_path_hint(path: &str) -> String {
    match std::fs::canonicalize(path) {
        Ok(p) if p.to_str() != Some(path) => format!("; ask for the real path {}", p.display()),
        _ => "; ask for the real path".into(),
    }
}

impl GrantRoot {
    /// Open a granted path (absolute, normalised) without following any
    /// symlink or magic link on the way: the approved path must be the
    /// literal path on disk. A regular file grant admits exactly that file.
    pub fn open(grant: &str) -> Result<GrantRoot, FsError> {
        check_path(grant)?;
        let no_links = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = sys::openat2(
            rustix::fs::CWD,
            grant,
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
            no_links,
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::XDEV => FsError::Escape {
                path: grant.to_string(),
                why: format!("path contains a symlink{}", real_path_hint(grant)),
            },
            other => map_open_err(grant, other),
        })?;
        let m = fmeta(&fd).map_err(|e| sys::io(grant, e))?;
        match m.kind {
            FileKind::Dir => Ok(GrantRoot {
                path: grant.to_string(),
                dir: Arc::new(fd),
                file: None,
            }),
            FileKind::File => {
                hard_link_check(grant, &m)?;
                let (parent, name) = grant.rsplit_once('/').unwrap_or(("", grant));
                let parent = if parent.is_empty() { "/" } else { parent };
                let pfd = sys::openat2(
                    rustix::fs::CWD,
                    parent,
                    OFlags::PATH | OFlags::DIRECTORY,
                    Mode::empty(),
                    no_links,
                )
                .map_err(|e| map_open_err(parent, e))?;
                // The parent we hold must contain the file we checked.
                let again = meta_at(&pfd, name).map_err(|e| map_open_err(grant, e))?;
                if !again.same_inode(&m) {
                    return Err(FsError::Conflict {
                        path: grant.to_string(),
                    });
                }
                Ok(GrantRoot {
                    path: grant.to_string(),
                    dir: Arc::new(pfd),
                    file: Some(name.to_string()),
                })
            }
            FileKind::Symlink => Err(FsError::Escape {
                path: grant.to_string(),
                why: format!("path is a symlink{}", real_path_hint(grant)),
            }),
            FileKind::Other => Err(FsError::Invalid {
                path: grant.to_string(),
                why: "not a regular file or directory (FIFO, socket or device)".into(),
            }),
        }
    }

    /// The granted path as opened.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// True when the grant names a single file rather than a directory.
    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    /// The directory fd everything is resolved from (the grant directory,
    /// or the parent of a file grant).
    pub(crate) fn dir_fd(&self) -> &Arc<OwnedFd> {
        &self.dir
    }

    /// Relative form of `path` beneath `dir_fd`, after the lexical checks.
    pub(crate) fn relative(&self, path: &str) -> Result<String, FsError> {
        check_path(path)?;
        if !is_within(path, &self.path) {
            return Err(FsError::Escape {
                path: path.to_string(),
                why: format!("outside the grant {}; ask for a path under it", self.path),
            });
        }
        if let Some(name) = &self.file {
            if path != self.path {
                return Err(FsError::Escape {
                    path: path.to_string(),
                    why: format!("the grant names the single file {}", self.path),
                });
            }
            return Ok(name.clone());
        }
        if path == self.path {
            return Ok(".".into());
        }
        let rest = if self.path == "/" {
            &path[1..]
        } else {
            &path[self.path.len() + 1..]
        };
        Ok(rest.to_string())
    }

    /// Resolve `path` (absolute, lexically within the grant). The target need
    /// not exist (its parent must).
    pub fn resolve(&self, path: &str) -> Result<ResolvedPath, FsError> {
        let rel = self.relative(path)?;
        let root = &*self.dir;
        match sys::openat2(
            root,
            &rel,
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE_IN,
        ) {
            Ok(entry) => {
                let entry_meta = fmeta(&entry).map_err(|e| sys::io(path, e))?;
                let mut target = None;
                if entry_meta.kind == FileKind::Symlink {
                    if self.file.is_some() {
                        return Err(FsError::Escape {
                            path: path.to_string(),
                            why: "the granted file has been replaced by a symlink".into(),
                        });
                    }
                    match sys::openat2(root, &rel, OFlags::PATH, Mode::empty(), RESOLVE_IN) {
                        Ok(t) => {
                            let m = fmeta(&t).map_err(|e| sys::io(path, e))?;
                            hard_link_check(path, &m)?;
                            target = Some((t, m));
                        }
                        Err(Errno::NOENT) => {}
                        Err(Errno::XDEV) | Err(Errno::LOOP) => {
                            return Err(FsError::Escape {
                                path: path.to_string(),
                                why: "symlink points outside the grant".into(),
                            })
                        }
                        Err(e) => return Err(map_open_err(path, e)),
                    }
                } else {
                    hard_link_check(path, &entry_meta)?;
                }
                Ok(ResolvedPath {
                    requested: path.to_string(),
                    root: self.dir.clone(),
                    rel,
                    state: State::Existing {
                        entry,
                        entry_meta,
                        target,
                    },
                })
            }
            Err(Errno::NOENT) => {
                let (parent_rel, name) = sys::split_parent(&rel);
                let parent = sys::openat2(
                    root,
                    parent_rel,
                    OFlags::PATH | OFlags::DIRECTORY,
                    Mode::empty(),
                    RESOLVE_IN,
                )
                .map_err(|e| match e {
                    Errno::NOENT => FsError::NotFound {
                        path: format!("{path} (parent directory)"),
                    },
                    other => map_open_err(path, other),
                })?;
                Ok(ResolvedPath {
                    requested: path.to_string(),
                    root: self.dir.clone(),
                    rel: rel.clone(),
                    state: State::Missing {
                        parent,
                        name: name.to_string(),
                    },
                })
            }
            Err(e) => Err(map_open_err(path, e)),
        }
    }
}

/// Open a resolved regular file for reading, beneath the root, checking it
/// is still the resolved inode, a regular file, and singly linked.
pub(crate) fn open_for_read(p: &ResolvedPath) -> Result<OwnedFd, FsError> {
    let want = p.followed()?;
    if want.kind != FileKind::File {
        return Err(FsError::Invalid {
            path: p.requested.clone(),
            why: "not a regular file".into(),
        });
    }
    open_checked(p).map(|(fd, _)| fd)
}

fn open_checked(p: &ResolvedPath) -> Result<(OwnedFd, Meta), FsError> {
    let (fd, m) = p.reopen(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
    if m.kind != FileKind::File {
        return Err(FsError::Invalid {
            path: p.requested.clone(),
            why: "not a regular file".into(),
        });
    }
    hard_link_check(&p.requested, &m)?;
    Ok((fd, m))
}

/// Read up to `len` bytes (all when `None`, capped at `max`) from `offset`.
/// Only regular files with a single link are read; FIFOs, sockets and
/// devices are refused without blocking.
pub fn read(p: &ResolvedPath, offset: u64, len: Option<u64>, max: u64) -> Result<Vec<u8>, FsError> {
    let want = p.followed()?;
    match want.kind {
        FileKind::File => {}
        FileKind::Dir => {
            return Err(FsError::Invalid {
                path: p.requested.clone(),
                why: "is a directory; list it instead".into(),
            })
        }
        _ => {
            return Err(FsError::Invalid {
                path: p.requested.clone(),
                why: "not a regular file (FIFO, socket or device); only regular files are read"
                    .into(),
            })
        }
    }
    let (fd, m) = open_checked(p)?;
    let cap = len.map_or(max, |l| l.min(max));
    let file = File::from(fd);
    let avail = m.size.saturating_sub(offset);
    let mut buf = Vec::with_capacity(usize::try_from(cap.min(avail).min(1 << 24)).unwrap_or(0));
    let mut pos = offset;
    let mut chunk = vec![0u8; 64 * 1024];
    while (buf.len() as u64) < cap {
        let want_n = usize::try_from((cap - buf.len() as u64).min(chunk.len() as u64))
            .unwrap_or(chunk.len());
        let n = match file.read_at(&mut chunk[..want_n], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(sys::stdio(&p.requested, e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        pos += n as u64;
    }
    Ok(buf)
}

/// Directory entries (name, kind, size; symlinks not followed), sorted by
/// name. Names that are not UTF-8 are shown lossily.
pub fn list(p: &ResolvedPath) -> Result<Vec<DirEntry>, FsError> {
    let want = p.followed()?;
    if want.kind != FileKind::Dir {
        return Err(FsError::Invalid {
            path: p.requested.clone(),
            why: "not a directory".into(),
        });
    }
    let (fd, _) = p.reopen(OFlags::RDONLY | OFlags::DIRECTORY)?;
    list_fd(&fd, &p.requested)
}

pub(crate) fn list_fd(fd: &OwnedFd, path: &str) -> Result<Vec<DirEntry>, FsError> {
    let mut out = Vec::new();
    let dir = Dir::read_from(fd).map_err(|e| sys::io(path, e))?;
    for ent in dir {
        let ent = ent.map_err(|e| sys::io(path, e))?;
        let name_c = ent.file_name();
        let bytes = name_c.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let m = match rustix::fs::statx(
            fd,
            name_c,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::TYPE | rustix::fs::StatxFlags::SIZE,
        ) {
            Ok(m) => m,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(sys::io(path, e)),
        };
        let ft = rustix::fs::FileType::from_raw_mode(u32::from(m.stx_mode));
        let kind = match ft {
            rustix::fs::FileType::RegularFile => FileKind::File,
            rustix::fs::FileType::Directory => FileKind::Dir,
            rustix::fs::FileType::Symlink => FileKind::Symlink,
            _ => FileKind::Other,
        };
        out.push(DirEntry {
            name: String::from_utf8_lossy(bytes).into_owned(),
            kind,
            size: m.stx_size,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Metadata of the entry itself; a final symlink is reported as `Symlink`.
pub fn stat(p: &ResolvedPath) -> Result<FileStat, FsError> {
    match &p.state {
        State::Missing { .. } => Err(FsError::NotFound {
            path: p.requested.clone(),
        }),
        State::Existing { entry, .. } => {
            let m = fmeta(entry).map_err(|e| sys::io(&p.requested, e))?;
            Ok(FileStat {
                path: p.requested.clone(),
                kind: m.kind,
                size: m.size,
                mode: m.mode,
                modified: m.mtime,
                staged: false,
            })
        }
    }
}
