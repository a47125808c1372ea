//! `backstop serve`: judge configured releases (advisory: the rollout engine
//! moves traffic) and answer Argo Rollouts and Flagger on the gate endpoint.

use std::process::ExitCode;

use clap::Args;

use super::watch::{RunArgs, run_all, stop_on_signals};
use super::{CliResult, Failure, out};
use backstop::config::Settings;
use backstop::orchestrator::Observer;
use backstop::policy::RunMode;
use backstop::serve::{GateBoard, router};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    run: RunArgs,
}

pub async fn serve(a: ServeArgs, settings: &Settings) -> CliResult {
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: e.to_string() })?;
    let board = GateBoard::default();
    let app = router(board.clone());
    let mut stop = stop_on_signals();
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    out(&format!("serving gates on http://{addr}/v1/gates/{{release}}"));
    let mut make = |name: &str, duration: u64| -> Box<dyn Observer> {
        let revision = settings.releases.iter().find(|r| r.name == name).map(|r| r.candidate_revision.as_str());
        board.register(name, revision.unwrap_or_default(), duration);
        Box::new(board.observer(name))
    };
    let (ran, _) = run_all(&a.run, settings, RunMode::Advise, &mut make).await?;
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
