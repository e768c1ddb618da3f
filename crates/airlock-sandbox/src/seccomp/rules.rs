//! The deny list's rules and their compilation with `seccompiler`, plus
//! the checks put in front of seccompiler's code (see [`harden`]). The
//! crate's build script compiles this file too, to make the programs for
//! the target ahead of time (see `super`): nothing here may refer to the
//! rest of the crate.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `fchmodat2` (Linux 6.6; the same number on every architecture).
pub const SYS_FCHMODAT2: i64 = 452;
/// `__O_TMPFILE` (without the `O_DIRECTORY` part of `O_TMPFILE`).
pub const TMPFILE_BIT: u64 = 0o20_000_000;

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

pub fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    val: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, len, op, val)
}

pub fn e(e: seccompiler::BackendError) -> String {
    e.to_string()
}

/// The deny list's rules, by system call number.
pub fn rules(deny_udp: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
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
pub fn compile(
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

/// The two programs every run installs: the deny list plus `connect` (for
/// user notification), and the `clone3`/`openat2` → ENOSYS filter.
pub fn programs(
    deny_udp: bool,
) -> Result<(Vec<libc::sock_filter>, Vec<libc::sock_filter>), String> {
    let mut rules = rules(deny_udp)?;
    rules.insert(libc::SYS_connect, vec![]);
    let nrs: Vec<i64> = rules.keys().copied().collect();
    let deny_and_connect = harden(compile(rules, libc::EPERM)?, Some(&nrs));
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, vec![]);
    // openat2's mode lives in a struct the filter cannot read (see the
    // setuid rules above); callers fall back to openat on ENOSYS.
    clone3.insert(libc::SYS_openat2, vec![]);
    Ok((
        deny_and_connect,
        harden(compile(clone3, libc::ENOSYS)?, None),
    ))
}

/// The deny list alone, its matches answered EPERM.
pub fn deny(deny_udp: bool) -> Result<Vec<libc::sock_filter>, String> {
    let rules = rules(deny_udp)?;
    let nrs: Vec<i64> = rules.keys().copied().collect();
    Ok(harden(compile(rules, libc::EPERM)?, Some(&nrs)))
}

/// Convert to libc's struct. With `listed` (the deny list, whose system
/// call numbers it gives): answer EPERM (turned into a notification, see
/// [`Programs::deny_notify`]) to foreign architectures instead of killing,
/// refuse x32 system call numbers, and put [`allow_unlisted`] before
/// seccompiler's rules. Without (the `clone3` filter): let foreign and x32
/// calls pass to the deny list. The kernel runs every filter and takes the
/// strictest answer, and ERRNO outranks USER_NOTIF: an EPERM here would
/// hide the deny list's notification, so the attempt would go unreported.
pub fn harden(p: seccompiler::BpfProgram, listed: Option<&[i64]>) -> Vec<libc::sock_filter> {
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

pub const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
pub const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
pub const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
/// Marks a jump to the end of the [`allow_unlisted`] block, patched there.
pub const TO_RULES: u32 = u32::MAX;

pub fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A binary search over the system call number in the accumulator: calls
/// not in `listed` return ALLOW at once, listed ones go on to the rules
/// after this block. seccompiler checks the numbers one after another; the
/// kernel, when a filter is installed, runs the program for every system
/// call number to find those always allowed (and, per run, that walk was
/// most of the cost of installing the filter). Lookups take about eight
/// steps instead of up to a hundred.
pub fn allow_unlisted(listed: &[i64]) -> Vec<libc::sock_filter> {
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
pub fn search(nrs: &[u32]) -> Vec<libc::sock_filter> {
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
