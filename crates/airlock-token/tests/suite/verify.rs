use airlock_core::{ErrorCode, Verb};
use airlock_token::{Access, TokenAuthority, TokenError};

use crate::common::*;

#[test]
fn every_file_verb_is_granted_alone() {
    let auth = TokenAuthority::ephemeral();
    let file_verbs = [
        Verb::Read,
        Verb::List,
        Verb::Stat,
        Verb::Write,
        Verb::Delete,
    ];
    for verb in file_verbs {
        let t = auth.mint(&grant(&[verb], &["/home/u/proj"])).unwrap();
        let cap = auth
            .verify(&t.token, &file_access(verb, "/home/u/proj/a.txt"))
            .unwrap();
        assert_eq!(cap.verb(), verb);
        assert_eq!(cap.token_id(), t.id);
        assert_eq!(cap.request_id(), "req-1");
        assert_eq!(cap.session(), SESSION);
        assert_eq!(cap.expires_at(), t.expires_at);
        for other in file_verbs.into_iter().filter(|v| *v != verb) {
            let err = auth
                .verify(&t.token, &file_access(other, "/home/u/proj/a.txt"))
                .unwrap_err();
            assert!(
                matches!(err, TokenError::Scope { .. }),
                "{verb:?} token used for {other:?}: {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::TokenScope);
        }
    }
}

#[test]
fn connect_needs_a_granted_host() {
    let auth = TokenAuthority::ephemeral();
    let mut g = grant(&[Verb::Connect], &[]);
    g.hosts = vec!["example.org:443".into()];
    let t = auth.mint(&g).unwrap();
    let ok = Access {
        session: SESSION,
        verb: Verb::Connect,
        path: None,
        host: Some("example.org:443"),
        command: None,
        now: now(),
    };
    assert_eq!(auth.verify(&t.token, &ok).unwrap().verb(), Verb::Connect);
    let other = Access {
        host: Some("evil.org:443"),
        ..ok
    };
    assert!(matches!(
        auth.verify(&t.token, &other),
        Err(TokenError::Scope { .. })
    ));
    let no_host = Access { host: None, ..ok };
    assert!(matches!(
        auth.verify(&t.token, &no_host),
        Err(TokenError::Scope { .. })
    ));
    let read = Access {
        verb: Verb::Read,
        path: Some("/x"),
        ..ok
    };
    assert!(matches!(
        auth.verify(&t.token, &read),
        Err(TokenError::Scope { .. })
    ));
}

#[test]
fn exec_needs_granted_command_and_cwd() {
    let auth = TokenAuthority::ephemeral();
    let mut g = grant(&[Verb::Exec], &["/home/u/proj"]);
    g.commands = vec!["cargo".into(), "/usr/bin/make".into()];
    let t = auth.mint(&g).unwrap();
    let ok = Access {
        session: SESSION,
        verb: Verb::Exec,
        path: Some("/home/u/proj"),
        host: None,
        command: Some("cargo"),
        now: now(),
    };
    assert!(auth.verify(&t.token, &ok).is_ok());
    assert!(auth
        .verify(
            &t.token,
            &Access {
                command: Some("/usr/bin/make"),
                path: None,
                ..ok
            }
        )
        .is_ok());
    assert!(matches!(
        auth.verify(
            &t.token,
            &Access {
                command: Some("rm"),
                ..ok
            }
        ),
        Err(TokenError::Scope { .. })
    ));
    assert!(matches!(
        auth.verify(
            &t.token,
            &Access {
                command: None,
                ..ok
            }
        ),
        Err(TokenError::Scope { .. })
    ));
    assert!(matches!(
        auth.verify(
            &t.token,
            &Access {
                path: Some("/home/u/other"),
                ..ok
            }
        ),
        Err(TokenError::Scope { .. })
    ));
    // Exec with network: the host must be granted too, and none was.
    assert!(matches!(
        auth.verify(
            &t.token,
            &Access {
                host: Some("example.org"),
                ..ok
            }
        ),
        Err(TokenError::Scope { .. })
    ));
}

#[test]
fn expired_token_reports_expiry() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let mut access = file_access(Verb::Read, "/a/x");
    access.now = t.expires_at;
    assert!(
        auth.verify(&t.token, &access).is_ok(),
        "valid up to and including expires_at"
    );
    access.now = t.expires_at + 1;
    let err = auth.verify(&t.token, &access).unwrap_err();
    assert!(
        matches!(err, TokenError::Expired { expired_at } if expired_at == t.expires_at),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::TokenExpired);
}

