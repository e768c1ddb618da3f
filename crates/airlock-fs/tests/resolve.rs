//! Resolution beneath a grant, attacked from inside the grant. Every test
//! builds a real tree with a fake `$HOME` holding a canary key beside the
//! workspace and judges by what comes back (and that the canary never does).

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use airlock_core::ErrorCode;
use airlock_fs::{list, read, stat, FileKind, FsError, GrantRoot};
use common::{Fx, CANARY};

fn escape(r: Result<airlock_fs::ResolvedPath, FsError>) -> String {
    match r {
        Err(e @ FsError::Escape { .. }) => {
            assert_eq!(e.code(), ErrorCode::PathEscape);
            e.to_string()
        }
        Err(e) => panic!("expected Escape, got {e:?}"),
        Ok(p) => panic!(
            "expected Escape, resolved {:?} -> {:?}",
            p.requested(),
            p.real_path()
        ),
    }
}

#[test]
fn plain_file_reads_and_stats() {
    let fx = Fx::new();
    let g = GrantRoot::open(&fx.ws).unwrap();
    assert_eq!(g.path(), fx.ws);
    let p = g.resolve(&fx.w("readme.txt")).unwrap();
    assert!(p.exists());
    assert_eq!(p.requested(), fx.w("readme.txt"));
    assert_eq!(p.real_path().unwrap(), fx.w("readme.txt"));
    assert_eq!(read(&p, 0, None, 1 << 20).unwrap(), b"hello\n");
    assert_eq!(read(&p, 1, Some(3), 1 << 20).unwrap(), b"ell");
    assert_eq!(read(&p, 0, None, 2).unwrap(), b"he", "capped at max");
    assert_eq!(
        read(&p, 0, Some(100), 4).unwrap(),
        b"hell",
        "len capped at max"
    );
    assert_eq!(read(&p, 100, None, 10).unwrap(), b"", "offset past the end");
    let st = stat(&p).unwrap();
    assert_eq!(st.kind, FileKind::File);
    assert_eq!(st.size, 6);
    assert!(!st.staged);
    // The grant root itself resolves too.
    let r = g.resolve(&fx.ws).unwrap();
    assert_eq!(stat(&r).unwrap().kind, FileKind::Dir);
}

#[test]
fn dotdot_is_refused() {
    let fx = Fx::new();
    let g = GrantRoot::open(&fx.ws).unwrap();
    // Lexically: not normalised.
    let e = g.resolve(&format!("{}/../.ssh/id_rsa", fx.ws)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidValue, "{e}");
    // Through a directory symlink to `..` planted in the grant.
    symlink("..", fx.w("up")).unwrap();
    escape(g.resolve(&fx.w("up/.ssh/id_rsa")));
    fx.assert_canaries_intact();
}

#[test]
fn absolute_symlink_to_canary_is_refused() {
    let fx = Fx::new();
    symlink(&fx.canary, fx.w("key")).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();
    let msg = escape(g.resolve(&fx.w("key")));
    assert!(msg.contains("outside the grant"), "{msg}");
}

#[test]
fn relative_symlink_out_is_refused() {
    let fx = Fx::new();
    fs::create_dir_all(fx.w("a/b")).unwrap();
    symlink("../../.ssh/id_rsa", fx.w("a/key")).unwrap();
    symlink("../../../.ssh/id_rsa", fx.w("a/b/key")).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();
    escape(g.resolve(&fx.w("a/key")));
    escape(g.resolve(&fx.w("a/b/key")));
}

#[test]
fn symlinked_directory_out_is_refused() {
    let fx = Fx::new();
    symlink(format!("{}/.ssh", fx.home), fx.w("sshdir")).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();
    escape(g.resolve(&fx.w("sshdir/id_rsa")));
    escape(g.resolve(&fx.w("sshdir")));
    // Not even a missing file under it: creating there would land outside.
    escape(g.resolve(&fx.w("sshdir/new_file")));
}

