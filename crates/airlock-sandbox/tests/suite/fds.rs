use std::os::fd::AsRawFd;

use airlock_sandbox::ExitKind;

use crate::common::*;

sandbox_test! {
    fn inherited_descriptors_do_not_reach_the_command() {
        let f = Fixture::new();
        let secret = f.path().join("secret");
        std::fs::write(&secret, "host-only-descriptor").unwrap();
        let file = std::fs::File::open(&secret).unwrap();
        // Not close-on-exec: a naive fork and exec would pass it on.
        rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty()).unwrap();
        let fd = file.as_raw_fd();
        // dash reads `<&N` for one digit only; with other tests' files open
        // in parallel the descriptor can be 10 or more (then a syntax error).
        let redirect = if fd <= 9 { format!("cat <&{fd} 2>&1; ") } else { String::new() };
        let Some(o) = try_run(&f.sh(&format!(
            "ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; cat /proc/self/fd/{fd} 2>&1; {redirect}ls /proc/1/fd 2>&1; true"
        ))) else { return };
        assert_eq!(o.status, ExitKind::Exited(0));
        let out = stdout(&o);
        assert!(!out.contains("host-only-descriptor"), "{out}");
        // 0, 1, 2 and the one ls opens to read the directory.
        let fds: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert!(fds.len() <= 4, "descriptors inside: {fds:?}");
        // init's descriptors are out of reach.
        assert!(out.contains("Permission denied"), "{out}");
        drop(file);
    }
}
