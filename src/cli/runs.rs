//! Running configured releases from the command line: the flags `watch`,
//! `advise` and `serve` share, and one call into [`backstop::run::Runtime`].

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::agent::runtime_failure;
use super::{Failure, RunFlags, ledger_url, load_policy};
use backstop::config::Settings;
use backstop::orchestrator::{Observer, RunOutcome};
use backstop::policy::RunMode;
use backstop::run::prepare::PreparedRelease;
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
        .filter(|(other, _)| other != id)
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

pub async fn run_all(
    a: &RunArgs,
    settings: &Settings,
    mode: RunMode,
    observer: &mut dyn FnMut(&str, u64) -> Box<dyn Observer>,
    window: Option<&PastWindow>,
) -> Result<Vec<Ran>, Failure> {
    let policy = load_policy(a.flags.policy.as_deref(), settings)?;
    let url = ledger_url(a.flags.ledger.as_deref(), settings);
    let runtime = Runtime::open(settings.clone(), policy, &url, stop_on_signals()).await.map_err(runtime_failure)?;
    let started_ms = runtime.agent.clock.now_ms();
    let chosen = runtime.select(&a.releases).map_err(runtime_failure)?;
    let mut prepared = Vec::new();
    for cfg in &chosen {
        prepared.push(match window {
            Some(w) => in_window(&runtime, cfg, mode, started_ms, w)?,
            None => runtime.prepare(cfg, mode, started_ms).map_err(runtime_failure)?,
        });
    }
    for (cfg, p) in chosen.iter().zip(&prepared) {
        runtime.preflight(p).await.map_err(runtime_failure)?;
        if mode == RunMode::Act {
            note_earlier_runs(&runtime, cfg, &p.release.facts.release_id).await;
        }
    }
    // Recorded data (a scenario, a past window) are judged as fast as they can be read.
    let recorded = window.is_some() || chosen.iter().all(|c| matches!(c.source, SourceConfig::Scenario { .. }));
    let pace = a.pace_ms.map(Duration::from_millis).or(recorded.then_some(Duration::ZERO));
    let results = runtime.run_all(&prepared, pace, observer).await;
    let mut ran = Vec::new();
    for (p, r) in prepared.into_iter().zip(results) {
        let outcome = r.map_err(|e| Failure {
            code: exit::BACKEND,
            message: format!("release {}: {}", p.name, super::chain(&e)),
        })?;
        ran.push(Ran { name: p.name, prepared: p.release, outcome });
    }
    Ok(ran)
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
    if !matches!(cfg.source, SourceConfig::Prometheus(_)) {
        return Err(Failure::usage(format!(
            "--from judges a past window of a Prometheus source; release {} replays recorded data (drop --from)",
            cfg.name
        )));
    }
    let mut p = runtime.prepare_at(cfg, mode, started_ms, w.from_s).map_err(runtime_failure)?;
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
