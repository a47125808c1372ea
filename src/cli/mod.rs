//! Command-line interface (clap). Every command writes its result to stdout
//! and diagnostics to stderr; exit codes are documented in the README.

mod ci;
mod advise;
mod agent;
mod audit;
mod bench;
mod calibrate;
mod demo;
mod display;
mod eval;
mod misc;
mod releases;
mod revisions;
mod runs;
mod serve;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = backstop::run::exit::USAGE;
/// Exit code when `audit verify` finds tampering.
pub const EXIT_TAMPERED: u8 = backstop::run::exit::TAMPERED;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Judges canaries, rolls back inside guardrails, and records every decision."
)]
struct Cli {
    /// Configuration file (default: ./backstop.toml if present). BACKSTOP_* variables override it.
    #[arg(long, global = true, env = "BACKSTOP_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format on stderr (overrides `telemetry.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<backstop::config::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a canary release offline and judge it live, rolling back when it goes bad.
    Demo(demo::DemoArgs),
    /// Watch configured releases until promote or rollback, acting within policy (exit codes in README).
    Watch(watch::WatchArgs),
    /// Judge configured releases without acting and write a report (Markdown, JSON or HTML).
    Advise(advise::AdviseArgs),
    /// Judge configured releases and answer Argo Rollouts / Flagger on the gate endpoint.
    Serve(serve::ServeArgs),
    /// Run as a service: every configured release and any registered over the API, with
    /// approvals, operator holds, the gate endpoints, a dashboard and /metrics.
    Agent(agent::AgentArgs),
    /// Approve a pending request on a running agent (as the identity of your token).
    Approve(agent::AnswerArgs),
    /// Reject a pending request on a running agent.
    Reject(agent::AnswerArgs),
    /// Operate a running agent's releases: list, get (--watch), hold, resume, abort, rollback, promote.
    Releases(releases::ReleasesArgs),
    /// Replay scenario files through judges and score them (FORMAT.md JSON or a table).
    Eval(eval::EvalArgs),
    /// Learn a service's tolerances from its past releases (within the policy's bounds) and record them.
    Calibrate(calibrate::CalibrateArgs),
    /// Read and verify the audit ledger.
    Audit(audit::AuditArgs),
    /// Release memory: revisions rolled back (quarantined, with evidence) or verified, and clearing a quarantine.
    Revisions(revisions::RevisionsArgs),
    /// Validate configuration, policy and executors, and reach every source, executor and the ledger read-only.
    Config {
        #[command(subcommand)]
        command: misc::ConfigCommand,
    },
    /// Validate policy files.
    Policy {
        #[command(subcommand)]
        command: misc::PolicyCommand,
    },
    /// Print a JSON Schema.
    Schema {
        #[command(subcommand)]
        what: misc::SchemaWhat,
    },
    /// Generate the synthetic scenario corpus.
    Corpus(misc::CorpusArgs),
    /// Measure judge latency, many concurrent releases, and ledger appends; prints a table.
    Bench(bench::BenchArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `backstop man > backstop.1`.
    Man,
}

/// A failure with its exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self { code: EXIT_USAGE, message: message.to_string() }
    }

    /// A backend (ledger, signal source) failed: exit 3, with every cause.
    pub fn backend(e: &(dyn std::error::Error + 'static)) -> Self {
        Self { code: backstop::run::exit::BACKEND, message: chain(e) }
    }
}

pub use backstop::error::chain;

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let code = if e.downcast_ref::<backstop::Error>().is_some_and(|e| {
            matches!(e, backstop::Error::Config(_) | backstop::Error::Policy(_) | backstop::Error::Scenario(_))
        }) {
            EXIT_USAGE
        } else {
            1
        };
        Self { code, message: format!("{e:#}") }
    }
}

pub type CliResult = Result<ExitCode, Failure>;

/// Print to stdout (a closed pipe is not an error worth a panic), line by line, with control characters and invisible
/// formatting from outside text (a metric name, an event) made inert: a
/// terminal would otherwise act on an escape sequence.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    for line in backstop::secret::mask(text).split('\n') {
        let _ = writeln!(o, "{}", backstop::report::text::plain(line));
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "error: {}", backstop::secret::mask(&f.message));
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    // Generated from the command definition alone: no configuration is read.
    match cli.command {
        Command::Completions { shell } => return misc::completions::<Cli>(shell),
        Command::Man => return misc::man::<Cli>(),
        _ => {}
    }
    for name in backstop::config::ignored_env_names() {
        let _ = writeln!(
            std::io::stderr(),
            "warning: ignoring {name}: it names no setting (settings are BACKSTOP_<SECTION>__<KEY>)"
        );
    }
    let settings = backstop::config::Settings::load(cli.config.as_deref())
        .map_err(|e| Failure::usage(backstop::Error::from(e)))?;
    let format = cli.log_format.unwrap_or(settings.telemetry.format);
    let service = matches!(cli.command, Command::Agent(_) | Command::Serve(_));
    let level = settings.telemetry.level.clone().unwrap_or_else(|| if service { "info" } else { "warn" }.into());
    backstop::telemetry::init(format == backstop::config::LogFormat::Json, &level);
    match cli.command {
        Command::Demo(a) => demo::run(a, &settings).await,
        Command::Watch(a) => watch::watch(a, &settings).await,
        Command::Advise(a) => advise::advise(a, &settings).await,
        Command::Serve(a) => serve::serve(a, &settings).await,
        Command::Agent(a) => agent::agent(a, &settings).await,
        Command::Approve(a) => agent::answer(a, "approve").await,
        Command::Reject(a) => agent::answer(a, "reject").await,
        Command::Releases(a) => releases::releases(a).await,
        Command::Eval(a) => eval::run(a, &settings).await,
        Command::Calibrate(a) => calibrate::run(a, &settings).await,
        Command::Audit(a) => audit::run(a, &settings).await,
        Command::Revisions(a) => revisions::run(a, &settings).await,
        Command::Config { command } => misc::config(command, &settings).await,
        Command::Policy { command } => misc::policy(command, &settings),
        Command::Schema { what } => misc::schema(what),
        Command::Corpus(a) => misc::corpus(a),
        Command::Bench(a) => bench::run(a, &settings).await,
        Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
    }
}

/// Load the policy named in settings or on the command line, else the embedded default.
pub fn load_policy(
    arg: Option<&std::path::Path>,
    settings: &backstop::config::Settings,
) -> Result<backstop::policy::PolicyFile, Failure> {
    let path = arg.map(|p| p.to_path_buf()).or_else(|| settings.policy_file());
    let loaded = match path {
        Some(p) => backstop::policy::PolicyFile::load(&p),
        None => backstop::policy::PolicyFile::embedded_default(),
    };
    loaded.map_err(|e| Failure::usage(backstop::Error::from(e)))
}

/// Flags every command that runs releases shares.
#[derive(clap::Args)]
pub struct RunFlags {
    /// Ledger file path or database URL (default: from configuration, else the user data dir).
    #[arg(long)]
    pub ledger: Option<String>,
    /// Policy file (default: from configuration, else the embedded policies/default.toml).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Plain lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// Ledger URL: `--ledger PATH|URL` when given, else configuration.
pub fn ledger_url(arg: Option<&str>, settings: &backstop::config::Settings) -> String {
    match arg {
        Some(a) if a.contains("://") || a.starts_with("sqlite:") => a.to_string(),
        Some(path) => backstop::ledger::sqlite_url(std::path::Path::new(path)),
        None => settings.ledger_url(),
    }
}
