//! `airlock mcp`: the MCP filesystem/shell server whose every tool call is
//! a broker request (manifest → policy → consent → token → operation →
//! audit). Consent never travels over MCP: an `ask` is decided by the user
//! on the operator socket while the call waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::edit::{self, Edit};
use crate::link::{self, BrokerLink, Grant, Refusal};
use crate::paths;

/// Largest file `read_text_file` assembles in memory.
const MAX_TEXT_BYTES: u64 = 16 << 20;

/// How `airlock mcp` runs.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// The broker's agent socket.
    pub socket: std::path::PathBuf,
    /// Allowed directories (absolute, canonical).
    pub dirs: Vec<String>,
    /// How long a call waits for a human when policy asks.
    pub ask_timeout: Duration,
    /// Whether MCP roots from the client replace `dirs`.
    pub accept_roots: bool,
}

/// The server. Cheap to clone (one per HTTP session shares the link).
#[derive(Clone)]
pub struct FsServer {
    inner: Arc<Inner>,
}

struct Inner {
    link: BrokerLink,
    allowed: RwLock<Vec<String>>,
    /// The broker's workspaces: roots outside them are refused.
    workspaces: Vec<String>,
    accept_roots: bool,
    home: Option<String>,
    client: RwLock<String>,
    tools: Vec<Tool>,
    /// Read-side grants by (action, paths), with the instant they stop being reused.
    grants: Mutex<HashMap<GrantKey, (Grant, Instant)>>,
}

/// A grant's action and exact paths.
type GrantKey = (String, Vec<String>);

/// How long a capability the front door asks for lasts.
pub(crate) const GRANT_SECONDS: u64 = 60;
/// A reused capability has at least this much life left.
const REUSE_MARGIN: Duration = Duration::from_secs(20);

/// One call's way to tell the client we are waiting for a human.
struct Notifier {
    peer: rmcp::Peer<RoleServer>,
    token: Option<rmcp::model::ProgressToken>,
    step: AtomicU64,
}

impl Notifier {
    fn send(&self, msg: String) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let n = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = self.peer.clone();
        tokio::spawn(async move {
            let _ = peer
                .notify_progress(ProgressNotificationParam::new(token, n as f64).with_message(msg))
                .await;
        });
    }
}

type ToolResult = Result<CallToolResult, Refusal>;

fn text(t: impl Into<String>) -> CallToolResult {
    let t = t.into();
    let mut r = CallToolResult::success(vec![ContentBlock::text(t.clone())]);
    r.structured_content = Some(json!({ "content": t }));
    r
}

fn failure(r: Refusal) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(r.to_string())])
}

fn args<T: for<'de> Deserialize<'de>>(tool: &str, a: &Map<String, Value>) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(a.clone())).map_err(|e| {
        Refusal::Invalid(format!(
            "Invalid arguments for tool {tool}: {e}. See the tool's inputSchema in tools/list."
        ))
    })
}

#[derive(Deserialize)]
struct PathArg {
    path: String,
}

#[derive(Deserialize)]
struct ReadArgs {
    path: String,
    head: Option<f64>,
    tail: Option<f64>,
}

#[derive(Deserialize)]
struct PathsArg {
    paths: Vec<String>,
}

#[derive(Deserialize)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct EditArgs {
    path: String,
    edits: Vec<Edit>,
    #[serde(default, rename = "dryRun")]
    dry_run: bool,
}

#[derive(Deserialize)]
struct SizesArgs {
    path: String,
    #[serde(default, rename = "sortBy")]
    sort_by: Option<String>,
}

#[derive(Deserialize)]
struct TreeArgs {
    path: String,
    #[serde(default, rename = "excludePatterns")]
    exclude: Vec<String>,
}

#[derive(Deserialize)]
struct MoveArgs {
    source: String,
    destination: String,
}

#[derive(Deserialize)]
struct SearchArgs {
    path: String,
    pattern: String,
    #[serde(default, rename = "excludePatterns")]
    exclude: Vec<String>,
}

