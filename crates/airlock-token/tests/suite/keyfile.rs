use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use airlock_core::Verb;
use airlock_token::{TokenAuthority, TokenError, KEY_FILE};

use crate::common::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn key_is_created_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let a = TokenAuthority::load_or_create(&state).unwrap();
    let key = state.join(KEY_FILE);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&state), 0o700, "a state dir we create is private");
    let t = a.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let b = TokenAuthority::load_or_create(&state).unwrap();
    assert_eq!(a.public_key_hex(), b.public_key_hex());
    assert!(
        b.verify(&t.token, &file_access(Verb::Read, "/a")).is_ok(),
        "tokens survive a restart"
    );
    // Only the key (and no stray temporary file) is left behind.
    let names: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
}

#[test]
fn group_or_world_readable_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(TokenAuthority::load_or_create(dir.path()).unwrap());
    let key = dir.path().join(KEY_FILE);
    for bad in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, TokenError::Key { .. }), "{bad:o}: {err:?}");
        assert!(
            err.to_string().contains("chmod 600"),
            "says how to fix: {err}"
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(
        TokenAuthority::load_or_create(dir.path()).is_ok(),
        "0400 is fine"
    );
}

#[test]
fn symlinked_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    drop(TokenAuthority::load_or_create(elsewhere.path()).unwrap());
    std::os::unix::fs::symlink(elsewhere.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();
    let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TokenError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn non_regular_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(KEY_FILE)).unwrap();
    let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TokenError::Key { .. }), "{err:?}");
}

#[test]
fn key_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(TokenAuthority::load_or_create(dir.path()).unwrap());
    let key = dir.path().join(KEY_FILE);
    let me = std::fs::metadata(&key).unwrap().uid();
    let other = if me == 65534 { 65533 } else { 65534 };
    // Only root can give a file away; as an ordinary user this setup step
    // is impossible, and so is the attack it simulates.
    if std::os::unix::fs::chown(&key, Some(other), None).is_err() {
        eprintln!("skipping: cannot chown as uid {me}");
        return;
    }
    let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TokenError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("owned by uid"), "{err}");
}

#[test]
fn garbage_key_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join(KEY_FILE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .unwrap();
    std::io::Write::write_all(&mut f, b"not a key\n").unwrap();
    let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TokenError::Key { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"not a key\n",
        "an unreadable key is never overwritten"
    );
}

#[test]
fn world_writable_revocation_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    auth.revoke(&t.id).unwrap();
    drop(auth);
    let list = dir.path().join(airlock_token::REVOKED_FILE);
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(TokenAuthority::load_or_create(dir.path()).is_err());
}
