//! `Manifest::parse` on arbitrary bytes, with the default limits and with
//! limits (including a path allowlist) chosen from the input.
//!
//! Input: the manifest JSON, optionally followed by a NUL byte and bytes
//! that choose the second set of limits (a NUL never occurs in valid JSON,
//! so the split costs no JSON coverage). Without a NUL the limits are
//! chosen from the JSON bytes themselves.
//!
//! Invariants, for every manifest that parses:
//! - every path passes `check_abs_normalised`, and lies component-wise
//!   under an allowlist root when there is an allowlist;
//! - `1 <= duration_seconds <= max_duration_seconds`, and the counts and
//!   lengths are within the limits;
//! - serialise → parse gives the same manifest and the same canonical hash
//!   (the hash binds a human's approval to exactly what was shown);
//! - the allowlist only ever narrows: the same input under the same limits
//!   without the allowlist parses to the same manifest;
//! - where serde's derived `Deserialize` also accepts the input, it agrees.
//!
//! Every refusal is a 4xx `ApiError` whose body serialises.
#![no_main]

use airlock_core::manifest::valid_host;
use airlock_core::path::{check_abs_normalised, MAX_PATH_LEN};
use airlock_core::{Action, Manifest, ManifestLimits};
use airlock_fuzz::{check_client_error, covers, COMPONENTS};
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let default = ManifestLimits::default();
    check(data, &default);

    let (json, tail) = match data.iter().rposition(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let limits = choose_limits(json, &mut Unstructured::new(tail));
    let with = check(json, &limits);
    if !limits.path_allowlist.is_empty() {
        let open = ManifestLimits {
            path_allowlist: Vec::new(),
            ..limits.clone()
        };
        let without = check(json, &open);
        if let Some(m) = with {
            assert_eq!(
                without.as_ref(),
                Some(&m),
                "the allowlist widened or changed a manifest"
            );
        }
    }
});

