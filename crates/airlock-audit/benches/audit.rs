//! Audit log figures: append throughput and latency with 1 and 64
//! concurrent appenders (real fdatasync on the temp dir's file system), with
//! and without the write-ahead file, and
//! `verify` speed on a 1,000,000-record log. Printed plainly; criterion
//! measures single-append latency and verify of a 10,000-record log.
//!
//! `cargo bench -p airlock-audit --bench audit`

use std::path::Path;
use std::time::{Duration, Instant};

use airlock_audit::{verify, AuditLog, RecordBody};

// The allocator the `airlock` binary ships with, so `verify` is measured as
// `airlock audit verify` runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use criterion::{criterion_group, Criterion, Throughput};
use serde_json::json;

fn body(i: u64) -> RecordBody {
    RecordBody {
        ts: String::new(),
        kind: "request".into(),
        agent: Some("co-work-client-1.2.0".into()),
        user: Some("alice@example.com".into()),
        request_id: format!("r-{i:08}"),
        intent: json!({"action": "edit_files", "paths": [format!("/home/alice/finance/q{i}.xlsx")]}),
        decision: json!({"decision": "allow", "policy_id": "airlock.default", "rule": "allow_home_edit", "reasons": ["inside home"]}),
        execution: json!({"sandbox": "airlock-sandbox", "syscalls_blocked": 162}),
        outcome: json!({"modified_files": [format!("/home/alice/finance/q{i}-edited.xlsx")]}),
        policy_revision: Some("sha256:4f1c2a".into()),
        token_id: Some(format!("tok-{i:08}")),
        approval_id: None,
        peer: json!({"uid": 1000, "gid": 1000, "pid": 4242, "exe": "/usr/bin/agent", "start_time": 123456}),
    }
}

/// CPU time (user + system) of this process so far, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `)` that ends the command name; utime and stime are
    // fields 14 and 15 of the whole line, in clock ticks (100 per second).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Index 0 is field 3 (the state letter); fields such as tpgid can be
    // negative, so nothing is filtered out, which would shift the indexes.
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> u64 { f.get(n - 3).and_then(|x| x.parse().ok()).unwrap_or(0) };
    let ticks = field(14) + field(15);
    Duration::from_millis(ticks * 10)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(label: &str, n: usize, wall: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{label}: {n} records in {:.2?} = {:.0} records/s; latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        wall,
        n as f64 / wall.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
}

/// What a `wal_bytes` setting means, for the labels.
fn mode(wal_bytes: u64) -> &'static str {
    if wal_bytes == 0 {
        "synced in the segment"
    } else {
        "write-ahead file"
    }
}

fn append_one(dir: &Path, n: usize, wal_bytes: u64) {
    let log = AuditLog::open_with(dir, 64 << 20, wal_bytes).expect("open");
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        log.append_blocking(body(i as u64)).expect("append");
        lat.push(t.elapsed());
    }
    let wall = start.elapsed();
    let stats = log.stats();
    log.close();
    report(
        &format!("append, 1 appender (append_blocking, {})", mode(wal_bytes)),
        n,
        wall,
        lat,
    );
    println!("  {} records in {} fdatasyncs", stats.records, stats.syncs);
}

fn append_concurrent(dir: &Path, clients: usize, per_client: usize, wal_bytes: u64) {
    let log = AuditLog::open_with(dir, 64 << 20, wal_bytes).expect("open");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let start = Instant::now();
    let lat = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients {
            let log = log.clone();
            set.spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    log.append(body((c * per_client + i) as u64))
                        .await
                        .expect("append");
                    lat.push(t.elapsed());
                }
                lat
            });
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.extend(r.expect("task"));
        }
        all
    });
    let wall = start.elapsed();
    let stats = log.stats();
    log.close();
    report(
        &format!(
            "append, {clients} concurrent appenders (async append, {})",
            mode(wal_bytes)
        ),
        clients * per_client,
        wall,
        lat,
    );
    println!(
        "  {} records in {} fdatasyncs = {:.1} records per fdatasync",
        stats.records,
        stats.syncs,
        stats.records as f64 / stats.syncs.max(1) as f64
    );
}

/// Build a log of `n` records quickly: many appenders, large group commits.
fn build_log(dir: &Path, n: usize) {
    let log = AuditLog::open(dir, 64 << 20).expect("open");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let clients = 1024;
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients {
            let log = log.clone();
            set.spawn(async move {
                let mut i = c;
                while i < n {
                    log.append(body(i as u64)).await.expect("append");
                    i += clients;
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    log.close();
}

fn verify_big(dir: &Path, n: usize) {
    let t = Instant::now();
    build_log(dir, n);
    println!(
        "built a {n}-record log in {:.2?} (1024 concurrent appenders)",
        t.elapsed()
    );
    let bytes: u64 = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // Warm the page cache once, then measure.
    let _ = verify(dir).expect("verify");
    let t = Instant::now();
    let cpu0 = cpu_time();
    let r = verify(dir).expect("verify");
    let wall = t.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    assert_eq!(r.records, n as u64);
    println!(
        "verify: {} records, {} segments, {:.1} MiB in {:.2?} = {:.0} records/s ({:.0} MiB/s), {} threads",
        r.records,
        r.segments,
        bytes as f64 / (1 << 20) as f64,
        wall,
        r.records as f64 / wall.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / wall.as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    println!(
        "  verify CPU time {:.2?} = {:.0} records per CPU-second; {:.0} records/s on {cores} otherwise idle cores",
        cpu,
        r.records as f64 / cpu.as_secs_f64().max(1e-9),
        r.records as f64 * cores / cpu.as_secs_f64().max(1e-9)
    );
}

fn criterion_benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(&tmp.path().join("single"), 64 << 20).expect("open");
    let mut i = 0u64;
    c.bench_function("append_blocking (one fdatasync each)", |b| {
        b.iter(|| {
            i += 1;
            log.append_blocking(body(i)).expect("append")
        })
    });
    log.close();

    let vdir = tmp.path().join("verify");
    build_log(&vdir, 10_000);
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("10k records", |b| b.iter(|| verify(&vdir).expect("verify")));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = criterion_benches
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    println!("audit bench in {}", tmp.path().display());
    // Interleaved, so both modes see the same disk.
    for round in 0..2 {
        for wal in [0, airlock_audit::DEFAULT_WAL_BYTES] {
            let d = tmp.path().join(format!("one-{round}-{wal}"));
            append_one(&d, 2_000, wal);
        }
    }
    for wal in [0, airlock_audit::DEFAULT_WAL_BYTES] {
        append_concurrent(&tmp.path().join(format!("c64-{wal}")), 64, 500, wal);
    }
    verify_big(&tmp.path().join("big"), 1_000_000);
    drop(tmp);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
