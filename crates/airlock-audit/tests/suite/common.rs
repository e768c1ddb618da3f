//! Helpers shared by the suite: bodies, logs on disk, line surgery.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use airlock_audit::{AuditLog, RecordBody};
use serde_json::json;

/// A realistic body with a distinguishing index.
pub fn body(i: u64) -> RecordBody {
    RecordBody {
        ts: String::new(),
        kind: "request".into(),
        agent: Some("co-work-client-1.2.0".into()),
        user: Some("alice@example.com".into()),
        request_id: format!("r-{i:06}"),
        intent: json!({"action": "edit_files", "paths": [format!("/home/alice/finance/q{i}.xlsx")]}),
        decision: json!({"allowed": true, "policy_id": "finance-edit-1"}),
        execution: json!({"sandbox": "bwrap-v1", "syscalls_blocked": 162}),
        outcome: json!({"modified_files": [format!("/home/alice/finance/q{i}-edited.xlsx")]}),
        policy_revision: Some("rev-1".into()),
        token_id: None,
        approval_id: None,
        peer: json!({"uid": 1000, "gid": 1000, "pid": 4242, "exe": "/usr/bin/agent", "start_time": 123}),
    }
}

/// Write `n` records with one appender and close the log.
pub fn write_log(dir: &Path, n: u64, max_segment_bytes: u64) {
    let log = AuditLog::open(dir, max_segment_bytes).expect("open");
    for i in 1..=n {
        let r = log.append_blocking(body(i)).expect("append");
        assert_eq!(r.seq.get(), i);
    }
    log.close();
}

/// Write `n` records quickly (many concurrent appenders share fdatasyncs).
pub fn write_log_fast(dir: &Path, n: u64, max_segment_bytes: u64) {
    let log = AuditLog::open(dir, max_segment_bytes).expect("open");
    let threads = 16u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = log.clone();
            s.spawn(move || {
                let mut i = t;
                while i < n {
                    log.append_blocking(body(i + 1)).expect("append");
                    i += threads;
                }
            });
        }
    });
    log.close();
}

pub fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:06}.jsonl"))
}

/// Lines of a file, each without its `\n`.
pub fn lines(path: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(path).expect("read segment");
    s.lines().map(str::to_string).collect()
}

/// Write lines back, each with `\n`.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(path, s).expect("write segment");
}

/// Recompute a line's own hash after editing it, as a forger would.
pub fn rehash(line: &str) -> String {
    use sha2::Digest;
    let cut = line.rfind(",\"hash\":\"").expect("hash key");
    let prefix = &line[..cut];
    let h = hex::encode(sha2::Sha256::digest(prefix.as_bytes()));
    format!("{prefix},\"hash\":\"{h}\"}}")
}

/// The `hash` field of a line.
pub fn hash_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    v["hash"].as_str().expect("hash").to_string()
}

/// Whether we may mount (root); prints the skip line otherwise.
pub fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        println!("SKIPPED: {test} needs root to mount a tmpfs");
        false
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A mount that is undone on drop, even when the test fails.
pub struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    /// Mount a tmpfs with `opts` (e.g. `size=64k`) on `target`.
    pub fn tmpfs(target: &Path, opts: &str) -> Result<MountGuard, String> {
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                opts,
                "tmpfs",
                target.to_str().ok_or("path")?,
            ],
        )?;
        Ok(MountGuard {
            target: target.to_path_buf(),
        })
    }

    /// Bind `target` onto itself read-only: new opens through the path see
    /// a read-only file system; already-open files are unaffected.
    pub fn read_only_overlay(target: &Path) -> Result<MountGuard, String> {
        let t = target.to_str().ok_or("path")?;
        run("mount", &["--bind", t, t])?;
        let g = MountGuard {
            target: target.to_path_buf(),
        };
        run("mount", &["-o", "remount,bind,ro", t, t])?;
        Ok(g)
    }

    /// Remount with `opts`. A read-only remount fails with "busy" while any
    /// process holds a file on it open for writing, and a parallel test's
    /// child can hold one between its fork and exec: retry briefly.
    pub fn remount(&self, opts: &str) -> Result<(), String> {
        let target = self.target.to_str().ok_or("path")?;
        let args = ["-o", &format!("remount,{opts}"), target];
        let mut last = Ok(());
        for _ in 0..20 {
            last = run("mount", &args);
            match &last {
                Err(e) if e.contains("busy") => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => return last,
            }
        }
        last
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let t = self.target.to_string_lossy().into_owned();
        if run("umount", &[&t]).is_err() {
            let _ = run("umount", &["-l", &t]);
        }
    }
}