#[derive(Deserialize)]
struct RunArgs {
    argv: Option<Vec<String>>,
    command: Option<String>,
    cwd: Option<String>,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct FetchArgs {
    url: String,
}

fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    if bytes == 0 {
        return "0 B".into();
    }
    let i = ((bytes as f64).ln() / 1024f64.ln()).floor() as usize;
    if i == 0 {
        return format!("{bytes} B");
    }
    let i = i.min(UNITS.len() - 1);
    format!("{:.2} {}", bytes as f64 / 1024f64.powi(i as i32), UNITS[i])
}

fn glob(p: &str) -> Result<globset::GlobMatcher, Refusal> {
    globset::GlobBuilder::new(p)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Refusal::Invalid(format!("invalid glob pattern {p:?}: {e}")))
}

fn mime(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

fn staged_note(v: &Value) -> String {
    match v["staging_id"].as_str() {
        Some(id) => format!(
            " (staged for review, not yet applied: the user reviews it with `airlock staged diff {id}` and applies it with `airlock staged commit {id}`)"
        ),
        None => String::new(),
    }
}

impl FsServer {
    /// A server over the broker at `opts.socket`. Checks that the broker
    /// answers and that every allowed directory lies within its workspaces.
    pub async fn connect(opts: FsOptions) -> Result<FsServer, Refusal> {
        let link = BrokerLink::new(opts.socket.clone(), opts.ask_timeout);
        FsServer::over(link, opts).await
    }

    /// A server over `link` (`opts.socket` is not used), with the same checks.
    pub async fn over(link: BrokerLink, opts: FsOptions) -> Result<FsServer, Refusal> {
        let health = link.health().await?;
        let workspaces: Vec<String> = health["workspaces"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for d in &opts.dirs {
            if !workspaces.iter().any(|w| paths::within(d, w)) {
                return Err(Refusal::Invalid(format!(
                    "{d} is not within the broker's workspaces ({}); start the broker with `airlock serve --workspace {d}` \
                     or add it to `workspaces` in its config",
                    if workspaces.is_empty() { "none".to_string() } else { workspaces.join(", ") }
                )));
            }
        }
        Ok(FsServer {
            inner: Arc::new(Inner {
                link,
                allowed: RwLock::new(opts.dirs),
                workspaces,
                accept_roots: opts.accept_roots,
                home: std::env::var("HOME").ok().filter(|h| h.starts_with('/')),
                client: RwLock::new("mcp-client".into()),
                tools: crate::tools::all(),
                grants: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The directories tools may name.
    pub fn allowed(&self) -> Vec<String> {
        self.inner.allowed.read().expect("lock").clone()
    }

    fn resolve(&self, raw: &str) -> Result<String, Refusal> {
        paths::resolve(raw, &self.allowed(), self.inner.home.as_deref()).map_err(Refusal::Invalid)
    }

    fn agent(&self) -> String {
        format!("airlock-mcp/{}", self.inner.client.read().expect("lock"))
    }

    async fn grant(
        &self,
        action: &str,
        paths: Vec<String>,
        why: String,
        n: &Notifier,
    ) -> Result<Grant, Refusal> {
        // A read-side capability is reused for the same paths while it has
        // well over REUSE_MARGIN left: it is scoped to exactly those paths,
        // and every use is still verified (expiry, revocation, session),
        // re-checked against the never-list and audited by the broker.
        // Mutations and commands are decided afresh every time.
        let reusable = matches!(action, "read_files" | "list_files");
        let key = (action.to_string(), paths.clone());
        if reusable {
            if let Some((g, until)) = self.inner.grants.lock().expect("lock").get(&key) {
                if Instant::now() < *until {
                    return Ok(g.clone());
                }
            }
        }
        let m = link::manifest(action, paths, why, &self.agent());
        let g = self.inner.link.grant(m, &|msg| n.send(msg)).await?;
        if reusable {
            let mut cache = self.inner.grants.lock().expect("lock");
            if cache.len() >= 1024 {
                cache.clear();
            }
            let until = Instant::now() + Duration::from_secs(GRANT_SECONDS) - REUSE_MARGIN;
            cache.insert(key, (g.clone(), until));
        }
        Ok(g)
    }

    /// Resolve one client path and ask for `action` on it; `why` words the
    /// justification from the resolved path.
    async fn grant_path(
        &self,
        action: &str,
        raw: &str,
        why: impl FnOnce(&str) -> String,
        n: &Notifier,
    ) -> Result<(String, Grant), Refusal> {
        let path = self.resolve(raw)?;
        let g = self
            .grant(action, vec![path.clone()], why(&path), n)
            .await?;
        Ok((path, g))
    }

    async fn fs(&self, route: &str, g: &Grant, body: Value) -> Result<Value, Refusal> {
        let r = self.inner.link.call(route, &g.token, &body).await;
        if matches!(r, Err(Refusal::Token(_))) {
            // Revoked, expired or quarantined: never offer it again.
            self.inner
                .grants
                .lock()
                .expect("lock")
                .retain(|_, (c, _)| c.token != g.token);
        }
        r
    }

    /// The whole file through the broker (its merged, staged-over-real view).
    async fn read_all(&self, g: &Grant, path: &str, max: u64) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        loop {
            let v = self
                .fs(
                    "/v1/fs/read",
                    g,
                    json!({"path": path, "offset": out.len() as u64}),
                )
                .await?;
            let content = v["content"].as_str().unwrap_or_default();
            if v["encoding"] == "base64" {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .map_err(|e| Refusal::Broker(format!("broker sent bad base64: {e}")))?;
                out.extend_from_slice(&b);
            } else {
                out.extend_from_slice(content.as_bytes());
            }
            if out.len() as u64 > max {
                return Err(Refusal::Invalid(format!(
                    "{path} is larger than {} bytes; read it with head or tail",
                    max
                )));
            }
            if v["eof"].as_bool() != Some(false) || v["length"].as_u64() == Some(0) {
                return Ok(out);
            }
        }
    }

    async fn read_text(&self, tool: &str, a: ReadArgs, n: &Notifier) -> ToolResult {
        let path = self.resolve(&a.path)?;
        if a.head.is_some() && a.tail.is_some() {
            return Err(Refusal::Invalid(
                "Cannot specify both head and tail parameters simultaneously".into(),
            ));
        }
        let g = self
            .grant(
                "read_files",
                vec![path.clone()],
                format!("MCP {tool}: read {path}"),
                n,
            )
            .await?;
        let bytes = self.read_all(&g, &path, MAX_TEXT_BYTES).await?;
        let content = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
        let content = match (a.head, a.tail) {
            (Some(h), _) if h > 0.0 => content
                .split('\n')
                .take(h as usize)
                .collect::<Vec<_>>()
                .join("\n"),
            (_, Some(t)) if t > 0.0 => {
                let lines: Vec<&str> = content.split('\n').collect();
                lines[lines.len().saturating_sub(t as usize)..].join("\n")
            }
            _ => content,
        };
        Ok(text(content))
    }

    async fn call(&self, name: &str, a: &Map<String, Value>, n: &Notifier) -> ToolResult {
        match name {
            "read_text_file" | "read_file" => self.read_text(name, args(name, a)?, n).await,
            "read_media_file" => {
                let p: PathArg = args(name, a)?;
                let (path, g) = self
                    .grant_path(
                        "read_files",
                        &p.path,
                        |path| format!("MCP {name}: read {path}"),
                        n,
                    )
                    .await?;
                let data = base64::engine::general_purpose::STANDARD
                    .encode(self.read_all(&g, &path, 64 << 20).await?);
                let mt = mime(&path);
                let block = if mt.starts_with("image/") {
                    ContentBlock::image(data, mt)
                } else if mt.starts_with("audio/") {
                    ContentBlock::audio(data, mt)
                } else {
                    serde_json::from_value(json!({"type": "resource", "resource": {
                        "uri": format!("file://{path}"), "mimeType": mt, "blob": data}}))
                    .map_err(|e| Refusal::Broker(e.to_string()))?
                };
                Ok(CallToolResult::success(vec![block]))
            }
            "read_multiple_files" => {
                let p: PathsArg = args(name, a)?;
                if p.paths.is_empty() {
                    return Err(Refusal::Invalid("paths must name at least one file".into()));
                }
                let mut parts = Vec::new();
                for raw in &p.paths {
                    let one = async {
                        let (path, g) = self
                            .grant_path(
                                "read_files",
                                raw,
                                |path| format!("MCP {name}: read {path}"),
                                n,
                            )
                            .await?;
                        let b = self.read_all(&g, &path, MAX_TEXT_BYTES).await?;
                        Ok::<_, Refusal>(String::from_utf8_lossy(&b).into_owned())
                    };
                    parts.push(match one.await {
                        Ok(c) => format!("{raw}:\n{c}\n"),
                        Err(e) => format!("{raw}: Error - {e}"),
                    });
                }
                Ok(text(parts.join("\n---\n")))
            }
            "write_file" => {
                let w: WriteArgs = args(name, a)?;
                let (path, g) = self
                    .grant_path(
                        "edit_files",
                        &w.path,
                        |path| format!("MCP {name}: write {} bytes to {path}", w.content.len()),
                        n,
                    )
                    .await?;
                let v = self
                    .fs(
                        "/v1/fs/write",
                        &g,
                        json!({"path": path, "content": w.content}),
                    )
                    .await?;
                Ok(text(format!(
                    "Successfully wrote to {}{}",
                    w.path,
                    staged_note(&v)
                )))
            }
            "edit_file" => {
                let e: EditArgs = args(name, a)?;
                let path = self.resolve(&e.path)?;
                let action = if e.dry_run {
                    "read_files"
                } else {
                    "edit_files"
                };
                let g = self
                    .grant(
                        action,
                        vec![path.clone()],
                        format!(
                            "MCP {name}: {} edit(s) to {path}{}",
                            e.edits.len(),
                            if e.dry_run { " (dry run)" } else { "" }
                        ),
                        n,
                    )
                    .await?;
                let old = String::from_utf8_lossy(&self.read_all(&g, &path, MAX_TEXT_BYTES).await?)
                    .into_owned();
                let new = edit::apply(&old, &e.edits).map_err(Refusal::Invalid)?;
                let diff = edit::fenced_diff(&path, &old, &new);
                if e.dry_run {
                    return Ok(text(diff));
                }
                let v = self
                    .fs("/v1/fs/write", &g, json!({"path": path, "content": new}))
                    .await?;
                Ok(text(format!("{diff}{}", staged_note(&v).trim_start())))
            }
            "create_directory" => {
                let p: PathArg = args(name, a)?;
                let (path, g) = self
                    .grant_path(
                        "edit_files",
                        &p.path,
                        |path| format!("MCP {name}: {path}"),
                        n,
                    )
                    .await?;
                let v = self.fs("/v1/fs/mkdir", &g, json!({"path": path})).await?;
                Ok(text(format!(
                    "Successfully created directory {}{}",
                    p.path,
                    staged_note(&v)
                )))
            }
            "list_directory" => {
                let p: PathArg = args(name, a)?;
                let (_, entries) = self.list_one(name, &p.path, n).await?;
                let out: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            if e["kind"] == "dir" {
                                "[DIR]"
                            } else {
                                "[FILE]"
                            },
                            e["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                Ok(text(out.join("\n")))
            }
            "list_directory_with_sizes" => {
                let p: SizesArgs = args(name, a)?;
                let (_, mut entries) = self.list_one(name, &p.path, n).await?;
                if p.sort_by.as_deref() == Some("size") {
                    entries.sort_by_key(|e| std::cmp::Reverse(e["size"].as_u64().unwrap_or(0)));
                } else {
                    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                }
                let mut out = Vec::new();
                let (mut files, mut dirs, mut total) = (0, 0, 0u64);
                for e in &entries {
                    let dir = e["kind"] == "dir";
                    let size = e["size"].as_u64().unwrap_or(0);
                    if dir {
                        dirs += 1;
                    } else {
                        files += 1;
                        total += size;
                    }
                    out.push(format!(
                        "{} {:<30} {}",
                        if dir { "[DIR]" } else { "[FILE]" },
                        e["name"].as_str().unwrap_or(""),
                        if dir {
                            String::new()
                        } else {
                            format!("{:>10}", format_size(size))
                        }
                    ));
                }
                out.push(String::new());
                out.push(format!("Total: {files} files, {dirs} directories"));
                out.push(format!("Combined size: {}", format_size(total)));
                Ok(text(out.join("\n")))
            }
            "directory_tree" => {
                let t: TreeArgs = args(name, a)?;
                let (root, g) = self
                    .grant_path(
                        "list_files",
                        &t.path,
                        |root| format!("MCP {name}: {root}"),
                        n,
                    )
                    .await?;
                let mut ex = Vec::new();
                for p in &t.exclude {
                    if p.contains('*') {
                        ex.push(glob(p)?);
                    } else {
                        ex.push(glob(p)?);
                        ex.push(glob(&format!("**/{p}"))?);
                        ex.push(glob(&format!("**/{p}/**"))?);
                    }
                }
                let tree = self.tree(&g, &root, &root, &ex).await?;
                Ok(text(
                    serde_json::to_string_pretty(&tree).unwrap_or_default(),
                ))
            }
            "move_file" => {
                let m: MoveArgs = args(name, a)?;
                let from = self.resolve(&m.source)?;
                let to = self.resolve(&m.destination)?;
                let g = self
                    .grant(
                        "edit_files",
                        vec![from.clone(), to.clone()],
                        format!("MCP {name}: {from} -> {to}"),
                        n,
                    )
                    .await?;
                if self
                    .fs("/v1/fs/stat", &g, json!({"path": to}))
                    .await
                    .is_ok()
                {
                    return Err(Refusal::Invalid(format!(
                        "Destination already exists: {to}"
                    )));
                }
                let v = self
                    .fs("/v1/fs/rename", &g, json!({"from": from, "to": to}))
                    .await?;
                Ok(text(format!(
                    "Successfully moved {} to {}{}",
                    m.source,
                    m.destination,
                    staged_note(&v)
                )))
            }
            "search_files" => {
                let s: SearchArgs = args(name, a)?;
                let (root, g) = self
                    .grant_path(
                        "list_files",
                        &s.path,
                        |root| format!("MCP {name}: {} under {root}", s.pattern),
                        n,
                    )
                    .await?;
                let pat = glob(&s.pattern)?;
                let ex = s
                    .exclude
                    .iter()
                    .map(|p| glob(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut found = Vec::new();
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    let Ok(v) = self.fs("/v1/fs/list", &g, json!({"path": dir})).await else {
                        continue;
                    };
                    for e in v["entries"].as_array().cloned().unwrap_or_default() {
                        let full = format!(
                            "{}/{}",
                            dir.trim_end_matches('/'),
                            e["name"].as_str().unwrap_or("")
                        );
                        let rel = full[root.len()..].trim_start_matches('/').to_string();
                        if ex.iter().any(|m| m.is_match(&rel)) {
                            continue;
                        }
                        if pat.is_match(&rel) {
                            found.push(full.clone());
                        }
                        if e["kind"] == "dir" {
                            stack.push(full);
                        }
                    }
                }
                found.sort();
                Ok(text(if found.is_empty() {
                    "No matches found".to_string()
                } else {
                    found.join("\n")
                }))
            }
            "get_file_info" => {
                let p: PathArg = args(name, a)?;
                let (path, g) = self
                    .grant_path(
                        "list_files",
                        &p.path,
                        |path| format!("MCP {name}: {path}"),
                        n,
                    )
                    .await?;
                let v = self.fs("/v1/fs/stat", &g, json!({"path": path})).await?;
                let kind = v["kind"].as_str().unwrap_or("");
                let mut lines = vec![format!("size: {}", v["size"].as_u64().unwrap_or(0))];
                if let Some(m) = v["modified"].as_i64() {
                    lines.push(format!("modified: {}", airlock_time(m)));
                }
                lines.push(format!("isDirectory: {}", kind == "dir"));
                lines.push(format!("isFile: {}", kind == "file"));
                if let Some(mode) = v["mode"].as_u64() {
                    lines.push(format!("permissions: {:03o}", mode & 0o777));
                }
                lines.push(format!(
                    "staged: {}",
                    v["staged"].as_bool().unwrap_or(false)
                ));
                Ok(text(lines.join("\n")))
            }
            "list_allowed_directories" => Ok(text(format!(
                "Allowed directories:\n{}",
                self.allowed().join("\n")
            ))),
            "run_command" => self.run(args(name, a)?, n).await,
            "fetch" => {
                let f: FetchArgs = args(name, a)?;
                Err(Refusal::Denied(format!(
                    "fetch of {} was not made: this Airlock broker has no egress path for agents yet, so network \
                     access cannot be brokered and is refused rather than made unmediated. A human can fetch it \
                     and place the result in an allowed directory.",
                    f.url
                )))
            }
            "staged_changes" => {
                let v = self.inner.link.get("/v1/staged").await?;
                let areas = v["areas"].as_array().cloned().unwrap_or_default();
                if areas.is_empty() {
                    return Ok(text("Nothing is staged for this session."));
                }
                let mut out = Vec::new();
                for a in areas {
                    out.push(format!(
                        "Staging area {} (base {}):",
                        a["id"].as_str().unwrap_or(""),
                        a["base"].as_str().unwrap_or("")
                    ));
                    for c in a["changes"].as_array().cloned().unwrap_or_default() {
                        out.push(format!(
                            "  {:<9} {}",
                            c["kind"].as_str().unwrap_or(""),
                            c["path"].as_str().unwrap_or("")
                        ));
                    }
                    out.push(format!(
                        "  The user reviews with `{}` and applies with `{}`.",
                        a["review"].as_str().unwrap_or(""),
                        a["apply"].as_str().unwrap_or("")
                    ));
                }
                Ok(text(out.join("\n")))
            }
            other => Err(Refusal::Invalid(format!(
                "Unknown tool: {other}. Call tools/list for the tools this server offers."
            ))),
        }
    }

    async fn list_one(
        &self,
        tool: &str,
        raw: &str,
        n: &Notifier,
    ) -> Result<(String, Vec<Value>), Refusal> {
        let (path, g) = self
            .grant_path("list_files", raw, |path| format!("MCP {tool}: {path}"), n)
            .await?;
        let v = self.fs("/v1/fs/list", &g, json!({"path": path})).await?;
        Ok((path, v["entries"].as_array().cloned().unwrap_or_default()))
    }

    async fn tree(
        &self,
        g: &Grant,
        root: &str,
        dir: &str,
        ex: &[globset::GlobMatcher],
    ) -> Result<Value, Refusal> {
        // Iterative: a deep tree must not grow the stack.
        let mut nodes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut order = vec![dir.to_string()];
        let mut i = 0;
        while i < order.len() {
            let d = order[i].clone();
            i += 1;
            let v = self.fs("/v1/fs/list", g, json!({"path": d})).await?;
            let mut kids = Vec::new();
            for e in v["entries"].as_array().cloned().unwrap_or_default() {
                let name = e["name"].as_str().unwrap_or("").to_string();
                let full = format!("{}/{}", d.trim_end_matches('/'), name);
                let rel = full[root.len()..].trim_start_matches('/');
                if ex.iter().any(|m| m.is_match(rel)) {
                    continue;
                }
                if e["kind"] == "dir" {
                    order.push(full.clone());
                    kids.push(json!({"name": name, "type": "directory", "full": full}));
                } else {
                    kids.push(json!({"name": name, "type": "file"}));
                }
            }
            nodes.insert(d, kids);
        }
        fn build(nodes: &mut BTreeMap<String, Vec<Value>>, d: &str) -> Value {
            let kids = nodes.remove(d).unwrap_or_default();
            Value::Array(
                kids.into_iter()
                    .map(|mut k| {
                        if let Some(full) = k.as_object_mut().and_then(|o| o.remove("full")) {
                            let c = build(nodes, full.as_str().unwrap_or(""));
                            k["children"] = c;
                        }
                        k
                    })
                    .collect(),
            )
        }
        Ok(build(&mut nodes, dir))
    }

    async fn run(&self, r: RunArgs, n: &Notifier) -> ToolResult {
        let argv = match (r.argv, r.command) {
            (Some(a), None) if !a.is_empty() && !a[0].is_empty() => a,
            (None, Some(c)) if !c.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), c],
            _ => return Err(Refusal::Invalid(
                "give exactly one of argv (a non-empty array) or command (a shell command line)"
                    .into(),
            )),
        };
        let cwd = match r.cwd {
            Some(c) => self.resolve(&c)?,
            None => self
                .allowed()
                .first()
                .cloned()
                .ok_or_else(|| Refusal::Invalid("no allowed directory to run in".into()))?,
        };
        let program = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
        let mut m = link::manifest(
            "exec",
            vec![cwd.clone()],
            format!("MCP run_command in {cwd}: {}", shell_words(&argv)),
            &self.agent(),
        );
        m["commands"] = json!([program]);
        let g = self.inner.link.grant(m, &|msg| n.send(msg)).await?;
        let mut body = json!({"argv": argv, "cwd": cwd});
        if let Some(t) = r.timeout_seconds {
            body["timeout_seconds"] = t.into();
        }
        let v = self.fs("/v1/exec", &g, body).await?;
        let out = |k: &str| -> String {
            let c = v[k]["content"].as_str().unwrap_or("");
            if v[k]["encoding"] == "base64" {
                format!("<{} bytes of binary output>", c.len() / 4 * 3)
            } else {
                c.to_string()
            }
        };
        let code = v["exit_code"].as_i64().unwrap_or(-1);
        let mut s = format!("exit code: {code}");
        if let Some(why) = v["reason"].as_str() {
            s.push_str(&format!(" ({why})"));
        }
        s.push_str(&format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            out("stdout"),
            out("stderr")
        ));
        let staged: Vec<&str> = v["staged_files"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if !staged.is_empty() {
            s.push_str(&format!(
                "\n--- staged for review ({} file(s)): {}\nThe user reviews them with `airlock staged diff {id}` and applies them with `airlock staged commit {id}`.",
                staged.len(),
                staged.join(", "),
                id = v["staging_id"].as_str().unwrap_or("")
            ));
        }
        if let Some(b) = v["blocked"].as_str() {
            s.push_str(&format!("\n--- the sandbox blocked: {b}"));
        }
        let mut res = CallToolResult::success(vec![ContentBlock::text(s)]);
        if code != 0 {
            res.is_error = Some(true);
        }
        Ok(res)
    }

    // MCP roots are deprecated by SEP-2577 but still what the clients
    // this front door replaces send; honour them while they exist.
    #[allow(deprecated)]
    async fn accept_roots(&self, peer: &rmcp::Peer<RoleServer>) {
        let Ok(r) = peer.list_roots().await else {
            return;
        };
        let mut dirs = Vec::new();
        for root in r.roots {
            let Some(p) = root.uri.strip_prefix("file://") else {
                continue;
            };
            let Ok(real) = std::fs::canonicalize(p) else {
                continue;
            };
            let real = real.to_string_lossy().into_owned();
            if !std::path::Path::new(&real).is_dir() {
                continue;
            }
            if !self
                .inner
                .workspaces
                .iter()
                .any(|w| paths::within(&real, w))
            {
                tracing::warn!(root = %real, "client root is outside the broker's workspaces; ignored");
                continue;
            }
            dirs.push(real);
        }
        if dirs.is_empty() {
            tracing::info!("no usable MCP roots from the client; keeping the allowed directories");
        } else {
            tracing::info!(roots = ?dirs, "allowed directories now follow the client's MCP roots");
            *self.inner.allowed.write().expect("lock") = dirs;
        }
    }
}

fn airlock_time(unix: i64) -> String {
    // RFC 3339, UTC.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
                && !a.is_empty()
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl ServerHandler for FsServer {
    #[allow(deprecated)] // enable_logging: see set_level
    fn get_info(&self) -> ServerConfig {
        // Resources and prompts: none of our own, listed empty so clients
        // that always ask get an answer rather than an error.
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_logging()
            .enable_resources()
            .enable_prompts()
            .build();
        let mut info = ServerConfig::new(caps)
            .with_instructions(
                "Files and commands through Airlock: every call is checked by the user's policy and recorded. \
                 Writes are staged for the user's review (see the staged_changes tool); some calls wait for \
                 the user's approval. Denials say why and whether a human can grant them.",
            );
        info.server_info = serde_json::from_value::<Implementation>(json!({
            "name": "airlock", "title": "Airlock (brokered files and commands)",
            "version": env!("CARGO_PKG_VERSION")
        }))
        .expect("implementation info");
        info
    }

    // Logging is deprecated by SEP-2577 but older clients and the
    // conformance suite still set it.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tracing::info!(level = ?request.level, "client set the MCP log level");
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult {
            tools: self.inner.tools.clone(),
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(info) = context.peer.peer_info() {
            let c = &info.client_info;
            *self.inner.client.write().expect("lock") = format!("{}@{}", c.name, c.version);
        }
        let n = Notifier {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
            step: AtomicU64::new(0),
        };
        let a = request.arguments.clone().unwrap_or_default();
        let name = request.name.to_string();
        let res = tokio::select! {
            r = self.call(&name, &a, &n) => r,
            _ = context.ct.cancelled() => Err(Refusal::Invalid("the call was cancelled".into())),
        };
        Ok(match res {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(tool = %name, refusal = %e, "tool call refused");
                failure(e)
            }
        }
        .into())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if !self.inner.accept_roots {
            return;
        }
        let supports = context
            .peer
            .peer_info()
            .is_some_and(|i| i.capabilities.roots.is_some());
        if supports {
            let me = self.clone();
            let peer = context.peer.clone();
            tokio::spawn(async move { me.accept_roots(&peer).await });
        }
    }

    async fn on_roots_list_changed(&self, context: NotificationContext<RoleServer>) {
        if self.inner.accept_roots {
            let me = self.clone();
            let peer = context.peer.clone();
            tokio::spawn(async move { me.accept_roots(&peer).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_format_like_the_reference() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(2048), "2.00 KB");
        assert_eq!(airlock_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(airlock_time(1_767_225_600), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn every_tool_has_truthful_annotations() {
        for t in crate::tools::all() {
            let a = t.annotations.as_ref().expect("annotated");
            let ro = a.read_only_hint == Some(true);
            let writes = [
                "write_file",
                "edit_file",
                "create_directory",
                "move_file",
                "run_command",
            ];
            assert_eq!(ro, !writes.contains(&t.name.as_ref()), "{}", t.name);
            // Writes are staged for review: nothing is destroyed by a call.
            assert_ne!(a.destructive_hint, Some(true), "{}", t.name);
        }
    }
}
