//! Airlock's Linux sandbox.
//!
//! [`run`] executes one command in a sandbox built in-process: a single
//! `clone3` with user, mount, pid, net, ipc, uts and cgroup namespaces; a
//! minimal root assembled with `pivot_root` (read-only system directories,
//! fresh `/proc`, a handful of device nodes, private `/tmp` and `$HOME`, the
//! workspace through overlayfs onto a staging upper dir); Landlock over the
//! same grants; a seccomp deny list; cgroup or rlimit limits; a wall-clock
//! timeout. The caller says what is *required* in a [`SandboxSpec`]; the
//! [`Outcome`]'s [`LayerReport`] says what was enforced. A layer that cannot
//! be applied is an error ([`SandboxError::Layer`]) unless the caller listed
//! it in [`SandboxSpec::allow_degraded`].
//!
//! ```no_run
//! use airlock_sandbox::{run, SandboxSpec, WorkspaceMount, WorkspaceMode};
//! let mut spec = SandboxSpec::new(vec!["make".into(), "test".into()], "/home/u/proj".into());
//! spec.workspace = Some(WorkspaceMount {
//!     base: "/home/u/proj".into(),
//!     mode: WorkspaceMode::Staged { upper: "/s/upper".into(), work: "/s/work".into() },
//! });
//! let outcome = run(&spec)?;
//! println!("{:?} in {:?}", outcome.status, outcome.duration);
//! # Ok::<(), airlock_sandbox::SandboxError>(())
//! ```
//!
//! # Architecture
//!
//! **Bird's-eye view.** [`spawn`] turns a [`SandboxSpec`] into a
//! `ChildPlan`: every C string, pointer array, mount operation, Landlock
//! rule, rlimit and BPF program the child will need, prepared in the parent.
//! One `clone3` (all namespace flags, `CLONE_PIDFD`) starts the sandbox's
//! init, which only makes raw system calls on that plan (it is a forked copy
//! of a possibly multi-threaded process: no allocation, no locks, not even
//! glibc's `set*id` wrappers, which wait for threads that do not exist in
//! the copy). The parent writes the uid/gid maps, releases the child with a
//! byte on a pipe, joins the cgroup meanwhile, and learns of success when
//! the close-on-exec error pipe reaches end-of-file (or reads the failed
//! step and errno from it). Init builds the root, applies rlimits,
//! `NO_NEW_PRIVS`, Landlock, drops capabilities, installs seccomp (passing
//! the notification listener back over a socket), forks the command
//! (`setsid`, stdio, `close_range`, `execve`) and then only forwards signals.
//! When the command exits, init kills and reaps every other process in its
//! pid namespace, leaves the run's cgroup (v1), then reports the command's
//! wait status and what the processes used, and exits. It holds the staged
//! overlay work dir's lock until then, and the next run over the same area
//! waits for it to have exited (see `airlock_fs::RunWorkDir`), by when its
//! overlay was unmounted in every probe here. [`Running::wait`] polls that
//! status pipe, the pidfd, the seccomp listener (answering and counting blocked
//! calls) and, with [`Running::wait_forwarding`], a signalfd (for the
//! [`ForwardedSignals`] blocked before [`spawn`]); it enforces
//! the timeout and the disk cap and builds the [`Outcome`]. With
//! [`Running::end_forwarding`] the caller gets the outcome as an [`Ended`]
//! as soon as the report is read, and can do its own work while the kernel
//! tears init's namespaces down; [`Ended::finish`] then reaps init, removes
//! the cgroup and closes the overlay. [`Ended::finish_leaving`], for a
//! caller about to exit (`airlock run`), removes the cgroup and closes the
//! overlay without waiting for the teardown, which goes on after it.
//!
//! **Code map.**
//! - `exec.rs`: the orchestration above; [`spawn`], [`run`], [`Running`].
//! - `syscall.rs`: every `unsafe` block: the child's code (`child_main`,
//!   `command_main`), raw wrappers (pidfd, waitid, seccomp notifications,
//!   signalfd) and [`peer_pidfd`] for the broker.
//! - `mounts.rs`: the mount plan, the Landlock table that mirrors it, the
//!   protected-path walk and placeholders.
//! - `landlock.rs`, `seccomp.rs`, `limits.rs`, `env.rs`, `fd_cleanup.rs`:
//!   one mechanism each. `probe.rs` backs `airlock doctor`; `profile.rs`
//!   the named profiles shared with the broker.
//!
//! **Invariants.**
//! - Nothing between `clone3` and `execve` allocates, locks or returns.
//! - Host paths are opened once, by the child in its own mount namespace
//!   with `RESOLVE_NO_SYMLINKS`, and mounted through `/proc/self/fd/N`.
//! - The uid map never maps host root; as root the child switches to an
//!   unprivileged uid before it mounts anything.
//! - A layer that cannot be applied is an error unless the caller listed it
//!   in [`SandboxSpec::allow_degraded`]; every degradation is in
//!   [`LayerReport::degraded`].
//! - When init exits, for whatever reason, the kernel kills everything in
//!   the pid namespace; init exits when the command does, when the caller's
//!   lifeline pipe hangs up, or when it is killed (timeout, drop).
//! - Init reports the command's status only after it has killed and reaped
//!   every other process of the sandbox: once the caller has the outcome,
//!   nothing the command started is running.
//!
//! The only `unsafe` code of the project lives in the private `syscall`
//! module, each block with a `// SAFETY:` comment.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod env;
mod exec;
pub mod fd_cleanup;
pub mod landlock;
pub mod limits;
pub mod mounts;
pub mod probe;
pub mod profile;
pub mod seccomp;
mod syscall;

