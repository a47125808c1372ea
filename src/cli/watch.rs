//! `backstop watch` (acts within policy, blocks until a decision) and
//! `backstop advise` (same judgement, never acts, writes a report).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::display::LiveDisplay;
use super::{CliResult, Failure, RunFlags, ledger_url, load_policy, out};
use backstop::config::{ReleaseConfig, Settings};
use backstop::executor::ActionKind;
use backstop::ledger::Ledger;
use backstop::orchestrator::{Observer, Quiet, ReleaseRun, ReleaseStatus, RunOutcome};
use backstop::policy::{Decision, PolicyFile, Proposal, RunMode};
use backstop::release::{PreparedRelease, release_id};
use backstop::report::{Report, render_html, render_markdown};

/// Documented exit codes of `watch`.
pub mod exit {
    /// Promoted (or, with no executor configured, promotion recommended: the pipeline promotes).
    pub const PROMOTED: u8 = 0;
    /// Rolled back, and the rollback verified.
    pub const ROLLED_BACK: u8 = 10;
    /// Rollback called for but not executed (no executor, approval needed, denied), or it
    /// failed or did not verify: held for a human, the target's state needs a look.
    pub const ROLLBACK_NOT_EXECUTED: u8 = 11;
    /// Held for a human (approval to promote, not enough evidence, or the promotion failed).
    pub const HELD: u8 = 12;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// A signal source or the ledger failed.
    pub const BACKEND: u8 = 3;
    /// Stopped by SIGINT/SIGTERM between ticks.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Json,
    Html,
}

/// Flags shared by `watch` and `advise`.
#[derive(Args)]
pub struct RunArgs {
    /// Release name from configuration; repeat for several (default: all).
    #[arg(long = "release")]
    pub releases: Vec<String>,
    /// Real milliseconds per tick (default: real time, one tick per tick_s); 0 replays as fast as possible.
    #[arg(long)]
    pace_ms: Option<u64>,
    #[command(flatten)]
    flags: RunFlags,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// `json` prints one machine-readable result on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: WatchFormat,
}

#[derive(Args)]
pub struct AdviseArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Report format.
    #[arg(long, value_enum, default_value = "markdown")]
    format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Exit code for one release's outcome.
pub fn exit_code(o: &RunOutcome) -> u8 {
    match &o.status {
        ReleaseStatus::Promoted => exit::PROMOTED,
        ReleaseStatus::RolledBack => exit::ROLLED_BACK,
        ReleaseStatus::Recommended { decision: Decision::Promote, .. } => exit::PROMOTED,
        ReleaseStatus::Recommended { .. }
        | ReleaseStatus::Denied { .. }
        | ReleaseStatus::ActionFailed { action: ActionKind::Rollback, .. }
        | ReleaseStatus::ActionNotVerified { action: ActionKind::Rollback, .. }
        | ReleaseStatus::ActionUnresolved { action: ActionKind::Rollback, .. }
        | ReleaseStatus::AwaitingApproval { proposed: Proposal::Rollback { .. }, .. } => exit::ROLLBACK_NOT_EXECUTED,
        ReleaseStatus::Held { .. } if o.signal_failure.is_some() => exit::BACKEND,
        ReleaseStatus::Held { .. }
        | ReleaseStatus::AwaitingApproval { .. }
        | ReleaseStatus::ActionFailed { action: ActionKind::Promote, .. }
        | ReleaseStatus::ActionNotVerified { action: ActionKind::Promote, .. }
        | ReleaseStatus::ActionUnresolved { action: ActionKind::Promote, .. } => exit::HELD,
        ReleaseStatus::Interrupted => exit::INTERRUPTED,
        ReleaseStatus::Aborted { .. } => exit::HELD,
    }
}

fn severity(code: u8) -> u8 {
    match code {
        exit::INTERRUPTED => 6,
        exit::BACKEND => 5,
        exit::ROLLBACK_NOT_EXECUTED => 4,
        exit::HELD => 3,
        exit::ROLLED_BACK => 2,
        _ => 1,
    }
}

fn select<'a>(settings: &'a Settings, names: &[String]) -> Result<Vec<&'a ReleaseConfig>, Failure> {
    if settings.releases.is_empty() {
        return Err(Failure::usage("no releases configured: add [[releases]] to backstop.toml (see README)"));
    }
    if names.is_empty() {
        return Ok(settings.releases.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            settings.releases.iter().find(|r| &r.name == n).ok_or_else(|| {
                let known: Vec<&str> = settings.releases.iter().map(|r| r.name.as_str()).collect();
                Failure::usage(format!("no release named `{n}` in configuration; configured: {}", known.join(", ")))
            })
        })
        .collect()
}

/// A stop signal that flips on SIGINT or SIGTERM.
pub fn stop_on_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        let _ = tx.send(true);
    });
    rx
}

pub struct Ran {
    pub name: String,
    pub prepared: PreparedRelease,
    pub outcome: RunOutcome,
}

