//! Running configured releases from the command line: the flags `watch`,
//! `advise` and `serve` share, and one call into [`backstop::run::Runtime`].

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::agent::runtime_failure;
use super::{Failure, RunFlags, ledger_url, load_policy};
use backstop::config::Settings;
use backstop::ledger::LedgerError;
use backstop::orchestrator::{Observer, RunOutcome};
use backstop::policy::RunMode;
use backstop::run::fleet::{Fleet, FleetOutcome};
use backstop::run::prepare::PreparedRelease;
use backstop::run::share::{Heartbeat, Joined, be_present};
use backstop::run::{Prepared, Runtime, exit, stop_on_signals};
use backstop::signals::SourceConfig;

/// Flags shared by `watch` and `advise`.
#[derive(Args)]
pub struct RunArgs {
    /// Release name from configuration; repeat for several (default: all).
    #[arg(long = "release")]
    pub releases: Vec<String>,
    /// Real milliseconds per tick (default: real time, one tick per tick_s); 0 replays as fast as possible.
    #[arg(long)]
    pub pace_ms: Option<u64>,
    #[command(flatten)]
    pub flags: RunFlags,
}

pub struct Ran {
    pub name: String,
    pub prepared: PreparedRelease,
    pub outcome: RunOutcome,
}

/// Say on stderr when this release and candidate ran before from other
/// settings (its id covers the source): this run is a new analysis, and the
/// earlier one's outcome stands in the ledger.
async fn note_earlier_runs(runtime: &Runtime, cfg: &backstop::release::ReleaseConfig, id: &str) {
    let prefix = backstop::release::release_id_prefix(cfg);
    let Ok(earlier) = runtime.ledger.finished_with_prefix(&prefix, 5).await else { return };
    let others: Vec<String> = earlier
        .iter()
        .filter(|(other, _)| other != id && !backstop::run::fleet::is_revert_id(other))
        .map(|(other, f)| format!("{other} ended {}", f.status.label()))
        .collect();
    if let Some(newest) = others.first() {
        let text = format!(
            "note: release {} ({}) was judged before from other settings ({newest}); this run is a new analysis",
            cfg.name, cfg.candidate_revision
        );
        let _ = writeln!(std::io::stderr(), "{}", backstop::report::text::plain(&backstop::secret::mask(&text)));
    }
}

/// A past window to judge (`advise --from/--to`), unix seconds.
pub struct PastWindow {
    /// Its start.
    pub from_s: f64,
    /// Its end (default: the release's analysis window after `from_s`).
    pub to_s: Option<f64>,
}

/// What a run of configured releases ended with: each release run, and
/// each fleet (`watch` only; `advise` judges fleet members one by one).
pub struct Runs {
    pub ran: Vec<Ran>,
    pub fleets: Vec<FleetOutcome>,
}

pub async fn run_all(
    a: &RunArgs,
    settings: &Settings,
    mode: RunMode,
    observer: &mut dyn FnMut(&str, u64) -> Box<dyn Observer>,
    window: Option<&PastWindow>,
) -> Result<Runs, Failure> {
    let policy = load_policy(a.flags.policy.as_deref(), settings)?;
    let url = ledger_url(a.flags.ledger.as_deref(), settings);
    let runtime = Runtime::open(settings.clone(), policy, &url, stop_on_signals()).await.map_err(runtime_failure)?;
    let presence = match mode {
        RunMode::Act => present(&runtime).await?,
        RunMode::Advise => None,
    };
    let started_ms = runtime.agent.clock.now_ms();
    let (chosen, fleets) = match (mode, window) {
        (RunMode::Act, None) => runtime.select_with_fleets(&a.releases).map_err(runtime_failure)?,
        _ => (runtime.select(&a.releases).map_err(runtime_failure)?, vec![]),
    };
    let mut prepared = Vec::with_capacity(chosen.len());
    for cfg in &chosen {
        prepared.push(prepare_one(&runtime, cfg, (mode, started_ms), window).await?);
    }
    let mut fleet_runs = Vec::new();
    for (_, members) in &fleets {
        let mut runs = Vec::with_capacity(members.len());
        for cfg in members {
            runs.push(prepare_one(&runtime, cfg, (mode, started_ms), window).await?);
        }
        fleet_runs.push(runs);
    }
    let every = chosen.iter().chain(fleets.iter().flat_map(|(_, m)| m));
    let every_prepared = prepared.iter().chain(fleet_runs.iter().flatten());
    for (cfg, p) in every.clone().zip(every_prepared) {
        runtime.preflight(p).await.map_err(runtime_failure)?;
        if mode == RunMode::Act {
            note_earlier_runs(&runtime, cfg, &p.release.facts.release_id).await;
        }
    }
    // Recorded data (a scenario, a past window) are judged as fast as they can be read.
    let recorded = window.is_some() || every.clone().all(|c| matches!(c.source, SourceConfig::Scenario { .. }));
    let pace = a.pace_ms.map(Duration::from_millis).or(recorded.then_some(Duration::ZERO));
    let fleets: Vec<Fleet> =
        fleets.iter().zip(fleet_runs).map(|((plan, _), members)| Fleet { plan, members }).collect();
    // One observer factory, shared by the releases run alone and every fleet's waves.
    let shared = std::sync::Mutex::new(observer);
    let mut alone_obs = |n: &str, d: u64| (shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner))(n, d);
    let alone = runtime.run_all(&prepared, pace, &mut alone_obs);
    let in_fleets = futures_util::future::join_all(fleets.iter().map(|f| {
        let (shared, runtime) = (&shared, &runtime);
        async move {
            let mut obs = |n: &str, d: u64| (shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner))(n, d);
            runtime.run_fleet(f, pace, &mut obs).await
        }
    }));
    let (results, fleet_results) = tokio::join!(alone, in_fleets);
    if let Some(p) = presence {
        p.leave().await;
    }
    gather(prepared.into_iter().zip(results), fleets.into_iter().zip(fleet_results))
}

