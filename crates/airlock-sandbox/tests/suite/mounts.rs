use std::path::PathBuf;

use airlock_sandbox::ExitKind;

use crate::common::*;

sandbox_test! {
    fn the_root_is_minimal() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("ls -A /; echo ---; ls -A /dev; echo ---; ls /proc | grep -c '^[0-9]'")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let out = stdout(&o);
        let parts: Vec<&str> = out.split("---\n").collect();
        let root: Vec<&str> = parts[0].lines().collect();
        for e in &root {
            assert!(
                ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp", ".empty", ".emptydir"].contains(e),
                "unexpected entry /{e} in the sandbox root: {root:?}"
            );
        }
        let dev: Vec<&str> = parts[1].lines().collect();
        for e in &dev {
            assert!(
                ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "fd", "stdin", "stdout", "stderr", "shm"].contains(e),
                "unexpected /dev/{e}: {dev:?}"
            );
        }
        // A fresh /proc of the sandbox's own pid namespace: init, sh, ls/grep.
        let procs: usize = parts[2].trim().parse().unwrap();
        assert!(procs <= 5, "{procs} processes visible in /proc");
    }
}

sandbox_test! {
    fn only_init_and_the_command_run_in_the_sandbox() {
        // Nothing the sandbox started for its own setup (the network
        // namespace helper among them) outlives it into the command's
        // lifetime. Shell builtins only: no other process is started.
        let f = Fixture::new();
        let script = "echo $$; for s in /proc/[0-9]*/stat; do read -r pid comm state ppid rest < $s; echo $pid $ppid; done";
        let Some(o) = try_run(&f.sh(script)) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let out = stdout(&o);
        let mut lines = out.lines();
        let sh: i32 = lines.next().unwrap().trim().parse().unwrap();
        let procs: Vec<(i32, i32)> = lines
            .map(|l| {
                let mut it = l.split_whitespace().map(|x| x.parse::<i32>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .collect();
        for (pid, ppid) in &procs {
            let ok = *pid == 1 || (*pid == sh && *ppid == 1) || *ppid == sh;
            assert!(ok, "process {pid} (parent {ppid}) besides init and sh {sh}: {procs:?}");
        }
        assert!(procs.iter().any(|(p, _)| *p == 1), "{procs:?}");
    }
}

sandbox_test! {
    fn system_directories_are_read_only() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("touch /usr/airlock-x 2>/dev/null && echo usr; touch /etc/airlock-x 2>/dev/null && echo etc; touch /airlock-x 2>/dev/null && echo root; true")) else { return };
        assert_eq!(stdout(&o).trim(), "", "writable: {}", stdout(&o));
        assert!(!std::path::Path::new("/usr/airlock-x").exists());
    }
}

sandbox_test! {
    fn home_is_private_and_empty() {
        let f = Fixture::new();
        let home = f.path().join("home");
        std::fs::write(home.join("secret"), "host-home-secret").unwrap();
        let mut s = f.sh("ls -A \"$HOME\"; cat \"$HOME/secret\" 2>&1; echo x > \"$HOME/new\" && echo wrote");
        s.env.push(("HOME".into(), home.display().to_string()));
        let Some(o) = try_run(&s) else { return };
        let out = stdout(&o);
        assert!(!out.contains("host-home-secret"), "{out}");
        assert!(out.contains("wrote"), "the private home is writable: {out}");
        assert!(!home.join("new").exists(), "a write to the private home reached the host");
    }
}

sandbox_test! {
    fn the_hosts_tmp_is_not_visible() {
        let f = Fixture::new();
        let host = tempfile::Builder::new().prefix("airlock-host-tmp").tempfile().unwrap();
        let Some(o) = try_run(&f.sh(&format!("ls {} 2>&1; echo x > /tmp/private && cat /tmp/private", host.path().display()))) else { return };
        let out = stdout(&o);
        assert!(out.contains("No such file"), "{out}");
        assert!(out.ends_with("x\n"), "{out}");
        assert!(!std::path::Path::new("/tmp/private").exists() || !is_root(), "the private /tmp reached the host");
    }
}

sandbox_test! {
    fn grants_read_only_and_read_write() {
        let f = Fixture::new();
        let ro = f.path().join("ro");
        let rw = f.path().join("rw");
        for d in [&ro, &rw] {
            std::fs::create_dir(d).unwrap();
            f.own(d);
        }
        std::fs::write(ro.join("r.txt"), "readable").unwrap();
        let mut s = f.sh(&format!(
            "cat {ro}/r.txt; echo x > {ro}/w.txt 2>/dev/null && echo ro-writable; echo y > {rw}/w.txt && echo rw-ok",
            ro = ro.display(),
            rw = rw.display()
        ));
        s.allow_read = vec![ro.clone()];
        s.allow_write = vec![rw.clone()];
        let Some(o) = try_run(&s) else { return };
        let out = stdout(&o);
        assert!(out.contains("readable"), "{out}");
        assert!(!out.contains("ro-writable"), "{out}");
        assert!(out.contains("rw-ok"), "{out}");
        assert!(!ro.join("w.txt").exists());
        assert_eq!(std::fs::read_to_string(rw.join("w.txt")).unwrap(), "y\n");
    }
}

sandbox_test! {
    fn hidden_paths_inside_a_grant_are_masked() {
        let f = Fixture::new();
        let sec = f.write("state/broker.sock.info", "broker-secret");
        let dir = f.ws().join("state");
        let mut s = f.sh("cat state/broker.sock.info; ls -A state; echo x > state/new 2>/dev/null && echo writable; true");
        s.hidden = vec![dir.clone()];
        let Some(o) = try_run(&s) else { return };
        let out = stdout(&o);
        assert!(!out.contains("broker-secret"), "{out}");
        assert!(!out.contains("broker.sock.info"), "{out}");
        assert!(!out.contains("writable"), "{out}");
        assert_eq!(std::fs::read_to_string(sec).unwrap(), "broker-secret");
    }
}

sandbox_test! {
    fn shadow_is_masked() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("wc -c < /etc/shadow")) else { return };
        assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
    }
}

sandbox_test! {
    fn root_inside_is_not_root_outside() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("id -u; cat /proc/self/uid_map")) else { return };
        let out = stdout(&o);
        let mut lines = out.lines();
        let uid: u32 = lines.next().unwrap().trim().parse().unwrap();
        let map: Vec<u32> = lines.next().unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
        // inside -> outside, one id, and the outside id is never host root.
        assert_eq!(map[2], 1, "{out}");
        assert_ne!(map[1], 0, "host root is mapped into the sandbox: {out}");
        assert_eq!(uid, map[0]);
        assert_eq!(o.report.uid_map.split_whitespace().nth(1).unwrap(), map[1].to_string());
    }
}

sandbox_test! {
    fn cwd_outside_the_view_is_an_error() {
        let f = Fixture::new();
        let mut s = f.sh("pwd");
        s.cwd = PathBuf::from("/root/definitely-not-visible");
        match airlock_sandbox::run(&s) {
            Ok(o) => assert_ne!(o.status, ExitKind::Exited(0)),
            Err(e) => assert!(e.to_string().contains("working directory"), "{e}"),
        }
    }
}