pub async fn run_all(
    a: &RunArgs,
    settings: &Settings,
    mode: RunMode,
    observer: &mut dyn FnMut(&str, u64) -> Box<dyn Observer>,
) -> Result<(Vec<Ran>, PolicyFile), Failure> {
    let chosen = select(settings, &a.releases)?;
    let policy = load_policy(a.flags.policy.as_deref(), settings)?;
    let url = ledger_url(a.flags.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(|e| Failure::backend(&e))?;
    let model = settings.assessor().map_err(Failure::usage)?;
    let stop = stop_on_signals();
    let agent = settings.agent_context();
    let started_ms = agent.clock.now_ms();
    let mut prepared = Vec::new();
    for cfg in chosen {
        // An acting release keeps one id across restarts and replicas; an
        // advisory run is a separate analysis and never continues or shares it.
        let id = match mode {
            RunMode::Act => release_id(cfg),
            RunMode::Advise => format!("{}/advise/{started_ms}", release_id(cfg)),
        };
        let p = PreparedRelease::prepare(cfg, settings.declared_targets(), id, mode).map_err(Failure::usage)?;
        policy.check_guards(&cfg.service, &p.metrics).map_err(|e| Failure::usage(backstop::Error::from(e)))?;
        prepared.push((cfg.name.clone(), p));
    }
    let runs = prepared.iter().map(|(name, p)| {
        let mut obs = observer(name, p.duration_s);
        let (ledger, policy, stop, model, agent) = (&ledger, &policy, stop.clone(), model.clone(), agent.clone());
        async move {
            let run = ReleaseRun {
                controls: None,
                facts: p.facts.clone(),
                tick_s: p.tick_s,
                duration_s: p.duration_s,
                pace: a.pace_ms.map_or(Duration::from_secs(p.tick_s), Duration::from_millis),
                policy,
                ledger,
                stop: Some(stop),
                model,
                agent,
            };
            run.run(p.source.as_ref(), &p.actuation(), obs.as_mut()).await
        }
    });
    let results = futures_join(runs).await;
    let mut ran = Vec::new();
    for ((name, p), r) in prepared.into_iter().zip(results) {
        let outcome =
            r.map_err(|e| Failure { code: exit::BACKEND, message: format!("release {name}: {}", super::chain(&e)) })?;
        ran.push(Ran { name, prepared: p, outcome });
    }
    Ok((ran, policy))
}

/// Run futures concurrently on this task and collect their results in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outs.into_iter().flatten().collect()
}

fn report_of(r: &Ran) -> Report {
    Report::new(
        &r.name,
        &r.prepared.facts,
        &r.outcome,
        r.prepared.duration_s,
        r.prepared.can_act(),
        r.prepared.known_onset_s,
    )
}

fn step_summary(reports: &[Report]) {
    let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY") else { return };
    let text: String = reports.iter().map(render_markdown).collect::<Vec<_>>().join("\n---\n\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(path, error = %e, "Cannot write the GitHub step summary.");
    }
}

pub async fn watch(a: WatchArgs, settings: &Settings) -> CliResult {
    let several = a.run.releases.len() != 1 && settings.releases.len() > 1;
    let plain = a.run.flags.plain || several;
    let json = a.format == WatchFormat::Json;
    let mut make = |name: &str, duration: u64| -> Box<dyn Observer> {
        if json {
            Box::new(Quiet)
        } else {
            Box::new(LiveDisplay::new(duration, plain).prefixed(several.then(|| name.to_string())))
        }
    };
    let (ran, _) = run_all(&a.run, settings, RunMode::Act, &mut make).await?;
    let reports: Vec<Report> = ran.iter().map(report_of).collect();
    let codes: Vec<u8> = ran.iter().map(|r| exit_code(&r.outcome)).collect();
    let code = codes.iter().copied().max_by_key(|c| severity(*c)).unwrap_or(exit::PROMOTED);
    if json {
        let releases: Vec<serde_json::Value> =
            reports.iter().zip(&codes).map(|(r, c)| serde_json::json!({ "exit_code": c, "report": r })).collect();
        let doc = serde_json::json!({ "exit_code": code, "releases": releases });
        out(&serde_json::to_string_pretty(&doc).map_err(|e| Failure { code: 1, message: e.to_string() })?);
    } else {
        for (r, c) in reports.iter().zip(&codes) {
            out(&format!("\n{}: {} (exit {c})", r.release, r.headline));
            if let Some(j) = &r.judge {
                for f in &j.findings {
                    out(&format!("  {}", f.explanation));
                }
            }
        }
    }
    step_summary(&reports);
    Ok(ExitCode::from(code))
}

pub async fn advise(a: AdviseArgs, settings: &Settings) -> CliResult {
    if a.run.releases.len() > 1 || (a.run.releases.is_empty() && settings.releases.len() > 1) {
        return Err(Failure::usage("advise reports on one release: pass --release NAME"));
    }
    let mut make = |_: &str, _: u64| -> Box<dyn Observer> { Box::new(Quiet) };
    let (ran, _) = run_all(&a.run, settings, RunMode::Advise, &mut make).await?;
    let Some(first) = ran.first() else { return Err(Failure::usage("no release to advise on")) };
    let report = report_of(first);
    let text = match a.format {
        ReportFormat::Markdown => render_markdown(&report),
        ReportFormat::Json => {
            serde_json::to_string_pretty(&report).map_err(|e| Failure { code: 1, message: e.to_string() })?
        }
        ReportFormat::Html => render_html(&report),
    };
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| Failure { code: 1, message: format!("{}: {e}", path.display()) })?;
            out(&format!("{}: {} — report written to {}", report.release, report.headline, path.display()));
        }
        None => out(text.trim_end()),
    }
    step_summary(std::slice::from_ref(&report));
    Ok(ExitCode::SUCCESS)
}
