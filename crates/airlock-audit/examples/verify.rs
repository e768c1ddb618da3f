//! Verify an audit directory and print the report: `cargo run --release
//! -p airlock-audit --example verify -- DIR`.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: verify DIR");
        std::process::exit(2);
    };
    let start = std::time::Instant::now();
    match airlock_audit::verify(std::path::Path::new(&dir)) {
        Ok(r) => {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "ok: {} records in {} segments, head {:?}",
                r.records, r.segments, r.head_hash
            );
            println!("{:.3}s, {:.0} records/s", secs, r.records as f64 / secs);
        }
        Err(f) => {
            println!("FAILED: {f}");
            std::process::exit(1);
        }
    }
}
