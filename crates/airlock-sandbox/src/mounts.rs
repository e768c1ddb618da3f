//! The sandbox's filesystem view: a plan of mount operations run by the
//! child before and after `pivot_root`, the matching Landlock table, and the
//! protected-path walk.
//!
//! Layout inside (paths are the host's): a tmpfs root, read-only binds of
//! `/usr /bin /sbin /lib* /etc` (symlinks recreated on merged-/usr systems;
//! `/etc/shadow`, `/etc/gshadow`, `/etc/sudoers`, SSH host keys and
//! `/etc/ssl/private` masked), fresh `/proc`, a tmpfs `/dev` with bind
//! mounts of the host's `null zero full random urandom tty`, a private
//! devpts, `/dev/shm`, a private `/tmp`, an empty private `$HOME`, the
//! workspace (overlayfs onto the staging upper dir, or a bind), the grants,
//! hidden paths masked, protected paths bound read-only over the workspace.
//! Sources are referenced as `/proc/self/fd/N` of descriptors opened by the
//! parent, so the child never resolves a host path a second time (and,
//! when started as root, the unprivileged inside uid need not be able to
//! traverse to them).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::syscall::{MountOp, PlaceholderLayer};
use crate::{SandboxError, WorkspaceMode};

/// Where the new root is assembled before `pivot_root` (a tmpfs mounted over
/// the host's `/tmp` inside the private mount namespace).
pub(crate) const NEWROOT: &str = "/tmp";

/// System directories bound read-only when present.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Files under `/etc` masked with an empty file.
pub const MASKED_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/security/opasswd",
];

/// Directories under `/etc` masked with an empty directory.
pub const MASKED_DIRS: &[&str] = &["/etc/sudoers.d", "/etc/ssl/private"];

/// Device nodes bound from the host.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Bound on the protected-path walk (directory entries visited).
pub const WALK_LIMIT: usize = 1_000_000;

/// Landlock class of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Ro,
    Rw,
    Dev,
    Proc,
    ListOnly,
}

/// The mount plan and everything derived from it.
pub(crate) struct RootPlan {
    pub ops: Vec<MountOp>,
    pub descs: Vec<String>,
    /// (inside path, class, is_dir)
    pub landlock: Vec<(PathBuf, Access, bool)>,
    /// Mount sources (host paths) the child opens as `/proc/self/fd/N`,
    /// `N = fd_base + index`.
    pub srcs: Vec<CString>,
    /// Indexes in `srcs` to clone with `open_tree` (see `Builder::bind`).
    pub src_clone: Vec<usize>,
    /// The plan has [`MountOp::AwaitWalk`] and [`MountOp::ProtectReceived`]:
    /// the parent must walk the workspace ([`protection`]) and send the
    /// result once the child is running.
    pub protect_pending: bool,
}

/// The protected paths of a writable workspace, found after the clone
/// while the child builds the rest of its root.
#[derive(Debug, Default)]
pub(crate) struct Protection {
    /// Relative paths (`/`-separated) bound read-only, in order.
    pub rels: Vec<String>,
    /// The same, as seen in the child before `pivot_root`.
    pub inside: Vec<CString>,
    /// Write-through: placeholders created in the workspace for the run.
    pub placeholders: Vec<PathBuf>,
    /// Staged: the placeholder layer's entries for the child (see
    /// [`PlaceholderLayer`]), encoded as in its `q` messages.
    pub layer: Vec<Vec<u8>>,
}

/// Walk the workspace `ws` (and the staged upper dir) for protected paths
/// and plan placeholders for the concrete ones that do not exist yet
/// inside `.git` directories: for a staged workspace, entries of the
/// child's placeholder layer; for a write-through one, empty files and
/// directories created in the workspace for the run.
pub(crate) fn protection(
    ws: &Path,
    mode: &WorkspaceMode,
    prot: &airlock_fs::ProtectedPaths,
) -> Result<Protection, SandboxError> {
    let upper = match mode {
        WorkspaceMode::Staged { upper, .. } => Some(upper.as_path()),
        _ => None,
    };
    tracing::debug!("walking the workspace for protected paths");
    let found = walk_protected(ws, upper, prot)?;
    tracing::debug!(found = found.existing.len(), "protected paths found");
    let mut out = Protection::default();
    let missing = missing_placeholders(ws, upper, prot, &found)?;
    match upper {
        Some(upper) => out.layer = layer_entries(ws, upper, &missing)?,
        None => out.placeholders = make_placeholders(ws, &missing)?,
    }
    for m in missing {
        out.inside.push(cs(nr(&ws.join(&m.rel)))?);
        out.rels.push(m.rel);
    }
    for rel in found.existing {
        out.inside.push(cs(nr(&ws.join(&rel)))?);
        out.rels.push(rel);
    }
    Ok(out)
}

