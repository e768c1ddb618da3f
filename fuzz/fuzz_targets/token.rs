//! Capability tokens: parsing of untrusted strings, verification, and
//! attacks on real tokens.
//!
//! Every input is used twice:
//! 1. as a raw string: `airlock_token::parse_untrusted` and
//!    `TokenAuthority::verify` (one authority per process, in a `OnceLock`)
//!    must not panic and must refuse it — nothing the fuzzer writes is
//!    signed by the authority's key;
//! 2. as a structured case (via `arbitrary`): a fuzzer-chosen `Grant` is
//!    minted, attenuated up to three times with fuzzer-chosen paths, verbs
//!    and expiries, then
//!    - every legitimate token (the minted one and each attenuation) is
//!      verified against fuzzer-chosen accesses and must agree exactly with a
//!      reference model of the grant ∩ attenuations (allowed, or the
//!      documented error kind: expired → wrong session → scope);
//!    - one of them is mutated (text and decoded-binary flips, inserts,
//!      removals, truncations, and grafts of another token's bytes): the
//!      result must not parse under our key unless it *is* one of the
//!      legitimate tokens, and must never verify for an access that token's
//!      grant does not cover; attenuating it must fail the same way.
//!
//! Any panic, including one `airlock-token` catches around the biscuit
//! parser (libFuzzer's hook aborts first), is a bug.
#![no_main]

use std::sync::OnceLock;

use airlock_core::path::check_abs_normalised;
use airlock_core::Verb;
use airlock_fuzz::{covers, COMPONENTS};
use airlock_token::{
    attenuate, parse_untrusted, Access, Attenuation, Capability, Grant, TokenAuthority, TokenError,
};
use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

/// Grant expiries are kept before the wall clock (this is 2001-09-09) so the
/// authority's registry of issued tokens prunes them and memory stays flat
/// over millions of mints; accesses supply their own `now`.
const BASE: u64 = 1_000_000_000;

struct Shared {
    auth: TokenAuthority,
    public_hex: String,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let auth = TokenAuthority::ephemeral();
        let public_hex = auth.public_key_hex();
        Shared { auth, public_hex }
    })
}

const HOSTS: &[&str] = &[
    "example.com",
    "example.com:443",
    "api.example.com",
    "10.0.0.5:22",
    "",
];
const COMMANDS: &[&str] = &["cargo", "make", "/usr/bin/make", ""];
const SESSIONS: &[&str] = &["s", "t", "", "s "];

#[derive(Arbitrary, Debug)]
enum PathSpec {
    Comps(Vec<u8>),
    Root,
    Raw(String),
}

