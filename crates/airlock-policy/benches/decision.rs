//! Policy decision latency with the embedded default policy: 1-path and
//! 10-path manifests, single thread. Besides criterion's figures it prints
//! p50/p99 from a plain timing loop.
//!
//! Run: `cargo bench -p airlock-policy --bench decision`

use std::hint::black_box;
use std::time::Instant;

use airlock_policy::{PolicyConfig, PolicyEngine};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

fn input(paths: &[String]) -> Value {
    let infos: Vec<Value> = paths
        .iter()
        .map(|p| json!({"path": p, "labels": [], "workspace": "/home/alice/proj"}))
        .collect();
    json!({
        "action": "read_files",
        "verbs": ["read", "list", "stat"],
        "paths": paths,
        "path_infos": infos,
        "hosts": [], "commands": [],
        "duration_seconds": 300, "justification": "summarise the sources",
        "agent": "bench", "model": "m", "session": "s",
        "peer": {"uid": 1000, "gid": 1000, "pid": 123, "exe": "/usr/bin/node"},
        "user": {"uid": 1000, "name": "alice", "home": "/home/alice"},
        "workspaces": ["/home/alice/proj"],
        "broker_paths": ["/home/alice/.local/state/airlock", "/home/alice/.config/airlock", "/run/user/1000/airlock"],
        "usage": {
            "requests_per_minute": {"used": 12, "limit": 600, "retry_after": 0},
            "files_read_per_hour": {"used": 40, "limit": 5000, "retry_after": 0},
            "bytes_read_per_hour": {"used": 1000, "limit": 100000000, "retry_after": 0}
        },
        "labels": []
    })
}

fn paths(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("/home/alice/proj/src/module_{i}/file_{i}.rs"))
        .collect()
}

fn engine(dir: &std::path::Path) -> PolicyEngine {
    let cfg = PolicyConfig {
        dir: Some(dir.to_path_buf()),
        include_default: true,
        timeout_ms: 50,
    };
    PolicyEngine::load(&cfg).expect("default policy loads")
}

fn percentiles(engine: &PolicyEngine, input: &Value, label: &str) {
    let n = 20_000;
    for _ in 0..1000 {
        black_box(engine.evaluate(input));
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        black_box(engine.evaluate(black_box(input)));
        samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| samples[((n as f64 - 1.0) * q) as usize];
    println!(
        "{label}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({n} runs)",
        p(0.50),
        p(0.99),
        p(1.0)
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine(dir.path());
    let one = input(&paths(1));
    let ten = input(&paths(10));
    assert_eq!(
        engine.evaluate(&one).decision,
        airlock_core::DecisionKind::Allow
    );
    assert_eq!(
        engine.evaluate(&ten).decision,
        airlock_core::DecisionKind::Allow
    );
    percentiles(&engine, &one, "decision/1_path");
    percentiles(&engine, &ten, "decision/10_paths");
    c.bench_function("decision/1_path", |b| {
        b.iter(|| engine.evaluate(black_box(&one)))
    });
    c.bench_function("decision/10_paths", |b| {
        b.iter(|| engine.evaluate(black_box(&ten)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
