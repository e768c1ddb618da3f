//! The seccomp-bpf deny list, compiled with `seccompiler` once per process.
//!
//! Two filters are installed: the deny list (its matches are turned into
//! `SECCOMP_RET_USER_NOTIF`, so the supervisor records each attempt and
//! answers `EPERM`; or plain `EPERM` when notification is unavailable), and a
//! filter answering `ENOSYS` to `clone3` and `openat2` (their flags and mode
//! live in memory a BPF filter cannot read, so libc falls back to `clone`
//! and `openat`, whose arguments are checked). Before the syscall dispatch,
//! the architecture is checked (any non-native ABI, e.g. i386 via
//! `int 0x80`, gets `EPERM`) and x32 system call numbers (bit `0x40000000`)
//! get `EPERM`. Setting setuid/setgid bits (chmod family, creating modes of
//! open/openat/creat/mknod) is refused too.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use crate::SandboxError;

const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `fchmodat2` (Linux 6.6; the same number on every architecture).
const SYS_FCHMODAT2: i64 = 452;
/// `__O_TMPFILE` (without the `O_DIRECTORY` part of `O_TMPFILE`).
const TMPFILE_BIT: u64 = 0o20_000_000;

/// Namespace flags refused in `clone` and `unshare`.
pub const NAMESPACE_FLAGS: &[(u64, &str)] = &[
    (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
    (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
    (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
    (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
    (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
    (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
    (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
    (0x80, "CLONE_NEWTIME"),
];

/// System calls denied outright (number, name).
pub const DENIED_SYSCALLS: &[(i64, &str)] = &[
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_acct, "acct"),
];

/// Socket families allowed; everything else is refused for `socket` and
/// `socketpair`. AF_NETLINK is refused too (route reads included): nothing a
/// build needs depends on it (glibc's `getaddrinfo` falls back when it
/// fails), and it is a large kernel attack surface.
pub const ALLOWED_FAMILIES: &[i32] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

/// Terminal ioctls refused (injecting input, Linux console control).
#[allow(clippy::unnecessary_cast)] // the ioctl type differs between libcs
pub const DENIED_IOCTLS: &[(u64, &str)] = &[
    (libc::TIOCSTI as u64, "TIOCSTI"),
    (libc::TIOCLINUX as u64, "TIOCLINUX"),
];

/// The compiled programs.
#[derive(Clone)]
pub struct Programs {
    /// The deny list plus `connect`, for use with user notification only:
    /// the supervisor lets each `connect` continue and records those the
    /// sandbox refuses (see [`Programs::deny_notify`]).
    pub deny_and_connect: Vec<libc::sock_filter>,
    /// `clone3` → ENOSYS.
    pub clone3: Vec<libc::sock_filter>,
    deny_udp: bool,
}

impl Programs {
    /// The deny list with its `EPERM` returns turned into user notifications.
    pub fn deny_notify(&self) -> Vec<libc::sock_filter> {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let mut out = self.deny_and_connect.clone();
        for i in out.iter_mut() {
            if i.code == RET && i.k == eperm {
                i.k = RET_USER_NOTIF;
            }
        }
        out
    }

    /// The deny list alone (matches return EPERM), for a kernel without
    /// user notification. Compiled on first use: the usual run never needs
    /// it, and compiling is most of what preparing the programs costs.
    pub fn deny(&self) -> Result<Vec<libc::sock_filter>, SandboxError> {
        static PLAIN: OnceLock<Result<Vec<libc::sock_filter>, String>> = OnceLock::new();
        static NO_UDP: OnceLock<Result<Vec<libc::sock_filter>, String>> = OnceLock::new();
        let cell = if self.deny_udp { &NO_UDP } else { &PLAIN };
        cell.get_or_init(|| {
            let rules = rules(self.deny_udp)?;
            let nrs: Vec<i64> = rules.keys().copied().collect();
            Ok(harden(compile(rules, libc::EPERM)?, Some(&nrs)))
        })
        .clone()
        .map_err(bug)
    }
}

fn bug(why: String) -> SandboxError {
    SandboxError::Layer {
        layer: crate::Layer::Seccomp,
        why,
        hint: "report this as a bug".into(),
    }
}

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    val: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, len, op, val)
}

fn e(e: seccompiler::BackendError) -> String {
    e.to_string()
}

/// The deny list's rules, by system call number.
fn rules(deny_udp: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in DENIED_SYSCALLS {
        rules.insert(*nr, vec![]);
    }
    // clone / unshare with any namespace flag (clone's flags are argument 0
    // on x86_64 and aarch64; unshare's only argument is the flags). Every
    // namespace flag is in the low 32 bits, and the kernel ignores the high
    // ones in clone (`lower_32_bits(clone_flags)`) and refuses them in
    // unshare (EINVAL): comparing the low half is exact, and half the code
    // of a 64-bit comparison.
    let mut ns_rules = Vec::new();
    for (flag, _) in NAMESPACE_FLAGS {
        ns_rules.push(
            SeccompRule::new(vec![cond(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .map_err(e)?])
            .map_err(e)?,
        );
    }
    rules.insert(libc::SYS_clone, ns_rules.clone());
    rules.insert(libc::SYS_unshare, ns_rules);
    // socket families: anything but the allowed ones, as a single rule
    // (family != each allowed one). One rule per refused family made the
    // program several hundred instructions longer, and the kernel checks
    // the whole program when it is installed (JIT, and the per-syscall
    // "always allowed" cache it emulates the filter for), once per run.
    let mut not_allowed = Vec::new();
    for fam in ALLOWED_FAMILIES {
        not_allowed
            .push(cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *fam as u64).map_err(e)?);
    }
    let fam_rules = vec![SeccompRule::new(not_allowed).map_err(e)?];
    let mut socket_rules = fam_rules.clone();
    if deny_udp {
        for fam in [libc::AF_INET, libc::AF_INET6] {
            socket_rules.push(
                SeccompRule::new(vec![
                    cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, fam as u64).map_err(e)?,
                    cond(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(0xf),
                        libc::SOCK_DGRAM as u64,
                    )
                    .map_err(e)?,
                ])
                .map_err(e)?,
            );
        }
    }
    rules.insert(libc::SYS_socket, socket_rules);
    rules.insert(libc::SYS_socketpair, fam_rules);
    // ioctl(fd, TIOCSTI/TIOCLINUX).
    let mut ioctl_rules = Vec::new();
    for (req, _) in DENIED_IOCTLS {
        ioctl_rules.push(
            SeccompRule::new(vec![cond(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                *req,
            )
            .map_err(e)?])
            .map_err(e)?,
        );
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    // No setuid/setgid bits: whatever the sandbox writes directly (a
    // write-through workspace, --allow-write) must not become a program
    // that runs as its owner or group for someone else. (Staged files have
    // them stripped at commit.) By mode argument: chmod and friends always;
    // open/openat/creat when they create (O_CREAT or O_TMPFILE); mknod.
    const SUID_SGID: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];
    let mode_rules = |arg: u8| -> Result<Vec<SeccompRule>, String> {
        SUID_SGID
            .iter()
            .map(|bit| {
                SeccompRule::new(vec![cond(
                    arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(*bit),
                    *bit,
                )
                .map_err(e)?])
                .map_err(e)
            })
            .collect()
    };
    let create_rules = |flags_arg: u8, mode_arg: u8| -> Result<Vec<SeccompRule>, String> {
        let mut v = vec![];
        for create in [libc::O_CREAT as u64, TMPFILE_BIT] {
            for bit in SUID_SGID {
                v.push(
                    SeccompRule::new(vec![
                        cond(
                            flags_arg,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::MaskedEq(create),
                            create,
                        )
                        .map_err(e)?,
                        cond(
                            mode_arg,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::MaskedEq(bit),
                            bit,
                        )
                        .map_err(e)?,
                    ])
                    .map_err(e)?,
                );
            }
        }
        Ok(v)
    };
    rules.insert(libc::SYS_fchmod, mode_rules(1)?);
    rules.insert(libc::SYS_fchmodat, mode_rules(2)?);
    rules.insert(SYS_FCHMODAT2, mode_rules(2)?);
    rules.insert(libc::SYS_mknodat, mode_rules(2)?);
    rules.insert(libc::SYS_openat, create_rules(2, 3)?);
    #[cfg(target_arch = "x86_64")]
    {
        rules.insert(libc::SYS_chmod, mode_rules(1)?);
        rules.insert(libc::SYS_creat, mode_rules(1)?);
        rules.insert(libc::SYS_mknod, mode_rules(1)?);
        rules.insert(libc::SYS_open, create_rules(1, 2)?);
    }

    Ok(rules)
}

/// seccompiler's program for `rules` on this architecture: what they match
/// gets `errno`, everything else is allowed.
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
) -> Result<seccompiler::BpfProgram, String> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().map_err(e)?;
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(e)?;
    f.try_into().map_err(e)
}

fn build(deny_udp: bool) -> Result<Programs, String> {
    let mut rules = rules(deny_udp)?;
    rules.insert(libc::SYS_connect, vec![]);
    let nrs: Vec<i64> = rules.keys().copied().collect();
    let deny_and_connect = harden(compile(rules, libc::EPERM)?, Some(&nrs));
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, vec![]);
    // openat2's mode lives in a struct the filter cannot read (see the
    // setuid rules above); callers fall back to openat on ENOSYS.
    clone3.insert(libc::SYS_openat2, vec![]);
    Ok(Programs {
        deny_and_connect,
        clone3: harden(compile(clone3, libc::ENOSYS)?, None),
        deny_udp,
    })
}

