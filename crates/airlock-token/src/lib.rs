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

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_core::Verb;
use biscuit_auth::builder::{fact, int, string, Algorithm, BlockBuilder, Fact, Term};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, KeyPair, PublicKey};
use lru::LruCache;
use sha2::{Digest, Sha256};

mod key;
mod pool;
mod scope;
mod store;

use scope::Templates;
use store::Revocations;

pub use key::KEY_FILE;
pub use store::REVOKED_FILE;

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
    /// A grant, attenuation or id handed to this crate is malformed.
    #[error("invalid {field}: {message}")]
    InvalidInput { field: String, message: String },
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
            TokenError::InvalidInput { .. } => C::InvalidValue,
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
    grant_root: Option<String>,
}

impl Capability {
    /// The granted path (from the authority block) under which this access's
    /// path lies; the longest one when grants nest. `None` for accesses
    /// without a path. Resolution on disk must stay beneath it.
    pub fn grant_root(&self) -> Option<&str> {
        self.grant_root.as_deref()
    }
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

/// Largest token accepted, in bytes of its base64 form. Checked before any
/// parsing, and at mint time so the broker never hands out a token it would
/// refuse.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Parsed, signature-checked tokens kept for reuse (keyed by the SHA-256 of
/// the token string). Authorization and revocation still run per access.
const CACHE_CAPACITY: usize = 1024;

/// Longest `request_id`, `session`, host or command accepted in a grant.
const MAX_LABEL_LEN: usize = 1024;

/// Most paths an attenuation may name.
const MAX_ATTENUATION_PATHS: usize = 256;

/// Limits on the Datalog a token can make the authorizer run. Our own
/// tokens need a few hundred facts and 1 iteration (no rules); a hostile
/// token with rules that explode is cut off by facts and iterations long
/// before the wall-clock limit, which is only a backstop kept generous so
/// a busy machine does not refuse good tokens.
pub fn authorizer_limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 10_000,
        max_iterations: 100,
        max_time: Duration::from_millis(50),
    }
}

/// Signed metadata in the authority block's context, mirroring its facts so
/// the revocation, expiry and session checks need no Datalog run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorityMeta {
    v: u32,
    request: String,
    session: String,
    issued: u64,
    expires: u64,
}

/// Context of an attenuation block made by [`attenuate`]: its expiry, so
/// an expired attenuation reports `Expired` before anything else is looked at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AttenuationMeta {
    expires: Option<u64>,
}

/// A token whose signature chain verified against our root key.
#[derive(Debug)]
struct Parsed {
    biscuit: Biscuit,
    /// Hex of every block's revocation id; `[0]` is the token id.
    revocation_ids: Vec<String>,
    meta: AuthorityMeta,
    /// Earliest expiry declared by attenuation blocks, if any.
    attenuated_expiry: Option<u64>,
    /// Paths granted by the authority block (not by attenuations).
    grant_paths: Vec<String>,
    /// The grant this process minted the token from, when the token is
    /// exactly that (its authority block, no attenuation block): then an
    /// access the grant covers is allowed without a Datalog run.
    minted: Option<Arc<TokenInfo>>,
}

/// What the token `t` describes (an unattenuated token minted here)
/// allows: the same answer as the authority block's check and the allow
/// policy (see `scope.rs`), by plain comparison. `check if time($t), $t <=
/// exp` and `allow if operation($op), verb($op), req_session($s),
/// session($s)`, plus the path, host and command conditions when the access
/// names them. Only a yes is trusted; anything else is decided by the
/// Datalog run, which also classifies the refusal.
fn minted_allows(t: &TokenInfo, a: &Access<'_>) -> bool {
    a.now <= t.expires_at
        && t.verbs.contains(&a.verb)
        && a.session == t.session
        && a.path.is_none_or(|p| {
            t.paths
                .iter()
                .any(|r| p == r || p.starts_with(&scope::subtree_prefix(r)))
        })
        && a.host.is_none_or(|h| t.hosts.iter().any(|x| x == h))
        && a.command.is_none_or(|c| t.commands.iter().any(|x| x == c))
}

