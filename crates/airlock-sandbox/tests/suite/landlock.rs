use std::io::Read;
use std::net::TcpListener;

use airlock_sandbox::{ExitKind, LandlockState};

use crate::common::*;

fn abi() -> Option<i32> {
    airlock_sandbox::landlock::kernel_abi()
}

sandbox_test! {
    fn the_report_names_the_abi_and_scopes() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("true")) else { return };
        let Some(a) = abi() else {
            eprintln!("SKIPPED: [{}] Landlock is not enabled in this kernel", who());
            return;
        };
        assert_eq!(o.report.landlock_abi, Some(a));
        assert_ne!(o.report.landlock, LandlockState::NotEnforced);
        if a >= 6 {
            assert_eq!(o.report.landlock_scopes, vec!["abstract-unix-socket".to_string(), "signal".to_string()]);
        } else {
            eprintln!("SKIPPED: [{}] scoping needs Landlock ABI 6, kernel has {a}", who());
        }
    }
}

sandbox_test! {
    fn landlock_denies_what_the_mounts_show() {
        // `/.empty` sits on the sandbox root, which the mounts make visible
        // and readable; Landlock grants the root only directory listing, so
        // reading it is refused by Landlock alone.
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("ls -a / | grep -c '^.empty$'; cat /.empty && echo read-ok; true")) else { return };
        if abi().is_none() {
            eprintln!("SKIPPED: [{}] Landlock is not enabled in this kernel", who());
            return;
        }
        let out = stdout(&o);
        assert!(out.starts_with('1'), "the file should be visible: {out}");
        assert!(!out.contains("read-ok"), "Landlock did not refuse the read: {out}");
        assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    }
}

sandbox_test! {
    fn tcp_ports_are_limited_to_the_granted_one() {
        let Some(a) = abi() else {
            eprintln!("SKIPPED: [{}] Landlock is not enabled in this kernel", who());
            return;
        };
        if a < 4 {
            eprintln!("SKIPPED: [{}] TCP rules need Landlock ABI 4, kernel has {a}", who());
            return;
        }
        let granted = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        granted.set_nonblocking(true).unwrap();
        other.set_nonblocking(true).unwrap();
        let gp = granted.local_addr().unwrap().port();
        let op = other.local_addr().unwrap().port();
        let f = Fixture::new();
        let script = format!(
            "python3 -c \"
import socket
for p in ({gp}, {op}):
    s = socket.socket()
    try:
        s.connect(('127.0.0.1', p)); s.sendall(b'hi'); print('connected', p)
    except OSError as e:
        print('refused', p, e.errno)
\""
        );
        let mut s = f.sh(&script);
        s.allow_net = vec![format!("127.0.0.1:{gp}")];
        let Some(o) = try_run(&s) else { return };
        let out = stdout(&o);
        assert!(out.contains(&format!("connected {gp}")), "{out}{}", stderr(&o));
        assert!(out.contains(&format!("refused {op} 13")), "{out}");
        let (mut c, _) = granted.accept().expect("the granted listener got the connection");
        let mut b = [0u8; 2];
        c.set_nonblocking(false).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        assert!(other.accept().is_err(), "the other listener was reached");
        assert!(o.report.network.contains(&gp.to_string()));
        assert_eq!(o.status, ExitKind::Exited(0));
    }
}
