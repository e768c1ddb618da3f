//! `airlock policy test DIR`: run every `test_*` rule, like `opa test`.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value;

use crate::loader::{self, DEFAULT_PACKAGE};
use crate::{PolicyError, TestReport, TestResult};

/// Time allowed for one test rule.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn run_tests(dir: &Path, include_default: bool) -> Result<TestReport, PolicyError> {
    let user = loader::read_dir_sources(dir, true, false)?;
    let (_, user_parsed) = loader::parse_all(&user)?;
    let replaces_default = user_parsed.iter().any(|m| m.package == DEFAULT_PACKAGE);
    let mut sources = Vec::new();
    if include_default && !replaces_default {
        sources.push(loader::default_source());
        sources.push(loader::default_tests_source());
    }
    sources.extend(user);
    let (mut engine, parsed) = loader::parse_all(&sources)?;
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: TEST_TIMEOUT,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });

    let mut seen: Vec<(String, String)> = Vec::new();
    let mut results = Vec::new();
    for m in &parsed {
        for name in &m.tests {
            let key = (m.package.clone(), name.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let rule = format!("data.{}.{}", m.package, name);
            engine.set_input(Value::Undefined);
            let start = Instant::now();
            let outcome = engine.eval_rule(rule);
            let duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            let (passed, error) = match outcome {
                Ok(Value::Bool(true)) => (true, None),
                Ok(Value::Undefined) => (
                    false,
                    Some("test failed: a condition did not hold (the rule is undefined)".into()),
                ),
                Ok(other) => (
                    false,
                    Some(format!(
                        "test failed: evaluated to {} instead of true",
                        serde_json::to_string(&other).unwrap_or_default()
                    )),
                ),
                Err(e) => (
                    false,
                    Some(format!("test errored: {}", e.to_string().trim())),
                ),
            };
            tracing::debug!(package = %m.package, test = %name, passed, "policy test");
            results.push(TestResult {
                package: m.package.clone(),
                name: name.clone(),
                passed,
                error,
                duration_us,
            });
        }
    }
    Ok(TestReport { results })
}
