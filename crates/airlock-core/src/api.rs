//! Wire types of the agent API (`/v1/...` over the broker's Unix socket)
//! and the decoder every front door uses for request bodies.
//!
//! Decoding is strict and total: any byte string either becomes a typed
//! request or an [`ApiError`] naming the field at fault and how to ask
//! properly. Paths are checked lexically here (absolute, normalised, no
//! NUL); safe resolution on disk happens in `airlock-fs`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decision::DecisionKind;
use crate::error::{ApiError, ErrorCode};
use crate::manifest::{Manifest, ManifestLimits};
use crate::path::check_abs_normalised;

/// How file content travels in JSON.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8 text, as a JSON string.
    #[default]
    Utf8,
    /// Arbitrary bytes, standard base64 with padding.
    Base64,
}

/// `POST /v1/fs/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// Absolute, normalised path.
    pub path: String,
    /// Byte offset to start at. Default 0.
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to return. Default: up to the broker's read limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// `POST /v1/fs/list`, `/v1/fs/stat`, `/v1/fs/delete`, `/v1/fs/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    /// Absolute, normalised path.
    pub path: String,
}

/// `POST /v1/fs/write`: stage new content for a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// Absolute, normalised path.
    pub path: String,
    /// The new content, in `encoding`.
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits (e.g. 420 for 0644). setuid/setgid/sticky are
    /// always stripped. Default: the existing file's, else 0644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `POST /v1/fs/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// Absolute, normalised source path.
    pub from: String,
    /// Absolute, normalised destination path.
    pub to: String,
}

/// `POST /v1/exec`: run a command in the sandbox under an `exec` token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` must be one of the token's commands.
    pub argv: Vec<String>,
    /// Working directory (absolute); must lie under one of the token's paths.
    pub cwd: String,
    /// Extra environment variables `NAME=VALUE` (secret-looking names are
    /// passed only when listed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Wall-clock limit in seconds (capped by the broker's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// Answer to `POST /v1/requests` and `GET /v1/approvals/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecisionResponse {
    /// Correlates every audit record of this request.
    pub request_id: String,
    /// `allow`, `deny` or `ask`.
    pub decision: DecisionKind,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// Policy (package) that decided.
    pub policy_id: String,
    /// Rule within the policy that decided.
    pub rule: String,
    /// Revision of the policy set that decided.
    pub policy_revision: String,
    /// For deny: whether a human could grant it (ask again with a manifest
    /// a human can approve, or ask the user).
    pub grantable: bool,
    /// Machine-readable reason (`policy_timeout`, `quota_exceeded`,
    /// `denied_by_user`, `approval_expired`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The capability token (allow only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The token's id (for revocation and audit lookups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Token expiry, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Pending or decided approval (ask, and allow/deny after an ask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// For `ask`: when the pending approval lapses, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<String>,
    /// Seconds after which retrying may succeed (quota denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// What to do with secrets found in an MCP call (`allow` or `redact`),
    /// when a policy said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<crate::SecretsTreatment>,
    /// The broker session the token is bound to.
    pub session: String,
    /// What the agent can do next, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Which body a route takes; used by [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/requests`.
    Requests,
    /// `POST /v1/fs/read`.
    FsRead,
    /// `POST /v1/fs/list`.
    FsList,
    /// `POST /v1/fs/stat`.
    FsStat,
    /// `POST /v1/fs/write`.
    FsWrite,
    /// `POST /v1/fs/delete`.
    FsDelete,
    /// `POST /v1/fs/rename`.
    FsRename,
    /// `POST /v1/fs/mkdir`.
    FsMkdir,
    /// `POST /v1/exec`.
    Exec,
}

impl Route {
    /// Every route with a JSON body.
    pub const ALL: [Route; 9] = [
        Route::Requests,
        Route::FsRead,
        Route::FsList,
        Route::FsStat,
        Route::FsWrite,
        Route::FsDelete,
        Route::FsRename,
        Route::FsMkdir,
        Route::Exec,
    ];
}

