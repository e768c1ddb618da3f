//! The only module with `unsafe`: raw system calls, and the code that runs in
//! the sandbox's init process between `clone3` and `execve`.
//!
//! Everything the child needs is prepared by the parent in a [`ChildPlan`]
//! (C strings, pointer arrays, BPF programs, rule tables). The child only
//! reads that plan and makes system calls: it never allocates, never takes a
//! lock and never returns, so it is safe to start from a multi-threaded
//! process (the broker runs on tokio).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libc::{c_char, c_int, c_uint, c_ulong, c_void};

// ---------------------------------------------------------------------------
// Kernel ABI constants and structs not (reliably) exported by libc.

const CLONE_PIDFD: u64 = 0x1000;
const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: u32 = 0x8000;
const OPEN_TREE_CLONE: c_int = 1;
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: c_uint = 0x40;
const MOUNT_ATTR_NOSUID: c_uint = 0x2;
const MOUNT_ATTR_NODEV: c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: c_uint = 0x8;
const FSOPEN_CLOEXEC: c_uint = 1;
const FSMOUNT_CLOEXEC: c_uint = 1;
const FSCONFIG_SET_STRING: c_uint = 1;
const FSCONFIG_CMD_CREATE: c_uint = 6;
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: c_int = 1;
const LANDLOCK_RULE_NET_PORT: c_int = 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const SECCOMP_SET_MODE_FILTER: c_ulong = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: c_ulong = 1 << 3;

/// `struct clone_args` (first 11 u64 fields, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C, packed)]
struct LandlockPathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct LandlockNetPortAttr {
    allowed_access: u64,
    port: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// The kernel's `struct seccomp_notif_sizes`.
#[repr(C)]
#[derive(Default)]
struct NotifSizes {
    notif: u16,
    resp: u16,
    data: u16,
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct SeccompData {
    pub nr: c_int,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

// ioctl numbers for the seccomp notification fd: _IOWR('!', 0, struct
// seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp).
const SECCOMP_IOCTL_NOTIF_RECV: c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: c_ulong = 0xc018_2101;
// _IOW('!', 2, __u64)
const SECCOMP_IOCTL_NOTIF_ID_VALID: c_ulong = 0x4008_2102;
const SECCOMP_GET_NOTIF_SIZES: c_ulong = 3;

// ---------------------------------------------------------------------------
// The plan the parent prepares for the child.

/// One step of building the sandbox's root, run in the child.
#[derive(Debug)]
pub(crate) enum MountOp {
    /// Make every mount private so nothing propagates back to the host.
    MakePrivate,
    /// Mount a tmpfs.
    Tmpfs {
        target: CString,
        opts: CString,
        flags: c_ulong,
    },
    /// `mkdir`; an existing directory is fine.
    Mkdir { path: CString, mode: u32 },
    /// Create an empty file to mount over; an existing entry is fine.
    Touch { path: CString },
    /// Create a symbolic link.
    Symlink { target: CString, link: CString },
    /// Create a file with the given content.
    WriteFile {
        path: CString,
        data: Vec<u8>,
        mode: u32,
    },
    /// Bind mount (recursively).
    Bind { src: CString, dst: CString },
    /// Attach the detached tree held in descriptor `fd` at `dst`.
    MoveTree { fd: c_int, dst: CString },
    /// Attach the detached tree held in descriptor `fd` over the directory
    /// held (as an `O_PATH` descriptor) in `onto`: a place in the old root,
    /// so the tree leaves the namespace with the old root at `pivot_root`.
    AttachOver { fd: c_int, onto: c_int },
    /// Set mount attributes (read-only) with `mount_setattr`.
    ReadOnly { path: CString, recursive: bool },
    /// Add nosuid/nodev to a mount (and its submounts).
    NoSuid { path: CString },
    /// Fresh procfs for the new pid namespace.
    Proc { target: CString },
    /// A private devpts instance.
    Devpts { target: CString },
    /// The staged workspace. `opts_layer`: the same options with the
    /// placeholder layer (see [`MountOp::AwaitWalk`]) as the top lower
    /// layer, used when the parent sent placeholders.
    Overlay {
        target: CString,
        opts: CString,
        opts_layer: Option<CString>,
    },
    /// `pivot_root` into `newroot` and detach the old root.
    PivotRoot { newroot: CString },
    /// Wait for the parent's `w` message: the protected-path walk is done
    /// (before the overlay is mounted). Before it, `q` messages may carry
    /// the placeholders of protected paths that do not exist yet (see
    /// [`PlaceholderLayer`]).
    AwaitWalk { layer: Option<PlaceholderLayer> },
    /// Receive the protected paths (`p` messages of NUL-terminated paths,
    /// then `P`) and bind each onto itself read-only. A failure on the
    /// `k`-th path is reported as step `STEP_PROTECT + k`.
    ProtectReceived,
}

/// Where the placeholders of a staged workspace go: a tmpfs of the
/// sandbox's own, made by init and used as the overlay's top lower layer,
/// so they exist for this run only and never touch the upper dir (which
/// other runs over the same workspace share). Each placeholder is an
/// empty read-only file or directory, a mount point for the read-only
/// self-bind of its protected path; the directories above it copy the
/// workspace's modes, so the merged view shows them unchanged.
///
/// The tmpfs is attached over the workspace's directory in the old root
/// (held in `onto`), like the idmapped tree, and leaves with the old root
/// at `pivot_root`; its descriptor is moved to `fd`, which
/// `Overlay::opts_layer` names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaceholderLayer {
    pub fd: c_int,
    pub onto: c_int,
}

/// Kinds of entries of a `q` message: `[kind][mode: u16 LE][path][NUL]`,
/// paths relative to the workspace.
pub(crate) const PH_PARENT: u8 = b'd';
pub(crate) const PH_DIR: u8 = b'D';
pub(crate) const PH_FILE: u8 = b'f';

/// Largest message of protected paths the parent sends (one path is at
/// most PATH_MAX, 4096 bytes with its NUL).
pub(crate) const PROTECT_MSG_MAX: usize = 8192;

/// Landlock rules added in the child (paths as seen after `pivot_root`).
pub(crate) struct LandlockPlan {
    pub ruleset: OwnedFd,
    pub paths: Vec<(CString, u64)>,
    pub ports: Vec<(u64, u64)>,
    pub restrict_flags: u32,
}

/// Everything the child needs, prepared before `clone3`.
pub(crate) struct ChildPlan {
    /// Host paths (canonical) of mount sources, opened by the child in its
    /// own mount namespace with `RESOLVE_NO_SYMLINKS` and moved to
    /// descriptors `src_base + i` (the ops refer to `/proc/self/fd/N`).
    pub srcs: Vec<CString>,
    /// Indexes of `srcs` whose descriptor is a detached clone of the mount
    /// tree (`open_tree(OPEN_TREE_CLONE)`), used with [`MountOp::MoveTree`].
    pub src_clone: Vec<usize>,
    pub src_base: c_int,
    /// The child's end of the sync socket (`SOCK_SEQPACKET`). The parent
    /// sends, in order: `g` once the id maps are written; with protected
    /// paths, `q` (placeholders, if any) and `w` (see
    /// [`MountOp::AwaitWalk`]), then the paths
    /// ([`MountOp::ProtectReceived`]); last, `c` with the cgroup v1 `tasks`
    /// files (opened by the parent) to write `0` to, if any, or `C` with
    /// those and then as many of the parent cgroups' `tasks` files, which
    /// init writes `0` to once the sandbox is empty (so that the parent can
    /// remove the run's cgroup without waiting for init's exit), or `r`
    /// when the run's cgroup could not be made and `fallback_rlimits` apply
    /// instead.
    pub sync_rd: RawFd,
    /// The parent's end of the sync socket (closed first thing in the
    /// child, so that the parent's death reads as end-of-file).
    pub sync_wr: RawFd,
    /// A new network namespace (with loopback up) is made by a helper
    /// process that init starts first thing, sharing its memory and running
    /// on `net_stack`, while init builds the root; init joins it (`setns`)
    /// once the helper has sent the namespace's descriptor over `net_sock`
    /// (init's end `[0]`, the helper's `[1]`), before Landlock and seccomp. Creating a network
    /// namespace is the costliest step of the setup.
    pub unshare_net: bool,
    pub net_sock: [RawFd; 2],
    pub net_stack: Vec<u8>,
    /// Read end of the lifeline pipe: its write end lives as long as the
    /// parent's [`crate::Running`]; when it hangs up, init exits and the
    /// kernel kills everything in the pid namespace.
    pub lifeline_rd: RawFd,
    pub err_wr: RawFd,
    pub status_wr: RawFd,
    /// The lock on the staged overlay's work dir (see
    /// `airlock_fs::RunWorkDir`), or -1. Init keeps it open until it
    /// exits, so that a run starting while this one's overlay may still be
    /// mounted finds the work dir held, even when the parent has not
    /// waited for init.
    pub work_lock: RawFd,
    /// (uid, gid) to switch to inside, when started as root.
    pub setid: Option<(u32, u32)>,
    pub ops: Vec<MountOp>,
    pub hostname: CString,
    pub loopback: bool,
    pub cwd: CString,
    pub rlimits: Vec<(c_int, u64, u64)>,
    /// rlimits applied on an `r` message (see `sync_rd`).
    pub fallback_rlimits: Vec<(c_int, u64, u64)>,
    pub landlock: Option<LandlockPlan>,
    pub seccomp: Vec<Vec<libc::sock_filter>>,
    /// Index in `seccomp` of the filter installed with a notification
    /// listener, whose fd is sent to the parent over `notify_sock`.
    pub notify_filter: Option<usize>,
    pub notify_sock: RawFd,
    pub exec_paths: Vec<CString>,
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const c_char>,
    pub envp: Vec<CString>,
    pub envp_ptrs: Vec<*const c_char>,
    /// Descriptors to install as 0, 1 and 2 (`-1`: leave as is).
    pub stdio: [RawFd; 3],
    /// Stack of the command process between its clone and its execve
    /// (only its capacity is used; nothing reads it).
    pub command_stack: Vec<u8>,
    /// A [`PhaseClock`]'s page, or null.
    pub phases: *mut u64,
}

impl ChildPlan {
    /// Fill the NULL-terminated pointer arrays from `argv` and `envp`.
    pub(crate) fn seal(&mut self) {
        self.argv_ptrs = self
            .argv
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        self.envp_ptrs = self
            .envp
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
    }
}

/// Steps of a sandbox's set-up and end, timed when the
/// `airlock_sandbox::phases` debug target is on (see [`PhaseClock`]), in
/// the order they usually end. Who records each: the parent (`P`), init
/// (`I`), init's network helper (`N`) or the command process (`C`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Phase {
    /// P: about to call clone3 (the clock's zero).
    Clone,
    /// P: clone3 returned.
    Cloned,
    /// I: running.
    InitStarted,
    /// N: running.
    NetStarted,
    /// P: the id maps are written (recorded before `g` is sent).
    MapsWritten,
    /// I: knows the id maps are written.
    MapsReceived,
    /// I: the mount sources are open.
    SourcesOpened,
    /// P: the protected-path walk is done (recorded before it is sent).
    WalkSent,
    /// I: has the walk (and made the placeholder layer).
    WalkReceived,
    /// I: the overlay is mounted.
    OverlayMounted,
    /// I: the protected paths are bound read-only.
    ProtectedBound,
    /// I: `pivot_root` is done (and the old root detached).
    PivotRoot,
    /// P: the cgroup is made, or the rlimits fallback chosen (recorded
    /// before `c` or `r` is sent).
    LimitsSent,
    /// N: the network namespace is made (recorded before it is sent).
    NetReady,
    /// I: has joined the network namespace.
    NetJoined,
    /// I: Landlock is applied (and capabilities dropped).
    Landlocked,
    /// I: the seccomp filters are installed.
    Seccomp,
    /// I: has joined the cgroup or applied the fallback rlimits.
    LimitsJoined,
    /// C: about to execve the command.
    Exec,
    /// P: knows the command was executed.
    ExecSeen,
    /// I: has reaped the command.
    CommandExited,
    /// I: has killed and reaped every other process (recorded before it
    /// sends the command's status).
    SandboxEmpty,
    /// P: has read the command's status.
    Ended,
    /// P: has reaped init (the sandbox is gone).
    Reaped,
}

impl Phase {
    /// Every phase with the name it is logged under.
    const NAMED: [(Phase, &'static str); 24] = [
        (Phase::Clone, "clone"),
        (Phase::Cloned, "cloned"),
        (Phase::InitStarted, "init_started"),
        (Phase::NetStarted, "net_started"),
        (Phase::MapsWritten, "maps_written"),
        (Phase::MapsReceived, "maps_received"),
        (Phase::SourcesOpened, "sources_opened"),
        (Phase::WalkSent, "walk_sent"),
        (Phase::WalkReceived, "walk_received"),
        (Phase::OverlayMounted, "overlay_mounted"),
        (Phase::ProtectedBound, "protected_bound"),
        (Phase::PivotRoot, "pivot_root"),
        (Phase::LimitsSent, "limits_sent"),
        (Phase::NetReady, "net_ready"),
        (Phase::NetJoined, "net_joined"),
        (Phase::Landlocked, "landlocked"),
        (Phase::Seccomp, "seccomp"),
        (Phase::LimitsJoined, "limits_joined"),
        (Phase::Exec, "exec"),
        (Phase::ExecSeen, "exec_seen"),
        (Phase::CommandExited, "command_exited"),
        (Phase::SandboxEmpty, "sandbox_empty"),
        (Phase::Ended, "ended"),
        (Phase::Reaped, "reaped"),
    ];
}

/// A page shared by the parent, init, its network helper and the command
/// process until it execs (`MAP_SHARED`, so every fork writes the same
/// copy), where each stores the time (`CLOCK_MONOTONIC`, ns) at which it
/// ended a [`Phase`]. Recording is a vDSO clock read and a store: no
/// allocation, safe in the forked child.
pub(crate) struct PhaseClock {
    page: *mut u64,
}

// SAFETY: the page is plain memory owned by this value; `record` and
// `read` are volatile accesses of u64 slots, and a torn read at worst
// shows a phase as not yet ended.
unsafe impl Send for PhaseClock {}

impl PhaseClock {
    pub(crate) fn new() -> io::Result<PhaseClock> {
        // SAFETY: an anonymous shared mapping of one page, unmapped in Drop.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PhaseClock {
            page: page as *mut u64,
        })
    }

