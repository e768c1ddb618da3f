//! Applying staged changes to the real tree.
//!
//! Per entry: refuse protected paths; open the real parent beneath the base
//! with `RESOLVE_NO_SYMLINKS` (a symlinked directory on the way refuses the
//! entry); compare the real entry with the fingerprint taken when it was
//! staged (any difference refuses it as a conflict); then write a temp file
//! in the same directory, fsync it, `renameat` it over the target and fsync
//! the directory. Modes lose setuid/setgid/sticky. Staged symlinks are
//! recreated only when relative and resolving inside the base.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use airlock_core::path::is_within;
use airlock_core::ErrorCode;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::staging::{fingerprint, upper_entry, Ctx, Item, UKind, XATTR_OPAQUE};
use crate::sys::{self, fmeta, RESOLVE_IN, RESOLVE_STRICT};
use crate::{ChangeKind, CommitOptions, CommitReport, FileKind, FsError, Refused};

fn refused(path: String, code: ErrorCode, reason: impl Into<String>) -> Refused {
    Refused {
        path,
        code,
        reason: reason.into(),
    }
}

fn symlink_escape(path: &str) -> FsError {
    FsError::Escape {
        path: path.to_string(),
        why: "a directory on the path is a symlink in the real tree; refusing to write through it"
            .into(),
    }
}

/// Open (creating when `create`) the real directory `rel` beneath `base`,
/// never following a symlink.
fn open_real_dir(base: &OwnedFd, rel: &str, create: bool, shown: &str) -> Result<OwnedFd, FsError> {
    // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a final symlink,
    // with ELOOP (O_NOFOLLOW would turn it into ENOTDIR).
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    match sys::openat2(base, rel, flags, Mode::empty(), RESOLVE_STRICT) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) if create => {}
        Err(Errno::NOENT) => {
            return Err(FsError::NotFound {
                path: shown.to_string(),
            })
        }
        Err(Errno::LOOP) | Err(Errno::XDEV) => return Err(symlink_escape(shown)),
        Err(Errno::NOTDIR) => {
            return Err(FsError::Invalid {
                path: shown.to_string(),
                why: "a component of the path is not a directory in the real tree".into(),
            })
        }
        Err(e) => return Err(sys::io(shown, e)),
    }
    let mut cur = sys::openat2(base, ".", flags, Mode::empty(), RESOLVE_STRICT)
        .map_err(|e| sys::io(shown, e))?;
    for comp in rel.split('/') {
        let mut tries = 0;
        cur = loop {
            match sys::openat2(&cur, comp, flags, Mode::empty(), RESOLVE_STRICT) {
                Ok(fd) => break fd,
                Err(Errno::NOENT) if tries < 3 => {
                    tries += 1;
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(sys::io(shown, e)),
                    }
                }
                Err(Errno::LOOP) | Err(Errno::XDEV) => return Err(symlink_escape(shown)),
                Err(Errno::NOTDIR) => {
                    return Err(FsError::Invalid {
                        path: shown.to_string(),
                        why: "a component of the path is not a directory in the real tree".into(),
                    })
                }
                Err(e) => return Err(sys::io(shown, e)),
            }
        };
    }
    Ok(cur)
}

/// A staged symlink may be committed only when its target is relative and
/// stays inside the base, lexically and (when it exists) on disk.
fn check_symlink(
    base: &OwnedFd,
    parent_rel: &str,
    target: &str,
    shown: &str,
) -> Result<(), FsError> {
    let escape = |why: &str| FsError::Escape {
        path: shown.to_string(),
        why: why.to_string(),
    };
    if target.is_empty() || target.starts_with('/') {
        return Err(escape("staged symlink has an absolute target; only relative symlinks inside the base are committed"));
    }
    let mut stack: Vec<&str> = if parent_rel == "." {
        Vec::new()
    } else {
        parent_rel.split('/').collect()
    };
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(escape("staged symlink points outside the base"));
                }
            }
            c => stack.push(c),
        }
    }
    let joined = if stack.is_empty() {
        ".".to_string()
    } else {
        stack.join("/")
    };
    match sys::openat2(base, &joined, OFlags::PATH, Mode::empty(), RESOLVE_IN) {
        Ok(_) | Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(()),
        Err(Errno::XDEV) | Err(Errno::LOOP) => Err(escape(
            "staged symlink resolves outside the base through an existing symlink",
        )),
        Err(e) => Err(sys::io(shown, e)),
    }
}

