//! Secrets in MCP arguments and results.
//!
//! Detection uses gitleaks' maintained rule set, vendored unmodified as
//! `rules/gitleaks.toml` (MIT, see `rules/README.md` for its origin and how to
//! refresh it), plus Airlock's own rules in the same format
//! (`rules/airlock.toml`), plus any files a security team adds with
//! `airlock mcp-proxy --secret-rules FILE`. The matching follows gitleaks'
//! detector: a keyword prefilter, the rule's regex, its secret group, its
//! entropy threshold, the global and per-rule allowlists (regexes against the
//! secret, the match or the line; stopwords; `AND` conditions), and generic
//! rules yielding to a specific rule that found the same secret. Rules that
//! only make sense for files (a `path` condition) do not apply to tool
//! traffic and are skipped. Like gitleaks, base64, hex and percent-encoded
//! segments are decoded (two levels deep) and scanned again; a secret inside
//! one redacts the whole segment.
//!
//! A finding is reported by rule id only; the secret is replaced by
//! `[REDACTED:RULE]` wherever the proxy passes it on or records it.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;

/// gitleaks' default rule set, as published.
const GITLEAKS: &str = include_str!("../rules/gitleaks.toml");
/// Airlock's additions, same format.
const AIRLOCK: &str = include_str!("../rules/airlock.toml");
/// The shipped rule files, by name.
const SHIPPED: [(&str, &str); 2] = [("gitleaks.toml", GITLEAKS), ("airlock.toml", AIRLOCK)];

/// A rule file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file cannot be read.
    #[error("reading secret rules {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not gitleaks-format TOML.
    #[error("secret rules {file}: {source}")]
    Toml {
        /// The file.
        file: String,
        /// Why.
        source: toml::de::Error,
    },
    /// A regex in it does not compile.
    #[error("secret rules {file}: rule {rule}: {source}")]
    Regex {
        /// The file.
        file: String,
        /// The rule id (or `allowlist`).
        rule: String,
        /// Why.
        source: regex::Error,
    },
    /// Two rules share an id.
    #[error("secret rules {file}: rule id {rule} is defined twice")]
    Duplicate {
        /// The file.
        file: String,
        /// The id.
        rule: String,
    },
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    allowlist: Option<RawAllow>,
    #[serde(default)]
    allowlists: Vec<RawAllow>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    id: String,
    regex: Option<String>,
    path: Option<String>,
    #[serde(default)]
    secret_group: usize,
    #[serde(default)]
    entropy: f64,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlists: Vec<RawAllow>,
    #[serde(default)]
    skip_report: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAllow {
    condition: Option<String>,
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Secret,
    Match,
    Line,
}

#[derive(Debug)]
struct Allow {
    and: bool,
    target: Target,
    regex: Option<Regex>,
    stopwords: Vec<String>,
    /// Path or commit conditions, which never hold for tool traffic.
    file_only: bool,
}

#[derive(Debug)]
struct Rule {
    id: String,
    regex: Regex,
    secret_group: usize,
    entropy: f64,
    allow: Vec<Allow>,
    generic: bool,
}

/// A compiled rule set.
#[derive(Debug)]
pub struct Scanner {
    rules: Vec<Rule>,
    global: Vec<Allow>,
    /// Every rule keyword, lower case.
    prefilter: AhoCorasick,
    /// Prefilter pattern index → the rules that name that keyword.
    by_keyword: Vec<Vec<usize>>,
    /// Rules with no keywords: always run.
    always: Vec<usize>,
}

