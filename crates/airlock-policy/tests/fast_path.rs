//! The default policy's fast path (`_clear`) is a shortcut to the decision
//! the full evaluation makes: a differential test over generated requests
//! compares the embedded default with a copy whose fast path is switched off.

mod common;

use airlock_policy::DEFAULT_POLICY;
use common::{engine_in, input, write};
use proptest::prelude::*;
use serde_json::{json, Value};

const FAST_PATH: &str = "} if {\n\t_clear\n} else := _decision";

/// An engine whose `airlock.default` never takes the fast path.
fn full_only() -> (tempfile::TempDir, airlock_policy::PolicyEngine) {
    assert!(
        DEFAULT_POLICY.contains(FAST_PATH),
        "the default policy's fast path moved; update this test"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let text = DEFAULT_POLICY.replace(FAST_PATH, "} if {\n\tfalse\n} else := _decision");
    write(dir.path(), "default.rego", &text);
    let e = engine_in(dir.path(), true);
    (dir, e)
}

/// Components that trip (or nearly trip) some rule of the default policy.
const COMPONENTS: &[&str] = &[
    "home",
    "u",
    "proj",
    "src",
    "main.rs",
    "README.md",
    ".ssh",
    ".SSH",
    "id_rsa",
    "id_rsa.pub",
    ".env",
    ".env.local",
    ".env.example",
    ".envrc",
    "env",
    ".aws",
    "credentials",
    ".docker",
    "config.json",
    ".config",
    "gh",
    "hosts.yml",
    "gcloud",
    "airlock",
    ".local",
    "state",
    "share",
    "keyrings",
    "etc",
    "shadow",
    "passwd",
    "proc",
    "1",
    "self",
    "environ",
    "mem",
    "server.pem",
    "cert.PEM",
    "x.key",
    "keystore",
    "library",
    "snap",
    "firefox",
    "run",
    "user",
    "1000",
    "proj-evil",
    "finance",
    "a b",
    "ünï",
];

fn path_strategy() -> impl Strategy<Value = String> {
    let comp = proptest::sample::select(COMPONENTS);
    let tail = proptest::collection::vec(comp, 0..6);
    // The workspace comes up most, so that many requests reach the fast path.
    let root = proptest::sample::select(
        &[
            "/home/u/proj",
            "/home/u/proj",
            "/home/u/proj/src",
            "/home/u/proj",
            "/home/u",
            "/home/u/.config/airlock",
            "/home/u/.local/state/airlock",
            "/run/user/1000",
            "/etc",
            "/proc/1",
            "/srv",
            "",
        ][..],
    );
    (root, tail, any::<bool>()).prop_map(|(root, tail, slash)| {
        let mut p = root.to_string();
        for c in tail {
            p.push('/');
            p.push_str(c);
        }
        if p.is_empty() {
            p.push('/');
        }
        if slash && p.len() > 1 {
            p.push('/');
        }
        p
    })
}

const LABELS: &[&[&str]] = &[&[], &["confidential"]];

const WORKSPACES: &[&[&str]] = &[
    &["/home/u/proj"],
    &["/home/u/proj", "/home/u"],
    &["/"],
    &["", "/home/u/proj"],
    &[],
];

fn input_strategy() -> impl Strategy<Value = Value> {
    let action = proptest::sample::select(
        &[
            "read_files",
            "list_files",
            "edit_files",
            "commit",
            "exec",
            "network",
            "delete",
        ][..],
    );
    let paths = proptest::collection::vec(path_strategy(), 1..3);
    let labels = proptest::sample::select(LABELS);
    let used = proptest::sample::select(&[0u64, 599, 600, 601][..]);
    let workspaces = proptest::sample::select(WORKSPACES);
    (action, paths, labels, used, workspaces).prop_map(|(action, paths, labels, used, ws)| {
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let mut v = input(action, &refs);
        for info in v["path_infos"].as_array_mut().into_iter().flatten() {
            info["labels"] = json!(labels);
        }
        v["labels"] = json!(labels);
        v["usage"]["requests_per_minute"]["used"] = json!(used);
        v["workspaces"] = json!(ws);
        v
    })
}

#[test]
fn fast_path_decides_like_the_full_evaluation() {
    let (_d1, fast) = common::default_engine();
    let (_d2, full) = full_only();
    let allowed = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1500));
    let outcome = runner.run(&input_strategy(), |inp| {
        let d = fast.evaluate(&inp);
        if d.decision == airlock_core::DecisionKind::Allow {
            allowed.set(allowed.get() + 1);
        }
        prop_assert_eq!(d, full.evaluate(&inp), "input: {}", inp);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // The generator must reach the fast path often enough to mean something.
    assert!(allowed.get() > 50, "only {} allows", allowed.get());
}
