//! `backstop demo`: the main job on the embedded default — an offline,
//! simulated canary release judged live, rolled back and verified, with
//! every decision in the SQLite ledger.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::agent::runtime_failure;
use super::display::LiveDisplay;
use super::{CliResult, Failure, RunFlags, ledger_url, load_policy, out};
use backstop::executor::ExecutorConfig;
use backstop::judge::MetricStatus;
use backstop::policy::RunMode;
use backstop::release::ReleaseConfig;
use backstop::release::ReleaseStatus;
use backstop::run::{Runtime, stop_on_signals};
use backstop::signals::SourceConfig;
use backstop::signals::simulator::{FaultKind, FaultSpec, ModelSim, SimConfig, Warmup};

/// The simulated releases `--scenario` offers, spelled as the simulator's
/// fault kinds are in configuration (`error_spike`); the hyphenated
/// spellings of earlier versions are still accepted.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum DemoScenario {
    #[value(alias = "error-spike")]
    ErrorSpike,
    #[value(alias = "latency-regression")]
    LatencyRegression,
    #[value(alias = "memory-leak")]
    MemoryLeak,
    #[value(alias = "crash-loop")]
    CrashLoop,
    #[value(alias = "intermittent-errors")]
    IntermittentErrors,
    Healthy,
    #[value(alias = "healthy-noisy")]
    HealthyNoisy,
    #[value(alias = "healthy-low-traffic")]
    HealthyLowTraffic,
    /// A fraud model's canary: its scores drift from 300 s and its labelled accuracy
    /// falls 8 points, which labels arriving 4 minutes late reveal.
    #[value(alias = "model-drift")]
    ModelDrift,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Which release to simulate.
    #[arg(long, value_enum, default_value = "error_spike")]
    scenario: DemoScenario,
    /// Random seed of the simulation.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Real milliseconds per 10-second analysis tick (100 plays 30 minutes in 18 s; raise it to slow down).
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    #[command(flatten)]
    flags: RunFlags,
}

fn scenario_config(name: DemoScenario, seed: u64) -> SimConfig {
    use DemoScenario as D;
    let base = SimConfig { seed, blip_rate: 0.01, gap_rate: 0.01, noise: 1.2, ..SimConfig::default() };
    let fault = |kind, onset_s, strength| Some(FaultSpec { kind, onset_s, strength });
    match name {
        D::ErrorSpike => SimConfig { fault: fault(FaultKind::ErrorSpike, 600, 0.05), ..base },
        D::LatencyRegression => SimConfig { fault: fault(FaultKind::LatencyRegression, 480, 0.6), ..base },
        D::MemoryLeak => SimConfig { fault: fault(FaultKind::MemoryLeak, 120, 0.4), ..base },
        D::CrashLoop => SimConfig { fault: fault(FaultKind::CrashLoop, 600, 0.5), ..base },
        D::IntermittentErrors => SimConfig { fault: fault(FaultKind::IntermittentErrors, 300, 0.1), ..base },
        D::Healthy => SimConfig { warmup: Some(Warmup { amplitude: 0.8, tau_s: 15.0 }), ..base },
        D::HealthyNoisy => SimConfig { noise: 2.5, blip_rate: 0.03, ..base },
        D::HealthyLowTraffic => SimConfig { total_rps: 30.0, canary_weight: 0.03, ..base },
        D::ModelDrift => SimConfig {
            service: "fraud-scorer".into(),
            total_rps: 200.0,
            canary_weight: 0.2,
            model: Some(ModelSim {
                accuracy: 0.93,
                label_share: 0.6,
                label_delay_s: 240,
                change_at_s: 300,
                prediction_shift: 0.1,
                accuracy_drop: 0.08,
                ..ModelSim::default()
            }),
            ..base
        },
    }
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure { code: 1, message: e.to_string() }
}

/// The demo's release as configuration: a new name each run, so each run is a new release.
fn demo_release(scenario: &str, sim: &SimConfig, stamp: i64) -> ReleaseConfig {
    ReleaseConfig {
        name: format!("demo-{scenario}-{stamp}"),
        service: sim.service.clone(),
        target: format!("simulator/{}", sim.service),
        environment: "simulation".into(),
        candidate_revision: "v42".into(),
        last_known_good: Some("v41".into()),
        irreversible: false,
        source: SourceConfig::Simulator(sim.clone()),
        executor: Some(ExecutorConfig::Simulator),
        pods: None,
        logs: None,
        tick_s: None,
        ramp: None,
        labels: Default::default(),
    }
}

/// Where a demo writes: `--ledger` when given, else a fresh file of its own
/// in the temp folder, so demos never share a ledger with each other or with
/// real releases (and never trip one another's rollback rate limit).
fn demo_ledger(arg: Option<&str>, settings: &backstop::config::Settings, scenario: &str, stamp: i64) -> String {
    if arg.is_some() {
        return ledger_url(arg, settings);
    }
    let file = std::env::temp_dir().join(format!("backstop-demo-{scenario}-{stamp}-{}.db", std::process::id()));
    backstop::ledger::sqlite_url(&file)
}

