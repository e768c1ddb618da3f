use airlock_core::Verb;
use airlock_token::{Access, TokenAuthority, TokenError};
use proptest::prelude::*;

use crate::common::*;

#[test]
fn grants_are_component_wise() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a/b"])).unwrap();
    for ok in ["/a/b", "/a/b/c", "/a/b/c/d.txt", "/a/b/.hidden"] {
        assert!(
            auth.verify(&t.token, &file_access(Verb::Read, ok)).is_ok(),
            "{ok}"
        );
    }
    for refused in [
        "/a/bc",
        "/a/b-evil",
        "/a/b.txt",
        "/a",
        "/",
        "/a/c",
        "/b",
        "/a/bb/c",
        "/A/b",
    ] {
        let err = auth
            .verify(&t.token, &file_access(Verb::Read, refused))
            .unwrap_err();
        assert!(
            matches!(err, TokenError::Scope { .. }),
            "{refused}: {err:?}"
        );
    }
}

#[test]
fn unnormalised_paths_cannot_climb_out() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a/b"])).unwrap();
    for sneaky in [
        "/a/b/../../etc/passwd",
        "/a/b/./c",
        "/a/b//c",
        "/a/b/",
        "a/b",
        "",
        "/a/b/\0",
    ] {
        let err = auth
            .verify(&t.token, &file_access(Verb::Read, sneaky))
            .unwrap_err();
        assert!(
            matches!(err, TokenError::Scope { .. }),
            "{sneaky:?}: {err:?}"
        );
    }
}

#[test]
fn root_grant_covers_everything_absolute() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::List], &["/"])).unwrap();
    for ok in ["/", "/etc", "/home/u/x"] {
        assert!(
            auth.verify(&t.token, &file_access(Verb::List, ok)).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn several_paths_each_cover_their_own_subtree() {
    let auth = TokenAuthority::ephemeral();
    let t = auth
        .mint(&grant(&[Verb::Read, Verb::Write], &["/p/one", "/q"]))
        .unwrap();
    assert!(auth
        .verify(&t.token, &file_access(Verb::Write, "/p/one/x"))
        .is_ok());
    assert!(auth
        .verify(&t.token, &file_access(Verb::Read, "/q/z"))
        .is_ok());
    assert!(auth
        .verify(&t.token, &file_access(Verb::Read, "/p/onex"))
        .is_err());
    assert!(auth
        .verify(&t.token, &file_access(Verb::Read, "/p"))
        .is_err());
}

/// Independent reference: split into components and compare prefixes.
fn reference_covers(root: &str, path: &str) -> bool {
    let comps = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let (r, p) = (comps(root), comps(path));
    p.len() >= r.len() && p[..r.len()] == r[..]
}

fn abs_path() -> impl Strategy<Value = String> {
    // A tiny alphabet so that equal prefixes, sibling prefixes (`a` vs
    // `ab`) and dots are common.
    prop::collection::vec(
        prop::sample::select(vec!["a", "ab", "b", "a.b", "a-", ".a", "ä"]),
        0..4,
    )
    .prop_map(|cs| format!("/{}", cs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn datalog_path_decision_matches_reference(
        grants in prop::collection::vec(abs_path(), 1..3),
        request in abs_path(),
        attenuated in prop::option::of(prop::collection::vec(abs_path(), 1..3)),
    ) {
        thread_local! {
            static AUTH: TokenAuthority = TokenAuthority::ephemeral();
        }
        AUTH.with(|auth| {
            let g = grant(&[Verb::Read], &grants.iter().map(String::as_str).collect::<Vec<_>>());
            let minted = auth.mint(&g).unwrap();
            let mut token = minted.token;
            let mut expected = grants.iter().any(|r| reference_covers(r, &request));
            if let Some(att) = &attenuated {
                token = airlock_token::attenuate(
                    &token,
                    &auth.public_key_hex(),
                    &airlock_token::Attenuation { paths: Some(att.clone()), ..Default::default() },
                ).unwrap();
                expected &= att.iter().any(|r| reference_covers(r, &request));
            }
            let access = Access { session: SESSION, verb: Verb::Read, path: Some(&request), host: None, command: None, now: now() };
            let got = auth.verify(&token, &access);
            prop_assert_eq!(got.is_ok(), expected, "grants {:?} att {:?} request {:?}: {:?}", grants, attenuated, request, got);
            if !expected {
                prop_assert!(matches!(got, Err(TokenError::Scope { .. })), "{:?}", got);
            }
            Ok(())
        })?;
    }
}