pub use env::scrub_env;
pub use exec::{run, spawn, Ended, ForwardedSignals, Running, Signaller};
pub use probe::{probe, Check, Probe};
pub use profile::Profile;
pub use syscall::{default_sigpipe, peer_pidfd};

/// How the workspace is visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    /// Writable, with writes landing in `upper` (an overlayfs upper dir,
    /// usually a staging area's) and `work` beside it; the real tree is
    /// untouched.
    Staged {
        /// overlayfs upperdir.
        upper: PathBuf,
        /// overlayfs workdir (same filesystem as `upper`, empty or ours).
        work: PathBuf,
    },
    /// Writable directly (protected paths stay read-only).
    WriteThrough,
    /// Read-only.
    ReadOnly,
}

/// The workspace: a directory visible at its own path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceMount {
    /// The real directory (absolute).
    pub base: PathBuf,
    /// How writes are handled.
    pub mode: WorkspaceMode,
}

/// Resource limits. `None` means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory in bytes (cgroup memory limit, else `RLIMIT_DATA`).
    #[serde(
        default,
        with = "limits::serde_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<u64>,
    /// Number of processes/threads (cgroup pids.max, else `RLIMIT_NPROC`
    /// in the sandbox's own user namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU time per process (`RLIMIT_CPU`).
    #[serde(
        default,
        with = "limits::serde_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_time: Option<Duration>,
    /// Wall-clock time; the whole sandbox is killed when it runs out.
    #[serde(
        default,
        with = "limits::serde_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Largest file the command may write (`RLIMIT_FSIZE`), and the cap on
    /// the total size of the staging upper dir (checked while it runs).
    #[serde(
        default,
        with = "limits::serde_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk: Option<u64>,
}

/// A sandbox layer that can be explicitly degraded (run without).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// Landlock filesystem/network rules and scopes.
    Landlock,
    /// The seccomp deny list.
    Seccomp,
    /// The overlayfs staging of the workspace (degraded: read-only workspace).
    Overlay,
    /// Read-only protection of protected paths inside the workspace.
    ProtectedPaths,
    /// Memory/pids/CPU limits.
    Limits,
}

impl Layer {
    /// All layers, for help texts.
    pub const ALL: &'static [Layer] = &[
        Layer::Landlock,
        Layer::Seccomp,
        Layer::Overlay,
        Layer::ProtectedPaths,
        Layer::Limits,
    ];

    /// The kebab-case name used on the command line and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Overlay => "overlay",
            Layer::ProtectedPaths => "protected-paths",
            Layer::Limits => "limits",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Layer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layer::ALL
            .iter()
            .copied()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown layer {s:?} (one of: landlock, seccomp, overlay, protected-paths, limits)"))
    }
}

/// Where the command's standard streams go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StdioMode {
    /// Share the caller's stdin/stdout/stderr.
    #[default]
    Inherit,
    /// stdin is `/dev/null`; stdout and stderr are captured into the
    /// [`Outcome`], each up to `max_bytes` (the rest is read and dropped).
    Capture {
        /// Cap per stream.
        max_bytes: usize,
    },
}

