//! The root key file, `state_dir/token.key`.
//!
//! The file holds the root private key as biscuit's prefixed hex string
//! (`ed25519-private/<hex>`), one line. It is created once, atomically, with
//! mode 0600 (a temporary file made with `O_EXCL` and mode 0600, then
//! hard-linked into place so an existing key is never replaced), and refused
//! on load when it is not a regular file, is owned by another user, or grants
//! any permission to group or others.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use biscuit_auth::{KeyPair, PrivateKey};
use rustix::fs::{Mode, OFlags};

use crate::TokenError;

/// Name of the key file inside the state directory.
pub const KEY_FILE: &str = "token.key";

/// Largest key file accepted (a prefixed hex Ed25519 or P-256 key is < 100 bytes).
const MAX_KEY_FILE: u64 = 4096;

fn key_err(path: &Path, message: impl Into<String>) -> TokenError {
    TokenError::Key {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Load the key at `path`, or create it if absent.
pub(crate) fn load_or_create_key(path: &Path) -> Result<KeyPair, TokenError> {
    match load_key(path) {
        Ok(k) => Ok(k),
        Err(LoadError::Missing) => create_key(path),
        Err(LoadError::Other(e)) => Err(e),
    }
}

enum LoadError {
    Missing,
    Other(TokenError),
}

fn load_key(path: &Path) -> Result<KeyPair, LoadError> {
    // O_NOFOLLOW: a symlink planted in place of the key is refused (ELOOP),
    // never followed to a file somebody else controls.
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Err(LoadError::Missing),
        Err(rustix::io::Errno::LOOP) => {
            return Err(LoadError::Other(key_err(
                path,
                "is a symbolic link; the key must be a regular file. Remove the link \
                 (a new key will be created, invalidating all outstanding tokens)",
            )))
        }
        Err(e) => {
            return Err(LoadError::Other(key_err(
                path,
                format!("cannot open: {e}; check the state directory's permissions"),
            )))
        }
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| LoadError::Other(key_err(path, format!("cannot stat: {e}"))))?;
    check_metadata(path, &meta).map_err(LoadError::Other)?;
    let mut text = String::new();
    (&file)
        .take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| LoadError::Other(key_err(path, format!("cannot read: {e}"))))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(LoadError::Other(key_err(
            path,
            "is too large to be a key file",
        )));
    }
    let private: PrivateKey = text.trim().parse().map_err(|_| {
        LoadError::Other(key_err(
            path,
            "does not hold a biscuit private key (`ed25519-private/<hex>`); restore it from \
             backup, or delete it to create a new key (all outstanding tokens become invalid)",
        ))
    })?;
    Ok(KeyPair::from(&private))
}

/// Refuse anything but a regular file owned by us with no group/other bits.
pub(crate) fn check_metadata(path: &Path, meta: &std::fs::Metadata) -> Result<(), TokenError> {
    if !meta.file_type().is_file() {
        return Err(key_err(
            path,
            "is not a regular file; remove it so a new key can be created",
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(key_err(
            path,
            format!(
                "is owned by uid {} but the broker runs as uid {euid}; a key another user \
                 controls cannot be trusted. Fix with `chown {euid} {}` if the file is \
                 genuinely yours, or delete it",
                meta.uid(),
                path.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(key_err(
            path,
            format!(
                "has mode {mode:04o}, readable or writable by group/others; the key may be \
                 compromised. Fix with `chmod 600 {}` (and consider deleting it to rotate \
                 the key)",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn create_key(path: &Path) -> Result<KeyPair, TokenError> {
    let dir = path
        .parent()
        .ok_or_else(|| key_err(path, "has no parent directory"))?;
    let keypair = KeyPair::new();
    let text = format!("{}\n", keypair.private().to_prefixed_string());
    // tempfile creates with O_EXCL and mode 0600 from the start.
    let mut tmp = tempfile::Builder::new()
        .prefix(".token.key.")
        .tempfile_in(dir)
        .map_err(|e| {
            key_err(
                path,
                format!("cannot create a temporary file in {}: {e}", dir.display()),
            )
        })?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| key_err(path, format!("cannot write the new key: {e}")))?;
    // persist_noclobber links the file into place and fails if a key appeared
    // meanwhile (another broker starting at the same moment): then use that one.
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            return load_key(path).map_err(|e| match e {
                LoadError::Missing => key_err(path, "vanished while being created; retry"),
                LoadError::Other(e) => e,
            });
        }
        Err(e) => {
            return Err(key_err(
                path,
                format!("cannot move the new key into place: {}", e.error),
            ))
        }
    }
    crate::store::sync_dir(dir)?;
    tracing::info!(path = %path.display(), "created a new token root key");
    Ok(keypair)
}