#[test]
fn in_grant_symlinks_are_followed_and_reported() {
    let fx = Fx::new();
    fs::create_dir(fx.w("real")).unwrap();
    fx.write("real/f.txt", b"inside\n");
    symlink("real", fx.w("alias")).unwrap();
    symlink("readme.txt", fx.w("link.txt")).unwrap();
    symlink("nowhere.txt", fx.w("dangling")).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();

    let p = g.resolve(&fx.w("alias/f.txt")).unwrap();
    assert_eq!(p.requested(), fx.w("alias/f.txt"));
    assert_eq!(
        p.real_path().unwrap(),
        fx.w("real/f.txt"),
        "broker re-checks policy on the real path"
    );
    assert_eq!(read(&p, 0, None, 100).unwrap(), b"inside\n");

    let l = g.resolve(&fx.w("link.txt")).unwrap();
    assert_eq!(
        stat(&l).unwrap().kind,
        FileKind::Symlink,
        "stat does not follow a final symlink"
    );
    assert_eq!(l.real_path().unwrap(), fx.w("readme.txt"));
    assert_eq!(read(&l, 0, None, 100).unwrap(), b"hello\n");

    let d = g.resolve(&fx.w("dangling")).unwrap();
    assert!(d.exists());
    assert!(matches!(
        read(&d, 0, None, 10),
        Err(FsError::NotFound { .. })
    ));
}

#[test]
fn hard_link_to_canary_is_refused() {
    let fx = Fx::new();
    fs::hard_link(&fx.canary, fx.w("hl")).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();
    let msg = escape(g.resolve(&fx.w("hl")));
    assert!(msg.contains("2 hard links"), "{msg}");
    // A file grant naming the link is refused as well.
    assert!(matches!(
        GrantRoot::open(&fx.w("hl")),
        Err(FsError::Escape { .. })
    ));
}

#[test]
fn hard_link_made_after_resolve_is_refused_at_read() {
    let fx = Fx::new();
    fx.write("f", b"mine\n");
    let g = GrantRoot::open(&fx.ws).unwrap();
    let p = g.resolve(&fx.w("f")).unwrap();
    fs::hard_link(fx.w("f"), format!("{}/elsewhere", fx.home)).unwrap();
    match read(&p, 0, None, 100) {
        Err(e @ FsError::Escape { .. }) => assert!(e.to_string().contains("hard links")),
        other => panic!("expected Escape, got {other:?}"),
    }
}

#[test]
fn sibling_prefix_is_not_inside() {
    let fx = Fx::new();
    let evil = format!("{}-evil", fx.ws);
    fs::create_dir(&evil).unwrap();
    fs::write(format!("{evil}/secret"), CANARY).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();
    let msg = escape(g.resolve(&format!("{evil}/secret")));
    assert!(msg.contains("outside the grant"), "{msg}");
    escape(g.resolve(&evil));
    escape(g.resolve(&fx.home));
}

#[test]
fn proc_self_root_is_refused() {
    let fx = Fx::new();
    let g = GrantRoot::open(&fx.ws).unwrap();
    // Lexically outside the grant.
    escape(g.resolve(&format!("/proc/self/root{}", fx.canary)));
    // A symlink in the grant through /proc/self/root: absolute, and a magic link.
    symlink(format!("/proc/self/root{}", fx.canary), fx.w("viaproc")).unwrap();
    escape(g.resolve(&fx.w("viaproc")));
    // A symlink to an fd we hold on the canary: a magic link.
    let held = fs::File::open(&fx.canary).unwrap();
    use std::os::fd::AsRawFd;
    symlink(format!("/proc/self/fd/{}", held.as_raw_fd()), fx.w("viafd")).unwrap();
    escape(g.resolve(&fx.w("viafd")));
    // Granting a /proc path that leads to the canary is refused too.
    assert!(GrantRoot::open(&format!("/proc/self/root{}", fx.canary)).is_err());
}

