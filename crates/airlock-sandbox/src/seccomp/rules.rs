//! The deny list's rules, their compilation with `seccompiler`, and the
//! reshaping of seccompiler's program into the one filter (see [`build`]). The
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

/// seccompiler's program for `rules` on this architecture, as libc's
/// struct: what they match gets EPERM, everything else is allowed.
pub fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<Vec<libc::sock_filter>, String> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().map_err(e)?;
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(e)?;
    let p: seccompiler::BpfProgram = f.try_into().map_err(e)?;
    Ok(p.into_iter()
        .map(|i| ins(i.code, i.jt, i.jf, i.k))
        .collect())
}

/// The program every run installs: the deny list plus `connect` (for user
/// notification), with `clone3` and `openat2` answered `ENOSYS`.
pub fn programs(deny_udp: bool) -> Result<Vec<libc::sock_filter>, String> {
    let mut rules = rules(deny_udp)?;
    rules.insert(libc::SYS_connect, vec![]);
    build(rules)
}

/// The deny list alone (no `connect`), its matches answered EPERM, with
/// `clone3` and `openat2` answered `ENOSYS`.
pub fn deny(deny_udp: bool) -> Result<Vec<libc::sock_filter>, String> {
    build(rules(deny_udp)?)
}

/// Calls answered `ENOSYS` (no other answer would let libc fall back):
/// `clone3`, whose flags live in memory a BPF filter cannot read, so libc
/// falls back to `clone`, whose flags are checked; `openat2`, whose mode
/// lives in a struct (see the setuid rules above), so callers fall back to
/// `openat`.
pub const ENOSYS_SYSCALLS: &[i64] = &[libc::SYS_clone3, libc::SYS_openat2];

