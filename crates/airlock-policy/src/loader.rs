//! Reading policy files, detecting Rego v0/v1, compiling the active set.
//!
//! A policy set is compiled into one regorus [`Engine`] holding every module
//! plus a generated module (`package airlock.internal.votes`) whose single
//! rule `result` is an array with one slot per voting rule of every voting
//! package. That rule is compiled to a bytecode program for the regorus VM,
//! so one evaluation per path runs one program. When the VM compiler does not
//! support a construct the policy uses (for example `with` outside tests), the
//! set falls back to the tree-walking interpreter, which is slower but
//! evaluates the same rule.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::unstable::{Expr, Rule, RuleHead};
use regorus::Engine;
use sha2::{Digest, Sha256};

use crate::{ModuleInfo, PolicyError, DEFAULT_POLICY, DEFAULT_POLICY_TESTS};

/// Package of the embedded default policy.
pub(crate) const DEFAULT_PACKAGE: &str = "airlock.default";
/// Display name of the embedded default policy.
pub(crate) const DEFAULT_SOURCE: &str = "embedded:default.rego";
/// Display name of the embedded default policy's tests.
pub(crate) const DEFAULT_TESTS_SOURCE: &str = "embedded:default_test.rego";
/// Package prefix reserved for generated modules.
const RESERVED_PREFIX: &str = "airlock.internal";
/// The generated module's package and entry rule.
const VOTES_PACKAGE: &str = "airlock.internal.votes";
pub(crate) const VOTES_ENTRY: &str = "data.airlock.internal.votes.result";

/// One policy source: a display name (file path or `embedded:...`), the
/// name used for the revision hash, and its text.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub display: String,
    pub hash_name: String,
    pub text: String,
}

/// The rules of a package that take part in the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Decision,
    Deny,
    Ask,
    Allow,
    PolicyId,
    /// `mcp_secrets`: `"allow"` or `"redact"`, what happens to secrets found in
    /// an MCP call that goes ahead.
    Secrets,
}

impl Slot {
    const ALL: [Slot; 6] = [
        Slot::Decision,
        Slot::Deny,
        Slot::Ask,
        Slot::Allow,
        Slot::PolicyId,
        Slot::Secrets,
    ];

    pub(crate) fn rule_name(self) -> &'static str {
        match self {
            Slot::Decision => "decision",
            Slot::Deny => "deny",
            Slot::Ask => "ask",
            Slot::Allow => "allow",
            Slot::PolicyId => "policy_id",
            Slot::Secrets => "mcp_secrets",
        }
    }
}

/// A package that votes, with the index of each of its declared rules in the
/// generated `result` array.
#[derive(Debug, Clone, Default)]
pub(crate) struct Voter {
    pub package: String,
    pub decision: Option<usize>,
    pub deny: Option<usize>,
    pub ask: Option<usize>,
    pub allow: Option<usize>,
    pub policy_id: Option<usize>,
    pub secrets: Option<usize>,
}

impl Voter {
    fn slot_mut(&mut self, slot: Slot) -> &mut Option<usize> {
        match slot {
            Slot::Decision => &mut self.decision,
            Slot::Deny => &mut self.deny,
            Slot::Ask => &mut self.ask,
            Slot::Allow => &mut self.allow,
            Slot::PolicyId => &mut self.policy_id,
            Slot::Secrets => &mut self.secrets,
        }
    }
}

/// How the compiled set is evaluated.
pub(crate) enum Backend {
    /// Bytecode program for the regorus VM; VMs are pooled per set.
    Vm {
        program: Arc<Program>,
        pool: Mutex<Vec<regorus::rvm::vm::RegoVM>>,
    },
    /// Tree-walking interpreter; engines are cloned from a warmed prototype.
    Interpreter {
        proto: Box<Engine>,
        pool: Mutex<Vec<Engine>>,
    },
}

/// A compiled, immutable policy set.
pub(crate) struct ActiveSet {
    pub revision: String,
    pub modules: Vec<ModuleInfo>,
    pub voters: Vec<Voter>,
    pub slots: usize,
    pub backend: Backend,
    /// The policy directory's state as seen just before its files were read.
    pub fingerprint: crate::watch::Fingerprint,
}

/// Rules declared by one parsed module.
#[derive(Debug, Clone)]
pub(crate) struct ParsedModule {
    pub display: String,
    pub package: String,
    /// Voting rules declared in this module.
    pub declared: Vec<Slot>,
    /// `test_*` rules declared in this module.
    pub tests: Vec<String>,
}

