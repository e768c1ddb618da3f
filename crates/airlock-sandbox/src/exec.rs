//! Orchestration: prepare the plan, start the sandbox, supervise it, and
//! turn what happened into an [`Outcome`].

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::limits::{Mechanism, RunCgroup};
use crate::mounts::{self, Access, RootInputs};
use crate::syscall::{self, ChildPlan, LandlockPlan, Phase};
use crate::{
    ExitKind, LandlockState, Layer, LayerReport, Outcome, SandboxError, SandboxSpec, StdioMode,
    Violation, WorkspaceMode,
};

/// Host id the sandbox runs as when Airlock is started as root and the
/// workspace is root's own (or absent): `nobody`.
pub const NOBODY: u32 = 65534;

/// Sends signals to a running sandbox (to its init, which forwards them to
/// the command's process group). Cheap to clone; usable from a signal
/// handling thread while another thread waits.
#[derive(Clone)]
pub struct Signaller {
    pidfd: Arc<OwnedFd>,
}

impl Signaller {
    /// Send `sig` (e.g. `libc::SIGINT`). Fails with ESRCH once it has exited.
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        syscall::pidfd_signal(self.pidfd.as_raw_fd(), sig)
    }
}

/// Signals held back from this process and forwarded to a sandbox's
/// command. Take it *before* [`spawn`]: from then on the signals are
/// blocked in the calling thread (and in any thread it starts), so one that
/// arrives while the sandbox starts, or between [`spawn`] and the wait, is
/// kept pending and forwarded then instead of acting on this process. The
/// sandbox's init and command do not inherit the mask. Dropping it discards
/// what is still pending and restores the mask.
pub struct ForwardedSignals {
    tap: syscall::SignalTap,
}

impl ForwardedSignals {
    /// Block `signals` (e.g. SIGINT, SIGTERM) in the calling thread, which
    /// should be the one that waits for the sandbox.
    pub fn block(signals: &[i32]) -> Result<ForwardedSignals, SandboxError> {
        let tap = syscall::SignalTap::new(signals)
            .map_err(|e| SandboxError::io("blocking signals", e))?;
        Ok(ForwardedSignals { tap })
    }
}

/// A started sandbox.
pub struct Running {
    pid: i32,
    pidfd: Arc<OwnedFd>,
    status_rd: OwnedFd,
    /// Held while the sandbox may run; its hang-up makes init exit.
    _lifeline: OwnedFd,
    start: Instant,
    /// When spawn began (for debug timings).
    t0: Instant,
    cgroup: Option<RunCgroup>,
    report: LayerReport,
    placeholders: Vec<PathBuf>,
    limits: crate::Limits,
    upper: Option<PathBuf>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    /// The seccomp notification listener, served by `wait`.
    notify: Option<OwnedFd>,
    /// The upper dir's state and allocated bytes before the run: whether
    /// the run changed it decides the sync when the volatile mount is
    /// closed (see `close_overlay`), and the disk cap counts from it.
    volatile: Option<(Option<UpperState>, u64)>,
    /// This run's overlay work dir, held until the overlay is closed (see
    /// `airlock_fs::RunWorkDir`).
    run_work: Option<airlock_fs::RunWorkDir>,
    /// The helper that lent its user namespace to the idmapped workspace;
    /// reaped with the rest.
    _idmap_helper: Option<syscall::Reaper>,
    /// Set-up timings (see `syscall::PhaseClock`), when asked for.
    phases: Option<syscall::PhaseClock>,
    tally: Tally,
    done: bool,
}

/// Run `spec` to completion (blocking).
pub fn run(spec: &SandboxSpec) -> Result<Outcome, SandboxError> {
    spawn(spec)?.wait()
}

fn absolute(p: &Path, what: &str) -> Result<PathBuf, SandboxError> {
    if !p.is_absolute() {
        return Err(SandboxError::Spec(format!(
            "{what} {} is not absolute",
            p.display()
        )));
    }
    std::fs::canonicalize(p).map_err(|e| SandboxError::io(format!("{what} {}", p.display()), e))
}

fn owned_by_root(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).is_ok_and(|m| m.uid() == 0)
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, SandboxError> {
    CString::new(s.as_ref())
        .map_err(|_| SandboxError::Spec("argument or environment contains a NUL byte".into()))
}

fn parse_net(entries: &[String]) -> Result<(Vec<u16>, Vec<u8>), SandboxError> {
    use std::net::ToSocketAddrs;
    let mut ports = vec![];
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for e in entries {
        let (host, port) = match e.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| SandboxError::Spec(format!("--allow-net {e:?}: bad port")))?;
                (
                    h.trim_matches(|c| c == '[' || c == ']').to_string(),
                    vec![port],
                )
            }
            _ => (e.clone(), vec![443, 80]),
        };
        if host.is_empty() {
            return Err(SandboxError::Spec(format!("--allow-net {e:?}: empty host")));
        }
        let addrs = (host.as_str(), port[0]).to_socket_addrs().map_err(|err| {
            SandboxError::Spec(format!("--allow-net {e:?}: cannot resolve {host}: {err}"))
        })?;
        for a in addrs {
            if host.parse::<std::net::IpAddr>().is_err() {
                hosts.push_str(&format!("{} {}\n", a.ip(), host));
            }
        }
        for p in port {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
    }
    Ok((ports, hosts.into_bytes()))
}

fn failure_message(step: u32, descs: &[String]) -> String {
    use syscall::*;
    match step {
        s if (s as usize) < descs.len() => descs[s as usize].clone(),
        STEP_SYNC => "waiting for the parent".into(),
        STEP_SETID => "switching to the unprivileged inside user".into(),
        STEP_HOSTNAME => "setting the hostname".into(),
        STEP_LOOPBACK => "bringing up loopback".into(),
        STEP_CHDIR => "changing to the working directory".into(),
        STEP_RLIMIT => "setting rlimits".into(),
        STEP_NNP => "setting no_new_privs".into(),
        STEP_LANDLOCK_OPEN => "opening a Landlock rule path".into(),
        STEP_LANDLOCK_RULE => "adding a Landlock rule".into(),
        STEP_LANDLOCK_RESTRICT => "applying Landlock".into(),
        STEP_CAPS => "dropping capabilities".into(),
        STEP_SECCOMP => "installing the seccomp filter".into(),
        STEP_FORK => "forking the command".into(),
        STEP_SETSID => "setsid".into(),
        STEP_STDIO => "setting up stdio".into(),
        STEP_EXEC => "exec".into(),
        STEP_NOTIFY => "passing the seccomp listener".into(),
        STEP_CGROUP => "joining the run's cgroup".into(),
        STEP_NETNS => "creating or joining the network namespace".into(),
        s if s >= STEP_SRC => format!("opening mount source #{}", s - STEP_SRC),
        _ => format!("step {step}"),
    }
}

fn write_file(path: String, data: &str) -> Result<(), SandboxError> {
    std::fs::write(&path, data).map_err(|e| SandboxError::Namespaces {
        why: format!("writing {path}: {e}"),
        hint: "check user.max_user_namespaces and that the user namespace was created".into(),
    })
}

fn userns_hint() -> String {
    let mut h = vec!["sysctl user.max_user_namespaces=15000".to_string()];
    if Path::new("/proc/sys/kernel/unprivileged_userns_clone").exists() {
        h.push("sysctl kernel.unprivileged_userns_clone=1".into());
    }
    if Path::new("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").exists() {
        h.push("sysctl kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns for airlock)".into());
    }
    h.join("; ")
}

/// Start the sandbox described by `spec`; returns once the command has
/// been executed inside it (or with the error naming the step that failed).
///
/// Call [`Running::wait`] (or [`Running::wait_forwarding`]) promptly: the
/// blocked system calls of the command are answered there, and until then a
/// denied call waits. Dropping the [`Running`] kills the sandbox. Safe to
/// call from a multi-threaded process: nothing between the clone and the
/// command's `execve` allocates or takes a lock.
pub fn spawn(spec: &SandboxSpec) -> Result<Running, SandboxError> {
    match spawn_once(spec, false) {
        Err(SandboxError::Layer {
            layer: Layer::Overlay,
            why,
            ..
        }) if spec.allow_degraded.contains(&Layer::Overlay) => {
            tracing::warn!("overlay unavailable ({why}); workspace mounted read-only");
            let mut r = spawn_once(spec, true)?;
            r.report.degraded.push((
                Layer::Overlay,
                format!("{why}; workspace mounted read-only"),
            ));
            Ok(r)
        }
        r => r,
    }
}