/// Go's RE2 reads a `{` that does not start a repetition (`{n}`, `{n,}`,
/// `{n,m}`) as a literal; Rust's regex rejects it. Escape those.
fn go_braces(re: &str) -> String {
    let b = re.as_bytes();
    let mut out = String::with_capacity(re.len() + 8);
    let (mut i, mut class) = (0, false);
    let rep = |rest: &[u8]| -> bool {
        let digits = |r: &[u8]| r.iter().take_while(|c| c.is_ascii_digit()).count();
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        let r = &rest[n..];
        match r.first() {
            Some(b'}') => true,
            Some(b',') => {
                let m = digits(&r[1..]);
                r.get(1 + m) == Some(&b'}')
            }
            _ => false,
        }
    };
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            // Copy the escape and the (possibly multi-byte) char after it.
            let len = re[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&re[i..i + 1 + len]);
            i += 1 + len;
            continue;
        }
        if class {
            if c == b']' {
                class = false;
            }
        } else if c == b'[' {
            class = true;
            // A `]` right after `[` or `[^` is a literal member.
            let mut j = i + 1;
            if b.get(j) == Some(&b'^') {
                j += 1;
            }
            if b.get(j) == Some(&b']') {
                out.push_str(&re[i..=j]);
                i = j + 1;
                continue;
            }
        } else if c == b'{' && !rep(&b[i + 1..]) {
            out.push_str("\\{");
            i += 1;
            continue;
        }
        let len = re[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&re[i..i + len]);
        i += len;
    }
    out
}

/// Compiled as RE2 reads them: `\w`, `\d`, `\s` and `\b` are ASCII (which
/// also keeps compilation to milliseconds; Unicode classes under counted
/// repetitions take seconds).
fn compile(file: &str, rule: &str, re: &str) -> Result<Regex, RulesError> {
    RegexBuilder::new(&go_braces(re))
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .map_err(|source| RulesError::Regex {
            file: file.into(),
            rule: rule.into(),
            source,
        })
}

fn allow(file: &str, rule: &str, a: RawAllow) -> Result<Allow, RulesError> {
    let regex = if a.regexes.is_empty() {
        None
    } else {
        let joined = a
            .regexes
            .iter()
            .map(|r| format!("(?:{r})"))
            .collect::<Vec<_>>()
            .join("|");
        Some(compile(file, rule, &joined)?)
    };
    Ok(Allow {
        and: a
            .condition
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("and")),
        target: match a.regex_target.as_deref() {
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            _ => Target::Secret,
        },
        regex,
        stopwords: a.stopwords.iter().map(|s| s.to_lowercase()).collect(),
        file_only: !a.paths.is_empty() || !a.commits.is_empty(),
    })
}

impl Allow {
    fn allows(&self, secret: &str, matched: &str, line: &str) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let by_regex = !target.is_empty()
            && self
                .regex
                .as_ref()
                .is_some_and(|r| r.is_match(target.as_bytes()));
        // Most allowlists have no stopwords: lower-case only when needed.
        let by_word = !secret.is_empty() && !self.stopwords.is_empty() && {
            let lower = secret.to_lowercase();
            self.stopwords.iter().any(|w| lower.contains(w))
        };
        if self.and {
            // Every condition the allowlist names must hold; paths and
            // commits never do here.
            !self.file_only
                && (self.regex.is_none() || by_regex)
                && (self.stopwords.is_empty() || by_word)
                && (self.regex.is_some() || !self.stopwords.is_empty())
        } else {
            by_regex || by_word
        }
    }
}

/// What a scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Rule ids that matched, sorted, without repeats.
    pub rules: Vec<String>,
    /// The value with every secret replaced, when anything matched.
    pub redacted: Option<Value>,
}

struct Finding {
    rule: usize,
    /// The whole match.
    whole: Range<usize>,
    /// The secret within it (what gets redacted).
    secret: Range<usize>,
}

/// Levels of encoding looked through (base64 of hex, say, is two).
const MAX_DECODE_DEPTH: usize = 2;
/// Longest encoded segment decoded; longer ones (images, archives) are
/// scanned as they are only.
const MAX_DECODE_BYTES: usize = 1 << 20;

