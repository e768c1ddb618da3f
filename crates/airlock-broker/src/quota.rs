//! Per-agent and per-action quotas. The broker counts; policy decides (the
//! counts reach Rego as `input.usage`), and the read path refuses reads
//! past the file and byte quotas itself.
//!
//! Each counter is a sliding window of 60 buckets (1 s buckets for
//! per-minute quotas, 1 min buckets for per-hour ones).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use airlock_core::{Action, ApiError, ErrorCode};
use serde_json::{json, Map, Value};

use crate::config::QuotaConfig;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Metric {
    Requests,
    ActionRequests(Action),
    FilesRead,
    BytesRead,
}

#[derive(Debug)]
struct Window {
    span: u64,
    bucket: u64,
    buckets: VecDeque<(u64, u64)>,
}

impl Window {
    fn new(span: u64) -> Window {
        Window {
            span,
            bucket: (span / 60).max(1),
            buckets: VecDeque::new(),
        }
    }
    fn trim(&mut self, now: u64) {
        while let Some(&(start, _)) = self.buckets.front() {
            if start + self.span <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }
    fn used(&mut self, now: u64) -> u64 {
        self.trim(now);
        self.buckets.iter().map(|(_, n)| n).sum()
    }
    /// Seconds until the oldest counted bucket leaves the window.
    fn retry_after(&self, now: u64) -> u64 {
        self.buckets.front().map_or(0, |&(start, _)| {
            (start + self.span).saturating_sub(now).max(1)
        })
    }
    fn add(&mut self, now: u64, n: u64) {
        self.trim(now);
        let start = now - now % self.bucket;
        match self.buckets.back_mut() {
            Some((s, c)) if *s == start => *c += n,
            _ => self.buckets.push_back((start, n)),
        }
    }
}

/// The counters.
#[derive(Debug)]
pub struct Quotas {
    cfg: QuotaConfig,
    windows: Mutex<HashMap<(String, Metric), Window>>,
}

/// One quota's state, as policy sees it.
struct Use {
    name: String,
    used: u64,
    limit: u64,
    retry_after: u64,
}

impl Quotas {
    pub fn new(cfg: QuotaConfig) -> Quotas {
        Quotas {
            cfg,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn limits_for(&self, action: Option<Action>) -> Vec<(String, Metric, u64, u64)> {
        let mut v = Vec::new();
        // 0 switches a quota off.
        let on = |q: Option<u64>| q.filter(|l| *l > 0);
        if let Some(l) = on(self.cfg.requests_per_minute) {
            v.push(("requests_per_minute".to_string(), Metric::Requests, l, 60));
        }
        if let Some(a) = action {
            if let Some(l) = self
                .cfg
                .actions
                .get(a.as_str())
                .and_then(|q| q.requests_per_minute)
            {
                v.push((
                    format!("{}.requests_per_minute", a.as_str()),
                    Metric::ActionRequests(a),
                    l,
                    60,
                ));
            }
        }
        if let Some(l) = on(self.cfg.files_read_per_hour) {
            v.push((
                "files_read_per_hour".to_string(),
                Metric::FilesRead,
                l,
                3600,
            ));
        }
        if let Some(l) = on(self.cfg.bytes_read_per_hour) {
            v.push((
                "bytes_read_per_hour".to_string(),
                Metric::BytesRead,
                l,
                3600,
            ));
        }
        v
    }

    fn uses(&self, agent: &str, action: Option<Action>, now: u64) -> Vec<Use> {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        self.limits_for(action)
            .into_iter()
            .map(|(name, metric, limit, span)| {
                let win = w
                    .entry((agent.to_string(), metric))
                    .or_insert_with(|| Window::new(span));
                let used = win.used(now);
                Use {
                    name,
                    used,
                    limit,
                    retry_after: win.retry_after(now),
                }
            })
            .collect()
    }

    /// `input.usage` for a request: `{"requests_per_minute": {"used", "limit", "retry_after"}, ...}`.
    pub fn usage(&self, agent: &str, action: Action, now: u64) -> Value {
        let mut m = Map::new();
        for u in self.uses(agent, Some(action), now) {
            m.insert(
                u.name,
                json!({"used": u.used, "limit": u.limit, "retry_after": u.retry_after}),
            );
        }
        Value::Object(m)
    }

    /// Count one request.
    pub fn count_request(&self, agent: &str, action: Action, now: u64) {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        w.entry((agent.to_string(), Metric::Requests))
            .or_insert_with(|| Window::new(60))
            .add(now, 1);
        if self
            .cfg
            .actions
            .get(action.as_str())
            .and_then(|q| q.requests_per_minute)
            .is_some()
        {
            w.entry((agent.to_string(), Metric::ActionRequests(action)))
                .or_insert_with(|| Window::new(60))
                .add(now, 1);
        }
    }

    /// Refuse a read when the file or byte quota is used up.
    pub fn check_read(&self, agent: &str, now: u64) -> Result<(), ApiError> {
        for u in self.uses(agent, None, now) {
            if (u.name == "files_read_per_hour" || u.name == "bytes_read_per_hour")
                && u.used >= u.limit
            {
                return Err(ApiError::new(
                    ErrorCode::QuotaExceeded,
                    format!("quota {} is used up ({} of {})", u.name, u.used, u.limit),
                )
                .hint(format!(
                    "retry in {} s, or ask the user to raise [quotas] {}",
                    u.retry_after, u.name
                ))
                .retry_after(u.retry_after));
            }
        }
        Ok(())
    }

    /// Count one file read of `bytes` bytes.
    pub fn count_read(&self, agent: &str, bytes: u64, now: u64) {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        w.entry((agent.to_string(), Metric::FilesRead))
            .or_insert_with(|| Window::new(3600))
            .add(now, 1);
        w.entry((agent.to_string(), Metric::BytesRead))
            .or_insert_with(|| Window::new(3600))
            .add(now, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let mut w = Window::new(60);
        w.add(1000, 3);
        w.add(1030, 2);
        assert_eq!(w.used(1030), 5);
        assert_eq!(w.retry_after(1030), 30);
        assert_eq!(w.used(1060), 2);
        assert_eq!(w.used(1090), 0);
    }

    #[test]
    fn usage_and_read_refusal() {
        let q = Quotas::new(QuotaConfig {
            requests_per_minute: Some(2),
            files_read_per_hour: Some(1),
            bytes_read_per_hour: None,
            actions: [(
                "exec".to_string(),
                crate::config::ActionQuota {
                    requests_per_minute: Some(1),
                },
            )]
            .into(),
        });
        q.count_request("a", Action::Exec, 100);
        let u = q.usage("a", Action::Exec, 100);
        assert_eq!(u["requests_per_minute"]["used"], 1);
        assert_eq!(u["exec.requests_per_minute"]["used"], 1);
        assert_eq!(u["exec.requests_per_minute"]["limit"], 1);
        assert_eq!(
            q.usage("b", Action::Exec, 100)["requests_per_minute"]["used"],
            0
        );
        assert!(q.check_read("a", 100).is_ok());
        q.count_read("a", 10, 100);
        let e = q.check_read("a", 101).unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded);
        assert!(e.retry_after.unwrap() > 0);
    }
}