/// Where the user's policy directory is when the config does not say.
pub(crate) fn default_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Some(p.join("airlock").join("policy"));
        }
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    home.is_absolute()
        .then(|| home.join(".config").join("airlock").join("policy"))
}

/// Whether a directory entry name is a policy file we load.
pub(crate) fn is_policy_file_name(name: &str, include_tests: bool) -> bool {
    if name.starts_with('.') || !name.ends_with(".rego") || name.len() == ".rego".len() {
        return false;
    }
    include_tests || !name.ends_with("_test.rego")
}

/// Policy file names in `dir` (sorted), not recursive.
pub(crate) fn list_policy_files(
    dir: &Path,
    include_tests: bool,
) -> Result<Vec<PathBuf>, PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_policy_file_name(name, include_tests) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: a dangling link is an error, a directory is skipped.
        let meta = std::fs::metadata(&path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Read the policy files of `dir`. A missing directory is an empty set only
/// when `missing_ok`.
pub(crate) fn read_dir_sources(
    dir: &Path,
    include_tests: bool,
    missing_ok: bool,
) -> Result<Vec<SourceFile>, PolicyError> {
    let files = match list_policy_files(dir, include_tests) {
        Ok(files) => files,
        Err(PolicyError::Io { source, .. })
            if missing_ok && source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::debug!(dir = %dir.display(), "policy directory does not exist; no user policies");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        let hash_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(SourceFile {
            display: path.display().to_string(),
            hash_name,
            text,
        });
    }
    Ok(out)
}

/// The embedded default policy as a source.
pub(crate) fn default_source() -> SourceFile {
    SourceFile {
        display: DEFAULT_SOURCE.into(),
        hash_name: DEFAULT_SOURCE.into(),
        text: DEFAULT_POLICY.into(),
    }
}

/// The embedded default policy's tests as a source.
pub(crate) fn default_tests_source() -> SourceFile {
    SourceFile {
        display: DEFAULT_TESTS_SOURCE.into(),
        hash_name: DEFAULT_TESTS_SOURCE.into(),
        text: DEFAULT_POLICY_TESTS.into(),
    }
}

/// Whether the text visibly uses Rego v1 keywords (`if`, or `contains` as a
/// keyword rather than the `contains(...)` builtin) without opting into them
/// through `import future.keywords`. Such a file is never re-read as v0,
/// where those words would silently become identifiers.
fn uses_v1_keywords(text: &str) -> bool {
    if text.contains("future.keywords") {
        return false;
    }
    let mut words = Vec::new();
    for line in text.lines() {
        // Drop comments and string literals (roughly: enough for keyword spotting).
        let mut cleaned = String::with_capacity(line.len());
        let mut in_str = false;
        let mut in_raw = false;
        let mut prev = '\0';
        for ch in line.chars() {
            if in_str {
                if ch == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && ch == '\\' { '\0' } else { ch };
                cleaned.push(' ');
                continue;
            }
            if in_raw {
                if ch == '`' {
                    in_raw = false;
                }
                cleaned.push(' ');
                continue;
            }
            match ch {
                '#' => break,
                '"' => {
                    in_str = true;
                    prev = '\0';
                    cleaned.push(' ');
                }
                '`' => {
                    in_raw = true;
                    cleaned.push(' ');
                }
                c => cleaned.push(c),
            }
        }
        words.push(cleaned);
    }
    let text = words.join("\n");
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for (word, needs_no_paren) in [("if", false), ("contains", true)] {
        let mut start = 0;
        while let Some(pos) = text[start..].find(word) {
            let at = start + pos;
            let end = at + word.len();
            start = end;
            let before_ok = at == 0 || !is_ident(bytes[at - 1]) && bytes[at - 1] != b'.';
            let after_ok = end >= bytes.len() || !is_ident(bytes[end]);
            if !(before_ok && after_ok) {
                continue;
            }
            if needs_no_paren {
                let rest = text[end..].trim_start();
                if rest.starts_with('(') {
                    continue;
                }
            }
            return true;
        }
    }
    false
}

/// Parse one source into `engine`, as Rego v1 first and, failing that, as
/// Rego v0 (unless the text clearly uses v1 keywords). Returns the module's
/// package (`a.b`, without `data.`).
pub(crate) fn add_source(engine: &mut Engine, src: &SourceFile) -> Result<(), PolicyError> {
    let compile_err = |message: String| PolicyError::Compile {
        path: PathBuf::from(&src.display),
        message,
    };
    engine.set_rego_v0(false);
    let v1 = engine.add_policy(src.display.clone(), src.text.clone());
    let v1_err = match v1 {
        Ok(_) => return Ok(()),
        Err(e) => e.to_string(),
    };
    if uses_v1_keywords(&src.text) {
        return Err(compile_err(v1_err.trim().to_string()));
    }
    engine.set_rego_v0(true);
    let v0 = engine.add_policy(src.display.clone(), src.text.clone());
    engine.set_rego_v0(false);
    match v0 {
        Ok(_) => Ok(()),
        Err(v0_err) => Err(compile_err(format!(
            "not valid Rego v1: {}\nnot valid Rego v0 either: {}",
            v1_err.trim(),
            v0_err.to_string().trim()
        ))),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Name of a rule head reference when it is a plain identifier.
fn head_name(refr: &Expr) -> Option<String> {
    match refr {
        Expr::Var { span, .. } => Some(span.text().to_string()),
        _ => None,
    }
}

/// Parse every source into a fresh engine and describe the modules.
pub(crate) fn parse_all(
    sources: &[SourceFile],
) -> Result<(Engine, Vec<ParsedModule>), PolicyError> {
    let mut engine = Engine::new();
    for src in sources {
        add_source(&mut engine, src)?;
    }
    let modules = engine.get_modules().clone();
    let mut parsed = Vec::with_capacity(modules.len());
    for (module, src) in modules.iter().zip(sources) {
        let package = module.package.refr.span().text().trim().to_string();
        if !package.split('.').all(is_ident) {
            return Err(PolicyError::Compile {
                path: PathBuf::from(&src.display),
                message: format!(
                    "package `{package}` is not a dotted path of identifiers; Airlock needs packages like `package team.rules`"
                ),
            });
        }
        if package == RESERVED_PREFIX || package.starts_with(&format!("{RESERVED_PREFIX}.")) {
            return Err(PolicyError::Compile {
                path: PathBuf::from(&src.display),
                message: format!(
                    "package `{package}` is reserved for Airlock; choose another package name"
                ),
            });
        }
        let mut declared = Vec::new();
        let mut tests = Vec::new();
        for rule in &module.policy {
            let name = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. },
                    ..
                } => head_name(refr),
                Rule::Default { refr, args, .. } if args.is_empty() => head_name(refr),
                _ => None,
            };
            let Some(name) = name else { continue };
            if let Some(slot) = Slot::ALL.into_iter().find(|s| s.rule_name() == name) {
                if !declared.contains(&slot) {
                    declared.push(slot);
                }
            } else if name.starts_with("test_") && !tests.contains(&name) {
                tests.push(name);
            }
        }
        parsed.push(ParsedModule {
            display: src.display.clone(),
            package,
            declared,
            tests,
        });
    }
    Ok((engine, parsed))
}