impl Parsed {
    fn id(&self) -> &str {
        // Every token has an authority block, so there is always one id.
        self.revocation_ids
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Signs, verifies and tracks tokens. `Send + Sync`.
pub struct TokenAuthority {
    keypair: KeyPair,
    public: PublicKey,
    /// `state_dir/revoked.json`; `None` for an ephemeral authority.
    revoked_path: Option<PathBuf>,
    /// Current revocations; replaced wholesale on change.
    revocations: RwLock<Arc<Revocations>>,
    /// Serialises revocation writers (read-modify-write-persist).
    persist_lock: Mutex<()>,
    /// Tokens minted by this process, by id.
    issued: Mutex<IssuedRegistry>,
    cache: Mutex<LruCache<[u8; 32], Arc<Parsed>>>,
    templates: Templates,
    limits: AuthorizerLimits,
    /// One-off key pairs for the tokens' next blocks, made ahead of time.
    next_keys: pool::KeyPool,
}

#[derive(Default)]
struct IssuedRegistry {
    tokens: HashMap<String, TokenInfo>,
    /// The grants of the tokens `mint` made in this process, by id. Not
    /// the entries [`TokenAuthority::remember`] adds from the audit log: a
    /// file on disk must never widen what a signed token says.
    minted: HashMap<String, Arc<TokenInfo>>,
    prune_at: usize,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("public_key", &self.public_key_hex())
            .field("revoked_path", &self.revoked_path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind;
    // every writer here leaves it consistent, so carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn invalid_input(field: &str, message: impl Into<String>) -> TokenError {
    TokenError::InvalidInput {
        field: field.to_string(),
        message: message.into(),
    }
}

fn check_label(field: &str, s: &str) -> Result<(), TokenError> {
    if s.is_empty() {
        return Err(invalid_input(field, "must not be empty"));
    }
    if s.len() > MAX_LABEL_LEN {
        return Err(invalid_input(
            field,
            format!("longer than {MAX_LABEL_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Map a biscuit error raised while building a block from our own,
/// validated input. It means a bug or an input we failed to validate.
fn build_err(what: &str, e: biscuit_auth::error::Token) -> TokenError {
    tracing::error!(error = %e, "{what}");
    TokenError::InvalidInput {
        field: what.to_string(),
        message: e.to_string(),
    }
}

/// Decode and signature-check `token` against `root`, refusing oversized
/// input before parsing and turning any parser panic into `Invalid`.
fn parse_biscuit(token: &str, root: PublicKey) -> Result<Biscuit, TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Invalid);
    }
    let parsed = std::panic::catch_unwind(|| Biscuit::from_base64(token.as_bytes(), root));
    match parsed {
        // Only the canonical encoding is accepted: protobuf and base64 both
        // admit other spellings of the same signed content (an unknown field
        // number in place of a default one, stray low bits in the last
        // base64 symbol). Refusing them gives each token exactly one string,
        // so the cache, audit records and revocation all see one identity.
        Ok(Ok(b)) => match b.to_base64() {
            Ok(canonical) if canonical == token => Ok(b),
            _ => {
                tracing::debug!("token refused: not in canonical encoding");
                Err(TokenError::Invalid)
            }
        },
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "token refused at parse/signature");
            Err(TokenError::Invalid)
        }
        Err(_) => {
            tracing::warn!("token parser panicked on hostile input; refused");
            Err(TokenError::Invalid)
        }
    }
}

fn parse_public_key(hex_key: &str) -> Result<PublicKey, TokenError> {
    let hex_key = hex_key.trim();
    hex_key
        .parse::<PublicKey>()
        .or_else(|_| PublicKey::from_bytes_hex(hex_key, Algorithm::Ed25519))
        .map_err(|_| invalid_input("root_public_key", "not an Ed25519 public key in hex"))
}

/// Outcome class of a failed authorization, keyed by which checks failed.
fn failed_check_keys(e: &biscuit_auth::error::Token) -> Option<BTreeSet<(u32, u32)>> {
    use biscuit_auth::error::{FailedCheck, Logic, Token};
    let checks = match e {
        Token::FailedLogic(Logic::Unauthorized { checks, .. }) => checks,
        Token::FailedLogic(Logic::NoMatchingPolicy { checks }) => checks,
        _ => return None,
    };
    Some(
        checks
            .iter()
            .map(|c| match c {
                FailedCheck::Block(b) => (b.block_id, b.check_id),
                FailedCheck::Authorizer(a) => (u32::MAX, a.check_id),
            })
            .collect(),
    )
}

impl TokenAuthority {
    fn with_key(
        keypair: KeyPair,
        revoked_path: Option<PathBuf>,
        revocations: Revocations,
    ) -> TokenAuthority {
        let templates = match Templates::new() {
            Ok(t) => t,
            // The templates are constants of this crate; a parse failure is
            // caught by every test run.
            Err(e) => unreachable!("built-in Datalog templates do not parse: {e}"),
        };
        let public = keypair.public();
        TokenAuthority {
            keypair,
            public,
            revoked_path,
            revocations: RwLock::new(Arc::new(revocations)),
            persist_lock: Mutex::new(()),
            issued: Mutex::new(IssuedRegistry {
                tokens: HashMap::new(),
                minted: HashMap::new(),
                prune_at: 1024,
            }),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
            templates,
            limits: authorizer_limits(),
            next_keys: pool::KeyPool::new(),
        }
    }

    /// Load the root key from `state_dir/token.key`, creating it (0600) on
    /// first start; load the revocation list from `state_dir/revoked.json`.
    ///
    /// The state directory is created (0700) if missing. Refuses to start
    /// with [`TokenError::Key`] when the key file is not a regular file, is
    /// owned by another user or is accessible to group/others, and with
    /// [`TokenError::Io`] when the revocation list exists but is unreadable.
    pub fn load_or_create(state_dir: &Path) -> Result<TokenAuthority, TokenError> {
        if !state_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)?;
        }
        let keypair = key::load_or_create_key(&state_dir.join(key::KEY_FILE))?;
        let revoked_path = state_dir.join(store::REVOKED_FILE);
        let revocations = store::load(&revoked_path)?;
        tracing::debug!(
            ids = revocations.ids.len(),
            sessions = revocations.sessions.len(),
            revoke_all_at = ?revocations.revoke_all_at,
            "loaded token revocation list"
        );
        Ok(Self::with_key(keypair, Some(revoked_path), revocations))
    }

    /// An in-memory authority with a fresh key (tests, benchmarks).
    /// Revocations are kept in memory only.
    pub fn ephemeral() -> TokenAuthority {
        Self::with_key(KeyPair::new(), None, Revocations::new())
    }

    /// Hex of the root public key (so holders can attenuate offline).
    pub fn public_key_hex(&self) -> String {
        self.public.to_bytes_hex()
    }

    /// Mint a token carrying exactly `grant`.
    ///
    /// Refuses (with [`TokenError::InvalidInput`]) empty labels or verbs,
    /// paths that are not absolute and normalised, and grants whose token
    /// would exceed [`MAX_TOKEN_LEN`].
    pub fn mint(&self, grant: &Grant) -> Result<MintedToken, TokenError> {
        check_label("request_id", &grant.request_id)?;
        check_label("session", &grant.session)?;
        if grant.verbs.is_empty() {
            return Err(invalid_input(
                "verbs",
                "a token must grant at least one verb",
            ));
        }
        for p in &grant.paths {
            scope::check_path("paths", p)?;
        }
        for h in &grant.hosts {
            check_label("hosts", h)?;
        }
        for c in &grant.commands {
            check_label("commands", c)?;
        }
        let expires = i64::try_from(grant.expires_at)
            .map_err(|_| invalid_input("expires_at", "beyond the largest representable time"))?;

        // A token minted in the same second as a revoke-all must survive it.
        let now = now_unix();
        let issued = match self.current_revocations().revoke_all_at {
            Some(epoch) => now.max(epoch.saturating_add(1)),
            None => now,
        };

        let verbs: BTreeSet<Verb> = grant.verbs.iter().copied().collect();
        let meta = AuthorityMeta {
            v: 1,
            request: grant.request_id.clone(),
            session: grant.session.clone(),
            issued,
            expires: grant.expires_at,
        };
        let context =
            serde_json::to_string(&meta).map_err(|e| invalid_input("grant", e.to_string()))?;

        let mut facts: Vec<Fact> = Vec::with_capacity(
            4 + verbs.len() + grant.paths.len() + grant.hosts.len() + grant.commands.len(),
        );
        facts.push(fact("request", &[string(&grant.request_id)]));
        facts.push(fact("session", &[string(&grant.session)]));
        facts.push(fact(
            "issued",
            &[int(i64::try_from(issued).unwrap_or(i64::MAX))],
        ));
        facts.push(fact("expires", &[int(expires)]));
        for v in &verbs {
            facts.push(fact("verb", &[string(v.as_str())]));
        }
        for p in &grant.paths {
            facts.push(fact(
                "subtree",
                &[string(p), string(&scope::subtree_prefix(p))],
            ));
        }
        for h in &grant.hosts {
            facts.push(fact("host", &[string(h)]));
        }
        for c in &grant.commands {
            facts.push(fact("command", &[string(c)]));
        }
        let mut b = Biscuit::builder().context(context);
        for f in facts {
            b = b.fact(f).map_err(|e| build_err("grant", e))?;
        }
        let check = self
            .templates
            .expiry_check(grant.expires_at)
            .map_err(|e| build_err("expires_at", e))?;
        let b = b.check(check).map_err(|e| build_err("expires_at", e))?;
        let biscuit = b
            .build_with_key_pair(
                &self.keypair,
                biscuit_auth::datalog::SymbolTable::new(),
                &self.next_keys.take(),
            )
            .map_err(|e| build_err("grant", e))?;
        let token = biscuit.to_base64().map_err(|e| build_err("grant", e))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid_input(
                "grant",
                format!("the token would be {} bytes, over the {MAX_TOKEN_LEN}-byte limit; grant fewer or shorter paths", token.len()),
            ));
        }
        let ids: Vec<String> = biscuit
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect();
        let id = ids.first().cloned().unwrap_or_default();

