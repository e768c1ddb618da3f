//! Unified diffs of staged changes against the real tree.

use std::fs::File;
use std::io::Read;

use airlock_core::path::is_within;
use rustix::fs::{Mode, OFlags};

use crate::staging::{probe, Ctx, Probe, UKind};
use crate::sys::{self, fmeta, RESOLVE_STRICT};
use crate::{ChangeKind, FileKind, FsError};

/// Files larger than this are summarised instead of diffed.
pub const MAX_DIFF_BYTES: u64 = 8 << 20;

enum Side {
    Text(Vec<u8>),
    TooLarge(u64),
}

fn read_real(c: &mut Ctx<'_>, rel: &str) -> Result<Option<(Side, u32, FileKind)>, FsError> {
    let shown = c.abs(rel);
    let base = c.base()?.dir_fd().clone();
    match probe(&*base, rel)? {
        Probe::Found(_, m) if m.kind == FileKind::File => {
            if m.size > MAX_DIFF_BYTES {
                return Ok(Some((Side::TooLarge(m.size), m.mode, m.kind)));
            }
            let fd = sys::openat2(
                &*base,
                rel,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                Mode::empty(),
                RESOLVE_STRICT,
            )
            .map_err(|e| sys::io(&shown, e))?;
            let got = fmeta(&fd).map_err(|e| sys::io(&shown, e))?;
            if got.kind != FileKind::File {
                return Err(FsError::Conflict { path: shown });
            }
            let mut v = Vec::new();
            File::from(fd)
                .take(MAX_DIFF_BYTES + 1)
                .read_to_end(&mut v)
                .map_err(|e| sys::stdio(&shown, e))?;
            Ok(Some((Side::Text(v), m.mode, m.kind)))
        }
        Probe::Found(_, m) => Ok(Some((Side::Text(Vec::new()), m.mode, m.kind))),
        _ => Ok(None),
    }
}

fn body(old: &Side, new: &Side, a: &str, b: &str) -> String {
    match (old, new) {
        (Side::Text(o), Side::Text(n)) => match (std::str::from_utf8(o), std::str::from_utf8(n)) {
            (Ok(o), Ok(n)) => {
                if o == n {
                    return String::new();
                }
                let d = similar::TextDiff::from_lines(o, n);
                let mut u = d.unified_diff();
                u.context_radius(3).header(a, b);
                u.to_string()
            }
            _ => format!("Binary files {a} and {b} differ\n"),
        },
        (Side::TooLarge(s), _) | (_, Side::TooLarge(s)) => {
            format!("Files {a} and {b} differ (a side is {s} bytes, over the {MAX_DIFF_BYTES}-byte diff limit)\n")
        }
    }
}

fn staged(c: &Ctx<'_>, rel: &str, size: u64) -> Result<Side, FsError> {
    if size > MAX_DIFF_BYTES {
        return Ok(Side::TooLarge(size));
    }
    Ok(Side::Text(c.read_upper(rel)?))
}

pub(crate) fn diff(c: &mut Ctx<'_>, paths: Option<&[String]>) -> Result<String, FsError> {
    let mut rels = Vec::new();
    if let Some(ps) = paths {
        for p in ps {
            rels.push(c.area.rel(p)?);
        }
    }
    let items = c.walk()?;
    let mut out = String::new();
    for it in items {
        if paths.is_some() && !rels.iter().any(|r| is_within(&it.rel, r)) {
            continue;
        }
        let abs = c.abs(&it.rel);
        out.push_str(&format!("diff --airlock {abs}\n"));
        match it.kind {
            ChangeKind::Added => {
                let mode = match &it.upper {
                    Some(UKind::File(m)) => m.mode,
                    _ => 0o644,
                };
                out.push_str(&format!("new file mode 100{:03o}\n", mode & 0o777));
                let new = staged(c, &it.rel, it.size)?;
                out.push_str(&body(&Side::Text(Vec::new()), &new, "/dev/null", &abs));
            }
            ChangeKind::Modified => {
                let new_mode = match &it.upper {
                    Some(UKind::File(m)) => m.mode & 0o777,
                    _ => 0o644,
                };
                let (old, old_mode, old_kind) =
                    read_real(c, &it.rel)?.unwrap_or((Side::Text(Vec::new()), 0, FileKind::Other));
                if old_kind != FileKind::File {
                    out.push_str(&format!("type change: {old_kind:?} -> file\n"));
                } else if old_mode & 0o777 != new_mode {
                    out.push_str(&format!(
                        "old mode 100{:03o}\nnew mode 100{:03o}\n",
                        old_mode & 0o777,
                        new_mode
                    ));
                }
                let new = staged(c, &it.rel, it.size)?;
                out.push_str(&body(&old, &new, &abs, &abs));
            }
            ChangeKind::Deleted => match read_real(c, &it.rel)? {
                Some((_, _, FileKind::Dir)) => out.push_str(&format!("deleted directory {abs}\n")),
                Some((old, mode, FileKind::File)) => {
                    out.push_str(&format!("deleted file mode 100{:03o}\n", mode & 0o777));
                    out.push_str(&body(&old, &Side::Text(Vec::new()), &abs, "/dev/null"));
                }
                Some((_, _, kind)) => {
                    out.push_str(&format!("deleted {kind:?} {abs}\n").to_lowercase())
                }
                None => out.push_str("deleted (already gone from the real tree)\n"),
            },
            ChangeKind::Symlink => {
                let target = match &it.upper {
                    Some(UKind::Symlink(t)) => t.clone(),
                    _ => String::new(),
                };
                let base = c.base()?.dir_fd().clone();
                if let Probe::Found(fd, m) = probe(&*base, &it.rel)? {
                    if m.kind == FileKind::Symlink {
                        let old = rustix::fs::readlinkat(&fd, "", Vec::new())
                            .map_err(|e| sys::io(&abs, e))?;
                        out.push_str(&format!(
                            "old symlink -> {}\n",
                            String::from_utf8_lossy(old.as_bytes())
                        ));
                    } else {
                        out.push_str(&format!("type change: {:?} -> symlink\n", m.kind));
                    }
                }
                out.push_str(&format!("new symlink -> {target}\n"));
            }
            ChangeKind::Dir => out.push_str("new directory\n"),
        }
    }
    Ok(out)
}
