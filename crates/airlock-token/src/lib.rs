//! Capability tokens.
//!
//! CONTRACT (used by airlock-broker; keep these signatures):
//! - A token is a base64url biscuit whose authority block carries exactly the
//!   granted verbs and resources (paths, hosts, commands), the session it is
//!   bound to, the request id, and an expiry.
//! - Holders may attenuate offline with [`attenuate`] (narrower paths, verbs,
//!   earlier expiry); [`TokenAuthority::verify`] honours every block.
//! - Path grants are component-wise: a grant on `/a/b` covers `/a/b` and
//!   `/a/b/...`, never `/a/bc`.
//! - Verification failures are distinguishable: tampered/foreign, expired,
//!   revoked, wrong session, out of scope.
#![forbid(unsafe_code)]

use std::path::Path;

use airlock_core::Verb;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or its signature does not verify")]
    Invalid,
    #[error("token expired at {expired_at} (unix seconds)")]
    Expired { expired_at: u64 },
    #[error("token {id} has been revoked")]
    Revoked { id: String },
    #[error("token belongs to another session")]
    WrongSession,
    #[error("token does not cover {verb} on {resource}")]
    Scope { verb: String, resource: String },
    #[error("key file {path}: {message}")]
    Key { path: String, message: String },
    #[error("token store I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl TokenError {
    /// The API error code for this failure.
    pub fn code(&self) -> airlock_core::ErrorCode {
        use airlock_core::ErrorCode as C;
        match self {
            TokenError::Invalid => C::TokenInvalid,
            TokenError::Expired { .. } => C::TokenExpired,
            TokenError::Revoked { .. } => C::TokenRevoked,
            TokenError::WrongSession => C::TokenWrongSession,
            TokenError::Scope { .. } => C::TokenScope,
            TokenError::Key { .. } | TokenError::Io(_) => C::Internal,
        }
    }
}

/// What to put in a new token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub request_id: String,
    pub session: String,
    pub verbs: Vec<Verb>,
    /// Absolute normalised paths (component-wise prefix grants).
    pub paths: Vec<String>,
    /// `HOST` or `HOST:PORT`.
    pub hosts: Vec<String>,
    /// Program names or absolute paths.
    pub commands: Vec<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A freshly minted token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MintedToken {
    /// The bearer string (base64url).
    pub token: String,
    /// Stable id (hex of the authority block's revocation id).
    pub id: String,
    pub expires_at: u64,
}

/// One access the holder attempts.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub session: &'a str,
    pub verb: Verb,
    /// For file verbs and exec (the cwd / visible dirs).
    pub path: Option<&'a str>,
    pub host: Option<&'a str>,
    pub command: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

/// Proof that a token authorised one access. Only [`TokenAuthority::verify`]
/// constructs it.
#[derive(Debug, Clone)]
pub struct Capability {
    token_id: String,
    request_id: String,
    session: String,
    verb: Verb,
    expires_at: u64,
}

impl Capability {
    pub fn token_id(&self) -> &str {
        &self.token_id
    }
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
    pub fn session(&self) -> &str {
        &self.session
    }
    pub fn verb(&self) -> Verb {
        self.verb
    }
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Metadata the broker keeps about each issued token (`airlock tokens list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub request_id: String,
    pub session: String,
    pub verbs: Vec<Verb>,
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    pub commands: Vec<String>,
    pub issued_at: u64,
    pub expires_at: u64,
    pub revoked: bool,
}

/// Narrowing applied offline by a holder.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Attenuation {
    pub paths: Option<Vec<String>>,
    pub verbs: Option<Vec<Verb>>,
    pub expires_at: Option<u64>,
}

/// Signs, verifies and tracks tokens. `Send + Sync`.
pub struct TokenAuthority {
    // implementation-defined
}

impl TokenAuthority {
    /// Load the root key from `state_dir/token.key`, creating it (0600) on
    /// first start; load the revocation list from `state_dir/revoked.json`.
    pub fn load_or_create(state_dir: &Path) -> Result<TokenAuthority, TokenError> {
        let _ = state_dir;
        todo!()
    }

    /// An in-memory authority with a fresh key (tests, benchmarks).
    pub fn ephemeral() -> TokenAuthority {
        todo!()
    }

    /// Hex of the root public key (so holders can attenuate offline).
    pub fn public_key_hex(&self) -> String {
        todo!()
    }

    pub fn mint(&self, grant: &Grant) -> Result<MintedToken, TokenError> {
        let _ = grant;
        todo!()
    }

    pub fn verify(&self, token: &str, access: &Access<'_>) -> Result<Capability, TokenError> {
        let _ = (token, access);
        todo!()
    }

    /// Revoke one token by id; persisted before returning. Returns whether it was known.
    pub fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let _ = id;
        todo!()
    }

    /// Revoke every token of a session; returns how many.
    pub fn revoke_session(&self, session: &str) -> Result<usize, TokenError> {
        let _ = session;
        todo!()
    }

    /// Revoke every token; returns how many.
    pub fn revoke_all(&self) -> Result<usize, TokenError> {
        todo!()
    }

    /// Tokens issued by this authority that have not expired (and revoked ones, flagged).
    pub fn list(&self, now: u64) -> Vec<TokenInfo> {
        let _ = now;
        todo!()
    }
}

/// Attenuate a token offline (needs no private key).
pub fn attenuate(token: &str, root_public_key_hex: &str, att: &Attenuation) -> Result<String, TokenError> {
    let _ = (token, root_public_key_hex, att);
    todo!()
}
