//! Depth-first walks of directory trees a sandboxed command may have
//! shaped (an upper dir): any width and any depth, without recursion and
//! with a bounded number of open descriptors.
//!
//! Each level being walked holds its descriptor and the names of the
//! subdirectories still to visit. Only the deepest [`MAX_OPEN`] levels keep
//! their descriptors; a level above them is reopened through `..` when the
//! walk climbs back to it, and must then be the same directory (device and
//! inode) or the walk fails: the tree was moved while it was walked.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Descriptors a walk keeps open at most.
const MAX_OPEN: usize = 32;

/// Walk the tree whose root directory is open as `root`.
///
/// `visit(dir, rel, data)` is called once for every directory, `rel` being
/// its path below the root (empty for the root) and `data` what its parent
/// returned for it (`root_data` for the root); it returns the
/// subdirectories to walk, each with its own data. A subdirectory is
/// opened without following a symbolic link.
///
/// `fail(rel, error)` is asked about a directory that cannot be opened:
/// `Err` ends the walk with that error, `Ok` skips the directory and what
/// is beneath it. A level that cannot be reopened (or was moved) ends the
/// walk either way, early but `Ok` if `fail` says so.
pub fn walk_dirs<T, E>(
    root: OwnedFd,
    root_data: T,
    visit: impl FnMut(&OwnedFd, &Path, T) -> Result<Vec<(OsString, T)>, E>,
    fail: impl FnMut(&Path, std::io::Error) -> Result<(), E>,
) -> Result<(), E> {
    walk_dirs_then(root, root_data, visit, |_, _, _| Ok(()), fail)
}

/// [`walk_dirs`], and `leave(parent, name, rel)` once everything beneath
/// the subdirectory `name` (at `rel`) of the directory `parent` is walked
/// (not for the root), as removing a tree needs.
pub fn walk_dirs_then<T, E>(
    root: OwnedFd,
    root_data: T,
    mut visit: impl FnMut(&OwnedFd, &Path, T) -> Result<Vec<(OsString, T)>, E>,
    mut leave: impl FnMut(&OwnedFd, &std::ffi::OsStr, &Path) -> Result<(), E>,
    mut fail: impl FnMut(&Path, std::io::Error) -> Result<(), E>,
) -> Result<(), E> {
    // One path for the level being walked, grown and shrunk a name at a
    // time: a path per level would take memory growing with the square
    // of the depth.
    // A level keeps its descriptor, or, once that is closed to bound the
    // descriptors held, the identity (device, inode) it had, taken then.
    enum Dir {
        Open(OwnedFd),
        Closed((u64, u64)),
    }
    struct Level<T> {
        dir: Dir,
        pending: Vec<(OsString, T)>,
    }
    let open = |dir: &OwnedFd, name: &std::ffi::OsStr| {
        rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };

    let mut path = PathBuf::new();
    let pending = visit(&root, &path, root_data)?;
    let mut stack = vec![Level {
        dir: Dir::Open(root),
        pending,
    }];
    while let Some(top) = stack.last_mut() {
        match top.pending.pop() {
            Some((name, data)) => {
                // One component, so that `path.pop()` takes it off again.
                let b = name.as_bytes();
                if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
                    fail(
                        &path.join(&name),
                        std::io::Error::other("not a directory entry name"),
                    )?;
                    continue;
                }
                let Dir::Open(fd) = &top.dir else {
                    unreachable!("the deepest level holds its descriptor")
                };
                path.push(&name);
                let sub = match open(fd, &name) {
                    Ok(o) => o,
                    Err(e) => {
                        let skip = fail(&path, e.into());
                        path.pop();
                        skip?;
                        continue;
                    }
                };
                let pending = visit(&sub, &path, data)?;
                if stack.len() >= MAX_OPEN {
                    let i = stack.len() - MAX_OPEN;
                    let far = &mut stack[i];
                    if let Dir::Open(fd) = &far.dir {
                        match rustix::fs::fstat(fd) {
                            Ok(st) => far.dir = Dir::Closed((st.st_dev, st.st_ino)),
                            Err(e) => return fail(&path, e.into()),
                        }
                    }
                }
                stack.push(Level {
                    dir: Dir::Open(sub),
                    pending,
                });
            }
            None => {
                // `path` is the finished level's.
                let Some(done) = stack.pop() else { break };
                let Some(parent) = stack.last_mut() else {
                    break;
                };
                if let Dir::Closed(id) = parent.dir {
                    let Dir::Open(child) = done.dir else {
                        unreachable!("the deepest level holds its descriptor")
                    };
                    match reopen(&child, id) {
                        Ok(up) => parent.dir = Dir::Open(up),
                        Err(e) => {
                            path.pop();
                            return fail(&path, e);
                        }
                    }
                }
                if let (Dir::Open(fd), Some(name)) = (&parent.dir, path.file_name()) {
                    leave(fd, name, &path)?;
                }
                path.pop();
            }
        }
    }
    Ok(())
}