impl PathSpec {
    fn build(&self) -> String {
        match self {
            PathSpec::Comps(ix) if ix.is_empty() => "/a".to_string(),
            PathSpec::Comps(ix) => ix
                .iter()
                .take(4)
                .map(|&i| format!("/{}", COMPONENTS[usize::from(i) % COMPONENTS.len()]))
                .collect(),
            PathSpec::Root => "/".to_string(),
            PathSpec::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Label {
    Known(u8),
    Raw(String),
}

impl Label {
    fn build(&self, vocab: &[&str]) -> String {
        match self {
            Label::Known(i) => vocab[usize::from(*i) % vocab.len()].to_string(),
            Label::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Time {
    Near(u16),
    Raw(u64),
}

impl Time {
    fn access(self) -> u64 {
        match self {
            Time::Near(d) => BASE + u64::from(d),
            Time::Raw(t) => t,
        }
    }
    /// Grant expiries: near BASE, or past `i64::MAX` (refused at mint),
    /// never in the wall-clock future (see [`BASE`]).
    fn grant(self) -> u64 {
        match self {
            Time::Near(d) => BASE + u64::from(d),
            Time::Raw(t) if t > i64::MAX as u64 => t,
            Time::Raw(t) => BASE + t % 500_000_000,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct GrantSpec {
    request: Label,
    session: Label,
    verbs: Vec<u8>,
    paths: Vec<PathSpec>,
    hosts: Vec<Label>,
    commands: Vec<Label>,
    expires: Time,
}

#[derive(Arbitrary, Debug)]
struct AttSpec {
    paths: Option<Vec<AccessPath>>,
    verbs: Option<Vec<u8>>,
    expires: Option<AccessTime>,
}

/// An access, mostly phrased relative to the grant so that allowed
/// accesses (and near misses) are common.
#[derive(Arbitrary, Debug)]
struct AccessSpec {
    /// `None`: the grant's session.
    session: Option<Label>,
    verb: Pick<u8>,
    path: Option<AccessPath>,
    host: Option<Pick<Label>>,
    command: Option<Pick<Label>>,
    now: AccessTime,
}

#[derive(Arbitrary, Debug)]
enum Pick<T> {
    /// The grant's n-th entry (modulo its length).
    Granted(u8),
    Other(T),
}

#[derive(Arbitrary, Debug)]
enum AccessPath {
    /// A granted path with components appended (or a string suffix, to
    /// probe `/a/b` against `/a/bc`).
    Under {
        granted: u8,
        extra: Vec<u8>,
        suffix: Option<String>,
    },
    Other(PathSpec),
}

#[derive(Arbitrary, Debug)]
enum AccessTime {
    /// This many seconds before the grant's expiry.
    Before(u16),
    /// This many seconds after it.
    After(u16),
    Other(Time),
}

fn pick<T: Clone>(from: &[T], i: u8) -> Option<T> {
    (!from.is_empty()).then(|| from[usize::from(i) % from.len()].clone())
}

impl AccessPath {
    fn build(&self, g: &Grant) -> String {
        match self {
            AccessPath::Under {
                granted,
                extra,
                suffix,
            } => {
                let mut s = pick(&g.paths, *granted).unwrap_or_else(|| "/a".into());
                for &c in extra.iter().take(3) {
                    if !s.ends_with('/') {
                        s.push('/');
                    }
                    s.push_str(COMPONENTS[usize::from(c) % COMPONENTS.len()]);
                }
                if let Some(x) = suffix {
                    s.push_str(x);
                }
                s
            }
            AccessPath::Other(p) => p.build(),
        }
    }
}

impl AccessTime {
    fn build(&self, g: &Grant) -> u64 {
        match *self {
            AccessTime::Before(d) => g.expires_at.saturating_sub(u64::from(d)),
            AccessTime::After(d) => g.expires_at.saturating_add(1 + u64::from(d)),
            AccessTime::Other(t) => t.access(),
        }
    }
}

impl AccessSpec {
    fn build(&self, g: &Grant) -> OwnedAccess {
        let verb = match self.verb {
            Pick::Granted(i) => pick(&g.verbs, i).unwrap_or(Verb::Read),
            Pick::Other(i) => Verb::ALL[usize::from(i) % Verb::ALL.len()],
        };
        let path = self.path.as_ref().map(|p| p.build(g));
        let label = |p: &Pick<Label>, from: &[String], vocab: &[&str]| match p {
            Pick::Granted(i) => pick(from, *i).unwrap_or_default(),
            Pick::Other(l) => l.build(vocab),
        };
        OwnedAccess(
            self.session
                .as_ref()
                .map_or_else(|| g.session.clone(), |l| l.build(SESSIONS)),
            verb,
            path,
            self.host.as_ref().map(|h| label(h, &g.hosts, HOSTS)),
            self.command
                .as_ref()
                .map(|c| label(c, &g.commands, COMMANDS)),
            self.now.build(g),
        )
    }
}

#[derive(Arbitrary, Debug)]
enum Edit {
    /// On the base64url text.
    Flip {
        pos: u16,
        mask: u8,
    },
    Insert {
        pos: u16,
        byte: u8,
    },
    Remove {
        pos: u16,
        len: u8,
    },
    Truncate {
        len: u16,
    },
    /// On the decoded protobuf bytes, re-encoded afterwards.
    BinFlip {
        pos: u16,
        mask: u8,
    },
    BinInsert {
        pos: u16,
        byte: u8,
    },
    BinRemove {
        pos: u16,
        len: u8,
    },
    /// Replace everything from `at` with another legitimate token's bytes
    /// from `from` on (block chopping and splicing).
    BinGraft {
        other: u8,
        at: u16,
        from: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Case {
    grant: GrantSpec,
    atts: Vec<AttSpec>,
    accesses: Vec<AccessSpec>,
    mutate: u8,
    edits: Vec<Edit>,
    reattenuate: Option<AttSpec>,
}

fn verbs(ix: &[u8]) -> Vec<Verb> {
    ix.iter()
        .take(8)
        .map(|&i| Verb::ALL[usize::from(i) % Verb::ALL.len()])
        .collect()
}

fn build_att(s: &AttSpec, g: &Grant) -> Attenuation {
    Attenuation {
        paths: s
            .paths
            .as_ref()
            .map(|ps| ps.iter().take(4).map(|p| p.build(g)).collect()),
        verbs: s.verbs.as_deref().map(verbs),
        expires_at: s.expires.as_ref().map(|t| t.build(g)),
    }
}

/// One legitimate token and everything it was narrowed by.
struct Level {
    token: String,
    atts: Vec<Attenuation>,
}

fn label_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024
}

fn grant_valid(g: &Grant) -> bool {
    label_ok(&g.request_id)
        && label_ok(&g.session)
        && !g.verbs.is_empty()
        && g.paths.iter().all(|p| check_abs_normalised(p).is_ok())
        && g.hosts.iter().all(|h| label_ok(h))
        && g.commands.iter().all(|c| label_ok(c))
        && i64::try_from(g.expires_at).is_ok()
}

fn att_valid(a: &Attenuation) -> bool {
    (a.paths.is_some() || a.verbs.is_some() || a.expires_at.is_some())
        && a.paths.as_ref().is_none_or(|ps| {
            !ps.is_empty() && ps.len() <= 256 && ps.iter().all(|p| check_abs_normalised(p).is_ok())
        })
        && a.verbs.as_ref().is_none_or(|v| !v.is_empty())
        && a.expires_at.is_none_or(|e| i64::try_from(e).is_ok())
}

#[derive(Debug, PartialEq, Eq)]
enum Want {
    Allow,
    Expired,
    WrongSession,
    Scope,
}

/// The reference model of `verify` for a legitimate token.
fn expected(g: &Grant, atts: &[Attenuation], a: &Access<'_>) -> Want {
    if a.now > g.expires_at || atts.iter().filter_map(|t| t.expires_at).any(|e| a.now > e) {
        return Want::Expired;
    }
    if a.session != g.session {
        return Want::WrongSession;
    }
    let needs = match a.verb {
        Verb::Read | Verb::List | Verb::Stat | Verb::Write | Verb::Delete => a.path.is_some(),
        Verb::Connect => a.host.is_some(),
        Verb::Exec => a.command.is_some(),
        // An MCP call names no resource: the verb alone is the grant.
        Verb::Call => true,
    };
    let path_ok = a.path.is_none_or(|p| check_abs_normalised(p).is_ok());
    let granted = g.verbs.contains(&a.verb)
        && a.path.is_none_or(|p| g.paths.iter().any(|r| covers(r, p)))
        && a.host.is_none_or(|h| g.hosts.iter().any(|x| x == h))
        && a.command.is_none_or(|c| g.commands.iter().any(|x| x == c));
    let narrowed_ok = atts.iter().all(|t| {
        t.paths
            .as_ref()
            .is_none_or(|ps| a.path.is_some_and(|p| ps.iter().any(|r| covers(r, p))))
            && t.verbs.as_ref().is_none_or(|vs| vs.contains(&a.verb))
    });
    if needs && path_ok && granted && narrowed_ok {
        Want::Allow
    } else {
        Want::Scope
    }
}

/// `verify`, retried while its answer could be an artefact of the
/// authorizer's 50 ms wall-clock backstop on a loaded machine: `Invalid`
/// (the Datalog run was cut off), or `Expired { expired_at: now }` where the
/// model says otherwise (the time-zero re-run that tells an expiry check from
/// a scope refusal was cut off, and `classify_failure` then reports expiry;
/// see README, "Findings"). A deterministic disagreement survives the retries.
fn verify(
    auth: &TokenAuthority,
    token: &str,
    a: &Access<'_>,
    want: &Want,
) -> Result<Capability, TokenError> {
    let mut r = auth.verify(token, a);
    for _ in 0..5 {
        let artefact = match &r {
            Err(TokenError::Invalid) => true,
            Err(TokenError::Expired { expired_at }) => {
                *want != Want::Expired && *expired_at == a.now
            }
            _ => false,
        };
        if !artefact {
            break;
        }
        r = auth.verify(token, a);
    }
    r
}

fn check_refused_invalid(what: &str, r: Result<(), TokenError>) {
    if let Err(e) = r {
        assert!(
            matches!(e, TokenError::Invalid),
            "{what}: refusal is {e:?}, not Invalid"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let sh = shared();

    // 1. The input as an untrusted token string.
    let raw = String::from_utf8_lossy(data);
    check_refused_invalid("parse_untrusted", parse_untrusted(&raw));
    // `verify` parses first (signature, canonical encoding, metadata).
    let probe = Access {
        session: "s",
        verb: Verb::Read,
        path: Some("/a"),
        host: None,
        command: None,
        now: BASE,
    };
    match sh.auth.verify(&raw, &probe) {
        Ok(c) => panic!("fuzzer-written string verifies: {c:?}"),
        Err(e) => assert!(
            matches!(e, TokenError::Invalid),
            "garbage refused as {e:?}, not Invalid"
        ),
    }

    // 2. A structured case.
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(sh, &case);
});

fn run_case(sh: &Shared, case: &Case) {
    let g = &case.grant;
    let grant = Grant {
        request_id: g.request.build(&["r", ""]),
        session: g.session.build(SESSIONS),
        verbs: verbs(&g.verbs),
        paths: g.paths.iter().take(4).map(PathSpec::build).collect(),
        hosts: g.hosts.iter().take(3).map(|h| h.build(HOSTS)).collect(),
        commands: g
            .commands
            .iter()
            .take(3)
            .map(|c| c.build(COMMANDS))
            .collect(),
        expires_at: g.expires.grant(),
    };
    let minted = match sh.auth.mint(&grant) {
        Ok(m) => {
            assert!(
                grant_valid(&grant),
                "mint accepted an invalid grant {grant:?}"
            );
            m
        }
        Err(TokenError::InvalidInput { field, .. }) => {
            // Only an oversized token may be refused once the grant is valid.
            assert!(
                !grant_valid(&grant) || field == "grant",
                "mint refused a valid grant ({field}): {grant:?}"
            );
            return;
        }
        Err(e) => panic!("mint failed with {e:?} for {grant:?}"),
    };

    // Attenuation chain.
    let mut levels = vec![Level {
        token: minted.token.clone(),
        atts: Vec::new(),
    }];
    for spec in case.atts.iter().take(3) {
        let att = build_att(spec, &grant);
        let prev = levels.last().expect("at least the minted token");
        match attenuate(&prev.token, &sh.public_hex, &att) {
            Ok(t) => {
                assert!(
                    att_valid(&att),
                    "attenuate accepted an invalid attenuation {att:?}"
                );
                let mut atts = prev.atts.clone();
                atts.push(att);
                levels.push(Level { token: t, atts });
            }
            Err(TokenError::InvalidInput { field, .. }) => {
                assert!(
                    !att_valid(&att) || field == "attenuation",
                    "attenuate refused a valid attenuation {att:?} ({field})"
                );
                break;
            }
            Err(e) => panic!("attenuate of a legitimate token failed with {e:?}"),
        }
    }

    let accesses: Vec<OwnedAccess> = case
        .accesses
        .iter()
        .take(4)
        .map(|a| a.build(&grant))
        .collect();

    // Legitimate tokens agree with the model exactly.
    for level in &levels {
        for a in accesses.iter().map(access) {
            let want = expected(&grant, &level.atts, &a);
            let got = verify(&sh.auth, &level.token, &a, &want);
            match (&want, &got) {
                (Want::Allow, Ok(cap)) => {
                    assert_eq!(cap.token_id(), minted.id);
                    assert_eq!(cap.session(), grant.session);
                    assert_eq!(cap.request_id(), grant.request_id);
                    assert_eq!(cap.verb(), a.verb);
                    let exp = level.atts.iter().filter_map(|t| t.expires_at).fold(grant.expires_at, u64::min);
                    assert_eq!(cap.expires_at(), exp, "capability expiry");
                }
                (Want::Expired, Err(TokenError::Expired { .. }))
                | (Want::WrongSession, Err(TokenError::WrongSession))
                | (Want::Scope, Err(TokenError::Scope { .. })) => {}
                _ => panic!(
                    "verify disagrees with the model: want {want:?}, got {got:?}\n grant {grant:?}\n atts {:?}\n access {a:?}",
                    level.atts
                ),
            }
        }
    }

    // Mutate one of them.
    if case.edits.is_empty() {
        return;
    }
    let base = &levels[usize::from(case.mutate) % levels.len()].token;
    let mut bytes = base.clone().into_bytes();
    for e in case.edits.iter().take(6) {
        apply(&mut bytes, e, &levels);
    }
    let mutated = String::from_utf8_lossy(&bytes).into_owned();
    let legit = levels.iter().find(|l| l.token == mutated);

    check_refused_invalid("parse_untrusted(mutated)", parse_untrusted(&mutated));
    let parsed = sh.auth.parse_untrusted(&mutated);
    if legit.is_none() {
        assert!(
            parsed.is_err(),
            "a mutated token parses under our key: {mutated}"
        );
    }
    // A token that does not parse fails every access alike: one access
    // exercises that path, more would only repeat the parse.
    let n = if parsed.is_ok() { accesses.len() } else { 1 };
    for a in accesses.iter().take(n).map(access) {
        if let Ok(cap) = sh.auth.verify(&mutated, &a) {
            let Some(l) = legit else {
                panic!("a mutated token verifies: {mutated} for {a:?}: {cap:?}")
            };
            assert_eq!(
                expected(&grant, &l.atts, &a),
                Want::Allow,
                "mutated token verifies beyond its grant"
            );
        }
    }

    // Attenuating a mutated token must be refused unless it is legitimate,
    // and never widens.
    if let Some(spec) = &case.reattenuate {
        let att = build_att(spec, &grant);
        match attenuate(&mutated, &sh.public_hex, &att) {
            Ok(t) => {
                let Some(l) = legit else {
                    panic!("a mutated token was attenuated: {mutated}")
                };
                let mut atts = l.atts.clone();
                atts.push(att);
                for a in accesses.iter().map(access) {
                    if sh.auth.verify(&t, &a).is_ok() {
                        assert_eq!(
                            expected(&grant, &atts, &a),
                            Want::Allow,
                            "attenuation widened"
                        );
                    }
                }
            }
            Err(TokenError::Invalid) | Err(TokenError::InvalidInput { .. }) => {}
            Err(e) => panic!("attenuate refused with {e:?}"),
        }
    }
}

/// An access's strings, built once per case: (session, verb, path, host,
/// command, now).
struct OwnedAccess(
    String,
    Verb,
    Option<String>,
    Option<String>,
    Option<String>,
    u64,
);

fn access(t: &OwnedAccess) -> Access<'_> {
    Access {
        session: &t.0,
        verb: t.1,
        path: t.2.as_deref(),
        host: t.3.as_deref(),
        command: t.4.as_deref(),
        now: t.5,
    }
}

fn at(pos: u16, len: usize) -> usize {
    usize::from(pos) % (len + 1)
}

fn apply(bytes: &mut Vec<u8>, e: &Edit, levels: &[Level]) {
    match *e {
        Edit::Flip { pos, mask } if !bytes.is_empty() => {
            let i = usize::from(pos) % bytes.len();
            bytes[i] ^= mask.max(1);
        }
        Edit::Insert { pos, byte } => bytes.insert(at(pos, bytes.len()), byte),
        Edit::Remove { pos, len } => {
            let i = at(pos, bytes.len());
            let j = (i + usize::from(len).max(1)).min(bytes.len());
            bytes.drain(i..j);
        }
        Edit::Truncate { len } => bytes.truncate(at(len, bytes.len())),
        Edit::BinFlip { .. }
        | Edit::BinInsert { .. }
        | Edit::BinRemove { .. }
        | Edit::BinGraft { .. } => {
            let Ok(mut bin) = URL_SAFE.decode(&bytes) else {
                return;
            };
            match *e {
                Edit::BinFlip { pos, mask } if !bin.is_empty() => {
                    let i = usize::from(pos) % bin.len();
                    bin[i] ^= mask.max(1);
                }
                Edit::BinInsert { pos, byte } => bin.insert(at(pos, bin.len()), byte),
                Edit::BinRemove { pos, len } => {
                    let i = at(pos, bin.len());
                    let j = (i + usize::from(len).max(1)).min(bin.len());
                    bin.drain(i..j);
                }
                Edit::BinGraft {
                    other,
                    at: cut,
                    from,
                } => {
                    let donor = &levels[usize::from(other) % levels.len()].token;
                    let Ok(donor) = URL_SAFE.decode(donor) else {
                        return;
                    };
                    bin.truncate(at(cut, bin.len()));
                    bin.extend_from_slice(&donor[at(from, donor.len())..]);
                }
                _ => {}
            }
            *bytes = URL_SAFE.encode(&bin).into_bytes();
        }
        _ => {}
    }
}