        let info = TokenInfo {
            id: id.clone(),
            request_id: grant.request_id.clone(),
            session: grant.session.clone(),
            verbs: verbs.into_iter().collect(),
            paths: grant.paths.clone(),
            hosts: grant.hosts.clone(),
            commands: grant.commands.clone(),
            issued_at: issued,
            expires_at: grant.expires_at,
            revoked: false,
        };
        let scope = Arc::new(info.clone());
        // Warm the cache: the broker usually uses a token right after minting.
        let parsed = Arc::new(Parsed {
            biscuit,
            revocation_ids: ids,
            meta,
            attenuated_expiry: None,
            grant_paths: grant.paths.clone(),
            minted: Some(scope.clone()),
        });
        lock(&self.cache).put(cache_key(&token), parsed);
        {
            let mut reg = lock(&self.issued);
            if reg.tokens.len() >= reg.prune_at {
                reg.tokens.retain(|_, t| t.expires_at >= now);
                reg.minted.retain(|_, m| m.expires_at >= now);
                reg.prune_at = (reg.tokens.len() * 2).max(1024);
            }
            reg.tokens.insert(id.clone(), info);
            reg.minted.insert(id.clone(), scope);
        }
        tracing::debug!(token_id = %id, request_id = %grant.request_id, "minted token");
        Ok(MintedToken {
            token,
            id,
            expires_at: grant.expires_at,
        })
    }

    fn current_revocations(&self) -> Arc<Revocations> {
        Arc::clone(&self.revocations.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn parse_cached(&self, token: &str) -> Result<Arc<Parsed>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let key = cache_key(token);
        if let Some(p) = lock(&self.cache).get(&key) {
            return Ok(Arc::clone(p));
        }
        let parsed = Arc::new(self.parse_verified(token)?);
        lock(&self.cache).put(key, Arc::clone(&parsed));
        Ok(parsed)
    }

    fn parse_verified(&self, token: &str) -> Result<Parsed, TokenError> {
        let biscuit = parse_biscuit(token, self.public)?;
        let contexts = biscuit.context();
        let meta: AuthorityMeta = contexts
            .first()
            .and_then(|c| c.as_deref())
            .and_then(|c| serde_json::from_str(c).ok())
            .filter(|m: &AuthorityMeta| m.v == 1)
            .ok_or_else(|| {
                tracing::warn!("token signed by our key lacks Airlock metadata; refused");
                TokenError::Invalid
            })?;
        let attenuated_expiry = contexts
            .iter()
            .skip(1)
            .filter_map(|c| c.as_deref())
            .filter_map(|c| serde_json::from_str::<AttenuationMeta>(c).ok())
            .filter_map(|m| m.expires)
            .min();
        let revocation_ids: Vec<String> = biscuit
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect();
        let grant_paths = authority_paths(&biscuit, &self.limits)?;
        // Minted by this process and not attenuated: the id is the
        // authority block's signature, so the block is the one minted.
        let minted = if biscuit.block_count() == 1 {
            revocation_ids
                .first()
                .and_then(|id| lock(&self.issued).minted.get(id).cloned())
        } else {
            None
        };
        Ok(Parsed {
            biscuit,
            revocation_ids,
            meta,
            attenuated_expiry,
            grant_paths,
            minted,
        })
    }

    /// Parse and signature-check an untrusted token without authorizing
    /// anything. Never panics; any failure is [`TokenError::Invalid`].
    /// Meant for fuzzing and for front doors that want to reject garbage early.
    pub fn parse_untrusted(&self, token: &str) -> Result<(), TokenError> {
        self.parse_cached(token).map(|_| ())
    }

    /// Check one access against a token.
    ///
    /// Order, so each failure is reported as what it is: signature and
    /// structure ([`TokenError::Invalid`]) → revocation by any block's id, by
    /// session or by a revoke-all epoch ([`TokenError::Revoked`]) → expiry,
    /// including earlier expiries added by attenuation
    /// ([`TokenError::Expired`]) → session ([`TokenError::WrongSession`]) →
    /// Datalog authorization of verb, path, host and command against the
    /// authority block and every attenuation block's checks
    /// ([`TokenError::Scope`]).
    ///
    /// File verbs need `access.path`, `connect` needs `access.host`, `exec`
    /// needs `access.command`; every resource the access names must be
    /// granted. A path must be absolute and normalised.
    pub fn verify(&self, token: &str, access: &Access<'_>) -> Result<Capability, TokenError> {
        let parsed = self.parse_cached(token)?;

        let revocations = self.current_revocations();
        if let Some(id) = parsed
            .revocation_ids
            .iter()
            .find(|id| revocations.ids.contains(*id))
        {
            return Err(TokenError::Revoked { id: id.clone() });
        }
        if revocations.sessions.contains(&parsed.meta.session)
            || revocations
                .revoke_all_at
                .is_some_and(|epoch| parsed.meta.issued <= epoch)
        {
            return Err(TokenError::Revoked {
                id: parsed.id().to_string(),
            });
        }
        drop(revocations);

        if access.now > parsed.meta.expires {
            return Err(TokenError::Expired {
                expired_at: parsed.meta.expires,
            });
        }
        if let Some(exp) = parsed.attenuated_expiry {
            if access.now > exp {
                return Err(TokenError::Expired { expired_at: exp });
            }
        }
        if access.session != parsed.meta.session {
            return Err(TokenError::WrongSession);
        }

        let scope_err = |resource: &str| TokenError::Scope {
            verb: access.verb.as_str().to_string(),
            resource: resource.to_string(),
        };
        let needed = match access.verb {
            Verb::Read | Verb::List | Verb::Stat | Verb::Write | Verb::Delete => {
                access.path.is_none().then_some("(no path given)")
            }
            Verb::Connect => access.host.is_none().then_some("(no host given)"),
            Verb::Exec => access.command.is_none().then_some("(no command given)"),
            // An MCP call names no resource: the verb alone is the grant.
            Verb::Call => None,
        };
        if let Some(missing) = needed {
            return Err(scope_err(missing));
        }
        if let Some(p) = access.path {
            if airlock_core::path::check_abs_normalised(p).is_err() {
                return Err(scope_err(p));
            }
        }

        let resource = access.path.or(access.host).or(access.command).unwrap_or("");
        if !parsed
            .minted
            .as_ref()
            .is_some_and(|m| minted_allows(m, access))
        {
            match self.authorize(&parsed.biscuit, access, access.now) {
                Ok(()) => {}
                Err(e) => return Err(self.classify_failure(&parsed, access, &e, resource)),
            }
        }
        Ok(Capability {
            token_id: parsed.id().to_string(),
            request_id: parsed.meta.request.clone(),
            session: parsed.meta.session.clone(),
            verb: access.verb,
            expires_at: parsed
                .attenuated_expiry
                .map_or(parsed.meta.expires, |e| e.min(parsed.meta.expires)),
            grant_root: access.path.and_then(|p| {
                parsed
                    .grant_paths
                    .iter()
                    .filter(|g| airlock_core::path::is_within(p, g))
                    .max_by_key(|g| g.len())
                    .cloned()
            }),
        })
    }

    fn authorize(
        &self,
        biscuit: &Biscuit,
        access: &Access<'_>,
        time: u64,
    ) -> Result<(), biscuit_auth::error::Token> {
        let mut b = AuthorizerBuilder::new()
            .set_limits(self.limits.clone())
            .fact(fact("time", &[Term::Date(time)]))?
            .fact(fact("operation", &[string(access.verb.as_str())]))?
            .fact(fact("req_session", &[string(access.session)]))?;
        if let Some(p) = access.path {
            b = b.fact(fact("path", &[string(p)]))?;
        }
        if let Some(h) = access.host {
            b = b.fact(fact("req_host", &[string(h)]))?;
        }
        if let Some(c) = access.command {
            b = b.fact(fact("req_command", &[string(c)]))?;
        }
        let policy = self.templates.policy(
            access.path.is_some(),
            access.host.is_some(),
            access.command.is_some(),
        );
        let mut authorizer = b.policy(policy.clone())?.build(biscuit)?;
        authorizer.authorize().map(|_| ())
    }

    /// Tell an expiry hidden in an attenuation check from a scope refusal:
    /// re-run at time zero; checks that pass then but failed now are time
    /// bounds.
    fn classify_failure(
        &self,
        parsed: &Parsed,
        access: &Access<'_>,
        e: &biscuit_auth::error::Token,
        resource: &str,
    ) -> TokenError {
        let Some(failed_now) = failed_check_keys(e) else {
            tracing::warn!(error = %e, token_id = %parsed.id(), "token refused: Datalog evaluation error or run limit");
            return TokenError::Invalid;
        };
        if !failed_now.is_empty() {
            let failed_then = match self.authorize(&parsed.biscuit, access, 0) {
                Ok(()) => BTreeSet::new(),
                Err(e) => match failed_check_keys(&e) {
                    Some(keys) => keys,
                    // The re-run did not finish (run limit on a loaded
                    // machine): the access is refused either way; say it is
                    // out of scope rather than guess an expiry.
                    None => {
                        return TokenError::Scope {
                            verb: access.verb.as_str().to_string(),
                            resource: resource.to_string(),
                        }
                    }
                },
            };
            if failed_now.difference(&failed_then).next().is_some() {
                return TokenError::Expired {
                    expired_at: access.now,
                };
            }
        }
        TokenError::Scope {
            verb: access.verb.as_str().to_string(),
            resource: resource.to_string(),
        }
    }

    /// Revoke one token by id; persisted before returning. Returns whether it was known.
    ///
    /// Any block's revocation id is accepted: the authority id (the token id)
    /// revokes the token and every attenuation of it, an attenuation block's
    /// id revokes that attenuation and its descendants. Ids of tokens this
    /// process did not mint (earlier runs, offline attenuations) are recorded
    /// too and reported as unknown.
    pub fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let id = id.trim().to_ascii_lowercase();
        // hex::decode refuses odd lengths and non-hex characters.
        if id.is_empty() || id.len() > 512 || hex::decode(&id).is_err() {
            return Err(invalid_input(
                "id",
                "a token id is the hex revocation id shown by `tokens list`",
            ));
        }
        let known = lock(&self.issued).tokens.contains_key(&id);
        self.update_revocations(|r| {
            r.ids.insert(id.clone());
        })?;
        tracing::info!(token_id = %id, known, "revoked token");
        Ok(known)
    }

    /// Revoke every token of a session; returns how many.
    ///
    /// The count is of live, not yet revoked tokens this process minted; the
    /// revocation also covers tokens of that session minted before a restart.
    pub fn revoke_session(&self, session: &str) -> Result<usize, TokenError> {
        check_label("session", session)?;
        let now = now_unix();
        let current = self.current_revocations();
        let count = lock(&self.issued)
            .tokens
            .values()
            .filter(|t| t.session == session && t.expires_at >= now && !is_revoked(&current, t))
            .count();
        self.update_revocations(|r| {
            r.sessions.insert(session.to_string());
        })?;
        tracing::info!(session, count, "revoked session tokens");
        Ok(count)
    }

    /// Revoke every token; returns how many.
    ///
    /// Records an epoch: every token issued at or before this second is
    /// refused from now on, including tokens minted before a restart.
    /// Tokens minted afterwards are unaffected.
    pub fn revoke_all(&self) -> Result<usize, TokenError> {
        let now = now_unix();
        let current = self.current_revocations();
        let count = lock(&self.issued)
            .tokens
            .values()
            .filter(|t| t.expires_at >= now && !is_revoked(&current, t))
            .count();
        // Tokens minted after an earlier revoke-all carry issued >= that
        // epoch + 1, so the new epoch must be past it; it never moves back
        // (clock steps), and covers every token this process has issued.
        let epoch = current
            .revoke_all_at
            .map_or(now, |e| e.saturating_add(1).max(now));
        let epoch = lock(&self.issued)
            .tokens
            .values()
            .map(|t| t.issued_at)
            .max()
            .map_or(epoch, |m| m.max(epoch));
        self.update_revocations(|r| {
            r.revoke_all_at = Some(epoch);
        })?;
        tracing::info!(epoch, count, "revoked all tokens");
        Ok(count)
    }

    /// Apply `f` to a copy of the revocation list, make it effective, then
    /// persist it. The in-memory list changes even if persisting fails
    /// (the error is returned): a revocation is never silently dropped.
    fn update_revocations(&self, f: impl FnOnce(&mut Revocations)) -> Result<(), TokenError> {
        let _writer = lock(&self.persist_lock);
        let mut next = (*self.current_revocations()).clone();
        f(&mut next);
        let next = Arc::new(next);
        *self.revocations.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&next);
        if let Some(path) = &self.revoked_path {
            store::save(path, &next)?;
        }
        Ok(())
    }

    /// Register a token issued before this process started (the broker
    /// rebuilds the list from its audit log on start), so `list` and
    /// `revoke_session` see it. Expired entries are ignored; returns whether
    /// it was added.
    pub fn remember(&self, info: TokenInfo) -> bool {
        if info.expires_at < now_unix() || info.id.is_empty() {
            return false;
        }
        let mut reg = lock(&self.issued);
        if reg.tokens.contains_key(&info.id) {
            return false;
        }
        reg.tokens.insert(
            info.id.clone(),
            TokenInfo {
                revoked: false,
                ..info
            },
        );
        true
    }

    /// Tokens issued by this authority that have not expired (and revoked ones, flagged).
    pub fn list(&self, now: u64) -> Vec<TokenInfo> {
        let current = self.current_revocations();
        let mut out: Vec<TokenInfo> = lock(&self.issued)
            .tokens
            .values()
            .filter(|t| t.expires_at >= now)
            .map(|t| TokenInfo {
                revoked: is_revoked(&current, t),
                ..t.clone()
            })
            .collect();
        out.sort_by(|a, b| a.issued_at.cmp(&b.issued_at).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

/// The paths the authority block grants (`subtree` facts); attenuation
/// blocks cannot add to them, since the query trusts only the authority.
fn authority_paths(
    biscuit: &Biscuit,
    limits: &AuthorizerLimits,
) -> Result<Vec<String>, TokenError> {
    let mut authorizer = biscuit.authorizer().map_err(|_| TokenError::Invalid)?;
    let rows: Vec<(String,)> = authorizer
        .query_with_limits("data($p) <- subtree($p, $q)", limits.clone())
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read the grant paths of a token; refused");
            TokenError::Invalid
        })?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}

