//! The documents in `docs/` are part of the interface; these tests hold them
//! to the code:
//!
//! - the OpenAPI documents list exactly the routes each socket serves, and
//!   every `$ref` in them resolves;
//! - a real daemon's answers, one or more per operation of both documents,
//!   have a status the document lists for that operation and a body that
//!   validates against the schema it gives;
//! - `docs/manifest.schema.json` is `Manifest::json_schema()`, and the
//!   OpenAPI `Manifest` component is the same schema;
//! - `docs/config.md` names every config key in its table's section, and its
//!   complete example and its list of defaults parse to what they claim;
//! - the seed's example manifest and Rego rule are accepted, and the Rego
//!   examples of `docs/policy.md` load, pass their tests and decide as the
//!   page says.
//!
//! Run with `AIRLOCK_BLESS_DOCS=1` to rewrite `docs/manifest.schema.json`
//! from the code.

#[allow(dead_code)]
#[path = "broker/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use airlock_core::{ErrorCode, Manifest, ManifestLimits};
use airlock_policy::{PolicyConfig, PolicyEngine};
use serde_json::{json, Value};

use common::*;

// ---------------------------------------------------------------------------
// Loading the documents
// ---------------------------------------------------------------------------

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn read_doc(name: &str) -> String {
    let p = docs_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The socket a document describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Socket {
    Agent,
    Operator,
}

impl Socket {
    fn doc(self) -> &'static str {
        match self {
            Socket::Agent => "openapi.yaml",
            Socket::Operator => "openapi-operator.yaml",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Socket::Agent => "agent",
            Socket::Operator => "operator",
        }
    }
    fn routes(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Socket::Agent => airlock_broker::agent_route_list(),
            Socket::Operator => airlock_broker::operator_route_list(),
        }
    }
}

const SOCKETS: [Socket; 2] = [Socket::Agent, Socket::Operator];
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn spec(s: Socket) -> Value {
    serde_norway::from_str(&read_doc(s.doc()))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", s.doc()))
}

/// `(METHOD, path)` of every operation in a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// JSON pointer escaping of one token.
fn esc(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Follow `$ref`s (local to the document) until a non-reference.
fn deref(doc: &Value, mut pointer: String) -> (String, &Value) {
    for _ in 0..16 {
        let v = doc
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("nothing at #{pointer}"));
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("non-local $ref {r}"))
                    .to_string()
            }
            None => return (pointer, v),
        }
    }
    panic!("$ref loop at {pointer}")
}

/// Every `$ref` value in a document, with where it was found.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push((at.to_string(), s.to_string()));
                    }
                } else {
                    refs(x, &format!("{at}/{}", esc(k)), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Every error code, from serde's own list of the enum's variants.
fn all_error_codes() -> Vec<String> {
    let e = serde_json::from_value::<ErrorCode>(json!("\u{1}")).unwrap_err();
    let msg = e.to_string();
    let list = msg
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("unexpected serde message: {msg}"))
        .1;
    let codes: Vec<String> = list
        .split(", ")
        .map(|s| s.trim().trim_matches('`').to_string())
        .collect();
    assert!(codes.len() > 20, "{codes:?}");
    codes
}

/// A schema value without its `description`s (documents may word them differently).
fn strip_descriptions(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "description")
                .map(|(k, x)| (k.clone(), strip_descriptions(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_descriptions).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------
// (1) spec == server
// ---------------------------------------------------------------------------

#[test]
fn openapi_lists_exactly_the_routes_each_socket_serves() {
    let mut operation_ids = BTreeSet::new();
    for s in SOCKETS {
        let doc = spec(s);
        assert!(
            doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
            "{}: OpenAPI 3.1",
            s.doc()
        );
        let served: BTreeSet<(String, String)> = s
            .routes()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let documented = operations(&doc);
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && phantom.is_empty(),
            "{} ({} socket): served but not documented {undocumented:?}; documented but not served {phantom:?}",
            s.doc(),
            s.name()
        );

        for (method, path) in &documented {
            let op = &doc["paths"][path][method.to_lowercase()];
            let at = format!("{} {method} {path}", s.doc());
            assert_eq!(op["x-socket"], s.name(), "{at}: x-socket");
            assert_eq!(op["tags"], json!([s.name()]), "{at}: tags");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: operationId"));
            assert!(
                operation_ids.insert(id.to_string()),
                "{at}: duplicate operationId {id}"
            );
            // Path parameters are declared.
            for seg in path.split('/').filter(|x| x.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"].as_array().into_iter().flatten().any(|p| {
                    let (_, p) = match p.get("$ref").and_then(Value::as_str) {
                        Some(r) => deref(&doc, r[1..].to_string()),
                        None => (String::new(), p),
                    };
                    p["in"] == "path" && p["name"] == name
                });
                assert!(declared, "{at}: path parameter {name} not declared");
            }
            // Capability routes carry the bearer scheme, and only they do.
            let needs_token =
                s == Socket::Agent && (path.starts_with("/v1/fs/") || path.as_str() == "/v1/exec");
            assert_eq!(
                op.get("security").is_some(),
                needs_token,
                "{at}: security requirement"
            );
            if needs_token {
                assert_eq!(op["security"], json!([{"capability": []}]), "{at}");
            }
            // Every response is JSON with a schema; every error is the envelope.
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{at}: responses"));
            assert!(responses.contains_key("200"), "{at}: no 200");
            for (status, _) in responses {
                let n: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{at}: status {status}"));
                let (rp, _) = deref(
                    &doc,
                    format!(
                        "/paths/{}/{}/responses/{status}",
                        esc(path),
                        method.to_lowercase()
                    ),
                );
                let schema_ptr = format!("{rp}/content/application~1json/schema");
                let (_, schema) = deref(&doc, schema_ptr.clone());
                if n >= 400 {
                    let is_envelope = |v: &Value| {
                        v.get("$ref").and_then(Value::as_str)
                            == Some("#/components/schemas/ErrorEnvelope")
                    };
                    let raw = doc.pointer(&schema_ptr).unwrap();
                    let ok = is_envelope(raw)
                        || raw["oneOf"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(is_envelope));
                    assert!(
                        ok,
                        "{at} {status}: error answers must document ErrorEnvelope"
                    );
                }
                assert!(schema.is_object(), "{at} {status}: schema");
            }
        }

        // Every reference resolves.
        let mut all = Vec::new();
        refs(&doc, "", &mut all);
        for (at, r) in all {
            let p = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{}: non-local $ref {r} at {at}", s.doc()));
            assert!(
                doc.pointer(p).is_some(),
                "{}: dangling $ref {r} at {at}",
                s.doc()
            );
        }

        // The error codes are exactly the server's.
        let mut documented: Vec<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let mut real = all_error_codes();
        documented.sort();
        real.sort();
        assert_eq!(documented, real, "{}: ErrorCode enum", s.doc());
    }

    // The agent document's table of statuses per code is the server's.
    let doc = spec(Socket::Agent);
    let text = doc["components"]["schemas"]["ErrorCode"]["description"]
        .as_str()
        .unwrap()
        .replace('\n', " ");
    let mut seen = BTreeMap::new();
    let mut status: Option<u16> = None;
    for word in text.split_whitespace() {
        let w = word.trim_end_matches([',', ';', '.', ':']);
        if w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) {
            status = w.parse().ok();
        } else if let (Some(code), Some(st)) = (
            w.strip_prefix('`').and_then(|x| x.strip_suffix('`')),
            status,
        ) {
            seen.insert(code.to_string(), st);
        }
    }
    for code in all_error_codes() {
        let c: ErrorCode = serde_json::from_value(json!(code)).unwrap();
        assert_eq!(
            seen.get(&code).copied(),
            Some(c.http_status()),
            "ErrorCode description in openapi.yaml: status of `{code}`"
        );
    }

    // Components the two documents share are the same schema.
    let agent = spec(Socket::Agent);
    let operator = spec(Socket::Operator);
    let a = agent["components"]["schemas"].as_object().unwrap();
    let o = operator["components"]["schemas"].as_object().unwrap();
    let shared: Vec<&String> = a.keys().filter(|k| o.contains_key(*k)).collect();
    assert!(shared.len() >= 8, "{shared:?}");
    for k in shared {
        assert_eq!(
            strip_descriptions(&a[k]),
            strip_descriptions(&o[k]),
            "component schema {k} differs between the two documents"
        );
    }
}