fn spawn_once(spec: &SandboxSpec, overlay_fallback: bool) -> Result<Running, SandboxError> {
    let t0 = Instant::now();
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(SandboxError::Spec("empty command".into()));
    }
    if !spec.cwd.is_absolute() {
        return Err(SandboxError::Spec(format!(
            "cwd {} is not absolute",
            spec.cwd.display()
        )));
    }
    let degraded_ok = |l: Layer| spec.allow_degraded.contains(&l);
    let mut degraded: Vec<(Layer, String)> = vec![];

    // Paths.
    let mut workspace = match &spec.workspace {
        None => None,
        Some(w) => {
            let base = absolute(&w.base, "workspace")?;
            if !base.is_dir() {
                return Err(SandboxError::Spec(format!(
                    "workspace {} is not a directory",
                    base.display()
                )));
            }
            let mode = match (&w.mode, overlay_fallback) {
                (WorkspaceMode::Staged { .. }, true) => WorkspaceMode::ReadOnly,
                (WorkspaceMode::Staged { upper, work }, false) => WorkspaceMode::Staged {
                    upper: absolute(upper, "upper dir")?,
                    work: absolute(work, "work dir")?,
                },
                (m, _) => m.clone(),
            };
            Some((base, mode))
        }
    };
    let allow_read = spec
        .allow_read
        .iter()
        .map(|p| absolute(p, "--allow-read"))
        .collect::<Result<Vec<_>, _>>()?;
    let allow_write = spec
        .allow_write
        .iter()
        .map(|p| absolute(p, "--allow-write"))
        .collect::<Result<Vec<_>, _>>()?;
    let hidden: Vec<PathBuf> = spec
        .hidden
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let cwd = std::fs::canonicalize(&spec.cwd).unwrap_or_else(|_| spec.cwd.clone());
    let home = spec
        .env
        .iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| PathBuf::from(v))
        .filter(|p| p.is_absolute());

    // Identity.
    let euid = rustix::process::geteuid().as_raw();
    let egid = rustix::process::getegid().as_raw();
    let root_mode = euid == 0;
    let (uid, gid) = if root_mode {
        use std::os::unix::fs::MetadataExt;
        match &workspace {
            Some((b, _)) => match std::fs::metadata(b) {
                Ok(m) if m.uid() != 0 => (m.uid(), m.gid()),
                _ => (NOBODY, NOBODY),
            },
            None => (NOBODY, NOBODY),
        }
    } else {
        (euid, egid)
    };
    // As root over a root-owned workspace, the unprivileged uid inside could
    // not write it: a staged workspace gets an idmapped clone of it as the
    // overlay's lower layer, on which root's files appear as the sandbox
    // user's (copied up into the upper dir as that user's). Never for
    // write-through: there the sandbox would own root's files on disk and
    // could chmod one setuid (new files would be root's too).
    let (ws_tree, idmap_helper) = match &workspace {
        Some((b, WorkspaceMode::Staged { .. })) if root_mode && owned_by_root(b) => {
            match syscall::idmapped_tree(&cstr(b.as_os_str().as_bytes())?, uid, gid) {
                Ok((fd, helper)) => (Some(fd), Some(helper)),
                Err(e) => {
                    tracing::warn!(
                        "cannot idmap the root-owned workspace {} ({e}); the sandbox user {uid} can only write what it may",
                        b.display()
                    );
                    (None, None)
                }
            }
        }
        _ => (None, None),
    };
    // The staged overlay is mounted `volatile` (no sync of the whole upper
    // filesystem at unmount; see airlock_fs::volatile_state): close a mount
    // a dead process left open, refuse one a crash left open. Runs over the
    // same workspace share the area but not the overlay's work dir: a run
    // starting while another holds the area's gets one of its own, and
    // only a run holding the area's closes what dead runs left (see
    // airlock_fs::RunWorkDir).
    let mut run_work = None;
    if let Some((_, WorkspaceMode::Staged { upper, work })) = &mut workspace {
        let rw = airlock_fs::RunWorkDir::take(work)
            .map_err(|e| SandboxError::io(format!("taking a work dir in {}", work.display()), e))?;
        let state = airlock_fs::volatile_state(work);
        if state == airlock_fs::VolatileState::EarlierBoot {
            return Err(SandboxError::Layer {
                layer: Layer::Overlay,
                why: format!(
                    "the staged changes in {} were being written when the machine went down and may be incomplete",
                    upper.display()
                ),
                hint: format!(
                    "review them (airlock staged diff), then discard them (airlock staged discard) or accept them as they are by removing {}",
                    work.join("work/incompat").display()
                ),
            });
        }
        if rw.holds_area() {
            let closing =
                |e| SandboxError::io(format!("closing the last mount of {}", work.display()), e);
            if state == airlock_fs::VolatileState::ThisBoot {
                airlock_fs::close_volatile(upper, work, true).map_err(closing)?;
            }
            airlock_fs::close_dead_runs(upper, work).map_err(closing)?;
        }
        airlock_fs::record_boot(work).map_err(|e| {
            SandboxError::io(format!("recording the boot id in {}", work.display()), e)
        })?;
        // The overlay gets this run's work dir; the area's stays known to
        // it, for closing and sweeping.
        *work = rw.path().to_path_buf();
        run_work = Some(rw);
    }

    if root_mode {
        if let Some((_, WorkspaceMode::Staged { upper, work })) = &workspace {
            let area = run_work.as_ref().map(|r| r.area());
            for d in [Some(upper.as_path()), area, Some(work.as_path())]
                .into_iter()
                .flatten()
            {
                use std::os::unix::fs::MetadataExt;
                let owned =
                    std::fs::symlink_metadata(d).is_ok_and(|m| m.uid() == uid && m.gid() == gid);
                if !owned {
                    std::os::unix::fs::lchown(d, Some(uid), Some(gid))
                        .map_err(|e| SandboxError::io(format!("chown {}", d.display()), e))?;
                }
            }
        }
    }

    tracing::debug!(
        us = t0.elapsed().as_micros() as u64,
        "identity and idmap ready"
    );

    // Network.
    let (net_ports, hosts_file) = if spec.allow_net.is_empty() {
        (vec![], None)
    } else {
        let (p, h) = parse_net(&spec.allow_net)?;
        (p, Some(h))
    };
    let with_net = !spec.allow_net.is_empty();

    // Landlock.
    let abi = crate::landlock::kernel_abi();
    let mut ll_setup = None;
    let mut landlock_state = LandlockState::NotEnforced;
    match abi {
        Some(a) => match crate::landlock::create(a, with_net) {
            Ok(s) => {
                landlock_state = if s.missing.is_empty() { LandlockState::Enforced } else { LandlockState::Partial };
                for m in &s.missing {
                    degraded.push((Layer::Landlock, m.clone()));
                }
                if with_net && !s.net && !degraded_ok(Layer::Landlock) {
                    return Err(SandboxError::Layer {
                        layer: Layer::Landlock,
                        why: format!("--allow-net needs Landlock TCP rules (ABI 4), kernel has ABI {a}"),
                        hint: "Linux 6.7 or newer".into(),
                    });
                }
                ll_setup = Some(s);
            }
            Err(why) if degraded_ok(Layer::Landlock) => degraded.push((Layer::Landlock, why)),
            Err(why) => return Err(SandboxError::Layer { layer: Layer::Landlock, why, hint: "a kernel with CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= boot parameter".into() }),
        },
        None if degraded_ok(Layer::Landlock) => degraded.push((Layer::Landlock, "Landlock not enabled in this kernel".into())),
        None => {
            return Err(SandboxError::Layer {
                layer: Layer::Landlock,
                why: "Landlock is not enabled in this kernel".into(),
                hint: "a kernel with CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= boot parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor)".into(),
            })
        }
    }

    tracing::debug!(
        us = t0.elapsed().as_micros() as u64,
        "landlock ruleset created"
    );

    // seccomp.
    let mut seccomp_progs = vec![];
    let mut notify_filter = None;
    let mut seccomp_on = false;
    if !syscall::seccomp_available() {
        if !degraded_ok(Layer::Seccomp) {
            return Err(SandboxError::Layer {
                layer: Layer::Seccomp,
                why: "seccomp is not available".into(),
                hint: "a kernel with CONFIG_SECCOMP_FILTER=y".into(),
            });
        }
        degraded.push((Layer::Seccomp, "seccomp not available".into()));
    } else {
        let p = crate::seccomp::programs(with_net)?;
        if syscall::notif_sizes_ok() {
            seccomp_progs.push(p.deny_notify());
            notify_filter = Some(0);
        } else {
            seccomp_progs.push(p.deny()?);
        }
        seccomp_on = true;
    }

    tracing::debug!(
        us = t0.elapsed().as_micros() as u64,
        "seccomp programs ready"
    );

    // Limits. A cgroup only when there is something for it to limit:
    // joining one costs an RCU grace period on cgroup v1.
    let wants_cgroup = spec.limits.memory.is_some() || spec.limits.pids.is_some();
    // Which cgroup mechanism is usable is found, and the cgroup made, once
    // the child is running (it builds its root meanwhile); without one, the
    // child is told to apply the rlimits that stand in for it.
    let rlimits = crate::limits::base_rlimits(&spec.limits);
    let fallback_rlimits = crate::limits::cgroup_stand_ins(&spec.limits);

    // Root plan. Mount sources are opened by the child at fixed descriptor
    // numbers above everything open now.
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "layers prepared");
    let fd_base = fd_base()?;
    let ws_ref = workspace.as_ref().map(|(b, m)| (b.as_path(), m));
    let plan = mounts::build(&RootInputs {
        workspace: ws_ref,
        allow_read: &allow_read,
        allow_write: &allow_write,
        hidden: &hidden,
        home: home.as_deref(),
        hosts_file,
        protected: Some(&spec.protected),
        fd_base,
        ws_tree: ws_tree.as_ref().map(|f| f.as_raw_fd()),
    })?;
    let mounts::RootPlan {
        ops,
        descs,
        landlock: ll_paths,
        srcs,
        src_clone,
        protect_pending,
    } = plan;

    let landlock = match ll_setup {
        None => None,
        Some(s) => {
            let a = s.abi;
            let mut paths = vec![];
            for (p, class, is_dir) in &ll_paths {
                let mut m = match class {
                    Access::Ro => crate::landlock::read_rights(a),
                    Access::Rw => crate::landlock::all_rights(a),
                    Access::Dev => crate::landlock::dev_rights(a),
                    Access::Proc => crate::landlock::proc_rights(a),
                    Access::ListOnly => 1 << 3,
                };
                if !is_dir {
                    m &= crate::landlock::file_rights(a);
                }
                paths.push((
                    CString::new(p.as_os_str().as_bytes())
                        .map_err(|_| SandboxError::Spec("NUL in path".into()))?,
                    m,
                ));
            }
            let ports = if s.net {
                net_ports
                    .iter()
                    .map(|p| (crate::landlock::NET_CONNECT_TCP, u64::from(*p)))
                    .collect()
            } else {
                vec![]
            };
            Some((
                LandlockPlan {
                    ruleset: s.ruleset,
                    paths,
                    ports,
                    restrict_flags: s.restrict_flags,
                },
                s.scopes,
            ))
        }
    };
    let (landlock, scopes) = match landlock {
        Some((p, s)) => (Some(p), s),
        None => (None, vec![]),
    };

    // Pipes.
    let (sync_rd, sync_wr) =
        syscall::socketpair().map_err(|e| SandboxError::io("socketpair", e))?;
    let (err_rd, err_wr) = syscall::pipe().map_err(|e| SandboxError::io("pipe", e))?;
    let (status_rd, status_wr) = syscall::pipe().map_err(|e| SandboxError::io("pipe", e))?;
    let (lifeline_rd, lifeline_wr) = syscall::pipe().map_err(|e| SandboxError::io("pipe", e))?;
    let net_pair = if with_net {
        None
    } else {
        Some(syscall::socketpair().map_err(|e| SandboxError::io("socketpair", e))?)
    };
    let (notify_parent, notify_child) = if notify_filter.is_some() {
        let (a, b) = syscall::socketpair().map_err(|e| SandboxError::io("socketpair", e))?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };

    // Stdio.
    let mut child_stdio: Vec<OwnedFd> = vec![];
    let mut stdio = [-1 as RawFd; 3];
    let mut out_rd = None;
    let mut err_rd_cap = None;
    let mut cap_max = 0usize;
    if let StdioMode::Capture { max_bytes } = &spec.stdio {
        cap_max = *max_bytes;
        let null: OwnedFd = std::fs::File::open("/dev/null")
            .map_err(|e| SandboxError::io("open /dev/null", e))?
            .into();
        let (o_r, o_w) = syscall::pipe().map_err(|e| SandboxError::io("pipe", e))?;
        let (e_r, e_w) = syscall::pipe().map_err(|e| SandboxError::io("pipe", e))?;
        stdio = [null.as_raw_fd(), o_w.as_raw_fd(), e_w.as_raw_fd()];
        child_stdio.extend([null, o_w, e_w]);
        out_rd = Some(o_r);
        err_rd_cap = Some(e_r);
    }

    // Command lookup and environment.
    let argv0 = &spec.argv[0];
    let exec_paths: Vec<CString> = if argv0.contains('/') {
        vec![cstr(argv0)?]
    } else {
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(crate::env::DEFAULT_PATH);
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| cstr(format!("{d}/{argv0}")))
            .collect::<Result<_, _>>()?
    };
    let argv: Vec<CString> = spec.argv.iter().map(cstr).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;

    let mut plan = ChildPlan {
        srcs,
        src_clone,
        src_base: fd_base,
        sync_rd: sync_rd.as_raw_fd(),
        sync_wr: sync_wr.as_raw_fd(),
        unshare_net: false,
        net_sock: [-1, -1],
        net_stack: vec![],
        lifeline_rd: lifeline_rd.as_raw_fd(),
        err_wr: err_wr.as_raw_fd(),
        status_wr: status_wr.as_raw_fd(),
        work_lock: run_work.as_ref().map_or(-1, |w| w.lock_fd().as_raw_fd()),
        setid: if root_mode { Some((uid, gid)) } else { None },
        ops,
        hostname: CString::from(c"airlock"),
        loopback: !with_net,
        cwd: cstr(cwd.as_os_str().as_bytes())?,
        rlimits,
        fallback_rlimits,
        landlock,
        seccomp: seccomp_progs,
        notify_filter,
        notify_sock: notify_child.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
        exec_paths,
        argv,
        argv_ptrs: vec![],
        envp,
        envp_ptrs: vec![],
        stdio,
        command_stack: Vec::with_capacity(64 * 1024),
        phases: std::ptr::null_mut(),
    };
    plan.seal();
    // `AIRLOCK_LOG=airlock_sandbox::phases=debug`: when each step of the
    // set-up ended, in the parent, init and its helpers.
    let phases = if tracing::enabled!(target: "airlock_sandbox::phases", tracing::Level::DEBUG) {
        syscall::PhaseClock::new().ok()
    } else {
        None
    };
    if let Some(c) = &phases {
        plan.phases = c.raw();
    }
    let phase = |p: Phase| {
        if let Some(c) = &phases {
            c.record(p);
        }
    };

    // The network namespace (the costliest to create) is made by a helper
    // of the child while the child builds the root (see
    // `ChildPlan::unshare_net`), not by clone3.
    let flags = (libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP) as u64;
    let mut namespaces: Vec<String> = ["user", "mount", "pid", "ipc", "uts", "cgroup"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !with_net {
        if let Some((init_end, helper_end)) = &net_pair {
            plan.unshare_net = true;
            plan.net_sock = [init_end.as_raw_fd(), helper_end.as_raw_fd()];
            plan.net_stack = Vec::with_capacity(16 * 1024);
        }
        namespaces.push("net".into());
    }
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "mount plan built");
    // The protected paths and the plan of their placeholders, found before
    // the clone (and sent to init once it runs). Found after it, beside
    // init building its root, the walk lost the parent's CPU to init's
    // network helper on this VM and init waited for it.
    let mut cleanup_placeholders = PlaceholderGuard(vec![]);
    let walked = match (protect_pending, &workspace) {
        (true, Some((ws, mode))) => match mounts::protection(ws, mode, &spec.protected) {
            Ok(mut pr) => {
                cleanup_placeholders = PlaceholderGuard(std::mem::take(&mut pr.placeholders));
                Some(pr)
            }
            Err(SandboxError::Layer {
                layer: Layer::ProtectedPaths,
                why,
                ..
            }) if degraded_ok(Layer::ProtectedPaths) => {
                degraded.push((Layer::ProtectedPaths, why));
                None
            }
            Err(e) => return Err(e),
        },
        _ => None,
    };
    tracing::debug!(
        us = t0.elapsed().as_micros() as u64,
        "protected paths found"
    );
    let start = Instant::now();
    phase(Phase::Clone);
    let (pid, pidfd) = syscall::spawn(flags, &plan).map_err(|e| SandboxError::Namespaces {
        why: format!("clone3 with new user/mount/pid/net/ipc/uts/cgroup namespaces: {e}"),
        hint: userns_hint(),
    })?;
    phase(Phase::Cloned);
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "cloned");
    let pidfd = Arc::new(pidfd);
    // From here on, a failure must kill and reap the child.
    let kill = |pidfd: &Arc<OwnedFd>| {
        let _ = syscall::pidfd_signal(pidfd.as_raw_fd(), libc::SIGKILL);
        let _ = syscall::wait_pidfd(pidfd.as_raw_fd());
    };
    drop(sync_rd);
    drop(lifeline_rd);
    drop(err_wr);
    drop(status_wr);
    drop(notify_child);
    drop(net_pair);
    drop(child_stdio);

    let uid_map = format!("{uid} {uid} 1");
    let mut err_file = std::fs::File::from(err_rd);
    // The child's own report of a failed step, once it has exited.
    let child_failure = |err_file: &mut std::fs::File| {
        let mut buf = vec![];
        let _ = err_file.read_to_end(&mut buf);
        syscall::decode_failure(&buf)
    };
    let setup = (|| -> Result<(), SandboxError> {
        if !root_mode {
            write_file(format!("/proc/{pid}/setgroups"), "deny")?;
        }
        write_file(format!("/proc/{pid}/uid_map"), &format!("{uid_map}\n"))?;
        write_file(format!("/proc/{pid}/gid_map"), &format!("{gid} {gid} 1\n"))?;
        phase(Phase::MapsWritten);
        syscall::send_msg(sync_wr.as_raw_fd(), b"g")
            .map_err(|e| SandboxError::io("starting the sandbox", e))
    })();
    // A child that failed at once left its reason: report that rather than
    // the write it made fail.
    let mut early_failure = None;
    if let Err(e) = setup {
        kill(&pidfd);
        match child_failure(&mut err_file) {
            Some(f) => early_failure = Some(f),
            None => return Err(e),
        }
    }
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "namespaces set up");

    // The protected paths for init: the placeholders to make (`q`), then
    // `w` (init waits for it before mounting the overlay), then the paths to
    // bind read-only (`p`, ended by `P`).
    let mut protected_mounted = vec![];
    if let (true, None, Some(_)) = (protect_pending, &early_failure, &workspace) {
        let sock = sync_wr.as_raw_fd();
        // A child that already failed has closed its end; its report follows.
        phase(Phase::WalkSent);
        if let Some(pr) = walked {
            send_batched(sock, b'q', pr.layer.iter().map(Vec::as_slice));
            let _ = syscall::send_msg(sock, b"w");
            send_batched(sock, b'p', pr.inside.iter().map(|p| p.as_bytes_with_nul()));
            let _ = syscall::send_msg(sock, b"P");
            protected_mounted = pr.rels;
        } else {
            let _ = syscall::send_msg(sock, b"w");
            let _ = syscall::send_msg(sock, b"P");
        }
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "protected paths sent");
    }

    // While the child builds its root: name it as the holder of the
    // overlay's work dir (see RunWorkDir::record_holder), note what the
    // upper dir holds (before the command can write to it), and make the
    // run's cgroup.
    if let (Some(rw), None) = (&run_work, &early_failure) {
        if let Err(e) = rw.record_holder(pid, pidfd.as_fd()) {
            tracing::debug!("recording the sandbox in {}: {e}", rw.area().display());
        }
    }
    let volatile = match &workspace {
        Some((_, WorkspaceMode::Staged { upper, .. })) if early_failure.is_none() => {
            Some(upper_state(upper))
        }
        _ => None,
    };
    let mut cgroup = None;
    let mut join_fds: Vec<std::fs::File> = vec![];
    let mut leave_fds: Vec<std::fs::File> = vec![];
    if wants_cgroup && early_failure.is_none() {
        match RunCgroup::create(&crate::limits::next_run_name(), &spec.limits) {
            Ok(cg) => {
                // cgroup v1: the child moves itself (see join_limits), and
                // back out once the sandbox is empty, when it can (see
                // Ended::finish_leaving); v2: moved from here.
                let joined = match cg.self_join_files() {
                    Ok(Some(files)) => {
                        leave_fds = cg.self_leave_files().unwrap_or_else(|why| {
                            tracing::debug!("init cannot leave the run's cgroup: {why}");
                            vec![]
                        });
                        join_fds = files;
                        Ok(())
                    }
                    Ok(None) => cg.add(pid),
                    Err(why) => Err(why),
                };
                if let Err(why) = joined {
                    kill(&pidfd);
                    return Err(SandboxError::Layer {
                        layer: Layer::Limits,
                        why,
                        hint: "run as root or delegate a cgroup v2 subtree".into(),
                    });
                }
                cgroup = Some(cg);
            }
            Err(e) => tracing::debug!("cgroup unavailable ({e}); using rlimits"),
        }
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "cgroup made");
    }
    if early_failure.is_none() {
        let tag = if wants_cgroup && cgroup.is_none() {
            b'r'
        } else if !leave_fds.is_empty() && leave_fds.len() == join_fds.len() {
            b'C'
        } else {
            leave_fds.clear();
            b'c'
        };
        let fds: Vec<RawFd> = join_fds
            .iter()
            .chain(&leave_fds)
            .map(|f| f.as_raw_fd())
            .collect();
        // A child that already failed has closed its end; its report follows.
        phase(Phase::LimitsSent);
        let _ = syscall::send_fds(sync_wr.as_raw_fd(), tag, &fds);
    }
    drop(join_fds);
    drop(leave_fds);
    drop(sync_wr);
    if let Some((step, errno)) = early_failure.or_else(|| child_failure(&mut err_file)) {
        kill(&pidfd);
        let source = std::io::Error::from_raw_os_error(errno);
        let what = match step.checked_sub(syscall::STEP_PROTECT) {
            Some(k) => format!(
                "binding the protected path {} read-only",
                protected_mounted
                    .get(k as usize)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            None => failure_message(step, &descs),
        };
        let is_overlay =
            (step as usize) < descs.len() && descs[step as usize].starts_with("mount overlay");
        return Err(if is_overlay {
            SandboxError::Layer {
                layer: Layer::Overlay,
                why: format!("{what}: {source}"),
                hint: "Linux 5.11+ (overlayfs in user namespaces) with the upper dir on a filesystem supporting user xattrs (ext4, xfs, btrfs, tmpfs 6.6+)".into(),
            }
        } else if (syscall::STEP_SRC..syscall::STEP_PROTECT).contains(&step) {
            let path = plan
                .srcs
                .get((step - syscall::STEP_SRC) as usize)
                .map(|c| c.to_string_lossy().to_string())
                .unwrap_or_default();
            SandboxError::Setup { step: format!("opening {path} (it must be readable by the sandbox user and contain no symlinks)"), error: source }
        } else if step == syscall::STEP_NETNS {
            SandboxError::Namespaces {
                why: format!("creating or joining a new network namespace: {source}"),
                hint: userns_hint(),
            }
        } else if step == syscall::STEP_EXEC {
            SandboxError::Exec {
                cmd: spec.argv[0].clone(),
                error: source,
            }
        } else if (syscall::STEP_LANDLOCK_OPEN..=syscall::STEP_LANDLOCK_RESTRICT).contains(&step) {
            SandboxError::Layer {
                layer: Layer::Landlock,
                why: format!("{what}: {source}"),
                hint: "a kernel with Landlock enabled".into(),
            }
        } else if step == syscall::STEP_SECCOMP {
            SandboxError::Layer {
                layer: Layer::Seccomp,
                why: format!("{what}: {source}"),
                hint: "a kernel with CONFIG_SECCOMP_FILTER=y".into(),
            }
        } else {
            SandboxError::Setup {
                step: what,
                error: source,
            }
        });
    }

    phase(Phase::ExecSeen);
    tracing::debug!(us = t0.elapsed().as_micros() as u64, "command executed");
    // Seccomp notifications.
    let notify = match notify_parent {
        Some(sock) => match syscall::recv_fd(sock.as_raw_fd()) {
            Ok(Some(fd)) => Some(fd),
            _ => None,
        },
        None => None,
    };
    let reader = |fd: Option<OwnedFd>| -> Option<JoinHandle<Vec<u8>>> {
        fd.map(|fd| {
            std::thread::spawn(move || {
                let mut f = std::fs::File::from(fd);
                let mut kept = vec![];
                let mut chunk = [0u8; 8192];
                loop {
                    match f.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = cap_max.saturating_sub(kept.len());
                            kept.extend_from_slice(&chunk[..n.min(room)]);
                        }
                    }
                }
                kept
            })
        })
    };
    let out = reader(out_rd);
    let err = reader(err_rd_cap);

    let report = LayerReport {
        namespaces,
        uid_map,
        landlock_abi: abi,
        landlock: landlock_state,
        landlock_scopes: scopes,
        seccomp: seccomp_on,
        seccomp_notify: notify.is_some(),
        limits_mechanism: if spec.limits == crate::Limits::default() {
            "none".into()
        } else {
            cgroup
                .as_ref()
                .map_or(Mechanism::Rlimit, |c| c.mechanism())
                .as_str()
                .into()
        },
        workspace: match &workspace {
            None => "none".into(),
            Some((_, WorkspaceMode::Staged { .. })) if ws_tree.is_some() => {
                "staged-overlay+idmap".into()
            }
            Some((_, WorkspaceMode::Staged { .. })) => "staged-overlay".into(),
            Some((_, WorkspaceMode::WriteThrough)) => "write-through".into(),
            Some((_, WorkspaceMode::ReadOnly)) => "read-only".into(),
        },
        protected_mounted,
        network: if with_net {
            format!(
                "host-tcp-ports:{}",
                net_ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        } else {
            "none".into()
        },
        degraded,
    };
    let upper = match &workspace {
        Some((_, WorkspaceMode::Staged { upper, .. })) => Some(upper.clone()),
        _ => None,
    };
    // Remove earlier runs' closed overlay work dirs (see
    // airlock_fs::close_volatile) now that the command runs. Not while
    // init builds the root: unlinking on the staging filesystem beside
    // init's mounts slowed them by more than the removal took (0.3 ms and
    // more of 1.5 ms on this VM), and the sandbox does not need it.
    if let Some(rw) = &run_work {
        airlock_fs::sweep_closed(rw.area());
    }
    // Likewise the cgroups of earlier runs that were killed before they
    // could remove them.
    if let Some(cg) = &cgroup {
        cg.sweep_stale_siblings();
    }
    Ok(Running {
        pid,
        pidfd,
        status_rd,
        _lifeline: lifeline_wr,
        start,
        t0,
        cgroup,
        report,
        placeholders: cleanup_placeholders.take(),
        limits: spec.limits.clone(),
        upper,
        out,
        err,
        notify,
        volatile,
        run_work,
        _idmap_helper: idmap_helper,
        phases,
        tally: Tally {
            net_ports: if with_net {
                Some(net_ports.clone())
            } else {
                None
            },
            ..Tally::default()
        },
        done: false,
    })
}

