//! What this machine supports, layer by layer (used by `airlock doctor`).
//! Every check that can be tried is tried for real: the probe runs
//! `/bin/true` in a full sandbox with a staged temporary workspace.

use std::path::Path;

use serde::Serialize;

use crate::{Layer, SandboxError, SandboxSpec, StdioMode, WorkspaceMode, WorkspaceMount};

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Layer or feature checked.
    pub name: String,
    /// Whether it works.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What is lost without it.
    pub cost: String,
    /// The setting that enables it.
    pub enable: String,
}

/// The probe's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// All checks, in order.
    pub checks: Vec<Check>,
    /// Landlock ABI (`None`: unavailable).
    pub landlock_abi: Option<i32>,
    /// `cgroup-v2`, `cgroup-v1` or `rlimit`.
    pub limits_mechanism: String,
    /// Container or WSL detected.
    pub environment: Option<String>,
    /// Whether the default profile (staged workspace, Landlock, seccomp)
    /// runs here without degrading anything.
    pub default_profile_runs: bool,
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Container or WSL, if detected.
pub fn environment() -> Option<String> {
    if read("/proc/version").is_some_and(|v| v.to_ascii_lowercase().contains("microsoft")) {
        return Some("WSL".into());
    }
    if Path::new("/.dockerenv").exists() {
        return Some("Docker container".into());
    }
    if Path::new("/run/.containerenv").exists() {
        return Some("Podman container".into());
    }
    if let Some(c) = read("/proc/1/environ") {
        if c.contains("container=") {
            return Some("container (systemd-nspawn/LXC)".into());
        }
    }
    if let Some(c) = read("/proc/1/cgroup") {
        for k in ["docker", "kubepods", "lxc", "containerd"] {
            if c.contains(k) {
                return Some(format!("container ({k})"));
            }
        }
    }
    None
}

fn trial(ws_mode: Option<&str>) -> Result<(), SandboxError> {
    let t = tempfile::Builder::new()
        .prefix("airlock-probe")
        .tempdir()
        .map_err(|e| SandboxError::io("temp dir", e))?;
    let ws = t.path().join("ws");
    let upper = t.path().join("upper");
    let work = t.path().join("work");
    for d in [&ws, &upper, &work] {
        std::fs::create_dir(d).map_err(|e| SandboxError::io("mkdir", e))?;
    }
    if rustix::process::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755));
    }
    let mut spec = SandboxSpec::new(vec!["/bin/true".into()], ws.clone());
    spec.stdio = StdioMode::Capture { max_bytes: 4096 };
    spec.workspace = match ws_mode {
        Some("staged") => Some(WorkspaceMount {
            base: ws.clone(),
            mode: WorkspaceMode::Staged { upper, work },
        }),
        Some(_) => Some(WorkspaceMount {
            base: ws.clone(),
            mode: WorkspaceMode::ReadOnly,
        }),
        None => None,
    };
    if ws_mode.is_none() {
        spec.cwd = "/".into();
        spec.allow_degraded = vec![Layer::Landlock, Layer::Seccomp];
    }
    let o = crate::run(&spec);
    // overlayfs leaves `work/work` with mode 000: open it up so that the
    // temp dir can be removed by an unprivileged user too.
    open_up(t.path());
    let o = o?;
    match o.status {
        crate::ExitKind::Exited(0) => Ok(()),
        s => Err(SandboxError::Spec(format!(
            "/bin/true ended with {s:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ))),
    }
}

fn open_up(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(md) = std::fs::symlink_metadata(p) {
        if md.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                open_up(&e.path());
            }
        }
    }
}

