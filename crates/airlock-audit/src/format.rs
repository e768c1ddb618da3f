//! The on-disk line format, its hash, segment names and the head anchor.
//!
//! A record line is written in this fixed key order:
//!
//! ```text
//! {"seq":N,"ts":"…","kind":"…","agent":…,"user":…,"request_id":"…","intent":…,
//!  "decision":…,"execution":…,"outcome":…,"policy_revision":…,"token_id":…,
//!  "approval_id":…,"peer":…,"prev_hash":"<64 hex>","hash":"<64 hex>"}\n
//! ```
//!
//! and `hash` is the lower-case hex SHA-256 of the line's bytes up to, not
//! including, the final `,"hash":"` (see the crate docs for the full rule).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

use crate::RecordBody;

/// `prev_hash` of the first record.
pub(crate) const GENESIS: [u8; 64] = [b'0'; 64];
/// The key that introduces the hash at the end of every line.
pub(crate) const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Bytes after the hashed prefix: `,"hash":"` + 64 hex + `"}`.
pub(crate) const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;
/// Largest line the writer accepts (a record is a decision, not a payload).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// File name of the head anchor.
pub(crate) const ANCHOR_FILE: &str = "head.json";
/// File name of the writer lock.
pub(crate) const LOCK_FILE: &str = "lock";
/// The anchor is always written as exactly this many bytes (space padded).
pub(crate) const ANCHOR_LEN: usize = 192;

/// `audit-000001.jsonl`.
pub(crate) fn segment_name(n: u64) -> String {
    format!("audit-{n:06}.jsonl")
}

/// Inverse of [`segment_name`]; only canonical names match.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n > 0 && segment_name(n) == name).then_some(n)
}

/// Segments in `dir`, sorted by number.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((n, entry.path()));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// RFC 3339 UTC with milliseconds, as a JSON string (quotes included).
pub(crate) fn now_ts_json() -> Vec<u8> {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
    .into_bytes()
}

/// A body serialised by the caller, so the writer thread only stitches
/// bytes and hashes.
#[derive(Debug)]
pub(crate) struct EncodedBody {
    /// The caller's own `ts` as a JSON string, if it gave one.
    pub ts: Option<Vec<u8>>,
    /// `"kind":…,…,"peer":…` (no braces).
    pub rest: Vec<u8>,
}

#[derive(serde::Serialize)]
struct BodyOut<'a> {
    kind: &'a str,
    agent: &'a Option<String>,
    user: &'a Option<String>,
    request_id: &'a str,
    intent: &'a serde_json::Value,
    decision: &'a serde_json::Value,
    execution: &'a serde_json::Value,
    outcome: &'a serde_json::Value,
    policy_revision: &'a Option<String>,
    token_id: &'a Option<String>,
    approval_id: &'a Option<String>,
    peer: &'a serde_json::Value,
}

pub(crate) fn encode_body(body: &RecordBody) -> Result<EncodedBody, serde_json::Error> {
    let ts = if body.ts.is_empty() {
        None
    } else {
        Some(serde_json::to_vec(&body.ts)?)
    };
    let out = BodyOut {
        kind: &body.kind,
        agent: &body.agent,
        user: &body.user,
        request_id: &body.request_id,
        intent: &body.intent,
        decision: &body.decision,
        execution: &body.execution,
        outcome: &body.outcome,
        policy_revision: &body.policy_revision,
        token_id: &body.token_id,
        approval_id: &body.approval_id,
        peer: &body.peer,
    };
    let mut rest = serde_json::to_vec(&out)?;
    // `{…}` → `…`: a struct always serialises as one object.
    rest.pop();
    rest.remove(0);
    Ok(EncodedBody { ts, rest })
}

