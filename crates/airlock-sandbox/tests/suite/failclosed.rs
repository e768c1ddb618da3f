use airlock_sandbox::{ExitKind, Layer, WorkspaceMode};

use crate::common::*;

/// An overlay whose work dir is on another filesystem than its upper dir
/// cannot be mounted: a real, reproducible missing layer.
fn broken_overlay(f: &Fixture) -> Option<(airlock_sandbox::SandboxSpec, tempfile::TempDir)> {
    let other = match tempfile::Builder::new()
        .prefix("airlock-work")
        .tempdir_in("/dev/shm")
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "SKIPPED: [{}] no /dev/shm to put a work dir on another filesystem: {e}",
                who()
            );
            return None;
        }
    };
    if rustix::fs::statvfs("/dev/shm").ok()?.f_fsid
        == rustix::fs::statvfs(f.upper().as_path()).ok()?.f_fsid
    {
        eprintln!(
            "SKIPPED: [{}] /dev/shm is on the same filesystem as the temp dir",
            who()
        );
        return None;
    }
    f.own(other.path());
    let mut s = f.sh("echo x > new.txt; echo ran");
    s.workspace.as_mut().unwrap().mode = WorkspaceMode::Staged {
        upper: f.upper(),
        work: other.path().to_path_buf(),
    };
    Some((s, other))
}

sandbox_test! {
    fn a_missing_layer_is_refused_with_its_name_and_fix() {
        let f = Fixture::new();
        let Some((s, _other)) = broken_overlay(&f) else { return };
        let Some(msg) = refusal(&s, Layer::Overlay) else { return };
        assert!(msg.contains("`overlay` unavailable"), "{msg}");
        assert!(msg.contains("to enable:"), "{msg}");
        assert!(msg.contains("--allow-degraded overlay"), "{msg}");
        assert!(!f.ws().join("new.txt").exists());
    }
}

sandbox_test! {
    fn allow_degraded_runs_without_the_layer_and_records_it() {
        let f = Fixture::new();
        let Some((mut s, _other)) = broken_overlay(&f) else { return };
        s.allow_degraded = vec![Layer::Overlay];
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "ran");
        // Degraded overlay: the workspace is read-only, nothing is written.
        assert_eq!(o.report.workspace, "read-only");
        assert!(o.report.degraded.iter().any(|(l, _)| *l == Layer::Overlay), "{:?}", o.report.degraded);
        assert!(!f.ws().join("new.txt").exists());
    }
}

sandbox_test! {
    fn protected_paths_that_cannot_be_found_are_refused_or_degraded_as_asked() {
        // A pattern list that does not compile: the walk cannot tell which
        // paths to protect, and nothing may run (or be left half-made).
        let f = Fixture::new();
        std::fs::create_dir_all(f.ws().join(".git/hooks")).unwrap();
        f.own(&f.ws().join(".git"));
        f.own(&f.ws().join(".git/hooks"));
        let mut s = f.sh("echo x > new.txt; echo ran");
        s.protected = airlock_fs::ProtectedPaths {
            patterns: vec!["**/.git/hooks".into(), "a/[b".into()],
        };
        let Some(msg) = refusal(&s, Layer::ProtectedPaths) else { return };
        assert!(msg.contains("does not compile"), "{msg}");
        // Nothing half-made is left in the upper dir.
        assert_eq!(std::fs::read_dir(f.upper()).unwrap().count(), 0);

        s.allow_degraded = vec![Layer::ProtectedPaths];
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "ran");
        assert!(
            o.report.degraded.iter().any(|(l, _)| *l == Layer::ProtectedPaths),
            "{:?}",
            o.report.degraded
        );
        assert!(o.report.protected_mounted.is_empty());
    }
}

#[test]
fn layer_names_parse_and_print() {
    for l in Layer::ALL {
        assert_eq!(l.as_str().parse::<Layer>().unwrap(), *l);
    }
    assert!("nope".parse::<Layer>().unwrap_err().contains("landlock"));
}
