//! The permission manifest an agent sends to the broker, exactly the seed's
//! shape (`action`, `paths`, `duration_seconds`, `justification`) plus the
//! optional `hosts`, `commands`, `agent`, `model`, `session`, and `mcp` for
//! a call through `airlock mcp-proxy`.
//!
//! Parsing is two-phase so every problem is reported against the field that
//! caused it: JSON → `serde_json::Value` → field-by-field validation into a
//! typed [`Manifest`]. A `Manifest` value therefore always satisfies
//! [`ManifestLimits`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::path::{check_abs_normalised, is_within};

/// What the agent wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read file contents and metadata.
    ReadFiles,
    /// List directories and stat entries.
    ListFiles,
    /// Write, create, delete and rename files (staged for review).
    EditFiles,
    /// Run commands in the sandbox.
    Exec,
    /// Reach network hosts.
    Network,
    /// Call a tool of an MCP server behind `airlock mcp-proxy` (`mcp.tool`).
    McpTool,
    /// Read a resource of an MCP server behind `airlock mcp-proxy` (`mcp.resource`).
    McpResource,
    /// Get a prompt of an MCP server behind `airlock mcp-proxy` (`mcp.prompt`).
    McpPrompt,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::ReadFiles,
        Action::ListFiles,
        Action::EditFiles,
        Action::Exec,
        Action::Network,
        Action::McpTool,
        Action::McpResource,
        Action::McpPrompt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadFiles => "read_files",
            Action::ListFiles => "list_files",
            Action::EditFiles => "edit_files",
            Action::Exec => "exec",
            Action::Network => "network",
            Action::McpTool => "mcp_tool",
            Action::McpResource => "mcp_resource",
            Action::McpPrompt => "mcp_prompt",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The verbs a token minted for this action carries.
    pub fn verbs(self) -> &'static [Verb] {
        match self {
            Action::ReadFiles => &[Verb::Read, Verb::List, Verb::Stat],
            Action::ListFiles => &[Verb::List, Verb::Stat],
            Action::EditFiles => &[
                Verb::Read,
                Verb::List,
                Verb::Stat,
                Verb::Write,
                Verb::Delete,
            ],
            Action::Exec => &[Verb::Exec],
            Action::Network => &[Verb::Connect],
            Action::McpTool | Action::McpResource | Action::McpPrompt => &[Verb::Call],
        }
    }

    /// Whether the action is a call through `airlock mcp-proxy` (needs `mcp`).
    pub fn is_mcp(self) -> bool {
        matches!(
            self,
            Action::McpTool | Action::McpResource | Action::McpPrompt
        )
    }

    /// Whether the action names filesystem paths.
    pub fn uses_paths(self) -> bool {
        matches!(
            self,
            Action::ReadFiles | Action::ListFiles | Action::EditFiles | Action::Exec
        )
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation a capability token authorises.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Read,
    List,
    Stat,
    Write,
    Delete,
    Exec,
    Connect,
    /// One MCP call through `airlock mcp-proxy`; the token is its receipt.
    Call,
}

impl Verb {
    pub const ALL: [Verb; 8] = [
        Verb::Read,
        Verb::List,
        Verb::Stat,
        Verb::Write,
        Verb::Delete,
        Verb::Exec,
        Verb::Connect,
        Verb::Call,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Read => "read",
            Verb::List => "list",
            Verb::Stat => "stat",
            Verb::Write => "write",
            Verb::Delete => "delete",
            Verb::Exec => "exec",
            Verb::Connect => "connect",
            Verb::Call => "call",
        }
    }
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A validated permission manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The action requested.
    pub action: Action,
    /// Absolute, normalised paths the action touches. Required (non-empty)
    /// for `read_files`, `list_files` and `edit_files`; for `exec`, the
    /// directories the command may see.
    #[serde(default)]
    pub paths: Vec<String>,
    /// How long the capability should live, in seconds.
    #[schemars(range(min = 1, max = 86400))]
    pub duration_seconds: u64,
    /// Why the agent needs this, shown to the human.
    pub justification: String,
    /// `HOST` or `HOST:PORT` entries for `network` (and `exec` with network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Programs `exec` may run (a name looked up on PATH, or an absolute path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Agent identifier and version, e.g. `co-work-client-1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Model name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Agent session id (the broker also derives one from the peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The MCP call, for `mcp_tool`, `mcp_resource` and `mcp_prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpCall>,
}

