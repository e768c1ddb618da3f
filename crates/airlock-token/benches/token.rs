//! Mint and verify figures. Prints criterion's estimates, then p50/p99 of
//! single operations measured one at a time:
//!
//! ```text
//! cargo bench -p airlock-token --bench token
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_core::Verb;
use airlock_token::{attenuate, Access, Attenuation, Grant, TokenAuthority};
use criterion::Criterion;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn grant() -> Grant {
    Grant {
        request_id: "0192f7a0-7c1e-7d0a-9b3e-2f6c1d4e5a6b".into(),
        session: "sess-bench".into(),
        verbs: vec![Verb::Read, Verb::List, Verb::Stat],
        paths: vec![
            "/home/user/projects/airlock".into(),
            "/home/user/notes".into(),
        ],
        hosts: vec![],
        commands: vec![],
        expires_at: now() + 3600,
    }
}

fn access(now: u64) -> Access<'static> {
    Access {
        session: "sess-bench",
        verb: Verb::Read,
        path: Some("/home/user/projects/airlock/crates/airlock-token/src/lib.rs"),
        host: None,
        command: None,
        now,
    }
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<28} n={:<6} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        samples.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

fn criterion_benches(c: &mut Criterion) {
    let auth = TokenAuthority::ephemeral();
    let g = grant();
    c.bench_function("mint", |b| {
        b.iter(|| auth.mint(black_box(&g)).map(|t| t.id.len()))
    });

    let t = auth.mint(&g).unwrap_or_else(|e| panic!("mint: {e}"));
    let a = access(now());
    c.bench_function("verify (cached parse)", |b| {
        b.iter(|| auth.verify(black_box(&t.token), &a).is_ok())
    });

    let att = Attenuation {
        paths: Some(vec!["/home/user/projects/airlock/crates".into()]),
        ..Default::default()
    };
    let narrowed = attenuate(&t.token, &auth.public_key_hex(), &att)
        .unwrap_or_else(|e| panic!("attenuate: {e}"));
    c.bench_function("verify attenuated (cached)", |b| {
        b.iter(|| auth.verify(black_box(&narrowed), &a).is_ok())
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();

    // Single-operation latencies.
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let minter =
        TokenAuthority::load_or_create(dir.path()).unwrap_or_else(|e| panic!("authority: {e}"));
    let g = grant();
    let mut tokens = Vec::with_capacity(N);
    let mut mint = Vec::with_capacity(N);
    for _ in 0..N {
        let s = Instant::now();
        let t = minter.mint(&g).unwrap_or_else(|e| panic!("mint: {e}"));
        mint.push(s.elapsed());
        tokens.push(t.token);
    }
    percentiles("mint", mint);

    // A second authority with the same key and a cold cache: every token is
    // parsed and signature-checked once.
    let verifier =
        TokenAuthority::load_or_create(dir.path()).unwrap_or_else(|e| panic!("authority: {e}"));
    let a = access(now());
    let mut cold = Vec::with_capacity(N);
    for t in &tokens {
        let s = Instant::now();
        let ok = verifier.verify(t, &a).is_ok();
        cold.push(s.elapsed());
        assert!(ok);
    }
    percentiles("verify (first use, parse)", cold);

    // One token used again and again, as an agent uses its grant: parsed
    // once. Minted here, a covered access needs no Datalog run; minted by
    // another process (a broker before a restart), it does.
    let last = &tokens[N - 1];
    for (name, auth) in [
        ("verify (minted here, cached)", &minter),
        ("verify (minted elsewhere, cached)", &verifier),
    ] {
        let mut warm = Vec::with_capacity(N);
        for _ in 0..N {
            let s = Instant::now();
            let ok = auth.verify(last, &a).is_ok();
            warm.push(s.elapsed());
            assert!(ok);
        }
        percentiles(name, warm);
    }

    let mut refused = Vec::with_capacity(N);
    let out = Access {
        path: Some("/etc/shadow"),
        ..a
    };
    for t in tokens.iter().take(N) {
        let s = Instant::now();
        let r = minter.verify(t, &out).is_err();
        refused.push(s.elapsed());
        assert!(r);
    }
    percentiles("verify refused (scope)", refused);
}
