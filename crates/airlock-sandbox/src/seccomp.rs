//! The seccomp-bpf deny list, compiled with `seccompiler`.
//!
//! One filter is installed: the deny list (its matches are turned into
//! `SECCOMP_RET_USER_NOTIF`, so the supervisor records each attempt and
//! answers `EPERM`; or plain `EPERM` when notification is unavailable),
//! which also answers `ENOSYS` to `clone3` and `openat2` (their flags and
//! mode live in memory a BPF filter cannot read, so libc falls back to
//! `clone` and `openat`, whose arguments are checked). Before the system
//! call dispatch, the architecture is checked (any non-native ABI, e.g.
//! i386 via `int 0x80`, gets `EPERM`) and x32 system call numbers (bit
//! `0x40000000`) get `EPERM`. Setting setuid/setgid bits (chmod family,
//! creating modes of open/openat/creat/mknod) is refused too.
//!
//! seccompiler's program is reshaped before use (`rules::build`): a binary
//! search on the number leads straight to each call's rules, jumps to
//! jumps and duplicate code are gone. The kernel converts and JITs the
//! whole program on every run, so its length is paid per run.
//!
//! The programs never change for a build: the build script compiles them
//! for the target (from `seccomp/rules.rs`, the same code) and they are
//! only copied at run time; a build for another architecture than the
//! build machine's compiles them at run time instead.

use std::sync::OnceLock;

use crate::SandboxError;

mod rules;
pub use rules::{ALLOWED_FAMILIES, DENIED_IOCTLS, DENIED_SYSCALLS, NAMESPACE_FLAGS};
use rules::{RET, RET_ERRNO, RET_USER_NOTIF, SYS_FCHMODAT2};

// `PREBUILT`: the programs of `rules::programs(false)` and
// `rules::programs(true)`, made by build.rs, or None.
include!(concat!(env!("OUT_DIR"), "/seccomp_prebuilt.rs"));

/// A program as the build script writes it: (code, jt, jf, k).
type Table = &'static [(u16, u8, u8, u32)];

fn table(t: Table) -> Vec<libc::sock_filter> {
    t.iter()
        .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect()
}