/// The parent of `dir`, which must be the directory `id`.
fn reopen(dir: &OwnedFd, id: (u64, u64)) -> std::io::Result<OwnedFd> {
    let up = rustix::fs::openat(
        dir,
        "..",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&up)?;
    if (st.st_dev, st.st_ino) != id {
        return Err(std::io::Error::other("moved while it was being walked"));
    }
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    /// Every directory under `root`, as the walk sees it, with its depth.
    fn walk(root: &Path) -> Vec<(PathBuf, usize)> {
        let mut seen = vec![];
        walk_dirs(
            open(root),
            0usize,
            |fd, rel, depth| {
                seen.push((rel.to_path_buf(), depth));
                let mut subs = vec![];
                for e in rustix::fs::Dir::read_from(fd).unwrap() {
                    let e = e.unwrap();
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." && e.file_type() == rustix::fs::FileType::Directory {
                        subs.push((std::ffi::OsStr::from_bytes(n).to_owned(), depth + 1));
                    }
                }
                Ok::<_, std::io::Error>(subs)
            },
            |_, e| Err(e),
        )
        .unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn deep_and_wide_trees_are_walked_whole_with_few_descriptors() {
        let t = tempfile::tempdir().unwrap();
        // Deeper than MAX_OPEN many times over, with a branch at every
        // level, and wide at the bottom.
        let depth = MAX_OPEN * 5;
        let mut p = t.path().to_path_buf();
        for i in 0..depth {
            std::fs::create_dir(p.join(format!("side{i}"))).unwrap();
            p = p.join("d");
            std::fs::create_dir(&p).unwrap();
        }
        for i in 0..300 {
            std::fs::create_dir(p.join(format!("w{i}"))).unwrap();
        }
        let open_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let mut most = 0;
        let mut seen = 0;
        walk_dirs(
            open(t.path()),
            (),
            |fd, _, ()| {
                seen += 1;
                most = most.max(std::fs::read_dir("/proc/self/fd").unwrap().count());
                let mut subs = vec![];
                for e in rustix::fs::Dir::read_from(fd).unwrap() {
                    let n = e.unwrap().file_name().to_bytes().to_vec();
                    if n != b"." && n != b".." {
                        subs.push((std::ffi::OsStr::from_bytes(&n).to_owned(), ()));
                    }
                }
                Ok::<_, std::io::Error>(subs)
            },
            |_, e| Err(e),
        )
        .unwrap();
        assert_eq!(seen, 1 + 2 * depth + 300);
        // The levels' descriptors, one more while a level is reopened, and
        // the listing of /proc/self/fd itself (other tests run alongside,
        // so leave room for theirs).
        assert!(
            most <= open_before + MAX_OPEN + 8,
            "{most} open, {open_before} before"
        );
        let w = walk(t.path());
        assert_eq!(w.len(), seen);
        let bottom = "d/".repeat(depth);
        assert!(w.contains(&(PathBuf::from(format!("{bottom}w299")), depth + 1)));
        assert!(w.contains(&(PathBuf::from("side0"), 1)));
        let mid = "d/".repeat(MAX_OPEN + 1);
        let side = format!("{mid}side{}", MAX_OPEN + 1);
        assert!(w.contains(&(PathBuf::from(side), MAX_OPEN + 2)));
    }

    #[test]
    fn a_level_moved_while_walked_fails_the_walk() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().to_path_buf();
        let levels = MAX_OPEN + 3;
        std::fs::create_dir_all(top.join("a").join("d/".repeat(levels))).unwrap();
        std::fs::create_dir(top.join("other")).unwrap();
        // At the bottom, the walk holds descriptors for its deepest
        // MAX_OPEN levels only: the shallowest of them is `a/d/d/d/d`.
        // Move it under `other`; climbing back from it through `..` then
        // reaches `other`, not `a/d/d/d`.
        let shallowest_open = top.join("a/d/d/d/d");
        let mut moved = false;
        let r = walk_dirs(
            open(&top),
            (),
            |fd, rel, ()| {
                if rel.components().count() == levels + 1 {
                    std::fs::rename(&shallowest_open, top.join("other/x")).unwrap();
                    moved = true;
                }
                let mut subs = vec![];
                for e in rustix::fs::Dir::read_from(fd).unwrap() {
                    let n = e.unwrap().file_name().to_bytes().to_vec();
                    if n == b"a" || n == b"d" {
                        subs.push((std::ffi::OsStr::from_bytes(&n).to_owned(), ()));
                    }
                }
                Ok::<_, std::io::Error>(subs)
            },
            |rel, e| Err(std::io::Error::other(format!("{}: {e}", rel.display()))),
        );
        assert!(moved);
        let e = r.expect_err("a moved level is not mistaken for its old parent");
        assert_eq!(e.to_string(), "a/d/d/d: moved while it was being walked");
    }
}
