//! Named profiles: a reusable set of grants and limits. Three ship built in
//! (`read-only`, `workspace-write`, `build`); the broker's config embeds more
//! as `[profiles.NAME]` tables.

use serde::{Deserialize, Serialize};

use crate::{Layer, Limits};

/// How a profile exposes the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceAccess {
    /// Read-only.
    ReadOnly,
    /// Writable, staged for review (the default).
    #[default]
    Staged,
    /// Writable directly.
    WriteThrough,
}

/// A named sandbox profile (TOML: `[profiles.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Workspace access. Default: `staged`.
    #[serde(default)]
    pub workspace: WorkspaceAccess,
    /// Extra read-only paths (`~/` expands to the home directory).
    #[serde(default)]
    pub allow_read: Vec<String>,
    /// Extra read-write paths (`~/` expands to the home directory).
    #[serde(default)]
    pub allow_write: Vec<String>,
    /// Network destinations `HOST[:PORT]`. Default: none.
    #[serde(default)]
    pub allow_net: Vec<String>,
    /// Extra environment variables passed (`NAME` or `NAME=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Layers this profile accepts running without.
    #[serde(default)]
    pub allow_degraded: Vec<Layer>,
}

impl Profile {
    /// Names of the built-in profiles.
    pub const BUILTIN: &'static [&'static str] = &["read-only", "workspace-write", "build"];

    /// A built-in profile by name.
    ///
    /// - `read-only`: workspace read-only, 2 GiB memory, 256 processes.
    /// - `workspace-write` (default): workspace staged, 4 GiB, 512
    ///   processes, 4 GiB disk.
    /// - `build`: like `workspace-write` plus read-only toolchain caches
    ///   (`~/.cargo`, `~/.rustup`) and writable `~/.cache`, 8 GiB, 2048
    ///   processes, 16 GiB disk.
    pub fn builtin(name: &str) -> Option<Profile> {
        const G: u64 = 1 << 30;
        match name {
            "read-only" => Some(Profile {
                workspace: WorkspaceAccess::ReadOnly,
                limits: Limits {
                    memory: Some(2 * G),
                    pids: Some(256),
                    ..Default::default()
                },
                ..Default::default()
            }),
            "workspace-write" => Some(Profile {
                workspace: WorkspaceAccess::Staged,
                limits: Limits {
                    memory: Some(4 * G),
                    pids: Some(512),
                    disk: Some(4 * G),
                    ..Default::default()
                },
                ..Default::default()
            }),
            "build" => Some(Profile {
                workspace: WorkspaceAccess::Staged,
                allow_read: vec!["~/.cargo".into(), "~/.rustup".into()],
                allow_write: vec!["~/.cache".into()],
                limits: Limits {
                    memory: Some(8 * G),
                    pids: Some(2048),
                    disk: Some(16 * G),
                    ..Default::default()
                },
                ..Default::default()
            }),
            _ => None,
        }
    }

    /// Expand `~/` against `home`.
    pub fn expand(path: &str, home: Option<&str>) -> Option<std::path::PathBuf> {
        match (path.strip_prefix("~/"), home) {
            (Some(rest), Some(h)) => Some(std::path::Path::new(h).join(rest)),
            (Some(_), None) => None,
            (None, _) => Some(path.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_exist_and_roundtrip() {
        for n in Profile::BUILTIN {
            let p = Profile::builtin(n).unwrap();
            let j = serde_json::to_string(&p).unwrap();
            let back: Profile = serde_json::from_str(&j).unwrap();
            assert_eq!(p, back);
        }
        assert!(Profile::builtin("nope").is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<Profile, _> =
            serde_json::from_str(r#"{"workspace":"staged","allow_nett":[]}"#);
        assert!(r.is_err());
        let p: Profile =
            serde_json::from_str(r#"{"workspace":"read-only","limits":{"pids":3}}"#).unwrap();
        assert_eq!(p.workspace, WorkspaceAccess::ReadOnly);
        assert_eq!(p.limits.pids, Some(3));
    }

    #[test]
    fn expand_home() {
        assert_eq!(
            Profile::expand("~/.cargo", Some("/home/u")).unwrap(),
            std::path::PathBuf::from("/home/u/.cargo")
        );
        assert_eq!(
            Profile::expand("/opt/x", None).unwrap(),
            std::path::PathBuf::from("/opt/x")
        );
        assert!(Profile::expand("~/.cargo", None).is_none());
    }
}
