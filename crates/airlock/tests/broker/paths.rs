//! Path tricks against a real tree: `..`, planted symlinks and hard links,
//! sibling prefixes, `/proc/self/root`, a symlink swapped in concurrently,
//! labels and the never-list inside a broad grant.

use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::common::*;

fn code(v: &serde_json::Value) -> String {
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

fn leaked(v: &serde_json::Value) -> bool {
    v.to_string().contains("canary")
}

#[test]
fn lexical_tricks_are_refused_before_anything_is_opened() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let t = agent.token(manifest("read_files", &[&d.env.ws], 60));
    let ws = p(&d.env.ws);
    for bad in [
        format!("{ws}/../outside/secret.txt"),
        format!("{ws}/./report.txt"),
        format!("{ws}//report.txt"),
        "report.txt".into(),
    ] {
        let (s, v) = agent.read(&t, &bad);
        assert_eq!((s, code(&v).as_str()), (400, "invalid_path"), "{bad}: {v}");
    }
    // Sibling prefix: /home/u/proj does not cover /home/u/proj-evil.
    let evil = d.env.home.join("proj-evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("x.txt"), "canary-evil").unwrap();
    let (s, v) = agent.read(&t, &p(&evil.join("x.txt")));
    assert_eq!((s, code(&v).as_str()), (403, "token_scope"), "{v}");
    // /proc/self/root is a path outside the grant.
    let (s, v) = agent.read(
        &t,
        &format!("/proc/self/root{}", p(&d.env.outside.join("secret.txt"))),
    );
    assert_eq!((s, code(&v).as_str()), (403, "token_scope"), "{v}");
}

#[test]
fn planted_links_cannot_reach_outside_the_grant() {
    let d = Daemon::start("");
    let ws = &d.env.ws;
    let secret = d.env.outside.join("secret.txt");
    symlink(&secret, ws.join("abs-link")).unwrap();
    symlink("../../outside/secret.txt", ws.join("rel-link")).unwrap();
    symlink(&d.env.outside, ws.join("dir-link")).unwrap();
    symlink("/proc/self/root/", ws.join("proc-link")).unwrap();
    std::fs::hard_link(&secret, ws.join("hard-link")).unwrap();
    let mut agent = d.agent();
    let t = agent.token(manifest("edit_files", &[ws], 60));
    for (name, path) in [
        ("absolute symlink", p(&ws.join("abs-link"))),
        ("relative symlink", p(&ws.join("rel-link"))),
        ("directory symlink", p(&ws.join("dir-link/secret.txt"))),
        ("magic link", format!("{}/proc-link{}", p(ws), p(&secret))),
        ("hard link", p(&ws.join("hard-link"))),
    ] {
        let (s, v) = agent.read(&t, &path);
        assert!(!leaked(&v), "{name} leaked: {v}");
        assert_eq!((s, code(&v).as_str()), (403, "path_escape"), "{name}: {v}");
    }
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/list",
        Some(&t),
        Some(json!({"path": p(&ws.join("dir-link"))})),
    );
    assert!(!leaked(&v) && !v.to_string().contains("secret.txt"), "{v}");
    assert_ne!(s, 200, "{v}");
    // A symlink inside the grant to a file inside the grant is fine.
    symlink("report.txt", ws.join("inner-link")).unwrap();
    let (s, v) = agent.read(&t, &p(&ws.join("inner-link")));
    assert_eq!(
        (s, v["content"].as_str()),
        (200, Some("Q4 revenue: 100\n")),
        "{v}"
    );
    // Writing through a planted symlink stages the link path; commit never follows it.
    let (s, w) = agent.write(&t, &p(&ws.join("abs-link")), "pwned");
    if s == 200 {
        let id = w["staging_id"].as_str().unwrap();
        let _ = d.cli(&["staged", "commit", id]);
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "canary-outside\n",
        "the outside file must not change"
    );
}

