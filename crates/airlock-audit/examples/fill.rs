//! Write N realistic records into DIR as fast as group commit allows:
//! `cargo run --release -p airlock-audit --example fill -- DIR N`.

use airlock_audit::{AuditLog, RecordBody};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: fill DIR N");
        std::process::exit(2);
    };
    let log = match AuditLog::open(std::path::Path::new(&dir), 64 << 20) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let threads = 256u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = log.clone();
            s.spawn(move || {
                let mut i = t;
                while i < n {
                    let body = RecordBody {
                        kind: "request".into(),
                        agent: Some("co-work-client-1.2.0".into()),
                        user: Some("alice@example.com".into()),
                        request_id: format!("r-{i:08}"),
                        intent: json!({"action": "edit_files", "paths": [format!("/home/alice/q{i}.xlsx")]}),
                        decision: json!({"decision": "allow", "policy_id": "airlock.default", "rule": "allow_home_edit"}),
                        execution: json!({"sandbox": "airlock-sandbox"}),
                        outcome: json!({"modified_files": [format!("/home/alice/q{i}-edited.xlsx")]}),
                        peer: json!({"uid": 1000, "gid": 1000, "pid": 4242}),
                        ..Default::default()
                    };
                    if let Err(e) = log.append_blocking(body) {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                    i += threads;
                }
            });
        }
    });
    log.close();
    println!("{:?}", log.head());
}
