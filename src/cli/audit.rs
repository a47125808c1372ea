//! `backstop audit list | show SEQ | verify | checkpoint | resolve PLAN`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CliResult, EXIT_TAMPERED, Failure, ledger_url, out};
use backstop::ledger::{ActionResult, Actor, Checkpoint, Ledger, OutcomeRecord, Record, StoredRecord};
use backstop::policy::Decision;

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
    Verify {
        /// A head printed earlier by `audit checkpoint` and kept outside the
        /// database: the ledger must still contain exactly that history.
        #[arg(long, value_name = "SEQ:HASH")]
        since_checkpoint: Option<Checkpoint>,
    },
    /// Print the head (SEQ:HASH) to keep outside the database: a CI artifact, a ticket, a chat message.
    Checkpoint,
    /// Remove the tick records of releases that ended more than AGE ago,
    /// summing each release's up in one `compacted` record (its start, end,
    /// actions, people's records and last tick stay whole; `audit verify`
    /// still checks the chain across the gaps). Agents do this on their own
    /// with `[ledger] compact_after_days`.
    Compact {
        /// Days since the release ended, e.g. 30 (fractions allowed).
        #[arg(long, value_name = "DAYS")]
        older_than_days: f64,
        /// At most this many releases in this run.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
    },
    /// Record what became of an action whose outcome is unknown (the agent
    /// stopped mid-action and the target could not show it done). Until then,
    /// every run on that target holds for a human.
    Resolve {
        /// The plan id the held release names.
        plan_id: String,
        /// The action took effect (checked on the target by you).
        #[arg(long, conflicts_with = "not_done", required_unless_present = "not_done")]
        done: bool,
        /// The action did not take effect.
        #[arg(long)]
        not_done: bool,
        /// Who you are, e.g. alice@example.com.
        #[arg(long = "as")]
        identity: String,
        /// Why you are sure.
        #[arg(long)]
        reason: String,
    },
}

fn failed(e: impl std::error::Error + 'static) -> Failure {
    Failure { code: 1, message: super::chain(&e) }
}

fn one_line(r: &StoredRecord) -> String {
    let rec = match Record::from_stored(r) {
        Ok(rec) => rec,
        Err(e) => return format!("unreadable: {e}"),
    };
    match rec {
        Record::Tick(t) => {
            let decision = match &t.decision {
                Decision::Rollback { .. } => "rollback".to_string(),
                d => d.label().to_string(),
            };
            format!("t={}s verdict={} decision={decision}", t.now_s, t.judge.verdict)
        }
        Record::Intent(i) => {
            format!("{} {} -> {} (plan {})", i.plan.kind, i.plan.target, i.plan.to_revision, i.plan.id)
        }
        Record::Outcome(o) => format!("{} (plan {})", result_line(&o.result), o.plan_id),
        Record::ReleaseFinished(f) => format!("status={}", f.status.label()),
        Record::ReleaseStarted(s) => {
            let read = s.canary_from_ms.map(|ms| format!(", canary read from {}", instant(ms))).unwrap_or_default();
            match s.continued_from_s {
                Some(at) => format!("source={} mode={} continued from t={at}s{read}", s.source, s.mode),
                None => format!("source={} mode={}{read}", s.source, s.mode),
            }
        }
        Record::Lease(l) => {
            format!("{} lease on {} to {} (token {})", lease_event(&l.event), l.target, l.holder, l.token)
        }
        Record::ApprovalRequested(a) => format!(
            "approval {} requested: {} (expires {})",
            a.request.id,
            proposal_line(&a.request.proposed),
            instant(a.request.expires_at_ms)
        ),
        Record::ApprovalResolved(a) => {
            let answer = a.answer.map_or("none".to_string(), |x| x.to_string());
            format!("approval {} answer={answer} ruling={}", a.id, ruling_line(&a.ruling))
        }
        Record::ApprovalAnswer(a) => {
            format!("approval {} answer={} relayed for the agent holding it", a.id, a.answer)
        }
        Record::Operator(o) => format!("operator {}: {}", o.action, o.reason),
        Record::ReleasePaused(p) => format!("paused at t={}s (agent stopping)", p.now_s),
        Record::ChatOps(c) => chat_line(&c),
        Record::Calibration(c) => format!(
            "calibration of {} from {} past releases: {}",
            c.service,
            c.releases.len(),
            c.metrics.iter().map(|m| format!("{}={}", m.metric, m.value)).collect::<Vec<_>>().join(" ")
        ),
        Record::Revision(r) => format!("revision {} of {}: {}", r.revision, r.service, r.event.describe()),
        Record::Compacted(c) => compacted_line(&c),
        Record::PersonRequest(p) => {
            format!("{} {} relayed for the agent holding the release: {}", p.action, p.id, p.reason)
        }
    }
}

