//! The documented hash rule is enough for a third party: the Python
//! verifier from the README accepts a real log and rejects a tampered one.

use std::path::Path;
use std::process::Command;

use super::common::{lines, segment, write_lines, write_log};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/verify-audit.py")
}

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some("python3")
}

#[test]
fn readme_carries_the_script_verbatim() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let script = std::fs::read_to_string(script()).unwrap();
    assert!(
        readme.contains(&script),
        "README and contrib/verify-audit.py disagree"
    );
}

#[test]
fn python_verifier_agrees_with_verify() {
    let Some(py) = python() else {
        println!("SKIPPED: python3 not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 40, 2048);
    let report = airlock_audit::verify(tmp.path()).unwrap();
    let out = Command::new(py)
        .arg(script())
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("ok 40 {}", report.head_hash.unwrap())
    );

    // Edit one record: both verifiers object.
    let seg = segment(tmp.path(), 2);
    let mut ls = lines(&seg);
    ls[1] = ls[1].replace("finance-edit-1", "finance-edit-2");
    write_lines(&seg, &ls);
    assert!(airlock_audit::verify(tmp.path()).is_err());
    let out = Command::new(py)
        .arg(script())
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hash mismatch"));
}
