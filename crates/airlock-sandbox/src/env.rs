//! Environment scrubbing: an allowlist, secret-looking names refused unless
//! named explicitly, loader variables always stripped.

/// `PATH` used when the caller has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Variables passed through by default.
pub const ALLOWLIST: &[&str] = &["PATH", "HOME", "LANG", "TERM", "TZ", "USER"];

/// Substrings that mark a name as secret (matched case-insensitively).
pub const SECRET_MARKERS: &[&str] = &[
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
];

/// True for names the dynamic loader or an interpreter honours to run
/// foreign code (`LD_PRELOAD`, `LD_LIBRARY_PATH`, `LD_AUDIT`, ...).
pub fn is_loader_var(name: &str) -> bool {
    name.starts_with("LD_")
        || name == "GCONV_PATH"
        || name == "MALLOC_TRACE"
        || name == "HOSTALIASES"
        || name == "LOCALDOMAIN"
}

/// True when the name looks like it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| up.contains(m))
}

fn allowed_by_default(name: &str) -> bool {
    ALLOWLIST.contains(&name) || name.starts_with("LC_")
}

/// Build the sandbox environment from the caller's `vars`.
///
/// Kept: [`ALLOWLIST`] and `LC_*` unless the name looks secret; every name
/// in `extra` (`NAME` copies the caller's value, `NAME=VALUE` sets it; an
/// explicitly named secret-looking variable is passed). Loader variables
/// (`LD_*` and friends) are dropped even when named. `PATH` falls back to
/// [`DEFAULT_PATH`]. The result is sorted by name.
pub fn scrub_env<I>(vars: I, extra: &[String]) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let mut out: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for (k, v) in &vars {
        if allowed_by_default(k) && !is_secret_name(k) && !is_loader_var(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    for e in extra {
        let (name, value) = match e.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (e.clone(), None),
        };
        if name.is_empty() || is_loader_var(&name) {
            continue;
        }
        let value = value.or_else(|| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        });
        if let Some(v) = value {
            out.insert(name, v);
        }
    }
    out.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn allowlist_and_secrets() {
        let host = env(&[
            ("PATH", "/bin"),
            ("HOME", "/home/u"),
            ("LC_ALL", "C"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("GITHUB_TOKEN", "ghp"),
            ("LD_PRELOAD", "/evil.so"),
            ("RANDOM_VAR", "x"),
            ("LC_API_KEY", "k"),
        ]);
        let out = scrub_env(host.clone(), &[]);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["HOME", "LC_ALL", "PATH"]);
        // Named explicitly: passed, even when secret-looking. Loader vars never.
        let out = scrub_env(
            host,
            &[
                "GITHUB_TOKEN".into(),
                "LD_PRELOAD".into(),
                "NEW=1".into(),
                "MISSING".into(),
            ],
        );
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["GITHUB_TOKEN", "HOME", "LC_ALL", "NEW", "PATH"]);
    }

    #[test]
    fn default_path() {
        let out = scrub_env(Vec::new(), &[]);
        assert_eq!(out, vec![("PATH".to_string(), DEFAULT_PATH.to_string())]);
    }

    #[test]
    fn secret_names() {
        for n in [
            "API_KEY",
            "my_secret",
            "x_token_y",
            "DB_PASSWORD",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "SSH_AUTH_SOCK",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["PATH", "HOME", "TERM"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }
}
