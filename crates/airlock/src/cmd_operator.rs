//! Operator commands (the human): `status`, `approvals`, `tokens`,
//! `sessions`, `staged`. They use the operator socket, which refuses agents
//! and everything agents start.

use airlock_client::{default_operator_socket, Client, ClientError};
use serde_json::{json, Value};

use crate::output::{block_on, cut, parse_duration, print_json, report, text};

fn op() -> Client {
    Client::new(default_operator_socket())
}

/// GET a listing: with `--json`, print it whole and return `None`; else the
/// entries under `key`, saying `empty` when there are none.
async fn listing(
    op: &Client,
    path: &str,
    key: &str,
    json: bool,
    empty: &str,
) -> Result<Option<Vec<Value>>, ClientError> {
    let (_, v) = op.get(path).await?;
    if json {
        print_json(&v);
        return Ok(None);
    }
    let list = v[key].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("{empty}");
    }
    Ok(Some(list))
}

fn run(f: impl std::future::Future<Output = Result<i32, ClientError>>) -> anyhow::Result<i32> {
    block_on(async move {
        match f.await {
            Ok(c) => c,
            Err(e) => report(&e),
        }
    })
}

/// Arguments of `airlock status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn status(a: StatusArgs) -> anyhow::Result<i32> {
    run(async move {
        let (_, v) = op().get("/v1/status").await?;
        if a.json {
            print_json(&v);
            return Ok(0);
        }
        let b = &v["broker"];
        println!(
            "broker          running (pid {}, version {}, up {} s)",
            b["pid"],
            text(&b["version"]),
            b["uptime_seconds"]
        );
        println!("agent socket    {}", text(&v["socket"]));
        println!("operator socket {}", text(&v["operator_socket"]));
        println!("state dir       {}", text(&v["state_dir"]));
        let ws: Vec<String> = v["workspaces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        println!(
            "workspaces      {}",
            if ws.is_empty() {
                "(none)".into()
            } else {
                ws.join(", ")
            }
        );
        println!(
            "policy          {} ({}, {} modules)",
            text(&v["policy"]["revision"]),
            text(&v["policy"]["backend"]),
            v["policy"]["modules"].as_array().map_or(0, |m| m.len())
        );
        println!(
            "sessions        {}",
            v["sessions"].as_array().map_or(0, |s| s.len())
        );
        for s in v["sessions"].as_array().into_iter().flatten() {
            println!(
                "  {}  pid {}  {}{}",
                text(&s["id"]),
                s["holder"]["pid"],
                text(&s["exe"]),
                if s["quarantined"] == true {
                    "  QUARANTINED"
                } else {
                    ""
                }
            );
        }
        println!("approvals       {} pending", v["approvals_pending"]);
        println!("tokens          {} active", v["tokens_active"]);
        // Areas whose changes were all committed or discarded stay (a
        // sandboxed command may still have them mounted) but are not news.
        let areas: Vec<Value> = v["staged"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["changes"].as_u64().unwrap_or(0) > 0)
            .cloned()
            .collect();
        println!(
            "staged          {} area(s), {} change(s)",
            areas.len(),
            areas
                .iter()
                .map(|a| a["changes"].as_u64().unwrap_or(0))
                .sum::<u64>()
        );
        for a in &areas {
            println!(
                "  {}  {} change(s) over {}",
                text(&a["id"]),
                a["changes"],
                text(&a["base"])
            );
        }
        println!(
            "audit log       {} (head seq {}, {})",
            text(&v["audit"]["dir"]),
            text(&v["audit"]["head_seq"]),
            cut(&text(&v["audit"]["head_hash"]), 17)
        );
        Ok(0)
    })
}

/// `airlock approvals ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// List approvals (pending first).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one approval: who asks, for what, why, and what policy said.
    Show { id: String },
    /// Approve: mint the capability for exactly the manifest shown.
    Approve {
        id: String,
        /// Also allow identical requests from the same session for this long (e.g. 10m, 1h).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        for_: Option<std::time::Duration>,
    },
    /// Deny.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

