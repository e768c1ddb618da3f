use std::time::{SystemTime, UNIX_EPOCH};

use airlock_core::Verb;
use airlock_token::{Access, Grant};

pub const SESSION: &str = "sess-1";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn grant(verbs: &[Verb], paths: &[&str]) -> Grant {
    Grant {
        request_id: "req-1".into(),
        session: SESSION.into(),
        verbs: verbs.to_vec(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        hosts: vec![],
        commands: vec![],
        expires_at: now() + 3600,
    }
}

pub fn file_access(verb: Verb, path: &str) -> Access<'_> {
    Access {
        session: SESSION,
        verb,
        path: Some(path),
        host: None,
        command: None,
        now: now(),
    }
}
