//! `policy check`, `schema`, `corpus`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CliResult, Failure, out};
use backstop::signals::simulator::{CorpusSpec, generate_corpus};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; names the field and what was expected when it is invalid.
    Check {
        /// Policy file (TOML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (with BACKSTOP_* overrides), the policy and every executor, then reach each
    /// release's signal source and executor, the ledger and the model's key without changing anything.
    /// Exit 0 when all is well, 2 when a setting is wrong, 3 when something is unreachable.
    Check {
        /// Policy file (default: from configuration, else the embedded default).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Ledger URL or SQLite path (default: from configuration).
        #[arg(long)]
        ledger: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SchemaWhat {
    /// JSON Schema of backstop.toml.
    Config,
    /// JSON Schema of a policy file.
    Policy,
    /// JSON Schema of the ledger's records (kind, body).
    Ledger,
    /// JSON Schema of a report (`advise --format json`, `watch --report FILE.json`): `backstop.report/v1`.
    Report,
    /// JSON Schema of `watch --format json`: `backstop.watch/v1`.
    Watch,
}

#[derive(Args)]
pub struct CorpusArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Seed; different seeds give disjoint splits.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scenario name prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Scenarios per healthy family (9 families; 6 for an earlier-window baseline).
    #[arg(long, default_value_t = 6)]
    good_per_family: usize,
    /// Scenarios per fault kind × strength × traffic cell (48 cells).
    #[arg(long, default_value_t = 1)]
    bad_per_cell: usize,
    /// What the baseline is (FORMAT.md `baseline_kind`): a concurrent canary,
    /// or all traffic on the new version judged against its own past.
    #[arg(long, value_enum, default_value_t = KindArg::Concurrent)]
    baseline_kind: KindArg,
    /// Both sides log an error line per failed request (ordinary failures), so the log-template
    /// test meets a background; concurrent baselines only.
    #[arg(long)]
    background_logs: bool,
    /// Model releases instead (six families, `--good-per-family` of each): drift with stable
    /// or falling delayed accuracy, a schema change, a slower model, a healthy retrain, labels
    /// slower than the window; concurrent baselines only.
    #[arg(long)]
    model: bool,
}

/// `--baseline-kind` values, as FORMAT.md spells them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// The stable version serving at the same time.
    Concurrent,
    /// The window just before the release.
    Preceding,
    /// The same window one day earlier.
    Seasonal,
}

impl From<KindArg> for backstop::signals::BaselineKind {
    fn from(k: KindArg) -> Self {
        use backstop::signals::BaselineKind as B;
        match k {
            KindArg::Concurrent => B::Concurrent,
            KindArg::Preceding => B::Preceding,
            KindArg::Seasonal => B::Seasonal,
        }
    }
}