/// One call to an MCP server behind `airlock mcp-proxy`. Exactly one of
/// `tool`, `resource`, `prompt` is set, matching the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpCall {
    /// The server's name as the proxy knows it (`--name`).
    pub server: String,
    /// The tool called (`mcp_tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The resource URI read (`mcp_resource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The prompt got (`mcp_prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The call's arguments, with anything that looks like a secret
    /// replaced by `[REDACTED:RULE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Ids of the secret patterns found in the arguments (never the secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Ids of the secret patterns found in the call's result. Set only when
    /// the proxy asks whether a result holding them may reach the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result_secrets: Vec<String>,
}

/// Validation limits; all configurable (see docs/config.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManifestLimits {
    /// Most paths in one manifest. Default 256.
    pub max_paths: usize,
    /// Most hosts in one manifest. Default 64.
    pub max_hosts: usize,
    /// Most commands in one manifest. Default 64.
    pub max_commands: usize,
    /// Longest capability lifetime an agent may ask for. Default 3600 s.
    pub max_duration_seconds: u64,
    /// Longest justification in bytes. Default 2000.
    pub max_justification_bytes: usize,
    /// Longest `agent`/`model`/`session` string. Default 256.
    pub max_label_bytes: usize,
    /// Path prefixes a manifest may name at all (component-wise). Empty =
    /// any absolute path (policy still decides). Default empty.
    pub path_allowlist: Vec<String>,
}

