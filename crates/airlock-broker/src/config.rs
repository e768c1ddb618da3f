//! The broker's configuration: TOML, every key optional with an embedded
//! default, unknown keys refused. `docs/config.md` documents every key; a
//! test checks that it names each one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_core::ManifestLimits;
use serde::{Deserialize, Serialize};

use crate::BrokerError;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Agent socket. Default `$XDG_RUNTIME_DIR/airlock/broker.sock`, else
    /// `/tmp/airlock-$UID/broker.sock`. `AIRLOCK_SOCKET` overrides.
    pub socket: Option<PathBuf>,
    /// Operator socket (approvals, tokens, staging, policy reload). Default
    /// `operator.sock` beside the agent socket. `AIRLOCK_OPERATOR_SOCKET`
    /// overrides.
    pub operator_socket: Option<PathBuf>,
    /// Keys, audit log, staging store, revocations, sessions. Default
    /// `$XDG_STATE_HOME/airlock`, else `~/.local/state/airlock`.
    pub state_dir: Option<PathBuf>,
    /// Workspace roots: reads and staged edits beneath them are allowed by
    /// the default policy. `airlock serve --workspace DIR` adds more.
    pub workspaces: Vec<PathBuf>,
    /// Uids other than the broker's own that may use the agent socket.
    /// Default none.
    pub allow_uids: Vec<u32>,
    /// The desktop user named in audit records. Default: the login name of
    /// the broker's uid.
    pub user: Option<String>,
    /// HTTP server limits.
    pub server: ServerConfig,
    /// Pending approvals.
    pub approvals: ApprovalConfig,
    /// Manifest validation limits.
    pub limits: ManifestLimits,
    /// Policy directory and evaluation budget.
    pub policy: airlock_policy::PolicyConfig,
    /// Audit log location and rotation.
    pub audit: airlock_audit::AuditConfig,
    /// Staging store and protected paths.
    pub staging: StagingConfig,
    /// Data classification: path globs to sensitivity labels.
    pub classify: Vec<ClassifyRule>,
    /// Per-agent and per-action quotas.
    pub quotas: QuotaConfig,
    /// Brokered `exec`.
    pub exec: ExecConfig,
    /// Sandbox profiles (`[profiles.NAME]`), shared with `airlock run`.
    pub profiles: BTreeMap<String, airlock_sandbox::Profile>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest request body in bytes. Default 16 MiB.
    pub max_body_bytes: u64,
    /// Most simultaneous connections per socket; more wait in the kernel's
    /// backlog. Default 4096.
    pub max_connections: usize,
    /// A client must send its request headers within this time. Default 5000 ms.
    pub header_timeout_ms: u64,
    /// A client must send its whole body within this time. Default 30000 ms.
    pub body_timeout_ms: u64,
    /// Most bytes one `fs/read` returns. Default 8 MiB.
    pub max_read_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 16 << 20,
            max_connections: 4096,
            header_timeout_ms: 5000,
            body_timeout_ms: 30_000,
            max_read_bytes: 8 << 20,
        }
    }
}

/// `[approvals]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// A pending approval lapses (is denied) after this many seconds. Default 300.
    pub timeout_seconds: u64,
    /// Most pending approvals at once; more are denied with `overloaded`. Default 256.
    pub max_pending: usize,
    /// Longest long poll (`?wait=`) in seconds. Default 60.
    pub max_wait_seconds: u64,
    /// Longest standing approval (`approve --for`) in seconds. Default 28800 (8 h).
    pub max_standing_seconds: u64,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            timeout_seconds: 300,
            max_pending: 256,
            max_wait_seconds: 60,
            max_standing_seconds: 8 * 3600,
        }
    }
}

/// `[staging]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// Staging store. Default `<state_dir>/staging`.
    pub dir: Option<PathBuf>,
    /// Paths (globs relative to a workspace root, `**/` for any depth) that
    /// commit never writes and the sandbox keeps read-only. Default: the
    /// built-in list (`.git/hooks`, `.git/config`, shell rc files, agent
    /// config dirs, ...). Entries here replace it.
    pub protected: Option<Vec<String>>,
    /// Added to the protected list (built-in or replaced). Default none.
    pub protected_extra: Vec<String>,
}

