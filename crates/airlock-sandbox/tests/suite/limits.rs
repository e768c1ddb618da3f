use std::time::Duration;

use airlock_sandbox::{ExitKind, ForwardedSignals};

use crate::common::*;

fn mechanism_is_reported(o: &airlock_sandbox::Outcome) {
    let m = o.report.limits_mechanism.as_str();
    assert!(["cgroup-v2", "cgroup-v1", "rlimit"].contains(&m), "{m}");
    if !is_root() {
        // No cgroup is delegated to nobody here: rlimits and the pid namespace.
        eprintln!("[{}] limits enforced with {m}", who());
    }
}

sandbox_test! {
    fn timeout_kills_the_whole_sandbox() {
        let f = Fixture::new();
        let m = marker("timeout");
        let mut s = f.sh(&format!("(sleep 300; : {m}) & while :; do :; done"));
        s.limits.timeout = Some(Duration::from_millis(500));
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::Timeout);
        assert_eq!(o.status.exit_code(), 124);
        assert!(processes_with(&m).is_empty(), "a process outlived the timeout");
    }
}

sandbox_test! {
    fn nothing_outlives_the_command() {
        let f = Fixture::new();
        let m = marker("daemon");
        let Some(o) = try_run(&f.sh(&format!(
            "(setsid sh -c 'sleep 300; : {m}' </dev/null >/dev/null 2>&1 &); (nohup sh -c 'trap \"\" HUP TERM; sleep 300; : {m}' >/dev/null 2>&1 &); exit 0"
        ))) else { return };
        assert_eq!(o.status, ExitKind::Exited(0));
        assert!(processes_with(&m).is_empty(), "a daemon outlived the run");
    }
}

sandbox_test! {
    fn nothing_is_left_once_the_outcome_is_known() {
        // The outcome comes before the kernel has torn the sandbox down;
        // by then every process must be gone, even one that ignores
        // signals, sits in a session of its own, or keeps forking.
        let f = Fixture::new();
        let m = marker("ended");
        let s = f.sh(&format!(
            "(setsid sh -c 'trap \"\" HUP TERM INT; sleep 300; : {m}' </dev/null >/dev/null 2>&1 &); \
             for i in 1 2 3 4 5 6 7 8; do sh -c 'sleep 300; : {m}' & done; \
             (while :; do sh -c ': {m}' & done) 2>/dev/null & \
             (trap '' HUP TERM INT; while :; do echo x >> tick; done) & \
             sleep 0.2; exit 5"
        ));
        let Some(r) = try_spawn(&s) else { return };
        let ended = r.end_forwarding(&ForwardedSignals::block(&[]).unwrap()).unwrap();
        // A writer still alive now would go on appending while the kernel
        // tears the sandbox down.
        let tick = f.upper().join("tick");
        let size = || std::fs::metadata(&tick).map(|m| m.len()).unwrap_or(0);
        let at_end = size();
        assert!(at_end > 0, "the writer never ran");
        let left = processes_with(&m);
        assert!(left.is_empty(), "still running when the outcome was known: {left:?}");
        assert_eq!(ended.outcome().status, ExitKind::Exited(5));
        assert!(ended.outcome().peak_memory.is_some_and(|b| b > 0));
        let o = ended.finish();
        assert_eq!(size(), at_end, "the writer ran on after the outcome was known");
        assert_eq!(o.status, ExitKind::Exited(5));
        assert!(processes_with(&m).is_empty());
    }
}

sandbox_test! {
    fn a_signal_that_comes_before_the_wait_reaches_the_command() {
        // Blocked before the sandbox starts, a signal that comes once the
        // command runs but before its caller waits (`airlock run`: a
        // Ctrl-C while it prints a warning) is forwarded when it waits,
        // instead of acting on the caller.
        let f = Fixture::new();
        let s = f.sh("trap 'echo got-usr1; exit 7' USR1; touch ready; while :; do sleep 0.05; done");
        let held = ForwardedSignals::block(&[libc::SIGUSR1]).unwrap();
        let Some(r) = try_spawn(&s) else { return };
        // The trap is set once `ready` is staged.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !f.upper().join("ready").exists() {
            assert!(std::time::Instant::now() < deadline, "the command never got ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        // To this thread only (a pidfd of the thread, Linux 6.9+): the test
        // harness's other threads do not block the signal.
        let tid = rustix::thread::gettid();
        let thread = rustix::process::PidfdFlags::from_bits_retain(libc::O_EXCL as u32);
        let me = match rustix::process::pidfd_open(tid, thread) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("SKIPPED: [{}] no pidfd of a thread to signal it alone (Linux 6.9+): {e}", who());
                let _ = r.signaller().signal(libc::SIGKILL);
                let _ = r.wait();
                return;
            }
        };
        rustix::process::pidfd_send_signal(&me, rustix::process::Signal::USR1).unwrap();
        let o = r.wait_forwarding(&held).unwrap();
        assert_eq!(o.status, ExitKind::Exited(7), "{}", stderr(&o));
        assert_eq!(stdout(&o), "got-usr1\n");
    }
}

