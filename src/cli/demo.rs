//! `backstop demo`: the main job on the embedded default — an offline,
//! simulated canary release judged live, rolled back and verified, with
//! every decision in the SQLite ledger.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::display::LiveDisplay;
use super::{CliResult, Failure, RunFlags, ledger_url, load_policy, out};
use backstop::executor::{Guarded, SimulatedExecutor};
use backstop::judge::MetricStatus;
use backstop::ledger::Ledger;
use backstop::orchestrator::{Actuation, ReleaseRun, ReleaseStatus};
use backstop::policy::ReleaseFacts;
use backstop::signals::simulator::{FaultKind, FaultSpec, SimConfig, Simulator, Warmup};

/// Scenarios `--scenario` accepts.
pub const SCENARIOS: &[&str] = &[
    "error-spike",
    "latency-regression",
    "memory-leak",
    "crash-loop",
    "intermittent-errors",
    "healthy",
    "healthy-noisy",
    "healthy-low-traffic",
];

#[derive(Args)]
pub struct DemoArgs {
    /// Which release to simulate (error-spike, latency-regression, memory-leak, crash-loop,
    /// intermittent-errors, healthy, healthy-noisy, healthy-low-traffic).
    #[arg(long, default_value = "error-spike")]
    scenario: String,
    /// Random seed of the simulation.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Real milliseconds per 10-second analysis tick (100 plays 30 minutes in 18 s; raise it to slow down).
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    #[command(flatten)]
    flags: RunFlags,
}

fn scenario_config(name: &str, seed: u64) -> Option<SimConfig> {
    let base = SimConfig { seed, blip_rate: 0.01, gap_rate: 0.01, noise: 1.2, ..SimConfig::default() };
    let fault = |kind, onset_s, strength| Some(FaultSpec { kind, onset_s, strength });
    Some(match name {
        "error-spike" => SimConfig { fault: fault(FaultKind::ErrorSpike, 600, 0.05), ..base },
        "latency-regression" => SimConfig { fault: fault(FaultKind::LatencyRegression, 480, 0.6), ..base },
        "memory-leak" => SimConfig { fault: fault(FaultKind::MemoryLeak, 120, 0.4), ..base },
        "crash-loop" => SimConfig { fault: fault(FaultKind::CrashLoop, 600, 0.5), ..base },
        "intermittent-errors" => SimConfig { fault: fault(FaultKind::IntermittentErrors, 300, 0.1), ..base },
        "healthy" => SimConfig { warmup: Some(Warmup { amplitude: 0.8, tau_s: 15.0 }), ..base },
        "healthy-noisy" => SimConfig { noise: 2.5, blip_rate: 0.03, ..base },
        "healthy-low-traffic" => SimConfig { total_rps: 30.0, canary_weight: 0.03, ..base },
        _ => return None,
    })
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure { code: 1, message: e.to_string() }
}

pub async fn run(a: DemoArgs, settings: &backstop::config::Settings) -> CliResult {
    let sim_cfg = scenario_config(&a.scenario, a.seed).ok_or_else(|| {
        Failure::usage(format!("unknown scenario `{}`; available: {}", a.scenario, SCENARIOS.join(", ")))
    })?;
    let policy = load_policy(a.flags.policy.as_deref(), settings)?;
    policy
        .check_guards(&sim_cfg.service, &backstop::signals::simulator::metric_specs())
        .map_err(|e| Failure::usage(backstop::Error::from(e)))?;
    let url = ledger_url(a.flags.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(failed)?;
    let sim = Arc::new(Simulator::new(sim_cfg.clone()));
    let target = format!("simulator/{}", sim_cfg.service);
    let agent = settings.agent_context();
    // Each demo run simulates a new release, so its id is new each time.
    let stamp = agent.clock.now_ms() / 1000;
    let facts = ReleaseFacts {
        release_id: format!("demo-{}-{stamp}", a.scenario),
        service: sim_cfg.service.clone(),
        target: target.clone(),
        declared_targets: vec![target.clone()],
        candidate_revision: "v42".into(),
        last_known_good: Some("v41".into()),
        irreversible: false,
        environment: "simulation".into(),
    };
    out(&format!(
        "backstop demo: scenario `{}` (seed {}): {} canary v42 at {:.0}% of {:.0} rps, {}-minute window, a tick every {}s of release time ({} ms real)",
        a.scenario,
        a.seed,
        sim_cfg.service,
        sim_cfg.canary_weight * 100.0,
        sim_cfg.total_rps,
        sim_cfg.duration_s / 60,
        sim_cfg.step_s,
        a.tick_ms
    ));
    out(&format!("ledger: {}", ledger.url()));
    let run = ReleaseRun {
        controls: None,
        facts,
        tick_s: u64::from(sim_cfg.step_s),
        duration_s: sim_cfg.duration_s,
        pace: Duration::from_millis(a.tick_ms),
        policy: &policy,
        ledger: &ledger,
        stop: None,
        model: settings.assessor().map_err(Failure::usage)?,
        agent,
    };
    let executor = Arc::new(SimulatedExecutor::new(target, sim.clone()));
    let mut display = LiveDisplay::new(sim_cfg.duration_s, a.flags.plain);
    let outcome =
        run.run(sim.as_ref(), &Actuation::Live(Guarded::new(executor)), &mut display).await.map_err(failed)?;
    display.finish();

    out("");
    out(&format!("DECISION at t={}s: {}", outcome.decided_at_s, describe(&outcome.status)));
    if let Some(j) = &outcome.final_judge {
        out(&format!("judge: {:?} — {}", j.verdict, j.summary));
        out("evidence:");
        let mut findings: Vec<_> = j.findings.iter().collect();
        findings.sort_by_key(|f| f.status != MetricStatus::Failing);
        for f in findings {
            out(&format!("  {}", f.explanation));
        }
    }
    let rules: Vec<&str> = outcome.final_rules.iter().map(|r| r.rule.as_str()).collect();
    out(&format!("policy rules: {}", rules.join(" → ")));
    out(&format!("model: {}", backstop::report::model_lines(&backstop::report::ModelReport::new(&outcome)).trim_end()));
    if let Some(fault) = &sim_cfg.fault {
        let delay = outcome.decided_at_s as i64 - fault.onset_s as i64;
        out(&format!(
            "simulator truth (never shown to the judge): {} injected at {}s; decision came {}s after onset",
            fault.kind.slug(),
            fault.onset_s,
            delay
        ));
    } else {
        out("simulator truth (never shown to the judge): no fault injected");
    }
    let db = url.trim_start_matches("sqlite://").split('?').next().unwrap_or(&url).to_string();
    out(&format!("ledger: release {} recorded in {}", outcome.release_id, ledger.url()));
    out(&format!(
        "check it: backstop audit verify --ledger {db}   |   backstop audit list --ledger {db} --release {}",
        outcome.release_id
    ));
    Ok(ExitCode::SUCCESS)
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
