//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use airlock_policy::{PolicyConfig, PolicyEngine};
use serde_json::{json, Value};

pub const WS: &str = "/home/u/proj";

/// A policy input as the broker builds it, for `action` on `paths`.
pub fn input(action: &str, paths: &[&str]) -> Value {
    let infos: Vec<Value> = paths
        .iter()
        .map(|p| json!({"path": p, "labels": [], "workspace": if airlock_core::path::is_within(p, WS) { json!(WS) } else { Value::Null }}))
        .collect();
    json!({
        "action": action,
        "verbs": [],
        "paths": paths,
        "path_infos": infos,
        "hosts": [], "commands": [],
        "duration_seconds": 300, "justification": "testing",
        "agent": "test-agent", "model": "m", "session": "s1",
        "peer": {"uid": 1000, "gid": 1000, "pid": 123, "exe": "/usr/bin/node"},
        "user": {"uid": 1000, "name": "u", "home": "/home/u"},
        "workspaces": [WS],
        "broker_paths": ["/home/u/.local/state/airlock", "/home/u/.config/airlock", "/run/user/1000/airlock"],
        "usage": {
            "requests_per_minute": {"used": 12, "limit": 600, "retry_after": 0},
            "files_read_per_hour": {"used": 3, "limit": 5000, "retry_after": 0},
            "bytes_read_per_hour": {"used": 100, "limit": 100000000, "retry_after": 0}
        },
        "labels": []
    })
}

/// An engine over `dir` with the given default-policy switch.
pub fn engine_in(dir: &Path, include_default: bool) -> PolicyEngine {
    let cfg = PolicyConfig {
        dir: Some(dir.to_path_buf()),
        include_default,
        timeout_ms: 2000,
    };
    match PolicyEngine::load(&cfg) {
        Ok(e) => e,
        Err(e) => panic!("policy set does not load: {e}"),
    }
}

/// An engine with only the embedded default policy (empty policy dir).
pub fn default_engine() -> (tempfile::TempDir, PolicyEngine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = engine_in(dir.path(), true);
    (dir, e)
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write policy file");
}