fn tmp_name() -> String {
    format!(".airlock-{}.tmp", sys::random_hex(16))
}

/// Rename `tmp` over `name` in `dir`, removing `tmp` on failure.
fn replace(dir: &OwnedFd, tmp: &str, name: &str, shown: &str) -> Result<(), FsError> {
    if let Err(e) = rustix::fs::renameat(dir, tmp, dir, name) {
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        return Err(match e {
            Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => FsError::Invalid {
                path: shown.to_string(),
                why: "a directory is in the way in the real tree".into(),
            },
            other => sys::io(shown, other),
        });
    }
    rustix::fs::fsync(dir).map_err(|e| sys::io(shown, e))
}

fn copy_in(src: OwnedFd, dir: &OwnedFd, name: &str, mode: u32, shown: &str) -> Result<(), FsError> {
    let tmp = tmp_name();
    let fd = sys::openat2(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
        RESOLVE_STRICT,
    )
    .map_err(|e| sys::io(shown, e))?;
    let result = (|| {
        let mut out = File::from(fd);
        let mut inp = File::from(src);
        std::io::copy(&mut inp, &mut out).map_err(|e| sys::stdio(shown, e))?;
        rustix::fs::fchmod(out.as_fd(), Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| sys::io(shown, e))?;
        out.sync_all().map_err(|e| sys::stdio(shown, e))
    })();
    if let Err(e) = result {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    replace(dir, &tmp, name, shown)
}

fn apply(c: &mut Ctx<'_>, base: &OwnedFd, it: &Item) -> Result<(), FsError> {
    let shown = c.abs(&it.rel);
    let (parent_rel, name) = sys::split_parent(&it.rel);
    let fp = c.meta.bases.get(&it.rel).cloned().unwrap_or_default();
    let parent = open_real_dir(base, parent_rel, it.kind != ChangeKind::Deleted, &shown)?;
    let now = fingerprint(&parent, name, &shown)?;
    if !fp.same_state(&now) {
        return Err(FsError::Conflict { path: shown });
    }
    match it.kind {
        ChangeKind::Added | ChangeKind::Modified => {
            let up = c.open_upper_dir(parent_rel)?;
            let src = sys::openat2(
                &up,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                Mode::empty(),
                RESOLVE_STRICT,
            )
            .map_err(|e| sys::io(&shown, e))?;
            let m = fmeta(&src).map_err(|e| sys::io(&shown, e))?;
            if m.kind != FileKind::File {
                return Err(FsError::Invalid {
                    path: shown,
                    why: "staged entry is not a regular file".into(),
                });
            }
            copy_in(src, &parent, name, m.mode & 0o777, &shown)?;
            c.unshadow(&it.rel)?;
            rustix::fs::unlinkat(&up, name, AtFlags::empty()).map_err(|e| sys::io(&shown, e))?;
        }
        ChangeKind::Symlink => {
            let Some(UKind::Symlink(target)) = &it.upper else {
                return Err(FsError::Invalid {
                    path: shown,
                    why: "staged entry is not a symlink".into(),
                });
            };
            check_symlink(base, parent_rel, target, &shown)?;
            let tmp = tmp_name();
            rustix::fs::symlinkat(target.as_str(), &parent, tmp.as_str())
                .map_err(|e| sys::io(&shown, e))?;
            replace(&parent, &tmp, name, &shown)?;
            c.unshadow(&it.rel)?;
            let up = c.open_upper_dir(parent_rel)?;
            rustix::fs::unlinkat(&up, name, AtFlags::empty()).map_err(|e| sys::io(&shown, e))?;
        }
        ChangeKind::Dir => {
            match now.kind {
                None => {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
                        .map_err(|e| sys::io(&shown, e))?;
                    rustix::fs::fsync(&parent).map_err(|e| sys::io(&shown, e))?;
                }
                Some(FileKind::Dir) => {}
                Some(_) => {
                    return Err(FsError::Invalid {
                        path: shown,
                        why: "a file or symlink is in the way in the real tree; remove it first"
                            .into(),
                    })
                }
            }
            // The upper dir now merges with the real one instead of hiding it.
            let up = c.open_upper_dir(&it.rel)?;
            match rustix::fs::fremovexattr(&up, XATTR_OPAQUE) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err(sys::io(&shown, e)),
            }
        }
        ChangeKind::Deleted => {
            match now.kind {
                None => {}
                Some(FileKind::Dir) => match rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
                    Ok(()) => {}
                    Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                        return Err(FsError::Invalid {
                            path: shown,
                            why: "directory is not empty in the real tree; stage deletes of the files inside".into(),
                        })
                    }
                    Err(e) => return Err(sys::io(&shown, e)),
                },
                Some(_) => rustix::fs::unlinkat(&parent, name, AtFlags::empty()).map_err(|e| sys::io(&shown, e))?,
            }
            rustix::fs::fsync(&parent).map_err(|e| sys::io(&shown, e))?;
            // Drop the whiteout (also one an earlier unshadow made for a
            // delete implied by an opaque directory).
            if let Ok(up) = c.open_upper_dir(parent_rel) {
                if let Ok(Some(UKind::Whiteout)) = upper_entry(&up, name) {
                    rustix::fs::unlinkat(&up, name, AtFlags::empty())
                        .map_err(|e| sys::io(&shown, e))?;
                }
            }
        }
    }
    c.meta.bases.remove(&it.rel);
    c.dirty = true;
    Ok(())
}