    /// The page, for the child's plan.
    pub(crate) fn raw(&self) -> *mut u64 {
        self.page
    }

    pub(crate) fn record(&self, phase: Phase) {
        record(self.page, phase);
    }

    /// The phases recorded, by name, in µs after [`Phase::Clone`],
    /// earliest first.
    pub(crate) fn read(&self) -> Vec<(&'static str, u64)> {
        // SAFETY: reads of slots inside the page.
        let at = |p: Phase| unsafe { self.page.add(p as usize).read_volatile() };
        let zero = at(Phase::Clone);
        let mut v: Vec<(&'static str, u64)> = Phase::NAMED
            .iter()
            .filter(|(p, _)| at(*p) != 0 && zero != 0)
            .map(|(p, name)| (*name, at(*p).saturating_sub(zero) / 1000))
            .collect();
        v.sort_by_key(|(_, us)| *us);
        v
    }
}

impl Drop for PhaseClock {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.page as *mut c_void, 4096) };
    }
}

/// Record the end of `phase` on `page` (a [`PhaseClock`]'s, or null: no
/// tracing). Async-signal-safe.
fn record(page: *mut u64, phase: Phase) {
    if page.is_null() {
        return;
    }
    // SAFETY: clock_gettime into a stack struct (vDSO); a volatile store
    // into the slot of `phase` inside the one-page mapping.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        let ns = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
        page.add(phase as usize).write_volatile(ns.max(1));
    }
}

// Steps reported by the child when it fails (besides mount op indexes).
pub(crate) const STEP_SYNC: u32 = 10_000;
pub(crate) const STEP_SETID: u32 = 10_001;
pub(crate) const STEP_HOSTNAME: u32 = 10_002;
pub(crate) const STEP_LOOPBACK: u32 = 10_003;
pub(crate) const STEP_CHDIR: u32 = 10_004;
pub(crate) const STEP_RLIMIT: u32 = 10_005;
pub(crate) const STEP_NNP: u32 = 10_006;
pub(crate) const STEP_LANDLOCK_OPEN: u32 = 10_007;
pub(crate) const STEP_LANDLOCK_RULE: u32 = 10_008;
pub(crate) const STEP_LANDLOCK_RESTRICT: u32 = 10_009;
pub(crate) const STEP_CAPS: u32 = 10_010;
pub(crate) const STEP_SECCOMP: u32 = 10_011;
pub(crate) const STEP_FORK: u32 = 10_012;
pub(crate) const STEP_SETSID: u32 = 10_013;
pub(crate) const STEP_STDIO: u32 = 10_014;
pub(crate) const STEP_EXEC: u32 = 10_015;
pub(crate) const STEP_NOTIFY: u32 = 10_016;
pub(crate) const STEP_CGROUP: u32 = 10_017;
pub(crate) const STEP_NETNS: u32 = 10_018;
/// Binding protected path `k` read-only failed: step `STEP_PROTECT + k`.
pub(crate) const STEP_PROTECT: u32 = 40_000;
/// Opening mount source `i` failed: step `STEP_SRC + i`.
pub(crate) const STEP_SRC: u32 = 20_000;

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Report a failed step to the parent and exit. Async-signal-safe.
fn fail(err_wr: RawFd, step: u32, err: c_int) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_ne_bytes());
    buf[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: writes 8 bytes from a stack buffer to a descriptor we own
    // (a raw system call: `errno`, shared with init by the network helper,
    // is not touched); then exits without running any user-space cleanup
    // (we are a forked copy).
    unsafe {
        let _ = rustix::io::write(std::os::fd::BorrowedFd::borrow_raw(err_wr), &buf);
        libc::_exit(127)
    }
}

