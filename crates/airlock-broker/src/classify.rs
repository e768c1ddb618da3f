//! Data classification: path globs to sensitivity labels, given to policy
//! as `input.path_infos[i].labels` (and their union as `input.labels`).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::ClassifyRule;
use crate::BrokerError;

/// Compiled `[[classify]]` rules.
#[derive(Debug, Clone)]
pub struct Classifier {
    set: GlobSet,
    labels: Vec<Vec<String>>,
}

impl Classifier {
    /// Compile the rules; a bad glob is a config error naming it.
    pub fn new(rules: &[ClassifyRule]) -> Result<Classifier, BrokerError> {
        let mut b = GlobSetBuilder::new();
        for r in rules {
            let g: Glob = GlobBuilder::new(&r.pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    BrokerError::Config(format!("classify pattern {:?}: {e}", r.pattern))
                })?;
            b.add(g);
        }
        let set = b
            .build()
            .map_err(|e| BrokerError::Config(format!("classify patterns: {e}")))?;
        Ok(Classifier {
            set,
            labels: rules.iter().map(|r| r.labels.clone()).collect(),
        })
    }

    /// Labels of `path`: of every rule matching the path itself, or matching
    /// an entry directly inside it (so a grant on `finance/` carries the
    /// labels of `**/finance/**`). Sorted, without duplicates.
    pub fn labels(&self, path: &str) -> Vec<String> {
        if self.labels.is_empty() {
            return Vec::new();
        }
        let mut idx = self.set.matches(path);
        let child = if path == "/" {
            "/_".to_string()
        } else {
            format!("{path}/_")
        };
        idx.extend(self.set.matches(&child));
        let mut out: Vec<String> = idx
            .into_iter()
            .flat_map(|i| self.labels[i].iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Classifier {
        Classifier::new(&[
            ClassifyRule {
                pattern: "**/finance/**".into(),
                labels: vec!["confidential".into()],
            },
            ClassifyRule {
                pattern: "**/*.pem".into(),
                labels: vec!["secret".into()],
            },
            ClassifyRule {
                pattern: "**/hr/**".into(),
                labels: vec!["pii".into()],
            },
        ])
        .unwrap()
    }

    #[test]
    fn labels_by_glob() {
        let c = c();
        assert_eq!(c.labels("/home/a/finance/q4.xlsx"), vec!["confidential"]);
        assert_eq!(c.labels("/home/a/finance"), vec!["confidential"]);
        assert_eq!(c.labels("/home/a/keys/server.pem"), vec!["secret"]);
        assert_eq!(
            c.labels("/home/a/hr/finance/x.pem"),
            vec!["confidential", "pii", "secret"]
        );
        assert!(c.labels("/home/a/src/main.rs").is_empty());
        assert!(c.labels("/home/a/financex/y").is_empty());
    }

    #[test]
    fn bad_glob_is_a_config_error() {
        let e = Classifier::new(&[ClassifyRule {
            pattern: "a[".into(),
            labels: vec![],
        }])
        .unwrap_err();
        assert!(e.to_string().contains("a["), "{e}");
    }
}
