//! The staging store on a real tree: layout, merged view, change
//! classification, diff and discard, and symlinks planted in the upper dir.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};

use airlock_fs::{Change, ChangeKind, FsError, StagingStore};
use common::{mode_of, Fx};

fn store(fx: &Fx) -> StagingStore {
    StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root))).unwrap()
}

fn kinds(changes: &[Change], fx: &Fx) -> Vec<(String, ChangeKind)> {
    changes
        .iter()
        .map(|c| {
            (
                c.path
                    .strip_prefix(&format!("{}/", fx.ws))
                    .unwrap()
                    .to_string(),
                c.kind,
            )
        })
        .collect()
}

fn meta(fx: &Fx, id: &str) -> serde_json::Value {
    let p = format!("{}/state/staging/{id}/meta.json", fx.root);
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

#[test]
fn areas_are_per_session_and_base_with_private_layout() {
    let fx = Fx::new();
    let s = store(&fx);
    let a = s.area("sess-1", &fx.ws).unwrap();
    let again = s.area("sess-1", &fx.ws).unwrap();
    assert_eq!(a.id(), again.id(), "same (session, base) reuses the area");
    assert!(
        a.id().starts_with("st-") && a.id().len() == 13,
        "{}",
        a.id()
    );
    let other = s.area("sess-2", &fx.ws).unwrap();
    assert_ne!(a.id(), other.id());
    fs::create_dir(fx.w("sub")).unwrap();
    let sub = s.area("sess-1", &fx.w("sub")).unwrap();
    assert_ne!(a.id(), sub.id());

    assert_eq!(a.session(), "sess-1");
    assert_eq!(a.base(), fx.ws);
    assert_eq!(
        a.upper_dir(),
        std::path::PathBuf::from(format!("{}/state/staging/{}/upper", fx.root, a.id()))
    );
    assert!(a.work_dir().is_dir());
    assert_eq!(mode_of(&format!("{}/state/staging", fx.root)), 0o700);
    assert_eq!(
        mode_of(&format!("{}/state/staging/{}", fx.root, a.id())),
        0o700
    );
    assert_eq!(
        mode_of(&format!("{}/state/staging/{}/meta.json", fx.root, a.id())),
        0o600
    );
    let m = meta(&fx, a.id());
    assert_eq!(m["session"], "sess-1");
    assert_eq!(m["base"], fx.ws.as_str());

    let got = s.get(a.id()).unwrap();
    assert_eq!(got.base(), fx.ws);
    assert!(matches!(
        s.get("st-0000000000"),
        Err(FsError::StagedNotFound { .. })
    ));
    assert!(matches!(
        s.get("../../etc"),
        Err(FsError::StagedNotFound { .. })
    ));
    let listed = s.list().unwrap();
    assert_eq!(listed.len(), 3);

    // A base that is a symlink, a file, or relative is refused.
    symlink(&fx.ws, format!("{}/wslink", fx.home)).unwrap();
    assert!(matches!(
        s.area("x", &format!("{}/wslink", fx.home)),
        Err(FsError::Escape { .. })
    ));
    assert!(s.area("x", &fx.w("readme.txt")).is_err());
    assert!(s.area("x", "relative/path").is_err());
}

/// Make an area the way an earlier version (or another session) left it.
fn plant_area(fx: &Fx, id: &str, session: &str, base: &str) {
    let dir = format!("{}/state/staging/{id}", fx.root);
    for d in ["upper", "work", "tmp"] {
        fs::create_dir_all(format!("{dir}/{d}")).unwrap();
    }
    let meta = serde_json::json!({
        "id": id, "session": session, "base": base, "created": 1, "bases": {}
    });
    fs::write(format!("{dir}/meta.json"), meta.to_string()).unwrap();
}

#[test]
fn an_area_is_found_by_the_key_in_its_id_and_older_areas_still_are() {
    let fx = Fx::new();
    let s = store(&fx);
    // The key: the same (session, base) gets an id with the same first
    // digits in any store.
    let elsewhere = tempfile::tempdir().unwrap();
    let key = StagingStore::open(elsewhere.path())
        .unwrap()
        .area("sess-1", &fx.ws)
        .unwrap()
        .id()[..7]
        .to_string();
    // Another session's area that shares the key is not taken for it.
    plant_area(&fx, &format!("{key}abcdef"), "sess-9", &fx.ws);
    let a = s.area("sess-1", &fx.ws).unwrap();
    assert!(a.id().starts_with(&key), "{} {key}", a.id());
    assert_ne!(a.id(), format!("{key}abcdef"));
    assert_eq!(s.area("sess-1", &fx.ws).unwrap().id(), a.id());
    assert_eq!(
        s.area("sess-9", &fx.ws).unwrap().id(),
        format!("{key}abcdef")
    );
    // An area whose id carries no key (made before ids had one) is found.
    let old = if key.ends_with("0000") {
        "st-ffff012345"
    } else {
        "st-0000012345"
    };
    plant_area(&fx, old, "sess-old", &fx.ws);
    assert_eq!(s.area("sess-old", &fx.ws).unwrap().id(), old);
    assert_eq!(s.list().unwrap().len(), 3);
}

#[test]
fn write_delete_and_merged_view() {
    let fx = Fx::new();
    fx.write("keep.txt", b"keep\n");
    fx.write("gone.txt", b"gone\n");
    let a = store(&fx).area("s", &fx.ws).unwrap();

    a.write(&fx.w("readme.txt"), b"hello, world\n", None)
        .unwrap();
    a.write(&fx.w("new/deep/file.rs"), b"fn main() {}\n", None)
        .unwrap();
    a.delete(&fx.w("gone.txt")).unwrap();

    // The real tree is untouched.
    assert_eq!(fs::read(fx.w("readme.txt")).unwrap(), b"hello\n");
    assert!(fs::metadata(fx.w("gone.txt")).is_ok());
    assert!(fs::metadata(fx.w("new")).is_err());

    assert_eq!(
        a.read_staged(&fx.w("readme.txt")).unwrap().unwrap(),
        b"hello, world\n"
    );
    assert_eq!(
        a.read_staged(&fx.w("keep.txt")).unwrap(),
        None,
        "unstaged: caller reads the real file"
    );
    assert!(matches!(
        a.read_staged(&fx.w("gone.txt")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        a.read_staged(&fx.w("new/deep")),
        Err(FsError::Invalid { .. })
    ));

    let c = a.changes().unwrap();
    assert_eq!(
        kinds(&c, &fx),
        vec![
            ("gone.txt".into(), ChangeKind::Deleted),
            ("new".into(), ChangeKind::Dir),
            ("new/deep".into(), ChangeKind::Dir),
            ("new/deep/file.rs".into(), ChangeKind::Added),
            ("readme.txt".into(), ChangeKind::Modified),
        ]
    );
    assert_eq!(
        c.iter().find(|c| c.kind == ChangeKind::Added).unwrap().size,
        13
    );

    // Layout: a whiteout for the delete; content as files; new dirs opaque.
    let upper = a.upper_dir();
    let wh = fs::symlink_metadata(upper.join("gone.txt")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0/0 whiteout"
    );
    assert_eq!(
        fs::read(upper.join("readme.txt")).unwrap(),
        b"hello, world\n"
    );
    let opaque = xattr(&upper.join("new"), "user.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    // Fingerprints of the originals.
    let m = meta(&fx, a.id());
    let b = &m["bases"];
    assert_eq!(b["readme.txt"]["existed"], true);
    assert_eq!(
        b["readme.txt"]["sha256"],
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        "sha256 of the original"
    );
    assert_eq!(b["readme.txt"]["size"], 6);
    assert_eq!(b["new/deep/file.rs"]["existed"], false);
    assert_eq!(b["gone.txt"]["existed"], true);

    // Deleting something never there, or already deleted.
    assert!(matches!(
        a.delete(&fx.w("never.txt")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        a.delete(&fx.w("gone.txt")),
        Err(FsError::NotFound { .. })
    ));
    // Writing over a deleted file brings it back as a modification.
    a.write(&fx.w("gone.txt"), b"back\n", None).unwrap();
    assert_eq!(
        a.read_staged(&fx.w("gone.txt")).unwrap().unwrap(),
        b"back\n"
    );
    // Deleting a file that exists only in staging leaves no trace.
    a.delete(&fx.w("new/deep/file.rs")).unwrap();
    let c = a.changes().unwrap();
    assert!(!kinds(&c, &fx).iter().any(|(p, _)| p == "new/deep/file.rs"));
    assert!(meta(&fx, a.id())["bases"].get("new/deep/file.rs").is_none());
}

fn xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let fd = rustix::fs::open(p, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
    let mut buf = [0u8; 64];
    rustix::fs::fgetxattr(&fd, name, &mut buf[..])
        .ok()
        .map(|n| buf[..n].to_vec())
}

#[test]
fn modes_are_kept_and_setuid_is_stripped() {
    let fx = Fx::new();
    fx.write("run.sh", b"#!/bin/sh\n");
    fs::set_permissions(
        fx.w("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let a = store(&fx).area("s", &fx.ws).unwrap();
    a.write(&fx.w("run.sh"), b"#!/bin/sh\necho hi\n", None)
        .unwrap();
    assert_eq!(
        mode_of(a.upper_dir().join("run.sh").to_str().unwrap()),
        0o750,
        "keeps the real file's mode"
    );
    a.write(&fx.w("suid"), b"x", Some(0o4755)).unwrap();
    assert_eq!(mode_of(a.upper_dir().join("suid").to_str().unwrap()), 0o755);
    a.write(&fx.w("sgid"), b"x", Some(0o2775)).unwrap();
    assert_eq!(mode_of(a.upper_dir().join("sgid").to_str().unwrap()), 0o775);
    a.write(&fx.w("plain"), b"x", None).unwrap();
    assert_eq!(
        mode_of(a.upper_dir().join("plain").to_str().unwrap()),
        0o644
    );
}

#[test]
fn rename_stages_copy_and_whiteout() {
    let fx = Fx::new();
    fx.write("a.txt", b"alpha\n");
    let a = store(&fx).area("s", &fx.ws).unwrap();
    a.rename(&fx.w("a.txt"), &fx.w("dir/b.txt")).unwrap();
    assert_eq!(
        a.read_staged(&fx.w("dir/b.txt")).unwrap().unwrap(),
        b"alpha\n"
    );
    assert!(matches!(
        a.read_staged(&fx.w("a.txt")),
        Err(FsError::NotFound { .. })
    ));
    // Rename a staged-only file: no whiteout left behind.
    a.write(&fx.w("tmp.txt"), b"t\n", None).unwrap();
    a.rename(&fx.w("tmp.txt"), &fx.w("final.txt")).unwrap();
    let c = kinds(&a.changes().unwrap(), &fx);
    assert_eq!(
        c,
        vec![
            ("a.txt".into(), ChangeKind::Deleted),
            ("dir".into(), ChangeKind::Dir),
            ("dir/b.txt".into(), ChangeKind::Added),
            ("final.txt".into(), ChangeKind::Added),
        ]
    );
    assert!(matches!(
        a.rename(&fx.w("nope"), &fx.w("x")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        a.rename(&fx.w("a.txt"), &fx.w("x")),
        Err(FsError::NotFound { .. })
    ));
    // A hard-linked real file is not copied into staging (it could be a secret).
    fs::hard_link(&fx.canary, fx.w("hl")).unwrap();
    assert!(matches!(
        a.rename(&fx.w("hl"), &fx.w("copy")),
        Err(FsError::Escape { .. })
    ));
    assert!(a.read_staged(&fx.w("copy")).unwrap().is_none());
}

#[test]
fn paths_outside_base_or_through_symlinks_are_refused() {
    let fx = Fx::new();
    let a = store(&fx).area("s", &fx.ws).unwrap();
    assert!(matches!(
        a.write(&fx.bashrc, b"evil", None),
        Err(FsError::Escape { .. })
    ));
    assert!(matches!(
        a.write(&format!("{}-evil/x", fx.ws), b"evil", None),
        Err(FsError::Escape { .. })
    ));
    assert!(matches!(
        a.write(&format!("{}/../x", fx.ws), b"evil", None),
        Err(FsError::Invalid { .. })
    ));
    assert!(matches!(
        a.write(&fx.ws, b"evil", None),
        Err(FsError::Invalid { .. })
    ));
    // Real-tree symlinks: as a directory component and as the target.
    symlink(format!("{}/.ssh", fx.home), fx.w("sshdir")).unwrap();
    assert!(matches!(
        a.write(&fx.w("sshdir/authorized_keys"), b"evil", None),
        Err(FsError::Escape { .. })
    ));
    symlink(&fx.bashrc, fx.w("rc")).unwrap();
    match a.write(&fx.w("rc"), b"evil", None) {
        Err(e @ FsError::Invalid { .. }) => assert!(e.to_string().contains("symlink"), "{e}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(a.changes().unwrap().is_empty());
    fx.assert_canaries_intact();
}

/// A sandboxed command can write anything into upper, including symlinks
/// pointing out. Staging through such a tree must never follow them.
#[test]
fn symlinks_planted_in_upper_are_never_followed() {
    let fx = Fx::new();
    let a = store(&fx).area("s", &fx.ws).unwrap();
    let upper = a.upper_dir();
    let outside = format!("{}/outside", fx.root);
    fs::create_dir(&outside).unwrap();
    // A directory symlink in upper, pointing out.
    symlink(&outside, upper.join("d")).unwrap();
    assert!(a.write(&fx.w("d/x"), b"evil", None).is_err());
    assert!(a.delete(&fx.w("d/x")).is_err());
    assert!(a.read_staged(&fx.w("d/x")).is_err() || a.read_staged(&fx.w("d/x")).unwrap().is_none());
    // A file symlink in upper, pointing at the canary: replaced, not followed.
    symlink(&fx.bashrc, upper.join("rc")).unwrap();
    a.write(&fx.w("rc"), b"mine\n", None).unwrap();
    assert!(fs::symlink_metadata(upper.join("rc")).unwrap().is_file());
    assert!(matches!(
        a.read_staged(&fx.w("d")),
        Err(FsError::Invalid { .. })
    ));
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    fx.assert_canaries_intact();
}

#[test]
fn diff_shows_each_kind() {
    let fx = Fx::new();
    fx.write("mod.txt", b"one\ntwo\nthree\n");
    fx.write("del.txt", b"bye\n");
    fx.write("bin.dat", b"\x00\x01\x02");
    let a = store(&fx).area("s", &fx.ws).unwrap();
    a.write(&fx.w("mod.txt"), b"one\n2\nthree\n", None).unwrap();
    a.write(&fx.w("add.txt"), b"fresh\n", None).unwrap();
    a.delete(&fx.w("del.txt")).unwrap();
    a.write(&fx.w("bin.dat"), b"\xff\xfe", None).unwrap();
    let d = a.diff(None).unwrap();
    let mod_path = fx.w("mod.txt");
    assert!(
        d.contains(&format!("--- {mod_path}\n+++ {mod_path}\n")),
        "{d}"
    );
    assert!(d.contains("-two\n+2\n"), "{d}");
    assert!(
        d.contains(&format!(
            "new file mode 100644\n--- /dev/null\n+++ {}\n",
            fx.w("add.txt")
        )),
        "{d}"
    );
    assert!(d.contains("+fresh\n"), "{d}");
    assert!(
        d.contains(&format!(
            "deleted file mode 100644\n--- {}\n+++ /dev/null\n",
            fx.w("del.txt")
        )),
        "{d}"
    );
    assert!(d.contains("-bye\n"), "{d}");
    assert!(
        d.contains(&format!("Binary files {0} and {0} differ", fx.w("bin.dat"))),
        "{d}"
    );
    // Only the named paths.
    let only = a.diff(Some(&[fx.w("add.txt")])).unwrap();
    assert!(only.contains("+fresh") && !only.contains("-two"), "{only}");
}

#[test]
fn unchanged_copy_up_is_not_a_change() {
    let fx = Fx::new();
    let a = store(&fx).area("s", &fx.ws).unwrap();
    // As overlayfs does on open(O_RDWR) without a write: identical copy.
    fs::copy(fx.w("readme.txt"), a.upper_dir().join("readme.txt")).unwrap();
    fs::set_permissions(
        a.upper_dir().join("readme.txt"),
        fs::metadata(fx.w("readme.txt")).unwrap().permissions(),
    )
    .unwrap();
    assert!(a.changes().unwrap().is_empty());
    fs::write(a.upper_dir().join("readme.txt"), b"changed\n").unwrap();
    assert_eq!(
        kinds(&a.changes().unwrap(), &fx),
        vec![("readme.txt".into(), ChangeKind::Modified)]
    );
}

#[test]
fn discard_all_or_some() {
    let fx = Fx::new();
    fx.write("x.txt", b"x\n");
    let a = store(&fx).area("s", &fx.ws).unwrap();
    a.write(&fx.w("readme.txt"), b"new\n", None).unwrap();
    a.write(&fx.w("d/a"), b"a", None).unwrap();
    a.write(&fx.w("d/b"), b"b", None).unwrap();
    a.delete(&fx.w("x.txt")).unwrap();
    assert_eq!(a.changes().unwrap().len(), 5);
    assert_eq!(a.discard(Some(&[fx.w("d")])).unwrap(), 3);
    assert_eq!(a.discard(Some(&[fx.w("x.txt")])).unwrap(), 1);
    assert_eq!(
        a.read_staged(&fx.w("x.txt")).unwrap(),
        None,
        "whiteout gone"
    );
    assert_eq!(
        kinds(&a.changes().unwrap(), &fx),
        vec![("readme.txt".into(), ChangeKind::Modified)]
    );
    assert_eq!(a.discard(None).unwrap(), 1);
    assert!(a.changes().unwrap().is_empty());
    assert_eq!(fs::read_dir(a.upper_dir()).unwrap().count(), 0);
    assert!(meta(&fx, a.id())["bases"].as_object().unwrap().is_empty());
    assert_eq!(fs::read(fx.w("readme.txt")).unwrap(), b"hello\n");
}

#[test]
fn concurrent_writers_do_not_lose_fingerprints() {
    let fx = Fx::new();
    let s = store(&fx);
    let a = s.area("s", &fx.ws).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4 {
            let a = a.clone();
            let fx = &fx;
            sc.spawn(move || {
                for i in 0..10 {
                    a.write(&fx.w(&format!("t{t}/f{i}")), b"x", None).unwrap();
                }
            });
        }
    });
    let m = meta(&fx, a.id());
    let bases = m["bases"].as_object().unwrap();
    assert_eq!(
        bases.keys().filter(|k| k.contains("/f")).count(),
        40,
        "every write recorded its base"
    );
    assert_eq!(bases.len(), 44, "and each new directory");
    assert_eq!(a.changes().unwrap().len(), 44);
}

#[test]
fn discarding_removes_any_shape_and_follows_no_link() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fx::new();
    let store =
        StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root))).unwrap();
    let a = store.area("s", &fx.ws).unwrap();
    // Should the test fail before the area is removed, remove it before the
    // fixture goes: a plain recursive removal of 3,000 levels needs a
    // descriptor per level.
    let _cleanup = RemoveArea(
        StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root))).unwrap(),
        a.id().to_string(),
    );
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

/// Removes a staging area when dropped (if it is still there).
struct RemoveArea(StagingStore, String);

impl Drop for RemoveArea {
    fn drop(&mut self) {
        let _ = self.0.remove(&self.1);
    }
}

#[test]
fn an_area_its_owner_cannot_read_is_reported_as_such_and_can_be_discarded() {
    // A sandboxed command runs as the area's owner when unprivileged: it can
    // leave a staged directory its owner cannot list (mode 300). Root reads
    // it anyway, so as root this thread takes nobody's credentials (on
    // Linux they are per thread) over a tree nobody owns.
    use rustix::process::{Gid, Uid};
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    let root = rustix::process::geteuid().is_root();
    if root {
        for e in walk_all(std::path::Path::new(&fx.root)) {
            std::os::unix::fs::lchown(&e, Some(65534), Some(65534)).unwrap();
        }
    }
    let (store_dir, ws) = (format!("{}/state/staging", fx.root), fx.ws.clone());
    std::thread::spawn(move || {
        if root {
            rustix::thread::set_thread_groups(&[]).unwrap();
            let g = Gid::from_raw(65534);
            rustix::thread::set_thread_res_gid(g, g, g).unwrap();
            let u = Uid::from_raw(65534);
            rustix::thread::set_thread_res_uid(u, u, u).unwrap();
        }
        let store = StagingStore::open(std::path::Path::new(&store_dir)).unwrap();
        let bad = store.area("s", &ws).unwrap();
        let good = store.area("t", &ws).unwrap();
        fs::create_dir(bad.upper_dir().join("d")).unwrap();
        fs::write(bad.upper_dir().join("d/f"), "x").unwrap();
        fs::set_permissions(bad.upper_dir().join("d"), fs::Permissions::from_mode(0o300)).unwrap();
        fs::write(good.upper_dir().join("new.txt"), "y").unwrap();

        // Said as what it is, with what to do; the other area is listed.
        match bad.changes() {
            Err(FsError::Invalid { why, .. }) => assert!(
                why.contains("cannot be read")
                    && why.contains(&format!("airlock staged discard {}", bad.id())),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let list = store.list().unwrap();
        let of = |id: &str| list.iter().find(|a| a.id == id).unwrap().clone();
        assert_eq!(of(bad.id()).changes, None);
        assert!(of(bad.id()).error.unwrap().contains("cannot be read"));
        assert_eq!(of(good.id()).changes, Some(1));
        // It can still be discarded whole.
        store.remove(bad.id()).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    })
    .join()
    .unwrap();
}

/// Every path under `root`, itself included.
fn walk_all(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}
