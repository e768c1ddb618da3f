//! The Datalog vocabulary of Airlock tokens and the pieces built from it.
//!
//! Authority block (minted by the broker, signed by the root key):
//!
//! ```text
//! request("<id>"); session("<s>"); issued(<unix>); expires(<unix>);
//! verb("<verb>");                       // per granted verb
//! subtree("<path>", "<path>/");         // per granted path ("/" for the root)
//! host("<h>"); command("<c>");
//! check if time($t), $t <= <expiry as a date>;
//! ```
//!
//! Authorizer (one per access): `time(<now>)`, `operation("<verb>")`,
//! `req_session("<s>")` and, when the access names them, `path("<p>")`,
//! `req_host("<h>")`, `req_command("<c>")`. The request-side host, command
//! and session facts carry a `req_` prefix because authorizer facts and
//! authority facts share one world: an authorizer fact `host("x")` would
//! satisfy a policy that asks the token for `host("x")`.
//!
//! One allow policy is chosen per combination of named resources; it asks
//! that the verb, the session and every named resource be granted (every
//! granted verb applies to every granted path, so one `verb` fact per verb
//! and one `subtree` fact per path carry the whole grant). Paths
//! match component-wise: `$p == $root || $p.starts_with($root + "/")`, with
//! the `$root + "/"` precomputed in `subtree`.
//!
//! Policies trust only the authority block and the authorizer, so facts
//! appended in attenuation blocks can never widen a grant; checks in
//! attenuation blocks can only narrow it.

use std::collections::{BTreeSet, HashMap};

use airlock_core::Verb;
use biscuit_auth::builder::{Check, Policy, Term};

use crate::TokenError;

/// `root + "/"`, or `/` for the root itself: what a path strictly beneath
/// `root` starts with.
pub(crate) fn subtree_prefix(root: &str) -> String {
    if root == "/" {
        "/".to_string()
    } else {
        format!("{root}/")
    }
}

/// The reference rule the Datalog must agree with: `path` equals `root` or
/// lies beneath it by whole components.
#[cfg(test)]
pub(crate) fn covers(root: &str, path: &str) -> bool {
    path == root || path.starts_with(&subtree_prefix(root))
}

/// Parsed policy and check templates, built once per authority.
#[derive(Debug, Clone)]
pub(crate) struct Templates {
    /// Indexed by `[path?][host?][command?]` as bits 0b100, 0b010, 0b001.
    policies: Vec<Policy>,
    /// `check if time($t), $t <= {exp}`.
    expiry_check: Check,
}

const POLICY_BASE: &str = "allow if operation($op), verb($op), req_session($s), session($s)";
const POLICY_PATH: &str = ", path($p), subtree($root, $pre), $p == $root || $p.starts_with($pre)";
const POLICY_HOST: &str = ", req_host($h), host($h)";
const POLICY_COMMAND: &str = ", req_command($c), command($c)";

impl Templates {
    pub(crate) fn new() -> Result<Templates, biscuit_auth::error::Token> {
        let mut policies = Vec::with_capacity(8);
        for bits in 0u8..8 {
            let mut src = String::from(POLICY_BASE);
            if bits & 0b100 != 0 {
                src.push_str(POLICY_PATH);
            }
            if bits & 0b010 != 0 {
                src.push_str(POLICY_HOST);
            }
            if bits & 0b001 != 0 {
                src.push_str(POLICY_COMMAND);
            }
            policies.push(Policy::try_from(src.as_str())?);
        }
        let expiry_check = Check::try_from("check if time($t), $t <= {exp}")?;
        Ok(Templates {
            policies,
            expiry_check,
        })
    }

    /// The allow policy for an access naming these resources.
    pub(crate) fn policy(&self, path: bool, host: bool, command: bool) -> &Policy {
        let idx = (usize::from(path) << 2) | (usize::from(host) << 1) | usize::from(command);
        // The vector always holds 8 entries; index is < 8 by construction.
        &self.policies[idx]
    }

    /// The expiry check for a given unix second.
    pub(crate) fn expiry_check(
        &self,
        expires_at: u64,
    ) -> Result<Check, biscuit_auth::error::Token> {
        let mut c = self.expiry_check.clone();
        c.set("exp", Term::Date(expires_at))?;
        Ok(c)
    }
}

/// Datalog source and parameters for an attenuation block narrowing paths.
pub(crate) fn path_check(paths: &[String]) -> (String, HashMap<String, Term>) {
    let mut src = String::from("check if path($p), ");
    let mut params = HashMap::with_capacity(paths.len() * 2);
    for (i, root) in paths.iter().enumerate() {
        if i > 0 {
            src.push_str(" || ");
        }
        src.push_str(&format!("$p == {{r{i}}} || $p.starts_with({{s{i}}})"));
        params.insert(format!("r{i}"), Term::Str(root.clone()));
        params.insert(format!("s{i}"), Term::Str(subtree_prefix(root)));
    }
    (src, params)
}

/// Datalog source and parameters for an attenuation block narrowing verbs.
pub(crate) fn verb_check(verbs: &[Verb]) -> (String, HashMap<String, Term>) {
    let set: BTreeSet<Term> = verbs
        .iter()
        .map(|v| Term::Str(v.as_str().to_string()))
        .collect();
    let mut params = HashMap::new();
    params.insert("verbs".to_string(), Term::Set(set));
    (
        "check if operation($op), {verbs}.contains($op)".to_string(),
        params,
    )
}

/// Datalog source and parameters for an attenuation block narrowing expiry.
pub(crate) fn expiry_check_source(expires_at: u64) -> (String, HashMap<String, Term>) {
    let mut params = HashMap::new();
    params.insert("exp".to_string(), Term::Date(expires_at));
    ("check if time($t), $t <= {exp}".to_string(), params)
}

/// Validate an absolute, normalised path, naming the field on failure.
pub(crate) fn check_path(field: &str, p: &str) -> Result<(), TokenError> {
    airlock_core::path::check_abs_normalised(p).map_err(|e| TokenError::InvalidInput {
        field: field.to_string(),
        message: format!("{p:?}: {}", e.describe()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(subtree_prefix("/"), "/");
        assert_eq!(subtree_prefix("/a/b"), "/a/b/");
        assert!(covers("/a/b", "/a/b"));
        assert!(covers("/a/b", "/a/b/c"));
        assert!(!covers("/a/b", "/a/bc"));
        assert!(!covers("/a/b", "/a"));
        assert!(covers("/", "/anything"));
    }

    #[test]
    fn templates_parse() {
        let t = Templates::new().unwrap();
        assert!(t
            .policy(true, true, true)
            .to_string()
            .contains("req_command"));
        assert!(!t.policy(false, false, false).to_string().contains("path("));
        assert!(t.expiry_check(5).is_ok());
    }
}
