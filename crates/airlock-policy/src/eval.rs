//! Evaluating an active set: per-path inputs, the time bound, reading each
//! package's vote and combining votes (deny > ask > allow).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use airlock_core::{Decision, DecisionKind, SecretsTreatment};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value;
use serde_json::Value as Json;

use crate::loader::{ActiveSet, Backend, Voter, VOTES_ENTRY};

/// Policy id used for decisions Airlock makes itself (errors, no voters).
pub(crate) const ENGINE_POLICY_ID: &str = "airlock";
/// Upper bound on VM instructions per path; the time bound normally fires first.
const MAX_INSTRUCTIONS: usize = 50_000_000;
/// VM instructions between clock reads.
const TIMER_CHECK_INTERVAL: u32 = 64;

/// Why an evaluation produced no votes.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout(String),
    Error(String),
}

impl Failure {
    fn into_decision(self, path: Option<&str>) -> Decision {
        let at = path
            .map(|p| format!(" (evaluating {p})"))
            .unwrap_or_default();
        let (rule, msg) = match self {
            Failure::Timeout(m) => (
                "policy_timeout",
                format!("policy evaluation took too long{at}: {m}"),
            ),
            Failure::Error(m) => ("policy_error", format!("policy evaluation failed{at}: {m}")),
        };
        tracing::warn!(rule, message = %msg, "policy evaluation did not complete; denying");
        Decision {
            decision: DecisionKind::Deny,
            policy_id: ENGINE_POLICY_ID.into(),
            rule: rule.into(),
            reasons: vec![msg],
            grantable: false,
            reason_code: Some(rule.into()),
            secrets: None,
        }
    }
}

/// A deny with `reason_code: policy_error`.
pub(crate) fn error_decision(message: impl Into<String>) -> Decision {
    Failure::Error(message.into()).into_decision(None)
}

/// Decide on `input` with the set, within `timeout` for the whole call.
pub(crate) fn evaluate(set: &ActiveSet, input: &Json, timeout: Duration) -> Decision {
    let deadline = Instant::now() + timeout;
    let Some(obj) = input.as_object() else {
        return error_decision("policy input must be a JSON object");
    };
    let paths: Vec<&str> = match obj.get("paths") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(p) => out.push(p),
                    None => return error_decision("input.paths must be an array of strings"),
                }
            }
            out
        }
        Some(_) => return error_decision("input.paths must be an array of strings"),
    };
    for key in ["workspaces", "broker_paths"] {
        match obj.get(key) {
            None | Some(Json::Null) => {}
            Some(Json::Array(items)) if items.iter().all(Json::is_string) => {}
            Some(_) => return error_decision(format!("input.{key} must be an array of strings")),
        }
    }
    // The input converted once: every path's input shares these values
    // (regorus values are reference-counted, so sharing is a pointer copy).
    let mut base: BTreeMap<Value, Value> = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "path" | "path_info"))
        .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
        .collect();
    // Sets the default policy intersects with each path's facts.
    for (key, set_key) in [
        ("workspaces", "workspace_set"),
        ("broker_paths", "broker_path_set"),
    ] {
        let items = obj.get(key).and_then(Json::as_array);
        let set = string_set(items.into_iter().flatten().filter_map(Json::as_str));
        base.insert(Value::from(set_key), set);
    }
    // Keys a caller supplied itself are kept when there are no paths.
    for key in ["path", "path_info"] {
        if let Some(v) = obj.get(key) {
            if paths.is_empty() {
                base.insert(Value::from(key), json_to_value(v));
            }
        }
    }

    if paths.is_empty() {
        return match run(set, Value::from(base), deadline) {
            Ok(d) => d,
            Err(f) => f.into_decision(None),
        };
    }

    let infos = obj.get("path_infos").and_then(Json::as_array);
    let union_labels = obj.get("labels").filter(|l| l.is_array());
    let mut per_path = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        // The path's own entry when aligned; otherwise a conservative one that
        // carries every label of the request.
        let mut info: BTreeMap<Value, Value> =
            match infos.and_then(|a| a.get(i)).and_then(Json::as_object) {
                Some(info) if info.get("path").and_then(Json::as_str) == Some(path) => info
                    .iter()
                    .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                    .collect(),
                _ => BTreeMap::from([
                    (Value::from("path"), Value::from(*path)),
                    (
                        Value::from("labels"),
                        union_labels.map_or_else(Value::new_array, json_to_value),
                    ),
                    (Value::from("workspace"), Value::Null),
                ]),
            };
        add_path_facts(&mut info, path);
        let mut one = base.clone();
        one.insert(Value::from("path"), Value::from(*path));
        one.insert(Value::from("path_info"), Value::from(info));
        match run(set, Value::from(one), deadline) {
            Ok(d) => per_path.push((Some(*path), d)),
            Err(f) => return f.into_decision(Some(path)),
        }
    }
    combine(per_path)
}