/// Base64 (standard or URL-safe, padded or not), hex and percent-encoded
/// segments of `s` with their decoded text, when that is text: valid UTF-8
/// without control characters other than tab, newline and carriage return
/// (binary data such as an image holds no secret the rules could read).
fn encoded_segments(s: &str) -> Vec<(Range<usize>, String)> {
    use base64::Engine;
    static RE: OnceLock<(regex::Regex, regex::Regex)> = OnceLock::new();
    let (b64, pct) = RE.get_or_init(|| {
        (
            regex::Regex::new(r"[A-Za-z0-9+/_-]{16,}={0,2}").expect("base64 segment pattern"),
            regex::Regex::new(r"[^\s%]*(?:%[0-9A-Fa-f]{2}[^\s%]*)+").expect("percent pattern"),
        )
    });
    let text = |b: Vec<u8>| -> Option<String> {
        let t = String::from_utf8(b).ok()?;
        (!t.is_empty()
            && t.chars()
                .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')))
        .then_some(t)
    };
    let mut out = vec![];
    for m in b64.find_iter(s).filter(|m| m.len() <= MAX_DECODE_BYTES) {
        let seg = m.as_str();
        let bare = seg.trim_end_matches('=');
        let decoded = if bare.len() % 2 == 0 && bare.bytes().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(bare).ok()
        } else if bare.contains(['-', '_']) {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(bare)
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(bare)
                .ok()
        };
        if let Some(t) = decoded.and_then(text) {
            out.push((m.range(), t));
        }
    }
    for m in pct.find_iter(s).filter(|m| m.len() <= MAX_DECODE_BYTES) {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(m.as_str()).collect();
        if let Some(t) = text(decoded) {
            out.push((m.range(), t));
        }
    }
    out
}

fn entropy(s: &str) -> f64 {
    // As gitleaks computes it: frequencies of characters over the byte length.
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = s.len() as f64;
    counts
        .values()
        .map(|&c| {
            let f = c as f64 / n;
            -f * f.log2()
        })
        .sum()
}

fn widen(s: &str, r: Range<usize>) -> Range<usize> {
    let (mut a, mut b) = (r.start, r.end);
    while !s.is_char_boundary(a) {
        a -= 1;
    }
    while !s.is_char_boundary(b) {
        b += 1;
    }
    a..b
}

fn line_of(s: &str, r: &Range<usize>) -> Range<usize> {
    let start = s[..r.start].rfind('\n').map_or(0, |i| i + 1);
    let end = s[r.end..].find('\n').map_or(s.len(), |i| r.end + i);
    start..end
}

impl Scanner {
    /// gitleaks' rules and Airlock's, as shipped.
    pub fn builtin() -> Arc<Scanner> {
        static S: OnceLock<Arc<Scanner>> = OnceLock::new();
        S.get_or_init(|| {
            Arc::new(
                Scanner::from_sources(&SHIPPED)
                    .expect("the shipped secret rules compile (checked by tests)"),
            )
        })
        .clone()
    }

