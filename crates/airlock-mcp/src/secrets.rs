//! Secrets in MCP arguments and results.
//!
//! The patterns and their ids follow gitleaks' default rule set
//! (`config/gitleaks.toml`): the ones that are specific enough to match with
//! few false positives on arbitrary tool traffic. A finding is reported by
//! rule id only; the value is replaced by `[REDACTED:RULE]` wherever the
//! proxy passes it on or records it.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// `(gitleaks rule id, pattern)`.
const RULES: &[(&str, &str)] = &[
    (
        "private-key",
        r"(?s)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\sA-Za-z0-9+/=:,.\-]{32,}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
    ),
    (
        "aws-access-token",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
    ),
    ("github-pat", r"\bghp_[0-9A-Za-z]{36}\b"),
    ("github-fine-grained-pat", r"\bgithub_pat_\w{82}\b"),
    ("github-oauth", r"\bgho_[0-9A-Za-z]{36}\b"),
    ("github-app-token", r"\b(?:ghu|ghs)_[0-9A-Za-z]{36}\b"),
    ("gitlab-pat", r"\bglpat-[\w-]{20}\b"),
    (
        "slack-bot-token",
        r"\bxoxb-[0-9]{10,13}-[0-9]{10,13}[a-zA-Z0-9-]*",
    ),
    (
        "slack-user-token",
        r"\bxox[pe](?:-[0-9]{10,13}){3}-[a-zA-Z0-9-]{28,34}",
    ),
    (
        "slack-webhook-url",
        r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
    ),
    (
        "stripe-access-token",
        r"\b(?:sk|rk)_(?:test|live|prod)_[a-zA-Z0-9]{10,99}\b",
    ),
    (
        "openai-api-key",
        r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{58,74}T3BlbkFJ[A-Za-z0-9_-]{58,74}\b|\bsk-[a-zA-Z0-9]{20}T3BlbkFJ[a-zA-Z0-9]{20}\b",
    ),
    (
        "anthropic-api-key",
        r"\bsk-ant-(?:api03|admin01)-[a-zA-Z0-9_\-]{93}AA\b",
    ),
    ("gcp-api-key", r"\bAIza[\w-]{35}\b"),
    ("npm-access-token", r"\bnpm_[a-z0-9]{36}\b"),
    ("pypi-upload-token", r"pypi-AgEIcHlwaS5vcmc[\w-]{50,}"),
    (
        "jwt",
        r"\bey[a-zA-Z0-9]{17,}\.ey[a-zA-Z0-9/_-]{17,}\.(?:[a-zA-Z0-9/_-]{10,}={0,2})?",
    ),
    // A password in a URL's userinfo: scheme://user:password@host.
    (
        "password-in-url",
        r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/?#@]{1,64}:[^\s/?#@]{3,128}@[^\s/?#@]{1,253}",
    ),
];

fn rules() -> &'static [(&'static str, Regex)] {
    static R: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    R.get_or_init(|| {
        RULES
            .iter()
            .map(|(id, re)| (*id, Regex::new(re).expect("secret pattern compiles")))
            .collect()
    })
}

/// What a scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Rule ids that matched, sorted, without repeats.
    pub rules: Vec<String>,
    /// The value with every match replaced, when anything matched.
    pub redacted: Option<Value>,
}

/// Scan one string: the rules that matched and the redacted text.
pub fn scan_str(s: &str) -> (Vec<&'static str>, Option<String>) {
    let mut found = vec![];
    let mut out: Option<String> = None;
    for (id, re) in rules() {
        let cur = out.as_deref().unwrap_or(s);
        if re.is_match(cur) {
            found.push(*id);
            let rep = format!("[REDACTED:{id}]");
            out = Some(re.replace_all(cur, rep.as_str()).into_owned());
        }
    }
    (found, out)
}

/// Scan every string (and object key) in a JSON value.
pub fn scan(v: &Value) -> Scan {
    let mut rules = vec![];
    let red = walk(v, &mut rules);
    rules.sort();
    rules.dedup();
    Scan {
        redacted: (!rules.is_empty()).then_some(red),
        rules: rules.into_iter().map(str::to_string).collect(),
    }
}

fn walk(v: &Value, found: &mut Vec<&'static str>) -> Value {
    match v {
        Value::String(s) => {
            let (f, r) = scan_str(s);
            found.extend(f);
            Value::String(r.unwrap_or_else(|| s.clone()))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, found)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let (f, r) = scan_str(k);
                    found.extend(f);
                    (r.unwrap_or_else(|| k.clone()), walk(x, found))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_and_redacts_without_keeping_the_secret() {
        let key = "AKIAQYLPMN5HHHFPZAM2";
        let v = json!({"cmd": format!("export AWS_ACCESS_KEY_ID={key}"), "n": 1,
            "url": "postgres://app:hunter22@db.internal:5432/x",
            "note": "nothing here"});
        let s = scan(&v);
        assert_eq!(s.rules, vec!["aws-access-token", "password-in-url"]);
        let red = s.redacted.unwrap().to_string();
        assert!(!red.contains(key) && !red.contains("hunter22"), "{red}");
        assert!(red.contains("[REDACTED:aws-access-token]"), "{red}");
        assert_eq!(
            scan(&json!({"a": "https://example.com/x", "b": "AKIA"})),
            Scan::default()
        );
    }

    #[test]
    fn private_keys_are_found() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
        let s = scan(&json!([pem]));
        assert_eq!(s.rules, vec!["private-key"]);
    }
}
