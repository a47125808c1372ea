//! `backstop serve`: judge configured releases (advisory: the rollout engine
//! moves traffic) and answer Argo Rollouts and Flagger on the gate endpoint.

use std::process::ExitCode;

use clap::Args;

use std::time::Duration;

use super::agent::runtime_failure;
use super::runs::RunArgs;
use super::{CliResult, Failure, ledger_url, load_policy, out};
use backstop::config::Settings;
use backstop::policy::RunMode;
use backstop::run::agent::Agent;
use backstop::run::{Runtime, stop_on_signals};
use backstop::serve::guard::{OriginPolicy, guarded};
use backstop::serve::listen::{self, with_token};
use backstop::serve::{GateState, router};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Environment variable holding the bearer token every gate request must carry.
    #[arg(long)]
    token_env: Option<String>,
    /// Listen beyond loopback without a token (anyone who reaches the port can read the gate).
    #[arg(long)]
    insecure_no_auth: bool,
    #[command(flatten)]
    run: RunArgs,
}

fn token(a: &ServeArgs) -> Result<Option<String>, Failure> {
    let Some(var) = &a.token_env else { return Ok(None) };
    match backstop::secret::from_env(var) {
        Ok(t) if t.len() >= 16 => Ok(Some(t)),
        Ok(_) => Err(Failure::usage(format!("--token-env: `{var}` holds fewer than 16 characters"))),
        Err(_) => Err(Failure::usage(format!("--token-env: environment variable `{var}` is not set"))),
    }
}

pub async fn serve(a: ServeArgs, settings: &Settings) -> CliResult {
    let token = token(&a)?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: super::chain(&e) })?;
    if !addr.ip().is_loopback() && token.is_none() && !a.insecure_no_auth {
        return Err(Failure::usage(format!(
            "--listen {addr} is beyond loopback: give a token (--token-env VAR) or say --insecure-no-auth"
        )));
    }
    let policy = load_policy(a.run.flags.policy.as_deref(), settings)?;
    let url = ledger_url(a.run.flags.ledger.as_deref(), settings);
    let mut stop = stop_on_signals();
    let runtime = Runtime::open(settings.clone(), policy, &url, stop.clone()).await.map_err(runtime_failure)?;
    let chosen = runtime.select(&a.run.releases).map_err(runtime_failure)?;
    // Advisory: the engine moves traffic; an agent that never acts keeps the gate's answers.
    let agent = Agent::new(runtime, a.run.pace_ms.map(Duration::from_millis), RunMode::Advise);
    agent.start(chosen).map_err(|e| Failure::usage(super::chain(&e)))?;
    let app = with_token(router(GateState { board: agent.gates.clone(), agent: Some(agent.clone()) }), token.clone());
    let loopback_only = token.is_none() && addr.ip().is_loopback();
    let origins = OriginPolicy::for_listener(addr, &settings.agent.allowed_origins, loopback_only);
    let app = guarded(app, origins);
    let mut server_stop = stop.clone();
    let server = tokio::spawn(listen::serve(listener, app, listen::Limits::default(), async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    out(&format!("serving gates on http://{addr}/v1/gates/{{release}}"));
    // Keep answering (analyses end; their final verdicts stay) until asked to stop.
    let _ = stop.wait_for(|s| *s).await;
    agent.wait().await;
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}
