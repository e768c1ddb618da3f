use airlock_sandbox::{ExitKind, ForwardedSignals, WorkspaceMode};

use crate::common::*;

sandbox_test! {
    fn writes_are_staged_in_the_upper_dir() {
        let f = Fixture::new();
        f.write("a.txt", "original");
        let Some(o) = try_run(&f.sh("echo changed > a.txt && echo new > b.txt && rm -f gone.txt; cat a.txt")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "changed");
        // Real tree untouched; changes in upper.
        assert_eq!(std::fs::read_to_string(f.ws().join("a.txt")).unwrap(), "original");
        assert!(!f.ws().join("b.txt").exists());
        assert_eq!(std::fs::read_to_string(f.upper().join("a.txt")).unwrap(), "changed\n");
        assert_eq!(std::fs::read_to_string(f.upper().join("b.txt")).unwrap(), "new\n");
        assert_eq!(o.report.workspace, "staged-overlay");
    }
}

sandbox_test! {
    fn deletes_become_whiteouts() {
        let f = Fixture::new();
        f.write("old.txt", "x");
        let Some(o) = try_run(&f.sh("rm old.txt && test ! -e old.txt")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert!(f.ws().join("old.txt").exists());
        let md = std::fs::symlink_metadata(f.upper().join("old.txt")).expect("whiteout in upper");
        use std::os::unix::fs::FileTypeExt;
        let xattr_whiteout = md.is_file() && md.len() == 0;
        assert!(md.file_type().is_char_device() || xattr_whiteout, "{md:?}");
    }
}

sandbox_test! {
    fn earlier_staged_changes_are_visible_in_the_next_run() {
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("echo one > staged.txt")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let o = try_run(&f.sh("cat staged.txt")).unwrap();
        assert_eq!(stdout(&o).trim(), "one");
        assert!(!f.ws().join("staged.txt").exists());
    }
}

sandbox_test! {
    fn write_through_writes_the_real_tree() {
        let f = Fixture::new();
        let mut s = f.sh("echo hi > direct.txt");
        s.workspace.as_mut().unwrap().mode = WorkspaceMode::WriteThrough;
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(f.ws().join("direct.txt")).unwrap(), "hi\n");
        assert_eq!(o.report.workspace, "write-through");
    }
}

sandbox_test! {
    fn read_only_workspace_refuses_writes() {
        let f = Fixture::new();
        let mut s = f.sh("echo hi > x.txt");
        s.workspace.as_mut().unwrap().mode = WorkspaceMode::ReadOnly;
        let Some(o) = try_run(&s) else { return };
        assert_ne!(o.status, ExitKind::Exited(0));
        assert!(!f.ws().join("x.txt").exists());
        assert!(std::fs::read_dir(f.upper()).unwrap().next().is_none());
    }
}

sandbox_test! {
    fn setuid_bits_do_not_work_in_the_workspace() {
        // A setuid copy of `id` already in the workspace (as root: root's)
        // runs without privilege (nosuid mounts, no_new_privs).
        let f = Fixture::new();
        let p = f.ws().join("id");
        std::fs::copy("/usr/bin/id", &p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let Some(o) = try_run(&f.sh("./id -u && id -u")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let out = stdout(&o);
        let ids: Vec<&str> = out.lines().collect();
        assert_eq!(ids.len(), 2, "{out}");
        assert_eq!(ids[0], ids[1], "the setuid copy changed the effective uid");
    }
}

sandbox_test! {
    fn a_root_owned_workspace_is_writable_when_root_runs_it() {
        // As root over a root-owned workspace the sandbox runs as nobody on
        // an idmapped clone of it: it can write there like the owner, and
        // nothing it writes is root's inside. (As nobody this is the plain
        // case of one's own workspace.)
        let f = Fixture::new();
        let a = f.write("a.txt", "original");
        if is_root() {
            std::os::unix::fs::lchown(f.ws(), Some(0), Some(0)).unwrap();
            std::os::unix::fs::lchown(&a, Some(0), Some(0)).unwrap();
        }
        let Some(o) = try_run(&f.sh("id -u; echo changed > a.txt && echo new > b.txt && echo ok")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.ends_with("ok\n"), "{out}");
        assert_ne!(out.lines().next(), Some("0"), "root inside");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "original");
        assert_eq!(std::fs::read_to_string(f.upper().join("a.txt")).unwrap(), "changed\n");
        if is_root() {
            assert_eq!(o.report.workspace, "staged-overlay+idmap");
        }
    }
}

sandbox_test! {
    // Alone: only a run that holds the area's work dir closes what a dead
    // run left there, and a sandbox that another test starts from this
    // process holds a copy of that lock until its init closes it.
    alone fn the_overlay_is_closed_after_each_run_and_a_crash_is_refused() {
        let f = Fixture::new();
        let work = f.path().join("work");
        let Some(o) = try_run(&f.sh("echo one > a.txt")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        // Closed: no work dir (and so no volatile marker) where the kernel
        // looks for one; the closed one moved aside.
        assert!(!work.join("work").exists());
        let closed = || {
            std::fs::read_dir(&work)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("closed-"))
                .count()
        };
        assert_eq!(closed(), 1);
        // The next run sweeps it and closes its own.
        let o = try_run(&f.sh("cat a.txt")).unwrap();
        assert_eq!(stdout(&o).trim(), "one");
        assert_eq!(closed(), 1);
        // A marker left by a mount from an earlier boot (the machine went
        // down while staged data may not have reached the disk): refused.
        std::fs::create_dir_all(work.join("work/incompat/volatile")).unwrap();
        std::fs::write(work.join(airlock_fs::BOOT_ID_FILE), "an-earlier-boot\n").unwrap();
        let err = airlock_sandbox::spawn(&f.sh("true")).err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains("went down"), "{msg}");
        // Left by a process of this boot that died: closed, then the run goes on.
        let boot = airlock_fs::boot_id().unwrap();
        std::fs::write(work.join(airlock_fs::BOOT_ID_FILE), format!("{boot}\n")).unwrap();
        let o = try_run(&f.sh("cat a.txt")).unwrap();
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert!(!work.join("work").exists());
    }
}

