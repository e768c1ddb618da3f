//! `airlock audit tail|verify|show`: read the audit log directly (no broker needed).

use std::path::PathBuf;

use airlock_audit::Record;
use airlock_broker::Config;

use crate::output::{cut, text};

/// `airlock audit ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Show the last records.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new records as they are written.
        #[arg(short, long)]
        follow: bool,
        /// Print the records as JSON lines, exactly as stored.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        loc: Loc,
    },
    /// Check the hash chain: detects edited, deleted, reordered, inserted or truncated records.
    Verify {
        #[command(flatten)]
        loc: Loc,
    },
    /// Every record of one request (intent, decision, execution, outcome).
    Show {
        request_id: String,
        #[command(flatten)]
        loc: Loc,
    },
}

/// Where the log is.
#[derive(clap::Args, Debug)]
pub struct Loc {
    /// Audit directory (default: from the config, `<state_dir>/audit`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Config file.
    #[arg(long, env = "AIRLOCK_CONFIG")]
    pub config: Option<PathBuf>,
}

impl Loc {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let cfg = Config::load_or_default(self.config.as_deref())?;
        Ok(cfg.paths()?.audit_dir)
    }
}

fn line(r: &Record) -> String {
    let b = &r.body;
    let what = match b.kind.as_str() {
        "fs" | "exec" | "commit" => {
            let i = &b.intent;
            let phase = i["phase"]
                .as_str()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            let target = i
                .get("path")
                .or(i.get("argv"))
                .or(i.get("staging_id"))
                .unwrap_or(&serde_json::Value::Null);
            format!("{}{phase} {}", text(&i["action"]), text(target))
        }
        _ => {
            let i = &b.intent;
            let paths: Vec<String> = i["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            format!("{} {}", text(&i["action"]), paths.join(","))
        }
    };
    let decision = if b.decision.is_null() {
        "-".to_string()
    } else if let Some(d) = b.decision["decision"].as_str() {
        d.to_string()
    } else if b.decision["allowed"] == true {
        "allowed".into()
    } else {
        "refused".into()
    };
    format!(
        "{:>6}  {}  {:8} {:20} {:14} {:8} {}",
        r.seq,
        b.ts,
        b.kind,
        b.request_id,
        cut(b.agent.as_deref().unwrap_or("-"), 14),
        decision,
        cut(&what, 80)
    )
}

pub fn audit(c: AuditCmd) -> anyhow::Result<i32> {
    match c {
        AuditCmd::Tail {
            lines,
            follow,
            json,
            loc,
        } => {
            let dir = loc.dir()?;
            let recs = airlock_audit::tail(&dir, lines)?;
            let print = |r: &Record| {
                if json {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                } else {
                    println!("{}", line(r));
                }
            };
            let last = recs.last().map(|r| r.seq);
            recs.iter().for_each(print);
            if follow {
                airlock_audit::follow(&dir, last, &mut |r| {
                    print(r);
                    true
                })?;
            }
            Ok(0)
        }
        AuditCmd::Verify { loc } => {
            let dir = loc.dir()?;
            match airlock_audit::verify(&dir) {
                Ok(rep) => {
                    println!(
                        "ok: {} record(s) in {} segment(s) verified; head {}",
                        rep.records,
                        rep.segments,
                        rep.head_hash.as_deref().unwrap_or("(empty log)")
                    );
                    Ok(0)
                }
                Err(f) => {
                    println!("FAILED: {f}");
                    Ok(1)
                }
            }
        }
        AuditCmd::Show { request_id, loc } => {
            let recs = airlock_audit::find_request(&loc.dir()?, &request_id)?;
            if recs.is_empty() {
                eprintln!("airlock: no records for request {request_id}");
                return Ok(1);
            }
            for r in recs {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            }
            Ok(0)
        }
    }
}