fn compacted_line(c: &backstop::ledger::CompactedRecord) -> String {
    let t = &c.ticks;
    let tally = |m: Vec<(String, u64)>| m.into_iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ");
    format!(
        "{} tick records compacted (ticks {}-{}, t={}s-{}s): {}; {}",
        c.removed,
        t.ticks.0,
        t.ticks.1,
        t.now_s.0,
        t.now_s.1,
        tally(t.verdicts.iter().map(|(v, n)| (v.to_string(), *n)).collect()),
        tally(t.decisions.iter().map(|(d, n)| (d.clone(), *n)).collect()),
    )
}

fn chat_line(c: &backstop::ledger::ChatOpsRecord) -> String {
    use backstop::ledger::ChatOpsRecord as C;
    match c {
        C::Refused { identity, action, reason } => {
            format!("chat-ops: {identity} {action} refused: {reason}")
        }
        C::Unverified { path, reason } => format!("chat-ops: unverified request to {path} refused: {reason}"),
        C::Undelivered { method, error } => format!("chat-ops: {method} not delivered: {error}"),
        C::Dropped { count } => format!("chat-ops: {count} thread posts dropped (queue full)"),
        C::Posted { message, channel, ts } => match message {
            backstop::ledger::ChatMessage::Release => format!("chat-ops: release message posted in {channel} at {ts}"),
            backstop::ledger::ChatMessage::Fleet { name } => {
                format!("chat-ops: fleet {name}'s message posted in {channel} at {ts}")
            }
        },
        C::Delivery { key } => format!("chat-ops: request {} taken", &key[..key.len().min(12)]),
    }
}

fn proposal_line(p: &backstop::policy::Proposal) -> String {
    match p {
        backstop::policy::Proposal::Promote => "promote".into(),
        backstop::policy::Proposal::Rollback { plan } => {
            format!("rollback {} {} -> {}", plan.target, plan.from_revision, plan.to_revision)
        }
    }
}

fn ruling_line(r: &backstop::policy::approval::Ruling) -> String {
    use backstop::policy::approval::Ruling;
    match r {
        Ruling::Execute { decision } => format!("execute {}", decision.label()),
        Ruling::Rejected => "rejected".into(),
        Ruling::Refused { reason, .. } => format!("refused ({reason})"),
        Ruling::Stale { reason } => format!("stale ({reason})"),
        Ruling::Closed { closure } => format!("closed ({})", closure.describe()),
    }
}

fn lease_event(e: &backstop::ledger::LeaseEvent) -> String {
    match e {
        backstop::ledger::LeaseEvent::Acquired => "acquired".into(),
        backstop::ledger::LeaseEvent::TakenOver { from } => format!("taken over from {from}:"),
        backstop::ledger::LeaseEvent::HandedOver { from } => format!("handed over by {from}:"),
    }
}

fn result_line(r: &ActionResult) -> String {
    match r {
        ActionResult::Verified { .. } => "verified".into(),
        ActionResult::NotVerified { .. } => "executed, not verified".into(),
        ActionResult::VerifyFailed { .. } => "executed, verify failed".into(),
        ActionResult::Failed { .. } => "failed".into(),
        ActionResult::Reconciled { .. } => "reconciled after restart (already done; not run again)".into(),
        ActionResult::Unresolved { .. } => "unresolved after restart (held for a human)".into(),
        ActionResult::ResolvedByHuman { done, .. } => format!("resolved by a human: done={done}"),
    }
}

