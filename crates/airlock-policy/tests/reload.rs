//! Reload: last good set on failure, revision changes, and the watcher.

mod common;

use std::time::{Duration, Instant};

use airlock_core::DecisionKind::{Allow, Deny};
use airlock_policy::PolicyError;
use common::{engine_in, input, write};

const PDF_DENY: &str =
    "package team.pdf\n\ndeny contains \"no pdfs\" if endswith(input.path, \".pdf\")\n";

#[test]
fn reload_picks_up_changes_and_keeps_the_last_good_set_on_failure() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_in(dir.path(), true);
    let clone = e.clone();
    let r0 = e.revision();
    let pdf = input("read_files", &["/home/u/proj/a.pdf"]);
    assert_eq!(e.evaluate(&pdf).decision, Allow);

    write(dir.path(), "pdf.rego", PDF_DENY);
    let r1 = e.reload().expect("reload");
    assert_ne!(r0, r1);
    assert_eq!(e.revision(), r1);
    // Every clone shares the swapped set.
    assert_eq!(clone.evaluate(&pdf).decision, Deny);

    write(
        dir.path(),
        "broken.rego",
        "package team.broken\n\ndeny contains msg if {\n",
    );
    match e.reload() {
        Err(PolicyError::Compile { path, message }) => {
            assert!(path.ends_with("broken.rego"), "{path:?}");
            assert!(!message.is_empty());
        }
        other => panic!("expected compile error, got {other:?}"),
    }
    assert_eq!(e.revision(), r1, "last good set stays active");
    assert_eq!(clone.evaluate(&pdf).decision, Deny);

    std::fs::remove_file(dir.path().join("broken.rego")).expect("rm");
    std::fs::remove_file(dir.path().join("pdf.rego")).expect("rm");
    assert_eq!(
        e.reload().expect("reload"),
        r0,
        "same content, same revision"
    );
    assert_eq!(e.evaluate(&pdf).decision, Allow);
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn watch_reloads_on_change_and_stops_when_dropped() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_in(dir.path(), true);
    let pdf = input("read_files", &["/home/u/proj/a.pdf"]);
    let handle = e.watch(Duration::from_millis(20));
    assert!(handle.is_running());
    write(dir.path(), "pdf.rego", PDF_DENY);
    assert!(
        wait_for(|| e.evaluate(&pdf).decision == Deny),
        "watcher reloads the new file"
    );
    let good = e.revision();

    // A broken edit is not applied.
    write(
        dir.path(),
        "pdf.rego",
        "package team.pdf\n\ndeny contains msg if {\n",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(e.revision(), good);
    assert_eq!(e.evaluate(&pdf).decision, Deny);

    drop(handle);
    // After the handle is gone, changes are no longer picked up.
    std::fs::remove_file(dir.path().join("pdf.rego")).expect("rm");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(e.revision(), good);
    assert_eq!(e.reload().map(|_| ()).ok(), Some(()));
    assert_eq!(e.evaluate(&pdf).decision, Allow);
}

#[test]
fn watch_follows_reloads_made_elsewhere() {
    // A reload by SIGHUP or the operator, followed by the file going away
    // before the watcher's next look, must still end with the directory's
    // state active: the watcher compares with the active set, not with what
    // it saw last.
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_in(dir.path(), true);
    let pdf = input("read_files", &["/home/u/proj/a.pdf"]);
    let handle = e.watch(Duration::from_millis(300));
    write(dir.path(), "pdf.rego", PDF_DENY);
    e.reload().expect("reload");
    assert_eq!(e.evaluate(&pdf).decision, Deny);
    std::fs::remove_file(dir.path().join("pdf.rego")).expect("rm");
    assert!(
        wait_for(|| e.evaluate(&pdf).decision == Allow),
        "the watcher reloads the directory as it is now"
    );
    drop(handle);
}
