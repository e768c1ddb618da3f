//! The revocation list, `state_dir/revoked.json`.
//!
//! Written as a whole on every change: a temporary file (mode 0600, `O_EXCL`)
//! is written and fsynced, renamed over the old list, and the directory is
//! fsynced, so after a crash the list is either the old or the new one, never
//! a torn mix. A list that exists but cannot be read or parsed stops the
//! authority from starting: forgetting revocations would silently revive
//! revoked tokens.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::TokenError;

/// Name of the revocation list inside the state directory.
pub const REVOKED_FILE: &str = "revoked.json";

/// Current on-disk format version.
const VERSION: u32 = 1;

/// Largest revocation list accepted on load (about a million revoked ids).
const MAX_REVOKED_FILE: u64 = 256 * 1024 * 1024;

/// Everything that has been revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revocations {
    /// Format version.
    pub version: u32,
    /// Lower-case hex revocation ids (any block's).
    pub ids: BTreeSet<String>,
    /// Revoked sessions.
    pub sessions: BTreeSet<String>,
    /// Tokens issued at or before this unix second are revoked.
    pub revoke_all_at: Option<u64>,
}

impl Revocations {
    pub(crate) fn new() -> Self {
        Revocations {
            version: VERSION,
            ..Default::default()
        }
    }
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> TokenError {
    TokenError::Io(std::io::Error::other(format!(
        "{}: {what}: {e}",
        path.display()
    )))
}

/// Load the list at `path`; absent means nothing revoked yet.
pub(crate) fn load(path: &Path) -> Result<Revocations, TokenError> {
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Revocations::new()),
        Err(e) => {
            return Err(io_err(
                path,
                "cannot open the revocation list (it must be a regular file, not a symlink)",
                e,
            ))
        }
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| io_err(path, "cannot stat", e))?;
    // Same ownership rules as the key: whoever can rewrite this file can
    // un-revoke tokens.
    crate::key::check_metadata(path, &meta)?;
    let mut text = String::new();
    (&file)
        .take(MAX_REVOKED_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_err(path, "cannot read", e))?;
    if text.len() as u64 > MAX_REVOKED_FILE {
        return Err(io_err(path, "revocation list too large", MAX_REVOKED_FILE));
    }
    let state: Revocations = serde_json::from_str(&text).map_err(|e| {
        io_err(
            path,
            "revocation list is corrupt; restore it from backup (deleting it would revive \
             every revoked token; rotate the key by deleting token.key as well if you must)",
            e,
        )
    })?;
    if state.version != VERSION {
        return Err(io_err(
            path,
            "unsupported revocation list version",
            state.version,
        ));
    }
    Ok(state)
}

/// Atomically replace the list at `path` with `state`, durably.
pub(crate) fn save(path: &Path, state: &Revocations) -> Result<(), TokenError> {
    let dir = path
        .parent()
        .ok_or_else(|| io_err(path, "no parent directory", "-"))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| io_err(path, "cannot serialise", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".revoked.json.")
        .tempfile_in(dir)
        .map_err(|e| io_err(path, "cannot create a temporary file", e))?;
    tmp.write_all(&json)
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_err(path, "cannot write", e))?;
    tmp.persist(path)
        .map_err(|e| io_err(path, "cannot rename into place", e.error))?;
    sync_dir(dir)
}

/// fsync a directory so a rename or link inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), TokenError> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(dir, "cannot open directory to sync", e))?;
    rustix::fs::fsync(&fd).map_err(|e| io_err(dir, "cannot sync directory", e))
}