/// Decode what [`fail`] wrote.
pub(crate) fn decode_failure(buf: &[u8]) -> Option<(u32, i32)> {
    if buf.len() < 8 {
        return None;
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let err = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((step, err))
}

// ---------------------------------------------------------------------------
// Public safe wrappers used by other crates.

/// `SO_PEERPIDFD` (Linux 6.5+; not yet in every libc).
const SO_PEERPIDFD: c_int = 77;

/// Let SIGPIPE end the process, as it ends ordinary Unix tools (the Rust
/// runtime ignores it, so every write to a closed pipe fails instead and
/// `println!` panics). For commands whose output goes to a reader such as
/// `head`: they stop quietly when the reader is done. Not for long-running
/// services, which should see `EPIPE` and shut down in order.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler
    // and touches no memory of this process; it is valid at any time.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A pidfd for the process at the other end of a connected Unix socket
/// (`getsockopt(SOL_SOCKET, SO_PEERPIDFD)`, Linux 6.5+). Unlike a pid from
/// `SO_PEERCRED`, the pidfd cannot be recycled: signals sent through it and
/// `/proc` lookups checked against it reach the peer or fail.
///
/// Fails with `ENOPROTOOPT` on kernels before 6.5 and `ENOTCONN`/`ENOTSOCK`
/// for a descriptor that is not a connected Unix socket.
pub fn peer_pidfd(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut fd: c_int = -1;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes (one c_int) into `fd`
    // and updates `len`; both live on the stack for the call.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            &mut fd as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 || len as usize != std::mem::size_of::<c_int>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_PEERPIDFD returned no descriptor",
        ));
    }
    // SAFETY: the kernel installed a fresh pidfd in our table; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------
// Parent-side helpers.

/// Start the sandbox's init process with `flags` (namespace flags). Returns
/// its pid and a pidfd. The child runs [`child_main`] and never returns.
pub(crate) fn spawn(flags: u64, plan: &ChildPlan) -> io::Result<(libc::pid_t, OwnedFd)> {
    let mut pidfd: c_int = -1;
    let args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork:
    // the child gets a copy of the address space and returns 0 here. The
    // child then only runs `child_main`, which makes raw system calls on the
    // prepared plan and never returns or allocates.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        child_main(plan);
    }
    // SAFETY: the kernel stored a fresh pidfd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as libc::pid_t, fd))
}

/// A detached clone of the directory tree at `path` (one mount, no
/// submounts) on which files owned by host uid/gid 0 appear owned by
/// `uid`/`gid` (an idmapped mount, Linux 5.12+, on filesystems that allow
/// it). Used when root runs a sandbox as an unprivileged uid over a
/// root-owned workspace: the sandbox can then write it like its owner,
/// while new files it creates there are root's on disk, as the
/// workspace's. Needs CAP_SYS_ADMIN in the initial user namespace.
pub(crate) fn idmapped_tree(path: &CStr, uid: u32, gid: u32) -> io::Result<(OwnedFd, Reaper)> {
    let (userns, helper) = mapping_userns(uid, gid)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: openat2 with a NUL-terminated path and a stack struct of the
    // size passed; the result is a fresh descriptor we then own.
    let dir = unsafe {
        let fd = libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        ) as c_int;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    use std::os::fd::AsRawFd;
    // SAFETY: open_tree on a descriptor we own with an empty path; returns
    // a fresh descriptor for the detached clone.
    let tree = unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | OPEN_TREE_CLONE | libc::O_CLOEXEC) as c_ulong,
        ) as c_int;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on the detached tree with a stack struct of the
    // size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((tree, helper))
}

/// A child process that has been told to exit, reaped when dropped (not
/// waited for on the hot path: under load, waiting for a child to be
/// scheduled just to exit costs milliseconds).
pub(crate) struct Reaper(OwnedFd);

impl Drop for Reaper {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let _ = pidfd_signal(self.0.as_raw_fd(), libc::SIGKILL);
        let _ = wait_pidfd(self.0.as_raw_fd());
    }
}

/// A user namespace mapping inside 0 to host `uid`/`gid`, for an idmapped
/// mount. A helper child holds it while the maps are written and its
/// namespace file is opened; it is then killed, and reaped when the
/// returned [`Reaper`] is dropped.
///
/// The helper shares this process's descriptor table (`CLONE_FILES`)
/// instead of getting a copy: a copy would hold every descriptor open at
/// the clone, other threads' included, until the helper is gone, which
/// under load is milliseconds later. Among them are other runs' `flock`s
/// on their overlay work dirs, which a run starting meanwhile would then
/// find held. So the helper touches no descriptor: it waits in `pause`.
fn mapping_userns(uid: u32, gid: u32) -> io::Result<(OwnedFd, Reaper)> {
    let mut pidfd: c_int = -1;
    let args = CloneArgs {
        flags: libc::CLONE_NEWUSER as u64 | libc::CLONE_FILES as u64 | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork (with the
    // descriptor table shared). The child makes no call but `pause`, which
    // touches no memory and no descriptor, and never returns; it is killed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: the kernel stored a fresh pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = ret;
    let res = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n"))?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok::<OwnedFd, io::Error>(ns.into())
    })();
    use std::os::fd::AsRawFd;
    // The namespace lives on through `ns`; the helper is done.
    let _ = pidfd_signal(pidfd.as_raw_fd(), libc::SIGKILL);
    let helper = Reaper(pidfd);
    res.map(|ns| (ns, helper))
}

/// `pidfd_send_signal`.
pub(crate) fn pidfd_signal(pidfd: RawFd, sig: c_int) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments and a NULL siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<c_void>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Result of reaping the init process.
pub(crate) struct Reaped {
    pub code: c_int,
    pub status: c_int,
    pub rusage: libc::rusage,
}

/// `waitid(P_PIDFD)` with rusage (blocking).
pub(crate) fn wait_pidfd(pidfd: RawFd) -> io::Result<Reaped> {
    // SAFETY: both out-structs are zeroed plain data the kernel fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: raw waitid (the 5th argument is the rusage pointer).
        let r = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                libc::P_PIDFD,
                pidfd,
                &mut info as *mut libc::siginfo_t,
                libc::WEXITED,
                &mut ru as *mut libc::rusage,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        break;
    }
    // SAFETY: si_status is valid for CLD_* codes, which waitid(WEXITED) returns.
    let status = unsafe { info.si_status() };
    Ok(Reaped {
        code: info.si_code,
        status,
        rusage: ru,
    })
}

/// `poll` descriptors for readability, with a timeout in ms (-1: none);
/// returns each descriptor's `revents` (all 0 when interrupted).
pub(crate) fn poll_revents(fds: &[RawFd], timeout_ms: c_int) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of pollfd of the given length.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![0; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents).collect())
}

/// Signals blocked in the calling thread and readable from a signalfd,
/// until dropped (which drains what is pending and restores the mask).
pub(crate) struct SignalTap {
    fd: OwnedFd,
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl SignalTap {
    /// Block `sigs` in this thread and open a signalfd for them.
    pub(crate) fn new(sigs: &[c_int]) -> io::Result<SignalTap> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset and
        // filled by sigaddset; pthread_sigmask and signalfd read it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in sigs {
                libc::sigaddset(&mut set, s);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                let e = io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                return Err(e);
            }
            Ok(SignalTap {
                fd: OwnedFd::from_raw_fd(fd),
                set,
                old,
            })
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// The next pending signal, if any.
    pub(crate) fn next(&self) -> Option<c_int> {
        // SAFETY: reads one signalfd_siginfo into a zeroed stack struct.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                self.raw(),
                &mut info as *mut libc::signalfd_siginfo as *mut c_void,
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            if n == std::mem::size_of::<libc::signalfd_siginfo>() as isize {
                Some(info.ssi_signo as c_int)
            } else {
                None
            }
        }
    }
}

