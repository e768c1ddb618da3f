//! `airlock_core::api::decode` for every route on arbitrary bodies.
//!
//! Input: the first byte selects the route (`Route::ALL[b & 7]`; bit 3 adds
//! a path allowlist to the limits), the rest is the request body.
//!
//! Invariants:
//! - decode returns (never panics); an error is a 4xx `ApiError` whose JSON
//!   body serialises and reads back;
//! - a decoded request is the variant of its route, every path in it passes
//!   `check_abs_normalised`, and the other documented checks hold (mode is
//!   a permission mode, argv names a program, env is NAME=VALUE, no NUL);
//! - serialising the decoded request and decoding that again gives the same
//!   request (what a front door logs or forwards means the same thing).
#![no_main]

use airlock_core::api::{decode, ApiRequest, Route};
use airlock_core::path::check_abs_normalised;
use airlock_core::ManifestLimits;
use airlock_fuzz::{check_client_error, covers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let route = Route::ALL[usize::from(sel & 7)];
    let limits = if sel & 8 != 0 {
        ManifestLimits {
            path_allowlist: vec!["/home/u/proj".into(), "/Users/alice".into()],
            ..ManifestLimits::default()
        }
    } else {
        ManifestLimits::default()
    };

    let req = match decode(route, body, &limits) {
        Ok(r) => r,
        Err(e) => {
            check_client_error(&e);
            return;
        }
    };

    let path_ok = |what: &str, p: &str| {
        assert_eq!(
            check_abs_normalised(p),
            Ok(()),
            "{route:?}: decoded {what} {p:?}"
        );
    };
    let wire = match (&route, &req) {
        (Route::Requests, ApiRequest::Manifest(m)) => {
            for p in &m.paths {
                path_ok("manifest path", p);
                if !limits.path_allowlist.is_empty() {
                    assert!(
                        limits.path_allowlist.iter().any(|r| covers(r, p)),
                        "{p:?} outside allowlist"
                    );
                }
            }
            assert!((1..=limits.max_duration_seconds).contains(&m.duration_seconds));
            serde_json::to_vec(m)
        }
        (Route::FsRead, ApiRequest::Read(r)) => {
            path_ok("path", &r.path);
            serde_json::to_vec(r)
        }
        (Route::FsList, ApiRequest::List(r))
        | (Route::FsStat, ApiRequest::Stat(r))
        | (Route::FsDelete, ApiRequest::Delete(r))
        | (Route::FsMkdir, ApiRequest::Mkdir(r)) => {
            path_ok("path", &r.path);
            serde_json::to_vec(r)
        }
        (Route::FsWrite, ApiRequest::Write(r)) => {
            path_ok("path", &r.path);
            if let Some(m) = r.mode {
                assert!(m <= 0o7777, "mode {m:#o} accepted");
            }
            serde_json::to_vec(r)
        }
        (Route::FsRename, ApiRequest::Rename(r)) => {
            path_ok("from", &r.from);
            path_ok("to", &r.to);
            serde_json::to_vec(r)
        }
        (Route::Exec, ApiRequest::Exec(r)) => {
            path_ok("cwd", &r.cwd);
            assert!(
                r.argv.first().is_some_and(|a| !a.is_empty()),
                "exec without a program"
            );
            assert!(!r.argv.iter().any(|a| a.contains('\0')), "NUL in argv");
            for e in &r.env {
                let (name, _) = e.split_once('=').expect("env entry without '='");
                assert!(
                    !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                );
                assert!(!e.contains('\0'), "NUL in env");
            }
            serde_json::to_vec(r)
        }
        (route, req) => panic!("{route:?} decoded as {req:?}"),
    }
    .expect("decoded request serialises");

    match decode(route, &wire, &limits) {
        Ok(again) => assert_eq!(again, req, "serialise -> decode changed the request"),
        Err(e) => panic!(
            "{route:?}: serialised request {} does not decode: {e:?}",
            String::from_utf8_lossy(&wire)
        ),
    }
});