// ---------------------------------------------------------------------------
// (3) the manifest schema
// ---------------------------------------------------------------------------

/// The manifest schema as an OpenAPI component: `$defs` become sibling
/// components, references follow, `$schema` goes.
fn openapi_form(schema: &Value) -> (Value, BTreeMap<String, Value>) {
    fn rewrite(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let x = match (k.as_str(), x.as_str()) {
                            ("$ref", Some(r)) => {
                                json!(r.replace("#/$defs/", "#/components/schemas/"))
                            }
                            _ => rewrite(x),
                        };
                        (k.clone(), x)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(rewrite).collect()),
            other => other.clone(),
        }
    }
    let mut main = schema.clone();
    let obj = main.as_object_mut().unwrap();
    obj.remove("$schema");
    let defs = obj.remove("$defs").unwrap_or(json!({}));
    let defs = defs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v)))
        .collect();
    (rewrite(&main), defs)
}

#[test]
fn manifest_schema_file_is_the_manifest_schema() {
    let schema = Manifest::json_schema();
    let pretty = serde_json::to_string_pretty(&schema).unwrap();
    let path = docs_dir().join("manifest.schema.json");
    if std::env::var_os("AIRLOCK_BLESS_DOCS").is_some() {
        std::fs::write(&path, format!("{pretty}\n")).unwrap();
    }
    let text = read_doc("manifest.schema.json");
    assert_eq!(
        text.strip_suffix('\n').unwrap_or(&text),
        pretty,
        "docs/manifest.schema.json is stale; run the docs test with AIRLOCK_BLESS_DOCS=1"
    );

    let (main, defs) = openapi_form(&schema);
    for s in SOCKETS {
        let doc = spec(s);
        let components = &doc["components"]["schemas"];
        assert_eq!(
            components["Manifest"],
            main,
            "{}: Manifest component",
            s.doc()
        );
        for (name, def) in &defs {
            assert_eq!(&components[name], def, "{}: {name} component", s.doc());
        }
        // Enumerations that are written by hand.
        let verbs: Vec<&str> = airlock_core::Verb::ALL.iter().map(|v| v.as_str()).collect();
        if !components["Verb"].is_null() {
            assert_eq!(
                components["Verb"]["enum"],
                json!(verbs),
                "{}: Verb",
                s.doc()
            );
        }
        let treatments = [
            airlock_core::SecretsTreatment::Allow.as_str(),
            airlock_core::SecretsTreatment::Redact.as_str(),
        ];
        for (name, body) in components.as_object().unwrap() {
            if let Some(e) = body["properties"]["secrets"].get("enum") {
                assert_eq!(e, &json!(treatments), "{}: {name}.secrets", s.doc());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (4) config.md
// ---------------------------------------------------------------------------

/// The text of the section whose heading contains `token`, up to the next heading.
fn section<'a>(md: &'a str, token: &str) -> &'a str {
    let lines: Vec<&str> = md.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with('#') && l.contains(token))
        .unwrap_or_else(|| panic!("docs/config.md has no heading with {token}"));
    let offset: usize = lines[..=start].iter().map(|l| l.len() + 1).sum();
    let rest = &md[offset.min(md.len())..];
    let end = rest
        .lines()
        .scan(0usize, |at, l| {
            let here = *at;
            *at += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| l.starts_with('#'))
        .map_or(rest.len(), |(i, _)| i);
    &rest[..end]
}

/// The fenced block of `lang` right after `<!-- marker -->`.
fn marked_block<'a>(md: &'a str, marker: &str, lang: &str) -> &'a str {
    let at = md
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("no <!-- {marker} --> marker"));
    let fence = format!("```{lang}\n");
    let start = at + md[at..].find(&fence).expect("fence") + fence.len();
    let end = start + md[start..].find("\n```").expect("closing fence");
    &md[start..=end]
}

/// Keys of an object value, recursively: `(table, key, value)`.
fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String, Value)>) {
    if let Some(m) = v.as_object() {
        for (k, x) in m {
            out.push((prefix.to_string(), k.clone(), x.clone()));
            if x.is_object() && !x.as_object().unwrap().is_empty() {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&p, x, out);
            }
        }
    }
}

