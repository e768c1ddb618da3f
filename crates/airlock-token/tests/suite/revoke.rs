use airlock_core::{ErrorCode, Verb};
use airlock_token::{attenuate, Attenuation, TokenAuthority, TokenError};

use crate::common::*;

#[test]
fn revoked_by_id_and_persisted_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (token, kept, id) = {
        let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
        let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
        let kept = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
        assert!(auth
            .verify(&t.token, &file_access(Verb::Read, "/a"))
            .is_ok());
        assert!(
            auth.revoke(&t.id).unwrap(),
            "a token this process minted is known"
        );
        let err = auth
            .verify(&t.token, &file_access(Verb::Read, "/a"))
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Revoked { id } if *id == t.id),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::TokenRevoked);
        let listed = auth.list(now());
        assert!(listed.iter().find(|i| i.id == t.id).unwrap().revoked);
        assert!(!listed.iter().find(|i| i.id == kept.id).unwrap().revoked);
        (t.token, kept.token, t.id)
    };
    let meta = std::fs::metadata(dir.path().join(airlock_token::REVOKED_FILE)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
    assert!(matches!(
        auth.verify(&token, &file_access(Verb::Read, "/a")),
        Err(TokenError::Revoked { .. })
    ));
    assert!(
        auth.verify(&kept, &file_access(Verb::Read, "/a")).is_ok(),
        "other tokens survive the restart"
    );
    assert!(
        !auth.revoke(&id).unwrap(),
        "not minted by this process: unknown, still recorded"
    );
    assert!(auth.list(now()).is_empty());
}

#[test]
fn revoking_the_token_revokes_its_attenuations_but_not_the_reverse() {
    let auth = TokenAuthority::ephemeral();
    let t = auth
        .mint(&grant(&[Verb::Read, Verb::Write], &["/a"]))
        .unwrap();
    let narrow = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &Attenuation {
            verbs: Some(vec![Verb::Read]),
            ..Default::default()
        },
    )
    .unwrap();
    let narrower = attenuate(
        &narrow,
        &auth.public_key_hex(),
        &Attenuation {
            paths: Some(vec!["/a/x".into()]),
            ..Default::default()
        },
    )
    .unwrap();

    // Revoke the middle attenuation by its own block id.
    let pk = biscuit_auth::PublicKey::from_bytes_hex(
        &auth.public_key_hex(),
        biscuit_auth::builder::Algorithm::Ed25519,
    )
    .unwrap();
    let ids = biscuit_auth::Biscuit::from_base64(&narrow, pk)
        .unwrap()
        .revocation_identifiers();
    assert_eq!(
        hex::encode(&ids[0]),
        t.id,
        "the token id is the authority block's revocation id"
    );
    let middle = hex::encode(&ids[1]);
    assert!(!auth.revoke(&middle.to_uppercase()).unwrap());
    assert!(matches!(
        auth.verify(&narrow, &file_access(Verb::Read, "/a/x")),
        Err(TokenError::Revoked { .. })
    ));
    assert!(matches!(
        auth.verify(&narrower, &file_access(Verb::Read, "/a/x")),
        Err(TokenError::Revoked { .. })
    ));
    assert!(
        auth.verify(&t.token, &file_access(Verb::Read, "/a/x"))
            .is_ok(),
        "the parent stays valid"
    );

    auth.revoke(&t.id).unwrap();
    assert!(matches!(
        auth.verify(&t.token, &file_access(Verb::Read, "/a/x")),
        Err(TokenError::Revoked { .. })
    ));
}

#[test]
fn revoke_refuses_non_hex_ids() {
    let auth = TokenAuthority::ephemeral();
    for bad in ["", "xyz", "abc", "'; drop", &"ab".repeat(300)] {
        assert!(
            matches!(auth.revoke(bad), Err(TokenError::InvalidInput { .. })),
            "{bad}"
        );
    }
}