    /// The shipped rules plus the rule files given (gitleaks format).
    pub fn with_files(files: &[impl AsRef<Path>]) -> Result<Arc<Scanner>, RulesError> {
        if files.is_empty() {
            return Ok(Scanner::builtin());
        }
        let mut texts = vec![];
        for f in files {
            let f = f.as_ref();
            let name = f.display().to_string();
            let text = std::fs::read_to_string(f).map_err(|source| RulesError::Read {
                file: name.clone(),
                source,
            })?;
            texts.push((name, text));
        }
        let mut sources: Vec<(&str, &str)> = SHIPPED.to_vec();
        sources.extend(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        Ok(Arc::new(Scanner::from_sources(&sources)?))
    }

    /// Compile rule files given as `(name, TOML text)`.
    fn from_sources(sources: &[(&str, &str)]) -> Result<Scanner, RulesError> {
        let mut rules: Vec<Rule> = vec![];
        let mut global = vec![];
        let mut keywords: Vec<String> = vec![];
        let mut by_keyword: Vec<Vec<usize>> = vec![];
        let mut always = vec![];
        for (file, text) in sources {
            let raw: RawFile = toml::from_str(text).map_err(|source| RulesError::Toml {
                file: file.to_string(),
                source,
            })?;
            for a in raw.allowlist.into_iter().chain(raw.allowlists) {
                global.push(allow(file, "allowlist", a)?);
            }
            for r in raw.rules {
                // Path conditions describe files, which tool traffic is not.
                let (Some(re), None) = (&r.regex, &r.path) else {
                    continue;
                };
                if r.skip_report {
                    continue;
                }
                if rules.iter().any(|x| x.id == r.id) {
                    return Err(RulesError::Duplicate {
                        file: file.to_string(),
                        rule: r.id,
                    });
                }
                let idx = rules.len();
                if r.keywords.is_empty() {
                    always.push(idx);
                }
                for k in &r.keywords {
                    let k = k.to_lowercase();
                    match keywords.iter().position(|x| *x == k) {
                        Some(i) => by_keyword[i].push(idx),
                        None => {
                            keywords.push(k);
                            by_keyword.push(vec![idx]);
                        }
                    }
                }
                let allow = r
                    .allowlists
                    .into_iter()
                    .map(|a| allow(file, &r.id, a))
                    .collect::<Result<Vec<_>, _>>()?;
                rules.push(Rule {
                    regex: compile(file, &r.id, re)?,
                    generic: r.id.to_lowercase().contains("generic"),
                    secret_group: r.secret_group,
                    entropy: r.entropy,
                    allow,
                    id: r.id,
                });
            }
        }
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&keywords)
            .expect("keyword automaton builds");
        Ok(Scanner {
            rules,
            global,
            prefilter,
            by_keyword,
            always,
        })
    }

    /// How many rules apply to tool traffic.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn findings(&self, s: &str) -> Vec<Finding> {
        let mut run = vec![false; self.rules.len()];
        for &i in &self.always {
            run[i] = true;
        }
        for m in self.prefilter.find_overlapping_iter(s) {
            for &i in &self.by_keyword[m.pattern().as_usize()] {
                run[i] = true;
            }
        }
        let mut out = vec![];
        for (idx, rule) in self.rules.iter().enumerate().filter(|(i, _)| run[*i]) {
            for caps in rule.regex.captures_iter(s.as_bytes()) {
                let m = caps.get(0).expect("group 0");
                // A byte-level match may end inside a character: widen it.
                let m = widen(s, m.range());
                // gitleaks trims newlines off the match.
                let text = &s[m.clone()];
                let lead = text.len() - text.trim_start_matches('\n').len();
                let trimmed = text.trim_matches('\n');
                let whole = m.start + lead..m.start + lead + trimmed.len();
                if whole.is_empty() {
                    continue;
                }
                let group = if caps.len() >= 2 {
                    if rule.secret_group > 0 {
                        caps.get(rule.secret_group)
                            .map(|g| widen(s, g.range()))
                            .unwrap_or(whole.start..whole.start)
                    } else {
                        (1..caps.len())
                            .filter_map(|i| caps.get(i))
                            .find(|g| !g.is_empty())
                            .map_or(whole.clone(), |g| widen(s, g.range()))
                    }
                } else {
                    whole.clone()
                };
                // A group cannot reach past the trimmed match.
                let secret = group.start.max(whole.start)
                    ..group.end.min(whole.end).max(group.start.max(whole.start));
                let secret_text = &s[secret.clone()];
                if rule.entropy != 0.0 && entropy(secret_text) <= rule.entropy {
                    continue;
                }
                let line = &s[line_of(s, &whole)];
                let matched = &s[whole.clone()];
                if self
                    .global
                    .iter()
                    .chain(&rule.allow)
                    .any(|a| a.allows(secret_text, matched, line))
                {
                    continue;
                }
                out.push(Finding {
                    rule: idx,
                    whole,
                    secret,
                });
            }
        }
        // A generic rule yields to a specific one that found the same secret
        // on the same line.
        let keep: Vec<bool> = out
            .iter()
            .map(|f| {
                !self.rules[f.rule].generic
                    || !out.iter().any(|g| {
                        g.rule != f.rule
                            && !self.rules[g.rule].generic
                            && line_of(s, &g.whole).start == line_of(s, &f.whole).start
                            && s[g.secret.clone()].contains(&s[f.secret.clone()])
                    })
            })
            .collect();
        out.into_iter()
            .zip(keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect()
    }

