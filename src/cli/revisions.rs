//! `backstop revisions list | show SERVICE REVISION | clear SERVICE REVISION`:
//! release memory read from the ledger — which revisions were rolled back
//! (quarantined, with the evidence) and where each was verified — and a
//! person's clearing of a quarantine.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CliResult, Failure, ledger_url, load_policy, out};
use backstop::ledger::{Actor, Ledger, Record, RevisionRecord};
use backstop::policy::approval::Principal;
use backstop::policy::memory::{RevisionEvent, RevisionState};
use backstop::run::memory::ClearError;

#[derive(Args)]
pub struct RevisionsArgs {
    /// Ledger file path or database URL (default: from configuration).
    #[arg(long, global = true)]
    ledger: Option<String>,
    #[command(subcommand)]
    command: RevisionsCommand,
}

#[derive(Subcommand)]
enum RevisionsCommand {
    /// Every revision the ledger knows, by service: quarantined or not, and where it was verified.
    List {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only quarantined revisions.
        #[arg(long)]
        quarantined: bool,
    },
    /// One revision's history: each rollback with its evidence, each verification, each clearing.
    Show { service: String, revision: String },
    /// Lift a revision's quarantine (an approver of the service, as policy names them).
    Clear {
        service: String,
        revision: String,
        /// Why the revision is safe again (kept in the ledger).
        #[arg(long)]
        reason: String,
        /// Who you are, e.g. alice@example.com (checked against policy's approvers).
        #[arg(long = "as")]
        identity: String,
        /// Policy file (default: from configuration, else the embedded default).
        #[arg(long)]
        policy: Option<std::path::PathBuf>,
    },
}

fn failed(e: impl std::error::Error + 'static) -> Failure {
    Failure { code: 1, message: super::chain(&e) }
}

pub async fn run(a: RevisionsArgs, settings: &backstop::config::Settings) -> CliResult {
    let url = ledger_url(a.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(|e| Failure::backend(&e))?;
    match a.command {
        RevisionsCommand::List { service, quarantined } => list(&ledger, service.as_deref(), quarantined).await,
        RevisionsCommand::Show { service, revision } => show(&ledger, &service, &revision).await,
        RevisionsCommand::Clear { service, revision, reason, identity, policy } => {
            let policy = load_policy(policy.as_deref(), settings)?;
            clear(&ledger, &policy, (&service, &revision), &identity, &reason).await
        }
    }
}

/// A revision's state in a few words.
fn state_line(s: &RevisionState) -> String {
    let verified = s.verified_on.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    let verified = if verified.is_empty() { "verified nowhere".into() } else { format!("verified on {verified}") };
    match &s.quarantine {
        Some(q) => format!("QUARANTINED: {}; {verified}", q.describe()),
        None if !s.condemned.is_empty() => format!("cleared after {} rollback(s); {verified}", s.condemned.len()),
        None => verified,
    }
}

async fn list(ledger: &Ledger, service: Option<&str>, quarantined: bool) -> CliResult {
    let all = ledger.all_revisions().await.map_err(failed)?;
    let mut shown = 0;
    for (svc, known) in all.iter().filter(|(s, _)| service.is_none_or(|want| want == s.as_str())) {
        for (rev, state) in known.revisions.iter().filter(|(_, s)| !quarantined || s.quarantine.is_some()) {
            out(&format!("{svc:<20} {rev:<24} {}", state_line(state)).replace(['\n', '\r'], " ⏎ "));
            shown += 1;
        }
    }
    if shown == 0 {
        out("no revisions recorded (a revision is remembered once a release rolls it back or verifies it)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(ledger: &Ledger, service: &str, revision: &str) -> CliResult {
    let known = ledger.service_revisions(service).await.map_err(failed)?;
    let Some(state) = known.revisions.get(revision) else {
        return Err(Failure::usage(format!("the ledger has no record of revision {revision} of {service}")));
    };
    out(&format!("{service} {revision}: {}", state_line(state)));
    let id = RevisionRecord::ledger_id(service, revision);
    for (stored, record) in ledger.release_records(&id).await.map_err(failed)? {
        let Record::Revision(r) = record else { continue };
        let at = backstop::clock::utc_text(stored.at_ms);
        out(&format!("  {at}  {}  {}", stored.actor, r.event.describe()).replace(['\n', '\r'], " ⏎ "));
        if let RevisionEvent::Condemned(c) = &r.event {
            for line in &c.evidence {
                out(&format!("      evidence: {line}").replace(['\n', '\r'], " ⏎ "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn clear(
    ledger: &Ledger,
    policy: &backstop::policy::PolicyFile,
    (service, revision): (&str, &str),
    identity: &str,
    reason: &str,
) -> CliResult {
    let actor = Actor::Human { channel: "cli".into(), identity: identity.into() };
    actor.to_string().parse::<Actor>().map_err(|e| Failure::usage(format!("--as: {e}")))?;
    let now_ms = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock);
    let who = (&actor, &Principal::named(identity));
    match backstop::run::memory::clear(ledger, policy, (service, revision), who, (reason, now_ms)).await {
        Ok(_) => out(&format!("revision {revision} of {service} cleared by {actor}")),
        Err(ClearError::Refused(why)) => {
            return Err(Failure { code: super::EXIT_USAGE, message: format!("not cleared: {why}") });
        }
        Err(e @ ClearError::Ledger(_)) => return Err(Failure::backend(&e)),
    }
    Ok(ExitCode::SUCCESS)
}
