//! Policy in the running broker: quotas, reload on SIGHUP and on request
//! (a broken policy keeps the last good one), the time bound, quarantine.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn request_quotas_per_agent_and_per_action() {
    let d = Daemon::start(
        "[quotas]\nrequests_per_minute = 5\n[quotas.actions.list_files]\nrequests_per_minute = 1\n",
    );
    let mut a = d.agent();
    let list = manifest("list_files", &[&d.env.ws], 60);
    let read = manifest("read_files", &[&d.env.ws], 60);
    assert_eq!(a.request(list.clone()).0, 200);
    // The per-action quota is used up; other actions are not.
    let (s, v) = a.request(list);
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (403, Some("quota_exceeded")),
        "{v}"
    );
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("list_files.requests_per_minute"),
        "{v}"
    );
    for _ in 0..3 {
        assert_eq!(a.request(read.clone()).0, 200);
    }
    // Five requests counted: the per-agent quota is used up too.
    let r = a.call_full("POST", "/v1/requests", None, read);
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(r["body"]["reason_code"], "quota_exceeded", "{r}");
    assert!(r["body"]["retry_after"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["retry_after"].as_str().is_some(),
        "Retry-After header: {r}"
    );
    assert_eq!(r["body"]["grantable"], false);
}

#[test]
fn read_quota_refuses_reads() {
    let d = Daemon::start("[quotas]\nfiles_read_per_hour = 2\n");
    let mut a = d.agent();
    let t = a.token(manifest("read_files", &[&d.env.ws], 60));
    let f = p(&d.env.ws.join("report.txt"));
    assert_eq!(a.read(&t, &f).0, 200);
    assert_eq!(a.read(&t, &f).0, 200);
    let (s, v) = a.read(&t, &f);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v}"
    );
    assert!(v["error"]["retry_after"].as_u64().is_some(), "{v}");
}

#[test]
fn sighup_reload_and_last_good_policy() {
    let d = Daemon::start("");
    let mut a = d.agent();
    let report = d.env.ws.join("report.txt");
    assert_eq!(a.request(manifest("read_files", &[&report], 60)).0, 200);
    let no_reports = d.env.write_policy(
        "no_reports.rego",
        "package team.reports\n\nimport rego.v1\n\ndeny contains msg if {\n  endswith(input.path, \"report.txt\")\n  msg := \"reports are off limits\"\n}\n",
    );
    Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    wait_for("the reload", || {
        a.request(manifest("read_files", &[&report], 60)).0 == 403
    });
    let (_, v) = a.request(manifest("read_files", &[&report], 60));
    assert_eq!(v["policy_id"], "team.reports", "{v}");
    assert!(
        v["reasons"][0].as_str().unwrap().contains("off limits"),
        "{v}"
    );
    let good_rev = v["policy_revision"].as_str().unwrap().to_string();

    // A policy that does not compile is rejected; the last good one stays.
    let broken = d.env.write_policy(
        "broken.rego",
        "package team.broken\n\nthis is not rego {{{\n",
    );
    let o = d.cli(&["policy", "reload"]);
    assert!(!o.status.success(), "reload of a broken policy must fail");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("last good"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (s, v) = a.request(manifest("read_files", &[&report], 60));
    assert_eq!(
        (s, v["policy_revision"].as_str()),
        (403, Some(good_rev.as_str())),
        "{v}"
    );
    assert!(d
        .records()
        .iter()
        .any(|r| r["kind"] == "policy" && r["decision"]["allowed"] == false));

    // Fixing it: the file watcher picks it up without a signal.
    std::fs::remove_file(&broken).unwrap();
    std::fs::remove_file(&no_reports).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, v) = a.request(manifest("read_files", &[&report], 60));
        if s == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher did not reload: {v}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_slow_policy_denies_with_policy_timeout() {
    let env = Env::new();
    env.write_policy(
        "slow.rego",
        "package team.slow\n\nimport rego.v1\n\nn := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i != j])\n\ndeny contains \"never\" if n < 0\n",
    );
    let d = Daemon::start_with(env, "[policy]\ntimeout_ms = 20\n", vec![]);
    let mut a = d.agent();
    let (s, v) = a.request(manifest("read_files", &[&d.env.ws], 60));
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (403, Some("policy_timeout")),
        "{v}"
    );
    assert!(v.get("token").is_none());
    assert!(health(&d.env.socket()));
}

#[test]
fn quarantine_revokes_and_denies_everything() {
    let d = Daemon::start("");
    let mut a = d.agent();
    let t = a.token(manifest("read_files", &[&d.env.ws], 300));
    let (_, s) = a.call("GET", "/v1/session", None, None);
    let sid = s["id"].as_str().unwrap().to_string();
    let out = d.cli_ok(&["sessions", "list"]);
    assert!(out.contains(&sid), "{out}");
    d.cli_ok(&["sessions", "quarantine", &sid]);
    let (st, v) = a.read(&t, &p(&d.env.ws.join("report.txt")));
    assert!(st == 401 || st == 403, "{v}");
    let (st, v) = a.request(manifest("read_files", &[&d.env.ws], 60));
    assert_eq!(
        (st, v["reason_code"].as_str()),
        (403, Some("quarantined")),
        "{v}"
    );
    // The quarantined agent still cannot reach the operator socket.
    let (code, _, err) = a.spawn(&[bin(), "status"]);
    assert_ne!(code, 0, "{err}");
    let _ = json!({});
}