/// `sha256:` and the first 12 hex digits of a hash over the sorted
/// (name, content) pairs.
pub(crate) fn revision_of(sources: &[SourceFile]) -> String {
    let mut pairs: Vec<(&str, &str)> = sources
        .iter()
        .map(|s| (s.hash_name.as_str(), s.text.as_str()))
        .collect();
    pairs.sort();
    let mut h = Sha256::new();
    for (name, text) in pairs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let hex = hex::encode(h.finalize());
    format!("sha256:{}", &hex[..12])
}

/// Rego text of `data.<package>.<rule>` with every component bracketed.
fn data_ref(package: &str, rule: &str) -> String {
    let mut s = String::from("data");
    for part in package.split('.').chain(std::iter::once(rule)) {
        s.push_str("[\"");
        s.push_str(part);
        s.push_str("\"]");
    }
    s
}

/// Compile the given user sources (plus the embedded default when wanted and
/// not replaced) into an active set.
pub(crate) fn compile_set(
    user: Vec<SourceFile>,
    include_default: bool,
    fingerprint: crate::watch::Fingerprint,
) -> Result<ActiveSet, PolicyError> {
    // Parse user files alone first to learn whether they replace the default.
    let (_, user_parsed) = parse_all(&user)?;
    let replaces_default = user_parsed.iter().any(|m| m.package == DEFAULT_PACKAGE);
    let mut sources = Vec::with_capacity(user.len() + 1);
    if include_default && !replaces_default {
        sources.push(default_source());
    }
    sources.extend(user);
    let (mut engine, parsed) = parse_all(&sources)?;

    // Voting packages in source order, merging modules of the same package.
    let mut voters: Vec<Voter> = Vec::new();
    let mut slot_refs: Vec<String> = Vec::new();
    for m in &parsed {
        if m.declared.iter().all(|s| *s == Slot::PolicyId) {
            continue;
        }
        if !voters.iter().any(|v| v.package == m.package) {
            voters.push(Voter {
                package: m.package.clone(),
                ..Voter::default()
            });
        }
    }
    for voter in &mut voters {
        let package = voter.package.clone();
        for m in parsed.iter().filter(|m| m.package == package) {
            for slot in &m.declared {
                let entry = voter.slot_mut(*slot);
                if entry.is_none() {
                    *entry = Some(slot_refs.len());
                    slot_refs.push(data_ref(&package, slot.rule_name()));
                }
            }
        }
    }

    let mut gen = format!("package {VOTES_PACKAGE}\n\nimport rego.v1\n\n");
    for (i, r) in slot_refs.iter().enumerate() {
        gen.push_str(&format!("default s{i} := null\n\ns{i} := {r}\n\n"));
    }
    let items: Vec<String> = (0..slot_refs.len()).map(|i| format!("s{i}")).collect();
    gen.push_str(&format!("result := [{}]\n", items.join(", ")));
    engine.set_rego_v0(false);
    engine
        .add_policy("embedded:votes.rego".into(), gen)
        .map_err(|e| PolicyError::Compile {
            path: PathBuf::from("embedded:votes.rego"),
            message: e.to_string(),
        })?;

    let backend = compile_backend(&mut engine)?;
    let modules = parsed
        .iter()
        .map(|m| ModuleInfo {
            package: m.package.clone(),
            source: m.display.clone(),
        })
        .collect();
    Ok(ActiveSet {
        revision: revision_of(&sources),
        modules,
        voters,
        slots: slot_refs.len(),
        backend,
        fingerprint,
    })
}

