//! Capability tokens as the broker enforces them: tampered, expired,
//! revoked, other-session and attenuated tokens.

use serde_json::json;

use crate::common::*;

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn tampered_missing_and_foreign_tokens_are_refused_by_name() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let f = p(&d.env.ws.join("report.txt"));
    let t = agent.token(manifest("read_files", &[&d.env.ws], 60));
    // Flip one character in the middle of the signature-covered part.
    let mut bytes = t.clone().into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let (s, v) = agent.read(&tampered, &f);
    assert_eq!((s, code(&v)), (401, "token_invalid"), "{v}");
    let (s, v) = agent.call("POST", "/v1/fs/read", None, Some(json!({"path": f})));
    assert_eq!((s, code(&v)), (401, "token_missing"), "{v}");
    assert!(v["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("/v1/requests"));
    let (s, v) = agent.read("not-a-token", &f);
    assert_eq!((s, code(&v)), (401, "token_invalid"), "{v}");
    // A token from another broker (another key) is foreign.
    let other = Daemon::start("");
    let mut agent2 = other.agent();
    let foreign = agent2.token(manifest("read_files", &[&other.env.ws], 60));
    let (s, v) = agent.read(&foreign, &f);
    assert_eq!((s, code(&v)), (401, "token_invalid"), "{v}");
    // The real one still works, and the refusals were recorded.
    assert_eq!(agent.read(&t, &f).0, 200);
    let refused = d
        .records()
        .iter()
        .filter(|r| r["kind"] == "fs" && r["decision"]["allowed"] == false)
        .count();
    assert!(refused >= 3, "refusals are audited");
}

#[test]
fn expired_token_is_refused() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let t = agent.token(manifest("read_files", &[&d.env.ws], 1));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (s, v) = agent.read(&t, &p(&d.env.ws.join("report.txt")));
    assert_eq!((s, code(&v)), (401, "token_expired"), "{v}");
}

#[test]
fn revoked_by_id_session_and_all() {
    let d = Daemon::start("");
    let mut agent = d.agent();
    let f = p(&d.env.ws.join("report.txt"));
    let (_, v) = agent.request(manifest("read_files", &[&d.env.ws], 300));
    let (t1, id1) = (
        v["token"].as_str().unwrap().to_string(),
        v["token_id"].as_str().unwrap().to_string(),
    );
    let t2 = agent.token(manifest("read_files", &[&d.env.ws], 300));
    let listed = d.cli_ok(&["tokens", "list"]);
    assert!(listed.contains(&id1[..16]), "{listed}");
    // A listed prefix is enough to revoke.
    d.cli_ok(&["tokens", "revoke", &id1[..16]]);
    let (s, v) = agent.read(&t1, &f);
    assert_eq!((s, code(&v)), (401, "token_revoked"), "{v}");
    assert_eq!(agent.read(&t2, &f).0, 200, "other tokens live on");
    let session = v_session(&mut agent, &d);
    d.cli_ok(&["tokens", "revoke", "--session", &session]);
    assert_eq!(code(&agent.read(&t2, &f).1), "token_revoked");
    // New tokens after a session revocation? The session is revoked as a whole.
    let mut other = d.agent();
    let t3 = other.token(manifest("read_files", &[&d.env.ws], 300));
    d.cli_ok(&["tokens", "revoke", "--all"]);
    assert_eq!(code(&other.read(&t3, &f).1), "token_revoked");
    let t4 = other.token(manifest("read_files", &[&d.env.ws], 300));
    assert_eq!(
        other.read(&t4, &f).0,
        200,
        "tokens minted after revoke --all work"
    );
    assert!(d
        .records()
        .iter()
        .any(|r| r["kind"] == "token" && r["intent"]["action"] == "revoke"));
}

fn v_session(agent: &mut Agent, _d: &Daemon) -> String {
    let (s, v) = agent.call("GET", "/v1/session", None, None);
    assert_eq!(s, 200, "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn a_token_carried_to_another_session_is_refused() {
    let d = Daemon::start("");
    let mut a = d.agent();
    let mut b = d.agent();
    let f = p(&d.env.ws.join("report.txt"));
    let t = a.token(manifest("read_files", &[&d.env.ws], 60));
    let (s, v) = b.read(&t, &f);
    assert_eq!((s, code(&v)), (401, "token_wrong_session"), "{v}");
    // A child of the agent shares its session.
    let script = format!(
        "import json,socket,sys\ns=socket.socket(socket.AF_UNIX);s.connect({sock:?})\nb=json.dumps({{'path':{f:?}}})\ns.sendall(('POST /v1/fs/read HTTP/1.1\\r\\nhost: x\\r\\nauthorization: Bearer {t}\\r\\ncontent-length: %d\\r\\nconnection: close\\r\\n\\r\\n%s' % (len(b), b)).encode())\nd=b''\nwhile True:\n    c=s.recv(65536)\n    if not c: break\n    d+=c\nsys.stdout.write(d.decode())",
        sock = p(&d.env.socket()),
    );
    let (code_, out, err) = a.spawn(&["python3", "-c", &script]);
    assert_eq!(code_, 0, "{err}");
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "child of the holder shares the session: {out}"
    );
}

#[test]
fn attenuated_tokens_are_honoured_at_their_narrower_scope() {
    let d = Daemon::start("");
    std::fs::create_dir_all(d.env.ws.join("src")).unwrap();
    std::fs::write(d.env.ws.join("src/main.rs"), "fn main() {}\n").unwrap();
    let mut agent = d.agent();
    let t = agent.token(manifest("edit_files", &[&d.env.ws], 600));
    let (_, pk) = agent.call("GET", "/v1/public-key", None, None);
    let pk = pk["public_key"].as_str().unwrap();
    let narrow = airlock_token::attenuate(
        &t,
        pk,
        &airlock_token::Attenuation {
            paths: Some(vec![p(&d.env.ws.join("src"))]),
            verbs: Some(vec![airlock_core::Verb::Read]),
            expires_at: None,
        },
    )
    .unwrap();
    let (s, v) = agent.read(&narrow, &p(&d.env.ws.join("src/main.rs")));
    assert_eq!(s, 200, "{v}");
    let (s, v) = agent.read(&narrow, &p(&d.env.ws.join("report.txt")));
    assert_eq!(
        (s, code(&v)),
        (403, "token_scope"),
        "outside the narrowed path: {v}"
    );
    let (s, v) = agent.write(&narrow, &p(&d.env.ws.join("src/main.rs")), "x");
    assert_eq!(
        (s, code(&v)),
        (403, "token_scope"),
        "verb narrowed away: {v}"
    );
    // An attenuation that expires sooner.
    let soon = airlock_token::attenuate(
        &t,
        pk,
        &airlock_token::Attenuation {
            paths: None,
            verbs: None,
            expires_at: Some(now() + 1),
        },
    )
    .unwrap();
    assert_eq!(agent.read(&soon, &p(&d.env.ws.join("report.txt"))).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (s, v) = agent.read(&soon, &p(&d.env.ws.join("report.txt")));
    assert_eq!((s, code(&v)), (401, "token_expired"), "{v}");
    // The original is unaffected.
    assert_eq!(
        agent
            .write(&t, &p(&d.env.ws.join("src/main.rs")), "fn main() { }\n")
            .0,
        200
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