fn is_revoked(r: &Revocations, t: &TokenInfo) -> bool {
    r.ids.contains(&t.id)
        || r.sessions.contains(&t.session)
        || r.revoke_all_at.is_some_and(|e| t.issued_at <= e)
}

fn cache_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Attenuate a token offline (needs no private key).
///
/// Appends one block whose checks narrow the token to `att.paths`
/// (component-wise, same rule as grants), `att.verbs` and/or an earlier
/// `att.expires_at`. The result can never do more than `token` could:
/// the broker's policies read grants only from the authority block, and
/// every block's checks must pass. Once paths are narrowed, accesses that
/// name no path are refused. The token's signature is checked against
/// `root_public_key_hex` first, so a foreign or tampered token is refused
/// here rather than carried forward.
pub fn attenuate(
    token: &str,
    root_public_key_hex: &str,
    att: &Attenuation,
) -> Result<String, TokenError> {
    if att.paths.is_none() && att.verbs.is_none() && att.expires_at.is_none() {
        return Err(invalid_input(
            "attenuation",
            "narrows nothing; give paths, verbs or expires_at",
        ));
    }
    let root = parse_public_key(root_public_key_hex)?;
    let biscuit = parse_biscuit(token, root)?;

    let mut block = BlockBuilder::new();
    if let Some(paths) = &att.paths {
        if paths.is_empty() {
            return Err(invalid_input(
                "paths",
                "an empty path list allows nothing; revoke the token instead",
            ));
        }
        if paths.len() > MAX_ATTENUATION_PATHS {
            return Err(invalid_input(
                "paths",
                format!("more than {MAX_ATTENUATION_PATHS} paths"),
            ));
        }
        for p in paths {
            scope::check_path("paths", p)?;
        }
        let (src, params) = scope::path_check(paths);
        block = block
            .code_with_params(src, params, HashMap::new())
            .map_err(|e| build_err("paths", e))?;
    }
    if let Some(verbs) = &att.verbs {
        if verbs.is_empty() {
            return Err(invalid_input(
                "verbs",
                "an empty verb list allows nothing; revoke the token instead",
            ));
        }
        let (src, params) = scope::verb_check(verbs);
        block = block
            .code_with_params(src, params, HashMap::new())
            .map_err(|e| build_err("verbs", e))?;
    }
    if let Some(exp) = att.expires_at {
        if i64::try_from(exp).is_err() {
            return Err(invalid_input(
                "expires_at",
                "beyond the largest representable time",
            ));
        }
        let (src, params) = scope::expiry_check_source(exp);
        block = block
            .code_with_params(src, params, HashMap::new())
            .map_err(|e| build_err("expires_at", e))?;
    }
    let meta = AttenuationMeta {
        expires: att.expires_at,
    };
    let context =
        serde_json::to_string(&meta).map_err(|e| invalid_input("attenuation", e.to_string()))?;
    let block = block.context(context);
    let attenuated = biscuit.append(block).map_err(|e| {
        tracing::debug!(error = %e, "cannot append attenuation block");
        TokenError::Invalid
    })?;
    let out = attenuated
        .to_base64()
        .map_err(|e| build_err("attenuation", e))?;
    if out.len() > MAX_TOKEN_LEN {
        return Err(invalid_input(
            "attenuation",
            format!("the token would exceed {MAX_TOKEN_LEN} bytes"),
        ));
    }
    Ok(out)
}

/// Parse an untrusted token's structure (base64, protobuf, block signature
/// chain) without knowing the root key. Never panics; any failure is
/// [`TokenError::Invalid`]. For a check against a root key use
/// [`TokenAuthority::parse_untrusted`].
pub fn parse_untrusted(token: &str) -> Result<(), TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Invalid);
    }
    match std::panic::catch_unwind(|| {
        biscuit_auth::UnverifiedBiscuit::from_base64(token.as_bytes())
    }) {
        Ok(Ok(_)) => Ok(()),
        _ => Err(TokenError::Invalid),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_support;
