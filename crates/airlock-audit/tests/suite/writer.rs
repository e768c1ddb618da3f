//! The writer: format, chain, group commit under concurrency, rotation,
//! restart, torn-tail recovery, locking and close.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use airlock_audit::{verify, AuditError, AuditLog, RecordBody};

use super::common::{body, hash_of, lines, segment, write_lines, write_log};

#[test]
fn records_have_the_seed_fields_and_a_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open(&dir, 64 << 20).unwrap();
    assert_eq!(log.head(), None);
    let mut receipts = Vec::new();
    for i in 1..=5 {
        receipts.push(log.append_blocking(body(i)).unwrap());
    }
    assert_eq!(log.head(), Some((5, receipts[4].hash.clone())));
    log.close();

    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let seg = segment(&dir, 1);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ls = lines(&seg);
    assert_eq!(ls.len(), 5);
    let mut prev = "0".repeat(64);
    for (i, l) in ls.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for key in [
            "ts",
            "agent",
            "user",
            "request_id",
            "intent",
            "decision",
            "execution",
            "outcome",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {l}");
        }
        assert!(l.starts_with(&format!("{{\"seq\":{},\"ts\":\"", i + 1)));
        let ts = v["ts"].as_str().unwrap();
        // RFC 3339 UTC with milliseconds: 2026-01-12T14:03:22.123Z
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok()
        );
        assert!(ts.ends_with('Z') && &ts[19..20] == ".");
        assert_eq!(v["prev_hash"].as_str().unwrap(), prev);
        assert_eq!(v["hash"].as_str().unwrap(), receipts[i].hash);
        assert_eq!(receipts[i].seq.get(), i as u64 + 1);
        prev = hash_of(l);
        let rec: airlock_audit::Record = serde_json::from_str(l).unwrap();
        assert_eq!(rec.body.request_id, format!("r-{:06}", i + 1));
    }
    let report = verify(&dir).unwrap();
    assert_eq!(
        (report.records, report.segments, report.head_hash),
        (5, 1, Some(prev))
    );
}

#[test]
fn caller_timestamp_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    let b = RecordBody {
        ts: "2026-01-12T14:03:22.000Z".into(),
        ..body(1)
    };
    log.append_blocking(b).unwrap();
    log.close();
    let rec = &airlock_audit::tail(tmp.path(), 1).unwrap()[0];
    assert_eq!(rec.body.ts, "2026-01-12T14:03:22.000Z");
    verify(tmp.path()).unwrap();
}

#[test]
fn concurrent_threads_and_tasks_get_unique_consecutive_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 256 * 1024).unwrap();
    let mut seqs = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    (0..40)
                        .map(|i| log.append_blocking(body(t * 1000 + i)).unwrap().seq.get())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let async_seqs: Vec<u64> = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for t in 0..64u64 {
                let log = log.clone();
                set.spawn(async move {
                    let mut v = Vec::new();
                    for i in 0..20 {
                        v.push(
                            log.append(body(100_000 + t * 100 + i))
                                .await
                                .unwrap()
                                .seq
                                .get(),
                        );
                    }
                    v
                });
            }
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                all.extend(r.unwrap());
            }
            all
        });
        seqs.extend(async_seqs);
        for h in handles {
            seqs.extend(h.join().unwrap());
        }
    });
    let total = 16 * 40 + 64 * 20;
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), total, "duplicate seqs handed out");
    assert_eq!(
        unique.iter().copied().collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>()
    );
    assert_eq!(log.head().unwrap().0, total as u64);
    let stats = log.stats();
    assert_eq!(stats.records, total as u64);
    assert_eq!(stats.failed_syncs, 0);
    // Group commit: 80 concurrent appenders share fdatasyncs.
    assert!(stats.syncs < stats.records, "no batching: {stats:?}");
    println!("{stats:?}");
    log.close();
    let report = verify(tmp.path()).unwrap();
    assert_eq!(report.records, total as u64);
    assert!(report.segments > 1, "256 KiB segments should have rotated");
}