#[test]
fn expired_wins_over_wrong_session_and_scope() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let access = Access {
        session: "other",
        verb: Verb::Write,
        path: Some("/b"),
        host: None,
        command: None,
        now: t.expires_at + 10,
    };
    assert!(matches!(
        auth.verify(&t.token, &access),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn wrong_session_is_refused() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let access = Access {
        session: "sess-2",
        ..file_access(Verb::Read, "/a")
    };
    let err = auth.verify(&t.token, &access).unwrap_err();
    assert!(matches!(err, TokenError::WrongSession), "{err:?}");
    assert_eq!(err.code(), ErrorCode::TokenWrongSession);
    // A session that is a prefix/extension of the real one is no better.
    let access = Access {
        session: "sess-1 ",
        ..file_access(Verb::Read, "/a")
    };
    assert!(matches!(
        auth.verify(&t.token, &access),
        Err(TokenError::WrongSession)
    ));
}

#[test]
fn token_of_another_authority_is_invalid() {
    let ours = TokenAuthority::ephemeral();
    let theirs = TokenAuthority::ephemeral();
    let t = theirs.mint(&grant(&[Verb::Read], &["/"])).unwrap();
    let err = ours
        .verify(&t.token, &file_access(Verb::Read, "/etc/passwd"))
        .unwrap_err();
    assert!(matches!(err, TokenError::Invalid), "{err:?}");
    assert_eq!(err.code(), ErrorCode::TokenInvalid);
    assert!(ours.parse_untrusted(&t.token).is_err());
    assert!(theirs.parse_untrusted(&t.token).is_ok());
}

#[test]
fn mint_refuses_bad_grants() {
    let auth = TokenAuthority::ephemeral();
    for bad in [
        grant(&[], &["/a"]),
        grant(&[Verb::Read], &["relative"]),
        grant(&[Verb::Read], &["/a/../etc"]),
        grant(&[Verb::Read], &["/a/"]),
        grant(&[Verb::Read], &["/a//b"]),
        grant(&[Verb::Read], &["/a\0b"]),
        {
            let mut g = grant(&[Verb::Read], &["/a"]);
            g.session.clear();
            g
        },
        {
            let mut g = grant(&[Verb::Read], &["/a"]);
            g.request_id.clear();
            g
        },
        {
            let mut g = grant(&[Verb::Read], &["/a"]);
            g.expires_at = u64::MAX;
            g
        },
    ] {
        let err = auth.mint(&bad).unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidInput { .. }),
            "{bad:?}: {err:?}"
        );
    }
    // A grant too large for a token is refused at mint, not at first use.
    let long: Vec<String> = (0..200)
        .map(|i| format!("/{}/{i}", "x".repeat(1000)))
        .collect();
    let mut g = grant(&[Verb::Read], &[]);
    g.paths = long;
    assert!(matches!(
        auth.mint(&g),
        Err(TokenError::InvalidInput { .. })
    ));
}

#[test]
fn quotes_in_labels_cannot_inject_datalog() {
    // Values go into the token as terms, never as source text.
    let auth = TokenAuthority::ephemeral();
    let mut g = grant(&[Verb::Read], &["/a\"); right(\"/\", \"write"]);
    g.session = "s\"); verb(\"write".into();
    let t = auth.mint(&g).unwrap();
    let access = Access {
        session: "s\"); verb(\"write",
        verb: Verb::Write,
        path: Some("/etc"),
        host: None,
        command: None,
        now: now(),
    };
    assert!(matches!(
        auth.verify(&t.token, &access),
        Err(TokenError::Scope { .. })
    ));
    let read = Access {
        verb: Verb::Read,
        path: Some("/a\"); right(\"/\", \"write/x"),
        ..access
    };
    assert!(auth.verify(&t.token, &read).is_ok());
}

#[test]
fn list_shows_live_tokens_only() {
    let auth = TokenAuthority::ephemeral();
    let a = auth
        .mint(&grant(&[Verb::Read, Verb::List], &["/a"]))
        .unwrap();
    let mut short = grant(&[Verb::Read], &["/b"]);
    short.expires_at = now() + 5;
    let b = auth.mint(&short).unwrap();
    let listed = auth.list(now());
    assert_eq!(listed.len(), 2);
    let ia = listed.iter().find(|i| i.id == a.id).unwrap();
    assert_eq!(ia.verbs, vec![Verb::Read, Verb::List]);
    assert_eq!(ia.paths, vec!["/a".to_string()]);
    assert!(!ia.revoked);
    let later = auth.list(now() + 60);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].id, a.id);
    assert!(later.iter().all(|i| i.id != b.id));
}

#[test]
fn concurrent_verifiers_see_a_revocation_once_it_returns() {
    let auth = std::sync::Arc::new(TokenAuthority::ephemeral());
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (auth, token, revoked) = (auth.clone(), t.token.clone(), revoked.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let was_revoked = revoked.load(std::sync::atomic::Ordering::SeqCst);
                    let r = auth.verify(&token, &file_access(Verb::Read, "/a/f"));
                    if was_revoked {
                        assert!(matches!(r, Err(TokenError::Revoked { .. })), "{r:?}");
                    } else {
                        assert!(
                            matches!(r, Ok(_) | Err(TokenError::Revoked { .. })),
                            "{r:?}"
                        );
                    }
                }
            })
        })
        .collect();
    std::thread::yield_now();
    auth.revoke(&t.id).unwrap();
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    assert!(matches!(
        auth.verify(&t.token, &file_access(Verb::Read, "/a/f")),
        Err(TokenError::Revoked { .. })
    ));
}
