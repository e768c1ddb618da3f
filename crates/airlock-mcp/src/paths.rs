//! Paths as MCP clients send them (relative, `~`, `..`), turned into the
//! absolute, normalised paths the broker takes, and checked against the
//! allowed directories the way the reference filesystem server does. The
//! broker checks again, on the real tree, beneath the granted path.

/// Lexically normalise an absolute path: no `.`, no `..`, no `//`, no
/// trailing slash. `None` when `..` would climb above `/`.
pub fn normalise(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Is `p` equal to `dir` or beneath it (both normalised)?
pub fn within(p: &str, dir: &str) -> bool {
    dir == "/" || p == dir || (p.starts_with(dir) && p.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Resolve `raw` as the reference server does: `~` is the home directory,
/// a relative path is taken against the allowed directories (the first one
/// it stays within, else the first), and the result must lie within one of
/// them.
pub fn resolve(raw: &str, allowed: &[String], home: Option<&str>) -> Result<String, String> {
    if raw.is_empty() {
        return Err("path is empty".into());
    }
    if raw.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let expanded = match (raw, home) {
        ("~", Some(h)) => h.to_string(),
        (r, Some(h)) if r.starts_with("~/") => format!("{h}/{}", &r[2..]),
        (r, _) => r.to_string(),
    };
    let absolute = if expanded.starts_with('/') {
        normalise(&expanded)
    } else {
        allowed
            .iter()
            .filter_map(|d| normalise(&format!("{d}/{expanded}")))
            .find(|c| allowed.iter().any(|d| within(c, d)))
            .or_else(|| {
                allowed
                    .first()
                    .and_then(|d| normalise(&format!("{d}/{expanded}")))
            })
    }
    .ok_or_else(|| format!("Access denied - path climbs above /: {raw}"))?;
    if !allowed.iter().any(|d| within(&absolute, d)) {
        return Err(format!(
            "Access denied - path outside allowed directories: {absolute} not in {}",
            allowed.join(", ")
        ));
    }
    Ok(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["/home/u/proj".into(), "/srv/data".into()]
    }

    #[test]
    fn relative_paths_resolve_against_the_allowed_directories() {
        assert_eq!(
            resolve("src/main.rs", &allowed(), None).unwrap(),
            "/home/u/proj/src/main.rs"
        );
        assert_eq!(
            resolve("~/proj/a", &allowed(), Some("/home/u")).unwrap(),
            "/home/u/proj/a"
        );
    }

    #[test]
    fn escapes_and_prefix_tricks_are_refused() {
        for p in [
            "/home/u/proj/../.ssh/id_rsa",
            "/home/u/project-evil/x",
            "/home/u/proj2",
            "../../etc/passwd",
            "/",
            "~/.ssh/id_rsa",
        ] {
            let r = resolve(p, &allowed(), Some("/home/u"));
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.starts_with("Access denied - path outside")),
                "{p}: {r:?}"
            );
        }
        assert!(resolve("/..", &allowed(), None).is_err());
        assert!(resolve("", &allowed(), None).is_err());
    }

    #[test]
    fn normalise_handles_dots_and_slashes() {
        assert_eq!(normalise("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalise("/a/b/../c").unwrap(), "/a/c");
        assert_eq!(normalise("/a/../..").as_deref(), None);
        assert!(within("/a/b", "/a"));
        assert!(!within("/ab", "/a"));
    }
}