/// What to run and what it may touch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Command and arguments; `argv[0]` is looked up in the sandbox's `PATH`
    /// unless it contains a `/`.
    pub argv: Vec<String>,
    /// Working directory inside the sandbox (must be visible there).
    pub cwd: PathBuf,
    /// The complete environment of the command (see [`scrub_env`]).
    pub env: Vec<(String, String)>,
    /// The workspace, if any.
    pub workspace: Option<WorkspaceMount>,
    /// Extra paths visible read-only.
    #[serde(default)]
    pub allow_read: Vec<PathBuf>,
    /// Extra paths visible read-write (directly, not staged).
    #[serde(default)]
    pub allow_write: Vec<PathBuf>,
    /// Network destinations `HOST[:PORT]`; empty means no network at all.
    #[serde(default)]
    pub allow_net: Vec<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Paths inside the workspace kept read-only.
    pub protected: airlock_fs::ProtectedPaths,
    /// Paths never visible, even inside a grant (broker sockets, state,
    /// config, the staging store).
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Layers the caller accepts running without.
    #[serde(default)]
    pub allow_degraded: Vec<Layer>,
    /// Standard streams.
    #[serde(default)]
    pub stdio: StdioMode,
}

impl SandboxSpec {
    /// A spec with no workspace, no grants, no network, no limits, default
    /// protected paths and inherited stdio.
    pub fn new(argv: Vec<String>, cwd: PathBuf) -> SandboxSpec {
        SandboxSpec {
            argv,
            cwd,
            env: vec![("PATH".into(), env::DEFAULT_PATH.into())],
            workspace: None,
            allow_read: vec![],
            allow_write: vec![],
            allow_net: vec![],
            limits: Limits::default(),
            protected: airlock_fs::ProtectedPaths::default(),
            hidden: vec![],
            allow_degraded: vec![],
            stdio: StdioMode::Inherit,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ExitKind {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal (not one of the limit kills below).
    Signaled(i32),
    /// The wall-clock timeout fired; the whole sandbox was killed.
    Timeout,
    /// Killed by the memory limit (cgroup OOM kill).
    MemoryLimit,
    /// The process limit was hit and the command failed.
    PidsLimit,
    /// Killed for exceeding its CPU time (`SIGXCPU`/`SIGKILL` from RLIMIT_CPU).
    CpuLimit,
    /// Killed for writing more than the disk limit (`SIGXFSZ`, or the staged
    /// upper dir grew past the cap).
    DiskLimit,
}

impl ExitKind {
    /// The exit code `airlock run` returns for this outcome: the command's
    /// own code; 128+N for signal N; 124 timeout; 120 memory; 121 pids;
    /// 122 CPU; 123 disk. (125 is Airlock's own failure.)
    pub fn exit_code(self) -> i32 {
        match self {
            ExitKind::Exited(c) => c,
            ExitKind::Signaled(s) => 128 + s,
            ExitKind::Timeout => 124,
            ExitKind::MemoryLimit => 120,
            ExitKind::PidsLimit => 121,
            ExitKind::CpuLimit => 122,
            ExitKind::DiskLimit => 123,
        }
    }

    /// Why, for humans (`None` for a plain exit).
    pub fn describe(self, limits: &Limits) -> Option<String> {
        match self {
            ExitKind::Exited(_) => None,
            ExitKind::Signaled(s) => Some(format!("command killed by signal {s}")),
            ExitKind::Timeout => Some(format!(
                "timed out after {:?}; the whole sandbox was killed",
                limits.timeout.unwrap_or_default()
            )),
            ExitKind::MemoryLimit => Some(format!(
                "killed: memory limit of {} bytes reached",
                limits.memory.unwrap_or(0)
            )),
            ExitKind::PidsLimit => Some(format!(
                "process limit of {} reached",
                limits.pids.unwrap_or(0)
            )),
            ExitKind::CpuLimit => Some(format!(
                "killed: CPU time limit of {:?} reached",
                limits.cpu_time.unwrap_or_default()
            )),
            ExitKind::DiskLimit => Some(format!(
                "killed: disk limit of {} bytes reached",
                limits.disk.unwrap_or(0)
            )),
        }
    }
}

/// State of the Landlock layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockState {
    /// All rights Airlock handles were enforced, plus scopes.
    Enforced,
    /// Enforced with the rights of an older ABI (e.g. no network rules or
    /// no scoping); see [`LayerReport::degraded`].
    Partial,
    /// Not applied (degraded explicitly).
    NotEnforced,
}

/// What the sandbox actually applied. Goes into the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Namespaces created.
    pub namespaces: Vec<String>,
    /// `inside outside count` uid map.
    pub uid_map: String,
    /// Landlock ABI of the kernel (`None`: unavailable).
    pub landlock_abi: Option<i32>,
    /// Landlock state.
    pub landlock: LandlockState,
    /// Landlock scopes applied (abstract Unix sockets, signals).
    pub landlock_scopes: Vec<String>,
    /// Whether the seccomp deny list was installed.
    pub seccomp: bool,
    /// Whether blocked system calls are reported (seccomp user notification).
    pub seccomp_notify: bool,
    /// `cgroup-v2`, `cgroup-v1`, `rlimit`, or `none` (no limits asked for).
    pub limits_mechanism: String,
    /// How the workspace was mounted (`staged-overlay`, `write-through`,
    /// `read-only`, `none`).
    pub workspace: String,
    /// Protected paths mounted read-only (relative to the workspace).
    pub protected_mounted: Vec<String>,
    /// `none` (empty network namespace) or `host-tcp-ports:...`.
    pub network: String,
    /// Layers run without, and why.
    pub degraded: Vec<(Layer, String)>,
}

/// Something the sandbox blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `syscall`, `socket`, `ioctl`, ...
    pub kind: String,
    /// What was attempted, e.g. `ptrace` or `socket(AF_PACKET)`.
    pub what: String,
    /// How many times.
    pub count: u32,
}