impl Drop for SignalTap {
    fn drop(&mut self) {
        while self.next().is_some() {}
        let _ = &self.set;
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// The Landlock ABI version of the running kernel (`None`: unsupported).
pub(crate) fn landlock_abi() -> Option<i32> {
    // SAFETY: querying the version passes NULL/0 and creates nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r > 0 {
        Some(r as i32)
    } else {
        None
    }
}

/// Whether seccomp filtering is available (`PR_GET_SECCOMP` answers).
pub(crate) fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    r >= 0
}

/// Make a pipe (both ends close-on-exec).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a 2-element array for the kernel to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of Unix datagram sockets (close-on-exec).
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a 2-element array for the kernel to fill.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Receive one descriptor sent with SCM_RIGHTS (blocking).
pub(crate) fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut fds = [-1; MAX_FDS];
    let Some((_, n)) = recv_fds(sock, &mut fds)? else {
        return Ok(None);
    };
    for &extra in fds.iter().take(n).skip(1) {
        // SAFETY: a descriptor just received, ours, not used again.
        unsafe { libc::close(extra) };
    }
    // SAFETY: the kernel installed a fresh descriptor that nothing else owns.
    Ok((n > 0).then(|| unsafe { OwnedFd::from_raw_fd(fds[0]) }))
}

/// Most descriptors one message carries (see [`send_fds`]).
const MAX_FDS: usize = 8;

/// Receive one message of one byte with up to [`MAX_FDS`] descriptors
/// (SCM_RIGHTS, close-on-exec): its byte and how many descriptors were
/// stored in `fds`, or `None` at end of file. A message whose descriptors
/// did not fit is an error. Async-signal-safe: nothing allocates.
fn recv_fds(sock: RawFd, fds: &mut [c_int; MAX_FDS]) -> io::Result<Option<(u8, usize)>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut c_void,
        iov_len: 1,
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; we point it at live stack buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg into the buffers described by msg.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let mut count = 0;
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA walk the control buffer the kernel
    // filled, within the length it reports.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            let data = libc::CMSG_DATA(c) as *const c_int;
            let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<c_int>();
            for (i, slot) in fds.iter_mut().enumerate().take(n) {
                *slot = std::ptr::read_unaligned(data.add(i));
                count += 1;
            }
        }
    }
    Ok(Some((byte[0], count)))
}

/// Receive one seccomp notification (blocking).
pub(crate) fn notif_recv(fd: RawFd) -> io::Result<SeccompNotif> {
    let mut n = SeccompNotif::default();
    // SAFETY: the ioctl fills a zeroed seccomp_notif of the kernel's size
    // (checked against SECCOMP_GET_NOTIF_SIZES by `notif_sizes_ok`).
    let r = unsafe {
        libc::ioctl(
            fd,
            SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut n as *mut SeccompNotif,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// Answer a seccomp notification with `-err`.
pub(crate) fn notif_deny(fd: RawFd, id: u64, err: i32) -> io::Result<()> {
    notif_send(
        fd,
        SeccompNotifResp {
            id,
            val: 0,
            error: -err,
            flags: 0,
        },
    )
}

/// Let a notified system call go on as if there were no filter
/// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Only for calls the filter sends to
/// us to be *recorded*, never to decide: the arguments may change after we
/// looked.
pub(crate) fn notif_continue(fd: RawFd, id: u64) -> io::Result<()> {
    notif_send(
        fd,
        SeccompNotifResp {
            id,
            val: 0,
            error: 0,
            flags: 1,
        },
    )
}

/// Answer one notification.
fn notif_send(fd: RawFd, mut resp: SeccompNotifResp) -> io::Result<()> {
    // SAFETY: passes a valid seccomp_notif_resp to the notification fd.
    let r = unsafe {
        libc::ioctl(
            fd,
            SECCOMP_IOCTL_NOTIF_SEND as _,
            &mut resp as *mut SeccompNotifResp,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether notification `id` is still pending (its task alive and waiting),
/// so that what was read from `/proc/PID/mem` belongs to it.
pub(crate) fn notif_id_valid(fd: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: SECCOMP_IOCTL_NOTIF_ID_VALID reads one u64.
    unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID as _, &mut id as *mut u64) == 0 }
}

/// Whether the kernel's notification structs have the sizes compiled here.
pub(crate) fn notif_sizes_ok() -> bool {
    let mut s = NotifSizes::default();
    // SAFETY: SECCOMP_GET_NOTIF_SIZES fills a seccomp_notif_sizes struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut s as *mut NotifSizes,
        )
    };
    r == 0
        && usize::from(s.notif) == std::mem::size_of::<SeccompNotif>()
        && usize::from(s.resp) == std::mem::size_of::<SeccompNotifResp>()
}

// ---------------------------------------------------------------------------
// The child.

fn sys_mount(
    src: *const c_char,
    dst: *const c_char,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_void,
) -> c_int {
    // SAFETY: all pointers are NULL or point to NUL-terminated strings owned
    // by the plan, which outlives the call.
    unsafe { libc::mount(src, dst, fstype, flags, data) }
}

fn setattr(path: &CStr, set: u64, recursive: bool) -> c_int {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr with a NUL-terminated path and a stack struct of
    // the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as c_int
    }
}

fn run_op(op: &MountOp) -> Result<(), c_int> {
    let null = std::ptr::null::<c_char>();
    let r: c_int = match op {
        MountOp::MakePrivate => sys_mount(
            null,
            c"/".as_ptr(),
            null,
            (libc::MS_REC | libc::MS_PRIVATE) as c_ulong,
            std::ptr::null(),
        ),
        MountOp::Tmpfs {
            target,
            opts,
            flags,
        } => sys_mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            *flags,
            opts.as_ptr() as *const c_void,
        ),
        MountOp::Mkdir { path, mode } => {
            // SAFETY: NUL-terminated path owned by the plan.
            let r = unsafe { libc::mkdir(path.as_ptr(), *mode) };
            // An existing directory is fine, also inside a read-only bind
            // (where mkdir answers EROFS before it looks).
            let e = if r < 0 { errno() } else { 0 };
            if r < 0 && (e == libc::EEXIST || e == libc::EROFS) {
                // SAFETY: stat buffer is plain data; path is NUL-terminated.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                if unsafe { libc::stat(path.as_ptr(), &mut st) } == 0
                    && st.st_mode & libc::S_IFMT == libc::S_IFDIR
                {
                    0
                } else {
                    // SAFETY: restoring errno for the caller.
                    unsafe { *libc::__errno_location() = e };
                    -1
                }
            } else {
                r
            }
        }
        MountOp::Touch { path } => {
            // SAFETY: stat buffer is plain data; path is NUL-terminated.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            if unsafe { libc::lstat(path.as_ptr(), &mut st) } == 0 {
                0
            } else {
                // SAFETY: NUL-terminated path; the fd is closed right away.
                let fd = unsafe {
                    libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o444,
                    )
                };
                if fd >= 0 {
                    // SAFETY: closing the descriptor we just opened.
                    unsafe { libc::close(fd) };
                    0
                } else {
                    -1
                }
            }
        }
        MountOp::Symlink { target, link } => {
            // SAFETY: NUL-terminated strings owned by the plan.
            unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }
        }
        MountOp::WriteFile { path, data, mode } => {
            // SAFETY: NUL-terminated path; data is a live byte buffer.
            unsafe {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY | libc::O_CLOEXEC,
                    *mode,
                );
                if fd < 0 {
                    -1
                } else {
                    let n = libc::write(fd, data.as_ptr() as *const c_void, data.len());
                    libc::close(fd);
                    if n < 0 || n as usize != data.len() {
                        -1
                    } else {
                        0
                    }
                }
            }
        }
        MountOp::Bind { src, dst } => sys_mount(
            src.as_ptr(),
            dst.as_ptr(),
            null,
            (libc::MS_BIND | libc::MS_REC) as c_ulong,
            std::ptr::null(),
        ),
        MountOp::MoveTree { fd, dst } => {
            // SAFETY: move_mount of a descriptor we hold onto a
            // NUL-terminated path owned by the plan.
            unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    *fd,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    dst.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) as c_int
            }
        }
        MountOp::AttachOver { fd, onto } => {
            // SAFETY: move_mount between two descriptors we hold, with
            // empty (NUL-terminated) paths.
            unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    *fd,
                    c"".as_ptr(),
                    *onto,
                    c"".as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                ) as c_int
            }
        }
        MountOp::ReadOnly { path, recursive } => setattr(path, MOUNT_ATTR_RDONLY, *recursive),
        MountOp::NoSuid { path } => {
            setattr(path, (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) as u64, true)
        }
        MountOp::Proc { target } => sys_mount(
            c"proc".as_ptr(),
            target.as_ptr(),
            c"proc".as_ptr(),
            (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as c_ulong,
            std::ptr::null(),
        ),
        MountOp::Devpts { target } => sys_mount(
            c"devpts".as_ptr(),
            target.as_ptr(),
            c"devpts".as_ptr(),
            (libc::MS_NOSUID | libc::MS_NOEXEC) as c_ulong,
            c"newinstance,ptmxmode=0666,mode=0620".as_ptr() as *const c_void,
        ),
        MountOp::Overlay { target, opts, .. } => return mount_overlay(target, opts),
        MountOp::PivotRoot { newroot } => {
            // SAFETY: chdir/pivot_root/umount2 with NUL-terminated strings.
            unsafe {
                if libc::chdir(newroot.as_ptr()) < 0 {
                    return Err(errno());
                }
                if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
                    return Err(errno());
                }
                if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
                    return Err(errno());
                }
                libc::chdir(c"/".as_ptr())
            }
        }
        // Handled by child_main (they talk to the parent).
        MountOp::AwaitWalk { .. } | MountOp::ProtectReceived => 0,
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn mount_overlay(target: &CStr, opts: &CStr) -> Result<(), c_int> {
    let r = sys_mount(
        c"overlay".as_ptr(),
        target.as_ptr(),
        c"overlay".as_ptr(),
        (libc::MS_NOSUID | libc::MS_NODEV) as c_ulong,
        opts.as_ptr() as *const c_void,
    );
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn set_full_effective_caps() -> c_int {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset with a v3 header and a 2-element data array.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        ) < 0
        {
            return -1;
        }
        for d in data.iter_mut() {
            d.effective = d.permitted;
        }
        libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) as c_int
    }
}

