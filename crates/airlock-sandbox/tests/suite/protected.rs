use airlock_sandbox::{ExitKind, Layer, WorkspaceMode};

use crate::common::*;

fn write_through(f: &Fixture, script: &str) -> airlock_sandbox::SandboxSpec {
    let mut s = f.sh(script);
    s.workspace.as_mut().unwrap().mode = WorkspaceMode::WriteThrough;
    s
}

sandbox_test! {
    fn git_hooks_and_config_stay_read_only_at_any_depth() {
        let f = Fixture::new();
        f.write(".git/hooks/pre-commit.sample", "#!/bin/sh\n");
        let cfg = f.write(".git/config", "[core]\n");
        let sub = f.write("vendor/mod/.git/config", "[core]\n");
        f.write("vendor/mod/.git/hooks/x.sample", "");
        let Some(o) = try_run(&write_through(&f,
            "echo evil > .git/hooks/pre-commit; echo evil >> .git/config; echo evil >> vendor/mod/.git/config; \
             echo evil > vendor/mod/.git/hooks/post-checkout; rm -rf .git/hooks; mv .git/config .git/c2; echo ok > normal.txt")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert!(!f.ws().join(".git/hooks/pre-commit").exists());
        assert!(!f.ws().join("vendor/mod/.git/hooks/post-checkout").exists());
        assert!(f.ws().join(".git/hooks/pre-commit.sample").exists());
        assert_eq!(std::fs::read_to_string(cfg).unwrap(), "[core]\n");
        assert_eq!(std::fs::read_to_string(sub).unwrap(), "[core]\n");
        assert!(f.ws().join("normal.txt").exists(), "the rest of the workspace is writable");
        for p in [".git/hooks", ".git/config", "vendor/mod/.git/config", "vendor/mod/.git/hooks"] {
            assert!(o.report.protected_mounted.contains(&p.to_string()), "{p} not in {:?}", o.report.protected_mounted);
        }
    }
}

sandbox_test! {
    fn a_missing_protected_path_cannot_be_created() {
        let f = Fixture::new();
        f.write(".git/config", "[core]\n");
        let Some(o) = try_run(&write_through(&f, "mkdir -p .git/hooks; echo evil > .git/hooks/post-merge; ls -A .git")) else { return };
        assert!(!f.ws().join(".git/hooks/post-merge").exists());
        // The placeholder that blocked it is gone from the real tree.
        assert!(!f.ws().join(".git/hooks").exists(), "placeholder left behind");
        assert!(stdout(&o).contains("hooks"), "{}", stdout(&o));
    }
}

sandbox_test! {
    fn staged_mode_protects_too() {
        let f = Fixture::new();
        f.write(".git/hooks/pre-commit.sample", "#!/bin/sh\n");
        f.write(".gitmodules", "[submodule]\n");
        let Some(o) = try_run(&f.sh("echo evil > .git/hooks/pre-commit; echo evil >> .gitmodules; echo ok > x")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0));
        assert!(!f.upper().join(".git/hooks/pre-commit").exists());
        assert!(!f.upper().join(".gitmodules").exists());
        assert!(f.upper().join("x").exists());
        // Placeholders live in the run's own layer, never the upper dir.
        assert!(!f.upper().join(".git/config").exists());
    }
}

sandbox_test! {
    fn staged_placeholders_block_creation_and_keep_the_tree_as_it_was() {
        let f = Fixture::new();
        f.write(".git/config", "[core]\n");
        f.write("sub/.git/HEAD", "ref: refs/heads/main\n");
        for (d, m) in [(".git", 0o750), ("sub", 0o711), ("sub/.git", 0o700)] {
            std::fs::set_permissions(f.ws().join(d), std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        }
        let Some(o) = try_run(&f.sh(
            "for r in . sub; do mkdir -p $r/.git/hooks; echo evil > $r/.git/hooks/post-merge; \
             echo evil > $r/.git/config.worktree; rm -rf $r/.git/hooks; done 2>/dev/null; \
             stat -c '%n %a' .git sub sub/.git; ls -A sub/.git; echo ok > x")) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        let out = stdout(&o);
        // The directories above the placeholders look as they do on disk.
        assert!(out.contains(".git 750\nsub 711\nsub/.git 700\n"), "{out}");
        assert!(out.contains("hooks"), "placeholder not in the view: {out}");
        for r in [".git", "sub/.git"] {
            for p in ["hooks", "hooks/post-merge", "config.worktree"] {
                assert!(!f.upper().join(r).join(p).exists(), "{r}/{p} staged");
            }
        }
        // Nothing but the command's own file was staged: no placeholder or
        // directory made for one is left in the upper dir.
        assert_eq!(std::fs::read_dir(f.upper()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>(), vec!["x"]);
        assert!(!f.ws().join(".git/hooks").exists() && !f.ws().join("x").exists());
    }
}

sandbox_test! {
    fn a_run_ending_does_not_unprotect_an_overlapping_one() {
        // Two runs over one workspace share its upper dir. When the first
        // ends, the placeholder the second bound read-only must still be
        // there (it once was the first run's, removed at its end, and the
        // kernel then detached the second run's bind).
        let f = Fixture::new();
        f.write(".git/config", "[core]\n");
        let (first, second) = std::thread::scope(|s| {
            let a = s.spawn(|| try_run(&f.sh("sleep 0.3")));
            std::thread::sleep(std::time::Duration::from_millis(100));
            let b = s.spawn(|| {
                try_run(&f.sh(
                    "sleep 1; mkdir -p .git/hooks; echo evil > .git/hooks/post-merge; echo evil > .git/config.worktree; true",
                ))
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let (Some(first), Some(second)) = (first, second) else { return };
        assert_eq!(first.status, ExitKind::Exited(0), "{}", stderr(&first));
        assert_eq!(second.status, ExitKind::Exited(0), "{}", stderr(&second));
        assert!(!f.upper().join(".git/hooks/post-merge").exists(), "hook planted after the first run ended");
        assert!(!f.upper().join(".git/config.worktree").exists());
    }
}

sandbox_test! {
    fn a_write_through_git_that_is_a_symlink_is_refused_without_writing_where_it_points() {
        // Write-through placeholders are made in the real tree. A `.git`
        // pointing elsewhere would have them made there (by the host
        // side, as root when started as root), and the sandbox, which
        // cannot see the target, would be left with nothing holding
        // `.git/hooks`.
        let f = Fixture::new();
        let elsewhere = f.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, f.ws().join(".git")).unwrap();
        let mut s = write_through(&f, "echo ran");
        let Some(msg) = refusal(&s, Layer::ProtectedPaths) else { return };
        assert!(msg.contains("is a symbolic link"), "{msg}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Asked to, it runs without them (and still writes nothing there).
        s.allow_degraded = vec![Layer::ProtectedPaths];
        let Some(o) = try_run(&s) else { return };
        assert_eq!(stdout(&o).trim(), "ran", "{}", stderr(&o));
        assert!(o.report.degraded.iter().any(|(l, _)| *l == Layer::ProtectedPaths));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
