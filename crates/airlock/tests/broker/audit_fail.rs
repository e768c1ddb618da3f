//! Fail closed when the audit log cannot be written: a file system that
//! fills up under a running broker, and a read-only one at start. (A
//! read-only remount under a running broker is refused by the kernel while
//! the log is open for writing, so that case cannot arise.) The broker runs
//! in its own user and mount namespace (`unshare -Urm`) with its audit log
//! on a small tmpfs, so this works with or without root.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// A shell that mounts a tmpfs for the audit log, runs a control loop that
/// reads commands from stdin in the background, and execs the broker.
const WRAPPER: &str = r#"
set -e
mnt="$1"; size="$2"; ro="$3"; shift 3
mount -t tmpfs -o "size=$size" airlock-audit "$mnt"
if [ "$ro" = ro ]; then mount -o remount,ro "$mnt"; fi
exec 3<&0
(
  while read -r cmd <&3; do
    case "$cmd" in
      fill) cat /dev/zero > "$mnt/filler" 2>/dev/null || true; echo "control: filled" >&2 ;;
      unfill) rm -f "$mnt/filler"; echo "control: unfilled" >&2 ;;
      verify) if "$1" audit verify --dir "$mnt/audit" >&2; then echo "control: verified" >&2; else echo "control: verify FAILED" >&2; fi ;;
    esac
  done
) 0<&3 &
exec "$@"
"#;

fn userns_or_skip(test: &str) -> bool {
    let ok = Command::new("unshare")
        .args(["-Urm", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("SKIPPED: {test}: cannot create a user and mount namespace (unshare -Urm); enable unprivileged user namespaces (kernel.unprivileged_userns_clone=1)");
    }
    ok
}

fn start(env: Env, mnt: &std::path::Path, size: &str, ro: bool) -> Result<Daemon, String> {
    let config = format!("[audit]\ndir = \"{}/audit\"\n", mnt.display());
    let wrapper = vec![
        "unshare".into(),
        "-Urm".into(),
        "sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "sh".into(),
        mnt.display().to_string(),
        size.into(),
        if ro { "ro" } else { "rw" }.into(),
    ];
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_with(env, &config, wrapper)
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn control(d: &mut Daemon, cmd: &str) {
    writeln!(d.stdin(), "{cmd}").unwrap();
    d.stdin().flush().unwrap();
    let want = match cmd {
        "fill" => "control: filled",
        "unfill" => "control: unfilled",
        _ => "control: verif",
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !d.log().contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "control {cmd} did not complete:\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn mnt_dir(env: &Env) -> PathBuf {
    let m = env.tmp.path().join("auditfs");
    std::fs::create_dir_all(&m).unwrap();
    m
}

#[test]
fn full_disk_refuses_grants_and_recovers() {
    if !userns_or_skip("full_disk_refuses_grants_and_recovers") {
        return;
    }
    let env = Env::new();
    let mnt = mnt_dir(&env);
    let mut d = start(env, &mnt, "256k", false).unwrap();
    let mut a = d.agent();
    let m = manifest("read_files", &[&d.env.ws], 60);
    assert_eq!(a.request(m.clone()).0, 200);
    let t = a.token(m.clone());

    control(&mut d, "fill");
    for _ in 0..3 {
        let (s, v) = a.request(m.clone());
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["error"]["code"], "audit_unavailable", "{v}");
        assert!(v.get("token").is_none() && v["error"].get("token").is_none());
        assert!(
            v["error"]["message"].as_str().unwrap().contains("audit"),
            "{v}"
        );
    }
    // Reads are refused too: nothing happens that is not on the record.
    let (s, v) = a.read(&t, &p(&d.env.ws.join("report.txt")));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("audit_unavailable")),
        "{v}"
    );
    assert!(
        !v.to_string().contains("Q4 revenue"),
        "no data without a record: {v}"
    );
    assert!(health(&d.env.socket()), "still serving");

    control(&mut d, "unfill");
    assert_eq!(
        a.request(m.clone()).0,
        200,
        "recovers once the disk has room"
    );
    control(&mut d, "verify");
    assert!(
        d.log().contains("control: verified"),
        "the chain verifies after the failures:\n{}",
        d.log()
    );
}

#[test]
fn broker_refuses_to_start_on_a_read_only_audit_log() {
    if !userns_or_skip("broker_refuses_to_start_on_a_read_only_audit_log") {
        return;
    }
    let env = Env::new();
    let mnt = mnt_dir(&env);
    let err = start(env, &mnt, "1m", true)
        .err()
        .expect("the broker must not start without a writable audit log");
    assert!(
        err.contains("audit"),
        "the refusal names the audit log: {err}"
    );
}
