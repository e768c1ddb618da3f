//! Offline verification of a whole log directory.
//!
//! Each segment is read whole; lines are checked on their own (parse, hash)
//! in parallel across the available cores, then walked in order for the
//! chain (`seq` consecutive, `prev_hash` linkage, head anchor).

use std::path::Path;

use crate::format::{
    check_line, list_segments, read_anchor, segment_name, CheckedLine, ANCHOR_FILE, GENESIS,
};
use crate::{VerifyFailure, VerifyReport};

/// Below this many lines a segment is checked on the calling thread.
const PARALLEL_MIN_LINES: usize = 4096;

fn fail(
    file: impl Into<String>,
    line: u64,
    seq: Option<u64>,
    reason: impl Into<String>,
) -> VerifyFailure {
    VerifyFailure {
        file: file.into(),
        line,
        seq,
        reason: reason.into(),
    }
}

/// Split `data` into lines (without `\n`); the second value is a trailing
/// fragment that has no `\n` (a truncated line), if any.
fn split_lines(data: &[u8]) -> (Vec<&[u8]>, Option<&[u8]>) {
    let mut lines = Vec::with_capacity(data.len() / 256 + 1);
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', data) {
        lines.push(&data[start..i]);
        start = i + 1;
    }
    let rest = (start < data.len()).then(|| &data[start..]);
    (lines, rest)
}

fn check_all(lines: &[&[u8]]) -> Vec<Result<CheckedLine, String>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if threads < 2 || lines.len() < PARALLEL_MIN_LINES {
        return lines.iter().map(|l| check_line(l)).collect();
    }
    let chunk = lines.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|l| check_line(l)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(lines.len());
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                // check_line does not panic; should a thread die anyway, its
                // lines count as unchecked, which fails verification.
                Err(_) => out.extend(
                    std::iter::repeat_with(|| Err("line could not be checked".to_string()))
                        .take(chunk),
                ),
            }
        }
        out.truncate(lines.len());
        out
    })
}

pub(crate) fn verify(dir: &Path) -> Result<VerifyReport, VerifyFailure> {
    let dir_name = dir.display().to_string();
    let segments = list_segments(dir).map_err(|e| {
        fail(
            dir_name.clone(),
            0,
            None,
            format!("cannot list the audit directory: {e}"),
        )
    })?;
    let anchor = read_anchor(dir)
        .map_err(|reason| fail(dir.join(ANCHOR_FILE).display().to_string(), 1, None, reason))?;
    // Acknowledged records not yet synced in their segment (a crash before
    // the next open): judged as the next open will write them back.
    let pending = crate::wal::read_pending(dir).map_err(|reason| {
        fail(
            dir.join(crate::wal::WAL_FILE).display().to_string(),
            0,
            None,
            reason,
        )
    })?;

    // Segments are read one ahead on their own thread, so the checkers do
    // not wait for the next segment's bytes (at most two are in memory).
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let paths: Vec<_> = segments.iter().map(|(_, p)| p.clone()).collect();
        s.spawn(move || {
            for p in paths {
                // Stops when verification has ended early (receiver gone).
                if tx.send(std::fs::read(p)).is_err() {
                    break;
                }
            }
        });
        walk(dir, &dir_name, &segments, anchor, pending, rx)
    })
}

/// Check every segment's lines and the chain across them, in order.
fn walk(
    dir: &Path,
    dir_name: &str,
    segments: &[(u64, std::path::PathBuf)],
    anchor: Option<crate::format::Anchor>,
    pending: Option<crate::wal::Pending>,
    reads: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
) -> Result<VerifyReport, VerifyFailure> {
    let mut prev_hash = GENESIS;
    let mut last_seq = 0u64;
    let mut records = 0u64;
    let mut anchor_matched = false;
    let mut last_loc = (dir_name.to_string(), 0u64);

    for (expected_segment, (n, path)) in (1u64..).zip(segments.iter()) {
        let file = path.display().to_string();
        if *n != expected_segment {
            let reason = if expected_segment == 1 {
                format!(
                    "log starts at segment {} instead of {} (segment removed)",
                    segment_name(*n),
                    segment_name(1)
                )
            } else {
                format!(
                    "segment {} is missing: numbering jumps from {} to {n} (segment removed)",
                    segment_name(expected_segment),
                    expected_segment - 1
                )
            };
            return Err(fail(file, 0, None, reason));
        }
        let mut data = reads
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the segment reader stopped")))
            .map_err(|e| fail(file.clone(), 0, None, format!("cannot read segment: {e}")))?;
        if let Some(p) = pending.as_ref().filter(|p| p.seg_no == *n) {
            p.overlay(&mut data);
        }
        let (lines, torn) = split_lines(&data);
        let checks = check_all(&lines);
        for (i, c) in checks.into_iter().enumerate() {
            let line_no = i as u64 + 1;
            let c = c.map_err(|reason| {
                fail(
                    file.clone(),
                    line_no,
                    crate::format::line_seq(lines[i]),
                    reason,
                )
            })?;
            if c.seq != last_seq + 1 {
                let why = if c.seq > last_seq + 1 {
                    "record deleted or moved"
                } else {
                    "record duplicated, inserted or moved"
                };
                let reason = if last_seq == 0 {
                    format!("log starts at seq {} instead of 1 ({why})", c.seq)
                } else {
                    format!("seq {} follows {last_seq} ({why})", c.seq)
                };
                return Err(fail(file, line_no, Some(c.seq), reason));
            }
            if c.prev != prev_hash {
                return Err(fail(
                    file,
                    line_no,
                    Some(c.seq),
                    "prev_hash does not match previous record (record deleted, inserted or reordered)",
                ));
            }
            if let Some(a) = &anchor {
                if a.seq == c.seq {
                    if a.hash.as_bytes() != c.hash {
                        return Err(fail(
                            file,
                            line_no,
                            Some(c.seq),
                            format!("head anchor hash does not match the record at seq {} (log rewritten)", c.seq),
                        ));
                    }
                    if a.segment != segment_name(*n) {
                        return Err(fail(
                            file,
                            line_no,
                            Some(c.seq),
                            format!(
                                "head anchor places seq {} in {} but it is in {}",
                                c.seq,
                                a.segment,
                                segment_name(*n)
                            ),
                        ));
                    }
                    anchor_matched = true;
                }
            }
            last_seq = c.seq;
            prev_hash = c.hash;
            records += 1;
        }
        last_loc = (file.clone(), lines.len() as u64);
        if let Some(fragment) = torn {
            return Err(fail(
                file,
                lines.len() as u64 + 1,
                crate::format::line_seq(fragment),
                "truncated line (no newline at the end: cut mid-record or crash during write)",
            ));
        }
    }

    if let Some(a) = &anchor {
        if a.seq > last_seq {
            return Err(fail(
                last_loc.0,
                last_loc.1,
                (last_seq > 0).then_some(last_seq),
                format!(
                    "log ends at seq {last_seq} but head anchor records seq {} (records removed from the end)",
                    a.seq
                ),
            ));
        }
        if !anchor_matched {
            return Err(fail(
                dir.join(ANCHOR_FILE).display().to_string(),
                1,
                Some(a.seq),
                format!("head anchor records seq {} which is not in the log", a.seq),
            ));
        }
    }

    Ok(VerifyReport {
        records,
        segments: segments.len(),
        head_hash: (records > 0).then(|| String::from_utf8_lossy(&prev_hash).into_owned()),
    })
}
