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