/// `policy check FILE`: the file alone, then its guards against the metrics
/// of every release in the loaded configuration (their bad directions).
pub fn policy(cmd: PolicyCommand, settings: &backstop::config::Settings) -> CliResult {
    match cmd {
        PolicyCommand::Check { file } => {
            let p = backstop::policy::PolicyFile::load(&file).map_err(|e| Failure::usage(backstop::Error::from(e)))?;
            for r in &settings.releases {
                // Built only for its metric list: no release starts, so its start time is moot.
                let files = r.files_from(settings.base_dir.as_deref());
                let clock: std::sync::Arc<dyn backstop::clock::Clock> =
                    std::sync::Arc::new(backstop::clock::SystemClock);
                let built =
                    backstop::signals::build_source(&files.source, backstop::signals::TimeZero::at(0.0), &clock)
                        .map_err(Failure::usage)?;
                p.check_guards(&r.service, &built.metrics).map_err(|e| Failure::usage(backstop::Error::from(e)))?;
            }
            out(&format!(
                "{}: valid (autonomy {}, at most {} rollbacks per {} min, {} freeze windows, {} service overrides)",
                file.display(),
                p.autonomy,
                p.rate_limit.max_rollbacks,
                p.rate_limit.window_minutes,
                p.freeze.len(),
                p.services.len()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `config check`: one line per check, worst outcome as the exit code.
pub async fn config(cmd: ConfigCommand, settings: &backstop::config::Settings) -> CliResult {
    use backstop::check::Status;
    let ConfigCommand::Check { policy, ledger } = cmd;
    let policy = super::load_policy(policy.as_deref(), settings)?;
    let url = super::ledger_url(ledger.as_deref(), settings);
    let lines = backstop::check::check(settings, &policy, &url).await;
    let mut code = ExitCode::SUCCESS;
    let (mut invalid, mut failed) = (false, false);
    for l in &lines {
        let (tag, text) = match &l.status {
            Status::Ok(t) => ("ok", t),
            Status::Skipped(t) => ("skipped", t),
            Status::Invalid(t) => {
                invalid = true;
                ("INVALID", t)
            }
            Status::Failed(t) => {
                failed = true;
                ("FAILED", t)
            }
        };
        out(&format!("{tag:<8} {}: {text}", l.subject));
    }
    if invalid {
        code = ExitCode::from(super::EXIT_USAGE);
    } else if failed {
        code = ExitCode::from(backstop::run::exit::BACKEND);
    }
    if lines.len() == 2 {
        out("(no [[releases]] configured)");
    }
    Ok(code)
}

pub fn schema(what: SchemaWhat) -> CliResult {
    let schema = match what {
        SchemaWhat::Config => backstop::config::schema(),
        SchemaWhat::Policy => schemars::schema_for!(backstop::policy::PolicyFile),
        SchemaWhat::Ledger => backstop::ledger::record::schema(),
        SchemaWhat::Report => schemars::schema_for!(backstop::report::Report),
        SchemaWhat::Watch => schemars::schema_for!(super::watch::WatchResult<'static>),
    };
    let text = serde_json::to_string_pretty(&schema).map_err(|e| Failure { code: 1, message: e.to_string() })?;
    out(&text);
    Ok(ExitCode::SUCCESS)
}

pub fn corpus(a: CorpusArgs) -> CliResult {
    let spec = CorpusSpec {
        seed: a.seed,
        good_per_family: a.good_per_family,
        bad_per_cell: a.bad_per_cell,
        prefix: a.prefix,
        baseline_kind: a.baseline_kind.into(),
        background_logs: a.background_logs,
        model: a.model,
    };
    if (spec.background_logs || spec.model) && spec.baseline_kind != backstop::signals::BaselineKind::Concurrent {
        return Err(Failure::usage("--background-logs and --model: only with --baseline-kind concurrent"));
    }
    let io = |e: std::io::Error| Failure { code: 1, message: format!("{}: {e}", a.out.display()) };
    std::fs::create_dir_all(&a.out).map_err(io)?;
    let scenarios = generate_corpus(&spec);
    for s in &scenarios {
        let text = s.to_json().map_err(|e| Failure { code: 1, message: e.to_string() })?;
        std::fs::write(a.out.join(&s.path), text + "\n").map_err(io)?;
    }
    out(&format!("wrote {} scenarios to {}", scenarios.len(), a.out.display()));
    Ok(ExitCode::SUCCESS)
}

/// `backstop completions SHELL`: the completion script on stdout.
pub fn completions<C: clap::CommandFactory>(shell: clap_complete::Shell) -> CliResult {
    let mut cmd = C::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "backstop", &mut buf);
    write_stdout(&buf)
}

/// `backstop man`: the man page (section 1, roff) on stdout.
pub fn man<C: clap::CommandFactory>() -> CliResult {
    let mut buf = Vec::new();
    clap_mangen::Man::new(C::command())
        .render(&mut buf)
        .map_err(|e| Failure::usage(format!("cannot render the man page: {e}")))?;
    write_stdout(&buf)
}

fn write_stdout(bytes: &[u8]) -> CliResult {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        // `backstop man | head`: the reader had enough.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::usage(format!("cannot write to stdout: {e}")))
        }
        Ok(()) | Err(_) => Ok(ExitCode::SUCCESS),
    }
}