/// The regorus value of a JSON value, built directly (the serde route
/// through regorus' deserializer costs several times more per request).
fn json_to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        Json::Object(o) => {
            if o.is_empty() {
                return Value::new_object();
            }
            Value::from(
                o.iter()
                    .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    }
}

fn string_set<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    let set: BTreeSet<Value> = items.map(Value::from).collect();
    Value::from(set)
}

/// Facts about a path, computed natively so that policies test them with set
/// operations instead of loops (each loop iteration costs the VM about a
/// microsecond, and policy runs on every request and file access):
///
/// - `components`: the path's components, lower-cased, in order;
/// - `component_set`: the same, as a set;
/// - `basename`: the last component, lower-cased;
/// - `extension`: `.` and what follows the basename's last dot, lower-cased
///   (`""` when there is none);
/// - `ancestors`: the path itself and every ancestor (`/`, `/a`, `/a/b`), as
///   written, as a set.
fn add_path_facts(map: &mut BTreeMap<Value, Value>, path: &str) {
    let lower = path.to_lowercase();
    let comps: Vec<&str> = lower.split('/').filter(|c| !c.is_empty()).collect();
    let basename = comps.last().copied().unwrap_or("");
    let extension = match basename.rfind('.') {
        Some(i) if i + 1 < basename.len() => &basename[i..],
        _ => "",
    };
    let mut ancestors = vec!["/".to_string()];
    let mut cur = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(c);
        ancestors.push(cur.clone());
    }
    map.insert(
        Value::from("components"),
        Value::from(comps.iter().map(|c| Value::from(*c)).collect::<Vec<_>>()),
    );
    map.insert(
        Value::from("component_set"),
        string_set(comps.iter().copied()),
    );
    map.insert(Value::from("basename"), Value::from(basename));
    map.insert(Value::from("extension"), Value::from(extension));
    map.insert(
        Value::from("ancestors"),
        string_set(ancestors.iter().map(String::as_str)),
    );
}

/// Evaluate the set's entry rule once and read every voter's vote.
fn run(set: &ActiveSet, input: Value, deadline: Instant) -> Result<Decision, Failure> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Failure::Timeout(
            "the time budget was used up before this evaluation started".into(),
        ));
    }
    let timer = ExecutionTimerConfig {
        limit: remaining,
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    };
    let result = match &set.backend {
        Backend::Vm { program, pool } => {
            let mut vm = pool
                .lock()
                .ok()
                .and_then(|mut p| p.pop())
                .unwrap_or_else(|| {
                    let mut vm = regorus::rvm::vm::RegoVM::new();
                    vm.load_program(program.clone());
                    vm.set_max_instructions(MAX_INSTRUCTIONS);
                    vm
                });
            vm.set_execution_timer_config(Some(timer));
            vm.set_input(input);
            let r = vm.execute_entry_point_by_index(0);
            if r.is_ok() {
                vm.set_input(Value::Null);
                if let Ok(mut p) = pool.lock() {
                    p.push(vm);
                }
            }
            r.map_err(|e| match e {
                regorus::rvm::vm::VmError::TimeLimitExceeded { .. }
                | regorus::rvm::vm::VmError::InstructionLimitExceeded { .. } => {
                    Failure::Timeout(e.to_string())
                }
                other => Failure::Error(other.to_string()),
            })?
        }
        Backend::Interpreter { proto, pool } => {
            let mut engine = pool
                .lock()
                .ok()
                .and_then(|mut p| p.pop())
                .unwrap_or_else(|| (**proto).clone());
            engine.set_execution_timer_config(timer);
            engine.set_input(input);
            let r = engine.eval_rule(VOTES_ENTRY.to_string());
            if r.is_ok() {
                if let Ok(mut p) = pool.lock() {
                    p.push(engine);
                }
            }
            r.map_err(|e| {
                let is_timeout = e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<regorus::LimitError>(),
                        Some(regorus::LimitError::TimeLimitExceeded { .. })
                    )
                }) || e.to_string().contains("time limit");
                if is_timeout {
                    Failure::Timeout(e.to_string())
                } else {
                    Failure::Error(e.to_string())
                }
            })?
        }
    };
    votes(set, &result)
}

