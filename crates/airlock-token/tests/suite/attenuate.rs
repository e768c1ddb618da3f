use airlock_core::Verb;
use airlock_token::{attenuate, Access, Attenuation, TokenAuthority, TokenError};

use crate::common::*;

fn att(paths: Option<&[&str]>, verbs: Option<&[Verb]>, expires_at: Option<u64>) -> Attenuation {
    Attenuation {
        paths: paths.map(|p| p.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.map(<[Verb]>::to_vec),
        expires_at,
    }
}

#[test]
fn narrower_paths_are_honoured() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/home/u"])).unwrap();
    let a = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &att(Some(&["/home/u/proj"]), None, None),
    )
    .unwrap();
    assert!(auth
        .verify(&a, &file_access(Verb::Read, "/home/u/proj/src/x.rs"))
        .is_ok());
    for refused in [
        "/home/u/other",
        "/home/u",
        "/home/u/proj-evil",
        "/home/u/projx/y",
    ] {
        let err = auth
            .verify(&a, &file_access(Verb::Read, refused))
            .unwrap_err();
        assert!(
            matches!(err, TokenError::Scope { .. }),
            "{refused}: {err:?}"
        );
    }
    // The original is untouched.
    assert!(auth
        .verify(&t.token, &file_access(Verb::Read, "/home/u/other"))
        .is_ok());
    // The capability still names the original token.
    assert_eq!(
        auth.verify(&a, &file_access(Verb::Read, "/home/u/proj"))
            .unwrap()
            .token_id(),
        t.id
    );
}

#[test]
fn narrower_verbs_are_honoured() {
    let auth = TokenAuthority::ephemeral();
    let t = auth
        .mint(&grant(&[Verb::Read, Verb::Write, Verb::Delete], &["/a"]))
        .unwrap();
    let a = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &att(None, Some(&[Verb::Read]), None),
    )
    .unwrap();
    assert!(auth.verify(&a, &file_access(Verb::Read, "/a/f")).is_ok());
    assert!(matches!(
        auth.verify(&a, &file_access(Verb::Write, "/a/f")),
        Err(TokenError::Scope { .. })
    ));
    assert!(matches!(
        auth.verify(&a, &file_access(Verb::Delete, "/a/f")),
        Err(TokenError::Scope { .. })
    ));
}

