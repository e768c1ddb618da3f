//! A staged tree wider and deeper than the descriptor limit: a sandboxed
//! command may create any number of sibling directories, nested any
//! number of levels, and listing, fingerprinting and diffing its changes
//! must still work (and the audit record of the run still list them). Its
//! own test binary, with one test: it lowers this process's RLIMIT_NOFILE
//! (discarding such trees is tested in `staging.rs`).

mod common;

use std::fs;

use airlock_fs::{ChangeKind, StagingStore};
use common::Fx;

#[test]
fn more_staged_directories_side_by_side_or_nested_than_open_descriptors_allowed() {
    let fx = Fx::new();
    let a = StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root)))
        .unwrap()
        .area("s", &fx.ws)
        .unwrap();
    // What a command writing through the overlay leaves in the upper dir:
    // new directories, each holding a file, and one the real tree has.
    let upper = a.upper_dir();
    for i in 0..600 {
        fs::create_dir_all(upper.join(format!("out/d{i}"))).unwrap();
        fs::write(upper.join(format!("out/d{i}/f")), "x").unwrap();
    }
    let deep = "d/".repeat(400);
    fs::create_dir_all(upper.join(&deep)).unwrap();
    fs::write(upper.join(format!("{deep}bottom")), "z").unwrap();
    fs::create_dir(format!("{}/real", fx.ws)).unwrap();
    fs::create_dir(upper.join("real")).unwrap();
    fs::write(upper.join("real/new"), "y").unwrap();

    // Dropped before the fixture (declared after it), even on a failed
    // assertion: removing the fixture's deep tree needs descriptors.
    let _limit = NofileLimit::lower_to(128);

    let changes = a.record_bases().expect("walk within the descriptor limit");
    assert_eq!(changes, a.changes().unwrap());
    // out, 600 directories and their 600 files; 400 nested directories
    // and the file at the bottom; real/new (real exists).
    assert_eq!(
        changes.len(),
        1 + 600 + 600 + 400 + 1 + 1,
        "{:?}",
        &changes[..3]
    );
    let kind = |rel: &str| {
        let path = format!("{}/{rel}", fx.ws);
        changes.iter().find(|c| c.path == path).map(|c| c.kind)
    };
    assert_eq!(kind("out"), Some(ChangeKind::Dir));
    assert_eq!(kind("out/d599"), Some(ChangeKind::Dir));
    assert_eq!(kind("out/d0/f"), Some(ChangeKind::Added));
    assert_eq!(kind("real"), None, "the real tree has it");
    assert_eq!(kind("real/new"), Some(ChangeKind::Added));
    assert_eq!(kind(&format!("{deep}bottom")), Some(ChangeKind::Added));
    let diff = a.diff(None).unwrap();
    assert!(
        diff.contains("out/d599/f") && diff.contains("/d/bottom"),
        "{diff:.300}"
    );
}

/// RLIMIT_NOFILE lowered for as long as this lives (this binary's only
/// test), then put back.
struct NofileLimit(rustix::process::Rlimit);

impl NofileLimit {
    fn lower_to(n: u64) -> NofileLimit {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let was = getrlimit(Resource::Nofile);
        let lowered = Rlimit {
            current: Some(n),
            maximum: was.maximum,
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        NofileLimit(was)
    }
}

impl Drop for NofileLimit {
    fn drop(&mut self) {
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, self.0);
    }
}
