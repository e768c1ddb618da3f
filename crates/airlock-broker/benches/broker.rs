//! Broker figures on this machine, printed plainly (`cargo bench -p airlock-broker`):
//!
//! - in-process decision latency: manifest validation + Rego + token mint
//!   (1 path and 10 paths), p50/p99, against the 100 µs p99 target;
//! - round trip over the Unix socket with a durable audit record, one client
//!   and 64 concurrent clients: p50/p99 and decisions per second, against the
//!   10,000 decisions/s target.
//!
//! Token verify and `audit verify` throughput are measured by the token and
//! audit crates' own benches (`bench/run.sh` runs all of them).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The same allocator as the `airlock` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use airlock_broker::config::QuotaConfig;
use airlock_broker::peer::Peer;
use airlock_broker::{Broker, Config};
use airlock_core::{Manifest, ManifestLimits};
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(label: &str, mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort();
    let (p50, p99) = (pct(&lat, 0.50), pct(&lat, 0.99));
    println!(
        "{label:<48} n={:<7} p50 {:>9.1?}  p99 {:>9.1?}",
        lat.len(),
        p50,
        p99
    );
    (p50, p99)
}

fn config(root: &Path, ws: &Path) -> Config {
    let policy = airlock_policy::PolicyConfig {
        dir: Some(root.join("policy")),
        ..Default::default()
    };
    Config {
        socket: Some(root.join("run/broker.sock")),
        operator_socket: Some(root.join("run/operator.sock")),
        state_dir: Some(root.join("state")),
        workspaces: vec![ws.to_path_buf()],
        policy,
        // No quotas: the benchmark measures the decision path, not the counters.
        quotas: QuotaConfig {
            requests_per_minute: None,
            files_read_per_hour: None,
            bytes_read_per_hour: None,
            actions: Default::default(),
        },
        ..Default::default()
    }
}

fn manifest_bytes(ws: &Path, n: usize) -> Vec<u8> {
    let paths: Vec<String> = (0..n)
        .map(|i| format!("{}/src/file{i}.rs", ws.display()))
        .collect();
    serde_json::to_vec(
        &json!({"action": "edit_files", "paths": paths, "duration_seconds": 300,
        "justification": "Summarize and correct the Q4 report", "agent": "bench-agent-1.0"}),
    )
    .unwrap()
}

fn in_process(broker: &Broker, ws: &Path) {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let peer = Peer::of_socket(&a).unwrap();
    let limits = ManifestLimits::default();
    for n in [1usize, 10] {
        let body = manifest_bytes(ws, n);
        let run = |iters: usize| -> Vec<Duration> {
            let mut lat = Vec::with_capacity(iters);
            for i in 0..iters {
                let t = Instant::now();
                let m = Manifest::parse(&body, &limits).unwrap();
                let d = broker.decide(&peer, &m);
                assert_eq!(
                    d.decision.decision,
                    airlock_core::DecisionKind::Allow,
                    "{:?}",
                    d.decision
                );
                let tok = broker
                    .mint(&m, &d.session.id, &format!("r-{i}"), d.now)
                    .unwrap();
                lat.push(t.elapsed());
                std::hint::black_box(tok);
            }
            lat
        };
        run(2000);
        if std::env::var_os("AIRLOCK_BENCH_BREAKDOWN").is_some() {
            let m = Manifest::parse(&body, &limits).unwrap();
            let d = broker.decide(&peer, &m);
            let mut pol = Vec::new();
            let mut mint = Vec::new();
            for i in 0..5000 {
                let t = Instant::now();
                std::hint::black_box(broker.policy().evaluate(&d.input));
                pol.push(t.elapsed());
                let t = Instant::now();
                std::hint::black_box(
                    broker
                        .mint(&m, &d.session.id, &format!("r-{i}"), d.now)
                        .unwrap(),
                );
                mint.push(t.elapsed());
            }
            summary("  of which policy evaluation", pol);
            summary("  of which token mint", mint);
        }
        let (_, p99) = summary(
            &format!(
                "in-process decision ({n} path{})",
                if n == 1 { "" } else { "s" }
            ),
            run(20_000),
        );
        if n == 1 {
            println!(
                "  target p99 < 100 µs: {}",
                if p99 < Duration::from_micros(100) {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
}

async fn one_client(sock: &Path, body: &serde_json::Value, iters: usize) -> Vec<Duration> {
    let c = airlock_client::Client::new(sock);
    let mut lat = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let (s, _) = c.request(body).await.unwrap();
        assert_eq!(s, 200);
        lat.push(t.elapsed());
    }
    lat
}

async fn many_clients(
    sock: &Path,
    body: &serde_json::Value,
    clients: usize,
    dur: Duration,
) -> (Vec<Duration>, u64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..clients {
        let (sock, body, stop, count) = (
            sock.to_path_buf(),
            body.clone(),
            stop.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = airlock_client::Client::new(&sock);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (s, _) = c.request(&body).await.unwrap();
                assert_eq!(s, 200);
                lat.push(t.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, count.load(Ordering::Relaxed), start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("airlock-bench-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let ws = root.path().join("ws");
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::create_dir_all(root.path().join("policy")).unwrap();
    let cfg = config(root.path(), &ws);
    let sock = root.path().join("run/broker.sock");
    println!(
        "airlock-broker bench ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = rt.block_on(async { Broker::open(cfg, &[]) }).unwrap();
    in_process(&broker, &ws);

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(broker.clone().serve(async move {
        let _ = rx.await;
    }));
    let body: serde_json::Value = serde_json::from_slice(&manifest_bytes(&ws, 1)).unwrap();
    rt.block_on(async {
        while tokio::net::UnixStream::connect(&sock).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        one_client(&sock, &body, 500).await;
        summary("socket round trip, 1 client (durable record)", one_client(&sock, &body, 5000).await);
        many_clients(&sock, &body, 64, Duration::from_secs(1)).await;
        let (lat, n, wall) = many_clients(&sock, &body, 64, Duration::from_secs(5)).await;
        summary("socket round trip, 64 clients (durable record)", lat);
        let rate = n as f64 / wall.as_secs_f64();
        println!("  64 clients: {n} decisions in {wall:.2?} = {rate:.0} decisions/s (target > 10,000: {})", if rate > 10_000.0 { "met" } else { "NOT met" });
    });
    let _ = tx.send(());
    rt.block_on(served).unwrap().unwrap();
    let log = airlock_audit::verify(&root.path().join("state/audit")).unwrap();
    println!(
        "  audit log after the run verifies: {} records",
        log.records
    );
}