/// Probe this machine.
pub fn probe() -> Probe {
    let mut checks = vec![];
    let env = environment();
    let root = rustix::process::geteuid().is_root();

    // User namespaces.
    let mut userns_detail = vec![];
    if let Some(v) = read("/proc/sys/user/max_user_namespaces") {
        userns_detail.push(format!("user.max_user_namespaces={v}"));
    }
    if let Some(v) = read("/proc/sys/kernel/unprivileged_userns_clone") {
        userns_detail.push(format!("kernel.unprivileged_userns_clone={v}"));
    }
    if let Some(v) = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        userns_detail.push(format!("kernel.apparmor_restrict_unprivileged_userns={v}"));
    }
    let bare = trial(None);
    checks.push(Check {
        name: "user namespaces".into(),
        ok: bare.is_ok(),
        detail: match &bare {
            Ok(()) => format!("created user+mount+pid+net+ipc+uts+cgroup namespaces ({})", userns_detail.join(", ")),
            Err(e) => format!("{e} ({})", userns_detail.join(", ")),
        },
        cost: "no sandbox at all: `airlock run` and brokered exec refuse to run".into(),
        enable: "sysctl user.max_user_namespaces=15000; kernel.unprivileged_userns_clone=1 (Debian/Ubuntu); kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for airlock (Ubuntu 24.04+); in a container: run it with --security-opt seccomp=unconfined or a userns-enabled runtime".into(),
    });

    let abi = crate::landlock::kernel_abi();
    checks.push(Check {
        name: "landlock".into(),
        ok: abi.is_some(),
        detail: match abi {
            Some(a) => format!(
                "ABI {a}{}{}{}",
                if a >= 4 {
                    "; TCP port rules"
                } else {
                    "; no TCP port rules (ABI 4)"
                },
                if a >= 6 {
                    "; abstract-socket and signal scoping"
                } else {
                    "; no scoping (ABI 6)"
                },
                if a >= 7 {
                    "; denials go to the kernel audit log (when audit is enabled)"
                } else {
                    ""
                }
            ),
            None => "not enabled".into(),
        },
        cost:
            "the filesystem view rests on mount namespaces alone; --allow-net cannot restrict ports"
                .into(),
        enable: "CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= kernel boot parameter"
            .into(),
    });

    let sc = crate::syscall::seccomp_available();
    checks.push(Check {
        name: "seccomp".into(),
        ok: sc,
        detail: if sc {
            format!(
                "filter mode available; blocked calls reported: {}",
                if crate::syscall::notif_sizes_ok() {
                    "yes (user notification)"
                } else {
                    "no"
                }
            )
        } else {
            "unavailable".into()
        },
        cost:
            "dangerous system calls (ptrace, io_uring, bpf, namespaces, TIOCSTI...) stay reachable"
                .into(),
        enable: "CONFIG_SECCOMP_FILTER=y".into(),
    });

    let ov = if bare.is_ok() {
        trial(Some("staged"))
    } else {
        Err(SandboxError::Spec("user namespaces unavailable".into()))
    };
    checks.push(Check {
        name: "overlayfs in a user namespace".into(),
        ok: ov.is_ok(),
        detail: match &ov {
            Ok(()) => "staged workspace mounted (userxattr)".into(),
            Err(e) => e.to_string(),
        },
        cost: "writes cannot be staged for review: only --write-through or a read-only workspace (--allow-degraded overlay)".into(),
        enable: "Linux 5.11+ with overlayfs; the staging dir on ext4/xfs/btrfs (user xattrs)".into(),
    });

    let mech = crate::limits::detect();
    checks.push(Check {
        name: "cgroups".into(),
        ok: mech != crate::limits::Mechanism::Rlimit,
        detail: match mech {
            crate::limits::Mechanism::Rlimit => format!(
                "no writable cgroup ({}); limits use rlimits (RLIMIT_DATA, RLIMIT_NPROC in the sandbox's user namespace, RLIMIT_CPU) and the pid namespace",
                if root { "no memory/pids controller found" } else { "not delegated to this user" }
            ),
            m => format!("{} memory and pids controllers", m.as_str()),
        },
        cost: "memory limits count virtual data size rather than resident memory, OOM kills are not reported as such, and peak memory is the largest single process".into(),
        enable: "delegate a cgroup v2 subtree with memory and pids (systemd: `systemd-run --user -p Delegate=yes ...` or Delegate=yes in user@.service)".into(),
    });

    if root {
        // A root-owned staged workspace is idmapped for the sandbox user.
        let t = tempfile::Builder::new().prefix("airlock-probe").tempdir();
        let idmap = match &t {
            Ok(t) => crate::syscall::idmapped_tree(
                &std::ffi::CString::new(t.path().as_os_str().as_encoded_bytes())
                    .unwrap_or_default(),
                crate::exec::NOBODY,
                crate::exec::NOBODY,
            )
            .map(|_| ())
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        checks.push(Check {
            name: "idmapped mounts".into(),
            ok: idmap.is_ok(),
            detail: match &idmap {
                Ok(()) => "root-owned workspaces are idmapped for the sandbox user".into(),
                Err(e) => format!("cannot idmap a directory under the temp dir: {e}"),
            },
            cost: "started as root, the sandbox (as nobody) cannot change a root-owned workspace".into(),
            enable: "Linux 5.12+ and a filesystem that allows idmapped mounts (ext4, xfs, btrfs, tmpfs 6.3+)".into(),
        });
    }

    // The broker identifies agents by a pidfd of the socket's peer.
    let peer = std::os::unix::net::UnixStream::pair()
        .and_then(|(a, _b)| crate::syscall::peer_pidfd(std::os::fd::AsFd::as_fd(&a)).map(|_| ()));
    checks.push(Check {
        name: "peer pidfd".into(),
        ok: peer.is_ok(),
        detail: match &peer {
            Ok(()) => {
                "SO_PEERPIDFD works: the broker can pin the agent process behind a socket".into()
            }
            Err(e) => format!("SO_PEERPIDFD: {e}"),
        },
        cost: "the broker can only identify an agent by pid, which can be recycled".into(),
        enable: "Linux 6.5+".into(),
    });

    // Optional checks: the default profile runs without them.
    let optional = ["cgroups", "idmapped mounts", "peer pidfd"];
    let default_ok = checks
        .iter()
        .filter(|c| !optional.contains(&c.name.as_str()))
        .all(|c| c.ok);
    Probe {
        checks,
        landlock_abi: abi,
        limits_mechanism: mech.as_str().into(),
        environment: env,
        default_profile_runs: default_ok,
    }
}