/// First free descriptor number well above the ones open now, below the
/// soft RLIMIT_NOFILE.
fn fd_base() -> Result<i32, SandboxError> {
    let max_open = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| SandboxError::io("list /proc/self/fd", e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .max()
        .unwrap_or(2);
    let base = max_open + 128;
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    if (base as u64) + 64 > soft {
        return Err(SandboxError::Spec(format!(
            "too many open descriptors ({max_open}) for RLIMIT_NOFILE {soft}"
        )));
    }
    Ok(base)
}

/// Send `items` to the child in as few `tag` messages as fit
/// [`syscall::PROTECT_MSG_MAX`] (none when there are none). A child that
/// has failed has closed its end; its report follows.
fn send_batched<'a>(sock: i32, tag: u8, items: impl Iterator<Item = &'a [u8]>) {
    let mut msg = vec![tag];
    for bytes in items {
        if msg.len() > 1 && msg.len() + bytes.len() > syscall::PROTECT_MSG_MAX {
            let _ = syscall::send_msg(sock, &msg);
            msg.truncate(1);
        }
        msg.extend_from_slice(bytes);
    }
    if msg.len() > 1 {
        let _ = syscall::send_msg(sock, &msg);
    }
}

struct PlaceholderGuard(Vec<PathBuf>);
impl PlaceholderGuard {
    fn take(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.0)
    }
}
impl Drop for PlaceholderGuard {
    fn drop(&mut self) {
        mounts::remove_placeholders(&self.0);
    }
}

