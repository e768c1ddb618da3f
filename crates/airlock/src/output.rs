//! Shared helpers: a small runtime for client calls, JSON printing, durations.

use std::time::Duration;

use airlock_client::ClientError;
use serde_json::Value;

/// Run a future on a current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// Print JSON, pretty.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Exit code for a client error, printing it the way a human reads it.
pub fn report(e: &ClientError) -> i32 {
    match e {
        ClientError::Api { status, error } => {
            eprintln!("airlock: {} ({}): {}", error.code, status, error.message);
            if let Some(h) = &error.hint {
                eprintln!("  hint: {h}");
            }
            if *status == 403 {
                3
            } else {
                1
            }
        }
        other => {
            eprintln!("airlock: {other}");
            2
        }
    }
}

/// Parse `90`, `90s`, `10m`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 10m or 1h: {e}"))
}

/// A string cell, cut to `n` characters.
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `v` as a string (strings unquoted).
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