/// An acting `watch` on the roster (`run::share::be_present`); exit 130 when
/// a stop signal came while it waited for its instance id to be free.
async fn present(runtime: &Runtime) -> Result<Option<Heartbeat>, Failure> {
    let stop = runtime.stop.clone();
    let joined = be_present(runtime.ledger.clone(), &runtime.agent, stop)
        .await
        .map_err(|e| runtime_failure(backstop::run::RuntimeError::Ledger(e)))?;
    match joined {
        Joined::Beating(heartbeat) => Ok(Some(heartbeat)),
        Joined::Advising => Ok(None),
        Joined::Stopped => {
            Err(Failure { code: exit::INTERRUPTED, message: backstop::run::share::STOPPED_WAITING.into() })
        }
    }
}

/// One release made runnable: over a past window, or (continuing what the
/// ledger holds of it) from its recorded start or now.
async fn prepare_one(
    runtime: &Runtime,
    cfg: &backstop::release::ReleaseConfig,
    (mode, started_ms): (RunMode, i64),
    window: Option<&PastWindow>,
) -> Result<Prepared, Failure> {
    match window {
        Some(w) => in_window(runtime, cfg, mode, started_ms, w),
        None => runtime.prepare_to_run(cfg, mode, started_ms).await.map_err(runtime_failure),
    }
}

/// Each release's outcome, those run alone first and then each fleet's
/// members; the first release or fleet that failed to run fails the command.
fn gather<'a>(
    alone: impl Iterator<Item = (Prepared, Result<RunOutcome, LedgerError>)>,
    fleets: impl Iterator<Item = (Fleet<'a>, Result<FleetOutcome, LedgerError>)>,
) -> Result<Runs, Failure> {
    let mut ran = Vec::new();
    for (p, r) in alone {
        let outcome = r.map_err(|e| Failure {
            code: exit::BACKEND,
            message: format!("release {}: {}", p.name, super::chain(&e)),
        })?;
        ran.push(Ran { name: p.name, prepared: p.release, outcome });
    }
    let mut outcomes = Vec::new();
    for (f, r) in fleets {
        let o = r.map_err(|e| Failure {
            code: exit::BACKEND,
            message: format!("fleet {}: {}", f.plan.name, super::chain(&e)),
        })?;
        let mut members: Vec<Option<Prepared>> = f.members.into_iter().map(Some).collect();
        for (m, outcome) in &o.ran {
            if let Some(p) = members[*m].take() {
                ran.push(Ran { name: p.name, prepared: p.release, outcome: outcome.clone() });
            }
        }
        outcomes.push(o);
    }
    Ok(Runs { ran, fleets: outcomes })
}

/// A release prepared to judge the past window `w`: only a live source has
/// one, and the whole window must have ended.
fn in_window(
    runtime: &Runtime,
    cfg: &backstop::release::ReleaseConfig,
    mode: RunMode,
    started_ms: i64,
    w: &PastWindow,
) -> Result<Prepared, Failure> {
    if !cfg.source.reads_the_past() {
        return Err(Failure::usage(format!(
            "--from judges a past window of a Prometheus, VictoriaMetrics or InfluxDB source; release {} replays recorded data (drop --from)",
            cfg.name
        )));
    }
    let mut p = runtime
        .prepare_at(cfg, mode, started_ms, backstop::signals::TimeZero::at(w.from_s))
        .map_err(runtime_failure)?;
    if let Some(to_s) = w.to_s {
        let length = (to_s - w.from_s).floor();
        if length < p.release.tick_s as f64 {
            return Err(Failure::usage(format!(
                "--to must be at least one tick ({} s) after --from; it is {length} s after",
                p.release.tick_s
            )));
        }
        p.release.duration_s = length as u64;
    }
    let end_s = w.from_s + p.release.duration_s as f64;
    let now_s = started_ms as f64 / 1000.0;
    if end_s > now_s {
        return Err(Failure::usage(format!(
            "the window of release {} from --from ends {:.0} s from now: a past window must have ended \
             (pass an earlier --from or a --to before now, or judge it live with watch/advise without --from)",
            cfg.name,
            end_s - now_s
        )));
    }
    Ok(p)
}