fn family_name(f: u64) -> String {
    match f as i32 {
        libc::AF_PACKET => "AF_PACKET".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        libc::AF_BLUETOOTH => "AF_BLUETOOTH".into(),
        libc::AF_ALG => "AF_ALG".into(),
        libc::AF_INET => "AF_INET/UDP".into(),
        libc::AF_INET6 => "AF_INET6/UDP".into(),
        n => format!("family {n}"),
    }
}

/// Describe one blocked call.
fn describe(n: &syscall::SeccompNotif) -> String {
    let nr = i64::from(n.data.nr);
    if n.data.arch != native_arch() {
        return format!("foreign-ABI syscall {nr}");
    }
    if nr & 0x4000_0000 != 0 {
        return format!("x32 syscall {}", nr & !0x4000_0000);
    }
    match nr {
        libc::SYS_socket | libc::SYS_socketpair => format!(
            "{}({})",
            crate::seccomp::syscall_name(nr),
            family_name(n.data.args[0] & 0xffff_ffff)
        ),
        libc::SYS_ioctl => {
            let req = n.data.args[1] & 0xffff_ffff;
            let name = crate::seccomp::DENIED_IOCTLS
                .iter()
                .find(|(r, _)| *r == req)
                .map(|(_, s)| *s)
                .unwrap_or("?");
            format!("ioctl({name})")
        }
        libc::SYS_clone | libc::SYS_unshare => {
            let names: Vec<&str> = crate::seccomp::NAMESPACE_FLAGS
                .iter()
                .filter(|(f, _)| n.data.args[0] & f != 0)
                .map(|(_, s)| *s)
                .collect();
            format!(
                "{}({})",
                if nr == libc::SYS_clone {
                    "clone"
                } else {
                    "unshare"
                },
                names.join("|")
            )
        }
        _ => crate::seccomp::syscall_name(nr),
    }
}