fn drop_all_caps() -> c_int {
    // SAFETY: prctl and capset with integer arguments / stack structs.
    unsafe {
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
            0,
            0,
            0,
        );
        let mut hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) as c_int
    }
}

/// Bring the loopback interface of the current network namespace up.
/// Raw system calls (see [`net_entry`]): the error is returned, `errno`
/// is not touched.
fn loopback_up() -> rustix::io::Result<()> {
    use rustix::ioctl::{ioctl, Updater};
    const SIOCGIFFLAGS: rustix::ioctl::Opcode = libc::SIOCGIFFLAGS as _;
    const SIOCSIFFLAGS: rustix::ioctl::Opcode = libc::SIOCSIFFLAGS as _;
    let s = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let mut ifr = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    ifr.name[..2].copy_from_slice(b"lo");
    // SAFETY: both requests take a `struct ifreq`, which IfReq lays out
    // (name, then the flags of the union), and read or write only it.
    unsafe {
        ioctl(&s, Updater::<SIOCGIFFLAGS, IfReq>::new(&mut ifr))?;
        ifr.flags |= libc::IFF_UP as i16;
        ioctl(&s, Updater::<SIOCSIFFLAGS, IfReq>::new(&mut ifr))?;
    }
    Ok(())
}

fn send_fd(sock: RawFd, fd: RawFd) -> c_int {
    send_fds(sock, 0, &[fd])
}

/// Send the byte `tag` with up to four descriptors (SCM_RIGHTS).
/// Async-signal-safe; returns sendmsg's result.
pub(crate) fn send_fds(sock: RawFd, tag: u8, fds: &[RawFd]) -> c_int {
    let fds = &fds[..fds.len().min(MAX_FDS)];
    let mut byte = [tag];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut c_void,
        iov_len: 1,
    };
    let mut cbuf = [0u64; 8];
    let bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: builds an SCM_RIGHTS control message in a stack buffer large
    // enough for four descriptors (or none), then sendmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr() as *mut c_void;
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            let data = libc::CMSG_DATA(c) as *mut c_int;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) as c_int
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_SYMLINKS: u64 = 0x04;

fn open_srcs(p: &ChildPlan, last_try: bool) {
    for (i, path) in p.srcs.iter().enumerate() {
        let target = p.src_base + i as c_int;
        // SAFETY: fcntl/openat2/dup3/close on integers and a stack struct;
        // path is NUL-terminated and owned by the plan.
        unsafe {
            // First pass: every target ends up ours or closed. Second pass:
            // retry the closed ones.
            if last_try && libc::fcntl(target, libc::F_GETFD) >= 0 {
                continue;
            }
            let how = OpenHow {
                flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
                mode: 0,
                resolve: RESOLVE_NO_SYMLINKS,
            };
            let fd = libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            ) as c_int;
            if fd < 0 {
                if last_try {
                    fail(p.err_wr, STEP_SRC + i as u32, errno());
                }
                libc::close(target);
                continue;
            }
            let mut fd = fd;
            if p.src_clone.contains(&i) {
                let t = libc::syscall(
                    libc::SYS_open_tree,
                    fd,
                    c"".as_ptr(),
                    (libc::AT_EMPTY_PATH
                        | AT_RECURSIVE as c_int
                        | OPEN_TREE_CLONE
                        | libc::O_CLOEXEC) as c_ulong,
                ) as c_int;
                if t < 0 {
                    if last_try {
                        fail(p.err_wr, STEP_SRC + i as u32, errno());
                    }
                    libc::close(fd);
                    libc::close(target);
                    continue;
                }
                libc::close(fd);
                fd = t;
            }
            if libc::dup3(fd, target, libc::O_CLOEXEC) < 0 {
                fail(p.err_wr, STEP_SRC + i as u32, errno());
            }
            libc::close(fd);
        }
    }
}

