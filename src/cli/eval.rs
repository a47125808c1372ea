//! `backstop eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{CliResult, Failure, load_policy, out};
use backstop::eval::{AssessorJudge, JudgeName, evaluate, judge_by_name, load_corpus, render_misses, render_table};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Scenario files or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Judge to run; repeat for several (default: backstop).
    #[arg(long = "judge")]
    judges: Vec<JudgeName>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Policy file whose [judge] section tunes our judge.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Add `why` to each JSON result of our judges: the explanations behind a
    /// rollback or an escalation (not part of FORMAT.md's result object).
    #[arg(long)]
    why: bool,
    /// With `--format table`: list below the table, per judge and corpus, the
    /// faulty scenarios not rolled back and the healthy ones rolled back.
    #[arg(long)]
    misses: bool,
    /// Judge each service with its newest calibration from this ledger (file path or URL),
    /// as `watch` does with `[calibration] apply = true`.
    #[arg(long)]
    calibrations: Option<String>,
}

/// The judges `--judge` names (ours when none): `backstop+model` is skipped,
/// with a note, where no `[model]` is configured.
fn chosen_judges(
    names: &[JudgeName],
    policy: &backstop::policy::PolicyFile,
    settings: &backstop::config::Settings,
) -> Result<Vec<Box<dyn backstop::eval::EvalJudge>>, Failure> {
    let names = if names.is_empty() { &[JudgeName::Backstop][..] } else { names };
    let mut judges: Vec<Box<dyn backstop::eval::EvalJudge>> = Vec::new();
    for &n in names {
        if n != JudgeName::BackstopModel {
            judges.extend(judge_by_name(n, policy));
            continue;
        }
        match settings.assessor().map_err(Failure::usage)? {
            Some(assessor) => judges.push(Box::new(AssessorJudge { policy: policy.clone(), assessor, record: None })),
            None => {
                let _ = std::io::Write::write_fmt(
                    &mut std::io::stderr(),
                    format_args!(
                        "eval: skipping --judge backstop+model: no [model] is configured in backstop.toml (see docs/assessor.md)\n"
                    ),
                );
            }
        }
    }
    Ok(judges)
}

pub async fn run(a: EvalArgs, settings: &backstop::config::Settings) -> CliResult {
    let mut policy = load_policy(a.policy.as_deref(), settings)?;
    if let Some(ledger) = &a.calibrations {
        let url = super::ledger_url(Some(ledger), settings);
        let ledger = backstop::ledger::Ledger::open(&url).await.map_err(|e| Failure::backend(&e))?;
        policy.calibrations = backstop::run::calibrations_in_force(&ledger).await.map_err(|e| Failure::backend(&e))?;
    }
    let judges = chosen_judges(&a.judges, &policy, settings)?;
    let corpus = load_corpus(&a.paths);
    // A guard on a metric's good side is a policy error, named before any replay.
    for (_, scenarios) in &corpus.groups {
        for s in scenarios {
            let specs: Vec<_> = s.data.metrics.iter().map(|m| m.spec.clone()).collect();
            policy
                .check_guards(&s.data.service, &specs)
                .map_err(|e| Failure::usage(format!("{} (metric directions from {})", e, s.path.display())))?;
        }
    }
    for e in &corpus.errors {
        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("error: {e}\n"));
    }
    let mut report = evaluate(&corpus, &judges);
    if !a.why {
        report.judges.values_mut().flat_map(|j| j.results.iter_mut()).for_each(|r| r.why.clear());
    }
    match a.format {
        Format::Json => {
            let text =
                serde_json::to_string_pretty(&report).map_err(|e| Failure { code: 1, message: e.to_string() })?;
            out(&text);
        }
        Format::Table if a.misses => out((render_table(&report) + &render_misses(&report)).trim_end()),
        Format::Table => out(render_table(&report).trim_end()),
    }
    if corpus.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure {
            code: 1,
            message: format!("{} scenario file(s) could not be read; the rest ran", corpus.errors.len()),
        })
    }
}