impl ManifestLimits {
    /// Check the limits themselves: every allowlist entry must be an
    /// absolute, normalised path (an empty or relative entry would admit
    /// everything or nothing by accident), and every bound at least 1.
    pub fn validate(&self) -> Result<(), String> {
        for (i, root) in self.path_allowlist.iter().enumerate() {
            check_abs_normalised(root)
                .map_err(|p| format!("limits.path_allowlist[{i}] {root:?}: {}", p.describe()))?;
        }
        for (name, v) in [
            ("max_paths", self.max_paths as u64),
            ("max_hosts", self.max_hosts as u64),
            ("max_commands", self.max_commands as u64),
            ("max_duration_seconds", self.max_duration_seconds),
            (
                "max_justification_bytes",
                self.max_justification_bytes as u64,
            ),
            ("max_label_bytes", self.max_label_bytes as u64),
        ] {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

impl Default for ManifestLimits {
    fn default() -> Self {
        ManifestLimits {
            max_paths: 256,
            max_hosts: 64,
            max_commands: 64,
            max_duration_seconds: 3600,
            max_justification_bytes: 2000,
            max_label_bytes: 256,
            path_allowlist: Vec::new(),
        }
    }
}

const FIELDS: &[&str] = &[
    "action",
    "paths",
    "duration_seconds",
    "justification",
    "hosts",
    "commands",
    "agent",
    "model",
    "session",
    "mcp",
];

fn actions_list() -> String {
    Action::ALL
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Manifest {
    /// Parse and validate raw bytes.
    pub fn parse(bytes: &[u8], limits: &ManifestLimits) -> Result<Manifest, ApiError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(ErrorCode::InvalidJson, format!("request body is not valid JSON: {e}"))
                .hint("send one JSON object: {\"action\": ..., \"paths\": [...], \"duration_seconds\": N, \"justification\": \"...\"}")
        })?;
        Manifest::from_value(&v, limits)
    }

    /// Validate an already-parsed JSON value.
    pub fn from_value(v: &Value, limits: &ManifestLimits) -> Result<Manifest, ApiError> {
        let obj = v.as_object().ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidType, "manifest must be a JSON object")
                .hint("send {\"action\": ..., \"paths\": [...], \"duration_seconds\": N, \"justification\": \"...\"}")
        })?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(
                ApiError::new(ErrorCode::UnknownField, format!("unknown field `{k}`"))
                    .field(k.clone())
                    .hint(format!("manifest fields are: {}", FIELDS.join(", "))),
            );
        }

        let action_s = req_str(obj, "action")?;
        let action = Action::parse(action_s).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownAction, format!("unknown action `{action_s}`"))
                .field("action")
                .hint(format!(
                    "use one of: {} (read_files to read, list_files to list, edit_files to write/create/delete, exec to run a command, network to reach a host)",
                    actions_list()
                ))
        })?;

        let paths = str_array(obj, "paths", limits.max_paths)?;
        for (i, p) in paths.iter().enumerate() {
            let field = format!("paths[{i}]");
            check_abs_normalised(p).map_err(|prob| {
                ApiError::new(
                    ErrorCode::InvalidPath,
                    format!("{field}: {}", prob.describe()),
                )
                .field(field.clone())
                .hint("give absolute, normalised paths such as /home/alice/project/src/main.rs")
            })?;
            if !limits.path_allowlist.is_empty()
                && !limits.path_allowlist.iter().any(|root| is_within(p, root))
            {
                return Err(ApiError::new(
                    ErrorCode::PathNotAllowed,
                    format!("{field}: `{p}` is outside the paths this broker mediates"),
                )
                .field(field)
                .hint(format!(
                    "ask only for paths under: {}",
                    limits.path_allowlist.join(", ")
                )));
            }
        }
        if matches!(
            action,
            Action::ReadFiles | Action::ListFiles | Action::EditFiles
        ) && paths.is_empty()
        {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                format!("action `{}` needs at least one path", action.as_str()),
            )
            .field("paths")
            .hint("list the exact files or directories the action touches"));
        }

        let duration_seconds = match obj.get("duration_seconds") {
            None => {
                return Err(ApiError::new(
                    ErrorCode::MissingField,
                    "`duration_seconds` is required",
                )
                .field("duration_seconds")
                .hint(format!(
                    "ask for the shortest time the task needs, 1..={} seconds",
                    limits.max_duration_seconds
                )))
            }
            Some(d) => {
                let bad = |msg: String| {
                    ApiError::new(ErrorCode::InvalidDuration, msg)
                        .field("duration_seconds")
                        .hint(format!(
                            "ask for a whole number of seconds between 1 and {} (shorter is more likely to be granted)",
                            limits.max_duration_seconds
                        ))
                };
                match d.as_u64() {
                    Some(0) => return Err(bad("duration_seconds must be at least 1".into())),
                    Some(n) if n > limits.max_duration_seconds => {
                        return Err(bad(format!(
                            "duration_seconds {n} exceeds the maximum of {}",
                            limits.max_duration_seconds
                        )))
                    }
                    Some(n) => n,
                    None if d.is_number() => {
                        return Err(bad(format!(
                            "duration_seconds must be a positive whole number, got {d}"
                        )))
                    }
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::InvalidType,
                            "duration_seconds must be a number",
                        )
                        .field("duration_seconds")
                        .hint("e.g. \"duration_seconds\": 300"))
                    }
                }
            }
        };

        let justification = req_str(obj, "justification")?.to_string();
        if justification.trim().is_empty() {
            return Err(
                ApiError::new(ErrorCode::InvalidValue, "justification must not be empty")
                    .field("justification")
                    .hint(
                        "say in one sentence why the task needs this access; a human may read it",
                    ),
            );
        }
        if justification.len() > limits.max_justification_bytes {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!(
                    "justification is longer than {} bytes",
                    limits.max_justification_bytes
                ),
            )
            .field("justification")
            .hint("keep the justification to one or two sentences"));
        }

        let hosts = str_array(obj, "hosts", limits.max_hosts)?;
        for (i, h) in hosts.iter().enumerate() {
            if !valid_host(h) {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("hosts[{i}]: `{h}` is not HOST or HOST:PORT"),
                )
                .field(format!("hosts[{i}]"))
                .hint("name hosts as example.com, example.com:443, 10.0.0.5:22 or [::1]:8080"));
            }
        }
        if action == Action::Network && hosts.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                "action `network` needs at least one host",
            )
            .field("hosts")
            .hint("list the hosts the task must reach, e.g. [\"api.example.com:443\"]"));
        }
        let commands = str_array(obj, "commands", limits.max_commands)?;
        for (i, c) in commands.iter().enumerate() {
            if c.is_empty() || c.contains('\0') || c.len() > crate::path::MAX_PATH_LEN {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("commands[{i}] is empty, too long or contains NUL"),
                )
                .field(format!("commands[{i}]"))
                .hint("name each program, e.g. \"cargo\" or \"/usr/bin/make\""));
            }
        }
        if action == Action::Exec && commands.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                "action `exec` needs at least one command",
            )
            .field("commands")
            .hint("list the programs the task runs, e.g. [\"cargo\"]"));
        }

        let agent = opt_label(obj, "agent", limits.max_label_bytes)?;
        let model = opt_label(obj, "model", limits.max_label_bytes)?;
        let session = opt_label(obj, "session", limits.max_label_bytes)?;
        let mcp = mcp_call(obj, action, limits)?;

        Ok(Manifest {
            action,
            paths,
            duration_seconds,
            justification,
            hosts,
            commands,
            agent,
            model,
            session,
            mcp,
        })
    }

    /// SHA-256 over the canonical JSON form; binds approvals to this exact manifest.
    pub fn canonical_hash(&self) -> String {
        crate::hash::canonical_hash(self)
    }

    /// JSON Schema (draft 2020-12) for the manifest.
    pub fn json_schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Manifest)).expect("schema serialises")
    }
}

