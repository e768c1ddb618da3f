//! A staged tree wider and deeper than the descriptor limit: a sandboxed
//! command may create any number of sibling directories, nested any
//! number of levels, and listing, fingerprinting and diffing its changes
//! must still work (and the audit record of the run still list them). Its
//! own test binary: it lowers this process's RLIMIT_NOFILE.

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

    let limit = 128;
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
        },
    )
    .unwrap();

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

#[test]
fn discarding_removes_any_shape_and_follows_no_link() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fx::new();
    let store =
        StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root))).unwrap();
    let a = store.area("s", &fx.ws).unwrap();
    let upper = a.upper_dir();
    // 3,000 levels (deeper than a path may be long), built one level at a
    // time as a command inside would.
    let mut fd = rustix::fs::open(
        &upper,
        rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    for _ in 0..3000 {
        rustix::fs::mkdirat(&fd, "d", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(
            &fd,
            "d",
            rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
    }
    drop(fd);
    // A name that is not UTF-8, and links out of the area.
    fs::create_dir(upper.join("out")).unwrap();
    fs::write(
        upper
            .join("out")
            .join(std::ffi::OsStr::from_bytes(b"\xff\xfe")),
        "x",
    )
    .unwrap();
    std::os::unix::fs::symlink(&fx.home, upper.join("out/home")).unwrap();
    std::os::unix::fs::symlink(&fx.canary, upper.join("out/key")).unwrap();

    // Too deep to review or commit: listing says so (and what to do)
    // instead of walking on.
    match a.changes() {
        Err(airlock_fs::FsError::Invalid { why, .. }) => {
            assert!(
                why.contains("longer than 4095 bytes") && why.contains("discard"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    // On a small stack: removal must not recurse per level.
    let id = a.id().to_string();
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || store.remove(&id))
        .unwrap()
        .join()
        .expect("no stack overflow")
        .expect("removed");
    assert!(!std::path::Path::new(&format!("{}/state/staging/{}", fx.root, a.id())).exists());
    assert!(
        fs::read(&fx.canary).is_ok(),
        "what the links point to is untouched"
    );
    assert!(std::path::Path::new(&fx.home).join(".bashrc").exists());
}