fn drop_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), drop_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn config_md_names_every_key_in_its_section() {
    let md = read_doc("config.md");
    let mut keys = Vec::new();
    walk(
        "",
        &serde_json::to_value(airlock_broker::Config::default()).unwrap(),
        &mut keys,
    );
    let rule = airlock_broker::config::ClassifyRule {
        pattern: "**/x/**".into(),
        labels: vec![],
    };
    walk(
        "[classify]",
        &serde_json::to_value(rule).unwrap(),
        &mut keys,
    );
    walk(
        "quotas.actions.ACTION",
        &serde_json::to_value(airlock_broker::config::ActionQuota::default()).unwrap(),
        &mut keys,
    );
    let profile = airlock_sandbox::Profile::builtin("workspace-write").unwrap();
    walk(
        "profiles.NAME",
        &serde_json::to_value(profile).unwrap(),
        &mut keys,
    );
    assert!(keys.len() > 50, "{}", keys.len());

    let mut missing = Vec::new();
    for (table, key, value) in &keys {
        let heading = if table.is_empty() {
            "Top-level keys".to_string()
        } else {
            format!("`[{table}]`")
        };
        if !section(&md, &heading).contains(&format!("`{key}`")) {
            missing.push(format!("{key} (in the section {heading})"));
        }
        // Every table has its own section.
        let full = if table.is_empty() {
            key.clone()
        } else {
            format!("{table}.{key}")
        };
        let table_heading = match full.as_str() {
            "classify" => Some("`[[classify]]`".to_string()),
            "quotas.actions" => Some("`[quotas.actions.ACTION]`".to_string()),
            "profiles" => Some("`[profiles.NAME]`".to_string()),
            _ if value.is_object() => Some(format!("`[{full}]`")),
            _ => None,
        };
        if let Some(h) = table_heading {
            assert!(
                md.lines().any(|l| l.starts_with('#') && l.contains(&h)),
                "docs/config.md has no section {h}"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "docs/config.md does not name: {missing:?}"
    );

    // The complete example is a valid config that sets every table.
    let example = marked_block(&md, "example", "toml");
    let cfg = airlock_broker::Config::from_toml(example)
        .unwrap_or_else(|e| panic!("the example in docs/config.md does not parse: {e}"));
    assert!(!cfg.classify.is_empty() && !cfg.profiles.is_empty() && !cfg.quotas.actions.is_empty());
    assert_eq!(cfg.exec.profile, "tests");
    assert!(cfg.profiles["tests"].limits.cpu_time.is_some());

    // The list of defaults is exactly the defaults.
    let defaults = marked_block(&md, "defaults", "toml");
    assert_eq!(
        airlock_broker::Config::from_toml(defaults).unwrap(),
        airlock_broker::Config::default()
    );
    let listed: toml::Value = toml::from_str(defaults).unwrap();
    assert_eq!(
        serde_json::to_value(listed).unwrap(),
        drop_nulls(&serde_json::to_value(airlock_broker::Config::default()).unwrap()),
        "the defaults block of docs/config.md lists every non-computed default"
    );
}

// ---------------------------------------------------------------------------
// (5) the seed's examples, and policy.md's
// ---------------------------------------------------------------------------

/// The seed's permission manifest, as written there.
const SEED_MANIFEST: &str = r#"{
"action": "edit_files",
"paths": ["/Users/alice/Documents/report.docx"],
"duration_seconds": 300,
"justification": "Summarize and correct the Q4 report"
}"#;

/// The seed's Rego rule, as written there (Rego v0).
const SEED_REGO: &str = r#"package agent.policy
default allow = false
allow {
input.action == "read"
allowed_path(input.path)
not sensitive(input.path)
}
allowed_path(p) {
startswith(p, "/Users/")
}
sensitive(p) {
startswith(p, "/Users/")
contains(p, ".ssh")
}
"#;

fn schema_validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

fn engine(dir: &Path, include_default: bool) -> PolicyEngine {
    PolicyEngine::load(&PolicyConfig {
        dir: Some(dir.to_path_buf()),
        include_default,
        // Generous: the test build is unoptimised.
        timeout_ms: 10_000,
    })
    .unwrap_or_else(|e| panic!("policy in {} does not load: {e}", dir.display()))
}

#[test]
fn the_seed_manifest_and_rego_are_accepted() {
    let schema: Value = serde_json::from_str(&read_doc("manifest.schema.json")).unwrap();
    let v = schema_validator(&schema);
    let manifest: Value = serde_json::from_str(SEED_MANIFEST).unwrap();
    let errors: Vec<String> = v.iter_errors(&manifest).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "the seed's manifest against docs/manifest.schema.json: {errors:?}"
    );
    let m = Manifest::parse(SEED_MANIFEST.as_bytes(), &ManifestLimits::default()).unwrap();
    assert_eq!(
        m.paths,
        vec!["/Users/alice/Documents/report.docx".to_string()]
    );
    // The schema does reject what the broker rejects for shape.
    assert!(!v.is_valid(&json!({"action": "nuke", "duration_seconds": 5, "justification": "x"})));
    assert!(!v.is_valid(&json!({"action": "read_files", "justification": "x"})));
    assert!(!v.is_valid(
        &json!({"action": "read_files", "duration_seconds": 5, "justification": "x", "extra": 1})
    ));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent_policy.rego"), SEED_REGO).unwrap();
    // Alone, it decides as written.
    let e = engine(dir.path(), false);
    let d = e.evaluate(&json!({"action": "read", "path": "/Users/alice/notes.txt"}));
    assert_eq!(d.decision, airlock_core::DecisionKind::Allow, "{d:?}");
    assert_eq!(d.policy_id, "agent.policy");
    let d = e.evaluate(&json!({"action": "read", "paths": ["/Users/alice/.ssh/id_rsa"]}));
    assert_eq!(d.decision, airlock_core::DecisionKind::Deny, "{d:?}");
    // Beside the default policy it loads too (and, as docs/policy.md says,
    // denies Airlock's actions, which are never "read").
    let e = engine(dir.path(), true);
    let d = e.evaluate(&json!({"action": "read_files", "paths": ["/Users/alice/notes.txt"], "workspaces": ["/Users/alice"]}));
    assert_eq!(d.decision, airlock_core::DecisionKind::Deny, "{d:?}");
    assert_eq!(d.policy_id, "agent.policy");

    // docs/policy.md quotes the seed's Rego as written.
    let md = read_doc("policy.md");
    assert!(
        md.contains(SEED_REGO.trim_end()),
        "docs/policy.md quotes the seed's Rego as written"
    );
}