/// The sandbox's init: sets everything up, forks the command, then reaps
/// and forwards signals until the command exits.
fn child_main(p: &ChildPlan) -> ! {
    let ew = p.err_wr;
    // SAFETY: each call below is a raw system call on data owned by the plan
    // or on the stack; nothing allocates and nothing returns to Rust code
    // that could observe the forked state.
    unsafe {
        // Until the command runs, the spawning thread waits for us; if it
        // dies, so do we. (PDEATHSIG follows the creating *thread*, so it is
        // cleared once the lifeline pipe takes over, below.)
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0);
        libc::close(p.sync_wr);
        close_inherited(p);
        record(p.phases, Phase::InitStarted);
        let mut net_pid: libc::pid_t = -1;
        if p.unshare_net {
            let top = (p.net_stack.as_ptr() as usize + p.net_stack.capacity()) & !15;
            net_pid = libc::clone(
                net_entry,
                top as *mut c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                p as *const ChildPlan as *mut c_void,
            );
            if net_pid < 0 {
                fail(ew, STEP_NETNS, errno());
            }
            off_this_cpu(net_pid);
            libc::close(p.net_sock[1]);
        }
        let mut b = [0u8; 1];
        if libc::read(p.sync_rd, b.as_mut_ptr() as *mut c_void, 1) != 1 {
            libc::_exit(1);
        }
        record(p.phases, Phase::MapsReceived);

        // Mount sources: first with the credentials we were cloned with (as
        // root: still the host uid 0 as owner, without capabilities), then,
        // for those that failed, as the inside user.
        open_srcs(p, false);

        if let Some((uid, gid)) = p.setid {
            // Raw system calls, not glibc's wrappers: in a multi-threaded
            // parent, glibc's set*id broadcast the change to every thread it
            // knows of and wait on a futex for them; those threads do not
            // exist in this forked copy, so the wait never ends.
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0
                || libc::prctl(libc::PR_SET_KEEPCAPS, 1 as c_ulong, 0, 0, 0) < 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0
                || set_full_effective_caps() < 0
            {
                fail(ew, STEP_SETID, errno());
            }
        }

        open_srcs(p, true);
        record(p.phases, Phase::SourcesOpened);

        let mut layered = false;
        for (i, op) in p.ops.iter().enumerate() {
            let r = match op {
                MountOp::AwaitWalk { layer } => await_walk(p, *layer).map(|l| layered = l),
                MountOp::Overlay {
                    target,
                    opts_layer: Some(o),
                    ..
                } if layered => mount_overlay(target, o),
                MountOp::ProtectReceived => {
                    protect_received(p);
                    Ok(())
                }
                _ => run_op(op),
            };
            if let Err(e) = r {
                fail(ew, i as u32, e);
            }
            match op {
                MountOp::AwaitWalk { .. } => record(p.phases, Phase::WalkReceived),
                MountOp::Overlay { .. } => record(p.phases, Phase::OverlayMounted),
                MountOp::ProtectReceived => record(p.phases, Phase::ProtectedBound),
                MountOp::PivotRoot { .. } => record(p.phases, Phase::PivotRoot),
                _ => {}
            }
        }

        if libc::sethostname(p.hostname.as_ptr(), p.hostname.as_bytes().len()) < 0 {
            fail(ew, STEP_HOSTNAME, errno());
        }
        if p.unshare_net {
            // Join the helper's network namespace once it says it is
            // ready (end of file: it failed, and its report is sent).
            let ns = match recv_fd(p.net_sock[0]) {
                Ok(Some(fd)) => fd,
                _ => fail(ew, STEP_NETNS, libc::EPIPE),
            };
            if libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) < 0 {
                fail(ew, STEP_NETNS, errno());
            }
            drop(ns);
            libc::close(p.net_sock[0]);
        }
        record(p.phases, Phase::NetJoined);
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            fail(ew, STEP_CHDIR, errno());
        }
        set_rlimits(ew, &p.rlimits);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) < 0 {
            fail(ew, STEP_NNP, errno());
        }
        if let Some(ll) = &p.landlock {
            use std::os::fd::AsRawFd;
            let rs = ll.ruleset.as_raw_fd();
            for (path, access) in &ll.paths {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    fail(ew, STEP_LANDLOCK_OPEN, errno());
                }
                let attr = LandlockPathBeneathAttr {
                    allowed_access: *access,
                    parent_fd: fd,
                };
                if libc::syscall(
                    libc::SYS_landlock_add_rule,
                    rs,
                    LANDLOCK_RULE_PATH_BENEATH,
                    &attr as *const _ as *const c_void,
                    0,
                ) < 0
                {
                    fail(ew, STEP_LANDLOCK_RULE, errno());
                }
                libc::close(fd);
            }
            for &(access, port) in &ll.ports {
                let attr = LandlockNetPortAttr {
                    allowed_access: access,
                    port,
                };
                if libc::syscall(
                    libc::SYS_landlock_add_rule,
                    rs,
                    LANDLOCK_RULE_NET_PORT,
                    &attr as *const _ as *const c_void,
                    0,
                ) < 0
                {
                    fail(ew, STEP_LANDLOCK_RULE, errno());
                }
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, rs, ll.restrict_flags) < 0 {
                fail(ew, STEP_LANDLOCK_RESTRICT, errno());
            }
        }
        if drop_all_caps() < 0 {
            fail(ew, STEP_CAPS, errno());
        }
        record(p.phases, Phase::Landlocked);
        for (i, f) in p.seccomp.iter().enumerate() {
            let prog = libc::sock_fprog {
                len: f.len() as u16,
                filter: f.as_ptr() as *mut libc::sock_filter,
            };
            let listen = p.notify_filter == Some(i);
            let flags = if listen {
                SECCOMP_FILTER_FLAG_NEW_LISTENER
            } else {
                0
            };
            let r = libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            );
            if r < 0 {
                fail(ew, STEP_SECCOMP, errno());
            }
            if listen {
                if send_fd(p.notify_sock, r as c_int) < 0 {
                    fail(ew, STEP_NOTIFY, errno());
                }
                libc::close(r as c_int);
            }
        }
        if p.notify_sock >= 0 {
            libc::close(p.notify_sock);
        }
        record(p.phases, Phase::Seccomp);

        // Init leads a process group of its own: terminal signals (Ctrl-C)
        // go to the caller's foreground group, and the caller forwards them
        // (see `Signaller`), so the command gets each exactly once.
        libc::setpgid(0, 0);

        // Block every signal in init; they are read from a signalfd and
        // forwarded to the command's process group.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        let sfd = libc::signalfd(-1, &all, libc::SFD_CLOEXEC);
        if sfd < 0 {
            fail(ew, STEP_FORK, errno());
        }

        // The last message: the run's cgroup is ready (so the command and
        // all it starts are counted there), or it could not be made.
        let (leave, n_leave) = join_limits(p);
        let leave = &leave[..n_leave];
        record(p.phases, Phase::LimitsJoined);

        // The network helper, unconfined and sharing init's memory, is gone
        // before anything untrusted runs (it exited once it had sent the
        // namespace, long before now; this only reaps it).
        if net_pid > 0 {
            let mut st: c_int = 0;
            if libc::waitpid(net_pid, &mut st, 0) != net_pid {
                fail(ew, STEP_NETNS, errno());
            }
        }

        // Not dumpable: /proc/1 then belongs to root, and the command
        // (same uid, same Landlock domain) cannot open init's descriptors
        // through /proc/1/fd: the status pipe, whose report the parent
        // takes as the outcome, and the signalfd. Before the command
        // exists: it runs from its execve, and init resumes only after
        // that. (As root, the change of uid already cleared the flag; as
        // an unprivileged user nothing else does. The command's execve
        // gives its new memory the usual flag.)
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as c_ulong, 0, 0, 0);

        // The command process shares init's memory until its execve, and
        // init waits for that (vfork), so no copy of the address space is
        // made for a process about to replace it. It runs on its own stack
        // (`command_stack`) and, like init, only makes system calls.
        let top = (p.command_stack.as_ptr() as usize + p.command_stack.capacity()) & !15;
        let pid = libc::clone(
            command_entry,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            p as *const ChildPlan as *mut c_void,
        );
        if pid < 0 {
            fail(ew, STEP_FORK, errno());
        }

        // From here the lifeline pipe tells us when the parent is gone.
        libc::prctl(libc::PR_SET_PDEATHSIG, 0 as c_ulong, 0, 0, 0);

        // Init keeps only the status pipe, the lifeline, its signalfd, the
        // work dir's lock and the cgroup files to leave by.
        let sw = p.status_wr;
        let mut keep = [-1 as c_int; 4 + MAX_FDS];
        keep[..4].copy_from_slice(&[sw, p.lifeline_rd, sfd, p.work_lock]);
        keep[4..4 + leave.len()].copy_from_slice(leave);
        close_all_but(&keep);

        loop {
            let mut pfd = [
                libc::pollfd {
                    fd: sfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: p.lifeline_rd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if libc::poll(pfd.as_mut_ptr(), 2, -1) < 0 {
                continue;
            }
            if pfd[1].revents != 0 {
                // The parent is gone: exiting kills the whole namespace.
                libc::_exit(1);
            }
            if pfd[0].revents == 0 {
                continue;
            }
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                sfd,
                &mut info as *mut libc::signalfd_siginfo as *mut c_void,
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            if n != std::mem::size_of::<libc::signalfd_siginfo>() as isize {
                continue;
            }
            let sig = info.ssi_signo as c_int;
            if sig == libc::SIGCHLD {
                loop {
                    let mut st: c_int = 0;
                    let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                    if r <= 0 {
                        break;
                    }
                    if r == pid {
                        record(p.phases, Phase::CommandExited);
                        end_sandbox(sw, st, leave, p.phases);
                    }
                }
            } else if libc::kill(-pid, sig) < 0 {
                libc::kill(pid, sig);
            }
        }
    }
}

/// What init tells the parent when the command has exited and nothing of
/// the sandbox but init is left: the command's wait status and what all
/// the sandbox's processes used (`RUSAGE_CHILDREN` of init, which reaped
/// them all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EndReport {
    pub status: c_int,
    /// User plus system CPU time, µs.
    pub cpu_us: u64,
    /// Largest resident set of any one process, KiB.
    pub maxrss_kib: u64,
}

impl EndReport {
    pub(crate) const LEN: usize = 24;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.status.to_ne_bytes());
        b[8..16].copy_from_slice(&self.cpu_us.to_ne_bytes());
        b[16..24].copy_from_slice(&self.maxrss_kib.to_ne_bytes());
        b
    }

    /// CPU time (user plus system, µs) and largest resident set (KiB) in
    /// a `rusage`. Async-signal-safe.
    pub(crate) fn usage(ru: &libc::rusage) -> (u64, u64) {
        let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
        (
            us(ru.ru_utime) + us(ru.ru_stime),
            u64::try_from(ru.ru_maxrss).unwrap_or(0),
        )
    }

    pub(crate) fn decode(b: &[u8; Self::LEN]) -> EndReport {
        let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        EndReport {
            status: c_int::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            cpu_us: word(8),
            maxrss_kib: word(16),
        }
    }
}

