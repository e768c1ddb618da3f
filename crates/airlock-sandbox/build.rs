//! Compiles the seccomp programs ahead of time (`src/seccomp/rules.rs`,
//! the code the crate would otherwise run on every `airlock run`), into
//! `$OUT_DIR/seccomp_prebuilt.rs`. Only when the target is the build
//! machine's architecture: the rules take their system call numbers from
//! `libc` as this script is compiled. Otherwise the crate compiles them at
//! run time.

use std::fmt::Write as _;
use std::path::PathBuf;

#[allow(dead_code)]
#[path = "src/seccomp/rules.rs"]
mod rules;

fn table(prog: &[libc::sock_filter]) -> String {
    let mut s = String::from("&[");
    for i in prog {
        write!(s, "({:#x}, {}, {}, {:#x}),", i.code, i.jt, i.jf, i.k).expect("to a string");
    }
    s.push(']');
    s
}

fn main() {
    println!("cargo:rerun-if-changed=src/seccomp/rules.rs");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    let native = cfg!(target_os = "linux")
        && target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ARCH") == std::env::consts::ARCH;
    let code = if native {
        let plain = rules::programs(false).expect("the seccomp rules compile");
        let no_udp = rules::programs(true).expect("the seccomp rules compile");
        format!(
            "const PREBUILT: Option<[Table; 2]> = Some([{}, {}]);\n",
            table(&plain),
            table(&no_udp)
        )
    } else {
        "const PREBUILT: Option<[Table; 2]> = None;\n".to_string()
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("seccomp_prebuilt.rs"), code).expect("write seccomp_prebuilt.rs");
}