pub async fn run(a: DemoArgs, settings: &backstop::config::Settings) -> CliResult {
    let sim_cfg = scenario_config(a.scenario, a.seed);
    let policy = load_policy(a.flags.policy.as_deref(), settings)?;
    let stamp = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000;
    let scenario = a.scenario.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
    let url = demo_ledger(a.flags.ledger.as_deref(), settings, &scenario, stamp);
    let cfg = demo_release(&scenario, &sim_cfg, stamp);
    let demo_settings = backstop::config::Settings { releases: vec![cfg.clone()], ..settings.clone() };
    let runtime = Runtime::open(demo_settings, policy, &url, stop_on_signals()).await.map_err(runtime_failure)?;
    let prepared = runtime.prepare(&cfg, RunMode::Act, stamp).map_err(runtime_failure)?;
    out(&format!(
        "backstop demo: scenario `{}` (seed {}): {} canary v42 at {:.0}% of {:.0} rps, {}-minute window, a tick every {}s of release time ({} ms real)",
        scenario,
        a.seed,
        sim_cfg.service,
        sim_cfg.canary_weight * 100.0,
        sim_cfg.total_rps,
        sim_cfg.duration_s / 60,
        sim_cfg.step_s,
        a.tick_ms
    ));
    let ledger_shown = runtime.ledger.url().to_string();
    out(&format!("ledger: {ledger_shown}"));
    let mut display = LiveDisplay::new(sim_cfg.duration_s, a.flags.plain);
    let pace = Some(Duration::from_millis(a.tick_ms));
    let outcome = runtime.run(&prepared.release, pace, &mut display, None).await.map_err(failed)?;
    display.finish();

    out("");
    out(&format!("DECISION at t={}s: {}", outcome.decided_at_s, describe(&outcome.status)));
    if let Some(j) = &outcome.final_judge {
        out(&format!("judge: {} — {}", j.verdict, j.summary));
        out("evidence:");
        let mut findings: Vec<_> = j.findings.iter().collect();
        findings.sort_by_key(|f| f.status != MetricStatus::Failing);
        for f in findings {
            out(&format!("  {}", f.explanation));
        }
    }
    let rules: Vec<String> = outcome.final_rules.iter().map(|r| r.rule.to_string()).collect();
    out(&format!("policy rules: {}", rules.join(" → ")));
    out(&format!("model: {}", backstop::report::model_lines(&backstop::report::ModelReport::new(&outcome)).trim_end()));
    out(&simulator_truth(&sim_cfg, outcome.decided_at_s));
    let db = url.trim_start_matches("sqlite://").split('?').next().unwrap_or(&url).to_string();
    out(&format!("ledger: release {} recorded in {ledger_shown}", outcome.release_id));
    out(&format!(
        "check it: backstop audit verify --ledger {db}   |   backstop audit list --ledger {db} --release {}",
        outcome.release_id
    ));
    Ok(ExitCode::SUCCESS)
}

/// What the simulator injected — never shown to the judge — and how long
/// after it the decision came.
fn simulator_truth(sim_cfg: &SimConfig, decided_at_s: u64) -> String {
    if let Some(fault) = &sim_cfg.fault {
        let delay = decided_at_s as i64 - fault.onset_s as i64;
        format!(
            "simulator truth (never shown to the judge): {} injected at {}s; decision came {}s after onset",
            fault.kind.slug(),
            fault.onset_s,
            delay
        )
    } else if let Some(m) = &sim_cfg.model {
        format!(
            "simulator truth (never shown to the judge): from {}s the canary model's scores shift by {:.2} and its \
             accuracy falls {:.0} points; labels arrive {}s after a prediction; decision came {}s after the change",
            m.change_at_s,
            m.prediction_shift,
            m.accuracy_drop * 100.0,
            m.label_delay_s,
            decided_at_s as i64 - m.change_at_s as i64
        )
    } else {
        "simulator truth (never shown to the judge): no fault injected".into()
    }
}

fn describe(s: &ReleaseStatus) -> String {
    match s {
        ReleaseStatus::RolledBack => "ROLLED BACK to v41 — executed and verified".into(),
        ReleaseStatus::Promoted => "PROMOTED v42 — executed and verified".into(),
        ReleaseStatus::ActionNotVerified { observed, .. } => format!("HELD: action ran but did NOT verify: {observed}"),
        ReleaseStatus::ActionFailed { error, .. } => format!("HELD: action FAILED: {error}"),
        ReleaseStatus::ActionUnresolved { plan_id, observed, .. } => {
            format!(
                "HELD: an earlier action (plan {plan_id}) has no outcome and the target does not show it done: {observed}"
            )
        }
        ReleaseStatus::Recommended { decision, .. } => format!("recommended {}", decision.label()),
        ReleaseStatus::AwaitingApproval { reason, .. } => format!("awaiting approval: {reason}"),
        ReleaseStatus::Held { reason } => format!("held: {reason}"),
        ReleaseStatus::Denied { reason } => format!("denied: {reason}"),
        ReleaseStatus::Interrupted => "interrupted".into(),
        ReleaseStatus::Aborted { reason } => format!("aborted: {reason}"),
    }
}
