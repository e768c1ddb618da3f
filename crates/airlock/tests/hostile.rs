//! Runs the hostile suite (`tests/hostile/run.sh`) against the `airlock`
//! binary cargo just built: every attack through `airlock run`, as root and
//! as nobody (as the current user only when not root), judged from the host
//! side. Fails if any attack escaped or could not be judged.

use std::path::Path;
use std::process::Command;

#[test]
fn hostile_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/hostile/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("AIRLOCK", env!("CARGO_BIN_EXE_airlock"))
        .output()
        .expect("run tests/hostile/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the hostile suite found escapes or unjudged attacks (exit {:?})",
        out.status.code()
    );
    assert!(
        stdout.contains(" 0 failed"),
        "the hostile suite did not report its totals"
    );
}