pub(crate) fn commit(
    c: &mut Ctx<'_>,
    paths: Option<&[String]>,
    opts: &CommitOptions,
) -> Result<CommitReport, FsError> {
    let matcher = opts.protected.compile()?;
    let items = c.walk()?;
    let mut report = CommitReport::default();
    let selected: Vec<Item> = match paths {
        None => items,
        Some(ps) => {
            let mut sel = BTreeMap::new();
            for p in ps {
                let rel = match c.area.rel(p) {
                    Ok(r) => r,
                    Err(e) => {
                        report
                            .refused
                            .push(refused(p.clone(), e.code(), e.to_string()));
                        continue;
                    }
                };
                let before = sel.len();
                for it in items.iter().filter(|it| is_within(&it.rel, &rel)) {
                    sel.insert(it.rel.clone(), it.clone());
                }
                if sel.len() == before && !items.iter().any(|it| is_within(&it.rel, &rel)) {
                    report.refused.push(refused(
                        p.clone(),
                        ErrorCode::NotFound,
                        "nothing is staged at this path",
                    ));
                }
            }
            sel.into_values().collect()
        }
    };
    // Directories first (parents before children), then files and
    // symlinks, then deletes (children before parents).
    let (mut dirs, rest): (Vec<Item>, Vec<Item>) = selected
        .into_iter()
        .partition(|it| it.kind == ChangeKind::Dir);
    let (mut deletes, mut files): (Vec<Item>, Vec<Item>) = rest
        .into_iter()
        .partition(|it| it.kind == ChangeKind::Deleted);
    dirs.sort_by(|a, b| a.rel.cmp(&b.rel));
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    deletes.sort_by(|a, b| {
        b.rel
            .matches('/')
            .count()
            .cmp(&a.rel.matches('/').count())
            .then_with(|| b.rel.cmp(&a.rel))
    });
    let base = c.base()?.dir_fd().clone();
    for it in dirs.into_iter().chain(files).chain(deletes) {
        let abs = c.abs(&it.rel);
        if let Some(pat) = matcher.matches(&it.rel) {
            report.refused.push(refused(
                abs,
                ErrorCode::ProtectedPath,
                format!("matches protected pattern {pat}; change it yourself outside Airlock"),
            ));
            continue;
        }
        let name = sys::split_parent(&it.rel).1;
        if name == ".git" && it.kind != ChangeKind::Dir && it.kind != ChangeKind::Deleted {
            report.refused.push(refused(
                abs,
                ErrorCode::ProtectedPath,
                "a .git file or symlink redirects git to another directory; change it yourself outside Airlock",
            ));
            continue;
        }
        if !c.meta.bases.contains_key(&it.rel) {
            // Say why the real entry cannot be fingerprinted, if it cannot.
            if let Err(e) = fingerprint(&*base, &it.rel, &abs) {
                report.refused.push(refused(abs, e.code(), e.to_string()));
                continue;
            }
            report.refused.push(refused(
                abs,
                ErrorCode::Conflict,
                "no record of the real file from when this was staged; record the bases (done after each sandboxed run), review the diff again and retry",
            ));
            continue;
        }
        match apply(c, &base, &it) {
            Ok(()) => {
                tracing::debug!(path = %abs, kind = ?it.kind, "committed");
                report.committed.push(abs);
            }
            Err(e) => {
                tracing::info!(path = %abs, error = %e, "commit refused");
                report.refused.push(refused(abs, e.code(), e.to_string()));
            }
        }
    }
    c.prune()?;
    Ok(report)
}