pub(crate) fn native_arch() -> u32 {
    if cfg!(target_arch = "x86_64") {
        62 | 0x8000_0000 | 0x4000_0000
    } else if cfg!(target_arch = "aarch64") {
        183 | 0x8000_0000 | 0x4000_0000
    } else {
        0
    }
}

/// Blocked calls, counted in the order first seen.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<(String, String), (usize, u32)>,
    /// TCP ports the sandbox may reach; `None`: no network at all.
    net_ports: Option<Vec<u16>>,
}

impl Tally {
    /// Answer one pending seccomp notification with EPERM and count it.
    fn serve(&mut self, fd: RawFd) {
        // An error is EINTR, or ENOENT: the caller died before we answered.
        if let Ok(n) = syscall::notif_recv(fd) {
            if n.data.arch == native_arch() && i64::from(n.data.nr) == libc::SYS_connect {
                // Sent to us to be recorded, not decided: read the address,
                // let the call go on, and count it if the sandbox refuses it.
                let dest = read_sockaddr(&n).filter(|_| syscall::notif_id_valid(fd, n.id));
                let _ = syscall::notif_continue(fd, n.id);
                if let Some((ip, port)) = dest {
                    if self.refused(ip, port) {
                        let what = match ip {
                            std::net::IpAddr::V4(a) => format!("connect {a}:{port}"),
                            std::net::IpAddr::V6(a) => format!("connect [{a}]:{port}"),
                        };
                        self.count("network", what);
                    }
                }
                return;
            }
            let what = describe(&n);
            let _ = syscall::notif_deny(fd, n.id, libc::EPERM);
            self.count("syscall", what);
        }
    }