fn req_str<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match obj.get(key) {
        None => {
            Err(ApiError::new(ErrorCode::MissingField, format!("`{key}` is required")).field(key))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(
            ApiError::new(ErrorCode::InvalidType, format!("`{key}` must be a string")).field(key),
        ),
    }
}

fn str_array(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let Some(v) = obj.get(key) else {
        return Ok(Vec::new());
    };
    let Some(arr) = v.as_array() else {
        return Err(ApiError::new(
            ErrorCode::InvalidType,
            format!("`{key}` must be an array of strings"),
        )
        .field(key));
    };
    if arr.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManyItems,
            format!("`{key}` has {} entries; at most {max} are allowed", arr.len()),
        )
        .field(key)
        .hint(format!("ask for a directory that contains them, or split the task into requests of at most {max}")));
    }
    arr.iter()
        .enumerate()
        .map(|(i, e)| {
            e.as_str().map(str::to_owned).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidType,
                    format!("`{key}[{i}]` must be a string"),
                )
                .field(format!("{key}[{i}]"))
            })
        })
        .collect()
}

fn opt_label(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max && !s.chars().any(char::is_control) => {
            Ok(Some(s.clone()))
        }
        Some(Value::String(_)) => Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!("`{key}` is longer than {max} bytes or contains control characters"),
        )
        .field(key)),
        Some(_) => Err(
            ApiError::new(ErrorCode::InvalidType, format!("`{key}` must be a string")).field(key),
        ),
    }
}

/// The `mcp` object: present exactly for the `mcp_*` actions, naming the
/// tool, resource or prompt its action calls for.
fn mcp_call(
    obj: &serde_json::Map<String, Value>,
    action: Action,
    limits: &ManifestLimits,
) -> Result<Option<McpCall>, ApiError> {
    let Some(v) = obj.get("mcp").filter(|v| !v.is_null()) else {
        if action.is_mcp() {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                format!("action `{}` needs `mcp`", action.as_str()),
            )
            .field("mcp")
            .hint("give {\"server\": NAME, \"tool\": NAME, \"arguments\": {...}}"));
        }
        return Ok(None);
    };
    if !action.is_mcp() {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!(
                "`mcp` belongs only to mcp_tool, mcp_resource and mcp_prompt, not `{}`",
                action.as_str()
            ),
        )
        .field("mcp"));
    }
    let call: McpCall = serde_json::from_value(v.clone()).map_err(|e| {
        ApiError::new(ErrorCode::InvalidValue, format!("mcp: {e}"))
            .field("mcp")
            .hint("mcp has server, tool | resource | prompt, arguments, secrets and result_secrets")
    })?;
    let max = limits.max_label_bytes;
    let label_ok = |s: &str| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
    if !label_ok(&call.server) {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!("mcp.server must be 1..={max} bytes without control characters"),
        )
        .field("mcp.server"));
    }
    let (want, got) = match action {
        Action::McpTool => ("tool", &call.tool),
        Action::McpResource => ("resource", &call.resource),
        _ => ("prompt", &call.prompt),
    };
    let named = [&call.tool, &call.resource, &call.prompt]
        .iter()
        .filter(|x| x.is_some())
        .count();
    match got {
        Some(n) if named == 1 && n.len() <= crate::path::MAX_PATH_LEN && !n.is_empty() => {}
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!(
                "action `{}` needs mcp.{want} (non-empty) and no other of tool, resource, prompt",
                action.as_str()
            ),
            )
            .field(format!("mcp.{want}")))
        }
    }
    for (key, ids) in [
        ("secrets", &call.secrets),
        ("result_secrets", &call.result_secrets),
    ] {
        if let Some(i) = ids.iter().position(|s| !label_ok(s)) {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!("mcp.{key}[{i}] is empty, too long or has control characters"),
            )
            .field(format!("mcp.{key}[{i}]")));
        }
    }
    Ok(Some(call))
}

/// `HOST` or `HOST:PORT`, IPv6 in brackets. Host names are LDH labels.
pub fn valid_host(h: &str) -> bool {
    parse_host(h).is_some()
}