/// Format violations as `blocked: ptrace (x3), socket(AF_PACKET)`.
pub fn summarize_violations(v: &[Violation]) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let parts: Vec<String> = v
        .iter()
        .map(|x| {
            if x.count > 1 {
                format!("{} (x{})", x.what, x.count)
            } else {
                x.what.clone()
            }
        })
        .collect();
    Some(format!("blocked: {}", parts.join(", ")))
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub status: ExitKind,
    /// Wall-clock duration (from clone until the command and everything it
    /// started had ended).
    pub duration: Duration,
    /// Peak memory in bytes (cgroup max usage, else the largest RSS).
    pub peak_memory: Option<u64>,
    /// Layers applied.
    pub report: LayerReport,
    /// What was blocked.
    pub violations: Vec<Violation>,
    /// Captured stdout (empty with [`StdioMode::Inherit`]).
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// Captured stderr (empty with [`StdioMode::Inherit`]).
    #[serde(skip)]
    pub stderr: Vec<u8>,
    /// The staged overlay's upper dir held nothing once the sandbox had
    /// ended: no change is staged in the area, by this run or an earlier
    /// one. False when that is not known (no staged workspace, or part of
    /// the dir could not be read).
    #[serde(skip)]
    pub nothing_staged: bool,
}

/// Errors of the sandbox. Each names what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec is malformed.
    #[error("invalid sandbox spec: {0}")]
    Spec(String),
    /// A required layer cannot be applied on this machine.
    #[error("sandbox layer `{layer}` unavailable: {why} (to enable: {hint}; or run with --allow-degraded {layer})")]
    Layer {
        /// The layer.
        layer: Layer,
        /// What is missing.
        why: String,
        /// The setting that enables it.
        hint: String,
    },
    /// Namespaces (the foundation) cannot be created; cannot be degraded.
    #[error("cannot create the sandbox namespaces: {why} (to enable: {hint})")]
    Namespaces {
        /// What failed.
        why: String,
        /// The setting that enables it.
        hint: String,
    },
    /// Setting up the sandbox failed at a named step.
    #[error("sandbox setup failed at {step}: {error}")]
    Setup {
        /// The step.
        step: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The command could not be executed inside the sandbox.
    #[error("cannot execute {cmd:?} in the sandbox: {error}")]
    Exec {
        /// `argv[0]`.
        cmd: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// A config file (profiles) cannot be read or is malformed.
    #[error("{path}: {why}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Host-side I/O failed.
    #[error("{what}: {error}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
}

impl SandboxError {
    /// The API error code.
    pub fn code(&self) -> airlock_core::ErrorCode {
        match self {
            SandboxError::Spec(_) | SandboxError::Config { .. } => {
                airlock_core::ErrorCode::InvalidValue
            }
            SandboxError::Exec { .. } => airlock_core::ErrorCode::NotFound,
            _ => airlock_core::ErrorCode::SandboxUnavailable,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> SandboxError {
        SandboxError::Io {
            what: what.into(),
            error: source,
        }
    }
}
