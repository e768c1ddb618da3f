//! Cost of a checked read: `GrantRoot::resolve` + `read` of a small file
//! (openat2 beneath the grant, inode re-check, pread), against a plain
//! `std::fs::read` of the same path measured in the same run.
//!
//! `cargo bench -p airlock-fs --bench resolve` prints criterion's figures,
//! then p50/p99 over a fixed sample and the ratio to the plain read.

use std::time::{Duration, Instant};

use airlock_fs::{read, GrantRoot};
use criterion::{criterion_group, Criterion};

struct Tree {
    _t: tempfile::TempDir,
    root: String,
    file: String,
}

fn tree() -> Tree {
    let t = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(t.path())
        .expect("canonicalize")
        .to_str()
        .expect("utf-8")
        .to_string();
    std::fs::create_dir_all(format!("{root}/src/module")).expect("mkdir");
    let file = format!("{root}/src/module/small.rs");
    std::fs::write(&file, [b'x'; 512]).expect("write");
    Tree { _t: t, root, file }
}

fn checked(g: &GrantRoot, path: &str) -> Vec<u8> {
    let p = g.resolve(path).expect("resolve");
    read(&p, 0, None, 1 << 20).expect("read")
}

fn bench(c: &mut Criterion) {
    let t = tree();
    let g = GrantRoot::open(&t.root).expect("grant");
    c.bench_function("resolve+read 512B (depth 3)", |b| {
        b.iter(|| checked(&g, &t.file))
    });
    c.bench_function("std::fs::read 512B (peer)", |b| {
        b.iter(|| std::fs::read(&t.file).expect("read"))
    });
    c.bench_function("GrantRoot::open", |b| {
        b.iter(|| GrantRoot::open(&t.root).expect("grant"))
    });
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        f();
    }
    (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect()
}

fn summary() {
    let t = tree();
    let g = GrantRoot::open(&t.root).expect("grant");
    let n = 20_000;
    let (c50, c99) = percentiles(sample(n, || {
        std::hint::black_box(checked(&g, &t.file));
    }));
    let (s50, s99) = percentiles(sample(n, || {
        std::hint::black_box(std::fs::read(&t.file).expect("read"));
    }));
    println!("\nresolve+read 512B: p50 {c50:?}  p99 {c99:?}  ({n} samples)");
    println!("std::fs::read 512B: p50 {s50:?}  p99 {s99:?}");
    println!(
        "ratio p50 checked/plain: {:.2}x",
        c50.as_secs_f64() / s50.as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