/// The staged overlay's options: lower, upper and work dir (as
/// `/proc/self/fd/N`), under the placeholder layer in descriptor `layer`.
/// `volatile`: no sync of the whole upper filesystem at unmount; the run's
/// caller syncs it when the run changed the upper dir (see
/// `airlock_fs::volatile_state`).
fn overlay_opts(layer: Option<i32>, [l, u, w]: &[String; 3]) -> String {
    let top = layer
        .map(|fd| format!("/proc/self/fd/{fd}:"))
        .unwrap_or_default();
    format!("lowerdir={top}{l},upperdir={u},workdir={w},userxattr,volatile")
}

fn cs(p: impl AsRef<Path>) -> Result<CString, SandboxError> {
    CString::new(p.as_ref().as_os_str().as_bytes())
        .map_err(|_| SandboxError::Spec(format!("{}: contains NUL", p.as_ref().display())))
}

fn nr(p: &Path) -> PathBuf {
    let rel = p.strip_prefix("/").unwrap_or(p);
    Path::new(NEWROOT).join(rel)
}

/// Inputs of the mount plan (all paths absolute and canonical).
pub(crate) struct RootInputs<'a> {
    pub workspace: Option<(&'a Path, &'a WorkspaceMode)>,
    pub allow_read: &'a [PathBuf],
    pub allow_write: &'a [PathBuf],
    pub hidden: &'a [PathBuf],
    pub home: Option<&'a Path>,
    pub hosts_file: Option<Vec<u8>>,
    /// Protected paths (found after the clone; see [`protection`]).
    pub protected: Option<&'a airlock_fs::ProtectedPaths>,
    /// First descriptor number for mount sources in the child.
    pub fd_base: i32,
    /// A descriptor (inherited by the child) holding an idmapped detached
    /// clone of the workspace, to use instead of the workspace path (see
    /// `syscall::idmapped_tree`).
    pub ws_tree: Option<i32>,
}

struct Builder {
    plan: RootPlan,
    fd_base: i32,
}

impl Builder {
    fn op(&mut self, op: MountOp, desc: String) {
        self.plan.ops.push(op);
        self.plan.descs.push(desc);
    }

    fn mkdir_p(&mut self, inside: &Path) -> Result<(), SandboxError> {
        let mut cur = PathBuf::from("/");
        for c in inside.components().skip(1) {
            cur.push(c);
            self.op(
                MountOp::Mkdir {
                    path: cs(nr(&cur))?,
                    mode: 0o755,
                },
                format!("mkdir {}", cur.display()),
            );
        }
        Ok(())
    }

    fn mountpoint(&mut self, inside: &Path, is_dir: bool) -> Result<(), SandboxError> {
        if is_dir {
            self.mkdir_p(inside)
        } else {
            if let Some(parent) = inside.parent() {
                self.mkdir_p(parent)?;
            }
            self.op(
                MountOp::Touch {
                    path: cs(nr(inside))?,
                },
                format!("create mount point {}", inside.display()),
            );
            Ok(())
        }
    }

    fn fd_src(&mut self, host: &Path) -> Result<CString, SandboxError> {
        let n = self.fd_base + self.plan.srcs.len() as i32;
        self.plan.srcs.push(cs(host)?);
        cs(format!("/proc/self/fd/{n}"))
    }

    fn bind(&mut self, host: &Path, inside: &Path, ro: bool) -> Result<(), SandboxError> {
        if Path::new(NEWROOT).starts_with(host) {
            // The new root's tmpfs covers this directory: a bind through
            // its descriptor would find the tmpfs on top. Clone the tree
            // (open_tree) before that mount instead and move it in.
            let fd = self.fd_base + self.plan.srcs.len() as i32;
            self.plan.srcs.push(cs(host)?);
            self.plan.src_clone.push(self.plan.srcs.len() - 1);
            self.op(
                MountOp::MoveTree {
                    fd,
                    dst: cs(nr(inside))?,
                },
                format!("bind {} -> {}", host.display(), inside.display()),
            );
        } else {
            let src = self.fd_src(host)?;
            self.op(
                MountOp::Bind {
                    src,
                    dst: cs(nr(inside))?,
                },
                format!("bind {} -> {}", host.display(), inside.display()),
            );
        }
        if ro {
            self.op(
                MountOp::ReadOnly {
                    path: cs(nr(inside))?,
                    recursive: true,
                },
                format!("make {} read-only", inside.display()),
            );
        } else {
            self.op(
                MountOp::NoSuid {
                    path: cs(nr(inside))?,
                },
                format!("make {} nosuid", inside.display()),
            );
        }
        Ok(())
    }
}

fn is_dir(p: &Path) -> Result<bool, SandboxError> {
    std::fs::metadata(p)
        .map(|m| m.is_dir())
        .map_err(|e| SandboxError::io(format!("stat {}", p.display()), e))
}