#[test]
fn grant_with_symlink_component_is_refused() {
    let fx = Fx::new();
    let alias = format!("{}/wslink", fx.home);
    symlink(&fx.ws, &alias).unwrap();
    match GrantRoot::open(&alias) {
        Err(e @ FsError::Escape { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("symlink") && m.contains(&fx.ws),
                "should name the real path: {m}"
            );
        }
        other => panic!("expected Escape, got {other:?}"),
    }
    match GrantRoot::open(&format!("{alias}/readme.txt")) {
        Err(FsError::Escape { .. }) => {}
        other => panic!("expected Escape, got {other:?}"),
    }
}

#[test]
fn fifo_is_not_read_and_does_not_hang() {
    let fx = Fx::new();
    let fifo = fx.w("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let g = GrantRoot::open(&fx.ws).unwrap();
    let p = g.resolve(&fifo).unwrap();
    assert_eq!(stat(&p).unwrap().kind, FileKind::Other);
    match read(&p, 0, None, 100) {
        Err(e @ FsError::Invalid { .. }) => assert!(e.to_string().contains("regular"), "{e}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A regular file swapped for a FIFO after resolution: still no hang.
    fx.write("soon-fifo", b"x");
    let p = g.resolve(&fx.w("soon-fifo")).unwrap();
    fs::remove_file(fx.w("soon-fifo")).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(fx.w("soon-fifo"))
        .status()
        .unwrap()
        .success());
    assert!(read(&p, 0, None, 100).is_err());
    // And a FIFO granted directly is refused.
    assert!(matches!(
        GrantRoot::open(&fifo),
        Err(FsError::Invalid { .. })
    ));
}

#[test]
fn missing_target_resolves_to_parent() {
    let fx = Fx::new();
    let g = GrantRoot::open(&fx.ws).unwrap();
    let p = g.resolve(&fx.w("new.txt")).unwrap();
    assert!(!p.exists());
    assert_eq!(p.real_path().unwrap(), fx.w("new.txt"));
    assert!(matches!(
        read(&p, 0, None, 1),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(stat(&p), Err(FsError::NotFound { .. })));
    assert!(matches!(
        g.resolve(&fx.w("no/such/dir.txt")),
        Err(FsError::NotFound { .. })
    ));
    // A file used as a directory.
    assert!(matches!(
        g.resolve(&fx.w("readme.txt/x")),
        Err(FsError::Invalid { .. })
    ));
}

#[test]
fn file_grant_admits_only_that_file() {
    let fx = Fx::new();
    fx.write("other.txt", b"other");
    let g = GrantRoot::open(&fx.w("readme.txt")).unwrap();
    assert!(g.is_file());
    let p = g.resolve(&fx.w("readme.txt")).unwrap();
    assert_eq!(read(&p, 0, None, 100).unwrap(), b"hello\n");
    escape(g.resolve(&fx.w("other.txt")));
    escape(g.resolve(&fx.ws));
    // Replaced by a symlink to the canary after the grant was opened.
    fs::remove_file(fx.w("readme.txt")).unwrap();
    symlink(&fx.canary, fx.w("readme.txt")).unwrap();
    escape(g.resolve(&fx.w("readme.txt")));
}

#[test]
fn list_is_sorted_and_does_not_follow() {
    let fx = Fx::new();
    fx.write("b.txt", b"12345");
    fs::create_dir(fx.w("a-dir")).unwrap();
    symlink(&fx.canary, fx.w("c-link")).unwrap();
    let g = GrantRoot::open(&fx.ws).unwrap();
    let entries = list(&g.resolve(&fx.ws).unwrap()).unwrap();
    let got: Vec<(&str, FileKind)> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("a-dir", FileKind::Dir),
            ("b.txt", FileKind::File),
            ("c-link", FileKind::Symlink),
            ("readme.txt", FileKind::File)
        ]
    );
    assert_eq!(entries[1].size, 5);
    assert!(matches!(
        list(&g.resolve(&fx.w("b.txt")).unwrap()),
        Err(FsError::Invalid { .. })
    ));
}

/// One thread keeps swapping `ws/f` between a real file and a symlink to
/// the canary (rename over); another resolves and reads it thousands of
/// times. The canary's content must never come back.
#[test]
fn concurrent_symlink_swap_never_leaks() {
    let fx = Fx::new();
    fx.write("f", b"SAFE\n");
    let stop = Arc::new(AtomicBool::new(false));
    let ws = fx.ws.clone();
    let canary = fx.canary.clone();
    let s2 = stop.clone();
    let swapper = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s2.load(Ordering::Relaxed) {
            let tmp_file = format!("{ws}/.f-file");
            let tmp_link = format!("{ws}/.f-link");
            fs::write(&tmp_file, b"SAFE\n").unwrap();
            fs::rename(&tmp_file, format!("{ws}/f")).unwrap();
            let _ = fs::remove_file(&tmp_link);
            symlink(&canary, &tmp_link).unwrap();
            fs::rename(&tmp_link, format!("{ws}/f")).unwrap();
            n += 1;
        }
        n
    });
    let g = GrantRoot::open(&fx.ws).unwrap();
    let target = fx.w("f");
    let (mut ok, mut refused) = (0u32, 0u32);
    for i in 0..50_000u32 {
        let got = g.resolve(&target).and_then(|p| read(&p, 0, None, 4096));
        match got {
            Ok(data) => {
                assert_ne!(data, CANARY, "canary leaked on iteration {i}");
                assert_eq!(data, b"SAFE\n");
                ok += 1;
            }
            Err(_) => refused += 1,
        }
        if i >= 3000 && ok > 100 && refused > 100 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        ok > 0 && refused > 0,
        "the race never happened (ok={ok}, refused={refused}, swaps={swaps})"
    );
    fx.assert_canaries_intact();
}