/// Parse under `limits`, check every invariant, return the manifest.
fn check(bytes: &[u8], limits: &ManifestLimits) -> Option<Manifest> {
    let m = match Manifest::parse(bytes, limits) {
        Ok(m) => m,
        Err(e) => {
            check_client_error(&e);
            return None;
        }
    };

    assert!(m.paths.len() <= limits.max_paths, "too many paths accepted");
    assert!(m.hosts.len() <= limits.max_hosts, "too many hosts accepted");
    assert!(
        m.commands.len() <= limits.max_commands,
        "too many commands accepted"
    );
    for p in &m.paths {
        assert_eq!(check_abs_normalised(p), Ok(()), "accepted path {p:?}");
        if !limits.path_allowlist.is_empty() {
            assert!(
                limits.path_allowlist.iter().any(|root| covers(root, p)),
                "path {p:?} accepted outside allowlist {:?}",
                limits.path_allowlist
            );
        }
    }
    assert!(
        (1..=limits.max_duration_seconds).contains(&m.duration_seconds),
        "duration {} outside 1..={}",
        m.duration_seconds,
        limits.max_duration_seconds
    );
    assert!(
        !m.justification.trim().is_empty(),
        "blank justification accepted"
    );
    assert!(
        m.justification.len() <= limits.max_justification_bytes,
        "justification too long"
    );
    for label in [&m.agent, &m.model, &m.session].into_iter().flatten() {
        assert!(
            label.len() <= limits.max_label_bytes,
            "label too long: {label:?}"
        );
        assert!(
            !label.chars().any(char::is_control),
            "label with control chars: {label:?}"
        );
    }
    for h in &m.hosts {
        assert!(valid_host(h), "invalid host accepted: {h:?}");
    }
    for c in &m.commands {
        assert!(
            !c.is_empty() && !c.contains('\0') && c.len() <= MAX_PATH_LEN,
            "command {c:?}"
        );
    }
    match m.action {
        Action::ReadFiles | Action::ListFiles | Action::EditFiles => {
            assert!(!m.paths.is_empty(), "{} without paths", m.action)
        }
        Action::Exec => assert!(!m.commands.is_empty(), "exec without commands"),
        Action::Network => assert!(!m.hosts.is_empty(), "network without hosts"),
        // An MCP call names its server and exactly the one thing the action is about.
        Action::McpTool | Action::McpResource | Action::McpPrompt => {
            let call = m.mcp.as_ref().expect("mcp action without mcp");
            assert!(!call.server.is_empty(), "mcp call without a server");
            let named = match m.action {
                Action::McpTool => &call.tool,
                Action::McpResource => &call.resource,
                _ => &call.prompt,
            };
            assert!(
                named.as_ref().is_some_and(|n| !n.is_empty()),
                "{} without its name",
                m.action
            );
        }
    }

    // The approval binding: what the broker stores and shows re-parses to
    // the same manifest with the same hash.
    let hash = m.canonical_hash();
    assert!(
        hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let wire = serde_json::to_vec(&m).expect("manifest serialises");
    let again = Manifest::parse(&wire, limits).unwrap_or_else(|e| {
        panic!(
            "serialised manifest {} does not re-parse: {e:?}",
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(again, m, "serialise -> parse changed the manifest");
    assert_eq!(
        again.canonical_hash(),
        hash,
        "canonical hash unstable across a round trip"
    );
    let canonical = airlock_core::canonical_json(&serde_json::to_value(&m).expect("to_value"));
    let from_canonical =
        Manifest::parse(canonical.as_bytes(), limits).expect("canonical form parses");
    assert_eq!(
        from_canonical.canonical_hash(),
        hash,
        "canonical form hashes differently"
    );

    // The published schema type (serde derive) must not disagree with the
    // validator on anything both accept.
    if let Ok(derived) = serde_json::from_slice::<Manifest>(bytes) {
        assert_eq!(derived, m, "serde's Manifest and Manifest::parse disagree");
    }
    Some(m)
}

/// Limits chosen by the fuzzer, with an allowlist built from fixed roots and
/// from ancestors of the paths the manifest itself names (so some paths
/// pass and some are refused).
fn choose_limits(json: &[u8], u: &mut Unstructured<'_>) -> ManifestLimits {
    let named: Vec<String> = serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("paths").and_then(|p| p.as_array()).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .filter(|p| check_abs_normalised(p).is_ok())
        .collect();

    let small = |u: &mut Unstructured<'_>, dflt: usize| -> usize {
        match u.int_in_range(0u8..=3).unwrap_or(0) {
            0 => dflt,
            1 => 0,
            _ => u.int_in_range(0usize..=300).unwrap_or(dflt),
        }
    };
    let max_paths = small(u, 256);
    let max_hosts = small(u, 64);
    let max_commands = small(u, 64);
    let max_justification_bytes = small(u, 2000);
    let max_label_bytes = small(u, 256);
    let max_duration_seconds = match u.int_in_range(0u8..=4).unwrap_or(0) {
        0 => 3600,
        1 => 1,
        2 => 86400,
        3 => u64::MAX,
        _ => u.arbitrary().unwrap_or(3600),
    };

    let mut path_allowlist = Vec::new();
    let n = u.int_in_range(0u8..=3).unwrap_or(0);
    for _ in 0..n {
        let root = match u.int_in_range(0u8..=3).unwrap_or(0) {
            0 => ["/", "/Users/alice", "/home/u/proj", "/tmp"]
                [u.int_in_range(0usize..=3).unwrap_or(0)]
            .to_string(),
            1 if !named.is_empty() => {
                // An ancestor (or the path itself) of a named path.
                let p = &named[u.choose_index(named.len()).unwrap_or(0)];
                let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
                let keep = u.int_in_range(0..=comps.len()).unwrap_or(0);
                format!("/{}", comps[..keep].join("/"))
            }
            _ => {
                // A root from the component vocabulary, kept normalised
                // (the allowlist's documented precondition).
                let k = u.int_in_range(1u8..=3).unwrap_or(1);
                let mut s = String::new();
                for _ in 0..k {
                    let c = COMPONENTS[u.choose_index(COMPONENTS.len()).unwrap_or(0)];
                    s.push('/');
                    s.push_str(c);
                }
                if check_abs_normalised(&s).is_err() {
                    continue;
                }
                s
            }
        };
        path_allowlist.push(root);
    }

    ManifestLimits {
        max_paths,
        max_hosts,
        max_commands,
        max_duration_seconds,
        max_justification_bytes,
        max_label_bytes,
        path_allowlist,
    }
}