    fn count(&mut self, kind: &str, what: String) {
        let next = self.counts.len();
        self.counts
            .entry((kind.to_string(), what))
            .or_insert((next, 0))
            .1 += 1;
    }

    /// Whether the sandbox refuses a TCP/UDP connection to `ip:port`: with
    /// no network, anything but loopback (the sandbox's own); with a grant,
    /// ports outside it (Landlock).
    fn refused(&self, ip: std::net::IpAddr, port: u16) -> bool {
        let loopback = match ip {
            std::net::IpAddr::V4(a) => a.is_loopback(),
            std::net::IpAddr::V6(a) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback())
            }
        };
        match &self.net_ports {
            None => !loopback,
            Some(ports) => !ports.contains(&port),
        }
    }

    fn violations(&self) -> Vec<Violation> {
        let mut v: Vec<(usize, Violation)> = self
            .counts
            .iter()
            .map(|((kind, what), (o, count))| {
                (
                    *o,
                    Violation {
                        kind: kind.clone(),
                        what: what.clone(),
                        count: *count,
                    },
                )
            })
            .collect();
        v.sort_by_key(|(o, _)| *o);
        v.into_iter().map(|(_, x)| x).collect()
    }
}

/// The IPv4/IPv6 destination of a notified `connect`, read from the
/// caller's memory (`None` for other families or when it cannot be read).
fn read_sockaddr(n: &syscall::SeccompNotif) -> Option<(std::net::IpAddr, u16)> {
    use std::os::unix::fs::FileExt;
    let len = (n.data.args[2] as usize).min(28);
    if len < 8 {
        return None;
    }
    let mem = std::fs::File::open(format!("/proc/{}/mem", n.pid)).ok()?;
    let mut b = [0u8; 28];
    mem.read_exact_at(&mut b[..len], n.data.args[1]).ok()?;
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET => Some((std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]).into(), port)),
        libc::AF_INET6 if len >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            Some((std::net::Ipv6Addr::from(a).into(), port))
        }
        _ => None,
    }
}

/// Bytes in use on the filesystem holding `p` (0 when unknown).
fn fs_used(p: &Path) -> u64 {
    match rustix::fs::statvfs(p) {
        Ok(s) => s
            .f_blocks
            .saturating_sub(s.f_bfree)
            .saturating_mul(s.f_frsize),
        Err(_) => 0,
    }
}

/// Say why a run whose staged changes cannot be measured is stopped as
/// over the disk cap.
fn unmeasured(upper: &Path) {
    tracing::warn!(
        "a directory of the staged changes in {} cannot be read (the command made it unreadable); with the filesystem grown past the disk cap, the run counts as over it",
        upper.display()
    );
}

/// The bytes allocated to the upper dir, or `None` if part of it cannot be
/// read (see [`upper_state`]). No snapshot is built.
fn upper_size(p: &Path) -> Option<u64> {
    match walk_upper(p, None) {
        (true, bytes) => Some(bytes),
        (false, _) => None,
    }
}

/// Every entry of an upper dir with its inode, size, mode, owner, link
/// count and mtime, sorted: equal before and after a run exactly when the
/// run changed no content there (writes move the mtime; creating,
/// deleting or renaming changes the set of entries or their inodes; chmod
/// and chown change the mode or owner). Not the ctime: overlayfs itself
/// sets its bookkeeping xattrs (`user.overlay.origin`, `impure`, `uuid`)
/// when it mounts and looks up merged directories, which moves ctimes on
/// every run without changing anything a crash could cut short.
///
/// Entries are named by a keyed hash of their path ([`path_key`]), not the
/// path itself: a command may nest directories thousands of levels deep,
/// and their paths would take memory growing with the square of the depth.
type UpperState = Vec<(u64, u64, u64, u32, u32, u32, u64, i64, i64)>;

/// The key of the entry `name` in the directory whose key is `parent` (the
/// upper dir itself: 0), with keys random to this process, so that a
/// command cannot make two paths collide.
fn path_key(parent: u64, name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one((parent, name))
}

/// The upper dir's [`UpperState`] and the bytes allocated to it (what the
/// disk cap counts), from one walk of any width and depth
/// ([`airlock_fs::walk_dirs`]), each entry looked up relative to its
/// directory's descriptor (a path walk from `/` per entry cost twice as
/// much on large upper dirs).
///
/// `None` instead of the state when a directory cannot be read: running
/// unprivileged, a command can make a directory it staged unreadable to
/// its owner (mode 300) and go on writing in it. What it holds can then be
/// neither compared nor counted, so the run counts as changed and, if the
/// filesystem grew past the disk cap, as over it.
fn upper_state(p: &Path) -> (Option<UpperState>, u64) {
    let mut v = UpperState::new();
    match walk_upper(p, Some(&mut v)) {
        (true, bytes) => {
            v.sort();
            (Some(v), bytes)
        }
        (false, bytes) => (None, bytes),
    }
}

/// Walk the upper dir: the bytes allocated to it, whether every directory
/// could be read, and, given `v`, its entries (unsorted).
fn walk_upper(p: &Path, mut v: Option<&mut UpperState>) -> (bool, u64) {
    use rustix::fs::{openat, Mode, OFlags, CWD};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut bytes = 0u64;
    let Ok(root) = openat(CWD, p, flags, Mode::empty()) else {
        return (false, 0);
    };
    let complete = std::cell::Cell::new(true);
    if let Ok(st) = rustix::fs::fstat(&root) {
        push_entry(v.as_deref_mut(), &mut bytes, 0, &st);
    }
    let walked = airlock_fs::walk_dirs(
        root,
        0,
        |fd, _, key| {
            Ok(upper_level(
                fd,
                key,
                v.as_deref_mut(),
                &mut bytes,
                &complete,
            ))
        },
        |rel, e| {
            // Removed meanwhile (the command is running): nothing to count.
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!("walking the upper dir at {}: {e}", rel.display());
                complete.set(false);
            }
            Ok::<(), ()>(())
        },
    );
    (walked.is_ok() && complete.get(), bytes)
}

/// Count the entries of the directory `fd` (whose key is `dir`) and add
/// them to `v` if given; return its subdirectories with their keys.
fn upper_level(
    fd: &OwnedFd,
    dir: u64,
    mut v: Option<&mut UpperState>,
    bytes: &mut u64,
    complete: &std::cell::Cell<bool>,
) -> Vec<(std::ffi::OsString, u64)> {
    use rustix::fs::{statat, AtFlags, Dir, FileType};
    let mut subdirs = vec![];
    let Ok(mut d) = Dir::read_from(fd) else {
        complete.set(false);
        return subdirs;
    };
    loop {
        let e = match d.read() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(_)) => {
                complete.set(false);
                break;
            }
        };
        let name = e.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = match statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed meanwhile (the command is running).
            Err(rustix::io::Errno::NOENT) => continue,
            Err(_) => {
                complete.set(false);
                continue;
            }
        };
        let key = path_key(dir, name.to_bytes());
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let name = std::ffi::OsStr::from_bytes(name.to_bytes());
            subdirs.push((name.to_owned(), key));
        }
        push_entry(v.as_deref_mut(), bytes, key, &st);
    }
    subdirs
}