/// The ```rego blocks of policy.md: (file name from a `# NAME.rego` first line, text).
fn policy_md_rego_blocks() -> Vec<(Option<String>, String)> {
    let md = read_doc("policy.md");
    let mut out = Vec::new();
    let mut rest = md.as_str();
    while let Some(i) = rest.find("```rego\n") {
        let body = &rest[i + 8..];
        let end = body.find("\n```").expect("closing fence");
        let text = &body[..=end];
        let name = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .filter(|n| n.ends_with(".rego"))
            .map(str::to_owned);
        out.push((name, text.to_string()));
        rest = &body[end..];
    }
    out
}

#[test]
fn policy_md_examples_load_pass_their_tests_and_decide_as_described() {
    use airlock_core::DecisionKind::{Allow, Ask, Deny};
    let blocks = policy_md_rego_blocks();
    assert!(blocks.len() >= 6, "{}", blocks.len());
    // Every block loads on its own, beside the default policy.
    for (name, text) in &blocks {
        let dir = tempfile::tempdir().unwrap();
        let file = name.clone().unwrap_or_else(|| "example.rego".into());
        let file = file.replace("_test.rego", "_t.rego");
        std::fs::write(dir.path().join(&file), text).unwrap();
        engine(dir.path(), true);
    }
    // The worked examples together, with their tests.
    let dir = tempfile::tempdir().unwrap();
    let mut named = 0;
    for (name, text) in &blocks {
        if let Some(n) = name.as_deref().filter(|n| n.starts_with("team_")) {
            std::fs::write(dir.path().join(n), text).unwrap();
            named += 1;
        }
    }
    assert_eq!(named, 4, "three examples and their tests");
    let report = airlock_policy::run_tests(dir.path(), true).unwrap();
    let failed: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        report
            .results
            .iter()
            .filter(|r| r.package == "team_test")
            .count()
            >= 6
    );
    // As the page shows them run: only the examples' own tests.
    let own = airlock_policy::run_tests(dir.path(), false).unwrap();
    assert_eq!(own.failed(), 0);
    let md = read_doc("policy.md");
    assert!(
        md.contains(&format!("\n{} passed, 0 failed\n", own.results.len())),
        "docs/policy.md shows what `airlock policy test --no-default` prints ({} tests)",
        own.results.len()
    );

    let e = engine(dir.path(), true);
    let ws = "/home/alice/proj";
    let base = |action: &str, path: &str, labels: Value| {
        json!({
            "action": action, "paths": [path],
            "path_infos": [{"path": path, "labels": labels, "workspace": ws}],
            "labels": labels, "hosts": [], "commands": [], "duration_seconds": 60,
            "justification": "docs", "agent": "report-bot", "model": null, "session": "s-1",
            "workspaces": [ws], "broker_paths": ["/home/alice/.local/state/airlock"],
            "usage": {"requests_per_minute": {"used": 1, "limit": 600, "retry_after": 0}},
            "user": "alice", "peer": {"uid": 1000, "pid": 1, "exe": "/usr/bin/node"},
        })
    };
    // Deny by label: reads are denied, listings still asked about (default).
    let d = e.evaluate(&base(
        "read_files",
        "/home/alice/proj/finance/q4.xlsx",
        json!(["confidential"]),
    ));
    assert_eq!(
        (d.decision, d.policy_id.as_str()),
        (Deny, "team.labels"),
        "{d:?}"
    );
    let d = e.evaluate(&base(
        "list_files",
        "/home/alice/proj/finance",
        json!(["confidential"]),
    ));
    assert_eq!(d.decision, Ask, "{d:?}");
    // ... and at access time inside a broad grant.
    let mut access = base(
        "read_files",
        "/home/alice/proj/finance/q4.xlsx",
        json!(["confidential"]),
    );
    access["access"] = json!(true);
    access["grant_root"] = json!(ws);
    assert_eq!(e.evaluate(&access).decision, Deny);
    // Ask for a host: two reasons; unknown hosts denied.
    let mut net = base("network", "/x", json!([]));
    net["paths"] = json!([]);
    net["path_infos"] = json!([]);
    net["hosts"] = json!(["api.github.com:443"]);
    let d = e.evaluate(&net);
    assert_eq!(d.decision, Ask, "{d:?}");
    assert_eq!(d.reasons.len(), 2, "{d:?}");
    net["hosts"] = json!(["paste.example.net"]);
    let d = e.evaluate(&net);
    assert_eq!(
        (d.decision, d.grantable, d.policy_id.as_str()),
        (Deny, false, "team.hosts"),
        "{d:?}"
    );
    // Per-agent quota.
    let mut q = base("read_files", "/home/alice/proj/a.txt", json!([]));
    assert_eq!(e.evaluate(&q).decision, Allow);
    q["agent"] = json!("nightly-bot-2");
    q["usage"]["requests_per_minute"]["used"] = json!(2);
    let d = e.evaluate(&q);
    assert_eq!(
        (d.decision, d.reason_code.as_deref()),
        (Deny, Some("quota_exceeded")),
        "{d:?}"
    );
    assert_eq!(d.rule, "agent_quota");
    // The adapted seed package.
    let seed_v1 = blocks
        .iter()
        .find(|(n, t)| {
            n.is_none() && t.contains("import rego.v1") && t.contains("package agent.policy")
        })
        .expect("the seed's rule in Airlock's vocabulary");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent_policy.rego"), &seed_v1.1).unwrap();
    let e = engine(dir.path(), true);
    let mut r = base("read_files", "/Users/alice/proj/a.txt", json!([]));
    r["workspaces"] = json!(["/Users/alice/proj"]);
    r["path_infos"][0]["workspace"] = json!("/Users/alice/proj");
    assert_eq!(e.evaluate(&r).decision, Allow);
    let d = e.evaluate(&base("read_files", "/home/alice/proj/a.txt", json!([])));
    assert_eq!(
        (d.decision, d.policy_id.as_str()),
        (Deny, "agent-read-paths-1"),
        "{d:?}"
    );

    // The documented input example decides as the page says.
    let input: Value = serde_json::from_str(marked_block(&md, "input-example", "json")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let d = engine(empty.path(), true).evaluate(&input);
    assert_eq!((d.decision, d.rule.as_str()), (Ask, "labelled"), "{d:?}");
}

// ---------------------------------------------------------------------------
// (2) live answers against the documents
// ---------------------------------------------------------------------------