/// Init's last act once the command (wait status `st`) has exited: kill
/// every other process in the sandbox and reap them all, so that when the
/// parent reads the status nothing the command started is left; leave the
/// run's cgroup by writing `0` to each `tasks` file in `leave`; then send
/// the [`EndReport`] on `sw` and exit. The kernel's own teardown of the
/// namespaces and mounts follows as init exits, while the parent goes on.
/// Async-signal-safe.
fn end_sandbox(sw: c_int, st: c_int, leave: &[c_int], phases: *mut u64) -> ! {
    // SAFETY: kill, waitpid, getrusage into a zeroed stack struct, writes of
    // stack buffers and _exit.
    unsafe {
        // -1 from a pid namespace's init: every process in the namespace
        // (and in any below it) but init. A fork racing with it either
        // completes first (its child is hit) or fails (its parent had the
        // signal pending).
        libc::kill(-1, libc::SIGKILL);
        loop {
            // An orphan is re-parented to init before its parent becomes
            // reapable, so ECHILD means nobody is left.
            let r = libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL);
            if r < 0 && errno() != libc::EINTR {
                break;
            }
        }
        // Alone now, and nothing of the sandbox is left in the cgroup. A
        // failure only means the parent waits for init's exit to remove it.
        for &fd in leave {
            libc::write(fd, c"0".as_ptr() as *const c_void, 1);
        }
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        let (cpu_us, maxrss_kib) = EndReport::usage(&ru);
        let rep = EndReport {
            status: st,
            cpu_us,
            maxrss_kib,
        };
        record(phases, Phase::SandboxEmpty);
        let b = rep.encode();
        libc::write(sw, b.as_ptr() as *const c_void, b.len());
        libc::_exit(0)
    }
}

/// Receive the last sync message: join the run's cgroup (v1: this single
/// thread moves itself by writing `0` to each `tasks` file sent along, which
/// unlike a move by another process waits for no RCU grace period), or
/// apply the fallback rlimits. Returns the `tasks` files to leave the
/// cgroup by at the end (see [`ChildPlan::sync_rd`]): the first `n` of the
/// array. Async-signal-safe.
fn join_limits(p: &ChildPlan) -> ([c_int; MAX_FDS], usize) {
    let ew = p.err_wr;
    let mut fds = [-1; MAX_FDS];
    let (tag, n) = match recv_fds(p.sync_rd, &mut fds) {
        Ok(Some(m)) => m,
        _ => fail(ew, STEP_SYNC, libc::EPIPE),
    };
    let join = match tag {
        b'C' if n % 2 == 0 => n / 2,
        b'c' | b'r' => n,
        _ => fail(ew, STEP_SYNC, libc::EPROTO),
    };
    // SAFETY: close, write and close on descriptors of this process.
    unsafe {
        libc::close(p.sync_rd);
        for &fd in &fds[..join] {
            if libc::write(fd, c"0".as_ptr() as *const c_void, 1) != 1 {
                fail(ew, STEP_CGROUP, errno());
            }
            libc::close(fd);
        }
    }
    if tag == b'r' {
        set_rlimits(ew, &p.fallback_rlimits);
    }
    let mut leave = [-1; MAX_FDS];
    leave[..n - join].copy_from_slice(&fds[join..n]);
    (leave, n - join)
}

/// Apply `(resource, soft, hard)` rlimits, or fail the step.
fn set_rlimits(ew: RawFd, limits: &[(c_int, u64, u64)]) {
    for &(res, cur, max) in limits {
        let rl = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit with a stack struct.
        if unsafe { libc::setrlimit(res as _, &rl) } < 0 {
            fail(ew, STEP_RLIMIT, errno());
        }
    }
}

/// Receive one message from the parent into `buf`; end of file, an error
/// or a message that fills `buf` (it may have been cut) fail the step.
fn recv_msg<'a>(p: &ChildPlan, buf: &'a mut [u8]) -> &'a [u8] {
    // SAFETY: recv into a stack buffer of the length passed.
    let n = unsafe { libc::recv(p.sync_rd, buf.as_mut_ptr() as *mut c_void, buf.len(), 0) };
    if n <= 0 {
        fail(p.err_wr, STEP_SYNC, libc::EPIPE);
    }
    if n as usize >= buf.len() {
        fail(p.err_wr, STEP_SYNC, libc::EMSGSIZE);
    }
    &buf[..n as usize]
}

/// [`MountOp::AwaitWalk`]: make the placeholders the parent sends, if
/// any, in a tmpfs of our own ([`PlaceholderLayer`]), until `w`. Returns
/// whether the layer was made.
fn await_walk(p: &ChildPlan, layer: Option<PlaceholderLayer>) -> Result<bool, c_int> {
    let mut buf = [0u8; PROTECT_MSG_MAX + 1];
    let mut made = false;
    loop {
        let msg = recv_msg(p, &mut buf);
        let mut rest = match msg.split_first() {
            Some((b'w', [])) => return Ok(made),
            Some((b'q', rest)) => rest,
            _ => return Err(libc::EPROTO),
        };
        let Some(layer) = layer else {
            return Err(libc::EPROTO);
        };
        if !made {
            placeholder_tmpfs(layer)?;
            made = true;
        }
        while let [kind, m0, m1, tail @ ..] = rest {
            let Some(end) = tail.iter().position(|&b| b == 0) else {
                return Err(libc::EPROTO);
            };
            let Ok(path) = CStr::from_bytes_with_nul(&tail[..=end]) else {
                return Err(libc::EPROTO);
            };
            let mode = u16::from_le_bytes([*m0, *m1]) as libc::mode_t;
            // SAFETY: *at calls on our own tmpfs with a NUL-terminated
            // relative path from the parent's walk.
            let r = unsafe {
                match *kind {
                    PH_PARENT | PH_DIR => {
                        let r = libc::mkdirat(layer.fd, path.as_ptr(), 0o700);
                        if r < 0 && errno() != libc::EEXIST {
                            r
                        } else {
                            libc::fchmodat(layer.fd, path.as_ptr(), mode, 0)
                        }
                    }
                    PH_FILE => {
                        let fd = libc::openat(
                            layer.fd,
                            path.as_ptr(),
                            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o400,
                        );
                        if fd < 0 {
                            fd
                        } else {
                            libc::close(fd);
                            libc::fchmodat(layer.fd, path.as_ptr(), mode, 0)
                        }
                    }
                    _ => return Err(libc::EPROTO),
                }
            };
            if r < 0 {
                return Err(errno());
            }
            rest = &tail[end + 1..];
        }
        if !rest.is_empty() {
            return Err(libc::EPROTO);
        }
    }
}

