//! Protected paths: files that run code later, outside the sandbox (git
//! hooks and config, shell rc files, editor and agent configuration,
//! direnv), so commit never writes them and the sandbox mounts them
//! read-only.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::FsError;

/// A compiled [`crate::ProtectedPaths`] list, for matching many paths.
#[derive(Debug, Clone)]
pub struct ProtectedMatcher {
    patterns: Vec<String>,
    set: GlobSet,
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

impl ProtectedMatcher {
    /// Compile `patterns`; an invalid pattern is an error naming it.
    pub fn new(patterns: &[String]) -> Result<ProtectedMatcher, FsError> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = glob(p).map_err(|e| FsError::Invalid {
                path: p.clone(),
                why: format!("invalid protected-path pattern: {e}"),
            })?;
            b.add(g);
        }
        let set = b.build().map_err(|e| FsError::Invalid {
            path: patterns.join(","),
            why: format!("invalid protected-path patterns: {e}"),
        })?;
        Ok(ProtectedMatcher {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// The first pattern (in list order) matching `rel`, a `/`-separated
    /// path relative to the workspace root. A path with a protected
    /// ancestor (`.git/hooks` when `rel` is `.git/hooks/pre-commit`) also
    /// matches, as does a leading `./`.
    pub fn matches(&self, rel: &str) -> Option<String> {
        let rel = rel.trim_start_matches("./").trim_start_matches('/');
        if rel.is_empty() || rel == "." {
            return None;
        }
        // Check the path and every ancestor, so a pattern naming a
        // directory also covers what is inside it.
        let mut candidates = vec![rel];
        let mut cur = rel;
        while let Some((parent, _)) = cur.rsplit_once('/') {
            candidates.push(parent);
            cur = parent;
        }
        let mut best: Option<usize> = None;
        for c in candidates {
            if let Some(&i) = self.set.matches(c).iter().min() {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        }
        best.map(|i| self.patterns[i].clone())
    }
}

/// The default list: `.git/hooks` and `.git/config` at any depth (also in
/// submodules under `.git/modules`), `.gitmodules`, shell rc and profile
/// files, `.envrc`, `.mcp.json`, `.vscode/`, `.idea/`, agent config dirs
/// (`.claude/`, `.codex/`, `.cursor/`, `.gemini/`), hook managers and
/// login-time configuration under a home directory (`.ssh/`, `.gitconfig`,
/// `.config/{fish,git,autostart,systemd}`).
pub const DEFAULT_PROTECTED: &[&str] = &[
    // git: hooks and config run code on the next git command.
    "**/.git/hooks",
    "**/.git/hooks/**",
    "**/.git/config",
    "**/.git/config.worktree",
    "**/.git/modules/**/hooks",
    "**/.git/modules/**/hooks/**",
    "**/.git/modules/**/config",
    "**/.git/worktrees/*/config.worktree",
    "**/.gitmodules",
    "**/.husky/**",
    "**/.pre-commit-config.yaml",
    // Shells and environment loaders.
    "**/.bashrc",
    "**/.bash_profile",
    "**/.bash_login",
    "**/.bash_logout",
    "**/.profile",
    "**/.zshrc",
    "**/.zprofile",
    "**/.zshenv",
    "**/.zlogin",
    "**/.zlogout",
    "**/.envrc",
    "**/.config/fish/**",
    // Home-directory configuration that runs code or grants access.
    "**/.ssh/**",
    "**/.gitconfig",
    "**/.config/git/**",
    "**/.config/autostart/**",
    "**/.config/systemd/**",
    // Editors and agents: settings, tasks and MCP servers they launch.
    "**/.mcp.json",
    "**/.vscode",
    "**/.vscode/**",
    "**/.idea",
    "**/.idea/**",
    "**/.claude",
    "**/.claude/**",
    "**/.codex",
    "**/.codex/**",
    "**/.cursor",
    "**/.cursor/**",
    "**/.gemini",
    "**/.gemini/**",
];

impl crate::ProtectedPaths {
    /// Compile the patterns once, for matching many paths.
    pub fn compile(&self) -> Result<ProtectedMatcher, FsError> {
        ProtectedMatcher::new(&self.patterns)
    }

    /// Check that every pattern compiles (for config loading).
    pub fn validate(&self) -> Result<(), FsError> {
        self.compile().map(|_| ())
    }
}

/// Fail-closed matching used by [`crate::ProtectedPaths::matches`]: if the
/// list does not compile, every path counts as protected.
pub(crate) fn matches_or_all(patterns: &[String], rel: &str) -> Option<String> {
    match ProtectedMatcher::new(patterns) {
        Ok(m) => m.matches(rel),
        Err(e) => {
            tracing::warn!(error = %e, "protected-path list does not compile; treating every path as protected");
            Some(format!("(invalid protected-path list: {e})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ProtectedPaths;

    fn m(rel: &str) -> Option<String> {
        ProtectedPaths::default().matches(rel)
    }

    #[test]
    fn git_hooks_and_config_at_any_depth() {
        assert_eq!(m(".git/hooks").as_deref(), Some("**/.git/hooks"));
        assert!(m(".git/hooks/pre-commit").is_some());
        assert!(m("sub/dir/.git/hooks/post-checkout").is_some());
        assert!(m(".git/config").is_some());
        assert!(m("vendor/x/.git/config").is_some());
        assert!(m(".git/modules/lib/hooks/pre-commit").is_some());
        assert!(m(".git/modules/a/b/config").is_some());
        assert!(m(".gitmodules").is_some());
        assert!(m(".git/objects/ab/cdef").is_none());
        assert!(m(".git/HEAD").is_none());
    }

    #[test]
    fn editor_agent_and_shell_files() {
        for p in [
            ".bashrc",
            "home/u/.zshrc",
            ".envrc",
            ".mcp.json",
            "pkg/.mcp.json",
            ".vscode",
            ".vscode/tasks.json",
            ".idea/workspace.xml",
            ".claude/settings.json",
            ".codex/config.toml",
            ".cursor/mcp.json",
            ".gemini/settings.json",
            ".config/fish/config.fish",
            ".ssh/authorized_keys",
            ".husky/pre-commit",
        ] {
            assert!(m(p).is_some(), "{p} should be protected");
        }
        for p in [
            "src/main.rs",
            "README.md",
            "bashrc",
            ".bashrc.bak",
            "docs/.vscodeish",
            "a.mcp.json",
        ] {
            assert!(m(p).is_none(), "{p} should not be protected");
        }
    }

    #[test]
    fn leading_dot_slash_and_ancestors() {
        assert!(m("./.git/config").is_some());
        let p = ProtectedPaths {
            patterns: vec!["secrets".into()],
        };
        assert_eq!(p.matches("secrets/a/b").as_deref(), Some("secrets"));
        assert!(p.matches("x/secrets").is_none());
        assert!(p.matches("secretsx").is_none());
    }

    #[test]
    fn returns_first_pattern_in_list_order() {
        let p = ProtectedPaths {
            patterns: vec!["*.txt".into(), "a.txt".into()],
        };
        assert_eq!(p.matches("a.txt").as_deref(), Some("*.txt"));
        // `*` does not cross `/`.
        assert!(p.matches("d/a.txt").is_none());
    }

    #[test]
    fn invalid_pattern_fails_closed() {
        let p = ProtectedPaths {
            patterns: vec!["a[".into()],
        };
        assert!(p.validate().is_err());
        assert!(p.matches("anything").is_some());
    }
}