/// The same with a directory component swapped for a symlink to `~/.ssh`.
#[test]
fn concurrent_directory_swap_never_leaks() {
    let fx = Fx::new();
    fs::create_dir(fx.w("d")).unwrap();
    fx.write("d/id_rsa", b"SAFE\n");
    let stop = Arc::new(AtomicBool::new(false));
    let ws = fx.ws.clone();
    let ssh = format!("{}/.ssh", fx.home);
    let s2 = stop.clone();
    let swapper = std::thread::spawn(move || {
        let real = format!("{ws}/d.real");
        let link = format!("{ws}/d.link");
        fs::rename(format!("{ws}/d"), &real).unwrap();
        symlink(&ssh, &link).unwrap();
        while !s2.load(Ordering::Relaxed) {
            // d := link (to ~/.ssh), then d := real dir, both by rename.
            fs::rename(&link, format!("{ws}/d")).unwrap();
            fs::rename(format!("{ws}/d"), &link).unwrap();
            fs::rename(&real, format!("{ws}/d")).unwrap();
            fs::rename(format!("{ws}/d"), &real).unwrap();
        }
    });
    let g = GrantRoot::open(&fx.ws).unwrap();
    let target = fx.w("d/id_rsa");
    let (mut ok, mut refused) = (0u32, 0u32);
    for i in 0..50_000u32 {
        match g.resolve(&target).and_then(|p| read(&p, 0, None, 4096)) {
            Ok(data) => {
                assert_ne!(data, CANARY, "canary leaked on iteration {i}");
                ok += 1;
            }
            Err(_) => refused += 1,
        }
        if i >= 3000 && ok > 100 && refused > 100 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(
        ok > 0 && refused > 0,
        "the race never happened (ok={ok}, refused={refused})"
    );
    fx.assert_canaries_intact();
}