pub async fn run(a: AuditArgs, settings: &backstop::config::Settings) -> CliResult {
    let url = ledger_url(a.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(|e| Failure::backend(&e))?;
    match a.command {
        AuditCommand::List { release, limit } => {
            for r in ledger.list(release.as_deref(), limit).await.map_err(failed)? {
                let line = format!(
                    "{:>6}  {}  {:<16} {:<24} {}  {}",
                    r.seq,
                    instant(r.at_ms),
                    r.kind,
                    r.actor,
                    r.release_id,
                    one_line(&r)
                );
                // One record, one line: a newline in a person's reason (or an older
                // ledger's release name) must not forge a row of its own.
                out(&line.replace(['\n', '\r'], " ⏎ "));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show { seq } => show(&ledger, seq, &url).await,
        AuditCommand::Verify { since_checkpoint } => verify(&ledger, since_checkpoint).await,
        AuditCommand::Checkpoint => {
            out(&ledger.checkpoint().await.map_err(failed)?.to_string());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Compact { older_than_days, limit } => compact(&ledger, settings, older_than_days, limit).await,
        AuditCommand::Resolve { plan_id, done, not_done: _, identity, reason } => {
            resolve(&ledger, plan_id, done, identity, reason).await
        }
    }
}

async fn show(ledger: &Ledger, seq: i64, url: &str) -> CliResult {
    let r =
        ledger.get(seq).await.map_err(failed)?.ok_or_else(|| Failure::usage(format!("no record {seq} in {url}")))?;
    let record = Record::from_stored(&r).map_err(failed)?;
    #[derive(serde::Serialize)]
    struct Shown<'a> {
        seq: i64,
        record_id: &'a str,
        release_id: &'a str,
        actor: &'a str,
        at_ms: i64,
        record_version: i64,
        prev_hash: &'a str,
        hash: &'a str,
        #[serde(flatten)]
        record: Record,
    }
    let shown = Shown {
        seq: r.seq,
        record_id: &r.record_id,
        release_id: &r.release_id,
        actor: &r.actor,
        at_ms: r.at_ms,
        record_version: r.record_version,
        prev_hash: &r.prev_hash,
        hash: &r.hash,
        record,
    };
    out(&serde_json::to_string_pretty(&shown).map_err(failed)?);
    Ok(ExitCode::SUCCESS)
}

async fn compact(ledger: &Ledger, settings: &backstop::config::Settings, days: f64, limit: u64) -> CliResult {
    if !(days.is_finite() && days >= 0.0) {
        return Err(Failure::usage(format!("--older-than-days {days}: expected a number of days, 0 or more")));
    }
    let now_ms = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock);
    let cutoff = now_ms - (days * 86_400_000.0) as i64;
    let instance =
        settings.agent.instance_id.clone().unwrap_or_else(backstop::orchestrator::AgentContext::default_instance);
    let actor = Actor::agent(&instance);
    let done = ledger.compact(cutoff, (now_ms, &actor), limit).await.map_err(failed)?;
    out(&format!(
        "ledger {}: {} tick records of {} releases compacted into summaries",
        ledger.url(),
        done.removed,
        done.releases
    ));
    Ok(ExitCode::SUCCESS)
}

async fn verify(ledger: &Ledger, checkpoint: Option<Checkpoint>) -> CliResult {
    let anchored = checkpoint.as_ref().map(|c| format!(", history up to checkpoint {} unchanged", c.seq));
    let report = ledger.verify(checkpoint).await.map_err(failed)?;
    if report.problems.is_empty() {
        let compacted = match report.compacted {
            0 => String::new(),
            n => format!(" ({n} compacted records checked by their kept hashes)"),
        };
        out(&format!(
            "ledger {}: {} records, chain intact{compacted}{}",
            ledger.url(),
            report.records,
            anchored.unwrap_or_default()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    out(&format!("ledger {}: {} records, {} problem(s):", ledger.url(), report.records, report.problems.len()));
    for p in &report.problems {
        out(&format!("  - {p}"));
    }
    Ok(ExitCode::from(EXIT_TAMPERED))
}

async fn resolve(ledger: &Ledger, plan_id: String, done: bool, identity: String, reason: String) -> CliResult {
    let open = find_open(ledger, &plan_id).await?;
    let actor = Actor::Human { channel: "cli".into(), identity };
    let actor_text = actor.to_string();
    actor_text.parse::<Actor>().map_err(|e| Failure::usage(format!("--as: {e}")))?;
    let record = Record::Outcome(OutcomeRecord {
        plan_id: plan_id.clone(),
        result: ActionResult::ResolvedByHuman { done, reason },
    });
    let at = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock);
    let receipt = ledger.append(&open.release_id, &actor, at, record).await.map_err(failed)?;
    out(&format!(
        "plan {plan_id} resolved as {} by {actor_text} (record {})",
        if done { "done" } else { "not done" },
        receipt.seq
    ));
    Ok(ExitCode::SUCCESS)
}

async fn find_open(ledger: &Ledger, plan_id: &str) -> Result<backstop::ledger::OpenIntent, Failure> {
    let intent = ledger.intent(plan_id).await.map_err(failed)?;
    let Some(intent) = intent else {
        return Err(Failure::usage(format!("no intent with plan id `{plan_id}` in the ledger")));
    };
    let open = ledger.open_intents(&intent.intent.plan.target).await.map_err(failed)?;
    open.into_iter()
        .find(|o| o.intent.plan.id == plan_id)
        .ok_or_else(|| Failure::usage(format!("plan `{plan_id}` already has a settled outcome; nothing to resolve")))
}

/// A moment (ms since the epoch) as RFC 3339, for the audit trail.
fn instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}
