//! Crash test: 64 clients hammer the broker while it is killed with SIGKILL
//! at random moments. After every restart the audit chain verifies and every
//! token a client received has its durable record.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[test]
fn sigkill_under_load_loses_no_acknowledged_grant() {
    // A generous policy budget: this test is about durability, and a debug
    // build on a loaded machine can be slow to evaluate.
    let mut d =
        Daemon::start("[quotas]\nrequests_per_minute = 100000000\n[policy]\ntimeout_ms = 5000\n");
    let sock = d.env.socket();
    let ws = p(&d.env.ws);
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (sock, ws, received, stop) = (sock.clone(), ws.clone(), received.clone(), stop.clone());
        tasks.push(rt.spawn(async move {
            let m = json!({"action": "read_files", "paths": [ws], "duration_seconds": 60, "justification": format!("crash client {i}")});
            let mut c = airlock_client::Client::new(&sock);
            while !stop.load(Ordering::Relaxed) {
                match c.request(&m).await {
                    Ok((200, v)) => received.lock().unwrap().push(v["token_id"].as_str().unwrap().to_string()),
                    Ok((s, v)) => panic!("unexpected answer {s}: {v}"),
                    Err(_) => {
                        // The broker is down: reconnect after a pause.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        c = airlock_client::Client::new(&sock);
                    }
                }
            }
        }));
    }
    let mut last_count = 0;
    for round in 0..5 {
        // Let the clients get going again (some grants after the restart),
        // then kill at a random moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while received.lock().unwrap().len() < last_count + 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: clients made no progress after the restart"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 400));
        d.kill9();
        let got: Vec<String> = received.lock().unwrap().clone();
        last_count = got.len();
        d.restart();
        let out = d.cli_ok(&["audit", "verify"]);
        assert!(out.starts_with("ok:"), "round {round}: {out}");
        let recorded: HashSet<String> = d
            .records()
            .iter()
            .filter_map(|r| r["token_id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = got.iter().filter(|t| !recorded.contains(*t)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} tokens have no record, e.g. {:?}",
            missing.len(),
            got.len(),
            missing.first()
        );
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    println!("crash test: {last_count} grants across 5 SIGKILLs, all recorded");
}
