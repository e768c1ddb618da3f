//! Named profiles: a reusable set of grants and limits. Three ship built in
//! (`read-only`, `workspace-write`, `build`); the broker's config embeds more
//! as `[profiles.NAME]` tables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Layer, Limits, SandboxError};

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

/// The `[profiles.NAME]` tables of a config file. Other top-level keys
/// belong to their owners (the broker's config) and are ignored here;
/// unknown keys *inside* a profile are refused.
pub fn profiles_from_toml(
    text: &str,
    path: &str,
) -> Result<BTreeMap<String, Profile>, SandboxError> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        profiles: BTreeMap<String, Profile>,
    }
    let f: File = toml::from_str(text).map_err(|e| SandboxError::Config {
        path: path.into(),
        why: e.to_string(),
    })?;
    for (name, p) in &f.profiles {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SandboxError::Config {
                path: path.into(),
                why: format!("profile name {name:?}: use letters, digits, - and _"),
            });
        }
        p.limits_valid().map_err(|why| SandboxError::Config {
            path: path.into(),
            why: format!("[profiles.{name}]: {why}"),
        })?;
    }
    Ok(f.profiles)
}

/// The profiles available: the built-in ones, overridden or extended by
/// `[profiles.NAME]` tables of the config file at `config` (a missing file
/// is fine).
pub fn load_profiles(
    config: Option<&std::path::Path>,
) -> Result<BTreeMap<String, Profile>, SandboxError> {
    let mut all: BTreeMap<String, Profile> = Profile::BUILTIN
        .iter()
        .filter_map(|n| Profile::builtin(n).map(|p| (n.to_string(), p)))
        .collect();
    if let Some(path) = config {
        match std::fs::read_to_string(path) {
            Ok(text) => all.extend(profiles_from_toml(&text, &path.display().to_string())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SandboxError::Config {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })
            }
        }
    }
    Ok(all)
}

/// One profile by name (see [`load_profiles`]).
pub fn find_profile(name: &str, config: Option<&std::path::Path>) -> Result<Profile, SandboxError> {
    let mut all = load_profiles(config)?;
    all.remove(name).ok_or_else(|| {
        SandboxError::Spec(format!(
            "unknown profile {name:?} (known: {})",
            all.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

impl Profile {
    fn limits_valid(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.memory == Some(0) || l.pids == Some(0) || l.disk == Some(0) {
            return Err("limits must be positive".into());
        }
        if l.timeout.is_some_and(|d| d.is_zero()) || l.cpu_time.is_some_and(|d| d.is_zero()) {
            return Err("durations must be positive".into());
        }
        Ok(())
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

    #[test]
    fn config_file_adds_and_overrides() {
        let text = r#"
            [server]
            socket = "ignored here"

            [profiles.net-build]
            workspace = "staged"
            allow_net = ["crates.io:443"]
            limits = { memory = "1G", pids = 64, timeout = "60s", cpu_time = 30 }

            [profiles.read-only]
            workspace = "read-only"
            allow_read = ["~/.config/tool"]
        "#;
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("config.toml");
        std::fs::write(&f, text).unwrap();
        let all = load_profiles(Some(&f)).unwrap();
        assert_eq!(
            all["net-build"].allow_net,
            vec!["crates.io:443".to_string()]
        );
        assert_eq!(all["net-build"].limits.pids, Some(64));
        assert_eq!(all["net-build"].limits.memory, Some(1 << 30));
        assert_eq!(
            all["net-build"].limits.timeout,
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(
            all["net-build"].limits.cpu_time,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            all["read-only"].allow_read,
            vec!["~/.config/tool".to_string()]
        );
        assert!(all.contains_key("build"));
        assert!(find_profile("nope", Some(&f))
            .unwrap_err()
            .to_string()
            .contains("net-build"));
        // Missing file: built-ins only.
        assert_eq!(
            load_profiles(Some(&t.path().join("none.toml")))
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn config_file_errors_are_refused() {
        assert!(profiles_from_toml("[profiles.x]\nallow_nett = []\n", "c").is_err());
        assert!(profiles_from_toml("[profiles.\"bad name\"]\n", "c").is_err());
        assert!(profiles_from_toml("[profiles.x]\nlimits = { pids = 0 }\n", "c").is_err());
    }
}