#[test]
fn revoke_session_covers_only_that_session_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
        let a = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
        let mut g = grant(&[Verb::Read], &["/a"]);
        g.session = "sess-other".into();
        let b = auth.mint(&g).unwrap();
        auth.mint(&grant(&[Verb::List], &["/a"])).unwrap();
        assert_eq!(auth.revoke_session(SESSION).unwrap(), 2);
        assert_eq!(auth.revoke_session(SESSION).unwrap(), 0, "already revoked");
        assert!(matches!(
            auth.verify(&a.token, &file_access(Verb::Read, "/a")),
            Err(TokenError::Revoked { .. })
        ));
        let other = airlock_token::Access {
            session: "sess-other",
            ..file_access(Verb::Read, "/a")
        };
        assert!(auth.verify(&b.token, &other).is_ok());
        (a, b)
    };
    let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
    assert!(matches!(
        auth.verify(&a.token, &file_access(Verb::Read, "/a")),
        Err(TokenError::Revoked { .. })
    ));
    let other = airlock_token::Access {
        session: "sess-other",
        ..file_access(Verb::Read, "/a")
    };
    assert!(auth.verify(&b.token, &other).is_ok());
}

#[test]
fn revoke_all_refuses_earlier_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = {
        let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
        let old = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
        let mut g = grant(&[Verb::Read], &["/a"]);
        g.session = "s2".into();
        auth.mint(&g).unwrap();
        assert_eq!(auth.revoke_all().unwrap(), 2);
        assert!(matches!(
            auth.verify(&old.token, &file_access(Verb::Read, "/a")),
            Err(TokenError::Revoked { .. })
        ));
        // Minted in the same second as the revoke-all, and still valid.
        let new = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
        assert!(auth
            .verify(&new.token, &file_access(Verb::Read, "/a"))
            .is_ok());
        let listed = auth.list(now());
        assert_eq!(listed.iter().filter(|i| i.revoked).count(), 2);
        assert!(!listed.iter().find(|i| i.id == new.id).unwrap().revoked);
        (old, new)
    };
    let auth = TokenAuthority::load_or_create(dir.path()).unwrap();
    assert!(matches!(
        auth.verify(&old.token, &file_access(Verb::Read, "/a")),
        Err(TokenError::Revoked { .. })
    ));
    assert!(auth
        .verify(&new.token, &file_access(Verb::Read, "/a"))
        .is_ok());
    // A second revoke-all right away covers the token minted after the first.
    assert_eq!(auth.revoke_all().unwrap(), 0, "this process minted nothing");
    assert!(matches!(
        auth.verify(&new.token, &file_access(Verb::Read, "/a")),
        Err(TokenError::Revoked { .. })
    ));
}

#[test]
fn revoked_wins_over_expired() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    auth.revoke(&t.id).unwrap();
    let mut access = file_access(Verb::Read, "/a");
    access.now = t.expires_at + 100;
    assert!(matches!(
        auth.verify(&t.token, &access),
        Err(TokenError::Revoked { .. })
    ));
}

#[test]
fn corrupt_revocation_list_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    drop(TokenAuthority::load_or_create(dir.path()).unwrap());
    let path = dir.path().join(airlock_token::REVOKED_FILE);
    let mut opts = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(
        &mut opts.write(true).create_new(true).open(&path).unwrap(),
        b"{not json",
    )
    .unwrap();
    let err = TokenAuthority::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TokenError::Io(_)), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn remembered_tokens_are_listed_and_revocable_by_session() {
    let auth = TokenAuthority::ephemeral();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let info = airlock_token::TokenInfo {
        id: "ab".repeat(32),
        request_id: "r-1".into(),
        session: "s-old".into(),
        verbs: vec![airlock_core::Verb::Read],
        paths: vec!["/home/u".into()],
        hosts: vec![],
        commands: vec![],
        issued_at: now - 10,
        expires_at: now + 100,
        revoked: false,
    };
    assert!(auth.remember(info.clone()));
    assert!(!auth.remember(info.clone()), "idempotent");
    assert!(
        !auth.remember(airlock_token::TokenInfo {
            id: "cd".repeat(32),
            expires_at: now - 1,
            ..info.clone()
        }),
        "expired ones are ignored"
    );
    assert_eq!(auth.list(now).len(), 1);
    assert_eq!(auth.revoke_session("s-old").unwrap(), 1);
    assert!(auth.list(now)[0].revoked);
}