/// Append one complete line (with `\n`) to `out`; returns its hash (hex).
pub(crate) fn build_line(
    out: &mut Vec<u8>,
    seq: u64,
    ts_json: &[u8],
    rest: &[u8],
    prev_hash: &[u8; 64],
) -> [u8; 64] {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(ts_json);
    out.push(b',');
    out.extend_from_slice(rest);
    out.extend_from_slice(b",\"prev_hash\":\"");
    out.extend_from_slice(prev_hash);
    out.push(b'"');
    let hash = hash_hex(&out[start..]);
    out.extend_from_slice(HASH_KEY);
    out.extend_from_slice(&hash);
    out.extend_from_slice(b"\"}\n");
    hash
}

/// Lower-case hex SHA-256.
pub(crate) fn hash_hex(bytes: &[u8]) -> [u8; 64] {
    let digest = Sha256::digest(bytes);
    let mut hex_out = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(digest, &mut hex_out);
    hex_out
}

/// What verification needs from one line once it is known to be well formed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedLine {
    pub seq: u64,
    pub prev: [u8; 64],
    pub hash: [u8; 64],
}

/// The strict shape of a stored line: every key present, no others, no
/// duplicates (serde rejects a repeated field).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LineView<'a> {
    seq: u64,
    ts: IgnoredAny,
    kind: IgnoredAny,
    agent: IgnoredAny,
    user: IgnoredAny,
    request_id: IgnoredAny,
    intent: IgnoredAny,
    decision: IgnoredAny,
    execution: IgnoredAny,
    outcome: IgnoredAny,
    policy_revision: IgnoredAny,
    token_id: IgnoredAny,
    approval_id: IgnoredAny,
    peer: IgnoredAny,
    #[serde(borrow)]
    prev_hash: &'a str,
    #[serde(borrow)]
    hash: &'a str,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check one line (without its `\n`) on its own: it parses, it ends with
/// its hash, and the hash recomputes.
pub(crate) fn check_line(line: &[u8]) -> Result<CheckedLine, String> {
    let view: LineView<'_> =
        serde_json::from_slice(line).map_err(|e| format!("unparsable record ({e})"))?;
    if !is_hex64(view.hash) || !is_hex64(view.prev_hash) {
        return Err("hash or prev_hash is not 64 lower-case hex digits".into());
    }
    let n = line.len();
    // The parse succeeded, so the line is at least `{…"hash":"<64>"}` long.
    if n < HASH_SUFFIX_LEN
        || &line[n - HASH_SUFFIX_LEN..n - HASH_SUFFIX_LEN + HASH_KEY.len()] != HASH_KEY
        || &line[n - 66..n - 2] != view.hash.as_bytes()
        || &line[n - 2..] != b"\"}"
    {
        return Err("record does not end with its \"hash\" field".into());
    }
    let computed = hash_hex(&line[..n - HASH_SUFFIX_LEN]);
    if computed != view.hash.as_bytes() {
        return Err("hash mismatch (record edited)".into());
    }
    let mut prev = [0u8; 64];
    prev.copy_from_slice(view.prev_hash.as_bytes());
    Ok(CheckedLine {
        seq: view.seq,
        prev,
        hash: computed,
    })
}

/// `seq` from a line's fixed `{"seq":N,` prefix, without parsing the rest.
pub(crate) fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b',' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The head anchor: the last durable record the writer acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Anchor {
    pub seq: u64,
    pub hash: String,
    pub segment: String,
}

impl Anchor {
    /// Fixed-length bytes, so an in-place rewrite never leaves stale tail bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        if v.len() < ANCHOR_LEN {
            v.resize(ANCHOR_LEN - 1, b' ');
            v.push(b'\n');
        }
        v
    }
}

/// Read `dir/head.json`; `Ok(None)` when absent or empty.
pub(crate) fn read_anchor(dir: &Path) -> Result<Option<Anchor>, String> {
    let path = dir.join(ANCHOR_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "head anchor {} cannot be read: {e}",
                path.display()
            ))
        }
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        format!(
            "head anchor {} is unreadable ({e}); if the log itself verifies, delete it",
            path.display()
        )
    })
}