impl StagingConfig {
    /// The protected list in effect.
    pub fn protected_paths(&self) -> airlock_fs::ProtectedPaths {
        let mut p = match &self.protected {
            Some(list) => airlock_fs::ProtectedPaths {
                patterns: list.clone(),
            },
            None => airlock_fs::ProtectedPaths::default(),
        };
        p.patterns.extend(self.protected_extra.iter().cloned());
        p
    }
}

/// One `[[classify]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    /// Glob over absolute paths, e.g. `**/finance/**` or `**/*.pem`.
    pub pattern: String,
    /// Labels for matching paths, e.g. `["confidential"]`.
    pub labels: Vec<String>,
}

/// `[quotas]`: limits per agent (the session holder's executable) and, in
/// `[quotas.actions.ACTION]`, per action. A key left out keeps its default;
/// `0` switches that quota off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Requests (`POST /v1/requests`) per minute per agent. Default 600.
    pub requests_per_minute: Option<u64>,
    /// Files read per hour per agent. Default 20000.
    pub files_read_per_hour: Option<u64>,
    /// Bytes read per hour per agent. Default 2 GiB.
    pub bytes_read_per_hour: Option<u64>,
    /// Per-action overrides, e.g. `[quotas.actions.exec] requests_per_minute = 30`.
    pub actions: BTreeMap<String, ActionQuota>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            requests_per_minute: Some(600),
            files_read_per_hour: Some(20_000),
            bytes_read_per_hour: Some(2 << 30),
            actions: BTreeMap::new(),
        }
    }
}

/// `[quotas.actions.ACTION]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionQuota {
    /// Requests with this action per minute per agent.
    pub requests_per_minute: Option<u64>,
}

/// `[exec]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// Profile brokered commands run with. Default `workspace-write`.
    pub profile: String,
    /// Longest wall-clock time of a brokered command, seconds. Default 600.
    pub max_timeout_seconds: u64,
    /// Captured stdout/stderr per stream, bytes. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Sandbox layers brokered commands may run without. Default none.
    pub allow_degraded: Vec<airlock_sandbox::Layer>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            profile: "workspace-write".into(),
            max_timeout_seconds: 600,
            max_output_bytes: 1 << 20,
            allow_degraded: Vec::new(),
        }
    }
}

impl Config {
    /// Parse a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, BrokerError> {
        toml::from_str(text).map_err(|e| BrokerError::Config(e.to_string()))
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Config, BrokerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BrokerError::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| match e {
            BrokerError::Config(m) => BrokerError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The default config file: `$XDG_CONFIG_HOME/airlock/config.toml`, else
    /// `~/.config/airlock/config.toml`.
    pub fn default_path() -> Option<PathBuf> {
        config_dir().map(|d| d.join("config.toml"))
    }

    /// Load the given file, or the default file if it exists, or the embedded defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, BrokerError> {
        match path {
            Some(p) => Config::load(p),
            None => match Config::default_path() {
                Some(p) if p.exists() => Config::load(&p),
                _ => Ok(Config::default()),
            },
        }
    }