/// Read the `result` array into one combined decision.
fn votes(set: &ActiveSet, result: &Value) -> Result<Decision, Failure> {
    let arr = result.as_array().map_err(|_| {
        Failure::Error(format!(
            "the policy set produced no votes (got {})",
            short(result)
        ))
    })?;
    if arr.len() != set.slots {
        return Err(Failure::Error(format!(
            "expected {} vote slots, got {}",
            set.slots,
            arr.len()
        )));
    }
    let slot = |i: Option<usize>| i.and_then(|i| arr.get(i)).filter(|v| **v != Value::Null);
    let mut cast = Vec::with_capacity(set.voters.len());
    let mut treatment = None;
    for voter in &set.voters {
        if let Some(d) = vote(voter, &slot) {
            cast.push((None, d));
        }
        if let Some(v) = slot(voter.secrets) {
            let t = secrets_treatment(v).map_err(|why| {
                Failure::Error(format!("policy {}: mcp_secrets {why}", voter.package))
            })?;
            treatment = treatment.max(Some(t));
        }
    }
    let mut d = combine(cast);
    d.secrets = d.secrets.max(treatment);
    Ok(d)
}

/// A `mcp_secrets` value: `"allow"` or `"redact"`.
fn secrets_treatment(v: &Value) -> Result<SecretsTreatment, String> {
    match v {
        Value::String(s) => SecretsTreatment::parse(s)
            .ok_or_else(|| format!("must be \"allow\" or \"redact\", not \"{s}\"")),
        other => Err(format!(
            "must be \"allow\" or \"redact\", not {}",
            short(other)
        )),
    }
}

/// One package's vote, or `None` when it abstains (it only defines
/// `deny`/`ask` and neither holds).
fn vote<'a>(voter: &Voter, slot: &dyn Fn(Option<usize>) -> Option<&'a Value>) -> Option<Decision> {
    let policy_id = match slot(voter.policy_id) {
        Some(Value::String(s)) if !s.is_empty() => s.to_string(),
        _ => voter.package.clone(),
    };
    if voter.decision.is_some() {
        return Some(match slot(voter.decision) {
            Some(v) => parse_decision_value(&policy_id, v),
            None => Decision {
                decision: DecisionKind::Deny,
                policy_id: policy_id.clone(),
                rule: "decision".into(),
                reasons: vec![format!(
                    "policy {policy_id} defines `decision` but it is undefined for this request, or its definitions give conflicting values"
                )],
                grantable: false,
                reason_code: Some("policy_error".into()),
                secrets: None,
            },
        });
    }
    let deny = slot(voter.deny).and_then(|v| messages(v, &policy_id, "denied"));
    if let Some(reasons) = deny {
        return Some(Decision {
            decision: DecisionKind::Deny,
            policy_id,
            rule: "deny".into(),
            reasons,
            grantable: false,
            reason_code: None,
            secrets: None,
        });
    }
    let ask = slot(voter.ask).and_then(|v| messages(v, &policy_id, "needs approval per"));
    if let Some(reasons) = ask {
        return Some(Decision {
            decision: DecisionKind::Ask,
            policy_id,
            rule: "ask".into(),
            reasons,
            grantable: true,
            reason_code: None,
            secrets: None,
        });
    }
    voter.allow?;
    Some(match slot(voter.allow) {
        Some(Value::Bool(true)) => Decision {
            decision: DecisionKind::Allow,
            policy_id: policy_id.clone(),
            rule: "allow".into(),
            reasons: vec![format!("allowed by {policy_id}")],
            grantable: false,
            reason_code: None,
            secrets: None,
        },
        _ => Decision {
            decision: DecisionKind::Deny,
            policy_id: policy_id.clone(),
            rule: "allow".into(),
            reasons: vec![format!("not allowed by {policy_id}")],
            grantable: false,
            reason_code: None,
            secrets: None,
        },
    })
}

/// Messages of a `deny`/`ask` rule: `true`, or a non-empty set/array of
/// strings or `{"msg": ...}` objects. `None` when the rule does not hold.
fn messages(v: &Value, policy_id: &str, verb: &str) -> Option<Vec<String>> {
    let items: Vec<&Value> = match v {
        Value::Bool(true) => return Some(vec![format!("{verb} {policy_id}")]),
        Value::Set(s) => s.iter().collect(),
        Value::Array(a) => a.iter().collect(),
        Value::Bool(false) | Value::Null | Value::Undefined => return None,
        other => vec![other],
    };
    if items.is_empty() {
        return None;
    }
    Some(items.into_iter().map(message_text).collect())
}

fn message_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Object(o) => match o.get(&Value::from("msg")) {
            Some(Value::String(s)) => s.to_string(),
            _ => short(v),
        },
        other => short(other),
    }
}

fn short(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "<unprintable>".into())
}