#[test]
fn earlier_expiry_is_honoured_and_reported_as_expiry() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let cut = now() + 10;
    let a = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &att(None, None, Some(cut)),
    )
    .unwrap();
    let mut access = file_access(Verb::Read, "/a");
    assert_eq!(auth.verify(&a, &access).unwrap().expires_at(), cut);
    access.now = cut + 1;
    let err = auth.verify(&a, &access).unwrap_err();
    assert!(
        matches!(err, TokenError::Expired { expired_at } if expired_at == cut),
        "{err:?}"
    );
    assert!(
        auth.verify(&t.token, &access).is_ok(),
        "the original keeps its own expiry"
    );
    // Expiry is reported before the session mismatch.
    let other = Access {
        session: "x",
        ..access
    };
    assert!(matches!(
        auth.verify(&a, &other),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn attenuation_cannot_widen() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let far = t.expires_at + 100_000;
    let wide = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &att(Some(&["/"]), Some(&Verb::ALL), Some(far)),
    )
    .unwrap();
    assert!(auth.verify(&wide, &file_access(Verb::Read, "/a/x")).is_ok());
    assert!(matches!(
        auth.verify(&wide, &file_access(Verb::Read, "/b")),
        Err(TokenError::Scope { .. })
    ));
    assert!(matches!(
        auth.verify(&wide, &file_access(Verb::Write, "/a/x")),
        Err(TokenError::Scope { .. })
    ));
    let mut late = file_access(Verb::Read, "/a/x");
    late.now = t.expires_at + 1;
    assert!(matches!(
        auth.verify(&wide, &late),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn chained_attenuations_intersect() {
    let auth = TokenAuthority::ephemeral();
    let t = auth
        .mint(&grant(&[Verb::Read, Verb::List], &["/a", "/b"]))
        .unwrap();
    let pk = auth.public_key_hex();
    let one = attenuate(&t.token, &pk, &att(Some(&["/a"]), None, None)).unwrap();
    // The second holder tries to get /b back; it cannot.
    let two = attenuate(
        &one,
        &pk,
        &att(Some(&["/b", "/a/x"]), Some(&[Verb::List]), None),
    )
    .unwrap();
    assert!(auth
        .verify(&two, &file_access(Verb::List, "/a/x/y"))
        .is_ok());
    assert!(auth.verify(&two, &file_access(Verb::List, "/b")).is_err());
    assert!(auth.verify(&two, &file_access(Verb::List, "/a/z")).is_err());
    assert!(auth.verify(&two, &file_access(Verb::Read, "/a/x")).is_err());
}

#[test]
fn path_narrowing_refuses_pathless_accesses() {
    let auth = TokenAuthority::ephemeral();
    let mut g = grant(&[Verb::Connect], &[]);
    g.hosts = vec!["h:1".into()];
    let t = auth.mint(&g).unwrap();
    let a = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &att(Some(&["/a"]), None, None),
    )
    .unwrap();
    let access = Access {
        session: SESSION,
        verb: Verb::Connect,
        path: None,
        host: Some("h:1"),
        command: None,
        now: now(),
    };
    assert!(auth.verify(&t.token, &access).is_ok());
    assert!(matches!(
        auth.verify(&a, &access),
        Err(TokenError::Scope { .. })
    ));
}

#[test]
fn attenuate_checks_its_inputs() {
    let auth = TokenAuthority::ephemeral();
    let other = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let pk = auth.public_key_hex();
    assert!(matches!(
        attenuate(&t.token, &pk, &Attenuation::default()),
        Err(TokenError::InvalidInput { .. })
    ));
    assert!(matches!(
        attenuate(&t.token, &pk, &att(Some(&[]), None, None)),
        Err(TokenError::InvalidInput { .. })
    ));
    assert!(matches!(
        attenuate(&t.token, &pk, &att(None, Some(&[]), None)),
        Err(TokenError::InvalidInput { .. })
    ));
    assert!(matches!(
        attenuate(&t.token, &pk, &att(Some(&["/a/../b"]), None, None)),
        Err(TokenError::InvalidInput { .. })
    ));
    assert!(matches!(
        attenuate(&t.token, "zz", &att(None, None, Some(1))),
        Err(TokenError::InvalidInput { .. })
    ));
    // Wrong root key: refused rather than carried forward.
    assert!(matches!(
        attenuate(&t.token, &other.public_key_hex(), &att(None, None, Some(1))),
        Err(TokenError::Invalid)
    ));
    assert!(matches!(
        attenuate("garbage", &pk, &att(None, None, Some(1))),
        Err(TokenError::Invalid)
    ));
    // The prefixed form of the key is accepted too.
    assert!(attenuate(
        &t.token,
        &format!("ed25519/{pk}"),
        &att(None, None, Some(1))
    )
    .is_ok());
}

#[test]
fn grant_root_comes_from_the_authority_block_only() {
    let auth = TokenAuthority::ephemeral();
    let t = auth
        .mint(&grant(&[Verb::Read], &["/home/u", "/home/u/proj"]))
        .unwrap();
    // The minted token is served from the cache warmed at mint time; the
    // attenuated one below is parsed afresh and its root read from the token.
    let cap = auth
        .verify(&t.token, &file_access(Verb::Read, "/home/u/proj/a.rs"))
        .unwrap();
    assert_eq!(cap.grant_root(), Some("/home/u/proj"));
    let cap = auth
        .verify(&t.token, &file_access(Verb::Read, "/home/u/notes.txt"))
        .unwrap();
    assert_eq!(cap.grant_root(), Some("/home/u"));
    // An attenuation narrows the access but cannot move the root it is
    // resolved beneath to a path the authority never granted.
    let a = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &att(Some(&["/home/u/proj/src"]), None, None),
    )
    .unwrap();
    let cap = auth
        .verify(&a, &file_access(Verb::Read, "/home/u/proj/src/x.rs"))
        .unwrap();
    assert_eq!(cap.grant_root(), Some("/home/u/proj"));
}
