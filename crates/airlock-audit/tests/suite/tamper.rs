//! Verification against a log an attacker has edited: every tamper is
//! actually performed on a real log and must be caught at the right place.

use airlock_audit::{verify, VerifyFailure};

use super::common::{hash_of, lines, rehash, segment, write_lines, write_log};

/// A log of 20 records in one segment.
fn one_segment() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 20, 64 << 20);
    assert_eq!(verify(tmp.path()).unwrap().records, 20);
    tmp
}

fn expect_failure(dir: &std::path::Path) -> VerifyFailure {
    let f = verify(dir).expect_err("tampering went unnoticed");
    println!("caught: {f}");
    f
}

#[test]
fn edited_field_of_a_middle_record() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    ls[9] = ls[9].replace("\"allowed\":true", "\"allowed\":false");
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert!(f.file.ends_with("audit-000001.jsonl"));
    assert_eq!((f.line, f.seq), (10, Some(10)));
    assert_eq!(f.reason, "hash mismatch (record edited)");
}

#[test]
fn edited_record_with_its_own_hash_recomputed() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    ls[9] = rehash(&ls[9].replace("\"allowed\":true", "\"allowed\":false"));
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    // The edited line is self-consistent; the next one no longer links to it.
    assert_eq!((f.line, f.seq), (11, Some(11)));
    assert!(
        f.reason
            .starts_with("prev_hash does not match previous record"),
        "{}",
        f.reason
    );
}

#[test]
fn deleted_middle_record() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    ls.remove(6); // seq 7
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert_eq!((f.line, f.seq), (7, Some(8)));
    assert_eq!(f.reason, "seq 8 follows 6 (record deleted or moved)");
}

#[test]
fn swapped_records() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    ls.swap(4, 5); // seq 5 and 6
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert_eq!((f.line, f.seq), (5, Some(6)));
    assert!(f.reason.starts_with("seq 6 follows 4"), "{}", f.reason);
}

#[test]
fn inserted_forged_record_with_a_valid_own_hash() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    // Forge seq 6 that links correctly to seq 5 and carries a correct hash.
    let mut forged: serde_json::Value = serde_json::from_str(&ls[5]).unwrap();
    forged["request_id"] = "r-forged".into();
    forged["prev_hash"] = hash_of(&ls[4]).into();
    let forged_line = rehash(&build_line(&forged));
    assert!(!forged_line.contains("r-000006"));
    ls.insert(5, forged_line);
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    // The forged line itself checks out; the genuine seq 6 after it does not.
    assert_eq!((f.line, f.seq), (7, Some(6)));
    assert_eq!(
        f.reason,
        "seq 6 follows 6 (record duplicated, inserted or moved)"
    );
}

#[test]
fn inserted_forged_record_with_renumbered_successors() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    let mut forged: serde_json::Value = serde_json::from_str(&ls[5]).unwrap();
    forged["request_id"] = "r-forged".into();
    forged["prev_hash"] = hash_of(&ls[4]).into();
    let forged_line = rehash(&build_line(&forged));
    // Renumber everything after it and recompute each line's own hash, but
    // leave the prev_hash links alone (recomputing them all is a rewrite).
    let mut tail: Vec<String> = ls[5..]
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["seq"] = (v["seq"].as_u64().unwrap() + 1).into();
            rehash(&build_line(&v))
        })
        .collect();
    ls.truncate(5);
    ls.push(forged_line);
    ls.append(&mut tail);
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert_eq!((f.line, f.seq), (7, Some(7)));
    assert!(
        f.reason
            .starts_with("prev_hash does not match previous record"),
        "{}",
        f.reason
    );
}

#[test]
fn whole_tail_rewritten_is_caught_by_the_anchor() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    // Edit seq 15 and re-chain every record after it: internally consistent.
    let mut prev = hash_of(&ls[13]);
    for l in ls.iter_mut().skip(14) {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["seq"] == 15 {
            v["decision"]["allowed"] = false.into();
        }
        v["prev_hash"] = prev.clone().into();
        *l = rehash(&build_line(&v));
        prev = hash_of(l);
    }
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert_eq!((f.line, f.seq), (20, Some(20)));
    assert!(
        f.reason.contains("head anchor hash does not match"),
        "{}",
        f.reason
    );
    // Without the anchor the rewrite is undetectable locally (documented:
    // only an external copy catches it).
    std::fs::remove_file(tmp.path().join("head.json")).unwrap();
    assert_eq!(verify(tmp.path()).unwrap().records, 20);
}

