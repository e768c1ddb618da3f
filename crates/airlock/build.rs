//! The build identity shared by `airlock` and `airlock-full`: a SHA-256
//! over the sources every crate of the workspace builds from (`src`,
//! `Cargo.toml`, embedded rule files) and `Cargo.lock`. The front passes
//! it to `airlock-full`, which refuses to run for a front of another build
//! (one binary copied or rebuilt without the other).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a crate builds from; tests, benches and examples do not count.
const SKIP: [&str; 6] = [
    "tests",
    "benches",
    "examples",
    "fuzz",
    "target",
    "README.md",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let crates = here.parent().expect("crates/").to_path_buf();
    let root = crates.parent().expect("workspace root").to_path_buf();
    let mut all = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("read crates/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        for e in std::fs::read_dir(&d).expect("read a crate").flatten() {
            let name = e.file_name();
            if SKIP.iter().any(|s| name == *s) {
                continue;
            }
            println!("cargo:rerun-if-changed={}", e.path().display());
            if e.path().is_dir() {
                files(&e.path(), &mut all);
            } else {
                all.push(e.path());
            }
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    // How the front is linked (scripts/rustc-front.sh, the build's rustc
    // wrapper): relink when the script or one of its switches changes.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("scripts/rustc-front.sh").display()
    );
    println!("cargo:rerun-if-env-changed=AIRLOCK_DYNAMIC_FRONT");
    println!("cargo:rerun-if-env-changed=AIRLOCK_FRONT_LTO");
    all.sort();
    let mut h = Sha256::new();
    for p in &all {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        let rel = p.strip_prefix(&root).unwrap_or(p);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let id = h.finalize();
    let hex: String = id[..8].iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "cargo:rustc-env=AIRLOCK_BUILD_ID={}+{hex}",
        std::env::var("CARGO_PKG_VERSION").expect("cargo sets it")
    );
}