/// A decoded request body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per request, moved once, never stored
pub enum ApiRequest {
    Manifest(Manifest),
    Read(ReadRequest),
    List(PathRequest),
    Stat(PathRequest),
    Write(WriteRequest),
    Delete(PathRequest),
    Rename(RenameRequest),
    Mkdir(PathRequest),
    Exec(ExecRequest),
}

/// Decode a request body for `route`. Total: never panics, every failure is
/// a structured [`ApiError`].
pub fn decode(route: Route, body: &[u8], limits: &ManifestLimits) -> Result<ApiRequest, ApiError> {
    Ok(match route {
        Route::Requests => ApiRequest::Manifest(Manifest::parse(body, limits)?),
        Route::FsRead => {
            let r: ReadRequest = decode_json(body)?;
            check_path("path", &r.path)?;
            ApiRequest::Read(r)
        }
        Route::FsList => ApiRequest::List(path_request(body)?),
        Route::FsStat => ApiRequest::Stat(path_request(body)?),
        Route::FsDelete => ApiRequest::Delete(path_request(body)?),
        Route::FsMkdir => ApiRequest::Mkdir(path_request(body)?),
        Route::FsWrite => {
            let r: WriteRequest = decode_json(body)?;
            check_path("path", &r.path)?;
            if let Some(m) = r.mode {
                if m > 0o7777 {
                    return Err(ApiError::new(
                        ErrorCode::InvalidValue,
                        format!("mode {m:#o} is not a permission mode"),
                    )
                    .field("mode")
                    .hint("give permission bits as a number, e.g. 420 for 0644"));
                }
            }
            ApiRequest::Write(r)
        }
        Route::FsRename => {
            let r: RenameRequest = decode_json(body)?;
            check_path("from", &r.from)?;
            check_path("to", &r.to)?;
            ApiRequest::Rename(r)
        }
        Route::Exec => {
            let r: ExecRequest = decode_json(body)?;
            if r.argv.is_empty() || r.argv[0].is_empty() {
                return Err(
                    ApiError::new(ErrorCode::MissingField, "argv must name a program")
                        .field("argv")
                        .hint("e.g. \"argv\": [\"make\", \"test\"]"),
                );
            }
            if let Some(i) = r.argv.iter().position(|a| a.contains('\0')) {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("argv[{i}] contains a NUL byte"),
                )
                .field(format!("argv[{i}]")));
            }
            check_path("cwd", &r.cwd)?;
            for (i, e) in r.env.iter().enumerate() {
                let ok = e.split_once('=').is_some_and(|(n, _)| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }) && !e.contains('\0');
                if !ok {
                    return Err(ApiError::new(
                        ErrorCode::InvalidValue,
                        format!("env[{i}] is not NAME=VALUE"),
                    )
                    .field(format!("env[{i}]"))
                    .hint("pass variables as \"NAME=VALUE\" with NAME of letters, digits and _"));
                }
            }
            ApiRequest::Exec(r)
        }
    })
}

fn path_request(body: &[u8]) -> Result<PathRequest, ApiError> {
    let r: PathRequest = decode_json(body)?;
    check_path("path", &r.path)?;
    Ok(r)
}

/// Lexical check of one path field.
pub fn check_path(field: &str, p: &str) -> Result<(), ApiError> {
    check_abs_normalised(p).map_err(|prob| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("{field}: {}", prob.describe()),
        )
        .field(field)
        .hint("give absolute, normalised paths such as /home/alice/project/src/main.rs")
    })
}

/// Decode a JSON body into `T` (which denies unknown fields), mapping serde's
/// errors onto the field that caused them.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {e}"),
        )
        .hint("send one JSON object with the fields this route documents")
    })?;
    if !v.is_object() {
        return Err(
            ApiError::new(ErrorCode::InvalidType, "request body must be a JSON object")
                .hint("send one JSON object with the fields this route documents"),
        );
    }
    serde_json::from_value(v).map_err(|e| serde_error(&e.to_string()))
}