/// Read a `decision` value: `"allow"|"deny"|"ask"` or an object.
fn parse_decision_value(policy_id: &str, v: &Value) -> Decision {
    let bad = |why: String| Decision {
        decision: DecisionKind::Deny,
        policy_id: policy_id.to_string(),
        rule: "decision".into(),
        reasons: vec![format!(
            "policy {policy_id} gave a malformed decision: {why}"
        )],
        grantable: false,
        reason_code: Some("policy_error".into()),
        secrets: None,
    };
    let kind_of = |s: &str| match s {
        "allow" => Some(DecisionKind::Allow),
        "deny" => Some(DecisionKind::Deny),
        "ask" => Some(DecisionKind::Ask),
        _ => None,
    };
    let field = |o: &regorus::value::Object, k: &str| o.get(&Value::from(k)).cloned();
    let (kind, obj) = match v {
        Value::String(s) => match kind_of(s) {
            Some(k) => (k, None),
            None => return bad(format!("`{s}` is not allow, deny or ask")),
        },
        Value::Object(o) => match field(o, "decision") {
            Some(Value::String(s)) => match kind_of(&s) {
                Some(k) => (k, Some(o.clone())),
                None => return bad(format!("`{s}` is not allow, deny or ask")),
            },
            _ => return bad("the object has no string field `decision`".into()),
        },
        other => {
            return bad(format!(
                "expected a string or an object, got {}",
                short(other)
            ))
        }
    };
    let mut d = Decision {
        decision: kind,
        policy_id: policy_id.to_string(),
        rule: "decision".into(),
        reasons: Vec::new(),
        grantable: kind == DecisionKind::Ask,
        reason_code: None,
        secrets: None,
    };
    if let Some(o) = obj {
        if let Some(Value::String(s)) = field(&o, "policy_id") {
            d.policy_id = s.to_string();
        }
        if let Some(Value::String(s)) = field(&o, "rule") {
            d.rule = s.to_string();
        }
        match field(&o, "reasons") {
            Some(Value::Array(a)) => d.reasons = a.iter().map(message_text).collect(),
            Some(Value::Set(s)) => d.reasons = s.iter().map(message_text).collect(),
            Some(Value::String(s)) => d.reasons = vec![s.to_string()],
            _ => {}
        }
        if let Some(Value::String(s)) = field(&o, "reason") {
            d.reasons.push(s.to_string());
        }
        if let Some(Value::Bool(b)) = field(&o, "grantable") {
            d.grantable = b;
        }
        if let Some(Value::String(s)) = field(&o, "reason_code") {
            d.reason_code = Some(s.to_string());
        }
        match field(&o, "mcp_secrets") {
            None | Some(Value::Null) | Some(Value::Undefined) => {}
            Some(v) => match secrets_treatment(&v) {
                Ok(t) => d.secrets = Some(t),
                Err(why) => return bad(format!("mcp_secrets {why}")),
            },
        }
    }
    if d.reasons.is_empty() {
        d.reasons.push(format!(
            "{} by policy {} (rule {})",
            kind.as_str(),
            d.policy_id,
            d.rule
        ));
    }
    d
}

/// The most restrictive of several decisions (deny > ask > allow). The
/// deciding decision is the first of the winning kind (for deny, the first
/// one that cannot be granted); reasons of every decision of the winning
/// kind are kept, prefixed by their path when they neither name it nor are
/// given by every evaluation. With no
/// decisions at all: deny, rule `default_deny`.
pub(crate) fn combine(items: Vec<(Option<&str>, Decision)>) -> Decision {
    let Some(kind) = items
        .iter()
        .map(|(_, d)| d.decision)
        .reduce(DecisionKind::most_restrictive)
    else {
        return Decision {
            decision: DecisionKind::Deny,
            policy_id: ENGINE_POLICY_ID.into(),
            rule: "default_deny".into(),
            reasons: vec!["no policy decided on this request (no package defines decision, deny, ask or allow for it)".into()],
            grantable: false,
            reason_code: None,
            secrets: None,
        };
    };
    let winners: Vec<&(Option<&str>, Decision)> =
        items.iter().filter(|(_, d)| d.decision == kind).collect();
    let primary = winners
        .iter()
        .find(|(_, d)| kind == DecisionKind::Deny && !d.grantable)
        .or_else(|| winners.first())
        .map(|(_, d)| d.clone());
    let Some(mut out) = primary else {
        return error_decision("no deciding policy");
    };
    // A reason that names its path, or that every evaluation gave, is kept
    // as is; any other is prefixed with the path it is about.
    let mut reasons: Vec<String> = Vec::new();
    for (path, d) in &winners {
        for r in &d.reasons {
            let shared_by_all = items.iter().all(|(_, w)| w.reasons.contains(r));
            let text = match path {
                Some(p) if !r.contains(p) && !shared_by_all => format!("{p}: {r}"),
                _ => r.clone(),
            };
            if !reasons.contains(&text) {
                reasons.push(text);
            }
        }
    }
    out.reasons = reasons;
    out.grantable = winners.iter().all(|(_, d)| d.grantable);
    out.secrets = items.iter().filter_map(|(_, d)| d.secrets).max();
    if out.reason_code.is_none() {
        out.reason_code = winners.iter().find_map(|(_, d)| d.reason_code.clone());
    }
    out
}
