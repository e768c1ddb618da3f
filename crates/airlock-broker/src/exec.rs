//! Brokered `exec`: an `exec` token names the programs and the directories a
//! command may see; the command runs in the sandbox with the working
//! directory's grant as its (staged) workspace, no network, the broker's
//! own paths hidden, and the configured profile's limits. The execution
//! record carries the sandbox spec, the layers applied and the outcome.

use std::path::PathBuf;
use std::time::Duration;

use airlock_core::api::ExecRequest;
use airlock_core::{ApiError, ErrorCode, Verb};
use airlock_sandbox::profile::WorkspaceAccess;
use airlock_sandbox::{Profile, SandboxSpec, StdioMode, WorkspaceMode, WorkspaceMount};
use airlock_token::Access;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::fsops::{fs_error, staging_base, token_error, FsRecord};
use crate::peer::Peer;
use crate::{now_unix, Broker};

fn out(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!({"encoding": "utf8", "content": s}),
        Err(_) => {
            json!({"encoding": "base64", "content": base64::engine::general_purpose::STANDARD.encode(bytes)})
        }
    }
}

impl Broker {
    fn exec_profile(&self) -> Result<Profile, ApiError> {
        let name = &self.inner.cfg.exec.profile;
        self.inner
            .cfg
            .profiles
            .get(name)
            .cloned()
            .or_else(|| Profile::builtin(name))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("exec profile `{name}` is not defined"),
                )
            })
    }

    /// `POST /v1/exec`.
    pub(crate) async fn exec(
        &self,
        peer: &Peer,
        token: Option<&str>,
        req: ExecRequest,
    ) -> Result<Value, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::new(ErrorCode::TokenMissing, "no capability token presented")
                .hint("request an `exec` capability (action exec, commands, paths) with POST /v1/requests")
        })?;
        let session = self.inner.sessions.resolve(peer, None);
        if session.quarantined {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("session {} is quarantined by the user", session.id),
            ));
        }
        let cap = self
            .inner
            .tokens
            .verify(
                token,
                &Access { session: &session.id, verb: Verb::Exec, path: Some(&req.cwd), host: None, command: Some(&req.argv[0]), now: now_unix() },
            )
            .map_err(|e| {
                let mut a = token_error(&e);
                if matches!(e, airlock_token::TokenError::Scope { .. }) {
                    a = a.hint("the exec capability must list this program in `commands` and a directory containing cwd in `paths`");
                }
                a
            })?;
        let root = cap.grant_root().map(str::to_owned).ok_or_else(|| {
            ApiError::new(
                ErrorCode::TokenScope,
                "the exec capability grants no directory",
            )
            .hint("list the working directory in the manifest's `paths`")
        })?;
        self.access_check(airlock_core::Action::Exec, &req.cwd, &root)?;
        let profile = self.exec_profile()?;
        let base = staging_base(&root);
        let area = {
            let b = self.clone();
            let (s, base) = (session.id.clone(), base.clone());
            tokio::task::spawn_blocking(move || b.area(&s, &base))
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(fs_error)?
        };
        let max_timeout = self.inner.cfg.exec.max_timeout_seconds;
        let timeout = req
            .timeout_seconds
            .unwrap_or(max_timeout)
            .clamp(1, max_timeout);
        let mut spec = SandboxSpec::new(req.argv.clone(), PathBuf::from(&req.cwd));
        let home = std::env::var("HOME").ok();
        let expand = |list: &[String]| -> Vec<PathBuf> {
            list.iter()
                .filter_map(|p| Profile::expand(p, home.as_deref()))
                .collect()
        };
        // The profile's variables first, then the request's (which win).
        let mut extra = profile.env.clone();
        extra.extend(req.env.iter().cloned());
        spec.env = airlock_sandbox::scrub_env(
            [
                (
                    "PATH".to_string(),
                    airlock_sandbox::env::DEFAULT_PATH.to_string(),
                ),
                ("LANG".to_string(), "C.UTF-8".to_string()),
            ],
            &extra,
        );
        spec.workspace = Some(WorkspaceMount {
            base: PathBuf::from(&base),
            mode: match profile.workspace {
                WorkspaceAccess::ReadOnly => WorkspaceMode::ReadOnly,
                WorkspaceAccess::WriteThrough => WorkspaceMode::WriteThrough,
                WorkspaceAccess::Staged => WorkspaceMode::Staged {
                    upper: area.upper_dir(),
                    work: area.work_dir(),
                },
            },
        });
        spec.allow_read = expand(&profile.allow_read);
        spec.allow_write = expand(&profile.allow_write);
        spec.allow_net = profile.allow_net.clone();
        spec.limits = profile.limits.clone();
        spec.limits.timeout = Some(Duration::from_secs(timeout));
        spec.protected = self.inner.protected.clone();
        spec.hidden = self.inner.broker_paths.iter().map(PathBuf::from).collect();
        spec.allow_degraded = self.inner.cfg.exec.allow_degraded.clone();
        for l in &profile.allow_degraded {
            if !spec.allow_degraded.contains(l) {
                spec.allow_degraded.push(*l);
            }
        }
        spec.stdio = StdioMode::Capture {
            max_bytes: self.inner.cfg.exec.max_output_bytes,
        };

        let env_names: Vec<&str> = req
            .env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(n, _)| n))
            .collect();
        let spec_json = json!({
            "argv": spec.argv, "cwd": spec.cwd, "env_names": env_names, "workspace": spec.workspace,
            "allow_read": spec.allow_read, "allow_net": spec.allow_net, "limits": spec.limits,
            "hidden": spec.hidden, "allow_degraded": spec.allow_degraded, "profile": self.inner.cfg.exec.profile,
        });
        let intent = json!({"action": "exec", "argv": req.argv, "cwd": req.cwd, "env_names": env_names, "phase": "intent"});
        let decision = json!({"allowed": true, "token_id": cap.token_id(), "verb": "exec"});
        self.record_access(
            peer,
            &session,
            FsRecord {
                kind: "exec",
                request_id: cap.request_id(),
                token_id: Some(cap.token_id()),
                intent: intent.clone(),
                decision: decision.clone(),
                execution: json!({"sandbox": "airlock-linux-v1", "spec": spec_json}),
                outcome: Value::Null,
            },
        )
        .await?;

        let run = tokio::task::spawn_blocking(move || {
            let r = airlock_sandbox::run(&spec);
            // A listing that fails is recorded as such, never as "nothing
            // staged". A run the sandbox refused staged nothing.
            let staged = match &r {
                Ok(_) => area
                    .record_bases()
                    .or_else(|e| {
                        tracing::warn!(error = %e, "cannot fingerprint the staged changes of a brokered command");
                        area.changes()
                    })
                    .map_err(|e| e.to_string()),
                Err(_) => Ok(vec![]),
            };
            (r, staged, area.id().to_string())
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let (res, staged, area_id) = run;
        let mut intent = intent;
        intent["phase"] = "outcome".into();
        match res {
            Ok(o) => {
                let blocked = airlock_sandbox::summarize_violations(&o.violations);
                let syscalls_blocked: u32 = o.violations.iter().map(|v| v.count).sum();
                let staged_paths: Option<Vec<&str>> = staged
                    .as_ref()
                    .ok()
                    .map(|s| s.iter().map(|c| c.path.as_str()).collect());
                let why = o.status.describe(&spec_limits(&spec_json));
                let mut outcome = json!({
                    "status": o.status, "exit_code": o.status.exit_code(), "reason": why,
                    "duration_ms": o.duration.as_millis() as u64, "peak_memory": o.peak_memory,
                    "staged_files": staged_paths, "staging_id": area_id, "blocked": blocked,
                });
                if let Err(e) = &staged {
                    outcome["staged_error"] = e.as_str().into();
                }
                let execution = json!({
                    "sandbox": "airlock-linux-v1", "spec": spec_json, "layers": o.report,
                    "landlock_abi": o.report.landlock_abi, "limits_mechanism": o.report.limits_mechanism,
                    "syscalls_blocked": syscalls_blocked, "violations": o.violations,
                });
                self.record_access(
                    peer,
                    &session,
                    FsRecord {
                        kind: "exec",
                        request_id: cap.request_id(),
                        token_id: Some(cap.token_id()),
                        intent,
                        decision,
                        execution,
                        outcome: outcome.clone(),
                    },
                )
                .await?;
                let mut body = outcome;
                body["request_id"] = cap.request_id().into();
                body["stdout"] = out(&o.stdout);
                body["stderr"] = out(&o.stderr);
                body["layers"] = serde_json::to_value(&o.report).unwrap_or(Value::Null);
                match &staged {
                    Ok(s) if !s.is_empty() => {
                        body["hint"] = format!("{} staged change(s); the user reviews them with `airlock staged diff {area_id}`", s.len()).into();
                    }
                    Ok(_) => {}
                    Err(_) => {
                        body["hint"] = format!("the staged changes cannot be listed (see staged_error); the user discards them with `airlock staged discard {area_id}`").into();
                    }
                }
                Ok(body)
            }
            Err(e) => {
                let err = ApiError::new(e.code(), e.to_string()).hint(
                    "the sandbox refused to run the command; tell the user (see `airlock doctor`)",
                );
                let _ = self
                    .record_access(
                        peer,
                        &session,
                        FsRecord {
                            kind: "exec",
                            request_id: cap.request_id(),
                            token_id: Some(cap.token_id()),
                            intent,
                            decision,
                            execution: json!({"sandbox": "airlock-linux-v1", "spec": spec_json}),
                            outcome: json!({"error": err}),
                        },
                    )
                    .await;
                Err(err)
            }
        }
    }
}

fn spec_limits(spec: &Value) -> airlock_sandbox::Limits {
    serde_json::from_value(spec["limits"].clone()).unwrap_or_default()
}