/// Split `HOST[:PORT]` into host and optional port.
pub fn parse_host(h: &str) -> Option<(String, Option<u16>)> {
    if h.is_empty() || h.len() > 260 {
        return None;
    }
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        let ip = &rest[..end];
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (ip.to_string(), port)
    } else {
        match h.rsplit_once(':') {
            Some((host, p)) => (host.to_string(), Some(p.parse::<u16>().ok()?)),
            None => (h.to_string(), None),
        }
    };
    if host.parse::<std::net::IpAddr>().is_err() {
        let ok = host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                && !l.starts_with('-')
        });
        if !ok {
            return None;
        }
    }
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Manifest, ApiError> {
        Manifest::parse(s.as_bytes(), &ManifestLimits::default())
    }

    #[test]
    fn seed_manifest_parses() {
        let m = parse(r#"{"action":"edit_files","paths":["/Users/alice/Documents/report.docx"],"duration_seconds":300,"justification":"Summarize and correct the Q4 report"}"#).unwrap();
        assert_eq!(m.action, Action::EditFiles);
        assert_eq!(m.duration_seconds, 300);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(
            r#"{"action":"read_files","paths":["rel"],"duration_seconds":5,"justification":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidPath, Some("paths[0]"))
        );
        let e =
            parse(r#"{"action":"nuke","paths":["/a"],"duration_seconds":5,"justification":"x"}"#)
                .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownAction);
        assert!(e.hint.unwrap().contains("read_files"));
        let e = parse(r#"{"action":"read_files","paths":["/a"],"duration_seconds":5,"justification":"x","extra":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::UnknownField, Some("extra"))
        );
        for d in ["0", "-5", "1.5", "31536000", "1e30"] {
            let e = parse(&format!(r#"{{"action":"read_files","paths":["/a"],"duration_seconds":{d},"justification":"x"}}"#)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidDuration, "duration {d}");
        }
        let e = parse(
            r#"{"action":"read_files","paths":["/a"],"duration_seconds":"5","justification":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidType);
        let e = parse("{\"action\":\"read_files\",\"paths\":[\"/a\\u0000b\"],\"duration_seconds\":5,\"justification\":\"x\"}").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPath);
        let e = parse(r#"{"action":"read_files","paths":["/a"],"duration_seconds":5"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        let many: Vec<String> = (0..10_000).map(|i| format!("\"/f{i}\"")).collect();
        let e = parse(&format!(
            r#"{{"action":"read_files","paths":[{}],"duration_seconds":5,"justification":"x"}}"#,
            many.join(",")
        ))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManyItems);
    }

    #[test]
    fn limits_validate_their_allowlist() {
        assert!(ManifestLimits::default().validate().is_ok());
        for bad in ["", "relative", "/a/../b", "/a/"] {
            let l = ManifestLimits {
                path_allowlist: vec![bad.into()],
                ..Default::default()
            };
            assert!(l.validate().is_err(), "{bad:?}");
        }
        assert!(ManifestLimits {
            max_paths: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn allowlist_is_component_wise() {
        let limits = ManifestLimits {
            path_allowlist: vec!["/home/u/proj".into()],
            ..Default::default()
        };
        let ok = Manifest::parse(br#"{"action":"read_files","paths":["/home/u/proj/a"],"duration_seconds":5,"justification":"x"}"#, &limits);
        assert!(ok.is_ok());
        let e = Manifest::parse(br#"{"action":"read_files","paths":["/home/u/proj-evil/a"],"duration_seconds":5,"justification":"x"}"#, &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::PathNotAllowed);
    }

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com:443",
            "10.0.0.5:22",
            "[::1]:8080",
            "[::1]",
            "localhost",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "example.com:99999",
            "[::1",
            "http://x",
            "-bad.com",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn hash_binds_exact_manifest() {
        let a = parse(
            r#"{"action":"read_files","paths":["/a"],"duration_seconds":5,"justification":"x"}"#,
        )
        .unwrap();
        let b = parse(
            r#"{"justification":"x","duration_seconds":5,"paths":["/a"],"action":"read_files"}"#,
        )
        .unwrap();
        let c = parse(
            r#"{"action":"read_files","paths":["/b"],"duration_seconds":5,"justification":"x"}"#,
        )
        .unwrap();
        assert_eq!(a.canonical_hash(), b.canonical_hash());
        assert_ne!(a.canonical_hash(), c.canonical_hash());
    }
}
