//! Lexical checks on paths as they arrive at the front door. These do not
//! touch the filesystem; safe resolution lives in `airlock-fs`.

/// Why a path string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Nul,
    NotAbsolute,
    TooLong(usize),
    /// Contains `.`/`..` components, `//`, or a trailing `/`.
    NotNormalised,
}

impl PathProblem {
    pub fn describe(&self) -> String {
        match self {
            PathProblem::Empty => "path is empty".into(),
            PathProblem::Nul => "path contains a NUL byte".into(),
            PathProblem::NotAbsolute => "path is not absolute".into(),
            PathProblem::TooLong(n) => format!("path is longer than {n} bytes"),
            PathProblem::NotNormalised => {
                "path is not normalised (no '.', '..', '//' or trailing '/')".into()
            }
        }
    }
}

/// Maximum path length accepted (Linux PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// Check that `p` is absolute, normalised, NUL-free and not too long.
pub fn check_abs_normalised(p: &str) -> Result<(), PathProblem> {
    if p.is_empty() {
        return Err(PathProblem::Empty);
    }
    if p.contains('\0') {
        return Err(PathProblem::Nul);
    }
    if p.len() > MAX_PATH_LEN {
        return Err(PathProblem::TooLong(MAX_PATH_LEN));
    }
    if !p.starts_with('/') {
        return Err(PathProblem::NotAbsolute);
    }
    if p == "/" {
        return Ok(());
    }
    if p.ends_with('/') {
        return Err(PathProblem::NotNormalised);
    }
    for comp in p[1..].split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(PathProblem::NotNormalised);
        }
    }
    Ok(())
}

/// True when `path` equals `root` or lies beneath it, comparing whole
/// components (so `/home/u/proj-evil` is *not* under `/home/u/proj`).
/// Both must already be absolute and normalised.
pub fn is_within(path: &str, root: &str) -> bool {
    if root == "/" {
        return path.starts_with('/');
    }
    path == root || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn lexical_checks() {
        assert!(check_abs_normalised("/home/u/a.txt").is_ok());
        assert!(check_abs_normalised("/").is_ok());
        assert_eq!(check_abs_normalised("rel/a"), Err(PathProblem::NotAbsolute));
        assert_eq!(
            check_abs_normalised("/a/../b"),
            Err(PathProblem::NotNormalised)
        );
        assert_eq!(
            check_abs_normalised("/a/./b"),
            Err(PathProblem::NotNormalised)
        );
        assert_eq!(
            check_abs_normalised("/a//b"),
            Err(PathProblem::NotNormalised)
        );
        assert_eq!(check_abs_normalised("/a/"), Err(PathProblem::NotNormalised));
        assert_eq!(check_abs_normalised("/a\0b"), Err(PathProblem::Nul));
        assert_eq!(check_abs_normalised(""), Err(PathProblem::Empty));
        assert!(matches!(
            check_abs_normalised(&format!("/{}", "a".repeat(5000))),
            Err(PathProblem::TooLong(_))
        ));
    }
    #[test]
    fn sibling_prefix_is_not_within() {
        assert!(is_within("/home/u/proj/a", "/home/u/proj"));
        assert!(is_within("/home/u/proj", "/home/u/proj"));
        assert!(!is_within("/home/u/proj-evil/a", "/home/u/proj"));
        assert!(!is_within("/home/u/pro", "/home/u/proj"));
        assert!(is_within("/x", "/"));
    }
}
