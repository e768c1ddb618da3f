//! Attacks on the token itself: tampering, forgery, garbage, oversize,
//! widening blocks and Datalog built to burn CPU.

use airlock_core::Verb;
use airlock_token::{TokenAuthority, TokenError, MAX_TOKEN_LEN};
use biscuit_auth::builder::{Algorithm, BlockBuilder};
use biscuit_auth::{Biscuit, PublicKey};
use proptest::prelude::*;

use crate::common::*;

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| B64.iter().position(|&x| x == c).unwrap() as u32;
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

fn b64_encode(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let mut n = 0u32;
        for (i, &x) in chunk.iter().enumerate() {
            n |= u32::from(x) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

fn root_key(auth: &TokenAuthority) -> PublicKey {
    PublicKey::from_bytes_hex(&auth.public_key_hex(), Algorithm::Ed25519).unwrap()
}

#[test]
fn codec_round_trips() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    assert_eq!(b64_encode(&b64_decode(&t.token)), t.token);
}

#[test]
fn every_single_byte_flip_is_invalid() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let bytes = b64_decode(&t.token);
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let forged = b64_encode(&b);
            let r = auth.verify(&forged, &file_access(Verb::Read, "/a"));
            assert!(
                matches!(r, Err(TokenError::Invalid)),
                "byte {i} ^ {mask:#x}: {r:?}"
            );
        }
    }
}

