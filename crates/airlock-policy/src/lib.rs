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

use std::path::PathBuf;
use std::time::Duration;

use airlock_core::Decision;

/// The embedded default policy.
pub const DEFAULT_POLICY: &str = include_str!("default.rego");

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
        PolicyConfig { dir: None, include_default: true, timeout_ms: 50 }
    }
}

impl PolicyConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("policy {path} does not compile: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("policy evaluation failed: {0}")]
    Eval(String),
}

/// A compiled, shareable policy set.
#[derive(Clone)]
pub struct PolicyEngine {
    // implementation-defined
}

impl PolicyEngine {
    /// Compile the default policy and the directory's modules.
    pub fn load(cfg: &PolicyConfig) -> Result<PolicyEngine, PolicyError> {
        let _ = cfg;
        todo!()
    }

    /// Decide on a policy input (see docs/policy.md for its shape).
    pub fn evaluate(&self, input: &serde_json::Value) -> Decision {
        let _ = input;
        todo!()
    }

    /// Short content hash of the active policy set, e.g. `sha256:1a2b3c4d5e6f`.
    pub fn revision(&self) -> String {
        todo!()
    }

    /// Re-read the policy directory. On success returns the new revision; on
    /// failure the previous set stays active.
    pub fn reload(&self) -> Result<String, PolicyError> {
        todo!()
    }

    /// Files and packages in the active set (for `airlock status`).
    pub fn modules(&self) -> Vec<ModuleInfo> {
        todo!()
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModuleInfo {
    pub package: String,
    pub source: String,
}

/// Outcome of `airlock policy test DIR`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub package: String,
    pub name: String,
    pub passed: bool,
    pub error: Option<String>,
    pub duration_us: u64,
}

impl TestReport {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }
}

/// Run every `test_*` rule in the `*.rego` files under `dir` (plus the
/// default policy when `include_default`), like `opa test`.
pub fn run_tests(dir: &std::path::Path, include_default: bool) -> Result<TestReport, PolicyError> {
    let _ = (dir, include_default);
    todo!()
}