fn show_approval(a: &Value) {
    let m = &a["manifest"];
    println!(
        "approval   {}  ({})",
        text(&a["approval_id"]),
        text(&a["state"])
    );
    println!(
        "agent      {}  session {}  pid {}  {}",
        text(&a["agent"]),
        text(&a["session"]),
        a["peer"]["pid"],
        text(&a["peer"]["exe"])
    );
    println!(
        "action     {}  for {} s",
        text(&m["action"]),
        m["duration_seconds"]
    );
    for p in m["paths"].as_array().into_iter().flatten() {
        println!("  path     {}", text(p));
    }
    for h in m["hosts"].as_array().into_iter().flatten() {
        println!("  host     {}", text(h));
    }
    for c in m["commands"].as_array().into_iter().flatten() {
        println!("  command  {}", text(c));
    }
    println!("why        {}", text(&m["justification"]));
    if let Some(l) = a["labels"].as_array().filter(|l| !l.is_empty()) {
        println!(
            "labels     {}",
            l.iter().map(text).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "policy     {} rule {}",
        text(&a["policy_id"]),
        text(&a["rule"])
    );
    for r in a["reasons"].as_array().into_iter().flatten() {
        println!("  reason   {}", text(r));
    }
    println!("expires    {}", text(&a["expires"]));
    println!("manifest   sha256:{}", text(&a["manifest_hash"]));
}

pub fn approvals(c: ApprovalsCmd) -> anyhow::Result<i32> {
    run(async move {
        let op = op();
        match c {
            ApprovalsCmd::List { json } => {
                let Some(list) =
                    listing(&op, "/v1/approvals", "approvals", json, "no approvals").await?
                else {
                    return Ok(0);
                };
                for a in list {
                    let paths: Vec<String> = a["manifest"]["paths"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    println!(
                        "{}  {:8}  {:10}  {:12}  {}  {}",
                        text(&a["approval_id"]),
                        text(&a["state"]),
                        text(&a["manifest"]["action"]),
                        cut(&text(&a["agent"]), 12),
                        cut(&paths.join(","), 50),
                        cut(&text(&a["manifest"]["justification"]), 40)
                    );
                }
                Ok(0)
            }
            ApprovalsCmd::Show { id } => {
                let (_, v) = op.get(&format!("/v1/approvals/{id}")).await?;
                show_approval(&v);
                Ok(0)
            }
            ApprovalsCmd::Approve { id, for_ } => {
                let body = json!({"for_seconds": for_.map(|d| d.as_secs())});
                let (_, v) = op
                    .post(&format!("/v1/approvals/{id}/approve"), &body)
                    .await?;
                println!("approved {id}: token {}", text(&v["token_id"]));
                if let Some(u) = v["standing_until"].as_str() {
                    println!(
                        "identical requests from session {} are allowed until {u}",
                        text(&v["session"])
                    );
                }
                Ok(0)
            }
            ApprovalsCmd::Deny { id, reason } => {
                op.post(
                    &format!("/v1/approvals/{id}/deny"),
                    &json!({"reason": reason}),
                )
                .await?;
                println!("denied {id}");
                Ok(0)
            }
        }
    })
}

/// `airlock tokens ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TokensCmd {
    /// List live tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke one token, a session's tokens, or all tokens.
    Revoke {
        /// Token id (from `tokens list`).
        #[arg(required_unless_present_any = ["session", "all"], conflicts_with_all = ["session", "all"])]
        id: Option<String>,
        #[arg(long, conflicts_with = "all")]
        session: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub fn tokens(c: TokensCmd) -> anyhow::Result<i32> {
    run(async move {
        let op = op();
        match c {
            TokensCmd::List { json } => {
                let Some(list) =
                    listing(&op, "/v1/tokens", "tokens", json, "no live tokens").await?
                else {
                    return Ok(0);
                };
                for t in list {
                    let verbs: Vec<String> = t["verbs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    let paths: Vec<String> = t["paths"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    println!(
                        "{}  {}  {}  {:24}  until {}  {}",
                        text(&t["id"]).chars().take(16).collect::<String>(),
                        text(&t["session"]),
                        if t["revoked"] == true {
                            "REVOKED"
                        } else {
                            "active "
                        },
                        verbs.join(","),
                        text(&t["expires"]),
                        cut(&paths.join(","), 60)
                    );
                }
                Ok(0)
            }
            TokensCmd::Revoke { id, session, all } => {
                // A unique prefix of a listed id is enough.
                let id = match id {
                    Some(prefix) if prefix.len() < 64 => {
                        let (_, v) = op.get("/v1/tokens").await?;
                        let hits: Vec<String> = v["tokens"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| text(&t["id"]))
                            .filter(|i| i.starts_with(&prefix))
                            .collect();
                        match hits.as_slice() {
                            [one] => Some(one.clone()),
                            [] => Some(prefix),
                            _ => {
                                eprintln!(
                                    "airlock: {prefix} matches {} tokens; give more of the id",
                                    hits.len()
                                );
                                return Ok(1);
                            }
                        }
                    }
                    other => other,
                };
                let body = json!({"id": id, "session": session, "all": all});
                let (_, v) = op.post("/v1/tokens/revoke", &body).await?;
                print_json(&v);
                Ok(0)
            }
        }
    })
}

/// `airlock sessions ...`.
#[derive(clap::Subcommand, Debug)]
pub enum SessionsCmd {
    /// List live agent sessions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Quarantine a session: revoke its tokens and deny everything it asks from now on.
    Quarantine { id: String },
}

pub fn sessions(c: SessionsCmd) -> anyhow::Result<i32> {
    run(async move {
        let op = op();
        match c {
            SessionsCmd::List { json } => {
                let (_, v) = op.get("/v1/sessions").await?;
                if json {
                    print_json(&v);
                    return Ok(0);
                }
                for s in v["sessions"].as_array().into_iter().flatten() {
                    println!(
                        "{}  pid {:7}  {}  {}{}",
                        text(&s["id"]),
                        s["holder"]["pid"],
                        text(&s["exe"]),
                        text(&s["label"]),
                        if s["quarantined"] == true {
                            "  QUARANTINED"
                        } else {
                            ""
                        }
                    );
                }
                Ok(0)
            }
            SessionsCmd::Quarantine { id } => {
                let (_, v) = op
                    .post(&format!("/v1/sessions/{id}/quarantine"), &json!({}))
                    .await?;
                println!(
                    "session {id} quarantined; {} token(s) revoked",
                    v["tokens_revoked"]
                );
                Ok(0)
            }
        }
    })
}

/// `airlock staged ...`.
#[derive(clap::Subcommand, Debug)]
pub enum StagedCmd {
    /// List staging areas and their changes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the unified diff of staged changes (all areas, or one).
    Diff {
        id: Option<String>,
        /// Only these paths.
        paths: Vec<String>,
    },
    /// Apply staged changes to the real files (policy is checked again).
    Commit {
        id: Option<String>,
        /// Only these paths.
        paths: Vec<String>,
    },
    /// Drop staged changes.
    Discard {
        id: Option<String>,
        /// Only these paths.
        paths: Vec<String>,
    },
}

/// Where staged changes are reviewed: the running broker's operator socket,
/// or, when no broker runs, the staging store directly (same checks, same
/// policy, same audit log).
enum Staging {
    Remote(Client),
    Local {
        broker: airlock_broker::Broker,
        me: airlock_broker::peer::Peer,
        by: String,
    },
}

fn api_err(e: airlock_core::ApiError) -> ClientError {
    ClientError::Api {
        status: e.code.http_status(),
        error: e,
    }
}

impl Staging {
    async fn open() -> Result<Staging, ClientError> {
        let op = op();
        match op.get("/v1/health").await {
            Ok(_) => Ok(Staging::Remote(op)),
            Err(ClientError::Connect { .. }) => {
                let local =
                    || -> anyhow::Result<(airlock_broker::Broker, airlock_broker::peer::Peer)> {
                        let cfg = airlock_broker::Config::load_or_default(
                            std::env::var_os("AIRLOCK_CONFIG")
                                .map(std::path::PathBuf::from)
                                .as_deref(),
                        )?;
                        Ok((
                            airlock_broker::Broker::open(cfg, &[])?,
                            airlock_broker::peer::Peer::current()?,
                        ))
                    };
                let (broker, me) = local().map_err(|e| ClientError::Http {
                    socket: op.socket().to_path_buf(),
                    message: format!(
                        "no broker is running and the staging store cannot be opened here: {e:#}"
                    ),
                })?;
                let by = broker.operator_gate(&me).map_err(api_err)?;
                eprintln!("airlock: no broker is running; working on the staging store directly");
                Ok(Staging::Local { broker, me, by })
            }
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Value, ClientError> {
        match self {
            Staging::Remote(op) => op.get("/v1/staged").await.map(|(_, v)| v),
            Staging::Local { broker, .. } => broker.staged_list().await.map_err(api_err),
        }
    }

    async fn show(&self, id: &str) -> Result<Value, ClientError> {
        match self {
            Staging::Remote(op) => op.get(&format!("/v1/staged/{id}")).await.map(|(_, v)| v),
            Staging::Local { broker, .. } => broker.staged_show(id).await.map_err(api_err),
        }
    }

    async fn act(&self, what: &str, id: &str, paths: &[String]) -> Result<Value, ClientError> {
        let p = (!paths.is_empty()).then(|| paths.to_vec());
        match self {
            Staging::Remote(op) => op
                .post(&format!("/v1/staged/{id}/{what}"), &paths_body(paths))
                .await
                .map(|(_, v)| v),
            Staging::Local { broker, me, by } => match what {
                "diff" => broker.staged_diff(id, p).await,
                "commit" => broker.staged_commit(me, id, p, by).await,
                _ => broker.staged_discard(me, id, p, by).await,
            }
            .map_err(api_err),
        }
    }

    /// The ids to act on: the one given, or every area with changes.
    async fn ids(&self, id: Option<String>) -> Result<Vec<String>, ClientError> {
        if let Some(i) = id {
            return Ok(vec![i]);
        }
        let v = self.list().await?;
        Ok(v["areas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["changes"].as_u64().unwrap_or(0) > 0)
            .map(|a| text(&a["id"]))
            .collect())
    }
}

fn paths_body(paths: &[String]) -> Value {
    if paths.is_empty() {
        json!({})
    } else {
        json!({"paths": paths})
    }
}

pub fn staged(c: StagedCmd) -> anyhow::Result<i32> {
    run(async move {
        let st = Staging::open().await?;
        match c {
            StagedCmd::List { json } => {
                let v = st.list().await?;
                if json {
                    print_json(&v);
                    return Ok(0);
                }
                let areas = v["areas"].as_array().cloned().unwrap_or_default();
                if areas.is_empty() {
                    println!("nothing staged");
                }
                // One area that cannot be listed does not hide the others.
                let mut code = 0;
                for a in areas {
                    let id = text(&a["id"]);
                    let head = format!(
                        "{id}  session {}  base {}",
                        text(&a["session"]),
                        text(&a["base"])
                    );
                    if a["changes"].is_null() {
                        code = 1;
                        println!("{head}  changes cannot be listed: {}", text(&a["error"]));
                        continue;
                    }
                    println!("{head}  {} change(s)", a["changes"]);
                    match st.show(&id).await {
                        Ok(d) => {
                            for ch in d["changes"].as_array().into_iter().flatten() {
                                println!("  {:9} {}", text(&ch["kind"]), text(&ch["path"]));
                            }
                        }
                        Err(e) => {
                            code = 1;
                            println!("  changes cannot be listed: {e:#}");
                        }
                    }
                }
                Ok(code)
            }
            StagedCmd::Diff { id, paths } => {
                for id in st.ids(id).await? {
                    let v = st.act("diff", &id, &paths).await?;
                    print!("{}", v["diff"].as_str().unwrap_or_default());
                }
                Ok(0)
            }
            StagedCmd::Commit { id, paths } => {
                let mut code = 0;
                for id in st.ids(id).await? {
                    let v = st.act("commit", &id, &paths).await?;
                    for p in v["modified_files"].as_array().into_iter().flatten() {
                        println!("committed {}", text(p));
                    }
                    for r in v["refused"].as_array().into_iter().flatten() {
                        code = 1;
                        println!(
                            "REFUSED   {}: {} ({})",
                            text(&r["path"]),
                            text(&r["reason"]),
                            text(&r["code"])
                        );
                    }
                }
                Ok(code)
            }
            StagedCmd::Discard { id, paths } => {
                for id in st.ids(id).await? {
                    let v = st.act("discard", &id, &paths).await?;
                    match v["discarded"].as_u64() {
                        Some(n) => println!("{id}: discarded {n} change(s)"),
                        None => println!("{id}: discarded (its changes could not be listed)"),
                    }
                }
                Ok(0)
            }
        }
    })
}