    /// Resolve every location to an absolute path.
    pub fn paths(&self) -> Result<Paths, BrokerError> {
        let socket = match std::env::var_os("AIRLOCK_SOCKET").filter(|s| !s.is_empty()) {
            Some(s) => PathBuf::from(s),
            None => self
                .socket
                .clone()
                .unwrap_or_else(airlock_client::default_agent_socket),
        };
        let operator_socket =
            match std::env::var_os("AIRLOCK_OPERATOR_SOCKET").filter(|s| !s.is_empty()) {
                Some(s) => PathBuf::from(s),
                None => self
                    .operator_socket
                    .clone()
                    .unwrap_or_else(|| sibling(&socket, "operator.sock")),
            };
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => state_dir().ok_or_else(|| {
                BrokerError::Config(
                    "cannot find a state directory: set HOME, XDG_STATE_HOME or state_dir".into(),
                )
            })?,
        };
        let abs = |p: PathBuf, what: &str| -> Result<PathBuf, BrokerError> {
            std::path::absolute(&p)
                .map_err(|e| BrokerError::Config(format!("{what} {}: {e}", p.display())))
        };
        let state_dir = abs(state_dir, "state_dir")?;
        Ok(Paths {
            socket: abs(socket, "socket")?,
            operator_socket: abs(operator_socket, "operator_socket")?,
            audit_dir: match &self.audit.dir {
                Some(d) => abs(d.clone(), "audit.dir")?,
                None => state_dir.join("audit"),
            },
            staging_dir: match &self.staging.dir {
                Some(d) => abs(d.clone(), "staging.dir")?,
                None => state_dir.join("staging"),
            },
            config_dir: config_dir(),
            policy_dir: self.policy.effective_dir(),
            state_dir,
        })
    }
}

/// Every location the broker uses, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paths {
    pub socket: PathBuf,
    pub operator_socket: PathBuf,
    pub state_dir: PathBuf,
    pub audit_dir: PathBuf,
    pub staging_dir: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub policy_dir: Option<PathBuf>,
}

impl Paths {
    /// Paths agents must never reach (given to policy as `broker_paths` and
    /// hidden from sandboxes).
    pub fn broker_paths(&self) -> Vec<String> {
        let mut v: Vec<PathBuf> = vec![
            self.state_dir.clone(),
            self.audit_dir.clone(),
            self.staging_dir.clone(),
            self.socket
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.socket.clone()),
            self.operator_socket
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.operator_socket.clone()),
        ];
        v.extend(self.config_dir.clone());
        v.extend(self.policy_dir.clone());
        let mut out: Vec<String> = v
            .into_iter()
            .filter_map(|p| p.to_str().map(str::to_owned))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn sibling(p: &Path, name: &str) -> PathBuf {
    p.parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn env_abs(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> Option<PathBuf> {
    env_abs("HOME")
}

/// `$XDG_CONFIG_HOME/airlock`, else `~/.config/airlock`.
pub fn config_dir() -> Option<PathBuf> {
    env_abs("XDG_CONFIG_HOME")
        .or_else(|| home().map(|h| h.join(".config")))
        .map(|d| d.join("airlock"))
}

/// `$XDG_STATE_HOME/airlock`, else `~/.local/state/airlock`.
pub fn state_dir() -> Option<PathBuf> {
    env_abs("XDG_STATE_HOME")
        .or_else(|| home().map(|h| h.join(".local/state")))
        .map(|d| d.join("airlock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults_and_unknown_keys_fail() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        let e = Config::from_toml("sockett = \"/x\"").unwrap_err();
        assert!(e.to_string().contains("sockett"), "{e}");
        let e = Config::from_toml("[server]\nmax_body = 1").unwrap_err();
        assert!(e.to_string().contains("max_body"), "{e}");
    }

    #[test]
    fn sections_parse() {
        let c = Config::from_toml(
            r#"
workspaces = ["/home/u/proj"]
[[classify]]
pattern = "**/finance/**"
labels = ["confidential"]
[quotas]
requests_per_minute = 5
[quotas.actions.exec]
requests_per_minute = 1
[profiles.tight]
workspace = "read-only"
"#,
        )
        .unwrap();
        assert_eq!(c.workspaces, vec![PathBuf::from("/home/u/proj")]);
        assert_eq!(c.classify[0].labels, vec!["confidential".to_string()]);
        assert_eq!(c.quotas.requests_per_minute, Some(5));
        assert_eq!(c.quotas.actions["exec"].requests_per_minute, Some(1));
        assert!(c.profiles.contains_key("tight"));
    }
}
