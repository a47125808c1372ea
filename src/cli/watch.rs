//! `backstop watch`: acts within policy, blocks until a decision, and
//! writes the approver's report when asked (`--report`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::display::LiveDisplay;
use super::runs::{Ran, RunArgs, run_all};
use super::{CliResult, Failure, out};
use backstop::config::Settings;
use backstop::orchestrator::{Observer, Quiet};
use backstop::policy::RunMode;
use backstop::report::{Report, render_html, render_markdown};
use backstop::run::fleet::{FleetOutcome, FleetSummary};

pub use backstop::run::exit;

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

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// `json` prints one machine-readable result on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: WatchFormat,
    /// Also write the approver's report here when the run ends (`.html`,
    /// `.json`, else Markdown; with several releases, one file each, the
    /// release's name before the extension).
    #[arg(long)]
    report: Option<PathBuf>,
}

pub(super) fn report_of(r: &Ran) -> Report {
    let p = &r.prepared;
    let mut report = Report::new(&r.name, &p.facts, &r.outcome, p.duration_s, p.can_act(), p.known_onset_s);
    backstop::run::recorded::plan_to_approve(&mut report, p, &r.outcome);
    report.ramp = p.ramp.as_ref().map(|cfg| backstop::report::RampReport::new(cfg, &r.outcome, p.can_act()));
    report
}

/// The report in the format `path`'s extension names.
fn render_for(path: &std::path::Path, report: &Report) -> Result<String, Failure> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => Ok(render_html(report)),
        Some("json") => serde_json::to_string_pretty(report).map_err(|e| Failure { code: 1, message: e.to_string() }),
        _ => Ok(render_markdown(report)),
    }
}

/// `watch --report FILE`: each release's report, written when the run ends.
fn write_reports(path: &std::path::Path, reports: &[Report]) -> Result<(), Failure> {
    for r in reports {
        let file = match reports {
            [_] => path.to_path_buf(),
            _ => {
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("report");
                let ext = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
                path.with_file_name(format!("{stem}-{}{ext}", r.release))
            }
        };
        std::fs::write(&file, render_for(&file, r)?)
            .map_err(|e| Failure { code: 1, message: format!("{}: {e}", file.display()) })?;
    }
    Ok(())
}

pub(super) fn step_summary(reports: &[Report]) {
    let text: String = reports.iter().map(render_markdown).collect::<Vec<_>>().join("\n---\n\n");
    super::ci::append_to("GITHUB_STEP_SUMMARY", &text);
}

/// `watch --format json`: one document on stdout (`backstop schema watch`).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct WatchResult<'a> {
    /// The version of this document's shape.
    format: WatchVersion,
    /// The process's exit code (the most severe release's).
    exit_code: u8,
    /// Each release, in the order run (fleet members after the releases run alone).
    releases: Vec<ReleaseResult<'a>>,
    /// Each fleet release (`[[fleets]]`), with its waves.
    fleets: Vec<FleetResult>,
}

/// One fleet release's ending.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct FleetResult {
    /// Its exit code (the most severe of its members' and reverts').
    exit_code: u8,
    /// The fleet and its waves.
    #[serde(flatten)]
    fleet: FleetSummary,
}

fn fleet_result(o: &FleetOutcome) -> FleetResult {
    FleetResult { exit_code: exit::for_fleet(o), fleet: o.summary() }
}

fn print_fleet(r: &FleetResult) {
    let f = &r.fleet;
    let why = f.why.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
    out(&format!("\nfleet {}: {}{why} (exit {})", f.name, f.outcome, r.exit_code));
    for m in &f.members {
        let revert = match m.revert {
            "not_started" => String::new(),
            r => format!("; revert {r}"),
        };
        out(&format!("  wave {} {} ({}): {}{revert}", m.wave, m.name, m.target, m.status));
    }
}

/// The version of `watch --format json`'s shape; its reports carry their own.
#[derive(serde::Serialize, schemars::JsonSchema)]
enum WatchVersion {
    /// The first published shape.
    #[serde(rename = "backstop.watch/v1")]
    V1,
}

/// One release's ending.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct ReleaseResult<'a> {
    /// Its exit code (README's table).
    exit_code: u8,
    /// Its report.
    report: &'a Report,
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
    let runs = run_all(&a.run, settings, RunMode::Act, &mut make, None).await?;
    let ran = runs.ran;
    let reports: Vec<Report> = ran.iter().map(report_of).collect();
    let codes: Vec<u8> = ran.iter().map(|r| exit::code(&r.outcome)).collect();
    let fleets: Vec<FleetResult> = runs.fleets.iter().map(fleet_result).collect();
    let code = exit::worst(codes.iter().copied().chain(fleets.iter().map(|f| f.exit_code)));
    if json {
        let releases =
            reports.iter().zip(&codes).map(|(report, &exit_code)| ReleaseResult { exit_code, report }).collect();
        let doc = WatchResult { format: WatchVersion::V1, exit_code: code, releases, fleets };
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
        fleets.iter().for_each(print_fleet);
    }
    if let Some(path) = &a.report {
        write_reports(path, &reports)?;
    }
    step_summary(&reports);
    super::ci::annotate(&reports, &codes);
    super::ci::write_outputs(&super::ci::outputs(&reports, code, a.report.as_deref()));
    Ok(ExitCode::from(code))
}
