//! `edit_file`'s text edits, with the reference server's semantics: each
//! edit replaces the first exact occurrence of `oldText`, else the first
//! run of lines that matches it ignoring indentation (re-indented like the
//! original); the result is shown as a git-style unified diff.

/// One edit.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Edit {
    #[serde(rename = "oldText")]
    pub old_text: String,
    #[serde(rename = "newText")]
    pub new_text: String,
}

fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n")
}

fn indent(s: &str) -> &str {
    &s[..s.len() - s.trim_start().len()]
}

/// Apply `edits` to `content`; the new content, or which edit did not match.
pub fn apply(content: &str, edits: &[Edit]) -> Result<String, String> {
    let mut text = crlf(content);
    for e in edits {
        let old = crlf(&e.old_text);
        let new = crlf(&e.new_text);
        if old.is_empty() {
            return Err("oldText is empty; name the exact text to replace".into());
        }
        if let Some(i) = text.find(&old) {
            text.replace_range(i..i + old.len(), &new);
            continue;
        }
        let old_lines: Vec<&str> = old.split('\n').collect();
        let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        let mut found = false;
        if lines.len() >= old_lines.len() {
            for i in 0..=lines.len() - old_lines.len() {
                let matches = old_lines
                    .iter()
                    .enumerate()
                    .all(|(j, o)| o.trim() == lines[i + j].trim());
                if !matches {
                    continue;
                }
                let original_indent = indent(&lines[i]).to_string();
                let new_lines: Vec<String> = new
                    .split('\n')
                    .enumerate()
                    .map(|(j, line)| {
                        if j == 0 {
                            return format!("{original_indent}{}", line.trim_start());
                        }
                        let old_indent = old_lines.get(j).map(|l| indent(l)).unwrap_or("");
                        let new_indent = indent(line);
                        if !old_indent.is_empty() && !new_indent.is_empty() {
                            let rel = new_indent.len().saturating_sub(old_indent.len());
                            format!("{original_indent}{}{}", " ".repeat(rel), line.trim_start())
                        } else {
                            line.to_string()
                        }
                    })
                    .collect();
                let mut out = lines[..i].to_vec();
                out.extend(new_lines);
                out.extend_from_slice(&lines[i + old_lines.len()..]);
                text = out.join("\n");
                found = true;
                break;
            }
        }
        if !found {
            return Err(format!(
                "Could not find exact match for edit:\n{}",
                e.old_text
            ));
        }
    }
    Ok(text)
}

/// A unified diff of `old` → `new` for `path`, fenced as the reference
/// server fences it.
pub fn fenced_diff(path: &str, old: &str, new: &str) -> String {
    let (old, new) = (crlf(old), crlf(new));
    let diff = similar::TextDiff::from_lines(&old, &new);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path}\toriginal"), &format!("{path}\tmodified"))
        .to_string();
    let patch = format!(
        "Index: {path}\n===================================================================\n{body}"
    );
    let mut ticks = 3;
    while patch.contains(&"`".repeat(ticks)) {
        ticks += 1;
    }
    let fence = "`".repeat(ticks);
    format!("{fence}diff\n{patch}{fence}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(o: &str, n: &str) -> Edit {
        Edit {
            old_text: o.into(),
            new_text: n.into(),
        }
    }

    #[test]
    fn exact_then_whitespace_insensitive_matches() {
        let src = "fn main() {\n    let a = 1;\n    let b = 2;\n}\n";
        let out = apply(src, &[e("let a = 1;", "let a = 10;")]).unwrap();
        assert!(out.contains("let a = 10;"));
        let out = apply(src, &[e("let a = 1;\nlet b = 2;", "let c = 3;")]).unwrap();
        assert_eq!(out, "fn main() {\n    let c = 3;\n}\n");
        let err = apply(src, &[e("nothing like this", "x")]).unwrap_err();
        assert!(err.starts_with("Could not find exact match"), "{err}");
    }

    #[test]
    fn diff_is_fenced_and_names_the_file() {
        let d = fenced_diff("/w/a.txt", "a\nb\n", "a\nc\n");
        assert!(d.starts_with("```diff\nIndex: /w/a.txt\n"), "{d}");
        assert!(d.contains("-b\n+c\n"), "{d}");
    }
}
