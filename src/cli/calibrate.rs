//! `backstop calibrate`: a service's tolerances from its past releases.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{CliResult, Failure, ledger_url, load_policy, out};
use backstop::calibrate::{AtBound, BEFORE_ITS_FAULT, Calibration, ToleranceKind, before_onset, calibrate};
use backstop::ledger::{Actor, Ledger, Record};
use backstop::signals::ScenarioData;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Runtime whose past releases are replayed (scenarios of other services are skipped).
    #[arg(long)]
    service: String,
    /// Recorded scenario files or folders of its past releases (truth `bad = false` are learned
    /// from; `bad = true` are replayed as a check).
    #[arg(long = "scenarios", required_unless_present = "from_ledger")]
    paths: Vec<PathBuf>,
    /// Read the service's past releases back instead: the ledger lists each one's window and
    /// outcome, the service's configured Prometheus source reads the window again (promoted
    /// ones are learned from; rolled-back ones are replayed as a check).
    #[arg(long)]
    from_ledger: bool,
    /// Ledger file path or database URL (default: from configuration).
    #[arg(long)]
    ledger: Option<String>,
    /// Policy file whose [judge] and [calibration] sections apply.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print the calibration without recording it in the ledger.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub async fn run(a: CalibrateArgs, settings: &backstop::config::Settings) -> CliResult {
    let policy = load_policy(a.policy.as_deref(), settings)?;
    let cfg = policy.judge_for(&a.service).into_owned();
    let (healthy, faulty) = if a.from_ledger {
        from_ledger(&a, settings).await?
    } else {
        from_scenarios(&a.paths, &a.service, cfg.warmup_s)?
    };
    let c = calibrate(&a.service, &healthy, &faulty, &cfg, &policy.calibration).map_err(Failure::usage)?;
    let recorded = if a.dry_run { None } else { Some(record(&a, settings, &c).await?) };
    match a.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&c).map_err(|e| Failure { code: 1, message: e.to_string() })?;
            out(&text);
        }
        Format::Table => out(&table(&c, recorded, policy.calibration.apply)),
    }
    Ok(ExitCode::SUCCESS)
}

type Releases = (Vec<ScenarioData>, Vec<ScenarioData>);

/// Healthy and faulty recordings of `service` from scenario files.
fn from_scenarios(paths: &[PathBuf], service: &str, warmup_s: u64) -> Result<Releases, Failure> {
    let corpus = backstop::eval::load_corpus(paths);
    if let Some(e) = corpus.errors.first() {
        return Err(Failure::usage(format!("{e} ({} scenario file(s) could not be read)", corpus.errors.len())));
    }
    let (mut healthy, mut faulty) = (vec![], vec![]);
    // A release nobody labelled is neither learned from nor a check.
    for s in corpus.groups.into_iter().flat_map(|(_, s)| s).filter(|s| s.data.service == service) {
        match s.truth {
            Some(t) if t.bad => {
                // Before its fault began it was a healthy release: five minutes of judging or more.
                healthy.extend(before_onset(&s.data, t.onset_s, warmup_s, 300));
                faulty.push(s.data);
            }
            Some(_) => healthy.push(s.data),
            None => {}
        }
    }
    Ok((healthy, faulty))
}

/// Promoted and rolled-back past releases of the service, read back through
/// the Prometheus source its release in `backstop.toml` configures.
async fn from_ledger(a: &CalibrateArgs, settings: &backstop::config::Settings) -> Result<Releases, Failure> {
    let prometheus = settings
        .releases
        .iter()
        .filter(|r| r.service == a.service)
        .find_map(|r| r.source.prometheus_api().cloned())
        .ok_or_else(|| {
            Failure::usage(format!(
                "--from-ledger reads past windows through the service's Prometheus source: no release of `{}` in the configuration has `source = {{ kind = \"prometheus\", … }}`",
                a.service
            ))
        })?;
    let url = ledger_url(a.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(|e| Failure::backend(&e))?;
    let now = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) as f64 / 1000.0;
    backstop::run::history::promoted_and_rolled_back(&ledger, &a.service, &prometheus, now)
        .await
        .map_err(|e| Failure::backend(&e))
}

/// Append the calibration to the ledger; its sequence number.
async fn record(a: &CalibrateArgs, settings: &backstop::config::Settings, c: &Calibration) -> Result<i64, Failure> {
    let url = ledger_url(a.ledger.as_deref(), settings);
    let ledger = Ledger::open(&url).await.map_err(|e| Failure::backend(&e))?;
    let identity = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let actor = Actor::Human { channel: "cli".into(), identity };
    let at_ms = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock);
    let receipt = ledger
        .append(&Calibration::ledger_id(&c.service), &actor, at_ms, Record::Calibration(Box::new(c.clone())))
        .await
        .map_err(|e| Failure::backend(&e))?;
    Ok(receipt.seq)
}

fn show(kind: ToleranceKind, v: f64) -> String {
    match kind {
        ToleranceKind::Relative => format!("{:.1} %", v * 100.0),
        ToleranceKind::Absolute => format!("{:.2} pt", v * 100.0),
    }
}

fn table(c: &Calibration, recorded: Option<i64>, applied: bool) -> String {
    let stretches = c.releases.iter().filter(|r| r.ends_with(BEFORE_ITS_FAULT)).count();
    let mut t = format!(
        "calibration of {} from {} past healthy releases ({stretches} of them a faulty release before its fault; {} faulty replayed as a check)\n\n{:<28} {:>10} {:>10} {:>8}  note\n",
        c.service,
        c.releases.len(),
        c.faulty.len(),
        "metric",
        "tolerance",
        "policy",
        "failing"
    );
    for m in &c.metrics {
        let note = match m.at_bound {
            Some(AtBound::Max) => "at the policy's max: these releases still fail at the loosest allowed",
            Some(AtBound::Min) => "at the policy's min: the releases would allow tighter",
            None => "",
        };
        t.push_str(&format!(
            "{:<28} {:>10} {:>10} {:>8}  {note}\n",
            m.metric,
            show(m.kind, m.value),
            show(m.kind, m.policy_value),
            m.still_failing
        ));
    }
    for m in &c.set_in_policy {
        t.push_str(&format!("{m:<28} {:>10} {:>10} {:>8}  set in the policy; left alone\n", "-", "-", "-"));
    }
    t.push_str(&format!(
        "\nrollbacks of these healthy releases: {} → {} of {}; faulty releases caught: {} → {} of {}\n",
        c.false_rollbacks_before,
        c.false_rollbacks_after,
        c.releases.len(),
        c.caught_before,
        c.caught_after,
        c.faulty.len()
    ));
    t.push_str(&match (recorded, applied) {
        (None, _) => "dry run: not recorded\n".to_string(),
        (Some(seq), true) => {
            format!("recorded in the ledger (seq {seq}); watch and agent apply it from their next start\n")
        }
        (Some(seq), false) => {
            format!("recorded in the ledger (seq {seq}); not applied: the policy's [calibration] apply is false\n")
        }
    });
    t
}
