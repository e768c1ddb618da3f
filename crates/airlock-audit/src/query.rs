//! Reading the log: by request id, the newest records, and following.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use crate::format::{line_seq, list_segments, read_anchor, segment_name};
use crate::{AuditError, Record};

/// Pause between polls in [`follow`].
const FOLLOW_POLL: Duration = Duration::from_millis(200);

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_record(line: &[u8], location: impl FnOnce() -> String) -> Result<Record, AuditError> {
    serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
        location: location(),
        reason: format!("unparsable record ({e})"),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn find_request(dir: &Path, request_id: &str) -> Result<Vec<Record>, AuditError> {
    // The writer emits canonical serde_json, so the key and value appear
    // byte-for-byte like this; the parse below confirms each candidate.
    let needle = format!("\"request_id\":{}", serde_json::Value::from(request_id));
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut out = Vec::new();
    for (_, path) in list_segments(dir).map_err(open_err(dir))? {
        let data = std::fs::read(&path).map_err(open_err(&path))?;
        let mut start = 0;
        for (i, end) in memchr::memchr_iter(b'\n', &data).enumerate() {
            let line_no = i + 1;
            let line = &data[start..end];
            start = end + 1;
            if finder.find(line).is_none() {
                continue;
            }
            let rec = parse_record(line, || format!("{}:{line_no}", file_name(&path)))?;
            if rec.body.request_id == request_id {
                out.push(rec);
            }
        }
    }
    Ok(out)
}

/// Up to `n` complete lines ending the file, oldest first.
fn last_lines(file: &File, n: usize) -> io::Result<Vec<Vec<u8>>> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    // Ignore a trailing fragment without `\n` (a write in flight).
    let end = crate::format::complete_len(file, len)?;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    let mut pos = end;
    // n lines need n+1 newlines to be delimited (or the start of file).
    while pos > 0 && newlines <= n {
        let from = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - from) as usize];
        file.read_exact_at(&mut block, from)?;
        newlines += memchr::memchr_iter(b'\n', &block).count();
        blocks.push(block);
        pos = from;
    }
    let mut data = Vec::with_capacity(blocks.iter().map(Vec::len).sum());
    for b in blocks.iter().rev() {
        data.extend_from_slice(b);
    }
    let mut lines: Vec<Vec<u8>> = Vec::new();
    // `data` ends with `\n`; walk backwards over complete lines.
    let mut line_end = data.len().saturating_sub(1);
    while lines.len() < n && !data.is_empty() {
        let line_start = memchr::memrchr(b'\n', &data[..line_end]).map(|i| i + 1);
        match line_start {
            Some(s) => {
                lines.push(data[s..line_end].to_vec());
                line_end = s - 1;
            }
            None => {
                // Reached the start of what was read: a full line only if
                // the read reached the start of the file.
                if pos == 0 {
                    lines.push(data[..line_end].to_vec());
                }
                break;
            }
        }
    }
    lines.reverse();
    Ok(lines)
}

pub(crate) fn tail(dir: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    let mut out: Vec<Record> = Vec::new();
    if n == 0 {
        return Ok(out);
    }
    let segments = list_segments(dir).map_err(open_err(dir))?;
    for (_, path) in segments.iter().rev() {
        let file = File::open(path).map_err(open_err(path))?;
        let want = n - out.len();
        let lines = last_lines(&file, want).map_err(open_err(path))?;
        let mut recs = Vec::with_capacity(lines.len() + out.len());
        let count = lines.len();
        for (i, line) in lines.iter().enumerate() {
            recs.push(parse_record(line, || {
                format!("{} (line {} from the end)", file_name(path), count - i)
            })?);
        }
        recs.append(&mut out);
        out = recs;
        if out.len() >= n {
            break;
        }
    }
    Ok(out)
}

/// The segment holding the first record after `after`: the newest segment
/// whose first record is at most `after + 1`.
fn start_segment(dir: &Path, after: u64) -> Result<u64, AuditError> {
    let segments = list_segments(dir).map_err(open_err(dir))?;
    for (n, path) in segments.iter().rev() {
        let file = File::open(path).map_err(open_err(path))?;
        let mut buf = vec![0u8; 64];
        let got = file.read_at(&mut buf, 0).map_err(open_err(path))?;
        buf.truncate(got);
        if let Some(first) = line_seq(&buf) {
            if first <= after + 1 {
                return Ok(*n);
            }
        }
    }
    Ok(segments.first().map(|(n, _)| *n).unwrap_or(1))
}

enum Drained {
    More,
    Stop,
}

pub(crate) fn follow(
    dir: &Path,
    after_seq: Option<u64>,
    f: &mut dyn FnMut(&Record) -> bool,
) -> Result<(), AuditError> {
    let mut last = after_seq.unwrap_or(0);
    let mut seg = start_segment(dir, last)?;
    let mut offset = 0u64;
    loop {
        // Only records the writer has acknowledged (the anchor) are shown, so
        // a batch that is rolled back after a failed sync never appears.
        let bound = read_anchor(dir)
            .map_err(|reason| AuditError::Corrupt {
                location: crate::format::ANCHOR_FILE.into(),
                reason,
            })?
            .map(|a| a.seq);
        let path = dir.join(segment_name(seg));
        if let Drained::Stop = drain(&path, &mut offset, &mut last, bound, f)? {
            return Ok(());
        }
        let next = dir.join(segment_name(seg + 1));
        if next.exists() {
            // The writer starts a segment only after the previous one is
            // complete; take what is left of this one and move on.
            if let Drained::Stop = drain(&path, &mut offset, &mut last, bound, f)? {
                return Ok(());
            }
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if offset >= len {
                seg += 1;
                offset = 0;
                continue;
            }
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Deliver complete, acknowledged lines of `path` from `offset` on.
fn drain(
    path: &Path,
    offset: &mut u64,
    last: &mut u64,
    bound: Option<u64>,
    f: &mut dyn FnMut(&Record) -> bool,
) -> Result<Drained, AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Drained::More),
        Err(e) => {
            return Err(AuditError::Open {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let len = file.metadata().map_err(open_err(path))?.len();
    if len <= *offset {
        return Ok(Drained::More);
    }
    let mut data = vec![0u8; (len - *offset) as usize];
    file.read_exact_at(&mut data, *offset)
        .map_err(open_err(path))?;
    let base = *offset;
    let mut start = 0usize;
    for end in memchr::memchr_iter(b'\n', &data) {
        let line = &data[start..end];
        let seq = line_seq(line);
        if let (Some(b), Some(s)) = (bound, seq) {
            if s > b {
                break;
            }
        }
        let rec = parse_record(line, || {
            format!("{} (byte {})", file_name(path), base + start as u64)
        })?;
        *offset += (end + 1 - start) as u64;
        start = end + 1;
        if rec.seq > *last {
            *last = rec.seq;
            if !f(&rec) {
                return Ok(Drained::Stop);
            }
        }
    }
    Ok(Drained::More)
}
