//! The broker's answer to a manifest.

use serde::{Deserialize, Serialize};

/// allow | deny | ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Allow,
    Deny,
    Ask,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::Ask => "ask",
        }
    }
    /// deny > ask > allow: the most restrictive of two.
    pub fn most_restrictive(self, other: DecisionKind) -> DecisionKind {
        use DecisionKind::*;
        match (self, other) {
            (Deny, _) | (_, Deny) => Deny,
            (Ask, _) | (_, Ask) => Ask,
            _ => Allow,
        }
    }
}

/// What happens to secrets Airlock found in an MCP call's arguments or
/// result when the call goes ahead (a policy's `mcp_secrets` rule, or the
/// `mcp_secrets` field of its decision object). Ordered: `redact` is the more
/// restrictive of the two.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SecretsTreatment {
    /// Pass them on unchanged.
    Allow,
    /// Replace each by `[REDACTED:RULE]` first.
    Redact,
}

impl SecretsTreatment {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretsTreatment::Allow => "allow",
            SecretsTreatment::Redact => "redact",
        }
    }
    pub fn parse(s: &str) -> Option<SecretsTreatment> {
        match s {
            "allow" => Some(SecretsTreatment::Allow),
            "redact" => Some(SecretsTreatment::Redact),
            _ => None,
        }
    }
}

/// A policy decision: what, which policy and rule decided, and why in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    pub decision: DecisionKind,
    /// Policy (package) id that decided, e.g. `airlock.default`.
    pub policy_id: String,
    /// Rule within the policy that decided, e.g. `deny_credential_store`.
    pub rule: String,
    /// Human-readable reasons.
    pub reasons: Vec<String>,
    /// For deny: whether a human could grant this (false for hard denies such
    /// as credential stores).
    #[serde(default)]
    pub grantable: bool,
    /// Machine-readable reason code where one applies (`policy_timeout`,
    /// `quota_exceeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// What to do with secrets found in an MCP call, when a policy said
    /// (the most restrictive any policy said); `None` leaves it to the
    /// caller's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsTreatment>,
}

impl Decision {
    pub fn deny(policy_id: &str, rule: &str, reason: impl Into<String>) -> Decision {
        Decision {
            decision: DecisionKind::Deny,
            policy_id: policy_id.into(),
            rule: rule.into(),
            reasons: vec![reason.into()],
            grantable: false,
            reason_code: None,
            secrets: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn restrictiveness() {
        use DecisionKind::*;
        assert_eq!(Allow.most_restrictive(Ask), Ask);
        assert_eq!(Ask.most_restrictive(Deny), Deny);
        assert_eq!(Allow.most_restrictive(Allow), Allow);
        assert!(SecretsTreatment::Redact > SecretsTreatment::Allow);
    }
}