#[test]
fn concurrent_symlink_swap_never_leaks() {
    let d = Daemon::start("");
    let ws = d.env.ws.clone();
    std::fs::create_dir_all(ws.join("real-sub")).unwrap();
    std::fs::write(ws.join("real-sub/secret.txt"), "harmless\n").unwrap();
    // `sub` starts as an in-grant symlink; the swapper replaces it atomically.
    symlink("real-sub", ws.join("sub")).unwrap();
    let mut agent = d.agent();
    let t = agent.token(manifest("read_files", &[&ws], 300));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let ws = ws.clone();
        let outside = d.env.outside.clone();
        std::thread::spawn(move || {
            // Alternate `sub` between a real directory and a symlink out.
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tmp = ws.join(format!(".swap{}", n % 2));
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_dir_all(&tmp);
                if n.is_multiple_of(2) {
                    symlink(&outside, &tmp).unwrap();
                } else {
                    symlink("real-sub", &tmp).unwrap();
                }
                std::fs::rename(&tmp, ws.join("sub")).unwrap();
                n += 1;
            }
            n
        })
    };
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..300 {
        let (s, v) = agent.read(&t, &p(&ws.join("sub/secret.txt")));
        assert!(!leaked(&v), "swap race leaked the outside file: {v}");
        if s == 200 {
            ok += 1;
        } else {
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the swapper ran ({swaps} swaps)");
    assert!(
        refused > 0,
        "some reads met the outward symlink and were refused ({ok} ok)"
    );
    assert!(
        ok > 0,
        "some reads met the inward symlink and succeeded ({refused} refused)"
    );
}

#[test]
fn never_list_and_labels_hold_inside_a_broad_grant() {
    let cfg = "[[classify]]\npattern = \"**/finance/**\"\nlabels = [\"confidential\"]\n";
    let d = Daemon::start(cfg);
    let ws = &d.env.ws;
    std::fs::write(ws.join(".env"), "API_KEY=canary-env\n").unwrap();
    std::fs::create_dir_all(ws.join("finance")).unwrap();
    std::fs::write(ws.join("finance/q4.xlsx"), "canary-finance").unwrap();
    let mut agent = d.agent();
    // The home directory is outside the workspace: a human approves it.
    let (s, v) = agent.request(manifest("read_files", &[&d.env.home], 120));
    assert_eq!(s, 202, "{v}");
    d.cli_ok(&["approvals", "approve", v["approval_id"].as_str().unwrap()]);
    let (s, v) = agent.call(
        "GET",
        &format!("/v1/approvals/{}", v["approval_id"].as_str().unwrap()),
        None,
        None,
    );
    assert_eq!(s, 200, "{v}");
    let t = v["token"].as_str().unwrap().to_string();
    // Even so, credential stores and .env files stay out of reach.
    for f in [d.env.home.join(".ssh/id_rsa"), ws.join(".env")] {
        let (s, v) = agent.read(&t, &p(&f));
        assert!(!leaked(&v), "{v}");
        assert_eq!(
            (s, code(&v).as_str()),
            (403, "policy_denied"),
            "{}: {v}",
            f.display()
        );
    }
    // A labelled file under an unlabelled grant must be asked for by name.
    let (s, v) = agent.read(&t, &p(&ws.join("finance/q4.xlsx")));
    assert!(!leaked(&v));
    assert_eq!((s, code(&v).as_str()), (403, "policy_denied"), "{v}");
    assert!(
        v["error"]["hint"].as_str().unwrap().contains("by name"),
        "{v}"
    );
    // Asked for by name, the labelled file goes to a human.
    let (s, v) = agent.request(manifest("read_files", &[&ws.join("finance/q4.xlsx")], 60));
    assert_eq!((s, v["rule"].as_str()), (202, Some("labelled")), "{v}");
    let recs = d.records();
    let req = recs.iter().rev().find(|r| r["kind"] == "request").unwrap();
    assert_eq!(req["decision"]["labels"], json!(["confidential"]));
    // Ordinary files are readable.
    assert_eq!(agent.read(&t, &p(&ws.join("report.txt"))).0, 200);
}