/// The compiled programs.
#[derive(Clone)]
pub struct Programs {
    /// The deny list plus `connect`, for use with user notification only:
    /// the supervisor lets each `connect` continue and records those the
    /// sandbox refuses (see [`Programs::deny_notify`]).
    pub deny_and_connect: Vec<libc::sock_filter>,
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
        cell.get_or_init(|| rules::deny(self.deny_udp))
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

fn build(deny_udp: bool) -> Result<Programs, String> {
    let deny_and_connect = match PREBUILT {
        Some([plain, no_udp]) => table(if deny_udp { no_udp } else { plain }),
        None => rules::programs(deny_udp)?,
    };
    Ok(Programs {
        deny_and_connect,
        deny_udp,
    })
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
    use super::rules::RET_ALLOW;
    use super::*;

    /// Run a classic BPF seccomp program on (arch, nr, args) the way the
    /// kernel does, for the instructions seccompiler and `rules::build` emit.
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
    fn the_programs_built_ahead_of_time_are_what_the_rules_compile_to() {
        let Some([plain, no_udp]) = PREBUILT else {
            eprintln!("SKIPPED: a build for another architecture compiles them at run time");
            return;
        };
        let key = |p: &[libc::sock_filter]| -> Vec<(u16, u8, u8, u32)> {
            p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        for (udp, built) in [(false, plain), (true, no_udp)] {
            let now = rules::programs(udp).unwrap();
            assert_eq!(built, key(&now).as_slice(), "deny_udp {udp}");
            assert_eq!(key(&programs(udp).unwrap().deny_and_connect), key(&now));
        }
    }

    #[test]
    fn the_deny_list_stays_short() {
        // The kernel converts and JITs the whole program on every run:
        // seccompiler's own program for these rules (plus the clone3
        // filter that used to be separate) is about 600 instructions.
        for udp in [false, true] {
            let p = programs(udp).unwrap();
            let n = p.deny_and_connect.len();
            assert!(n < 260, "deny_udp {udp}: {n} instructions");
        }
    }

    #[test]
    fn far_jumps_get_a_hop_and_keep_their_meaning() {
        // A conditional jump reaches 255 instructions at most: a graph whose
        // tests jump over 600 instructions must still be laid out right.
        use rules::{Graph, Node, JEQ, OFF_NR};
        let mut g = Graph::default();
        let mut chain = g.add(Node::Ret(222));
        for i in (0..300u32).rev() {
            let hit = g.add(Node::Ret(5000 + i));
            chain = g.add(Node::Jmp(JEQ, 1000 + i, hit, chain));
        }
        let (yes, no) = (g.add(Node::Ret(444)), g.add(Node::Ret(555)));
        let test = g.add(Node::Jmp(JEQ, 7, yes, no));
        let arg = g.add(Node::Ld(16, test));
        let two = g.add(Node::Jmp(JEQ, 2, arg, chain));
        let ret = g.add(Node::Ret(111));
        let one = g.add(Node::Jmp(JEQ, 1, ret, two));
        let root = g.add(Node::Ld(OFF_NR, one));
        let p = g.emit(root).unwrap();
        assert!(p.len() > 600, "{}", p.len());
        assert!(p.iter().any(|i| i.code == rules::JA), "no hop was needed");
        let arch = crate::exec::native_arch();
        assert_eq!(run(&p, arch, 1, [0; 6]), 111);
        assert_eq!(run(&p, arch, 2, [7, 0, 0, 0, 0, 0]), 444);
        assert_eq!(run(&p, arch, 2, [8, 0, 0, 0, 0, 0]), 555);
        for i in [0, 1, 150, 299] {
            assert_eq!(run(&p, arch, 1000 + i, [0; 6]), 5000 + i as u32);
        }
        assert_eq!(run(&p, arch, 3, [0; 6]), 222);
        assert_eq!(run(&p, arch, 1300, [0; 6]), 222);
    }

    /// Argument values that the rules look at, and some that they don't.
    fn interesting_values() -> Vec<u64> {
        let mut v: Vec<u64> = vec![
            0,
            u64::MAX,
            0xffff_ffff,
            0x1_0000_0000,
            0o755,
            0o4755,
            0o2755,
            0o6777,
            libc::O_CREAT as u64 | 0o4000,
            rules::TMPFILE_BIT | libc::O_DIRECTORY as u64,
            libc::SOCK_DGRAM as u64,
            libc::SOCK_DGRAM as u64 | libc::SOCK_CLOEXEC as u64,
            libc::SOCK_STREAM as u64,
            libc::SIGCHLD as u64 | libc::CLONE_FILES as u64,
        ];
        v.extend(DENIED_IOCTLS.iter().map(|(req, _)| *req));
        v.extend((0..64).map(|b| 1u64 << b));
        v.extend(0..=70);
        v
    }

    #[test]
    fn the_reshaped_program_answers_every_call_as_seccompilers_own_does() {
        // The reference: seccompiler's program for the same rules, with the
        // checks `rules::build` puts around it spelled out.
        let arch = crate::exec::native_arch();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        let values = interesting_values();
        // A fixed pseudo-random sequence (xorshift), to mix the values.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut mixed: Vec<[u64; 6]> = Vec::new();
        for _ in 0..3000 {
            let mut a = [0u64; 6];
            for x in a.iter_mut() {
                *x = match next() % 3 {
                    0 => values[(next() % values.len() as u64) as usize],
                    1 => {
                        values[(next() % values.len() as u64) as usize]
                            | values[(next() % values.len() as u64) as usize]
                    }
                    _ => next(),
                };
            }
            mixed.push(a);
        }
        let mut checked = 0usize;
        for udp in [false, true] {
            for with_connect in [false, true] {
                let mut r = rules::rules(udp).unwrap();
                if with_connect {
                    r.insert(libc::SYS_connect, vec![]);
                }
                let listed: Vec<i64> = r.keys().copied().collect();
                let raw = rules::compile(r).unwrap();
                let p = programs(udp).unwrap();
                let ours = if with_connect {
                    p.deny_and_connect.clone()
                } else {
                    p.deny().unwrap()
                };
                let notify = p.deny_notify();
                let expected = |a: u32, nr: i64, args: [u64; 6]| -> u32 {
                    if a != arch || nr as u32 >= rules::X32_SYSCALL_BIT {
                        eperm
                    } else if rules::ENOSYS_SYSCALLS.contains(&nr) {
                        enosys
                    } else {
                        run(&raw, a, nr, args)
                    }
                };
                let mut check = |a: u32, nr: i64, args: [u64; 6]| {
                    let want = expected(a, nr, args);
                    let got = run(&ours, a, nr, args);
                    assert_eq!(got, want, "arch {a:#x} nr {nr} args {args:x?}");
                    if with_connect {
                        let got = run(&notify, a, nr, args);
                        let want = if want == eperm { RET_USER_NOTIF } else { want };
                        assert_eq!(got, want, "notify: arch {a:#x} nr {nr} args {args:x?}");
                    }
                    checked += 1;
                };
                let numbers = (0..1100i64).chain([
                    0x4000_0000,
                    0x4000_0000 + libc::SYS_mount,
                    0x7fff_ffff,
                    -1,
                ]);
                for nr in numbers {
                    let ruled = listed.contains(&nr);
                    check(arch, nr, [0; 6]);
                    check(arch, nr, [u64::MAX; 6]);
                    for a in [0x4000_0003, 0, arch ^ 1] {
                        check(a, nr, [0; 6]);
                    }
                    if !ruled {
                        continue;
                    }
                    // Each argument alone, then mixtures.
                    for i in 0..6 {
                        for v in &values {
                            let mut args = [0u64; 6];
                            args[i] = *v;
                            check(arch, nr, args);
                        }
                    }
                    for args in &mixed {
                        check(arch, nr, *args);
                    }
                }
            }
        }
        assert!(checked > 500_000, "{checked}");
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
                    let want = if rules::ENOSYS_SYSCALLS.contains(&nr) {
                        RET_ERRNO | libc::ENOSYS as u32
                    } else if refused {
                        eperm
                    } else {
                        RET_ALLOW
                    };
                    assert_eq!(r, want, "nr {nr}");
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
