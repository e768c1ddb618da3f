//! Policy evaluation for Airlock.
//!
//! CONTRACT (used by airlock-broker; keep these signatures):
//! - [`PolicyEngine::load`] compiles the embedded default policy (unless
//!   `include_default` is false or the policy directory holds a module with
//!   the same package `airlock.default`) plus every `*.rego` file in the
//!   policy directory. Rego v1 and v0 (the seed's `allow { ... }` style) both load.
//! - [`PolicyEngine::evaluate`] never fails: errors and timeouts become a
//!   deny whose `reason_code` is `policy_error` / `policy_timeout`.
//! - [`PolicyEngine::reload`] swaps in a new compiled set atomically; if the
//!   new set does not compile, the last good set stays active and the error
//!   is returned.
//! - `PolicyEngine` is `Clone + Send + Sync` and cheap to share across tasks.
#![forbid(unsafe_code)]

mod eval;
mod loader;
mod testing;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use airlock_core::Decision;

pub use watch::WatchHandle;

/// The embedded default policy.
pub const DEFAULT_POLICY: &str = include_str!("default.rego");

/// Rego unit tests of the embedded default policy (run by [`run_tests`] when
/// `include_default` is true).
pub const DEFAULT_POLICY_TESTS: &str = include_str!("default_test.rego");

/// Policy configuration (`[policy]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of user `*.rego` files. Default: `$XDG_CONFIG_HOME/airlock/policy`.
    pub dir: Option<PathBuf>,
    /// Load the embedded default policy. Default true.
    pub include_default: bool,
    /// Evaluation time budget in milliseconds. Default 50.
    pub timeout_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            include_default: true,
            timeout_ms: 50,
        }
    }
}

impl PolicyConfig {
    /// The evaluation time budget.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The policy directory in effect: `dir`, or else
    /// `$XDG_CONFIG_HOME/airlock/policy`, or else `$HOME/.config/airlock/policy`
    /// (`None` when neither variable is set to an absolute path).
    pub fn effective_dir(&self) -> Option<PathBuf> {
        self.dir.clone().or_else(loader::default_dir)
    }
}

/// Errors of the policy crate.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file or directory could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A policy module does not parse or the set does not compile.
    #[error("policy {path} does not compile: {message}")]
    Compile { path: PathBuf, message: String },
    /// Evaluation failed (only surfaced by helpers; [`PolicyEngine::evaluate`] never fails).
    #[error("policy evaluation failed: {0}")]
    Eval(String),
}

/// A compiled, shareable policy set.
#[derive(Clone)]
pub struct PolicyEngine {
    shared: Arc<Shared>,
}

struct Shared {
    cfg: PolicyConfig,
    /// The directory in effect (configured or default).
    dir: Option<PathBuf>,
    /// Whether a missing directory is an empty set (true unless configured).
    missing_ok: bool,
    active: RwLock<Arc<loader::ActiveSet>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("dir", &self.shared.dir)
            .field("revision", &self.revision())
            .field("backend", &self.backend())
            .finish()
    }
}

impl PolicyEngine {
    /// Compile the default policy and the directory's modules.
    ///
    /// A directory given in the config must exist; the default directory
    /// (see [`PolicyConfig::effective_dir`]) may be missing, which means no
    /// user policies.
    pub fn load(cfg: &PolicyConfig) -> Result<PolicyEngine, PolicyError> {
        let dir = cfg.effective_dir();
        let missing_ok = cfg.dir.is_none();
        let set = build(dir.as_deref(), cfg.include_default, missing_ok)?;
        tracing::info!(revision = %set.revision, modules = set.modules.len(), "policy loaded");
        Ok(PolicyEngine {
            shared: Arc::new(Shared {
                cfg: cfg.clone(),
                dir,
                missing_ok,
                active: RwLock::new(Arc::new(set)),
            }),
        })
    }

    fn active(&self) -> Arc<loader::ActiveSet> {
        match self.shared.active.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Decide on a policy input (see docs/policy.md for its shape).
    pub fn evaluate(&self, input: &serde_json::Value) -> Decision {
        eval::evaluate(&self.active(), input, self.shared.cfg.timeout())
    }

    /// Short content hash of the active policy set, e.g. `sha256:1a2b3c4d5e6f`.
    pub fn revision(&self) -> String {
        self.active().revision.clone()
    }

    /// Re-read the policy directory. On success returns the new revision; on
    /// failure the previous set stays active.
    pub fn reload(&self) -> Result<String, PolicyError> {
        match build(
            self.shared.dir.as_deref(),
            self.shared.cfg.include_default,
            self.shared.missing_ok,
        ) {
            Ok(set) => {
                let rev = set.revision.clone();
                let new = Arc::new(set);
                match self.shared.active.write() {
                    Ok(mut g) => *g = new,
                    Err(poisoned) => *poisoned.into_inner() = new,
                }
                tracing::info!(revision = %rev, "policy reloaded");
                Ok(rev)
            }
            Err(e) => {
                tracing::warn!(error = %e, revision = %self.revision(), "policy reload rejected; the last good set stays active");
                Err(e)
            }
        }
    }

    /// Files and packages in the active set (for `airlock status`).
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.active().modules.clone()
    }

    /// The policy directory in effect, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.shared.dir.as_deref()
    }

    /// How the active set is evaluated: `"compiled"` (bytecode VM) or
    /// `"interpreter"` (the set uses a construct the compiler lacks).
    pub fn backend(&self) -> &'static str {
        match self.active().backend {
            loader::Backend::Vm { .. } => "compiled",
            loader::Backend::Interpreter { .. } => "interpreter",
        }
    }

    /// Poll the policy directory every `interval` (its `*.rego` file names,
    /// sizes, modification times and inodes) and [`reload`](Self::reload) on
    /// change; a set that does not load is logged and the last good set stays
    /// active. Dropping the handle stops the watcher.
    pub fn watch(&self, interval: Duration) -> WatchHandle {
        watch::spawn(self.clone(), self.shared.dir.clone(), interval)
    }
}

fn build(
    dir: Option<&Path>,
    include_default: bool,
    missing_ok: bool,
) -> Result<loader::ActiveSet, PolicyError> {
    let (user, fingerprint) = match dir {
        Some(d) => {
            let fingerprint = watch::fingerprint(d);
            (loader::read_dir_sources(d, false, missing_ok)?, fingerprint)
        }
        None => (Vec::new(), Vec::new()),
    };
    loader::compile_set(user, include_default, fingerprint)
}

/// A module of the active set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModuleInfo {
    /// Package, e.g. `airlock.default`.
    pub package: String,
    /// File path, or `embedded:default.rego` for the embedded default.
    pub source: String,
}

/// Outcome of `airlock policy test DIR`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// One result per `test_*` rule, in file order.
    pub results: Vec<TestResult>,
}

#[derive(Debug, Clone, serde::Serialize)]
/// Outcome of one `test_*` rule.
pub struct TestResult {
    /// Package of the test.
    pub package: String,
    /// Rule name, `test_...`.
    pub name: String,
    /// True iff the rule evaluated to `true`.
    pub passed: bool,
    /// Why it failed or errored.
    pub error: Option<String>,
    /// Evaluation time in microseconds.
    pub duration_us: u64,
}

impl TestReport {
    /// Number of failed or erroring tests.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }
}

/// Run every `test_*` rule in the `*.rego` files under `dir` (plus the
/// default policy when `include_default`), like `opa test`.
pub fn run_tests(dir: &std::path::Path, include_default: bool) -> Result<TestReport, PolicyError> {
    testing::run_tests(dir, include_default)
}
