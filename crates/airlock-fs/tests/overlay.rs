//! The staging layout against the real kernel: overlayfs mounted with
//! `userxattr` inside a user namespace (`unshare -Urm`, so the mount dies
//! with the shell and nothing is left behind).

mod common;

use std::fs;
use std::process::Command;

use airlock_fs::{ChangeKind, CommitOptions, FsError, StagingArea, StagingStore};
use common::Fx;

fn area(fx: &Fx) -> StagingArea {
    StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root)))
        .unwrap()
        .area("s", &fx.ws)
        .unwrap()
}

/// Mount base + area at a fresh directory in a private user and mount
/// namespace and run `script` there (`$M` is the mount point).
fn in_overlay(fx: &Fx, a: &StagingArea, script: &str) -> String {
    let mnt = format!("{}/mnt", fx.root);
    let _ = fs::create_dir(&mnt);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        fx.ws,
        a.upper_dir().display(),
        a.work_dir().display()
    );
    let full = format!("set -e; mount -t overlay overlay -o '{opts}' \"$M\"; {script}");
    let out = Command::new("unshare")
        .args(["-Urm", "sh", "-c", &full])
        .env("M", &mnt)
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "overlay script failed ({}):\nstdout: {}\nstderr: {}\n(needs unprivileged user namespaces and overlayfs)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kernel_honours_staged_layout() {
    let fx = Fx::new();
    fx.write("gone.txt", b"gone\n");
    fx.write("keep/x", b"x\n");
    fx.write("keep/y", b"y\n");
    let a = area(&fx);
    a.write(&fx.w("readme.txt"), b"staged\n", None).unwrap();
    a.delete(&fx.w("gone.txt")).unwrap();
    a.delete(&fx.w("keep/x")).unwrap();
    a.write(&fx.w("newdir/n.txt"), b"n\n", None).unwrap();
    a.rename(&fx.w("keep/y"), &fx.w("moved.txt")).unwrap();
    let out = in_overlay(
        &fx,
        &a,
        r#"cat "$M/readme.txt"; echo ---; ls -A "$M"; echo ---; ls -A "$M/keep"; echo ---; ls -A "$M/newdir"; echo ---;
           cat "$M/moved.txt"; echo ---; if cat "$M/gone.txt" 2>/dev/null; then echo visible; else echo hidden; fi"#,
    );
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts[0], "staged\n", "{out}");
    assert_eq!(parts[1], "keep\nmoved.txt\nnewdir\nreadme.txt\n", "{out}");
    assert_eq!(parts[2], "", "both keep/ files are gone: {out}");
    assert_eq!(parts[3], "n.txt\n", "{out}");
    assert_eq!(parts[4], "y\n", "{out}");
    assert_eq!(parts[5], "hidden\n", "{out}");
}

#[test]
fn kernel_made_changes_are_read_and_committed() {
    let fx = Fx::new();
    fx.write("k_del", b"delete me\n");
    fx.write("k_mod", b"line one\n");
    fx.write("k_deldir/a", b"a\n");
    fx.write("rdir/a", b"a\n");
    fx.write("rdir/kept", b"old\n");
    fx.write("untouched", b"same\n");
    let a = area(&fx);
    in_overlay(
        &fx,
        &a,
        r#"cd "$M"; echo new > k_new; rm k_del; mkdir k_dir; echo x > k_dir/x; echo more >> k_mod;
           rm -r k_deldir; ln -s readme.txt k_link; rm -r rdir; mkdir rdir; echo new > rdir/kept;
           cat untouched >/dev/null; chmod 4755 k_new"#,
    );
    let recorded = a.record_bases().unwrap();
    assert_eq!(recorded, a.changes().unwrap(), "one walk, the same answer");
    let got: Vec<(String, ChangeKind)> = recorded
        .into_iter()
        .map(|c| {
            (
                c.path
                    .strip_prefix(&format!("{}/", fx.ws))
                    .unwrap()
                    .to_string(),
                c.kind,
            )
        })
        .collect();
    let want: Vec<(String, ChangeKind)> = [
        ("k_del", ChangeKind::Deleted),
        ("k_deldir", ChangeKind::Deleted),
        ("k_dir", ChangeKind::Dir),
        ("k_dir/x", ChangeKind::Added),
        ("k_link", ChangeKind::Symlink),
        ("k_mod", ChangeKind::Modified),
        ("k_new", ChangeKind::Added),
        ("rdir/a", ChangeKind::Deleted),
        ("rdir/kept", ChangeKind::Modified),
    ]
    .into_iter()
    .map(|(p, k)| (p.to_string(), k))
    .collect();
    assert_eq!(got, want);
    assert!(matches!(
        a.read_staged(&fx.w("k_del")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        a.read_staged(&fx.w("rdir/a")),
        Err(FsError::NotFound { .. })
    ));
    assert_eq!(a.read_staged(&fx.w("k_new")).unwrap().unwrap(), b"new\n");
    assert_eq!(a.read_staged(&fx.w("untouched")).unwrap(), None);
    let diff = a.diff(None).unwrap();
    assert!(diff.contains(" line one\n+more\n"), "{diff}");

    let r = a.commit(None, &CommitOptions::default()).unwrap();
    let refused: Vec<&str> = r.refused.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(
        refused,
        vec![fx.w("k_deldir").as_str()],
        "non-empty directory deletes are refused: {r:?}"
    );
    assert_eq!(fs::read(fx.w("k_new")).unwrap(), b"new\n");
    assert_eq!(
        common::mode_of(&fx.w("k_new")),
        0o755,
        "setuid set in the sandbox is dropped"
    );
    assert_eq!(fs::read(fx.w("k_mod")).unwrap(), b"line one\nmore\n");
    assert_eq!(fs::read(fx.w("k_dir/x")).unwrap(), b"x\n");
    assert_eq!(
        fs::read_link(fx.w("k_link")).unwrap().to_str().unwrap(),
        "readme.txt"
    );
    assert!(fs::symlink_metadata(fx.w("k_del")).is_err());
    assert!(fs::symlink_metadata(fx.w("rdir/a")).is_err());
    assert_eq!(fs::read(fx.w("rdir/kept")).unwrap(), b"new\n");
    let left = a.changes().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");

    // The merged view after commit still matches the real tree.
    let out = in_overlay(&fx, &a, r#"ls -A "$M"; echo ---; ls -A "$M/rdir""#);
    assert!(
        out.starts_with("k_dir\nk_link\nk_mod\nk_new\nrdir\nreadme.txt\nuntouched\n---\nkept\n"),
        "{out}"
    );
}
