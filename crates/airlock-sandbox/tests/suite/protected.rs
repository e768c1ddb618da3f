use airlock_sandbox::{ExitKind, WorkspaceMode};

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
        // Placeholders are removed from the upper dir after the run.
        assert!(!f.upper().join(".git/config").exists());
    }
}
