//! `backstop serve`: judge configured releases (advisory: the rollout engine
//! moves traffic) and answer Argo Rollouts and Flagger on the gate endpoint.

use std::process::ExitCode;

use clap::Args;

use super::runs::{RunArgs, run_all};
use super::{CliResult, Failure, out};
use backstop::config::Settings;
use backstop::orchestrator::Observer;
use backstop::policy::RunMode;
use backstop::run::stop_on_signals;
use backstop::serve::listen::{self, with_token};
use backstop::serve::{GateBoard, router};

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
    match std::env::var(var) {
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
    let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: e.to_string() })?;
    if !addr.ip().is_loopback() && token.is_none() && !a.insecure_no_auth {
        return Err(Failure::usage(format!(
            "--listen {addr} is beyond loopback: give a token (--token-env VAR) or say --insecure-no-auth"
        )));
    }
    let board = GateBoard::default();
    let app = with_token(router(board.clone()), token);
    let mut stop = stop_on_signals();
    let mut server_stop = stop.clone();
    let server = tokio::spawn(listen::serve(listener, app, listen::Limits::default(), async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    out(&format!("serving gates on http://{addr}/v1/gates/{{release}}"));
    let mut make = |name: &str, duration: u64| -> Box<dyn Observer> {
        let revision = settings.releases.iter().find(|r| r.name == name).map(|r| r.candidate_revision.as_str());
        board.register(name, revision.unwrap_or_default(), duration);
        Box::new(board.observer(name))
    };
    let ran = run_all(&a.run, settings, RunMode::Advise, &mut make).await?;
    for r in &ran {
        out(&format!(
            "{}: analysis finished; the gate keeps answering {:?}",
            r.name,
            board.get(&r.name).map(|v| v.verdict)
        ));
    }
    // Keep answering with the final verdicts until asked to stop.
    let _ = stop.wait_for(|s| *s).await;
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}