    /// [`Self::findings`], and those of base64, hex and percent-encoded
    /// segments once decoded (as gitleaks decodes), down to
    /// [`MAX_DECODE_DEPTH`] levels of encoding. A secret found inside an
    /// encoded segment is reported on the whole segment, which is what gets
    /// redacted: a part of an encoding cannot be.
    fn findings_deep(&self, s: &str, depth: usize) -> Vec<Finding> {
        let mut out = self.findings(s);
        if depth >= MAX_DECODE_DEPTH {
            return out;
        }
        let mut encoded = vec![];
        for (seg, decoded) in encoded_segments(s) {
            if out
                .iter()
                .any(|f| f.whole.start < seg.end && seg.start < f.whole.end)
            {
                continue;
            }
            for f in self.findings_deep(&decoded, depth + 1) {
                encoded.push(Finding {
                    rule: f.rule,
                    whole: seg.clone(),
                    secret: seg.clone(),
                });
            }
        }
        out.extend(encoded);
        out
    }

    /// Scan one string: the rules that matched and the redacted text.
    pub fn scan_str(&self, s: &str) -> (Vec<&str>, Option<String>) {
        let mut found = self.findings_deep(s, 0);
        if found.is_empty() {
            return (vec![], None);
        }
        let mut ids: Vec<&str> = found
            .iter()
            .map(|f| self.rules[f.rule].id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // Redact each secret (the whole match when the secret is empty);
        // overlapping spans merge under the first rule's name.
        found.sort_by_key(|f| (f.secret.start, std::cmp::Reverse(f.secret.end)));
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for f in &found {
            let span = if f.secret.is_empty() {
                f.whole.clone()
            } else {
                f.secret.clone()
            };
            if span.end <= at {
                continue;
            }
            let start = span.start.max(at);
            out.push_str(&s[at..start]);
            if start == span.start {
                out.push_str(&format!("[REDACTED:{}]", self.rules[f.rule].id));
            }
            at = span.end;
        }
        out.push_str(&s[at..]);
        (ids, Some(out))
    }

    /// Scan every string (and object key) in a JSON value.
    pub fn scan(&self, v: &Value) -> Scan {
        let mut rules = vec![];
        let red = self.walk(v, &mut rules);
        rules.sort();
        rules.dedup();
        Scan {
            redacted: (!rules.is_empty()).then_some(red),
            rules,
        }
    }

    fn walk(&self, v: &Value, found: &mut Vec<String>) -> Value {
        match v {
            Value::String(s) => {
                let (f, r) = self.scan_str(s);
                found.extend(f.into_iter().map(str::to_string));
                Value::String(r.unwrap_or_else(|| s.clone()))
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.walk(x, found)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        let (f, r) = self.scan_str(k);
                        found.extend(f.into_iter().map(str::to_string));
                        (r.unwrap_or_else(|| k.clone()), self.walk(x, found))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Scan with the shipped rules.
#[cfg(test)]
fn scan(v: &Value) -> Scan {
    Scanner::builtin().scan(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_literal_braces_are_escaped_and_repetitions_kept() {
        assert_eq!(go_braces(r"^\${(?:[A-Z_]+)}$"), r"^\$\{(?:[A-Z_]+)}$");
        assert_eq!(go_braces(r"a{2}b{1,}c{1,3}"), r"a{2}b{1,}c{1,3}");
        assert_eq!(go_braces(r"[{]x\{y{z"), r"[{]x\{y\{z");
        assert_eq!(go_braces(r"[]{]{2}"), r"[]{]{2}");
    }

    #[test]
    fn encoded_secrets_are_found_and_their_whole_encoding_redacted() {
        use base64::Engine;
        let key = "AKIAQYLPMN5HHHFPZAM2";
        let line = format!("export AWS_ACCESS_KEY_ID={key}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&line);
        let url_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&line);
        let hexed = hex::encode(&line);
        // Two levels: base64 of the hex encoding.
        let twice = base64::engine::general_purpose::STANDARD.encode(&hexed);
        let pct = "https%3A%2F%2Fapp%3Ahunter22%40db.internal%2Fx";
        let scanner = Scanner::builtin();
        for (what, text) in [
            ("base64", format!("config: {b64} end")),
            ("url-safe base64", format!("config: {url_b64} end")),
            ("hex", format!("config: {hexed} end")),
            ("base64 of hex", format!("config: {twice} end")),
        ] {
            let (ids, red) = scanner.scan_str(&text);
            assert_eq!(ids, vec!["aws-access-token"], "{what}: {text}");
            assert_eq!(
                red.as_deref(),
                Some("config: [REDACTED:aws-access-token] end"),
                "{what}"
            );
        }
        let text = format!("see {pct} now");
        let (ids, red) = scanner.scan_str(&text);
        assert_eq!(ids, vec!["password-in-url"]);
        assert_eq!(red.as_deref(), Some("see [REDACTED:password-in-url] now"));

        // Encoded data that is not text, or text without a secret, stays.
        let png = base64::engine::general_purpose::STANDARD.encode([
            0x89u8, b'P', b'N', b'G', 0, 0, 0, 13, 0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
        ]);
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let plain =
            base64::engine::general_purpose::STANDARD.encode("just an ordinary sentence here");
        for text in [png, sha.to_string(), plain, "a%20b%20c".to_string()] {
            assert_eq!(scanner.scan_str(&text), (vec![], None), "{text}");
        }
    }

    #[test]
    fn every_shipped_rule_compiles_and_the_set_is_gitleaks_sized() {
        let s = Scanner::builtin();
        // gitleaks ships over 200 content rules; a handful are path-only.
        assert!(s.len() > 200, "{} rules", s.len());
        assert!(s.rules.iter().any(|r| r.id == "password-in-url"));
    }

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
        // The user name and host stay: only the password is the secret.
        assert!(
            red.contains("postgres://app:[REDACTED:password-in-url]@db.internal"),
            "{red}"
        );
        assert_eq!(
            scan(
                &json!({"a": "https://example.com/x", "b": "AKIA", "c": "https://${USER}:${PASS}@h/"})
            ),
            Scan::default()
        );
    }

    #[test]
    fn private_keys_are_found() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDx1zU5NRz4n6qUj3r4y0hXJm6gRk3o2oJgH2v9s0XkQAAAAJj\n-----END OPENSSH PRIVATE KEY-----\n";
        let s = scan(&json!([pem]));
        assert_eq!(s.rules, vec!["private-key"]);
        assert!(!s.redacted.unwrap().to_string().contains("b3BlbnNzaC1rZXkt"));
    }

    #[test]
    fn rules_beyond_a_handful_are_found() {
        // Tokens of services a short list would not know; random, not real.
        let cases = [
            (
                "doppler-api-token",
                "dp.pt.KLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7",
            ),
            (
                "digitalocean-pat",
                "dop_v1_eb975729fae923d5a4fd12aabfe228f219e9cb0eb53f16947ccf25ec84d8dbc7",
            ),
            (
                "shopify-access-token",
                "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",
            ),
            (
                "sendgrid-api-token",
                "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",
            ),
        ];
        for (id, tok) in cases {
            let s = scan(&json!({"text": format!("token is {tok} ok")}));
            assert!(s.rules.iter().any(|r| r == id), "{id}: {:?}", s.rules);
            assert!(!s.redacted.unwrap().to_string().contains(tok), "{id}");
        }
    }

    #[test]
    fn generic_assignments_are_redacted_but_ordinary_words_are_not() {
        let s = scan(&json!("db_password = \"2qHx6kwXoIIXGvOoNZYW\""));
        assert_eq!(s.rules, vec!["generic-api-key"]);
        let red = s.redacted.unwrap();
        assert_eq!(red, json!("db_password = \"[REDACTED:generic-api-key]\""));
        // Allowlisted by gitleaks: low entropy, stopwords, identifiers.
        for benign in [
            "api_version = \"2024-01-01\"",
            "token = \"aaaaaaaaaaaaaaaa\"",
            "the key is in the drawer",
            "password: ${DB_PASSWORD}",
        ] {
            assert_eq!(scan(&json!(benign)), Scan::default(), "{benign}");
        }
    }

    #[test]
    fn a_specific_rule_wins_over_the_generic_one() {
        let s = scan(&json!(
            "GITHUB_TOKEN=ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"
        ));
        assert_eq!(s.rules, vec!["github-pat"]);
    }

    #[test]
    fn matches_next_to_multibyte_text_do_not_split_characters() {
        // Byte-level classes such as [^\s] can stop inside a UTF-8 character.
        for t in [
            "пароль https://u:pä\u{1F511}ss@h.example/x ключ",
            "\u{1F511}AKIAQYLPMN5HHHFPZAM2\u{1F511}",
        ] {
            let s = scan(&json!(t));
            assert!(!s.rules.is_empty(), "{t}");
            let red = s.redacted.unwrap();
            assert!(red.as_str().unwrap().contains("[REDACTED:"), "{red}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics_and_redaction_removes_what_was_found() {
        // Tool results are written by whoever runs the server: mix keywords,
        // token shapes, separators and multi-byte characters at random.
        let parts = [
            "ghp_",
            "AKIA",
            "key",
            "password",
            "=",
            ":",
            "\"",
            "'",
            " ",
            "\n",
            "://",
            "@",
            "-----BEGIN PRIVATE KEY-----",
            "-----END PRIVATE KEY-----",
            "sk-ant-api03-",
            "é",
            "\u{1F511}",
            "ключ",
            "\u{0}",
            "xoxb-",
            "{",
            "}",
            "$",
            "%",
            "Zq8",
            "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
            "2qHx6kwXoIIXGvOoNZYW",
            "QYLPMN5HHHFPZAM2",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let scanner = Scanner::builtin();
        let mut hits = 0;
        for _ in 0..3000 {
            let n = (next() % 24) as usize;
            let text: String = (0..n)
                .map(|_| parts[(next() % parts.len() as u64) as usize])
                .collect();
            let found = scanner.findings(&text);
            let (ids, red) = scanner.scan_str(&text);
            assert_eq!(ids.is_empty(), found.is_empty());
            if let Some(red) = red {
                hits += 1;
                for f in &found {
                    let secret = &text[f.secret.clone()];
                    // A secret that occurs once in the text is gone from
                    // the redacted text (short ones could recur by chance).
                    if secret.len() >= 12 && text.matches(secret).count() == 1 {
                        assert!(!red.contains(secret), "{text:?} -> {red:?}");
                    }
                }
            }
        }
        assert!(hits > 100, "the generator must hit rules ({hits})");
    }

    #[test]
    fn extra_rule_files_add_rules_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("corp.toml");
        std::fs::write(
            &f,
            "[[rules]]\nid = \"corp-token\"\nregex = '''corp_[0-9a-f]{16}'''\nkeywords = [\"corp_\"]\n",
        )
        .unwrap();
        let s = Scanner::with_files(&[&f]).unwrap();
        assert_eq!(
            s.scan(&json!("x corp_0123456789abcdef")).rules,
            vec!["corp-token"]
        );
        assert!(Scanner::builtin()
            .scan(&json!("x corp_0123456789abcdef"))
            .rules
            .is_empty());

        std::fs::write(&f, "[[rules]]\nid = \"bad\"\nregex = '''(unclosed'''\n").unwrap();
        let e = Scanner::with_files(&[&f]).unwrap_err().to_string();
        assert!(e.contains("rule bad"), "{e}");
        std::fs::write(&f, "[[rules]]\nid = \"github-pat\"\nregex = '''x'''\n").unwrap();
        let e = Scanner::with_files(&[&f]).unwrap_err().to_string();
        assert!(e.contains("defined twice"), "{e}");
        let e = Scanner::with_files(&[dir.path().join("missing.toml")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