sandbox_test! {
    alone fn a_run_left_to_exit_holds_its_work_dir_until_unmounted() {
        // `finish_leaving` (what `airlock run` ends with) does not wait for
        // the kernel to tear the sandbox down. What it returns must still be
        // final: nothing of the command left, the run's cgroup gone, and the
        // area's work dir not given to the next run over the same area
        // before the overlay is unmounted, so that it does not mount beside
        // it. (What holds the lock, and the overlay's in-use mark, are
        // looked at as root only: init is non-dumpable, and the probe asks
        // for a mount with index=on, which a user namespace cannot. The
        // rest runs as nobody too.)
        let f = Fixture::new();
        let m = marker("left");
        // The command waits on a fifo (granted read, outside the overlay,
        // whose own fifos are pipes of their own) until its mounts have
        // been looked at.
        let fifo = f.path().join("home/go");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o644.into(), 0).unwrap();
        let mut s = f.sh(&format!("read x < {}; echo x >> out; (sleep 300; : {m}) & exit 3", fifo.display()));
        s.allow_read.push(f.path().join("home"));
        s.limits.pids = Some(64);
        for i in 0..20 {
            let Some(r) = try_spawn(&s) else { return };
            let pid = r.pid();
            // While it runs, its mounts and cgroup are visible from here.
            let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
            assert!(mounts.contains(" - overlay "), "no overlay in init's mounts:\n{mounts}");
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            let pids_cgroup = cgroup
                .lines()
                .filter_map(|l| l.split_once(":pids:"))
                .map(|(_, p)| std::path::Path::new("/sys/fs/cgroup/pids").join(p.trim_start_matches('/')))
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("airlock-")));
            if is_root() {
                assert!(overlay_in_use(&f), "run {i}: the probe does not see the running overlay");
                // Init holds the work dir's lock as long as it lives, so a
                // run starting meanwhile sees it held. Root may look, init
                // being non-dumpable.
                let work = f.path().join("work");
                let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .flatten()
                    .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == work));
                assert!(held, "run {i}: init does not hold the work dir");
            }
            // Not blocking on a command that never opened it: no reader yet
            // is ENXIO.
            let t = std::time::Instant::now();
            let mut w = loop {
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo) {
                    Ok(w) => break w,
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) && t.elapsed().as_secs() < 20 => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    Err(e) => panic!("run {i}: the command never read the fifo: {e}"),
                }
            };
            std::io::Write::write_all(&mut w, b"go\n").unwrap();
            drop(w);
            let o = r.end_forwarding(&ForwardedSignals::block(&[]).unwrap()).unwrap().finish_leaving();
            assert_eq!(o.status, ExitKind::Exited(3), "{}", stderr(&o));
            assert!(processes_with(&m).is_empty(), "run {i}: a process outlived the run");
            match (&pids_cgroup, o.report.limits_mechanism.as_str()) {
                (Some(p), _) => assert!(!p.exists(), "run {i}: {} left behind", p.display()),
                (None, "cgroup-v1") => panic!("run {i}: cgroup-v1 reported, none seen:\n{cgroup}"),
                (None, _) => {}
            }
            assert!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "run {i}: init was reaped: not left to exit (is it still in its cgroup?)"
            );
            // The next run over the area takes its work dir only once init
            // has exited, by when its overlay should be unmounted.
            let next = airlock_fs::RunWorkDir::take(&f.path().join("work")).unwrap();
            assert!(next.holds_area(), "run {i}: the next run did not get the area's work dir");
            use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
            let exited = waitid(
                WaitId::Pid(Pid::from_raw(pid).unwrap()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
            );
            assert!(
                matches!(exited, Ok(Some(_))),
                "run {i}: the work dir was taken before the sandbox had exited: {exited:?}"
            );
            if is_root() {
                assert!(!overlay_in_use(&f), "run {i}: the work dir was taken while the overlay still held it");
            }
            drop(next);
            // Init was left to exit (not reaped, its cgroup removed without
            // waiting for it): this test is its parent and reaps it.
            let reaped = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid),
                rustix::process::WaitOptions::empty(),
            );
            assert!(matches!(reaped, Ok(Some(_))), "run {i}: init was not left to exit: {reaped:?}");
        }
        assert_eq!(std::fs::read_to_string(f.upper().join("out")).unwrap(), "x\n".repeat(20));
    }
}

/// As root: whether a mounted overlay still uses the fixture's upper dir.
/// overlayfs marks its upper dir in use while mounted, and a mount with
/// `index=on` over a dir so marked is refused at once (EBUSY). The probe
/// gives the upper dir as its work dir too, which is refused just after
/// that check (EINVAL, "separate subtrees"): it never mounts, so it leaves
/// no overlay of its own to be torn down, and writes nothing.
fn overlay_in_use(f: &Fixture) -> bool {
    let lower = f.path().join("probe/lower");
    let mnt = f.path().join("probe/mnt");
    for d in [&lower, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=on",
        lower.display(),
        f.upper().display(),
        f.upper().display()
    );
    let out = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "mount",
            "-t",
            "overlay",
            "probe",
            "-o",
            &opts,
        ])
        .arg(&mnt)
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the probe mounted: {err}");
    if err.contains("busy") {
        true
    } else if err.contains("bad option") || err.contains("wrong fs type") {
        false
    } else {
        panic!("the probe mount failed otherwise: {err}")
    }
}