/// A new tmpfs (new mount API), attached over `layer.onto` and held in
/// `layer.fd`.
fn placeholder_tmpfs(layer: PlaceholderLayer) -> Result<(), c_int> {
    // SAFETY: fsopen/fsconfig/fsmount/move_mount on descriptors this
    // function owns, with NUL-terminated constant strings.
    unsafe {
        let fs = libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) as c_int;
        if fs < 0 {
            return Err(errno());
        }
        let set = |k: &CStr, v: &CStr| {
            libc::syscall(
                libc::SYS_fsconfig,
                fs,
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        let mnt = if set(c"mode", c"0755") < 0
            || set(c"size", c"1m") < 0
            || libc::syscall(
                libc::SYS_fsconfig,
                fs,
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<c_char>(),
                std::ptr::null::<c_void>(),
                0,
            ) < 0
        {
            -1
        } else {
            libc::syscall(
                libc::SYS_fsmount,
                fs,
                FSMOUNT_CLOEXEC,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            ) as c_int
        };
        let e = errno();
        libc::close(fs);
        if mnt < 0 {
            return Err(e);
        }
        let r = if libc::dup3(mnt, layer.fd, libc::O_CLOEXEC) < 0 {
            -1
        } else {
            libc::syscall(
                libc::SYS_move_mount,
                layer.fd,
                c"".as_ptr(),
                layer.onto,
                c"".as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
            ) as c_int
        };
        let e = errno();
        libc::close(mnt);
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// [`MountOp::ProtectReceived`]: bind each protected path the parent sends
/// onto itself, read-only (recursively), as it arrives.
fn protect_received(p: &ChildPlan) {
    let ew = p.err_wr;
    let mut buf = [0u8; PROTECT_MSG_MAX + 1];
    let mut k: u32 = 0;
    loop {
        let msg = recv_msg(p, &mut buf);
        let mut rest = match msg.split_first() {
            Some((b'P', [])) => return,
            Some((b'p', rest)) => rest,
            _ => fail(ew, STEP_SYNC, libc::EPROTO),
        };
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                fail(ew, STEP_SYNC, libc::EPROTO)
            };
            let Ok(path) = CStr::from_bytes_with_nul(&rest[..=end]) else {
                fail(ew, STEP_SYNC, libc::EPROTO)
            };
            let bound = sys_mount(
                path.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                (libc::MS_BIND | libc::MS_REC) as c_ulong,
                std::ptr::null(),
            );
            if bound < 0 || setattr(path, MOUNT_ATTR_RDONLY, true) < 0 {
                fail(ew, STEP_PROTECT + k, errno());
            }
            k += 1;
            rest = &rest[end + 1..];
        }
    }
}

/// Send `msg` as one message (no SIGPIPE if the child is gone).
pub(crate) fn send_msg(sock: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: send from a live buffer of the length passed.
    let n = unsafe {
        libc::send(
            sock,
            msg.as_ptr() as *const c_void,
            msg.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close, first thing in init, every descriptor it got from the spawning
/// process except this run's own. The spawner may be running other
/// sandboxes on other threads: their descriptors (an overlay work dir's
/// `flock` among them, see `airlock_fs::RunWorkDir`) must not live on in
/// this run's processes while it sets up, nor reach its network helper.
fn close_inherited(p: &ChildPlan) {
    use std::os::fd::AsRawFd;
    let ruleset = p.landlock.as_ref().map_or(-1, |l| l.ruleset.as_raw_fd());
    let mut keep = [-1 as c_int; KEEP_MAX];
    let fixed = [
        0,
        1,
        2,
        p.stdio[0],
        p.stdio[1],
        p.stdio[2],
        p.sync_rd,
        p.net_sock[0],
        p.net_sock[1],
        p.lifeline_rd,
        p.err_wr,
        p.status_wr,
        p.work_lock,
        p.notify_sock,
        ruleset,
    ];
    keep[..fixed.len()].copy_from_slice(&fixed);
    // A detached tree the parent opened (the idmapped workspace).
    let mut n = fixed.len();
    for op in &p.ops {
        if let MountOp::AttachOver { fd, .. } = op {
            if n < keep.len() {
                keep[n] = *fd;
                n += 1;
            }
        }
    }
    close_all_but(&keep[..n]);
}

/// Most descriptors [`close_all_but`] keeps.
const KEEP_MAX: usize = 24;

/// Close every descriptor except those in `keep` (at most [`KEEP_MAX`];
/// negative entries are ignored). Async-signal-safe.
fn close_all_but(keep: &[c_int]) {
    let mut k = [-1 as c_int; KEEP_MAX];
    let n = keep.len().min(k.len());
    k[..n].copy_from_slice(&keep[..n]);
    k[..n].sort_unstable();
    let mut from: c_int = 0;
    for &fd in &k[..n] {
        if fd < from {
            continue;
        }
        if fd > from {
            // SAFETY: close_range on an integer range.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, (fd - 1) as u32, 0u32) };
        }
        from = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from as u32, c_int::MAX as u32, 0u32) };
}

/// Let `pid` (init's network helper) run on any CPU but the one init is
/// on. The helper's work (making a network namespace, 0.4-0.6 ms) needs no
/// more than init's while init builds the root, and a scheduler that keeps
/// a new task on its parent's CPU (as this project's reference VM does,
/// while the other CPU idles) would otherwise run it only when init next
/// blocks, after the root is built. A hint only: any failure is ignored.
fn off_this_cpu(pid: libc::pid_t) {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: a zeroed cpu_set_t on the stack, filled and read by the
    // affinity system calls of the size passed; CPU_CLR and CPU_COUNT only
    // touch that set; sched_getcpu reads the vDSO or makes a system call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut set) != 0 {
            return;
        }
        let here = libc::sched_getcpu();
        if here < 0 || here as usize >= libc::CPU_SETSIZE as usize {
            return;
        }
        libc::CPU_CLR(here as usize, &mut set);
        if libc::CPU_COUNT(&set) > 0 {
            libc::sched_setaffinity(pid, size, &set);
        }
    }
}

/// The network namespace helper (see [`ChildPlan::unshare_net`]): make the
/// namespace, bring loopback up, send its descriptor to init, and exit.
/// Shares init's memory: only raw system calls on plan data and its stack.
extern "C" fn net_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the plan init passed to clone; init keeps it (and
    // this process's stack) alive and unchanged for as long as it runs.
    let p = unsafe { &*(arg as *const ChildPlan) };
    // This process shares init's memory, `errno` included, and runs while
    // init does: every call here is a raw system call (rustix's linux_raw
    // backend) that returns its error instead of setting `errno`, so that
    // neither process can report the other's error as its own.
    let ew = p.err_wr;
    // SAFETY: our copy of init's end of the socket pair, not used here.
    unsafe { rustix::io::close(p.net_sock[0]) };
    record(p.phases, Phase::NetStarted);
    // SAFETY: unshares the network namespace only; no descriptor table is
    // unshared.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
    {
        fail(ew, STEP_NETNS, e.raw_os_error());
    }
    if p.loopback {
        if let Err(e) = loopback_up() {
            fail(ew, STEP_LOOPBACK, e.raw_os_error());
        }
    }
    // Its descriptor goes to init (joining by pidfd would need ptrace
    // access to this process, whose memory, shared with init, is not
    // dumpable once init has changed its uid).
    let ns = match rustix::fs::open(
        c"/proc/self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => fail(ew, STEP_NETNS, e.raw_os_error()),
    };
    // The descriptor in flight keeps the namespace alive: no need to wait
    // for init (whose end of the socket other sandboxes started at the
    // same time may hold copies of, so its hang-up might never be seen
    // here).
    record(p.phases, Phase::NetReady);
    let sent = {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        let fds = [std::os::fd::AsFd::as_fd(&ns)];
        cmsg.push(SendAncillaryMessage::ScmRights(&fds));
        // SAFETY: init's socket end, held open by the plan for our life.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(p.net_sock[1]) };
        rustix::net::sendmsg(
            sock,
            &[std::io::IoSlice::new(b"n")],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        )
    };
    // SAFETY: ends this process without running anything of the Rust
    // runtime it shares with init.
    unsafe { libc::_exit(if sent == Ok(1) { 0 } else { 1 }) }
}

/// Entry of the command process started by `clone` in [`child_main`].
extern "C" fn command_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the plan init passed to clone; init is suspended
    // (CLONE_VFORK) until this process execs or exits, so the plan stays
    // alive and unchanged.
    let p = unsafe { &*(arg as *const ChildPlan) };
    command_main(p)
}

/// The command process: default signal state, new session, stdio, exec.
fn command_main(p: &ChildPlan) -> ! {
    let ew = p.err_wr;
    // SAFETY: raw system calls on plan-owned data; ends in execve or _exit.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let empty: libc::sigset_t = {
            let mut s: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut s);
            s
        };
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setsid() < 0 {
            fail(ew, STEP_SETSID, errno());
        }
        for (i, &fd) in p.stdio.iter().enumerate() {
            if fd >= 0 && fd != i as c_int && libc::dup2(fd, i as c_int) < 0 {
                fail(ew, STEP_STDIO, errno());
            }
        }
        // Everything but 0/1/2 is closed at exec (the error pipe included,
        // which tells the parent the exec happened).
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            c_int::MAX as u32,
            CLOSE_RANGE_CLOEXEC,
        );
        record(p.phases, Phase::Exec);
        let mut last = libc::ENOENT;
        for path in &p.exec_paths {
            libc::execve(path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
            let e = errno();
            if e != libc::ENOENT && e != libc::ENOTDIR {
                last = e;
            }
        }
        fail(ew, STEP_EXEC, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn peer_pidfd_names_this_process() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pidfd = match peer_pidfd(a.as_fd()) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                eprintln!("SKIPPED: SO_PEERPIDFD needs Linux 6.5+ ({e})");
                return;
            }
            Err(e) => panic!("peer_pidfd: {e}"),
        };
        // The pidfd's fdinfo names the peer's pid, which is us.
        use std::os::fd::AsRawFd;
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
        let pid_line = info
            .lines()
            .find(|l| l.starts_with("Pid:"))
            .expect("a pidfd has a Pid: line");
        assert_eq!(
            pid_line.split_whitespace().nth(1).unwrap(),
            std::process::id().to_string()
        );
        // Signal 0 through it: the peer is alive.
        pidfd_signal(pidfd.as_raw_fd(), 0).unwrap();
        drop(b);
    }

    #[test]
    fn peer_pidfd_refuses_a_non_socket() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = peer_pidfd(f.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
    }
}