#[test]
fn rotation_continues_the_chain_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 4096;
    write_log(tmp.path(), 60, max);
    let report = verify(tmp.path()).unwrap();
    assert_eq!(report.records, 60);
    assert!(report.segments >= 5, "only {} segments", report.segments);
    let mut prev_last: Option<String> = None;
    for n in 1..=report.segments as u64 {
        let path = segment(tmp.path(), n);
        assert!(
            std::fs::metadata(&path).unwrap().len() <= max,
            "segment {n} exceeds max"
        );
        let ls = lines(&path);
        let first: serde_json::Value = serde_json::from_str(&ls[0]).unwrap();
        if let Some(p) = &prev_last {
            assert_eq!(
                first["prev_hash"].as_str().unwrap(),
                p,
                "segment {n} does not chain"
            );
        }
        prev_last = Some(hash_of(ls.last().unwrap()));
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 1024).unwrap();
    log.append_blocking(body(1)).unwrap();
    let big = RecordBody {
        outcome: serde_json::json!({"blob": "x".repeat(5000)}),
        ..body(2)
    };
    log.append_blocking(big).unwrap();
    log.append_blocking(body(3)).unwrap();
    log.close();
    let report = verify(tmp.path()).unwrap();
    assert_eq!((report.records, report.segments), (3, 3));
}

#[test]
fn oversized_record_is_refused_and_the_log_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    log.append_blocking(body(1)).unwrap();
    let huge = RecordBody {
        outcome: serde_json::json!({"blob": "x".repeat(airlock_audit::MAX_RECORD_BYTES)}),
        ..body(2)
    };
    match log.append_blocking(huge) {
        Err(AuditError::Write { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput)
        }
        other => panic!("expected a Write error, got {other:?}"),
    }
    assert_eq!(log.append_blocking(body(3)).unwrap().seq.get(), 2);
    log.close();
    assert_eq!(verify(tmp.path()).unwrap().records, 2);
}

#[test]
fn restart_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 10, 2048);
    let log = AuditLog::open(tmp.path(), 2048).unwrap();
    let before = log.head().unwrap();
    assert_eq!(before.0, 10);
    assert_eq!(before.1, verify(tmp.path()).unwrap().head_hash.unwrap());
    let r = log.append_blocking(body(11)).unwrap();
    assert_eq!(r.seq.get(), 11);
    // Dropped without close: every acknowledged record is already durable.
    drop(log);
    let log = AuditLog::open(tmp.path(), 2048).unwrap();
    assert_eq!(log.head().unwrap(), (11, r.hash));
    log.append_blocking(body(12)).unwrap();
    log.close();
    assert_eq!(verify(tmp.path()).unwrap().records, 12);
}

#[test]
fn torn_final_line_is_cut_and_the_chain_continues() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 5, 64 << 20);
    let seg = segment(tmp.path(), 1);
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write: half of a sixth record, no newline.
    let ls = lines(&seg);
    let half = &ls[4][..ls[4].len() / 2];
    std::fs::write(
        &seg,
        format!("{}{half}", std::fs::read_to_string(&seg).unwrap()),
    )
    .unwrap();
    assert!(verify(tmp.path())
        .unwrap_err()
        .reason
        .starts_with("truncated line"));

    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(log.head().unwrap().0, 5);
    assert_eq!(log.append_blocking(body(6)).unwrap().seq.get(), 6);
    log.close();
    assert_eq!(verify(tmp.path()).unwrap().records, 6);
}

#[test]
fn unparsable_final_line_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 3, 64 << 20);
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    // Zero-filled block followed by the tail of a line, as a crash can leave.
    ls.push(format!("{}\"}}", "\0".repeat(100)));
    write_lines(&seg, &ls);
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    assert_eq!(log.head().unwrap().0, 3);
    log.append_blocking(body(4)).unwrap();
    log.close();
    assert_eq!(verify(tmp.path()).unwrap().records, 4);
}

