//! `backstop audit list | show SEQ | verify`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CliResult, EXIT_TAMPERED, Failure, ledger_url, out};
use backstop::ledger::Ledger;

#[derive(Args)]
pub struct AuditArgs {
    /// Ledger file path or database URL (default: from configuration).
    #[arg(long, global = true)]
    ledger: Option<String>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List records, newest last.
    List {
        /// Only this release.
        #[arg(long)]
        release: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one record in full.
    Show {
        /// Sequence number.
        seq: i64,
    },
    /// Check every hash, link and the head; exit 4 and name each problem if tampered.
    Verify,
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure { code: 1, message: e.to_string() }
}

fn one_line(kind: &str, body: &serde_json::Value) -> String {
    match kind {
        "tick" => format!(
            "t={}s verdict={} decision={}",
            body["now_s"],
            body["judge"]["verdict"].as_str().unwrap_or("?"),
            body["decision"]["decision"].as_str().unwrap_or("?")
        ),
        "intent" => format!("{} {} -> {}", body["kind"].as_str().unwrap_or("?"), body["target"], body["to_revision"]),
        "outcome" => format!("verified={}", body["verification"]["Ok"]["verified"]),
        "release_finished" => format!("status={}", body["status"]["status"].as_str().unwrap_or("?")),
        "release_started" => format!("source={} mode={}", body["source"], body["mode"]),
        _ => String::new(),
    }
}

pub async fn run(a: AuditArgs, settings: &backstop::config::Settings) -> CliResult {
    let url = ledger_url(a.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(failed)?;
    match a.command {
        AuditCommand::List { release, limit } => {
            for r in ledger.list(release.as_deref(), limit).await.map_err(failed)? {
                let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                out(&format!(
                    "{:>6}  {}  {:<16} {:<7} {}  {}",
                    r.seq,
                    jiff::Timestamp::from_millisecond(r.at_ms).map(|t| t.to_string()).unwrap_or_default(),
                    r.kind,
                    r.actor,
                    r.release_id,
                    one_line(&r.kind, &body)
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show { seq } => {
            let r = ledger
                .get(seq)
                .await
                .map_err(failed)?
                .ok_or_else(|| Failure::usage(format!("no record {seq} in {url}")))?;
            let body: serde_json::Value =
                serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body.clone()));
            let shown = serde_json::json!({ "seq": r.seq, "record_id": r.record_id, "release_id": r.release_id,
                "kind": r.kind, "actor": r.actor, "at_ms": r.at_ms, "prev_hash": r.prev_hash, "hash": r.hash, "body": body });
            out(&serde_json::to_string_pretty(&shown).map_err(failed)?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify => {
            let report = ledger.verify().await.map_err(failed)?;
            if report.problems.is_empty() {
                out(&format!("ledger {}: {} records, chain intact", ledger.url(), report.records));
                Ok(ExitCode::SUCCESS)
            } else {
                out(&format!(
                    "ledger {}: {} records, {} problem(s):",
                    ledger.url(),
                    report.records,
                    report.problems.len()
                ));
                for p in &report.problems {
                    out(&format!("  - {p}"));
                }
                Ok(ExitCode::from(EXIT_TAMPERED))
            }
        }
    }
}
