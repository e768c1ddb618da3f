//! Fail closed on real file-system failures: a full tmpfs, a tmpfs out of
//! inodes at rotation, and a read-only file system. Needs root to mount;
//! prints SKIPPED otherwise. Every mount is undone by a drop guard.

use std::io::Write;

use airlock_audit::{verify, AuditError, AuditLog, RecordBody};

use super::common::{body, root_or_skip, segment, MountGuard};

/// A body of roughly `kib` KiB so a few of them fill a page.
fn fat_body(i: u64, kib: usize) -> RecordBody {
    RecordBody {
        outcome: serde_json::json!({"note": "x".repeat(kib * 1024)}),
        ..body(i)
    }
}

/// Fill the file system under `path` until it reports ENOSPC.
fn fill(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(28),
                    "expected ENOSPC while filling, got {e}"
                );
                break;
            }
        }
    }
}

fn mount_or_skip(test: &str, dir: &std::path::Path, opts: &str) -> Option<MountGuard> {
    if !root_or_skip(test) {
        return None;
    }
    match MountGuard::tmpfs(dir, opts) {
        Ok(g) => Some(g),
        Err(e) => {
            println!("SKIPPED: {test}: cannot mount tmpfs ({e})");
            None
        }
    }
}

#[test]
fn full_disk_fails_every_record_of_the_batch_and_recovers() {
    full_disk("full_disk", "size=64k", 0);
}

/// The same with the write-ahead file on: the batch's entry is durable
/// before its segment write fails, and must not come back.
#[test]
fn full_disk_with_a_write_ahead_file_fails_and_recovers() {
    full_disk("full_disk_wal", "size=128k", 16 << 10);
}

fn full_disk(test: &str, opts: &str, wal_bytes: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_guard) = mount_or_skip(test, &mnt, opts) else {
        return;
    };
    let dir = mnt.join("audit");
    let log = AuditLog::open_with(&dir, 1 << 20, wal_bytes).unwrap();
    assert_eq!(dir.join("audit.wal").exists(), wal_bytes > 0);
    for i in 1..=3 {
        log.append_blocking(fat_body(i, 1)).unwrap();
    }
    fill(&mnt.join("filler"));

    // Appends keep going until the segment's last page is used up, then
    // they must fail with the segment's path and ENOSPC.
    let mut first_failure = None;
    for i in 4..100 {
        match log.append_blocking(fat_body(i, 1)) {
            Ok(_) => {}
            Err(AuditError::Write { path, source }) => {
                assert_eq!(path, segment(&dir, 1));
                assert_eq!(source.raw_os_error(), Some(28), "{source}");
                first_failure = Some(i);
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(
        first_failure.is_some(),
        "the full file system never refused a write"
    );
    let head = log.head().unwrap();

    // A concurrent burst while full: every waiter gets Write, none is acked.
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let log = log.clone();
                s.spawn(move || log.append_blocking(fat_body(1000 + i, 1)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert!(matches!(r, Err(AuditError::Write { .. })), "{r:?}");
    }
    assert_eq!(
        log.head().unwrap(),
        head,
        "head moved although nothing was durable"
    );
    assert!(log.stats().failed_syncs >= 2);
    // Rolled back: the file holds exactly the acknowledged records.
    let report = verify(&dir).unwrap();
    assert_eq!(report.records, head.0);
    assert_eq!(report.head_hash.as_deref(), Some(head.1.as_str()));

    // Space comes back: the same writer continues the chain.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let r = log.append_blocking(fat_body(2000, 1)).unwrap();
    assert_eq!(r.seq.get(), head.0 + 1);
    log.close();
    let report = verify(&dir).unwrap();
    assert_eq!(report.records, head.0 + 1);
}

#[test]
fn rotation_without_inodes_fails_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Inodes: root, audit dir, lock, head.json, audit.wal, segment 1, spare.
    let Some(_guard) = mount_or_skip("rotation_without_inodes", &mnt, "size=1m,nr_inodes=7") else {
        return;
    };
    let dir = mnt.join("audit");
    let log = AuditLog::open_with(&dir, 4096, 64 << 10).unwrap();
    log.append_blocking(body(1)).unwrap();
    // Take the spare inode.
    std::fs::write(mnt.join("spare"), b"x").unwrap();
    let mut failed = false;
    for i in 2..100 {
        match log.append_blocking(body(i)) {
            Ok(_) => {}
            Err(AuditError::Write { path, source }) => {
                assert_eq!(
                    path,
                    segment(&dir, 2),
                    "error should name the segment being created"
                );
                assert_eq!(source.raw_os_error(), Some(28), "{source}");
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(failed, "rotation never needed a new inode");
    let head = log.head().unwrap();
    assert_eq!(verify(&dir).unwrap().records, head.0);
    std::fs::remove_file(mnt.join("spare")).unwrap();
    let r = log.append_blocking(body(500)).unwrap();
    assert_eq!(r.seq.get(), head.0 + 1);
    log.close();
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.segments), (head.0 + 1, 2));
}

#[test]
fn read_only_file_system_at_rotation_fails_with_erofs_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_guard) = mount_or_skip("read_only_rotation", &mnt, "size=1m") else {
        return;
    };
    let dir = mnt.join("audit");
    let log = AuditLog::open_with(&dir, 4096, 64 << 10).unwrap();
    log.append_blocking(body(1)).unwrap();
    // Linux refuses to remount read-only while a file is open for writing,
    // so the directory is covered with a read-only bind of itself: the open
    // segment keeps working, creating the next one hits EROFS.
    let ro = match MountGuard::read_only_overlay(&dir) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: read_only_rotation: cannot bind-mount read-only ({e})");
            return;
        }
    };
    let mut failed = false;
    for i in 2..100 {
        match log.append_blocking(body(i)) {
            Ok(_) => {}
            Err(AuditError::Write { path, source }) => {
                assert_eq!(path, segment(&dir, 2));
                assert_eq!(
                    source.raw_os_error(),
                    Some(30),
                    "expected EROFS, got {source}"
                );
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(failed, "rotation never happened");
    let head = log.head().unwrap();
    // A second attempt fails the same way; the head stays.
    assert!(matches!(
        log.append_blocking(body(200)),
        Err(AuditError::Write { .. })
    ));
    assert_eq!(log.head().unwrap(), head);
    drop(ro);
    let r = log.append_blocking(body(300)).unwrap();
    assert_eq!(r.seq.get(), head.0 + 1);
    log.close();
    assert_eq!(verify(&dir).unwrap().records, head.0 + 1);
}

#[test]
fn read_only_file_system_refuses_to_open_but_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(guard) = mount_or_skip("read_only_open", &mnt, "size=4m") else {
        return;
    };
    let dir = mnt.join("audit");
    super::common::write_log(&dir, 5, 64 << 20);
    guard.remount("ro").unwrap();
    match AuditLog::open(&dir, 64 << 20) {
        Err(AuditError::Open { path, source }) => {
            assert!(path.starts_with(&dir));
            assert_eq!(source.raw_os_error(), Some(30), "{source}");
        }
        other => panic!("expected Open error, got {other:?}"),
    }
    // Reading still works on a read-only copy.
    assert_eq!(verify(&dir).unwrap().records, 5);
    assert_eq!(airlock_audit::tail(&dir, 2).unwrap().len(), 2);
    // A fresh log on a read-only file system is refused as well.
    assert!(matches!(
        AuditLog::open(&mnt.join("new"), 64 << 20),
        Err(AuditError::Open { .. })
    ));
}
