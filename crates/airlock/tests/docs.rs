//! placeholder
#[test]
fn placeholder() {
    let s = serde_json::to_string_pretty(&airlock_core::Manifest::json_schema()).unwrap();
    std::fs::write("/tmp/manifest.schema.json", s).unwrap();
}
