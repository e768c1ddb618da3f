use airlock_sandbox::ExitKind;

use crate::common::*;

#[test]
fn writes_are_staged_in_the_upper_dir() {
    let f = Fixture::new();
    f.write("a.txt", "original");
    let Some(o) =
        try_run(&f.sh("echo changed > a.txt && echo new > b.txt && rm -f gone.txt; cat a.txt"))
    else {
        return;
    };
    assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "changed");
    // Real tree untouched; changes in upper.
    assert_eq!(
        std::fs::read_to_string(f.ws().join("a.txt")).unwrap(),
        "original"
    );
    assert!(!f.ws().join("b.txt").exists());
    assert_eq!(
        std::fs::read_to_string(f.upper().join("a.txt")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.upper().join("b.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(o.report.workspace, "staged-overlay");
}

#[test]
fn deletes_become_whiteouts() {
    let f = Fixture::new();
    f.write("old.txt", "x");
    let Some(o) = try_run(&f.sh("rm old.txt && test ! -e old.txt")) else {
        return;
    };
    assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
    assert!(f.ws().join("old.txt").exists());
    let md = std::fs::symlink_metadata(f.upper().join("old.txt")).expect("whiteout in upper");
    use std::os::unix::fs::FileTypeExt;
    let xattr_whiteout = md.is_file() && md.len() == 0;
    assert!(md.file_type().is_char_device() || xattr_whiteout, "{md:?}");
}

#[test]
fn write_through_writes_the_real_tree() {
    let f = Fixture::new();
    let mut s = f.sh("echo hi > direct.txt");
    s.workspace.as_mut().unwrap().mode = airlock_sandbox::WorkspaceMode::WriteThrough;
    let Some(o) = try_run(&s) else { return };
    assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(f.ws().join("direct.txt")).unwrap(),
        "hi\n"
    );
}

#[test]
fn read_only_workspace_refuses_writes() {
    let f = Fixture::new();
    let mut s = f.sh("echo hi > x.txt");
    s.workspace.as_mut().unwrap().mode = airlock_sandbox::WorkspaceMode::ReadOnly;
    let Some(o) = try_run(&s) else { return };
    assert_ne!(o.status, ExitKind::Exited(0));
    assert!(!f.ws().join("x.txt").exists());
}
