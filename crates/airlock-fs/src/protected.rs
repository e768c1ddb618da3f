//! Protected paths: files that run code later, outside the sandbox (git
//! hooks and config, shell rc files, editor and agent configuration,
//! direnv), so commit never writes them and the sandbox mounts them
//! read-only.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::FsError;

/// A compiled [`crate::ProtectedPaths`] list, for matching many paths.
///
/// Patterns of the forms `LIT`, `**/LIT`, `LIT/**` and `**/LIT/**` (LIT
/// without glob characters: most of the default list) are matched by
/// comparing strings, exactly as the glob would match. The others are
/// compiled to a glob set the first time a path has every literal component
/// of one of them (`.git`, `modules` and `hooks` for
/// `**/.git/modules/**/hooks`), which no path can match otherwise. Compiling
/// every pattern would cost about half a millisecond, paid by every
/// `airlock run`.
#[derive(Debug, Clone)]
pub struct ProtectedMatcher {
    patterns: Vec<String>,
    literal: Vec<(usize, Literal)>,
    /// The other patterns: index in `patterns`, parsed glob, literal
    /// components.
    globbed: Vec<(usize, Glob, Vec<String>)>,
    /// Built on first need; `None` if building failed (then a path that
    /// could match is treated as matching: fail closed).
    set: std::sync::OnceLock<Option<GlobSet>>,
}

/// A pattern without glob characters other than a leading `**/` and a
/// trailing `/**`.
#[derive(Debug, Clone)]
struct Literal {
    lit: String,
    /// Leading `**/`: at any depth.
    any_depth: bool,
    /// Trailing `/**`: what is beneath it (not the path itself).
    beneath: bool,
}

impl Literal {
    fn parse(p: &str) -> Option<Literal> {
        let (any_depth, rest) = match p.strip_prefix("**/") {
            Some(r) => (true, r),
            None => (false, p),
        };
        let (beneath, lit) = match rest.strip_suffix("/**") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let plain = !lit.is_empty()
            && !lit.starts_with('/')
            && !lit.ends_with('/')
            && !lit.contains("//")
            && !lit.contains(GLOB_CHARS);
        plain.then(|| Literal {
            lit: lit.to_string(),
            any_depth,
            beneath,
        })
    }

    /// What globset matches for the same pattern: `**/` is `(?:/?|.*/)`,
    /// `/**` is `/.*`.
    fn matches(&self, path: &str) -> bool {
        let lit = self.lit.as_str();
        let at = |rest: &str| -> bool {
            if self.beneath {
                rest.strip_prefix(lit).is_some_and(|r| r.starts_with('/'))
            } else {
                rest == lit
            }
        };
        if at(path) {
            return true;
        }
        if !self.any_depth {
            return false;
        }
        // `**/` also matches a leading `/`, and any prefix ending in `/`.
        path.match_indices('/').any(|(i, _)| at(&path[i + 1..]))
    }
}

/// Characters with a meaning in a glob.
const GLOB_CHARS: [char; 7] = ['*', '?', '[', ']', '{', '}', '\\'];

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

impl ProtectedMatcher {
    /// Compile `patterns`; an invalid pattern is an error naming it.
    pub fn new(patterns: &[String]) -> Result<ProtectedMatcher, FsError> {
        let mut literal = vec![];
        let mut globbed = vec![];
        for (i, p) in patterns.iter().enumerate() {
            if let Some(l) = Literal::parse(p) {
                literal.push((i, l));
                continue;
            }
            let g = glob(p).map_err(|e| FsError::Invalid {
                path: p.clone(),
                why: format!("invalid protected-path pattern: {e}"),
            })?;
            let lits = p
                .split('/')
                .filter(|c| !c.is_empty() && !c.contains(GLOB_CHARS))
                .map(str::to_string)
                .collect();
            globbed.push((i, g, lits));
        }
        Ok(ProtectedMatcher {
            patterns: patterns.to_vec(),
            literal,
            globbed,
            set: std::sync::OnceLock::new(),
        })
    }

    /// The lowest index of a pattern matching `path` itself.
    fn first_match(&self, path: &str) -> Option<usize> {
        let lit = self
            .literal
            .iter()
            .find(|(_, l)| l.matches(path))
            .map(|(i, _)| *i);
        // With `literal_separator`, a literal component of a glob matches
        // only an equal component of the path.
        let possible = |lits: &Vec<String>| lits.iter().all(|l| path.split('/').any(|c| c == l));
        let glob = if self.globbed.iter().any(|(_, _, l)| possible(l)) {
            let set = self.set.get_or_init(|| {
                let mut b = GlobSetBuilder::new();
                for (_, g, _) in &self.globbed {
                    b.add(g.clone());
                }
                b.build()
                    .map_err(|e| tracing::warn!(error = %e, "protected-path globs do not compile; treating paths they could match as protected"))
                    .ok()
            });
            match set {
                Some(set) => set.matches(path).iter().map(|&k| self.globbed[k].0).min(),
                None => self
                    .globbed
                    .iter()
                    .filter(|(_, _, l)| possible(l))
                    .map(|(i, _, _)| *i)
                    .min(),
            }
        } else {
            None
        };
        match (lit, glob) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
            if let Some(i) = self.first_match(c) {
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

    /// The string comparison for literal patterns answers exactly what
    /// the compiled glob answers, over every path built from the names the
    /// patterns use (and a few others), with and without a trailing `/`.
    #[test]
    fn literal_patterns_match_exactly_as_their_globs() {
        let mut patterns: Vec<String> = super::DEFAULT_PROTECTED
            .iter()
            .map(|s| s.to_string())
            .collect();
        patterns.extend(
            [
                "secrets",
                "build/out",
                "x/**",
                "**/a.b",
                ".env",
                "**/q/r/**",
                "**/*.pem",
                "a*/b",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let m = super::ProtectedMatcher::new(&patterns).unwrap();
        assert!(m.literal.len() > 30, "most of the default list is literal");
        let d = super::ProtectedMatcher::new(&patterns[..super::DEFAULT_PROTECTED.len()]).unwrap();
        assert_eq!(d.first_match(".git"), None);
        assert_eq!(d.first_match("src/.git/hooks"), Some(0));
        assert!(
            d.set.get().is_none(),
            "the default list's globs are not compiled for .git or hooks"
        );
        assert!(d.first_match(".git/modules/m/hooks").is_some());
        assert!(d.set.get().is_some());
        let globs: Vec<globset::GlobMatcher> = patterns
            .iter()
            .map(|p| super::glob(p).unwrap().compile_matcher())
            .collect();
        let names = [
            ".git",
            "hooks",
            "config",
            "modules",
            "worktrees",
            "w1",
            ".vscode",
            ".config",
            "fish",
            "git",
            ".ssh",
            "id_rsa",
            "secrets",
            "build",
            "out",
            "x",
            "a.b",
            "q",
            "r",
            ".env",
            "k.pem",
            "src",
            "",
        ];
        let mut paths = vec![String::new()];
        let mut checked = 0;
        for _depth in 0..3 {
            let mut next = vec![];
            for p in &paths {
                for n in names {
                    let q = if p.is_empty() {
                        n.to_string()
                    } else {
                        format!("{p}/{n}")
                    };
                    for cand in [q.clone(), format!("{q}/"), format!("/{q}")] {
                        let want = globs.iter().position(|g| g.is_match(&cand));
                        assert_eq!(m.first_match(&cand), want, "{cand:?}");
                        checked += 1;
                    }
                    next.push(q);
                }
            }
            paths = next;
        }
        assert!(checked > 30_000);
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