/// seccompiler's program for `rules`, reshaped (see [`Graph`]) into one
/// filter that:
/// - answers EPERM (turned into a notification, see `Programs::deny_notify`)
///   to foreign architectures (i386 via `int 0x80`) instead of killing, and
///   to x32 system call numbers;
/// - answers [`ENOSYS_SYSCALLS`] `ENOSYS`;
/// - finds the system call number by binary search: calls not listed are
///   allowed in about eight steps, listed ones go straight to their rules.
///
/// seccompiler checks the numbers one after another, and wraps each rule
/// in jumps. The kernel converts and JITs the whole program when a run
/// installs it, and runs it for every system call number to find those
/// always allowed: its length is paid on every run.
pub fn build(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<Vec<libc::sock_filter>, String> {
    let nrs: Vec<u32> = rules.keys().map(|n| *n as u32).collect();
    let raw = compile(rules)?;
    let mut g = Graph::default();
    let eperm = g.add(Node::Ret(RET_ERRNO | libc::EPERM as u32));
    let (arch, body) = split_arch_check(&raw)?;
    let mut leaves: Vec<(u32, usize)> = Vec::new();
    let mut imported = BTreeMap::new();
    for nr in nrs {
        let at = entry(&raw, body, nr)?;
        leaves.push((nr, g.import(&raw, at, &mut imported)?));
    }
    let enosys = g.add(Node::Ret(RET_ERRNO | libc::ENOSYS as u32));
    for nr in ENOSYS_SYSCALLS {
        if leaves.iter().any(|(n, _)| *n == *nr as u32) {
            return Err(format!(
                "system call {nr} is both denied and answered ENOSYS"
            ));
        }
        leaves.push((*nr as u32, enosys));
    }
    leaves.sort_unstable();
    let search = g.search(&leaves);
    let x32 = g.add(Node::Jmp(JGE, X32_SYSCALL_BIT, eperm, search));
    let native = g.add(Node::Ld(OFF_NR, x32));
    let arch_ok = g.add(Node::Jmp(JEQ, arch, native, eperm));
    let root = g.add(Node::Ld(OFF_ARCH, arch_ok));
    g.emit(root)
}

pub const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
pub const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
pub const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
pub const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
pub const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;

pub fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// seccompiler's program starts with `ld arch; jeq ARCH, +1; ret KILL`:
/// the architecture, and where the rest starts.
fn split_arch_check(p: &[libc::sock_filter]) -> Result<(u32, usize), String> {
    match p {
        [a, b, c, ..]
            if (a.code, a.k) == (LD_ABS, OFF_ARCH)
                && (b.code, b.jt, b.jf) == (JEQ, 1, 0)
                && c.code == RET =>
        {
            Ok((b.k, 3))
        }
        _ => Err("seccompiler's program does not start with its architecture check".into()),
    }
}

/// Where the rules of system call `nr` start in seccompiler's program: its
/// code from `start` run with the number known, up to the first
/// instruction that does not depend on it (a load of an argument, or a
/// return).
fn entry(p: &[libc::sock_filter], start: usize, nr: u32) -> Result<usize, String> {
    let mut pc = start;
    let mut acc: Option<u32> = None;
    // Jumps only go forward: at most one step per instruction.
    for _ in 0..p.len() {
        let i = p.get(pc).ok_or("a jump past the end of the program")?;
        let k = i.k;
        pc = match (i.code, acc) {
            (LD_ABS, _) if k == OFF_NR => {
                acc = Some(nr);
                pc + 1
            }
            (LD_ABS, _) | (RET, _) => return Ok(pc),
            (JA, _) => pc + 1 + k as usize,
            (AND, Some(a)) => {
                acc = Some(a & k);
                pc + 1
            }
            (code, Some(a)) => {
                let taken = match code {
                    JEQ => a == k,
                    JGE => a >= k,
                    JGT => a > k,
                    JSET => a & k != 0,
                    _ => return Err(format!("instruction {:#x} at {pc}", code)),
                };
                pc + 1 + usize::from(if taken { i.jt } else { i.jf })
            }
            (code, None) => {
                return Err(format!(
                    "instruction {code:#x} at {pc} before the number is loaded"
                ))
            }
        };
    }
    Err("no end to the program".into())
}

/// A program as a graph: every node names the nodes it goes on to, so
/// jumps to jumps disappear, and nodes are shared: identical code (the
/// same rules for `clone` and `unshare`, say; every `ret EPERM`) is there
/// once. [`Graph::emit`] lays it out again as classic BPF.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<Node>,
    ids: std::collections::HashMap<Node, usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Node {
    /// `ld [k]` (a word of `struct seccomp_data`), then the node.
    Ld(u32, usize),
    /// `and #k`, then the node.
    And(u32, usize),
    /// `ret #k`.
    Ret(u32),
    /// A conditional jump: its code, `k`, the node if true, if false.
    Jmp(u16, u32, usize, usize),
}

impl Graph {
    /// The node, added unless an identical one is there.
    pub fn add(&mut self, n: Node) -> usize {
        if let Some(id) = self.ids.get(&n) {
            return *id;
        }
        self.nodes.push(n);
        self.ids.insert(n, self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    /// The code of `p` from `pc` on, as nodes (`memo`: instructions already
    /// imported).
    fn import(
        &mut self,
        p: &[libc::sock_filter],
        pc: usize,
        memo: &mut BTreeMap<usize, usize>,
    ) -> Result<usize, String> {
        if let Some(id) = memo.get(&pc) {
            return Ok(*id);
        }
        let i = p.get(pc).ok_or("a jump past the end of the program")?;
        let next = pc + 1;
        let node = match i.code {
            JA => self.import(p, next + i.k as usize, memo)?,
            LD_ABS => {
                let n = Node::Ld(i.k, self.import(p, next, memo)?);
                self.add(n)
            }
            AND => {
                let n = Node::And(i.k, self.import(p, next, memo)?);
                self.add(n)
            }
            RET => self.add(Node::Ret(i.k)),
            JEQ | JGE | JGT | JSET => {
                let t = self.import(p, next + usize::from(i.jt), memo)?;
                let f = self.import(p, next + usize::from(i.jf), memo)?;
                // Both ways the same: no test needed.
                if t == f {
                    t
                } else {
                    self.add(Node::Jmp(i.code, i.k, t, f))
                }
            }
            code => return Err(format!("instruction {code:#x} at {pc}")),
        };
        memo.insert(pc, node);
        Ok(node)
    }

    /// A binary search over the system call number in the accumulator for
    /// `leaves` (sorted by number: each number and the node it goes to);
    /// any other number returns ALLOW.
    fn search(&mut self, leaves: &[(u32, usize)]) -> usize {
        if leaves.len() <= 3 {
            let mut next = self.add(Node::Ret(RET_ALLOW));
            for (nr, to) in leaves.iter().rev() {
                next = self.add(Node::Jmp(JEQ, *nr, *to, next));
            }
            return next;
        }
        let mid = leaves.len() / 2;
        let high = self.search(&leaves[mid..]);
        let low = self.search(&leaves[..mid]);
        self.add(Node::Jmp(JGE, leaves[mid].0, high, low))
    }

    /// The graph from `root` as a classic BPF program. Laid out from the
    /// end: every node after all that jump to it (BPF jumps only go
    /// forward), the node a test falls through to right after it where it
    /// is not placed yet; a conditional jump reaches at most 255
    /// instructions, so a farther target gets a hop (`ja`, or a copy of a
    /// `ret`) next to the jump.
    pub fn emit(&self, root: usize) -> Result<Vec<libc::sock_filter>, String> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut seen = vec![false; self.nodes.len()];
        self.postorder(root, &mut seen, &mut order);
        // Built back to front: `rev[i]` is the i-th instruction from the end,
        // and a jump at `r` to the instruction at `t` skips `r - t - 1`.
        let mut rev: Vec<libc::sock_filter> = Vec::new();
        let mut at = vec![usize::MAX; self.nodes.len()];
        let skip = |from: usize, to: usize| from - to - 1;
        for id in order {
            match self.nodes[id] {
                Node::Ret(k) => rev.push(ins(RET, 0, 0, k)),
                Node::Ld(k, next) | Node::And(k, next) => {
                    if at[next] + 1 != rev.len() {
                        let r = rev.len();
                        rev.push(ins(JA, 0, 0, skip(r, at[next]) as u32));
                    }
                    let code = if matches!(self.nodes[id], Node::Ld(..)) {
                        LD_ABS
                    } else {
                        AND
                    };
                    rev.push(ins(code, 0, 0, k));
                }
                Node::Jmp(code, k, t, f) => {
                    let mut target = [at[t], at[f]];
                    for (i, to) in [t, f].into_iter().enumerate() {
                        // At most two hops go between the jump and its targets.
                        if skip(rev.len() + 2, target[i]) > 255 {
                            let r = rev.len();
                            rev.push(match self.nodes[to] {
                                Node::Ret(k) => ins(RET, 0, 0, k),
                                _ => ins(JA, 0, 0, skip(r, target[i]) as u32),
                            });
                            target[i] = r;
                        }
                    }
                    let r = rev.len();
                    let near = |to: usize| u8::try_from(skip(r, to)).map_err(|e| e.to_string());
                    rev.push(ins(code, near(target[0])?, near(target[1])?, k));
                }
            }
            at[id] = rev.len() - 1;
        }
        if rev.len() > BPF_MAXINSNS {
            return Err(format!("the program has {} instructions", rev.len()));
        }
        rev.reverse();
        Ok(rev)
    }

    fn postorder(&self, id: usize, seen: &mut [bool], order: &mut Vec<usize>) {
        if seen[id] {
            return;
        }
        seen[id] = true;
        match self.nodes[id] {
            Node::Ret(_) => {}
            Node::Ld(_, next) | Node::And(_, next) => self.postorder(next, seen, order),
            // The false branch last: placed right before the jump, it is
            // where the jump falls through to.
            Node::Jmp(_, _, t, f) => {
                self.postorder(t, seen, order);
                self.postorder(f, seen, order);
            }
        }
        order.push(id);
    }
}

/// The longest program the kernel accepts.
pub const BPF_MAXINSNS: usize = 4096;