fn push_entry(v: Option<&mut UpperState>, bytes: &mut u64, key: u64, st: &rustix::fs::Stat) {
    *bytes = bytes.saturating_add((st.st_blocks as u64).saturating_mul(512));
    let Some(v) = v else { return };
    v.push((
        key,
        st.st_ino,
        st.st_size as u64,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        #[allow(clippy::useless_conversion)] // u32 on some architectures
        u64::from(st.st_nlink),
        st.st_mtime,
        st.st_mtime_nsec as i64,
    ));
}

impl Running {
    /// After the sandbox is gone: sync the staged overlay's upper
    /// filesystem if the run `changed` the upper dir, then remove the
    /// volatile marker (see `airlock_fs::volatile_state`). A failure keeps
    /// the marker; the next run closes it (or, after a crash, refuses).
    fn close_overlay(&mut self, changed: bool) {
        if let (Some(u), Some(rw)) = (&self.upper, self.run_work.take()) {
            if let Err(e) = rw.close(u, changed) {
                tracing::warn!("closing the staged overlay of {}: {e}", u.display());
            }
        }
    }

    /// Log the set-up timings, when asked for (see `phases`).
    fn log_phases(&mut self) {
        if let Some(c) = self.phases.take() {
            let line: Vec<String> = c
                .read()
                .iter()
                .map(|(name, us)| format!("{name}={us}"))
                .collect();
            tracing::debug!(
                target: "airlock_sandbox::phases",
                "set-up phases, µs after clone3: {}",
                line.join(" ")
            );
        }
    }

    /// Host pid of the sandbox's init process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle to signal the command while another thread waits.
    pub fn signaller(&self) -> Signaller {
        Signaller {
            pidfd: self.pidfd.clone(),
        }
    }

    /// What is applied (before the command finishes).
    pub fn report(&self) -> &LayerReport {
        &self.report
    }

    /// Wait for the command (enforcing the timeout and the disk limit, and
    /// answering its blocked system calls), collect what happened and clean
    /// up. Call it promptly after [`spawn`]: a denied system call waits for
    /// its answer until then.
    pub fn wait(self) -> Result<Outcome, SandboxError> {
        Ok(self.end(None)?.finish())
    }

    /// Like [`Running::wait`], and forward the `signals` received by this
    /// process (those pending since they were blocked included) to the
    /// command instead of letting them act on the caller. Call it from the
    /// thread that blocked them.
    pub fn wait_forwarding(self, signals: &ForwardedSignals) -> Result<Outcome, SandboxError> {
        Ok(self.end_forwarding(signals)?.finish())
    }

    /// Like [`Running::wait_forwarding`], but return as soon as the command
    /// has ended: every process of the sandbox is dead and reaped and the
    /// outcome is known, while the kernel may still be tearing down the
    /// sandbox's namespaces and mounts (about 0.5 ms here). Work that needs
    /// nothing from the sandbox, such as listing the staged changes, can
    /// run meanwhile; [`Ended::finish`] (or dropping the [`Ended`]) then
    /// waits for the teardown and cleans up.
    pub fn end_forwarding(self, signals: &ForwardedSignals) -> Result<Ended, SandboxError> {
        self.end(Some(&signals.tap))
    }

    fn end(mut self, tap: Option<&syscall::SignalTap>) -> Result<Ended, SandboxError> {
        let deadline = self.limits.timeout.map(|t| self.start + t);
        // The disk cap: statvfs of the upper dir's filesystem is cheap and
        // counts dirty (not yet written) data, so it is checked every 5 ms;
        // when the filesystem grew by more than the cap since the last
        // baseline, the upper dir itself is measured.
        // (A staged workspace has both an upper dir and its state.)
        let mut disk_watch = match (&self.upper, &self.volatile, self.limits.disk) {
            (Some(u), Some((_, bytes)), Some(max)) => {
                let base = fs_used(u).saturating_sub(*bytes);
                Some((u.clone(), max, base))
            }
            _ => None,
        };
        let mut timed_out = false;
        let mut disk_hit = false;
        // Whether init said the command ended (its status is waiting in
        // the pipe, or init died without sending it).
        let mut told = false;
        let raw = self.pidfd.as_raw_fd();
        let mut fds = vec![raw, self.status_rd.as_raw_fd()];
        let notify_at = self.notify.as_ref().map(|n| {
            fds.push(n.as_raw_fd());
            fds.len() - 1
        });
        let tap_at = tap.map(|t| {
            fds.push(t.raw());
            fds.len() - 1
        });
        loop {
            let now = Instant::now();
            let mut tick: i32 = -1;
            if let Some(d) = deadline {
                if now >= d {
                    timed_out = true;
                    let _ = syscall::pidfd_signal(raw, libc::SIGKILL);
                    break;
                }
                tick = (d - now).as_millis().min(i32::MAX as u128) as i32 + 1;
            }
            if disk_watch.is_some() {
                tick = if tick < 0 { 5 } else { tick.min(5) };
            }
            match syscall::poll_revents(&fds, tick) {
                Ok(r) if r[1] != 0 => {
                    told = true;
                    break;
                }
                Ok(r) if r[0] != 0 => break,
                Ok(r) => {
                    if let (Some(i), Some(n)) = (notify_at, &self.notify) {
                        if r[i] & libc::POLLIN != 0 {
                            self.tally.serve(n.as_raw_fd());
                        } else if r[i] & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                            // No task uses the filter any more (the sandbox
                            // is exiting): the listener stays readable as
                            // hung up, and polling it again would spin
                            // while init tears the sandbox down. poll
                            // ignores a negative descriptor.
                            fds[i] = -1;
                        }
                    }
                    if let (Some(i), Some(t)) = (tap_at, tap) {
                        if r[i] != 0 {
                            while let Some(sig) = t.next() {
                                let _ = syscall::pidfd_signal(raw, sig);
                            }
                        }
                    }
                }
                Err(e) => return Err(SandboxError::io("waiting for the sandbox", e)),
            }
            if let Some((u, max, base)) = &mut disk_watch {
                let used = fs_used(u);
                if used.saturating_sub(*base) > *max {
                    match upper_size(u) {
                        Some(size) if size <= *max => {
                            // Someone else wrote to the filesystem: new
                            // baseline.
                            *base = used.saturating_sub(size);
                        }
                        size => {
                            if size.is_none() {
                                unmeasured(u);
                            }
                            disk_hit = true;
                            let _ = syscall::pidfd_signal(raw, libc::SIGKILL);
                            break;
                        }
                    }
                }
            }
        }
        // Init sends its report only once it has killed and reaped every
        // other process of the sandbox. Without a report (init died, was
        // killed for a limit, or hung up), reaping init is what makes sure
        // of that: its exit kills the rest, and it is reaped only after.
        let report = if told {
            read_end(&self.status_rd, true)
        } else {
            None
        };
        let end = match report {
            Some(report) => InitEnd::Reported(report),
            None => {
                let r = syscall::wait_pidfd(raw)
                    .map_err(|e| SandboxError::io("reaping the sandbox", e))?;
                // Sent just before init died or was killed?
                InitEnd::Reaped(r, read_end(&self.status_rd, false))
            }
        };
        if let Some(c) = &self.phases {
            c.record(Phase::Ended);
        }
        // One walk of the upper dir now serves both the disk cap and the
        // question whether the run changed anything there.
        let after = self.upper.as_deref().map(upper_state);
        // The watch above looks every 5 ms; a command that passes the cap and
        // exits within one interval (its writer killed by SIGXFSZ, the shell
        // around it exiting 0) would slip through. Look once more at the end.
        if let (false, Some((u, max, base)), Some((state, bytes))) =
            (disk_hit || timed_out, &disk_watch, &after)
        {
            disk_hit = bytes > max
                || (state.is_none() && fs_used(u).saturating_sub(*base) > *max && {
                    unmeasured(u);
                    true
                });
        }
        tracing::debug!(us = self.t0.elapsed().as_micros() as u64, "ended");
        let duration = self.start.elapsed();
        let stats = self.cgroup.as_ref().map(|c| c.stats()).unwrap_or_default();
        // Only the upper dir itself (key 0) was found in it.
        let nothing_staged =
            matches!(&after, Some((Some(entries), _)) if entries.iter().all(|e| e.0 == 0));
        let changed = match (after, &self.volatile) {
            // Part of the upper dir unreadable, before or after: changed.
            (Some((None, _)), Some(_)) | (Some(_), Some((None, _))) => true,
            (Some((Some(after), _)), Some((Some(before), _))) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let first = after.iter().zip(before.iter()).find(|(a, b)| a != b);
                    tracing::debug!(
                        ?first,
                        before = before.len(),
                        after = after.len(),
                        "upper dir compared"
                    );
                }
                after != *before
            }
            _ => false,
        };

        // What the sandbox's processes used: init's count of the children
        // it reaped, or (init reaped) init and its children.
        let (cpu_us, maxrss_kib) = match &end {
            InitEnd::Reported(e) => (e.cpu_us, e.maxrss_kib),
            InitEnd::Reaped(r, _) => syscall::EndReport::usage(&r.rusage),
        };
        let cpu_used = Duration::from_secs(cpu_us / 1_000_000);
        let kind = if timed_out {
            ExitKind::Timeout
        } else if disk_hit {
            ExitKind::DiskLimit
        } else if stats.oom_killed {
            ExitKind::MemoryLimit
        } else {
            let status = match &end {
                InitEnd::Reported(e) | InitEnd::Reaped(_, Some(e)) => Some(e.status),
                InitEnd::Reaped(_, None) => None,
            };
            match status {
                Some(s) if libc::WIFEXITED(s) => {
                    let c = libc::WEXITSTATUS(s);
                    if c != 0 && stats.pids_hit {
                        ExitKind::PidsLimit
                    } else {
                        ExitKind::Exited(c)
                    }
                }
                Some(s) if libc::WIFSIGNALED(s) => {
                    let sig = libc::WTERMSIG(s);
                    match sig {
                        libc::SIGXCPU => ExitKind::CpuLimit,
                        libc::SIGKILL if self.limits.cpu_time.is_some_and(|c| cpu_used >= c) => {
                            ExitKind::CpuLimit
                        }
                        libc::SIGXFSZ => ExitKind::DiskLimit,
                        _ if stats.pids_hit => ExitKind::PidsLimit,
                        _ => ExitKind::Signaled(sig),
                    }
                }
                _ => match &end {
                    InitEnd::Reaped(r, _)
                        if r.code == libc::CLD_KILLED || r.code == libc::CLD_DUMPED =>
                    {
                        ExitKind::Signaled(r.status)
                    }
                    InitEnd::Reaped(r, _) => ExitKind::Exited(r.status),
                    // Init reports only what waitpid gave it without
                    // WUNTRACED: an exit or a signal, matched above.
                    InitEnd::Reported(_) => ExitKind::Exited(125),
                },
            }
        };
        let violations = self.tally.violations();
        let stdout = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let peak_memory = stats.peak_memory.or(Some(maxrss_kib * 1024));
        let outcome = Outcome {
            status: kind,
            duration,
            peak_memory,
            report: self.report.clone(),
            violations,
            stdout,
            stderr,
            nothing_staged,
        };
        Ok(Ended {
            outcome: Some(outcome),
            run: self,
            reaped: matches!(end, InitEnd::Reaped(..)),
            changed,
        })
    }
}

