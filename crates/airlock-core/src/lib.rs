//! Airlock's shared vocabulary: the permission manifest an agent sends, the
//! decision the broker returns, the stable error codes every front door
//! speaks, and canonical hashing used to bind approvals and audit records.
//!
//! This crate is pure: no I/O, no clocks, no globals.
#![forbid(unsafe_code)]

pub mod api;
pub mod decision;
pub mod error;
pub mod hash;
pub mod manifest;
pub mod path;

pub use api::{decode, ApiRequest, DecisionResponse, Encoding, Route};
pub use decision::{Decision, DecisionKind, SecretsTreatment};
pub use error::{ApiError, ErrorCode};
pub use hash::{canonical_json, sha256_hex};
pub use manifest::{Action, Manifest, ManifestLimits, McpCall, Verb};