/// Map a serde message onto an error code and field.
fn serde_error(msg: &str) -> ApiError {
    // `unknown field `NAME`, expected ...` / `missing field `NAME``: the
    // name itself may contain backticks, so cut at the known delimiters.
    let quoted = msg
        .split_once('`')
        .map(|(_, rest)| {
            rest.rsplit_once("`, expected")
                .map(|(n, _)| n)
                .or_else(|| rest.strip_suffix('`'))
                .unwrap_or(rest)
        })
        .map(str::to_owned);
    let (code, hint) = if msg.starts_with("unknown field") {
        (
            ErrorCode::UnknownField,
            Some(
                msg.split_once(", expected")
                    .map(|(_, rest)| format!("expected{rest}"))
                    .unwrap_or_default(),
            ),
        )
    } else if msg.starts_with("missing field") {
        (ErrorCode::MissingField, None)
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        (ErrorCode::InvalidType, None)
    } else if msg.starts_with("unknown variant") {
        (
            ErrorCode::InvalidValue,
            Some(
                msg.split_once(", expected")
                    .map(|(_, rest)| format!("expected{rest}"))
                    .unwrap_or_default(),
            ),
        )
    } else {
        (ErrorCode::InvalidValue, None)
    };
    let mut e = ApiError::new(code, msg.to_string());
    if matches!(code, ErrorCode::UnknownField | ErrorCode::MissingField) {
        if let Some(f) = quoted {
            e = e.field(f);
        }
    }
    if let Some(h) = hint.filter(|h| !h.is_empty()) {
        e = e.hint(h);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(route: Route, s: &str) -> Result<ApiRequest, ApiError> {
        decode(route, s.as_bytes(), &ManifestLimits::default())
    }

    #[test]
    fn read_defaults_and_errors() {
        let r = dec(Route::FsRead, r#"{"path":"/a/b"}"#).unwrap();
        assert_eq!(
            r,
            ApiRequest::Read(ReadRequest {
                path: "/a/b".into(),
                offset: 0,
                length: None
            })
        );
        let e = dec(Route::FsRead, r#"{"path":"/a/b","bogus":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::UnknownField, Some("bogus"))
        );
        let e = dec(Route::FsRead, r#"{"path":"/a","a`b":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::UnknownField, Some("a`b"))
        );
        let e = dec(Route::FsRead, r#"{}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::MissingField, Some("path"))
        );
        let e = dec(Route::FsRead, r#"{"path":"a/b"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidPath, Some("path"))
        );
        let e = dec(Route::FsRead, r#"{"path":"/a","offset":-1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidType);
        let e = dec(Route::FsRead, r#"[1]"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidType);
        let e = dec(Route::FsRead, "{\"path\":").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
    }

    #[test]
    fn write_and_rename() {
        let e = dec(
            Route::FsWrite,
            r#"{"path":"/a","content":"x","encoding":"hex"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidValue);
        let e = dec(
            Route::FsWrite,
            r#"{"path":"/a","content":"x","mode":99999}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidValue, Some("mode"))
        );
        let e = dec(Route::FsRename, r#"{"from":"/a","to":"/b/../c"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidPath, Some("to"))
        );
        assert!(dec(Route::FsRename, r#"{"from":"/a","to":"/b"}"#).is_ok());
    }

    #[test]
    fn exec_checks() {
        assert!(dec(Route::Exec, r#"{"argv":["make"],"cwd":"/w","env":["A=1"]}"#).is_ok());
        let e = dec(Route::Exec, r#"{"argv":[],"cwd":"/w"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("argv"));
        let e = dec(Route::Exec, r#"{"argv":["x"],"cwd":"/w","env":["=1"]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("env[0]"));
    }
}
