//! Helpers for the unit tests.

use airlock_core::Verb;

use crate::{Access, Grant};

pub(crate) fn grant() -> Grant {
    Grant {
        request_id: "r".into(),
        session: "s".into(),
        verbs: vec![Verb::Read],
        paths: vec!["/a".into()],
        hosts: vec![],
        commands: vec![],
        expires_at: crate::now_unix() + 3600,
    }
}

pub(crate) fn read_access() -> Access<'static> {
    Access {
        session: "s",
        verb: Verb::Read,
        path: Some("/a/f"),
        host: None,
        command: None,
        now: crate::now_unix(),
    }
}