/// Checks answers against the documents and remembers which operations were seen.
struct Checker {
    docs: BTreeMap<Socket, Value>,
    validators: BTreeMap<(Socket, String), jsonschema::Validator>,
    seen: BTreeSet<(Socket, String, String, u16)>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            docs: SOCKETS.iter().map(|s| (*s, spec(*s))).collect(),
            validators: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// The schema violations of `body` for that documented answer.
    fn violations(
        &mut self,
        s: Socket,
        method: &str,
        template: &str,
        status: u16,
        body: &Value,
    ) -> Vec<String> {
        let doc = &self.docs[&s];
        let m = method.to_lowercase();
        let (rp, _) = deref(
            doc,
            format!("/paths/{}/{m}/responses/{status}", esc(template)),
        );
        let pointer = format!("{rp}/content/application~1json/schema");
        let key = (s, pointer.clone());
        if !self.validators.contains_key(&key) {
            let mut root = doc.clone();
            root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            // A URI fragment: braces of path templates are percent-encoded.
            let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
            root["$ref"] = json!(format!("#{fragment}"));
            self.validators.insert(key.clone(), schema_validator(&root));
        }
        self.validators[&key]
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    /// `status` must be documented for the operation and `body` must validate.
    #[track_caller]
    fn check(&mut self, s: Socket, method: &str, template: &str, status: u16, body: &Value) {
        let at = format!("{} {method} {template} -> {status}", s.name());
        let op = self.docs[&s]["paths"][template]
            .get(method.to_lowercase())
            .unwrap_or_else(|| panic!("{at}: operation not in {}", s.doc()));
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{at}: status not documented in {}; body {body}",
            s.doc()
        );
        let errors = self.violations(s, method, template, status, body);
        assert!(
            errors.is_empty(),
            "{at}: body does not match {}: {errors:?}\n{body:#}",
            s.doc()
        );
        self.seen
            .insert((s, method.to_uppercase(), template.to_string(), status));
    }

    /// Every operation of both documents was exercised at least once.
    fn assert_every_operation_seen(&self) {
        for s in SOCKETS {
            for (m, p) in operations(&self.docs[&s]) {
                assert!(
                    self.seen
                        .iter()
                        .any(|(s2, m2, p2, _)| *s2 == s && *m2 == m && *p2 == p),
                    "no live call of {} {m} {p}",
                    s.name()
                );
            }
        }
    }
}

/// A program the agent runs as its child: one HTTP call on a socket, printing
/// `{"status", "body"}`.
const ONE_CALL_PY: &str = r#"
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("airlock", timeout=30)
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path_)
c = C(sys.argv[1])
c.request(sys.argv[2], sys.argv[3])
r = c.getresponse()
print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
"#;

/// The operator side: the test process itself, never an agent's descendant.
struct Operator {
    rt: tokio::runtime::Runtime,
    client: airlock_client::Client,
}