fn compile_backend(engine: &mut Engine) -> Result<Backend, PolicyError> {
    let entry: regorus::Rc<str> = VOTES_ENTRY.into();
    let compiled = engine
        .compile_with_entrypoint(&entry)
        .map_err(|e| PolicyError::Compile {
            path: PathBuf::from("policy set"),
            message: e.to_string(),
        })?;
    match Compiler::compile_from_policy(&compiled, &[VOTES_ENTRY]) {
        Ok(program) => Ok(Backend::Vm {
            program,
            pool: Mutex::new(Vec::new()),
        }),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "policy set uses a construct the bytecode compiler does not support; evaluating it with the slower interpreter"
            );
            // Warm the prototype so clones do not redo preparation.
            let mut proto = engine.clone();
            proto.set_input(regorus::Value::new_object());
            proto
                .eval_rule(VOTES_ENTRY.to_string())
                .map_err(|e| PolicyError::Compile {
                    path: PathBuf::from("policy set"),
                    message: e.to_string(),
                })?;
            Ok(Backend::Interpreter {
                proto: Box::new(proto),
                pool: Mutex::new(Vec::new()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_keyword_spotting() {
        assert!(uses_v1_keywords("package a\nallow if true\n"));
        assert!(uses_v1_keywords(
            "package a\ndeny contains msg if { msg := \"x\" }\n"
        ));
        assert!(!uses_v1_keywords(
            "package a\nallow { contains(input.p, \".ssh\") }\n"
        ));
        assert!(!uses_v1_keywords(
            "package a\n# if only in a comment\nallow { input.x == \"if\" }\n"
        ));
        assert!(!uses_v1_keywords(
            "package a\nimport future.keywords.if\nallow if { true }\n"
        ));
        assert!(!uses_v1_keywords("package a\nallow { input.diff }\n"));
    }

    #[test]
    fn policy_file_names() {
        assert!(is_policy_file_name("a.rego", false));
        assert!(!is_policy_file_name("a_test.rego", false));
        assert!(is_policy_file_name("a_test.rego", true));
        assert!(!is_policy_file_name(".#a.rego", true));
        assert!(!is_policy_file_name("a.rego.swp", true));
        assert!(!is_policy_file_name(".rego", true));
    }

    #[test]
    fn bracketed_refs() {
        assert_eq!(
            data_ref("agent.policy", "allow"),
            "data[\"agent\"][\"policy\"][\"allow\"]"
        );
    }
}
