//! `backstop agent` (the long-running service) and `backstop approve|reject`
//! (its client for approvals).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{CliResult, Failure, RunFlags, ledger_url, load_policy, out};
use backstop::config::Settings;
use backstop::orchestrator::human::AnswerReply;
use backstop::run::agent::Agent;
use backstop::run::{Runtime, exit, stop_on_signals};
use backstop::serve::auth::Authenticator;
use backstop::serve::guard::{OriginPolicy, guarded};
use backstop::serve::listen;
use backstop::serve::signing::Signer;
use backstop::serve::{ApiState, agent_router};

#[derive(Args)]
pub struct AgentArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Tokens file (`[[tokens]]` with identity, scopes, token_env or sha256); default: `agent.tokens_file`.
    #[arg(long)]
    tokens: Option<std::path::PathBuf>,
    /// Real milliseconds per tick (default: real time, one tick per tick_s).
    #[arg(long)]
    pace_ms: Option<u64>,
    #[command(flatten)]
    flags: RunFlags,
}

fn authenticator(a: &AgentArgs, settings: &Settings) -> Result<Authenticator, Failure> {
    match a.tokens.clone().or_else(|| settings.tokens_file()) {
        Some(path) => Authenticator::load(&path).map_err(|e| Failure::usage(super::chain(&e))),
        None => Ok(Authenticator::LocalOnly(settings.agent.local_scopes.clone())),
    }
}

/// The key that signs form tokens and shared links: `agent.signing_key_env`'s
/// value, else one drawn for this process.
fn signer(settings: &Settings) -> Result<Signer, Failure> {
    let Some(var) = &settings.agent.signing_key_env else { return Ok(Signer::random()) };
    match backstop::secret::from_env(var) {
        Ok(key) if key.len() >= 32 => Ok(Signer::from_secret(&key)),
        Ok(_) => Err(Failure::usage(format!("agent.signing_key_env: `{var}` must hold at least 32 characters"))),
        Err(_) => Err(Failure::usage(format!("agent.signing_key_env: environment variable `{var}` is not set"))),
    }
}

pub async fn agent(a: AgentArgs, settings: &Settings) -> CliResult {
    let auth = authenticator(&a, settings)?;
    let signer = std::sync::Arc::new(signer(settings)?);
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| Failure::usage(format!("--listen {}: cannot listen: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: super::chain(&e) })?;
    let local_only = matches!(auth, Authenticator::LocalOnly(_));
    if !addr.ip().is_loopback() && local_only {
        return Err(Failure::usage(format!(
            "--listen {addr} is beyond loopback: give a tokens file (--tokens FILE or agent.tokens_file)"
        )));
    }
    let policy = load_policy(a.flags.policy.as_deref(), settings)?;
    let url = ledger_url(a.flags.ledger.as_deref(), settings);
    let stop = stop_on_signals();
    let runtime = Runtime::open(settings.clone(), policy, &url, stop.clone()).await.map_err(runtime_failure)?;
    // Every configured release's queries, tried once before anything runs (exit 2 on a refused one).
    for cfg in &settings.releases {
        let prepared = runtime.prepare(cfg, backstop::policy::RunMode::Act, 0).map_err(runtime_failure)?;
        runtime.preflight(&prepared).await.map_err(runtime_failure)?;
    }
    let agent = Agent::new(runtime, a.pace_ms.map(Duration::from_millis), backstop::policy::RunMode::Act);
    // In the roster before any release claims: the others rank this agent from its first heartbeat.
    if agent.keep_sharing().await.map_err(|e| Failure::backend(&e))? == backstop::run::share::Start::Stopped {
        out(backstop::run::share::STOPPED_WAITING);
        return Ok(ExitCode::SUCCESS);
    }
    agent.keep_compacting();
    agent.start_configured().map_err(|e| Failure::usage(super::chain(&e)))?;
    // Registered releases this agent (before a restart) or another one recorded, not yet finished.
    agent.sync().await.map_err(|e| Failure::backend(&e))?;
    agent.keep_synced();
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut app =
        agent_router(ApiState { agent: agent.clone(), auth: std::sync::Arc::new(auth), signer: signer.clone() });
    if let Some(routes) = start_slack(settings, &agent, &stop, signer)? {
        app = app.merge(routes);
    }
    let origins = OriginPolicy::for_listener(addr, &settings.agent.allowed_origins, local_only);
    let app = guarded(app, origins);
    let server = tokio::spawn(listen::serve(listener, app, listen::Limits::default(), async move {
        let _ = server_stopped.await;
    }));
    out(&format!("backstop agent on http://{addr}/ (API /v1/releases, gates /v1/gates/NAME, /metrics)"));
    let mut stop = stop;
    let _ = stop.wait_for(|s| *s).await;
    out("stopping: no new releases; running releases pause between ticks, an action in flight finishes");
    agent.wait().await;
    agent.leave_roster().await;
    let _ = server_stop.send(());
    let _ = server.await;
    out("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Start the Slack app when `[slack]` is configured: the notifier always,
/// Socket Mode's connection, or the HTTP mode routes to serve.
fn start_slack(
    settings: &Settings,
    agent: &std::sync::Arc<Agent>,
    stop: &tokio::sync::watch::Receiver<bool>,
    signer: std::sync::Arc<Signer>,
) -> Result<Option<axum::Router>, Failure> {
    use backstop::slack::{Secrets, SlackMode, app::SlackApp, http, notify, socket};
    let Some(cfg) = settings.slack.clone() else { return Ok(None) };
    let secrets =
        Secrets::load(&cfg, &|v| backstop::secret::from_env(v).ok()).map_err(|e| Failure::usage(super::chain(&e)))?;
    let mode = cfg.mode;
    let app = SlackApp::new(agent.clone(), cfg, secrets, signer).map_err(|e| Failure::usage(super::chain(&e)))?;
    tokio::spawn(notify::run(app.clone(), stop.clone()));
    match mode {
        SlackMode::Socket => {
            tokio::spawn(socket::run(app, stop.clone()));
            out("slack: Socket Mode");
            Ok(None)
        }
        SlackMode::Http => {
            out("slack: HTTP mode on /slack/commands, /slack/interactive, /slack/events");
            Ok(Some(http::routes(app)))
        }
    }
}

pub fn runtime_failure(e: backstop::run::RuntimeError) -> Failure {
    let code = match (e.is_tampering(), e.is_usage()) {
        (true, _) => exit::TAMPERED,
        (false, true) => exit::USAGE,
        (false, false) => exit::BACKEND,
    };
    Failure { code, message: super::chain(&e) }
}

#[derive(Args)]
pub struct AnswerArgs {
    /// Approval request id (on the dashboard, in `GET /v1/releases/NAME`, and in the ledger).
    id: String,
    #[command(flatten)]
    target: super::releases::AgentTarget,
    /// Why (recorded in the ledger with your identity).
    #[arg(long, default_value = "")]
    reason: String,
}

/// `backstop approve` / `backstop reject`: exit code of the release's new
/// status when the answer executed, 12 when rejected or stale, 2 when refused.
pub async fn answer(a: AnswerArgs, verb: &str) -> CliResult {
    let client = super::releases::AgentClient::new(&a.target, Duration::from_secs(660))?;
    let (status, body) = client.post(&["v1", "approvals", &a.id, verb], &a.reason).await?;
    match serde_json::from_value::<AnswerReply>(body.clone()) {
        Ok(reply) => Ok(ExitCode::from(super::releases::report(&a.id, &reply))),
        Err(_) => Err(Failure { code: exit::USAGE, message: format!("{verb} {}: HTTP {status}: {body}", a.id) }),
    }
}