#[test]
fn truncated_mid_line() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let data = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &data[..data.len() - 40]).unwrap();
    let f = expect_failure(tmp.path());
    assert_eq!((f.line, f.seq), (20, Some(20)));
    assert!(f.reason.starts_with("truncated line"), "{}", f.reason);
}

#[test]
fn last_records_dropped() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let ls = lines(&seg);
    write_lines(&seg, &ls[..17]);
    let f = expect_failure(tmp.path());
    assert!(f.file.ends_with("audit-000001.jsonl"));
    assert_eq!((f.line, f.seq), (17, Some(17)));
    assert_eq!(
        f.reason,
        "log ends at seq 17 but head anchor records seq 20 (records removed from the end)"
    );
}

#[test]
fn last_segment_removed() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 30, 2048);
    let n = verify(tmp.path()).unwrap().segments as u64;
    assert!(n >= 3);
    std::fs::remove_file(segment(tmp.path(), n)).unwrap();
    let f = expect_failure(tmp.path());
    assert!(
        f.reason.contains("records removed from the end"),
        "{}",
        f.reason
    );
}

#[test]
fn middle_segment_removed() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 30, 2048);
    assert!(verify(tmp.path()).unwrap().segments >= 3);
    std::fs::remove_file(segment(tmp.path(), 2)).unwrap();
    let f = expect_failure(tmp.path());
    assert!(f.file.ends_with("audit-000003.jsonl"), "{}", f.file);
    assert!(
        f.reason.contains("audit-000002.jsonl is missing"),
        "{}",
        f.reason
    );
}

#[test]
fn first_segment_removed() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 30, 2048);
    std::fs::remove_file(segment(tmp.path(), 1)).unwrap();
    let f = expect_failure(tmp.path());
    assert!(f.file.ends_with("audit-000002.jsonl"), "{}", f.file);
    assert!(f.reason.contains("segment removed"), "{}", f.reason);
}

#[test]
fn middle_segment_renumbered_to_hide_the_gap() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 30, 2048);
    let n = verify(tmp.path()).unwrap().segments as u64;
    // Remove segment 2 and shift the later ones down by one.
    std::fs::remove_file(segment(tmp.path(), 2)).unwrap();
    for k in 3..=n {
        std::fs::rename(segment(tmp.path(), k), segment(tmp.path(), k - 1)).unwrap();
    }
    let f = expect_failure(tmp.path());
    assert!(f.file.ends_with("audit-000002.jsonl"), "{}", f.file);
    assert_eq!(f.line, 1);
    assert!(f.reason.contains("record deleted or moved"), "{}", f.reason);
}

#[test]
fn duplicated_key_is_refused() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    // A second "request_id" that a lenient SIEM parser might read instead.
    ls[3] = rehash(&ls[3].replacen(",\"kind\"", ",\"request_id\":\"r-innocent\",\"kind\"", 1));
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert_eq!(f.line, 4);
    assert!(f.reason.contains("duplicate field"), "{}", f.reason);
}

#[test]
fn garbage_line_in_the_middle() {
    let tmp = one_segment();
    let seg = segment(tmp.path(), 1);
    let mut ls = lines(&seg);
    ls.insert(8, "not json".into());
    write_lines(&seg, &ls);
    let f = expect_failure(tmp.path());
    assert_eq!((f.line, f.seq), (9, None));
    assert!(f.reason.starts_with("unparsable record"), "{}", f.reason);
}

#[test]
fn empty_and_missing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let r = verify(tmp.path()).unwrap();
    assert_eq!((r.records, r.segments, r.head_hash), (0, 0, None));
    let f = verify(&tmp.path().join("nope")).unwrap_err();
    assert!(f.reason.contains("cannot list"), "{}", f.reason);
}

/// Serialise a record in the writer's key order (what a careful forger does).
fn build_line(v: &serde_json::Value) -> String {
    let keys = [
        "seq",
        "ts",
        "kind",
        "agent",
        "user",
        "request_id",
        "intent",
        "decision",
        "execution",
        "outcome",
        "policy_revision",
        "token_id",
        "approval_id",
        "peer",
        "prev_hash",
        "hash",
    ];
    let parts: Vec<String> = keys.iter().map(|k| format!("\"{k}\":{}", v[*k])).collect();
    format!("{{{}}}", parts.join(","))
}