/// The last complete line ending at or before `end` (which must be just
/// past a `\n`, or 0). Returns its start offset and bytes (without `\n`).
pub(crate) fn last_line_before(file: &File, end: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    if end == 0 {
        return Ok(None);
    }
    let line_end = end - 1; // the `\n`
    let mut acc: Vec<u8> = Vec::new();
    let mut pos = line_end;
    const BLOCK: u64 = 64 * 1024;
    loop {
        let from = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - from) as usize];
        file.read_exact_at(&mut block, from)?;
        if let Some(i) = memchr::memrchr(b'\n', &block) {
            block.drain(..=i);
            block.extend_from_slice(&acc);
            return Ok(Some((from + i as u64 + 1, block)));
        }
        block.extend_from_slice(&acc);
        acc = block;
        pos = from;
        if pos == 0 {
            return Ok(Some((0, acc)));
        }
        if acc.len() > MAX_RECORD_BYTES + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "line longer than the largest record",
            ));
        }
    }
}

/// Offset just past the last `\n` at or before `len` (0 when none).
pub(crate) fn complete_len(file: &File, len: u64) -> io::Result<u64> {
    let mut pos = len;
    const BLOCK: u64 = 64 * 1024;
    while pos > 0 {
        let from = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - from) as usize];
        file.read_exact_at(&mut block, from)?;
        if let Some(i) = memchr::memrchr(b'\n', &block) {
            return Ok(from + i as u64 + 1);
        }
        pos = from;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "audit-000001.jsonl");
        assert_eq!(parse_segment_name("audit-000001.jsonl"), Some(1));
        assert_eq!(parse_segment_name("audit-1234567.jsonl"), Some(1_234_567));
        assert_eq!(parse_segment_name("audit-0000001.jsonl"), None);
        assert_eq!(parse_segment_name("audit-000000.jsonl"), None);
        assert_eq!(parse_segment_name("audit-00001.jsonl"), None);
        assert_eq!(parse_segment_name("audit-000001.jsonl.bak"), None);
    }

    #[test]
    fn built_line_checks_and_edits_fail() {
        let body = RecordBody {
            kind: "request".into(),
            request_id: "r-1".into(),
            ..Default::default()
        };
        let enc = encode_body(&body).unwrap();
        let mut out = Vec::new();
        let h = build_line(
            &mut out,
            7,
            b"\"2026-01-01T00:00:00.000Z\"",
            &enc.rest,
            &GENESIS,
        );
        assert_eq!(out.last(), Some(&b'\n'));
        let line = &out[..out.len() - 1];
        let c = check_line(line).unwrap();
        assert_eq!((c.seq, c.hash, c.prev), (7, h, GENESIS));
        assert_eq!(line_seq(line), Some(7));
        let edited = String::from_utf8(line.to_vec())
            .unwrap()
            .replace("r-1", "r-2");
        assert_eq!(
            check_line(edited.as_bytes()).unwrap_err(),
            "hash mismatch (record edited)"
        );
        // A duplicated key is refused even if the line is otherwise intact.
        let dup =
            String::from_utf8(line.to_vec())
                .unwrap()
                .replacen("\"kind\"", "\"seq\":8,\"kind\"", 1);
        assert!(check_line(dup.as_bytes())
            .unwrap_err()
            .contains("duplicate field"));
    }

    #[test]
    fn anchor_is_fixed_length() {
        let a = Anchor {
            seq: u64::MAX,
            hash: "f".repeat(64),
            segment: segment_name(u64::MAX),
        };
        assert_eq!(a.to_bytes().len(), ANCHOR_LEN);
        let b = Anchor {
            seq: 1,
            hash: "0".repeat(64),
            segment: segment_name(1),
        };
        assert_eq!(b.to_bytes().len(), ANCHOR_LEN);
        let parsed: Anchor = serde_json::from_slice(&b.to_bytes()).unwrap();
        assert_eq!(parsed, b);
    }
}