/// Build the plan.
pub(crate) fn build(inp: &RootInputs<'_>) -> Result<RootPlan, SandboxError> {
    let mut b = Builder {
        plan: RootPlan {
            ops: vec![],
            descs: vec![],
            landlock: vec![],
            srcs: vec![],
            src_clone: vec![],
            protect_pending: false,
        },
        fd_base: inp.fd_base,
    };
    let protect = inp.protected.is_some()
        && inp
            .workspace
            .is_some_and(|(_, m)| !matches!(m, WorkspaceMode::ReadOnly));
    b.op(MountOp::MakePrivate, "make mounts private".into());
    b.op(
        MountOp::Tmpfs {
            target: cs(NEWROOT)?,
            opts: cs("mode=0755,size=16m")?,
            flags: (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
        },
        "mount tmpfs root".into(),
    );
    b.op(
        MountOp::WriteFile {
            path: cs(nr(Path::new("/.empty")))?,
            data: vec![],
            mode: 0o444,
        },
        "create empty file".into(),
    );
    b.op(
        MountOp::Mkdir {
            path: cs(nr(Path::new("/.emptydir")))?,
            mode: 0o555,
        },
        "create empty dir".into(),
    );
    b.plan
        .landlock
        .push((PathBuf::from("/"), Access::ListOnly, true));

    // System directories.
    for d in SYSTEM_DIRS {
        let p = Path::new(d);
        let Ok(md) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if md.file_type().is_symlink() {
            let target =
                std::fs::read_link(p).map_err(|e| SandboxError::io(format!("readlink {d}"), e))?;
            b.op(
                MountOp::Symlink {
                    target: cs(&target)?,
                    link: cs(nr(p))?,
                },
                format!("symlink {d}"),
            );
        } else if md.is_dir() {
            b.op(
                MountOp::Mkdir {
                    path: cs(nr(p))?,
                    mode: 0o755,
                },
                format!("mkdir {d}"),
            );
            let src = cs(p)?;
            b.op(
                MountOp::Bind {
                    src,
                    dst: cs(nr(p))?,
                },
                format!("bind {d}"),
            );
            if *d == "/etc" {
                for f in MASKED_FILES {
                    if Path::new(f).is_file() {
                        b.op(
                            MountOp::Bind {
                                src: cs(nr(Path::new("/.empty")))?,
                                dst: cs(nr(Path::new(f)))?,
                            },
                            format!("mask {f}"),
                        );
                    }
                }
                for f in MASKED_DIRS {
                    if Path::new(f).is_dir() {
                        b.op(
                            MountOp::Bind {
                                src: cs(nr(Path::new("/.emptydir")))?,
                                dst: cs(nr(Path::new(f)))?,
                            },
                            format!("mask {f}"),
                        );
                    }
                }
                if let Ok(rd) = std::fs::read_dir("/etc/ssh") {
                    for e in rd.flatten() {
                        let name = e.file_name();
                        let n = name.to_string_lossy();
                        if n.starts_with("ssh_host_") && n.ends_with("_key") {
                            let f = Path::new("/etc/ssh").join(&*n);
                            b.op(
                                MountOp::Bind {
                                    src: cs(nr(Path::new("/.empty")))?,
                                    dst: cs(nr(&f))?,
                                },
                                format!("mask {}", f.display()),
                            );
                        }
                    }
                }
                if let Some(data) = &inp.hosts_file {
                    b.op(
                        MountOp::WriteFile {
                            path: cs(nr(Path::new("/.hosts")))?,
                            data: data.clone(),
                            mode: 0o444,
                        },
                        "write hosts file".into(),
                    );
                    b.op(
                        MountOp::Bind {
                            src: cs(nr(Path::new("/.hosts")))?,
                            dst: cs(nr(Path::new("/etc/hosts")))?,
                        },
                        "bind /etc/hosts".into(),
                    );
                }
            }
            b.op(
                MountOp::ReadOnly {
                    path: cs(nr(p))?,
                    recursive: true,
                },
                format!("make {d} read-only"),
            );
            b.plan.landlock.push((p.to_path_buf(), Access::Ro, true));
        }
    }

    // /proc
    b.op(
        MountOp::Mkdir {
            path: cs(nr(Path::new("/proc")))?,
            mode: 0o555,
        },
        "mkdir /proc".into(),
    );
    b.op(
        MountOp::Proc {
            target: cs(nr(Path::new("/proc")))?,
        },
        "mount /proc".into(),
    );
    b.plan.landlock.push(("/proc".into(), Access::Proc, true));

    // /dev
    let dev = Path::new("/dev");
    b.op(
        MountOp::Mkdir {
            path: cs(nr(dev))?,
            mode: 0o755,
        },
        "mkdir /dev".into(),
    );
    b.op(
        MountOp::Tmpfs {
            target: cs(nr(dev))?,
            opts: cs("mode=0755,size=64k")?,
            flags: (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
        },
        "mount /dev".into(),
    );
    for d in DEVICES {
        let host = dev.join(d);
        if !host.exists() {
            continue;
        }
        b.op(
            MountOp::Touch {
                path: cs(nr(&host))?,
            },
            format!("create {}", host.display()),
        );
        b.op(
            MountOp::Bind {
                src: cs(&host)?,
                dst: cs(nr(&host))?,
            },
            format!("bind {}", host.display()),
        );
    }
    b.op(
        MountOp::Mkdir {
            path: cs(nr(&dev.join("pts")))?,
            mode: 0o755,
        },
        "mkdir /dev/pts".into(),
    );
    b.op(
        MountOp::Devpts {
            target: cs(nr(&dev.join("pts")))?,
        },
        "mount /dev/pts".into(),
    );
    for (t, l) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        b.op(
            MountOp::Symlink {
                target: cs(t)?,
                link: cs(nr(&dev.join(l)))?,
            },
            format!("symlink /dev/{l}"),
        );
    }
    b.op(
        MountOp::Mkdir {
            path: cs(nr(&dev.join("shm")))?,
            mode: 0o1777,
        },
        "mkdir /dev/shm".into(),
    );
    b.op(
        MountOp::Tmpfs {
            target: cs(nr(&dev.join("shm")))?,
            opts: cs("mode=1777")?,
            flags: (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
        },
        "mount /dev/shm".into(),
    );
    b.plan.landlock.push(("/dev".into(), Access::Dev, true));
    b.plan.landlock.push(("/dev/shm".into(), Access::Rw, true));

    // /tmp
    b.op(
        MountOp::Mkdir {
            path: cs(nr(Path::new("/tmp")))?,
            mode: 0o1777,
        },
        "mkdir /tmp".into(),
    );
    b.op(
        MountOp::Tmpfs {
            target: cs(nr(Path::new("/tmp")))?,
            opts: cs("mode=1777")?,
            flags: (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
        },
        "mount /tmp".into(),
    );
    b.plan.landlock.push(("/tmp".into(), Access::Rw, true));

    // $HOME: private and empty.
    if let Some(home) = inp.home {
        if home != Path::new("/")
            && home != Path::new("/tmp")
            && !SYSTEM_DIRS.iter().any(|d| home.starts_with(d))
        {
            b.mkdir_p(home)?;
            b.op(
                MountOp::Tmpfs {
                    target: cs(nr(home))?,
                    opts: cs("mode=0700")?,
                    flags: (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
                },
                format!("mount private {}", home.display()),
            );
            b.plan.landlock.push((home.to_path_buf(), Access::Rw, true));
        }
    }

    // The placeholders of protected paths must be in their layer (staged)
    // or in the workspace (write-through) before the workspace is mounted.
    let mut await_at = None;
    if protect {
        await_at = Some(b.plan.ops.len());
        b.op(
            MountOp::AwaitWalk { layer: None },
            "making the placeholders of protected paths".into(),
        );
    }
    // (index of the overlay op, its lower/upper/work options, and the
    // descriptor of the workspace's directory in the old root)
    let mut staged: Option<(usize, [String; 3], i32)> = None;

    // Workspace and grants, parents first.
    enum G<'a> {
        Ws(&'a WorkspaceMode),
        Read,
        Write,
    }
    let mut grants: Vec<(&Path, G<'_>)> = vec![];
    if let Some((ws, mode)) = inp.workspace {
        grants.push((ws, G::Ws(mode)));
    }
    grants.extend(inp.allow_read.iter().map(|p| (p.as_path(), G::Read)));
    grants.extend(inp.allow_write.iter().map(|p| (p.as_path(), G::Write)));
    grants.sort_by_key(|(p, _)| p.components().count());
    for (p, g) in &grants {
        let dir = is_dir(p)?;
        b.mountpoint(p, dir)?;
        match g {
            G::Ws(WorkspaceMode::Staged { .. }) if Path::new(NEWROOT).starts_with(p) => {
                return Err(SandboxError::Spec(format!(
                    "the workspace {} cannot be staged: choose a directory below it",
                    p.display()
                )));
            }
            G::Ws(WorkspaceMode::Staged { upper, work }) => {
                // The idmapped tree must belong to this mount namespace
                // before overlayfs may clone it as a layer: it is attached
                // over the workspace's own directory in the old root (not
                // in the new root, whose copy would need a lazy unmount of
                // its own, an RCU grace period of several milliseconds),
                // and leaves with the old root at `pivot_root`. Its
                // descriptor then names the attached tree (the overlay
                // keeps a private clone of each layer).
                let n = b.fd_base + b.plan.srcs.len() as i32;
                let l = match inp.ws_tree {
                    Some(fd) => {
                        b.plan.srcs.push(cs(p)?);
                        b.op(
                            MountOp::AttachOver { fd, onto: n },
                            "attach the idmapped workspace".into(),
                        );
                        cs(format!("/proc/self/fd/{fd}"))?
                    }
                    None => b.fd_src(p)?,
                };
                let u = b.fd_src(upper)?;
                let w = b.fd_src(work)?;
                let layers = [l, u, w].map(|c| c.to_string_lossy().into_owned());
                let opts = cs(overlay_opts(None, &layers))?;
                staged = Some((b.plan.ops.len(), layers, n));
                b.op(
                    MountOp::Overlay {
                        target: cs(nr(p))?,
                        opts,
                        opts_layer: None,
                    },
                    format!("mount overlay on {}", p.display()),
                );
                b.plan.landlock.push((p.to_path_buf(), Access::Rw, true));
            }
            G::Ws(WorkspaceMode::WriteThrough) | G::Write => {
                b.bind(p, p, false)?;
                b.plan.landlock.push((p.to_path_buf(), Access::Rw, dir));
            }
            G::Ws(WorkspaceMode::ReadOnly) | G::Read => {
                b.bind(p, p, true)?;
                b.plan.landlock.push((p.to_path_buf(), Access::Ro, dir));
            }
        }
    }

    // Hidden paths inside any grant.
    for h in inp.hidden {
        if !grants.iter().any(|(g, _)| h.starts_with(g)) {
            continue;
        }
        let Ok(md) = std::fs::metadata(h) else {
            continue;
        };
        let src = if md.is_dir() { "/.emptydir" } else { "/.empty" };
        b.op(
            MountOp::Bind {
                src: cs(nr(Path::new(src)))?,
                dst: cs(nr(h))?,
            },
            format!("hide {}", h.display()),
        );
        b.op(
            MountOp::ReadOnly {
                path: cs(nr(h))?,
                recursive: true,
            },
            format!("make {} read-only", h.display()),
        );
    }

    // Protected paths in a writable workspace (see `protection`).
    if protect {
        b.op(
            MountOp::ProtectReceived,
            "binding protected paths read-only".into(),
        );
        b.plan.protect_pending = true;
    }

    b.op(
        MountOp::PivotRoot {
            newroot: cs(NEWROOT)?,
        },
        "pivot_root".into(),
    );
    b.op(
        MountOp::ReadOnly {
            path: cs("/dev")?,
            recursive: false,
        },
        "make /dev read-only".into(),
    );
    b.op(
        MountOp::ReadOnly {
            path: cs("/")?,
            recursive: false,
        },
        "make / read-only".into(),
    );
    // The placeholder layer's descriptor comes after every mount source.
    if let (Some(at), Some((ov, layers, onto))) = (await_at, staged) {
        let fd = b.fd_base + b.plan.srcs.len() as i32;
        b.plan.ops[at] = MountOp::AwaitWalk {
            layer: Some(PlaceholderLayer { fd, onto }),
        };
        if let MountOp::Overlay { opts_layer, .. } = &mut b.plan.ops[ov] {
            *opts_layer = Some(cs(overlay_opts(Some(fd), &layers))?);
        }
    }
    Ok(b.plan)
}

/// What the protected-path walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Existing protected paths (relative, `/`-separated), not nested in
    /// each other.
    pub existing: Vec<String>,
    /// Directories (relative; `""` for the root) holding a `.git`: the roots
    /// of the workspace's repositories, where placeholders go.
    pub repo_roots: Vec<String>,
}

/// Walk `ws` (and the staged `upper`, whose entries are part of the view)
/// for protected paths, up to [`WALK_LIMIT`] entries.
pub fn walk_protected(
    ws: &Path,
    upper: Option<&Path>,
    prot: &airlock_fs::ProtectedPaths,
) -> Result<Found, SandboxError> {
    let mut found = Found {
        existing: vec![],
        repo_roots: vec![String::new()],
    };
    let matcher = compiled(prot)?;
    let names = candidate_names(&prot.patterns);
    let mut seen = std::collections::BTreeSet::new();
    let mut visited = 0usize;
    for root in std::iter::once(ws).chain(upper) {
        let mut it = walkdir::WalkDir::new(root)
            .follow_links(false)
            .min_depth(1)
            .into_iter();
        while let Some(entry) = it.next() {
            let Ok(entry) = entry else { continue };
            visited += 1;
            if visited > WALK_LIMIT {
                return Err(SandboxError::Layer {
                    layer: crate::Layer::ProtectedPaths,
                    why: format!("the workspace has more than {WALK_LIMIT} entries; protected paths cannot all be found"),
                    hint: "choose a smaller --workspace".into(),
                });
            }
            let is_git = entry.file_name() == ".git";
            // Only names a pattern ends with can match (the walk sees a
            // protected directory before anything in it).
            if !is_git
                && names
                    .as_ref()
                    .is_some_and(|n| !n.contains(entry.file_name()))
            {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            let rel = rel.to_string_lossy().to_string();
            if is_git {
                let parent = rel
                    .rsplit_once('/')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default();
                if !found.repo_roots.contains(&parent) {
                    found.repo_roots.push(parent);
                }
            }
            if protected_match(&matcher, &rel, entry.file_type().is_dir()) {
                if seen.insert(rel.clone()) {
                    found.existing.push(rel);
                }
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
            }
        }
    }
    // An upper-dir entry hides nothing from the walk of the lower; drop
    // entries nested in another found entry.
    found.existing.sort();
    let mut out: Vec<String> = vec![];
    for e in found.existing {
        if !out.iter().any(|o| e.starts_with(&format!("{o}/"))) {
            out.push(e);
        }
    }
    found.existing = out;
    Ok(found)
}

/// The last literal component of every pattern (`hooks` for
/// `**/.git/hooks`, `.husky` for `**/.husky/**`): an entry whose name is not
/// among them cannot match. `None` when some pattern ends in a glob (then
/// every entry is checked).
fn candidate_names(patterns: &[String]) -> Option<std::collections::HashSet<std::ffi::OsString>> {
    let mut names = std::collections::HashSet::new();
    for p in patterns {
        let last = p
            .trim_end_matches('/')
            .split('/')
            .rfind(|c| *c != "**" && !c.is_empty())?;
        if last.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            return None;
        }
        names.insert(std::ffi::OsString::from(last));
    }
    Some(names)
}

fn protected_match(m: &airlock_fs::ProtectedMatcher, rel: &str, is_dir: bool) -> bool {
    m.matches(rel).is_some() || (is_dir && m.matches(&format!("{rel}/")).is_some())
}

type MatcherCache =
    std::sync::Mutex<Option<(Vec<String>, std::sync::Arc<airlock_fs::ProtectedMatcher>)>>;

/// The compiled matcher for `prot`, reused while the list stays the same
/// (compiling the glob set costs about a millisecond). A list that does not
/// compile is an error: the protected paths cannot be found.
fn compiled(
    prot: &airlock_fs::ProtectedPaths,
) -> Result<std::sync::Arc<airlock_fs::ProtectedMatcher>, SandboxError> {
    static CACHE: MatcherCache = std::sync::Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((pats, m)) = c.as_ref() {
        if *pats == prot.patterns {
            return Ok(m.clone());
        }
    }
    let m = std::sync::Arc::new(prot.compile().map_err(|e| SandboxError::Layer {
        layer: crate::Layer::ProtectedPaths,
        why: format!("the protected path list does not compile: {e}"),
        hint: "fix the protected path patterns in the config".into(),
    })?);
    *c = Some((prot.patterns.clone(), m.clone()));
    Ok(m)
}

/// A minimal glob match used when the fs crate's matcher is unavailable:
/// `**/x` matches `x` at any depth, `x/` or `x/**` a directory and its
/// contents, anything else literally.
pub fn fallback_match(patterns: &[String], rel: &str) -> bool {
    for p in patterns {
        let (any_depth, p) = match p.strip_prefix("**/") {
            Some(r) => (true, r),
            None => (false, p.as_str()),
        };
        let p = p.trim_end_matches("/**").trim_end_matches('/');
        if rel == p || (any_depth && rel.ends_with(&format!("/{p}"))) {
            return true;
        }
    }
    false
}

/// Concrete relative paths of patterns (without glob characters), with
/// whether they name a directory.
pub fn concrete_patterns(patterns: &[String]) -> Vec<(String, bool)> {
    let mut v = vec![];
    for p in patterns {
        let p2 = p.strip_prefix("**/").unwrap_or(p);
        let dir =
            p2.ends_with('/') || p2.ends_with("/**") || p2.ends_with("/hooks") || p2 == "hooks";
        let p2 = p2.trim_end_matches("/**").trim_end_matches('/');
        if p2.is_empty() || p2.contains(['*', '?', '[', '{']) {
            continue;
        }
        match v.iter_mut().find(|(q, _): &&mut (String, bool)| q == p2) {
            Some(e) => e.1 |= dir,
            None => v.push((p2.to_string(), dir)),
        }
    }
    v
}

/// A protected path that needs a placeholder.
#[derive(Debug)]
struct Missing {
    /// Relative path (`/`-separated).
    rel: String,
    dir: bool,
}

/// Each concrete protected pattern that does not exist yet at a
/// repository root, but whose parent does (in the workspace or, staged,
/// the upper dir), and is not inside a protected path found.
///
/// Write-through, the placeholders are made in the real tree: a parent
/// that is a symbolic link (a `.git` pointing elsewhere) would have them
/// made wherever it points, and inside the sandbox, where its target is
/// absent, nothing would hold the protected path. That is refused. (Staged,
/// the placeholder layer's own directory stands over the link.)
fn missing_placeholders(
    ws: &Path,
    upper: Option<&Path>,
    prot: &airlock_fs::ProtectedPaths,
    found: &Found,
) -> Result<Vec<Missing>, SandboxError> {
    let exists = |rel: &Path| {
        std::fs::symlink_metadata(ws.join(rel)).is_ok()
            || upper.is_some_and(|u| std::fs::symlink_metadata(u.join(rel)).is_ok())
    };
    let is_dir = |rel: &Path| ws.join(rel).is_dir() || upper.is_some_and(|u| u.join(rel).is_dir());
    let mut out = vec![];
    for root in &found.repo_roots {
        // Only inside an existing `.git`: those names are invisible to the
        // tools working on the tree (a placeholder `.vscode` would show up
        // in `git status`). Elsewhere a new protected path can be staged but
        // never committed (commit refuses protected paths).
        for (pat, dir) in concrete_patterns(&prot.patterns)
            .into_iter()
            .filter(|(p, _)| p.starts_with(".git/"))
        {
            let rel = if root.is_empty() {
                pat.clone()
            } else {
                format!("{root}/{pat}")
            };
            let parent = Path::new(&rel).parent().unwrap_or(Path::new(""));
            if upper.is_none()
                && std::fs::symlink_metadata(ws.join(parent)).is_ok_and(|m| m.is_symlink())
            {
                return Err(SandboxError::Layer {
                    layer: crate::Layer::ProtectedPaths,
                    why: format!(
                        "{} is a symbolic link: the protected paths in it cannot be kept read-only",
                        ws.join(parent).display()
                    ),
                    hint: "make it a directory, or use a staged workspace".into(),
                });
            }
            if exists(Path::new(&rel))
                || !is_dir(parent)
                || found
                    .existing
                    .iter()
                    .any(|e| rel.starts_with(&format!("{e}/")))
            {
                continue;
            }
            out.push(Missing { rel, dir });
        }
    }
    Ok(out)
}

/// The placeholder layer's entries (`q` message entries, at most
/// [`crate::syscall::PROTECT_MSG_MAX`] bytes each) for `missing`: every
/// directory above a placeholder with the mode of the workspace's (or
/// the upper dir's) own, so the merged view shows it unchanged, then the
/// placeholder itself, read-only and empty.
fn layer_entries(
    ws: &Path,
    upper: &Path,
    missing: &[Missing],
) -> Result<Vec<Vec<u8>>, SandboxError> {
    use crate::syscall::{PH_DIR, PH_FILE, PH_PARENT};
    let mut out: Vec<Vec<u8>> = vec![];
    let mut parents = std::collections::BTreeSet::new();
    let mut entry = |kind: u8, mode: u32, rel: &Path| -> Result<(), SandboxError> {
        let mut e = vec![kind];
        e.extend_from_slice(&(mode as u16).to_le_bytes());
        e.extend_from_slice(cs(rel)?.as_bytes_with_nul());
        out.push(e);
        Ok(())
    };
    for m in missing {
        let rel = Path::new(&m.rel);
        let mut cur = PathBuf::new();
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            cur.push(c);
            if !parents.insert(cur.clone()) {
                continue;
            }
            // The upper dir's copy, when there is one, is what the merged
            // view shows (it is the top layer).
            let md = std::fs::metadata(upper.join(&cur))
                .or_else(|_| std::fs::metadata(ws.join(&cur)))
                .map_err(|e| SandboxError::io(format!("stat {}", ws.join(&cur).display()), e))?;
            entry(PH_PARENT, md.mode() & 0o7777, &cur)?;
        }
        match m.dir {
            true => entry(PH_DIR, 0o555, rel)?,
            false => entry(PH_FILE, 0o444, rel)?,
        }
    }
    Ok(out)
}

/// Write-through: create each placeholder in the workspace for the run
/// (the directory above it exists there: see [`missing_placeholders`]).
/// Returns the created paths.
fn make_placeholders(ws: &Path, missing: &[Missing]) -> Result<Vec<PathBuf>, SandboxError> {
    let mut out = vec![];
    for m in missing {
        let up = ws.join(&m.rel);
        if m.dir {
            std::fs::create_dir(&up)
                .map_err(|e| SandboxError::io(format!("mkdir {}", up.display()), e))?;
            let _ =
                std::fs::set_permissions(&up, std::os::unix::fs::PermissionsExt::from_mode(0o555));
        } else {
            std::fs::write(&up, b"")
                .map_err(|e| SandboxError::io(format!("create {}", up.display()), e))?;
            let _ =
                std::fs::set_permissions(&up, std::os::unix::fs::PermissionsExt::from_mode(0o444));
        }
        out.push(up);
    }
    Ok(out)
}

/// Remove the placeholders [`protection`] created in a write-through
/// workspace (empty ones only).
pub(crate) fn remove_placeholders(paths: &[PathBuf]) {
    // None is inside another (a placeholder's parent exists beforehand).
    for p in paths {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            continue;
        };
        let r = if md.is_dir() {
            std::fs::remove_dir(p)
        } else if md.len() == 0 {
            std::fs::remove_file(p)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            tracing::debug!("placeholder {} left: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn prot(p: &[&str]) -> airlock_fs::ProtectedPaths {
        airlock_fs::ProtectedPaths {
            patterns: p.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn candidate_names_cover_the_default_list() {
        let n = candidate_names(&airlock_fs::ProtectedPaths::default().patterns).unwrap();
        for x in [
            "hooks",
            "config",
            ".husky",
            ".vscode",
            ".bashrc",
            "fish",
            "config.worktree",
            ".mcp.json",
        ] {
            assert!(n.contains(std::ffi::OsStr::new(x)), "{x}");
        }
        assert!(candidate_names(&["**/*.pem".to_string()]).is_none());
    }

    #[test]
    fn concrete() {
        let c = concrete_patterns(&[
            "**/.git/hooks".into(),
            "**/.git/config".into(),
            ".vscode/".into(),
            "*.rc".into(),
            ".mcp.json".into(),
        ]);
        assert_eq!(
            c,
            vec![
                (".git/hooks".into(), true),
                (".git/config".into(), false),
                (".vscode".into(), true),
                (".mcp.json".into(), false)
            ]
        );
    }

    #[test]
    fn fallback() {
        let p: Vec<String> = vec!["**/.git/hooks".into(), ".vscode/".into()];
        assert!(fallback_match(&p, ".git/hooks"));
        assert!(fallback_match(&p, "sub/mod/.git/hooks"));
        assert!(fallback_match(&p, ".vscode"));
        assert!(!fallback_match(&p, "sub/.vscode"));
        assert!(!fallback_match(&p, ".git/hooksx"));
    }

    #[test]
    fn walk_finds_nested_repos_and_stops_descending() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path();
        std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
        std::fs::write(ws.join(".git/hooks/pre-commit"), "x").unwrap();
        std::fs::create_dir_all(ws.join("vendor/lib/.git/hooks")).unwrap();
        std::fs::write(ws.join("vendor/lib/.git/config"), "x").unwrap();
        let p = prot(&["**/.git/hooks", "**/.git/config"]);
        let f = walk_protected(ws, None, &p).unwrap();
        assert_eq!(
            f.existing,
            vec![
                ".git/hooks".to_string(),
                "vendor/lib/.git/config".into(),
                "vendor/lib/.git/hooks".into()
            ]
        );
        assert!(f.repo_roots.contains(&"vendor/lib".to_string()));
        assert!(f.repo_roots.contains(&String::new()));
    }

    #[test]
    fn placeholders_are_planned_inside_git_only() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        let upper = t.path().join("upper");
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        std::fs::create_dir_all(ws.join("sub/.git")).unwrap();
        std::fs::set_permissions(ws.join("sub"), PermissionsExt::from_mode(0o750)).unwrap();
        std::fs::set_permissions(ws.join("sub/.git"), PermissionsExt::from_mode(0o700)).unwrap();
        // A repository only the upper dir has (made by an earlier run).
        std::fs::create_dir_all(upper.join("new/.git")).unwrap();
        std::fs::set_permissions(upper.join("new"), PermissionsExt::from_mode(0o711)).unwrap();
        let p = prot(&["**/.git/hooks", "**/.git/config", ".vscode/"]);
        let f = walk_protected(&ws, Some(&upper), &p).unwrap();
        let missing = missing_placeholders(&ws, Some(&upper), &p, &f).unwrap();
        let rels: Vec<(&str, bool)> = missing.iter().map(|m| (m.rel.as_str(), m.dir)).collect();
        // Only inside .git directories: no clutter in the tree itself.
        assert_eq!(
            rels,
            vec![
                (".git/hooks", true),
                (".git/config", false),
                ("sub/.git/hooks", true),
                ("sub/.git/config", false),
                ("new/.git/hooks", true),
                ("new/.git/config", false),
            ]
        );
        // Staged: nothing is written anywhere; the layer's entries carry
        // each parent once, with its mode, then the placeholder.
        let entries = layer_entries(&ws, &upper, &missing).unwrap();
        let decoded: Vec<(char, u32, String)> = entries
            .iter()
            .map(|e| {
                let mode = u16::from_le_bytes([e[1], e[2]]) as u32;
                let path = std::ffi::CStr::from_bytes_with_nul(&e[3..]).unwrap();
                (e[0] as char, mode, path.to_string_lossy().into_owned())
            })
            .collect();
        let git_mode = std::fs::metadata(ws.join(".git")).unwrap().mode() & 0o7777;
        assert_eq!(
            decoded,
            vec![
                ('d', git_mode, ".git".to_string()),
                ('D', 0o555, ".git/hooks".to_string()),
                ('f', 0o444, ".git/config".to_string()),
                ('d', 0o750, "sub".to_string()),
                ('d', 0o700, "sub/.git".to_string()),
                ('D', 0o555, "sub/.git/hooks".to_string()),
                ('f', 0o444, "sub/.git/config".to_string()),
                ('d', 0o711, "new".to_string()),
                (
                    'd',
                    std::fs::metadata(upper.join("new/.git")).unwrap().mode() & 0o7777,
                    "new/.git".to_string()
                ),
                ('D', 0o555, "new/.git/hooks".to_string()),
                ('f', 0o444, "new/.git/config".to_string()),
            ]
        );
        assert_eq!(walkdir(&upper), vec!["new", "new/.git"]);
        let before = walkdir(&ws);

        // Write-through: created in the workspace for the run, and removed.
        let f = walk_protected(&ws, None, &p).unwrap();
        let missing = missing_placeholders(&ws, None, &p, &f).unwrap();
        assert_eq!(missing.len(), 4);
        let made = make_placeholders(&ws, &missing).unwrap();
        assert!(ws.join(".git/hooks").is_dir());
        assert!(ws.join("sub/.git/config").is_file());
        std::fs::write(ws.join("sub/.git/index"), "kept").unwrap();
        remove_placeholders(&made);
        let mut after = walkdir(&ws);
        after.retain(|p| p != "sub/.git/index");
        assert_eq!(after, before);
    }

    fn walkdir(root: &Path) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }
}
