//! Stable, machine-readable error codes shared by the HTTP API, MCP and CLI.
//!
//! Every refusal an agent sees is an [`ApiError`]: a `code` it can branch on,
//! a human `message`, the offending `field` where there is one, and a `hint`
//! that tells the agent how to ask properly.

use serde::{Deserialize, Serialize};

/// Every error code the broker can return. The string form is stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Body is not valid JSON (or not UTF-8).
    InvalidJson,
    /// Body exceeds the configured size limit.
    BodyTooLarge,
    /// A field the schema does not know.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// The action is not one Airlock knows.
    UnknownAction,
    /// A path is not absolute, not normalised, contains NUL, or is too long.
    InvalidPath,
    /// A path lies outside the configured allowlist.
    PathNotAllowed,
    /// Too many paths, hosts or commands in one manifest.
    TooManyItems,
    /// Duration is zero, negative, or above the maximum.
    InvalidDuration,
    /// A value is malformed in some other way (host, command, justification).
    InvalidValue,
    /// Policy denied the request.
    PolicyDenied,
    /// Policy did not finish within its time budget.
    PolicyTimeout,
    /// A quota was exceeded.
    QuotaExceeded,
    /// No token was presented.
    TokenMissing,
    /// Token signature or structure is invalid (tampered or not ours).
    TokenInvalid,
    /// Token has expired.
    TokenExpired,
    /// Token has been revoked.
    TokenRevoked,
    /// Token belongs to another session.
    TokenWrongSession,
    /// Token does not cover this path or verb.
    TokenScope,
    /// Approval id unknown.
    ApprovalNotFound,
    /// Approval expired before a human decided.
    ApprovalExpired,
    /// The path does not exist.
    NotFound,
    /// The path resolves outside the granted root (symlink, `..`, magic link).
    PathEscape,
    /// The target is a protected path (e.g. `.git/hooks`).
    ProtectedPath,
    /// The on-disk file changed since it was staged.
    Conflict,
    /// Staged change set unknown.
    StagedNotFound,
    /// The audit log could not be written durably; the broker fails closed.
    AuditUnavailable,
    /// The peer is not allowed to talk to this socket.
    PeerRefused,
    /// The operation is not allowed on this socket.
    Forbidden,
    /// Unknown route.
    #[serde(rename = "no_such_route")]
    NotFoundRoute,
    /// Method not allowed for route.
    MethodNotAllowed,
    /// A sandbox layer could not be applied.
    SandboxUnavailable,
    /// Too many requests in flight or broker overloaded.
    Overloaded,
    /// I/O or other internal failure; the broker keeps serving.
    Internal,
}

impl ErrorCode {
    /// The stable string form (same as the serde form).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            BodyTooLarge => "body_too_large",
            UnknownField => "unknown_field",
            MissingField => "missing_field",
            InvalidType => "invalid_type",
            UnknownAction => "unknown_action",
            InvalidPath => "invalid_path",
            PathNotAllowed => "path_not_allowed",
            TooManyItems => "too_many_items",
            InvalidDuration => "invalid_duration",
            InvalidValue => "invalid_value",
            PolicyDenied => "policy_denied",
            PolicyTimeout => "policy_timeout",
            QuotaExceeded => "quota_exceeded",
            TokenMissing => "token_missing",
            TokenInvalid => "token_invalid",
            TokenExpired => "token_expired",
            TokenRevoked => "token_revoked",
            TokenWrongSession => "token_wrong_session",
            TokenScope => "token_scope",
            ApprovalNotFound => "approval_not_found",
            ApprovalExpired => "approval_expired",
            NotFound => "not_found",
            PathEscape => "path_escape",
            ProtectedPath => "protected_path",
            Conflict => "conflict",
            StagedNotFound => "staged_not_found",
            AuditUnavailable => "audit_unavailable",
            PeerRefused => "peer_refused",
            Forbidden => "forbidden",
            NotFoundRoute => "no_such_route",
            MethodNotAllowed => "method_not_allowed",
            SandboxUnavailable => "sandbox_unavailable",
            Overloaded => "overloaded",
            Internal => "internal",
        }
    }

    /// The HTTP status the API answers with for this code.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | UnknownField | MissingField | InvalidType | UnknownAction
            | InvalidPath | TooManyItems | InvalidDuration | InvalidValue => 400,
            BodyTooLarge => 413,
            TokenMissing | TokenInvalid | TokenExpired | TokenRevoked | TokenWrongSession => 401,
            PathNotAllowed | PolicyDenied | TokenScope | PathEscape | ProtectedPath
            | PeerRefused | Forbidden => 403,
            ApprovalNotFound | NotFound | StagedNotFound | NotFoundRoute => 404,
            MethodNotAllowed => 405,
            Conflict => 409,
            ApprovalExpired => 410,
            QuotaExceeded | Overloaded => 429,
            AuditUnavailable | PolicyTimeout | SandboxUnavailable => 503,
            Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_is_the_serde_form_and_statuses_are_errors() {
        use ErrorCode::*;
        for c in [
            InvalidJson,
            BodyTooLarge,
            UnknownField,
            MissingField,
            InvalidType,
            UnknownAction,
            InvalidPath,
            PathNotAllowed,
            TooManyItems,
            InvalidDuration,
            InvalidValue,
            PolicyDenied,
            PolicyTimeout,
            QuotaExceeded,
            TokenMissing,
            TokenInvalid,
            TokenExpired,
            TokenRevoked,
            TokenWrongSession,
            TokenScope,
            ApprovalNotFound,
            ApprovalExpired,
            NotFound,
            PathEscape,
            ProtectedPath,
            Conflict,
            StagedNotFound,
            AuditUnavailable,
            PeerRefused,
            Forbidden,
            NotFoundRoute,
            MethodNotAllowed,
            SandboxUnavailable,
            Overloaded,
            Internal,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str(), "{c:?}");
            assert!((400..600).contains(&c.http_status()), "{c:?}");
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The structured error body: `{"error": {"code", "message", "field", "hint"}}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, thiserror::Error,
)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Seconds after which retrying may succeed (quotas, overload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            hint: None,
            retry_after: None,
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// The wire form: `{"error": {...}}`.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

/// The envelope used on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ApiError,
}
