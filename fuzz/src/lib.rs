//! Shared oracles for the Airlock fuzz targets: reference implementations
//! written independently of the library code they check, so a target can
//! compare the library's answer with an obviously-correct one.

use airlock_core::ApiError;

/// Component-wise "`path` is `root` or beneath it", computed on split
/// components rather than string prefixes. Both must be absolute and
/// normalised (the caller checks).
pub fn covers(root: &str, path: &str) -> bool {
    let comps = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (r, p) = (comps(root), comps(path));
    r.len() <= p.len() && r.iter().zip(&p).all(|(a, b)| a == b)
}

/// Every refusal of untrusted input must be a client error that the front
/// doors can put on the wire: a 4xx status, a message, and a body that
/// serialises and reads back as the same error.
pub fn check_client_error(e: &ApiError) {
    let status = e.code.http_status();
    assert!(
        (400..500).contains(&status),
        "refusal {e:?} maps to HTTP {status}, not 4xx"
    );
    assert!(!e.message.is_empty(), "refusal without a message: {e:?}");
    let body = e.to_body();
    let text = serde_json::to_string(&body).expect("error body serialises");
    let back: airlock_core::error::ErrorEnvelope =
        serde_json::from_str(&text).expect("error body reads back as an envelope");
    assert_eq!(&back.error, e, "error body does not round-trip");
    assert_eq!(
        body["error"]["code"].as_str(),
        Some(e.code.as_str()),
        "wire code differs from ErrorCode::as_str"
    );
}

/// Small vocabulary of path components, so generated paths overlap often
/// enough for prefix bugs (`/a/b` vs `/a/bc`) to show up.
pub const COMPONENTS: &[&str] = &[
    "a",
    "b",
    "ab",
    "a.b",
    "home",
    "u",
    "proj",
    "proj-evil",
    "Users",
    "alice",
    ".git",
    "é",
    "..",
    ".",
    "",
];