#[test]
fn edited_final_line_is_corruption_not_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 3, 64 << 20);
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    ls[2] = ls[2].replace("r-000003", "r-999999");
    write_lines(&seg, &ls);
    match AuditLog::open(tmp.path(), 64 << 20) {
        Err(AuditError::Corrupt { location, reason }) => {
            assert!(location.contains("audit-000001.jsonl"), "{location}");
            assert_eq!(reason, "hash mismatch (record edited)");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was cut.
    assert_eq!(lines(&seg).len(), 3);
}

#[test]
fn records_removed_from_the_end_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 6, 64 << 20);
    let seg = segment(tmp.path(), 1);
    let ls = lines(&seg);
    write_lines(&seg, &ls[..4]);
    match AuditLog::open(tmp.path(), 64 << 20) {
        Err(AuditError::Corrupt { reason, .. }) => {
            assert!(
                reason.contains("log ends at seq 4 but head anchor records seq 6"),
                "{reason}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn empty_newest_segment_takes_the_head_from_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 4, 64 << 20);
    // Crash right after a rotation created the next segment.
    std::fs::write(segment(tmp.path(), 2), b"").unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    assert_eq!(log.head().unwrap().0, 4);
    log.append_blocking(body(5)).unwrap();
    log.close();
    let report = verify(tmp.path()).unwrap();
    assert_eq!((report.records, report.segments), (5, 2));
    assert_eq!(lines(&segment(tmp.path(), 2)).len(), 1);
}

#[test]
fn second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    match AuditLog::open(tmp.path(), 64 << 20) {
        Err(AuditError::Open { path, source }) => {
            assert!(path.ends_with("lock"));
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock);
        }
        other => panic!("expected Open error, got {other:?}"),
    }
    log.close();
    // After close the lock is released.
    AuditLog::open(tmp.path(), 64 << 20).unwrap().close();
}

#[test]
fn appends_after_close_fail_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    let other = log.clone();
    log.append_blocking(body(1)).unwrap();
    log.close();
    log.close();
    assert!(matches!(
        other.append_blocking(body(2)),
        Err(AuditError::Closed)
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(other.append(body(3))),
        Err(AuditError::Closed)
    ));
    assert_eq!(verify(tmp.path()).unwrap().records, 1);
}

#[test]
fn close_drains_everything_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            rt.spawn(async move { log.append(body(i)).await })
        })
        .collect();
    // Some appends may race with close; each is either durable or Closed.
    log.close();
    let mut ok = 0;
    for h in handles {
        match rt.block_on(h).unwrap() {
            Ok(_) => ok += 1,
            Err(AuditError::Closed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(verify(tmp.path()).unwrap().records, ok);
}

/// A deferred record (an outcome reported after its action) is as durable
/// as any when acknowledged, and rides on the next eager record's sync
/// when one comes within the window: here 1 ms later, long after a writer
/// that did not wait would have synced it alone.
#[test]
fn deferred_records_share_the_next_sync_and_are_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), 64 << 20).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pairs = 20u64;
    rt.block_on(async {
        for i in 0..pairs {
            let deferred = log.append_deferred(body(2 * i + 1));
            let eager = async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                log.append(body(2 * i + 2)).await
            };
            let (d, e) = tokio::join!(deferred, eager);
            assert_eq!(d.unwrap().seq.get() + 1, e.unwrap().seq.get());
        }
        // Alone, it is still written, after the window.
        log.append_deferred(body(100)).await.unwrap();
    });
    let syncs = log.stats().syncs;
    log.close();
    // Each pair shares one sync unless the 1 ms sleep overran the 5 ms
    // window; a writer that did not wait would sync each record alone.
    assert!(
        syncs <= pairs + pairs / 2 + 1,
        "{syncs} syncs for {pairs} pairs and one lone record"
    );
    assert_eq!(verify(tmp.path()).unwrap().records, 2 * pairs + 1);
}