/// Convert to libc's struct. With `listed` (the deny list, whose system
/// call numbers it gives): answer EPERM (turned into a notification, see
/// [`Programs::deny_notify`]) to foreign architectures instead of killing,
/// refuse x32 system call numbers, and put [`allow_unlisted`] before
/// seccompiler's rules. Without (the `clone3` filter): let foreign and x32
/// calls pass to the deny list. The kernel runs every filter and takes the
/// strictest answer, and ERRNO outranks USER_NOTIF: an EPERM here would
/// hide the deny list's notification, so the attempt would go unreported.
fn harden(p: seccompiler::BpfProgram, listed: Option<&[i64]>) -> Vec<libc::sock_filter> {
    let abi_checks = listed.is_some();
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut out: Vec<libc::sock_filter> = p
        .into_iter()
        .map(|i| ins(i.code, i.jt, i.jf, i.k))
        .collect();
    // seccompiler starts with: ld arch; jeq ARCH, +1; ret KILL_PROCESS.
    if out.len() > 3 && out[2].code == RET {
        if !abi_checks {
            out[2].k = RET_ALLOW;
            return out;
        }
        out[2].k = eperm;
        // ld nr; jge X32_SYSCALL_BIT → ret EPERM
        let x32 = [
            ins(LD_ABS, 0, 0, 0),
            ins(JGE, 0, 1, X32_SYSCALL_BIT),
            ins(RET, 0, 0, eperm),
        ];
        out.splice(3..3, x32);
        // After the x32 check the accumulator holds the system call number.
        let search = allow_unlisted(listed.unwrap_or_default());
        out.splice(6..6, search);
    }
    out
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
/// Marks a jump to the end of the [`allow_unlisted`] block, patched there.
const TO_RULES: u32 = u32::MAX;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A binary search over the system call number in the accumulator: calls
/// not in `listed` return ALLOW at once, listed ones go on to the rules
/// after this block. seccompiler checks the numbers one after another; the
/// kernel, when a filter is installed, runs the program for every system
/// call number to find those always allowed (and, per run, that walk was
/// most of the cost of installing the filter). Lookups take about eight
/// steps instead of up to a hundred.
fn allow_unlisted(listed: &[i64]) -> Vec<libc::sock_filter> {
    let mut nrs: Vec<u32> = listed.iter().map(|n| *n as u32).collect();
    nrs.sort_unstable();
    nrs.dedup();
    let mut out = search(&nrs);
    let len = out.len();
    for (i, x) in out.iter_mut().enumerate() {
        if x.code == JA && x.k == TO_RULES {
            x.k = (len - i - 1) as u32;
        }
    }
    out
}

/// Code for "is the accumulator one of `nrs`": listed → `ja TO_RULES`,
/// otherwise return ALLOW.
fn search(nrs: &[u32]) -> Vec<libc::sock_filter> {
    if nrs.len() <= 3 {
        // jeq a → hit; jeq b → hit; ...; ret ALLOW; hit: ja TO_RULES
        let n = nrs.len();
        let mut v: Vec<libc::sock_filter> = nrs
            .iter()
            .enumerate()
            .map(|(i, nr)| ins(JEQ, (n - i) as u8, 0, *nr))
            .collect();
        v.push(ins(RET, 0, 0, RET_ALLOW));
        v.push(ins(JA, 0, 0, TO_RULES));
        return v;
    }
    let mid = nrs.len() / 2;
    let (low, high) = (search(&nrs[..mid]), search(&nrs[mid..]));
    let mut v = Vec::with_capacity(low.len() + high.len() + 2);
    if let Ok(skip) = u8::try_from(low.len()) {
        // jge pivot → high (past the low half); low half; high half
        v.push(ins(JGE, skip, 0, nrs[mid]));
    } else {
        v.push(ins(JGE, 0, 1, nrs[mid]));
        v.push(ins(JA, 0, 0, low.len() as u32));
    }
    v.extend(low);
    v.extend(high);
    v
}

static PLAIN: OnceLock<Result<Programs, String>> = OnceLock::new();
static NO_UDP: OnceLock<Result<Programs, String>> = OnceLock::new();

/// The compiled programs (compiled on first use, then reused).
pub fn programs(deny_udp: bool) -> Result<Programs, SandboxError> {
    let cell = if deny_udp { &NO_UDP } else { &PLAIN };
    cell.get_or_init(|| build(deny_udp)).clone().map_err(bug)
}

/// Name of a system call in the deny list (for violation reports).
pub fn syscall_name(nr: i64) -> String {
    for (n, name) in DENIED_SYSCALLS {
        if *n == nr {
            return (*name).to_string();
        }
    }
    match nr {
        libc::SYS_clone => "clone(namespace flags)".into(),
        libc::SYS_unshare => "unshare(namespace flags)".into(),
        libc::SYS_socket => "socket".into(),
        libc::SYS_socketpair => "socketpair".into(),
        libc::SYS_ioctl => "ioctl".into(),
        libc::SYS_fchmod | libc::SYS_fchmodat | SYS_FCHMODAT2 => "chmod(setuid/setgid)".into(),
        libc::SYS_openat | libc::SYS_mknodat => "create(setuid/setgid)".into(),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chmod => "chmod(setuid/setgid)".into(),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open | libc::SYS_creat | libc::SYS_mknod => "create(setuid/setgid)".into(),
        libc::SYS_clone3 => "clone3".into(),
        n => format!("syscall {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a classic BPF seccomp program on (arch, nr, args) the way the
    /// kernel does, for the instructions seccompiler and `harden` emit.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        run_counted(prog, arch, nr, args).0
    }

    /// As [`run`], with the number of instructions executed.
    fn run_counted(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> (u32, usize) {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr as u32,
                4 => arch,
                o if (16..64).contains(&o) => {
                    let a = args[((o - 16) / 8) as usize];
                    if (o - 16) % 8 == 0 {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                o => panic!("load at offset {o}"),
            }
        };
        let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            steps += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => acc = word(i.k),
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= i.k,
                c if c == libc::BPF_RET | libc::BPF_K => return (i.k, steps),
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        x if x == libc::BPF_JEQ => acc == i.k,
                        x if x == libc::BPF_JGT => acc > i.k,
                        x if x == libc::BPF_JGE => acc >= i.k,
                        x if x == libc::BPF_JSET => acc & i.k != 0,
                        x => panic!("jump op {x:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn every_socket_family_but_unix_inet_inet6_is_refused() {
        let arch = crate::exec::native_arch();
        for udp_denied in [false, true] {
            let p = programs(udp_denied).unwrap();
            for prog in [&p.deny().unwrap(), &p.deny_and_connect] {
                for nr in [libc::SYS_socket, libc::SYS_socketpair] {
                    for fam in (0u64..=70).chain([0xffff_ffff, 0x1_0000_0001, 0x7fff_ffff]) {
                        let allowed = [1u64, 2, 10].contains(&(fam & 0xffff_ffff));
                        let r = run(prog, arch, nr, [fam, libc::SOCK_STREAM as u64, 0, 0, 0, 0]);
                        assert_eq!(r == RET_ALLOW, allowed, "nr {nr} family {fam:#x}: {r:#x}");
                    }
                }
                // UDP only where it is denied.
                let r = run(
                    prog,
                    arch,
                    libc::SYS_socket,
                    [2, libc::SOCK_DGRAM as u64, 0, 0, 0, 0],
                );
                assert_eq!(r == RET_ALLOW, !udp_denied);
            }
            // Unrelated calls pass; namespace flags do not.
            let deny = p.deny().unwrap();
            let r = run(&deny, arch, libc::SYS_getpid, [0; 6]);
            assert_eq!(r, RET_ALLOW);
            let r = run(
                &deny,
                arch,
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            );
            assert_eq!(r, RET_ERRNO | libc::EPERM as u32);
        }
    }

    #[test]
    fn the_deny_list_stays_short() {
        // The kernel checks and JITs the whole program on every run.
        let p = programs(false).unwrap();
        assert!(
            p.deny_and_connect.len() < 600,
            "{}",
            p.deny_and_connect.len()
        );
    }

    #[test]
    fn every_system_call_number_gets_its_answer_and_unlisted_ones_quickly() {
        // The kernel runs the program for every number when installing it;
        // unlisted calls must be answered by the binary search, and every
        // number must get the same answer as the rules alone would give.
        let arch = crate::exec::native_arch();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let denied: Vec<i64> = DENIED_SYSCALLS.iter().map(|(n, _)| *n).collect();
        let with_rules = [
            libc::SYS_clone,
            libc::SYS_unshare,
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_ioctl,
            libc::SYS_fchmod,
            libc::SYS_fchmodat,
            SYS_FCHMODAT2,
            libc::SYS_mknodat,
            libc::SYS_openat,
            libc::SYS_chmod,
            libc::SYS_creat,
            libc::SYS_mknod,
            libc::SYS_open,
        ];
        for udp in [false, true] {
            let p = programs(udp).unwrap();
            for (prog, extra) in [
                (&p.deny().unwrap(), None),
                (&p.deny_and_connect, Some(libc::SYS_connect)),
            ] {
                for nr in 0..1024i64 {
                    let (r, steps) = run_counted(prog, arch, nr, [0; 6]);
                    let listed = denied.contains(&nr) || extra == Some(nr);
                    // With all-zero arguments only socket(AF_UNSPEC) and
                    // socketpair(AF_UNSPEC) are refused among the rules.
                    let refused = listed || nr == libc::SYS_socket || nr == libc::SYS_socketpair;
                    assert_eq!(r, if refused { eperm } else { RET_ALLOW }, "nr {nr}");
                    if !listed && !with_rules.contains(&nr) {
                        assert!(steps <= 16, "nr {nr}: {steps} steps");
                    }
                }
                // A rule behind the search still applies: every namespace
                // flag, alone, among others or beside high bits (which
                // clone ignores), in clone and in unshare.
                for nr in [libc::SYS_clone, libc::SYS_unshare] {
                    for (flag, name) in NAMESPACE_FLAGS {
                        for extra in [0, libc::SIGCHLD as u64 | libc::CLONE_FILES as u64, 1 << 32] {
                            let r = run(prog, arch, nr, [flag | extra, 0, 0, 0, 0, 0]);
                            assert_eq!(r, eperm, "{nr} {name} {extra:#x}");
                        }
                    }
                    let plain = libc::SIGCHLD as u64 | libc::CLONE_FILES as u64 | (1 << 40);
                    assert_eq!(run(prog, arch, nr, [plain, 0, 0, 0, 0, 0]), RET_ALLOW);
                }
                let r = run(prog, arch, libc::SYS_fchmod, [3, 0o4755, 0, 0, 0, 0]);
                assert_eq!(r, eperm);
            }
        }
    }
}