/// How [`Running`] learnt that the sandbox ended.
enum InitEnd {
    /// Init's report; init may still be exiting.
    Reported(syscall::EndReport),
    /// Init reaped: it sent no report (it died, was killed for a limit, or
    /// hung up), or one just before.
    Reaped(syscall::Reaped, Option<syscall::EndReport>),
}

/// Read init's [`syscall::EndReport`] from the status pipe: `wait` until it
/// is sent or every writer is gone, else only if it is there now.
fn read_end(status: &OwnedFd, wait: bool) -> Option<syscall::EndReport> {
    if !wait
        && syscall::poll_revents(&[status.as_raw_fd()], 0)
            .map(|r| r[0] & libc::POLLIN == 0)
            .unwrap_or(true)
    {
        return None;
    }
    let mut b = [0u8; syscall::EndReport::LEN];
    let mut f = std::fs::File::from(status.try_clone().ok()?);
    f.read_exact(&mut b).ok()?;
    Some(syscall::EndReport::decode(&b))
}

/// A sandbox whose command has ended (see [`Running::end_forwarding`]):
/// nothing it ran is left and its [`Outcome`] is known. Its init may still
/// be exiting; [`Ended::finish`], or dropping this, waits for that, removes
/// the run's cgroup and closes the staged overlay.
pub struct Ended {
    outcome: Option<Outcome>,
    run: Running,
    reaped: bool,
    changed: bool,
}

impl Ended {
    /// How the command ended.
    pub fn outcome(&self) -> &Outcome {
        self.outcome
            .as_ref()
            .expect("the outcome is taken only by finish")
    }

    /// Wait for the sandbox to be gone and clean up after it.
    pub fn finish(mut self) -> Outcome {
        self.close();
        self.outcome
            .take()
            .expect("the outcome is taken only by finish")
    }

    /// Like [`Ended::finish`], for a caller that exits right after (the
    /// `airlock run` front): clean up what is the caller's to clean, the
    /// run's cgroup and the staged overlay's work dir, but do not wait for
    /// the kernel's teardown of init's namespaces and mounts (about 0.5 ms
    /// here; bwrap does not wait for it either).
    ///
    /// - Init left the run's cgroup before it reported, so the cgroup is
    ///   removed now.
    /// - Init holds the overlay work dir's lock until it exits, and is named
    ///   as its holder (see `airlock_fs::RunWorkDir`), so a later run over
    ///   the same area waits for that exit (by when, in every probe here,
    ///   the overlay was unmounted) instead of mounting beside it.
    /// - Init, already exiting, is reaped by whoever adopts it once the
    ///   caller has exited: its subreaper, or pid 1.
    ///
    /// Falls back to [`Ended::finish`] when something must wait for init:
    /// it was reaped already, or is still in the cgroup (cgroup v2, where
    /// the parent moved it in), or the run made placeholders in a
    /// write-through workspace, which are mount points in init's namespace
    /// until it is gone.
    pub fn finish_leaving(mut self) -> Outcome {
        let run = &mut self.run;
        let leave = !run.done
            && !self.reaped
            && run.placeholders.is_empty()
            && run.cgroup.as_mut().is_none_or(|c| c.remove_if_empty());
        if leave {
            tracing::debug!(us = run.t0.elapsed().as_micros() as u64, "left to exit");
            run.log_phases();
            run.cgroup = None;
            run.close_overlay(self.changed);
            run.done = true;
        }
        self.finish()
    }

    fn close(&mut self) {
        let run = &mut self.run;
        if run.done {
            return;
        }
        if !self.reaped {
            // Init sent its report and exits: this waits for the kernel's
            // teardown of what it held, not for anything of the command's.
            if let Err(e) = syscall::wait_pidfd(run.pidfd.as_raw_fd()) {
                tracing::warn!("reaping the sandbox: {e}");
            }
        }
        tracing::debug!(us = run.t0.elapsed().as_micros() as u64, "reaped");
        if let Some(c) = &run.phases {
            c.record(Phase::Reaped);
        }
        run.log_phases();
        if let Some(mut cg) = run.cgroup.take() {
            if let Err(e) = cg.remove() {
                tracing::warn!("cgroup cleanup: {e}");
            }
        }
        tracing::debug!(us = run.t0.elapsed().as_micros() as u64, "cgroup removed");
        mounts::remove_placeholders(&run.placeholders);
        run.close_overlay(self.changed);
        tracing::debug!(
            us = run.t0.elapsed().as_micros() as u64,
            changed = self.changed,
            "overlay closed"
        );
        run.done = true;
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            // Dropped without wait(): kill and reap so nothing outlives us.
            let _ = syscall::pidfd_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
            let _ = syscall::wait_pidfd(self.pidfd.as_raw_fd());
            mounts::remove_placeholders(&self.placeholders);
            self.close_overlay(true);
        }
    }
}
