use airlock_sandbox::ExitKind;

use crate::common::*;

sandbox_test! {
    fn process_state_is_locked_down() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("grep -E '^(NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status; \
             set -- $(cat /proc/$$/stat); echo \"sid=$6 pid=$1 tty=$7\"")) else { return };
        let out = stdout(&o);
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
        for c in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(out.contains(&format!("{c}:\t0000000000000000")), "{c} not empty: {out}");
        }
        // The command leads its own session, with no controlling terminal.
        let line = out.lines().find(|l| l.starts_with("sid=")).unwrap();
        let kv: std::collections::HashMap<&str, &str> = line.split(' ').filter_map(|p| p.split_once('=')).collect();
        assert_eq!(kv["sid"], kv["pid"], "{line}");
        assert_eq!(kv["tty"], "0", "{line}");
    }
}

sandbox_test! {
    fn denied_calls_fail_and_are_reported() {
        let f = Fixture::new();
        let script = "unshare -U true; echo unshare=$?; \
            python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)' 2>/dev/null; echo packet=$?; \
            python3 -c 'import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)' 2>/dev/null; echo netlink=$?; \
            python3 -c 'import ctypes, os; l = ctypes.CDLL(None, use_errno=True); r = l.syscall(101, 0, 0, 0, 0); print(\"ptrace\", r, ctypes.get_errno())'; \
            python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.syscall(425, 4, ctypes.create_string_buffer(120)); print(\"io_uring\", r, ctypes.get_errno())'";
        let Some(o) = try_run(&f.sh(script)) else { return };
        let out = stdout(&o);
        assert!(!out.contains("unshare=0"), "{out}");
        assert!(out.contains("packet=1"), "{out}");
        assert!(out.contains("netlink=1"), "{out}");
        assert!(out.contains("ptrace -1 1"), "{out}");
        assert!(out.contains("io_uring -1 1"), "{out}");
        if !o.report.seccomp_notify {
            eprintln!("SKIPPED: [{}] seccomp user notification unavailable: blocked calls are not reported", who());
            return;
        }
        let seen: Vec<&str> = o.violations.iter().map(|v| v.what.as_str()).collect();
        for w in ["unshare(CLONE_NEWUSER)", "socket(AF_PACKET)", "socket(AF_NETLINK)", "ptrace", "io_uring_setup"] {
            assert!(seen.contains(&w), "{w} not in {seen:?}");
        }
        let summary = airlock_sandbox::summarize_violations(&o.violations).unwrap();
        assert!(summary.starts_with("blocked: "), "{summary}");
    }
}

sandbox_test! {
    fn allowed_calls_still_work() {
        // Threads (clone without namespace flags, after clone3 answers
        // ENOSYS), AF_UNIX socketpairs, ordinary ioctls on a pty.
        let f = Fixture::new();
        let script = "python3 -c '
import threading, socket, os, pty, termios, fcntl, struct
t = threading.Thread(target=lambda: None); t.start(); t.join()
a, b = socket.socketpair(); a.send(b\"x\"); assert b.recv(1) == b\"x\"
m, s = pty.openpty(); fcntl.ioctl(s, termios.TIOCGWINSZ, struct.pack(\"HHHH\", 0, 0, 0, 0))
pid = os.fork()
if pid == 0: os._exit(3)
assert os.waitpid(pid, 0)[1] >> 8 == 3
print(\"ok\")
'";
        let Some(o) = try_run(&f.sh(script)) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "ok");
        assert!(o.violations.is_empty(), "{:?}", o.violations);
    }
}

sandbox_test! {
    fn clone3_and_openat2_answer_enosys_so_that_callers_fall_back() {
        // Their flags and mode are in memory a filter cannot read: the
        // answer must be ENOSYS (libc then uses clone and openat, whose
        // arguments are checked), not EPERM, and not reported as blocked.
        let f = Fixture::new();
        let script = "python3 -c '
import ctypes
l = ctypes.CDLL(None, use_errno=True)
args = ctypes.create_string_buffer(88)
r = l.syscall(435, args, 88); print(\"clone3\", r, ctypes.get_errno())
how = ctypes.create_string_buffer(24)
r = l.syscall(437, -100, b\"x\", how, 24); print(\"openat2\", r, ctypes.get_errno())
'";
        let Some(o) = try_run(&f.sh(script)) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("clone3 -1 38"), "{out}");
        assert!(out.contains("openat2 -1 38"), "{out}");
        assert!(o.violations.is_empty(), "{:?}", o.violations);
    }
}

sandbox_test! {
    fn setuid_and_setgid_bits_cannot_be_set() {
        let f = Fixture::new();
        let mut s = f.sh(
            "cp /bin/true t; chmod 4755 t; echo chmod=$?; chmod 2755 t; echo chmod_g=$?; chmod 755 t; echo plain=$?; \
             python3 -c 'import os; os.close(os.open(\"c\", os.O_CREAT | os.O_WRONLY, 0o4755)); print(\"created\")'; \
             python3 -c 'import os; os.close(os.open(\"d\", os.O_CREAT | os.O_WRONLY, 0o755)); print(\"created-plain\")'",
        );
        s.workspace.as_mut().unwrap().mode = airlock_sandbox::WorkspaceMode::WriteThrough;
        let Some(o) = try_run(&s) else { return };
        let out = stdout(&o);
        assert!(out.contains("chmod=1") && out.contains("chmod_g=1"), "{out}");
        assert!(out.contains("plain=0"), "{out}");
        assert!(!out.contains("created\n"), "{out}");
        assert!(out.contains("created-plain"), "{out}");
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(f.ws()).unwrap().flatten() {
            let mode = e.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o6000, 0, "{} has mode {mode:o}", e.path().display());
        }
        if o.report.seccomp_notify {
            let seen: Vec<&str> = o.violations.iter().map(|v| v.what.as_str()).collect();
            assert!(seen.contains(&"chmod(setuid/setgid)"), "{seen:?}");
            assert!(seen.contains(&"create(setuid/setgid)"), "{seen:?}");
        }
    }
}
