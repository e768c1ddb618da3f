//! Canonical JSON and SHA-256, used to bind approvals to the exact manifest
//! and to chain audit records.

use sha2::{Digest, Sha256};

/// Canonical form of a JSON value: object keys sorted, no insignificant
/// whitespace. `serde_json::Value` keeps maps in a `BTreeMap` (the
/// `preserve_order` feature is not enabled in this workspace), so
/// serialising a `Value` is canonical.
pub fn canonical_json(v: &serde_json::Value) -> String {
    // Round-trip through Value guarantees sorted keys even when `v` came
    // from a typed struct with declaration-ordered fields.
    serde_json::to_string(v).expect("serialising a Value cannot fail")
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 over the canonical JSON form of any serialisable value.
pub fn canonical_hash<T: serde::Serialize>(v: &T) -> String {
    let value = serde_json::to_value(v).expect("serialisable");
    sha256_hex(canonical_json(&value).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn key_order_does_not_change_hash() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":[1,{"y":2,"x":1}]}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "a":[1,{"x":1,"y":2}], "b":1 }"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        let c: serde_json::Value =
            serde_json::from_str(r#"{"b":2,"a":[1,{"x":1,"y":2}]}"#).unwrap();
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
    }
}
