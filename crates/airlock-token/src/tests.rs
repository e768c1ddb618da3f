//! Unit tests that need the crate's internals.

use super::*;
use crate::tests_support::*;

#[test]
fn authority_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TokenAuthority>();
    assert_send_sync::<Capability>();
}

#[test]
fn unlabelled_expiry_check_in_an_appended_block_reports_expired() {
    // A holder using another biscuit tool adds a bare time check with no
    // Airlock context; it is still told apart from a scope refusal.
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant()).unwrap();
    let b = Biscuit::from_base64(&t.token, auth.public).unwrap();
    let cut = now_unix() + 5;
    let (src, params) = scope::expiry_check_source(cut);
    let block = BlockBuilder::new()
        .code_with_params(src, params, HashMap::new())
        .unwrap();
    let token = b.append(block).unwrap().to_base64().unwrap();
    let parsed = auth.parse_cached(&token).unwrap();
    assert_eq!(
        parsed.attenuated_expiry, None,
        "no label: only the Datalog knows"
    );
    let mut access = read_access();
    assert!(auth.verify(&token, &access).is_ok());
    access.now = cut + 1;
    assert!(matches!(
        auth.verify(&token, &access),
        Err(TokenError::Expired { .. })
    ));
    access.path = Some("/elsewhere");
    access.now = cut - 1;
    assert!(matches!(
        auth.verify(&token, &access),
        Err(TokenError::Scope { .. })
    ));
}

#[test]
fn cache_is_bounded_and_keyed_by_the_whole_token() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant()).unwrap();
    assert!(
        lock(&auth.cache).contains(&cache_key(&t.token)),
        "mint warms the cache"
    );
    for _ in 0..(CACHE_CAPACITY + 10) {
        auth.mint(&grant()).unwrap();
    }
    assert_eq!(lock(&auth.cache).len(), CACHE_CAPACITY);
    assert!(
        !lock(&auth.cache).contains(&cache_key(&t.token)),
        "oldest entry evicted"
    );
    // Evicted tokens parse again and still verify.
    assert!(auth.verify(&t.token, &read_access()).is_ok());
    assert!(lock(&auth.cache).contains(&cache_key(&t.token)));
}

#[test]
fn failed_parses_are_not_cached() {
    let auth = TokenAuthority::ephemeral();
    let before = lock(&auth.cache).len();
    assert!(auth.verify("AAAA", &read_access()).is_err());
    assert_eq!(lock(&auth.cache).len(), before);
}

/// The comparison that skips the Datalog run for an unattenuated token
/// minted here allows exactly what the Datalog allows, over grants and
/// accesses built to probe each condition (verb, session, path by whole
/// components, host, command, the expiry second); and it is never used for
/// a token that is attenuated or was minted elsewhere.
#[test]
fn minted_scope_allows_exactly_what_the_datalog_allows() {
    let auth = TokenAuthority::ephemeral();
    let exp = crate::now_unix() + 3600;
    let verb_sets: [&[Verb]; 3] = [
        &[Verb::Read],
        &[Verb::Read, Verb::List, Verb::Write],
        &[Verb::Exec, Verb::Connect],
    ];
    let path_sets: [&[&str]; 4] = [&[], &["/"], &["/a"], &["/a/b", "/c", "/d e/ü"]];
    let paths = [
        None,
        Some("/"),
        Some("/a"),
        Some("/a/"),
        Some("/ab"),
        Some("/a/b"),
        Some("/a/b/c"),
        Some("/a/bc"),
        Some("/c"),
        Some("/c/d"),
        Some("/cd"),
        Some("/d e/ü/x"),
    ];
    let mut compared = 0;
    for verbs in verb_sets {
        for grant_paths in path_sets {
            for (hosts, commands) in [
                (vec![], vec![]),
                (vec!["h1".to_string()], vec!["c1".to_string()]),
            ] {
                let g = Grant {
                    request_id: "r".into(),
                    session: "s".into(),
                    verbs: verbs.to_vec(),
                    paths: grant_paths.iter().map(|p| p.to_string()).collect(),
                    hosts,
                    commands,
                    expires_at: exp,
                };
                let t = auth.mint(&g).unwrap();
                let minted = auth.parse_cached(&t.token).unwrap();
                lock(&auth.cache).clear();
                let reparsed = auth.parse_cached(&t.token).unwrap();
                for parsed in [&minted, &reparsed] {
                    let m = parsed
                        .minted
                        .as_ref()
                        .expect("an unattenuated token minted here");
                    for verb in [
                        Verb::Read,
                        Verb::List,
                        Verb::Write,
                        Verb::Exec,
                        Verb::Connect,
                    ] {
                        for session in ["s", "t"] {
                            for path in paths {
                                for host in [None, Some("h1"), Some("h2")] {
                                    for command in [None, Some("c1"), Some("c2")] {
                                        for now in [exp - 1, exp, exp + 1] {
                                            let a = Access {
                                                session,
                                                verb,
                                                path,
                                                host,
                                                command,
                                                now,
                                            };
                                            let datalog =
                                                auth.authorize(&parsed.biscuit, &a, now).is_ok();
                                            assert_eq!(
                                                minted_allows(m, &a),
                                                datalog,
                                                "{g:?} {a:?}"
                                            );
                                            compared += 1;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 100_000, "{compared}");

    // Attenuated: the Datalog decides.
    let t = auth.mint(&grant()).unwrap();
    let narrowed = attenuate(
        &t.token,
        &auth.public_key_hex(),
        &Attenuation {
            paths: Some(vec!["/a/only".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(auth.parse_cached(&narrowed).unwrap().minted.is_none());
    assert!(
        auth.verify(&narrowed, &read_access()).is_err(),
        "/a/f is outside the attenuation"
    );
    // Minted by another authority over the same key: no record here.
    let key_hex = auth.keypair.private().to_bytes_hex();
    let other = TokenAuthority::with_key(
        KeyPair::from(
            &biscuit_auth::PrivateKey::from_bytes_hex(&key_hex, biscuit_auth::Algorithm::Ed25519)
                .unwrap(),
        ),
        None,
        Revocations::new(),
    );
    let t2 = other.mint(&grant()).unwrap();
    // What the broker rebuilds from its audit log at start, here claiming
    // more than the token says: it must not widen the signed grant.
    let mut claimed = other
        .list(crate::now_unix())
        .into_iter()
        .find(|i| i.id == t2.id)
        .unwrap();
    claimed.paths = vec!["/".into()];
    assert!(auth.remember(claimed));
    let p2 = auth.parse_cached(&t2.token).unwrap();
    assert!(p2.minted.is_none());
    assert!(auth.verify(&t2.token, &read_access()).is_ok());
    let outside = Access {
        path: Some("/etc/passwd"),
        ..read_access()
    };
    assert!(matches!(
        auth.verify(&t2.token, &outside),
        Err(TokenError::Scope { .. })
    ));
}