sandbox_test! {
    fn memory_limit_stops_a_balloon() {
        let f = Fixture::new();
        let mut s = f.sh("python3 -c 'b = bytearray(512 << 20); print(\"allocated\")'");
        s.limits.memory = Some(64 << 20);
        let Some(o) = try_run(&s) else { return };
        assert!(!stdout(&o).contains("allocated"), "512 MiB allocated under a 64 MiB limit");
        assert_ne!(o.status, ExitKind::Exited(0));
        if o.report.limits_mechanism.starts_with("cgroup") {
            assert_eq!(o.status, ExitKind::MemoryLimit, "{}", stderr(&o));
            assert_eq!(o.status.exit_code(), 120);
        }
        mechanism_is_reported(&o);
    }
}

sandbox_test! {
    fn pids_limit_stops_a_fork_loop() {
        let f = Fixture::new();
        let mut s = f.sh("i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done 2>/dev/null; echo spawned; ls /proc | grep -c '^[0-9]'");
        s.limits.pids = Some(32);
        s.limits.timeout = Some(Duration::from_secs(20));
        let Some(o) = try_run(&s) else { return };
        let out = stdout(&o);
        let count: usize = out.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        assert!(count <= 32 + 3, "{count} processes under a limit of 32: {out}");
        mechanism_is_reported(&o);
    }
}

sandbox_test! {
    fn cpu_time_limit_kills() {
        let f = Fixture::new();
        let mut s = f.sh("while :; do :; done");
        s.limits.cpu_time = Some(Duration::from_secs(1));
        s.limits.timeout = Some(Duration::from_secs(30));
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::CpuLimit);
        assert_eq!(o.status.exit_code(), 122);
    }
}

sandbox_test! {
    fn disk_limit_stops_staging() {
        let f = Fixture::new();
        let mut s = f.sh("head -c 67108864 /dev/zero > big; echo done");
        s.limits.disk = Some(8 << 20);
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::DiskLimit, "{}", stdout(&o));
        let size = std::fs::metadata(f.upper().join("big")).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 8 << 20, "{size} bytes staged");
    }
}

sandbox_test! {
    fn disk_limit_holds_in_a_directory_the_command_made_unreadable() {
        // Unprivileged, the command's owner is the sandbox's: it can stage
        // a directory its owner cannot list (mode 300) and go on writing
        // in it, in files each under the cap on a file's size.
        let f = Fixture::new();
        let mut s = f.sh(
            "mkdir d && chmod 300 d && i=0; while [ $i -lt 16 ]; do head -c 4194304 /dev/zero > d/f$i || exit 9; i=$((i+1)); done; echo done",
        );
        s.limits.disk = Some(8 << 20);
        let Some(o) = try_run(&s) else { return };
        let d = f.upper().join("d");
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        assert_eq!(o.status, ExitKind::DiskLimit, "{}", stdout(&o));
        assert!(!stdout(&o).contains("done"));
        let staged: u64 = std::fs::read_dir(&d)
            .map(|r| r.flatten().map(|e| e.metadata().map(|m| m.len()).unwrap_or(0)).sum())
            .unwrap_or(0);
        assert!(staged <= 24 << 20, "{staged} bytes staged");
    }
}

sandbox_test! {
    fn signals_reach_the_command() {
        let f = Fixture::new();
        let s = f.sh("trap 'echo got-term; exit 7' TERM; touch ready; while :; do sleep 0.05; done");
        let Some(r) = try_spawn(&s) else { return };
        // The trap is set once `ready` shows up in the staged upper dir.
        while !f.upper().join("ready").exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        r.signaller().signal(libc::SIGTERM).unwrap();
        let o = r.wait().unwrap();
        assert_eq!(o.status, ExitKind::Exited(7), "{}", stdout(&o));
        assert!(stdout(&o).contains("got-term"));
    }
}

sandbox_test! {
    fn dropping_a_running_sandbox_kills_it() {
        let f = Fixture::new();
        let m = marker("drop");
        let s = f.sh(&format!("touch ready; sleep 300; : {m}"));
        let Ok(r) = airlock_sandbox::spawn(&s) else { return };
        while !f.upper().join("ready").exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!processes_with(&m).is_empty());
        drop(r);
        assert!(processes_with(&m).is_empty(), "the sandbox survived its Running handle");
    }
}

sandbox_test! {
    fn the_command_cannot_leave_its_cgroup() {
        // Init gets the parent cgroups' `tasks` files to leave the run's
        // cgroup by once the sandbox is empty. The command must never hold
        // them: writing `0` there would take it out of its limits.
        let f = Fixture::new();
        let mut s = f.sh(
            "for n in $(seq 3 63); do [ -e /proc/self/fd/$n ] && { echo 0 > /proc/self/fd/$n; } 2>/dev/null; done; \
             sed -n 's/^[0-9]*:pids://p' /proc/self/cgroup",
        );
        s.limits.pids = Some(64);
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        if o.report.limits_mechanism == "cgroup-v1" {
            let path = stdout(&o);
            assert!(
                path.trim().starts_with("/airlock-"),
                "the command left the run's cgroup: {path:?}"
            );
        }
        mechanism_is_reported(&o);
    }
}