#[test]
fn every_base64_character_change_is_invalid() {
    // Includes changes that decode to the same signed content in another
    // protobuf spelling (e.g. a default field renumbered to an unknown
    // one): only the canonical encoding is accepted.
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let chars: Vec<u8> = t.token.bytes().collect();
    for i in 0..chars.len() {
        let mut c = chars.clone();
        c[i] = if c[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(c).unwrap();
        let r = auth.verify(&forged, &file_access(Verb::Read, "/a"));
        assert!(matches!(r, Err(TokenError::Invalid)), "char {i}: {r:?}");
    }
    // Truncation and extension too.
    for cut in [1, 4, 10, chars.len() / 2] {
        let r = auth.verify(
            &t.token[..t.token.len() - cut],
            &file_access(Verb::Read, "/a"),
        );
        assert!(matches!(r, Err(TokenError::Invalid)), "cut {cut}: {r:?}");
    }
    let r = auth.verify(&format!("{}AAAA", t.token), &file_access(Verb::Read, "/a"));
    assert!(matches!(r, Err(TokenError::Invalid)), "{r:?}");
}

#[test]
fn garbage_and_oversized_input_is_invalid() {
    let auth = TokenAuthority::ephemeral();
    let big = "A".repeat(MAX_TOKEN_LEN + 1);
    for junk in [
        "",
        " ",
        "not a token",
        "====",
        "\0\0\0",
        "😀😀",
        "AAAA",
        &big,
    ] {
        assert!(
            matches!(
                auth.verify(junk, &file_access(Verb::Read, "/a")),
                Err(TokenError::Invalid)
            ),
            "{junk:.20}"
        );
        assert!(matches!(
            auth.parse_untrusted(junk),
            Err(TokenError::Invalid)
        ));
        assert!(matches!(
            airlock_token::parse_untrusted(junk),
            Err(TokenError::Invalid)
        ));
    }
    // A real token padded past the limit is refused before parsing.
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let padded = format!("{}{}", t.token, " ".repeat(MAX_TOKEN_LEN));
    assert!(matches!(
        auth.verify(&padded, &file_access(Verb::Read, "/a")),
        Err(TokenError::Invalid)
    ));
    assert!(airlock_token::parse_untrusted(&t.token).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_verify(s in ".{0,300}") {
        thread_local! { static AUTH: TokenAuthority = TokenAuthority::ephemeral(); }
        AUTH.with(|auth| {
            prop_assert!(matches!(auth.verify(&s, &file_access(Verb::Read, "/")), Err(TokenError::Invalid)));
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_bytes_never_verify(b in prop::collection::vec(any::<u8>(), 0..600)) {
        thread_local! { static AUTH: TokenAuthority = TokenAuthority::ephemeral(); }
        AUTH.with(|auth| {
            let s = b64_encode(&b);
            prop_assert!(matches!(auth.verify(&s, &file_access(Verb::Read, "/")), Err(TokenError::Invalid)));
            Ok(())
        })?;
    }
}

#[test]
fn facts_in_an_appended_block_grant_nothing() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let b = Biscuit::from_base64(&t.token, root_key(&auth)).unwrap();
    let hostile = BlockBuilder::new()
        .code(
            r#"
            verb("write"); verb("delete");
            right("/", "write"); right("/", "read"); subtree("/", "/");
            session("sess-1"); host("evil.org"); command("rm");
            right($p, "write") <- path($p);
            verb($v) <- operation($v);
            "#,
        )
        .unwrap();
    let forged = b.append(hostile).unwrap().to_base64().unwrap();
    assert!(
        auth.verify(&forged, &file_access(Verb::Read, "/a/x"))
            .is_ok(),
        "still a valid token for its grant"
    );
    for (verb, path) in [
        (Verb::Write, "/a/x"),
        (Verb::Read, "/etc/passwd"),
        (Verb::Delete, "/a"),
    ] {
        let r = auth.verify(&forged, &file_access(verb, path));
        assert!(
            matches!(r, Err(TokenError::Scope { .. })),
            "{verb:?} {path}: {r:?}"
        );
    }
}

#[test]
fn a_third_party_style_block_cannot_widen_either() {
    // Even a block signed by some external key (a third-party block) is
    // not trusted by the broker's policies.
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let b = Biscuit::from_base64(&t.token, root_key(&auth)).unwrap();
    let req = b.third_party_request().unwrap();
    let external = biscuit_auth::KeyPair::new();
    let block = BlockBuilder::new()
        .code(r#"right("/", "write"); verb("write"); subtree("/", "/");"#)
        .unwrap();
    let resp = req.create_block(&external.private(), block).unwrap();
    let forged = b
        .append_third_party(external.public(), resp)
        .unwrap()
        .to_base64()
        .unwrap();
    let r = auth.verify(&forged, &file_access(Verb::Write, "/etc"));
    assert!(matches!(r, Err(TokenError::Scope { .. })), "{r:?}");
}

#[test]
fn fact_explosion_is_cut_off_by_run_limits() {
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let b = Biscuit::from_base64(&t.token, root_key(&auth)).unwrap();
    let mut src = String::new();
    for i in 0..200 {
        src.push_str(&format!("n({i});\n"));
    }
    src.push_str("pair($a, $b) <- n($a), n($b);\ntriple($a, $b, $c) <- pair($a, $b), n($c);\n");
    let bomb = b
        .append(BlockBuilder::new().code(&src).unwrap())
        .unwrap()
        .to_base64()
        .unwrap();
    let r = auth.verify(&bomb, &file_access(Verb::Read, "/a"));
    assert!(matches!(r, Err(TokenError::Invalid)), "{r:?}");
}

#[test]
fn long_derivation_chains_are_cut_off_by_run_limits() {
    // Reaching the end of a 150-edge chain takes 150 rule iterations; the
    // limit is 100. Deterministic: it counts iterations, not time.
    let auth = TokenAuthority::ephemeral();
    let t = auth.mint(&grant(&[Verb::Read], &["/a"])).unwrap();
    let b = Biscuit::from_base64(&t.token, root_key(&auth)).unwrap();
    let mut src = String::from("reach(0);\n");
    for i in 0..150 {
        src.push_str(&format!("edge({i}, {});\n", i + 1));
    }
    src.push_str("reach($b) <- reach($a), edge($a, $b);\n");
    let token = b
        .append(BlockBuilder::new().code(&src).unwrap())
        .unwrap()
        .to_base64()
        .unwrap();
    let r = auth.verify(&token, &file_access(Verb::Read, "/a"));
    assert!(matches!(r, Err(TokenError::Invalid)), "{r:?}");

    // The same shape at 3 edges stays within the limits and verifies:
    // the limit, not the shape, is what refused the long chain.
    let mut src = String::from("reach(0);\n");
    for i in 0..3 {
        src.push_str(&format!("edge({i}, {});\n", i + 1));
    }
    src.push_str("reach($b) <- reach($a), edge($a, $b);\n");
    let token = b
        .append(BlockBuilder::new().code(&src).unwrap())
        .unwrap()
        .to_base64()
        .unwrap();
    assert!(auth.verify(&token, &file_access(Verb::Read, "/a")).is_ok());
}
