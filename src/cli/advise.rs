//! `backstop advise`: the approver's report, never an action. A release the
//! ledger has recorded (`watch`, `serve`, an agent) is reported from the
//! ledger at once and judged nothing again; any other is judged without
//! acting — a recorded scenario unpaced, a past Prometheus window
//! (`--from`/`--to`) as fast as the data can be read — with progress on stderr.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::agent::runtime_failure;
use super::runs::{PastWindow, RunArgs, run_all};
use super::watch::{ReportFormat, report_of, step_summary};
use super::{CliResult, Failure, ledger_url, load_policy, out};
use backstop::config::Settings;
use backstop::orchestrator::{Observer, TickReport};
use backstop::policy::{Decision, RunMode};
use backstop::report::{Report, render_html, render_markdown};
use backstop::run::recorded::{RecordedError, RecordedReport};
use backstop::run::{Runtime, exit, stop_on_signals};

#[derive(Args)]
pub struct AdviseArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Report format.
    #[arg(long, value_enum, default_value = "markdown")]
    format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Judge again even when the ledger holds this release: a separate
    /// analysis (the recorded one stands).
    #[arg(long)]
    rejudge: bool,
    /// Judge a past window of a Prometheus release from this time (RFC 3339
    /// such as 2026-12-01T10:00:00Z, or unix seconds), as fast as the data can be read.
    #[arg(long, value_parser = parse_time)]
    from: Option<jiff::Timestamp>,
    /// The end of that window (default: the release's analysis window after `--from`).
    #[arg(long, value_parser = parse_time, requires = "from")]
    to: Option<jiff::Timestamp>,
}

/// RFC 3339, or unix seconds.
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(s) = text.parse::<i64>() {
        return jiff::Timestamp::from_second(s).map_err(|e| format!("{text}: {e}"));
    }
    text.parse::<jiff::Timestamp>()
        .map_err(|e| format!("{text}: expected RFC 3339 (2026-12-01T10:00:00Z) or unix seconds ({e})"))
}

pub async fn advise(a: AdviseArgs, settings: &Settings) -> CliResult {
    if a.run.releases.len() > 1 || (a.run.releases.is_empty() && settings.releases.len() > 1) {
        return Err(Failure::usage("advise reports on one release: pass --release NAME"));
    }
    let recorded = if a.rejudge || a.from.is_some() { None } else { recorded_report(&a, settings).await? };
    let report = match recorded {
        Some(r) => r,
        None => judged_report(&a, settings).await?,
    };
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
    super::ci::write_outputs(&super::ci::outputs(std::slice::from_ref(&report), exit::PROMOTED, a.out.as_deref()));
    Ok(ExitCode::SUCCESS)
}

/// Judge the release now, without acting, with progress on stderr.
async fn judged_report(a: &AdviseArgs, settings: &Settings) -> Result<Report, Failure> {
    let window = a.from.map(|from| PastWindow {
        from_s: from.as_millisecond() as f64 / 1000.0,
        to_s: a.to.map(|t| t.as_millisecond() as f64 / 1000.0),
    });
    let mut make = |name: &str, _: u64| -> Box<dyn Observer> { Box::new(Progress::new(name)) };
    let ran = run_all(&a.run, settings, RunMode::Advise, &mut make, window.as_ref()).await?.ran;
    let Some(first) = ran.first() else { return Err(Failure::usage("no release to advise on")) };
    Ok(report_of(first))
}

/// The report of the release as the ledger holds it; `None` when it never ran.
async fn recorded_report(a: &AdviseArgs, settings: &Settings) -> Result<Option<Report>, Failure> {
    let policy = load_policy(a.run.flags.policy.as_deref(), settings)?;
    let url = ledger_url(a.run.flags.ledger.as_deref(), settings);
    let runtime = Runtime::open(settings.clone(), policy, &url, stop_on_signals()).await.map_err(runtime_failure)?;
    let chosen = runtime.select(&a.run.releases).map_err(runtime_failure)?;
    let Some(cfg) = chosen.first() else { return Ok(None) };
    let found = backstop::run::recorded::recorded_report(&runtime, cfg).await.map_err(|e| match e {
        RecordedError::Ledger(_) => Failure { code: exit::BACKEND, message: super::chain(&e) },
        RecordedError::Prepare(e) => runtime_failure(e),
    })?;
    match found {
        RecordedReport::Nothing => Ok(None),
        RecordedReport::InProgress { ticks, now_s } => Err(Failure {
            code: exit::USAGE,
            message: format!(
                "release {} is being judged now ({ticks} ticks recorded, {now_s} s into its window): its report \
                 exists when it ends (advise again then, or `watch --report FILE`); --rejudge starts a separate analysis",
                cfg.name
            ),
        }),
        RecordedReport::Ended { report, ticks } => {
            let _ = writeln!(
                std::io::stderr(),
                "advise: {}: reported from the ledger ({} ticks recorded); nothing judged again (--rejudge for a new analysis)",
                report.release,
                ticks
            );
            Ok(Some(*report))
        }
    }
}

/// Progress on stderr: a line per tenth of the window, and the decision.
struct Progress {
    name: String,
    next_pct: u64,
}

impl Progress {
    fn new(name: &str) -> Self {
        Self { name: name.to_string(), next_pct: 0 }
    }
}

impl Observer for Progress {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        let pct = t.now_s * 100 / t.duration_s.max(1);
        let decision: &'static str = (&t.outcome.decision).into();
        if pct >= self.next_pct || t.outcome.decision != Decision::Continue {
            self.next_pct = (pct / 10 + 1) * 10;
            let line = format!(
                "advise: {}: t={}s of {}s (tick {}), judge {}, {decision}",
                self.name, t.now_s, t.duration_s, t.tick, t.judge.verdict
            );
            let _ = writeln!(std::io::stderr(), "{}", backstop::report::text::plain(&line));
        }
    }
}