impl Operator {
    fn new(sock: PathBuf) -> Operator {
        Operator {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: airlock_client::Client::new(sock),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap().into());
        let a = self
            .rt
            .block_on(self.client.send(method, path, None, bytes))
            .unwrap_or_else(|e| panic!("operator {method} {path}: {e}"));
        (a.status, a.json().unwrap())
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn live_answers_match_the_documents() {
    use Socket::{Agent as A, Operator as O};
    let env = Env::new();
    let root = env.tmp.path().canonicalize().unwrap();
    let config = format!(
        "[limits]\npath_allowlist = [{:?}]\n",
        root.display().to_string()
    );
    // A package that only says what becomes of secrets in one MCP tool's calls.
    env.write_policy(
        "secrets.rego",
        "package docs.secrets\n\nimport rego.v1\n\nmcp_secrets := \"redact\" if input.mcp.tool == \"vault\"\n",
    );
    let d = Daemon::start_with(env, &config, vec![]);
    let ws = d.env.ws.clone();
    let report = ws.join("report.txt");
    let mut c = Checker::new();
    let op = Operator::new(d.env.operator_socket());
    let mut agent = d.agent();

    // --- sessions, health, schema, key (agent) ---
    let (s, v) = agent.call("GET", "/v1/session", None, None);
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    c.check(A, "GET", "/v1/session", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"label": "docs test"})),
    );
    assert_eq!(s, 200, "{v}");
    c.check(A, "POST", "/v1/sessions", s, &v);
    let session_id = v["id"].as_str().unwrap().to_string();
    let (s, v) = agent.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"holder": "grandparent"})),
    );
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("holder")),
        "{v}"
    );
    c.check(A, "POST", "/v1/sessions", s, &v);
    let (s, v) = agent.call("GET", "/v1/session", None, None);
    assert_eq!(
        (s, v["id"].as_str()),
        (200, Some(session_id.as_str())),
        "{v}"
    );
    c.check(A, "GET", "/v1/session", s, &v);
    let (s, v) = agent.call("GET", "/v1/health", None, None);
    c.check(A, "GET", "/v1/health", s, &v);
    // The schemas are strict: a missing or an undocumented field is caught.
    let mut extra = v.clone();
    extra["uptime"] = json!(1);
    assert!(!c.violations(A, "GET", "/v1/health", 200, &extra).is_empty());
    assert!(!c
        .violations(A, "GET", "/v1/health", 200, &json!({"status": "ok"}))
        .is_empty());
    let bad_error = json!({"error": {"code": "no_such_code", "message": "x"}});
    assert!(!c
        .violations(A, "POST", "/v1/fs/read", 404, &bad_error)
        .is_empty());
    let (s, v) = agent.call("GET", "/v1/schema/manifest", None, None);
    assert_eq!(v, Manifest::json_schema());
    c.check(A, "GET", "/v1/schema/manifest", s, &v);
    let (s, v) = agent.call("GET", "/v1/public-key", None, None);
    c.check(A, "GET", "/v1/public-key", s, &v);

    // --- requests: allow, deny, ask, invalid, outside the allowlist ---
    let (s, v) = agent.request(manifest("edit_files", &[&ws], 300));
    assert_eq!((s, v["decision"].as_str()), (200, Some("allow")), "{v}");
    c.check(A, "POST", "/v1/requests", s, &v);
    let token = v["token"].as_str().unwrap().to_string();
    let (s, v) = agent.request(manifest(
        "read_files",
        &[&d.env.home.join(".ssh/id_rsa")],
        60,
    ));
    assert_eq!((s, v["decision"].as_str()), (403, Some("deny")), "{v}");
    c.check(A, "POST", "/v1/requests", s, &v);
    let secret = d.env.outside.join("secret.txt");
    let (s, v) = agent.request(manifest("read_files", &[&secret], 60));
    assert_eq!((s, v["decision"].as_str()), (202, Some("ask")), "{v}");
    c.check(A, "POST", "/v1/requests", s, &v);
    let approve_me = v["approval_id"].as_str().unwrap().to_string();
    let (s, v) = agent.request(manifest("list_files", &[&d.env.outside], 60));
    assert_eq!(s, 202, "{v}");
    let deny_me = v["approval_id"].as_str().unwrap().to_string();
    let (s, v) = agent.request(json!({"action": "read_files", "paths": ["relative/path"], "duration_seconds": 60, "justification": "x"}));
    assert_eq!((s, code(&v)), (400, "invalid_path"), "{v}");
    c.check(A, "POST", "/v1/requests", s, &v);
    let (s, v) = agent.request(manifest("read_files", &[Path::new("/etc/hostname")], 60));
    assert_eq!((s, code(&v)), (403, "path_not_allowed"), "{v}");
    c.check(A, "POST", "/v1/requests", s, &v);

    // --- the side-effect-free check: a decision, no token, no approval ---
    let check = "/v1/requests/check";
    let (s, v) = agent.call(
        "POST",
        check,
        None,
        Some(manifest("edit_files", &[&ws], 300)),
    );
    assert_eq!((s, v["decision"].as_str()), (200, Some("allow")), "{v}");
    assert!(v.get("token").is_none(), "{v}");
    c.check(A, "POST", check, s, &v);
    let mcp = json!({"action": "mcp_tool", "duration_seconds": 60, "justification": "list",
        "mcp": {"server": "everything", "tool": "echo"}});
    let (s, v) = agent.call("POST", check, None, Some(mcp));
    assert_eq!(
        (s, v["decision"].as_str(), v["rule"].as_str()),
        (200, Some("ask"), Some("mcp")),
        "{v}"
    );
    c.check(A, "POST", check, s, &v);
    // A result check (`mcp.result_secrets`): the default policy allows it,
    // and the package above says to redact.
    let result_check = json!({"action": "mcp_tool", "duration_seconds": 60, "justification": "result",
        "mcp": {"server": "everything", "tool": "vault", "result_secrets": ["aws-access-token"]}});
    let (s, v) = agent.call("POST", check, None, Some(result_check.clone()));
    assert_eq!(
        (s, v["decision"].as_str(), v["secrets"].as_str()),
        (200, Some("allow"), Some("redact")),
        "{v}"
    );
    c.check(A, "POST", check, s, &v);
    let (s, v) = agent.request(result_check);
    assert_eq!(
        (s, v["rule"].as_str(), v["secrets"].as_str()),
        (200, Some("mcp_result"), Some("redact")),
        "{v}"
    );
    c.check(A, "POST", "/v1/requests", s, &v);
    let (s, v) = agent.call(
        "POST",
        check,
        None,
        Some(json!({"action": "mcp_tool", "duration_seconds": 60, "justification": "x"})),
    );
    assert_eq!((s, code(&v)), (400, "missing_field"), "{v}");
    c.check(A, "POST", check, s, &v);
    let (s, v) = agent.call(
        "POST",
        check,
        None,
        Some(manifest("read_files", &[Path::new("/etc/hostname")], 60)),
    );
    assert_eq!((s, code(&v)), (403, "path_not_allowed"), "{v}");
    c.check(A, "POST", check, s, &v);

    // --- approvals: agent polls, operator decides ---
    let poll = "/v1/approvals/{id}";
    let (s, v) = agent.call(
        "GET",
        &format!("/v1/approvals/{approve_me}?wait=0"),
        None,
        None,
    );
    assert_eq!(s, 202, "{v}");
    c.check(A, "GET", poll, s, &v);
    let (s, v) = agent.call(
        "GET",
        &format!("/v1/approvals/{approve_me}?wait=soon"),
        None,
        None,
    );
    assert_eq!((s, code(&v)), (400, "invalid_value"), "{v}");
    c.check(A, "GET", poll, s, &v);
    let (s, v) = agent.call("GET", "/v1/approvals/a-0000000000000000", None, None);
    assert_eq!((s, code(&v)), (404, "approval_not_found"), "{v}");
    c.check(A, "GET", poll, s, &v);

    let (s, v) = op.call("GET", "/v1/health", None);
    c.check(O, "GET", "/v1/health", s, &v);
    let (s, v) = op.call("GET", "/v1/approvals", None);
    assert_eq!(v["approvals"].as_array().map(Vec::len), Some(2), "{v}");
    c.check(O, "GET", "/v1/approvals", s, &v);
    let (s, v) = op.call("GET", &format!("/v1/approvals/{approve_me}"), None);
    assert_eq!((s, v["state"].as_str()), (200, Some("pending")), "{v}");
    c.check(O, "GET", "/v1/approvals/{id}", s, &v);
    let (s, v) = op.call("GET", "/v1/approvals/a-0000000000000000", None);
    assert_eq!((s, code(&v)), (404, "approval_not_found"), "{v}");
    c.check(O, "GET", "/v1/approvals/{id}", s, &v);
    let (s, v) = op.call(
        "POST",
        &format!("/v1/approvals/{approve_me}/approve"),
        Some(json!({"for_seconds": 60})),
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    c.check(O, "POST", "/v1/approvals/{id}/approve", s, &v);
    let (s, v) = op.call("POST", &format!("/v1/approvals/{approve_me}/approve"), None);
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    c.check(O, "POST", "/v1/approvals/{id}/approve", s, &v);
    let (s, v) = op.call(
        "POST",
        &format!("/v1/approvals/{deny_me}/deny"),
        Some(json!({"reason": "not today"})),
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("denied")), "{v}");
    c.check(O, "POST", "/v1/approvals/{id}/deny", s, &v);
    let (s, v) = op.call(
        "POST",
        &format!("/v1/approvals/{deny_me}/deny"),
        Some(json!({"bogus": 1})),
    );
    assert_eq!((s, code(&v)), (400, "unknown_field"), "{v}");
    c.check(O, "POST", "/v1/approvals/{id}/deny", s, &v);

    let (s, v) = agent.call(
        "GET",
        &format!("/v1/approvals/{approve_me}?wait=5"),
        None,
        None,
    );
    assert_eq!((s, v["decision"].as_str()), (200, Some("allow")), "{v}");
    c.check(A, "GET", poll, s, &v);
    let outside_token = v["token_id"].as_str().unwrap().to_string();
    let (s, v) = agent.call(
        "GET",
        &format!("/v1/approvals/{deny_me}?wait=5"),
        None,
        None,
    );
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (403, Some("denied_by_user")),
        "{v}"
    );
    c.check(A, "GET", poll, s, &v);
    // A standing approval answers an identical request at once.
    let (s, v) = agent.request(manifest("read_files", &[&secret], 60));
    assert_eq!(
        (s, v["approval_id"].as_str()),
        (200, Some(approve_me.as_str())),
        "{v}"
    );
    c.check(A, "POST", "/v1/requests", s, &v);

    // --- file operations ---
    let t = Some(token.as_str());
    let (s, v) = agent.read(&token, &p(&report));
    assert_eq!(
        (s, v["content"].as_str()),
        (200, Some("Q4 revenue: 100\n")),
        "{v}"
    );
    c.check(A, "POST", "/v1/fs/read", s, &v);
    let (s, v) = agent.call("POST", "/v1/fs/list", t, Some(json!({"path": p(&ws)})));
    assert_eq!(s, 200, "{v}");
    c.check(A, "POST", "/v1/fs/list", s, &v);
    let (s, v) = agent.call("POST", "/v1/fs/stat", t, Some(json!({"path": p(&report)})));
    assert_eq!((s, v["kind"].as_str()), (200, Some("file")), "{v}");
    c.check(A, "POST", "/v1/fs/stat", s, &v);
    let (s, v) = agent.write(&token, &p(&ws.join("notes.txt")), "new notes\n");
    assert_eq!((s, v["staged"].as_bool()), (200, Some(true)), "{v}");
    c.check(A, "POST", "/v1/fs/write", s, &v);
    let staging_id = v["staging_id"].as_str().unwrap().to_string();
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/write",
        t,
        Some(json!({"path": p(&ws.join("blob.bin")), "content": "AAEC/w==", "encoding": "base64", "mode": 384})),
    );
    assert_eq!(s, 200, "{v}");
    c.check(A, "POST", "/v1/fs/write", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/stat",
        t,
        Some(json!({"path": p(&ws.join("notes.txt"))})),
    );
    assert_eq!((s, v["staged"].as_bool()), (200, Some(true)), "{v}");
    c.check(A, "POST", "/v1/fs/stat", s, &v);
    let (s, v) = agent.call("POST", "/v1/fs/list", t, Some(json!({"path": p(&ws)})));
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["staged"] == true),
        "{v}"
    );
    c.check(A, "POST", "/v1/fs/list", s, &v);
    let (s, v) = agent.read(&token, &p(&ws.join("blob.bin")));
    assert_eq!((s, v["encoding"].as_str()), (200, Some("base64")), "{v}");
    c.check(A, "POST", "/v1/fs/read", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/rename",
        t,
        Some(json!({"from": p(&ws.join("notes.txt")), "to": p(&ws.join("notes-2.txt"))})),
    );
    assert_eq!(s, 200, "{v}");
    c.check(A, "POST", "/v1/fs/rename", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/delete",
        t,
        Some(json!({"path": p(&ws.join("blob.bin"))})),
    );
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    c.check(A, "POST", "/v1/fs/delete", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/mkdir",
        t,
        Some(json!({"path": p(&ws.join("new/nested"))})),
    );
    assert_eq!((s, v["directory"].as_bool()), (200, Some(true)), "{v}");
    c.check(A, "POST", "/v1/fs/mkdir", s, &v);
    assert!(!ws.join("new").exists(), "mkdir is staged, not applied");
    let (s, v) = agent.call("GET", "/v1/staged", None, None);
    assert_eq!(s, 200, "{v}");
    assert!(
        v["areas"][0]["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["kind"] == "dir")),
        "{v}"
    );
    c.check(A, "GET", "/v1/staged", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/outcomes",
        None,
        Some(json!({"request_id": "r-0123456789abcdef", "status": "success", "tool": "claude-code:Read"})),
    );
    assert_eq!(s, 200, "{v}");
    c.check(A, "POST", "/v1/outcomes", s, &v);
    // Errors.
    let (s, v) = agent.read(&token, &p(&ws.join("missing.txt")));
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    c.check(A, "POST", "/v1/fs/read", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/read",
        None,
        Some(json!({"path": p(&report)})),
    );
    assert_eq!((s, code(&v)), (401, "token_missing"), "{v}");
    c.check(A, "POST", "/v1/fs/read", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/list",
        Some("not-a-token"),
        Some(json!({"path": p(&ws)})),
    );
    assert_eq!((s, code(&v)), (401, "token_invalid"), "{v}");
    c.check(A, "POST", "/v1/fs/list", s, &v);
    let (s, v) = agent.read(&token, &p(&secret));
    assert_eq!((s, code(&v)), (403, "token_scope"), "{v}");
    c.check(A, "POST", "/v1/fs/read", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/stat",
        t,
        Some(json!({"path": p(&report), "follow": true})),
    );
    assert_eq!((s, code(&v)), (400, "unknown_field"), "{v}");
    c.check(A, "POST", "/v1/fs/stat", s, &v);
    let (s, v) = agent.call("POST", "/v1/fs/delete", t, Some(json!({"path": "/a/../b"})));
    assert_eq!((s, code(&v)), (400, "invalid_path"), "{v}");
    c.check(A, "POST", "/v1/fs/delete", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/rename",
        t,
        Some(json!({"from": p(&ws.join("missing.txt")), "to": p(&ws.join("x.txt"))})),
    );
    assert!(s >= 400, "{v}");
    c.check(A, "POST", "/v1/fs/rename", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/write",
        t,
        Some(json!({"path": p(&ws.join("b")), "content": "%%", "encoding": "base64"})),
    );
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("content")),
        "{v}"
    );
    c.check(A, "POST", "/v1/fs/write", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/fs/write",
        t,
        Some(json!({"path": p(&d.env.home.join(".ssh/config")), "content": "x"})),
    );
    assert!(s == 403, "{v}");
    c.check(A, "POST", "/v1/fs/write", s, &v);
    // Exec: refused before any sandbox is needed.
    let exec_body = json!({"argv": ["true"], "cwd": p(&ws)});
    let (s, v) = agent.call("POST", "/v1/exec", None, Some(exec_body.clone()));
    assert_eq!((s, code(&v)), (401, "token_missing"), "{v}");
    c.check(A, "POST", "/v1/exec", s, &v);
    let (s, v) = agent.call("POST", "/v1/exec", t, Some(exec_body));
    assert_eq!((s, code(&v)), (403, "token_scope"), "{v}");
    c.check(A, "POST", "/v1/exec", s, &v);
    let (s, v) = agent.call(
        "POST",
        "/v1/exec",
        t,
        Some(json!({"argv": [], "cwd": p(&ws)})),
    );
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("argv")),
        "{v}"
    );
    c.check(A, "POST", "/v1/exec", s, &v);

    // --- the operator gate: the agent's child is refused ---
    let sock = p(&d.env.operator_socket());
    let (code_, out, err) =
        agent.spawn(&["python3", "-c", ONE_CALL_PY, &sock, "GET", "/v1/status"]);
    assert_eq!(code_, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["status"].as_u64(), code(&r["body"])),
        (Some(403), "forbidden"),
        "{r}"
    );
    c.check(O, "GET", "/v1/status", 403, &r["body"]);

    // --- operator: status, tokens, sessions, staging, policy ---
    let (s, v) = op.call("GET", "/v1/status", None);
    assert_eq!(s, 200, "{v}");
    c.check(O, "GET", "/v1/status", s, &v);
    let (s, v) = op.call("GET", "/v1/tokens", None);
    assert!(v["tokens"].as_array().unwrap().len() >= 2, "{v}");
    c.check(O, "GET", "/v1/tokens", s, &v);
    let (s, v) = op.call("POST", "/v1/tokens/revoke", Some(json!({})));
    assert_eq!((s, code(&v)), (400, "invalid_value"), "{v}");
    c.check(O, "POST", "/v1/tokens/revoke", s, &v);
    let (s, v) = op.call(
        "POST",
        "/v1/tokens/revoke",
        Some(json!({"id": outside_token})),
    );
    assert_eq!((s, v["known"].as_bool()), (200, Some(true)), "{v}");
    c.check(O, "POST", "/v1/tokens/revoke", s, &v);
    let (s, v) = op.call(
        "POST",
        "/v1/tokens/revoke",
        Some(json!({"session": "s-0000000000000000"})),
    );
    assert_eq!(s, 200, "{v}");
    c.check(O, "POST", "/v1/tokens/revoke", s, &v);
    let (s, v) = op.call("GET", "/v1/sessions", None);
    assert!(
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == session_id.as_str()),
        "{v}"
    );
    c.check(O, "GET", "/v1/sessions", s, &v);
    let (s, v) = op.call("POST", "/v1/sessions/s-0000000000000000/quarantine", None);
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    c.check(O, "POST", "/v1/sessions/{id}/quarantine", s, &v);

    let (s, v) = op.call("GET", "/v1/staged", None);
    assert!(
        v["areas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == staging_id.as_str()),
        "{v}"
    );
    c.check(O, "GET", "/v1/staged", s, &v);
    let (s, v) = op.call("GET", &format!("/v1/staged/{staging_id}"), None);
    assert_eq!(s, 200, "{v}");
    c.check(O, "GET", "/v1/staged/{id}", s, &v);
    let (s, v) = op.call("GET", "/v1/staged/st-00000000000000000000", None);
    assert_eq!((s, code(&v)), (404, "staged_not_found"), "{v}");
    c.check(O, "GET", "/v1/staged/{id}", s, &v);
    let (s, v) = op.call("POST", &format!("/v1/staged/{staging_id}/diff"), None);
    assert!(v["diff"].as_str().unwrap().contains("new notes"), "{v}");
    c.check(O, "POST", "/v1/staged/{id}/diff", s, &v);
    let (s, v) = op.call(
        "POST",
        "/v1/staged/st-00000000000000000000/diff",
        Some(json!({})),
    );
    assert_eq!(s, 404, "{v}");
    c.check(O, "POST", "/v1/staged/{id}/diff", s, &v);
    let renamed = p(&ws.join("notes-2.txt"));
    let (s, v) = op.call(
        "POST",
        &format!("/v1/staged/{staging_id}/commit"),
        Some(json!({"paths": [renamed]})),
    );
    assert_eq!(
        (s, v["modified_files"].clone()),
        (200, json!([renamed])),
        "{v}"
    );
    c.check(O, "POST", "/v1/staged/{id}/commit", s, &v);
    assert_eq!(
        std::fs::read_to_string(ws.join("notes-2.txt")).unwrap(),
        "new notes\n"
    );
    let (s, v) = op.call(
        "POST",
        &format!("/v1/staged/{staging_id}/commit"),
        Some(json!({"paths": "all"})),
    );
    assert_eq!((s, code(&v)), (400, "invalid_type"), "{v}");
    c.check(O, "POST", "/v1/staged/{id}/commit", s, &v);
    let (s, v) = op.call("POST", &format!("/v1/staged/{staging_id}/discard"), None);
    assert_eq!((s, v["removed"].as_bool()), (200, Some(true)), "{v}");
    c.check(O, "POST", "/v1/staged/{id}/discard", s, &v);
    let (s, v) = op.call("POST", &format!("/v1/staged/{staging_id}/discard"), None);
    assert_eq!((s, code(&v)), (404, "staged_not_found"), "{v}");
    c.check(O, "POST", "/v1/staged/{id}/discard", s, &v);

    let broken = d
        .env
        .write_policy("broken.rego", "package team.broken\n\ndeny contains if {\n");
    let (s, v) = op.call("POST", "/v1/policy/reload", None);
    assert_eq!((s, code(&v)), (400, "invalid_value"), "{v}");
    c.check(O, "POST", "/v1/policy/reload", s, &v);
    std::fs::remove_file(&broken).unwrap();
    let (s, v) = op.call("POST", "/v1/policy/reload", None);
    assert_eq!(s, 200, "{v}");
    c.check(O, "POST", "/v1/policy/reload", s, &v);

    // Quarantine last: every later request of the session is denied.
    let (s, v) = op.call(
        "POST",
        &format!("/v1/sessions/{session_id}/quarantine"),
        None,
    );
    assert_eq!(
        (s, v["session"]["quarantined"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    c.check(O, "POST", "/v1/sessions/{id}/quarantine", s, &v);
    let (s, v) = agent.request(manifest("read_files", &[&report], 60));
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (403, Some("quarantined")),
        "{v}"
    );
    c.check(A, "POST", "/v1/requests", s, &v);
    let (s, v) = agent.read(&token, &p(&report));
    assert!(s == 401 || s == 403, "{v}");
    c.check(A, "POST", "/v1/fs/read", s, &v);

    c.assert_every_operation_seen();
}
